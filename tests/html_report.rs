//! `report.html`: rendered from a hand-built journal with something for every section, parsed
//! with an HTML5 parser and checked for structure; then rendered to a PNG by
//! `scripts/render-report` in headless Chromium.

use base64::Engine;
use lab::journal::{Entry, Event, Reason, SCHEMA_VERSION};
use lab::report::html::{self, AnomalyLink};
use plist::{Dictionary, Value};
use scraper::{Html, Selector};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const FEED_SHA: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
const EVIL: &str = "<script>alert(1)</script><img src=\"http://evil.example/x.png\">";

struct J {
    entries: Vec<Entry>,
    t: i64,
}

fn probe(udid: &str, name: &str, version: &str, build: &str) -> serde_json::Value {
    let f = |v: serde_json::Value, key: &str| json!({"value": v, "raw": v, "source": {"via": "lockdown", "domain": null, "key": key}});
    json!({
        "udid": udid, "status": "ok",
        "baseline": {
            "device_name": f(json!(name), "DeviceName"),
            "product_type": f(json!("iPhone12,1"), "ProductType"),
            "marketing_name": f(json!("iPhone 11"), "ProductType"),
            "product_version": f(json!(version), "ProductVersion"),
            "build_version": f(json!(build), "BuildVersion"),
            "disk": {"amount_data_available": f(json!(21_300_000_000u64), "AmountDataAvailable")},
            "battery": {"current_capacity": f(json!(80), "BatteryCurrentCapacity"),
                        "external_connected": f(json!(true), "ExternalConnected")},
            "supervision": {"device_is_chaperoned": f(json!(true), "DeviceIsChaperoned")},
            "passcode": {"password_protected": f(json!(false), "PasswordProtected")}
        }
    })
}

fn b64(d: Dictionary) -> String {
    base64::engine::general_purpose::STANDARD.encode(lab::plist_util::dict_to_xml(d))
}

impl J {
    fn new() -> J {
        let mut j = J {
            entries: vec![],
            t: 0,
        };
        j.push(Event::RunStarted {
            schema: SCHEMA_VERSION,
            trial_id: "html-trial-7".into(),
            protocol_sha256: SHA.into(),
            lab_version: "0.1.0".into(),
            time_scale: None,
            simulated: false,
        });
        j
    }

    fn at(&self) -> String {
        chrono::DateTime::from_timestamp(1_800_000_000 + self.t, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    fn push(&mut self, event: Event) -> &mut Self {
        let seq = self.entries.len() as u64 + 1;
        let at = self.at();
        self.entries.push(Entry { seq, at, event });
        self.t += 5;
        self
    }

    fn device(&mut self, udid: &str, name: &str, eligible: bool) -> &mut Self {
        self.push(Event::DeviceDiscovered {
            udid: udid.into(),
            host: "UNIX:/var/run/usbmuxd".into(),
            device_id: 1,
        });
        self.push(Event::BaselineRecorded {
            udid: udid.into(),
            probe: probe(udid, name, "17.5.1", "21F90"),
        });
        self.push(Event::EligibilityAssessed {
            udid: udid.into(),
            eligible,
            reasons: if eligible {
                vec![]
            } else {
                vec![Reason {
                    rule: "free_disk".into(),
                    message: "3.2 GB free; 6 GB needed".into(),
                    values: json!({"free": 3.2e9}),
                }]
            },
            target: if eligible {
                json!({"product_key": "iOSUpdate21G93", "version": "17.6.1", "build": "21G93"})
            } else {
                serde_json::Value::Null
            },
        })
    }

    fn dose(&mut self, udid: &str, arm: &str, step: u32, uuid: &str) -> &mut Self {
        self.push(Event::DoseIntent {
            udid: udid.into(),
            arm: arm.into(),
            step,
            command_uuid: uuid.into(),
            request_type: "ScheduleOSUpdate".into(),
            install_action: Some(lab::mdm::command::InstallAction::Default),
            starting_build: "21F90".into(),
            command_b64: "AAAA".into(),
            mdm_store: None,
        });
        self.push(Event::DoseEnqueued {
            udid: udid.into(),
            command_uuid: uuid.into(),
            pushed: Some(true),
            push_error: None,
        })
    }

    fn answer(
        &mut self,
        udid: &str,
        uuid: &str,
        rt: &str,
        status: &str,
        fill: impl FnOnce(&mut Dictionary),
    ) -> &mut Self {
        let mut d = lab::mdm::report::report_dict(udid, Some(uuid), status);
        fill(&mut d);
        let received_at = self.at();
        self.push(Event::MdmResult {
            udid: udid.into(),
            command_uuid: uuid.into(),
            request_type: Some(rt.into()),
            status: status.into(),
            raw_b64: b64(d),
            received_at,
        })
    }

    fn status(&mut self, udid: &str, uuid: &str, downloaded: bool) -> &mut Self {
        self.push(Event::CommandSent {
            udid: udid.into(),
            command_uuid: uuid.into(),
            request_type: "OSUpdateStatus".into(),
        });
        self.answer(udid, uuid, "OSUpdateStatus", "Acknowledged", |d| {
            let mut item = Dictionary::new();
            item.insert("ProductKey".into(), "iOSUpdate21G93".into());
            item.insert("IsDownloaded".into(), Value::Boolean(downloaded));
            item.insert("DownloadPercentComplete".into(), Value::Real(0.5));
            item.insert("Status".into(), "Downloading".into());
            d.insert(
                "OSUpdateStatus".into(),
                Value::Array(vec![Value::Dictionary(item)]),
            );
        })
    }

    fn reprobe(&mut self, udid: &str, attached: bool, build: Option<&str>) -> &mut Self {
        self.push(Event::DeviceReprobed {
            udid: udid.into(),
            attached,
            product_version: build
                .map(|b| if b == "21G93" { "17.6.1" } else { "17.5.1" }.to_string()),
            build_version: build.map(str::to_string),
            error: None,
            network: None,
            network_source: None,
        })
    }

    fn observe(
        &mut self,
        udid: Option<&str>,
        source: &str,
        kind: &str,
        key: &str,
        value: &str,
    ) -> &mut Self {
        self.push(Event::Observation {
            udid: udid.map(str::to_string),
            source: serde_json::from_value(serde_json::Value::from(source))
                .expect("a known observation source"),
            kind: kind.into(),
            key: key.into(),
            value: value.into(),
        })
    }
}

/// Five devices: updated after a restart, command error, detached for good, excluded (with a
/// hostile name), eligible but not allocated.
fn journal() -> Vec<Entry> {
    let mut j = J::new();
    j.observe(
        None,
        "harness",
        html::FEED_HASH_KIND,
        "data/quirks.yaml",
        FEED_SHA,
    )
    .observe(
        None,
        "harness",
        "host_unreachable",
        "10.0.0.9:27015",
        "connection refused",
    )
    .device("U-A", "Alpha phone", true)
    .device("U-B", "Bravo phone", true)
    .device("U-C", "Charlie phone", true)
    .device("U-X", EVIL, false)
    .device("U-E", "Echo phone", true);
    for (u, arm) in [("U-A", "default"), ("U-B", "asap"), ("U-C", "default")] {
        j.push(Event::Allocated {
            udid: u.into(),
            arm: arm.into(),
            seed: 1,
        });
    }
    j.push(Event::ConsentGiven {
        by: lab::journal::ConsentBy::Flag,
        udids: vec!["U-A".into(), "U-B".into(), "U-C".into()],
    });
    j.dose("U-A", "default", 1, "D-A1")
        .dose("U-B", "asap", 1, "D-B1")
        .dose("U-C", "default", 1, "D-C1")
        .answer("U-A", "D-A1", "ScheduleOSUpdate", "Acknowledged", |_| {})
        .answer("U-B", "D-B1", "ScheduleOSUpdate", "Error", |_| {})
        .answer("U-C", "D-C1", "ScheduleOSUpdate", "NotNow", |_| {})
        .status("U-A", "S-A1", false)
        .status("U-A", "S-A2", true)
        .observe(
            Some("U-A"),
            "operator",
            "after_dose",
            "screen",
            "Installing… <b>progress</b> & \"quotes\"",
        )
        .reprobe("U-A", false, None)
        .reprobe("U-C", false, None)
        .reprobe("U-B", true, Some("21F90"))
        .reprobe("U-A", true, Some("21G93"));
    j.push(Event::FollowUpEnded {
        udid: "U-A".into(),
        reason: "updated reached".into(),
    });
    j.push(Event::FollowUpEnded {
        udid: "U-B".into(),
        reason: "follow-up time limit".into(),
    });
    j.push(Event::FollowUpEnded {
        udid: "U-C".into(),
        reason: "follow-up time limit".into(),
    });
    j.push(Event::RunFinished);
    j.entries
}

fn write_run(dir: &Path, entries: &[Entry]) {
    let text: String = entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    std::fs::write(dir.join("journal.jsonl"), text).unwrap();
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn text_of(doc: &Html, s: &str) -> String {
    doc.select(&sel(s))
        .map(|e| e.text().collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn report_html_is_valid_self_contained_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let entries = journal();
    write_run(dir.path(), &entries);
    let written = lab::report::write_all(dir.path()).unwrap();
    assert!(written.iter().any(|p| p.ends_with("report.html")));
    let page = std::fs::read_to_string(dir.path().join("report.html")).unwrap();

    // Deterministic: regenerating gives the same bytes, and it is the pure render.
    lab::report::write_all(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("report.html")).unwrap(),
        page
    );
    assert_eq!(
        html::render(&entries, &lab::report::anomaly_links(&entries)),
        page
    );

    // Valid HTML5: the parser reports no error.
    let doc = Html::parse_document(&page);
    assert!(doc.errors.is_empty(), "HTML parse errors: {:?}", doc.errors);
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_eq!(
        doc.select(&sel("html[lang] > head > meta[charset]"))
            .count(),
        1
    );
    assert_eq!(doc.select(&sel("head > title")).count(), 1);

    // Self-contained: no script, no external resource, no network reference.
    assert_eq!(
        doc.select(&sel("script, link, iframe, object, embed, img"))
            .count(),
        0
    );
    assert_eq!(doc.select(&sel("[src]")).count(), 0, "no src= at all");
    for a in doc.select(&sel("[href]")) {
        let href = a.value().attr("href").unwrap();
        assert!(
            href.starts_with('#') || href.starts_with("radar/"),
            "external or unexpected href {href}"
        );
    }
    assert!(!page.contains("@import") && !page.contains("url(http"));

    // Header values.
    let header = text_of(&doc, "table#header");
    for v in [
        "html-trial-7",
        SHA,
        "0.1.0",
        FEED_SHA,
        "data/quirks.yaml",
        "finished",
    ] {
        assert!(header.contains(v), "header lacks {v}: {header}");
    }
    assert!(header.contains("2027-01-15T08:00:00.000Z"), "{header}");

    // One CONSORT diagram with its counts.
    assert_eq!(doc.select(&sel("svg.consort")).count(), 1);
    let consort = text_of(&doc, "svg.consort");
    for v in [
        "Enrolled (discovered): n = 5",
        "Excluded: n = 1",
        "free_disk: 1",
        "Eligible: n = 4",
        "not allocated: 1",
        "Allocated to default: n = 2",
        "Allocated to asap: n = 1",
        "Lost to follow-up: n = 1",
        "detached, never seen again: 1",
        "updated: 1",
        "command_error: 1",
    ] {
        assert!(consort.contains(v), "CONSORT lacks {v:?}: {consort}");
    }

    // Baseline by arm: a column per arm, the unallocated, and all.
    let cols: Vec<String> = doc
        .select(&sel("table.baseline thead th"))
        .map(|e| e.text().collect())
        .collect();
    assert_eq!(
        cols,
        [
            "",
            "Arm default",
            "Arm asap",
            "Not allocated",
            "All devices"
        ]
    );

    // One swimlane per device, in order of discovery, the excluded ones last and folded away,
    // with the status band, doses and the detached period.
    let lanes: Vec<_> = doc.select(&sel("section.lane")).collect();
    assert_eq!(lanes.len(), 5);
    assert_eq!(doc.select(&sel("svg.swimlane")).count(), 5);
    let udids: Vec<&str> = lanes
        .iter()
        .map(|l| l.value().attr("data-udid").unwrap())
        .collect();
    assert_eq!(udids, ["U-A", "U-B", "U-C", "U-E", "U-X"]);
    let folded: Vec<_> = doc
        .select(&sel("details.lanes-excluded section.lane"))
        .map(|l| l.value().attr("data-udid").unwrap())
        .collect();
    assert_eq!(folded, ["U-X"]);
    let lane_a = lanes[0].html();
    for class in [
        "s-dosed",
        "s-downloading",
        "s-downloaded",
        "s-detached",
        "s-updated",
    ] {
        assert!(lane_a.contains(class), "lane A lacks {class}");
    }
    assert!(lanes[1].html().contains("s-error"));
    assert!(lanes[4].html().contains("s-excluded"));
    assert!(lane_a.contains("T+0s"));
    // The operator's observation, escaped, listed under the lane.
    let obs = text_of(&doc, "section#dev-1 ol.obs");
    assert!(
        obs.contains("Installing… <b>progress</b> & \"quotes\""),
        "{obs}"
    );

    // The hostile device name is text, not markup.
    let names = text_of(&doc, "section.lane h3");
    assert!(names.contains(EVIL), "{names}");

    // Outcomes per arm.
    let outcomes = text_of(&doc, "table.outcomes");
    for v in [
        "default (n = 2)",
        "asap (n = 1)",
        "updated",
        "lost_to_follow_up",
        "command_error",
    ] {
        assert!(outcomes.contains(v), "outcomes lack {v}: {outcomes}");
    }
    assert_eq!(doc.select(&sel("table.per-device tbody tr")).count(), 5);

    // Adverse events (the lost device) and the anomalies the detectors found in this journal
    // (Alpha's ScheduleOSUpdate was first answered only after its restart).
    assert!(text_of(&doc, "section#adverse-events").contains("device lost"));
    let anomalies = text_of(&doc, "section#anomalies");
    assert!(anomalies.contains("schedule_no_response"), "{anomalies}");
    assert_eq!(
        doc.select(&sel("section#anomalies a[href^=\"radar/\"]"))
            .count(),
        lab::report::anomaly_links(&entries).len()
    );
}

#[test]
fn anomalies_link_to_their_drafts() {
    let entries = journal();
    let anomalies = [
        AnomalyLink {
            id: "ANOM-0001".into(),
            title: "Build <changed> without a restart".into(),
            udid: Some("U-A".into()),
        },
        AnomalyLink {
            id: "ANOM-0002".into(),
            title: "MDM answered twice".into(),
            udid: None,
        },
    ];
    let page = html::render(&entries, &anomalies);
    let doc = Html::parse_document(&page);
    assert!(doc.errors.is_empty(), "{:?}", doc.errors);
    let links: Vec<&str> = doc
        .select(&sel("table.anomalies a[href^='radar/']"))
        .map(|a| a.value().attr("href").unwrap())
        .collect();
    assert_eq!(links, ["radar/ANOM-0001.md", "radar/ANOM-0002.md"]);
    assert!(text_of(&doc, "table.anomalies").contains("Build <changed> without a restart"));
    // The device's lane links it too, and the table links back to the lane.
    assert_eq!(
        doc.select(&sel("section#dev-1 a[href='radar/ANOM-0001.md']"))
            .count(),
        1
    );
    assert_eq!(
        doc.select(&sel("table.anomalies a[href='#dev-1']")).count(),
        1
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have_chromium() -> bool {
    ["chromium", "chromium-browser"].iter().any(|c| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 33, "PNG too short: {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn render_report_script_writes_a_png() {
    if !have_chromium() {
        if std::env::var_os("CI").is_some() {
            panic!("Chromium is missing on CI (apt-get install chromium)");
        }
        println!("SKIPPED: Chromium not installed (apt-get install chromium)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), &journal());
    lab::report::write_all(dir.path()).unwrap();
    let out = dir.path().join("shot.png");
    let o = Command::new(repo().join("scripts/render-report"))
        .arg(dir.path())
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "render-report: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    let (w, h) = png_size(&bytes);
    assert_eq!(w, 1400);
    assert!(h > 1000, "height {h}");
    assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
}

#[test]
fn render_report_script_says_how_to_install_chromium() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), &journal());
    lab::report::write_all(dir.path()).unwrap();
    // A PATH holding bash and nothing else.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink("/bin/bash", bin.join("bash")).unwrap();
    let o = Command::new(repo().join("scripts/render-report"))
        .arg(dir.path())
        .env("PATH", &bin)
        .env("CHROMIUM", "")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("apt-get install chromium"));
}
