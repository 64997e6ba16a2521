//! `recover audit` (and the audit inside `rehearse`): each `start` unit's `systemctl show`,
//! judged by [`crate::audit::audit_unit`] against the runbook's order.

use super::{Engine, Event};
use crate::audit::{UnitAudit, UnitContext, audit_unit, looks_like_inference};
use crate::plan::{Action, Probe, Step};

/// One unit's audit, or why its unit file could not be read.
pub struct Audited {
    pub step: usize,
    pub unit: String,
    pub result: Result<UnitAudit, String>,
}

impl Engine<'_> {
    /// The `start` steps of the plan, in its order: (step, unit).
    fn start_steps(&self) -> Vec<(&Step, &str)> {
        self.plan.started_units().collect()
    }

    /// Audits the unit of one start step.
    pub(crate) async fn audit_step(&self, s: &Step) -> Option<Result<UnitAudit, String>> {
        let Action::Start {
            unit,
            audit,
            health,
            ..
        } = &s.action
        else {
            return None;
        };
        let order: Vec<String> = self
            .start_steps()
            .iter()
            .map(|(_, u)| (*u).to_owned())
            .collect();
        let pos = order.iter().position(|u| u == unit).unwrap_or(order.len());
        let before = &order[..pos.min(order.len())];
        let after = order.get(pos + 1..).unwrap_or(&[]);
        let probe_url = health.as_ref().and_then(|g| match &g.probe {
            Probe::Http(r) => Some(r.url.as_str()),
            Probe::Run { .. } => None,
        });
        let ctx = UnitContext {
            unit,
            inference: looks_like_inference(unit, probe_url),
            started_before: before,
            started_after: after,
        };
        Some(
            match self
                .exec_remote(s, audit, crate::plan::DEFAULT_PROBE_TIMEOUT)
                .await
            {
                Ok(f) if f.output.exit == Some(0) => Ok(audit_unit(&f.output.stdout, &ctx)),
                Ok(f) => Err(format!(
                    "`systemctl show {unit}` failed (exit {}): {}",
                    f.output
                        .exit
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "none".into()),
                    super::first_line(&f.output.stderr)
                )),
                Err(e) => Err(e.to_string()),
            },
        )
    }

    /// Audits every unit the runbook starts, in its order.
    pub async fn audit(self) -> Vec<Audited> {
        let mut out = Vec::new();
        for (s, unit) in self.start_steps() {
            if self.cancelled() {
                break;
            }
            if let Some(result) = self.audit_step(s).await {
                out.push(Audited {
                    step: s.number,
                    unit: unit.to_owned(),
                    result,
                });
            }
        }
        self.drain_notes();
        out
    }

    /// In a rehearsal: one warning per unit with findings, pointing at `recover audit`.
    pub(crate) async fn rehearse_audit(&self, s: &Step) {
        match self.audit_step(s).await {
            Some(Ok(a)) if a.warnings() > 0 => {
                let habits: Vec<&str> = a
                    .findings
                    .iter()
                    .filter(|f| f.status == crate::audit::Status::Warn)
                    .map(|f| f.habit.name())
                    .collect();
                self.out.emit(Event::Warning {
                    step: Some(s.number),
                    message: format!(
                        "audit: {}: {} warning(s) ({}); `recover audit` prints the drop-in that fixes them",
                        a.unit,
                        a.warnings(),
                        habits.join(", ")
                    ),
                });
            }
            Some(Err(e)) => self.out.emit(Event::Warning {
                step: Some(s.number),
                message: format!("audit: {e}"),
            }),
            _ => {}
        }
    }
}
