//! `lab watch RUN_DIR --listen ADDR` and `lab run … --watch ADDR`: the live web view
//! (`crate::watch`), and the choice between the terminal's board and its line log.

use super::CliError;
use crate::trial::progress::ProgressOptions;
use crate::watch::{self, DEFAULT_LISTEN, Source};
use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    lab watch results/rehearsal-12-20261203T100000Z\n      \
    serves http://127.0.0.1:9402/ on this machine only\n  \
    lab watch results/rehearsal-12-20261203T100000Z --listen 0.0.0.0:9402\n      \
    serves other machines too (say so explicitly: the default is loopback)")]
pub struct WatchArgs {
    /// The run folder (the one holding journal.jsonl), live or finished.
    run_dir: PathBuf,
    /// Address to listen on: host:port, or a port on loopback. Loopback unless you say
    /// otherwise (0.0.0.0:PORT or the lab machine's address serves other machines).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: String,
}

fn bad(e: watch::WatchError) -> CliError {
    CliError::BadArgument(e.to_string())
}

/// Say where the view is, and whether other machines can reach it.
fn announce(l: &tokio::net::TcpListener, what: &str) {
    let Ok(addr) = l.local_addr() else { return };
    let reach = if addr.ip().is_loopback() {
        "this machine only; --listen/--watch 0.0.0.0:PORT serves other machines"
    } else {
        "reachable from other machines"
    };
    eprintln!("lab: watch {what} at http://{addr}/ (read-only; {reach})");
}

/// `lab watch`: serve the view of a run folder until Ctrl-C.
pub async fn watch(a: WatchArgs) -> Result<u8, CliError> {
    if !a.run_dir.join("journal.jsonl").is_file() {
        return Err(CliError::BadArgument(format!(
            "{}: no journal.jsonl there; give a run folder (results/<trial>-<time>/)",
            a.run_dir.display()
        )));
    }
    let l = watch::bind(&a.listen).await.map_err(bad)?;
    announce(&l, &a.run_dir.display().to_string());
    tokio::select! {
        _ = watch::serve(l, Source::fixed(&a.run_dir)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(0)
}

/// The progress views of `lab run`: the board redrawn in place when stderr is a terminal and no
/// `-v` asked for log lines; and with `--watch ADDR`, the web view, bound now (a bad address
/// stops the run before it starts) and told the run folder once the runner opens it.
pub async fn progress(watch_addr: Option<&str>) -> Result<ProgressOptions, CliError> {
    let live = std::io::stderr().is_terminal() && !tracing::enabled!(tracing::Level::INFO);
    let mut opts = ProgressOptions {
        live,
        on_run_dir: None,
    };
    if let Some(addr) = watch_addr {
        let l = watch::bind(addr).await.map_err(bad)?;
        announce(&l, "this run");
        let (tx, src) = Source::pending();
        tokio::spawn(watch::serve(l, src));
        opts.on_run_dir = Some(Arc::new(move |dir: &Path| {
            tx.send_replace(Some(dir.to_path_buf()));
        }));
    }
    Ok(opts)
}
