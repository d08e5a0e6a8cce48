//! Simulated devices as MDM clients.
//!
//! Each device enrolls (Authenticate, TokenUpdate) with its own identity: by default one it got
//! by SCEP, signing every body (`Mdm-Signature`), or a simulator-made certificate passed in a
//! header as NanoMDM's `-cert-header` mode takes it (`sim::enroll`); connects when woken by a push (through
//! the simulated APNs) or on its poll interval; and answers DeviceInformation, SecurityInfo and
//! the OS-update commands (`os_update`), anything else with `Error` 12021 in
//! `MCMDMErrorDomain`, as real devices do (brief mdm.md §3, mdmb). When an update restarts the
//! device it leaves usbmuxd, stops checking in, and comes back with its new version on both
//! lockdown and MDM. A USB detach (`detach_after`) is not a restart: the device goes on
//! checking in over the network while unplugged.
//!
//! A fleet's `mdm_fault` (issue 6) makes the client spoil its report for the first `times`
//! commands of a RequestType: it carries the command out as usual, then sends either a body
//! that is not a plist (`malformed_report`: its real report cut off in its closing tags) or
//! its real report with a made-up CommandUUID (`wrong_command_uuid`). The MDM server answers HTTP 400 and keeps
//! the command queued; the connection ends there ([`MdmAgent::connect`] returns the error, the
//! run loop logs it), and on the next poll or push the device gets the command again and, the
//! fault spent, answers properly. For OSUpdateStatus, AvailableOSUpdates, DeviceInformation
//! and SecurityInfo the spoiled delivery changes nothing on the device; a spoiled
//! ScheduleOSUpdate has been acted on, so its re-delivery is a second ScheduleOSUpdate (two
//! deliveries in the server's history): a `Default` may then move on from downloading to
//! installing, as two real sends would.

mod user_channel;

use super::apns::Registry;
use super::clock::Clock;
use super::ddm_device::{self, DdmClient, DdmFacts, DdmTransport};
use super::fleet::{MdmFaultKind, NetworkKind};
use super::lab::SimLab;
use super::os_update::{DeviceUpdateState, OsUpdateSim, Outcome, UpdateEvent};
use super::quirks::QuirkTable;
use crate::mdm::checkin::{CHECKIN_CONTENT_TYPE, COMMAND_CONTENT_TYPE, CheckinMessage};
use crate::mdm::command::parse_envelope;
use crate::mdm::ddm::protocol::{DdmCheckin, TokensResponse, command_tokens};
use crate::mdm::report::{error_chain, report_dict};
use crate::mdm_server::identity::cert_header_value;
use plist::{Dictionary, Value};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The header simulated devices put their identity certificate in.
pub const CERT_HEADER: &str = "X-Client-Cert";

/// Per-device MDM identity certificates, signed by one CA the MDM server trusts.
pub struct MdmIdentities {
    pub ca_pem: String,
    pub certs: Vec<Vec<u8>>,
}

impl MdmIdentities {
    /// ECDSA P-256: cheap enough for 1 000 devices (unlike RSA).
    pub fn generate(udids: &[String]) -> Result<MdmIdentities, rcgen::Error> {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "lab simulated MDM identity CA");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = p.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(p, &ca_key);
        let mut certs = Vec::with_capacity(udids.len());
        for u in udids {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let mut cp = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, u.as_str());
            cp.distinguished_name = dn;
            cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            certs.push(cp.signed_by(&key, &issuer)?.der().to_vec());
        }
        Ok(MdmIdentities { ca_pem, certs })
    }
}

/// Where the simulated devices enroll.
#[derive(Clone)]
pub struct MdmTarget {
    /// Base URL; devices PUT to `{base}/mdm`.
    pub base_url: String,
    /// Simulated APNs registry to be woken through (absent: poll only).
    pub apns: Option<Arc<Registry>>,
    /// Poll interval in simulated time.
    pub poll_interval: Duration,
    /// The MDM topic (`com.apple.mgmt.External.<uuid>`).
    pub topic: String,
    /// `ServerURL` / `CheckInURL` when they are not `{base_url}/mdm` (`sim::enroll::MdmUrls`).
    pub urls: Option<super::enroll::MdmUrls>,
    /// The CA (DER) of an MDM served over mutual TLS: trusted, and the identity presented.
    pub server_ca: Option<Vec<u8>>,
}

impl MdmTarget {
    /// Where a message of this content type goes: check-ins to `CheckInURL` (or `ServerURL`),
    /// command results to `ServerURL` (brief mdm.md §4).
    pub fn url_for(&self, content_type: &str) -> String {
        match &self.urls {
            None => format!("{}/mdm", self.base_url),
            Some(u) if content_type == CHECKIN_CONTENT_TYPE => u
                .checkin_url
                .clone()
                .unwrap_or_else(|| u.server_url.clone()),
            Some(u) => u.server_url.clone(),
        }
    }
}

/// The MDM side of one simulated device.
pub struct MdmAgent {
    index: usize,
    udid: String,
    lab: Arc<SimLab>,
    os: Mutex<OsUpdateSim>,
    /// How the device identifies itself (`sim::enroll`).
    credential: super::enroll::Credential,
    token: Vec<u8>,
    push_magic: String,
    target: MdmTarget,
    http: reqwest::Client,
    /// The client presenting the identity as TLS client certificate ([`MdmTarget::server_ca`]).
    mtls_http: std::sync::OnceLock<reqwest::Client>,
    wake: Arc<Notify>,
    /// How many more reports the fleet's `mdm_fault` spoils.
    faults_left: Mutex<u32>,
    /// Spoiled reports so far (names the made-up CommandUUIDs).
    faults_sent: Mutex<u64>,
    /// The device's DDM client (`sim::ddm_device`); idle until a `DeclarativeManagement` command.
    ddm: Mutex<DdmClient>,
    /// A synchronisation the last `DeclarativeManagement` command asked for (with its tokens).
    ddm_sync: Mutex<Option<Option<TokensResponse>>>,
}

/// `report` spoiled as `kind` says; `n` numbers the spoiled reports of this device (it makes
/// each made-up CommandUUID distinct).
fn spoil_report(kind: MdmFaultKind, report: &mut Dictionary, udid: &str, n: u64) -> Vec<u8> {
    match kind {
        MdmFaultKind::MalformedReport => {
            let mut xml = crate::plist_util::dict_to_xml(std::mem::take(report));
            // Cut inside the closing `</dict>`: everything the device meant to say is there
            // (useful evidence), but the document never ends, so no plist parser accepts it.
            let cut = xml
                .windows(7)
                .rposition(|w| w == b"</dict>")
                .map(|i| i + 3)
                .unwrap_or(xml.len() / 2);
            xml.truncate(cut);
            xml
        }
        MdmFaultKind::WrongCommandUuid => {
            let real = crate::plist_util::get_str(report, "CommandUUID")
                .unwrap_or("")
                .to_string();
            let made_up = super::identity::uuid_from(n, &format!("mdm-fault/{udid}/{real}"));
            report.insert("CommandUUID".into(), made_up.into());
            crate::plist_util::dict_to_xml(std::mem::take(report))
        }
    }
}

fn real_value(v: f64) -> Value {
    Value::Real(v)
}

impl MdmAgent {
    /// A device that sends `cert_der` in [`CERT_HEADER`].
    pub fn new(lab: Arc<SimLab>, index: usize, cert_der: &[u8], target: MdmTarget) -> MdmAgent {
        let credential = super::enroll::Credential::CertHeader(cert_header_value(cert_der));
        MdmAgent::with_credential(lab, index, credential, target)
    }

    /// A device that identifies itself with `credential` (SCEP + `Mdm-Signature`, or a header).
    pub fn with_credential(
        lab: Arc<SimLab>,
        index: usize,
        credential: super::enroll::Credential,
        target: MdmTarget,
    ) -> MdmAgent {
        let dev = lab.devices[index].clone();
        let spec = dev.spec.clone();
        let state = DeviceUpdateState::from_fleet(&spec, &spec.update);
        let config = spec
            .update
            .config()
            .expect("update config was validated when the fleet was read");
        let quirks = QuirkTable::builtin().for_device(&spec.ios_version, lab.seed, &spec.udid);
        let seed = super::quirks::device_seed(lab.seed, &spec.udid);
        let token = Sha256::digest(format!("apns-token/{}", spec.udid).as_bytes()).to_vec();
        let push_magic = super::identity::uuid_from(lab.seed, &format!("push-magic/{}", spec.udid));
        let faults_left = spec.mdm_fault.as_ref().map(|f| f.times).unwrap_or(0);
        let wake = match &target.apns {
            Some(r) => r.register(&token, &push_magic),
            None => Arc::new(Notify::new()),
        };
        MdmAgent {
            index,
            udid: spec.udid.clone(),
            os: Mutex::new(
                OsUpdateSim::new(state, config, quirks, seed).with_quirks_from(
                    QuirkTable::builtin(),
                    lab.seed,
                    &spec.udid,
                ),
            ),
            lab,
            credential,
            token,
            push_magic,
            http: match &target.server_ca {
                Some(ca) => super::enroll::tls_client(ca, None)
                    .expect("a TLS client trusting a certificate just generated"),
                None => crate::http_client::client_with_idle(
                    Duration::from_secs(15),
                    super::enroll::DEVICE_IDLE_CONNECTION,
                ),
            },
            mtls_http: std::sync::OnceLock::new(),
            target,
            wake,
            faults_left: Mutex::new(faults_left),
            faults_sent: Mutex::new(0),
            ddm: Mutex::new(DdmClient::default()),
            ddm_sync: Mutex::new(None),
        }
    }

    /// The fault to apply to the report on a command of this RequestType, if the fleet's
    /// `mdm_fault` covers it and is not spent (spends one).
    fn take_fault(&self, request_type: &str) -> Option<MdmFaultKind> {
        let f = self.lab.devices[self.index].spec.mdm_fault.as_ref()?;
        if f.on.as_deref().is_some_and(|on| on != request_type) {
            return None;
        }
        let mut left = self.faults_left.lock().unwrap_or_else(|p| p.into_inner());
        if *left == 0 {
            return None;
        }
        *left -= 1;
        Some(f.kind)
    }

    /// The bytes a faulty client sends instead of `report`.
    fn spoil(&self, kind: MdmFaultKind, mut report: Dictionary) -> Vec<u8> {
        let n = {
            let mut g = self.faults_sent.lock().unwrap_or_else(|p| p.into_inner());
            *g += 1;
            *g
        };
        let uuid = crate::plist_util::get_str(&report, "CommandUUID")
            .unwrap_or("")
            .to_string();
        tracing::info!(udid = %self.udid, command_uuid = %uuid, ?kind, "mdm_fault: sending a spoiled report");
        spoil_report(kind, &mut report, &self.udid, n)
    }

    fn os(&self) -> std::sync::MutexGuard<'_, OsUpdateSim> {
        self.os.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The identity certificate the device got by SCEP, once enrolled that way.
    pub fn identity_certificate(&self) -> Option<&[u8]> {
        self.credential.certificate()
    }

    async fn put(&self, content_type: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
        let (id_header, id_value) = self.credential.header(&body)?;
        let _turn = self.lab.mdm_network.acquire().await;
        let r = self
            .mtls_http
            .get()
            .unwrap_or(&self.http)
            .put(self.target.url_for(content_type))
            .header("content-type", content_type)
            .header("user-agent", "MDM/1.0")
            .header(id_header, id_value)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let code = r.status().as_u16();
        let body = r.bytes().await.map_err(|e| e.to_string())?.to_vec();
        Ok((code, body))
    }

    /// Authenticate + TokenUpdate (brief §4).
    pub async fn enroll(&self) -> Result<(), String> {
        {
            let _turn = self.lab.mdm_network.acquire().await;
            self.credential.ensure(&self.http, &self.udid).await?;
        }
        if let (Some(ca), Some(id)) = (&self.target.server_ca, self.credential.tls_identity())
            && self.mtls_http.get().is_none()
        {
            let _ = self.mtls_http.set(super::enroll::tls_client(ca, Some(id))?);
        }
        let spec = &self.lab.devices[self.index].spec;
        let (version, build) = {
            let os = self.os();
            let (v, b) = os.version();
            (v.to_string(), b.to_string())
        };
        let auth = CheckinMessage::Authenticate {
            topic: self.target.topic.clone(),
            udid: self.udid.clone(),
            os_version: Some(version),
            build_version: Some(build),
            product_name: Some(spec.product_type.clone()),
            serial_number: Some(spec.serial.clone()),
            device_name: Some(spec.name.clone()),
        };
        let tu = CheckinMessage::TokenUpdate {
            topic: self.target.topic.clone(),
            udid: self.udid.clone(),
            token: self.token.clone(),
            push_magic: self.push_magic.clone(),
            unlock_token: None,
            awaiting_configuration: false,
        };
        for m in [auth, tu] {
            let (code, body) = self.put(CHECKIN_CONTENT_TYPE, m.to_plist()).await?;
            if code != 200 {
                return Err(format!(
                    "{} refused with HTTP {code}: {}",
                    m.message_type(),
                    String::from_utf8_lossy(&body)
                ));
            }
        }
        // A Shared iPad with a user logged in: that user's channel checks in too.
        if let Some(tu) = user_channel::token_update(spec, &self.target.topic, self.lab.seed) {
            let (code, body) = self.put(CHECKIN_CONTENT_TYPE, tu).await?;
            if code != 200 {
                return Err(format!(
                    "user-channel TokenUpdate refused with HTTP {code}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
        }
        Ok(())
    }

    /// One command connection: Idle, then answer commands until the server has none; then the
    /// DDM work a `DeclarativeManagement` command asked for.
    pub async fn connect(&self) -> Result<u32, String> {
        let r = self.command_connection().await;
        if let Err(e) = self.ddm_work().await {
            tracing::debug!(udid = %self.udid, error = %e, "DDM request failed");
        }
        r
    }

    async fn command_connection(&self) -> Result<u32, String> {
        let now = self.lab.clock.now();
        if self.os().offline(now) {
            return Ok(0);
        }
        let mut report = crate::plist_util::dict_to_xml(report_dict(&self.udid, None, "Idle"));
        let mut answered = 0;
        loop {
            let (code, body) = self.put(COMMAND_CONTENT_TYPE, report).await?;
            if code != 200 {
                // E.g. 400 for a report spoiled by `mdm_fault`: the server keeps the command
                // queued, and the next poll or push connects again.
                return Err(format!(
                    "server answered HTTP {code}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            if body.is_empty() {
                return Ok(answered);
            }
            let Ok(env) = parse_envelope(&body) else {
                // A command the device cannot read at all.
                let mut r = report_dict(&self.udid, None, "CommandFormatError");
                r.insert(
                    "ErrorChain".into(),
                    error_chain(&[(12001, "MCMDMErrorDomain", "Invalid command")]),
                );
                report = crate::plist_util::dict_to_xml(r);
                continue;
            };
            let now = self.lab.clock.now();
            match self.answer(now, &env.command_uuid, &env.request_type, &env.command) {
                Some((status, body)) => {
                    let mut r = report_dict(&self.udid, Some(&env.command_uuid), &status);
                    for (k, v) in body {
                        r.insert(k, v);
                    }
                    report = match self.take_fault(&env.request_type) {
                        Some(kind) => self.spoil(kind, r),
                        None => crate::plist_util::dict_to_xml(r),
                    };
                    answered += 1;
                }
                // 11.3.1: no response at all (rdar 40161553): the connection just ends.
                None => return Ok(answered),
            }
        }
    }

    fn answer(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        uuid: &str,
        request_type: &str,
        command: &Dictionary,
    ) -> Option<(String, Dictionary)> {
        let version = self.os().version().0.to_string();
        let facts = DdmFacts::builtin();
        match request_type {
            "ScheduleOSUpdate" | "OSUpdateStatus" | "AvailableOSUpdates"
                if facts.holds("legacy_update_commands_removed", &version) =>
            {
                Some(("Error".into(), removed_command(request_type)))
            }
            "ScheduleOSUpdate" | "OSUpdateStatus" | "AvailableOSUpdates" => {
                match self.os().handle(now, uuid, request_type, command) {
                    Outcome::Reply { status, body } => Some((status, body)),
                    Outcome::NoReply => None,
                }
            }
            "DeviceInformation" => Some(("Acknowledged".into(), self.device_information(command))),
            "SecurityInfo" => Some(("Acknowledged".into(), self.security_info())),
            // Turns DDM on and asks for a synchronisation (ddm brief §1); a `Data` that is not
            // a tokens document is a malformed command.
            "DeclarativeManagement" => match command_tokens(command) {
                Ok(tokens) => {
                    self.lock_ddm().enabled = true;
                    *self.ddm_sync.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokens);
                    Some(("Acknowledged".into(), Dictionary::new()))
                }
                Err(_) => Some(("CommandFormatError".into(), Dictionary::new())),
            },
            other => {
                let mut b = Dictionary::new();
                b.insert(
                    "ErrorChain".into(),
                    error_chain(&[(
                        12021,
                        "MCMDMErrorDomain",
                        &format!("Unknown command: {other} <MDMClientError:91>"),
                    )]),
                );
                Some(("Error".into(), b))
            }
        }
    }

    fn device_information(&self, command: &Dictionary) -> Dictionary {
        let live = self.lab.devices[self.index].live();
        let (version, build, disk_free) = {
            let os = self.os();
            let (v, b) = os.version();
            (v.to_string(), b.to_string(), os.disk_free())
        };
        let st = self.os().state().clone();
        let gb = |b: u64| real_value(b as f64 / 1e9);
        let cellular = live.device_class == "iPhone";
        let mut all = Dictionary::new();
        all.insert("UDID".into(), live.udid.clone().into());
        all.insert("DeviceName".into(), live.name.clone().into());
        all.insert("OSVersion".into(), version.into());
        all.insert("BuildVersion".into(), build.into());
        all.insert("ProductName".into(), live.product_type.clone().into());
        all.insert("Model".into(), live.model_number.clone().into());
        all.insert("ModelName".into(), live.device_class.clone().into());
        all.insert("SerialNumber".into(), live.serial.clone().into());
        all.insert("DeviceCapacity".into(), gb(live.disk_total));
        all.insert("AvailableDeviceCapacity".into(), gb(disk_free));
        all.insert(
            "BatteryLevel".into(),
            real_value(st.battery_level as f64 / 100.0),
        );
        all.insert(
            "CellularTechnology".into(),
            Value::Integer((if cellular { 1 } else { 0 }).into()),
        );
        all.insert("IsSupervised".into(), Value::Boolean(st.supervised));
        all.insert("WiFiMAC".into(), live.wifi_address.clone().into());
        all.insert("BluetoothMAC".into(), live.bluetooth_address.clone().into());
        let spec = &self.lab.devices[self.index].spec;
        all.insert(
            "IsMultiUser".into(),
            Value::Boolean(spec.shared_ipad.is_some()),
        );
        if let Some(s) = &spec.shared_ipad {
            // `mdm/commands/information.device.yaml`: ResidentUsers iOS 13.4+,
            // EstimatedResidentUsers iOS 14+ (a version filter is the harness's job: it asks
            // only for the keys the schema allows on the device's version).
            let resident = s
                .resident_users
                .unwrap_or(u64::from(s.logged_in_user.is_some()));
            all.insert("ResidentUsers".into(), Value::Integer(resident.into()));
            all.insert("EstimatedResidentUsers".into(), Value::Integer(32.into()));
        }
        all.insert("IsNetworkTethered".into(), Value::Boolean(false));
        if cellular {
            // The fleet's `network:` as the MDM sees it: a carrier network (and the SIM
            // lockdown reports ready) only for `cellular`.
            all.insert("DataRoamingEnabled".into(), Value::Boolean(false));
            if st.network == NetworkKind::Cellular {
                all.insert("CurrentCarrierNetwork".into(), "Simulated Carrier".into());
            }
            all.insert("IsRoaming".into(), Value::Boolean(false));
            let mut subs = Vec::new();
            if st.network == NetworkKind::Cellular {
                let mut s = Dictionary::new();
                s.insert("Slot".into(), "CTSubscriptionSlotOne".into());
                s.insert("IsRoaming".into(), Value::Boolean(false));
                s.insert("IsDataPreferred".into(), Value::Boolean(true));
                s.insert("CurrentCarrierNetwork".into(), "Simulated Carrier".into());
                subs.push(Value::Dictionary(s));
            }
            all.insert("ServiceSubscriptions".into(), Value::Array(subs));
        }
        let queries: Vec<String> = command
            .get("Queries")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|q| q.as_string().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut qr = Dictionary::new();
        for q in &queries {
            if let Some(v) = all.get(q) {
                qr.insert(q.clone(), v.clone());
            }
        }
        if queries.is_empty() {
            qr = all;
        }
        for (k, v) in &live.mdm_overrides {
            if qr.contains_key(k) {
                qr.insert(k.clone(), v.to_plist());
            }
        }
        let mut body = Dictionary::new();
        body.insert("QueryResponses".into(), Value::Dictionary(qr));
        body
    }

    fn security_info(&self) -> Dictionary {
        let passcode = self.os().state().passcode;
        let mut si = Dictionary::new();
        si.insert("HardwareEncryptionCaps".into(), Value::Integer(3.into()));
        si.insert("PasscodePresent".into(), Value::Boolean(passcode));
        si.insert("PasscodeCompliant".into(), Value::Boolean(true));
        si.insert("PasscodeCompliantWithProfiles".into(), Value::Boolean(true));
        // `ManagementStatus` (iOS 13+, `mdm/commands/information.security.yaml`). Apple marks
        // its `EnrolledViaDEP` `n/a` on iOS; the simulator reports it anyway so that a fleet's
        // DEP enrolment (`update.dep_enrolled`) is visible, and a real device's silence falls
        // back to the bench's configuration.
        let version = self.os().version().0.to_string();
        let ios13 = crate::version::Version::parse(&version)
            .is_ok_and(|v| v >= crate::version::Version::parse("13.0").expect("a version"));
        if ios13 {
            let spec = &self.lab.devices[self.index].spec;
            let mut ms = Dictionary::new();
            ms.insert(
                "EnrolledViaDEP".into(),
                Value::Boolean(spec.update.dep_enrolled),
            );
            ms.insert(
                "IsUserEnrollment".into(),
                Value::Boolean(spec.enrollment.user_enrollment),
            );
            si.insert("ManagementStatus".into(), Value::Dictionary(ms));
        }
        for (k, v) in &self.lab.devices[self.index].spec.mdm_overrides {
            if si.contains_key(k) {
                si.insert(k.clone(), v.to_plist());
            }
        }
        let mut body = Dictionary::new();
        body.insert("SecurityInfo".into(), Value::Dictionary(si));
        body
    }

    /// Advance the update state machine; apply restarts to usbmuxd and lockdown.
    /// Returns true when the device should check in (it just came back).
    fn tick(&self) -> bool {
        let now = self.lab.clock.now();
        let events = self.os().tick(now);
        {
            let mut os = self.os();
            self.lock_ddm().step(now, &mut os, DdmFacts::builtin());
        }
        let mut check_in = false;
        let dev = &self.lab.devices[self.index];
        let disk_free = self.os().disk_free();
        if dev.live().disk_free != disk_free {
            dev.update_live(|l| l.disk_free = disk_free);
        }
        for e in events {
            match e {
                UpdateEvent::RestartBegins { .. } => {
                    tracing::info!(udid = %self.udid, "simulated device restarting to install");
                    self.lab.detach(self.index);
                }
                UpdateEvent::RestartEnds { version, build } => {
                    tracing::info!(udid = %self.udid, %version, %build, "simulated device back with a new version");
                    dev.update_live(|l| {
                        l.ios_version = version.clone();
                        l.ios_build = build.clone();
                    });
                    self.lab.attach(self.index);
                    check_in = true;
                }
                _ => {}
            }
        }
        check_in
    }

    /// Run forever: enroll, then connect on wake, on the poll interval, and after a restart.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.enroll().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(udid = %self.udid, error = %e, "enrolment failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        let poll = self
            .lab
            .real(self.target.poll_interval)
            .max(Duration::from_millis(50));
        let mut next_poll = tokio::time::Instant::now() + poll;
        loop {
            // A quiet device (nothing under way that time alone moves, no DDM) sleeps until it
            // is woken or polls; the long tick is only a safety net. 10 000 devices each
            // ticking every 50 ms took both cores of the simulator while idle (issue 16).
            let tick = if self.quiet() { QUIET_TICK } else { TICK };
            let woke = tokio::select! {
                _ = self.wake.notified() => true,
                _ = tokio::time::sleep_until(next_poll) => { next_poll += poll; true }
                _ = tokio::time::sleep(tick) => false,
            };
            let back = self.tick();
            if (woke || back)
                && let Err(e) = self.connect().await
            {
                tracing::debug!(udid = %self.udid, error = %e, "command connection failed");
            } else if let Err(e) = self.ddm_work().await {
                tracing::debug!(udid = %self.udid, error = %e, "DDM request failed");
            }
        }
    }
}

/// How often a device with something under way advances its update machinery (real time).
const TICK: Duration = Duration::from_millis(50);
/// How often a quiet device does (see [`MdmAgent::quiet`]).
const QUIET_TICK: Duration = Duration::from_secs(1);

impl MdmAgent {
    /// True when no tick can change anything before the next wake or poll: the update
    /// machinery is quiet, and DDM is off or settled (no enforcement under way, no status
    /// report to send again: [`DdmClient::settled`]), with no synchronisation asked for.
    fn quiet(&self) -> bool {
        let now = self.lab.clock.now();
        let os = self.os();
        let ddm = self.lock_ddm();
        os.quiet()
            && (!ddm.enabled || ddm.settled(now, &os))
            && self
                .ddm_sync
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none()
    }

    fn lock_ddm(&self) -> std::sync::MutexGuard<'_, DdmClient> {
        self.ddm.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The DDM side of a wake: a requested synchronisation, then the status items that
    /// changed. Nothing while DDM is off or the device is restarting.
    async fn ddm_work(&self) -> Result<(), String> {
        let now = self.lab.clock.now();
        if !self.lock_ddm().enabled || self.os().offline(now) {
            return Ok(());
        }
        let requested = self
            .ddm_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tokens) = requested {
            let clock = &self.lab.clock;
            ddm_device::sync(
                self,
                &self.udid,
                tokens,
                &self.ddm,
                &self.os,
                || clock.now(),
                DdmFacts::builtin(),
            )
            .await?;
        }
        ddm_device::send_status(self, &self.udid, &self.ddm, &self.os, self.lab.clock.now())
            .await
            .map(|_| ())
    }
}

impl DdmTransport for MdmAgent {
    async fn checkin(&self, c: DdmCheckin) -> Result<(u16, Vec<u8>), String> {
        self.put(CHECKIN_CONTENT_TYPE, c.to_plist()).await
    }
}

/// What an iOS 27+ device answers to the update commands Apple removed in 27.0
/// (`legacy_update_commands_removed` in `data/ddm.yaml`): `Error` with the chain devices give
/// for a request type they do not handle — `MCMDMErrorDomain` 12021, "“<Type>” is not a valid
/// request type." (ddm brief §5: micromdm/micromdm#970, fleetdm/fleet#51653; for removed
/// commands an inference until a 27 device is captured).
fn removed_command(request_type: &str) -> Dictionary {
    let mut b = Dictionary::new();
    b.insert(
        "ErrorChain".into(),
        error_chain(&[(
            12021,
            "MCMDMErrorDomain",
            &format!("\u{201c}{request_type}\u{201d} is not a valid request type."),
        )]),
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::report::parse_report;
    use std::path::Path;

    fn agent(fault: &str) -> MdmAgent {
        let text = format!(
            "devices:\n  - name: Faulty\n    product_type: iPhone12,1\n    ios: {{ version: \"17.5.1\", build: 21F90 }}\n    disk: {{ total: 64 GB, free: 20 GB }}\n    battery: {{ level: 80 }}\n    mdm_fault: {fault}\n"
        );
        let specs = super::super::fleet::parse(Path::new("f.yaml"), &text).unwrap();
        let lab = SimLab::new(specs, 3, 1.0, chrono::Utc::now()).unwrap();
        let target = MdmTarget {
            base_url: "http://127.0.0.1:9".into(),
            apns: None,
            poll_interval: Duration::from_secs(60),
            topic: "com.apple.mgmt.External.test".into(),
            urls: None,
            server_ca: None,
        };
        MdmAgent::new(lab, 0, b"not a real certificate", target)
    }

    fn agent_with(extra: &str, product_type: &str, version: &str) -> MdmAgent {
        let text = format!(
            "devices:\n  - name: D\n    product_type: {product_type}\n    ios: {{ version: \"{version}\", build: X1 }}\n    disk: {{ total: 64 GB, free: 20 GB }}\n    battery: {{ level: 80 }}\n{extra}"
        );
        let specs = super::super::fleet::parse(Path::new("f.yaml"), &text).unwrap();
        let lab = SimLab::new(specs, 3, 1.0, chrono::Utc::now()).unwrap();
        let target = MdmTarget {
            base_url: "http://127.0.0.1:9".into(),
            apns: None,
            poll_interval: Duration::from_secs(60),
            topic: "com.apple.mgmt.External.test".into(),
            urls: None,
            server_ca: None,
        };
        MdmAgent::new(lab, 0, b"not a real certificate", target)
    }

    fn queries(a: &MdmAgent) -> Dictionary {
        let body = a.device_information(&Dictionary::new());
        body["QueryResponses"].as_dictionary().unwrap().clone()
    }

    #[test]
    fn the_fleet_s_enrollment_shared_ipad_and_network_show_through_the_mdm_keys() {
        let a = agent_with(
            "    shared_ipad: { logged_in_user: alice }\n    update: { dep_enrolled: true }\n",
            "iPad13,1",
            "17.5.1",
        );
        let q = queries(&a);
        assert_eq!(q["IsMultiUser"], Value::Boolean(true));
        assert_eq!(q["ResidentUsers"], Value::Integer(1.into()));
        assert_eq!(q["IsNetworkTethered"], Value::Boolean(false));
        let si = a.security_info();
        let ms = si["SecurityInfo"].as_dictionary().unwrap()["ManagementStatus"]
            .as_dictionary()
            .unwrap()
            .clone();
        assert_eq!(ms["EnrolledViaDEP"], Value::Boolean(true));
        assert_eq!(ms["IsUserEnrollment"], Value::Boolean(false));
        // Nobody logged in: no resident user.
        let a = agent_with("    shared_ipad: {}\n", "iPad13,1", "17.5.1");
        assert_eq!(queries(&a)["ResidentUsers"], Value::Integer(0.into()));
        // An iPhone on cellular: a carrier network; on Wi-Fi: none. Before iOS 13 no
        // ManagementStatus (information.security.yaml).
        let a = agent_with("    network: cellular\n", "iPhone12,1", "12.5.7");
        let q = queries(&a);
        assert_eq!(q["IsMultiUser"], Value::Boolean(false));
        assert_eq!(q["CurrentCarrierNetwork"], "Simulated Carrier".into());
        assert!(
            !a.security_info()["SecurityInfo"]
                .as_dictionary()
                .unwrap()
                .contains_key("ManagementStatus")
        );
        let a = agent_with("", "iPhone12,1", "17.5.1");
        assert!(!queries(&a).contains_key("CurrentCarrierNetwork"));
    }

    #[test]
    fn a_fault_fires_on_its_request_type_only_and_is_spent_after_times() {
        let a = agent("{ kind: wrong_command_uuid, on: OSUpdateStatus, times: 2 }");
        assert_eq!(a.take_fault("DeviceInformation"), None);
        for _ in 0..2 {
            assert_eq!(
                a.take_fault("OSUpdateStatus"),
                Some(MdmFaultKind::WrongCommandUuid)
            );
        }
        assert_eq!(a.take_fault("OSUpdateStatus"), None, "spent");

        let any = agent("{ kind: malformed_report }");
        assert_eq!(
            any.take_fault("SecurityInfo"),
            Some(MdmFaultKind::MalformedReport)
        );
        assert_eq!(
            any.take_fault("OSUpdateStatus"),
            None,
            "times defaults to 1"
        );
    }

    #[test]
    fn spoiled_reports_are_unparsable_or_carry_a_made_up_uuid() {
        let mut real = report_dict("UDID-1", Some("cmd-1"), "Acknowledged");
        real.insert("OSUpdateStatus".into(), Value::Array(Vec::new()));
        let good = parse_report(&crate::plist_util::dict_to_xml(real.clone())).unwrap();

        let bad = spoil_report(
            MdmFaultKind::MalformedReport,
            &mut real.clone(),
            "UDID-1",
            1,
        );
        assert!(bad.starts_with(b"<?xml"), "real XML, cut off");
        assert!(parse_report(&bad).is_err());

        let wrong = spoil_report(
            MdmFaultKind::WrongCommandUuid,
            &mut real.clone(),
            "UDID-1",
            1,
        );
        let r = parse_report(&wrong).unwrap();
        assert_ne!(r.command_uuid, good.command_uuid);
        assert!(r.command_uuid.as_deref().is_some_and(|u| u.len() == 36));
        assert_eq!(r.status, good.status);
        let again = spoil_report(
            MdmFaultKind::WrongCommandUuid,
            &mut real.clone(),
            "UDID-1",
            2,
        );
        assert_ne!(
            parse_report(&again).unwrap().command_uuid,
            r.command_uuid,
            "each spoiled report gets its own made-up UUID"
        );
    }
}
