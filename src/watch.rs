//! `recover watch`'s judgement: level, not edge. From one [`crate::status::Report`] and what
//! the watch remembers (the boot id each target had when it was last seen healthy, the power
//! event in hand and its runs), one [`Decision`]. Pure: the loop, the child run, the posts
//! and the nudge socket are in `cmd/watch.rs`.
//!
//! A **power event** is a box that does not answer, or one whose boot id changed since it was
//! last seen healthy. Only a power event starts a run, and only when mains is stable (the
//! runbook's `ups` step's terms, when it has one), no run is in progress and no hold stands.
//! A unit down on a box that did not reboot is somebody's doing or a crash: said, never
//! "recovered". After a failed run: wait [`Backoff`] (10 minutes, then doubling), at most
//! [`MAX_RUNS`] runs per power event, then wait for a person (a healthy box, or `hold
//! --release`, ends the event).
//!
//! What is remembered lives in `watch/<key>.json` under the state directory, so it outlives
//! this host's own reboot; every decision is one line of `watch/<key>.jsonl`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::StateDir;
use crate::status::{Health, Report};

/// Runs per power event before the watch waits for a person.
pub const MAX_RUNS: u32 = 3;
/// Consecutive checks without an answer that make a power event (measured on the lab: a box
/// under load missed one 5 s connection and the watch, taking it for a power cut, ran).
pub const UNANSWERED_CHECKS: u32 = 2;
/// The watch journal is rotated (one old file kept) past this size.
pub const JOURNAL_MAX: u64 = 8 * 1024 * 1024;

/// What the watch keeps between checks and across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Per target name: its boot id when the box was last seen healthy.
    #[serde(default)]
    pub healthy_boot_ids: BTreeMap<String, String>,
    /// When the box was last seen healthy (RFC 3339).
    #[serde(default)]
    pub healthy_at: Option<String>,
    #[serde(default)]
    pub event: Option<PowerEvent>,
    /// The key of the last decision posted (a post is made when it changes).
    #[serde(default)]
    pub posted: Option<String>,
    /// Consecutive checks in which a target did not answer (a power event from
    /// [`UNANSWERED_CHECKS`] on: one slow connection on a loaded box is not one).
    #[serde(default)]
    pub unanswered: u32,
}

/// A power event in hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerEvent {
    pub since: String,
    pub why: String,
    /// Runs started for it so far.
    pub runs: u32,
    /// The last run's exit code.
    pub last_exit: Option<i32>,
    /// No run before this time (RFC 3339): the backoff after a failed run.
    pub retry_at: Option<String>,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A hold stands: nothing starts.
    Held(String),
    /// Someone's run (or ours) holds the lock.
    RunInProgress(String),
    /// Everything up.
    Healthy,
    /// A target did not answer this once: looked at again before it counts as a power event.
    NotAnswering(String),
    /// Not every unit is healthy, on a box that did not reboot: said, nothing started.
    Degraded(Vec<String>),
    /// A power event, but mains is not stable yet.
    WaitingForMains { why: String, ups: String },
    /// A power event whose last run failed: the next one not before `until`.
    BackingOff {
        why: String,
        until: String,
        runs: u32,
        /// The last run's exit code (0: it ended well, but the box is not healthy).
        last_exit: Option<i32>,
    },
    /// [`MAX_RUNS`] runs failed for this power event.
    WaitingForPerson { why: String, runs: u32 },
    /// Start run number `run` for this power event.
    Start { why: String, run: u32 },
}

impl Decision {
    /// One word for the journal.
    pub fn word(&self) -> &'static str {
        match self {
            Decision::Held(_) => "held",
            Decision::RunInProgress(_) => "run_in_progress",
            Decision::Healthy => "healthy",
            Decision::NotAnswering(_) => "not_answering",
            Decision::Degraded(_) => "degraded",
            Decision::WaitingForMains { .. } => "waiting_for_mains",
            Decision::BackingOff { .. } => "backing_off",
            Decision::WaitingForPerson { .. } => "waiting_for_a_person",
            Decision::Start { .. } => "start_run",
        }
    }

    /// What identifies it for "a post when it changes": the word and what matters in it (the
    /// units down, the run number), not what moves every check (a UPS's seconds on line).
    pub fn key(&self) -> String {
        match self {
            Decision::Degraded(units) => {
                let names: Vec<&str> = units
                    .iter()
                    .map(|u| u.split_once(" is ").map_or(u.as_str(), |(n, _)| n))
                    .collect();
                format!("degraded:{}", names.join(","))
            }
            Decision::BackingOff { runs, .. } => format!("backing_off:{runs}"),
            Decision::WaitingForPerson { runs, .. } => format!("waiting_for_a_person:{runs}"),
            Decision::Start { run, .. } => format!("start_run:{run}"),
            d => d.word().to_owned(),
        }
    }

    /// The sentence for the journal and the post.
    pub fn text(&self, runbook: &str) -> String {
        match self {
            Decision::Held(h) => format!("{runbook}: {h}: not recovering while it holds"),
            Decision::RunInProgress(r) => {
                format!("{runbook}: a run is in progress ({r}): waiting for it")
            }
            Decision::Healthy => {
                format!("{runbook}: healthy: every unit active, every probe passing")
            }
            Decision::NotAnswering(why) => {
                format!("{runbook}: {why}: looking again before calling it a power event")
            }
            Decision::Degraded(units) => format!(
                "{runbook}: degraded, not recovering: {} (the box did not reboot: not a power event; start or fix it by hand, or `recover run`)",
                units.join("; ")
            ),
            Decision::WaitingForMains { why, ups } => {
                format!("{runbook}: power event ({why}): waiting for mains to be stable: {ups}")
            }
            Decision::BackingOff {
                why,
                until,
                runs,
                last_exit,
            } => format!(
                "{runbook}: power event ({why}): run {runs} of {MAX_RUNS} {}: the next one not before {until}",
                match last_exit {
                    Some(0) => "ended, but the box is not healthy".to_owned(),
                    Some(c) => format!("failed (exit {c})"),
                    None => "did not finish".to_owned(),
                }
            ),
            Decision::WaitingForPerson { why, runs } => format!(
                "{runbook}: power event ({why}): {runs} runs failed: waiting for a person (`recover status`, the journals, then `recover run` by hand; `recover hold --release` lets the watch try again)"
            ),
            Decision::Start { why, run } => format!(
                "{runbook}: power event ({why}): starting the recovery, run {run} of {MAX_RUNS}"
            ),
        }
    }

    /// Whether a change to this decision is posted. A healthy box after a run is the run's
    /// own "we are back"; one seen at start-up is nothing to tell. Someone else's run posts
    /// for itself.
    pub fn posts_after(&self, previous: Option<&str>) -> bool {
        match self {
            Decision::RunInProgress(_) | Decision::NotAnswering(_) => false,
            Decision::Healthy => {
                previous.is_some_and(|p| !p.starts_with("start_run") && p != "run_in_progress")
            }
            _ => true,
        }
    }
}

/// How long to wait after the `runs`-th failed run: `first`, doubling.
pub fn backoff(first: Duration, runs: u32) -> Duration {
    let doublings = runs.saturating_sub(1).min(16);
    first.saturating_mul(1u32 << doublings)
}

fn fmt(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Why this report is a power event, if it is one.
pub fn power_event(report: &Report, memory: &Memory) -> Option<String> {
    if let Some(t) = report.targets.iter().find(|t| !t.reachable) {
        return Some(format!(
            "{} does not answer{}",
            t.name,
            t.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    report.targets.iter().find_map(|t| {
        let old = memory.healthy_boot_ids.get(&t.name)?;
        let new = t.boot_id.as_ref()?;
        (old != new).then(|| {
            format!(
                "{} rebooted since it was last seen healthy (boot id {old} then, {new} now)",
                t.name
            )
        })
    })
}

/// The decision for `report`, updating `memory`. `mains` is the UPS's verdict by the
/// runbook's `ups` terms (`None`: the runbook has no `ups` step), with its progress text.
pub fn decide(
    report: &Report,
    memory: &mut Memory,
    mains: Option<(bool, String)>,
    now: DateTime<Utc>,
) -> Decision {
    if let Some(h) = &report.hold {
        return Decision::Held(h.describe());
    }
    if let Some(r) = &report.run_in_progress {
        return Decision::RunInProgress(format!(
            "{}{}",
            r.lock,
            r.pid.map(|p| format!(", pid {p}")).unwrap_or_default()
        ));
    }
    if report.targets.iter().all(|t| t.reachable) {
        memory.unanswered = 0;
    } else {
        memory.unanswered = memory.unanswered.saturating_add(1);
        if memory.event.is_none() && memory.unanswered < UNANSWERED_CHECKS {
            return Decision::NotAnswering(power_event(report, memory).unwrap_or_default());
        }
    }
    if report.box_health() == Health::Healthy {
        memory.healthy_boot_ids = report
            .targets
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.boot_id.clone()?)))
            .collect();
        memory.healthy_at = Some(fmt(now));
        memory.event = None;
        return Decision::Healthy;
    }
    let why = match power_event(report, memory) {
        Some(why) => why,
        None => match &memory.event {
            // A power event in hand (a run failed on the rebooted box, and it stays degraded)
            // goes on until the box is seen healthy.
            Some(e) => e.why.clone(),
            None => {
                let mut units = report.unhealthy_units();
                if memory.healthy_boot_ids.is_empty() {
                    units.push(
                        "never seen healthy by this watch, so a reboot cannot be told".into(),
                    );
                }
                return Decision::Degraded(units);
            }
        },
    };
    let event = memory.event.get_or_insert_with(|| PowerEvent {
        since: fmt(now),
        why: why.clone(),
        runs: 0,
        last_exit: None,
        retry_at: None,
    });
    let why = event.why.clone();
    if event.runs >= MAX_RUNS {
        return Decision::WaitingForPerson {
            why,
            runs: event.runs,
        };
    }
    if let Some(until) = event.retry_at.as_deref().and_then(parse)
        && until > now
    {
        return Decision::BackingOff {
            why,
            until: fmt(until),
            runs: event.runs,
            last_exit: event.last_exit,
        };
    }
    if let Some((false, ups)) = mains {
        return Decision::WaitingForMains { why, ups };
    }
    Decision::Start {
        why,
        run: event.runs + 1,
    }
}

/// A run was started for the event in hand.
pub fn started(memory: &mut Memory) {
    if let Some(e) = &mut memory.event {
        e.runs += 1;
        e.retry_at = None;
    }
}

/// The run ended with `exit`: after a failure, the backoff; returns what to post (None after
/// a success: the run posted its own "we are back").
pub fn finished(
    memory: &mut Memory,
    runbook: &str,
    exit: i32,
    first_backoff: Duration,
    now: DateTime<Utc>,
) -> Option<String> {
    let e = memory.event.as_mut()?;
    e.last_exit = Some(exit);
    if exit == 0 {
        // Recovered: the next check sees it healthy and ends the event. If it does not (a
        // probe that passed in the run fails now), no second run before the backoff either.
        let wait = backoff(first_backoff, e.runs);
        e.retry_at = Some(fmt(
            now + chrono::Duration::from_std(wait).unwrap_or_default()
        ));
        return None;
    }
    // This post says what the next decision would: it is not posted again.
    memory.posted = Some(if e.runs >= MAX_RUNS {
        format!("waiting_for_a_person:{}", e.runs)
    } else {
        format!("backing_off:{}", e.runs)
    });
    if e.runs >= MAX_RUNS {
        return Some(format!(
            "{runbook}: the recovery failed (exit {exit}), run {} of {MAX_RUNS}: no more runs for this power event; waiting for a person",
            e.runs
        ));
    }
    let wait = backoff(first_backoff, e.runs);
    let until = now + chrono::Duration::from_std(wait).unwrap_or_default();
    e.retry_at = Some(fmt(until));
    Some(format!(
        "{runbook}: the recovery failed (exit {exit}), run {} of {MAX_RUNS}: next try in {} (not before {})",
        e.runs,
        crate::plan::fmt_duration(wait),
        fmt(until)
    ))
}

/// `watch/` under the state directory.
pub fn dir(state: &StateDir) -> PathBuf {
    state.path().join("watch")
}

pub fn memory_path(state: &StateDir, key: &str) -> PathBuf {
    dir(state).join(format!("{key}.json"))
}

pub fn journal_path(state: &StateDir, key: &str) -> PathBuf {
    dir(state).join(format!("{key}.jsonl"))
}

/// What the watch of `key` remembers (nothing when there is no file or it cannot be read).
pub fn load(state: &StateDir, key: &str) -> Memory {
    std::fs::read(memory_path(state, key))
        .ok()
        .filter(|b| b.len() < 1024 * 1024)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn save(state: &StateDir, key: &str, memory: &Memory) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(memory).map_err(std::io::Error::other)?;
    crate::hold::write_private(&memory_path(state, key), &text)
}

/// A person acted (`hold --release`): the power event in hand starts its count again.
pub fn forget_attempts(state: &StateDir, key: &str) {
    let mut m = load(state, key);
    if m.event.take().is_some() {
        let _ = save(state, key, &m);
    }
}

/// One line of the watch journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub at: String,
    pub decision: String,
    pub text: String,
    pub health: String,
    #[serde(default)]
    pub boot_ids: BTreeMap<String, String>,
    /// Set on the line that ends a run the watch started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
}

/// Append `line` to the watch journal of `key` (0600), rotating it past [`JOURNAL_MAX`].
pub fn journal(state: &StateDir, key: &str, line: &Line) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = journal_path(state, key);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir(state))?;
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > JOURNAL_MAX) {
        let _ = std::fs::rename(&path, path.with_extension("jsonl.1"));
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
    text.push('\n');
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{TargetStatus, UnitStatus};

    fn report(reachable: bool, boot: &str, active: &str) -> Report {
        Report {
            runbook: "rb".into(),
            key: "rb".into(),
            at: String::new(),
            health: Health::Healthy,
            targets: vec![TargetStatus {
                name: "box".into(),
                destination: "ops@box".into(),
                reachable,
                boot_id: reachable.then(|| boot.to_owned()),
                error: (!reachable).then(|| "connection refused".to_owned()),
            }],
            units: vec![UnitStatus {
                unit: "a.service".into(),
                target: "box".into(),
                active: active.into(),
                sub: String::new(),
                probe: None,
                error: None,
            }],
            ups: None,
            run_in_progress: None,
            hold: None,
            last_run: None,
            took: 0.0,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-07T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn healthy_is_remembered_and_a_unit_down_on_the_same_boot_is_not_a_power_event() {
        let mut m = Memory::default();
        assert_eq!(
            decide(&report(true, "b1", "active"), &mut m, None, now()),
            Decision::Healthy
        );
        assert_eq!(m.healthy_boot_ids["box"], "b1");
        let d = decide(&report(true, "b1", "inactive"), &mut m, None, now());
        assert!(
            matches!(&d, Decision::Degraded(u) if u[0].contains("a.service is inactive")),
            "{d:?}"
        );
        assert!(m.event.is_none());
    }

    #[test]
    fn a_new_boot_id_or_no_answer_is_a_power_event_and_mains_must_be_stable() {
        let mut m = Memory::default();
        decide(&report(true, "b1", "active"), &mut m, None, now());
        let d = decide(
            &report(true, "b2", "inactive"),
            &mut m,
            Some((false, "on battery".into())),
            now(),
        );
        assert!(
            matches!(&d, Decision::WaitingForMains { why, .. } if why.contains("boot id b1 then, b2 now")),
            "{d:?}"
        );
        let d = decide(
            &report(true, "b2", "inactive"),
            &mut m,
            Some((true, String::new())),
            now(),
        );
        assert!(matches!(d, Decision::Start { run: 1, .. }), "{d:?}");
        // One check without an answer is not a power event (a loaded box missing one
        // connection); a second in a row is; an answer in between starts the count again.
        let mut m = Memory::default();
        decide(&report(true, "b1", "active"), &mut m, None, now());
        for _ in 0..3 {
            let d = decide(&report(false, "", ""), &mut m, None, now());
            assert!(matches!(d, Decision::NotAnswering(_)), "{d:?}");
            assert!(!d.posts_after(Some("healthy")));
            assert_eq!(
                decide(&report(true, "b1", "active"), &mut m, None, now()),
                Decision::Healthy
            );
        }
        decide(&report(false, "", ""), &mut m, None, now());
        let d = decide(&report(false, "", ""), &mut m, None, now());
        assert!(
            matches!(&d, Decision::Start { why, run: 1 } if why.contains("does not answer")),
            "{d:?}"
        );
    }

    #[test]
    fn failed_runs_back_off_doubling_and_stop_at_three() {
        let mut m = Memory::default();
        decide(&report(true, "b1", "active"), &mut m, None, now());
        let first = Duration::from_secs(600);
        let mut t = now();
        for run in 1..=MAX_RUNS {
            let d = decide(&report(true, "b2", "failed"), &mut m, None, t);
            assert_eq!(
                d,
                Decision::Start {
                    why: m.event.as_ref().unwrap().why.clone(),
                    run
                }
            );
            started(&mut m);
            let post = finished(&mut m, "rb", 1, first, t).unwrap();
            if run < MAX_RUNS {
                let wait = backoff(first, run);
                assert!(
                    post.contains(&format!("next try in {}", crate::plan::fmt_duration(wait))),
                    "{post}"
                );
                let d = decide(
                    &report(true, "b2", "failed"),
                    &mut m,
                    None,
                    t + chrono::Duration::seconds(1),
                );
                assert!(
                    matches!(d, Decision::BackingOff { runs, .. } if runs == run),
                    "{d:?}"
                );
                t += chrono::Duration::from_std(wait).unwrap() + chrono::Duration::seconds(1);
            } else {
                assert!(post.contains("waiting for a person"), "{post}");
            }
        }
        assert_eq!(backoff(first, 1), first);
        assert_eq!(backoff(first, 2), first * 2);
        assert_eq!(backoff(first, 3), first * 4);
        let d = decide(
            &report(true, "b2", "failed"),
            &mut m,
            None,
            t + chrono::Duration::days(1),
        );
        assert!(
            matches!(d, Decision::WaitingForPerson { runs: 3, .. }),
            "{d:?}"
        );
        // Seen healthy: the event is over.
        assert_eq!(
            decide(&report(true, "b2", "active"), &mut m, None, t),
            Decision::Healthy
        );
        assert!(m.event.is_none());
        assert_eq!(backoff(first, u32::MAX), first.saturating_mul(1 << 16));
    }

    #[test]
    fn a_run_that_succeeded_on_a_box_still_not_healthy_is_not_repeated_at_once() {
        let mut m = Memory::default();
        decide(&report(true, "b1", "active"), &mut m, None, now());
        let d = decide(&report(true, "b2", "inactive"), &mut m, None, now());
        assert!(matches!(d, Decision::Start { run: 1, .. }), "{d:?}");
        started(&mut m);
        assert_eq!(
            finished(&mut m, "rb", 0, Duration::from_secs(600), now()),
            None
        );
        let d = decide(
            &report(true, "b2", "inactive"),
            &mut m,
            None,
            now() + chrono::Duration::seconds(1),
        );
        assert!(matches!(d, Decision::BackingOff { runs: 1, .. }), "{d:?}");
        assert_eq!(
            decide(&report(true, "b2", "active"), &mut m, None, now()),
            Decision::Healthy
        );
        assert!(m.event.is_none());
    }

    #[test]
    fn posts_only_on_changes_that_matter() {
        assert!(!Decision::Healthy.posts_after(None));
        assert!(!Decision::Healthy.posts_after(Some("start_run:1")));
        assert!(Decision::Healthy.posts_after(Some("degraded:x")));
        assert!(!Decision::RunInProgress("x".into()).posts_after(None));
        assert!(Decision::Degraded(vec![]).posts_after(None));
    }
}
