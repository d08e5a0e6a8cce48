//! Embedded MDM server throughput with N simulated MDM clients (default 1 000):
//! check-ins (Authenticate + TokenUpdate) per second, command round trips (Idle → command →
//! Acknowledged → empty body) per second, and the server's peak RSS.
//!
//!   cargo bench --bench mdm_throughput [-- DEVICES [CONCURRENCY]]
//!
//! The server runs as its own process (`lab mdm serve`, SQLite store with synchronous=FULL), so
//! its memory is measured alone; the clients run here.

use lab::mdm::{CHECKIN_CONTENT_TYPE, CheckinMessage, Command, parse_envelope, report_dict};
use lab::mdm_server::identity::cert_header_value;
use lab::sim::mdm_device::{CERT_HEADER, MdmIdentities};
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const KEY: &str = "bench-key";

fn rss_peak_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let conc: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let dir = tempfile::tempdir().unwrap();
    let udids: Vec<String> = (0..n).map(|i| format!("00008030-{i:016X}")).collect();
    let ids = MdmIdentities::generate(&udids).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ids.ca_pem).unwrap();
    let lab_bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/lab");
    let lab_bin = if lab_bin.exists() {
        lab_bin
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/lab")
    };
    let mut child = std::process::Command::new(&lab_bin)
        .args([
            "mdm",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert-header",
            CERT_HEADER,
        ])
        .arg("--db")
        .arg(dir.path().join("mdm.sqlite"))
        .arg("--ca")
        .arg(&ca)
        .env("LAB_MDM_API_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("build lab first: cargo build --release");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let http = lab::http_client::client(Duration::from_secs(30));
    let sem = Arc::new(Semaphore::new(conc));

    // Check-ins.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, u) in udids.iter().enumerate() {
        let (http, url, sem, u) = (http.clone(), url.clone(), sem.clone(), u.clone());
        let cert = cert_header_value(&ids.certs[i]);
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let msgs = [
                CheckinMessage::Authenticate {
                    topic: "com.apple.mgmt.External.bench".into(),
                    udid: u.clone(),
                    os_version: Some("17.5.1".into()),
                    build_version: Some("21F90".into()),
                    product_name: Some("iPhone12,1".into()),
                    serial_number: None,
                    device_name: None,
                },
                CheckinMessage::TokenUpdate {
                    topic: "com.apple.mgmt.External.bench".into(),
                    udid: u.clone(),
                    token: u.as_bytes().to_vec(),
                    push_magic: "m".into(),
                    unlock_token: None,
                    awaiting_configuration: false,
                },
            ];
            for m in msgs {
                let r = http
                    .put(format!("{url}/mdm"))
                    .header("content-type", CHECKIN_CONTENT_TYPE)
                    .header(CERT_HEADER, &cert)
                    .body(m.to_plist())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let checkin_s = t0.elapsed().as_secs_f64();

    // Queue one command per device (nopush: the clients poll).
    let cmd = Command::baseline_device_information();
    let t1 = Instant::now();
    for (i, u) in udids.iter().enumerate() {
        let r = http
            .put(format!("{url}/v1/enqueue/{u}?nopush=1"))
            .basic_auth("nanomdm", Some(KEY))
            .body(cmd.to_plist(&format!("di-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let enqueue_s = t1.elapsed().as_secs_f64();

    // Round trips: Idle → command → Acknowledged → empty.
    let t2 = Instant::now();
    let mut tasks = Vec::new();
    for (i, u) in udids.iter().enumerate() {
        let (http, url, sem, u) = (http.clone(), url.clone(), sem.clone(), u.clone());
        let cert = cert_header_value(&ids.certs[i]);
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let put = |body: Vec<u8>| {
                http.put(format!("{url}/mdm"))
                    .header("content-type", "application/x-apple-aspen-mdm")
                    .header(CERT_HEADER, &cert)
                    .body(body)
                    .send()
            };
            let idle = lab::plist_util::dict_to_xml(report_dict(&u, None, "Idle"));
            let body = put(idle).await.unwrap().bytes().await.unwrap();
            let env = parse_envelope(&body).unwrap();
            let mut r = report_dict(&u, Some(&env.command_uuid), "Acknowledged");
            let mut qr = plist::Dictionary::new();
            qr.insert("OSVersion".into(), "17.5.1".into());
            r.insert("QueryResponses".into(), plist::Value::Dictionary(qr));
            let body = put(lab::plist_util::dict_to_xml(r))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(body.is_empty());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rt_s = t2.elapsed().as_secs_f64();
    let rss = rss_peak_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "embedded MDM server, {n} simulated MDM clients, {conc} concurrent connections, SQLite synchronous=FULL:"
    );
    println!(
        "  check-ins (Authenticate + TokenUpdate): {} in {checkin_s:.2} s = {:.0}/s",
        2 * n,
        2.0 * n as f64 / checkin_s
    );
    println!(
        "  enqueues (API, sequential):             {n} in {enqueue_s:.2} s = {:.0}/s",
        n as f64 / enqueue_s
    );
    println!(
        "  command round trips (Idle→cmd→Ack→end): {n} in {rt_s:.2} s = {:.0}/s ({} HTTP requests)",
        n as f64 / rt_s,
        2 * n
    );
    println!(
        "  server peak RSS: {} MiB",
        rss.map(|k| format!("{:.1}", k as f64 / 1024.0))
            .unwrap_or("?".into())
    );
    println!("command: cargo bench --bench mdm_throughput -- {n} {conc}");
}
