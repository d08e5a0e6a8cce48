//! The terminal view of `lab run` (issue 15) on a pseudo-terminal: with stderr a terminal the
//! bench is a board redrawn in place (cursor up, clear, rows), not the line log; the web view
//! (`--watch`) serves the same run while it runs.

mod common;
use common::{lab_run, repo_path, run_dir};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The rehearsal at a higher speed (its 2 h follow-up in a few seconds), fleet path absolute.
fn fast_rehearsal(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_path("trials/rehearsal.yaml")).unwrap();
    let fleet = repo_path("trials/fleets/rehearsal-12.yaml");
    let text = text.replace(
        "simulated: { fleet: fleets/rehearsal-12.yaml, speed: 120 }",
        &format!("simulated: {{ fleet: {}, speed: 1200 }}", fleet.display()),
    );
    assert!(text.contains("speed: 1200"));
    let p = dir.join("rehearsal.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A pseudo-terminal of 200×50: (controller, the terminal side).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut m, mut s) = (0, 0);
    let ws = libc::winsize {
        ws_row: 50,
        ws_col: 200,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty fills the two descriptors; each is owned once, here.
    unsafe {
        assert_eq!(
            libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws),
            0
        );
        (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s))
    }
}

#[test]
fn on_a_terminal_the_run_is_a_board_redrawn_in_place() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let proto = fast_rehearsal(dir.path());
    let results = dir.path().join("results");
    let (controller, terminal) = pty();
    let mut child = lab_run(&proto, &results)
        .args(["--watch", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(terminal))
        .spawn()
        .unwrap();
    // Read the terminal until the run closes it (EIO once no process holds the other side).
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(controller);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    });
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let screen = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(status.success(), "{status}\n{screen}\n{stdout}");

    // The web view was served, on loopback.
    assert!(
        screen.contains("lab: watch this run at http://127.0.0.1:"),
        "{screen}"
    );
    // Redrawn in place: CSI n F (to the start of the line n up) then CSI J (clear below).
    let redraws = screen.matches("\x1b[J").count();
    assert!(redraws >= 2, "{redraws} redraws:\n{screen}");
    assert!(screen.contains("F\x1b[J"), "{screen}");
    // The board: header and rows with names, models and phases; the last drawing says finished.
    assert!(screen.contains("rehearsal-12 — finished"), "{screen}");
    assert!(screen.contains("simulated lab, time ×1200"), "{screen}");
    assert!(screen.contains("R01 iPhone 11"), "{screen}");
    assert!(
        screen.contains("following up") || screen.contains("ended"),
        "{screen}"
    );
    // Not the line log (`[hh:mm:ss] <udid> → arm …`).
    assert!(!screen.contains(" → arm "), "{screen}");
    // Stdout is the end-of-run summary and the run folder, as without a terminal.
    assert!(stdout.contains("\nOutcomes by arm\n"), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("run folder: "),
        "{stdout}"
    );
    let _ = std::io::stderr().write_all(
        format!(
            "live_tty: {} redraws, {:.1} s\n",
            redraws,
            started.elapsed().as_secs_f64()
        )
        .as_bytes(),
    );
    assert!(run_dir(&results).join("report.html").is_file());
}
