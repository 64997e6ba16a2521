//! Unattended runs (issue 12, point 4): `recover run --unattended` against a real sshd and a
//! real webhook listener on 127.0.0.1, and the whole chain with nobody there: a real upsd with
//! the dummy-ups driver, a real `upsmon` running the shipped `contrib/recover-upsmon-hook` when
//! the UPS goes from `OB` to `OL`, the hook starting the run, the run ending in the "we are
//! back" post. Assertions are on exit codes, the journal, the posts received and what the
//! target did. The refusals of runbooks that cannot run unattended are in
//! `tests/check_errors.rs`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::nut::{MONITOR_PASSWORD, MONITOR_USER, Upsd};
use common::upsmon::Upsmon;
use common::{
    HttpServer, Sshd, dump, events, eventually, eventually_every, last_event, only_journal, p,
    read_journal, run_to_end, step_event, text,
};

const QUICK: Duration = Duration::from_secs(60);

/// `DIR/NAME.yaml`: one phase of `steps` (six spaces of indentation) against `target`, with
/// the `ops` channel (`RECOVER_WEBHOOK`, Slack format) as the abort channel. `@DIR@` becomes
/// the test's directory.
fn write_runbook(dir: &Path, name: &str, target: &str, steps: &str) -> PathBuf {
    let text = format!(
        "name: {name}\n\
         title: Unattended {name}\n\
         budget: 10m\n\
         targets:\n\
         {target}\
         notify:\n\
         \x20 ops: {{ webhook: \"{{{{ env.RECOVER_WEBHOOK }}}}\", format: slack }}\n\
         abort:\n\
         \x20 notify: ops\n\
         \x20 message: Off the timeline. Follow the long procedure.\n\
         phases:\n\
         \x20 - name: Everything\n\
         \x20   window: 0m-10m\n\
         \x20   steps:\n\
         {steps}"
    )
    .replace("@DIR@", &dir.display().to_string());
    let path = dir.join(format!("{name}.yaml"));
    fs::write(&path, text).expect("write the runbook");
    path
}

/// A real sshd, a webhook listener answering 200 on `/hook`, and the test's directory; None
/// (a visible skip) without sshd.
fn peers() -> Option<(Sshd, HttpServer, tempfile::TempDir)> {
    let sshd = Sshd::start_or_skip()?;
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", 200, "ok");
    Some((sshd, hook, tempfile::tempdir().unwrap()))
}

/// The Slack `text` of every post the webhook received, in order.
fn posts(hook: &HttpServer) -> Vec<String> {
    hook.requests_to("/hook")
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The detached run the hook started: if the test fails before it ends, it is ended (SIGTERM,
/// by its pid) rather than left to run out its timeouts.
struct EndsWithTheTest(u64);

impl Drop for EndsWithTheTest {
    fn drop(&mut self) {
        let comm = fs::read_to_string(format!("/proc/{}/comm", self.0)).unwrap_or_default();
        if comm.trim() == "recover" {
            // SAFETY: kill(2) of the run this test's hook started, by its pid.
            unsafe {
                libc::kill(self.0 as i32, libc::SIGTERM);
            }
        }
    }
}

fn remote_file(sshd: &Sshd, path: &Path) -> Option<String> {
    let out = sshd.ssh(&format!("cat '{}'", path.display()));
    out.status.success().then(|| text(&out.stdout))
}

#[test]
fn an_unattended_skip_goes_on_and_the_journal_and_the_channel_say_nobody_confirmed_it() {
    let Some((sshd, hook, dir)) = peers() else {
        return;
    };
    let rb = write_runbook(
        dir.path(),
        "skip",
        &sshd.runbook_target_yaml("lab"),
        r#"      - wait_ssh: { every: 1s, timeout: 10s }
      - name: read the UPS panel
        manual: Read the UPS panel and note the battery charge.
        unattended: skip
      - name: after
        run: touch @DIR@/after-ran
        timeout: 10s
      - notify: ops
        message: "We are back after {{ run.elapsed }}."
"#,
    );
    let webhook = hook.url_for("/hook");
    let ran = run_to_end(
        dir.path(),
        &[
            "run",
            "--unattended",
            "--started-by",
            "the test's cron",
            p(&rb),
        ],
        &[("RECOVER_WEBHOOK", &webhook)],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert!(
        !ran.stderr.contains("Done?"),
        "it prompted:\n{}",
        ran.context()
    );

    let journal = read_journal(&only_journal(dir.path()));
    let started = &events(&journal, "run_started")[0];
    assert_eq!(started["unattended"], true, "{}", dump(&journal));
    assert_eq!(started["started_by"], "the test's cron");
    let manual = step_event(&journal, "step_finished", 2);
    assert_eq!(manual["outcome"], "skipped", "{}", dump(&journal));
    assert_eq!(
        manual["reason"],
        "not done: nobody confirmed it (unattended run, `unattended: skip`)"
    );
    assert!(
        events(&journal, "warning").iter().any(|w| w["step"] == 2
            && w["message"]
                .as_str()
                .is_some_and(|m| m.contains("was skipped: nobody confirmed it"))),
        "{}",
        dump(&journal)
    );
    assert_eq!(
        step_event(&journal, "step_finished", 3)["outcome"],
        "passed"
    );
    assert_eq!(last_event(&journal)["exit_code"], 0);
    assert!(remote_file(&sshd, &dir.path().join("after-ran")).is_some());

    // "We are back" (the runbook's own post), then the failure post at the end of the run,
    // once: nobody confirmed step 2.
    let posts = posts(&hook);
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(posts[0].starts_with("We are back after "), "{}", posts[0]);
    let lines: Vec<&str> = posts[1].lines().collect();
    assert_eq!(lines.len(), 5, "{}", posts[1]);
    assert!(
        lines[0].starts_with("NOT CONFIRMED: Unattended skip finished after ")
            && lines[0].ends_with(&format!(
                " of the 10m budget, on lab ({}@127.0.0.1), but nobody confirmed step 2 (read the UPS panel) (unattended run, `unattended: skip`).",
                sshd.user()
            )),
        "{}",
        posts[1]
    );
    assert_eq!(
        lines[1..],
        [
            "Not confirmed by anyone: step 2 (read the UPS panel). Check by hand: Read the UPS panel and note the battery charge.",
            "Units: none (the runbook starts no units).",
            "Nothing to resume: the run finished. Check the steps above by hand.",
            "(unattended run, started by the test's cron)",
        ]
    );
    assert!(posts[0].ends_with("\n(unattended run, started by the test's cron)"));
    let notified = events(&journal, "notified");
    assert_eq!(notified.len(), 2, "{}", dump(&journal));
    assert_eq!(journal[journal.len() - 2]["event"], "notified");
}

#[test]
fn an_unattended_abort_stops_the_run_there_through_the_abort_path() {
    let Some((sshd, hook, dir)) = peers() else {
        return;
    };
    let rb = write_runbook(
        dir.path(),
        "abort",
        &sshd.runbook_target_yaml("lab"),
        r#"      - name: before
        run: touch @DIR@/before-ran
        timeout: 10s
      - name: press the power button
        manual: Press the power button once.
        unattended: abort
        abort_message: Nobody can press the button; a person must come.
      - name: after
        run: touch @DIR@/after-ran
        timeout: 10s
"#,
    );
    let webhook = hook.url_for("/hook");
    let ran = run_to_end(
        dir.path(),
        &["run", "--unattended", p(&rb)],
        &[("RECOVER_WEBHOOK", &webhook)],
        QUICK,
    );
    assert_eq!(ran.code, Some(3), "{}", ran.context());

    let journal = read_journal(&only_journal(dir.path()));
    let started = &events(&journal, "run_started")[0];
    assert_eq!(started["unattended"], true, "{}", dump(&journal));
    assert!(started.get("started_by").is_none(), "{}", dump(&journal));
    let manual = step_event(&journal, "step_finished", 2);
    assert_eq!(manual["outcome"], "aborted", "{}", dump(&journal));
    assert_eq!(
        manual["reason"],
        "unattended run: nobody to confirm this manual step (`unattended: abort`)"
    );
    assert_eq!(events(&journal, "abort_procedure").len(), 1);
    let finished = last_event(&journal);
    assert_eq!(finished["outcome"], "aborted");
    assert_eq!(finished["exit_code"], 3);
    assert_eq!(finished["failed_step"], 2);
    assert!(
        events(&journal, "step_started")
            .iter()
            .all(|s| s["step"] != 3)
    );
    assert!(remote_file(&sshd, &dir.path().join("before-ran")).is_some());
    assert!(remote_file(&sshd, &dir.path().join("after-ran")).is_none());

    let posts = posts(&hook);
    assert_eq!(posts.len(), 1, "{posts:?}");
    let abort = &posts[0];
    assert!(
        abort.starts_with(
            "ABORT: Unattended abort stopped at step 2 (press the power button) after "
        ),
        "{abort}"
    );
    assert!(
        abort.contains("nobody to confirm this manual step"),
        "{abort}"
    );
    assert!(
        abort.contains("Nobody can press the button; a person must come."),
        "{abort}"
    );
    assert!(
        abort.ends_with("\n(unattended run: nobody at a terminal)"),
        "{abort}"
    );
}

#[test]
fn an_unattended_wait_ssh_posts_its_ask_and_waits_again_without_prompting() {
    let Some((mut sshd, hook, dir)) = peers() else {
        return;
    };
    sshd.stop();
    let rb = write_runbook(
        dir.path(),
        "ask",
        &sshd.runbook_target_yaml("lab"),
        r#"      - name: wait for the box
        wait_ssh:
          every: 1s
          timeout: 3s
          otherwise:
            manual: Press the power button once.
            timeout: 40s
"#,
    );
    let webhook = hook.url_for("/hook");
    let mut run = common::Background::start(
        dir.path(),
        &["run", "--unattended", "--started-by", "a test", p(&rb)],
        &[("RECOVER_WEBHOOK", &webhook)],
    );
    // The ask reaches the channel once the first wait is over; then "the person" boots the box.
    let asked = hook.wait_for_requests("/hook", 1, Duration::from_secs(30));
    assert!(asked, "no ask was posted:\n{}", run.output());
    sshd.start_again();
    let status = run.wait(QUICK).expect("the run ends");
    assert_eq!(status.code(), Some(0), "{}", run.output());
    assert!(
        !run.output().contains("Done?"),
        "it prompted:\n{}",
        run.output()
    );

    let journal = read_journal(&only_journal(dir.path()));
    let f = step_event(&journal, "step_finished", 1);
    assert_eq!(f["outcome"], "passed", "{}", dump(&journal));
    assert!(
        f["reason"].as_str().is_some_and(|r| r.starts_with(
            "no SSH within 3s, so the ask was posted (unattended: nobody prompted); then SSH answered"
        )),
        "{f}"
    );
    let posts = posts(&hook);
    assert_eq!(
        posts,
        ["wait for the box: Press the power button once.\n(unattended run, started by a test)"]
    );
}

/// Mains returns with nobody there: upsmon sees the UPS go from on battery to on line, runs the
/// shipped hook, which starts `recover run --unattended` of a runbook that begins with the
/// `ups` gate against the same upsd and ends with "we are back".
#[test]
fn upsmon_starts_the_unattended_run_when_mains_returns_and_we_are_back_is_posted() {
    let Some((sshd, hook, dir)) = peers() else {
        return;
    };
    let Some(mut upsd) = Upsd::start("tups", "OB", 90) else {
        return;
    };
    let d = dir.path();
    let state = d.join("state");
    let logs = d.join("logs");
    // The machine-wide lock directory, here the test's own (the conf is exported to the run).
    let locks = d.join("locks");
    let rb = write_runbook(
        d,
        "mains",
        &sshd.runbook_target_yaml("lab"),
        &format!(
            r#"      - name: mains stable
        ups: {{ name: tups, host: 127.0.0.1, port: {port}, stable_for: 2s, every: 1s, timeout: 60s }}
      - wait_ssh: {{ every: 1s, timeout: 20s }}
      - name: mark
        run: echo "recovered by $(id -un)" > @DIR@/recovered
        timeout: 10s
      - name: read the UPS panel
        manual: Read the UPS panel.
        unattended: skip
      - notify: ops
        message: "We are back after {{{{ run.elapsed }}}}."
"#,
            port = upsd.port()
        ),
    );
    let conf = d.join("unattended.conf");
    fs::write(
        &conf,
        format!(
            "RECOVER_RUNBOOK=\"{}\"\nRECOVER_BIN=\"{}\"\nRECOVER_START=\"detach\"\nRECOVER_LOG_DIR=\"{}\"\nRECOVER_STATE_DIR=\"{}\"\nRECOVER_WEBHOOK=\"{}\"\nRECOVER_LOCK_DIR=\"{}\"\n",
            rb.display(),
            env!("CARGO_BIN_EXE_recover"),
            logs.display(),
            state.display(),
            hook.url_for("/hook"),
            locks.display()
        ),
    )
    .unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/recover-upsmon-hook");
    let conf_env = conf.display().to_string();
    let Some(mut upsmon) = Upsmon::start(
        &upsd.monitor(),
        MONITOR_USER,
        MONITOR_PASSWORD,
        &shipped,
        &[("RECOVER_UNATTENDED_CONF", &conf_env)],
    ) else {
        return;
    };
    let hook_log = || fs::read_to_string(logs.join("upsmon-hook.log")).unwrap_or_default();

    // upsmon has seen the UPS on battery (the hook logs ONBATT and ignores it): nothing runs.
    let on_battery = format!("NOTIFYTYPE=ONBATT UPSNAME={}: ignored", upsd.monitor());
    if !eventually(Duration::from_secs(20), || hook_log().contains(&on_battery)) {
        upsmon.fail(&format!(
            "upsmon never ran the hook for ONBATT:\n{}",
            hook_log()
        ));
    }
    assert!(!state.join("recover").exists(), "a run started on battery");

    // Mains returns.
    upsd.set("OL", 90);
    let online = format!("ONLINE from {}: started ", upsd.monitor());
    if !eventually(Duration::from_secs(20), || hook_log().contains(&online)) {
        upsmon.fail(&format!(
            "upsmon never ran the hook for ONLINE:\n{}",
            hook_log()
        ));
    }

    // Nobody typed anything: the run has no terminal and its stdin is /dev/null.
    let lock = locks.join("runbook-mains.lock");
    let mut pid = None;
    eventually(Duration::from_secs(10), || {
        pid = fs::read_to_string(&lock)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["pid"].as_u64());
        pid.is_some()
    });
    let pid = pid.unwrap_or_else(|| panic!("no run holds the lock:\n{}", hook_log()));
    let _run = EndsWithTheTest(pid);
    let stdin = fs::read_link(format!("/proc/{pid}/fd/0"));
    assert_eq!(
        stdin
            .as_ref()
            .map(|p| p.display().to_string())
            .ok()
            .as_deref(),
        Some("/dev/null"),
        "{stdin:?}"
    );
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the name: state, ppid, pgrp, session, tty_nr.
    let fields: Vec<String> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        fields.get(4).map(String::as_str),
        Some("0"),
        "the run has a controlling terminal: {stat}"
    );
    assert_eq!(
        fields.get(3),
        Some(&pid.to_string()),
        "not in a session of its own (setsid): {stat}"
    );

    // The gate sees mains stable, the box answers, and "we are back" arrives.
    let back = eventually_every(Duration::from_millis(200), Duration::from_secs(90), || {
        posts(&hook)
            .iter()
            .any(|t| t.starts_with("We are back after "))
    });
    let journal_path = || only_journal(&state);
    assert!(
        back,
        "no \"we are back\" post; posts {:?}\n--- hook log\n{}\n--- journal\n{}",
        posts(&hook),
        hook_log(),
        fs::read_to_string(journal_path()).unwrap_or_default()
    );
    let finished = eventually(Duration::from_secs(20), || {
        read_journal(&journal_path())
            .last()
            .is_some_and(|e| e["event"] == "run_finished")
    });
    assert!(finished, "{}", dump(&read_journal(&journal_path())));

    let journal = read_journal(&journal_path());
    let started = &events(&journal, "run_started")[0];
    assert_eq!(started["unattended"], true, "{}", dump(&journal));
    let by = format!(
        "the UPS: upsmon ONLINE {ups}: UPS {ups} on line power",
        ups = upsd.monitor()
    );
    assert_eq!(started["started_by"], by.as_str());
    assert_eq!(
        step_event(&journal, "step_finished", 1)["outcome"],
        "passed"
    );
    assert_eq!(step_event(&journal, "step_started", 1)["kind"], "ups");
    assert_eq!(
        step_event(&journal, "step_finished", 4)["outcome"],
        "skipped"
    );
    let end = last_event(&journal);
    assert_eq!(end["outcome"], "success", "{}", dump(&journal));
    assert_eq!(end["exit_code"], 0);
    assert_eq!(
        remote_file(&sshd, &d.join("recovered")).as_deref(),
        Some(format!("recovered by {}\n", sshd.user()).as_str())
    );
    let posts = posts(&hook);
    let we_are_back = posts
        .iter()
        .find(|t| t.starts_with("We are back after "))
        .expect("the post");
    assert!(
        we_are_back.ends_with(&format!("\n(unattended run, started by {by})")),
        "{we_are_back}"
    );
    // One ONLINE, one run; its output has no prompt.
    let outputs: Vec<PathBuf> = fs::read_dir(&logs)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("recover-"))
        })
        .collect();
    assert_eq!(outputs.len(), 1, "{outputs:?}\n{}", hook_log());
    let output = fs::read_to_string(&outputs[0]).unwrap();
    assert!(!output.contains("Done?"), "{output}");
    assert!(upsmon.is_running(), "{}", upsmon.log());
}

#[test]
fn the_dry_run_and_the_binder_say_what_an_unattended_run_does_at_each_manual_step() {
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "said",
        "  box: { host: box.invalid }\n",
        r#"      - name: read the UPS panel
        manual: Read the UPS panel.
        unattended: skip
      - name: press the power button
        manual: Press the power button.
        unattended: abort
      - name: look at the LEDs
        manual: Look at the LEDs.
"#,
    );
    let plan = run_to_end(dir.path(), &["run", "--dry-run", p(&rb)], &[], QUICK);
    assert_eq!(plan.code, Some(0), "{}", plan.context());
    for line in [
        "      unattended skip: go on; the journal and the abort channel say nobody confirmed it",
        "      unattended abort: the run stops here (the abort procedure, its post, exit 3)",
        "      unattended not said: `run --unattended` refuses this runbook",
    ] {
        assert!(
            plan.stdout.contains(line),
            "no `{line}` in:\n{}",
            plan.stdout
        );
    }
    let binder = run_to_end(dir.path(), &["export", p(&rb)], &[], QUICK);
    assert_eq!(binder.code, Some(0), "{}", binder.context());
    for text in [
        "nobody did this step: the run went on without it (`unattended: skip`) and told the channel so. Do it now.",
        "it stopped here (`unattended: abort`) and posted the abort: go on by hand from this step.",
        "This step has no `unattended:`: `recover run --unattended` refuses this runbook",
    ] {
        assert!(
            binder.stdout.contains(text),
            "no `{text}` in:\n{}",
            binder.stdout
        );
    }
}
