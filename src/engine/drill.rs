//! `recover drill`: SIGKILL a live unit's main process on purpose and time systemd's restart
//! and the reload, the way the remedy would rely on them. Judged by [`crate::drill`].

use std::time::{Duration, Instant};

use super::{Engine, Event, Mode, RunOutcome};
use crate::drill::{Measured, Verdict, judge};
use crate::plan::{Action, Step};
use crate::remedy::{UnitNow, killed_pid, start_limit_refusal};

/// How often the unit's state is read while it restarts.
const POLL: Duration = Duration::from_millis(500);

impl Engine<'_> {
    /// Drills the start steps whose units are in `units` (all of them when empty), one after
    /// the other, each bounded by its step's timeout.
    pub async fn drill(self, units: &[String]) -> Vec<Measured> {
        let steps: Vec<&Step> = self
            .plan
            .started_units()
            .filter(|(_, unit)| units.is_empty() || units.iter().any(|u| u == unit))
            .map(|(s, _)| s)
            .collect();
        // A drill journal reads like a run's: `run_started` (mode `drill`, no budget: a drill
        // is not on the recovery's timeline), one `drill_measured` per unit, `run_finished`.
        let mut started = self.run_started(Mode::Drill, steps.len(), 0);
        if let Event::RunStarted { budget, .. } = &mut started {
            *budget = 0.0;
        }
        self.out.emit(started);
        let mut out = Vec::new();
        for s in steps {
            if self.cancelled() {
                break;
            }
            let mut m = self.drill_one(s).await;
            m.interrupted = self.cancelled() && !m.complete();
            let verdict = judge(&m);
            self.out.emit(Event::DrillMeasured {
                step: s.number,
                unit: m.unit.clone(),
                restart: m.restart.clone(),
                old_pid: m.old_pid,
                new_pid: m.new_pid,
                restarted_after: m.restarted_after.map(|d| d.as_secs_f64()),
                healthy_after: m.healthy_after.map(|d| d.as_secs_f64()),
                n_restarts_before: m.n_restarts_before,
                n_restarts_after: m.n_restarts_after,
                passed: verdict.passed(),
                reason: match verdict {
                    Verdict::Pass => None,
                    Verdict::Fail(why) => Some(why),
                    Verdict::Skipped(why) => Some(format!("not drilled: {why}")),
                },
            });
            out.push(m);
        }
        self.drain_notes();
        self.out
            .emit(self.drill_finished(&out, units.len().max(out.len())));
        for t in &self.targets {
            t.close().await;
        }
        out
    }

    /// `run_finished` of a drill: success when every chosen unit was drilled and passed.
    fn drill_finished(&self, rows: &[Measured], chosen: usize) -> Event {
        let stop = self.settings.stop.get();
        let failed = rows.iter().filter(|m| !judge(m).passed()).count();
        let (outcome, message) = if self.cancelled() {
            (
                RunOutcome::Interrupted,
                format!(
                    "{}: drill stopped after {} of {chosen} unit(s); a unit interrupted mid-drill is not recorded.",
                    stop.map_or("Interrupted", |s| s.describe()),
                    rows.len()
                ),
            )
        } else if failed == 0 && rows.len() == chosen {
            (
                RunOutcome::Success,
                format!(
                    "Drill finished: {} unit(s) restarted by systemd and healthy again.",
                    rows.len()
                ),
            )
        } else {
            (
                RunOutcome::Failed,
                format!(
                    "Drill finished: {failed} of {} unit(s) not restarted, not healthy again, or not drilled: see the table.",
                    rows.len()
                ),
            )
        };
        Event::RunFinished {
            outcome,
            exit_code: i32::from(outcome.exit_after(stop).code()),
            at: self.at(),
            budget: 0.0,
            failed_step: None,
            message,
            resume: None,
        }
    }

    async fn read_unit(&self, s: &Step, state: &crate::plan::Command) -> Option<UnitNow> {
        match self.exec_remote(s, state, Duration::from_secs(10)).await {
            Ok(f) if f.output.exit == Some(0) => Some(UnitNow::parse(&f.output.stdout)),
            _ => None,
        }
    }

    async fn drill_one(&self, s: &Step) -> Measured {
        let Action::Start {
            unit,
            health,
            drill,
            ..
        } = &s.action
        else {
            return Measured::default();
        };
        let mut m = Measured {
            unit: unit.clone(),
            has_probe: health.is_some(),
            bound: s.timeout,
            ..Measured::default()
        };
        let Some(before) = self.read_unit(s, &drill.state).await else {
            m.kill_error = Some("cannot read its state (systemctl show)".into());
            return m;
        };
        m.restart = before.restart.clone();
        m.old_pid = before.main_pid;
        m.n_restarts_before = Some(before.n_restarts);
        if before.active != "active" || before.main_pid == 0 {
            m.kill_error = Some(format!(
                "it is {} with no main process to kill: drill the live, healthy stack",
                before.active
            ));
            return m;
        }
        // The restart this kill causes must not trip the unit's start limit: the drill would
        // cause the outage it rehearses (the remedy's own rule, `crate::remedy`).
        if let Some(why) = start_limit_refusal(unit, &before, "the drill's SIGKILL") {
            m.refused = Some(format!(
                "{why}; drill it once the limit's interval has passed, or after `systemctl reset-failed {unit}`"
            ));
            return m;
        }
        self.out.emit(Event::StepProgress {
            step: s.number,
            line: format!("SIGKILL of {unit}'s main pid {}", before.main_pid),
        });
        let t0 = Instant::now();
        match self
            .exec_remote(s, &drill.kill, Duration::from_secs(15))
            .await
        {
            Ok(f) if f.output.exit == Some(0) => {
                if let Some(pid) = killed_pid(&f.output.stdout) {
                    m.old_pid = pid;
                }
            }
            Ok(f) => {
                m.kill_error = Some(format!(
                    "exit {}: {}",
                    f.output
                        .exit
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "none".into()),
                    super::first_line(&f.output.stderr)
                ));
                return m;
            }
            Err(e) => {
                m.kill_error = Some(e.to_string());
                return m;
            }
        }
        let deadline = t0 + s.timeout;
        // systemd's restart: active again, with a new main process.
        while Instant::now() < deadline && !self.cancelled() {
            if let Some(now) = self.read_unit(s, &drill.state).await {
                if now.active == "active" && now.main_pid > 0 && now.main_pid != m.old_pid {
                    m.restarted_after = Some(t0.elapsed());
                    m.new_pid = Some(now.main_pid);
                    m.n_restarts_after = Some(now.n_restarts);
                    break;
                }
                if now.active == "failed" || (now.active == "inactive" && now.sub == "dead") {
                    m.gave_up_state = Some(now.active.clone());
                    m.n_restarts_after = Some(now.n_restarts);
                    break;
                }
                self.out.emit(Event::StepProgress {
                    step: s.number,
                    line: format!("{unit} is {} ({})", now.active, now.sub),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        // The reload: the health probe passing again.
        if let (Some(_), Some(g)) = (m.restarted_after, health.as_deref()) {
            while Instant::now() < deadline && !self.cancelled() {
                let (ok, why, _) = self.probe(s, &g.probe).await;
                if ok {
                    m.healthy_after = Some(t0.elapsed());
                    break;
                }
                self.out.emit(Event::StepProgress {
                    step: s.number,
                    line: format!("{unit} restarted; probe: {why}"),
                });
                tokio::time::sleep(g.every.min(Duration::from_secs(2))).await;
            }
        }
        m
    }
}
