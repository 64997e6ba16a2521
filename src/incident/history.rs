//! Runs before this one: every journal of a runbook under the state directory, the history
//! listing, and the baselines a report compares with (the last rehearsal, the previous run).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::model::{Incident, Run};
use super::read::parse;
use crate::duration::duration;
use crate::rehearsal::Record;

/// A run segment and the journal it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Journaled {
    pub path: PathBuf,
    pub run: Run,
}

/// Every run of the runbook whose state key is `key` (`crate::plan::state_key`: its name, or
/// `name@overlay`) in the journals under `runs_dir`, oldest first, and what could not be read.
/// Files are matched by the key their `run_started` gives, not by their file name alone.
pub fn journals(runs_dir: &Path, key: &str) -> (Vec<Journaled>, Vec<String>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let Ok(dir) = std::fs::read_dir(runs_dir) else {
        return (found, problems);
    };
    let prefix = format!("{key}-");
    let mut paths: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "jsonl")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    paths.sort();
    for path in paths {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let (runs, _) = parse(&String::from_utf8_lossy(&bytes));
                found.extend(
                    runs.into_iter()
                        .filter(|r| r.key == key)
                        .map(|run| Journaled {
                            path: path.clone(),
                            run,
                        }),
                );
            }
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    found.sort_by_key(|j| j.run.date);
    (found, problems)
}

/// One line of `recover report --history`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub date: Option<DateTime<Utc>>,
    pub kind: String,
    /// Where the run's timeline ended (for a resumed run, the whole incident's clock).
    pub end_at: f64,
    pub budget: f64,
    pub result: &'static str,
    pub sha256: String,
    /// Against the row before it; `None` for the first.
    pub sha_changed: Option<bool>,
    pub path: PathBuf,
}

pub fn history(journals: &[Journaled]) -> Vec<HistoryRow> {
    let mut rows: Vec<HistoryRow> = Vec::new();
    for j in journals {
        let r = &j.run;
        let sha_changed = rows.last().map(|prev| prev.sha256 != r.sha256);
        rows.push(HistoryRow {
            date: r.date,
            kind: r.kind_word(),
            end_at: r.last_at(),
            budget: r.budget,
            result: r.result_word(),
            sha256: r.sha256.clone(),
            sha_changed,
            path: j.path.clone(),
        });
    }
    rows
}

/// The incident the journal's last run belongs to: that run, and the runs it resumed, found
/// in the same file or among `others`.
pub fn chain(mut runs: Vec<Run>, others: &[Journaled]) -> Vec<Run> {
    let Some(last) = runs.pop() else {
        return Vec::new();
    };
    let mut chain = vec![last];
    // bounded: a journal that resumes itself in a loop must not hang the report
    for _ in 0..64 {
        let Some(id) = chain[0].resumed_from.clone() else {
            break;
        };
        if chain.iter().any(|r| r.run_id == id) {
            break;
        }
        let earlier = runs
            .iter()
            .rev()
            .find(|r| r.run_id == id)
            .or_else(|| others.iter().map(|j| &j.run).find(|r| r.run_id == id));
        match earlier {
            Some(r) => chain.insert(0, r.clone()),
            None => break,
        }
    }
    chain
}

/// Timings of a run before this one, to set this one's beside.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// `the rehearsal of 2026-09-02`, `the run of 2026-10-14`.
    pub label: String,
    pub phases: Vec<(String, f64)>,
    /// Steps that really ran, by name.
    pub steps: Vec<(String, f64)>,
}

impl Baseline {
    fn of(label: String, runs: &[&Run]) -> Baseline {
        let mut b = Baseline {
            label,
            phases: Vec::new(),
            steps: Vec::new(),
        };
        for r in runs {
            for p in &r.phases {
                if let Some(t) = p.took() {
                    b.phases.push((p.name.clone(), t));
                }
            }
            for s in r.steps.iter().filter(|s| s.ran()) {
                if let Some(d) = s.duration {
                    b.steps.push((s.name.clone(), d));
                }
            }
        }
        b
    }

    fn from_record(rec: &Record) -> Option<Baseline> {
        let date = DateTime::parse_from_rfc3339(&rec.date).ok()?;
        Some(Baseline {
            label: format!("the rehearsal of {}", date.format("%Y-%m-%d")),
            phases: rec
                .phases
                .iter()
                .map(|p| (p.name.clone(), p.ended - p.started))
                .collect(),
            steps: Vec::new(),
        })
    }

    /// How long the `nth` phase named `name` took (0 for the first of that name).
    pub fn phase(&self, name: &str, nth: usize) -> Option<f64> {
        nth_named(&self.phases, name, nth)
    }

    pub fn step(&self, name: &str, nth: usize) -> Option<f64> {
        nth_named(&self.steps, name, nth)
    }
}

fn nth_named(list: &[(String, f64)], name: &str, nth: usize) -> Option<f64> {
    list.iter()
        .filter(|(n, _)| n == name)
        .nth(nth)
        .map(|(_, t)| *t)
}

/// `1m02s longer than the rehearsal of 2026-09-02`.
pub fn versus(took: f64, base: f64, label: &str) -> String {
    let diff = took - base;
    if diff.abs() < 1.0 {
        format!("about as long as {label}")
    } else if diff > 0.0 {
        format!("{} longer than {label}", duration(diff))
    } else {
        format!("{} shorter than {label}", duration(-diff))
    }
}

/// `1m02s longer`, `3s shorter`, `same` (within a second): a table cell.
pub fn versus_short(took: f64, base: f64) -> String {
    let diff = took - base;
    if diff.abs() < 1.0 {
        "same".into()
    } else if diff > 0.0 {
        format!("{} longer", duration(diff))
    } else {
        format!("{} shorter", duration(-diff))
    }
}

/// The timings of the latest run or rehearsal among `journals` in which steps really ran:
/// what the binder prints beside each step's allowance ("usually 12s").
pub fn latest(journals: &[Journaled]) -> Option<Baseline> {
    let r = journals
        .iter()
        .rev()
        .map(|j| &j.run)
        .find(|r| r.steps.iter().any(|s| s.ran() && s.duration.is_some()))?;
    let what = if r.mode == "rehearse" {
        "rehearsal"
    } else {
        "run"
    };
    let date = r
        .date
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    Some(Baseline::of(format!("the {what} of {date}"), &[r]))
}

/// The last rehearsal before the incident and the previous run of the same runbook, from the
/// journals; the rehearsal record stands in for a rehearsal whose journal is gone.
pub fn baselines(
    incident: &Incident,
    journals: &[Journaled],
    record: Option<&Record>,
) -> Vec<Baseline> {
    let ours: Vec<&str> = incident
        .segments
        .iter()
        .map(|s| s.run_id.as_str())
        .collect();
    let before = |r: &Run| match (r.date, incident.first().date) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    };
    let label = |what: &str, r: &Run| {
        format!(
            "the {what} of {}",
            r.date
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default()
        )
    };
    let mut out = Vec::new();
    let rehearsal = journals
        .iter()
        .rev()
        .map(|j| &j.run)
        .find(|r| r.mode == "rehearse" && before(r) && !ours.contains(&r.run_id.as_str()));
    match rehearsal {
        Some(r) => out.push(Baseline::of(label("rehearsal", r), &[r])),
        None => out.extend(record.and_then(Baseline::from_record)),
    }
    let previous = journals.iter().rev().map(|j| &j.run).find(|r| {
        r.mode == incident.last().mode
            && r.mode != "rehearse"
            && before(r)
            && !ours.contains(&r.run_id.as_str())
    });
    if let Some(p) = previous {
        let runs = chain(vec![p.clone()], journals);
        out.push(Baseline::of(
            label("run", runs.first().unwrap_or(p)),
            &runs.iter().collect::<Vec<_>>(),
        ));
    }
    out
}
