//! The reporters' hand-written scenarios (`src/report/scenarios.rs`) against what the engine
//! really emits: the real `recover` binary runs a runbook shaped like the reference one (four
//! phases, twenty steps) against a real sshd and real HTTP servers on 127.0.0.1, and the
//! sequence of the events it emits (`--json`) must be the scenario's, event for event; its
//! journal holds the same sequence without the progress lines (the journal does not keep them).
//!
//! What is compared, per event: its kind, the step or phase it belongs to, and how a step,
//! phase or run ended (`notified`: whether the post went through). Progress lines are one
//! "some progress" mark per uninterrupted run of them: how many there are depends on timing
//! and on how the output arrives.
//!
//! Replayed: `clean_run`, `failure` and `abort`. The reference runbook's `start` and
//! `drop_caches` steps need a real systemd and root; here they are `run` steps that print, or
//! not, as the scenario's step shows progress, or not. The box coming up is real: for the
//! scenarios whose `wait_ssh` shows failed attempts, sshd is down when the run starts and comes
//! up while the step waits.

mod common;

// `src/report/scenarios.rs` names the event types as `crate::engine::...`: here, the library's.
use recover::engine;

// Only the clean run, the failure and the abort are replayed here.
#[allow(dead_code)]
#[path = "../src/report/scenarios.rs"]
mod scenarios;

use std::fs;
use std::time::Duration;

use common::{Background, HttpServer, Sshd, dump, p, read_journal, tail, wait_for_event};
use serde_json::Value;

/// A step that passes and prints nothing.
const QUIET: &str = "run: \"true\"";

/// What a scenario changes in the runbook: the bodies of steps 5 and 13 (their lines after the
/// first indented by ten spaces), and whether the box is still booting when the run starts.
struct Shape {
    step_5: &'static str,
    step_13: &'static str,
    /// sshd is down until `wait_ssh` has failed once (the scenario's step 3 shows progress).
    boots_late: bool,
}

/// The runbook, shaped like `runbooks/spark-power.yaml` (`target`: the entry under `targets:`).
fn runbook(target: &str, api: &str, shape: &Shape) -> String {
    let Shape {
        step_5, step_13, ..
    } = shape;
    format!(
        r#"name: spark-power
title: Power failure recovery, the reporters' scenarios for real
budget: 30m
targets:
{target}vars:
  api: {api}
notify:
  operators:
    webhook: "{{{{ env.RECOVER_WEBHOOK }}}}"
    format: slack
abort:
  notify: operators
  message: OFF THE 30-MINUTE TIMELINE. Follow the long procedure.
phases:
  - name: Power on and POST
    window: 0m-5m
    steps:
      - name: Mains stable on the UPS
        manual: Check the UPS panel.
      - name: Power on the Spark
        manual: Press the power button.
      - wait_ssh: {{ every: 1s, timeout: 1m }}
  - name: Filesystem check and page-cache flush
    window: 5m-10m
    steps:
      - name: Last kernel messages
        {QUIET}
      - name: kernel log has no filesystem or disk errors
        {step_5}
      - name: Errors logged since boot
        {QUIET}
      - name: Read-only filesystem check of the root device
        run: |
          echo 'Pass 1: Checking inodes, blocks, and sizes'
          echo 'Pass 5: Checking group summary information'
      - name: drop the page cache (stand-in)
        {QUIET}
  - name: Start services in dependency order
    window: 10m-20m
    steps:
      - name: start tailscale.service (stand-in)
        {QUIET}
      - name: start prometheus-node-exporter.service (stand-in)
        {QUIET}
      - name: start vllm-qwen36.service (stand-in)
        run: |
          echo 'unit activating; probe: connection refused'
          echo 'unit active; probe: HTTP 503 Service Unavailable'
          echo 'Loading safetensors checkpoint shards: 62% Completed'
      - name: start sglang-mistral.service (stand-in)
        {QUIET}
      - name: start dispatcher.service (stand-in)
        {step_13}
      - name: start mcp-server.service (stand-in)
        {QUIET}
      - name: start caddy.service (stand-in)
        {QUIET}
      - name: Tailscale identity is the Spark's
        {QUIET}
  - name: Smoke test and report
    window: 20m-30m
    steps:
      - name: Smoke test, a real chat completion
        http: {{ url: "{{{{ vars.api }}}}/v1/chat/completions", method: POST, json: {{ model: m }}, expect: {{ status: 200 }} }}
      - name: Prometheus sees the Spark again
        http: {{ url: "{{{{ vars.api }}}}/api/v1/query", expect: {{ status: 200 }} }}
      - name: Public MCP endpoint answers from outside
        http: {{ url: "{{{{ vars.api }}}}/health", expect: {{ status: 200 }} }}
      - notify: operators
        message: "Spark is back after {{{{ run.elapsed }}}}."
"#
    )
}

/// One mark per event, as compared (see the module's doc).
fn marks(events: &[Value]) -> Vec<String> {
    let mut marks: Vec<String> = Vec::new();
    for e in events {
        let kind = e["event"].as_str().unwrap_or("(no kind)");
        let mut mark = kind.to_owned();
        for key in ["phase", "step"] {
            if let Some(n) = e[key].as_u64()
                && !(kind.starts_with("step_") && key == "phase")
            {
                mark.push_str(&format!(" {key} {n}"));
            }
        }
        for key in ["outcome", "result", "ok"] {
            if !e[key].is_null() {
                mark.push_str(&format!(" {key} {}", e[key]));
            }
        }
        if kind == "step_progress" && marks.last() == Some(&mark) {
            continue;
        }
        marks.push(mark);
    }
    marks
}

/// The marks of a hand-written scenario, through the journal's JSON shape.
fn scenario_marks(events: &[engine::Event]) -> Vec<String> {
    let json: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).expect("an event serialises"))
        .collect();
    marks(&json)
}

/// What a real run emitted.
struct Real {
    /// The `--json` stream: every event, progress included.
    emitted: Vec<Value>,
    journal: Vec<Value>,
    code: Option<i32>,
}

/// Runs the runbook of `shape` to its end. None when OpenSSH is not installed (the test is
/// skipped).
fn real_run(shape: &Shape) -> Option<Real> {
    let mut sshd = Sshd::start_or_skip()?;
    let api = HttpServer::start();
    for (method, path) in [
        ("POST", "/v1/chat/completions"),
        ("GET", "/api/v1/query"),
        ("GET", "/health"),
    ] {
        api.respond(method, path, 200, "{}");
    }
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", 200, "ok");
    let dir = tempfile::tempdir().expect("a tempdir");
    let rb = dir.path().join("spark-power.yaml");
    fs::write(
        &rb,
        runbook(&sshd.runbook_target_yaml("spark"), &api.url(), shape),
    )
    .expect("write the runbook");
    let journal = dir.path().join("journal.jsonl");

    if shape.boots_late {
        sshd.stop();
    }
    let mut bg = Background::start(
        dir.path(),
        &["run", p(&rb), "--yes", "--json", "--journal", p(&journal)],
        &[("RECOVER_WEBHOOK", &hook.url_for("/hook"))],
    );
    if shape.boots_late {
        assert!(
            wait_for_event(bg.stdout_path(), Duration::from_secs(30), |e| {
                e["event"] == "step_progress" && e["step"] == 3
            }),
            "wait_ssh never reported a failed attempt: {}",
            bg.output()
        );
        sshd.start_again();
    }
    let status = bg
        .wait(Duration::from_secs(90))
        .unwrap_or_else(|| panic!("recover still runs: {}", tail(&bg.output(), 60)));
    assert!(
        journal.exists(),
        "no journal ({status}): {}",
        tail(&bg.output(), 60)
    );
    Some(Real {
        emitted: read_journal(bg.stdout_path()),
        journal: read_journal(&journal),
        code: status.code(),
    })
}

/// The real run emitted the scenario's marks, line for line, and journaled them all but the
/// progress lines.
fn assert_same_sequence(name: &str, scenario: &[engine::Event], real: &Real) {
    let (want, got) = (scenario_marks(scenario), marks(&real.emitted));
    let journaled: Vec<String> = got
        .iter()
        .filter(|m| !m.starts_with("step_progress"))
        .cloned()
        .collect();
    assert_eq!(
        marks(&real.journal),
        journaled,
        "the journal is not the emitted events without progress:\n{}",
        dump(&real.journal)
    );
    if want == got {
        return;
    }
    let first = want
        .iter()
        .zip(&got)
        .position(|(w, g)| w != g)
        .unwrap_or(want.len().min(got.len()));
    let show = |v: &[String]| {
        v.iter()
            .map(|m| format!("  {m}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "the engine no longer emits what scenarios::{name}() says (src/report/scenarios.rs); \
         first difference at event {first}: scenario {:?}, real run {:?}\n\
         --- scenario ---\n{}\n--- real run ---\n{}\n--- emitted ---\n{}",
        want.get(first),
        got.get(first),
        show(&want),
        show(&got),
        dump(&real.emitted)
    );
}

#[test]
fn a_clean_run_emits_the_clean_run_scenario() {
    let Some(real) = real_run(&Shape {
        step_5: QUIET,
        step_13: QUIET,
        boots_late: true,
    }) else {
        return;
    };
    assert_eq!(real.code, Some(0), "{}", dump(&real.emitted));
    assert_same_sequence("clean_run", &scenarios::clean_run(), &real);
}

#[test]
fn a_failed_start_emits_the_failure_scenario() {
    let Some(real) = real_run(&Shape {
        step_5: QUIET,
        step_13: "run: |\n          \
                  echo 'unit activating; probe: connection refused'\n          \
                  echo 'dispatcher.service failed (start-limit-hit)' >&2\n          \
                  exit 1",
        boots_late: true,
    }) else {
        return;
    };
    assert_eq!(real.code, Some(1), "{}", dump(&real.emitted));
    assert_same_sequence("failure", &scenarios::failure(), &real);
}

/// The scenario's step 5 prints nothing on stdout (no progress): its kernel lines go to stderr
/// here, where `abort_if` finds them.
#[test]
fn a_kernel_error_emits_the_abort_scenario() {
    let Some(real) = real_run(&Shape {
        step_5: "run: |\n          \
                 echo '[   12.348811] EXT4-fs error (device nvme0n1p1): ext4_find_entry:1455' >&2\n        \
                 abort_if: { stderr: \"EXT4-fs error|I/O error\" }\n        \
                 abort_message: The kernel reported filesystem or disk errors after the power cut.",
        step_13: QUIET,
        boots_late: false,
    }) else {
        return;
    };
    assert_eq!(real.code, Some(3), "{}", dump(&real.emitted));
    assert_same_sequence("abort", &scenarios::abort(), &real);
}

#[test]
fn the_comparison_sees_a_missing_or_extra_event() {
    let clean = scenarios::clean_run();
    let real: Vec<Value> = clean
        .iter()
        .map(|e| serde_json::to_value(e).expect("an event serialises"))
        .collect();
    assert_eq!(marks(&real), scenario_marks(&clean));
    // Repeated progress is one mark; progress where the scenario has none is one more.
    let mut more_progress = real.clone();
    let at = more_progress
        .iter()
        .position(|e| e["event"] == "step_progress")
        .expect("the clean run has progress");
    more_progress.insert(at, more_progress[at].clone());
    assert_eq!(marks(&more_progress), scenario_marks(&clean));
    let mut new_progress = real.clone();
    new_progress.insert(
        3,
        serde_json::json!({ "event": "step_progress", "step": 1, "line": "new" }),
    );
    assert_eq!(new_progress[2]["event"], "step_started");
    assert_ne!(marks(&new_progress), scenario_marks(&clean));
    let mut without_notified = real.clone();
    without_notified.retain(|e| e["event"] != "notified");
    assert_ne!(marks(&without_notified), scenario_marks(&clean));
    let mut other_outcome = real;
    let last = other_outcome.len() - 1;
    other_outcome[last]["outcome"] = "failed".into();
    assert_ne!(marks(&other_outcome), scenario_marks(&clean));
}
