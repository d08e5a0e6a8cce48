//! The terminal progress view. On a terminal (without `-v`) the bench is a board redrawn in
//! place ([`super::live_view`], drawn with crossterm); otherwise one line per notable journal
//! event, consumed from the same event vocabulary the reports use. Nothing here decides anything.

use super::live_view::{self, Limits};
use crate::journal::fold::Fold;
use crate::journal::{Entry, Event};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an OS-update answer says, in a few words: "Downloading 45%", "DownloadOnly/Downloading".
/// An OSUpdateStatus answer of the usual shape is read by the fast reader the fold uses
/// (`journal::report_xml::parse_status`, no plist tree: in a 1 000-device follow-up the general
/// reading here was a sixth of the harness's CPU); any other shape the general way.
fn update_detail(request_type: Option<&str>, raw_b64: &str) -> String {
    let Ok(raw) = crate::journal::answer::bytes(raw_b64) else {
        return String::new();
    };
    if request_type == Some("OSUpdateStatus")
        && let Some(answer) = crate::journal::report_xml::parse_status(&raw)
    {
        return match answer.items.first() {
            Some(i) => status_detail(
                &i.status,
                Some(i.download_percent_complete),
                i.is_downloaded,
            ),
            None => ": nothing in progress".into(),
        };
    }
    let Ok(rep) = crate::journal::answer::report_of(&raw) else {
        return String::new();
    };
    match request_type {
        Some("OSUpdateStatus") => crate::mdm::report::os_update_status(&rep)
            .and_then(|items| items.into_iter().next())
            .map(|i| {
                status_detail(
                    &i.status.unwrap_or_default(),
                    i.download_percent_complete.value,
                    i.is_downloaded.value == Some(true),
                )
            })
            .unwrap_or_else(|| ": nothing in progress".into()),
        Some("ScheduleOSUpdate") => crate::mdm::report::update_results(&rep)
            .and_then(|r| r.into_iter().next())
            .map(|u| {
                format!(
                    ": {}/{}",
                    u.install_action.unwrap_or_default(),
                    u.status.unwrap_or_default()
                )
            })
            .unwrap_or_else(|| ": no UpdateResults".into()),
        _ => String::new(),
    }
}

/// ": Downloading 45%, downloaded": one OSUpdateStatus item in a few words.
fn status_detail(status: &str, percent: Option<f64>, downloaded: bool) -> String {
    let pct = percent
        .map(|p| format!(" {:.0}%", p * 100.0))
        .unwrap_or_default();
    let dl = if downloaded { ", downloaded" } else { "" };
    format!(": {status}{pct}{dl}")
}

/// Told the run folder once the runner has opened it.
pub type RunDirHook = Arc<dyn Fn(&Path) + Send + Sync>;

/// How `lab run` shows the run: chosen by the command line, started by the runner once the run
/// folder is open ([`ProgressOptions::start`]).
#[derive(Clone, Default)]
pub struct ProgressOptions {
    /// Redraw the board in place on stderr instead of printing lines (stderr is a terminal and
    /// no `-v` was given).
    pub live: bool,
    /// Told the run folder once it is open: the web view (`lab run --watch`) tails its journal.
    pub on_run_dir: Option<RunDirHook>,
}

impl ProgressOptions {
    /// The progress view of the run in `run_dir`; `limits` are the protocol's.
    pub fn start(&self, run_dir: &Path, limits: Limits) -> Progress {
        if let Some(f) = &self.on_run_dir {
            f(run_dir);
        }
        Progress {
            quiet: false,
            live: self.live.then_some(LiveTerm {
                limits,
                drawn: 0,
                last: None,
            }),
            pending: String::new(),
        }
    }
}

/// The board on the terminal: how many lines the last drawing took (the next one moves up over
/// them) and when it was drawn (redraws are at most [`REDRAW_EVERY`] apart).
struct LiveTerm {
    limits: Limits,
    drawn: u16,
    last: Option<Instant>,
}

/// The shortest time between two redraws: a batch of answers from 64 devices is one drawing.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

pub struct Progress {
    quiet: bool,
    live: Option<LiveTerm>,
    /// Lines not yet written: a batch of events (a round's 900 answers) is one write to stderr,
    /// at [`Progress::after`], not one unbuffered write each.
    pending: String,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

fn short(udid: &str) -> &str {
    &udid[..udid.len().min(14)]
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            quiet: false,
            live: None,
            pending: String::new(),
        }
    }

    pub fn quiet() -> Progress {
        Progress {
            quiet: true,
            live: None,
            pending: String::new(),
        }
    }

    /// A line for the event, or none.
    pub fn line(e: &Entry) -> Option<String> {
        let t = e.at.get(11..19).unwrap_or("");
        let s = match &e.event {
            Event::EligibilityAssessed {
                udid,
                eligible,
                reasons,
                ..
            } => {
                if *eligible {
                    format!("{} eligible", short(udid))
                } else {
                    format!(
                        "{} excluded: {}",
                        short(udid),
                        reasons
                            .iter()
                            .map(|r| r.rule.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            }
            Event::Allocated { udid, arm, .. } => format!("{} → arm {arm}", short(udid)),
            Event::DoseEnqueued {
                udid,
                command_uuid,
                pushed,
                ..
            } => format!(
                "{} {} ({command_uuid}){}",
                short(udid),
                // `lab-ddm-<UUID>` is a DDM declaration's identifier (`runner::dose`).
                if command_uuid.starts_with("lab-ddm-") {
                    "DDM enforcement declaration given"
                } else {
                    "ScheduleOSUpdate queued"
                },
                match pushed {
                    Some(true) => ", pushed",
                    Some(false) => "",
                    None => ", push not reported by the MDM",
                }
            ),
            Event::DdmStatusReport { udid, raw_b64, .. } => format!(
                "{} DDM status: install-state {}",
                short(udid),
                crate::journal::answer::bytes(raw_b64)
                    .ok()
                    .and_then(|b| crate::mdm::ddm::StatusReport::parse(&b).ok())
                    .and_then(|r| r
                        .get("softwareupdate.install-state")
                        .and_then(|v| v.as_str())
                        .map(str::to_string))
                    .unwrap_or_else(|| "(not in this report)".into())
            ),
            Event::DoseFailed { udid, error, .. } => {
                format!("{} dose FAILED: {error}", short(udid))
            }
            Event::DoseUncertain { udid, reason, .. } => {
                format!("{} dose UNCERTAIN: {reason}", short(udid))
            }
            Event::DoseWithheld {
                udid, step, reason, ..
            } => format!("{} step {step} NOT SENT: {reason}", short(udid)),
            Event::DoseReconciled { udid, reason, .. } => {
                format!("{} dose reconciled from the ledger: {reason}", short(udid))
            }
            Event::MdmResult {
                udid,
                request_type,
                status,
                raw_b64,
                ..
            } => format!(
                "{} {} → {status}{}",
                short(udid),
                request_type.as_deref().unwrap_or("?"),
                update_detail(request_type.as_deref(), raw_b64)
            ),
            Event::DeviceReprobed {
                udid,
                attached,
                product_version,
                build_version,
                ..
            } => {
                if *attached {
                    format!(
                        "{} on USB: iOS {} ({})",
                        short(udid),
                        product_version.as_deref().unwrap_or("?"),
                        build_version.as_deref().unwrap_or("?")
                    )
                } else {
                    format!("{} not on USB (restarting?)", short(udid))
                }
            }
            Event::FollowUpEnded { udid, reason } => {
                format!("{} follow-up ended: {reason}", short(udid))
            }
            Event::RunInterrupted => "interrupted".into(),
            Event::RunFinished => "finished".into(),
            _ => return None,
        };
        Some(format!("[{t}] {s}"))
    }

    pub fn on(&mut self, e: &Entry) {
        if self.quiet || self.live.is_some() {
            return;
        }
        if let Some(l) = Self::line(e) {
            self.pending.push_str(&l);
            self.pending.push('\n');
        }
    }

    /// Write the lines of the events seen since the last flush, in one write.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            let _ = std::io::stderr().lock().write_all(self.pending.as_bytes());
            self.pending.clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Progress {
    /// After the runner folded a batch of events: redraw the board (live view only).
    pub fn after(&mut self, fold: &Fold) {
        self.flush();
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let last_word = fold.finished || fold.interrupted;
        if !last_word && live.last.is_some_and(|t| t.elapsed() < REDRAW_EVERY) {
            return;
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let board = live_view::board(fold, live.limits, &now);
        let (cols, rows) = stderr_size();
        let lines = fit(live_view::lines(&board, Some(cols as usize)), rows as usize);
        let mut err = std::io::stderr().lock();
        let _ = draw(&mut err, live.drawn, &lines);
        live.drawn = lines.len() as u16;
        live.last = Some(Instant::now());
    }

    /// Something else is about to be written on the terminal (a question, a warning): the board
    /// drawn so far stays, and the next drawing starts below it.
    pub fn release(&mut self) {
        self.flush();
        if let Some(live) = self.live.as_mut() {
            live.drawn = 0;
        }
    }
}

/// The size of the terminal the board is drawn on (stderr's; crossterm asks stdout's, which a
/// caller may have redirected), else crossterm's answer, else 120×40.
fn stderr_size() -> (u16, u16) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into `ws`, which lives across the call.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        return (ws.ws_col, ws.ws_row);
    }
    crossterm::terminal::size().unwrap_or((120, 40))
}

/// At most `rows - 1` lines (a drawing taller than the terminal cannot be redrawn in place),
/// the last one saying how many devices are not shown.
fn fit(mut lines: Vec<String>, rows: usize) -> Vec<String> {
    let max = rows.saturating_sub(1).max(3);
    if lines.len() > max {
        let hidden = lines.len() - (max - 1);
        lines.truncate(max - 1);
        lines.push(format!(
            "… {hidden} more devices (the web view, `lab run --watch`, shows every one)"
        ));
    }
    lines
}

/// Move up over the previous drawing, clear it, and write `lines`.
fn draw(out: &mut impl Write, drawn: u16, lines: &[String]) -> std::io::Result<()> {
    use crossterm::{cursor, queue, terminal};
    if drawn > 0 {
        queue!(
            out,
            cursor::MoveToPreviousLine(drawn),
            terminal::Clear(terminal::ClearType::FromCursorDown)
        )?;
    }
    for l in lines {
        writeln!(out, "{l}")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redraw_moves_up_over_the_last_drawing_and_clears_it() {
        let mut out = Vec::new();
        draw(&mut out, 0, &["a".into(), "b".into()]).unwrap();
        assert_eq!(out, b"a\nb\n");
        let mut out = Vec::new();
        draw(&mut out, 2, &["c".into()]).unwrap();
        // CSI 2 F (cursor to the start of the line 2 up), CSI J (clear to the end of screen).
        assert_eq!(String::from_utf8(out).unwrap(), "\x1b[2F\x1b[Jc\n");
    }

    #[test]
    fn a_board_taller_than_the_terminal_says_how_many_rows_it_hides() {
        let lines: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let got = fit(lines.clone(), 6);
        assert_eq!(got.len(), 5);
        assert!(got[4].starts_with("… 6 more devices"), "{got:?}");
        assert_eq!(fit(lines, 40).len(), 10);
    }
}
