//! For no terminal: one plain, timestamped line per event, no escape codes. Continuation lines
//! (a failure's output, the abort procedure, the summary) carry the same prefix, so every line
//! of the log says when it was written.

use std::collections::HashMap;
use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};

use super::Summary;
use super::fmt::{clean, clock, duration, one_line, span, tail, window};
use super::summary::phase_result;
use crate::engine::event::{Event, Mode, RunOutcome, Sink, StepOutcome};

/// How often a running step's latest output line is repeated, at most.
const PROGRESS_EVERY_SECS: i64 = 5;
/// How many lines of a failed step's output are shown.
const OUTPUT_TAIL: usize = 5;

type Clock = Box<dyn FnMut() -> DateTime<Utc> + Send>;

pub struct Plain<W: Write + Send = io::Stderr> {
    out: W,
    clock: Clock,
    summary: Summary,
    phases: usize,
    /// The last timeline position an event told, and the wall time it was told at.
    anchor: Option<(DateTime<Utc>, f64)>,
    progress: HashMap<usize, DateTime<Utc>>,
    commands: HashMap<usize, String>,
}

impl Plain<io::Stderr> {
    /// Lines on stderr, stamped with the system clock.
    pub fn stderr() -> Self {
        Self::new(io::stderr())
    }
}

impl<W: Write + Send> Plain<W> {
    pub fn new(out: W) -> Self {
        Self::with_clock(out, Utc::now)
    }

    /// Lines stamped by `clock` instead of the system clock (tests use a fixed one).
    pub fn with_clock(out: W, clock: impl FnMut() -> DateTime<Utc> + Send + 'static) -> Self {
        Plain {
            out,
            clock: Box::new(clock),
            summary: Summary::new(),
            phases: 0,
            anchor: None,
            progress: HashMap::new(),
            commands: HashMap::new(),
        }
    }

    /// The writer back, e.g. the `Vec<u8>` a test wrote into.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn lines(&mut self, now: DateTime<Utc>, at: f64, lines: &[String]) {
        let stamp = format!(
            "{} [{:>6}]",
            now.to_rfc3339_opts(SecondsFormat::Secs, true),
            clock(at)
        );
        let mut buf = String::new();
        for l in lines {
            buf.push_str(&stamp);
            if !l.is_empty() {
                buf.push(' ');
                buf.push_str(l);
            }
            buf.push('\n');
        }
        // A log that cannot be written must not stop a recovery.
        let _ = self.out.write_all(buf.as_bytes());
        let _ = self.out.flush();
    }

    fn render(&mut self, event: &Event, now: DateTime<Utc>) -> Vec<String> {
        match event {
            Event::RunStarted {
                run_id,
                mode,
                runbook,
                path,
                sha256,
                budget,
                steps,
                phases,
                resumed_from,
                unattended,
                started_by,
                first_step,
                origin_step: _,
                targets,
                files,
            } => {
                self.phases = *phases;
                let what = match mode {
                    Mode::Run => "run",
                    Mode::Rehearse => "rehearsal",
                    Mode::Drill => "drill",
                };
                let size = if *mode == Mode::Drill {
                    format!("{steps} unit(s) to drill")
                } else {
                    format!("{steps} steps in {phases} phases, budget {}", span(*budget))
                };
                let mut l = format!(
                    "{what} {run_id} started: {runbook} ({path}, sha256 {}), {size}",
                    sha256.get(..12).unwrap_or(sha256),
                );
                for t in targets {
                    let port = t.port.map(|p| format!(":{p}")).unwrap_or_default();
                    l.push_str(&format!(", target {} {}{port}", t.name, t.destination));
                }
                for f in files.iter().filter(|f| f.path != *path) {
                    l.push_str(&format!(
                        ", {} {} (sha256 {})",
                        f.role.label(),
                        f.path,
                        f.sha256.get(..12).unwrap_or(&f.sha256)
                    ));
                }
                if let Some(from) = resumed_from {
                    l.push_str(&format!(", continuing run {from} from step {first_step}"));
                }
                let mut v = vec![l];
                match (unattended, started_by) {
                    (true, Some(by)) => v.push(format!("  | unattended, started by {by}")),
                    (true, None) => v.push("  | unattended: nobody at a terminal".into()),
                    (false, Some(by)) => v.push(format!("  | started by {by}")),
                    (false, None) => {}
                }
                if *mode == Mode::Rehearse {
                    v.push("  | rehearsal: read-only steps run; steps that change state are shown, not run".into());
                }
                v
            }
            Event::Connected {
                target,
                destination,
                boot_id,
                reconnect,
            } => vec![format!(
                "{} to {target} ({destination}), boot id {}",
                if *reconnect {
                    "reconnected"
                } else {
                    "connected"
                },
                one_line(boot_id)
            )],
            Event::BootIdChanged { target, old, new } => vec![format!(
                "WARNING {target} rebooted: boot id was {}, now {}",
                one_line(old),
                one_line(new)
            )],
            Event::ConnectionLost { target, error } => {
                vec![format!("connection to {target} lost: {}", one_line(error))]
            }
            Event::PhaseStarted {
                phase,
                name,
                window_start,
                window_end,
                ..
            } => vec![format!(
                "phase {phase}/{} start: {name} (window {})",
                self.phases,
                window(*window_start, *window_end)
            )],
            Event::PhaseOverrun {
                phase,
                name,
                window_end,
                ..
            } => vec![format!(
                "phase {phase} OVERRAN its window (ended at {}): {name}",
                span(*window_end)
            )],
            Event::PhaseFinished {
                phase,
                started,
                at,
                window_start,
                window_end,
                result,
                ..
            } => {
                let overran = *result != StepOutcome::Skipped && *at > *window_end + 0.5;
                vec![format!(
                    "phase {phase} {} ({}, {}-{}, window {})",
                    phase_result(Some(*result), overran),
                    duration(at - started),
                    clock(*started),
                    clock(*at),
                    window(*window_start, *window_end)
                )]
            }
            Event::StepStarted {
                step,
                name,
                kind,
                target,
                command,
                timeout,
                ..
            } => {
                if let Some(c) = command {
                    self.commands.insert(*step, c.clone());
                }
                self.progress.remove(step);
                // Where it runs: the management host's own kinds name no target.
                use crate::runbook::model::Kind;
                let on = match kind {
                    Kind::Manual
                    | Kind::Local
                    | Kind::Http
                    | Kind::Notify
                    | Kind::Ups
                    | Kind::PowerOn => String::new(),
                    Kind::Run
                    | Kind::WaitSsh
                    | Kind::DropCaches
                    | Kind::PreviousBoot
                    | Kind::Start
                        if !target.is_empty() =>
                    {
                        format!(" on {target}")
                    }
                    Kind::Run
                    | Kind::WaitSsh
                    | Kind::DropCaches
                    | Kind::PreviousBoot
                    | Kind::Start => String::new(),
                };
                vec![format!(
                    "step {step} start: {name} ({kind}{on}, timeout {})",
                    span(*timeout)
                )]
            }
            // the progress line of the same probe says it; the journal keeps the probes
            Event::GateProbe { .. } => Vec::new(),
            Event::StepProgress { step, line } => {
                let due = self.progress.get(step).is_none_or(|last| {
                    now.signed_duration_since(*last).num_seconds() >= PROGRESS_EVERY_SECS
                });
                if !due {
                    return Vec::new();
                }
                self.progress.insert(*step, now);
                vec![format!("step {step} | {}", one_line(line))]
            }
            Event::StepFinished {
                step,
                outcome,
                exit,
                duration: took,
                reason,
                stdout,
                stderr,
                ..
            } => {
                self.progress.remove(step);
                let exit = exit.map(|e| format!("exit {e}, ")).unwrap_or_default();
                let reason_text = reason.as_deref().map(clean).unwrap_or_default();
                let mut reason_lines = reason_text.lines().filter(|l| !l.trim().is_empty());
                let first = reason_lines.next().map(|r| format!(": {}", r.trim()));
                let first = first.unwrap_or_default();
                let mut v = vec![match outcome {
                    // a passed gate says how: "active and healthy after 4m (12 probes); remedy: …"
                    StepOutcome::Passed => format!("step {step} ok ({}){first}", duration(*took)),
                    StepOutcome::Skipped => format!("step {step} skipped{first}"),
                    StepOutcome::WouldRun => {
                        let what = reason
                            .as_deref()
                            .or(self.commands.get(step).map(String::as_str))
                            .map(one_line)
                            .unwrap_or_default();
                        format!("step {step} would run: {what}")
                    }
                    StepOutcome::Interrupted => {
                        format!("step {step} interrupted ({exit}{}){first}", duration(*took))
                    }
                    o => format!(
                        "step {step} {} ({exit}{}){first}",
                        o.word(),
                        duration(*took)
                    ),
                }];
                if !matches!(outcome, StepOutcome::WouldRun) {
                    v.extend(reason_lines.map(|l| format!("  | {l}")));
                }
                if matches!(
                    outcome,
                    StepOutcome::Failed | StepOutcome::FailedContinued | StepOutcome::Aborted
                ) {
                    for (label, text) in [("stderr", stderr), ("stdout", stdout)] {
                        for l in tail(text.as_deref().unwrap_or(""), OUTPUT_TAIL) {
                            v.push(format!("  {label}| {l}"));
                        }
                    }
                }
                v
            }
            Event::DrillMeasured { unit, .. } => {
                vec![format!("DRILL: {unit}: {}", super::fmt::drilled(event))]
            }
            Event::RemedyApplied { step, message, .. } => {
                vec![format!("REMEDY (step {step}): {}", clean(message))]
            }
            Event::RemedyRestarted {
                step,
                unit,
                new_pid,
                after,
                ..
            } => vec![format!(
                "REMEDY (step {step}): {unit} active again with main pid {new_pid} after {after:.1}s"
            )],
            Event::Rewound { reason, .. } => vec![format!("STARTING AGAIN: {}", one_line(reason))],
            Event::Verified { ok, units, .. } => {
                let mut v = vec![if *ok {
                    format!(
                        "end check: all {} units the runbook starts are active and healthy",
                        units.len()
                    )
                } else {
                    "END CHECK FAILED: not every unit the runbook starts is healthy".to_owned()
                }];
                v.extend(units.iter().filter(|u| !u.healthy).map(|u| {
                    format!(
                        "  | {} (step {}): {}{}",
                        clean(&u.unit),
                        u.step,
                        one_line(&u.state),
                        u.probe
                            .as_deref()
                            .map(|p| format!(", probe: {}", one_line(p)))
                            .unwrap_or_default()
                    )
                }));
                v
            }
            Event::Warning { step, message } => {
                let on = step.map(|s| format!(" (step {s})")).unwrap_or_default();
                let text = clean(message);
                let mut lines = text.lines();
                let mut v = vec![format!("WARNING{on}: {}", lines.next().unwrap_or_default())];
                v.extend(lines.map(|l| format!("  | {l}")));
                v
            }
            Event::Notified {
                channel,
                ok,
                attempts,
                error,
            } => {
                let tries = if *attempts == 1 {
                    "1 attempt".to_owned()
                } else {
                    format!("{attempts} attempts")
                };
                if *ok {
                    vec![format!("notified {channel} ({tries})")]
                } else {
                    vec![format!(
                        "notify {channel} FAILED after {tries}: {}; the run goes on",
                        error.as_deref().map(one_line).unwrap_or_default()
                    )]
                }
            }
            Event::AbortProcedure {
                step,
                reason,
                step_message,
                message,
            } => {
                let mut v = vec![format!("ABORT at step {step}: {}", one_line(reason))];
                if let Some(m) = step_message {
                    v.extend(clean(m).trim_end().lines().map(|l| format!("  | {l}")));
                }
                v.push("  ===== ABORT PROCEDURE: do this now =====".into());
                v.extend(
                    clean(message)
                        .trim_end()
                        .lines()
                        .map(|l| format!("  | {l}")),
                );
                v.push("  ===== end of abort procedure =====".into());
                v
            }
            Event::RunFinished {
                outcome,
                exit_code,
                message,
                resume,
                ..
            } => {
                let mut v: Vec<String> = self.summary.render().lines().map(String::from).collect();
                let word = match outcome {
                    RunOutcome::Success => "OK",
                    RunOutcome::Failed => "FAILED",
                    RunOutcome::Aborted => "ABORTED",
                    RunOutcome::Interrupted => "INTERRUPTED",
                };
                v.push(format!(
                    "run finished: {word} (exit {exit_code}): {}",
                    one_line(message)
                ));
                if let Some(r) = resume {
                    v.push(format!("resume with: {r}"));
                }
                v
            }
        }
    }
}

impl<W: Write + Send> Sink for Plain<W> {
    fn emit(&mut self, event: &Event) {
        let now = (self.clock)();
        self.summary.emit(event);
        let at = match event.at() {
            Some(at) => {
                self.anchor = Some((now, at));
                at
            }
            None => match self.anchor {
                Some((then, at)) => {
                    at + (now.signed_duration_since(then).num_milliseconds() as f64 / 1000.0)
                        .max(0.0)
                }
                None => 0.0,
            },
        };
        let lines = self.render(event, now);
        if !lines.is_empty() {
            self.lines(now, at, &lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::TimeDelta;

    use super::*;
    use crate::report::scenarios;

    fn base() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T05:01:02Z")
            .expect("a valid time")
            .with_timezone(&Utc)
    }

    /// Feeds `events` with a wall clock that follows the run's timeline, as a real run's does.
    fn output(events: &[Event]) -> String {
        let now = Arc::new(Mutex::new(base()));
        let clock = {
            let now = now.clone();
            move || *now.lock().expect("clock")
        };
        let mut p = Plain::with_clock(Vec::new(), clock);
        for e in events {
            if let Some(at) = e.at() {
                *now.lock().expect("clock") =
                    base() + TimeDelta::milliseconds((at * 1000.0) as i64);
            }
            p.emit(e);
        }
        String::from_utf8(p.into_inner()).expect("utf-8")
    }

    fn position(out: &str, needle: &str) -> usize {
        out.find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in:\n{out}"))
    }

    #[test]
    fn no_escape_codes_and_every_line_stamped() {
        for (name, events) in scenarios::all() {
            let out = output(&events);
            assert!(!out.contains('\x1b'), "{name}: escape code in\n{out}");
            assert!(!out.is_empty(), "{name}");
            for l in out.lines() {
                assert!(
                    l.starts_with("2026-11-22T05:")
                        && l[20..].starts_with(" [")
                        && &l[28..29] == "]",
                    "{name}: unstamped line {l:?}"
                );
            }
        }
    }

    #[test]
    fn clean_run_reads_in_order() {
        let out = output(&scenarios::clean_run());
        let first = out.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "2026-11-22T05:01:02Z [ 00:00] run 20261122T050100-spark-power started: spark-power (runbooks/spark-power.yaml, sha256 2338aebae000), 20 steps in 4 phases, budget 30m, target spark ops@spark.local:22"
        );
        let order = [
            "phase 1/4 start: Power on and POST (window 0s-5m)",
            "step 1 start: Mains stable on the UPS (manual, timeout 15m)",
            "step 1 ok (48s)",
            "connected to spark (ops@spark.local), boot id 3f2a9c1d",
            "phase 2/4 start: Filesystem check and page-cache flush (window 5m-10m)",
            "step 4 start: Last kernel messages (run on spark, timeout 30s)",
            "step 4 ok (0.4s)",
            "step 11 start: start vllm-qwen36.service (start on spark, timeout 9m)",
            "step 11 ok (4m02s)",
            "notified operators (1 attempt)",
            "phase 4 ok (",
            "#  Phase",
            "Total ",
            "run finished: OK (exit 0): Recovered",
        ];
        let mut last = 0;
        for needle in order {
            let at = position(&out, needle);
            assert!(at >= last, "`{needle}` out of order in:\n{out}");
            last = at;
        }
        assert!(!out.contains("resume with"));
    }

    #[test]
    fn progress_lines_are_rate_limited_per_step() {
        let out = output(&scenarios::clean_run());
        // step 11 reports three lines in quick succession: only the first is shown
        assert_eq!(out.matches("step 11 | ").count(), 1, "{out}");
        assert!(out.contains("step 11 | unit activating; probe: connection refused"));

        let now = Arc::new(Mutex::new(base()));
        let clock = {
            let now = now.clone();
            move || *now.lock().expect("clock")
        };
        let mut p = Plain::with_clock(Vec::new(), clock);
        for (secs, line) in [(0, "a"), (4, "b"), (5, "c"), (6, "d"), (11, "e")] {
            *now.lock().expect("clock") = base() + TimeDelta::seconds(secs);
            p.emit(&Event::StepProgress {
                step: 7,
                line: line.into(),
            });
        }
        let out = String::from_utf8(p.into_inner()).expect("utf-8");
        let shown: Vec<&str> = out.lines().map(|l| &l[l.len() - 1..]).collect();
        assert_eq!(shown, ["a", "c", "e"], "{out}");
    }

    #[test]
    fn failure_says_why_and_how_to_resume() {
        let out = output(&scenarios::failure());
        assert!(out.contains(
            "step 13 FAILED (31s): dispatcher.service failed (start-limit-hit) before it became healthy"
        ), "{out}");
        assert!(out.contains("  | Nov 22 05:11:41 spark systemd[1]: dispatcher.service: Start request repeated too quickly."));
        assert!(out.contains("  stderr| curl: (7) Failed to connect to spark.local port 8080"));
        assert!(out.contains("  stdout| 503"));
        let finished = position(&out, "run finished: FAILED (exit 1): Step 13");
        let resume = position(
            &out,
            "resume with: recover run runbooks/spark-power.yaml --resume",
        );
        let summary = position(&out, "#  Phase");
        assert!(summary < finished && finished < resume, "{out}");
        assert!(out.trim_end().ends_with("--resume"));
    }

    #[test]
    fn abort_procedure_is_printed_whole() {
        let out = output(&scenarios::abort());
        assert!(out.contains("step 5 ABORT (exit 0, 0.3s): stdout matches /EXT4-fs error"));
        let start = position(&out, "===== ABORT PROCEDURE: do this now =====");
        let end = position(&out, "===== end of abort procedure =====");
        let block = &out[start..end];
        for l in scenarios::ABORT_MESSAGE.lines() {
            assert!(
                block.contains(&format!("  | {l}\n")),
                "missing {l:?} in\n{block}"
            );
        }
        assert!(out.contains("run finished: ABORTED (exit 3)"));
    }

    #[test]
    fn interrupted_run_prints_the_resume_command() {
        let out = output(&scenarios::interrupted());
        assert!(out.contains("step 11 interrupted (1m15s): interrupted by the operator"));
        assert!(out.contains("run finished: INTERRUPTED (exit 130)"));
        assert!(out.contains("resume with: recover run runbooks/spark-power.yaml --resume"));
    }

    #[test]
    fn rehearsal_shows_what_would_run() {
        let out = output(&scenarios::rehearsal());
        assert!(out.contains("rehearsal 20261122T050100-spark-power started"));
        assert!(out.contains("step 8 would run: sudo -n timeout -k 5s 120s sh -c 'sync && grep ^Cached: /proc/meminfo"));
        assert!(out.contains("step 11 would run: sudo -n timeout -k 5s 10s sh -c 'systemctl start --no-block vllm-qwen36.service'"));
        assert!(out.contains("step 11 start: start vllm-qwen36.service"));
        assert!(out.contains(
            "WARNING (step 13): /etc/dispatcher/routes.toml does not exist on the target"
        ));
    }

    #[test]
    fn overrun_is_said_when_it_happens() {
        let out = output(&scenarios::overrun());
        let overrun = position(
            &out,
            "phase 3 OVERRAN its window (ended at 20m): Start services in dependency order",
        );
        let step15 = position(&out, "step 15 ok");
        assert!(overrun < step15, "{out}");
        assert!(out.contains("[ 20:00] phase 3 OVERRAN"), "{out}");
        assert!(
            out.contains("phase 3 OVERRAN (17m13s, 03:43-20:57, window 10m-20m)"),
            "{out}"
        );
        assert!(out.contains("WARNING spark rebooted: boot id was 3f2a9c1d-6b7e-4c1a-9d2e-5f8a7b6c4d3e, now 77aa0b12-1c2d-4e5f-8a9b-0c1d2e3f4a5b"));
        assert!(out.contains(
            "notify operators FAILED after 3 attempts: HTTP 500 from the webhook; the run goes on"
        ));
        assert!(out.contains("step 19 failed, continuing (1m00s): no answer within 1m"));
    }

    #[test]
    fn snapshots() {
        for (name, events) in scenarios::all() {
            insta::assert_snapshot!(format!("plain_{name}"), output(&events));
        }
    }
}
