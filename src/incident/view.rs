//! The words both renderers show, worked out once: headline facts, the phase and step rows with
//! their comparisons, the events in order.

use super::history::{versus, versus_short};
use super::model::{Incident, MarkKind, Step};
use super::{Report, TimeSplit};
use crate::duration::{clock, duration};
use crate::engine::event::{RunOutcome, StepOutcome};

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
    if let Some(s) = last
        .end
        .as_ref()
        .and_then(|e| e.failed_step)
        .and_then(|n| inc.steps().into_iter().find(|s| s.number == n))
    {
        f.push(("stopped at", format!("step {} ({})", s.number, s.name)));
    }
    let steps = inc.steps();
    let ran = steps.iter().filter(|s| s.ran()).count();
    let total = last.steps_total.max(steps.len());
    let unseen = total - steps.len();
    f.push((
        "steps",
        if unseen > 0 {
            format!("{ran} of {total} ran; {unseen} not reached")
        } else {
            format!("{ran} of {total} ran")
        },
    ));
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
            format!("{word}: {}", e.message)
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
                crate::duration::span(budget),
                duration(-left)
            )
        } else {
            format!(
                "{} of the {} budget ({} left)",
                duration(at),
                crate::duration::span(budget),
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
    pub compared: Compared,
}

pub fn phase_rows(r: &Report) -> Vec<PhaseRow> {
    let inc = &r.incident;
    let phases = inc.phases();
    let end = inc.end_at();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let last_seen = phases.iter().map(|p| p.number).max().unwrap_or(0);
    let not_reached = (last_seen + 1..=inc.last().phases_total).map(|n| PhaseRow {
        number: n,
        name: "(not reached)".into(),
        window: String::new(),
        actual: String::new(),
        took: String::new(),
        result: String::new(),
        overran: false,
        compared: Compared::default(),
    });
    phases
        .iter()
        .map(|p| {
            let nth = seen.get(&p.name).copied().unwrap_or(0);
            *seen.entry(p.name.clone()).or_insert(0) += 1;
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
                window: crate::duration::window(p.window_start, p.window_end),
                actual: format!("{}-{}", clock(p.started), clock(ended)),
                took: duration(took),
                result,
                overran: p.overran,
                compared: Compared {
                    took: p
                        .result
                        .filter(|o| !matches!(o, StepOutcome::Interrupted | StepOutcome::Skipped))
                        .map(|_| took),
                    bases: r.baselines.iter().map(|b| b.phase(&p.name, nth)).collect(),
                },
            }
        })
        .chain(not_reached)
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
    pub compared: Compared,
}

pub fn step_rows(r: &Report) -> Vec<StepRow> {
    let steps = r.incident.steps();
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    steps
        .iter()
        .map(|s| {
            let nth = seen.get(s.name.as_str()).copied().unwrap_or(0);
            *seen.entry(&s.name).or_insert(0) += 1;
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
                compared: Compared {
                    took: s.duration.filter(|_| s.ran()),
                    bases: r.baselines.iter().map(|b| b.step(&s.name, nth)).collect(),
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

/// A row's time beside each baseline's (in the order of `Report::baselines`).
#[derive(Debug, Clone, Default)]
pub struct Compared {
    pub took: Option<f64>,
    pub bases: Vec<Option<f64>>,
}

impl Compared {
    /// One cell per baseline: `1m02s longer`, `same`, or empty.
    pub fn cells(&self, baselines: usize) -> Vec<String> {
        (0..baselines)
            .map(
                |i| match (self.took, self.bases.get(i).copied().flatten()) {
                    (Some(t), Some(b)) => versus_short(t, b),
                    _ => String::new(),
                },
            )
            .collect()
    }
}

/// A column heading per baseline: `vs rehearsal of 2026-09-02`.
pub fn baseline_headers(r: &Report) -> Vec<String> {
    r.baselines
        .iter()
        .map(|b| format!("vs {}", b.label.trim_start_matches("the ")))
        .collect()
}

/// The biggest differences as sentences, largest first: `vLLM gate 4m10s, 1m02s longer than
/// the rehearsal of 2026-09-02`. Only those of a second or more; at most ten.
pub fn notable(r: &Report) -> Vec<String> {
    let mut found: Vec<(f64, String)> = Vec::new();
    let phases = phase_rows(r);
    let steps = step_rows(r);
    let rows = phases
        .iter()
        .map(|p| (format!("phase {}", p.name), &p.compared))
        .chain(steps.iter().map(|s| (s.name.clone(), &s.compared)));
    for (name, c) in rows {
        let Some(took) = c.took else { continue };
        for (b, base) in r.baselines.iter().zip(&c.bases) {
            if let Some(base) = base
                && (took - base).abs() >= 1.0
            {
                found.push((
                    (took - base).abs(),
                    format!(
                        "{name} {}, {}",
                        duration(took),
                        versus(took, *base, &b.label)
                    ),
                ));
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    found.into_iter().take(10).map(|(_, s)| s).collect()
}
