//! `lab report` on a large journal: wall time and peak RSS for all reports.
//!
//!   cargo bench --bench report_1m [-- EVENTS [DEVICES]]      (default 1 000 000 events, 1 000 devices)
//!
//! With `REPORT_1M_DIR=DIR` the journal and the reports are written to `DIR` and kept (to diff
//! the reports of two builds); otherwise a temporary folder is used.
//!
//! The journal is synthetic but shaped like a real run: per device discovery, baseline,
//! eligibility, allocation, dose, then OSUpdateStatus answers (raw plists) and re-probes until
//! the event budget is spent. Written without an fsync per line (it is input, not a run), then
//! synced once before the clock starts: a run's journal is on disk when its reports are made,
//! and the reports' one filesystem sync would otherwise flush the generator's journal too.

use base64::Engine;
use lab::journal::{Entry, Event, Reason, SCHEMA_VERSION};
use std::io::Write;
use std::time::Instant;

fn rss_peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn status_plist(udid: &str, uuid: &str, pct: f64, downloaded: bool) -> String {
    let x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict><key>CommandUUID</key><string>{uuid}</string><key>OSUpdateStatus</key><array><dict><key>DownloadPercentComplete</key><real>{pct}</real><key>IsDownloaded</key><{d}/><key>ProductKey</key><string>iOSUpdate21G93</string><key>Status</key><string>Downloading</string></dict></array><key>Status</key><string>Acknowledged</string><key>UDID</key><string>{udid}</string></dict></plist>",
        d = if downloaded { "true" } else { "false" }
    );
    base64::engine::general_purpose::STANDARD.encode(x)
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let total: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let devices: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("REPORT_1M_DIR").map(std::path::PathBuf::from);
    if let Some(k) = &keep {
        std::fs::create_dir_all(k).unwrap();
    }
    let dir = keep.as_deref().unwrap_or(tmp.path());
    let path = dir.join("journal.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let seq = std::cell::Cell::new(0u64);
    let put = |w: &mut std::io::BufWriter<std::fs::File>, event: Event| {
        seq.set(seq.get() + 1);
        let seq = seq.get();
        let e = Entry {
            seq,
            at: format!(
                "2026-11-27T10:{:02}:{:02}.{:03}Z",
                (seq / 60_000) % 60,
                (seq / 1000) % 60,
                seq % 1000
            ),
            event,
        };
        serde_json::to_writer(&mut *w, &e).unwrap();
        w.write_all(b"\n").unwrap();
    };
    let t0 = Instant::now();
    put(
        &mut w,
        Event::RunStarted {
            schema: SCHEMA_VERSION,
            trial_id: "bench".into(),
            protocol_sha256: "0".repeat(64),
            lab_version: env!("CARGO_PKG_VERSION").into(),
            time_scale: None,
            simulated: false,
        },
    );
    let udid = |i: u64| format!("00008030-{i:016X}");
    for i in 0..devices {
        let u = udid(i);
        put(
            &mut w,
            Event::DeviceDiscovered {
                udid: u.clone(),
                host: "127.0.0.1:27015".into(),
                device_id: i as u32 + 1,
            },
        );
        put(
            &mut w,
            Event::BaselineRecorded {
                udid: u.clone(),
                probe: serde_json::json!({"udid": u, "status": "ok", "baseline": {
            "product_version": {"value": "17.5.1", "source": {"via": "lockdown", "domain": null, "key": "ProductVersion"}},
            "build_version": {"value": "21F90", "source": {"via": "lockdown", "domain": null, "key": "BuildVersion"}}}}),
            },
        );
        put(
            &mut w,
            Event::EligibilityAssessed {
                udid: u.clone(),
                eligible: i % 10 != 0,
                reasons: if i % 10 == 0 {
                    vec![Reason {
                        rule: "battery".into(),
                        message: "low".into(),
                        values: serde_json::Value::Null,
                    }]
                } else {
                    vec![]
                },
                target: serde_json::json!({"product_key": "iOSUpdate21G93", "version": "17.6.1", "build": "21G93"}),
            },
        );
    }
    for i in (0..devices).filter(|i| i % 10 != 0) {
        let u = udid(i);
        put(
            &mut w,
            Event::Allocated {
                udid: u.clone(),
                arm: "default".into(),
                seed: 1,
            },
        );
    }
    put(
        &mut w,
        Event::ConsentGiven {
            by: lab::journal::ConsentBy::Flag,
            udids: vec![],
        },
    );
    for i in (0..devices).filter(|i| i % 10 != 0) {
        let u = udid(i);
        let c = format!("dose-{i}");
        put(
            &mut w,
            Event::DoseIntent {
                udid: u.clone(),
                arm: "default".into(),
                step: 1,
                command_uuid: c.clone(),
                request_type: "ScheduleOSUpdate".into(),
                install_action: Some(lab::mdm::command::InstallAction::Default),
                starting_build: "21F90".into(),
                command_b64: String::new(),
                mdm_store: None,
            },
        );
        put(
            &mut w,
            Event::DoseEnqueued {
                udid: u,
                command_uuid: c,
                pushed: Some(true),
                push_error: None,
            },
        );
    }
    let mut k = 0u64;
    while seq.get() < total.saturating_sub(devices) {
        let i = (k % devices) | 1;
        let u = udid(i);
        let c = format!("st-{k}");
        let pct = ((k / devices) as f64 / 100.0).min(1.0);
        put(
            &mut w,
            Event::MdmResult {
                udid: u.clone(),
                command_uuid: c.clone(),
                request_type: Some("OSUpdateStatus".into()),
                status: "Acknowledged".into(),
                raw_b64: status_plist(&u, &c, pct, pct >= 1.0),
                received_at: String::new(),
            },
        );
        k += 1;
        if k.is_multiple_of(7) {
            put(
                &mut w,
                Event::DeviceReprobed {
                    udid: u,
                    attached: true,
                    product_version: Some("17.5.1".into()),
                    build_version: Some("21F90".into()),
                    error: None,
                    network: None,
                    network_source: None,
                },
            );
        }
    }
    for i in (0..devices).filter(|i| i % 10 != 0) {
        put(
            &mut w,
            Event::FollowUpEnded {
                udid: udid(i),
                reason: "time limit".into(),
            },
        );
    }
    put(&mut w, Event::RunFinished);
    w.flush().unwrap();
    w.into_inner().unwrap().sync_all().unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    let seq = seq.get();
    eprintln!(
        "journal: {seq} events, {:.0} MiB, generated in {:.1} s",
        size as f64 / 1048576.0,
        t0.elapsed().as_secs_f64()
    );
    let rss_before = rss_peak_kib();
    let t = Instant::now();
    let written = lab::report::write_all(dir).unwrap();
    let wall = t.elapsed().as_secs_f64();
    println!(
        "lab report on {seq} journal events ({devices} devices, {:.0} MiB journal):",
        size as f64 / 1048576.0
    );
    println!("  all reports ({} files): {wall:.2} s wall", written.len());
    println!(
        "  peak RSS: {:.0} MiB (generator alone: {:.0} MiB)",
        rss_peak_kib() as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    println!("command: cargo bench --bench report_1m -- {total} {devices}");
}
