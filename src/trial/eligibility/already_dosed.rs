//! Rule `already_dosed`: a device another run already sent an update command at its current
//! build is not dosed again, by the lab-wide ledger or the MDM's own records
//! (`trial::dose_guard`). Judged on every device, a failed probe included.

use super::facts::reason;
use super::{Context, RuleVerdict, Subject, rule};
use crate::journal::Reason;
use crate::trial::protocol::EligibilitySpec;
use serde_json::{Value, json};

pub fn check(ctx: &Context) -> RuleVerdict {
    already_dosed(ctx.spec, ctx.subject).into()
}

/// The reason, also for a device without a usable baseline.
pub(super) fn already_dosed(spec: &EligibilitySpec, s: &Subject) -> Option<Reason> {
    (spec.not_already_dosed && !s.dosed_by_other_protocols.is_empty()).then(|| {
            let doses: Vec<Value> = s
                .dosed_by_other_protocols
                .iter()
                .map(|r| {
                    json!({
                        "trial_id": r.trial_id,
                        "command_uuid": r.command_uuid,
                        "protocol_sha256": r.protocol_sha256,
                        "kind": r.kind,
                        "step": r.step,
                        "starting_build": r.starting_build,
                        "run_dir": r.run_dir,
                        "at": r.at,
                    })
                })
                .collect();
            let cited: Vec<String> = s
                .dosed_by_other_protocols
                .iter()
                .map(|r| {
                    if r.protocol_sha256.is_empty() {
                        // Evidence only the MDM's records hold (`trial::dose_guard`).
                        format!(
                            "the MDM's records (CommandUUID {}, queued {}, by a run the ledger does not know)",
                            r.command_uuid, r.at
                        )
                    } else {
                        format!(
                            "trial {} (run {}, CommandUUID {}, {})",
                            r.trial_id, r.run_dir, r.command_uuid, r.at
                        )
                    }
                })
                .collect();
            reason(
                rule::ALREADY_DOSED,
                format!(
                    "Another run already sent this device an update command at build {}: {}.",
                    s.dosed_by_other_protocols[0].starting_build,
                    cited.join(", ")
                ),
                json!({ "doses": doses }),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn already_dosed_cites_the_trial_and_command() {
        let p = dev().probe();
        let o = offer();
        let mut s = subject(&p, Some(&o));
        s.dosed_by_other_protocols = vec![dose()];
        let r = only(
            &assess(&EligibilitySpec::default(), &TargetSpec::Latest, &s),
            rule::ALREADY_DOSED,
        );
        assert_eq!(
            r.message,
            "Another run already sent this device an update command at build 21F90: trial \
             other-trial (run results/other-trial, CommandUUID 5A1C-DOSE, 2026-11-27T22:30:00Z)."
        );
        assert_eq!(r.values["doses"][0]["trial_id"], "other-trial");
        assert_eq!(r.values["doses"][0]["command_uuid"], "5A1C-DOSE");
        assert_eq!(r.values["doses"][0]["kind"], "intent");
        let off = EligibilitySpec {
            not_already_dosed: false,
            ..Default::default()
        };
        assert!(assess(&off, &TargetSpec::Latest, &s).eligible);
    }
}
