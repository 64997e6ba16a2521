//! `previous_boot:` steps: read the evidence on the target, let
//! [`crate::previous_boot::judge`] say clean, unclean or unknown, act on `on_unclean`.

use super::{Engine, Event, StepOutcome, StepResult};
use crate::plan::{Command, Step};
use crate::previous_boot::{Points, State, judge};
use crate::runbook::model::OnUnclean;
use crate::target::ExecError;

impl Engine<'_> {
    pub(crate) async fn previous_boot(
        &mut self,
        s: &Step,
        command: &Command,
        on_unclean: OnUnclean,
    ) -> StepResult {
        let f = match self.exec_remote(s, command, s.timeout).await {
            Ok(f) => f,
            Err(ExecError::Interrupted) => {
                return StepResult::with(StepOutcome::Interrupted, "interrupted");
            }
            Err(e) => return StepResult::with(StepOutcome::Failed, e.to_string()),
        };
        let v = judge(&f.output.stdout);
        self.previous_boot = Some(v.state);
        let mut evidence = String::new();
        for e in &v.evidence {
            let mark = match e.points {
                Points::Clean => "clean  ",
                Points::Unclean => "unclean",
                Points::Neither => "-      ",
            };
            evidence.push_str(&format!("{mark} {}: {}\n", e.source, e.line));
        }
        let reason = format!("previous boot {}: {}", v.state, v.reason);
        let (outcome, warn) = match (v.state, on_unclean) {
            (State::Clean, _) => (StepOutcome::Passed, false),
            (State::Unclean, OnUnclean::Abort) => (StepOutcome::Aborted, false),
            (State::Unclean, OnUnclean::Warn) => (StepOutcome::Passed, true),
            (State::Unclean, OnUnclean::Continue) => (StepOutcome::Passed, false),
            // Unknown is said, never acted on: without evidence the short path is still the
            // likely one, and the filesystem checks that follow look for damage themselves.
            (State::Unknown, _) => (StepOutcome::Passed, true),
        };
        if warn {
            self.out.emit(Event::Warning {
                step: Some(s.number),
                message: reason.clone(),
            });
        }
        let mut res = StepResult::with(outcome, reason);
        res.exit = f.output.exit;
        res.stdout = Some(evidence);
        res
    }
}
