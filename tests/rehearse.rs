//! `recover rehearse` against a real sshd and real HTTP servers on 127.0.0.1: steps that change
//! state provably do not run, read-only steps do, and the rehearsal is recorded.

mod common;

use std::time::Duration;

use common::{HttpServer, Sshd, journals_in, read_journal, recover_in, step_event};
use serde_json::Value;

/// The events of the rehearsal's journal under `state`.
fn journal_events(state: &std::path::Path) -> Vec<Value> {
    let file = journals_in(state)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("-rehearsal-"))
        .expect("a rehearsal journal");
    read_journal(&file)
}

fn outcome(events: &[Value], step: u64) -> String {
    step_event(events, "step_finished", step)["outcome"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn a_rehearsal_runs_read_only_steps_skips_the_rest_and_is_recorded() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let api = HttpServer::start();
    let hook = HttpServer::start();
    api.respond("GET", "/health", 200, "ok");
    api.respond("POST", "/reset", 200, "done");
    hook.respond("POST", "/hook", 200, "ok");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let marker = dir.path().join("created-by-a-state-changing-step");
    let seen = dir.path().join("written-by-a-read-only-step");
    let rb = dir.path().join("rb.yaml");
    let runbook = format!(
        "name: drill\nbudget: 5m\nrehearse_every: 90d\ntargets:\n{target}notify:\n  ops: {{ webhook: \"{hook}/hook\", format: slack }}\nphases:\n  - name: All\n    window: 0m-5m\n    steps:\n      - manual: Press the power button.\n      - wait_ssh: {{ every: 1s, timeout: 20s }}\n      - run: touch {marker}\n      - run: echo rehearsed > {seen}\n        mutates: false\n      - http: {{ url: \"{api}/health\", expect: {{ status: 200 }} }}\n      - http: {{ url: \"{api}/reset\", method: POST, body: go }}\n        mutates: true\n      - local: touch {marker}.local\n      - notify: ops\n        message: We are back.\n",
        target = sshd.runbook_target_yaml("box"),
        hook = hook.url(),
        api = api.url(),
        marker = marker.display(),
        seen = seen.display(),
    );
    std::fs::write(&rb, runbook).unwrap();
    let report = dir.path().join("report.md");

    let out = recover_in(&state)
        .args([
            "rehearse",
            rb.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Each state-changing step is shown once as "would run: <command>", the prefix once.
    assert!(
        stderr.contains(&format!(
            "would run: timeout -k 5s 60s sh -c 'touch {}'",
            marker.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("would run: would run"), "{stderr}");

    // Nothing that changes state ran: no file on the target or here, no POST, no status post.
    assert!(!marker.exists(), "a state-changing run step ran");
    assert!(
        !dir.path()
            .join("created-by-a-state-changing-step.local")
            .exists(),
        "a local step ran"
    );
    assert!(
        api.requests_to("/reset").is_empty(),
        "a mutating http step was sent"
    );
    assert!(
        hook.requests().is_empty(),
        "a status post was sent during a rehearsal"
    );
    // The read-only steps did run.
    assert_eq!(std::fs::read_to_string(&seen).unwrap().trim(), "rehearsed");
    assert_eq!(api.requests_to("/health").len(), 1);

    let events = journal_events(&state);
    for (step, want) in [
        (1, "would_run"),
        (2, "passed"),
        (3, "would_run"),
        (4, "passed"),
        (5, "passed"),
        (6, "would_run"),
        (7, "would_run"),
        (8, "would_run"),
    ] {
        assert_eq!(outcome(&events, step), want, "step {step}");
    }
    let skipped = events
        .iter()
        .find(|e| e["event"] == "step_finished" && e["step"] == 3)
        .unwrap();
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("touch {}", marker.display())),
        "the would-run line shows the exact command: {skipped}"
    );

    // Recorded, reported, and mentioned by check.
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("recover/rehearsals/drill.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["result"], "passed");
    assert_eq!(record["phases"][0]["name"], "All");
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(
        md.contains("# Rehearsal: drill") && md.contains("skipped (changes state)"),
        "{md}"
    );
    let check = recover_in(&state)
        .args(["check", rb.to_str().unwrap()])
        .output()
        .unwrap();
    let check_err = String::from_utf8_lossy(&check.stderr);
    assert!(
        check_err.contains("last rehearsed 0 days ago"),
        "{check_err}"
    );

    // A report that cannot be written is said; the rehearsal ran, and its verdict (0) stays.
    let out = recover_in(&state)
        .args([
            "rehearse",
            rb.to_str().unwrap(),
            "--report",
            dir.path().join("no-such-dir/report.md").to_str().unwrap(),
        ])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("no-such-dir"),
        "{stderr}"
    );
    assert!(stderr.contains("rehearsal recorded"), "{stderr}");
}

#[test]
fn a_rehearsal_reports_a_missing_device_and_a_failing_read_only_check_and_goes_on() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rb = dir.path().join("rb.yaml");
    let runbook = format!(
        "name: drill2\nbudget: 5m\ntargets:\n{target}phases:\n  - name: All\n    window: 0m-5m\n    steps:\n      - run: mkfs.ext4 /dev/recover-no-such-disk\n      - run: \"false\"\n        mutates: false\n      - run: echo still going\n        mutates: false\n",
        target = sshd.runbook_target_yaml("box"),
    );
    std::fs::write(&rb, runbook).unwrap();
    let out = recover_in(&state)
        .args(["rehearse", rb.to_str().unwrap()])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let events = journal_events(&state);
    let first = events
        .iter()
        .find(|e| e["event"] == "step_finished" && e["step"] == 1)
        .unwrap();
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .contains("/dev/recover-no-such-disk missing"),
        "{first}"
    );
    // A rehearsal goes on past a problem, to find them all.
    assert_eq!(outcome(&events, 3), "passed");
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("recover/rehearsals/drill2.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["result"], "failed");
}

/// Issue 15 (state keyed by overlay): a rehearsal and a run of an overlay (`extends:`) are
/// recorded under the overlay (`keyed@lab`), never under the runbook it extends: `check`,
/// `report --last` and `report --history` of each see only their own.
#[test]
fn an_overlay_keeps_its_own_rehearsal_runs_and_history() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let base = dir.path().join("keyed.yaml");
    std::fs::write(
        &base,
        format!(
            "name: keyed\nbudget: 5m\nrehearse_every: 90d\ntargets:\n{}phases:\n  - name: All\n    window: 0m-5m\n    steps:\n      - run: echo hello\n        mutates: false\n",
            sshd.runbook_target_yaml("box")
        ),
    )
    .unwrap();
    let lab = dir.path().join("lab.yaml");
    std::fs::write(&lab, "extends: keyed.yaml\ntitle: The lab\n").unwrap();
    let (base_s, lab_s) = (base.to_str().unwrap(), lab.to_str().unwrap());
    let recover = |args: &[&str]| {
        let out = recover_in(&state)
            .args(args)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, _, err) = recover(&["rehearse", lab_s]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        state.join("recover/rehearsals/keyed@lab.json").exists(),
        "{err}"
    );
    assert!(
        !state.join("recover/rehearsals/keyed.json").exists(),
        "the lab's rehearsal was recorded as the base runbook's"
    );
    let (_, _, err) = recover(&["check", base_s]);
    assert!(
        err.contains("rehearsal: `keyed`: never rehearsed"),
        "the base runbook counts the lab's rehearsal: {err}"
    );
    let (_, _, err) = recover(&["check", lab_s]);
    assert!(err.contains("last rehearsed 0 days ago"), "{err}");

    // A run of each: `report --last` finds each one's own; the history lists each one's own.
    for rb in [base_s, lab_s] {
        let (code, _, err) = recover(&["run", rb, "--yes"]);
        assert_eq!(code, Some(0), "{rb}: {err}");
    }
    let (code, md, err) = recover(&["report", "--last", base_s]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !md.contains("lab.yaml"),
        "the base's last run is the lab's:\n{md}"
    );
    let (code, md, err) = recover(&["report", "--last", lab_s]);
    assert_eq!(code, Some(0), "{err}");
    assert!(md.contains("lab.yaml"), "{md}");
    let (_, base_hist, _) = recover(&["report", "--history", base_s]);
    let (_, lab_hist, _) = recover(&["report", "--history", lab_s]);
    let rows = |h: &str, kind: &str| {
        h.lines()
            .filter(|l| l.contains(&format!("| {kind} |")))
            .count()
    };
    assert_eq!(
        (rows(&base_hist, "run"), rows(&base_hist, "rehearsal")),
        (1, 0),
        "{base_hist}"
    );
    assert_eq!(
        (rows(&lab_hist, "run"), rows(&lab_hist, "rehearsal")),
        (1, 1),
        "{lab_hist}"
    );
}
