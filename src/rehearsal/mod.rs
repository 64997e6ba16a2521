//! Rehearsals: the record each one leaves, the "last rehearsed" notice, the Markdown report.

pub mod last;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::engine::{Event, RunOutcome, Sink, StepOutcome};
use crate::plan::{Plan, fmt_duration};
use crate::state::StateDir;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseTiming {
    pub name: String,
    pub window_start: f64,
    pub window_end: f64,
    pub started: f64,
    pub ended: f64,
    /// The phase took longer than its window allows.
    pub would_overrun: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The runbook's state key ([`Plan::state_key`]): `name`, or `name@overlay`.
    pub runbook: String,
    /// RFC 3339, UTC.
    pub date: String,
    pub sha256: String,
    /// `passed` or `failed`.
    pub result: String,
    pub phases: Vec<PhaseTiming>,
}

/// Record the rehearsal under the state directory; returns where.
pub fn save(state: &StateDir, r: &Record) -> std::io::Result<PathBuf> {
    let p = state.rehearsal(&r.runbook);
    if let Some(d) = p.parent() {
        crate::private::create_dir_all(d)?;
    }
    let tmp = p.with_extension("json.tmp");
    crate::private::write(&tmp, serde_json::to_string_pretty(r).unwrap_or_default())?;
    std::fs::rename(&tmp, &p)?;
    Ok(p)
}

/// What `check` and `run` say about the last rehearsal; `warn` when it needs attention
/// (never rehearsed, failed, overdue, or rehearsed on another version of the runbook).
pub fn notice(state: Option<&StateDir>, plan: &Plan) -> (String, bool) {
    let now = chrono::Utc::now();
    let last = state.map_or(last::Rehearsal::Never, |s| {
        last::read(&s.rehearsal(&plan.state_key()))
    });
    let (text, warn) = last.describe(&plan.sha256, plan.rehearse_every, now);
    match last {
        last::Rehearsal::Done { date, .. } => {
            let days = now.signed_duration_since(date).num_days();
            (
                format!(
                    "last rehearsed {days} day{} ago: {text}",
                    if days == 1 { "" } else { "s" }
                ),
                warn,
            )
        }
        _ => (
            format!(
                "`{}`: {text}; run `recover rehearse` against the live stack",
                plan.state_key()
            ),
            warn,
        ),
    }
}

/// Collects every event for the record and the report.
#[derive(Clone, Default)]
pub struct Collector(pub Arc<Mutex<Vec<Event>>>);

impl Sink for Collector {
    fn emit(&mut self, event: &Event) {
        if !matches!(event, Event::StepProgress { .. }) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event.clone());
        }
    }
}

impl Collector {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub fn record(plan: &Plan, events: &[Event]) -> Record {
    let mut phases = Vec::new();
    let mut result = "failed";
    for e in events {
        match e {
            Event::PhaseFinished {
                name,
                started,
                at,
                window_start,
                window_end,
                ..
            } => phases.push(PhaseTiming {
                name: name.clone(),
                window_start: *window_start,
                window_end: *window_end,
                started: *started,
                ended: *at,
                would_overrun: at - started > window_end - window_start,
            }),
            Event::RunFinished {
                outcome: RunOutcome::Success,
                ..
            } => result = "passed",
            _ => {}
        }
    }
    Record {
        runbook: plan.state_key(),
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        sha256: plan.sha256.clone(),
        result: result.to_owned(),
        phases,
    }
}

/// The rehearsal as Markdown: per phase the timing against the window, per step what happened.
pub fn markdown(plan: &Plan, rec: &Record, events: &[Event]) -> String {
    let secs = |s: f64| fmt_duration(std::time::Duration::from_secs(s.max(0.0).round() as u64));
    let mut o = format!(
        "# Rehearsal: {}\n\n- runbook: `{}` (sha256 `{}`)\n- date: {}\n- result: **{}**\n\n## Phases\n\n| phase | window | took | fits |\n|---|---|---|---|\n",
        plan.title,
        plan.source.display(),
        rec.sha256,
        rec.date,
        rec.result
    );
    if plan.files.len() > 1 {
        for f in &plan.files {
            o.insert_str(
                o.find("- date: ").unwrap_or(o.len()),
                &format!(
                    "- {}: `{}` (sha256 `{}`)\n",
                    f.role.label(),
                    f.path.display(),
                    f.sha256
                ),
            );
        }
    }
    for p in &rec.phases {
        o.push_str(&format!(
            "| {} | {}-{} | {} | {} |\n",
            p.name,
            secs(p.window_start),
            secs(p.window_end),
            secs(p.ended - p.started),
            if p.would_overrun {
                "**would overrun**"
            } else {
                "yes"
            }
        ));
    }
    o.push_str("\n## Steps\n\n| # | step | result | detail |\n|---|---|---|---|\n");
    for e in events {
        if let Event::StepFinished {
            step,
            name,
            outcome,
            reason,
            ..
        } = e
        {
            let word = match outcome {
                StepOutcome::FailedContinued => "**problem**",
                StepOutcome::WouldRun => "skipped (changes state)",
                other => other.word(),
            };
            let detail = reason
                .as_deref()
                .unwrap_or("")
                .replace('|', "\\|")
                .replace('\n', " ");
            o.push_str(&format!(
                "| {step} | {} | {word} | {} |\n",
                name.replace('|', "\\|"),
                detail
            ));
        }
    }
    let warnings: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Warning { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    if !warnings.is_empty() {
        o.push_str("\n## Warnings\n\n");
        for w in warnings {
            o.push_str(&format!("- {w}\n"));
        }
    }
    plan.secrets.redact(&o)
}
