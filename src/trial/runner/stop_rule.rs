//! The protocol's stop rule, behind one function.

use super::*;
impl Runner<'_> {
    /// The protocol's stop rule: once k devices had a severe adverse event, dosing halts.
    pub(super) fn stopped(&mut self) -> Result<bool, RunError> {
        let Some(k) = self.p.protocol.stop.severe_adverse_events else {
            return Ok(false);
        };
        if self.stop_triggered {
            return Ok(true);
        }
        // Judged again only when something that could add a severe adverse event was logged
        // since (by this run, or by `lab observe` from another process): re-reading the whole
        // journal before every dose made dosing quadratic in the number of devices.
        if !self.stop_dirty && !self.journal.appended_by_others()? {
            return Ok(false);
        }
        self.stop_dirty = false;
        // Streamed: the journal of a 1 000-device run parsed whole took ~150 MiB at once.
        let mut already = false;
        crate::trial::journal::stream(self.journal.path(), |_, e| {
            already |= matches!(e.event, Event::StopRuleTriggered { .. });
            Ok(())
        })?;
        if already {
            self.stop_triggered = true;
            return Ok(true);
        }
        let n = crate::report::adverse_events::devices_with_severe_events_in(self.journal.path())
            .map_err(|e| RunError::Report(e.to_string()))?;
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
