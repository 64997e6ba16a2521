//! The end check of a real run: success is a fact, not a count of steps. Before the "we are
//! back" post (the notify steps that end the plan), every unit the runbook starts must be
//! `active` and its gate's probe must pass once more. A unit started before a power cut and
//! not pulled in by anything after it, a unit started only as another's dependency (its own
//! gate never ran), a unit that died after its gate: each fails the run here, named.

use std::time::Duration;

use super::gate::UnitState;
use super::{Engine, Event, UnitCheck};
use crate::plan::{Action, Step};

/// Tries of a unit's probe in the end check: a probe that passed at its gate and fails once
/// now is tried again after [`PROBE_PAUSE`], not failed on one lost packet.
const PROBE_TRIES: u32 = 3;
const PROBE_PAUSE: Duration = Duration::from_secs(2);
/// How long reading a unit's state may take.
const STATE_TIMEOUT: Duration = Duration::from_secs(10);

impl Engine<'_> {
    /// Check every unit the runbook starts; emit [`Event::Verified`]. `None` when all are
    /// healthy; otherwise the first failing unit's `start` step and what is wrong, in words.
    pub(crate) async fn verify(&self) -> Option<(usize, String)> {
        let starts: Vec<&Step> = self.plan.started_units().map(|(s, _)| s).collect();
        if starts.is_empty() {
            return None;
        }
        let mut units = Vec::new();
        for s in starts {
            if self.cancelled() {
                return None;
            }
            self.out.emit(Event::StepProgress {
                step: s.number,
                line: "end check: is every unit the runbook starts still healthy?".into(),
            });
            units.push(self.check_unit(s).await);
        }
        let ok = units.iter().all(|u| u.healthy);
        let first_bad = units.iter().find(|u| !u.healthy).map(|u| u.step);
        let why = units
            .iter()
            .filter(|u| !u.healthy)
            .map(|u| match &u.probe {
                Some(p) if u.state.starts_with("active") => {
                    format!("{} is active but its probe fails ({p})", u.unit)
                }
                _ => format!("{} is {}", u.unit, u.state),
            })
            .collect::<Vec<_>>()
            .join("; ");
        self.out.emit(Event::Verified {
            ok,
            units,
            at: self.at(),
        });
        first_bad.map(|step| (step, why))
    }

    async fn check_unit(&self, s: &Step) -> UnitCheck {
        let Action::Start {
            unit,
            status,
            health,
            ..
        } = &s.action
        else {
            unreachable!("only start steps are checked")
        };
        let target = self
            .plan
            .targets
            .get(s.target)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let state = match self.exec_remote(s, status, STATE_TIMEOUT).await {
            Ok(f) if f.output.exit == Some(0) => UnitState::parse(&f.output.stdout),
            Ok(f) => {
                return UnitCheck {
                    step: s.number,
                    unit: unit.clone(),
                    target,
                    state: format!(
                        "unknown (`systemctl show` failed: {})",
                        super::first_line(&f.output.stderr)
                    ),
                    probe: None,
                    healthy: false,
                };
            }
            Err(e) => {
                return UnitCheck {
                    step: s.number,
                    unit: unit.clone(),
                    target,
                    state: format!("unknown ({})", super::first_line(&e.to_string())),
                    probe: None,
                    healthy: false,
                };
            }
        };
        let active = state.active == "active";
        let mut check = UnitCheck {
            step: s.number,
            unit: unit.clone(),
            target,
            state: if state.active.is_empty() {
                "unknown (no ActiveState)".to_owned()
            } else {
                state.summary()
            },
            probe: None,
            healthy: active,
        };
        let (true, Some(gate)) = (active, health.as_ref()) else {
            return check;
        };
        let mut last = String::new();
        for n in 1..=PROBE_TRIES {
            let (ok, why, _) = self.probe(s, &gate.probe).await;
            if ok {
                check.probe = Some("passed".into());
                return check;
            }
            last = super::gate::probe_detail(&why);
            if n < PROBE_TRIES && !self.cancelled() {
                tokio::time::sleep(PROBE_PAUSE).await;
            }
        }
        check.probe = Some(last);
        check.healthy = false;
        check
    }
}
