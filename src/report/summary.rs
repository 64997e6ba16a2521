//! The end-of-run table: every phase against its window, then the total against the budget.

use console::measure_text_width;

use super::fmt::{self, clock, duration, fit, span, window};
use crate::engine::event::{Event, Mode, RunOutcome, Sink, StepOutcome};
use crate::incident::TimeSplit;

/// Collects events; `render` gives the table once the run has finished (or as far as it got).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    mode: Option<Mode>,
    resumed: bool,
    budget: f64,
    steps: usize,
    phases: usize,
    rows: Vec<Row>,
    outcomes: Vec<StepOutcome>,
    end: Option<(RunOutcome, f64)>,
    /// Each started step's kind, for where the time went.
    kinds: Vec<(usize, crate::runbook::model::Kind)>,
    /// (kind, seconds, seconds before its last attempt) of every step that ran.
    ran: Vec<(crate::runbook::model::Kind, f64, f64)>,
    /// Where this run's timeline began (later than 0 for a resumed run).
    first_at: Option<f64>,
    /// Every remedy a gate applied, in order, with the unit's return when it was seen.
    remedies: Vec<Remedy>,
}

/// A gate's remedy, for the lines under the table: which unit was healed, how.
#[derive(Debug, Clone)]
struct Remedy {
    step: usize,
    unit: String,
    action: String,
    failures: u32,
    old_pid: Option<u64>,
    message: String,
    /// The new main pid and seconds after the remedy (a `kill` or `restart` seen through).
    back: Option<(u64, f64)>,
}

impl Remedy {
    /// `Remedy step 11 vllm-qwen36.service: kill after 3 failed probes, main pid 367 → 412
    /// (active again after 6.2s)`.
    fn line(&self) -> String {
        let head = format!("Remedy step {} {}", self.step, self.unit);
        if self.action == "run" {
            return format!("{head}: {}", self.message);
        }
        let probes = if self.failures == 1 {
            "probe"
        } else {
            "probes"
        };
        let mut l = format!(
            "{head}: {} after {} failed {probes}",
            self.action, self.failures
        );
        match (self.old_pid, self.back) {
            (Some(old), Some((new, after))) => l.push_str(&format!(
                ", main pid {old} → {new} (active again after {after:.1}s)"
            )),
            (None, Some((new, after))) => l.push_str(&format!(
                ", new main pid {new} (active again after {after:.1}s)"
            )),
            (Some(old), None) => l.push_str(&format!(
                ", main pid {old}; not seen active again with a new one"
            )),
            (None, None) => l.push_str("; not seen active again with a new main pid"),
        }
        l
    }
}

#[derive(Debug, Clone)]
struct Row {
    phase: usize,
    name: String,
    window_start: f64,
    window_end: f64,
    started: f64,
    ended: Option<f64>,
    result: Option<StepOutcome>,
    overran: bool,
}

impl Summary {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once `RunFinished` has been seen.
    pub fn is_finished(&self) -> bool {
        self.end.is_some()
    }

    /// The table, the step counts and the total against the budget: plain text, aligned columns,
    /// no escape codes, every line ending in a newline.
    pub fn render(&self) -> String {
        self.render_within(usize::MAX)
    }

    /// [`render`](Self::render) with the table cut to `width` columns where it can be: long phase
    /// names give way first (never below 16 columns).
    pub fn render_within(&self, width: usize) -> String {
        // A drill has no phases, steps or budget: its table is the drill's own (`crate::drill`).
        if self.mode == Some(Mode::Drill) {
            return match self.end {
                Some((_, at)) => format!("Drill {}\n", duration(at)),
                None => "Drill unfinished\n".to_owned(),
            };
        }
        let mut table: Vec<[String; 6]> = vec![[
            "#".into(),
            "Phase".into(),
            "Window".into(),
            "Actual".into(),
            "Took".into(),
            "Result".into(),
        ]];
        let first_seen = self.rows.iter().map(|r| r.phase).min();
        if self.resumed
            && let Some(first) = first_seen
        {
            for n in 1..first {
                table.push(blank_row(n, "(done in the earlier run)"));
            }
        }
        for (i, r) in self.rows.iter().enumerate() {
            // a phase the engine left without saying so ended when the next one began
            let next = self.rows.get(i + 1).map(|n| n.started);
            let end = r.ended.or(next).or(self.end.map(|(_, at)| at));
            let actual = match end {
                Some(e) => format!("{}-{}", clock(r.started), clock(e)),
                None => format!("{}-", clock(r.started)),
            };
            let took = end.map(|e| duration(e - r.started)).unwrap_or_default();
            table.push([
                r.phase.to_string(),
                r.name.clone(),
                window(r.window_start, r.window_end),
                actual,
                took,
                match (r.result, next) {
                    (None, Some(_)) => phase_result(Some(StepOutcome::Passed), r.overran),
                    _ => self.result_word(r),
                },
            ]);
        }
        let last_seen = self.rows.iter().map(|r| r.phase).max().unwrap_or(0);
        for n in last_seen + 1..=self.phases {
            table.push(blank_row(n, "(not reached)"));
        }

        let mut widths = [0usize; 6];
        for row in &table {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(measure_text_width(cell));
            }
        }
        let others: usize = widths.iter().sum::<usize>() - widths[1] + 2 * 5;
        let name_width = widths[1].min(width.saturating_sub(others).max(16));
        if name_width < widths[1] {
            widths[1] = name_width;
            for row in &mut table {
                row[1] = fit(&row[1], name_width);
            }
        }
        let mut out = String::new();
        for row in &table {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                let pad = w - measure_text_width(cell);
                match i {
                    // numbers and durations right-aligned
                    0 | 4 => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(cell);
                    }
                    _ => {
                        line.push_str(cell);
                        line.push_str(&" ".repeat(pad));
                    }
                }
                line.push_str("  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if let Some(steps) = self.steps_line() {
            out.push_str(&steps);
            out.push('\n');
        }
        for r in &self.remedies {
            out.push_str(&r.line());
            out.push('\n');
        }
        if let Some(time) = self.time_line() {
            out.push_str(&time);
            out.push('\n');
        }
        out.push_str(&self.total_line());
        out.push('\n');
        out
    }

    /// `Time   waiting 3m02s, commands 41s, operator 1m10s, overhead 0.4s`: waiting on the box
    /// (`wait_ssh`, gates), commands, manual steps, and `recover`'s own time.
    fn time_line(&self) -> Option<String> {
        let (_, end) = self.end?;
        if self.ran.is_empty() {
            return None;
        }
        let wall = end - self.first_at.unwrap_or(0.0);
        let split = TimeSplit::with_retries(wall, self.ran.iter().copied());
        Some(format!("Time   {}", split.line()))
    }

    fn result_word(&self, r: &Row) -> String {
        let result = r.result.or(match self.end {
            Some((RunOutcome::Failed, _)) => Some(StepOutcome::Failed),
            Some((RunOutcome::Aborted, _)) => Some(StepOutcome::Aborted),
            Some((RunOutcome::Interrupted, _)) => Some(StepOutcome::Interrupted),
            Some((RunOutcome::Success, _)) => Some(StepOutcome::Passed),
            None => None,
        });
        phase_result(result, r.overran)
    }

    fn steps_line(&self) -> Option<String> {
        if self.steps == 0 && self.outcomes.is_empty() {
            return None;
        }
        let count = |o: StepOutcome| self.outcomes.iter().filter(|x| **x == o).count();
        let mut parts = Vec::new();
        for (o, word) in [
            (StepOutcome::Passed, "ok"),
            (StepOutcome::WouldRun, "would run"),
            (StepOutcome::FailedContinued, "failed and continued"),
            (StepOutcome::Failed, "FAILED"),
            (StepOutcome::Aborted, "ABORTED"),
            (StepOutcome::Interrupted, "interrupted"),
            (StepOutcome::Skipped, "skipped"),
        ] {
            let n = count(o);
            if n > 0 {
                parts.push(format!("{n} {word}"));
            }
        }
        let not_run = self.steps.saturating_sub(self.outcomes.len());
        if not_run > 0 {
            parts.push(format!("{not_run} not run"));
        }
        Some(format!("Steps  {}", parts.join(", ")))
    }

    fn total_line(&self) -> String {
        let budget = span(self.budget);
        let Some((outcome, at)) = self.end else {
            return format!("Unfinished: budget {budget}");
        };
        let noun = match self.mode {
            Some(Mode::Rehearse) => "Rehearsal",
            _ => "Total",
        };
        if self.budget <= 0.0 {
            return format!("{noun} {}", duration(at));
        }
        let left = self.budget - at;
        match outcome {
            _ if left < 0.0 => format!(
                "{noun} {} of {budget} budget (over budget by {})",
                duration(at),
                duration(-left)
            ),
            RunOutcome::Success => format!(
                "{noun} {} of {budget} budget ({} to spare)",
                duration(at),
                fmt::left(self.budget, at)
            ),
            _ => format!(
                "Stopped at {} of the {budget} budget ({} left)",
                duration(at),
                fmt::left(self.budget, at)
            ),
        }
    }

    fn row(&mut self, phase: usize) -> Option<&mut Row> {
        self.rows.iter_mut().rev().find(|r| r.phase == phase)
    }
}

/// A phase's result in a word or two: `ok`, `OVERRAN`, `FAILED`, `ABORTED, OVERRAN`, ...
pub(super) fn phase_result(result: Option<StepOutcome>, overran: bool) -> String {
    let word = match result {
        None => "running",
        Some(StepOutcome::Passed) | Some(StepOutcome::WouldRun) => {
            return if overran { "OVERRAN" } else { "ok" }.into();
        }
        Some(StepOutcome::Failed) => "FAILED",
        Some(StepOutcome::FailedContinued) => "ok, with failures",
        Some(StepOutcome::Aborted) => "ABORTED",
        Some(StepOutcome::Interrupted) => "interrupted",
        Some(StepOutcome::Skipped) => "skipped",
    };
    if overran {
        format!("{word}, OVERRAN")
    } else {
        word.into()
    }
}

fn blank_row(n: usize, what: &str) -> [String; 6] {
    [
        n.to_string(),
        what.into(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]
}

impl Sink for Summary {
    fn emit(&mut self, event: &Event) {
        match event {
            Event::RunStarted {
                mode,
                budget,
                steps,
                phases,
                resumed_from,
                ..
            } => {
                self.mode = Some(*mode);
                self.budget = *budget;
                self.steps = *steps;
                self.phases = *phases;
                self.resumed = resumed_from.is_some();
            }
            Event::PhaseStarted {
                phase,
                name,
                window_start,
                window_end,
                at,
            } => {
                self.first_at.get_or_insert(*at);
                self.rows.push(Row {
                    phase: *phase,
                    name: name.clone(),
                    window_start: *window_start,
                    window_end: *window_end,
                    started: *at,
                    ended: None,
                    result: None,
                    overran: false,
                })
            }
            Event::PhaseOverrun { phase, .. } => {
                if let Some(r) = self.row(*phase) {
                    r.overran = true;
                }
            }
            Event::PhaseFinished {
                phase,
                name,
                started,
                at,
                window_start,
                window_end,
                result,
            } => {
                if self.row(*phase).is_none() {
                    self.rows.push(Row {
                        phase: *phase,
                        name: name.clone(),
                        window_start: *window_start,
                        window_end: *window_end,
                        started: *started,
                        ended: None,
                        result: None,
                        overran: false,
                    });
                }
                if let Some(r) = self.row(*phase) {
                    r.started = *started;
                    r.ended = Some(*at);
                    r.result = Some(*result);
                    // a phase that ran past its window overran, whether or not it was told live
                    r.overran |= *result != StepOutcome::Skipped && *at > *window_end + 0.5;
                }
            }
            Event::StepStarted { step, kind, at, .. } => {
                self.first_at.get_or_insert(*at);
                self.kinds.push((*step, *kind));
            }
            Event::StepFinished {
                step,
                outcome,
                duration,
                waited,
                ..
            } => {
                self.outcomes.push(*outcome);
                let started = self.kinds.iter().rev().find(|(n, _)| n == step);
                if let Some((_, kind)) = started
                    && !matches!(outcome, StepOutcome::Skipped | StepOutcome::WouldRun)
                {
                    self.ran.push((*kind, *duration, waited.unwrap_or(0.0)));
                }
            }
            Event::RunFinished {
                outcome,
                at,
                budget,
                ..
            } => {
                self.end = Some((*outcome, *at));
                if *budget > 0.0 {
                    self.budget = *budget;
                }
            }
            Event::RemedyApplied {
                step,
                unit,
                action,
                failures,
                old_pid,
                message,
            } => self.remedies.push(Remedy {
                step: *step,
                unit: unit.clone(),
                action: action.clone(),
                failures: *failures,
                old_pid: *old_pid,
                message: message.clone(),
                back: None,
            }),
            Event::RemedyRestarted {
                step,
                unit,
                new_pid,
                after,
                ..
            } => {
                if let Some(r) = self
                    .remedies
                    .iter_mut()
                    .rev()
                    .find(|r| r.step == *step && r.unit == *unit && r.back.is_none())
                {
                    r.back = Some((*new_pid, *after));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::scenarios;

    fn summary(events: &[Event]) -> String {
        let mut s = Summary::new();
        for e in events {
            s.emit(e);
        }
        assert!(s.is_finished());
        s.render()
    }

    #[test]
    fn a_drill_has_no_table_only_its_time() {
        let mut s = scenarios::Script::new(Mode::Drill);
        s.push(Event::DrillMeasured {
            step: 11,
            unit: "vllm-qwen36.service".into(),
            restart: "on-failure".into(),
            old_pid: 367,
            new_pid: Some(412),
            restarted_after: Some(6.2),
            healthy_after: Some(20.4),
            n_restarts_before: Some(0),
            n_restarts_after: Some(1),
            passed: true,
            reason: None,
        });
        s.at = 21.0;
        let events = s.finish(RunOutcome::Success, "Drill finished.", None);
        assert_eq!(summary(&events), "Drill 21s\n");
    }

    #[test]
    fn clean_run_table() {
        let out = summary(&scenarios::clean_run());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "#  Phase                                  Window   Actual        Took  Result"
        );
        assert!(lines[1].starts_with("1  Power on and POST "), "{out}");
        assert!(
            lines[1].ends_with(" 0s-5m    00:00-02:56  2m56s  ok"),
            "{out}"
        );
        assert!(lines[3].starts_with("3  Start services in dependency order "));
        assert!(lines[3].ends_with("ok"));
        assert_eq!(lines[5], "Steps  20 ok");
        assert_eq!(
            lines[6],
            "Time   waiting 9m22s, commands 1m42s, operator 1m19s, overhead 0.0s"
        );
        assert_eq!(lines[7], "Total 12m24s of 30m budget (17m36s to spare)");
        assert_eq!(lines.len(), 8);
        assert!(!out.contains('\x1b'));
        // aligned: every column starts at the same place on every row
        let col = lines[0].find("Window").expect("header");
        for l in &lines[1..5] {
            assert_eq!(&l[col - 2..col], "  ", "{l}");
            assert_ne!(&l[col..col + 1], " ", "{l}");
        }
    }

    #[test]
    fn failure_stops_the_clock_and_lists_what_was_not_reached() {
        let out = summary(&scenarios::failure());
        assert!(out.contains("FAILED\n"), "{out}");
        assert!(out.contains("4  (not reached)\n"), "{out}");
        assert!(out.contains("Steps  12 ok, 1 FAILED, 7 not run"), "{out}");
        let last = out.lines().last().unwrap_or_default();
        assert_eq!(last, "Stopped at 11m37s of the 30m budget (18m23s left)");
    }

    #[test]
    fn abort_and_interrupt_name_the_phase_that_ended_it() {
        let out = summary(&scenarios::abort());
        assert!(
            out.lines().nth(2).is_some_and(|l| l.ends_with("ABORTED")),
            "{out}"
        );
        assert!(out.contains("Steps  4 ok, 1 ABORTED, 15 not run"), "{out}");
        let out = summary(&scenarios::interrupted());
        assert!(
            out.lines()
                .nth(3)
                .is_some_and(|l| l.ends_with("interrupted")),
            "{out}"
        );
    }

    #[test]
    fn rehearsal_counts_would_run() {
        let out = summary(&scenarios::rehearsal());
        assert!(out.contains("Steps  9 ok, 11 would run"), "{out}");
        assert!(
            out.lines()
                .last()
                .is_some_and(|l| l == "Rehearsal 52s of 30m budget (29m08s to spare)"),
            "{out}"
        );
    }

    #[test]
    fn overrun_is_marked() {
        let out = summary(&scenarios::overrun());
        let phase3 = out.lines().nth(3).unwrap_or_default();
        assert!(phase3.ends_with("OVERRAN"), "{out}");
        assert!(phase3.contains("10m-20m"), "{out}");
        // Steps let through (`on_fail: continue`, a failed post) do not fail their phase: the
        // engine says the phase passed (tests/scenarios.rs ties this to a real run).
        let phase4 = out.lines().nth(4).unwrap_or_default();
        assert!(phase4.ends_with("1m58s  ok"), "{out}");
    }

    #[test]
    fn over_budget_and_resumed() {
        let mut s = Summary::new();
        let mut script =
            scenarios::Script::resumed(Mode::Run, Some("20261122T050100-spark-power"), 17, 1700.0);
        script
            .phase(4)
            .ok(17, 100.0)
            .ok(18, 44.6)
            .ok(19, 1.8)
            .ok(20, 0.6);
        script.end_phase(4, StepOutcome::Passed);
        for e in script.finish(RunOutcome::Success, "Recovered.", None) {
            s.emit(&e);
        }
        let out = s.render();
        assert!(out.contains("1  (done in the earlier run)"), "{out}");
        assert!(out.contains("3  (done in the earlier run)"), "{out}");
        assert!(out.contains("4  Smoke test and report"), "{out}");
        assert!(out.contains("Steps  4 ok, 16 not run"), "{out}");
        assert!(
            out.ends_with("Total 30m47s of 30m budget (over budget by 47s)\n"),
            "{out}"
        );
    }

    #[test]
    fn fits_a_narrow_terminal_by_cutting_names() {
        let s = {
            let mut s = Summary::new();
            for e in scenarios::failure() {
                s.emit(&e);
            }
            s
        };
        let wide = s.render();
        assert!(wide.contains("Filesystem check and page-cache flush"));
        let narrow = s.render_within(70);
        for l in narrow.lines() {
            assert!(measure_text_width(l) <= 70, "{l:?} in\n{narrow}");
        }
        assert!(
            narrow.contains("2  Filesystem check and page-cac…  5m-10m"),
            "{narrow}"
        );
    }

    #[test]
    fn snapshots() {
        for (name, events) in scenarios::all() {
            insta::assert_snapshot!(format!("summary_{name}"), summary(&events));
        }
    }
}
