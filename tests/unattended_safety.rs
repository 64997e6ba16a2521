//! Trusted when nobody is watching (issue 10): the real `recover` binary against a real sshd
//! and real HTTP servers on 127.0.0.1. Corrupt journals for `--resume`, signals, one run at a
//! time, a missing notification secret and the abort post's content.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Background, HttpServer, Sshd, eventually, logins, p, read_journal, recover_in,
    remote_pid_alive, sha256_file, step_event, write_runbook,
};

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
    refused(
        "a line that is no run",
        "{\"event\":\"warning\",\"step\":null,\"message\":\"m\"}\n",
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

/// A journal without one whole line is a run killed between creating it and its first event
/// (SIGKILL, or the management host losing power): nothing ran, so `--resume` starts afresh,
/// saying so, as the operator would have to.
#[test]
fn an_empty_or_cut_first_line_journal_starts_afresh() {
    for (name, text) in [
        ("empty", String::new()),
        (
            "cut inside its first line",
            run_started("@SHA@")[..40].to_owned(),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let rb = write_runbook(
            dir.path(),
            "j",
            "  lab: { host: 127.0.0.1, port: 9 }\n",
            "",
            "      - local: echo one >> @DIR@/trace\n      - local: echo two >> @DIR@/trace\n",
        );
        let journal = dir.path().join("old.jsonl");
        fs::write(&journal, text.replace("@SHA@", &sha256_file(&rb))).unwrap();
        let out = recover_in(dir.path())
            .args(["run", "--yes", "--resume", "--journal"])
            .arg(&journal)
            .arg(&rb)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert!(
            stderr.contains("Nothing to resume: starting from step 1"),
            "{name}: {stderr}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("trace")).unwrap(),
            "one\ntwo\n",
            "{name}"
        );
    }
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
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
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

// --- helpers ------------------------------------------------------------------------------------

fn signal(bg: &Background, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(bg.pid(), sig) }, 0);
}

/// `rehearse` or `--dry-run` said, on stderr, that `run` holds this runbook's lock.
fn says_a_run_is_in_progress(stderr: &str, run: &Background) {
    let note = format!(
        "note: a run of this runbook is in progress: pid {}, started ",
        run.pid()
    );
    assert!(
        stderr.contains(&note) && stderr.contains("this takes no lock and does not stop it"),
        "no `{note}` in:\n{stderr}"
    );
}

/// Ctrl-C to a run, which must end within 15 s (releasing its locks).
fn interrupt(bg: &mut Background) {
    signal(bg, libc::SIGINT);
    assert!(
        bg.wait(Duration::from_secs(15)).is_some(),
        "{}",
        bg.output()
    );
}

/// A runbook whose second step hangs (writing its pid) while `@DIR@/hang` exists.
fn hanging_runbook(dir: &Path, name: &str, sshd: &Sshd) -> PathBuf {
    fs::write(dir.join("hang"), "").unwrap();
    write_runbook(
        dir,
        name,
        &sshd.runbook_target_yaml("lab"),
        "",
        r#"      - run: echo first >> @DIR@/trace
      - name: long step
        run: "[ -e @DIR@/hang ] || exit 0; echo $$ > @DIR@/long.pid; exec sleep 300"
        timeout: 2m
      - run: echo last >> @DIR@/trace
"#,
    )
}

/// `run` of [`hanging_runbook`] `name` in the background, writing `DIR/NAME.jsonl`, once its
/// long step runs on the target: (the run, the runbook, the journal, the remote pid's file).
fn start_hanging(dir: &Path, name: &str, sshd: &Sshd) -> (Background, PathBuf, PathBuf, PathBuf) {
    let rb = hanging_runbook(dir, name, sshd);
    let journal = dir.join(format!("{name}.jsonl"));
    let bg = Background::start(dir, &["run", p(&rb), "--journal", p(&journal)], &[]);
    let pid_file = dir.join("long.pid");
    assert!(
        eventually(Duration::from_secs(30), || pid_file.exists()),
        "the run never reached its long step: {}",
        bg.output()
    );
    (bg, rb, journal, pid_file)
}

// --- SIGTERM and SIGHUP do what Ctrl-C does ------------------------------------------------------

#[test]
fn sigterm_and_sighup_kill_the_remote_command_flush_the_journal_and_print_the_resume_command() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    for (sig, code, reason) in [
        (
            libc::SIGTERM,
            143,
            "terminated by SIGTERM (systemctl stop, kill)",
        ),
        (
            libc::SIGHUP,
            129,
            "hung up: SIGHUP (the terminal or the ssh session closed)",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut bg, _, journal, pid_file) = start_hanging(dir.path(), "signals", &sshd);
        let sent = Instant::now();
        signal(&bg, sig);
        let status = bg
            .wait(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("signal {sig}: still running 15 s later: {}", bg.output()));
        assert_eq!(status.code(), Some(code), "signal {sig}: {}", bg.output());
        assert!(
            sent.elapsed() < Duration::from_secs(8),
            "took {:?}",
            sent.elapsed()
        );
        assert!(
            !remote_pid_alive(&sshd, &pid_file),
            "signal {sig}: the remote `sleep 300` survived"
        );
        let events = read_journal(&journal);
        let end = events.last().expect("a journal");
        assert_eq!(end["event"], "run_finished", "signal {sig}: {events:?}");
        assert_eq!(end["outcome"], "interrupted");
        assert_eq!(end["exit_code"], code);
        assert_eq!(end["failed_step"], 2);
        let step = step_event(&events, "step_finished", 2);
        assert_eq!(step["outcome"], "interrupted", "signal {sig}: {step}");
        assert_eq!(step["reason"], reason, "signal {sig}: {step}");
        let resume = end["resume"].as_str().expect("a resume command");
        assert!(resume.contains("--resume"), "{resume}");
        assert!(bg.output().contains(resume), "not printed: {}", bg.output());
    }
}

// --- one run at a time ---------------------------------------------------------------------------

#[test]
fn a_second_run_is_refused_before_contacting_anything_and_rehearse_says_a_run_is_in_progress() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut first, rb, journal, _) = start_hanging(dir.path(), "once", &sshd);
    let before = logins(&sshd);

    let second = recover_in(dir.path())
        .args(["run", "--yes"])
        .arg(&rb)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    for s in [
        "another run holds the lock of the runbook `once`".to_owned(),
        format!("pid {}", first.pid()),
        format!("journal {}", journal.display()),
        format!("ps -p {}", first.pid()),
        "Nothing was contacted".to_owned(),
    ] {
        assert!(stderr.contains(&s), "no `{s}` in:\n{stderr}");
    }

    // Another runbook against the same host waits its turn too.
    let other = write_runbook(
        dir.path(),
        "other",
        &sshd.runbook_target_yaml("lab"),
        "",
        "      - run: touch @DIR@/other-ran\n",
    );
    let third = recover_in(dir.path())
        .args(["run", "--yes"])
        .arg(&other)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert_eq!(third.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("another run holds the lock of the host 127.0.0.1:"),
        "{stderr}"
    );
    assert_eq!(
        logins(&sshd),
        before,
        "a refused run logged in:\n{}",
        sshd.log()
    );
    assert!(!dir.path().join("other-ran").exists());

    // The dry run takes no lock, and says a run is in progress.
    let dry = recover_in(dir.path())
        .args(["run", "--dry-run"])
        .arg(&rb)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&dry.stderr);
    assert_eq!(dry.status.code(), Some(0), "{stderr}");
    says_a_run_is_in_progress(&stderr, &first);

    // So does the rehearsal, which contacts the target read-only while the run holds it.
    let rehearsal = recover_in(dir.path())
        .args(["rehearse"])
        .arg(&rb)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&rehearsal.stderr);
    says_a_run_is_in_progress(&stderr, &first);
    // It ran to its end (the run writes its own --journal elsewhere).
    let rehearsed = read_journal(&common::only_journal(dir.path()));
    assert_eq!(rehearsed[0]["mode"], "rehearse", "{rehearsed:?}");
    assert_eq!(
        common::last_event(&rehearsed)["event"],
        "run_finished",
        "{stderr}"
    );

    interrupt(&mut first);
    // Released: the next run goes.
    fs::remove_file(dir.path().join("hang")).unwrap();
    let next = recover_in(dir.path())
        .args(["run", "--yes"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(
        next.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    assert!(dir.path().join("other-ran").exists());
}

#[test]
fn a_lock_left_by_a_killed_run_is_taken_over_with_a_warning_naming_its_pid() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut first, rb, _, pid_file) = start_hanging(dir.path(), "stale", &sshd);
    let dead = first.pid();
    // SIGKILL: no handler runs, the lock file keeps its record.
    signal(&first, libc::SIGKILL);
    assert!(first.wait(Duration::from_secs(10)).is_some());
    // The orphaned remote command is no business of the lock: stop it like an operator would.
    let _ = sshd.ssh(&format!("kill $(cat '{}')", pid_file.display()));
    fs::remove_file(dir.path().join("hang")).unwrap();

    let next = recover_in(dir.path())
        .args(["run", "--yes"])
        .arg(&rb)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&next.stderr);
    assert_eq!(next.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("left by pid {dead}, which is no longer running")),
        "{stderr}"
    );
}

/// `recover` as another account (nobody), in `dir`'s environment with the lock directory
/// `locks`: the run held by root and the run of a second operator meet there.
fn as_nobody(dir: &Path, state: &Path, locks: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = common::clean_command("setpriv", state);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_recover"))
        .args(args)
        .env("RECOVER_LOCK_DIR", locks)
        .current_dir(dir);
    let out = common::run_bounded(cmd, Duration::from_secs(60));
    (out.status.code(), common::text(&out.stderr))
}

#[test]
fn a_run_held_by_root_refuses_another_accounts_run_naming_the_holder() {
    if !common::require_root() {
        return;
    }
    let Some(_) = common::require_tool(&["setpriv"]) else {
        return;
    };
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Another account may read the runbook and reach the lock directory (as a member of its
    // group), nothing more.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = dir.path().join("nobody-state");
    fs::create_dir(&theirs).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o777)).unwrap();
    // The machine-wide directory as contrib/recover-lock.conf has systemd-tmpfiles make it:
    // root's, mode 1770, its group the other account's (nogroup standing in for `recover`).
    let locks = dir.path().join(common::LOCK_DIR);
    fs::create_dir(&locks).unwrap();
    std::os::unix::fs::chown(&locks, Some(0), Some(65534)).unwrap();
    fs::set_permissions(&locks, fs::Permissions::from_mode(0o1770)).unwrap();
    let (mut first, rb, journal, _) = start_hanging(dir.path(), "shared", &sshd);
    let before = logins(&sshd);

    let (code, stderr) = as_nobody(dir.path(), &theirs, &locks, &["run", "--yes", p(&rb)]);
    assert_eq!(code, Some(2), "{stderr}");
    for s in [
        "another run holds the lock of the runbook `shared`".to_owned(),
        format!("pid {}", first.pid()),
        format!("journal {}", journal.display()),
        "Nothing was contacted".to_owned(),
    ] {
        assert!(stderr.contains(&s), "no `{s}` in:\n{stderr}");
    }
    assert!(!stderr.contains("machine-wide lock directory"), "{stderr}");
    assert_eq!(logins(&sshd), before, "a refused run logged in");

    // The other account's dry run sees it too, through a lock file it only reads.
    let (code, stderr) = as_nobody(dir.path(), &theirs, &locks, &["run", "--dry-run", p(&rb)]);
    assert_eq!(code, Some(0), "{stderr}");
    says_a_run_is_in_progress(&stderr, &first);

    interrupt(&mut first);
    // Released: the other account takes the lock in root's file (a runbook of the same name,
    // against a closed port: it fails there, after the lock).
    let later = dir.path().join("later");
    fs::create_dir(&later).unwrap();
    let rb2 = write_runbook(
        &later,
        "shared",
        "  lab: { host: 127.0.0.1, port: 9 }\n",
        "",
        "      - run: \"true\"\n        timeout: 5s\n",
    );
    let lock_file = locks.join("runbook-shared.lock");
    let meta = fs::metadata(&lock_file).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.gid()),
        (0o660, 0, 65534),
        "root's lock file, in the directory's group"
    );
    let (code, stderr) = as_nobody(dir.path(), &theirs, &locks, &["run", "--yes", p(&rb2)]);
    assert_ne!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("lock"), "{stderr}");
    let run = read_journal(&common::only_journal(&theirs));
    assert_eq!(run[0]["event"], "run_started", "{run:?}");
    assert_eq!(
        fs::read_to_string(&lock_file).unwrap(),
        "",
        "the record is emptied on release"
    );
}

// --- a missing notification secret does not block a recovery -------------------------------------

/// `run --yes` of `rb` with its journal at `DIR/j.jsonl`, which must succeed: its output and
/// the journal's path.
fn run_to_success(dir: &Path, rb: &Path) -> (std::process::Output, PathBuf) {
    let journal = dir.join("j.jsonl");
    let out = recover_in(dir)
        .args(["run", "--yes", "--journal"])
        .arg(&journal)
        .arg(rb)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out, journal)
}

/// `run --yes` of `rb` (in its directory) is refused for unset `secret` before anything runs:
/// exit 2 naming it, no login on the target, no `trace` file written by a step.
fn refused_for_secret(sshd: &Sshd, rb: &Path, secret: &str, trace: &Path) {
    let before = logins(sshd);
    let out = recover_in(rb.parent().unwrap())
        .args(["run", "--yes"])
        .arg(rb)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(secret), "{stderr}");
    assert_eq!(logins(sshd), before, "a refused run logged in");
    assert!(!trace.exists(), "a step ran");
}

#[test]
fn an_unset_webhook_used_only_by_notify_warns_runs_and_reports_the_post_not_sent() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "nohook",
        &sshd.runbook_target_yaml("lab"),
        "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n",
        "      - run: touch @DIR@/ran\n      - notify: ops\n        message: we are back\n",
    );
    let (out, journal) = run_to_success(dir.path(), &rb);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(dir.path().join("ran").exists());
    let warned = stderr
        .lines()
        .position(|l| l.contains("RECOVER_WEBHOOK is not set") && l.contains("not be sent"));
    let first_step = stderr.lines().position(|l| l.contains("step 1"));
    assert!(
        warned.is_some() && warned < first_step,
        "no warning before the run:\n{stderr}"
    );
    let events = read_journal(&journal);
    let warning = events
        .iter()
        .find(|e| e["event"] == "warning")
        .unwrap_or_else(|| panic!("no warning in the journal: {events:?}"));
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("RECOVER_WEBHOOK is not set"),
        "{warning}"
    );
    let post = events
        .iter()
        .find(|e| e["event"] == "notified")
        .unwrap_or_else(|| panic!("no notified event: {events:?}"));
    assert_eq!(post["ok"], false, "{post}");
    assert!(
        post["error"].as_str().unwrap().contains("not sent"),
        "{post}"
    );
}

/// A secret reached through `vars:` counts where the var is read: only by a webhook, the run
/// goes on without the post; also by a step, the run is refused before anything runs.
#[test]
fn an_unset_secret_in_a_var_only_a_webhook_reads_warns_and_runs() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", 200, "ok");
    // `hook` reads the secret, `token` reads it through `hook`: both only feed the webhook.
    let head = format!(
        "vars:\n  hook: \"{}/{{{{ env.RECOVER_HOOK_TOKEN }}}}\"\n  token: \"{{{{ vars.hook }}}}\"\n  greeting: we are back\n\
         notify:\n  ops: {{ webhook: \"{{{{ vars.token }}}}\", format: json }}\n",
        hook.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "varhook",
        &sshd.runbook_target_yaml("lab"),
        &head,
        "      - run: echo {{ vars.greeting }} > @DIR@/ran\n      - notify: ops\n        message: \"{{ vars.greeting }}\"\n",
    );
    let (out, journal) = run_to_success(dir.path(), &rb);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        fs::read_to_string(dir.path().join("ran")).unwrap(),
        "we are back\n"
    );
    assert!(
        stderr
            .contains("RECOVER_HOOK_TOKEN is not set: the status posts to `ops` will not be sent"),
        "{stderr}"
    );
    let events = read_journal(&journal);
    let post = events
        .iter()
        .find(|e| e["event"] == "notified")
        .unwrap_or_else(|| panic!("no notified event: {events:?}"));
    assert_eq!(post["ok"], false, "{post}");
    assert!(
        hook.requests().is_empty(),
        "a post went out without its secret"
    );

    // The same var read by a step as well: needed, refused before anything runs.
    let rb = write_runbook(
        dir.path(),
        "varstep",
        &sshd.runbook_target_yaml("lab"),
        &head,
        "      - run: echo {{ vars.token }} > @DIR@/leaked\n      - notify: ops\n        message: hi\n",
    );
    refused_for_secret(&sshd, &rb, "RECOVER_HOOK_TOKEN", &dir.path().join("leaked"));
}

#[test]
fn an_unset_secret_used_by_a_step_refuses_the_run_before_anything_runs() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let hook = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "needsecret",
        &sshd.runbook_target_yaml("lab"),
        "",
        &format!(
            "      - run: touch @DIR@/ran\n      - http: {{ url: \"{}\", headers: {{ Authorization: \"Bearer {{{{ env.RECOVER_TOKEN }}}}\" }} }}\n",
            hook.url_for("/v1/models")
        ),
    );
    refused_for_secret(&sshd, &rb, "RECOVER_TOKEN", &dir.path().join("ran"));
    assert!(hook.requests().is_empty());
}

// --- the abort post says what to do --------------------------------------------------------------

#[test]
fn the_abort_post_carries_the_steps_abort_message_and_the_procedures_first_paragraph() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", 200, "ok");
    let dir = tempfile::tempdir().unwrap();
    let head = "notify:\n  ops: { webhook: \"{{ env.RECOVER_WEBHOOK }}\", format: slack }\n\
                abort:\n  notify: ops\n  message: |\n    Off the thirty-minute timeline.\n    Power the box off and call the on-call engineer.\n\n    Step 1 of the long procedure: boot from the rescue stick.\n    Step 2: run fsck -y by hand.\n";
    let rb = write_runbook(
        dir.path(),
        "abortpost",
        &sshd.runbook_target_yaml("lab"),
        head,
        r#"      - name: kernel log
        run: echo "EXT4-fs error (device vda)"
        abort_if: { stdout: "EXT4-fs error" }
        abort_message: The kernel reported filesystem errors.
"#,
    );
    let out = recover_in(dir.path())
        .env("RECOVER_WEBHOOK", hook.url_for("/hook"))
        .args(["run", "--yes"])
        .arg(&rb)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(hook.wait_for_requests("/hook", 1, Duration::from_secs(10)));
    let posts = hook.requests_to("/hook");
    let text = posts[0].json()["text"].as_str().unwrap().to_owned();
    for s in [
        "ABORT",
        "kernel log",
        "The kernel reported filesystem errors.",
        "Off the thirty-minute timeline.\nPower the box off and call the on-call engineer.",
        "see the binder",
    ] {
        assert!(text.contains(s), "no `{s}` in the post:\n{text}");
    }
    assert!(
        !text.contains("rescue stick"),
        "the whole procedure was posted:\n{text}"
    );
}
