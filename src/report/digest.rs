//! The journal read once for every report.
//!
//! Each projection used to re-read the whole journal, re-judge every device and re-parse every
//! raw plist, and all of them kept the parsed reports in memory: a million-event run took
//! minutes and gigabytes. A [`Digest`] is made in one pass over the journal, streamed line by
//! line: each `MdmResult` plist is decoded once, written to `observations.csv` at once,
//! reduced to the few facts the judgement and the detectors read ([`ReportFacts`]) and dropped.
//! The outcomes and the detectors' findings are computed once from those facts and shared by
//! every projection. Raw bytes are not kept: the radar drafts' attachments (a few) are read
//! again from the journal by byte offset.
//!
//! CommandUUID → RequestType (answers carry none, MDM brief §0.6) is known for a whole journal
//! only at its end; a streamed pass uses what it has seen so far, which is the same unless a
//! command is recorded after an answer to it. Should that happen (the pass notices), the journal
//! is read a second time with the whole map, so the reports are always those of the whole
//! journal.
//!
//! [`ReportFacts`]: crate::journal::fold::ReportFacts

use super::ReportError;
use super::format::parse_instant;
use super::head::Head;
use super::lanes::{LaneAnswer, LaneEv, LaneKind};
use super::observations::Sink;
use crate::journal::fold::Noted;
use crate::journal::fold::{Decoded, Record as Gatherer, RunFacts, Strings, decode_report};
use crate::journal::{self, Entry, Event};
use crate::verdicts::anomalies::{self, Avail, Findings};
use crate::verdicts::outcome::{DeviceOutcome, judge_run};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything the reports need of a journal (see the module doc).
pub(crate) struct Digest {
    pub run: RunFacts,
    /// One per device of `run.devices`, same order.
    pub outcomes: Vec<DeviceOutcome>,
    pub findings: Findings,
    pub head: Head,
    /// Per device of `run.devices`: its lane events, journal order.
    lanes: Vec<Vec<LaneEv>>,
    /// Run-level entries as lanes see them (merged into every lane).
    run_level: Vec<LaneEv>,
    /// Whether the journal has run-level entries at all (lanes are then ordered by seq).
    any_run_level: bool,
    /// Where the raw plists are.
    pub raw: RawIndex,
    /// The DDM evidence, byte for byte (issue 13): each declaration as sent
    /// (`ddm/<udid>/declaration-<identifier>.json`) and each status report as received
    /// (`ddm/<udid>/status-<report id>.json`), in journal order. Empty without DDM doses.
    pub ddm_files: Vec<(PathBuf, Vec<u8>)>,
}

impl Digest {
    /// The digest of entries in memory (the pure `render(&[Entry])` projections).
    pub fn of_entries(entries: &[Entry]) -> Digest {
        let types = RequestTypes::whole(journal::request_types(entries));
        let mut b = Builder::new(types, None);
        for e in entries {
            let report = match &e.event {
                Event::MdmResult { raw_b64, .. } => Some(Decoded::Report(decode_report(raw_b64))),
                _ => None,
            };
            b.push(e, report.as_ref())
                .expect("no observations are written, nothing can fail");
        }
        b.finish(RawIndex::default())
    }

    /// The digest of the journal at `path`, read as a stream; `observations.csv` is written to
    /// `obs` on the way (from its start: it is truncated when the journal must be read twice).
    pub fn read(path: &Path, obs: &mut std::fs::File) -> Result<Digest, ReportError> {
        let io = |source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (digest, conflict) = Self::pass(path, RequestTypes::streamed(), obs)?;
        let Some(types) = conflict else {
            return Ok(digest);
        };
        drop(digest);
        obs.set_len(0).map_err(io)?;
        obs.rewind().map_err(io)?;
        match Self::pass(path, types, obs)? {
            (d, None) => Ok(d),
            (_, Some(_)) => unreachable!("a whole map has no conflicts"),
        }
    }

    /// One pass; with a streamed map, also the whole map when a second pass is needed.
    fn pass(
        path: &Path,
        types: RequestTypes,
        obs: &mut std::fs::File,
    ) -> Result<(Digest, Option<RequestTypes>), ReportError> {
        let io = |source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        };
        let sink = Sink::new(obs as &mut dyn Write).map_err(|e| io(e.into()))?;
        let mut b = Builder::new(types, Some(sink));
        let mut raw = RawIndex {
            journal: Some(path.to_path_buf()),
            ..RawIndex::default()
        };
        super::decoded::stream_decoded(path, |offset, e, report| {
            raw.note(offset, e);
            b.push(e, report).map_err(io)
        })?;
        if let Some(sink) = b.obs.take() {
            sink.finish().map_err(io)?;
        }
        let conflict = b.types.conflict.then(|| b.types.whole_of_stream());
        Ok((b.finish(raw), conflict))
    }

    /// Device `i`'s lane: its events and the run-level ones, as `journal::by_device` orders
    /// them (by seq when the journal has run-level entries).
    pub fn lane(&self, i: usize) -> Vec<&LaneEv> {
        let mut all: Vec<&LaneEv> = self.lanes[i].iter().chain(&self.run_level).collect();
        if self.any_run_level {
            all.sort_by_key(|e| e.seq);
        }
        all
    }
}

/// CommandUUID → RequestType of every command the harness sent (`journal::request_types`),
/// and per device the ones of its own commands seen so far (the HTML lanes label answers with
/// those).
#[derive(Default)]
pub(crate) struct RequestTypes {
    map: rustc_hash::FxHashMap<Box<str>, Types>,
    /// The whole journal's map is known: answers are not recorded.
    whole: bool,
    /// An answer was labelled with a type its command changed afterwards.
    conflict: bool,
}

#[derive(Default)]
struct Types {
    /// The last type recorded for the CommandUUID.
    last: Option<Arc<str>>,
    /// What the last answer labelled by it was labelled (streamed map only).
    labelled: Option<Option<Arc<str>>>,
    /// Per lane (device), the last type its own commands recorded: (lane, type).
    lanes: Vec<(u32, Arc<str>)>,
}

impl RequestTypes {
    fn streamed() -> RequestTypes {
        RequestTypes::default()
    }

    fn whole(m: HashMap<&str, &str>) -> RequestTypes {
        let mut strings = Strings::default();
        RequestTypes {
            map: m
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.into(),
                        Types {
                            last: Some(strings.get(v)),
                            ..Types::default()
                        },
                    )
                })
                .collect(),
            whole: true,
            conflict: false,
        }
    }

    /// The map a streamed pass ended with, as the whole journal's.
    fn whole_of_stream(&self) -> RequestTypes {
        RequestTypes {
            map: self
                .map
                .iter()
                .filter_map(|(k, t)| {
                    let last = t.last.clone()?;
                    Some((
                        k.clone(),
                        Types {
                            last: Some(last),
                            ..Types::default()
                        },
                    ))
                })
                .collect(),
            whole: true,
            conflict: false,
        }
    }

    fn types(&mut self, uuid: &str) -> &mut Types {
        if !self.map.contains_key(uuid) {
            self.map.insert(uuid.into(), Types::default());
        }
        self.map.get_mut(uuid).expect("just inserted")
    }

    /// A command of `request_type` was recorded; `lane` when it counts for its device's lane.
    fn record(&mut self, uuid: &str, request_type: &Arc<str>, lane: Option<u32>) {
        let whole = self.whole;
        let mut conflict = false;
        let t = self.types(uuid);
        if !whole {
            if let Some(l) = &t.labelled
                && l.as_deref() != Some(&**request_type)
            {
                conflict = true;
            }
            t.last = Some(request_type.clone());
        }
        if let Some(lane) = lane {
            match t.lanes.iter_mut().find(|x| x.0 == lane) {
                Some(x) => x.1 = request_type.clone(),
                None => t.lanes.push((lane, request_type.clone())),
            }
        }
        self.conflict |= conflict;
    }

    /// The type an answer to `uuid` is read as.
    fn label(&mut self, uuid: &str) -> Option<Arc<str>> {
        if self.whole {
            return self.map.get(uuid)?.last.clone();
        }
        let t = self.types(uuid);
        t.labelled = Some(t.last.clone());
        t.last.clone()
    }

    /// The type of `uuid` among the commands of `lane` so far.
    fn lane_label(&self, uuid: &str, lane: u32) -> Option<Arc<str>> {
        let t = self.map.get(uuid)?;
        t.lanes.iter().find(|x| x.0 == lane).map(|x| x.1.clone())
    }
}

/// One pass: every entry goes to the facts, the observation series, the header and the lanes.
struct Builder<'w> {
    types: RequestTypes,
    g: Gatherer,
    obs: Option<Sink<&'w mut dyn Write>>,
    head: Head,
    lane_ids: rustc_hash::FxHashMap<String, u32>,
    lanes: Vec<Vec<LaneEv>>,
    run_level: Vec<LaneEv>,
    any_run_level: bool,
    offered: Vec<(String, Avail)>,
    ddm_files: Vec<(PathBuf, Vec<u8>)>,
}

impl<'w> Builder<'w> {
    fn new(types: RequestTypes, obs: Option<Sink<&'w mut dyn Write>>) -> Builder<'w> {
        let g = Gatherer::default();
        Builder {
            types,
            g,
            obs,
            head: Head::default(),
            lane_ids: Default::default(),
            lanes: Vec::new(),
            run_level: Vec::new(),
            any_run_level: false,
            offered: Vec::new(),
            ddm_files: Vec::new(),
        }
    }

    fn lane_id(&mut self, udid: &str) -> u32 {
        if let Some(id) = self.lane_ids.get(udid) {
            return *id;
        }
        let id = self.lanes.len() as u32;
        self.lane_ids.insert(udid.to_string(), id);
        self.lanes.push(Vec::new());
        id
    }

    /// Take in the next entry; an `MdmResult` comes with its raw plist decoded.
    fn push(&mut self, e: &Entry, report: Option<&Decoded>) -> std::io::Result<()> {
        let at = parse_instant(&e.at);
        self.head.push(e, at);
        let lane = e.event.udid().map(|u| self.lane_id(u));
        if lane.is_none() {
            self.any_run_level = true;
        }
        // Commands: their request types.
        if let Some((command_uuid, request_type)) = e.event.sent_command() {
            let rt = self.g.strings.get(request_type);
            self.types
                .record(command_uuid, &rt, lane.filter(|_| at.is_some()));
        }
        if let Event::UpdatesOffered { .. } = &e.event {
            self.offered.extend(anomalies::offered_answer(e));
        }
        self.ddm_files.extend(ddm_file(e));
        let mut kind = LaneKind::Other;
        if let Event::MdmResult {
            udid,
            command_uuid,
            request_type,
            status,
            raw_b64,
            received_at,
        } = &e.event
        {
            let rt = match request_type {
                Some(t) => Some(self.g.strings.get(t)),
                None => self.types.label(command_uuid),
            };
            let fact = self
                .g
                .device(udid)
                .map(|i| self.g.devices()[i].answers.len() as u32);
            match report {
                // Read straight into its facts: only as an answer to OSUpdateStatus.
                Some(Decoded::Status(st)) if rt.as_deref() == Some("OSUpdateStatus") => {
                    if let Some(obs) = &mut self.obs {
                        obs.status_event(e, st)?;
                    }
                    self.g.push_status(e, st);
                }
                _ => {
                    let decoded;
                    let report = match report {
                        Some(Decoded::Report(r)) => r,
                        _ => {
                            decoded = decode_report(raw_b64);
                            &decoded
                        }
                    };
                    if let Some(obs) = &mut self.obs {
                        obs.event(e, Some((rt.as_deref(), report)))?;
                    }
                    self.g.push(e, Some((report, rt.as_deref())));
                }
            }
            if let (Some(lane), Some(at)) = (lane, at) {
                let lane_rt = match request_type {
                    Some(_) => rt.clone(),
                    None => self.types.lane_label(command_uuid, lane),
                };
                kind = LaneKind::Answer {
                    at: parse_instant(received_at).unwrap_or(at),
                    request_type: lane_rt,
                    answer: match fact {
                        Some(i) => LaneAnswer::Fact(i),
                        None => LaneAnswer::Early(Box::new((
                            self.g.strings.get(status),
                            command_uuid.as_str().into(),
                        ))),
                    },
                };
            }
        } else {
            if let Some(obs) = &mut self.obs {
                obs.event(e, None)?;
            }
            self.g.push(e, None);
        }
        let Some(at) = at else { return Ok(()) };
        let kind = match (&e.event, kind) {
            (_, k @ LaneKind::Answer { .. }) => k,
            (Event::DeviceDiscovered { .. }, _) => LaneKind::Discovered,
            (Event::EligibilityAssessed { eligible, .. }, _) => LaneKind::Eligibility(*eligible),
            (Event::CommandSent { request_type, .. }, _) => {
                LaneKind::Command(self.g.strings.get(request_type))
            }
            (Event::DoseEnqueued { command_uuid, .. }, _) => LaneKind::Dose {
                uuid: command_uuid.as_str().into(),
                ok: true,
            },
            (
                Event::DoseFailed { command_uuid, .. } | Event::DoseUncertain { command_uuid, .. },
                _,
            ) => LaneKind::Dose {
                uuid: command_uuid.as_str().into(),
                ok: false,
            },
            (Event::DeviceReprobed { attached, .. }, _) => LaneKind::Reprobe {
                attached: *attached,
            },
            (
                Event::Observation {
                    udid: Some(_),
                    source,
                    kind,
                    key,
                    value,
                },
                _,
            ) => LaneKind::Observation(Box::new(Noted::of(e, *source, kind, key, value))),
            (Event::FollowUpEnded { .. }, _) => LaneKind::FollowUpEnded,
            (Event::DdmStatusReport { raw_b64, .. }, _) => LaneKind::DdmStatus {
                install_state: ddm_install_state(raw_b64),
            },
            _ => LaneKind::Other,
        };
        let ev = LaneEv {
            seq: e.seq,
            at,
            kind,
        };
        match lane {
            Some(l) => self.lanes[l as usize].push(ev),
            None => self.run_level.push(ev),
        }
        Ok(())
    }

    fn finish(mut self, raw: RawIndex) -> Digest {
        let run = self.g.finish();
        let outcomes = judge_run(&run, &BTreeMap::new());
        let findings = Findings::of(&run, std::mem::take(&mut self.offered));
        let lanes = run
            .devices
            .iter()
            .map(|d| {
                self.lane_ids
                    .get(&d.udid)
                    .map(|i| std::mem::take(&mut self.lanes[*i as usize]))
                    .unwrap_or_default()
            })
            .collect();
        Digest {
            run,
            outcomes,
            findings,
            head: self.head,
            lanes,
            run_level: self.run_level,
            any_run_level: self.any_run_level,
            raw,
            ddm_files: self.ddm_files,
        }
    }
}

/// Where the raw plists of a journal are, to read again the few a radar draft attaches: byte
/// offsets of the lines that carry them (a streamed journal), or nothing (entries in memory are
/// searched directly).
#[derive(Default)]
pub(crate) struct RawIndex {
    journal: Option<PathBuf>,
    /// (seq, offset) of every `MdmResult`, `UpdatesOffered` and `DdmStatusReport`, journal
    /// order.
    answers: Vec<(u64, u64)>,
    /// (udid, CommandUUID) → offsets of its `DoseIntent`s, journal order.
    commands: HashMap<(String, String), Vec<u64>>,
}

/// Raw bytes in the journal: answers by seq, commands by (udid, CommandUUID) with their
/// request type.
#[derive(Default)]
pub(crate) struct Raw {
    pub answers: HashMap<u64, Vec<u8>>,
    /// The journal time of each answer read (the drafts date their evidence with it).
    pub times: HashMap<u64, String>,
    pub commands: HashMap<(String, String), (String, Vec<u8>)>,
}

pub(crate) fn b64(s: &str) -> Option<Vec<u8>> {
    crate::journal::answer::bytes(s).ok()
}

impl Raw {
    /// Take in an entry: the last decodable answer of a seq, the first decodable command of a
    /// (udid, CommandUUID) count.
    fn take(&mut self, e: &Entry) {
        if matches!(
            e.event,
            Event::MdmResult { .. } | Event::DdmStatusReport { .. } | Event::UpdatesOffered { .. }
        ) {
            self.times.insert(e.seq, e.at.clone());
        }
        match &e.event {
            Event::MdmResult { raw_b64, .. } => {
                if let Some(b) = b64(raw_b64) {
                    self.answers.insert(e.seq, b);
                }
            }
            Event::DdmStatusReport { raw_b64, .. } => {
                if let Some(b) = b64(raw_b64) {
                    self.answers.insert(e.seq, b);
                }
            }
            Event::UpdatesOffered { updates, .. } => {
                if let Some(b) = updates
                    .get("raw_b64")
                    .and_then(|v| v.as_str())
                    .and_then(b64)
                {
                    self.answers.insert(e.seq, b);
                }
            }
            Event::DoseIntent {
                udid,
                command_uuid,
                request_type,
                command_b64,
                ..
            } => {
                if let Some(b) = b64(command_b64) {
                    self.commands
                        .entry((udid.clone(), command_uuid.clone()))
                        .or_insert((request_type.clone(), b));
                }
            }
            _ => {}
        }
    }
}

impl RawIndex {
    fn note(&mut self, offset: u64, e: &Entry) {
        match &e.event {
            Event::MdmResult { .. }
            | Event::UpdatesOffered { .. }
            | Event::DdmStatusReport { .. } => {
                self.answers.push((e.seq, offset));
            }
            Event::DoseIntent {
                udid, command_uuid, ..
            } => self
                .commands
                .entry((udid.clone(), command_uuid.clone()))
                .or_default()
                .push(offset),
            _ => {}
        }
    }

    /// The raw bytes of the answers `seqs` and the commands `commands`, from the journal file
    /// or, when this digest was made from entries in memory, from `entries`.
    pub fn fetch(
        &self,
        entries: Option<&[Entry]>,
        seqs: &BTreeSet<u64>,
        commands: &BTreeSet<(String, String)>,
    ) -> Result<Raw, journal::JournalError> {
        let mut raw = Raw::default();
        let wanted = |e: &Entry| match &e.event {
            Event::MdmResult { .. }
            | Event::UpdatesOffered { .. }
            | Event::DdmStatusReport { .. } => seqs.contains(&e.seq),
            Event::DoseIntent {
                udid, command_uuid, ..
            } => commands.contains(&(udid.clone(), command_uuid.clone())),
            _ => false,
        };
        if let Some(entries) = entries {
            for e in entries.iter().filter(|e| wanted(e)) {
                raw.take(e);
            }
            return Ok(raw);
        }
        let Some(path) = &self.journal else {
            return Ok(raw);
        };
        let mut offsets: Vec<u64> = self
            .answers
            .iter()
            .filter(|(seq, _)| seqs.contains(seq))
            .map(|x| x.1)
            .collect();
        for key in commands {
            offsets.extend(self.commands.get(key).into_iter().flatten().copied());
        }
        // Journal order, as a reading of the whole journal would take them in.
        offsets.sort_unstable();
        offsets.dedup();
        for off in offsets {
            raw.take(&journal::entry_at(path, off)?);
        }
        Ok(raw)
    }
}
/// The evidence file of a DDM declaration intent or status report (see [`Digest::ddm_files`]);
/// names are cut to file-name-safe characters (the journal is trusted, but a path is a path).
fn ddm_file(e: &Entry) -> Option<(PathBuf, Vec<u8>)> {
    let safe = super::format::file_safe_name;
    let (udid, name, b64) = match &e.event {
        Event::DoseIntent {
            udid,
            request_type,
            command_uuid,
            command_b64,
            ..
        } if crate::journal::DoseKind::of_request_type(request_type).is_declaration() => (
            udid,
            format!("declaration-{}.json", safe(command_uuid)),
            command_b64,
        ),
        Event::DdmStatusReport {
            udid,
            report_id,
            raw_b64,
            ..
        } => (udid, format!("status-{}.json", safe(report_id)), raw_b64),
        _ => return None,
    };
    let bytes = crate::journal::answer::bytes(b64).ok()?;
    Some((PathBuf::from(DDM_DIR).join(safe(udid)).join(name), bytes))
}

/// The folder of the DDM evidence files.
pub(crate) const DDM_DIR: &str = "ddm";

/// The `softwareupdate.install-state` a DDM status report carries, if any (DDM brief §3): what
/// a device's lane shows for it. A report that does not parse shows nothing.
fn ddm_install_state(raw_b64: &str) -> Option<Box<str>> {
    let bytes = crate::journal::answer::bytes(raw_b64).ok()?;
    let r = crate::mdm::ddm::StatusReport::parse(&bytes).ok()?;
    let state = r.get("softwareupdate.install-state")?.as_str()?;
    Some(state.into())
}
