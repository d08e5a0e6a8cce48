//! The protocol's stop rule (`stop.severe_adverse_events: k`): once k devices had a severe
//! adverse event, no more doses. Behind one function, [`severe_devices`]: how many devices had
//! a severe adverse event so far. Today it re-reads the journal through the report layer's
//! adverse-event derivation (the known layer break of `tests/architecture.rs`); once that
//! derivation is a pure verdict over the fold it is asked here instead, and nothing else in the
//! runner changes.

use super::*;

/// How many devices of the run whose journal is at `journal` had a severe adverse event.
fn severe_devices(journal: &Path) -> Result<usize, RunError> {
    crate::report::adverse_events::devices_with_severe_events_in(journal)
        .map_err(|e| RunError::Report(e.to_string()))
}

impl Runner<'_> {
    /// Has the stop rule halted dosing? Judged again only when something that could add a
    /// severe adverse event was logged since its last verdict (by this run, or by `lab observe`
    /// from another process): judging it before every dose made dosing quadratic in the number
    /// of devices. The first time it fires it is journaled (`stop_rule_triggered`).
    pub(super) fn stopped(&mut self) -> Result<bool, RunError> {
        let Some(k) = self.p.protocol.stop.severe_adverse_events else {
            return Ok(false);
        };
        if self.stop_triggered {
            return Ok(true);
        }
        if !self.stop_dirty && !self.journal.appended_by_others()? {
            return Ok(false);
        }
        self.stop_dirty = false;
        // Fired earlier in this run (before a resume): the fold has it.
        if !self.state.stop_rules.is_empty() {
            self.stop_triggered = true;
            return Ok(true);
        }
        let n = severe_devices(self.journal.path())?;
        if n as u32 >= k {
            self.log(Event::StopRuleTriggered {
                rule: "severe_adverse_events".into(),
                message: format!(
                    "{n} devices had a severe adverse event (limit {k}): no more doses"
                ),
            })?;
            self.stop_triggered = true;
            return Ok(true);
        }
        Ok(false)
    }
}
