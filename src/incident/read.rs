//! Reading a journal back: one JSON object a line (`src/journal.rs`), tolerantly. A line cut by
//! a crash, a garbled line or an event kind this build does not know is noted and skipped;
//! everything else stands.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::model::{End, Mark, MarkKind, Phase, Probe, Run, Step};
use crate::engine::event::{Event, StepOutcome};

/// The runs in a journal's text (usually one; a journal given twice with `--journal` holds
/// several), and the lines that could not be used.
pub fn parse(text: &str) -> (Vec<Run>, Vec<String>) {
    let mut problems = Vec::new();
    let mut segments: Vec<Vec<Rec>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let rec = match record(line) {
            Ok(r) => r,
            Err(why) => {
                problems.push(format!("line {n}: {why}"));
                continue;
            }
        };
        if matches!(rec.kind, Kind::Started(_)) {
            segments.push(Vec::new());
        }
        match segments.last_mut() {
            Some(seg) => seg.push(rec),
            None => problems.push(format!(
                "line {n}: an event before any `run_started`, ignored"
            )),
        }
    }
    let runs = segments.into_iter().filter_map(build).collect();
    (runs, problems)
}

/// `run_started`, read leniently: a mode this build does not know (a `drill`) still reads.
#[derive(Debug, Deserialize)]
struct Started {
    run_id: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    runbook: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    sha256: String,
    #[serde(default)]
    budget: f64,
    #[serde(default)]
    steps: usize,
    #[serde(default)]
    phases: usize,
    #[serde(default)]
    resumed_from: Option<String>,
    #[serde(default)]
    first_step: usize,
    #[serde(default)]
    targets: Vec<TargetName>,
    /// An overlay's files (`run_started.files`), read for the state key; a file whose role this
    /// build does not know is left out.
    #[serde(default)]
    files: Vec<Value>,
}

impl Started {
    /// The state key of the runbook this run was of.
    fn key(&self) -> String {
        let files: Vec<(crate::runbook::Role, std::path::PathBuf)> = self
            .files
            .iter()
            .filter_map(|f| {
                let role = serde_json::from_value(f.get("role")?.clone()).ok()?;
                Some((role, std::path::PathBuf::from(f.get("path")?.as_str()?)))
            })
            .collect();
        crate::plan::state_key(&self.runbook, files.iter().map(|(r, p)| (*r, p.as_path())))
    }
}

#[derive(Debug, Deserialize)]
struct TargetName {
    name: String,
}

#[derive(Debug)]
enum Kind {
    Started(Box<Started>),
    Event(Box<Event>),
    /// `gate_probe`: one probe of a gate, passed or failed.
    Probe {
        step: usize,
        passed: bool,
        detail: Option<String>,
    },
    /// `remedy…`: a gate's remedy was applied.
    Remedy {
        step: Option<usize>,
        action: String,
        detail: Option<String>,
    },
}

#[derive(Debug)]
struct Rec {
    kind: Kind,
    ts: Option<DateTime<Utc>>,
    at: Option<f64>,
}

fn record(line: &str) -> Result<Rec, String> {
    let v: Value = serde_json::from_str(line)
        .map_err(|e| format!("not JSON ({e}); a line cut by a crash mid-write?"))?;
    let Some(obj) = v.as_object() else {
        return Err("not a JSON object".into());
    };
    let Some(tag) = obj.get("event").and_then(Value::as_str) else {
        return Err("no `event` field".into());
    };
    let ts = obj
        .get("ts")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let at = obj
        .get("at")
        .and_then(Value::as_f64)
        .filter(|a| a.is_finite());
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
    let step = obj
        .get("step")
        .and_then(Value::as_u64)
        .and_then(|s| usize::try_from(s).ok());
    let kind = match tag {
        "run_started" => Kind::Started(Box::new(
            serde_json::from_value(v.clone()).map_err(|e| format!("`run_started`: {e}"))?,
        )),
        "gate_probe" => Kind::Probe {
            step: step.ok_or("`gate_probe` without a step")?,
            passed: obj
                .get("ok")
                .or_else(|| obj.get("passed"))
                .and_then(Value::as_bool)
                .ok_or("`gate_probe` without `ok`")?,
            detail: text("detail").or_else(|| text("line")),
        },
        // the unit back after a kill or restart: its new main pid, seconds after the remedy
        "remedy_restarted" => Kind::Remedy {
            step,
            action: "back".to_owned(),
            detail: obj.get("new_pid").and_then(Value::as_u64).map(|pid| {
                let after = obj
                    .get("after")
                    .and_then(Value::as_f64)
                    .filter(|a| a.is_finite())
                    .map(|a| format!(" after {a:.1}s"))
                    .unwrap_or_default();
                format!(
                    "{} active again with main pid {pid}{after}",
                    text("unit").unwrap_or_else(|| "the unit".to_owned())
                )
            }),
        },
        t if t.starts_with("remedy") => Kind::Remedy {
            step,
            action: text("remedy")
                .or_else(|| text("action"))
                .unwrap_or_else(|| t.to_owned()),
            detail: text("detail")
                .or_else(|| text("message"))
                .or_else(|| text("reason")),
        },
        _ => match serde_json::from_value::<Event>(v.clone()) {
            Ok(e) => Kind::Event(Box::new(e)),
            Err(e) => return Err(format!("`{tag}` not understood ({e}), skipped")),
        },
    };
    Ok(Rec { kind, ts, at })
}

/// Give every record a place on the timeline: its own `at`, or one estimated from the wall
/// clock against the nearest record that has both.
fn place(recs: &[Rec]) -> Vec<f64> {
    let anchors: Vec<(usize, f64, DateTime<Utc>)> = recs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r.at?, r.ts?)))
        .collect();
    let mut out = Vec::with_capacity(recs.len());
    let mut last = 0.0f64;
    for (i, r) in recs.iter().enumerate() {
        let at = r.at.or_else(|| {
            let ts = r.ts?;
            // The anchors are in order: the last one before `i`, else the first after it.
            let k = anchors.partition_point(|(j, _, _)| *j < i);
            let (_, a, t) = k
                .checked_sub(1)
                .and_then(|k| anchors.get(k))
                .or_else(|| anchors.get(k))?;
            let delta = ts.signed_duration_since(*t).num_milliseconds() as f64 / 1000.0;
            Some((a + delta).max(0.0))
        });
        let at = at.unwrap_or(last);
        last = at;
        out.push(at);
    }
    out
}

fn build(mut recs: Vec<Rec>) -> Option<Run> {
    let Kind::Started(st) = &recs.first()?.kind else {
        return None;
    };
    if st.resumed_from.is_none() && recs[0].at.is_none() {
        recs[0].at = Some(0.0);
    }
    let ats = place(&recs);
    let Kind::Started(st) = &recs[0].kind else {
        return None;
    };
    let mut run = Run {
        run_id: st.run_id.clone(),
        mode: st.mode.clone(),
        runbook: st.runbook.clone(),
        key: st.key(),
        path: st.path.clone(),
        sha256: st.sha256.clone(),
        budget: st.budget,
        steps_total: st.steps,
        phases_total: st.phases,
        resumed_from: st.resumed_from.clone(),
        first_step: st.first_step,
        date: recs[0].ts,
        start_at: ats[0],
        targets: st.targets.iter().map(|t| t.name.clone()).collect(),
        phases: Vec::new(),
        steps: Vec::new(),
        marks: Vec::new(),
        end: None,
    };
    for (rec, at) in recs.iter().zip(ats).skip(1) {
        match &rec.kind {
            Kind::Started(_) => {}
            Kind::Probe {
                step,
                passed,
                detail,
            } => {
                if let Some(s) = run.steps.iter_mut().rev().find(|s| s.number == *step) {
                    s.probes.push(Probe {
                        at,
                        passed: *passed,
                        detail: detail.clone(),
                    });
                }
            }
            Kind::Remedy {
                step,
                action,
                detail,
            } => run.marks.push(Mark {
                at,
                step: *step,
                what: MarkKind::Remedy {
                    action: action.clone(),
                    detail: detail.clone(),
                },
            }),
            Kind::Event(e) => apply(&mut run, e, at),
        }
    }
    Some(run)
}

fn apply(run: &mut Run, e: &Event, at: f64) {
    let mark = |run: &mut Run, step: Option<usize>, what: MarkKind| {
        run.marks.push(Mark { at, step, what });
    };
    match e {
        // `gate_probe` lines are read as probes before the typed events (see `Kind::Probe`)
        Event::RunStarted { .. } | Event::StepProgress { .. } | Event::GateProbe { .. } => {}
        // `remedy_*` lines are read as marks before the typed events (see `Kind::Remedy`); a
        // drill's measurements belong to the drill's own table.
        Event::RemedyApplied { .. }
        | Event::RemedyRestarted { .. }
        | Event::DrillMeasured { .. } => {}
        Event::Connected {
            target, reconnect, ..
        } => {
            if *reconnect {
                mark(
                    run,
                    None,
                    MarkKind::Reconnected {
                        target: target.clone(),
                    },
                );
            }
        }
        Event::BootIdChanged { target, old, new } => mark(
            run,
            None,
            MarkKind::BootIdChanged {
                target: target.clone(),
                old: old.clone(),
                new: new.clone(),
            },
        ),
        Event::ConnectionLost { target, error } => mark(
            run,
            None,
            MarkKind::ConnectionLost {
                target: target.clone(),
                error: error.clone(),
            },
        ),
        Event::PhaseStarted {
            phase,
            name,
            window_start,
            window_end,
            at,
        } => run.phases.push(Phase {
            number: *phase,
            name: name.clone(),
            window_start: *window_start,
            window_end: *window_end,
            started: *at,
            ended: None,
            result: None,
            overran: false,
        }),
        Event::PhaseOverrun { phase, .. } => {
            if let Some(p) = run.phases.iter_mut().rev().find(|p| p.number == *phase) {
                p.overran = true;
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
            let found = run.phases.iter().rposition(|p| p.number == *phase);
            let i = found.unwrap_or_else(|| {
                run.phases.push(Phase {
                    number: *phase,
                    name: name.clone(),
                    window_start: *window_start,
                    window_end: *window_end,
                    started: *started,
                    ended: None,
                    result: None,
                    overran: false,
                });
                run.phases.len() - 1
            });
            let p = &mut run.phases[i];
            p.started = *started;
            p.ended = Some(*at);
            p.result = Some(*result);
            p.overran |= *result != StepOutcome::Skipped && *at > *window_end + 0.5;
        }
        Event::StepStarted {
            step,
            phase,
            name,
            kind,
            target,
            mutates,
            command,
            at,
            ..
        } => run.steps.push(Step {
            number: *step,
            phase: *phase,
            name: name.clone(),
            kind: Some(*kind),
            target: target.clone(),
            mutates: *mutates,
            command: command.clone(),
            started: Some(*at),
            duration: None,
            outcome: None,
            exit: None,
            reason: None,
            probes: Vec::new(),
            waited: None,
        }),
        Event::StepFinished {
            step,
            phase,
            name,
            outcome,
            exit,
            duration,
            at,
            reason,
            waited,
            ..
        } => {
            let open = run
                .steps
                .iter()
                .rposition(|s| s.number == *step && s.outcome.is_none());
            let i = open.unwrap_or_else(|| {
                let started = (*outcome != StepOutcome::Skipped).then_some(at - duration);
                run.steps.push(Step {
                    number: *step,
                    phase: *phase,
                    name: name.clone(),
                    kind: None,
                    target: String::new(),
                    mutates: false,
                    command: None,
                    started,
                    duration: None,
                    outcome: None,
                    exit: None,
                    reason: None,
                    probes: Vec::new(),
                    waited: None,
                });
                run.steps.len() - 1
            });
            let s = &mut run.steps[i];
            s.duration = Some(duration.max(0.0));
            s.outcome = Some(*outcome);
            s.exit = *exit;
            s.reason = reason.clone();
            s.waited = waited.filter(|w| w.is_finite() && *w >= 0.0);
        }
        Event::Rewound {
            reason, from_step, ..
        } => mark(
            run,
            Some(*from_step),
            MarkKind::Warning {
                message: format!("starting again: {reason}"),
            },
        ),
        Event::Verified { ok: true, .. } => {}
        Event::Verified {
            ok: false, units, ..
        } => mark(
            run,
            None,
            MarkKind::Warning {
                message: format!(
                    "end check failed: {}",
                    units
                        .iter()
                        .filter(|u| !u.healthy)
                        .map(|u| format!("{} {}", u.unit, u.state))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            },
        ),
        Event::Warning { step, message } => mark(
            run,
            *step,
            MarkKind::Warning {
                message: message.clone(),
            },
        ),
        Event::Notified {
            channel, ok, error, ..
        } => mark(
            run,
            None,
            MarkKind::Notified {
                channel: channel.clone(),
                ok: *ok,
                error: error.clone(),
            },
        ),
        Event::AbortProcedure { step, reason, .. } => mark(
            run,
            Some(*step),
            MarkKind::AbortProcedure {
                reason: reason.clone(),
            },
        ),
        Event::RunFinished {
            outcome,
            at,
            budget,
            failed_step,
            message,
            resume,
            ..
        } => {
            if *budget > 0.0 {
                run.budget = *budget;
            }
            run.end = Some(End {
                outcome: *outcome,
                at: *at,
                failed_step: *failed_step,
                message: message.clone(),
                resume: resume.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::MarkKind;

    /// A gate with probes and a remedy (event kinds a later engine writes), a drill's mode, and
    /// events without `at` placed by their wall-clock time.
    const JOURNAL: &str = r#"{"event":"run_started","run_id":"r1","mode":"drill","runbook":"spark","path":"s.yaml","sha256":"ab","budget":600.0,"steps":1,"phases":1,"resumed_from":null,"first_step":1,"targets":[{"name":"spark","destination":"spark.local","port":null}],"ts":"2026-11-22T05:00:00.000Z"}
{"event":"phase_started","phase":1,"name":"Start","window_start":0.0,"window_end":60.0,"at":0.5,"ts":"2026-11-22T05:00:00.500Z"}
{"event":"step_started","step":1,"phase":1,"name":"start vllm","kind":"start","target":"spark","mutates":true,"command":"systemctl start vllm","timeout":300.0,"at":1.0,"ts":"2026-11-22T05:00:01.000Z"}
{"event":"gate_probe","step":1,"ok":false,"detail":"503 loading","at":11.0,"ts":"2026-11-22T05:00:11.000Z"}
{"event":"gate_probe","step":1,"ok":false,"detail":"timed out","ts":"2026-11-22T05:00:21.000Z"}
{"event":"remedy_applied","step":1,"remedy":"kill","detail":"MainPID 4242 killed","at":22.0,"ts":"2026-11-22T05:00:22.000Z"}
{"event":"connection_lost","target":"spark","error":"broken pipe","ts":"2026-11-22T05:00:30.000Z"}
{"event":"connected","target":"spark","destination":"spark.local","boot_id":"b2","reconnect":true,"ts":"2026-11-22T05:00:40.000Z"}
{"event":"boot_id_changed","target":"spark","old":"b1","new":"b2","ts":"2026-11-22T05:00:40.000Z"}
{"event":"gate_probe","step":1,"ok":true,"at":70.0,"ts":"2026-11-22T05:01:10.000Z"}
{"event":"step_finished","step":1,"phase":1,"name":"start vllm","outcome":"passed","exit":null,"duration":69.5,"at":70.5,"reason":"active and healthy","stdout":null,"stderr":null,"ts":"2026-11-22T05:01:10.500Z"}
{"event":"phase_finished","phase":1,"name":"Start","started":0.5,"at":71.0,"window_start":0.0,"window_end":60.0,"result":"passed","ts":"2026-11-22T05:01:11.000Z"}
{"event":"run_finished","outcome":"success","exit_code":0,"at":71.5,"budget":600.0,"failed_step":null,"message":"Recovered.","resume":null,"ts":"2026-11-22T05:01:11.500Z"}
"#;

    #[test]
    fn the_engines_remedy_events_read_as_marks_in_words() {
        let line = |e: Event| serde_json::to_string(&e).unwrap();
        let text = [
            JOURNAL.lines().next().unwrap().to_owned(),
            line(Event::RemedyApplied {
                step: 1,
                unit: "vllm.service".into(),
                action: "kill".into(),
                failures: 3,
                old_pid: Some(367),
                message: "SIGKILL of vllm.service's main pid 367".into(),
            }),
            line(Event::RemedyRestarted {
                step: 1,
                unit: "vllm.service".into(),
                old_pid: Some(367),
                new_pid: 412,
                after: 6.24,
            }),
        ]
        .join("\n");
        let (runs, problems) = parse(&text);
        assert!(problems.is_empty(), "{problems:?}");
        let marks: Vec<&MarkKind> = runs[0].marks.iter().map(|m| &m.what).collect();
        assert!(
            matches!(marks[0], MarkKind::Remedy { action, detail: Some(d) } if action == "kill" && d.contains("pid 367")),
            "{marks:?}"
        );
        assert!(
            matches!(marks[1], MarkKind::Remedy { action, detail: Some(d) } if action == "back" && d == "vllm.service active again with main pid 412 after 6.2s"),
            "{marks:?}"
        );
    }

    #[test]
    fn probes_remedies_and_reboots_are_read_and_placed_on_the_timeline() {
        let (runs, problems) = parse(JOURNAL);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(runs.len(), 1);
        let r = &runs[0];
        assert_eq!(r.mode, "drill");
        assert_eq!(r.kind_word(), "drill");
        let probes: Vec<(f64, bool)> = r.steps[0].probes.iter().map(|p| (p.at, p.passed)).collect();
        // the second probe has no `at`: 10 s after the first one on the wall clock
        assert_eq!(probes, [(11.0, false), (21.0, false), (70.0, true)]);
        let marks: Vec<(f64, &MarkKind)> = r.marks.iter().map(|m| (m.at, &m.what)).collect();
        assert!(matches!(marks[0], (22.0, MarkKind::Remedy { action, .. }) if action == "kill"));
        assert!(matches!(marks[1], (30.0, MarkKind::ConnectionLost { .. })));
        assert!(matches!(marks[2], (40.0, MarkKind::Reconnected { .. })));
        assert!(matches!(marks[3], (40.0, MarkKind::BootIdChanged { new, .. }) if new == "b2"));
        assert!(r.phases[0].overran, "71 s in a window ending at 60 s");
    }

    #[test]
    fn the_report_shows_them() {
        let (runs, problems) = parse(JOURNAL);
        let r = crate::incident::Report {
            journal: "j.jsonl".into(),
            incident: crate::incident::Incident {
                segments: runs,
                problems,
            },
            baselines: Vec::new(),
            generated: chrono::DateTime::UNIX_EPOCH,
        };
        let md = crate::incident::markdown(&r);
        assert!(md.contains("| 3 (1 passed, 2 failed) |"), "{md}");
        assert!(
            md.contains("**remedy (step 1): kill: MainPID 4242 killed**"),
            "{md}"
        );
        assert!(
            md.contains("**spark REBOOTED: boot id b1 is now b2**"),
            "{md}"
        );
        let svg = crate::incident::html(&r);
        assert_eq!(
            svg.matches("probe FAILED").count(),
            2,
            "failed probes as crosses"
        );
        assert_eq!(svg.matches("probe passed</title>").count(), 1);
        assert!(svg.contains("remedy kill: MainPID 4242 killed</title>"));
        assert!(svg.contains("spark rebooted</text>"));
        assert!(svg.contains("OVERRAN its window by 11s"));
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "\n\n",
            "{",
            "[]",
            "{\"event\":5}",
            "{\"event\":\"run_started\"}",
            "{\"event\":\"step_finished\",\"step\":1}",
            "{\"event\":\"run_started\",\"run_id\":\"x\",\"ts\":\"not a time\"}\n{\"event\":\"gate_probe\",\"step\":99,\"ok\":true}\n{\"event\":\"step_finished\",\"step\":1,\"phase\":1,\"name\":\"n\",\"outcome\":\"passed\",\"exit\":null,\"duration\":-5.0,\"at\":1e308,\"reason\":null,\"stdout\":null,\"stderr\":null}",
        ] {
            let (runs, _) = parse(text);
            for r in runs {
                let inc = crate::incident::Incident {
                    segments: vec![r],
                    problems: Vec::new(),
                };
                let rep = crate::incident::Report {
                    journal: "j".into(),
                    incident: inc,
                    baselines: Vec::new(),
                    generated: chrono::DateTime::UNIX_EPOCH,
                };
                let _ = crate::incident::markdown(&rep);
                let _ = crate::incident::html(&rep);
            }
        }
    }
}
