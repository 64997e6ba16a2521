//! `start` steps: `systemctl start --no-block`, then the health gate (Kubernetes probe
//! model). The unit must be `active` and the probe must pass `successes` times in a row.
//! A unit that reaches `failed` (start-limit-hit included) ends the gate at once.
//!
//! Probes are spaced by their own cost: after a probe that took `d`, the next comes after
//! `clamp(10 * d, MIN_INTERVAL, every)`. A cheap refusal (a loading model answering 503 in a
//! millisecond) is re-probed within half a second, so a healthy unit is seen within about a
//! second whatever `every` says, while an expensive probe keeps the server under ~10% load.
//! Until the unit is active no probe runs, and its state is read again after `MIN_INTERVAL`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::step::verdict_result;
use super::{Engine, Event, StepOutcome, StepResult};
use crate::plan::{Command, Gate, GateRemedy, Probe, Step, fmt_duration};
use crate::target::ExecError;
use crate::verdict::judge_http;

/// What a gate's remedy has done so far.
#[derive(Debug, Default)]
struct Heal {
    /// Consecutive failed probes that count toward the remedy.
    failures: u32,
    applied: u32,
    /// The refusal was said once (a warning); not again.
    refused: bool,
    /// After a kill or restart: the old main pid, and when.
    awaiting: Option<(Option<u64>, Instant)>,
    /// What happened, for the step's reason.
    done: Vec<String>,
}

impl Heal {
    /// `; remedy: ...` for the step's reason, or nothing.
    fn summary(&self) -> String {
        if self.done.is_empty() {
            String::new()
        } else {
            format!("; remedy: {}", self.done.join("; "))
        }
    }
}

/// The shortest pause between two probes.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// A probe may take at most this share of the server's time.
const DUTY: u32 = 10;

/// The unit's state as `systemctl show` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    pub load: String,
    pub active: String,
    pub sub: String,
    pub result: String,
}

impl UnitState {
    pub fn parse(text: &str) -> UnitState {
        let kv: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| kv.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
        UnitState {
            load: get("LoadState"),
            active: get("ActiveState"),
            sub: get("SubState"),
            result: get("Result"),
        }
    }

    /// Why the gate must end now, if it must.
    pub fn fatal(&self) -> Option<String> {
        if self.load == "not-found" {
            return Some("the unit does not exist on the target (LoadState=not-found)".into());
        }
        if self.active == "failed" || self.result == "start-limit-hit" {
            return Some(format!(
                "the unit failed (state {}, result {})",
                self.active, self.result
            ));
        }
        None
    }

    pub fn summary(&self) -> String {
        format!("{} ({})", self.active, self.sub)
    }
}

/// The unit's own ordering and dependencies, from `systemctl show`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitDeps {
    pub after: Vec<String>,
    pub requires: Vec<String>,
    pub wants: Vec<String>,
}

impl UnitDeps {
    pub fn parse(text: &str) -> UnitDeps {
        let list = |key: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .flat_map(|v| v.split_whitespace().map(str::to_owned))
                .collect()
        };
        UnitDeps {
            after: list("After"),
            requires: list("Requires"),
            wants: list("Wants"),
        }
    }
}

/// Errors: `unit` is started before a unit it is ordered after. Warnings: a service it needs
/// that the runbook never starts.
pub fn order_problems(unit: &str, order: &[&str], deps: &UnitDeps) -> (Vec<String>, Vec<String>) {
    let pos = |u: &str| order.iter().position(|x| *x == u);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if let Some(me) = pos(unit) {
        for a in &deps.after {
            if let Some(p) = pos(a)
                && p > me
            {
                errors.push(format!("{unit} is ordered After={a}, but the runbook starts {a} later: move {a} before it"));
            }
        }
    }
    for d in deps.requires.iter().chain(&deps.wants) {
        if d.ends_with(".service")
            && pos(d).is_none()
            && !warnings.iter().any(|w: &String| w.contains(d.as_str()))
        {
            warnings.push(format!(
                "{unit} needs {d} (Requires=/Wants=), which the runbook never starts"
            ));
        }
    }
    (errors, warnings)
}

/// The longest reason a `gate_probe` line keeps: a few words, not a response body.
const PROBE_DETAIL: usize = 120;

/// A failed probe's reason for the journal: its first line, at most 120 bytes.
pub fn probe_detail(why: &str) -> String {
    let line = why.lines().next().unwrap_or("").trim();
    if line.len() <= PROBE_DETAIL {
        return line.to_owned();
    }
    let mut cut = PROBE_DETAIL;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &line[..cut])
}

/// Next pause between probes, given how long the last one took.
pub fn next_interval(every: Duration, last_probe: Duration) -> Duration {
    (last_probe * DUTY).clamp(MIN_INTERVAL, every.max(MIN_INTERVAL))
}

/// The cost the next pause is scaled from: the last probe's time when a probe ran. When none
/// ran (the unit is not active yet), zero: the cheap `systemctl show` poll comes back after
/// [`MIN_INTERVAL`] plus its own round trip. Scaling that poll from its SSH round trip (five
/// round trips, as this did before) made a loaded box be seen active up to `every` late: the
/// lab benchmark's detection p90 of 14 s at a load of 10-23 came from there. The `systemctl
/// show` before a probe is not counted with the probe either: its cost is the target's shell
/// start-up and the link, not the server's load (a 0.3 s shell start-up, `pyenv init` in
/// ~/.bashrc, made healthy units wait up to 1.7 s to be seen when it was).
pub fn pause_basis(probe_took: Option<Duration>) -> Duration {
    probe_took.unwrap_or(Duration::ZERO)
}

impl Engine<'_> {
    /// A `start` step: `start`, then `status` and the gate's probe until healthy; `journal`
    /// when it fails.
    pub(crate) async fn start(
        &self,
        s: &Step,
        unit: &str,
        (start, status, journal): (&Command, &Command, &Command),
        gate: Option<&Gate>,
    ) -> StepResult {
        let started = Instant::now();
        let deadline = started + s.timeout;
        let r = self.exec_remote(s, start, Duration::from_secs(10)).await;
        match r {
            Ok(f) if f.output.exit == Some(0) => {}
            Ok(f) => {
                let mut res = StepResult::with(
                    StepOutcome::Failed,
                    format!(
                        "`systemctl start {unit}` failed (exit {}): {}",
                        f.output
                            .exit
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "none".into()),
                        super::first_line(&f.output.stderr)
                    ),
                );
                res.exit = f.output.exit;
                res.stderr = Some(f.output.stderr);
                return res;
            }
            Err(ExecError::Interrupted) => {
                return StepResult::with(StepOutcome::Interrupted, "interrupted");
            }
            Err(e) => return StepResult::with(StepOutcome::Failed, e.to_string()),
        }

        let gate_deadline = match gate {
            Some(g) => deadline.min(started + g.timeout),
            None => deadline,
        };
        let every = gate.map(|g| g.every).unwrap_or(Duration::from_secs(1));
        let needed = gate.map(|g| g.successes).unwrap_or(1);
        let mut successes = 0;
        let mut probes = 0u32;
        let mut last = String::from("not checked yet");
        let mut heal = Heal::default();
        loop {
            if self.cancelled() {
                return StepResult::with(StepOutcome::Interrupted, "interrupted");
            }
            let mut now = None;
            let state = match self.exec_remote(s, status, Duration::from_secs(10)).await {
                Ok(f) => {
                    now = Some(crate::remedy::UnitNow::parse(&f.output.stdout));
                    UnitState::parse(&f.output.stdout)
                }
                Err(ExecError::Interrupted) => {
                    return StepResult::with(StepOutcome::Interrupted, "interrupted");
                }
                // The target is gone (power cut, reboot) and reconnecting with backoff failed
                // for the command's whole timeout: waiting out a gate of minutes would only
                // hide that. End the step now; the run says how to resume.
                Err(ExecError::Connect { target, reason }) => {
                    let mut res = StepResult::with(
                        StepOutcome::Failed,
                        format!(
                            "lost the connection to {target} while waiting for {unit}, and reconnecting failed ({reason}): the target may have lost power or rebooted. Once SSH answers, resume"
                        ),
                    );
                    res.connection_lost = true;
                    return res;
                }
                // A lost master (or a failed spawn) is retried: the next command reconnects.
                Err(e) => {
                    last = e.to_string();
                    UnitState::default()
                }
            };
            // The box rebooted under the gate: what it waits for is on a boot the run no
            // longer stands on. End the step now; the run starts again (see `Engine::run`).
            if self.reboot_pending() {
                let mut res = StepResult::with(
                    StepOutcome::Failed,
                    format!("the target rebooted while waiting for {unit}"),
                );
                res.connection_lost = true;
                return res;
            }
            if let Some(why) = state.fatal() {
                return self.unit_failed(s, unit, journal, &state, &why).await;
            }
            if let (Some(now), Some(g)) = (&now, gate)
                && g.remedy.is_some()
            {
                self.remedy_restarted(s, unit, now, &mut heal);
            }
            let mut probe_took = None;
            if state.active == "active" {
                match gate {
                    None => {
                        return StepResult::with(StepOutcome::Passed, format!("{unit} is active"));
                    }
                    Some(g) => {
                        probes += 1;
                        let p0 = Instant::now();
                        let (ok, why, hang) = self.probe(s, &g.probe).await;
                        probe_took = Some(p0.elapsed());
                        self.out.emit(Event::GateProbe {
                            step: s.number,
                            at: self.at(),
                            ok,
                            detail: (!ok).then(|| probe_detail(&why)),
                        });
                        if ok {
                            successes += 1;
                            heal.failures = 0;
                            last = format!("probe passed ({successes}/{needed})");
                            if successes >= needed {
                                return StepResult::with(
                                    StepOutcome::Passed,
                                    format!(
                                        "{unit} active and healthy after {} ({probes} probes){}",
                                        fmt_duration(Duration::from_secs(
                                            started.elapsed().as_secs()
                                        )),
                                        heal.summary()
                                    ),
                                );
                            }
                        } else {
                            successes = 0;
                            last = why;
                            if let (Some(r), Some(now)) = (&g.remedy, &now)
                                && let Some(line) =
                                    self.remedy(s, unit, r, now, hang, &mut heal).await
                            {
                                last = format!("{last}; {line}");
                            }
                        }
                    }
                }
            } else if !state.active.is_empty() {
                successes = 0;
                last = format!("unit is {}", state.summary());
            }
            self.out.emit(Event::StepProgress {
                step: s.number,
                line: last.clone(),
            });
            if Instant::now() >= gate_deadline {
                let why = format!(
                    "{unit} not healthy after {}: {last}{}",
                    fmt_duration(Duration::from_secs(started.elapsed().as_secs())),
                    heal.summary()
                );
                let mut res = StepResult::with(StepOutcome::Failed, why);
                res.stdout = self.journal_lines(s, unit, journal).await;
                return res;
            }
            let pause = next_interval(every, pause_basis(probe_took))
                .min(gate_deadline.saturating_duration_since(Instant::now()));
            let mut cancel = self.cancel.clone();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.wait_for(|c| *c) => return StepResult::with(StepOutcome::Interrupted, "interrupted"),
            }
        }
    }

    /// Rehearsal of a `start` step: nothing is started. The unit must exist, its own ordering
    /// must not contradict the runbook's, and its probe must answer now (the stack is up).
    pub(crate) async fn rehearse_start(
        &self,
        s: &Step,
        unit: &str,
        inspect: &Command,
        gate: Option<&Gate>,
    ) -> StepResult {
        let text = match self.exec_remote(s, inspect, Duration::from_secs(10)).await {
            Ok(f) if f.output.exit == Some(0) => f.output.stdout,
            Ok(f) => {
                return StepResult::with(
                    StepOutcome::Failed,
                    format!(
                        "`systemctl show {unit}` failed: {}",
                        super::first_line(&f.output.stderr)
                    ),
                );
            }
            Err(e) => return StepResult::with(StepOutcome::Failed, e.to_string()),
        };
        let state = UnitState::parse(&text);
        if state.load == "not-found" {
            return StepResult::with(
                StepOutcome::Failed,
                format!("{unit} does not exist on the target"),
            );
        }
        let deps = UnitDeps::parse(&text);
        let order: Vec<&str> = self.plan.started_units().map(|(_, u)| u).collect();
        let (errors, warnings) = order_problems(unit, &order, &deps);
        for w in &warnings {
            self.out.emit(Event::Warning {
                step: Some(s.number),
                message: w.clone(),
            });
        }
        self.rehearse_audit(s).await;
        if !errors.is_empty() {
            return StepResult::with(StepOutcome::Failed, errors.join("; "));
        }
        if let Some(g) = gate {
            let (ok, why, _) = self.probe(s, &g.probe).await;
            if !ok {
                return StepResult::with(
                    StepOutcome::Failed,
                    format!("{unit}'s health probe does not pass on the live stack: {why}"),
                );
            }
        }
        StepResult::with(
            StepOutcome::WouldRun,
            format!(
                "{}; unit exists ({}), order agrees with its After=, probe passes now",
                super::step::describe(s).unwrap_or_default(),
                state.summary()
            ),
        )
    }

    /// One probe: (passed, why not, whether it got no answer in time: a hang).
    pub(crate) async fn probe(&self, s: &Step, probe: &Probe) -> (bool, String, bool) {
        match probe {
            Probe::Http(req) => {
                let r = self.send(req, s.target).await;
                match r.status {
                    Some(code) => {
                        let res = verdict_result(judge_http(code, &r.body, Some(&req.expect)));
                        (
                            res.outcome == StepOutcome::Passed,
                            res.reason.unwrap_or_default(),
                            false,
                        )
                    }
                    None => (
                        false,
                        r.error.unwrap_or_else(|| "no answer".into()),
                        r.timed_out,
                    ),
                }
            }
            Probe::Run { command, expect } => {
                let t = Duration::from_secs(10);
                match self.exec_remote(s, command, t).await {
                    Ok(f) => {
                        let res =
                            verdict_result(crate::verdict::judge(&f.output, expect.as_ref(), None));
                        (
                            res.outcome == StepOutcome::Passed,
                            res.reason.unwrap_or_default(),
                            f.output.timed_out,
                        )
                    }
                    Err(e) => (false, e.to_string(), false),
                }
            }
        }
    }

    /// After a failed probe: count it, and apply the remedy when [`crate::remedy::decide`]
    /// says so. Returns a note for the progress line.
    async fn remedy(
        &self,
        s: &Step,
        unit: &str,
        r: &GateRemedy,
        now: &crate::remedy::UnitNow,
        hang: bool,
        heal: &mut Heal,
    ) -> Option<String> {
        use crate::remedy::{Action as Do, Decision, counts, decide, killed_pid};
        let p = &r.policy;
        if counts(&p.action, hang) {
            heal.failures += 1;
        } else {
            heal.failures = 0;
        }
        match decide(p, unit, now, heal.failures, heal.applied) {
            Decision::Wait(0) => None,
            Decision::Wait(n) => Some(format!(
                "{n}/{} toward the remedy ({})",
                p.after,
                p.action.name()
            )),
            Decision::Refuse(why) => {
                if !heal.refused {
                    heal.refused = true;
                    self.out.emit(Event::Warning {
                        step: Some(s.number),
                        message: format!("remedy not applied: {why}"),
                    });
                }
                None
            }
            Decision::Apply => {
                let failures = heal.failures;
                heal.failures = 0;
                heal.applied += 1;
                let before = (now.main_pid > 0).then_some(now.main_pid);
                let bound = crate::plan::DEFAULT_PROBE_TIMEOUT + crate::plan::KILL_GRACE;
                let res = self.exec_remote(s, &r.apply, bound).await;
                let (ok, detail, pid) = match &res {
                    Ok(f) if f.output.exit == Some(0) => {
                        (true, String::new(), killed_pid(&f.output.stdout).or(before))
                    }
                    Ok(f) => (
                        false,
                        format!(
                            " failed (exit {}): {}",
                            f.output
                                .exit
                                .map(|c| c.to_string())
                                .unwrap_or_else(|| "none".into()),
                            super::first_line(&f.output.stderr)
                        ),
                        None,
                    ),
                    Err(e) => (false, format!(" failed: {e}"), None),
                };
                let what = match (&p.action, pid) {
                    (Do::Kill, Some(pid)) => format!("SIGKILL of {unit}'s main pid {pid}"),
                    (Do::Kill, None) => format!("SIGKILL of {unit}'s main pid"),
                    (Do::Restart, _) => format!("restart of {unit}"),
                    (Do::Run(c), _) => format!("`{c}`"),
                };
                let message =
                    format!("{what}{detail}, after {failures} failed probe(s) while it was active");
                self.out.emit(Event::RemedyApplied {
                    step: s.number,
                    unit: unit.to_owned(),
                    action: p.action.name().to_owned(),
                    failures,
                    old_pid: pid,
                    message: message.clone(),
                });
                if ok && !matches!(p.action, Do::Run(_)) {
                    heal.awaiting = Some((before, Instant::now()));
                }
                heal.done.push(message.clone());
                Some(format!("remedy: {message}"))
            }
        }
    }

    /// After a kill or restart: the unit active again with a new main process is an event.
    fn remedy_restarted(
        &self,
        s: &Step,
        unit: &str,
        now: &crate::remedy::UnitNow,
        heal: &mut Heal,
    ) {
        let Some((old, t0)) = heal.awaiting else {
            return;
        };
        if now.active == "active" && now.main_pid > 0 && Some(now.main_pid) != old {
            heal.awaiting = None;
            let after = t0.elapsed().as_secs_f64();
            heal.done.push(format!(
                "active again with main pid {} after {after:.1}s",
                now.main_pid
            ));
            self.out.emit(Event::RemedyRestarted {
                step: s.number,
                unit: unit.to_owned(),
                old_pid: old,
                new_pid: now.main_pid,
                after,
            });
        }
    }

    async fn unit_failed(
        &self,
        s: &Step,
        unit: &str,
        journal: &Command,
        state: &UnitState,
        why: &str,
    ) -> StepResult {
        let mut reason = format!("{unit}: {why}");
        if state.result == "start-limit-hit" {
            reason.push_str(&format!(
                ". systemd will refuse to start it again until `sudo systemctl reset-failed {unit}` is run: fix the cause, reset it, then resume"
            ));
        }
        let mut res = StepResult::with(StepOutcome::Failed, reason);
        res.stdout = self.journal_lines(s, unit, journal).await;
        res
    }

    /// The plan's `journalctl -u UNIT -n 30`: what the unit said last.
    async fn journal_lines(&self, s: &Step, unit: &str, journal: &Command) -> Option<String> {
        match self.exec_remote(s, journal, Duration::from_secs(15)).await {
            Ok(f) => Some(format!(
                "last journal lines of {unit}:\n{}",
                f.output.stdout.trim_end()
            )),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_detail_is_one_short_line() {
        assert_eq!(probe_detail("  HTTP 503\nbody: loading\n"), "HTTP 503");
        let long = "é".repeat(100);
        let d = probe_detail(&long);
        assert!(d.len() <= PROBE_DETAIL + "…".len(), "{}", d.len());
        assert!(d.ends_with('…') && d.starts_with("éé"));
        assert_eq!(probe_detail(""), "");
    }

    #[test]
    fn parses_systemctl_show() {
        let s = UnitState::parse(
            "LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=start-limit-hit\n",
        );
        assert_eq!(s.active, "failed");
        assert!(s.fatal().unwrap().contains("start-limit-hit"));
        let ok = UnitState::parse(
            "LoadState=loaded\nActiveState=active\nSubState=running\nResult=success\n",
        );
        assert_eq!(ok.fatal(), None);
        let missing = UnitState::parse(
            "LoadState=not-found\nActiveState=inactive\nSubState=dead\nResult=success\n",
        );
        assert!(missing.fatal().unwrap().contains("does not exist"));
    }

    #[test]
    fn order_contradictions_are_errors_and_missing_dependencies_warnings() {
        let deps = UnitDeps::parse(
            "After=vllm.service network.target\nRequires=vllm.service\nWants=redis.service\n",
        );
        let (e, w) = order_problems(
            "dispatcher.service",
            &["dispatcher.service", "vllm.service"],
            &deps,
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("After=vllm.service"));
        assert_eq!(
            w,
            vec![
                "dispatcher.service needs redis.service (Requires=/Wants=), which the runbook never starts"
            ]
        );
        let (e, _) = order_problems(
            "dispatcher.service",
            &["vllm.service", "dispatcher.service"],
            &deps,
        );
        assert!(e.is_empty());
    }

    #[test]
    fn probe_spacing_follows_probe_cost() {
        let every = Duration::from_secs(10);
        assert_eq!(next_interval(every, Duration::from_millis(2)), MIN_INTERVAL);
        assert_eq!(
            next_interval(every, Duration::from_millis(300)),
            Duration::from_secs(3)
        );
        assert_eq!(next_interval(every, Duration::from_secs(5)), every);
        assert_eq!(
            next_interval(Duration::from_millis(100), Duration::ZERO),
            MIN_INTERVAL
        );
    }

    #[test]
    fn a_slow_ssh_round_trip_does_not_stretch_the_probe_spacing() {
        let every = Duration::from_secs(10);
        // A cheap 503 after a 0.3 s `systemctl show`: re-probed after the minimum pause.
        let basis = pause_basis(Some(Duration::from_millis(2)));
        assert_eq!(next_interval(every, basis), MIN_INTERVAL);
        // An expensive probe still spaces itself by its own cost.
        let basis = pause_basis(Some(Duration::from_millis(400)));
        assert_eq!(next_interval(every, basis), Duration::from_secs(4));
        // No probe (the unit is not active yet): the state poll comes back after the minimum,
        // however slow its round trip.
        assert_eq!(next_interval(every, pause_basis(None)), MIN_INTERVAL);
    }
}
