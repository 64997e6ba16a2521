//! The words both renderers show, worked out once: headline facts, the phase and step rows with
//! their comparisons, the events in order.

use super::history::versus;
use super::model::{Incident, MarkKind, Step};
use super::{Report, TimeSplit};
use crate::engine::event::{RunOutcome, StepOutcome};
use crate::report::{clock, duration};

/// `(label, value)` lines for the top of the page.
pub fn facts(r: &Report) -> Vec<(&'static str, String)> {
    let inc = &r.incident;
    let last = inc.last();
    let first = inc.first();
    let mut f = vec![
        ("journal", r.journal.display().to_string()),
        (
            "runbook",
            format!("{} (sha256 {})", last.path, short_sha(&last.sha256)),
        ),
        ("kind", last.kind_word()),
    ];
    if let Some(d) = first.date {
        f.push(("started", d.format("%Y-%m-%d %H:%M:%S UTC").to_string()));
    }
    if !last.targets.is_empty() {
        f.push(("targets", last.targets.join(", ")));
    }
    let runs: Vec<String> = inc.segments.iter().map(|s| s.run_id.clone()).collect();
    f.push((
        if runs.len() > 1 { "runs" } else { "run" },
        runs.join(", then resumed as "),
    ));
    if let Some(id) = &first.resumed_from {
        f.push((
            "resumed from",
            format!("run {id} (its journal was not found)"),
        ));
    }
    f.push(("result", result_line(inc)));
    f.push(("total", total_line(inc)));
    if let Some(cmd) = last.end.as_ref().and_then(|e| e.resume.as_ref()) {
        f.push(("resume with", cmd.clone()));
    }
    f
}

pub fn short_sha(sha: &str) -> String {
    sha.get(..12)
        .map(|s| format!("{s}…"))
        .unwrap_or_else(|| sha.to_owned())
}

fn result_line(inc: &Incident) -> String {
    let last = inc.last();
    match &last.end {
        None => "unfinished: the journal stops before the run's end".into(),
        Some(e) => {
            let word = match e.outcome {
                RunOutcome::Success => "success",
                RunOutcome::Failed => "FAILED",
                RunOutcome::Aborted => "ABORTED",
                RunOutcome::Interrupted => "interrupted",
            };
            let step = e
                .failed_step
                .and_then(|n| inc.steps().into_iter().find(|s| s.number == n))
                .map(|s| format!(" at step {} ({})", s.number, s.name))
                .unwrap_or_default();
            format!("{word}{step}: {}", e.message)
        }
    }
}

fn total_line(inc: &Incident) -> String {
    let at = inc.end_at();
    let budget = inc.budget();
    let mut s = if budget > 0.0 {
        let left = budget - at;
        if left < 0.0 {
            format!(
                "{} of the {} budget, over by {}",
                duration(at),
                crate::report::span(budget),
                duration(-left)
            )
        } else {
            format!(
                "{} of the {} budget ({} left)",
                duration(at),
                crate::report::span(budget),
                duration(left)
            )
        }
    } else {
        duration(at)
    };
    if inc.segments.len() > 1 {
        s.push_str(&format!(
            " on the run's clock, over {} runs (the time between them is not counted)",
            inc.segments.len()
        ));
    }
    s
}

pub struct PhaseRow {
    pub number: usize,
    pub name: String,
    pub window: String,
    pub actual: String,
    pub took: String,
    pub result: String,
    pub overran: bool,
    pub compared: Vec<String>,
}

pub fn phase_rows(r: &Report) -> Vec<PhaseRow> {
    let inc = &r.incident;
    let phases = inc.phases();
    let end = inc.end_at();
    let mut seen: Vec<String> = Vec::new();
    phases
        .iter()
        .map(|p| {
            let nth = seen.iter().filter(|n| **n == p.name).count();
            seen.push(p.name.clone());
            let ended = p.ended.unwrap_or(end);
            let took = ended - p.started;
            let result = match p.result {
                Some(o) => phase_word(o, p.overran),
                None if p.overran => "unfinished, OVERRAN".into(),
                None => "unfinished".into(),
            };
            PhaseRow {
                number: p.number,
                name: p.name.clone(),
                window: crate::report::window(p.window_start, p.window_end),
                actual: format!("{}-{}", clock(p.started), clock(ended)),
                took: duration(took),
                result,
                overran: p.overran,
                compared: p
                    .ended
                    .map(|_| {
                        r.baselines
                            .iter()
                            .filter_map(|b| Some(versus(took, b.phase(&p.name, nth)?, &b.label)))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

fn phase_word(o: StepOutcome, overran: bool) -> String {
    let w = match o {
        StepOutcome::Passed | StepOutcome::WouldRun => "ok",
        StepOutcome::FailedContinued => "ok, with failures",
        StepOutcome::Failed => "FAILED",
        StepOutcome::Aborted => "ABORTED",
        StepOutcome::Interrupted => "interrupted",
        StepOutcome::Skipped => "skipped",
    };
    if overran {
        format!("{w}, OVERRAN")
    } else {
        w.into()
    }
}

pub struct StepRow {
    pub number: usize,
    pub name: String,
    pub started: String,
    pub took: String,
    pub result: String,
    pub outcome: Option<StepOutcome>,
    pub probes: String,
    pub reason: String,
    pub compared: Vec<String>,
}

pub fn step_rows(r: &Report) -> Vec<StepRow> {
    let steps = r.incident.steps();
    let mut seen: Vec<&str> = Vec::new();
    steps
        .iter()
        .map(|s| {
            let nth = seen.iter().filter(|n| **n == s.name).count();
            seen.push(&s.name);
            StepRow {
                number: s.number,
                name: s.name.clone(),
                started: s.started.map(clock).unwrap_or_default(),
                took: match (s.duration, s.ran()) {
                    (Some(d), true) => duration(d),
                    _ => String::new(),
                },
                result: step_word(s),
                outcome: s.outcome,
                probes: probes(s),
                reason: s.reason.clone().unwrap_or_default(),
                compared: match (s.duration, s.ran()) {
                    (Some(d), true) => r
                        .baselines
                        .iter()
                        .filter_map(|b| Some(versus(d, b.step(&s.name, nth)?, &b.label)))
                        .collect(),
                    _ => Vec::new(),
                },
            }
        })
        .collect()
}

fn step_word(s: &Step) -> String {
    match s.outcome {
        None => "still running when the journal stops".into(),
        Some(StepOutcome::Skipped) => "skipped".into(),
        Some(o) => o.word().into(),
    }
}

fn probes(s: &Step) -> String {
    if s.probes.is_empty() {
        return String::new();
    }
    let passed = s.probes.iter().filter(|p| p.passed).count();
    let failed = s.probes.len() - passed;
    format!("{} ({passed} passed, {failed} failed)", s.probes.len())
}

/// `(at, text, important)`: what happened besides the steps, in order.
pub fn events(r: &Report) -> Vec<(f64, String, bool)> {
    let mut out: Vec<(f64, String, bool)> = r
        .incident
        .marks()
        .into_iter()
        .map(|m| {
            let on = m.step.map(|n| format!(" (step {n})")).unwrap_or_default();
            let (text, important) = match &m.what {
                MarkKind::ConnectionLost { target, error } => {
                    (format!("connection to {target} lost: {error}"), true)
                }
                MarkKind::Reconnected { target } => (format!("reconnected to {target}"), false),
                MarkKind::BootIdChanged { target, old, new } => (
                    format!(
                        "{target} REBOOTED: boot id {} is now {}",
                        short_sha(old),
                        short_sha(new)
                    ),
                    true,
                ),
                MarkKind::Remedy { action, detail } => (
                    format!(
                        "remedy{on}: {action}{}",
                        detail
                            .as_ref()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    ),
                    true,
                ),
                MarkKind::Warning { message } => (format!("warning{on}: {message}"), false),
                MarkKind::Notified { channel, ok, error } => (
                    match (ok, error) {
                        (true, _) => format!("posted to {channel}"),
                        (false, Some(e)) => format!("post to {channel} FAILED: {e}"),
                        (false, None) => format!("post to {channel} FAILED"),
                    },
                    !ok,
                ),
                MarkKind::AbortProcedure { reason } => {
                    (format!("abort procedure{on}: {reason}"), true)
                }
            };
            (m.at, text, important)
        })
        .collect();
    for (at, id) in r.incident.resumes() {
        out.push((at, format!("resumed (run {id} left off here)"), true));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The time split as rows: name, duration, share.
pub fn time_rows(t: &TimeSplit) -> Vec<(&'static str, String, String)> {
    t.parts()
        .iter()
        .map(|(n, s)| (*n, duration(*s), t.percent(*s)))
        .collect()
}
