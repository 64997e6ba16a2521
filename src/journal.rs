//! The journal: JSON Lines, one event a line, flushed as written. `--resume` reads it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::engine::{Event, RunOutcome, Sink, StepOutcome};
use crate::state::StateDir;

/// A journal line: the event with a wall-clock timestamp, as `--json` prints it.
pub use crate::report::record;

pub struct Journal {
    file: File,
    pub path: PathBuf,
    failed: bool,
}

impl Journal {
    /// Open for appending (creating folders as needed).
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            failed: false,
        })
    }

    /// A new journal file for a run of `runbook`, under the state directory.
    pub fn new_path(state: &StateDir, runbook: &str, run_id: &str) -> PathBuf {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        state
            .runs()
            .join(format!("{runbook}-{stamp}-{run_id}.jsonl"))
    }
}

impl Sink for Journal {
    fn emit(&mut self, event: &Event) {
        if matches!(event, Event::StepProgress { .. }) || self.failed {
            return;
        }
        let mut line = record(event).to_string();
        line.push('\n');
        let ok = self
            .file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .and_then(|_| self.file.sync_data());
        if let Err(e) = ok {
            self.failed = true;
            eprintln!(
                "recover: cannot write the journal {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Where an unfinished run stopped, read back from its journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    pub journal: PathBuf,
    pub run_id: String,
    pub sha256: String,
    /// The step to run first: the one that failed or was interrupted.
    pub step: usize,
    pub step_name: String,
    /// Where the run's timeline stood.
    pub elapsed: f64,
    pub boot_ids: BTreeMap<String, String>,
    pub outcome: Option<RunOutcome>,
}

/// Read the last run segment of a journal. `Ok(None)`: it finished successfully.
pub fn unfinished(path: &Path) -> Result<Option<Unfinished>, Error> {
    let f = File::open(path).map_err(|source| Error::JournalRead {
        path: path.to_path_buf(),
        source,
    })?;
    let mut state: Option<Unfinished> = None;
    let mut open_step: Option<(usize, String)> = None;
    let mut last_passed = 0usize;
    let mut done_ok = false;
    for line in BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        // A line cut by a crash mid-write is ignored; everything before it stands.
        let Ok(ev) = serde_json::from_str::<Event>(&line) else {
            continue;
        };
        match ev {
            Event::RunStarted {
                run_id,
                sha256,
                first_step,
                ..
            } => {
                state = Some(Unfinished {
                    journal: path.to_path_buf(),
                    run_id,
                    sha256,
                    step: first_step,
                    step_name: String::new(),
                    elapsed: 0.0,
                    boot_ids: state.map(|s| s.boot_ids).unwrap_or_default(),
                    outcome: None,
                });
                open_step = None;
                done_ok = false;
                last_passed = first_step.saturating_sub(1);
            }
            Event::Connected {
                target, boot_id, ..
            } => {
                if let Some(s) = state.as_mut() {
                    s.boot_ids.insert(target, boot_id);
                }
            }
            Event::StepStarted { step, name, at, .. } => {
                open_step = Some((step, name));
                if let Some(s) = state.as_mut() {
                    s.elapsed = at;
                }
            }
            Event::StepFinished {
                step,
                name,
                outcome,
                at,
                ..
            } => {
                if let Some(s) = state.as_mut() {
                    s.elapsed = at;
                    match outcome {
                        StepOutcome::Passed
                        | StepOutcome::Skipped
                        | StepOutcome::FailedContinued
                        | StepOutcome::WouldRun => {
                            last_passed = last_passed.max(step);
                            open_step = None;
                        }
                        _ => open_step = Some((step, name)),
                    }
                }
            }
            Event::RunFinished {
                outcome,
                failed_step,
                at,
                ..
            } => {
                if let Some(s) = state.as_mut() {
                    s.elapsed = at;
                    s.outcome = Some(outcome);
                    if outcome == RunOutcome::Success {
                        done_ok = true;
                    } else if let Some(f) = failed_step {
                        let name = open_step
                            .as_ref()
                            .filter(|(n, _)| *n == f)
                            .map(|(_, n)| n.clone())
                            .unwrap_or_default();
                        open_step = Some((f, name));
                    }
                }
            }
            _ => {}
        }
    }
    let Some(mut s) = state else {
        return Err(Error::JournalEmpty {
            path: path.to_path_buf(),
        });
    };
    if done_ok {
        return Ok(None);
    }
    match open_step {
        Some((n, name)) => {
            s.step = n;
            s.step_name = name;
        }
        None => s.step = last_passed + 1,
    }
    Ok(Some(s))
}

/// The newest journal of `runbook` under the state directory.
pub fn latest(state: &StateDir, runbook: &str) -> Option<PathBuf> {
    let prefix = format!("{runbook}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(state.runs())
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "jsonl")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.strip_prefix(&prefix)
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                })
        })
        .collect();
    // Names carry a UTC timestamp: the lexically last is the newest.
    found.sort();
    found.pop()
}

/// A short id for a run: time and process, hashed.
pub fn new_run_id() -> String {
    let seed = format!("{:?}-{}", std::time::SystemTime::now(), std::process::id());
    crate::runbook::sha256_hex(seed.as_bytes())[..8].to_owned()
}
