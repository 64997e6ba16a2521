//! What the engine says happened. Reporters (terminal, plain lines, JSON, journal, summary)
//! consume these and decide nothing.

use serde::{Deserialize, Serialize};

use crate::exit::Exit;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Passed,
    Failed,
    /// Failed, but `on_fail: continue` (or a notify post) let the run go on.
    FailedContinued,
    Aborted,
    Interrupted,
    /// Not run: before `--from`/`--resume`'s step, or skipped by the operator.
    Skipped,
    /// Rehearsal: a step that changes state, shown and not run.
    WouldRun,
}

impl StepOutcome {
    pub fn word(self) -> &'static str {
        match self {
            StepOutcome::Passed => "ok",
            StepOutcome::Failed => "FAILED",
            StepOutcome::FailedContinued => "failed, continuing",
            StepOutcome::Aborted => "ABORT",
            StepOutcome::Interrupted => "interrupted",
            StepOutcome::Skipped => "skipped",
            StepOutcome::WouldRun => "would run",
        }
    }
}

/// How the whole run ended; maps to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Success,
    Failed,
    Aborted,
    Interrupted,
}

impl RunOutcome {
    pub fn exit(self) -> Exit {
        match self {
            RunOutcome::Success => Exit::Ok,
            RunOutcome::Failed => Exit::StepFailed,
            RunOutcome::Aborted => Exit::Aborted,
            RunOutcome::Interrupted => Exit::Interrupted,
        }
    }

    /// The exit code as the journal records it.
    pub fn exit_code(self) -> i32 {
        i32::from(self.exit().code())
    }

    /// How the process ends, knowing which signal (if any) stopped the run: an interrupted
    /// run exits with the signal's code (130, 143, 129).
    pub fn exit_after(self, stop: Option<crate::signals::Stop>) -> Exit {
        match (self, stop) {
            (RunOutcome::Interrupted, Some(s)) => s.exit(),
            (o, _) => o.exit(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Run,
    Rehearse,
    /// `recover drill`: only its `run_started` says so; the engine drills in rehearsal mode.
    Drill,
}

/// One thing that happened. Times are seconds on the run's timeline (`at`), which a
/// resumed run continues from where the interrupted one stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        mode: Mode,
        runbook: String,
        path: String,
        sha256: String,
        budget: f64,
        steps: usize,
        phases: usize,
        /// Set when this run continues an earlier one.
        resumed_from: Option<String>,
        /// `--unattended`: nobody at a terminal, nobody asked; manual steps follow their
        /// `unattended:` key.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unattended: bool,
        /// Who or what started the run (`--started-by`), e.g. the UPS's upsmon hook.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_by: Option<String>,
        first_step: usize,
        /// A resumed run: the first step of the run it continues (and of that one's, back to
        /// the run that was not a resume), for the record: where the chain began.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin_step: Option<usize>,
        targets: Vec<TargetInfo>,
        /// For an overlay: every file read, each with its sha256 (`sha256` is of them all).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<FileInfo>,
    },
    Connected {
        target: String,
        destination: String,
        boot_id: String,
        reconnect: bool,
    },
    BootIdChanged {
        target: String,
        old: String,
        new: String,
    },
    ConnectionLost {
        target: String,
        error: String,
    },
    PhaseStarted {
        phase: usize,
        name: String,
        window_start: f64,
        window_end: f64,
        at: f64,
    },
    /// The phase is still running and its window has closed.
    PhaseOverrun {
        phase: usize,
        name: String,
        window_end: f64,
        at: f64,
    },
    PhaseFinished {
        phase: usize,
        name: String,
        started: f64,
        at: f64,
        window_start: f64,
        window_end: f64,
        result: StepOutcome,
    },
    StepStarted {
        step: usize,
        phase: usize,
        name: String,
        kind: crate::runbook::model::Kind,
        target: String,
        mutates: bool,
        /// The exact command or request, secrets redacted.
        command: Option<String>,
        timeout: f64,
        at: f64,
    },
    /// The latest line of output, or the gate's latest probe result: for spinners.
    StepProgress {
        step: usize,
        line: String,
    },
    StepFinished {
        step: usize,
        phase: usize,
        name: String,
        outcome: StepOutcome,
        exit: Option<i32>,
        duration: f64,
        at: f64,
        /// Why it failed or aborted, or what a rehearsal would have run.
        reason: Option<String>,
        /// Truncated output, secrets redacted.
        stdout: Option<String>,
        stderr: Option<String>,
        /// A retried step: seconds before its last attempt (the failed attempts and the pauses
        /// between them), counted as waiting on the box in "where the time went".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waited: Option<f64>,
    },
    Warning {
        step: Option<usize>,
        message: String,
    },
    /// One probe of a health gate: when, whether it passed, and (failed) why, in one short
    /// line. Journaled without its own `fdatasync` (see `crate::journal`): `--resume` never
    /// reads it, and the step's end, synced, makes every probe line before it durable.
    GateProbe {
        step: usize,
        at: f64,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A gate applied its remedy: the unit was active, its probe kept failing.
    RemedyApplied {
        step: usize,
        unit: String,
        /// `kill`, `restart` or `run`.
        action: String,
        /// Consecutive failed probes that led to it.
        failures: u32,
        /// The main process killed (`kill`), as the target reported it.
        old_pid: Option<u64>,
        /// What was done, for the operator.
        message: String,
    },
    /// After a `kill` or `restart` remedy: the unit is active again with a new main process.
    RemedyRestarted {
        step: usize,
        unit: String,
        old_pid: Option<u64>,
        new_pid: u64,
        /// Seconds from the remedy to `active` with the new pid.
        after: f64,
    },
    /// `recover drill`: one unit SIGKILLed on purpose, and what followed.
    DrillMeasured {
        step: usize,
        unit: String,
        /// `Restart=` before the kill.
        restart: String,
        old_pid: u64,
        new_pid: Option<u64>,
        /// Seconds from the kill to `active` with a new main pid.
        restarted_after: Option<f64>,
        /// Seconds from the kill to the health probe passing again.
        healthy_after: Option<f64>,
        /// `NRestarts` before the kill, and once the unit was active again (systemd's count
        /// of its automatic restarts: the drill's kill adds one).
        #[serde(default)]
        n_restarts_before: Option<u64>,
        #[serde(default)]
        n_restarts_after: Option<u64>,
        passed: bool,
        /// Why it failed, when it did.
        reason: Option<String>,
    },
    Notified {
        channel: String,
        ok: bool,
        attempts: u32,
        error: Option<String>,
    },
    /// The box rebooted under the run (its boot id changed, or a resumed run found it not
    /// answering): every step tied to its old boot is void, and the run starts again from
    /// `to_step`. Steps marked `survives_reboot` that were done before `from_step` are not
    /// repeated.
    Rewound {
        target: String,
        /// Why, in one line.
        reason: String,
        /// Where the run stood.
        from_step: usize,
        to_step: usize,
        old_boot_id: Option<String>,
        new_boot_id: Option<String>,
        at: f64,
    },
    /// The end check of a run: every unit the runbook starts, active and its gate's probe
    /// passing once more. A run claims success only when `ok`.
    Verified {
        ok: bool,
        units: Vec<UnitCheck>,
        at: f64,
    },
    /// The abort handler ran: the operator must follow `message`.
    AbortProcedure {
        step: usize,
        reason: String,
        step_message: Option<String>,
        message: String,
    },
    RunFinished {
        outcome: RunOutcome,
        exit_code: i32,
        at: f64,
        budget: f64,
        failed_step: Option<usize>,
        /// One sentence for the operator: what happened, and what to do next.
        message: String,
        /// For interrupted and failed runs: the exact command that continues.
        resume: Option<String>,
    },
}

impl Event {
    /// Where on the run's timeline the event happened, for events that say.
    pub fn at(&self) -> Option<f64> {
        match self {
            Event::PhaseStarted { at, .. }
            | Event::PhaseOverrun { at, .. }
            | Event::PhaseFinished { at, .. }
            | Event::StepStarted { at, .. }
            | Event::StepFinished { at, .. }
            | Event::GateProbe { at, .. }
            | Event::Rewound { at, .. }
            | Event::Verified { at, .. }
            | Event::RunFinished { at, .. } => Some(*at),
            _ => None,
        }
    }
}

impl Event {
    /// Call `f` on every string the event holds. Every variant is taken apart field by field
    /// (no `..`), so a string field added later is a compile error here until it is visited:
    /// redaction cannot miss it.
    pub fn each_string(&mut self, f: &mut dyn FnMut(&mut String)) {
        fn opt(s: &mut Option<String>, f: &mut dyn FnMut(&mut String)) {
            if let Some(s) = s {
                f(s);
            }
        }
        match self {
            Event::RunStarted {
                run_id,
                mode: _,
                runbook,
                path,
                sha256,
                budget: _,
                steps: _,
                phases: _,
                resumed_from,
                unattended: _,
                started_by,
                first_step: _,
                origin_step: _,
                targets,
                files,
            } => {
                f(run_id);
                f(runbook);
                f(path);
                f(sha256);
                opt(resumed_from, f);
                opt(started_by, f);
                for TargetInfo {
                    name,
                    destination,
                    port: _,
                } in targets
                {
                    f(name);
                    f(destination);
                }
                for FileInfo {
                    role: _,
                    path,
                    sha256,
                } in files
                {
                    f(path);
                    f(sha256);
                }
            }
            Event::Connected {
                target,
                destination,
                boot_id,
                reconnect: _,
            } => {
                f(target);
                f(destination);
                f(boot_id);
            }
            Event::BootIdChanged { target, old, new } => {
                f(target);
                f(old);
                f(new);
            }
            Event::ConnectionLost { target, error } => {
                f(target);
                f(error);
            }
            Event::PhaseStarted {
                phase: _,
                name,
                window_start: _,
                window_end: _,
                at: _,
            }
            | Event::PhaseOverrun {
                phase: _,
                name,
                window_end: _,
                at: _,
            }
            | Event::PhaseFinished {
                phase: _,
                name,
                started: _,
                at: _,
                window_start: _,
                window_end: _,
                result: _,
            } => f(name),
            Event::StepStarted {
                step: _,
                phase: _,
                name,
                kind: _,
                target,
                mutates: _,
                command,
                timeout: _,
                at: _,
            } => {
                f(name);
                f(target);
                opt(command, f);
            }
            Event::StepProgress { step: _, line } => f(line),
            Event::StepFinished {
                step: _,
                phase: _,
                name,
                outcome: _,
                exit: _,
                duration: _,
                at: _,
                reason,
                stdout,
                stderr,
                waited: _,
            } => {
                f(name);
                opt(reason, f);
                opt(stdout, f);
                opt(stderr, f);
            }
            Event::Warning { step: _, message } => f(message),
            Event::RemedyApplied {
                step: _,
                unit,
                action,
                failures: _,
                old_pid: _,
                message,
            } => {
                f(unit);
                f(action);
                f(message);
            }
            Event::GateProbe {
                step: _,
                at: _,
                ok: _,
                detail,
            } => opt(detail, f),
            Event::RemedyRestarted {
                step: _,
                unit,
                old_pid: _,
                new_pid: _,
                after: _,
            } => f(unit),
            Event::DrillMeasured {
                step: _,
                unit,
                restart,
                old_pid: _,
                new_pid: _,
                restarted_after: _,
                healthy_after: _,
                n_restarts_before: _,
                n_restarts_after: _,
                passed: _,
                reason,
            } => {
                f(unit);
                f(restart);
                opt(reason, f);
            }
            Event::Notified {
                channel,
                ok: _,
                attempts: _,
                error,
            } => {
                f(channel);
                opt(error, f);
            }
            Event::Rewound {
                target,
                reason,
                from_step: _,
                to_step: _,
                old_boot_id,
                new_boot_id,
                at: _,
            } => {
                f(target);
                f(reason);
                opt(old_boot_id, f);
                opt(new_boot_id, f);
            }
            Event::Verified {
                ok: _,
                units,
                at: _,
            } => {
                for UnitCheck {
                    step: _,
                    unit,
                    target,
                    state,
                    probe,
                    healthy: _,
                } in units
                {
                    f(unit);
                    f(target);
                    f(state);
                    opt(probe, f);
                }
            }
            Event::AbortProcedure {
                step: _,
                reason,
                step_message,
                message,
            } => {
                f(reason);
                opt(step_message, f);
                f(message);
            }
            Event::RunFinished {
                outcome: _,
                exit_code: _,
                at: _,
                budget: _,
                failed_step: _,
                message,
                resume,
            } => {
                f(message);
                opt(resume, f);
            }
        }
    }
}

/// One file of an overlay chain, as the run-started event names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub role: crate::runbook::Role,
    pub path: String,
    pub sha256: String,
}

/// One unit in a run's end check ([`Event::Verified`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitCheck {
    /// The `start` step of the unit.
    pub step: usize,
    pub unit: String,
    pub target: String,
    /// `ActiveState (SubState)` as the box said it, or why it could not be read.
    pub state: String,
    /// The gate's probe: `None` without a gate (or not probed: the unit is not active),
    /// `passed`, or why it failed.
    pub probe: Option<String>,
    pub healthy: bool,
}

/// A target as the run-started event names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetInfo {
    pub name: String,
    pub destination: String,
    pub port: Option<u16>,
}

/// Where events go. The engine calls `emit` in order, from one task.
pub trait Sink: Send {
    fn emit(&mut self, event: &Event);

    /// A problem of the sink itself (the journal can no longer be written), said once: the
    /// other sinks show it as a warning. Sinks never print.
    fn take_warning(&mut self) -> Option<String> {
        None
    }
}

/// Several sinks, each seeing every event.
#[derive(Default)]
pub struct Fanout(pub Vec<Box<dyn Sink>>);

impl Sink for Fanout {
    fn emit(&mut self, event: &Event) {
        for s in &mut self.0 {
            s.emit(event);
        }
        // A sink's own trouble goes to the others, once.
        for i in 0..self.0.len() {
            if let Some(message) = self.0[i].take_warning() {
                let warning = Event::Warning {
                    step: None,
                    message,
                };
                for (j, s) in self.0.iter_mut().enumerate() {
                    if j != i {
                        s.emit(&warning);
                    }
                }
            }
        }
    }
}
