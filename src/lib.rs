//! `lab`: OS-update experiments on iPhones and iPads, run like clinical trials.
//!
//! Layers, from the wire up: `usbmux` and `lockdown` (codecs + clients, shared with the
//! simulator), `probe` (the baseline record), `usb` (raw USB scan), `sim` (the simulated lab),
//! `mdm` (the MDM protocol model: commands, reports, check-ins, schema checks, webhooks).
//! `ARCHITECTURE.md` at the repository's root is the map: the layers, the arrows allowed between
//! them (checked by `tests/architecture.rs`) and today's known breaks.

pub mod cli;
pub mod evidence;
pub mod feeds;
pub mod format;
pub mod heap;
pub mod http_client;
pub mod input;
pub mod io;
pub mod join;
pub mod journal;
pub mod known_bad;
pub mod listen_limits;
pub mod lockdown;
pub mod mdm;
pub mod mdm_server;
pub mod models;
pub mod plist_util;
pub mod private_fs;
pub mod probe;
pub mod report;
pub mod rng;
pub mod sim;
pub mod tls;
pub mod trial;
pub mod units;
pub mod usb;
pub mod usbmux;
pub mod verdicts;
pub mod version;
pub mod watch;
