//! The failure post: every end of a run that is not a success is posted once, at the end of
//! the run, to the channels marked `failures: true` (else to the abort channel).
//!
//! The ends: a failed step that stops the run, an abort, an interruption (SIGINT, SIGTERM,
//! SIGHUP), and an unattended run that skipped a manual step nobody confirmed (even when the
//! rest went well). The post names the box, the step (number and name), the reason, the last
//! lines of the step's output (redacted, cleaned, bounded), which units the run started are
//! active (the box is asked, within a bound; "unknown" when it does not answer), how long the
//! run took, whether it was unattended and who started it, and the exact resume command.
//!
//! It is retried like a status post, but the run's cancellation does not stop it: after a
//! signal it still goes out, within [`ON_SIGNAL`] in all, so the exit is never held long.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::gate::UnitState;
use super::http::NOTIFY_ATTEMPTS;
use super::{Engine, Event, Mode, RunOutcome, StepOutcome, StepResult};
use crate::plan::{Action, ChannelSpec, Kind, Step, fmt_duration};
use crate::runbook::model::Format;

/// All the failure post may take (asking the box, then posting), normally.
pub const WITHIN: Duration = crate::plan::DEFAULT_NOTIFY_TIMEOUT;
/// ... and after a signal, when the process is being stopped.
pub const ON_SIGNAL: Duration = Duration::from_secs(5);
/// Of that time, what asking the box which units are active may take.
const UNITS_WITHIN: Duration = Duration::from_secs(10);
const UNITS_ON_SIGNAL: Duration = Duration::from_secs(2);
/// One HTTP attempt at most.
const ATTEMPT: Duration = Duration::from_secs(10);

/// The last lines of the step's output the post carries, at most, and each line's length.
pub const OUTPUT_LINES: usize = 12;
pub const LINE_CHARS: usize = 200;
/// The reason, at most.
const REASON_CHARS: usize = 600;

/// What the engine keeps for the failure post while it runs.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// The last step that failed, aborted or was interrupted (what it said).
    ended: Option<Ended>,
    /// Manual steps an unattended run skipped: nobody confirmed them.
    unconfirmed: Vec<Unconfirmed>,
    /// The highest step this run ran (whatever came of it): the units of later `start`
    /// steps were not started.
    reached: usize,
    /// The latest output lines of the running command, as they arrived: what an interrupted
    /// step said, since its output is not kept when it is stopped.
    seen: Seen,
}

/// The step, and its latest [`OUTPUT_LINES`] progress lines (each the last line of a chunk
/// the command wrote).
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen(Arc<Mutex<(usize, VecDeque<String>)>>);

impl Seen {
    pub(crate) fn push(&self, line: &str) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.1.len() == OUTPUT_LINES {
            g.1.pop_front();
        }
        // Whole: redaction comes later, and a cut line could keep a part of a secret.
        g.1.push_back(line.to_owned());
    }

    /// The lines, when they are `step`'s.
    fn of(&self, step: usize) -> Option<String> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (g.0 == step && !g.1.is_empty()).then(|| g.1.iter().cloned().collect::<Vec<_>>().join("\n"))
    }
}

#[derive(Debug, Clone)]
struct Ended {
    step: usize,
    reason: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
}

#[derive(Debug, Clone)]
struct Unconfirmed {
    step: usize,
    name: String,
    text: String,
}

impl Record {
    /// A step ended: kept when it ended the run's way (failed, aborted, interrupted).
    pub(crate) fn step_ended(&mut self, step: usize, res: &StepResult) {
        self.reached = self.reached.max(step);
        if matches!(
            res.outcome,
            StepOutcome::Failed | StepOutcome::Aborted | StepOutcome::Interrupted
        ) {
            self.ended = Some(Ended {
                step,
                reason: res.reason.clone(),
                // Whole (at most the target's capture bound): redacted before it is cut, so
                // no cut leaves part of a secret.
                stdout: res.stdout.clone(),
                stderr: res.stderr.clone(),
            });
        }
    }

    /// Where `step`'s command output goes as it arrives (the lines of an earlier step are
    /// dropped).
    pub(crate) fn seen(&self, step: usize) -> Seen {
        let mut g = self.seen.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 != step {
            *g = (step, VecDeque::new());
        }
        self.seen.clone()
    }

    /// An unattended run skipped this manual step (`unattended: skip`): nobody confirmed it.
    pub(crate) fn unconfirmed(&mut self, s: &Step, text: &str) {
        self.unconfirmed.push(Unconfirmed {
            step: s.number,
            name: s.name.clone(),
            text: text.trim().to_owned(),
        });
    }
}

/// A unit the run started (or would have), and what the box says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitNow {
    Active,
    /// Not active: `ActiveState` (and `Result` when it is not `success`).
    NotActive(String),
    /// The box did not answer: why.
    Unknown(String),
    /// The run stopped before its step.
    NotReached,
}

/// Everything the post says, gathered; [`compose`] words it.
#[derive(Debug, Clone)]
pub struct Facts {
    pub word: &'static str,
    pub title: String,
    /// `spark (ops@spark.local)`.
    pub target: String,
    /// `(number, name)` of the step the run stopped at; `None` for an end after the steps.
    pub step: Option<(usize, String)>,
    /// Whether that step itself ended the run (failed, aborted, was stopped), rather than the
    /// run ending there (the end check found its unit unhealthy, the box rebooted too often,
    /// a signal between two steps).
    pub stopped: bool,
    pub reason: String,
    /// For an abort: the step's `abort_message` and the procedure's first paragraph.
    pub abort: Option<(Option<String>, String)>,
    /// The step's output, redacted (cleaned and bounded by [`compose`]).
    pub stdout: String,
    pub stderr: String,
    pub unconfirmed: Vec<(usize, String, String)>,
    pub units: Vec<(String, UnitNow)>,
    pub elapsed: Duration,
    pub budget: Duration,
    /// The provenance line: unattended or not, and who started the run.
    pub started: String,
    /// The command that continues the run, `None` when there is nothing to continue.
    pub resume: Option<String>,
}

impl Engine<'_> {
    /// The failure post of this run, if it ended other than in success (or skipped a manual
    /// step nobody confirmed): built, and posted once to each failure channel, bounded. The one
    /// call is at the end of [`Engine::run`], before `run_finished`.
    pub(crate) async fn post_failure(
        &self,
        outcome: RunOutcome,
        failed_step: Option<usize>,
        message: &str,
    ) {
        if self.settings.mode != Mode::Run
            || (outcome == RunOutcome::Success && self.failure.unconfirmed.is_empty())
        {
            return;
        }
        let channels = failure_channels(self.plan);
        if channels.is_empty() {
            return;
        }
        let signal = self.settings.stop.get().is_some();
        let started = Instant::now();
        let within = if signal { ON_SIGNAL } else { WITHIN };
        let facts = self
            .facts(
                outcome,
                failed_step,
                message,
                if signal {
                    UNITS_ON_SIGNAL
                } else {
                    UNITS_WITHIN
                },
            )
            .await;
        let left = within.saturating_sub(started.elapsed());
        for ch in channels {
            let text = fit(&facts, ch.format);
            let text = self.plan.secrets.redact(&text);
            self.post_bounded(ch, &text, left / channels_count(self.plan) as u32)
                .await;
        }
    }

    async fn facts(
        &self,
        outcome: RunOutcome,
        failed_step: Option<usize>,
        message: &str,
        units_within: Duration,
    ) -> Facts {
        let plan = self.plan;
        let secrets = &plan.secrets;
        let step = failed_step.and_then(|n| step_of(plan, n));
        let ended = self
            .failure
            .ended
            .as_ref()
            .filter(|e| Some(e.step) == failed_step);
        let stop = self.settings.stop.get();
        let word = match outcome {
            RunOutcome::Failed => "FAILED",
            RunOutcome::Aborted => "ABORT",
            RunOutcome::Interrupted => "INTERRUPTED",
            RunOutcome::Success => "NOT CONFIRMED",
        };
        let reason = match (outcome, ended.and_then(|e| e.reason.clone())) {
            (RunOutcome::Success, _) => String::new(),
            (RunOutcome::Interrupted, r) => stop
                .map(|s| s.step_reason().to_owned())
                .or(r)
                .unwrap_or_else(|| "interrupted".into()),
            (_, Some(r)) => r,
            (_, None) => message.to_owned(),
        };
        let target_index = step.map_or(0, |s| s.target);
        let target = plan
            .targets
            .get(target_index)
            .map(|t| format!("{} ({})", t.name, t.destination()))
            .unwrap_or_else(|| "?".into());
        let abort = (outcome == RunOutcome::Aborted).then(|| {
            let elapsed = fmt_duration(Duration::from_secs(self.elapsed().as_secs()));
            (
                step.and_then(|s| s.abort_message.clone()),
                super::first_paragraph(&plan.abort.message.replace("{{ run.elapsed }}", &elapsed)),
            )
        });
        let resume = match outcome {
            RunOutcome::Success => None,
            _ => Some(self.settings.resume_command.clone()),
        };
        Facts {
            word,
            title: plan.title.clone(),
            target,
            step: step.map(|s| (s.number, s.name.clone())),
            stopped: ended.is_some(),
            reason: secrets.redact(&reason),
            abort,
            stdout: secrets.redact(
                &ended
                    .and_then(|e| e.stdout.clone())
                    // A command's own lines; a gate's are its polls of `systemctl show`.
                    .or_else(|| {
                        step.filter(|s| matches!(s.action, Action::Run(_) | Action::Local(_)))
                            .and_then(|s| self.failure.seen.of(s.number))
                    })
                    .unwrap_or_default(),
            ),
            stderr: secrets.redact(ended.and_then(|e| e.stderr.as_deref()).unwrap_or("")),
            unconfirmed: self
                .failure
                .unconfirmed
                .iter()
                .map(|u| (u.step, u.name.clone(), secrets.redact(&u.text)))
                .collect(),
            units: self.units_now(step, units_within).await,
            elapsed: Duration::from_secs(self.elapsed().as_secs()),
            budget: plan.budget,
            started: self
                .provenance()
                .unwrap_or_else(|| "(attended run, started by hand)".to_owned()),
            resume,
        }
    }

    /// Each unit of a `start` step up to the furthest step the run ran, as the box reports it
    /// now, asked within `within`; the units after it are "not started".
    async fn units_now(
        &self,
        stopped_at: Option<&Step>,
        within: Duration,
    ) -> Vec<(String, UnitNow)> {
        // Earlier runs (`--resume`, `--from`) did the steps before this run's first.
        let reached = self
            .failure
            .reached
            .max(self.settings.first_step.saturating_sub(1));
        // Every unit up to the furthest step this run ran (after a reboot under the run, the
        // ones started on the old boot too): the box says which are active.
        let upto = reached;
        let deadline = Instant::now() + within;
        // The box did not answer SSH at all: asking it again would only spend the time.
        let unreachable = stopped_at.is_some_and(|s| {
            s.action.kind() == Kind::WaitSsh
                && self
                    .failure
                    .ended
                    .as_ref()
                    .is_some_and(|e| e.step == s.number)
        });
        // Nobody cancels these questions but the deadline (the run's own cancel may be set).
        let (_keep, never) = watch::channel(false);
        let mut out = Vec::new();
        for s in self.plan.phases.iter().flat_map(|p| &p.steps) {
            let Action::Start { unit, status, .. } = &s.action else {
                continue;
            };
            if s.number > upto {
                out.push((unit.clone(), UnitNow::NotReached));
                continue;
            }
            if unreachable {
                out.push((
                    unit.clone(),
                    UnitNow::Unknown("the box did not answer SSH".into()),
                ));
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(t) = self.targets.get(s.target) else {
                out.push((unit.clone(), UnitNow::Unknown("no such target".into())));
                continue;
            };
            if left.is_zero() {
                out.push((unit.clone(), UnitNow::Unknown("no time left to ask".into())));
                continue;
            }
            let mut cancel = never.clone();
            let asked = tokio::time::timeout(
                left,
                t.exec(
                    &status.wire,
                    status.stdin.as_deref(),
                    status.kill.as_deref(),
                    left,
                    &mut cancel,
                    &mut |_| {},
                ),
            )
            .await;
            let now = match asked {
                Ok(Ok(f)) if f.output.exit == Some(0) => {
                    let state = UnitState::parse(&f.output.stdout);
                    if state.active == "active" {
                        UnitNow::Active
                    } else if state.active.is_empty() {
                        UnitNow::Unknown("systemctl show said nothing".into())
                    } else if state.result.is_empty() || state.result == "success" {
                        UnitNow::NotActive(state.active)
                    } else {
                        UnitNow::NotActive(format!("{}, {}", state.active, state.result))
                    }
                }
                Ok(Ok(f)) => UnitNow::Unknown(format!(
                    "systemctl show failed (exit {})",
                    f.output
                        .exit
                        .map_or_else(|| "none".to_owned(), |c| c.to_string())
                )),
                Ok(Err(e)) => UnitNow::Unknown(super::first_line(&e.to_string())),
                Err(_) => UnitNow::Unknown(format!(
                    "no answer within {}",
                    fmt_duration(Duration::from_secs(within.as_secs().max(1)))
                )),
            };
            out.push((unit.clone(), now));
        }
        self.drain_notes();
        out
    }

    /// POST `text` to `ch`, retried like a status post (attempts, then pauses of 1 s, 2 s),
    /// all within `within`; the run's cancellation does not stop it. Says what came of it.
    async fn post_bounded(&self, ch: &ChannelSpec, text: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut last = None;
        let mut attempts = 0;
        let missing = self
            .plan
            .secrets
            .missing
            .iter()
            .find(|n| ch.url.contains(&crate::secrets::placeholder(n)));
        if let Some(name) = missing {
            last = Some(format!("not sent: {name} is not set"));
        } else {
            let req = ch.post(&self.plan.name, text, ATTEMPT);
            for attempt in 1..=NOTIFY_ATTEMPTS {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                attempts = attempt;
                let mut rb = self
                    .http
                    .post(&req.url)
                    .timeout(left.min(ATTEMPT))
                    .body(req.body.clone().unwrap_or_default());
                for (k, v) in &req.headers {
                    rb = rb.header(k, v);
                }
                match rb.send().await {
                    Ok(resp) if resp.status().is_success() => {
                        self.out.emit(Event::Notified {
                            channel: ch.name.clone(),
                            ok: true,
                            attempts: attempt,
                            error: None,
                        });
                        return true;
                    }
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let body = tokio::time::timeout(
                            deadline
                                .saturating_duration_since(Instant::now())
                                .min(Duration::from_secs(2)),
                            resp.text(),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
                        last = Some(format!("HTTP {status}: {}", super::first_line(&body)));
                    }
                    Err(e) if e.is_timeout() => {
                        last = Some(format!(
                            "no answer within {}",
                            fmt_duration(Duration::from_secs(left.min(ATTEMPT).as_secs().max(1)))
                        ));
                    }
                    Err(e) if e.is_connect() => last = Some("cannot connect".to_owned()),
                    Err(e) => last = Some(e.to_string()),
                }
                if attempt < NOTIFY_ATTEMPTS {
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt)).min(left)).await;
                }
            }
        }
        self.out.emit(Event::Notified {
            channel: ch.name.clone(),
            ok: false,
            attempts,
            error: last.clone(),
        });
        self.out.emit(Event::Warning {
            step: None,
            message: format!(
                "could not post the failure post to `{}`: {}. Tell the operators another way.",
                ch.name,
                last.unwrap_or_else(|| "no answer".into())
            ),
        });
        false
    }
}

/// Where the failure post goes: see [`crate::plan::Plan::failure_channels`].
pub fn failure_channels(plan: &crate::plan::Plan) -> Vec<&ChannelSpec> {
    plan.failure_channels()
}

fn channels_count(plan: &crate::plan::Plan) -> usize {
    failure_channels(plan).len().max(1)
}

fn step_of(plan: &crate::plan::Plan, number: usize) -> Option<&Step> {
    plan.phases
        .iter()
        .flat_map(|p| &p.steps)
        .find(|s| s.number == number)
}

/// The most a channel's format carries in one message (Discord: 2000 characters; ntfy: 4096
/// bytes), less room for the rest.
fn limit(format: Format) -> usize {
    match format {
        Format::Discord => 1900,
        Format::Ntfy => 3900,
        Format::Slack | Format::Json => 8000,
    }
}

/// The post for a channel of `format`: fewer output lines until it fits, then cut.
pub fn fit(facts: &Facts, format: Format) -> String {
    let max = limit(format);
    for lines in (0..=OUTPUT_LINES).rev() {
        let text = compose(facts, lines);
        if text.len() <= max {
            return text;
        }
    }
    let text = compose(facts, 0);
    let mut cut = max.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

use crate::text::one_line;

/// At most `n` characters of one cleaned line, `…` where it was cut.
fn bounded(line: &str, n: usize) -> String {
    let line = one_line(line);
    match line.char_indices().nth(n) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// The last `n` non-empty lines of `text`, cleaned and bounded.
fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !one_line(l).is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| bounded(l, LINE_CHARS))
        .collect()
}

/// The post's words, with at most `output_lines` lines of the step's output.
pub fn compose(f: &Facts, output_lines: usize) -> String {
    let mut out = Vec::new();
    let took = format!(
        "after {} of the {} budget",
        fmt_duration(f.elapsed),
        fmt_duration(f.budget)
    );
    let title = bounded(&f.title, LINE_CHARS);
    match (&f.step, f.word) {
        (_, "NOT CONFIRMED") => out.push(format!(
            "NOT CONFIRMED: {title} finished {took}, on {}, but nobody confirmed {} (unattended run, `unattended: skip`).",
            f.target,
            f.unconfirmed
                .iter()
                .map(|(n, name, _)| format!("step {n} ({})", bounded(name, 80)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (Some((n, name)), word) if f.stopped => out.push(format!(
            "{word}: {title} stopped at step {n} ({}) {took}, on {}.",
            bounded(name, 120),
            f.target
        )),
        (Some((n, name)), word) => out.push(format!(
            "{word}: {title} ended {took}, on {}, at step {n} ({}).",
            f.target,
            bounded(name, 120)
        )),
        (None, word) => out.push(format!("{word}: {title} ended {took}, on {}.", f.target)),
    }
    if !f.reason.trim().is_empty() {
        out.push(format!(
            "Reason: {}",
            bounded(
                &f.reason.lines().collect::<Vec<_>>().join(" "),
                REASON_CHARS
            )
        ));
    }
    if let Some((step_message, procedure)) = &f.abort {
        if let Some(m) = step_message {
            out.push(m.trim().to_owned());
        }
        out.push(format!(
            "The abort procedure is being followed:\n{}",
            procedure.trim()
        ));
    }
    if let Some((n, _)) = &f.step
        && f.word != "NOT CONFIRMED"
        && (f.stopped || !f.stdout.trim().is_empty())
    {
        let mut lines = last_lines(&f.stdout, output_lines);
        let err = last_lines(&f.stderr, output_lines.div_ceil(2));
        if !err.is_empty() && output_lines > 0 {
            lines.push("(stderr:)".to_owned());
            lines.extend(err);
        }
        if output_lines > 0 {
            if lines.is_empty() {
                out.push(format!("Output of step {n}: none."));
            } else {
                out.push(format!(
                    "Last output of step {n}:\n{}",
                    lines
                        .iter()
                        .map(|l| format!("> {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
        }
    }
    for (n, name, text) in &f.unconfirmed {
        out.push(format!(
            "Not confirmed by anyone: step {n} ({}). Check by hand: {}",
            bounded(name, 120),
            bounded(text, REASON_CHARS)
        ));
    }
    out.push(units_line(&f.units));
    match &f.resume {
        Some(cmd) if f.word == "ABORT" => out.push(format!(
            "Once the abort procedure is done, to continue from this step: {cmd}"
        )),
        Some(cmd) => out.push(format!(
            "Fix the cause, then continue from this step: {cmd}"
        )),
        None => {
            out.push("Nothing to resume: the run finished. Check the steps above by hand.".into())
        }
    }
    out.push(f.started.clone());
    out.join("\n")
}

/// `Units: active: a, b; NOT active: c (failed, start-limit-hit); unknown: d (why); not
/// reached: e`.
fn units_line(units: &[(String, UnitNow)]) -> String {
    if units.is_empty() {
        return "Units: none (the runbook starts no units).".to_owned();
    }
    let mut active = Vec::new();
    let mut not_active = Vec::new();
    let mut unknown = Vec::new();
    let mut not_reached = Vec::new();
    for (u, now) in units {
        match now {
            UnitNow::Active => active.push(u.clone()),
            UnitNow::NotActive(s) => not_active.push(format!("{u} ({})", bounded(s, 60))),
            UnitNow::Unknown(why) => unknown.push(format!("{u} ({})", bounded(why, 80))),
            UnitNow::NotReached => not_reached.push(u.clone()),
        }
    }
    let mut parts = Vec::new();
    for (label, list) in [
        ("active", active),
        ("NOT active", not_active),
        ("unknown", unknown),
        ("not started (the run stopped before them)", not_reached),
    ] {
        if !list.is_empty() {
            parts.push(format!("{label}: {}", list.join(", ")));
        }
    }
    format!("Units: {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            word: "FAILED",
            title: "Power failure recovery".into(),
            target: "spark (ops@spark.local)".into(),
            step: Some((12, "start dispatcher.service".into())),
            stopped: true,
            reason: "dispatcher.service: the unit failed (state failed, result start-limit-hit)"
                .into(),
            abort: None,
            stdout: "last journal lines of dispatcher.service:\nline one\nline two\n".into(),
            stderr: String::new(),
            unconfirmed: vec![],
            units: vec![
                ("a.service".into(), UnitNow::Active),
                (
                    "dispatcher.service".into(),
                    UnitNow::NotActive("failed, start-limit-hit".into()),
                ),
                ("caddy.service".into(), UnitNow::NotReached),
            ],
            elapsed: Duration::from_secs(125),
            budget: Duration::from_secs(1800),
            started: "(unattended run, started by upsmon)".into(),
            resume: Some("recover run spark.yaml --resume".into()),
        }
    }

    #[test]
    fn a_failed_step_post_names_everything() {
        let text = compose(&facts(), OUTPUT_LINES);
        assert_eq!(
            text,
            "FAILED: Power failure recovery stopped at step 12 (start dispatcher.service) after 2m5s of the 30m budget, on spark (ops@spark.local).\n\
             Reason: dispatcher.service: the unit failed (state failed, result start-limit-hit)\n\
             Last output of step 12:\n\
             > last journal lines of dispatcher.service:\n\
             > line one\n\
             > line two\n\
             Units: active: a.service; NOT active: dispatcher.service (failed, start-limit-hit); not started (the run stopped before them): caddy.service\n\
             Fix the cause, then continue from this step: recover run spark.yaml --resume\n\
             (unattended run, started by upsmon)"
        );
    }

    #[test]
    fn hostile_output_is_cleaned_and_bounded_and_fits_discord() {
        let mut f = facts();
        let long = "x".repeat(10_000);
        f.stdout = format!(
            "\x1b[31mred\x1b[0m a'b\"c$d\\e\r\n\u{7}bell\n{long}\n{}",
            "é".repeat(5000)
        );
        f.stderr = (0..1000).map(|i| format!("err {i}\n")).collect();
        f.reason = format!("{long}\nsecond");
        for format in [Format::Discord, Format::Ntfy, Format::Slack, Format::Json] {
            let text = fit(&f, format);
            assert!(
                text.len() <= limit(format) + 4,
                "{format:?}: {}",
                text.len()
            );
            assert!(!text.contains('\x1b') && !text.contains('\u{7}') && !text.contains('\r'));
            assert!(
                text.contains(
                    "Fix the cause, then continue from this step: recover run spark.yaml --resume"
                ),
                "{format:?}: {text}"
            );
            assert!(
                text.ends_with("(unattended run, started by upsmon)"),
                "{text}"
            );
        }
        let text = compose(&f, OUTPUT_LINES);
        assert!(text.contains("> err 999"), "{text}");
        assert!(!text.contains("> err 993\n"), "{text}");
        for l in text.lines() {
            assert!(l.chars().count() <= REASON_CHARS + 20, "{l}");
        }
    }

    #[test]
    fn no_output_says_so_and_no_units_says_so() {
        let mut f = facts();
        f.stdout.clear();
        f.units.clear();
        let text = compose(&f, OUTPUT_LINES);
        assert!(text.contains("\nOutput of step 12: none.\n"), "{text}");
        assert!(
            text.contains("\nUnits: none (the runbook starts no units).\n"),
            "{text}"
        );
    }
}
