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
//! Replayed: `clean_run`, `failure`, `abort`, `interrupted` (SIGINT), `rehearsal` (the real
//! `rehearse`) and `overrun` (a phase window of one second on the timeline). The reference runbook's `start` and
//! `drop_caches` steps need a real systemd and root; here they are `run` steps that print, or
//! not, as the scenario's step shows progress, or not. The box coming up is real: for the
//! scenarios whose `wait_ssh` shows failed attempts, sshd is down when the run starts and comes
//! up while the step waits.

mod common;

// `src/report/scenarios.rs` names the event types as `crate::engine::...`: here, the library's.
use recover::{engine, runbook};

// `all()` and the constants are the reporters'.
#[allow(dead_code)]
#[path = "../src/report/scenarios.rs"]
mod scenarios;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{Background, HttpServer, Sshd, dump, p, read_journal, tail, wait_for_event};
use serde_json::Value;

/// A step that passes and prints nothing.
const QUIET: &str = "run: \"true\"";

/// The vLLM stand-in: a gate's three progress lines.
const VLLM: &str = "run: |\n          \
                    echo 'unit activating; probe: connection refused'\n          \
                    echo 'unit active; probe: HTTP 503 Service Unavailable'\n          \
                    echo 'Loading safetensors checkpoint shards: 62% Completed'";

/// The reference runbook's windows.
const WINDOWS: [&str; 4] = ["0m-5m", "5m-10m", "10m-20m", "20m-30m"];

/// What a scenario changes in the runbook: the bodies of steps 5, 11, 13, 15 and 19 (their
/// lines after the first indented by eight spaces), the phase windows, and whether the box is
/// still booting when the run starts.
struct Shape {
    step_5: &'static str,
    step_11: &'static str,
    step_13: &'static str,
    step_15: &'static str,
    step_19: &'static str,
    windows: [&'static str; 4],
    /// sshd is down until `wait_ssh` has failed once (the scenario's step 3 shows progress).
    boots_late: bool,
    /// `rehearse` instead of `run`.
    rehearse: bool,
    /// What the webhook answers.
    hook_status: u16,
}

impl Shape {
    /// The clean run's runbook.
    fn clean() -> Shape {
        Shape {
            step_5: QUIET,
            step_11: VLLM,
            step_13: QUIET,
            step_15: QUIET,
            step_19: "http: { url: \"{{ vars.api }}/health\", expect: { status: 200 } }",
            windows: WINDOWS,
            boots_late: true,
            rehearse: false,
            hook_status: 200,
        }
    }
}

/// The runbook, shaped like `runbooks/spark-power.yaml` (`target`: the entry under `targets:`).
fn runbook(target: &str, api: &str, shape: &Shape) -> String {
    let Shape {
        step_5,
        step_11,
        step_13,
        step_15,
        step_19,
        windows: [w1, w2, w3, w4],
        ..
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
    window: {w1}
    steps:
      - name: Mains stable on the UPS
        manual: Check the UPS panel.
      - name: Power on the Spark
        manual: Press the power button.
      - wait_ssh: {{ every: 1s, timeout: 1m }}
  - name: Filesystem check and page-cache flush
    window: {w2}
    steps:
      - name: Last kernel messages
        {QUIET}
        mutates: false
      - name: kernel log has no filesystem or disk errors
        {step_5}
        mutates: false
      - name: Errors logged since boot
        {QUIET}
        mutates: false
      - name: Read-only filesystem check of the root device
        mutates: false
        run: |
          echo 'Pass 1: Checking inodes, blocks, and sizes'
          echo 'Pass 5: Checking group summary information'
      - name: drop the page cache (stand-in)
        {QUIET}
  - name: Start services in dependency order
    window: {w3}
    steps:
      - name: start tailscale.service (stand-in)
        {QUIET}
      - name: start prometheus-node-exporter.service (stand-in)
        {QUIET}
      - name: start vllm-qwen36.service (stand-in)
        {step_11}
      - name: start sglang-mistral.service (stand-in)
        {QUIET}
      - name: start dispatcher.service (stand-in)
        {step_13}
      - name: start mcp-server.service (stand-in)
        {QUIET}
      - name: start caddy.service (stand-in)
        {step_15}
      - name: Tailscale identity is the Spark's
        {QUIET}
        mutates: false
  - name: Smoke test and report
    window: {w4}
    steps:
      - name: Smoke test, a real chat completion
        http: {{ url: "{{{{ vars.api }}}}/v1/chat/completions", method: POST, json: {{ model: m }}, expect: {{ status: 200 }} }}
      - name: Prometheus sees the Spark again
        http: {{ url: "{{{{ vars.api }}}}/api/v1/query", expect: {{ status: 200 }} }}
      - name: Public MCP endpoint answers from outside
        {step_19}
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

/// Runs the runbook of `shape` to its end; `during` acts on the run while it goes (the
/// runbook's directory, the run, the target's sshd). None when OpenSSH is not installed (the
/// test is skipped).
fn real_run(shape: &Shape, during: impl FnOnce(&Path, &Background, &mut Sshd)) -> Option<Real> {
    let mut sshd = Sshd::start_or_skip()?;
    let api = HttpServer::start();
    for (method, path) in [
        ("POST", "/v1/chat/completions"),
        ("GET", "/api/v1/query"),
        ("GET", "/health"),
    ] {
        api.respond(method, path, 200, "{}");
    }
    api.respond("GET", "/bad-gateway", 502, "502 Bad Gateway");
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", shape.hook_status, "ok");
    let dir = tempfile::tempdir().expect("a tempdir");
    let rb = dir.path().join("spark-power.yaml");
    fs::write(
        &rb,
        runbook(&sshd.runbook_target_yaml("spark"), &api.url(), shape)
            .replace("@DIR@", &dir.path().display().to_string()),
    )
    .expect("write the runbook");
    let journal = dir.path().join("journal.jsonl");

    if shape.boots_late {
        sshd.stop();
    }
    let args: Vec<&str> = if shape.rehearse {
        vec!["rehearse", p(&rb), "--json"]
    } else {
        vec!["run", p(&rb), "--yes", "--json", "--journal", p(&journal)]
    };
    let mut bg = Background::start(
        dir.path(),
        &args,
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
    during(dir.path(), &bg, &mut sshd);
    let status = bg
        .wait(Duration::from_secs(90))
        .unwrap_or_else(|| panic!("recover still runs: {}", tail(&bg.output(), 60)));
    let journal = if shape.rehearse {
        common::only_journal(dir.path())
    } else {
        journal
    };
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
    let Some(real) = real_run(&Shape::clean(), |_, _, _| {}) else {
        return;
    };
    assert_eq!(real.code, Some(0), "{}", dump(&real.emitted));
    assert_same_sequence("clean_run", &scenarios::clean_run(), &real);
}

#[test]
fn a_failed_start_emits_the_failure_scenario() {
    let Some(real) = real_run(
        &Shape {
            step_13: "run: |\n          \
                      echo 'unit activating; probe: connection refused'\n          \
                      echo 'dispatcher.service failed (start-limit-hit)' >&2\n          \
                      exit 1",
            ..Shape::clean()
        },
        |_, _, _| {},
    ) else {
        return;
    };
    assert_eq!(real.code, Some(1), "{}", dump(&real.emitted));
    assert_same_sequence("failure", &scenarios::failure(), &real);
}

/// The scenario's step 5 prints nothing on stdout (no progress): its kernel lines go to stderr
/// here, where `abort_if` finds them.
#[test]
fn a_kernel_error_emits_the_abort_scenario() {
    let Some(real) = real_run(
        &Shape {
            step_5: "run: |\n          \
                     echo '[   12.348811] EXT4-fs error (device nvme0n1p1): ext4_find_entry:1455' >&2\n        \
                     abort_if: { stderr: \"EXT4-fs error|I/O error\" }\n        \
                     abort_message: The kernel reported filesystem or disk errors after the power cut.",
            boots_late: false,
            ..Shape::clean()
        },
        |_, _, _| {},
    ) else {
        return;
    };
    assert_eq!(real.code, Some(3), "{}", dump(&real.emitted));
    assert_same_sequence("abort", &scenarios::abort(), &real);
}

/// Waits (a minute at most) until the run has printed a line of step `n`.
fn wait_for_progress(bg: &Background, n: u64) {
    assert!(
        wait_for_event(bg.stdout_path(), Duration::from_secs(60), |e| {
            e["event"] == "step_progress" && e["step"] == n
        }),
        "step {n} never printed: {}",
        bg.output()
    );
}

/// SIGINT while the vLLM stand-in's gate is waiting (its command prints, then hangs).
#[test]
fn ctrl_c_during_a_start_emits_the_interrupted_scenario() {
    let Some(real) = real_run(
        &Shape {
            step_11: "run: |\n          \
                      echo 'unit active; probe: HTTP 503 Service Unavailable'\n          \
                      exec sleep 300",
            ..Shape::clean()
        },
        |_, bg, _| {
            wait_for_progress(bg, 11);
            // SAFETY: kill(2) on our own child's pid.
            assert_eq!(unsafe { libc::kill(bg.pid(), libc::SIGINT) }, 0);
        },
    ) else {
        return;
    };
    assert_eq!(real.code, Some(130), "{}", dump(&real.emitted));
    assert_same_sequence("interrupted", &scenarios::interrupted(), &real);
}

/// `rehearse` on the healthy box: the steps that change state are shown, not run; step 13's
/// command names a path the target lacks (the rehearsal's warning); the others pass.
#[test]
fn a_rehearsal_emits_the_rehearsal_scenario() {
    let Some(real) = real_run(
        &Shape {
            step_13: "run: cat /etc/recover-scenario/routes.toml",
            boots_late: false,
            rehearse: true,
            ..Shape::clean()
        },
        |_, _, _| {},
    ) else {
        return;
    };
    assert_eq!(real.code, Some(0), "{}", dump(&real.emitted));
    assert_same_sequence("rehearsal", &scenarios::rehearsal(), &real);
}

/// Phase 3's window closes (35s-36s on the timeline; phases 1 and 2 are done long before)
/// while step 15 waits; the box's sshd dies and comes back during step 11 (the connection lost
/// and made again); step 19's endpoint answers 502 (`on_fail: continue`) and the webhook 500.
/// A boot id cannot change on loopback: the scenario's `boot_id_changed` is left out of the
/// comparison (the lab VM's power cut proves it, `tests/lab_e2e.rs`).
#[test]
fn a_phase_past_its_window_emits_the_overrun_scenario() {
    let Some(real) = real_run(
        &Shape {
            step_11: "run: |\n          \
                      [ -e @DIR@/rebooted ] && exit 0\n          \
                      echo 'unit active; probe: HTTP 503 Service Unavailable'\n          \
                      while [ ! -e @DIR@/rebooted ]; do sleep 0.1; done\n        \
                      retry: { every: 1s, timeout: 1m }\n        \
                      timeout: 2m",
            step_15: "run: |\n          \
                      echo 'unit active; probe: HTTP 502'\n          \
                      while [ ! -e @DIR@/overran ]; do sleep 0.1; done\n        \
                      timeout: 2m",
            step_19: "http: { url: \"{{ vars.api }}/bad-gateway\", expect: { status: 200 } }\n        \
                      on_fail: continue",
            windows: ["0s-30s", "30s-35s", "35s-36s", "36s-30m"],
            hook_status: 500,
            ..Shape::clean()
        },
        |dir, bg, sshd| {
            wait_for_progress(bg, 11);
            sshd.stop();
            fs::write(dir.join("rebooted"), "").unwrap();
            sshd.start_again();
            assert!(
                wait_for_event(bg.stdout_path(), Duration::from_secs(60), |e| {
                    e["event"] == "phase_overrun"
                }),
                "phase 3 never overran: {}",
                bg.output()
            );
            fs::write(dir.join("overran"), "").unwrap();
        },
    ) else {
        return;
    };
    assert_eq!(real.code, Some(0), "{}", dump(&real.emitted));
    let mut scenario = scenarios::overrun();
    scenario.retain(|e| !matches!(e, engine::Event::BootIdChanged { .. }));
    assert_same_sequence("overrun", &scenario, &real);
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
