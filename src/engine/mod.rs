//! The engine walks the Plan phase by phase, step by step. It alone owns time, retries,
//! gates, deadlines and cancellation, and it never prints: it emits Events.

pub mod audit;
mod boot;
mod drill;
pub mod event;
pub mod failure;
pub mod gate;
mod http;
mod power;
mod step;
mod verify;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use event::{Event, FileInfo, Mode, RunOutcome, Sink, StepOutcome, TargetInfo, UnitCheck};

use crate::plan::Plan;
use crate::secrets::Secrets;
use crate::target::ssh::{Note, Ssh};

/// What the operator answered at a manual step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Done,
    Skip,
    Abort,
}

/// Asks the operator about a manual step: (step name, instructions) -> answer.
pub type Prompt = Box<dyn FnMut(&str, &str) -> Answer + Send>;

/// Who confirms manual steps, decided once from `--yes`, `--unattended` and the terminal.
/// `Confirm<()>` is the decision; [`Confirm::with_prompt`] gives `Ask` the prompt to ask with.
pub enum Confirm<P = Prompt> {
    /// `--yes`: manual steps count as done.
    Yes,
    /// The operator answers at a terminal.
    Ask(P),
    /// `--unattended`: nobody is there and nobody is asked; each manual step does what its
    /// `unattended:` key says (skip, recorded and posted as not confirmed; or abort), and a
    /// `wait_ssh` `otherwise:` ask is only posted.
    Unattended,
    /// Nobody to ask (a rehearsal, or no terminal): a manual step fails.
    Refuse,
}

impl<P> Confirm<P> {
    /// Whether nobody is there to confirm anything (`--unattended`).
    pub fn is_unattended(&self) -> bool {
        matches!(self, Confirm::Unattended)
    }
}

impl Confirm<()> {
    /// `--unattended` and `--yes` first (the command line never gives both); otherwise ask
    /// when there is a terminal to ask at.
    pub fn decide(yes: bool, unattended: bool, interactive: bool) -> Self {
        match (yes, unattended, interactive) {
            (_, true, _) => Confirm::Unattended,
            (true, false, _) => Confirm::Yes,
            (false, false, true) => Confirm::Ask(()),
            (false, false, false) => Confirm::Refuse,
        }
    }

    pub fn with_prompt(self, prompt: impl FnOnce() -> Prompt) -> Confirm {
        match self {
            Confirm::Yes => Confirm::Yes,
            Confirm::Ask(()) => Confirm::Ask(prompt()),
            Confirm::Unattended => Confirm::Unattended,
            Confirm::Refuse => Confirm::Refuse,
        }
    }
}

/// What a resumed run takes over from the run it continues.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// The run this one continues.
    pub run_id: String,
    /// Where its timeline stood.
    pub elapsed: Duration,
    /// Boot ids it recorded, per target name.
    pub boot_ids: BTreeMap<String, String>,
    /// The first step of the chain of runs it continues (journaled in `run_started`).
    pub origin_step: usize,
}

/// How this run goes.
pub struct Settings {
    pub mode: Mode,
    pub run_id: String,
    /// The first step to run (1-based); earlier steps are reported as skipped.
    pub first_step: usize,
    /// Who confirms manual steps.
    pub confirm: Confirm,
    /// Who or what started the run (`--started-by`): journaled, and said in every post.
    pub started_by: Option<String>,
    /// Set when this run continues an earlier one.
    pub resume: Option<Resume>,
    /// The command that continues this run, printed when it stops early.
    pub resume_command: String,
    /// Which signal cancelled the run, set by the canceller before it cancels.
    pub stop: crate::signals::StopCause,
    /// Found before the run started (an unset notify secret, a lock taken over): reported
    /// right after the start, on every reporter and in the journal.
    pub warnings: Vec<String>,
}

impl Settings {
    /// Where the run's timeline starts: where the resumed run stopped, or zero.
    fn elapsed_offset(&self) -> Duration {
        self.resume.as_ref().map_or(Duration::ZERO, |r| r.elapsed)
    }
}

/// Events out, secrets redacted, from any task.
#[derive(Clone)]
pub struct Emitter {
    sink: Arc<Mutex<Box<dyn Sink>>>,
    /// Every form of every secret, worked out once.
    redactor: Arc<crate::secrets::Redactor>,
    any: bool,
    /// What happened on the way, for `{{ run.events }}`: see [`noteworthy`].
    noted: Arc<Mutex<Vec<String>>>,
}

impl Emitter {
    pub fn new(sink: Box<dyn Sink>, secrets: Secrets) -> Self {
        Emitter {
            sink: Arc::new(Mutex::new(sink)),
            redactor: Arc::new(secrets.redactor()),
            any: !secrets.values.is_empty(),
            noted: Arc::default(),
        }
    }

    /// `{{ run.events }}`: what happened on the way so far, or `none`.
    pub fn events(&self) -> String {
        let noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        if noted.is_empty() {
            "none".to_owned()
        } else {
            noted.join("; ")
        }
    }

    /// Hand the event to the sinks with every string in it redacted. The redaction works on
    /// the event's own strings, before any sink serializes it, so there is no form of the
    /// event that could carry a secret through.
    pub fn emit(&self, mut event: Event) {
        if self.any {
            event.each_string(&mut |s| {
                let red = self.redactor.redact(s);
                if red != *s {
                    *s = red;
                }
            });
        }
        if let Some(line) = noteworthy(&event) {
            self.noted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line);
        }
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        sink.emit(&event);
    }
}

/// An event the last post should name (`{{ run.events }}`): a previous boot that was not clean,
/// a remedy applied, a step that failed and was passed over.
fn noteworthy(event: &Event) -> Option<String> {
    match event {
        Event::Warning {
            step: Some(n),
            message,
        } if message.starts_with("previous boot ") => Some(format!("step {n}: {message}")),
        Event::RemedyApplied { step, message, .. } => {
            Some(format!("step {step}: remedy applied: {message}"))
        }
        Event::StepFinished {
            step,
            name,
            outcome: StepOutcome::FailedContinued,
            ..
        } => Some(format!("step {step} ({name}) failed, the run went on")),
        _ => None,
    }
}

/// What came of one step, before the engine decides what to do next.
pub(crate) struct StepResult {
    pub outcome: StepOutcome,
    pub exit: Option<i32>,
    pub reason: Option<String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    /// Seconds a retried step spent before its last attempt (failed attempts and the pauses
    /// between them): waiting on the box, not the command's work.
    pub waited: Option<f64>,
    /// It failed because the box went away (the connection lost, or a reboot seen), not
    /// because a check said no: `on_fail: abort` does not make that an abort.
    pub connection_lost: bool,
}

impl StepResult {
    pub fn passed() -> Self {
        StepResult {
            outcome: StepOutcome::Passed,
            exit: None,
            reason: None,
            stdout: None,
            stderr: None,
            waited: None,
            connection_lost: false,
        }
    }
    pub fn with(outcome: StepOutcome, reason: impl Into<String>) -> Self {
        StepResult {
            outcome,
            reason: Some(reason.into()),
            ..StepResult::passed()
        }
    }
}

pub struct Engine<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) settings: Settings,
    pub(crate) out: Emitter,
    pub(crate) targets: Vec<Ssh>,
    pub(crate) http: reqwest::Client,
    pub(crate) cancel: watch::Receiver<bool>,
    clock: Instant,
    /// Rehearsal: steps that failed or would have aborted (the drill goes on).
    pub(crate) rehearsal_problems: usize,
    /// What this run's last `previous_boot` step said: `when: unclean_shutdown` reads it.
    pub(crate) previous_boot: Option<crate::previous_boot::State>,
    /// What the failure post at the end of the run will say (see [`failure`]).
    pub(crate) failure: failure::Record,
    /// A reboot of a target noticed since the run last looked (its boot id changed).
    reboot: Mutex<Option<BootChange>>,
}

/// A target's boot id changed under the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BootChange {
    pub target: String,
    pub old: Option<String>,
    pub new: Option<String>,
    /// In one line, for the journal and the operator.
    pub reason: String,
}

/// How often a run starts again after its box rebooted under it, before it gives up.
pub const MAX_REWINDS: u32 = 3;

/// What the end check found.
enum EndCheck {
    Healthy,
    /// The box rebooted while it was checked: start again.
    Rebooted(BootChange),
    /// A unit is not healthy: the run fails at its `start` step, with this message.
    Unhealthy {
        step: usize,
        message: String,
    },
}

/// How one walk of the plan ended.
enum Walk {
    Done {
        outcome: RunOutcome,
        failed_step: Option<usize>,
        message: String,
    },
    /// The box rebooted: start again.
    Rewind {
        from_step: usize,
        change: BootChange,
    },
}

/// Output kept in events and the journal, per stream.
pub const JOURNAL_OUTPUT: usize = 4000;

pub fn truncate(s: &str) -> Option<String> {
    if s.trim().is_empty() {
        return None;
    }
    if s.len() <= JOURNAL_OUTPUT {
        return Some(s.to_owned());
    }
    let mut cut = s.len() - JOURNAL_OUTPUT;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    Some(format!("[… {cut} bytes before …]\n{}", &s[cut..]))
}

impl<'a> Engine<'a> {
    pub fn new(
        plan: &'a Plan,
        settings: Settings,
        out: Emitter,
        cancel: watch::Receiver<bool>,
    ) -> Self {
        let targets = plan
            .targets
            .iter()
            .cloned()
            .map(Ssh::new)
            .collect::<Vec<_>>();
        for t in &targets {
            if let Some(id) = settings
                .resume
                .as_ref()
                .and_then(|r| r.boot_ids.get(&t.spec.name))
            {
                t.set_known_boot_id(Some(id.clone()));
            }
        }
        Engine {
            plan,
            settings,
            out,
            targets,
            http: http::client(),
            cancel,
            clock: Instant::now(),
            rehearsal_problems: 0,
            previous_boot: None,
            failure: failure::Record::default(),
            reboot: Mutex::new(None),
        }
    }

    /// Whether a target rebooted under this run since it last started again: the steps done
    /// on the old boot are void. Only a real run starts again; a rehearsal or drill goes on.
    pub(crate) fn reboot_pending(&self) -> bool {
        self.reboot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn take_reboot(&self) -> Option<BootChange> {
        self.reboot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The line every status post of this run ends with when nobody typed the command: the
    /// operators' channel must know the run started by itself, and who started it.
    pub(crate) fn provenance(&self) -> Option<String> {
        match (
            self.settings.confirm.is_unattended(),
            &self.settings.started_by,
        ) {
            (true, Some(by)) => Some(format!("(unattended run, started by {by})")),
            (true, None) => Some("(unattended run: nobody at a terminal)".to_owned()),
            (false, Some(by)) => Some(format!("(started by {by})")),
            (false, None) => None,
        }
    }

    /// Seconds on the run's timeline.
    pub(crate) fn at(&self) -> f64 {
        (self.settings.elapsed_offset() + self.clock.elapsed()).as_secs_f64()
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.settings.elapsed_offset() + self.clock.elapsed()
    }

    pub(crate) fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Report what happened to the SSH connections since the last look.
    pub(crate) fn drain_notes(&self) {
        for t in &self.targets {
            for n in t.take_notes() {
                let e = match n {
                    Note::Connected { boot_id, reconnect } => Event::Connected {
                        target: t.spec.name.clone(),
                        destination: t.spec.destination(),
                        boot_id,
                        reconnect,
                    },
                    Note::BootIdChanged { old, new } => Event::BootIdChanged {
                        target: t.spec.name.clone(),
                        old,
                        new,
                    },
                    Note::Lost { error } => Event::ConnectionLost {
                        target: t.spec.name.clone(),
                        error,
                    },
                };
                if let (Event::BootIdChanged { target, old, new }, Mode::Run) =
                    (&e, self.settings.mode)
                {
                    let mut r = self.reboot.lock().unwrap_or_else(|e| e.into_inner());
                    if r.is_none() {
                        *r = Some(BootChange {
                            target: target.clone(),
                            old: Some(old.clone()),
                            new: Some(new.clone()),
                            reason: format!(
                                "{target} rebooted (boot id {} is now {})",
                                short_id(old),
                                short_id(new)
                            ),
                        });
                    }
                }
                self.out.emit(e);
            }
        }
    }

    /// A resumed run: whether the box rebooted (or went away) since the run it continues.
    /// Each target that run saw is asked for its boot id once, bounded by the connect
    /// timeout. A target that does not answer counts as rebooted: what the steps left on it
    /// cannot be known, and starting again is safe (a unit already active starts at once).
    async fn reboot_since_resumed_run(&self) -> Option<BootChange> {
        let resume = self.settings.resume.as_ref()?;
        for t in &self.targets {
            let Some(known) = resume.boot_ids.get(&t.spec.name) else {
                continue;
            };
            let connect = t.connect(crate::target::ssh::CONNECT_TIMEOUT);
            let mut cancel = self.cancel.clone();
            let r = tokio::select! {
                r = connect => r,
                _ = cancel.wait_for(|c| *c) => return None,
            };
            match r {
                Ok(_) => {
                    self.drain_notes();
                    if let Some(change) = self.take_reboot() {
                        return Some(BootChange {
                            reason: format!("{} since the run being resumed", change.reason),
                            ..change
                        });
                    }
                }
                Err(e) => {
                    self.drain_notes();
                    // Whatever boot it comes back on is the one the run starts again on.
                    t.set_known_boot_id(None);
                    return Some(BootChange {
                        target: t.spec.name.clone(),
                        old: Some(known.clone()),
                        new: None,
                        reason: format!(
                            "{} does not answer as the run being resumed left it ({}): it may have lost power or rebooted again",
                            t.spec.name,
                            first_line(&e.to_string())
                        ),
                    });
                }
            }
        }
        None
    }

    /// The `run_started` event of this run (or drill: `mode`), with `steps` and `phases` it
    /// covers.
    pub(crate) fn run_started(&self, mode: Mode, steps: usize, phases: usize) -> Event {
        let plan = self.plan;
        Event::RunStarted {
            run_id: self.settings.run_id.clone(),
            mode,
            runbook: plan.name.clone(),
            path: plan.source.display().to_string(),
            sha256: plan.sha256.clone(),
            budget: plan.budget.as_secs_f64(),
            steps,
            phases,
            resumed_from: self.settings.resume.as_ref().map(|r| r.run_id.clone()),
            unattended: self.settings.confirm.is_unattended(),
            started_by: self.settings.started_by.clone(),
            first_step: self.settings.first_step,
            origin_step: self.settings.resume.as_ref().map(|r| r.origin_step),
            targets: plan
                .targets
                .iter()
                .map(|t| TargetInfo {
                    name: t.name.clone(),
                    destination: t.destination(),
                    port: t.port,
                })
                .collect(),
            files: match plan.files.as_slice() {
                [_] | [] => Vec::new(),
                files => files
                    .iter()
                    .map(|f| FileInfo {
                        role: f.role,
                        path: f.path.display().to_string(),
                        sha256: f.sha256.clone(),
                    })
                    .collect(),
            },
        }
    }

    /// Walk the plan. Returns how the run ended; every event has been emitted.
    ///
    /// A real run whose box reboots under it (its boot id changes, or a resumed run finds it
    /// rebooted or not answering) starts again from the first step: every step tied to the
    /// old boot (the kernel-log and filesystem checks, the page-cache drop, every `start` and
    /// its gate, the smoke tests, and the UPS wait, since a second cut is a new outage) is
    /// void. Only steps marked `survives_reboot` that were done before are not repeated. At
    /// most [`MAX_REWINDS`] times; then the run fails.
    pub async fn run(mut self) -> RunOutcome {
        let plan = self.plan;
        let total: usize = plan.phases.iter().map(|p| p.steps.len()).sum();
        self.out
            .emit(self.run_started(self.settings.mode, total, plan.phases.len()));
        for message in &self.settings.warnings {
            self.out.emit(Event::Warning {
                step: None,
                message: message.clone(),
            });
        }

        // After a reboot every step tied to the box's boot is void, whether recover did it or
        // the operator skipped it with `--from` (done by hand, on the old boot): the run starts
        // again from the first step, and only `survives_reboot` steps done before are kept.
        let origin = 1;
        let mut start_at = self.settings.first_step;
        // Steps before this one were done in this run or an earlier one of its chain.
        let mut done_before = start_at;
        let mut rewinds = 0u32;
        if self.settings.mode == Mode::Run
            && start_at > origin
            && let Some(change) = self.reboot_since_resumed_run().await
        {
            self.rewound(&change, start_at, origin);
            start_at = origin;
        }

        let (mut outcome, failed_step, mut message) = loop {
            match self.walk(start_at, done_before).await {
                Walk::Done {
                    outcome,
                    failed_step,
                    message,
                } => break (outcome, failed_step, message),
                Walk::Rewind { from_step, change } => {
                    rewinds += 1;
                    if rewinds > MAX_REWINDS {
                        let message = format!(
                            "{} rebooted {rewinds} times during this run, the last time at step {from_step}: stopping. Check its power and console, then start again: {}",
                            change.target, self.settings.resume_command
                        );
                        break (RunOutcome::Failed, Some(from_step), message);
                    }
                    self.rewound(&change, from_step, origin);
                    done_before = done_before.max(from_step);
                    start_at = origin;
                    self.previous_boot = None;
                }
            }
        };

        if outcome == RunOutcome::Success && self.rehearsal_problems > 0 {
            outcome = RunOutcome::Failed;
            message = format!(
                "Rehearsal found {} problem(s): the runbook does not match the target. See the failed steps above.",
                self.rehearsal_problems
            );
        }
        let stop = self.settings.stop.get();
        if outcome == RunOutcome::Interrupted {
            message = format!(
                "{} at step {}. The remote command was stopped. To continue from this step: {}",
                stop.map_or("Interrupted", |s| s.describe()),
                failed_step.unwrap_or(0),
                self.settings.resume_command
            );
        } else if outcome == RunOutcome::Success {
            message = match self.settings.mode {
                Mode::Run => format!(
                    "Recovered in {} of the {} budget.",
                    crate::plan::fmt_duration(Duration::from_secs(self.elapsed().as_secs())),
                    crate::plan::fmt_duration(plan.budget)
                ),
                Mode::Rehearse => "Rehearsal finished: every read-only step passed.".to_owned(),
                Mode::Drill => "Drill finished.".to_owned(),
            };
        }
        let resume = matches!(outcome, RunOutcome::Failed | RunOutcome::Interrupted)
            .then(|| self.settings.resume_command.clone());
        self.post_failure(outcome, failed_step, &message).await;
        self.out.emit(Event::RunFinished {
            outcome,
            exit_code: i32::from(outcome.exit_after(stop).code()),
            at: self.at(),
            budget: plan.budget.as_secs_f64(),
            failed_step,
            message,
            resume,
        });
        for t in &self.targets {
            t.close().await;
        }
        outcome
    }

    /// Say (and journal) that the run starts again, and why.
    fn rewound(&self, change: &BootChange, from_step: usize, to_step: usize) {
        self.out.emit(Event::Rewound {
            target: change.target.clone(),
            reason: format!(
                "{}: the steps done on the old boot are void; starting again from step {to_step}",
                change.reason
            ),
            from_step,
            to_step,
            old_boot_id: change.old.clone(),
            new_boot_id: change.new.clone(),
            at: self.at(),
        });
    }

    /// The step before which a real run checks that every unit it starts is healthy: the
    /// first of the notify steps that end the plan (the "we are back" post must be true), or
    /// none, and the check comes after the last step.
    fn verify_before(&self) -> Option<usize> {
        let steps: Vec<&crate::plan::Step> = self.plan.steps().collect();
        let trailing = steps
            .iter()
            .rev()
            .take_while(|s| matches!(s.action, crate::plan::Action::Notify { .. }))
            .last()?;
        Some(trailing.number)
    }

    /// One walk of the plan from `start_at`. Steps before it were done before this walk;
    /// `survives_reboot` steps before `done_before` are not repeated.
    async fn walk(&mut self, start_at: usize, done_before: usize) -> Walk {
        let plan = self.plan;
        let verify_at = (self.settings.mode == Mode::Run).then(|| self.verify_before());
        let mut verified = false;
        let mut outcome = RunOutcome::Success;
        let mut failed_step = None;
        let mut message = String::new();
        let mut rewind = None;

        'phases: for (pi, phase) in plan.phases.iter().enumerate() {
            let pnum = pi + 1;
            if phase.steps.iter().all(|s| s.number < start_at) {
                for s in &phase.steps {
                    self.skipped(pnum, s, "already done before this run");
                }
                continue;
            }
            let started = self.at();
            let (ws, we) = (
                phase.window.start.as_secs_f64(),
                phase.window.end.as_secs_f64(),
            );
            self.out.emit(Event::PhaseStarted {
                phase: pnum,
                name: phase.name.clone(),
                window_start: ws,
                window_end: we,
                at: started,
            });
            let overrun = self.watch_window(pnum, &phase.name, phase.window.end);
            let mut phase_result = StepOutcome::Passed;
            for s in &phase.steps {
                if s.number < start_at {
                    self.skipped(pnum, s, "already done before this run");
                    continue;
                }
                if self.cancelled() {
                    outcome = RunOutcome::Interrupted;
                    failed_step = Some(s.number);
                    phase_result = StepOutcome::Interrupted;
                    break;
                }
                if s.survives_reboot && s.number < done_before {
                    self.skipped(
                        pnum,
                        s,
                        "done before the box rebooted, and it does not depend on the box's boot (survives_reboot: true): not repeated",
                    );
                    continue;
                }
                if let Some(Some(v)) = verify_at
                    && !verified
                    && s.number >= v
                {
                    verified = true;
                    match self.end_check().await {
                        EndCheck::Healthy => {}
                        EndCheck::Rebooted(change) => {
                            rewind = Some((s.number, change));
                            break;
                        }
                        EndCheck::Unhealthy { step, message: m } => {
                            outcome = RunOutcome::Failed;
                            failed_step = Some(step);
                            phase_result = StepOutcome::Failed;
                            message = m;
                            break;
                        }
                    }
                }
                if let Some(why) = self.not_needed(s) {
                    self.skipped(pnum, s, &why);
                    continue;
                }
                let res = self.step(pnum, s).await;
                self.drain_notes();
                if !matches!(res.outcome, StepOutcome::Interrupted | StepOutcome::Aborted)
                    && let Some(change) = self.take_reboot()
                {
                    rewind = Some((s.number, change));
                    break;
                }
                match res.outcome {
                    StepOutcome::Passed
                    | StepOutcome::Skipped
                    | StepOutcome::WouldRun
                    | StepOutcome::FailedContinued => {}
                    StepOutcome::Failed => {
                        outcome = RunOutcome::Failed;
                        failed_step = Some(s.number);
                        phase_result = StepOutcome::Failed;
                        let target = self
                            .plan
                            .targets
                            .get(s.target)
                            .map(|t| t.name.as_str())
                            .unwrap_or("?");
                        message = format!(
                            "Step {} ({}) failed on {target}: {}. Fix the cause, then continue from this step: {}",
                            s.number,
                            s.name,
                            first_line(res.reason.as_deref().unwrap_or("see the output above"))
                                .trim_end_matches('.'),
                            self.settings.resume_command
                        );
                        break;
                    }
                    StepOutcome::Aborted => {
                        outcome = RunOutcome::Aborted;
                        failed_step = Some(s.number);
                        phase_result = StepOutcome::Aborted;
                        let reason = res
                            .reason
                            .clone()
                            .unwrap_or_else(|| "abort condition met".into());
                        self.abort(s, &reason).await;
                        message = format!(
                            "Aborted at step {} ({}): {}. Off the timeline: follow the abort procedure above.",
                            s.number,
                            s.name,
                            first_line(&reason).trim_end_matches('.')
                        );
                        break;
                    }
                    StepOutcome::Interrupted => {
                        outcome = RunOutcome::Interrupted;
                        failed_step = Some(s.number);
                        phase_result = StepOutcome::Interrupted;
                        break;
                    }
                }
            }
            overrun.abort();
            self.out.emit(Event::PhaseFinished {
                phase: pnum,
                name: phase.name.clone(),
                started,
                at: self.at(),
                window_start: ws,
                window_end: we,
                result: phase_result,
            });
            if rewind.is_some() || outcome != RunOutcome::Success {
                break 'phases;
            }
        }
        if let Some((from_step, change)) = rewind {
            return Walk::Rewind { from_step, change };
        }
        // No notify step ends the plan: the check comes after the last step.
        if outcome == RunOutcome::Success && verify_at == Some(None) && !self.cancelled() {
            match self.end_check().await {
                EndCheck::Healthy => {}
                EndCheck::Rebooted(change) => {
                    return Walk::Rewind {
                        from_step: plan.steps().count(),
                        change,
                    };
                }
                EndCheck::Unhealthy { step, message } => {
                    return Walk::Done {
                        outcome: RunOutcome::Failed,
                        failed_step: Some(step),
                        message,
                    };
                }
            }
        }
        Walk::Done {
            outcome,
            failed_step,
            message,
        }
    }

    /// The end check ([`verify`]), and whether the box rebooted while it ran: one place for
    /// the check before the final posts and the one after the last step.
    async fn end_check(&self) -> EndCheck {
        let end = self.verify().await;
        self.drain_notes();
        if let Some(change) = self.take_reboot() {
            return EndCheck::Rebooted(change);
        }
        match end {
            Some((step, why)) => EndCheck::Unhealthy {
                step,
                message: self.not_recovered(&why, step),
            },
            None => EndCheck::Healthy,
        }
    }

    /// The run's last word when its end check failed.
    fn not_recovered(&self, why: &str, step: usize) -> String {
        format!(
            "Not recovered: at the end of the run {why}. No \"we are back\" was posted. Once the cause is fixed, continue from step {step}: {}",
            self.settings.resume_command
        )
    }

    /// Why a `when: unclean_shutdown` step is skipped: only when this run's `previous_boot`
    /// step found a clean shutdown. Unclean, unknown, or not run in this run (`--from` or
    /// `--resume` past it): the step runs, since verifying costs time and skipping could let
    /// a service load a file a hard cut damaged.
    fn not_needed(&self, s: &crate::plan::Step) -> Option<String> {
        let n = s.when_unclean?;
        (self.previous_boot == Some(crate::previous_boot::State::Clean)).then(|| {
            format!(
                "not needed: step {n} found a clean shutdown (`when: unclean_shutdown` runs it only after a hard cut or when that is not known)"
            )
        })
    }

    fn skipped(&self, phase: usize, s: &crate::plan::Step, why: &str) {
        self.out.emit(Event::StepFinished {
            step: s.number,
            phase,
            name: s.name.clone(),
            outcome: StepOutcome::Skipped,
            exit: None,
            duration: 0.0,
            at: self.at(),
            reason: Some(why.to_owned()),
            stdout: None,
            stderr: None,
            waited: None,
        });
    }

    /// Emits `PhaseOverrun` the moment the window closes, unless aborted first.
    fn watch_window(&self, phase: usize, name: &str, end: Duration) -> tokio::task::AbortHandle {
        let out = self.out.clone();
        let name = name.to_owned();
        let now = self.elapsed();
        let offset = self.settings.elapsed_offset();
        let clock = self.clock;
        let task = tokio::spawn(async move {
            if end > now {
                tokio::time::sleep(end - now).await;
            }
            out.emit(Event::PhaseOverrun {
                phase,
                name,
                window_end: end.as_secs_f64(),
                at: (offset + clock.elapsed()).as_secs_f64(),
            });
        });
        task.abort_handle()
    }

    /// The abort handler: show the procedure (the abort channel is told by the failure post
    /// at the end of the run).
    async fn abort(&self, s: &crate::plan::Step, reason: &str) {
        self.out.emit(Event::AbortProcedure {
            step: s.number,
            reason: reason.to_owned(),
            step_message: s.abort_message.clone(),
            message: self.plan.abort.message.clone(),
        });
    }
}

/// What a channel is told of the abort procedure: its first paragraph, then where the rest
/// is. A second operator reading the channel learns what is being done without the whole
/// procedure in the post.
pub(crate) fn first_paragraph(procedure: &str) -> String {
    let text = procedure.trim();
    if text.is_empty() {
        return "Off the timeline: see the binder for the abort procedure.".to_owned();
    }
    let mut paragraphs = text.split("\n\n").map(str::trim).filter(|p| !p.is_empty());
    let first = paragraphs.next().unwrap_or(text);
    if paragraphs.next().is_some() {
        format!("{first}\n(the rest of the procedure: see the binder)")
    } else {
        format!("{first}\n(see the binder)")
    }
}

/// The first 8 characters of a boot id, enough to tell two apart in a line.
pub(crate) fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

pub(crate) fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Json;

    /// A `Write` whose bytes the test reads back after the sink is gone.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn finished(stdout: &str, reason: &str) -> Event {
        Event::StepFinished {
            step: 3,
            phase: 1,
            name: "token check".into(),
            outcome: StepOutcome::Failed,
            exit: Some(1),
            duration: 0.5,
            at: 1.0,
            reason: Some(reason.into()),
            stdout: Some(stdout.into()),
            stderr: None,
            waited: None,
        }
    }

    /// Emit through a journal file and a `--json` sink; return both outputs.
    fn emit_all(secrets: &[(&str, &str)], events: Vec<Event>) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs/j.jsonl");
        let json = Shared::default();
        let sinks: Vec<Box<dyn Sink>> = vec![
            Box::new(crate::journal::Journal::open(&path).unwrap()),
            Box::new(Json::new(json.clone())),
        ];
        let secrets = Secrets {
            values: secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            missing: vec![],
            ..Secrets::default()
        };
        let out = Emitter::new(Box::new(event::Fanout(sinks)), secrets);
        for e in events {
            out.emit(e);
        }
        drop(out);
        let journal = std::fs::read_to_string(&path).unwrap();
        let json = String::from_utf8(json.0.lock().unwrap().clone()).unwrap();
        (journal, json)
    }

    /// Every string leaf of every JSON line, parsed back.
    fn strings(lines: &str) -> Vec<String> {
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::String(s) => out.push(s.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                serde_json::Value::Object(m) => m.values().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        for l in lines.lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            walk(&v, &mut out);
        }
        out
    }

    #[test]
    fn a_secret_in_nested_output_is_redacted_in_the_journal_and_json() {
        let stdout = "HTTP/1.1 401\n{\"error\": {\"detail\": \"token tok-9f8e7d rejected\"}}\nbye";
        let (journal, json) = emit_all(
            &[("API_TOKEN", "tok-9f8e7d")],
            vec![
                finished(stdout, "401 for tok-9f8e7d"),
                Event::Warning {
                    step: Some(3),
                    message: "retrying with tok-9f8e7d".into(),
                },
            ],
        );
        for (name, text) in [("journal", &journal), ("json", &json)] {
            assert!(!text.contains("tok-9f8e7d"), "{name} leaked:\n{text}");
            let s = strings(text);
            assert!(
                s.iter().any(|s| s.contains("\"token *** rejected\"")),
                "{name}: the output around the secret stays:\n{text}"
            );
            assert!(s.iter().any(|s| s == "401 for ***"), "{name}:\n{text}");
            assert!(
                s.iter().any(|s| s == "retrying with ***"),
                "{name}:\n{text}"
            );
        }
    }

    #[test]
    fn a_secret_with_json_special_characters_is_redacted() {
        let secret = r#"p"a\ss'w{o}rd"#;
        let escaped = r#"p\"a\\ss'w{o}rd"#;
        // The raw value in a reason, and its JSON-escaped form inside a body a step printed.
        let stdout = format!("{{\"password\": \"{escaped}\"}}");
        let (journal, json) = emit_all(
            &[("DB_PASSWORD", secret)],
            vec![finished(&stdout, &format!("login as {secret} failed"))],
        );
        for (name, text) in [("journal", &journal), ("json", &json)] {
            let s = strings(text);
            assert!(
                s.iter()
                    .all(|s| !s.contains(secret) && !s.contains(escaped)),
                "{name} leaked:\n{text}"
            );
            assert!(!text.contains("ss'w{o}rd"), "{name} leaked:\n{text}");
            assert!(
                s.iter().any(|s| s == "login as *** failed"),
                "{name}:\n{text}"
            );
            assert!(
                s.iter().any(|s| s == "{\"password\": \"***\"}"),
                "{name}:\n{text}"
            );
        }
    }

    #[test]
    fn without_secrets_events_pass_unchanged() {
        let (journal, _) = emit_all(&[], vec![finished("plain output", "why")]);
        assert!(strings(&journal).iter().any(|s| s == "plain output"));
    }
}
