//! The live web view (`lab watch`, issue 15) in headless Chromium: the page renders every
//! device of the run, and changes when an event is appended to the journal, with no reload.
//!
//! Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON
//! messages, each ended by a NUL byte, on file descriptors 3 and 4), so no WebSocket client is
//! needed. Without Chromium the test says it is skipped; in CI (`CI` set) that is a failure:
//! `.ci/run` installs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn chromium() -> Option<&'static str> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("chromium is missing in CI: .ci/run must install it");
        }
        eprintln!("SKIPPED: chromium not found (install the `chromium` package to run this test)");
    }
    found
}

/// `lab watch` on `dir`, and the page's URL (it listens on a port the system picks).
struct Watch {
    child: Child,
    url: String,
    /// Kept open: `lab watch` may still write to its stderr.
    _stderr: BufReader<std::process::ChildStderr>,
}

impl Watch {
    fn start(dir: &Path) -> Watch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lab"))
            .args(["watch", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        stderr.read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "not loopback: {line}");
        Watch {
            child,
            url,
            _stderr: stderr,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium and its DevTools pipe.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: mpsc::Receiver<serde_json::Value>,
    next_id: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `pipe` fills the two descriptors it creates; each is owned once, here.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

impl Browser {
    fn start(exe: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (cmd_r, cmd_w) = pipe();
        let (res_r, res_w) = pipe();
        let (cr, rw) = (cmd_r.as_raw_fd(), res_w.as_raw_fd());
        let mut cmd = Command::new(exe);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec; the descriptors
        // are open in the parent until the child has started.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cr, 3) < 0 || libc::dup2(rw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop((cmd_r, res_w));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(std::fs::File::from(res_r));
            loop {
                let mut msg = Vec::new();
                match r.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                msg.pop();
                if let Ok(v) = serde_json::from_slice(&msg)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Browser {
            child,
            to: std::fs::File::from(cmd_w),
            from: rx,
            next_id: 0,
            session: None,
            _profile: profile,
        }
    }

    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = s.clone().into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to {method}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Open `url` in a new tab and talk to that tab from now on.
    fn open(&mut self, url: &str) {
        let t = self.call("Target.createTarget", serde_json::json!({"url": url}));
        let s = self.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": t["targetId"], "flatten": true}),
        );
        self.session = Some(s["sessionId"].as_str().unwrap().to_string());
    }

    fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Evaluate `expr` until it gives `want` (the page loads and updates on its own time).
    fn wait_for(&mut self, expr: &str, want: serde_json::Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.eval(expr);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{expr}: {got} after 30 s, want {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn golden_journal() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/rehearsal/journal.jsonl");
    let mut text = String::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text.lines().map(str::to_string).collect()
}

#[test]
fn the_page_shows_every_device_and_follows_the_journal() {
    let Some(exe) = chromium() else { return };
    let started = Instant::now();
    let lines = golden_journal();
    // The run as it stood mid-follow-up: every device discovered, not finished.
    let cut = lines
        .iter()
        .position(|l| l.contains("\"event\":\"follow_up_ended\""))
        .expect("a follow_up_ended in the rehearsal");
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.jsonl");
    std::fs::write(&journal, lines[..cut].join("\n") + "\n").unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/rehearsal/protocol.yaml"),
        dir.path().join("protocol.yaml"),
    )
    .unwrap();
    let devices = lines[..cut]
        .iter()
        .filter(|l| l.contains("\"event\":\"device_discovered\""))
        .count();
    assert!(devices > 1);

    let watch = Watch::start(dir.path());
    let mut b = Browser::start(exe);
    b.open(&watch.url);
    b.wait_for(
        "document.querySelectorAll('#devices tbody tr').length",
        devices.into(),
    );
    b.wait_for("document.getElementById('conn').textContent", "live".into());
    let seq_before = b.eval("document.getElementById('board').dataset.seq");
    assert_eq!(seq_before, cut.to_string().as_str());
    let phases_before = b.eval("document.querySelector('.counts').textContent");

    // The next event of the real run is appended: the device's follow-up ends.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap();
    writeln!(f, "{}", lines[cut]).unwrap();
    drop(f);
    b.wait_for(
        "document.getElementById('board').dataset.seq",
        (cut + 1).to_string().into(),
    );
    let phases_after = b.eval("document.querySelector('.counts').textContent");
    assert_ne!(phases_before, phases_after);
    assert!(
        phases_after.as_str().unwrap().contains("1 ended"),
        "{phases_after}"
    );
    // The event itself is listed, from the stream.
    let listed = b.eval("document.getElementById('events').textContent");
    assert!(
        listed.as_str().unwrap().contains("follow_up_ended"),
        "{listed}"
    );
    // The page was not reloaded: the list of events is the page's own memory.
    assert_eq!(
        b.eval("document.querySelectorAll('#events li').length"),
        serde_json::json!(1)
    );
    eprintln!(
        "chromium test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// One HTTP/1.1 request to the view; the status line and as much of the answer as came within
/// `wait`.
fn http(url: &str, request: &str, wait: Duration) -> String {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_view_is_read_only_and_streams_the_journal_from_an_offset() {
    let lines = golden_journal();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("journal.jsonl"),
        lines[..3].join("\n") + "\n",
    )
    .unwrap();
    let watch = Watch::start(dir.path());
    // No write action: only GET routes.
    let post = http(
        &watch.url,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    // From the second line on: events 2 and 3, each with the offset after it as its id.
    let from = lines[0].len() + 1;
    let sse = http(
        &watch.url,
        &format!(
            "GET /events?from={from} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        ),
        Duration::from_millis(1500),
    );
    assert!(sse.contains("content-type: text/event-stream"), "{sse}");
    assert!(sse.contains(&format!("data: {}\n", lines[1])), "{sse}");
    assert!(sse.contains(&format!("data: {}\n", lines[2])), "{sse}");
    assert!(!sse.contains(&format!("data: {}\n", lines[0])), "{sse}");
    let end = from + lines[1].len() + 1 + lines[2].len() + 1;
    assert!(sse.contains(&format!("id: {end}\n")), "{sse}");
}
