//! The engine end to end: the real `recover` binary against a real sshd and real HTTP servers
//! on 127.0.0.1. Assertions are on exit codes, the journal (JSON Lines, `src/engine/event.rs`),
//! what the target actually did (files and processes, checked over the harness's own ssh) and
//! what the HTTP servers received; never on the human display, which is being rewritten.
//!
//! Every target here logs in as the current user (root in CI), so no step needs sudo; `start:`
//! and `drop_caches` need a real systemd and are proven in the lab VM instead.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Background, HttpServer, Sshd, closed_port_url, dump, events, eventually, free_port,
    journals_in, last_event, logins, only_journal, p, read_journal, recover_in, remote_pid_alive,
    run_to_end, sha256_file, started_steps, step_event, text, wait_for_event, write_runbook,
};
use serde_json::Value;

// --- helpers ---------------------------------------------------------------------------------

/// The target's file, read over the harness's ssh; None when it does not exist.
fn remote_file(sshd: &Sshd, path: &Path) -> Option<String> {
    let out = sshd.ssh(&format!("cat '{}'", path.display()));
    out.status.success().then(|| text(&out.stdout))
}

const QUICK: Duration = Duration::from_secs(60);

// --- 1. a clean run ----------------------------------------------------------------------------

#[test]
fn a_clean_run_does_every_step_journals_it_and_posts_we_are_back() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let api = HttpServer::start();
    api.respond(
        "POST",
        "/v1/chat/completions",
        200,
        r#"{"choices":[{"message":{"content":"ready"}}]}"#,
    );
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", 200, "ok");
    let dir = tempfile::tempdir().unwrap();
    let head = format!(
        "vars:\n  api: {}\nnotify:\n  ops: {{ webhook: \"{{{{ env.RECOVER_WEBHOOK }}}}\", format: slack }}\n",
        api.url()
    );
    let rb = write_runbook(
        dir.path(),
        "clean",
        &sshd.runbook_target_yaml("lab"),
        &head,
        r#"      - wait_ssh: { every: 1s, timeout: 10s }
      - name: remote write
        run: echo "ran as $(id -un)" > @DIR@/remote-ran
        timeout: 10s
      - name: local write
        local: echo local > @DIR@/local-ran
        timeout: 10s
      - name: smoke test
        http:
          url: "{{ vars.api }}/v1/chat/completions"
          method: POST
          json: { model: m, messages: [{ role: user, content: hi }] }
          expect: { status: 200, body: '"choices"' }
          timeout: 5s
      - notify: ops
        message: "We are back after {{ run.elapsed }}."
"#,
    );
    let webhook = hook.url_for("/hook");
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb)],
        &[("RECOVER_WEBHOOK", &webhook)],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());

    // The journal, in its default place.
    let journal = read_journal(&only_journal(dir.path()));
    let started = &events(&journal, "run_started");
    assert_eq!(started.len(), 1, "{}", dump(&journal));
    assert_eq!(started[0]["sha256"], sha256_file(&rb));
    assert_eq!(started[0]["runbook"], "clean");
    assert_eq!(started[0]["steps"], 5);
    assert_eq!(journal[0]["event"], "run_started");

    let boot_id = text(&sshd.ssh("cat /proc/sys/kernel/random/boot_id").stdout);
    let connected = events(&journal, "connected");
    assert!(!connected.is_empty(), "{}", dump(&journal));
    for c in &connected {
        assert_eq!(c["target"], "lab");
        assert_eq!(c["boot_id"], boot_id.trim());
    }
    assert_eq!(connected[0]["reconnect"], false);

    assert_eq!(started_steps(&journal), vec![1, 2, 3, 4, 5]);
    for n in 1..=5 {
        let s = step_event(&journal, "step_started", n);
        let f = step_event(&journal, "step_finished", n);
        assert_eq!(f["outcome"], "passed", "step {n}: {f}");
        let d = f["duration"].as_f64().expect("a duration");
        assert!((0.0..30.0).contains(&d), "step {n} duration {d}");
        assert!(f["at"].as_f64().unwrap() >= s["at"].as_f64().unwrap());
    }
    assert_eq!(step_event(&journal, "step_started", 2)["kind"], "run");
    assert_eq!(step_event(&journal, "step_finished", 2)["exit"], 0);
    assert_eq!(step_event(&journal, "step_finished", 3)["exit"], 0);
    let finished = last_event(&journal);
    assert_eq!(finished["event"], "run_finished", "{}", dump(&journal));
    assert_eq!(finished["outcome"], "success");
    assert_eq!(finished["exit_code"], 0);
    let notified = events(&journal, "notified");
    assert_eq!(notified.len(), 1, "{}", dump(&journal));
    assert_eq!(notified[0]["ok"], true);

    // The target and the management host really did the work.
    assert_eq!(
        remote_file(&sshd, &dir.path().join("remote-ran")).as_deref(),
        Some(format!("ran as {}\n", sshd.user()).as_str())
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("local-ran")).unwrap(),
        "local\n"
    );

    // The smoke test hit the API, and the webhook got a Slack post with the elapsed time.
    let calls = api.requests_to("/v1/chat/completions");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].json()["model"], "m");
    let posts = hook.requests_to("/hook");
    assert_eq!(posts.len(), 1);
    let body = posts[0].json();
    let msg = body["text"].as_str().expect("a slack `text`");
    assert!(msg.starts_with("We are back after "), "{msg}");
    assert!(!msg.contains("{{") && !msg.contains("run.elapsed"), "{msg}");
    assert!(
        msg.trim_end_matches('.').ends_with('s'),
        "no duration: {msg}"
    );
}

// --- 2. abort_if ---------------------------------------------------------------------------------

#[test]
fn an_abort_if_match_aborts_posts_the_notice_and_runs_nothing_after() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", 200, "ok");
    let dir = tempfile::tempdir().unwrap();
    let head = "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n\
                abort:\n  notify: ops\n  message: Follow the long procedure in the binder.\n";
    let rb = write_runbook(
        dir.path(),
        "abortif",
        &sshd.runbook_target_yaml("lab"),
        head,
        r#"      - name: kernel log
        run: |
          touch @DIR@/kernel-ran
          echo "[    3.1] EXT4-fs error (device vda): ext4_lookup:1855: inode #2: comm ls: deleted inode referenced: 12"
        abort_if: { stdout: "EXT4-fs error" }
        abort_message: The kernel reported filesystem errors.
      - name: after the abort
        run: touch @DIR@/after-ran
"#,
    );
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--journal", p(&dir.path().join("j.jsonl"))],
        &[("RECOVER_WEBHOOK", &hook.url_for("/hook"))],
        QUICK,
    );
    assert_eq!(ran.code, Some(3), "{}", ran.context());
    let journal = read_journal(&dir.path().join("j.jsonl"));

    assert_eq!(
        step_event(&journal, "step_finished", 1)["outcome"],
        "aborted"
    );
    assert_eq!(started_steps(&journal), vec![1], "{}", dump(&journal));
    let proc_ = events(&journal, "abort_procedure");
    assert_eq!(proc_.len(), 1, "{}", dump(&journal));
    assert_eq!(proc_[0]["step"], 1);
    assert!(
        proc_[0]["message"]
            .as_str()
            .unwrap()
            .contains("Follow the long procedure in the binder."),
        "{}",
        proc_[0]
    );
    assert_eq!(
        proc_[0]["step_message"],
        "The kernel reported filesystem errors."
    );
    assert!(
        proc_[0]["reason"]
            .as_str()
            .unwrap()
            .contains("EXT4-fs error"),
        "{}",
        proc_[0]
    );
    let end = last_event(&journal);
    assert_eq!(end["event"], "run_finished");
    assert_eq!(end["outcome"], "aborted");
    assert_eq!(end["exit_code"], 3);
    assert_eq!(end["failed_step"], 1);

    // The abort notice reached the channel.
    assert!(hook.wait_for_requests("/hook", 1, Duration::from_secs(5)));
    let posts = hook.requests_to("/hook");
    assert_eq!(posts.len(), 1);
    let msg = posts[0].json()["text"].as_str().unwrap().to_owned();
    assert!(msg.contains("ABORT"), "{msg}");
    assert!(msg.contains("kernel log"), "{msg}");
    assert!(
        msg.contains("The kernel reported filesystem errors."),
        "{msg}"
    );

    // The step ran; the one after did not.
    assert!(remote_file(&sshd, &dir.path().join("kernel-ran")).is_some());
    assert!(remote_file(&sshd, &dir.path().join("after-ran")).is_none());
}

// --- 3. a hung remote command ------------------------------------------------------------------

#[test]
fn a_hung_remote_command_fails_at_its_timeout_and_is_killed_on_the_target() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "hung",
        &sshd.runbook_target_yaml("lab"),
        "",
        r#"      - name: hangs
        run: echo $$ > @DIR@/hung.pid; exec sleep 300
        timeout: 3s
      - name: never
        run: touch @DIR@/never-ran
"#,
    );
    let journal_path = dir.path().join("j.jsonl");
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--journal", p(&journal_path)],
        &[],
        Duration::from_secs(40),
    );
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    assert!(
        ran.took < Duration::from_secs(20),
        "took {:?}: {}",
        ran.took,
        ran.context()
    );
    let journal = read_journal(&journal_path);
    let f = step_event(&journal, "step_finished", 1);
    assert_eq!(f["outcome"], "failed", "{f}");
    assert!(f["reason"].as_str().unwrap().contains("timed out"), "{f}");
    let d = f["duration"].as_f64().unwrap();
    assert!((2.5..8.0).contains(&d), "duration {d}");
    assert_eq!(started_steps(&journal), vec![1]);
    let end = last_event(&journal);
    assert_eq!(end["outcome"], "failed");
    assert_eq!(end["failed_step"], 1);
    assert!(
        end["resume"].as_str().unwrap().contains("--resume"),
        "{end}"
    );

    let pid_file = dir.path().join("hung.pid");
    assert!(pid_file.exists(), "the command never started");
    assert!(
        !remote_pid_alive(&sshd, &pid_file),
        "the remote `sleep 300` survived its timeout"
    );
    assert!(remote_file(&sshd, &dir.path().join("never-ran")).is_none());
}

// --- 4. Ctrl-C, then --resume --------------------------------------------------------------------

#[test]
fn sigint_mid_step_kills_the_remote_command_and_resume_runs_only_the_rest() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "interrupt",
        &sshd.runbook_target_yaml("lab"),
        "",
        r#"      - name: trace
        run: echo first >> @DIR@/trace
      - name: long step
        run: "[ -e @DIR@/hang ] || exit 0; echo $$ > @DIR@/long.pid; exec sleep 300"
        timeout: 2m
      - name: last
        run: echo last >> @DIR@/trace
"#,
    );
    fs::write(dir.path().join("hang"), "").unwrap();

    let mut bg = Background::start(dir.path(), &["run", p(&rb)], &[]);
    let pid_file = dir.path().join("long.pid");
    // The journal's name carries a timestamp: find it, then wait for the long step.
    assert!(
        eventually(Duration::from_secs(20), || journals_in(dir.path()).len()
            == 1),
        "no journal: {}",
        bg.output()
    );
    let journal_path = only_journal(dir.path());
    assert!(
        wait_for_event(&journal_path, Duration::from_secs(20), |e| {
            e["event"] == "step_started" && e["step"] == 2
        }),
        "the long step never started: {}",
        bg.output()
    );
    assert!(
        eventually(Duration::from_secs(10), || pid_file.exists()),
        "the long step's command never ran"
    );
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(bg.pid(), libc::SIGINT) }, 0);
    let status = bg
        .wait(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGINT: {}", bg.output()));
    assert_eq!(status.code(), Some(130), "{}", bg.output());
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "took {:?}",
        sent.elapsed()
    );
    assert!(
        !remote_pid_alive(&sshd, &pid_file),
        "the remote `sleep 300` survived Ctrl-C"
    );

    let journal = read_journal(&journal_path);
    assert_eq!(
        step_event(&journal, "step_finished", 2)["outcome"],
        "interrupted"
    );
    let end = last_event(&journal);
    assert_eq!(end["event"], "run_finished", "{}", dump(&journal));
    assert_eq!(end["outcome"], "interrupted");
    assert_eq!(end["exit_code"], 130);
    assert_eq!(end["failed_step"], 2);
    let resume = end["resume"].as_str().expect("a resume command");
    assert!(
        resume.contains("--resume") && resume.contains(p(&rb)),
        "{resume}"
    );
    let run_id = journal[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        remote_file(&sshd, &dir.path().join("trace")).as_deref(),
        Some("first\n")
    );

    // The resume command was printed too, not only journaled.
    assert!(bg.output().contains(resume), "{}", bg.output());

    // Edited since: --resume refuses, runs nothing and writes no journal.
    let original = fs::read_to_string(&rb).unwrap();
    fs::write(&rb, original.replace("echo last", "echo LAST")).unwrap();
    fs::remove_file(dir.path().join("hang")).unwrap();
    let ran = run_to_end(dir.path(), &["run", p(&rb), "--resume"], &[], QUICK);
    assert_eq!(ran.code, Some(2), "{}", ran.context());
    assert!(ran.stderr.contains("changed"), "{}", ran.context());
    assert_eq!(journals_in(dir.path()).len(), 1);
    assert_eq!(
        remote_file(&sshd, &dir.path().join("trace")).as_deref(),
        Some("first\n")
    );
    fs::write(&rb, original).unwrap();

    // Resume: the long step again (no longer hanging) and the last; not the first.
    let ran = run_to_end(dir.path(), &["run", p(&rb), "--resume"], &[], QUICK);
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert_eq!(
        remote_file(&sshd, &dir.path().join("trace")).as_deref(),
        Some("first\nlast\n")
    );
    let files = journals_in(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let resumed = read_journal(files.iter().find(|f| **f != journal_path).unwrap());
    assert_eq!(resumed[0]["event"], "run_started");
    assert_eq!(resumed[0]["resumed_from"], run_id.as_str());
    assert_eq!(resumed[0]["first_step"], 2);
    assert_eq!(started_steps(&resumed), vec![2, 3], "{}", dump(&resumed));
    assert_eq!(
        step_event(&resumed, "step_finished", 1)["outcome"],
        "skipped"
    );
    assert_eq!(last_event(&resumed)["outcome"], "success");
}

// --- 5. the target's sshd goes away and comes back -----------------------------------------------

#[test]
fn a_restarted_sshd_mid_run_is_reconnected_and_the_run_succeeds() {
    let Some(mut sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "reconnect",
        &sshd.runbook_target_yaml("lab"),
        "",
        r#"      - name: before
        run: echo before >> @DIR@/trace
      - name: gap
        local: sleep 4
      - name: after
        run: echo after >> @DIR@/trace
        timeout: 20s
"#,
    );
    let journal_path = dir.path().join("j.jsonl");
    let mut bg = Background::start(
        dir.path(),
        &["run", p(&rb), "--journal", p(&journal_path)],
        &[],
    );
    assert!(
        wait_for_event(&journal_path, Duration::from_secs(20), |e| {
            e["event"] == "step_started" && e["step"] == 2
        }),
        "the gap never started: {}",
        bg.output()
    );
    sshd.stop();
    thread::sleep(Duration::from_secs(1));
    sshd.start_again();

    let status = bg
        .wait(Duration::from_secs(40))
        .unwrap_or_else(|| panic!("still running: {}", bg.output()));
    let journal = read_journal(&journal_path);
    assert_eq!(
        status.code(),
        Some(0),
        "{}\n{}\n--- sshd log ---\n{}",
        bg.output(),
        dump(&journal),
        sshd.log()
    );
    assert_eq!(
        remote_file(&sshd, &dir.path().join("trace")).as_deref(),
        Some("before\nafter\n")
    );
    let lost = events(&journal, "connection_lost");
    assert!(!lost.is_empty(), "no connection_lost: {}", dump(&journal));
    assert_eq!(lost[0]["target"], "lab");
    let connected = events(&journal, "connected");
    assert_eq!(connected.len(), 2, "{}", dump(&journal));
    assert_eq!(connected[0]["reconnect"], false);
    assert_eq!(connected[1]["reconnect"], true);
    assert_eq!(connected[0]["boot_id"], connected[1]["boot_id"]);
    assert!(events(&journal, "boot_id_changed").is_empty());
    // The loss is reported before the reconnect.
    let pos = |kind: &str, reconnect: Option<bool>| {
        journal
            .iter()
            .position(|e| e["event"] == kind && reconnect.is_none_or(|r| e["reconnect"] == r))
            .unwrap()
    };
    assert!(pos("connection_lost", None) < pos("connected", Some(true)));
    assert_eq!(last_event(&journal)["outcome"], "success");
}

// --- 6. an unreachable target ------------------------------------------------------------------

#[test]
fn an_unreachable_target_aborts_wait_ssh_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let target = format!("  lab:\n    host: 127.0.0.1\n    port: {port}\n    user: root\n");
    let rb = write_runbook(
        dir.path(),
        "unreachable",
        &target,
        "abort:\n  message: Follow the long procedure in the binder.\n",
        r#"      - wait_ssh: { every: 1s, timeout: 4s }
        abort_message: No SSH after four seconds. Suspect the power supply.
      - name: never
        local: touch @DIR@/never-ran
"#,
    );
    let journal_path = dir.path().join("j.jsonl");
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--journal", p(&journal_path)],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(ran.code, Some(3), "{}", ran.context());
    assert!(
        ran.took >= Duration::from_millis(3500) && ran.took < Duration::from_secs(12),
        "took {:?}",
        ran.took
    );
    assert!(
        ran.stderr
            .contains("No SSH after four seconds. Suspect the power supply."),
        "the abort message was not shown: {}",
        ran.context()
    );
    let journal = read_journal(&journal_path);
    let f = step_event(&journal, "step_finished", 1);
    assert_eq!(f["outcome"], "aborted", "{f}");
    assert!(f["reason"].as_str().unwrap().contains("no SSH"), "{f}");
    let proc_ = events(&journal, "abort_procedure");
    assert_eq!(proc_.len(), 1);
    assert_eq!(
        proc_[0]["step_message"],
        "No SSH after four seconds. Suspect the power supply."
    );
    assert!(events(&journal, "connected").is_empty());
    assert_eq!(last_event(&journal)["outcome"], "aborted");
    assert!(!dir.path().join("never-ran").exists());
}

// --- 7. the webhook is down -----------------------------------------------------------------------

#[test]
fn a_webhook_that_is_down_is_reported_and_the_recovery_goes_on() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "hookdown",
        &sshd.runbook_target_yaml("lab"),
        "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n",
        r#"      - notify: ops
        message: "Recovery started."
      - name: after the post
        run: touch @DIR@/after-ran
"#,
    );
    let journal_path = dir.path().join("j.jsonl");
    let webhook = format!("{}/hook", closed_port_url());
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--journal", p(&journal_path)],
        &[("RECOVER_WEBHOOK", &webhook)],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let journal = read_journal(&journal_path);
    let notified = events(&journal, "notified");
    assert_eq!(notified.len(), 1, "{}", dump(&journal));
    assert_eq!(notified[0]["ok"], false);
    assert_eq!(notified[0]["channel"], "ops");
    assert_eq!(notified[0]["attempts"], 3);
    assert!(notified[0]["error"].is_string(), "{}", notified[0]);
    let warnings = events(&journal, "warning");
    assert!(
        warnings
            .iter()
            .any(|w| w["message"].as_str().unwrap().contains("ops")),
        "{}",
        dump(&journal)
    );
    assert_eq!(
        step_event(&journal, "step_finished", 1)["outcome"],
        "failed_continued"
    );
    assert_eq!(
        step_event(&journal, "step_finished", 2)["outcome"],
        "passed"
    );
    assert_eq!(last_event(&journal)["outcome"], "success");
    assert!(remote_file(&sshd, &dir.path().join("after-ran")).is_some());
}

#[test]
fn a_hung_webhook_is_given_up_at_the_notify_steps_timeout() {
    let hook = HttpServer::start();
    hook.hang("POST", "/hook");
    let dir = tempfile::tempdir().unwrap();
    let target = format!("  lab:\n    host: 127.0.0.1\n    port: {}\n", free_port());
    let rb = write_runbook(
        dir.path(),
        "hookhang",
        &target,
        "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n",
        r#"      - notify: ops
        message: "Recovery started."
        timeout: 4s
      - name: after the post
        local: touch @DIR@/after-ran
"#,
    );
    let journal_path = dir.path().join("j.jsonl");
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--journal", p(&journal_path)],
        &[("RECOVER_WEBHOOK", &hook.url_for("/hook"))],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let journal = read_journal(&journal_path);
    let f = step_event(&journal, "step_finished", 1);
    assert_eq!(f["outcome"], "failed_continued", "{f}");
    let d = f["duration"].as_f64().unwrap();
    assert!(
        (3.5..6.0).contains(&d),
        "the post took {d} s with `timeout: 4s`"
    );
    assert_eq!(events(&journal, "notified")[0]["ok"], false);
    assert!(hook.wait_for_requests("/hook", 1, Duration::from_secs(1)));
    assert!(dir.path().join("after-ran").exists());
}

// --- 8. a host key mismatch ---------------------------------------------------------------------

#[test]
fn a_host_key_mismatch_is_refused_and_nothing_runs() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = sshd.wrong_host_key_known_hosts();
    let target = sshd.runbook_target_yaml("lab").replace(
        &sshd.known_hosts().display().to_string(),
        &wrong.display().to_string(),
    );
    assert!(target.contains(p(&wrong)), "{target}");
    let logins_before = logins(&sshd);

    // A run step: the step fails (exit 1) at once, saying why.
    let rb = write_runbook(
        dir.path(),
        "hostkey",
        &target,
        "",
        r#"      - name: would write
        run: touch @DIR@/ran
        timeout: 20s
"#,
    );
    let journal_path = dir.path().join("run.jsonl");
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--journal", p(&journal_path)],
        &[],
        QUICK,
    );
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    assert!(ran.took < Duration::from_secs(10), "took {:?}", ran.took);
    let journal = read_journal(&journal_path);
    let f = step_event(&journal, "step_finished", 1);
    assert_eq!(f["outcome"], "failed");
    let reason = f["reason"].as_str().unwrap();
    assert!(reason.contains("host key"), "{reason}");
    assert!(reason.contains(p(&wrong)), "{reason}");
    assert!(events(&journal, "connected").is_empty());
    assert!(ran.stderr.contains("host key"), "{}", ran.context());

    // A wait_ssh step: refused on the first attempt, not retried to its timeout.
    let rb = write_runbook(
        dir.path(),
        "hostkey-wait",
        &target,
        "",
        r#"      - wait_ssh: { every: 1s, timeout: 20s }
      - name: would write
        run: touch @DIR@/ran
"#,
    );
    let journal_path = dir.path().join("wait.jsonl");
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--journal", p(&journal_path)],
        &[],
        QUICK,
    );
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    assert!(ran.took < Duration::from_secs(10), "took {:?}", ran.took);
    let journal = read_journal(&journal_path);
    let f = step_event(&journal, "step_finished", 1);
    assert_eq!(f["outcome"], "failed");
    assert!(f["reason"].as_str().unwrap().contains("host key"), "{f}");
    assert_eq!(started_steps(&journal), vec![1]);

    assert_eq!(logins(&sshd), logins_before, "{}", sshd.log());
    assert!(remote_file(&sshd, &dir.path().join("ran")).is_none());
}

// --- 9. secrets ----------------------------------------------------------------------------------

#[test]
fn secrets_never_reach_the_output_or_the_journal_but_reach_the_target() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let hook = HttpServer::start();
    let token = format!("tok-{}-s3cr3t", std::process::id());
    let hook_path = format!("/hooks/{token}");
    hook.respond("POST", &hook_path, 200, "ok");
    let webhook = hook.url_for(&hook_path);
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "secrets",
        &sshd.runbook_target_yaml("lab"),
        "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n",
        r#"      - name: write the token
        run: echo {{ env.RECOVER_TOKEN }} > @DIR@/token
      - name: print the token
        run: cat @DIR@/token; cat @DIR@/token >&2
      - notify: ops
        message: "Token step done."
      - name: fail with the token
        run: echo "bad {{ env.RECOVER_TOKEN }}"; exit 7
"#,
    );
    let env = [
        ("RECOVER_WEBHOOK", webhook.as_str()),
        ("RECOVER_TOKEN", token.as_str()),
    ];
    for json in [false, true] {
        let journal_path = dir.path().join(format!("j-{json}.jsonl"));
        let mut args = vec!["run", p(&rb), "--journal", p(&journal_path)];
        if json {
            args.push("--json");
        }
        let ran = run_to_end(dir.path(), &args, &env, QUICK);
        assert_eq!(ran.code, Some(1), "{}", ran.context());
        assert!(
            !ran.stdout.contains(&token),
            "--json={json}: stdout:\n{}",
            ran.stdout
        );
        assert!(
            !ran.stderr.contains(&token),
            "--json={json}: stderr:\n{}",
            ran.stderr
        );
        let raw = fs::read_to_string(&journal_path).unwrap();
        assert!(!raw.contains(&token), "journal:\n{raw}");
        // The output was journaled, redacted.
        let journal = read_journal(&journal_path);
        let printed = step_event(&journal, "step_finished", 2);
        assert_eq!(printed["outcome"], "passed");
        assert_eq!(printed["stdout"], "***\n", "{printed}");
        assert_eq!(printed["stderr"], "***\n", "{printed}");
        assert!(
            step_event(&journal, "step_started", 1)["command"]
                .as_str()
                .unwrap()
                .contains("***")
        );
        assert_eq!(events(&journal, "notified")[0]["ok"], true);
    }

    // Nor in the printed plan.
    let shown = run_to_end(dir.path(), &["run", p(&rb), "--dry-run"], &env, QUICK);
    assert_eq!(shown.code, Some(0), "{}", shown.context());
    assert!(!shown.stdout.contains(&token) && !shown.stderr.contains(&token));

    // The command and the webhook got the real value.
    assert_eq!(
        remote_file(&sshd, &dir.path().join("token")).as_deref(),
        Some(format!("{token}\n").as_str())
    );
    assert_eq!(hook.requests_to(&hook_path).len(), 2);
}

// --- 10. output without a terminal ---------------------------------------------------------------

#[test]
fn without_a_terminal_output_has_no_escape_codes_and_json_is_one_object_a_line() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "plain",
        &sshd.runbook_target_yaml("lab"),
        "",
        r#"      - name: colourful output
        run: printf 'ok\n'; printf 'warn\n' >&2
      - name: failing
        run: echo nope; exit 3
"#,
    );
    // As a user's shell would have it, but piped: colours must still stay off.
    let run = |extra: &[&str]| {
        let mut cmd = recover_in(dir.path());
        cmd.arg("run")
            .arg(&rb)
            .args(extra)
            .env_remove("NO_COLOR")
            .env("TERM", "xterm-256color")
            .env("COLORTERM", "truecolor")
            .timeout(QUICK);
        cmd.output().unwrap()
    };
    let plain = run(&[]);
    assert_eq!(plain.status.code(), Some(1));
    let json = run(&["--json"]);
    assert_eq!(json.status.code(), Some(1));
    // A runbook error, rendered with its snippet.
    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, "name: bad\nbudget: 5\nphases: []\n").unwrap();
    let mut cmd = recover_in(dir.path());
    let broken = cmd
        .args(["run", p(&bad)])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    assert_eq!(broken.status.code(), Some(2));

    for out in [&plain, &json, &broken] {
        for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !bytes.contains(&0x1b),
                "escape code in {name}:\n{}",
                text(bytes)
            );
        }
    }

    let stdout = text(&json.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 6, "{stdout}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
        assert!(v.is_object() && v["event"].is_string(), "{l}");
    }
    let first: Value = serde_json::from_str(lines[0]).unwrap();
    let last: Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(first["event"], "run_started");
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["exit_code"], 1);
}

// --- 11. --from, --resume and a changed runbook ------------------------------------------------

#[test]
fn from_by_number_and_by_name_skips_the_earlier_steps() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "from",
        &sshd.runbook_target_yaml("lab"),
        "",
        r#"      - name: first step
        run: echo 1 >> @DIR@/trace
      - name: second step
        run: echo 2 >> @DIR@/trace
      - name: third step
        run: echo 3 >> @DIR@/trace
"#,
    );
    let trace = dir.path().join("trace");

    let j = dir.path().join("by-number.jsonl");
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--from", "2", "--journal", p(&j)],
        &[],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert_eq!(remote_file(&sshd, &trace).as_deref(), Some("2\n3\n"));
    let journal = read_journal(&j);
    assert_eq!(journal[0]["first_step"], 2);
    assert_eq!(started_steps(&journal), vec![2, 3]);
    assert_eq!(
        step_event(&journal, "step_finished", 1)["outcome"],
        "skipped"
    );

    fs::remove_file(&trace).unwrap();
    let j = dir.path().join("by-name.jsonl");
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--from", "Third Step", "--journal", p(&j)],
        &[],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert_eq!(remote_file(&sshd, &trace).as_deref(), Some("3\n"));
    assert_eq!(started_steps(&read_journal(&j)), vec![3]);

    // A step that does not exist: usage error, nothing run.
    fs::remove_file(&trace).unwrap();
    let ran = run_to_end(dir.path(), &["run", p(&rb), "--from", "9"], &[], QUICK);
    assert_eq!(ran.code, Some(2), "{}", ran.context());
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--from", "no such step"],
        &[],
        QUICK,
    );
    assert_eq!(ran.code, Some(2), "{}", ran.context());
    assert!(remote_file(&sshd, &trace).is_none());
    assert!(journals_in(dir.path()).is_empty());
}

#[test]
fn resume_refuses_a_changed_runbook_unless_forced_and_needs_something_to_resume() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = sshd.runbook_target_yaml("lab");
    let steps = r#"      - name: first step
        run: echo 1 >> @DIR@/trace
      - name: needs the flag
        run: test -e @DIR@/flag && echo 2 >> @DIR@/trace
      - name: third step
        run: echo 3 >> @DIR@/trace
"#;
    let trace = dir.path().join("trace");

    // Nothing to resume yet.
    let rb = write_runbook(dir.path(), "resume", &target, "", steps);
    let ran = run_to_end(dir.path(), &["run", p(&rb), "--resume"], &[], QUICK);
    assert_eq!(ran.code, Some(2), "{}", ran.context());
    assert!(
        ran.stderr.contains("nothing to resume"),
        "{}",
        ran.context()
    );
    assert!(journals_in(dir.path()).is_empty());

    // A run that stops at step 2.
    let ran = run_to_end(dir.path(), &["run", p(&rb)], &[], QUICK);
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    assert_eq!(remote_file(&sshd, &trace).as_deref(), Some("1\n"));

    // The runbook changes: --resume refuses, runs nothing, writes no journal.
    let rb = write_runbook(
        dir.path(),
        "resume",
        &target,
        "",
        &steps.replace("echo 3", "echo three"),
    );
    fs::write(dir.path().join("flag"), "").unwrap();
    let ran = run_to_end(dir.path(), &["run", p(&rb), "--resume"], &[], QUICK);
    assert_eq!(ran.code, Some(2), "{}", ran.context());
    assert!(ran.stderr.contains("changed"), "{}", ran.context());
    assert!(ran.stderr.contains("--force"), "{}", ran.context());
    assert_eq!(remote_file(&sshd, &trace).as_deref(), Some("1\n"));
    assert_eq!(journals_in(dir.path()).len(), 1);

    // --force: resumes at the failed step with the new runbook.
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--resume", "--force"],
        &[],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert_eq!(remote_file(&sshd, &trace).as_deref(), Some("1\n2\nthree\n"));
    let files = journals_in(dir.path());
    assert_eq!(files.len(), 2);
    let first = read_journal(&files[0]);
    let resumed = read_journal(&files[1]);
    assert_eq!(resumed[0]["resumed_from"], first[0]["run_id"]);
    assert_eq!(resumed[0]["sha256"], sha256_file(&rb));
    assert_eq!(started_steps(&resumed), vec![2, 3]);

    // That run finished: nothing left to resume.
    let ran = run_to_end(dir.path(), &["run", p(&rb), "--resume"], &[], QUICK);
    assert_eq!(ran.code, Some(2), "{}", ran.context());
    assert!(
        ran.stderr.contains("nothing to resume"),
        "{}",
        ran.context()
    );
    assert_eq!(remote_file(&sshd, &trace).as_deref(), Some("1\n2\nthree\n"));
}

// --- 12. manual steps without a terminal ----------------------------------------------------------

#[test]
fn a_manual_step_without_a_terminal_needs_yes_and_nothing_runs_without_it() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "manual",
        &sshd.runbook_target_yaml("lab"),
        "",
        r#"      - name: before the manual step
        run: touch @DIR@/before-ran
      - name: press the power button
        manual: Press the power button once.
      - name: after
        run: touch @DIR@/after-ran
"#,
    );
    let logins_before = logins(&sshd);
    let ran = run_to_end(dir.path(), &["run", p(&rb)], &[], QUICK);
    assert_eq!(ran.code, Some(2), "{}", ran.context());
    assert!(ran.stderr.contains("--yes"), "{}", ran.context());
    assert!(journals_in(dir.path()).is_empty());
    assert_eq!(logins(&sshd), logins_before, "{}", sshd.log());
    assert!(remote_file(&sshd, &dir.path().join("before-ran")).is_none());

    let ran = run_to_end(dir.path(), &["run", p(&rb), "--yes"], &[], QUICK);
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let journal = read_journal(&only_journal(dir.path()));
    assert_eq!(started_steps(&journal), vec![1, 2, 3]);
    assert_eq!(
        step_event(&journal, "step_finished", 2)["outcome"],
        "passed"
    );
    assert!(remote_file(&sshd, &dir.path().join("before-ran")).is_some());
    assert!(remote_file(&sshd, &dir.path().join("after-ran")).is_some());
}

// --- 13. a missing secret ------------------------------------------------------------------------

#[test]
fn a_missing_secret_a_step_reads_is_named_and_nothing_runs() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "noenv",
        &sshd.runbook_target_yaml("lab"),
        "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n",
        r#"      - name: would write
        run: "touch @DIR@/ran; echo {{ env.RECOVER_WEBHOOK }}"
      - notify: ops
        message: done
"#,
    );
    let logins_before = logins(&sshd);
    let ran = run_to_end(dir.path(), &["run", p(&rb), "--yes"], &[], QUICK);
    assert_eq!(ran.code, Some(2), "{}", ran.context());
    assert!(ran.stderr.contains("RECOVER_WEBHOOK"), "{}", ran.context());
    assert!(journals_in(dir.path()).is_empty());
    assert_eq!(logins(&sshd), logins_before, "{}", sshd.log());
    assert!(remote_file(&sshd, &dir.path().join("ran")).is_none());
}

// --- more connection trouble: Ctrl-C while reconnecting, a step started while sshd is down,
// --- a hung (frozen) target -----------------------------------------------------------------

/// A run of `before` (remote), `gap` (local, 1 s) and `after` (remote, `after_timeout`), with
/// sshd stopped while `gap` runs: `after` starts while the target is unreachable.
struct SshdGoesDown {
    dir: tempfile::TempDir,
    journal_path: PathBuf,
    bg: Background,
}

fn run_while_sshd_goes_down(sshd: &mut Sshd, name: &str, after_timeout: &str) -> SshdGoesDown {
    let dir = tempfile::tempdir().unwrap();
    let steps = format!(
        r#"      - name: before
        run: echo before >> @DIR@/trace
      - name: gap
        local: sleep 1
      - name: after
        run: echo after >> @DIR@/trace
        timeout: {after_timeout}
"#
    );
    let rb = write_runbook(
        dir.path(),
        name,
        &sshd.runbook_target_yaml("lab"),
        "",
        &steps,
    );
    let journal_path = dir.path().join("j.jsonl");
    let bg = Background::start(
        dir.path(),
        &["run", p(&rb), "--journal", p(&journal_path)],
        &[],
    );
    assert!(
        wait_for_event(&journal_path, Duration::from_secs(20), |e| {
            e["event"] == "step_started" && e["step"] == 2
        }),
        "the gap never started: {}",
        bg.output()
    );
    sshd.stop();
    SshdGoesDown {
        dir,
        journal_path,
        bg,
    }
}

#[test]
fn ctrl_c_while_the_target_is_unreachable_stops_at_once() {
    let Some(mut sshd) = Sshd::start_or_skip() else {
        return;
    };
    let SshdGoesDown {
        dir,
        journal_path,
        mut bg,
    } = run_while_sshd_goes_down(&mut sshd, "lostctrlc", "2m");
    // The loss is journaled while it lasts, not only once the connection is back.
    assert!(
        wait_for_event(&journal_path, Duration::from_secs(10), |e| {
            e["event"] == "connection_lost"
        }),
        "no connection_lost while the target is down: {}",
        bg.output()
    );
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(bg.pid(), libc::SIGINT) }, 0);
    let status = bg
        .wait(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running 30 s after SIGINT: {}", bg.output()));
    assert_eq!(status.code(), Some(130), "{}", bg.output());
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "Ctrl-C took {:?} while reconnecting",
        sent.elapsed()
    );
    let journal = read_journal(&journal_path);
    assert_eq!(
        step_event(&journal, "step_finished", 3)["outcome"],
        "interrupted"
    );
    let end = last_event(&journal);
    assert_eq!(end["outcome"], "interrupted", "{}", dump(&journal));
    assert_eq!(end["failed_step"], 3);
    sshd.start_again();
    assert_eq!(
        remote_file(&sshd, &dir.path().join("trace")).as_deref(),
        Some("before\n")
    );
}

#[test]
fn a_remote_step_started_while_sshd_is_down_reconnects_with_backoff() {
    let Some(mut sshd) = Sshd::start_or_skip() else {
        return;
    };
    let SshdGoesDown {
        dir,
        journal_path,
        mut bg,
    } = run_while_sshd_goes_down(&mut sshd, "backoff", "20s");
    assert!(
        wait_for_event(&journal_path, Duration::from_secs(20), |e| {
            e["event"] == "step_started" && e["step"] == 3
        }),
        "step 3 never started: {}",
        bg.output()
    );
    thread::sleep(Duration::from_secs(3));
    sshd.start_again();

    let status = bg
        .wait(Duration::from_secs(40))
        .unwrap_or_else(|| panic!("still running: {}", bg.output()));
    let journal = read_journal(&journal_path);
    assert_eq!(
        status.code(),
        Some(0),
        "{}\n{}",
        bg.output(),
        dump(&journal)
    );
    assert_eq!(
        remote_file(&sshd, &dir.path().join("trace")).as_deref(),
        Some("before\nafter\n")
    );
    let connected = events(&journal, "connected");
    assert_eq!(connected.len(), 2, "{}", dump(&journal));
    assert_eq!(connected[1]["reconnect"], true);
}

#[test]
fn a_hung_target_fails_the_step_in_bounded_time_and_is_reconnected_when_it_answers() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "frozen",
        &sshd.runbook_target_yaml("lab"),
        "",
        r#"      - name: before
        run: echo before >> @DIR@/trace
      - name: gap
        local: sleep 2
      - name: while hung
        run: echo hung >> @DIR@/trace
        timeout: 3s
        on_fail: continue
      - name: after
        run: echo after >> @DIR@/trace
        timeout: 20s
"#,
    );
    let journal_path = dir.path().join("j.jsonl");
    let mut bg = Background::start(
        dir.path(),
        &["run", p(&rb), "--journal", p(&journal_path)],
        &[],
    );
    assert!(
        wait_for_event(&journal_path, Duration::from_secs(20), |e| {
            e["event"] == "step_started" && e["step"] == 2
        }),
        "the gap never started: {}",
        bg.output()
    );
    // TCP still connects, nothing answers: only keep-alives can tell.
    sshd.freeze();
    let hung = wait_for_event(&journal_path, Duration::from_secs(25), |e| {
        e["event"] == "step_finished" && e["step"] == 3
    });
    sshd.thaw();
    assert!(
        hung,
        "the step on the hung target never ended: {}",
        bg.output()
    );
    let status = bg
        .wait(Duration::from_secs(40))
        .unwrap_or_else(|| panic!("still running: {}", bg.output()));
    let journal = read_journal(&journal_path);
    assert_eq!(status.code(), Some(0), "{}", dump(&journal));

    let f = step_event(&journal, "step_finished", 3);
    assert_eq!(f["outcome"], "failed_continued", "{f}");
    let d = f["duration"].as_f64().unwrap();
    assert!(d < 15.0, "the step on a hung target took {d} s");
    assert!(
        f["reason"]
            .as_str()
            .unwrap()
            .contains("lost the connection"),
        "{f}"
    );
    // The loss is journaled with the step it broke, not only when the next step reconnects.
    let pos = |cond: &dyn Fn(&Value) -> bool| journal.iter().position(cond);
    let lost = pos(&|e| e["event"] == "connection_lost");
    let step3 = pos(&|e| e["event"] == "step_finished" && e["step"] == 3);
    assert!(
        lost.is_some() && lost < step3,
        "connection_lost not before the step's end: {}",
        dump(&journal)
    );
    let connected = events(&journal, "connected");
    assert_eq!(connected.len(), 2, "{}", dump(&journal));
    assert_eq!(connected[1]["reconnect"], true);
    assert_eq!(
        step_event(&journal, "step_finished", 4)["outcome"],
        "passed"
    );
    assert_eq!(
        remote_file(&sshd, &dir.path().join("trace")).as_deref(),
        Some("before\nafter\n")
    );
}

/// Stand-ins for `journalctl` and `last` on the target that answer every query of the
/// previous-boot evidence command from a real capture of the lab VM (`fixtures/lab/`), section
/// by section, with the capture's exit codes; put ahead of the real ones in the sessions' PATH
/// (sshd's `SetEnv`), then sshd restarted on the same port.
fn previous_boot_standins(sshd: &mut Sshd, dir: &Path, capture: &str) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lab")
        .join(capture);
    assert!(fixture.is_file(), "{}", fixture.display());
    let section = r#"#!/bin/sh
# Prints section $1 of the capture and exits with its code.
awk -v s="$1" '$0 == "@@ " s { on = 1; next } on && $0 ~ "^@@ " s " exit " { code = $NF; exit } on { print } END { exit code }' "$RECOVER_TEST_BOOT"
"#;
    let journalctl = r#"#!/bin/sh
case "$*" in
  *--list-boots*) exec section boots ;;
  *uncleanly*) exec section unclean ;;
  *MESSAGE_ID=*) exec section shutdown ;;
  *"-t systemd-journald -n 5"*) exec section journald_stop ;;
  *EXT4-fs*) exec section ext4 ;;
esac
echo "journalctl stand-in: unexpected $*" >&2; exit 2
"#;
    for (name, text) in [
        ("section", section),
        ("journalctl", journalctl),
        ("last", "#!/bin/sh\nexec section last\n"),
    ] {
        let p = bin.join(name);
        fs::write(&p, text).unwrap();
        let mut perm = fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        fs::set_permissions(&p, perm).unwrap();
    }
    let mut cfg = fs::read_to_string(sshd.sshd_config()).unwrap();
    cfg.push_str(&format!(
        "SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin RECOVER_TEST_BOOT={}\n",
        bin.display(),
        fixture.display()
    ));
    fs::write(sshd.sshd_config(), cfg).unwrap();
    sshd.stop();
    sshd.start_again();
}

/// `when: unclean_shutdown` against a real sshd, the target's journal played by real lab
/// captures: after a clean shutdown the step is skipped (a `step_finished` "skipped" record
/// that says why, nothing run on the target); after a power cut it runs, and the
/// `previous_boot` step (`on_unclean: warn`) warns and the run goes on.
#[test]
fn a_when_unclean_shutdown_step_runs_only_after_a_hard_cut() {
    for (capture, unclean) in [
        ("previous-boot-after-shutdown.txt", false),
        ("previous-boot-after-powercut.txt", true),
    ] {
        let Some(mut sshd) = Sshd::start_or_skip() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        previous_boot_standins(&mut sshd, dir.path(), capture);
        let rb = write_runbook(
            dir.path(),
            "when",
            &sshd.runbook_target_yaml("lab"),
            "",
            r#"      - name: how it went down
        previous_boot: { on_unclean: warn }
        timeout: 20s
      - name: verify the models
        when: unclean_shutdown
        run: echo verified > @DIR@/verified
        timeout: 10s
      - name: after
        run: echo after > @DIR@/after
        timeout: 10s
"#,
        );
        let state = tempfile::tempdir().unwrap();
        let out = recover_in(state.path())
            .args(["run", p(&rb), "--yes"])
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let j = read_journal(&only_journal(state.path()));
        assert_eq!(out.status.code(), Some(0), "{capture}: {}", dump(&j));
        let boot = step_event(&j, "step_finished", 1);
        let verdict = if unclean { "unclean" } else { "clean" };
        assert!(
            boot["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("previous boot {verdict}:")),
            "{capture}: {boot}"
        );
        let verify = step_event(&j, "step_finished", 2);
        assert!(remote_file(&sshd, &dir.path().join("after")).is_some());
        if unclean {
            assert_eq!(verify["outcome"], "passed", "{verify}");
            assert_eq!(
                remote_file(&sshd, &dir.path().join("verified")).as_deref(),
                Some("verified\n")
            );
            assert!(
                events(&j, "warning")
                    .iter()
                    .any(|w| w["step"] == 1
                        && w["message"].as_str().unwrap_or("").contains("unclean")),
                "{}",
                dump(&j)
            );
        } else {
            assert_eq!(verify["outcome"], "skipped", "{verify}");
            assert!(
                verify["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("step 1 found a clean shutdown"),
                "{verify}"
            );
            assert!(remote_file(&sshd, &dir.path().join("verified")).is_none());
            assert!(
                !started_steps(&j).contains(&2),
                "a skipped step never starts: {}",
                dump(&j)
            );
        }
    }
}

/// `{{ run.events }}` in the last post names what happened on the way (issue 22): a step that
/// failed and was passed over; "none" on a run where nothing did.
#[test]
fn the_last_post_says_what_happened_on_the_way() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", 200, "ok");
    let dir = tempfile::tempdir().unwrap();
    let head = "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n";
    for (name, middle, want) in [
        (
            "events",
            "      - name: it's \"optional\"\n        run: \"false\"\n        on_fail: continue\n        timeout: 10s\n",
            "Back. On the way: step 2 (it's \"optional\") failed, the run went on.",
        ),
        ("quiet", "", "Back. On the way: none."),
    ] {
        hook.clear_requests();
        let rb = write_runbook(
            dir.path(),
            name,
            &sshd.runbook_target_yaml("lab"),
            head,
            &format!(
                "      - wait_ssh: {{ every: 1s, timeout: 10s }}\n{middle}      - notify: ops\n        message: \"Back. On the way: {{{{ run.events }}}}.\"\n"
            ),
        );
        let ran = run_to_end(
            dir.path(),
            &["run", p(&rb), "--yes"],
            &[("RECOVER_WEBHOOK", &hook.url_for("/hook"))],
            QUICK,
        );
        assert!(ran.code.is_some(), "{}", ran.context());
        let posts = hook.requests_to("/hook");
        assert_eq!(posts.len(), 1, "{name}: {}", ran.context());
        assert_eq!(posts[0].json()["text"].as_str(), Some(want), "{name}");
    }
}

/// After a real power cut (the lab's capture played by stand-ins), the last post's
/// `{{ run.events }}` says the previous boot was not clean.
#[test]
fn the_last_post_names_an_unclean_shutdown() {
    let Some(mut sshd) = Sshd::start_or_skip() else {
        return;
    };
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", 200, "ok");
    let dir = tempfile::tempdir().unwrap();
    previous_boot_standins(&mut sshd, dir.path(), "previous-boot-after-powercut.txt");
    let rb = write_runbook(
        dir.path(),
        "cut",
        &sshd.runbook_target_yaml("lab"),
        "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: ntfy }\n",
        r#"      - name: how it went down
        previous_boot: { on_unclean: warn }
        timeout: 20s
      - notify: ops
        message: "On the way: {{ run.events }}"
"#,
    );
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--yes"],
        &[("RECOVER_WEBHOOK", &hook.url_for("/hook"))],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let posts = hook.requests_to("/hook");
    assert_eq!(posts.len(), 1, "{}", ran.context());
    assert_eq!(
        posts[0].body,
        "On the way: step 1: previous boot unclean: journald found the previous boot's journal files uncleanly shut down: the power was cut"
    );
}
