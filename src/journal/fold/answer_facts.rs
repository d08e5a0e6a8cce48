//! What the fold takes of a device's MDM answer: the few facts the verdicts and the reports
//! read ([`ReportFacts`]), and the decoding of a journalled `raw_b64` that yields them (the fast
//! reader of `journal::report_xml` for the usual shapes, `journal::answer` for anything else).
//! The parsed plist is dropped once these are taken from it: a run of a million answers would
//! not fit in memory otherwise.

use crate::journal::answer;
use crate::journal::report_xml::{self, StatusAnswer};
use crate::mdm::report::{
    ErrorChainItem, Report, ReportStatus, UpdateResult, available_os_updates, lenient_bool,
    lenient_real, os_update_status, update_results,
};
use std::sync::Arc;

/// An MDM answer of this device. The raw plist is not kept: it is read once, when the journal
/// is, and reduced to [`ReportFacts`] (a run of a million answers would not fit otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub seq: u64,
    pub command_uuid: Box<str>,
    pub request_type: Option<Arc<str>>,
    pub status: Arc<str>,
    pub report: ReportFacts,
}

impl Answer {
    pub fn is_final(&self) -> bool {
        is_final_status(&self.status)
    }
}

/// `ReportStatus::parse(s).is_final()` without building the status.
pub fn is_final_status(s: &str) -> bool {
    matches!(s, "Acknowledged" | "Error" | "CommandFormatError")
}

/// What the judgement, the detectors and the reports need of one answer's plist: the parsed
/// report is dropped once these are taken from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportFacts {
    /// The `OSUpdateStatus` items, when the answer is to an OSUpdateStatus command and carries
    /// the array.
    pub os_items: Option<Box<[OsItem]>>,
    /// Facts only a few answers have (dose answers, errors, AvailableOSUpdates).
    pub rare: Option<Box<RareFacts>>,
}

/// One `OSUpdateStatus` item, as the detectors read it (`mdm::report::os_update_status`).
#[derive(Debug, Clone, PartialEq)]
pub struct OsItem {
    pub status: Option<Arc<str>>,
    pub is_downloaded: Option<bool>,
    pub download_percent_complete: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RareFacts {
    pub error_chain: Vec<ErrorChainItem>,
    /// `mdm::report::update_results` of the report.
    pub update_results: Option<Vec<UpdateResult>>,
    /// Deviations of the `OSUpdateStatus` items from their documented types, in item order
    /// (`OSUpdateStatus IsDownloaded: …`).
    pub type_notes: Vec<String>,
    /// For an answer to AvailableOSUpdates.
    pub avail: Option<AvailFacts>,
}

/// What the detectors read of an AvailableOSUpdates answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AvailFacts {
    pub status: ReportStatus,
    pub error_chain: Vec<ErrorChainItem>,
    /// The `AvailableOSUpdates` array is present and not empty.
    pub has_items: bool,
    /// `available_os_updates` is `Some` and empty.
    pub empty_list: bool,
    /// Values sent with another type than documented (`AvailableOSUpdates IsCritical: …`).
    pub type_notes: Vec<String>,
}

impl AvailFacts {
    pub fn of(r: &Report) -> AvailFacts {
        let mut type_notes = Vec::new();
        let items = r.body.get("AvailableOSUpdates").and_then(|v| v.as_array());
        for it in items
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_dictionary())
        {
            for key in [
                "IsCritical",
                "RestartRequired",
                "AllowsInstallLater",
                "IsSecurityResponse",
            ] {
                if let Some(v) = it.get(key)
                    && let Some(dev) = lenient_bool(Some(v)).deviation
                {
                    type_notes.push(format!("AvailableOSUpdates {key}: {dev}"));
                }
            }
            for key in ["DownloadSize", "InstallSize"] {
                if let Some(v) = it.get(key)
                    && !matches!(v, plist::Value::Integer(_))
                {
                    let dev = lenient_real(Some(v), None)
                        .deviation
                        .unwrap_or_else(|| "not an integer".into());
                    type_notes.push(format!(
                        "AvailableOSUpdates {key}: {dev} (documented <integer>)"
                    ));
                }
            }
        }
        AvailFacts {
            status: r.status.clone(),
            error_chain: r.error_chain.clone(),
            has_items: items.is_some_and(|a| !a.is_empty()),
            empty_list: available_os_updates(r).is_some_and(|u| u.is_empty()),
            type_notes,
        }
    }
}

impl ReportFacts {
    /// Reduce a decoded report, answering a command of `request_type`.
    pub fn of(
        report: &Result<Report, String>,
        request_type: Option<&str>,
        strings: &mut Strings,
    ) -> ReportFacts {
        let Ok(r) = report else {
            return ReportFacts::default();
        };
        let mut rare = RareFacts {
            error_chain: r.error_chain.clone(),
            update_results: update_results(r),
            ..RareFacts::default()
        };
        let mut os_items = None;
        match request_type {
            Some("OSUpdateStatus") => {
                if let Some(items) = os_update_status(r) {
                    for it in &items {
                        if let Some(dev) = &it.is_downloaded.deviation {
                            rare.type_notes
                                .push(format!("OSUpdateStatus IsDownloaded: {dev}"));
                        }
                        if let Some(dev) = &it.download_percent_complete.deviation {
                            rare.type_notes
                                .push(format!("OSUpdateStatus DownloadPercentComplete: {dev}"));
                        }
                    }
                    os_items = Some(
                        items
                            .into_iter()
                            .map(|it| OsItem {
                                status: it.status.as_deref().map(|s| strings.get(s)),
                                is_downloaded: it.is_downloaded.value,
                                download_percent_complete: it.download_percent_complete.value,
                            })
                            .collect(),
                    );
                }
            }
            Some("AvailableOSUpdates") => rare.avail = Some(AvailFacts::of(r)),
            _ => {}
        }
        let keep = !rare.error_chain.is_empty()
            || rare.update_results.is_some()
            || !rare.type_notes.is_empty()
            || rare.avail.is_some();
        ReportFacts {
            os_items,
            rare: keep.then(|| Box::new(rare)),
        }
    }

    pub fn update_results(&self) -> Option<&[UpdateResult]> {
        self.rare.as_ref()?.update_results.as_deref()
    }

    pub fn error_chain(&self) -> &[ErrorChainItem] {
        self.rare
            .as_ref()
            .map(|r| &r.error_chain[..])
            .unwrap_or(&[])
    }

    pub fn type_notes(&self) -> &[String] {
        self.rare.as_ref().map(|r| &r.type_notes[..]).unwrap_or(&[])
    }
}

/// Interned strings (statuses, request types): a run repeats a handful of them a million times.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Strings(rustc_hash::FxHashSet<Arc<str>>);

impl Strings {
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(x) = self.0.get(s) {
            return x.clone();
        }
        let x: Arc<str> = Arc::from(s);
        self.0.insert(x.clone());
        x
    }
}

/// The report in a journalled `raw_b64`: the common shape through the fast reader
/// (`report_xml`), anything else through `mdm::report::parse_report`; the same either way.
pub fn decode_report(raw_b64: &str) -> Result<Report, String> {
    let raw = answer::bytes(raw_b64).map_err(|e| e.to_string())?;
    if let Some(r) = report_xml::parse_report(&raw) {
        return Ok(r);
    }
    answer::report_of(&raw).map_err(|e| e.to_string())
}

/// An answer's plist as the reports take it in: a [`Report`], or the usual OSUpdateStatus
/// answer read straight into its facts (`report_xml::parse_status`).
#[derive(Debug)]
pub enum Decoded {
    Report(Result<Report, String>),
    Status(StatusAnswer),
}

/// [`decode_report`], except that the usual OSUpdateStatus answer is read without a plist
/// tree (it is then read as a [`Report`] only if its command turns out to be another one).
/// `buf` is scratch space, kept between calls.
pub fn decode_answer(raw_b64: &str, buf: &mut Vec<u8>) -> Decoded {
    if answer::bytes_into(raw_b64, buf).is_err() {
        return Decoded::Report(decode_report(raw_b64));
    }
    if let Some(st) = report_xml::parse_status(buf) {
        return Decoded::Status(st);
    }
    if let Some(r) = report_xml::parse_report(buf) {
        return Decoded::Report(Ok(r));
    }
    Decoded::Report(answer::report_of(buf).map_err(|e| e.to_string()))
}

impl StatusAnswer {
    /// What [`ReportFacts::of`] takes from the same answer read as a [`Report`].
    pub fn facts(&self, strings: &mut Strings) -> ReportFacts {
        ReportFacts {
            os_items: Some(
                self.items
                    .iter()
                    .map(|it| OsItem {
                        status: Some(strings.get(&it.status)),
                        is_downloaded: Some(it.is_downloaded),
                        download_percent_complete: Some(it.download_percent_complete),
                    })
                    .collect(),
            ),
            rare: None,
        }
    }
}
