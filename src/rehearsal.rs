//! Rehearsals: the record each one leaves, the "last rehearsed" notice, the Markdown report.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::engine::{Event, RunOutcome, Sink, StepOutcome};
use crate::plan::{Plan, fmt_duration};

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
    pub runbook: String,
    /// RFC 3339, UTC.
    pub date: String,
    pub sha256: String,
    /// `passed` or `failed`.
    pub result: String,
    pub phases: Vec<PhaseTiming>,
}

pub fn path(runbook: &str) -> PathBuf {
    crate::journal::state_dir()
        .join("rehearsals")
        .join(format!("{runbook}.json"))
}

pub fn last(runbook: &str) -> Option<Record> {
    let text = std::fs::read_to_string(path(runbook)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn save(r: &Record) -> std::io::Result<PathBuf> {
    let p = path(&r.runbook);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(r).unwrap_or_default())?;
    std::fs::rename(&tmp, &p)?;
    Ok(p)
}

/// What `check` and `run` say about the last rehearsal; `warn` when it is due or stale.
pub fn notice(plan: &Plan) -> (String, bool) {
    let Some(r) = last(&plan.name) else {
        return (
            format!(
                "`{}` has never been rehearsed: run `recover rehearse` against the live stack",
                plan.name
            ),
            plan.rehearse_every.is_some(),
        );
    };
    let days = chrono::DateTime::parse_from_rfc3339(&r.date)
        .map(|d| (chrono::Utc::now() - d.with_timezone(&chrono::Utc)).num_days())
        .unwrap_or(i64::MAX);
    let mut text = format!(
        "last rehearsed {days} day{} ago ({})",
        if days == 1 { "" } else { "s" },
        r.result
    );
    let mut warn = r.result != "passed";
    if let Some(every) = plan.rehearse_every
        && days.saturating_mul(86_400) > every.as_secs() as i64
    {
        text.push_str(&format!(
            "; due every {}: rehearse again",
            fmt_duration(every)
        ));
        warn = true;
    }
    if r.sha256 != plan.sha256 {
        text.push_str("; the runbook changed since: rehearse the new version");
        warn = true;
    }
    (text, warn)
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
        runbook: plan.name.clone(),
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
