//! The protocol's stop rule (`stop.severe_adverse_events: k`): once k devices had a severe
//! adverse event, no more doses. The count is a pure verdict over the runner's own fold
//! (`verdicts::adverse::severe_devices`), kept whole by folding what other processes (`lab
//! observe`) appended: no re-read of the journal, and no report code in the runner.

use super::*;

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
        self.journal.catch_up()?;
        self.fold_foreign();
        // Fired earlier in this run (before a resume): the fold has it.
        if !self.state.stop_rules.is_empty() {
            self.stop_triggered = true;
            return Ok(true);
        }
        // No arm-step limits: the same count the reports' adverse_events.csv gives.
        let n = crate::verdicts::adverse::severe_devices(
            &self.state,
            &std::collections::BTreeMap::new(),
        );
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
