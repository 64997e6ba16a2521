//! Issue 23: every end of a run that is not success posts once (`src/engine/failure.rs`). The
//! real `recover` binary against a real sshd and a real webhook listener on 127.0.0.1: a failed
//! step, an abort, SIGTERM mid-step (and a hung channel after it), and where the post goes
//! (`failures: true`). The unattended skip's post is in `tests/unattended.rs`; the lab's unit
//! failures (start limit, crash loop) in `tests/lab_e2e.rs` scenario 3.
//!
//! Assertions are on what the webhook received, compared with the journal (the reason, the
//! resume command), and on the resume command itself: it is run, and it continues the run.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Background, HttpServer, Sshd, clean_command, dump, events, last_event, p, read_journal,
    run_bounded, run_to_end, step_event, text, write_runbook,
};
use serde_json::Value;

const QUICK: Duration = Duration::from_secs(60);
/// A secret with every character a shell or JSON treats specially.
const TOKEN: &str = "tok-a'b\"c$d\\e-9f8e7d";

/// `ops` (Slack format, `RECOVER_WEBHOOK`) as the abort channel.
const HEAD: &str = "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n\
                    abort:\n  notify: ops\n  message: |\n    Leave the box idle and page the on-call.\n\n    Second paragraph, not posted.\n";

fn peers() -> Option<(Sshd, HttpServer, tempfile::TempDir)> {
    let sshd = Sshd::start_or_skip()?;
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", 200, "ok");
    Some((sshd, hook, tempfile::tempdir().unwrap()))
}

/// The Slack `text` of every post to `path`.
fn posts(hook: &HttpServer, path: &str) -> Vec<String> {
    hook.requests_to(path)
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The one line of `post` that starts with `prefix`.
fn line<'a>(post: &'a str, prefix: &str) -> &'a str {
    let found: Vec<&str> = post.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "one `{prefix}` line in:\n{post}");
    found[0]
}

/// The command a line of the post ends with, after `marker`.
fn command_after<'a>(post: &'a str, marker: &str) -> &'a str {
    let l = post
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no `{marker}` in:\n{post}"));
    &l[l.find(marker).unwrap() + marker.len()..]
}

/// Runs `command` (a line as the post gives it) with `sh -c`, `recover` first on PATH, in the
/// clean environment the tests give `recover`, plus `env`.
fn run_line(state: &Path, command: &str, env: &[(&str, &str)]) -> std::process::Output {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_recover"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = clean_command("sh", state);
    cmd.arg("-c").arg(command).env("PATH", path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(cmd, QUICK)
}

/// The `notified` events of the journal: one, ok, just before `run_finished`.
fn posted_once_before_the_end(journal: &[Value]) {
    let notified = events(journal, "notified");
    assert_eq!(notified.len(), 1, "{}", dump(journal));
    assert_eq!(notified[0]["ok"], true, "{}", dump(journal));
    assert_eq!(notified[0]["channel"], "ops");
    let n = journal.len();
    assert_eq!(journal[n - 2]["event"], "notified", "{}", dump(journal));
    assert_eq!(journal[n - 1]["event"], "run_finished");
}

#[test]
fn a_failed_step_posts_once_with_its_reason_output_units_and_a_resume_command_that_works() {
    let Some((sshd, hook, dir)) = peers() else {
        return;
    };
    let rb = write_runbook(
        dir.path(),
        "failed",
        &sshd.runbook_target_yaml("lab"),
        HEAD,
        r#"      - wait_ssh: { every: 1s, timeout: 10s }
      - name: a unit that is not there
        start: recover-test-absent.service
        sudo: false
        on_fail: continue
        timeout: 20s
      - name: token check
        run: |
          for i in $(seq 1 30); do echo "line $i"; done
          printf '\033[31mred\033[0m and a bell \007 here\n'
          printf '%0190d%s\n' 0 {{ env.RECOVER_TOKEN }}
          printf 'token %s rejected\n' {{ env.RECOVER_TOKEN }}
          echo "stderr says a'b\"c" >&2
          test -e @DIR@/fixed || exit 3
        timeout: 10s
      - name: a unit after the failure
        start: recover-test-later.service
        sudo: false
        timeout: 20s
"#,
    );
    let jpath = dir.path().join("j.jsonl");
    let webhook = hook.url_for("/hook");
    let env = [
        ("RECOVER_WEBHOOK", webhook.as_str()),
        ("RECOVER_TOKEN", TOKEN),
    ];
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--journal", p(&jpath)],
        &env,
        QUICK,
    );
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    let journal = read_journal(&jpath);
    posted_once_before_the_end(&journal);
    let end = last_event(&journal);
    assert_eq!(end["failed_step"], 3, "{}", dump(&journal));
    let reason = step_event(&journal, "step_finished", 3)["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    let resume = end["resume"].as_str().expect("a resume command").to_owned();

    let posts = posts(&hook, "/hook");
    assert_eq!(posts.len(), 1, "{posts:?}");
    let post = &posts[0];
    assert!(
        post.starts_with("FAILED: Engine test failed stopped at step 3 (token check) after "),
        "{post}"
    );
    assert!(
        line(post, "FAILED: ").contains(" budget, on lab ("),
        "{post}"
    );
    assert_eq!(line(post, "Reason: "), format!("Reason: {reason}"));
    // The last twelve lines of its output, cleaned and redacted, then its stderr.
    // (A line is cut at 200 characters after the secret in it is hidden, not before: the
    // secret straddles the cut.)
    let long = format!("> {}***", "0".repeat(190));
    let output: Vec<&str> = post.lines().filter(|l| l.starts_with("> ")).collect();
    assert_eq!(
        output,
        [
            "> line 22",
            "> line 23",
            "> line 24",
            "> line 25",
            "> line 26",
            "> line 27",
            "> line 28",
            "> line 29",
            "> line 30",
            "> red and a bell ? here",
            &long,
            "> token *** rejected",
            "> (stderr:)",
            "> stderr says a'b\"c",
        ],
        "{post}"
    );
    assert!(
        !post.contains("9f8e7d") && !post.contains('\x1b') && !post.contains('\x07'),
        "{post}"
    );
    // The unit the run reached was asked about (no systemd here, or no such unit: never
    // "active"); the one after the failure was not started.
    let units = line(post, "Units: ");
    assert!(
        units.contains("unknown: recover-test-absent.service (")
            || units.contains("NOT active: recover-test-absent.service ("),
        "{units}"
    );
    assert!(
        units.ends_with("; not started (the run stopped before them): recover-test-later.service"),
        "{units}"
    );
    assert_eq!(
        command_after(post, "Fix the cause, then continue from this step: "),
        resume
    );
    assert!(
        post.ends_with("\n(attended run, started by hand)"),
        "{post}"
    );

    // The resume command, as posted, continues from step 3 once the cause is fixed.
    std::fs::write(dir.path().join("fixed"), "").unwrap();
    let resumed = run_line(dir.path(), &resume, &env);
    // Step 4 starts a unit that does not exist: the resumed run fails there, not at step 3.
    assert_eq!(resumed.status.code(), Some(1), "{}", text(&resumed.stderr));
    let journals: Vec<PathBuf> = vec![jpath.clone()];
    let all = read_journal(&journals[0]);
    let runs = events(&all, "run_started");
    assert_eq!(runs.len(), 2, "{}", dump(&all));
    assert_eq!(runs[1]["first_step"], 3, "{}", dump(&all));
    assert_eq!(last_event(&all)["failed_step"], 4, "{}", dump(&all));
    // The resumed run failed too: a second post, of step 4.
    let posts = self::posts(&hook, "/hook");
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(
        posts[1]
            .starts_with("FAILED: Engine test failed stopped at step 4 (a unit after the failure)"),
        "{}",
        posts[1]
    );
}

#[test]
fn an_abort_posts_once_with_the_same_fields_and_the_procedure() {
    let Some((sshd, hook, dir)) = peers() else {
        return;
    };
    let rb = write_runbook(
        dir.path(),
        "aborted",
        &sshd.runbook_target_yaml("lab"),
        HEAD,
        r#"      - name: kernel log
        run: |
          echo "[    3.0] all fine"
          echo "[    3.1] EXT4-fs error (device vda): inode #2: deleted inode referenced"
        abort_if: { stdout: "EXT4-fs error" }
        abort_message: The kernel reported filesystem errors.
      - name: the unit
        start: recover-test-after-abort.service
        sudo: false
"#,
    );
    let jpath = dir.path().join("j.jsonl");
    let webhook = hook.url_for("/hook");
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--journal", p(&jpath)],
        &[("RECOVER_WEBHOOK", &webhook)],
        QUICK,
    );
    assert_eq!(ran.code, Some(3), "{}", ran.context());
    let journal = read_journal(&jpath);
    posted_once_before_the_end(&journal);
    let reason = step_event(&journal, "step_finished", 1)["reason"]
        .as_str()
        .unwrap()
        .to_owned();

    let posts = posts(&hook, "/hook");
    assert_eq!(posts.len(), 1, "{posts:?}");
    let post = &posts[0];
    assert!(
        post.starts_with("ABORT: Engine test aborted stopped at step 1 (kernel log) after "),
        "{post}"
    );
    assert_eq!(line(post, "Reason: "), format!("Reason: {reason}"));
    assert!(reason.contains("EXT4-fs error"), "{reason}");
    assert!(
        post.contains(
            "\nThe kernel reported filesystem errors.\nThe abort procedure is being followed:\nLeave the box idle and page the on-call.\n(the rest of the procedure: see the binder)\n"
        ),
        "{post}"
    );
    assert!(!post.contains("Second paragraph"), "{post}");
    assert!(
        post.contains(
            "\nLast output of step 1:\n> [    3.0] all fine\n> [    3.1] EXT4-fs error (device vda): inode #2: deleted inode referenced\n"
        ),
        "{post}"
    );
    assert_eq!(
        line(post, "Units: "),
        "Units: not started (the run stopped before them): recover-test-after-abort.service"
    );
    let resume = command_after(
        post,
        "Once the abort procedure is done, to continue from this step: ",
    );
    assert_eq!(
        resume,
        format!("recover run {} --resume --journal {}", p(&rb), p(&jpath))
    );
}

/// SIGTERM mid-step (as `systemctl stop` sends it): the post goes out within a few seconds,
/// once, naming the step and the signal; the exit is 143. Repeated: the signal lands at a
/// slightly different moment each time.
#[test]
fn sigterm_mid_step_posts_once_within_seconds_and_exits_143() {
    let Some((sshd, hook, dir)) = peers() else {
        return;
    };
    let rb = write_runbook(
        dir.path(),
        "term",
        &sshd.runbook_target_yaml("lab"),
        HEAD,
        r#"      - wait_ssh: { every: 1s, timeout: 10s }
      - name: a long step
        run: |
          printf 'loading the model %s\n' {{ env.RECOVER_TOKEN }}
          sleep 1
          touch @DIR@/started
          sleep 60
        timeout: 2m
      - name: the unit
        start: recover-test-after-term.service
        sudo: false
"#,
    );
    let webhook = hook.url_for("/hook");
    let env = [
        ("RECOVER_WEBHOOK", webhook.as_str()),
        ("RECOVER_TOKEN", TOKEN),
    ];
    for round in 0..4u64 {
        hook.clear_requests();
        let jpath = dir.path().join(format!("j{round}.jsonl"));
        let marker = dir.path().join("started");
        let _ = std::fs::remove_file(&marker);
        let mut run = Background::start(dir.path(), &["run", p(&rb), "--journal", p(&jpath)], &env);
        let midway = common::eventually(Duration::from_secs(30), || marker.exists());
        assert!(midway, "round {round}: step 2 never ran:\n{}", run.output());
        std::thread::sleep(Duration::from_millis(100 * round));
        let sent = Instant::now();
        // SAFETY: kill(2) of the run this test started, by its pid.
        assert_eq!(unsafe { libc::kill(run.pid(), libc::SIGTERM) }, 0);
        let posted = hook.wait_for_requests("/hook", 1, Duration::from_secs(5));
        let took = sent.elapsed();
        assert!(
            posted,
            "round {round}: no post within 5 s:\n{}",
            run.output()
        );
        let status = run.wait(Duration::from_secs(10)).expect("the run ends");
        assert_eq!(status.code(), Some(143), "{}", run.output());
        common::say(&format!(
            "failure post {round}: {:.0} ms after SIGTERM, exit after {:.0} ms",
            took.as_secs_f64() * 1000.0,
            sent.elapsed().as_secs_f64() * 1000.0
        ));

        let journal = read_journal(&jpath);
        posted_once_before_the_end(&journal);
        let resume = last_event(&journal)["resume"]
            .as_str()
            .expect("a resume command")
            .to_owned();
        let posts = posts(&hook, "/hook");
        assert_eq!(posts.len(), 1, "{posts:?}");
        let post = &posts[0];
        assert!(
            post.starts_with(
                "INTERRUPTED: Engine test term stopped at step 2 (a long step) after "
            ),
            "{post}"
        );
        assert_eq!(
            line(post, "Reason: "),
            "Reason: terminated by SIGTERM (systemctl stop, kill)"
        );
        // Its output is not kept when it is stopped: the lines seen as they came are posted.
        assert!(
            post.contains("\nLast output of step 2:\n> loading the model ***\n"),
            "{post}"
        );
        assert_eq!(
            line(post, "Units: "),
            "Units: not started (the run stopped before them): recover-test-after-term.service"
        );
        assert_eq!(
            command_after(post, "Fix the cause, then continue from this step: "),
            resume
        );
    }
}

/// A channel that never answers does not hold the exit after a signal: the post gives up
/// within its bound and says so in the journal.
#[test]
fn a_hung_failure_channel_does_not_hold_the_exit_after_sigterm() {
    let Some((sshd, hook, dir)) = peers() else {
        return;
    };
    hook.hang("POST", "/hung");
    let rb = write_runbook(
        dir.path(),
        "hung",
        &sshd.runbook_target_yaml("lab"),
        HEAD,
        r#"      - name: a long step
        run: touch @DIR@/started; sleep 60
        timeout: 2m
"#,
    );
    let jpath = dir.path().join("j.jsonl");
    let webhook = hook.url_for("/hung");
    let mut run = Background::start(
        dir.path(),
        &["run", p(&rb), "--journal", p(&jpath)],
        &[("RECOVER_WEBHOOK", &webhook)],
    );
    let marker = dir.path().join("started");
    assert!(common::eventually(Duration::from_secs(30), || marker.exists()));
    let sent = Instant::now();
    // SAFETY: kill(2) of the run this test started, by its pid.
    assert_eq!(unsafe { libc::kill(run.pid(), libc::SIGTERM) }, 0);
    let status = run.wait(Duration::from_secs(20)).expect("the run ends");
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(143), "{}", run.output());
    common::say(&format!(
        "hung failure channel: exit {:.0} ms after SIGTERM",
        took.as_secs_f64() * 1000.0
    ));
    // The stop itself (the remote command killed) plus the post's 5 s bound, with room for a
    // loaded machine; without the bound, three attempts of 10 s and their pauses: 33 s.
    assert!(took < Duration::from_secs(10), "the exit took {took:?}");
    assert!(hook.wait_for_requests("/hung", 1, Duration::from_secs(1)));
    let journal = read_journal(&jpath);
    let notified = events(&journal, "notified");
    assert_eq!(notified.len(), 1, "{}", dump(&journal));
    assert_eq!(notified[0]["ok"], false);
    assert_eq!(last_event(&journal)["event"], "run_finished");
}

/// `failures: true` sends the post to that channel instead of the abort channel; a plain
/// failed run without any failure channel or abort channel posts nothing.
#[test]
fn a_channel_marked_failures_gets_the_post_instead_of_the_abort_channel() {
    let Some((sshd, hook, dir)) = peers() else {
        return;
    };
    hook.respond("POST", "/pager", 200, "ok");
    let head = "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n  \
                pager: { webhook: \"{{ env.RECOVER_PAGER }}\", format: slack, failures: true }\n\
                abort:\n  notify: ops\n";
    let rb = write_runbook(
        dir.path(),
        "marked",
        &sshd.runbook_target_yaml("lab"),
        head,
        "      - name: fails\n        run: echo nope; exit 1\n",
    );
    let ops = hook.url_for("/hook");
    let pager = hook.url_for("/pager");
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb)],
        &[("RECOVER_WEBHOOK", &ops), ("RECOVER_PAGER", &pager)],
        QUICK,
    );
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    assert!(posts(&hook, "/hook").is_empty());
    let paged = posts(&hook, "/pager");
    assert_eq!(paged.len(), 1, "{paged:?}");
    assert!(
        paged[0].starts_with("FAILED: Engine test marked stopped at step 1 (fails)"),
        "{}",
        paged[0]
    );
    assert!(paged[0].contains("\n> nope\n"), "{}", paged[0]);

    let bare = write_runbook(
        dir.path(),
        "bare",
        &sshd.runbook_target_yaml("lab"),
        "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n",
        "      - name: fails\n        run: exit 1\n",
    );
    hook.clear_requests();
    let ran = run_to_end(
        dir.path(),
        &["run", p(&bare)],
        &[("RECOVER_WEBHOOK", &ops)],
        QUICK,
    );
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    assert!(hook.requests().is_empty(), "{:?}", hook.requests());
}

/// `failures:` is a boolean: `check` says where it is not, and the JSON schema has it.
#[test]
fn check_refuses_a_failures_key_that_is_not_a_boolean_and_the_schema_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "flag",
        "  box: { host: 127.0.0.1 }\n",
        "notify:\n  ops: { webhook: \"https://example.com/x\", format: slack, failures: maybe }\n",
        "      - run: \"true\"\n",
    );
    let ran = run_to_end(dir.path(), &["check", p(&rb)], &[], QUICK);
    assert_eq!(ran.code, Some(2), "{}", ran.context());
    assert!(
        ran.stderr
            .contains("flag.yaml:7:69: `maybe` is not true or false"),
        "{}",
        ran.context()
    );
    let fine = std::fs::read_to_string(&rb)
        .unwrap()
        .replace("failures: maybe", "failures: true");
    std::fs::write(&rb, fine).unwrap();
    let ran = run_to_end(dir.path(), &["check", p(&rb)], &[], QUICK);
    assert_eq!(ran.code, Some(0), "{}", ran.context());

    let schema = run_to_end(dir.path(), &["schema"], &[], QUICK);
    assert_eq!(schema.code, Some(0), "{}", schema.context());
    let v: Value = serde_json::from_str(&schema.stdout).expect("JSON");
    assert_eq!(
        v["$defs"]["Channel"]["properties"]["failures"]["type"],
        serde_json::json!(["boolean", "null"]),
        "{}",
        schema.stdout
    );
}

/// The lead's end check (every started unit healthy before "we are back") fails the run after
/// its steps: the failure post says where to continue and which units are active, as the
/// stand-in reports them, and no "we are back" goes out.
#[test]
fn an_end_check_that_finds_a_unit_down_posts_once_with_the_units_as_the_box_says() {
    let Some((mut sshd, hook, dir)) = peers() else {
        return;
    };
    sshd.systemctl_standin(dir.path());
    let api = HttpServer::start();
    api.respond("GET", "/health", 200, "ok");
    let head = format!("vars:\n  api: {}\n{HEAD}", api.url());
    let rb = write_runbook(
        dir.path(),
        "endcheck",
        &sshd.runbook_target_yaml("spark"),
        &head,
        r#"      - start: vpn.service
      - start: api.service
        health:
          http: { url: "{{ vars.api }}/health", expect: { status: 200 } }
          every: 1s
          timeout: 10s
      - name: something stops the vpn behind the run's back
        run: "rm -f @DIR@/units/vpn.service"
      - notify: ops
        message: "We are back. All units healthy."
"#,
    );
    let jpath = dir.path().join("j.jsonl");
    let webhook = hook.url_for("/hook");
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--journal", p(&jpath)],
        &[("RECOVER_WEBHOOK", &webhook)],
        QUICK,
    );
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    let journal = read_journal(&jpath);
    posted_once_before_the_end(&journal);
    let end = last_event(&journal);
    assert_eq!(end["failed_step"], 1, "{}", dump(&journal));
    let posts = posts(&hook, "/hook");
    assert_eq!(posts.len(), 1, "{posts:?}");
    let post = &posts[0];
    assert!(
        post.starts_with("FAILED: Engine test endcheck ended after ")
            && line(post, "FAILED: ").ends_with(", at step 1 (start vpn.service)."),
        "{post}"
    );
    assert_eq!(
        line(post, "Reason: "),
        format!("Reason: {}", end["message"].as_str().unwrap())
    );
    assert!(!post.contains("Last output"), "{post}");
    assert_eq!(
        line(post, "Units: "),
        "Units: active: api.service; NOT active: vpn.service (inactive)"
    );
    assert_eq!(
        command_after(post, "Fix the cause, then continue from this step: "),
        end["resume"].as_str().unwrap()
    );
}

/// An overlay can mark the base's channel `failures: true`: a base without an abort channel
/// then posts its failures there.
#[test]
fn an_overlay_marks_the_bases_channel_for_failures() {
    let Some((sshd, hook, dir)) = peers() else {
        return;
    };
    let base = write_runbook(
        dir.path(),
        "base",
        &sshd.runbook_target_yaml("lab"),
        "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n",
        "      - name: fails\n        run: echo broken; exit 1\n",
    );
    let overlay = dir.path().join("site.yaml");
    fs::write(
        &overlay,
        "extends: base.yaml\nnotify:\n  ops: { failures: true }\n",
    )
    .unwrap();
    let webhook = hook.url_for("/hook");
    let env = [("RECOVER_WEBHOOK", webhook.as_str())];
    let ran = run_to_end(dir.path(), &["run", p(&base)], &env, QUICK);
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    assert!(hook.requests().is_empty(), "{:?}", hook.requests());
    let ran = run_to_end(dir.path(), &["run", p(&overlay)], &env, QUICK);
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    let posts = posts(&hook, "/hook");
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(
        posts[0].starts_with("FAILED: Engine test base stopped at step 1 (fails)")
            && posts[0].contains("\n> broken\n"),
        "{}",
        posts[0]
    );
}
