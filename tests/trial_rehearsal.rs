//! The example protocol `trials/rehearsal.yaml` and its fleet load, and the fleet's devices
//! qualify as their comments say: each device's baseline comes from the simulated lockdown
//! values and its offer from the simulated AvailableOSUpdates answer, parsed by the MDM codec.

mod common;
use common::{csv_rows, lab_run, run_dir, stderr};
use lab::journal::fold::baseline_facts::{BenchEnrollment, UserChannel, enrollment};
use lab::mdm::report::{available_os_updates, parse_report};
use lab::probe::baseline::{Baseline, DOMAIN_BATTERY, DOMAIN_CHAPERONE, DOMAIN_DISK};
use lab::probe::run::{DeviceProbe, ProbeStatus};
use lab::sim::lab::SimLab;
use lab::sim::os_update::{DeviceUpdateState, OsUpdateSim, Outcome};
use lab::sim::quirks::{QuirkTable, device_seed};
use lab::trial::allocation::{Candidate, allocate};
use lab::trial::eligibility::{Subject, assess};
use lab::trial::protocol::load;
use lab::usbmux::DeviceEntry;
use plist::{Dictionary, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn rehearsal_protocol_and_fleet_load() {
    let p = load(&repo("trials/rehearsal.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let pr = &p.protocol;
    assert_eq!(pr.id, "rehearsal-12");
    let sim = pr.lab.simulated.as_ref().expect("simulated lab");
    assert_eq!(sim.speed, 120.0);
    let names: Vec<&str> = pr.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "default-two-step",
            "download-only",
            "ddm-enforcement",
            "bug-reproduction"
        ]
    );
    assert!(pr.arms[3].accept_known_bad && !pr.arms[0].accept_known_bad);
    assert_eq!(
        pr.arms[2].dose_mechanism(),
        lab::trial::protocol::DoseMechanism::DdmEnforcement
    );
    // At speed 120 the follow-up lasts at most a minute of real time.
    let real = pr.follow_up.max_duration.0.as_secs_f64() / sim.speed;
    assert!(real <= 60.0, "{real}");
    assert_eq!(pr.follow_up.poll_interval.0.as_secs(), 30);

    let fleet = lab::sim::fleet::load(&p.resolve(&sim.fleet)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fleet.len(), 12);
}

fn offer(
    lab: &SimLab,
    i: usize,
) -> (
    Option<Vec<lab::mdm::report::AvailableUpdate>>,
    Option<String>,
) {
    let d = &lab.devices[i];
    let spec = d.live();
    let config = spec.update.config().expect("update config");
    let quirks = QuirkTable::builtin().for_device(&spec.ios_version, lab.seed, &spec.udid);
    let mut sim = OsUpdateSim::new(
        DeviceUpdateState::from_fleet(&spec, &spec.update),
        config,
        quirks,
        device_seed(lab.seed, &spec.udid),
    );
    let mut cmd = Dictionary::new();
    cmd.insert("RequestType".into(), "AvailableOSUpdates".into());
    let out = sim.handle(lab.clock.start(), "av-1", "AvailableOSUpdates", &cmd);
    let Outcome::Reply { status, body } = out else {
        return (None, Some("AvailableOSUpdates: no reply".into()));
    };
    let mut full = body.clone();
    full.insert("Status".into(), Value::String(status.clone()));
    full.insert("UDID".into(), Value::String(spec.udid.clone()));
    full.insert("CommandUUID".into(), "av-1".into());
    let mut raw = Vec::new();
    plist::to_writer_xml(&mut raw, &Value::Dictionary(full)).unwrap();
    let report = parse_report(&raw).expect("report parses");
    if status == "Acknowledged" {
        (available_os_updates(&report), None)
    } else {
        (None, Some(format!("AvailableOSUpdates answered {status}")))
    }
}

fn probe(lab: &SimLab, i: usize) -> DeviceProbe {
    let d = &lab.devices[i];
    let dom = |n: Option<&str>| d.domain(n).ok_or_else(|| "no such domain".to_string());
    let entry = DeviceEntry {
        device_id: i as u32 + 1,
        serial_number: d.spec.udid.clone(),
        product_id: Some(0x12a8),
        location_id: Some(d.location_id),
        connection_type: "USB".into(),
        connection_speed: Some(480_000_000),
    };
    DeviceProbe {
        host: "sim".into(),
        device_id: entry.device_id,
        udid: d.spec.udid.clone(),
        status: ProbeStatus::Ok,
        failure: None,
        elapsed_ms: 0,
        baseline: Baseline::from_replies(
            "sim",
            &entry,
            &dom(None),
            &dom(Some(DOMAIN_DISK)),
            &dom(Some(DOMAIN_BATTERY)),
            &dom(Some(DOMAIN_CHAPERONE)),
            None,
        ),
        mdm: None,
        disagreements: Vec::new(),
        device_time: None,
        utc_offset: None,
        host_time: None,
    }
}

#[test]
fn rehearsal_fleet_qualifies_as_its_comments_say_and_allocates() {
    let p = load(&repo("trials/rehearsal.yaml")).unwrap();
    let pr = &p.protocol;
    let sim = pr.lab.simulated.as_ref().unwrap();
    let specs = lab::sim::fleet::load(&p.resolve(&sim.fleet)).unwrap();
    let lab = SimLab::new(specs, 12, sim.speed, chrono::Utc::now()).unwrap();

    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut eligible = Vec::new();
    for i in 0..lab.devices.len() {
        let pr_ = probe(&lab, i);
        let (offered, offered_error) = offer(&lab, i);
        // The enrollment facts as the runner derives them (an iPhone is no Shared iPad), the
        // bench stating full access rights.
        let bench = BenchEnrollment {
            dep_enrolled: None,
            access_rights: Some(8191),
        };
        let channel = UserChannel::Unknown("no user channels here".into());
        let facts = enrollment(&serde_json::to_value(&pr_).unwrap(), bench, &channel);
        let mut s = Subject {
            probe: &pr_,
            offered: offered.as_deref(),
            offered_error,
            dosed_by_other_protocols: Vec::new(),
            access_rights: None,
            shared_ipad_user_logged_in: None,
            dep_enrolled: None,
            fact_sources: Default::default(),
            ddm_active: None,
            ddm_error: None,
            feeds: None,
        }
        .with_enrollment(&facts);
        s.dep_enrolled = Some(lab.devices[i].spec.update.dep_enrolled);
        let v = assess(&pr.eligibility, &pr.target, &s);
        let name = lab.devices[i].spec.name.clone();
        if v.eligible {
            let t = v.target.as_ref().expect("eligible implies a target");
            assert_eq!(t.version, "17.6.1", "{name}");
            eligible.push(Candidate {
                udid: pr_.udid.clone(),
                passcode: pr_.baseline.passcode.password_protected.value,
                model: pr_.baseline.product_type.value.clone(),
            });
        }
        got.insert(name, v.reasons.iter().map(|r| r.rule.clone()).collect());
    }
    let expect = |name: &str| -> Vec<String> {
        got.iter()
            .find(|(n, _)| n.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing"))
            .1
            .clone()
    };
    for ok in ["R01", "R02", "R03", "R05", "R06"] {
        assert!(expect(ok).is_empty(), "{ok}: {:?}", expect(ok));
    }
    assert_eq!(expect("R04"), ["battery"]);
    // Unsupervised: also no AvailableOSUpdates answer (it needs supervision).
    assert_eq!(expect("R07"), ["supervised", "newer_target"]);
    assert_eq!(expect("R08"), ["free_disk"]);
    assert_eq!(expect("R09"), ["known_bad_version"]);
    assert_eq!(expect("R10"), ["known_bad_version"]);
    assert_eq!(expect("R11"), ["known_bad_version"]);
    assert_eq!(expect("R12"), ["min_ios"]);

    // As the runner does: the DDM arm draws first (two of the iOS 17 devices, which the
    // simulated MDM turns DDM on for), the ScheduleOSUpdate arms share the rest; the
    // bug-reproduction arm takes only waived known-bad devices.
    let ddm_arms: Vec<_> = pr
        .arms
        .iter()
        .filter(|a| a.ddm_enforcement.is_some())
        .cloned()
        .collect();
    let ios17: Vec<Candidate> = eligible
        .iter()
        .filter(|c| {
            let i = lab
                .devices
                .iter()
                .position(|d| d.spec.udid == c.udid)
                .unwrap();
            lab.devices[i].spec.ios_version.starts_with("17.")
        })
        .cloned()
        .collect();
    assert_eq!(ios17.len(), 4, "R01, R02, R05, R06");
    let d = allocate(&ddm_arms, &ios17, pr.allocation_seed).unwrap();
    assert_eq!(d.len(), 2);
    let rest: Vec<Candidate> = eligible
        .iter()
        .filter(|c| !d.iter().any(|(u, _)| *u == c.udid))
        .cloned()
        .collect();
    let arms: Vec<_> = pr
        .arms
        .iter()
        .filter(|a| !a.accept_known_bad && a.ddm_enforcement.is_none())
        .cloned()
        .collect();
    let a = allocate(&arms, &rest, pr.allocation_seed).unwrap();
    assert_eq!(a.len(), 3);
    let n = |arm: &str| a.iter().filter(|(_, x)| x == arm).count();
    assert_eq!((n("default-two-step"), n("download-only")), (2, 1));
    assert_eq!(a, allocate(&arms, &rest, pr.allocation_seed).unwrap());
}

/// The rehearsal as an operator runs it (its own simulated lab, here at speed 600) writes the
/// case report form: every row filled in for a dosed device, the answers it names on disk, and
/// a byte-order mark for spreadsheets (issue 14).
#[test]
fn the_rehearsal_writes_a_crf_with_no_blank_cell_for_a_dosed_device() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("trials/rehearsal.yaml")).unwrap();
    let fleet = repo("trials/fleets/rehearsal-12.yaml");
    let old = "simulated: { fleet: fleets/rehearsal-12.yaml, speed: 120 }";
    assert!(text.contains(old), "the rehearsal's lab line moved");
    let text = text.replace(
        old,
        &format!(
            "simulated: {{ fleet: {:?}, speed: 600 }}",
            fleet.display().to_string()
        ),
    );
    let proto = tmp.path().join("rehearsal.yaml");
    std::fs::write(&proto, text).unwrap();
    let results = tmp.path().join("results");
    let out = lab_run(&proto, &results).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = run_dir(&results);
    // The run ends with the summary (issue 15): report.html first, then the arms, exclusions,
    // anomalies with their drafts and deviations; the journal and the summary say simulated.
    let printed = String::from_utf8_lossy(&out.stdout);
    let tail = &printed[printed
        .rfind("\nrehearsal-12: finished, 12 devices")
        .expect(&printed)..];
    let report_line = format!("  report: {}", dir.join("report.html").display());
    assert!(tail.contains(&report_line), "{tail}");
    assert!(
        tail.contains("(simulated lab, clock ×600: a rehearsal, not evidence)"),
        "{tail}"
    );
    let order: Vec<usize> = [
        "Outcomes by arm",
        "Excluded: 4",
        "Anomalies: ",
        "Deviations: ",
    ]
    .iter()
    .map(|h| {
        tail.find(h)
            .unwrap_or_else(|| panic!("{h} missing: {tail}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{tail}");
    assert!(tail.contains("  radar/"), "{tail}");
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    assert!(
        journal
            .lines()
            .next()
            .unwrap()
            .contains("\"simulated\":true")
    );
    let bytes = std::fs::read(dir.join("crf.csv")).unwrap();
    assert!(
        bytes.starts_with("\u{feff}".as_bytes()),
        "no byte-order mark"
    );
    let rows = csv_rows(&dir.join("crf.csv"));
    assert_eq!(rows.len(), 12);
    let dosed: Vec<_> = rows
        .iter()
        .filter(|r| r["mdm_command_sent"] == "yes")
        .collect();
    assert!(dosed.len() >= 5, "{rows:?}");
    for r in &dosed {
        for (col, v) in r.iter() {
            assert!(!v.is_empty(), "{}: {col} is blank: {r:?}", r["udid"]);
            assert_ne!(v, "unknown", "{}: {col} is unknown: {r:?}", r["udid"]);
        }
        assert_ne!(r["arm"], "none");
        assert_eq!(r["exclusion_reason"], "none");
        // The answer it names is there (a DDM dose names its status report under ddm/).
        let named = r["mdm_response"].rsplit("; ").next().unwrap();
        assert!(dir.join(named).is_file(), "{}: {named} missing", r["udid"]);
    }
    // The fleet's `network: cellular` device shows as cellular, the others as Wi-Fi.
    assert_eq!(
        rows.iter().filter(|r| r["network"] == "cellular").count(),
        1,
        "{rows:?}"
    );
}
