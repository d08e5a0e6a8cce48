//! Test helpers: run the real `lab` binary, start a simulated lab as its own process, and reach
//! it only through its usbmuxd socket — the way a real bench is reached.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn lab_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lab")
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The API key tests give simulated labs' embedded MDM servers.
pub const TEST_API_KEY: &str = "test-key-0123456789";

/// A `lab sim serve` child process; killed on drop.
pub struct Sim {
    pub addr: String,
    /// Base URL of the embedded MDM server (absent with --no-mdm).
    pub mdm_url: Option<String>,
    child: Child,
}

impl Sim {
    pub fn start(fleet: &Path) -> Sim {
        Self::start_with(fleet, &[])
    }

    pub fn start_with(fleet: &Path, extra: &[&str]) -> Sim {
        Self::start_with_env(fleet, extra, &[])
    }

    /// With extra environment variables (e.g. shortened listener timeouts).
    pub fn start_with_env(fleet: &Path, extra: &[&str], env: &[(&str, &str)]) -> Sim {
        Self::start_at_env(fleet, "127.0.0.1:0", "127.0.0.1:0", extra, env)
    }

    /// A fresh `lab sim serve` on this one's addresses (same usbmuxd and MDM ports, so a
    /// protocol pointing at it is unchanged), with a new, empty MDM store: the way an MDM that
    /// lost its database comes back.
    pub fn restart(&mut self, fleet: &Path, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mdm = self.mdm().trim_start_matches("http://").to_string();
        let fresh = Self::start_at(fleet, &self.addr.clone(), &mdm, extra);
        // Moving the child out of `fresh` (which has a Drop) needs a swap.
        let mut fresh = std::mem::ManuallyDrop::new(fresh);
        self.child = std::mem::replace(&mut fresh.child, placeholder_child());
        self.addr = fresh.addr.clone();
        self.mdm_url = fresh.mdm_url.clone();
    }

    pub fn start_at(fleet: &Path, usbmuxd: &str, mdm: &str, extra: &[&str]) -> Sim {
        Self::start_at_env(fleet, usbmuxd, mdm, extra, &[])
    }

    pub fn start_at_env(
        fleet: &Path,
        usbmuxd: &str,
        mdm: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Sim {
        let mut child = Command::new(lab_bin())
            .args(["sim", "serve", "--fleet"])
            .arg(fleet)
            .args(["--usbmuxd", usbmuxd, "--mdm", mdm])
            .args(extra)
            .envs(env.iter().copied())
            .env("LAB_MDM_API_KEY", TEST_API_KEY)
            .env_remove("USBMUXD_SOCKET_ADDRESS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lab sim serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut addr, mut mdm) = (None, None);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    addr = Some(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                if let Some(rest) = line.split("MDM at ").nth(1) {
                    mdm = rest.split_whitespace().next().map(str::to_string);
                }
                if line.contains("lab sim: ready") {
                    let _ = tx.send((addr.clone(), mdm.clone()));
                }
            }
            let _ = tx.send((addr, mdm));
        });
        let (addr, mdm_url) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("lab sim serve did not report its address");
        let addr = addr.expect("lab sim serve did not report its usbmuxd address");
        Sim {
            addr,
            mdm_url,
            child,
        }
    }
}

impl Sim {
    /// The embedded MDM's base URL.
    pub fn mdm(&self) -> &str {
        self.mdm_url.as_deref().expect("the sim runs an MDM")
    }

    /// The harness's backend for this sim's embedded MDM.
    pub fn backend(&self) -> lab::mdm::backend::NanoMdm {
        lab::mdm::backend::NanoMdm::embedded(self.mdm(), TEST_API_KEY, Duration::from_secs(10))
    }

    /// `GET` on the embedded MDM's API, as JSON.
    pub async fn api(&self, path: &str) -> serde_json::Value {
        lab::http_client::client(Duration::from_secs(10))
            .get(format!("{}{path}", self.mdm()))
            .basic_auth("nanomdm", Some(TEST_API_KEY))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Wait until `n` devices have sent their first TokenUpdate (at most 30 s).
    pub async fn enrolled(&self, n: usize) {
        let start = Instant::now();
        loop {
            let v = self.api("/v1/enrollments").await;
            let ready = v["enrollments"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["token_update_tally"].as_u64().unwrap_or(0) >= 1)
                .count();
            if ready >= n {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "only {ready} of {n} enrolled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The MDM server's own history for each device (from a test thread, not a runtime).
    pub fn histories(
        &self,
        udids: &[String],
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut out = std::collections::BTreeMap::new();
            for u in udids {
                out.insert(u.clone(), self.api(&format!("/v1/history/{u}")).await);
            }
            out
        })
    }
}

/// `lab run --yes --results RESULTS PROTOCOL` with the test API key, no usbmuxd from the
/// environment, none of the crash-campaign pause hooks, and the lab-wide ledger in
/// `RESULTS/ledger.jsonl` (`LAB_LEDGER`: a test never writes to the user's state directory, nor
/// sees another test's records; override it to share one ledger between runs).
pub fn lab_run(protocol: &Path, results: &Path) -> Command {
    let mut c = Command::new(lab_bin());
    c.args(["run", "--yes", "--results"])
        .arg(results)
        .arg(protocol)
        .env("LAB_LEDGER", results.join("ledger.jsonl"))
        .env("LAB_MDM_API_KEY", TEST_API_KEY)
        .env_remove("USBMUXD_SOCKET_ADDRESS")
        .env_remove("LAB_TEST_PAUSE_AFTER_INTENT_MS")
        .env_remove("LAB_TEST_PAUSE_BEFORE_CONSENT_MS")
        .env_remove("LAB_TEST_PAUSE_BEFORE_REPORTS_MS")
        .stdin(Stdio::null());
    c
}

/// The (first) run folder under a results folder.
pub fn run_dir(results: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(results)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v.into_iter().next().expect("a run folder")
}

/// A run's journal, one JSON value per event.
pub fn journal_events(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A finished process to leave behind in a moved-from `Sim`.
fn placeholder_child() -> Child {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let _ = c.wait();
    c
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `lab` with arguments, pointed at a usbmuxd through the environment variable.
pub fn run_lab(args: &[&str], usbmuxd: Option<&str>) -> Output {
    let mut c = Command::new(lab_bin());
    c.args(args).env_remove("USBMUXD_SOCKET_ADDRESS");
    if let Some(a) = usbmuxd {
        c.env("USBMUXD_SOCKET_ADDRESS", a);
    }
    c.output().expect("run lab")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn parse_json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\nstdout: {}\nstderr: {}",
            stdout(o),
            stderr(o)
        )
    })
}

/// Write a fleet file into a temporary directory.
pub fn fleet_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write fleet");
    p
}

/// A device entry for a fleet file.
pub fn device(name: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    product_type: iPhone12,1\n    ios: {{ version: \"17.5.1\", build: 21F90 }}\n    disk: {{ total: 64 GB, free: 20 GB }}\n    battery: {{ level: 80 }}\n{extra}"
    )
}

/// Wait until `f` returns Some, or panic after `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("condition not met within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// libimobiledevice's tools: required in CI (`.ci/run` installs them), skipped with a notice
/// elsewhere.
pub fn have_libimobiledevice() -> bool {
    let ok = Command::new("ideviceinfo")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("ideviceinfo is missing in CI: .ci/run must install libimobiledevice-utils");
        }
        eprintln!("SKIPPED: ideviceinfo not installed (apt-get install libimobiledevice-utils)");
    }
    ok
}

/// pymobiledevice3, the second conformance judge: `$LAB_PYMOBILEDEVICE3` or `pymobiledevice3`
/// on the PATH (`.ci/run` installs a pinned version into a virtualenv and puts it there).
/// Required in CI, skipped with a visible notice elsewhere.
pub fn pymobiledevice3() -> Option<PathBuf> {
    let bin = std::env::var_os("LAB_PYMOBILEDEVICE3")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("pymobiledevice3"));
    let ok = Command::new(&bin)
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(bin);
    }
    if std::env::var_os("CI").is_some() {
        panic!("pymobiledevice3 is missing in CI: .ci/run must install it");
    }
    eprintln!("SKIPPED: pymobiledevice3 not installed (pip install pymobiledevice3)");
    None
}

/// A protocol from `trials/` pointed at an external simulated lab (`lab sim serve`), the way a
/// real bench is described: its `lab:` block becomes the sim's usbmuxd address and embedded MDM
/// (key in `LAB_MDM_API_KEY`) with `time_scale: speed`. `id` and `max_duration` replace the
/// protocol's own when given; `drop_bug_reproduction` leaves out the rehearsal's
/// bug-reproduction arm (the comment block before `allocation_seed:`).
pub fn bench_protocol(
    source: &str,
    sim: &Sim,
    speed: &str,
    dir: &Path,
    id: Option<&str>,
    max_duration: Option<&str>,
    drop_bug_reproduction: bool,
) -> PathBuf {
    let text = std::fs::read_to_string(repo_path(source)).unwrap();
    let text = match (
        text.find("  # Bug reproduction"),
        text.find("allocation_seed:"),
    ) {
        (Some(a), Some(b)) if a < b && drop_bug_reproduction => {
            format!("{}{}", &text[..a], &text[b..])
        }
        _ => text,
    };
    let mut out = String::new();
    let mut skip = false;
    for line in text.lines() {
        if line.starts_with("lab:") {
            out.push_str(&format!(
                "lab:\n  usbmuxd: [\"{}\"]\n  mdm: {{ kind: embedded, url: \"{}\", api_key_env: LAB_MDM_API_KEY }}\n  time_scale: {speed}\n",
                sim.addr,
                sim.mdm_url.as_ref().expect("the sim runs an MDM")
            ));
            skip = true;
            continue;
        }
        if skip && line.starts_with("  ") {
            continue;
        }
        skip = false;
        let line = match (id, max_duration) {
            (Some(id), _) if line.starts_with("id:") => format!("id: {id}"),
            (_, Some(m)) if line.trim_start().starts_with("max_duration:") => {
                format!("  max_duration: {m}")
            }
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let name = id.map(str::to_string).unwrap_or_else(|| {
        Path::new(source)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "protocol".into())
    });
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, out).unwrap();
    p
}

/// A CSV report as rows of column → value.
pub fn csv_rows(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// A test CA for MDM device identity certificates.
pub struct Ca {
    pub pem: String,
    pub params: rcgen::CertificateParams,
    pub key: rcgen::KeyPair,
}

pub fn ca() -> Ca {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256};
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { pem, params, key }
}

/// A client-auth certificate (DER) signed by `ca`.
pub fn device_cert(ca: &Ca) -> Vec<u8> {
    use rcgen::{
        CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    };
    let issuer = Issuer::new(ca.params.clone(), &ca.key);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.signed_by(&key, &issuer).unwrap().der().to_vec()
}
