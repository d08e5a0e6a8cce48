//! Behaviour tests of the simulated OS update: one per documented update path (MDM brief §0–2,
//! §7) and one per row of `data/quirks.yaml`, driven the way the harness drives a real bench —
//! commands through the embedded MDM server's NanoMDM-compatible HTTP API, versions over the
//! simulated lab's usbmuxd socket (`lab probe`). Nothing here reaches into the simulator.
//!
//! Simulated time runs `--speed` times faster than real time. Where a test asserts *when*
//! something happened it uses bounds that hold however slow the machine is: the simulated
//! clock starts between spawning `lab sim serve` and its "ready" line, so simulated time at a
//! real instant `t` lies between `(t - ready) × speed` and `(t - spawned) × speed`.

mod common;
use common::*;
use lab::mdm::backend::{CommandResult, MdmBackend, NanoMdm};
use lab::mdm::{Command, InstallAction, OsUpdateStatusItem, Report, UpdateItem, parse_report};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// How long to wait for one command's answer (real time).
const ANSWER: Duration = Duration::from_secs(20);

static NEXT_UUID: AtomicUsize = AtomicUsize::new(0);

/// CommandUUIDs are unique per server, not per device.
fn new_uuid(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT_UUID.fetch_add(1, Ordering::Relaxed))
}

/// A running simulated lab plus the harness's view of it.
struct Lab {
    sim: Sim,
    b: NanoMdm,
    http: reqwest::Client,
    udids: Vec<String>,
    speed: f64,
    spawned: Instant,
    ready: Instant,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// Starts `lab sim serve` on this fleet and waits until every device has enrolled.
    async fn start(fleet: &str, speed: f64) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let f = fleet_file(&dir, "fleet.yaml", fleet);
        let specs = lab::sim::fleet::load(&f).unwrap();
        let spawned = Instant::now();
        let sim = Sim::start_with(&f, &["--speed", &speed.to_string()]);
        let ready = Instant::now();
        let b = NanoMdm::embedded(
            sim.mdm_url.as_deref().expect("the sim runs an MDM"),
            TEST_API_KEY,
            Duration::from_secs(10),
        );
        let lab = Lab {
            sim,
            b,
            http: lab::http_client::client(Duration::from_secs(5)),
            udids: specs.iter().map(|s| s.udid.clone()).collect(),
            speed,
            spawned,
            ready,
            _dir: dir,
        };
        lab.enrolled().await;
        lab
    }

    fn udid(&self, i: usize) -> &str {
        &self.udids[i]
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.mdm_url.as_deref().unwrap())
    }

    async fn get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(self.url(path))
            .basic_auth("nanomdm", Some(TEST_API_KEY))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn enrolled(&self) {
        let start = Instant::now();
        loop {
            let v = self.get("/v1/enrollments").await;
            let ready = v["enrollments"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["token_update_tally"].as_u64().unwrap_or(0) >= 1)
                .count();
            if ready >= self.udids.len() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "only {ready} of {} enrolled",
                self.udids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Upper bound of the simulated time elapsed since `clock.start` at real instant `t`.
    fn sim_upper(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.spawned)
            .mul_f64(self.speed)
    }

    /// Lower bound of the simulated time elapsed since `clock.start` at real instant `t`.
    fn sim_lower(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.ready).mul_f64(self.speed)
    }

    /// Sleeps until surely `d` of simulated time has passed since real instant `from`.
    async fn sleep_sim(&self, from: Instant, d: Duration) {
        while self.sim_lower(Instant::now()) < self.sim_upper(from) + d {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Queue a command (pushed through the simulated APNs); returns its CommandUUID.
    async fn send(&self, udid: &str, cmd: &Command) -> String {
        let uuid = new_uuid(cmd.request_type());
        let q = self.b.enqueue(udid, cmd, &uuid).await.unwrap();
        assert_eq!(
            q.pushed,
            Some(true),
            "pushed through the simulated APNs: {q:?}"
        );
        uuid
    }

    /// The device's final (not NotNow) answer to `uuid`.
    async fn result(&self, udid: &str, uuid: &str, within: Duration) -> CommandResult {
        let start = Instant::now();
        loop {
            if let Some(r) = self
                .b
                .results(udid)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.command_uuid == uuid && r.status != "NotNow")
            {
                return r;
            }
            assert!(
                start.elapsed() < within,
                "no answer to {uuid} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Enqueue, wait for the final answer, parse it.
    async fn ask(&self, udid: &str, cmd: &Command) -> Report {
        let uuid = self.send(udid, cmd).await;
        let r = self.result(udid, &uuid, ANSWER).await;
        parse_report(&r.raw).unwrap()
    }

    /// ScheduleOSUpdate → (envelope Status, [(ProductKey, InstallAction, Status)]).
    async fn schedule(&self, udid: &str, cmd: &Command) -> (String, Vec<[String; 3]>) {
        let rep = self.ask(udid, cmd).await;
        (rep.status.as_str().to_string(), result_items(&rep))
    }

    async fn status(&self, udid: &str) -> Vec<OsUpdateStatusItem> {
        let rep = self.ask(udid, &Command::OSUpdateStatus).await;
        assert_eq!(rep.status.as_str(), "Acknowledged");
        lab::mdm::os_update_status(&rep).expect("OSUpdateStatus array")
    }

    /// (OSVersion, BuildVersion) over MDM DeviceInformation.
    async fn version(&self, udid: &str) -> (String, String) {
        let rep = self
            .ask(udid, &Command::baseline_device_information())
            .await;
        let qr = lab::mdm::query_responses(&rep).unwrap();
        let s = |k: &str| qr[k].as_string().unwrap().to_string();
        (s("OSVersion"), s("BuildVersion"))
    }

    /// Polls OSUpdateStatus until the update is downloaded; returns its item.
    async fn wait_downloaded(&self, udid: &str, within: Duration) -> OsUpdateStatusItem {
        let start = Instant::now();
        loop {
            let items = self.status(udid).await;
            if let Some(i) = items.first()
                && i.is_downloaded.value == Some(true)
            {
                return i.clone();
            }
            assert!(
                start.elapsed() < within,
                "download not complete within {within:?}: {items:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls DeviceInformation until the device runs `version`; returns when that was seen.
    async fn wait_version(&self, udid: &str, version: &str, within: Duration) -> Instant {
        let start = Instant::now();
        loop {
            if self.version(udid).await.0 == version {
                return Instant::now();
            }
            assert!(
                start.elapsed() < within,
                "{udid} not on {version} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls OSUpdateStatus until the install has begun (Status Installing, or the update has
    /// gone because the device already restarted); returns when that was first seen.
    async fn wait_install_began(&self, udid: &str, within: Duration) -> Instant {
        let start = Instant::now();
        loop {
            let items = self.status(udid).await;
            let seen = Instant::now();
            match items.first() {
                None => return seen,
                Some(i) if i.status.as_deref() == Some("Installing") => return seen,
                Some(i) => assert_eq!(i.status.as_deref(), Some("Idle"), "{items:?}"),
            }
            assert!(
                start.elapsed() < within,
                "install did not begin within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's record of one command: deliveries, reports, queue state.
    async fn history_of(&self, udid: &str, uuid: &str) -> serde_json::Value {
        let h = self.get(&format!("/v1/history/{udid}")).await;
        h["commands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["command_uuid"] == uuid)
            .cloned()
            .unwrap_or_else(|| panic!("{uuid} not in the history of {udid}"))
    }
}

fn count(h: &serde_json::Value, key: &str) -> usize {
    h[key].as_array().map(Vec::len).unwrap_or(0)
}

fn report_statuses(h: &serde_json::Value) -> Vec<String> {
    h["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap_or("").to_string())
        .collect()
}

fn result_items(rep: &Report) -> Vec<[String; 3]> {
    lab::mdm::update_results(rep)
        .unwrap_or_default()
        .into_iter()
        .map(|u| {
            [
                u.product_key.unwrap_or_default(),
                u.install_action.unwrap_or_default(),
                u.status.unwrap_or_default(),
            ]
        })
        .collect()
}

fn item(key: &str, action: &str, status: &str) -> Vec<[String; 3]> {
    vec![[key.into(), action.into(), status.into()]]
}

fn chain(rep: &Report) -> Vec<(i64, String)> {
    rep.error_chain
        .iter()
        .map(|e| (e.code.unwrap_or(-1), e.domain.clone().unwrap_or_default()))
        .collect()
}

fn by_version(version: &str, action: InstallAction) -> Command {
    Command::ScheduleOSUpdate {
        updates: vec![UpdateItem {
            product_key: None,
            product_version: Some(version.into()),
            install_action: action,
        }],
    }
}

fn by_key(key: &str, action: InstallAction) -> Command {
    Command::ScheduleOSUpdate {
        updates: vec![UpdateItem {
            product_key: Some(key.into()),
            product_version: None,
            install_action: action,
        }],
    }
}

/// (ProductVersion, BuildVersion) over lockdown; `None` while the device is not in usbmuxd.
fn probe_version(addr: &str, udid: &str) -> Option<(String, String)> {
    let o = run_lab(&["probe", "--json", "--udid", udid], Some(addr));
    if !o.status.success() {
        return None;
    }
    let j = parse_json(&o);
    let b = &j["devices"][0]["baseline"];
    Some((
        b["product_version"]["value"].as_str()?.to_string(),
        b["build_version"]["value"].as_str()?.to_string(),
    ))
}

/// A fleet file. `catalogue`: entries from [`entry`]; `devices`: from [`iphone`].
fn fleet(seed: u64, start: &str, poll: &str, catalogue: &[String], devices: &[String]) -> String {
    let cat = if catalogue.is_empty() {
        "catalogue: []\n".to_string()
    } else {
        format!("catalogue:\n{}", catalogue.concat())
    };
    format!(
        "seed: {seed}\nclock: {{ start: \"{start}\" }}\nmdm: {{ poll_interval: {poll} }}\n{cat}devices:\n{}",
        devices.concat()
    )
}

fn entry(version: &str, build: &str, download: &str, install: &str) -> String {
    format!(
        "  - {{ version: \"{version}\", build: {build}, download_size: {download}, install_size: {install} }}\n"
    )
}

/// A supervised iPhone on Wi-Fi, 20 GB free, 90 % and plugged in unless `extra` (lines
/// indented by four spaces) says otherwise.
fn iphone(name: &str, version: &str, build: &str, extra: &str) -> String {
    let mut s = format!(
        "  - name: {name}\n    product_type: iPhone12,1\n    ios: {{ version: \"{version}\", build: {build} }}\n"
    );
    if !extra.contains("disk:") {
        s.push_str("    disk: { total: 64 GB, free: 20 GB }\n");
    }
    if !extra.contains("battery:") {
        s.push_str("    battery: { level: 90, charging: true, external_power: true }\n");
    }
    s.push_str(extra);
    s
}

const NOON: &str = "2026-11-27T12:00:00Z";
const NEW: &str = "17.6.1";
const NEW_BUILD: &str = "21G93";
const NEW_KEY: &str = "iOSUpdate21G93";

fn catalogue_17(download: &str) -> Vec<String> {
    vec![entry(NEW, NEW_BUILD, download, "200 MB")]
}

fn iphone_17(name: &str, extra: &str) -> String {
    iphone(name, "17.5.1", "21F90", extra)
}

// ---------------------------------------------------------------------------------------------
// Documented update paths
// ---------------------------------------------------------------------------------------------

/// Brief §0.2: the first `Default` downloads, a second `Default` installs. (sim_mdm.rs covers
/// the restart; this one follows OSUpdateStatus through every step.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_step_default_downloads_then_installs_with_status_at_each_step() {
    // 600 MB at 5 MB/s: 120 s simulated = 2 s real at speed 60.
    let dev = iphone_17(
        "Two-step",
        "    update: { download_rate: 5 MB, install_duration: 2m, restart_duration: 30s }\n",
    );
    let lab = Lab::start(
        &fleet(1, NOON, "30s", &catalogue_17("600 MB"), &[dev]),
        60.0,
    )
    .await;
    let u = lab.udid(0);
    let default = by_version(NEW, InstallAction::Default);

    assert!(lab.status(u).await.is_empty(), "nothing in progress yet");
    let (st, items) = lab.schedule(u, &default).await;
    assert_eq!(st, "Acknowledged");
    assert_eq!(items, item(NEW_KEY, "DownloadOnly", "Downloading"));

    // While downloading: a further Default does not install, nor start a second download.
    let (_, items) = lab.schedule(u, &default).await;
    assert_eq!(items, item(NEW_KEY, "DownloadOnly", "Downloading"));
    let s = lab.status(u).await;
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].product_key.as_deref(), Some(NEW_KEY));
    assert_eq!(s[0].status.as_deref(), Some("Downloading"));
    assert_eq!(s[0].is_downloaded.value, Some(false));
    assert_eq!(s[0].is_downloaded.deviation, None, "a real <boolean>");
    let pct = s[0].download_percent_complete.value.unwrap();
    assert!((0.0..1.0).contains(&pct), "{pct}");

    let done = lab.wait_downloaded(u, Duration::from_secs(20)).await;
    assert_eq!(done.status.as_deref(), Some("Idle"));
    assert_eq!(done.download_percent_complete.value, Some(1.0));
    assert_eq!(
        lab.version(u).await.0,
        "17.5.1",
        "downloading installs nothing"
    );

    let (st, items) = lab.schedule(u, &default).await;
    assert_eq!(st, "Acknowledged");
    assert_eq!(items, item(NEW_KEY, "InstallASAP", "Installing"));
    let s = lab.status(u).await;
    assert_eq!(s[0].status.as_deref(), Some("Installing"), "{s:?}");
    assert_eq!(s[0].is_downloaded.value, Some(true));

    lab.wait_version(u, NEW, Duration::from_secs(20)).await;
    assert_eq!(lab.version(u).await, (NEW.into(), NEW_BUILD.into()));
    assert!(
        lab.status(u).await.is_empty(),
        "after the restart no update is in progress"
    );
}

/// `InstallASAP` with nothing downloaded. Apple: it installs "a previously downloaded" update;
/// the model (Assumption) downloads, answers `DownloadOnly`, and does not install by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_asap_before_download_only_downloads() {
    let dev = iphone_17(
        "ASAP early",
        "    update: { download_rate: 100 MB, install_duration: 1m, restart_duration: 1m }\n",
    );
    let lab = Lab::start(
        &fleet(2, NOON, "1m", &catalogue_17("100 MB"), &[dev]),
        600.0,
    )
    .await;
    let u = lab.udid(0);
    let (st, items) = lab
        .schedule(u, &by_version(NEW, InstallAction::InstallASAP))
        .await;
    assert_eq!(st, "Acknowledged");
    assert_eq!(items, item(NEW_KEY, "DownloadOnly", "Downloading"));
    lab.wait_downloaded(u, Duration::from_secs(10)).await;
    // Ten install+restart durations later (simulated) it still waits, downloaded, on 17.5.1.
    lab.sleep_sim(Instant::now(), Duration::from_secs(10 * 60))
        .await;
    let s = lab.status(u).await;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].status.as_deref(), Some("Idle"));
    assert_eq!(s[0].is_downloaded.value, Some(true));
    assert_eq!(lab.version(u).await, ("17.5.1".into(), "21F90".into()));
}

/// `InstallASAP` after a `DownloadOnly`: installs at once; the device leaves usbmuxd while it
/// restarts and comes back with the new ProductVersion/BuildVersion on lockdown and on MDM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_asap_after_download_installs_and_the_new_version_shows_on_lockdown_and_mdm() {
    let dev = iphone_17(
        "ASAP",
        "    update: { download_rate: 100 MB, install_duration: 1m, restart_duration: 1m }\n",
    );
    let lab = Lab::start(
        &fleet(3, NOON, "30s", &catalogue_17("100 MB"), &[dev]),
        60.0,
    )
    .await;
    let u = lab.udid(0).to_string();
    assert_eq!(
        probe_version(&lab.sim.addr, &u),
        Some(("17.5.1".into(), "21F90".into()))
    );
    let (_, items) = lab
        .schedule(&u, &by_version(NEW, InstallAction::DownloadOnly))
        .await;
    assert_eq!(items, item(NEW_KEY, "DownloadOnly", "Downloading"));
    lab.wait_downloaded(&u, Duration::from_secs(10)).await;
    let (_, items) = lab
        .schedule(&u, &by_version(NEW, InstallAction::DownloadOnly))
        .await;
    assert_eq!(
        items,
        item(NEW_KEY, "DownloadOnly", "Idle"),
        "DownloadOnly again: nothing to do"
    );
    let (st, items) = lab
        .schedule(&u, &by_key(NEW_KEY, InstallAction::InstallASAP))
        .await;
    assert_eq!(st, "Acknowledged");
    assert_eq!(items, item(NEW_KEY, "InstallASAP", "Installing"));

    let addr = lab.sim.addr.clone();
    let uu = u.clone();
    let new = tokio::task::spawn_blocking(move || {
        let mut saw_gone = false;
        wait_for(Duration::from_secs(30), || {
            match probe_version(&addr, &uu) {
                None => {
                    saw_gone = true;
                    None
                }
                Some(v) if v.0 == NEW => Some((v, saw_gone)),
                Some(_) => None,
            }
        })
    })
    .await
    .unwrap();
    assert_eq!(new.0, (NEW.to_string(), NEW_BUILD.to_string()));
    assert!(new.1, "the device left usbmuxd while it restarted");
    assert_eq!(lab.version(&u).await, (NEW.into(), NEW_BUILD.into()));
}

/// Passcode device, user enters the passcode T after the prompt: no install before T.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passcode_user_approving_after_t_installs_only_after_t() {
    let t = Duration::from_secs(4 * 60);
    let dev = iphone_17(
        "Approver",
        "    passcode: true\n    update:\n      user: { approve: { after: 4m } }\n      download_rate: 100 MB\n      install_duration: 2m\n      restart_duration: 30s\n",
    );
    let lab = Lab::start(
        &fleet(4, NOON, "30s", &catalogue_17("100 MB"), &[dev]),
        120.0,
    )
    .await;
    let u = lab.udid(0);
    let default = by_version(NEW, InstallAction::Default);
    lab.schedule(u, &default).await;
    lab.wait_downloaded(u, Duration::from_secs(10)).await;

    let asked = Instant::now();
    let (_, items) = lab.schedule(u, &default).await;
    let answered = Instant::now();
    assert_eq!(
        items,
        item(NEW_KEY, "InstallASAP", "Idle"),
        "the prompt: nothing installs until the user agrees"
    );
    let began = lab.wait_install_began(u, Duration::from_secs(20)).await;
    let waited = (began - asked).mul_f64(lab.speed);
    assert!(
        waited >= t,
        "installing {waited:?} after the prompt, T = {t:?}"
    );
    let at_most = (began - answered).mul_f64(lab.speed);
    assert!(
        at_most < 2 * t,
        "install began {at_most:?} (simulated) after the prompt, T = {t:?}"
    );
    lab.wait_version(u, NEW, Duration::from_secs(20)).await;
}

/// Passcode device, user taps "Remind Me Later" twice (prompt back after `defer_interval`),
/// then approves: the install starts after two deferral intervals, not one, not three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passcode_user_deferring_twice_installs_after_two_deferrals() {
    let interval = Duration::from_secs(4 * 60);
    let dev = iphone_17(
        "Deferrer",
        "    passcode: true\n    update:\n      user: { defer: { times: 2, then: { approve: { after: 0s } } } }\n      defer_interval: 4m\n      download_rate: 100 MB\n      install_duration: 2m\n      restart_duration: 30s\n",
    );
    let lab = Lab::start(
        &fleet(5, NOON, "30s", &catalogue_17("100 MB"), &[dev]),
        120.0,
    )
    .await;
    let u = lab.udid(0);
    let default = by_version(NEW, InstallAction::Default);
    lab.schedule(u, &default).await;
    lab.wait_downloaded(u, Duration::from_secs(10)).await;

    let asked = Instant::now();
    let (_, items) = lab.schedule(u, &default).await;
    let answered = Instant::now();
    assert_eq!(items, item(NEW_KEY, "InstallASAP", "Idle"));
    let began = lab.wait_install_began(u, Duration::from_secs(20)).await;
    let waited = (began - asked).mul_f64(lab.speed);
    assert!(
        waited >= 2 * interval,
        "installing {waited:?} after the prompt: fewer than two deferrals"
    );
    let at_most = (began - answered).mul_f64(lab.speed);
    assert!(
        at_most < 3 * interval,
        "installing {at_most:?} after the prompt: more than two deferrals"
    );
    lab.wait_version(u, NEW, Duration::from_secs(20)).await;
}

/// Passcode device, user picks "Later": the install runs in the 1–3 AM window, device local
/// time (rdar 45414727). The clock starts at 00:56 local (UTC+1); the minute in the window is
/// drawn from the fleet seed and UDID, so the test picks a seed whose minute is 0 or 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passcode_user_choosing_later_installs_in_the_1_to_3_am_local_window() {
    const UDID: &str = "00008030-00AA00BB00CC00DD";
    let seed = (0..100_000u64)
        .find(|s| {
            lab::sim::quirks::SplitMix64::new(lab::sim::quirks::device_seed(*s, UDID)).below(120)
                <= 1
        })
        .unwrap();
    let minute =
        lab::sim::quirks::SplitMix64::new(lab::sim::quirks::device_seed(seed, UDID)).below(120);
    let install = Duration::from_secs(30);
    let restart = Duration::from_secs(30);
    // 23:56 UTC = 00:56 local; the window opens at 00:00 UTC, 4 simulated minutes in.
    let window = Duration::from_secs(4 * 60 + minute * 60);
    let dev = iphone_17(
        "Night owl",
        &format!(
            "    udid: {UDID}\n    passcode: true\n    update:\n      user: later\n      local_offset_minutes: 60\n      download_rate: 100 MB\n      install_duration: 30s\n      restart_duration: 30s\n"
        ),
    );
    let speed = 90.0;
    let lab = Lab::start(
        &fleet(
            seed,
            "2026-11-27T23:56:00Z",
            "20s",
            &catalogue_17("100 MB"),
            &[dev],
        ),
        speed,
    )
    .await;
    let u = lab.udid(0);
    assert_eq!(u, UDID);
    let default = by_version(NEW, InstallAction::Default);
    lab.schedule(u, &default).await;
    lab.wait_downloaded(u, Duration::from_secs(10)).await;
    let (_, items) = lab.schedule(u, &default).await;
    let prompted = Instant::now();
    assert_eq!(items, item(NEW_KEY, "InstallASAP", "Idle"));
    assert!(
        lab.sim_upper(prompted) < Duration::from_secs(4 * 60),
        "the prompt came after 01:00 local (machine too slow for speed {speed})"
    );
    // Waiting for the night: Installing, as OSUpdateStatus says on every version with the
    // installing_while_scheduled row (see the quirk test), but still on the old version.
    let s = lab.status(u).await;
    assert_eq!(s[0].status.as_deref(), Some("Installing"), "{s:?}");

    let done = window + install + restart;
    let start = Instant::now();
    loop {
        let sent = Instant::now();
        let (v, _) = lab.version(u).await;
        let got = Instant::now();
        if v == NEW {
            assert!(
                lab.sim_upper(got) >= done,
                "on {NEW} at most {:?} after 00:56 local; the window's install ends {done:?} after",
                lab.sim_upper(got)
            );
            break;
        }
        assert!(
            lab.sim_lower(sent) < done + Duration::from_secs(60),
            "still on {v} {:?} after 00:56 local; the window's install ended at {done:?}",
            lab.sim_lower(sent)
        );
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Passcode device whose user never answers the prompt: nothing installs; OSUpdateStatus keeps
/// saying Idle with the update downloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passcode_user_never_answering_never_installs() {
    let dev = iphone_17(
        "Ignorer",
        "    passcode: true\n    update:\n      user: never\n      download_rate: 100 MB\n      install_duration: 1m\n      restart_duration: 1m\n",
    );
    let lab = Lab::start(
        &fleet(6, NOON, "1m", &catalogue_17("100 MB"), &[dev]),
        600.0,
    )
    .await;
    let u = lab.udid(0);
    let default = by_version(NEW, InstallAction::Default);
    lab.schedule(u, &default).await;
    lab.wait_downloaded(u, Duration::from_secs(10)).await;
    let (_, items) = lab.schedule(u, &default).await;
    assert_eq!(items, item(NEW_KEY, "InstallASAP", "Idle"));
    let prompted = Instant::now();
    // Twenty simulated minutes: ten install+restart durations.
    while lab.sim_lower(Instant::now()) < lab.sim_upper(prompted) + Duration::from_secs(20 * 60) {
        let s = lab.status(u).await;
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].status.as_deref(), Some("Idle"), "{s:?}");
        assert_eq!(s[0].is_downloaded.value, Some(true));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lab.version(u).await.0, "17.5.1");
    // The prompt stays; a further Default does not show a second one nor install.
    let (_, items) = lab.schedule(u, &default).await;
    assert_eq!(items, item(NEW_KEY, "InstallASAP", "Idle"));
}

/// Free space < DownloadSize + InstallSize (Apple's rule): the download does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_disk_refuses_the_download_with_download_insufficient_space() {
    let dev = iphone_17(
        "Full",
        "    disk: { total: 64 GB, free: 250 MB }\n    update: { download_rate: 100 MB }\n",
    );
    // 100 MB + 200 MB > 250 MB free.
    let lab = Lab::start(
        &fleet(7, NOON, "30s", &catalogue_17("100 MB"), &[dev]),
        60.0,
    )
    .await;
    let u = lab.udid(0);
    let (st, items) = lab
        .schedule(u, &by_version(NEW, InstallAction::Default))
        .await;
    assert_eq!(st, "Acknowledged");
    assert_eq!(
        items,
        item(NEW_KEY, "DownloadOnly", "DownloadInsufficientSpace")
    );
    assert!(lab.status(u).await.is_empty(), "no download in progress");
}

/// Battery below 50 % and not on power: `DownloadInsufficientPower` (Assumption, brief §7);
/// the same battery on external power downloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_battery_without_power_refuses_the_download_with_insufficient_power() {
    let weak = iphone_17(
        "Weak",
        "    battery: { level: 30, charging: false, external_power: false }\n    update: { download_rate: 1 MB }\n",
    );
    let plugged = iphone_17(
        "Plugged",
        "    battery: { level: 30, charging: false, external_power: true }\n    update: { download_rate: 1 MB }\n",
    );
    let lab = Lab::start(
        &fleet(8, NOON, "30s", &catalogue_17("100 MB"), &[weak, plugged]),
        60.0,
    )
    .await;
    let default = by_version(NEW, InstallAction::Default);
    let (st, items) = lab.schedule(lab.udid(0), &default).await;
    assert_eq!(st, "Acknowledged");
    assert_eq!(
        items,
        item(NEW_KEY, "DownloadOnly", "DownloadInsufficientPower")
    );
    assert!(lab.status(lab.udid(0)).await.is_empty());
    let (_, items) = lab.schedule(lab.udid(1), &default).await;
    assert_eq!(items, item(NEW_KEY, "DownloadOnly", "Downloading"));
}

/// No network: `DownloadInsufficientNetwork`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_network_refuses_the_download_with_download_insufficient_network() {
    let dev = iphone_17("Offline", "    network: none\n");
    let lab = Lab::start(
        &fleet(9, NOON, "30s", &catalogue_17("100 MB"), &[dev]),
        60.0,
    )
    .await;
    let u = lab.udid(0);
    let (st, items) = lab
        .schedule(u, &by_version(NEW, InstallAction::Default))
        .await;
    assert_eq!(st, "Acknowledged");
    assert_eq!(
        items,
        item(NEW_KEY, "DownloadOnly", "DownloadInsufficientNetwork")
    );
    assert!(lab.status(u).await.is_empty());
}

/// Brief §0.3: a ScheduleOSUpdate the device handled before restarting and answers after it
/// comes back is `Acknowledged` without `UpdateResults`. Provoked over HTTP with an 11.3.1
/// device (schedule_no_response): its one Default gets no answer, so the server re-delivers it
/// on every check-in; the re-deliveries download and then install (two-step Default), and the
/// delivery after the restart is the first one answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_answered_after_the_restart_is_acknowledged_without_update_results() {
    let dev = iphone(
        "Eleven",
        "11.3.1",
        "15E302",
        "    update: { download_rate: 100 MB, install_duration: 1m, restart_duration: 1m }\n",
    );
    let lab = Lab::start(
        &fleet(
            10,
            NOON,
            "20s",
            &[entry("11.4", "15F79", "100 MB", "200 MB")],
            &[dev],
        ),
        60.0,
    )
    .await;
    let u = lab.udid(0);
    let uuid = lab
        .send(u, &by_version("11.4", InstallAction::Default))
        .await;
    let r = lab.result(u, &uuid, Duration::from_secs(30)).await;
    let rep = parse_report(&r.raw).unwrap();
    assert_eq!(rep.status.as_str(), "Acknowledged");
    assert_eq!(
        lab::mdm::update_results(&rep),
        None,
        "no UpdateResults after the restart"
    );
    let raw = String::from_utf8_lossy(&r.raw);
    assert!(!raw.contains("UpdateResults"), "{raw}");
    let h = lab.history_of(u, &uuid).await;
    assert_eq!(report_statuses(&h), vec!["Acknowledged"], "{h}");
    assert!(
        count(&h, "deliveries") >= 3,
        "download, install, after the restart: {h}"
    );
    assert_eq!(h["state"], "done");
    assert_eq!(lab.version(u).await, ("11.4".into(), "15F79".into()));
    // Now on 11.4 (release), the device no longer has the 11.3.x rows: no update available is
    // an empty array again, not Error 2213.
    let rep = lab.ask(u, &Command::AvailableOSUpdates).await;
    assert_eq!(rep.status.as_str(), "Acknowledged", "{:?}", chain(&rep));
    assert_eq!(lab::mdm::available_os_updates(&rep), Some(vec![]));
}

// ---------------------------------------------------------------------------------------------
// data/quirks.yaml, one test per row
// ---------------------------------------------------------------------------------------------

/// is_downloaded_integer (11.3, rdar 45414737): `IsDownloaded` is `<integer>`; the lenient
/// reader takes 0/1 and notes the deviation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirk_11_3_is_downloaded_sent_as_an_integer() {
    let dev = iphone(
        "Integer",
        "11.3",
        "15E216",
        "    update: { download_rate: 5 MB }\n",
    );
    let lab = Lab::start(
        &fleet(
            11,
            NOON,
            "30s",
            &[entry("11.3.1", "15E302", "600 MB", "200 MB")],
            &[dev],
        ),
        60.0,
    )
    .await;
    let u = lab.udid(0);
    let (_, items) = lab
        .schedule(u, &by_version("11.3.1", InstallAction::Default))
        .await;
    assert_eq!(
        items,
        item("iOSUpdate15E302", "DownloadOnly", "Downloading")
    );

    let check = |rep: &Report, want: i64| {
        let raw = String::from_utf8_lossy(&rep.raw).into_owned();
        let at = raw
            .find("<key>IsDownloaded</key>")
            .expect("IsDownloaded sent");
        let next = raw[at + "<key>IsDownloaded</key>".len()..].trim_start();
        assert!(
            next.starts_with(&format!("<integer>{want}</integer>")),
            "raw: {raw}"
        );
        let items = lab::mdm::os_update_status(rep).unwrap();
        let d = &items[0].is_downloaded;
        assert_eq!(d.value, Some(want == 1));
        let note = d.deviation.as_deref().unwrap_or("");
        assert!(
            note.contains("integer") && note.contains("rdar 45414737"),
            "{note:?}"
        );
    };
    let rep = lab.ask(u, &Command::OSUpdateStatus).await;
    check(&rep, 0);
    let start = Instant::now();
    loop {
        let rep = lab.ask(u, &Command::OSUpdateStatus).await;
        let items = lab::mdm::os_update_status(&rep).unwrap();
        if items[0].download_percent_complete.value == Some(1.0) {
            check(&rep, 1);
            break;
        }
        check(&rep, 0);
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// available_updates_error_2213 (11.3, rdar 39170807): no update available is `Error` with
/// ErrorChain 2213 DeviceManagement.error then 3 com.apple.softwareupdateservices.errors; an
/// available update is listed as usual, and before 11.3 "none" is an empty array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirk_11_3_available_updates_with_none_is_error_2213() {
    let none = iphone("None", "11.3", "15E216", "");
    let some = iphone(
        "Some",
        "11.3",
        "15E216",
        &format!(
            "    update:\n      catalogue:\n      {}",
            entry("11.3.1", "15E302", "100 MB", "200 MB")
        ),
    );
    let older = iphone("Older", "11.2.6", "15D100", "");
    let lab = Lab::start(&fleet(12, NOON, "30s", &[], &[none, some, older]), 60.0).await;

    let rep = lab.ask(lab.udid(0), &Command::AvailableOSUpdates).await;
    assert_eq!(rep.status.as_str(), "Error");
    assert_eq!(
        chain(&rep),
        vec![
            (2213, "DeviceManagement.error".to_string()),
            (3, "com.apple.softwareupdateservices.errors".to_string()),
        ]
    );
    assert_eq!(lab::mdm::available_os_updates(&rep), None);

    let rep = lab.ask(lab.udid(1), &Command::AvailableOSUpdates).await;
    assert_eq!(rep.status.as_str(), "Acknowledged");
    let a = lab::mdm::available_os_updates(&rep).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].product_key.as_deref(), Some("iOSUpdate15E302"));
    assert_eq!(a[0].version.as_deref(), Some("11.3.1"));

    let rep = lab.ask(lab.udid(2), &Command::AvailableOSUpdates).await;
    assert_eq!(rep.status.as_str(), "Acknowledged");
    assert_eq!(lab::mdm::available_os_updates(&rep), Some(vec![]));
}

/// schedule_no_response (11.3.1, rdar 40161553): ScheduleOSUpdate is delivered, carried out,
/// and never answered, so the server keeps re-delivering it and records no report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirk_11_3_1_schedule_gets_no_response() {
    // 6 GB at 1 MB/s: the download outlasts the test.
    let dev = iphone(
        "Silent",
        "11.3.1",
        "15E302",
        "    update: { download_rate: 1 MB }\n",
    );
    let lab = Lab::start(
        &fleet(
            13,
            NOON,
            "20s",
            &[entry("11.4", "15F79", "6 GB", "2 GB")],
            &[dev],
        ),
        60.0,
    )
    .await;
    let u = lab.udid(0);
    let uuid = lab
        .send(u, &by_version("11.4", InstallAction::Default))
        .await;
    let start = Instant::now();
    let h = loop {
        let h = lab.history_of(u, &uuid).await;
        if count(&h, "deliveries") >= 3 {
            break h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not re-delivered: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(count(&h, "reports"), 0, "{h}");
    assert_eq!(h["state"], "pending");
    assert!(h["last_status"].is_null(), "{h}");
    let results = lab.b.results(u).await.unwrap();
    assert!(
        results.iter().all(|r| r.command_uuid != uuid),
        "{results:?}"
    );
}

/// schedule_error_but_prompt (11.4 release, rdar 45414692): the reply is `Error`, yet the
/// download runs (OSUpdateStatus shows it) and, once downloaded, the prompt appears and the
/// user's approval installs the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirk_11_4_error_reply_while_the_download_and_prompt_proceed() {
    let dev = iphone(
        "Liar",
        "11.4",
        "15F79",
        "    passcode: true\n    update:\n      user: { approve: { after: 0s } }\n      download_rate: 5 MB\n      install_duration: 1m\n      restart_duration: 30s\n",
    );
    let lab = Lab::start(
        &fleet(
            14,
            NOON,
            "30s",
            &[entry("11.4.1", "15G77", "300 MB", "200 MB")],
            &[dev],
        ),
        60.0,
    )
    .await;
    let u = lab.udid(0);
    let default = by_version("11.4.1", InstallAction::Default);
    let rep = lab.ask(u, &default).await;
    assert_eq!(rep.status.as_str(), "Error");
    assert_eq!(
        chain(&rep)[0],
        (3, "com.apple.softwareupdateservices.errors".to_string())
    );
    assert_eq!(
        result_items(&rep),
        item("iOSUpdate15G77", "Error", "Downloading")
    );
    let s = lab.status(u).await;
    assert_eq!(s.len(), 1, "the download proceeds: {s:?}");
    assert_eq!(s[0].product_key.as_deref(), Some("iOSUpdate15G77"));
    assert_eq!(s[0].status.as_deref(), Some("Downloading"));
    lab.wait_downloaded(u, Duration::from_secs(20)).await;

    let rep = lab.ask(u, &default).await;
    assert_eq!(rep.status.as_str(), "Error");
    assert_eq!(result_items(&rep), item("iOSUpdate15G77", "Error", "Idle"));
    lab.wait_version(u, "11.4.1", Duration::from_secs(20)).await;
    assert_eq!(lab.version(u).await.1, "15G77");
}

/// installing_while_scheduled (rdar 45414727): after the user picks "Later", OSUpdateStatus
/// says Installing though nothing installs until the night; a further ScheduleOSUpdate
/// installs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirk_installing_while_scheduled_and_a_second_schedule_installs_at_once() {
    let dev = iphone_17(
        "Later",
        "    passcode: true\n    update:\n      user: later\n      download_rate: 100 MB\n      install_duration: 30s\n      restart_duration: 30s\n",
    );
    // Noon: the 1–3 AM window is at least 13 simulated hours (13 real minutes) away.
    let lab = Lab::start(
        &fleet(15, NOON, "30s", &catalogue_17("100 MB"), &[dev]),
        60.0,
    )
    .await;
    let u = lab.udid(0);
    let default = by_version(NEW, InstallAction::Default);
    lab.schedule(u, &default).await;
    lab.wait_downloaded(u, Duration::from_secs(10)).await;
    let (_, items) = lab.schedule(u, &default).await;
    assert_eq!(items, item(NEW_KEY, "InstallASAP", "Idle"));
    let chose = Instant::now();
    let s = lab.status(u).await;
    assert_eq!(s[0].status.as_deref(), Some("Installing"), "{s:?}");
    assert_eq!(s[0].is_downloaded.value, Some(true));

    // Three install+restart durations later: still "Installing", still the old version.
    lab.sleep_sim(chose, Duration::from_secs(3 * 60)).await;
    let s = lab.status(u).await;
    assert_eq!(s[0].status.as_deref(), Some("Installing"), "{s:?}");
    assert_eq!(lab.version(u).await.0, "17.5.1");

    let (st, items) = lab
        .schedule(u, &by_version(NEW, InstallAction::InstallASAP))
        .await;
    assert_eq!(st, "Acknowledged");
    assert_eq!(items, item(NEW_KEY, "InstallASAP", "Installing"));
    lab.wait_version(u, NEW, Duration::from_secs(20)).await;
}

/// requires_dep_below_10_3: before 10.3 ScheduleOSUpdate needs DEP enrolment and no passcode;
/// otherwise `Error`. ProductVersion is not understood before 11.3 (ProductKey is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirk_below_10_3_schedule_without_dep_is_an_error() {
    let no_dep = iphone("No DEP", "10.2.1", "14D27", "");
    let dep_passcode = iphone(
        "DEP passcode",
        "10.2.1",
        "14D27",
        "    passcode: true\n    update: { dep_enrolled: true }\n",
    );
    let dep = iphone(
        "DEP",
        "10.2.1",
        "14D27",
        "    update: { dep_enrolled: true, download_rate: 1 MB }\n",
    );
    let lab = Lab::start(
        &fleet(
            16,
            NOON,
            "30s",
            &[entry("10.3", "14E277", "1 GB", "1 GB")],
            &[no_dep, dep_passcode, dep],
        ),
        60.0,
    )
    .await;
    let key = "iOSUpdate14E277";
    let cmd = by_key(key, InstallAction::Default);
    for i in [0, 1] {
        let rep = lab.ask(lab.udid(i), &cmd).await;
        assert_eq!(rep.status.as_str(), "Error", "device {i}");
        assert_eq!(chain(&rep), vec![(12070, "MCMDMErrorDomain".to_string())]);
        assert_eq!(lab::mdm::update_results(&rep), None);
    }
    let (st, items) = lab
        .schedule(lab.udid(2), &by_version("10.3", InstallAction::Default))
        .await;
    assert_eq!(st, "Acknowledged");
    assert_eq!(
        items,
        item("10.3", "Error", "Idle"),
        "ProductVersion unknown"
    );
    let (st, items) = lab.schedule(lab.udid(2), &cmd).await;
    assert_eq!(st, "Acknowledged");
    assert_eq!(items, item(key, "DownloadOnly", "Downloading"));
}

/// notnow_before_first_unlock: before the first unlock after boot the update commands answer
/// NotNow; the server keeps the command and re-delivers it after an Idle. A fleet device that
/// starts locked (`unlocked_since_boot: false`) is never unlocked by the model, so it stays
/// NotNow; a passcode device restarted by its update is unlocked by its simulated user after
/// `unlock_after_restart`, and the re-delivered command is then answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirk_notnow_before_first_unlock() {
    let locked = iphone_17("Locked", "    update: { unlocked_since_boot: false }\n");
    let rebooter = iphone_17(
        "Rebooter",
        "    passcode: true\n    update:\n      user: { approve: { after: 0s } }\n      download_rate: 100 MB\n      install_duration: 30s\n      restart_duration: 30s\n      unlock_after_restart: 4m\n",
    );
    let lab = Lab::start(
        &fleet(
            17,
            NOON,
            "20s",
            &catalogue_17("100 MB"),
            &[locked, rebooter],
        ),
        120.0,
    )
    .await;
    let (l, r) = (lab.udid(0), lab.udid(1));

    let sched = lab.send(l, &by_version(NEW, InstallAction::Default)).await;
    let start = Instant::now();
    let h = loop {
        let h = lab.history_of(l, &sched).await;
        if count(&h, "reports") >= 3 {
            break h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not re-delivered: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(report_statuses(&h).iter().all(|s| s == "NotNow"), "{h}");
    assert_eq!(h["state"], "notnow");
    assert!(count(&h, "deliveries") >= count(&h, "reports"));
    // Commands that never answer NotNow still work.
    assert_eq!(lab.version(l).await.0, "17.5.1");

    let default = by_version(NEW, InstallAction::Default);
    lab.schedule(r, &default).await;
    lab.wait_downloaded(r, Duration::from_secs(10)).await;
    let (_, items) = lab.schedule(r, &default).await;
    assert_eq!(items, item(NEW_KEY, "InstallASAP", "Idle"));
    lab.wait_version(r, NEW, Duration::from_secs(20)).await;
    let uuid = lab.send(r, &Command::OSUpdateStatus).await;
    let res = lab.result(r, &uuid, Duration::from_secs(20)).await;
    assert_eq!(res.status, "Acknowledged");
    let h = lab.history_of(r, &uuid).await;
    let st = report_statuses(&h);
    assert!(
        st.len() >= 2 && st[..st.len() - 1].iter().all(|s| s == "NotNow"),
        "{h}"
    );
    assert_eq!(st.last().map(String::as_str), Some("Acknowledged"));
    assert_eq!(count(&h, "deliveries"), st.len());
}
