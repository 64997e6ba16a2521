//! Trusted when nobody is watching (issue 10): the real `recover` binary against a real sshd
//! and real HTTP servers on 127.0.0.1. Corrupt journals for `--resume`, signals, one run at a
//! time, a missing notification secret and the abort post's content.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Sshd, recover_in};

fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// `DIR/NAME.yaml`, one phase of `steps` (six spaces of indentation) against `target`.
fn write_runbook(dir: &Path, name: &str, target: &str, head: &str, steps: &str) -> PathBuf {
    let text = format!(
        "name: {name}\nbudget: 10m\ntargets:\n{target}{head}phases:\n  - name: Everything\n    window: 0m-10m\n    steps:\n{steps}"
    )
    .replace("@DIR@", &dir.display().to_string());
    let path = dir.join(format!("{name}.yaml"));
    fs::write(&path, text).unwrap();
    path
}

// --- corrupt journals: a clear error and a way on, never a panic --------------------------------

fn run_started(sha: &str) -> String {
    format!(
        r#"{{"event":"run_started","run_id":"ab12cd34","mode":"run","runbook":"j","path":"j.yaml","sha256":"{sha}","budget":600.0,"steps":3,"phases":1,"resumed_from":null,"first_step":1,"targets":[],"ts":"2026-12-03T13:00:00.000Z"}}"#
    )
}

fn step_lines(n: &str, outcome: &str, at: &str) -> String {
    format!(
        r#"{{"event":"step_started","step":{n},"phase":1,"name":"s","kind":"run","target":"lab","mutates":true,"command":null,"timeout":60.0,"at":{at}}}
{{"event":"step_finished","step":{n},"phase":1,"name":"s","outcome":"{outcome}","exit":0,"duration":0.1,"at":{at},"reason":null,"stdout":null,"stderr":null}}
"#
    )
}

/// `run --resume --journal` on a journal holding `text`: it must be refused (exit 2) with a
/// message containing each of `says`, a way on, no panic, no new journal and no login.
fn refused(name: &str, text: &str, says: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    // Never contacted: a closed port would fail the run if it were.
    let rb = write_runbook(
        dir.path(),
        "j",
        "  lab: { host: 127.0.0.1, port: 9 }\n",
        "",
        "      - run: echo one\n      - run: echo two\n      - run: echo three\n",
    );
    let text = text.replace("@SHA@", &sha256_file(&rb));
    let journal = dir.path().join("old.jsonl");
    fs::write(&journal, &text).unwrap();
    let out = recover_in(dir.path())
        .args(["run", "--yes", "--resume", "--journal"])
        .arg(&journal)
        .arg(&rb)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    for s in says {
        assert!(stderr.contains(s), "{name}: no `{s}` in:\n{stderr}");
    }
    assert!(
        stderr.contains("--from") && stderr.to_lowercase().contains("start afresh"),
        "{name}: no way on in:\n{stderr}"
    );
    assert_eq!(
        fs::read_to_string(&journal).unwrap(),
        text,
        "{name}: the journal was written to"
    );
    assert!(
        !dir.path().join("recover/runs").exists(),
        "{name}: a new run started"
    );
}

#[test]
fn corrupt_journals_are_refused_with_the_line_and_a_way_on() {
    let head = format!(
        "{}\n{}",
        run_started("@SHA@"),
        step_lines("1", "passed", "1.0")
    );
    refused("empty", "", &["holds no run"]);
    refused(
        "cut inside its first line",
        &run_started("@SHA@")[..40],
        &["holds no run"],
    );
    refused(
        "garbled middle line",
        &format!(
            "{head}}}}}not json at all\n{}",
            step_lines("2", "failed", "2.0")
        ),
        &["is damaged at line 4: not a journal event", "--from 2"],
    );
    refused(
        "wrong types",
        &format!("{head}{}", step_lines("\"two\"", "failed", "2.0")),
        &["line 4: not a journal event (invalid type: string \"two\", expected usize"],
    );
    refused(
        "a time of 1e300 seconds",
        &format!("{head}{}", step_lines("2", "interrupted", "1e300")),
        &[
            "line 4: the time `1e300` s is not a place on a run's timeline",
            "--from 2",
        ],
    );
    refused(
        "a huge step number",
        &format!("{head}{}", step_lines("1e30", "failed", "2.0")),
        &["line 4: not a journal event"],
    );
    refused(
        "step 0",
        &format!("{head}{}", step_lines("0", "failed", "2.0")),
        &["line 4: step 0 does not exist"],
    );
    // `&sha256[..12]` once sliced inside the second byte of an `é`.
    refused(
        "a hash of multi-byte text",
        &format!("{}\n", run_started(&format!("a{}", "é".repeat(40)))),
        &["line 1: the runbook hash `aéé", "is not a sha256"],
    );
}

#[test]
fn a_journal_step_beyond_the_plan_is_refused() {
    let head = format!(
        "{}\n{}",
        run_started("@SHA@"),
        step_lines("1", "passed", "1.0")
    );
    refused(
        "a step beyond the plan",
        &format!("{head}{}", step_lines("57", "failed", "2.0")),
        &[
            "would resume at step 57, but the runbook has 3 steps",
            "--from 2",
        ],
    );
}

#[test]
fn a_journal_cut_by_a_crash_mid_line_resumes_after_its_last_whole_step() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "cut",
        &sshd.runbook_target_yaml("lab"),
        "",
        "      - run: echo one >> @DIR@/trace\n      - run: echo two >> @DIR@/trace\n      - run: echo three >> @DIR@/trace\n",
    );
    let whole = format!(
        "{}\n{}",
        run_started(&sha256_file(&rb)),
        step_lines("1", "passed", "1.5")
    );
    let cut = step_lines("2", "passed", "2.0");
    let journal = dir.path().join("old.jsonl");
    fs::write(&journal, format!("{whole}{}", &cut[..60])).unwrap();
    let out = recover_in(dir.path())
        .args(["run", "--yes", "--resume", "--journal"])
        .arg(&journal)
        .arg(&rb)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("Resuming run ab12cd34 from step 2"),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("trace")).unwrap(),
        "two\nthree\n"
    );
}
