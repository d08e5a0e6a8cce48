//! The run journal, at the bottom of the domain: every fact of a trial, in order, one JSON
//! object per line.
//!
//! - [`event`]: the vocabulary ([`Event`], one [`Entry`] per line), versioned in its first event;
//! - [`vocab`]: the closed vocabularies inside events, as enums;
//! - [`answer`]: the one decoder of a journalled device answer (base64 plist to a report);
//! - [`report_xml`]: the fast reader of the usual answer shapes (same result, no plist tree);
//! - [`fold`]: the one fold: run and per-device facts, with an explicit per-device [`fold::Phase`];
//! - [`file`]: append with `fsync` before the harness acts on an event ("nothing lost"), stream
//!   one line at a time, a torn last line (a crash mid-write) tolerated on read and reported;
//! - [`pieces`]: the same reading of a byte range of the file, so threads can share a journal.
//!
//! The runner writes it; the terminal progress view, every report and the resume logic only read
//! it. It imports nothing of the harness above it (`tests/architecture.rs`).

pub mod answer;
pub mod event;
pub mod file;
pub mod fold;
pub mod pieces;
pub mod report_xml;
pub mod vocab;

pub use event::*;
pub use file::*;
pub use vocab::{ConsentBy, DoseKind, FollowUpEndReason, ObservationSource};
