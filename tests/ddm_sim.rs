//! Simulated iPhones speaking DDM, driven as the harness will drive a bench: declarations and
//! syncs through the embedded MDM server's HTTP API, observations from the status history the
//! devices fill, over `lab sim serve` on a virtual clock. One test per sourced behaviour of
//! `data/ddm.yaml`, and the version truth of the removed update commands.
//!
//! Models and builds come from the offline GDMF feed (`fuzz/corpus/feed_gdmf/pmv.json`:
//! iPhone14,2 with 17.7.2 21H221, 18.7.8 22H352, 26.5 23F77, 26.6.1 23G83). The feed holds no
//! iOS 27 build yet, so the 27 device's build is a synthetic placeholder (marked below).

mod common;
use base64::Engine;
use common::*;
use lab::mdm::backend::{MdmBackend, NanoMdm};
use lab::mdm::ddm::status::{InstallState, SoftwareUpdateView, StatusReport};
use lab::mdm::{Command, parse_report};
use std::time::{Duration, Instant};

struct Lab {
    sim: Sim,
    http: reqwest::Client,
    udids: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Lab {
    async fn start(fleet: &str, speed: f64) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let f = fleet_file(&dir, "fleet.yaml", fleet);
        let specs = lab::sim::fleet::load(&f).unwrap();
        let sim = Sim::start_with(&f, &["--speed", &speed.to_string()]);
        sim.enrolled(specs.len()).await;
        Lab {
            sim,
            http: lab::http_client::client(Duration::from_secs(10)),
            udids: specs.iter().map(|s| s.udid.clone()).collect(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.mdm_url.as_deref().unwrap())
    }

    async fn call(
        &self,
        m: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> serde_json::Value {
        let mut r = self
            .http
            .request(m, self.url(path))
            .basic_auth("nanomdm", Some(TEST_API_KEY));
        if let Some(b) = body {
            r = r.body(b);
        }
        let r = r.send().await.unwrap();
        assert!(r.status().is_success(), "{path}: HTTP {}", r.status());
        r.json().await.unwrap()
    }

    /// Puts the enforcement and sends the DeclarativeManagement command (pushed).
    async fn dose(&self, udid: &str, version: &str, local: &str) -> Instant {
        let d = serde_json::json!({
            "Type": "com.apple.configuration.softwareupdate.enforcement.specific",
            "Identifier": "lab.su.target",
            "Payload": {"TargetOSVersion": version, "TargetLocalDateTime": local}
        });
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/ddm/declarations/{udid}"),
            Some(d.to_string()),
        )
        .await;
        let s = self
            .call(reqwest::Method::POST, &format!("/v1/ddm/sync/{udid}"), None)
            .await;
        assert_eq!(s["request_type"], "DeclarativeManagement");
        Instant::now()
    }

    /// Every status report so far, parsed, with the real instant it was first seen here.
    async fn reports(&self, udid: &str) -> Vec<StatusReport> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/ddm/status/{udid}"),
                None,
            )
            .await;
        v["reports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(r["raw"].as_str().unwrap())
                    .unwrap();
                StatusReport::parse(&raw).unwrap()
            })
            .collect()
    }

    async fn view(&self, udid: &str) -> SoftwareUpdateView {
        let mut v = SoftwareUpdateView::default();
        for r in self.reports(udid).await {
            v.fold(&r);
        }
        v
    }

    /// Polls until `pred` holds on the folded status; returns when it first did.
    async fn until(
        &self,
        udid: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&SoftwareUpdateView) -> bool,
    ) -> Instant {
        let start = Instant::now();
        loop {
            let v = self.view(udid).await;
            if pred(&v) {
                return Instant::now();
            }
            assert!(
                start.elapsed() < within,
                "{udid}: not {what} within {within:?}: {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The install-state values in the order the device reported them.
    async fn states(&self, udid: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.reports(udid).await {
            if let Some(s) = r
                .get("softwareupdate.install-state")
                .and_then(|v| v.as_str())
                && out.last().map(String::as_str) != Some(s)
            {
                out.push(s.to_string());
            }
        }
        out
    }
}

/// A supervised iPhone 13 Pro, plugged in, Wi-Fi, device-local time = UTC + `offset` minutes.
fn iphone(name: &str, version: &str, build: &str, offset: i32, extra: &str) -> String {
    format!(
        "  - name: {name}\n    product_type: iPhone14,2\n    ios: {{ version: \"{version}\", build: {build} }}\n    disk: {{ total: 128 GB, free: 40 GB }}\n    battery: {{ level: 90, charging: true, external_power: true }}\n    update: {{ download_rate: 50 MB, install_duration: 2m, restart_duration: 1m, local_offset_minutes: {offset}{extra} }}\n"
    )
}

fn fleet(start: &str, devices: &[String]) -> String {
    format!(
        "seed: 7\nclock: {{ start: \"{start}\" }}\nmdm: {{ poll_interval: 30m }}\ncatalogue:\n  - {{ version: \"18.7.8\", build: 22H352, download_size: 500 MB, install_size: 200 MB }}\n  - {{ version: \"26.6.1\", build: 23G83, download_size: 500 MB, install_size: 200 MB }}\ndevices:\n{}",
        devices.concat()
    )
}

const START: &str = "2026-12-01T10:00:00Z";

/// `deadline_is_device_local`: a deadline of 12:30 local on a UTC+2 device is 10:30 UTC, 30
/// simulated minutes in; read as UTC it would be 2.5 h. The walk is the documented one:
/// downloading, prepared, installing, then none on the new version, with the declaration named
/// as the install reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_deadline_installs_at_the_device_local_time() {
    let speed = 120.0;
    let lab = Lab::start(
        &fleet(START, &[iphone("Local", "26.5", "23F77", 120, "")]),
        speed,
    )
    .await;
    let u = lab.udids[0].clone();
    let dosed = lab.dose(&u, "26.6.1", "2026-12-01T12:30:00").await;
    let prepared = lab
        .until(&u, Duration::from_secs(20), "prepared", |v| {
            v.install_state == Some(InstallState::Prepared)
        })
        .await;
    let v = lab.view(&u).await;
    let p = v.pending_version.clone().unwrap();
    assert_eq!(
        (p.os_version.as_str(), p.build_version.as_str()),
        ("26.6.1", "23G83")
    );
    assert_eq!(
        p.target_local_date_time.as_deref(),
        Some("2026-12-01T12:30:00")
    );
    let reason = v.install_reason.clone().unwrap();
    assert_eq!(reason.reason, ["declaration"]);
    assert_eq!(reason.declaration_id.as_deref(), Some("lab.su.target"));
    assert!(
        prepared.duration_since(dosed).as_secs_f64() * speed < 30.0 * 60.0,
        "prepared before the deadline"
    );
    let done = lab
        .until(&u, Duration::from_secs(60), "on 26.6.1", |v| {
            v.os_version.as_deref() == Some("26.6.1")
        })
        .await;
    let sim = done.duration_since(dosed).as_secs_f64() * speed;
    assert!(
        sim < 2.0 * 3600.0,
        "installed {sim:.0} s after the dose: the deadline was read as UTC"
    );
    let v = lab.view(&u).await;
    assert_eq!(v.build_version.as_deref(), Some("23G83"));
    lab.until(&u, Duration::from_secs(10), "none", |v| {
        v.install_state == Some(InstallState::None)
    })
    .await;
    let states = lab.states(&u).await;
    let want = ["none", "downloading", "prepared", "installing", "none"];
    assert!(states.ends_with(&want.map(String::from)[1..]), "{states:?}");
    assert_eq!(
        probe_build(&lab, &u),
        "23G83",
        "lockdown shows the new build too"
    );
}

fn probe_build(lab: &Lab, udid: &str) -> String {
    let o = run_lab(&["probe", "--json", "--udid", udid], Some(&lab.sim.addr));
    let j = parse_json(&o);
    j["devices"][0]["baseline"]["build_version"]["value"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// `past_deadline_install_delay`: a deadline already past installs about an hour after the
/// declaration arrives, not at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_deadline_installs_about_an_hour_later() {
    let speed = 360.0;
    let lab = Lab::start(
        &fleet(START, &[iphone("Late", "17.7.2", "21H221", 0, "")]),
        speed,
    )
    .await;
    let u = lab.udids[0].clone();
    let dosed = lab.dose(&u, "18.7.8", "2026-11-01T09:00:00").await;
    let installing = lab
        .until(&u, Duration::from_secs(40), "installing", |v| {
            v.install_state == Some(InstallState::Installing)
                || v.os_version.as_deref() == Some("18.7.8")
        })
        .await;
    let sim = installing.duration_since(dosed).as_secs_f64() * speed;
    assert!(
        sim >= 3600.0,
        "installing {sim:.0} s after the dose; want about an hour"
    );
    lab.until(&u, Duration::from_secs(30), "on 18.7.8", |v| {
        v.os_version.as_deref() == Some("18.7.8")
    })
    .await;
}

/// `unoffered_target_stays_active`: a target no feed offers leaves the device where it is,
/// install-state none with an empty pending-version, past the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_not_offered_stays_active_without_updating() {
    let speed = 360.0;
    let lab = Lab::start(
        &fleet(START, &[iphone("Nowhere", "26.5", "23F77", 0, "")]),
        speed,
    )
    .await;
    let u = lab.udids[0].clone();
    let dosed = lab.dose(&u, "26.9", "2026-12-01T10:10:00").await;
    lab.until(&u, Duration::from_secs(20), "reporting", |v| {
        v.install_state.is_some()
    })
    .await;
    // Past the deadline plus the hour (10 + 60 simulated minutes = 12 s real at 360×).
    while dosed.elapsed().as_secs_f64() * speed < 80.0 * 60.0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = lab.view(&u).await;
    assert_eq!(v.install_state, Some(InstallState::None), "{v:?}");
    assert_eq!(v.pending_version.unwrap().os_version, "");
    assert_eq!(v.os_version.as_deref(), Some("26.5"));
    let s = lab
        .call(
            reqwest::Method::GET,
            &format!("/v1/ddm/declarations/{u}"),
            None,
        )
        .await;
    assert_eq!(s["active"], true);
}

/// `passcode_needs_the_user`: at the deadline a passcode device prompts; a user who never
/// approves keeps it prepared, on the old version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passcode_still_needs_the_simulated_user() {
    let speed = 360.0;
    let dev = iphone("Locked", "26.5", "23F77", 0, ", user: never")
        .replace("    update:", "    passcode: true\n    update:");
    let lab = Lab::start(&fleet(START, &[dev]), speed).await;
    let u = lab.udids[0].clone();
    let dosed = lab.dose(&u, "26.6.1", "2026-12-01T10:20:00").await;
    lab.until(&u, Duration::from_secs(20), "prepared", |v| {
        v.install_state == Some(InstallState::Prepared)
    })
    .await;
    while dosed.elapsed().as_secs_f64() * speed < 60.0 * 60.0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = lab.view(&u).await;
    assert_eq!(v.install_state, Some(InstallState::Prepared), "{v:?}");
    assert_eq!(v.os_version.as_deref(), Some("26.5"));
}

/// `failure_reason_on_failure`: on battery below the threshold the download is blocked:
/// install-state failed, failure-reason count 1 with the reason and an RFC 3339 timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_update_reports_failed_with_its_reason() {
    let dev = iphone("Flat", "26.5", "23F77", 0, "").replace(
        "battery: { level: 90, charging: true, external_power: true }",
        "battery: { level: 20, charging: false, external_power: false }",
    );
    let lab = Lab::start(&fleet(START, &[dev]), 60.0).await;
    let u = lab.udids[0].clone();
    lab.dose(&u, "26.6.1", "2026-12-02T10:00:00").await;
    lab.until(&u, Duration::from_secs(20), "failed", |v| {
        v.install_state == Some(InstallState::Failed)
    })
    .await;
    let f = lab.view(&u).await.failure_reason.unwrap();
    assert_eq!(f.count, 1);
    assert_eq!(f.reason.as_deref(), Some("DownloadInsufficientPower"));
    assert!(chrono::DateTime::parse_from_rfc3339(f.timestamp.as_deref().unwrap()).is_ok());
}

/// `legacy_update_commands_removed`: an iOS 27 device answers OSUpdateStatus with Error 12021;
/// a 26 device still acts on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ios_27_answers_the_removed_update_commands_with_an_error() {
    // 24A5000: synthetic placeholder, no iOS 27 build in the offline feeds yet.
    let devices = [
        iphone("Old", "26.5", "23F77", 0, ""),
        iphone("New", "27.0", "24A5000", 0, ""),
    ];
    let lab = Lab::start(&fleet(START, &devices), 60.0).await;
    let b: NanoMdm = lab.sim.backend();
    for (i, (udid, want)) in lab.udids.iter().zip(["Acknowledged", "Error"]).enumerate() {
        for (j, cmd) in [Command::OSUpdateStatus, Command::AvailableOSUpdates]
            .iter()
            .enumerate()
        {
            let uuid = format!("legacy-{i}-{j}");
            b.enqueue(udid, cmd, &uuid).await.unwrap();
            let start = Instant::now();
            let res = loop {
                let rs = b.results(udid).await.unwrap();
                if let Some(r) = rs.into_iter().find(|r| r.command_uuid == uuid) {
                    break r;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "no answer to {uuid}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(res.status, want, "{udid} {cmd:?}");
            if want == "Error" {
                let r = parse_report(&res.raw).unwrap();
                let chain = &r.error_chain;
                assert_eq!(chain[0].code, Some(12021), "{chain:?}");
                assert_eq!(chain[0].domain.as_deref(), Some("MCMDMErrorDomain"));
                let text = format!("{chain:?}");
                assert!(text.contains("is not a valid request type"), "{text}");
            }
        }
    }
}
