//! `recover drill` against a real sshd on 127.0.0.1, where no unit can be killed (no systemd
//! manages the units named here): its journal reads like a run's (mode `drill`) and shows in
//! `report --history`, a unit not killed leaves no record, and a run in progress refuses the
//! drill before anything is contacted. The kill itself, the record and "last drilled" in
//! `check` are proven on the lab VM (`tests/lab_heal.rs`, scenario `drill`).

mod common;

use std::time::Duration;

use common::{
    Background, Sshd, clean_command, events, eventually, journals_in, read_journal, require_tool,
    run_to_end,
};

/// A unit name no machine has: the drill can read no main process, so it kills nothing.
const ABSENT: &str = "recover-drill-test-absent.service";

fn runbook(dir: &std::path::Path, sshd: &Sshd, first: &str) -> std::path::PathBuf {
    let rb = dir.join("drilled.yaml");
    std::fs::write(
        &rb,
        format!(
            "name: drilled\nbudget: 5m\ntargets:\n{target}phases:\n  - name: All\n    window: 0m-5m\n    steps:\n{first}      - start: {ABSENT}\n        timeout: 20s\n        health: {{ run: \"true\", every: 1s, timeout: 10s }}\n",
            target = sshd.runbook_target_yaml("box"),
        ),
    )
    .unwrap();
    rb
}

#[test]
fn a_drill_journal_reads_as_a_drill_and_a_unit_not_killed_is_not_recorded() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rb = runbook(dir.path(), &sshd, "");
    let rbs = rb.to_str().unwrap();

    let ran = run_to_end(
        &state,
        &["drill", rbs, "--yes"],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    let row = ran
        .stdout
        .lines()
        .find(|l| l.starts_with(ABSENT))
        .unwrap_or_else(|| panic!("no row:\n{}", ran.stdout));
    assert!(
        row.contains("FAIL: could not kill its main process"),
        "{row}"
    );

    let journal = journals_in(&state)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("drilled-drill-"))
        .expect("a drill journal");
    let j = read_journal(&journal);
    let started = events(&j, "run_started");
    assert_eq!(started.len(), 1, "{j:?}");
    assert_eq!(started[0]["mode"], "drill");
    assert_eq!(started[0]["budget"], 0.0);
    let measured = events(&j, "drill_measured");
    assert_eq!(measured.len(), 1, "{j:?}");
    assert_eq!(measured[0]["unit"], ABSENT);
    assert_eq!(measured[0]["passed"], false);
    let finished = events(&j, "run_finished");
    assert_eq!(finished.len(), 1, "{j:?}");
    assert_eq!(finished[0]["outcome"], "failed");
    assert_eq!(finished[0]["exit_code"], 1);

    // Nothing was killed, so nothing is recorded: `check` still says "never drilled".
    assert!(
        !state.join("recover/drills/drilled.json").exists(),
        "a drill that killed nothing left a record"
    );
    let check = run_to_end(&state, &["check", rbs], &[], Duration::from_secs(30));
    assert_eq!(check.code, Some(0), "{}", check.context());
    assert!(
        check
            .stderr
            .contains(&format!("drill: never drilled: {ABSENT}")),
        "{}",
        check.stderr
    );

    // The history lists the drill, with its kind and result.
    let hist = run_to_end(
        &state,
        &["report", "--history", rbs],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(hist.code, Some(0), "{}", hist.context());
    let line = hist
        .stdout
        .lines()
        .find(|l| l.contains("| drill |"))
        .unwrap_or_else(|| panic!("no drill in the history:\n{}", hist.stdout));
    assert!(line.contains("failed"), "{line}");
}

#[test]
fn a_run_in_progress_refuses_the_drill_before_anything_is_contacted() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rb = runbook(dir.path(), &sshd, "      - run: sleep 30\n");
    let rbs = rb.to_str().unwrap();
    let run = Background::start(&state, &["run", rbs, "--yes"], &[]);
    // The run holds its lock once its first step has started.
    let step_started = || {
        journals_in(&state)
            .iter()
            .any(|p| !events(&read_journal(p), "step_started").is_empty())
    };
    assert!(
        eventually(Duration::from_secs(30), step_started),
        "the run never started its first step"
    );
    let ran = run_to_end(
        &state,
        &["drill", rbs, "--yes"],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(ran.code, Some(2), "{}", ran.context());
    assert!(
        ran.stderr.contains("another run holds the lock"),
        "{}",
        ran.stderr
    );
    assert!(
        !journals_in(&state)
            .iter()
            .any(|p| p.to_string_lossy().contains("-drill-")),
        "the refused drill wrote a journal"
    );
    drop(run);
}

/// `recover drill` at a terminal (a pseudo-terminal from util-linux `script`), `typed` on its
/// input; (exit code, what the terminal showed).
fn drill_at_a_terminal(
    state: &std::path::Path,
    rb: &str,
    typed: &str,
) -> Option<(Option<i32>, String)> {
    use std::io::{Read, Write};
    use std::process::Stdio;
    let script = require_tool(&["script"])?;
    let line = format!(
        "{} drill {rb} --unit {ABSENT}",
        env!("CARGO_BIN_EXE_recover")
    );
    let mut child = clean_command(script, state)
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(typed.as_bytes())
        .expect("type");
    let mut status = None;
    for _ in 0..600 {
        status = child.try_wait().expect("try_wait");
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let mut shown = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut shown);
    Some((status.and_then(|s| s.code()), shown))
}

#[test]
fn at_a_terminal_only_the_units_name_typed_is_consent() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rb = runbook(dir.path(), &sshd, "");
    let rbs = rb.to_str().unwrap();
    let Some((code, shown)) = drill_at_a_terminal(&state, rbs, "yes\n") else {
        return;
    };
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains(&format!("Type `{ABSENT}` to go on")) && shown.contains("Not confirmed."),
        "{shown}"
    );
    assert!(journals_in(&state).is_empty(), "a refused drill ran");
    let (code, shown) =
        drill_at_a_terminal(&state, rbs, &format!("{ABSENT}\n")).expect("script is there");
    // consent: the drill ran (and, with no systemd managing the unit, killed nothing)
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("could not kill its main process"), "{shown}");
    assert_eq!(journals_in(&state).len(), 1, "{shown}");
}
