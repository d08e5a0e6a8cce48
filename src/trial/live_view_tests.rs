use super::*;
use crate::journal::Entry;

fn golden(name: &str) -> Vec<Entry> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
        .join("journal.jsonl");
    crate::journal::read(&path).expect("golden journal").entries
}

/// Compare with `tests/snapshots/<name>`; `LAB_UPDATE_SNAPSHOTS=1` rewrites it.
fn snapshot(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("LAB_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got, want,
        "snapshot {name} differs (LAB_UPDATE_SNAPSHOTS=1 rewrites it)"
    );
}

const LIMITS: Limits = Limits {
    follow_up_max_s: Some(7200.0),
};

#[test]
fn the_finished_rehearsal_is_one_row_per_device_in_discovery_order() {
    let entries = golden("rehearsal");
    let fold = Fold::of(&entries);
    let now = &entries.last().unwrap().at;
    let b = board(&fold, LIMITS, now);
    assert_eq!(
        b.rows.iter().map(|r| r.udid.as_str()).collect::<Vec<_>>(),
        fold.order.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(b.header.state, "finished");
    let counted: usize = b.header.counts.iter().map(|(_, n)| n).sum();
    assert_eq!(counted, fold.devices.len());
    snapshot(
        "live_view_rehearsal.txt",
        &(lines(&b, None).join("\n") + "\n"),
    );
}

#[test]
fn mid_run_the_board_shows_doses_in_progress_and_the_follow_up_left() {
    let entries = golden("rehearsal");
    // The prefix up to the first OSUpdateStatus answer: doses out, follow-up running.
    let cut = entries
        .iter()
        .position(|e| {
            matches!(&e.event, crate::journal::Event::MdmResult { request_type: Some(t), .. } if t == "OSUpdateStatus")
        })
        .expect("an OSUpdateStatus answer")
        + 1;
    let fold = Fold::of(&entries[..cut]);
    let now = &entries[cut - 1].at;
    let b = board(&fold, LIMITS, now);
    assert_eq!(b.header.state, "running");
    assert!(b.header.t_plus.starts_with("T+"), "{:?}", b.header);
    assert!(b.header.follow_up_left.ends_with(" left"), "{:?}", b.header);
    assert!(
        b.rows
            .iter()
            .any(|r| r.cells[6].starts_with("OSUpdateStatus")),
        "{:#?}",
        b.rows
    );
    snapshot(
        "live_view_rehearsal_mid.txt",
        &(lines(&b, None).join("\n") + "\n"),
    );
}

#[test]
fn before_any_dose_there_is_no_t_plus_and_no_countdown() {
    let entries = golden("rehearsal");
    let cut = entries
        .iter()
        .position(|e| matches!(e.event, crate::journal::Event::DoseIntent { .. }))
        .unwrap();
    let fold = Fold::of(&entries[..cut]);
    let b = board(&fold, LIMITS, &entries[cut - 1].at);
    assert_eq!(b.header.t_plus, "before the first dose");
    assert_eq!(b.header.follow_up_left, "-");
    assert!(b.rows.iter().all(|r| r.cells[7] == "-"));
}

#[test]
fn the_follow_up_countdown_runs_in_lab_time_and_ends_at_over() {
    let entries = golden("rehearsal");
    let mut fold = Fold::of(&entries);
    for d in fold.devices.values_mut() {
        d.end = None;
    }
    let first = fold
        .devices
        .values()
        .filter_map(|d| d.first_dose_at.clone())
        .min()
        .unwrap();
    let later = |s: i64| {
        (chrono::DateTime::parse_from_rfc3339(&first).unwrap() + chrono::Duration::seconds(s))
            .to_rfc3339()
    };
    let scale = fold.record.run().time_scale.unwrap_or(1.0);
    let b = board(
        &fold,
        Limits {
            follow_up_max_s: Some(1e9),
        },
        &later(10),
    );
    assert_eq!(b.header.t_plus, format!("T+{}", span(10.0 * scale)));
    let b = board(
        &fold,
        Limits {
            follow_up_max_s: Some(1.0),
        },
        &later(10_000),
    );
    assert_eq!(b.header.follow_up_left, "over");
}

#[test]
fn spans_and_cut_lines() {
    assert_eq!(span(-3.0), "0s");
    assert_eq!(span(59.9), "59s");
    assert_eq!(span(185.0), "3m05s");
    assert_eq!(span(3720.0), "1h02m");
    let entries = golden("rehearsal");
    let b = board(&Fold::of(&entries), LIMITS, &entries.last().unwrap().at);
    for l in lines(&b, Some(40)) {
        assert!(l.chars().count() <= 40, "{l}");
    }
}
