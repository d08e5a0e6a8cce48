//! The map in `ARCHITECTURE.md`, checked: which layer may import which, how long a production
//! file or function may grow. Both are ratchets: today's known breaks are listed by name (the
//! redesign removes them one by one), a new break fails, and a listed break that has gone away
//! fails too until it is struck from the list, so the lists only ever shrink.
//!
//! The scan is textual over `src/` (rustfmt-formatted code): a `crate::layer` path in a file's
//! production part (everything before its first `#[cfg(test)]`) is an import of that layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers a layer must never reach, as `ARCHITECTURE.md` draws them.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // Codecs and plumbing at the bottom know nothing of what is built on them.
    ("usbmux", UPPER),
    ("lockdown", UPPER),
    ("plist_util", UPPER),
    ("io", UPPER),
    ("tls", UPPER),
    ("rng", UPPER),
    ("models", UPPER),
    ("version", UPPER),
    ("join", UPPER),
    ("usb", UPPER),
    ("http_client", UPPER),
    ("listen_limits", UPPER),
    ("private_fs", UPPER),
    ("units", UPPER),
    ("format", UPPER),
    // The journal and the pure verdicts sit at the bottom of the domain (issue 12).
    ("journal", &["trial", "report", "sim", "cli", "mdm_server"]),
    // The verdicts read the journal's fold and nothing of the harness or its reports.
    (
        "verdicts",
        &[
            "trial",
            "report",
            "sim",
            "cli",
            "mdm_server",
            "evidence",
            "probe",
        ],
    ),
    // The MDM protocol model is shared by the client backends and the embedded server.
    (
        "mdm",
        &["mdm_server", "sim", "trial", "evidence", "report", "cli"],
    ),
    (
        "mdm_server",
        &["sim", "trial", "evidence", "report", "cli", "probe"],
    ),
    // The simulator never imports the harness's decision code (DESIGN.md, rules of the house).
    ("sim", &["trial", "evidence", "report", "cli", "probe"]),
    (
        "probe",
        &["sim", "trial", "evidence", "report", "cli", "mdm_server"],
    ),
    // The runner is handed a lab connection; it neither builds the simulated lab nor writes reports.
    ("trial", &["sim", "report", "mdm_server", "cli"]),
    ("evidence", &["report", "sim", "mdm_server", "cli"]),
    ("report", &["sim", "mdm_server", "cli"]),
    (
        "feeds",
        &["sim", "trial", "evidence", "report", "cli", "mdm_server"],
    ),
    ("known_bad", &["trial", "evidence", "report", "cli"]),
    (
        "input",
        &["sim", "evidence", "report", "cli", "mdm_server", "trial"],
    ),
    // The live web view reads the journal, its fold and the reports' HTML; it never drives a
    // run (no `trial::runner`, checked below) nor reaches the lab. Only `cli` reaches it.
    ("watch", WATCH_NEVER),
];

const WATCH_NEVER: &[&str] = &[
    "sim",
    "mdm_server",
    "cli",
    "probe",
    "evidence",
    "usbmux",
    "lockdown",
];

const UPPER: &[&str] = &[
    "probe",
    "mdm",
    "mdm_server",
    "sim",
    "trial",
    "evidence",
    "report",
    "cli",
    "feeds",
    "journal",
    "verdicts",
    "watch",
];

/// Today's layer breaks (file, layer it reaches). Issue 12 removes them; strike each one here
/// when it goes.
const KNOWN_BREAKS: &[(&str, &str)] = &[];

/// No production file above this many lines (issue 12).
const MAX_FILE_LINES: usize = 1000;
/// No production function above this many lines (issue 12).
const MAX_FN_LINES: usize = 150;

/// Files over [`MAX_FILE_LINES`] today.
const KNOWN_LONG_FILES: &[&str] = &[];

/// Functions over [`MAX_FN_LINES`] today, as `file::name`.
const KNOWN_LONG_FNS: &[&str] = &[];

fn src_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            src_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every production file as (path relative to the crate, top-level layer, production text).
fn production_files() -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    src_files(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let layer = rel
                .trim_start_matches("src/")
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            let prod = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            (rel, layer, prod)
        })
        .collect()
}

/// The top-level layers a text names as `crate::layer` or `crate::{layer, ...}`.
fn layers_used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name = ident(part.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn layers_point_one_way() {
    let rules: BTreeMap<&str, &[&str]> = FORBIDDEN.iter().copied().collect();
    let mut found = BTreeSet::new();
    for (file, layer, text) in production_files() {
        let Some(forbidden) = rules.get(layer.as_str()) else {
            continue;
        };
        for used in layers_used(&text) {
            if used != layer && forbidden.contains(&used.as_str()) {
                found.insert((file.clone(), used));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN_BREAKS
        .iter()
        .map(|(f, l)| (f.to_string(), l.to_string()))
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "forbidden imports (see ARCHITECTURE.md for the allowed arrows): {new:?}"
    );
    assert!(
        gone.is_empty(),
        "these layer breaks are gone: strike them from KNOWN_BREAKS in tests/architecture.rs: {gone:?}"
    );
}

#[test]
fn production_files_stay_short() {
    let long: BTreeSet<String> = production_files()
        .into_iter()
        .filter(|(_, _, text)| text.lines().count() > MAX_FILE_LINES)
        .map(|(f, _, _)| f)
        .collect();
    let known: BTreeSet<String> = KNOWN_LONG_FILES.iter().map(|s| s.to_string()).collect();
    let new: Vec<_> = long.difference(&known).collect();
    let gone: Vec<_> = known.difference(&long).collect();
    assert!(
        new.is_empty(),
        "production files over {MAX_FILE_LINES} lines: {new:?}; split them by what they hold"
    );
    assert!(
        gone.is_empty(),
        "now under {MAX_FILE_LINES} lines: strike from KNOWN_LONG_FILES: {gone:?}"
    );
}

/// `(name, lines)` of every function in rustfmt-formatted text: from its `fn` line to the first
/// line that closes it at the same indentation.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let mut words = trimmed.split_whitespace().peekable();
        let mut name = None;
        while let Some(w) = words.next() {
            match w {
                "pub" | "async" | "const" | "unsafe" | "extern" => continue,
                w if w.starts_with("pub(") => continue,
                "fn" => {
                    name = words.next().map(|n| {
                        n.chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect::<String>()
                    });
                    break;
                }
                _ => break,
            }
        }
        let Some(name) = name else { continue };
        if trimmed.ends_with(';') {
            continue; // a declaration in a trait
        }
        let close = format!("{indent}}}");
        if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
            out.push((name, end + 2));
        }
    }
    out
}

#[test]
fn production_functions_stay_short() {
    let mut long = BTreeSet::new();
    for (file, _, text) in production_files() {
        for (name, n) in function_lengths(&text) {
            if n > MAX_FN_LINES {
                long.insert(format!("{file}::{name}"));
            }
        }
    }
    let known: BTreeSet<String> = KNOWN_LONG_FNS.iter().map(|s| s.to_string()).collect();
    let new: Vec<_> = long.difference(&known).collect();
    let gone: Vec<_> = known.difference(&long).collect();
    assert!(
        new.is_empty(),
        "functions over {MAX_FN_LINES} lines: {new:?}; split them into named steps"
    );
    assert!(
        gone.is_empty(),
        "now under {MAX_FN_LINES} lines: strike from KNOWN_LONG_FNS: {gone:?}"
    );
}

/// The web view shows a run; it never drives one: no `trial::runner` in `src/watch/`. And no
/// layer but `cli` (which wires it) reaches the web view.
#[test]
fn the_web_view_is_reached_by_cli_only_and_never_reaches_the_runner() {
    let mut offenders = Vec::new();
    for (file, layer, text) in production_files() {
        if layer == "watch" && text.contains("trial::runner") {
            offenders.push(format!("{file} reaches trial::runner"));
        }
        if !["watch", "cli"].contains(&layer.as_str()) && layers_used(&text).contains("watch") {
            offenders.push(format!("{file} reaches watch"));
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}

#[test]
fn the_scanner_sees_what_it_must() {
    let used = layers_used("use crate::sim::fleet;\nlet x = crate::{report, trial::journal};");
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["report", "sim", "trial"]
    );
    let text = "fn a() {\n    x();\n}\n\n    pub async fn b(\n        y: u8,\n    ) {\n        z();\n    }\n";
    assert_eq!(
        function_lengths(text),
        [("a".to_string(), 3), ("b".to_string(), 5)]
    );
}
