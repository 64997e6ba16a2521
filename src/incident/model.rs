//! What happened in a run, as read back from its journal: phases against their windows, steps,
//! the marks on the timeline (reconnects, reboots, remedies), how it ended.

use chrono::{DateTime, Utc};

use crate::engine::event::{RunOutcome, StepOutcome};

/// One run segment: a `run_started` and what followed it, up to the next `run_started` or the
/// end of the file. Times are seconds on the run's timeline (`at`), which a resumed run
/// continues from where the earlier one stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub run_id: String,
    /// `run`, `rehearse`, or a kind this build does not know yet (a `drill`).
    pub mode: String,
    pub runbook: String,
    /// The runbook's state key (`crate::plan::state_key`): `name`, or `name@overlay` when the
    /// run was of an overlay; the history and the baselines keep to one key.
    pub key: String,
    /// The runbook file, as the run was given it.
    pub path: String,
    pub sha256: String,
    pub budget: f64,
    /// Steps and phases in the runbook.
    pub steps_total: usize,
    pub phases_total: usize,
    pub resumed_from: Option<String>,
    pub first_step: usize,
    /// Wall-clock time of `run_started`.
    pub date: Option<DateTime<Utc>>,
    /// Where the run's timeline stood when it started (0 unless resumed).
    pub start_at: f64,
    pub targets: Vec<String>,
    pub phases: Vec<Phase>,
    pub steps: Vec<Step>,
    pub marks: Vec<Mark>,
    pub end: Option<End>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub number: usize,
    pub name: String,
    pub window_start: f64,
    pub window_end: f64,
    pub started: f64,
    /// `None` when the journal stops inside the phase.
    pub ended: Option<f64>,
    pub result: Option<StepOutcome>,
    /// Ran past its window (told live, or found from the times).
    pub overran: bool,
}

impl Phase {
    /// How long it took, if it ended.
    pub fn took(&self) -> Option<f64> {
        self.ended.map(|e| e - self.started)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub number: usize,
    pub phase: usize,
    pub name: String,
    /// `run`, `wait_ssh`, `start`, ...; `None` for a step only seen finishing (a skipped one).
    pub kind: Option<crate::runbook::model::Kind>,
    pub target: String,
    pub mutates: bool,
    pub command: Option<String>,
    pub started: Option<f64>,
    pub duration: Option<f64>,
    /// `None` when the journal stops while the step runs.
    pub outcome: Option<StepOutcome>,
    pub exit: Option<i32>,
    pub reason: Option<String>,
    pub probes: Vec<Probe>,
    /// A retried step: seconds before its last attempt (waiting on the box).
    pub waited: Option<f64>,
}

impl Step {
    /// Where its bar ends on the timeline, if it finished.
    pub fn ended(&self) -> Option<f64> {
        Some(self.started? + self.duration?)
    }

    /// True for a step that really ran (not skipped, not a rehearsal's "would run").
    pub fn ran(&self) -> bool {
        self.started.is_some()
            && !matches!(
                self.outcome,
                Some(StepOutcome::Skipped) | Some(StepOutcome::WouldRun)
            )
    }
}

/// One probe of a gate (a `gate_probe` event).
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub at: f64,
    pub passed: bool,
    pub detail: Option<String>,
}

/// Something that happened at a moment, drawn as a mark on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// On the run's timeline; estimated from the wall clock for events that do not say.
    pub at: f64,
    pub step: Option<usize>,
    pub what: MarkKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MarkKind {
    ConnectionLost {
        target: String,
        error: String,
    },
    Reconnected {
        target: String,
    },
    /// The box rebooted under the run (or between an interrupted run and its resume).
    BootIdChanged {
        target: String,
        old: String,
        new: String,
    },
    /// A gate's remedy (kill, restart, a command), as a `remedy*` event records it.
    Remedy {
        action: String,
        detail: Option<String>,
    },
    Warning {
        message: String,
    },
    Notified {
        channel: String,
        ok: bool,
        error: Option<String>,
    },
    AbortProcedure {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct End {
    pub outcome: RunOutcome,
    pub at: f64,
    pub failed_step: Option<usize>,
    pub message: String,
    pub resume: Option<String>,
}

impl Run {
    /// Where the timeline stood last: the end, or the last thing the journal says.
    pub fn last_at(&self) -> f64 {
        if let Some(e) = &self.end {
            return e.at;
        }
        let steps = self
            .steps
            .iter()
            .filter_map(|s| s.ended().or(s.started))
            .fold(self.start_at, f64::max);
        let phases = self
            .phases
            .iter()
            .map(|p| p.ended.unwrap_or(p.started))
            .fold(steps, f64::max);
        self.marks.iter().map(|m| m.at).fold(phases, f64::max)
    }

    /// The kind of run in a word, for lists: `run`, `resumed run`, `rehearsal`, `drill`.
    pub fn kind_word(&self) -> String {
        match self.mode.as_str() {
            "rehearse" => "rehearsal".into(),
            "run" if self.resumed_from.is_some() => "resumed run".into(),
            other => other.to_owned(),
        }
    }

    /// How it ended, in a word: `success`, `failed`, `aborted`, `interrupted`, `unfinished`.
    pub fn result_word(&self) -> &'static str {
        match self.end.as_ref().map(|e| e.outcome) {
            Some(RunOutcome::Success) => "success",
            Some(RunOutcome::Failed) => "failed",
            Some(RunOutcome::Aborted) => "aborted",
            Some(RunOutcome::Interrupted) => "interrupted",
            None => "unfinished",
        }
    }
}

/// An incident: the run asked for, with the runs it resumed (oldest first), read from journals.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub segments: Vec<Run>,
    /// Journal lines that could not be used, with why: the report says so instead of failing.
    pub problems: Vec<String>,
}

impl Incident {
    /// The segment that was asked for (the newest).
    pub fn last(&self) -> &Run {
        // An Incident is only built with at least one segment.
        &self.segments[self.segments.len() - 1]
    }

    pub fn first(&self) -> &Run {
        &self.segments[0]
    }

    pub fn budget(&self) -> f64 {
        self.last().budget
    }

    /// Where the incident's timeline ended.
    pub fn end_at(&self) -> f64 {
        self.last().last_at()
    }

    /// Every step once, in order: where a resumed run skipped a step done earlier, the earlier
    /// segment's record of it.
    pub fn steps(&self) -> Vec<&Step> {
        let mut out: Vec<&Step> = Vec::new();
        let mut at: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
        for seg in &self.segments {
            for s in &seg.steps {
                match at.get(&s.number).copied() {
                    Some(i) if s.outcome == Some(StepOutcome::Skipped) && out[i].ran() => {}
                    Some(i) => out[i] = s,
                    None => {
                        at.insert(s.number, out.len());
                        out.push(s);
                    }
                }
            }
        }
        out.sort_by_key(|s| s.number);
        out
    }

    /// Every time step `number` was started, across the segments (an interrupted attempt and
    /// the resumed one).
    pub fn attempts(&self, number: usize) -> Vec<&Step> {
        self.segments
            .iter()
            .flat_map(|s| &s.steps)
            .filter(|s| s.number == number && s.started.is_some())
            .collect()
    }

    /// Every phase span in order (a phase split by an interruption appears once per segment).
    pub fn phases(&self) -> Vec<&Phase> {
        self.segments.iter().flat_map(|s| &s.phases).collect()
    }

    /// Every mark in order, with the seams where a resumed run picked up.
    pub fn marks(&self) -> Vec<&Mark> {
        let mut m: Vec<&Mark> = self.segments.iter().flat_map(|s| &s.marks).collect();
        m.sort_by(|a, b| a.at.total_cmp(&b.at));
        m
    }

    /// Moments where a resumed segment started, with the run id it resumed.
    pub fn resumes(&self) -> Vec<(f64, &str)> {
        self.segments
            .iter()
            .filter_map(|s| Some((s.start_at, s.resumed_from.as_deref()?)))
            .collect()
    }

    /// Seconds on the timeline the segments covered (a resumed run's wait for the operator
    /// between the segments is not on it).
    pub fn wall(&self) -> f64 {
        self.segments
            .iter()
            .map(|s| (s.last_at() - s.start_at).max(0.0))
            .sum()
    }
}
