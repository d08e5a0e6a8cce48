//! The operator at the terminal: consent before any dose, and the protocol's checkpoint
//! questions (answers are observations with source `operator`).

use super::*;
impl Runner<'_> {
    pub(super) fn consent(&mut self) -> Result<(), RunError> {
        // A refusal ends the attempt that was refused, nothing more (issue 15): nothing was sent,
        // so the same command run again asks again, and the journal keeps both answers.
        match self.state.consented {
            Some(true) => return Ok(()),
            Some(false) => eprintln!(
                "\nConsent was refused earlier in this run folder ({}); nothing was sent. Asking again.",
                self.run_dir.display()
            ),
            None => {}
        }
        let allocated: Vec<(String, String)> = self
            .state
            .order
            .iter()
            .filter_map(|u| self.state.devices[u].arm.clone().map(|a| (u.clone(), a)))
            .collect();
        self.progress.release();
        let mut out = std::io::stderr().lock();
        let _ = writeln!(
            out,
            "\nThese devices will receive an IRREVERSIBLE update dose — a ScheduleOSUpdate command or a DDM enforcement declaration (an update cannot be undone):"
        );
        for (u, arm) in &allocated {
            let spec = self.p.protocol.arms.iter().find(|a| &a.name == arm);
            let d = &self.state.devices[u];
            let _ = writeln!(
                out,
                "  {u}  {}  iOS {} → {}  arm {arm}: {}{}",
                d.probe
                    .as_ref()
                    .and_then(|p| p.device_name.as_deref())
                    .unwrap_or("?"),
                d.probe
                    .as_ref()
                    .and_then(|p| p.product_version.as_deref())
                    .unwrap_or("?"),
                d.target["version"].as_str().unwrap_or("?"),
                spec.map(|s| match s.install_action {
                    Some(a) => format!("ScheduleOSUpdate InstallAction {}", a.as_str()),
                    None => format!("DDM declaration {}", crate::mdm::ddm::ENFORCEMENT_SPECIFIC),
                })
                .unwrap_or_else(|| "?".into()),
                spec.and_then(|s| s.follow_up_step.as_ref())
                    .map(|f| format!(", then {} once downloaded", f.install_action.as_str()))
                    .unwrap_or_default()
            );
        }
        drop(out);
        let udids: Vec<String> = allocated.iter().map(|x| x.0.clone()).collect();
        if self.opts.yes {
            self.log(Event::ConsentGiven {
                by: ConsentBy::Flag,
                udids,
            })?;
            return Ok(());
        }
        if !self.opts.interactive {
            let reason = "non-interactive run without --yes".to_string();
            self.log(Event::ConsentRefused {
                reason: reason.clone(),
            })?;
            return Err(RunError::NoConsent(reason));
        }
        eprint!("Type the trial id ({}) to proceed: ", self.p.protocol.id);
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if line.trim() == self.p.protocol.id {
            self.log(Event::ConsentGiven {
                by: ConsentBy::Operator,
                udids,
            })?;
            Ok(())
        } else {
            let reason = format!("the operator typed {:?}", line.trim());
            self.log(Event::ConsentRefused {
                reason: reason.clone(),
            })?;
            Err(RunError::NoConsent(reason))
        }
    }
    /// Ask the protocol's questions for `moment` on the terminal; answers are observations with
    /// source `operator`. Without a terminal the questions are skipped (and that is recorded).
    pub(super) fn checkpoint(
        &mut self,
        moment: crate::trial::protocol::CheckpointMoment,
        udid: Option<&str>,
    ) -> Result<(), RunError> {
        let questions: Vec<_> = self
            .p
            .protocol
            .checkpoints
            .iter()
            .filter(|c| c.at == moment)
            .cloned()
            .collect();
        for q in questions {
            if !self.opts.interactive {
                self.log(Event::Observation {
                    udid: udid.map(str::to_string),
                    source: ObservationSource::Harness,
                    kind: "checkpoint_skipped".into(),
                    key: q.kind.clone(),
                    value: format!("no terminal to ask: {}", q.question),
                })?;
                continue;
            }
            self.progress.release();
            eprint!(
                "[checkpoint{}] {} ",
                udid.map(|u| format!(" {u}")).unwrap_or_default(),
                q.question
            );
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            self.log(Event::Observation {
                udid: udid.map(str::to_string),
                source: ObservationSource::Operator,
                kind: q.kind.clone(),
                key: q.question.clone(),
                value: line.trim().to_string(),
            })?;
        }
        Ok(())
    }
}
