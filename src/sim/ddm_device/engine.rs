//! The device's DDM state, pure: the declarations it holds, which configurations are active,
//! the enforcement it carries out on the update machine ([`OsUpdateSim`]), and the subscribed
//! status items it owes the server. Time comes in as arguments; I/O is in `client.rs`.

use super::facts::DdmFacts;
use crate::mdm::ddm::declaration::{
    ACTIVATION_SIMPLE, ActivationSimple, Declaration, DeclarationKind, ENFORCEMENT_SPECIFIC,
    Enforcement, STATUS_SUBSCRIPTIONS, StatusSubscriptions, payload_as,
};
use crate::mdm::ddm::protocol::DeclarationItems;
use crate::mdm::ddm::status::{StatusReport, items};
use crate::sim::clock::{after, from_local};
use crate::sim::os_update::OsUpdateSim;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The enforcement being carried out.
#[derive(Debug, Clone, PartialEq)]
struct Active {
    identifier: String,
    server_token: String,
    enforcement: Enforcement,
    /// When the device must install (device-local deadline, or the delays of `data/ddm.yaml`).
    install_at: DateTime<Utc>,
    /// The install has been started (or handed to the user): do not start it again.
    install_started: bool,
    /// Failed until this instant (then retried).
    failed_until: Option<DateTime<Utc>>,
}

/// One simulated device's DDM client.
#[derive(Debug, Clone, Default)]
pub struct DdmClient {
    /// DDM was turned on by a `DeclarativeManagement` command.
    pub enabled: bool,
    token: Option<String>,
    declarations: BTreeMap<String, Declaration>,
    active: Option<Active>,
    failures: i64,
    last_failure: Option<(String, String)>,
    /// Item values the server has acknowledged with HTTP 200.
    sent: BTreeMap<String, Value>,
    /// The subscribed item names, worked out from `declarations` whenever they change
    /// ([`DdmClient::apply_manifest`]): a device with an update under way reads them every tick
    /// (50 ms), and reading every declaration's payload back each time was a fifth of a
    /// 1 000-device simulator's CPU (issue 16).
    subscribed: BTreeSet<String>,
    /// The last status report could not be delivered (an error or a status other than 200):
    /// the device tries again on its next tick.
    unsent: bool,
}

impl DdmClient {
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Manifest entries to fetch: new or with a changed `ServerToken` (DDM brief §1).
    pub fn to_fetch(&self, m: &DeclarationItems) -> Vec<(DeclarationKind, String)> {
        m.entries()
            .into_iter()
            .filter(|(_, i)| {
                self.declarations
                    .get(&i.identifier)
                    .is_none_or(|d| d.server_token != i.server_token)
            })
            .map(|(k, i)| (k, i.identifier.clone()))
            .collect()
    }

    /// Takes the fetched declarations, drops those the manifest no longer lists, and applies
    /// the result.
    pub fn apply_manifest(
        &mut self,
        m: &DeclarationItems,
        fetched: Vec<Declaration>,
        now: DateTime<Utc>,
        os: &OsUpdateSim,
        facts: &DdmFacts,
    ) {
        let listed: BTreeSet<&str> = m
            .entries()
            .into_iter()
            .map(|(_, i)| i.identifier.as_str())
            .collect();
        self.declarations
            .retain(|id, _| listed.contains(id.as_str()));
        for d in fetched {
            self.declarations.insert(d.identifier.clone(), d);
        }
        self.token = Some(m.declarations_token.clone());
        self.subscribed = self.read_subscriptions();
        self.reconcile(now, os, facts);
    }

    /// Identifiers of configurations named by an activation (only those apply,
    /// `declarative/declarations/activations/simple.yaml`).
    fn active_configurations(&self) -> Vec<&Declaration> {
        let named: BTreeSet<String> = self
            .declarations
            .values()
            .filter(|d| d.declaration_type == ACTIVATION_SIMPLE)
            .filter_map(|d| payload_as::<ActivationSimple>(d).ok())
            .flat_map(|a| a.standard_configurations)
            .collect();
        self.declarations
            .values()
            .filter(|d| {
                d.kind() == Some(DeclarationKind::Configuration) && named.contains(&d.identifier)
            })
            .collect()
    }

    /// The subscribed item names (set union of every active subscriptions configuration).
    pub fn subscribed(&self) -> &BTreeSet<String> {
        &self.subscribed
    }

    /// [`DdmClient::subscribed`], read from the declarations held.
    fn read_subscriptions(&self) -> BTreeSet<String> {
        self.active_configurations()
            .into_iter()
            .filter(|d| d.declaration_type == STATUS_SUBSCRIPTIONS)
            .filter_map(|d| payload_as::<StatusSubscriptions>(d).ok())
            .flat_map(|s| s.status_items.into_iter().map(|i| i.name))
            .collect()
    }

    /// Picks the enforcement to carry out: the valid active one with the earliest deadline
    /// (DDM brief §2 "several configurations"); none below iOS 17 (`enforcement_supported`).
    fn reconcile(&mut self, now: DateTime<Utc>, os: &OsUpdateSim, facts: &DdmFacts) {
        let (version, _) = os.version();
        let chosen = if facts.holds("enforcement_supported", version) {
            self.active_configurations()
                .into_iter()
                .filter(|d| d.declaration_type == ENFORCEMENT_SPECIFIC)
                .filter_map(|d| Enforcement::from_payload(&d.payload).ok().map(|e| (d, e)))
                .min_by_key(|(_, e)| e.target_local_date_time)
                .map(|(d, e)| (d.identifier.clone(), d.server_token.clone(), e))
        } else {
            None
        };
        let Some((identifier, server_token, enforcement)) = chosen else {
            self.active = None;
            return;
        };
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.identifier == identifier && a.server_token == server_token)
        {
            return;
        }
        let local = enforcement.target_local_date_time.0;
        // The deadline is device-local, no zone (`deadline_is_device_local`).
        let deadline = from_local(local, os.state().local_offset_minutes);
        let install_at = if deadline <= now {
            // Already past: prompt now, install about an hour later (`past_deadline_install_delay`).
            after(now, delay(facts, "past_deadline_install_delay", version))
        } else {
            deadline
        };
        self.active = Some(Active {
            identifier,
            server_token,
            enforcement,
            install_at,
            install_started: false,
            failed_until: None,
        });
    }

    /// Advances the enforcement to `now` on the update machine.
    pub fn step(&mut self, now: DateTime<Utc>, os: &mut OsUpdateSim, facts: &DdmFacts) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let e = &a.enforcement;
        if os.version().0 == e.target_os_version {
            return;
        }
        if a.failed_until.is_some_and(|t| now < t) {
            return;
        }
        a.failed_until = None;
        let version = os.version().0.to_string();
        // A target no feed offers: stay active, do nothing (`unoffered_target_stays_active`).
        let Some(idx) = os.offered_target(&e.target_os_version, e.target_build_version.as_deref())
        else {
            return;
        };
        let retry = delay(facts, "failed_retry_interval", &version);
        if os.in_flight().is_none()
            && !a.install_started
            && let Err(b) = os.enforced_download(now, idx)
        {
            a.failed_until = Some(after(now, retry));
            self.failures += 1;
            self.last_failure = Some((b.0.to_string(), rfc3339(now)));
            return;
        }
        if now >= a.install_at && !a.install_started {
            if let Some(back) = os.back_at(now) {
                // Off at the deadline: an hour after it is back (`off_at_deadline_install_delay`).
                a.install_at = after(
                    back,
                    delay(facts, "off_at_deadline_install_delay", &version),
                );
                return;
            }
            match os.enforced_install(now) {
                Ok(true) => a.install_started = true,
                Ok(false) => {}
                Err(b) => {
                    a.failed_until = Some(after(now, retry));
                    self.failures += 1;
                    self.last_failure = Some((b.0.to_string(), rfc3339(now)));
                }
            }
        }
    }

    /// The current value of every subscribed item this version reports.
    pub fn values(&self, now: DateTime<Utc>, os: &OsUpdateSim) -> BTreeMap<String, Value> {
        let subscribed = self.subscribed();
        if subscribed.is_empty() {
            return BTreeMap::new();
        }
        let (version, build) = os.version();
        let failed = self
            .active
            .as_ref()
            .is_some_and(|a| a.failed_until.is_some_and(|t| now < t));
        let in_flight = os.in_flight().map(|i| os.entry_version(i));
        let enforced = self.active.as_ref().filter(|_| in_flight.is_some());
        let mut all: BTreeMap<String, Value> = BTreeMap::new();
        let state = if failed { "failed" } else { os.install_state() };
        all.insert("softwareupdate.install-state".into(), state.into());
        let (pv, pb) = in_flight.clone().unwrap_or_default();
        let when = enforced.map(|a| a.enforcement.target_local_date_time.to_wire());
        all.insert(
            "softwareupdate.pending-version".into(),
            items::pending_version(&pv, &pb, when.as_deref()),
        );
        let (reason, at) = match &self.last_failure {
            Some((r, t)) if self.failures > 0 => (Some(r.as_str()), Some(t.as_str())),
            _ => (None, None),
        };
        all.insert(
            "softwareupdate.failure-reason".into(),
            items::failure_reason(
                if in_flight.is_some() || failed {
                    self.failures
                } else {
                    0
                },
                reason,
                at,
            ),
        );
        let install_reason = match enforced {
            Some(a) => items::install_reason(&["declaration"], Some(&a.identifier)),
            None if in_flight.is_some() => items::install_reason(&["mdm"], None),
            None => items::install_reason(&[], None),
        };
        all.insert("softwareupdate.install-reason".into(), install_reason);
        all.insert("device.operating-system.version".into(), version.into());
        all.insert("device.operating-system.build-version".into(), build.into());
        all.insert(
            "device.operating-system.supplemental.build-version".into(),
            build.into(),
        );
        all.retain(|k, _| subscribed.contains(k));
        all
    }

    /// The items that changed since the last delivered report, as a report (`None`: nothing to
    /// say). Incremental, as the device sends them (`statusreport.yaml`).
    pub fn report(&self, values: &BTreeMap<String, Value>) -> Option<StatusReport> {
        let mut r = StatusReport::new();
        let mut any = false;
        for (k, v) in values {
            if self.sent.get(k) != Some(v) {
                r.set(k, v.clone());
                any = true;
            }
        }
        any.then_some(r)
    }

    /// The server answered 200: these values are delivered.
    pub fn delivered(&mut self, values: BTreeMap<String, Value>) {
        self.sent.extend(values);
        self.unsent = false;
    }

    /// Whether the last status report was delivered (`true`), or could not be (`false`).
    pub fn set_delivered(&mut self, delivered: bool) {
        self.unsent = !delivered;
    }

    /// Nothing here can change with time alone: no enforcement still to carry out (none
    /// active, or its target reached and no failure waiting out its retry interval), and no
    /// status report waiting to be sent again. Together with a quiet update machine
    /// ([`OsUpdateSim::quiet`]) the device then needs no 50 ms tick: 10 000 DDM devices ticking
    /// while idle kept a simulator's two cores busy (issue 16).
    pub fn settled(&self, now: DateTime<Utc>, os: &OsUpdateSim) -> bool {
        !self.unsent
            && self.active.as_ref().is_none_or(|a| {
                os.version().0 == a.enforcement.target_os_version
                    && a.failed_until.is_none_or(|t| t <= now)
            })
    }
}

fn delay(facts: &DdmFacts, id: &str, version: &str) -> Duration {
    facts
        .duration(id, version)
        .unwrap_or(Duration::from_secs(3600))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::ddm::declaration::{LocalDateTime, declaration_of};
    use crate::mdm::ddm::status::SUBSCRIBED_ITEMS;
    use crate::sim::fleet::NetworkKind;
    use crate::sim::os_update::{
        CatalogEntry, DeviceUpdateState, Timing, UpdateConfig, UserBehaviour,
    };
    use crate::sim::quirks::Quirks;
    use chrono::TimeZone;

    fn os(version: &str, offset: i32) -> OsUpdateSim {
        let state = DeviceUpdateState {
            version: version.into(),
            build: "X".into(),
            product_type: "iPhone14,2".into(),
            disk_free: 50_000_000_000,
            battery_level: 90,
            charging: true,
            external_power: true,
            network: NetworkKind::Wifi,
            passcode: false,
            supervised: true,
            dep_enrolled: true,
            unlocked_since_boot: true,
            local_offset_minutes: offset,
        };
        let config = UpdateConfig {
            catalogue: vec![CatalogEntry {
                product_key: "iOSUpdate23G83".into(),
                version: "26.6.1".into(),
                build: "23G83".into(),
                download_size: 1_000,
                install_size: 1_000,
                product_types: None,
                is_critical: false,
                restart_required: true,
                allows_install_later: true,
            }],
            user: UserBehaviour::Approve {
                after: Duration::from_secs(0),
            },
            timing: Timing::default(),
        };
        OsUpdateSim::new(state, config, Quirks::default(), 1)
    }

    /// The set lab's server serves: subscriptions, the enforcement, an activation of both.
    fn manifest(local: &str) -> (DeclarationItems, Vec<Declaration>) {
        let subs = declaration_of(
            STATUS_SUBSCRIPTIONS,
            "subs",
            &StatusSubscriptions::of(SUBSCRIBED_ITEMS),
        );
        let e = Enforcement {
            target_os_version: "26.6.1".into(),
            target_build_version: None,
            target_local_date_time: LocalDateTime::parse(local).unwrap(),
            details_url: None,
        }
        .declaration("su");
        let act = declaration_of(
            ACTIVATION_SIMPLE,
            "act",
            &ActivationSimple {
                standard_configurations: vec!["subs".into(), "su".into()],
                predicate: None,
            },
        );
        let set = vec![subs, e, act];
        (DeclarationItems::of(&set, "T1"), set)
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
    }

    #[test]
    fn a_future_deadline_is_read_in_device_local_time() {
        let facts = DdmFacts::builtin();
        let os = os("26.5", 120);
        let mut c = DdmClient::default();
        let (m, set) = manifest("2026-12-01T12:30:00");
        assert_eq!(c.to_fetch(&m).len(), 3);
        c.apply_manifest(&m, set, t0(), &os, facts);
        assert!(
            c.to_fetch(&m).is_empty(),
            "nothing changed: nothing to fetch"
        );
        assert_eq!(c.token(), Some("T1"));
        let a = c.active.as_ref().unwrap();
        assert_eq!(
            a.install_at,
            Utc.with_ymd_and_hms(2026, 12, 1, 10, 30, 0).unwrap()
        );
    }

    /// `failed_retry_interval` (an assumption, `data/ddm.yaml`): a blocked download is a failure,
    /// and the device tries again an hour later, not before.
    #[test]
    fn a_blocked_download_fails_and_is_tried_again_an_hour_later() {
        let facts = DdmFacts::builtin();
        let mut os = os("26.5", 0);
        os.set_power(10, false, false);
        let mut c = DdmClient::default();
        let (m, set) = manifest("2026-12-01T12:00:00");
        c.apply_manifest(&m, set, t0(), &os, facts);
        let h = |m: i64| t0() + chrono::Duration::minutes(m);
        c.step(h(1), &mut os, facts);
        assert_eq!(c.failures, 1, "blocked on battery");
        assert_eq!(c.active.as_ref().unwrap().failed_until, Some(h(61)));
        c.step(h(30), &mut os, facts);
        assert_eq!(c.failures, 1, "not tried again within the hour");
        c.step(h(62), &mut os, facts);
        assert_eq!(c.failures, 2, "tried again after it");
    }

    /// `off_at_deadline_install_delay`: a device switched off across its deadline installs an
    /// hour after it is back, not at the deadline nor an hour after it.
    #[test]
    fn a_device_off_at_the_deadline_installs_an_hour_after_it_is_back() {
        let facts = DdmFacts::builtin();
        let mut os = os("26.5", 0);
        let mut c = DdmClient::default();
        let (m, set) = manifest("2026-12-01T10:30:00");
        c.apply_manifest(&m, set, t0(), &os, facts);
        let h = |m: i64| t0() + chrono::Duration::minutes(m);
        // Downloaded before the deadline; off from 10:20 to 11:15.
        c.step(h(10), &mut os, facts);
        os.set_off(h(20), h(75));
        c.step(h(31), &mut os, facts);
        let a = c.active.as_ref().unwrap();
        assert_eq!(a.install_at, h(75 + 60), "an hour after it is back");
        assert!(!a.install_started);
        c.step(h(100), &mut os, facts);
        assert!(!c.active.as_ref().unwrap().install_started, "not yet");
        c.step(h(136), &mut os, facts);
        assert!(c.active.as_ref().unwrap().install_started);
    }

    #[test]
    fn a_past_deadline_installs_an_hour_after_arrival_and_below_17_nothing_applies() {
        let facts = DdmFacts::builtin();
        let mut c = DdmClient::default();
        let (m, set) = manifest("2026-11-01T09:00:00");
        c.apply_manifest(&m, set.clone(), t0(), &os("26.5", 0), facts);
        assert_eq!(
            c.active.as_ref().unwrap().install_at,
            t0() + chrono::Duration::hours(1)
        );
        let mut old = DdmClient::default();
        old.apply_manifest(&m, set, t0(), &os("16.7.10", 0), facts);
        assert!(old.active.is_none(), "enforcement_supported is 17.0+");
    }

    /// `settled` decides whether a DDM device may skip its 50 ms tick: only when time alone
    /// changes nothing — no enforcement left to carry out and no report to send again.
    #[test]
    fn a_client_is_settled_only_with_no_enforcement_to_carry_out_and_no_report_to_resend() {
        let facts = DdmFacts::builtin();
        let mut c = DdmClient::default();
        let behind = os("26.5", 0);
        assert!(c.settled(t0(), &behind), "no declarations");
        let (m, set) = manifest("2026-12-01T12:00:00");
        c.apply_manifest(&m, set.clone(), t0(), &behind, facts);
        assert!(
            !c.settled(t0(), &behind),
            "an enforcement to 26.6.1 on 26.5 moves with time"
        );
        let mut there = DdmClient::default();
        let at_target = os("26.6.1", 0);
        there.apply_manifest(&m, set.clone(), t0(), &at_target, facts);
        assert!(there.active.is_some());
        assert!(there.settled(t0(), &at_target), "target reached");
        // Subscriptions only: settled until a report cannot be delivered, and again once one is.
        let subs: Vec<Declaration> = set.into_iter().filter(|d| d.identifier != "su").collect();
        let mut quiet = DdmClient::default();
        quiet.apply_manifest(
            &DeclarationItems::of(&subs, "T3"),
            subs,
            t0(),
            &behind,
            facts,
        );
        assert!(quiet.active.is_none());
        assert!(quiet.settled(t0(), &behind));
        quiet.set_delivered(false);
        assert!(!quiet.settled(t0(), &behind), "a report to send again");
        let v = quiet.values(t0(), &behind);
        quiet.delivered(v);
        assert!(quiet.settled(t0(), &behind));
    }

    #[test]
    fn only_changed_items_are_reported_and_an_unlisted_declaration_goes() {
        let facts = DdmFacts::builtin();
        let mut sim = os("26.5", 0);
        let mut c = DdmClient::default();
        let (m, set) = manifest("2026-12-01T12:00:00");
        c.apply_manifest(&m, set, t0(), &sim, facts);
        let v = c.values(t0(), &sim);
        assert_eq!(v.len(), SUBSCRIBED_ITEMS.len());
        assert!(c.report(&v).is_some());
        c.delivered(v.clone());
        assert!(c.report(&v).is_none(), "nothing changed since the last 200");
        c.step(t0(), &mut sim, facts);
        let v2 = c.values(t0(), &sim);
        let r = c.report(&v2).unwrap();
        assert_eq!(
            r.get("softwareupdate.install-state")
                .and_then(Value::as_str),
            Some("downloading")
        );
        assert!(
            r.get("device.operating-system.version").is_none(),
            "unchanged items are left out"
        );
        // The server drops everything: the enforcement goes with it.
        let empty = DeclarationItems::of(&[], "T2");
        c.apply_manifest(&empty, vec![], t0(), &sim, facts);
        assert!(c.active.is_none());
        assert!(c.subscribed().is_empty());
    }
}
