//! `lab` command line: parse, call the library, print. Exit codes: 0 ok, 1 the command failed,
//! 2 bad input.

use clap::{Parser, Subcommand};
use lab::cli;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "lab",
    version,
    about = "OS-update experiments on iPhones and iPads, run like clinical trials"
)]
struct Args {
    /// usbmuxd to use: UNIX:/path, /path or host:port; repeat or comma-separate for several hosts.
    /// Default: $USBMUXD_SOCKET_ADDRESS, else /var/run/usbmuxd.
    #[arg(long = "usbmuxd", global = true, value_name = "ADDR")]
    usbmuxd: Vec<String>,
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attached devices (usbmuxd on every host + raw USB).
    #[command(
        after_help = "Examples:\n  lab devices\n  lab devices --usbmuxd 127.0.0.1:27015      # a `lab sim serve` on that port"
    )]
    Devices(cli::devices::DevicesArgs),
    /// The baseline of each device: model, iOS, disk, battery, network, passcode, supervision.
    #[command(
        after_help = "Examples:\n  lab probe --sim trials/fleets/rehearsal-12.yaml   # a simulated lab, in one command\n  lab probe --udid 00008110-000A1B2C3D4E5F60 --json\n  lab probe --watch --for 5m                          # attach/detach events"
    )]
    Probe(cli::probe::ProbeArgs),
    /// Baseline + eligibility verdict per device for a trial; sends nothing irreversible.
    #[command(
        after_help = "Example:\n  lab qualify trials/rehearsal.yaml            # verdicts with reasons; nothing is sent"
    )]
    Qualify(cli::trial::QualifyArgs),
    /// Run (or resume) a trial: consent, one dose per device, follow-up, reports.
    #[command(
        after_help = "Examples:\n  lab run trials/rehearsal.yaml --yes                 # the rehearsal on the simulated lab\n  lab run trials/rehearsal.yaml --yes --watch 9402    # and watch it on http://127.0.0.1:9402/\n  lab run trial.yaml                                  # a bench: asks for consent (type the trial id)\nRun the same command again to resume an interrupted run."
    )]
    Run(cli::trial::RunArgs),
    /// Add a manual observation to a run (safe while the run is active).
    Observe(cli::trial::ObserveArgs),
    /// Regenerate every report of a run folder from its journal.
    #[command(
        after_help = "Example:\n  lab report results/rehearsal-12-20261203T100000Z   # every report again, byte for byte"
    )]
    Report(cli::trial::ReportArgs),
    /// Serve a read-only live web view of a run folder (live or finished).
    Watch(cli::watch::WatchArgs),
    /// Apple's version feeds (saved gdmf pmv and ipsw.me device files), read offline.
    Feeds {
        #[command(subcommand)]
        command: FeedsCommand,
    },
    /// The simulated lab.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// The embedded MDM server.
    Mdm {
        #[command(subcommand)]
        command: MdmCommand,
    },
}

#[derive(Subcommand, Debug)]
enum FeedsCommand {
    /// Validate a saved feed file and print what it offers per model.
    #[command(after_help = "Example:\n  lab feeds check trials/feeds/gdmf-pmv.json")]
    Check(cli::feeds::CheckArgs),
    /// Not implemented, so not listed (issue 15: no unimplemented command in the help); typed
    /// anyway, it says where to download the feeds, since this build reads saved copies.
    #[command(hide = true)]
    Fetch(cli::feeds::FetchArgs),
}

#[derive(Subcommand, Debug)]
enum MdmCommand {
    /// Serve the embedded MDM server (check-in + command endpoints, NanoMDM-compatible API).
    #[command(
        after_help = "Example:\n  LAB_MDM_API_KEY=secret lab mdm serve --listen 127.0.0.1:9400 --db lab-mdm.sqlite"
    )]
    Serve(cli::mdm::ServeArgs),
}

#[derive(Subcommand, Debug)]
enum SimCommand {
    /// Serve a simulated fleet behind a usbmuxd-compatible socket.
    #[command(
        after_help = "Examples:\n  lab sim serve --fleet trials/fleets/rehearsal-12.yaml --usbmuxd 127.0.0.1:27015 --speed 60\n  USBMUXD_SOCKET_ADDRESS=127.0.0.1:27015 ideviceinfo -s   # libimobiledevice reads it"
    )]
    Serve(cli::sim::ServeArgs),
}

/// A file-size limit (`ulimit -f`, `prlimit --fsize`) would otherwise kill the process with
/// SIGXFSZ in the middle of a journal append; ignored, the write fails with EFBIG and `lab`
/// reports which file it could not write (exit 1), leaving the journal resumable.
fn ignore_sigxfsz() {
    // SAFETY: setting a signal's disposition to SIG_IGN at start-up, before any thread exists,
    // installs no handler code and touches no Rust state.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The async runtime a command runs on: worker threads on every core, except for a probe of one
/// named device (`lab probe --udid U`, without `--sim` or `--mdm`). That probe is one chain of
/// round trips with nothing to run beside it but the USB scan (on a blocking thread, where the
/// host has USB at all), so one thread runs it; starting the workers, their stacks and the
/// hand-offs between them were about a quarter of its time (issue 16, README "Performance").
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    match command {
        Command::Probe(a) if a.one_device() => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Runtime::new(),
    }
}

fn main() -> ExitCode {
    ignore_sigxfsz();
    let args = Args::parse();
    let default_level = match args.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Many connections (a flooded MDM server, a big fleet) need descriptors; the soft limit is
    // often 1 024 while the hard one is far higher. Listener caps are sized from the result.
    match lab::listen_limits::raise_nofile_limit() {
        Ok((before, after)) if after > before => {
            tracing::debug!(before, after, "raised the soft file-descriptor limit")
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "could not raise the file-descriptor limit"),
    }
    if let Err(e) = lab::listen_limits::Limits::from_env() {
        eprintln!("lab: {e}");
        return ExitCode::from(2);
    }
    let rt = match runtime_for(&args.command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lab: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let usbmuxd = args.usbmuxd;
    let result = rt.block_on(async move {
        match args.command {
            Command::Devices(a) => cli::devices::run(&usbmuxd, a).await,
            Command::Probe(a) => cli::probe::run(&usbmuxd, a).await,
            Command::Qualify(a) => cli::trial::qualify(a).await,
            Command::Run(a) => cli::trial::run(a).await,
            Command::Observe(a) => cli::trial::observe(a).await,
            Command::Report(a) => cli::trial::report(a).await,
            Command::Watch(a) => cli::watch::watch(a).await,
            Command::Feeds {
                command: FeedsCommand::Check(a),
            } => cli::feeds::check(a).await,
            Command::Feeds {
                command: FeedsCommand::Fetch(a),
            } => cli::feeds::fetch(a).await,
            Command::Sim {
                command: SimCommand::Serve(a),
            } => cli::sim::serve(&usbmuxd, a).await,
            Command::Mdm {
                command: MdmCommand::Serve(a),
            } => cli::mdm::serve(a).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lab: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
