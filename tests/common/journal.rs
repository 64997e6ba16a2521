//! Reading the journals a `recover` run writes (JSON Lines, `src/engine/event.rs`): where they
//! are under a state directory, their events, and waiting for one.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::eventually;

/// The journal's events, one JSON object a line; panics on a line that is not one.
pub fn read_journal(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read the journal {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("journal line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "journal line is not an object: {l}");
            v
        })
        .collect()
}

/// The journal files written under `state_dir` (`$XDG_STATE_HOME/recover/runs/`), sorted
/// (their names start with a timestamp: oldest first).
pub fn journals_in(state_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(state_dir.join("recover/runs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The one journal under `state_dir`.
pub fn only_journal(state_dir: &Path) -> PathBuf {
    let files = journals_in(state_dir);
    assert_eq!(files.len(), 1, "expected one journal, found {files:?}");
    files[0].clone()
}

/// The events of one kind (`"step_started"`, ...).
pub fn events<'a>(journal: &'a [Value], kind: &str) -> Vec<&'a Value> {
    journal.iter().filter(|e| e["event"] == kind).collect()
}

/// The one event of `kind` for step `n`.
pub fn step_event<'a>(journal: &'a [Value], kind: &str, n: u64) -> &'a Value {
    let found: Vec<_> = events(journal, kind)
        .into_iter()
        .filter(|e| e["step"] == n)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} of step {n} in {}",
        dump(journal)
    );
    found[0]
}

/// Step numbers that have a `step_started`.
pub fn started_steps(journal: &[Value]) -> Vec<u64> {
    events(journal, "step_started")
        .iter()
        .map(|e| e["step"].as_u64().expect("step number"))
        .collect()
}

pub fn last_event(journal: &[Value]) -> &Value {
    journal.last().expect("the journal is empty")
}

/// The events, one a line, for assertion messages.
pub fn dump(journal: &[Value]) -> String {
    lines(journal.iter())
}

/// The events without the progress lines (which a long run has many of), one a line.
pub fn dump_without_progress(journal: &[Value]) -> String {
    lines(journal.iter().filter(|e| e["event"] != "step_progress"))
}

fn lines<'a>(events: impl Iterator<Item = &'a Value>) -> String {
    events.map(Value::to_string).collect::<Vec<_>>().join("\n")
}

/// Whether the journal at `path` comes to hold an event matching `cond` within `timeout`
/// (polled; lines that do not parse yet are passed over).
pub fn wait_for_event(path: &Path, timeout: Duration, cond: impl Fn(&Value) -> bool) -> bool {
    eventually(timeout, || {
        fs::read_to_string(path).is_ok_and(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|e| cond(&e))
        })
    })
}
