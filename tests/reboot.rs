//! A box that reboots under a recovery (issue 24): the real `recover` binary against a real
//! sshd on 127.0.0.1 whose boot id is a file of the test's, bind-mounted over the kernel's in
//! the daemon's own mount namespace ([`Sshd::start_with_boot_id`]). Changing it is, for any
//! client, a reboot. The same behaviour on a real reboot (a power cut of the lab VM) is in
//! `tests/lab_e2e.rs`, scenario 2.
//!
//! - a resume after a reboot starts again from the beginning, and skips only a step marked
//!   `survives_reboot` that was done before;
//! - a reboot seen mid-run (a reconnect with a new boot id) starts the run again by itself;
//! - a run claims success only when every unit it starts is still healthy at the end (the
//!   units played by a `systemctl` stand-in on the target's PATH: real systemd is the lab's).

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{
    Background, HttpServer, Sshd, dump, events, eventually, journals_in, last_event, only_journal,
    p, read_journal, run_to_end, started_steps, step_event, text, wait_for_event, write_runbook,
};
use serde_json::Value;

const QUICK: Duration = Duration::from_secs(90);
const BOOT_A: &str = "0a0a0a0a-1111-4111-8111-aaaaaaaaaaaa";
const BOOT_B: &str = "0b0b0b0b-2222-4222-8222-bbbbbbbbbbbb";

fn remote_file(sshd: &Sshd, path: &Path) -> Option<String> {
    let out = sshd.ssh(&format!("cat '{}'", path.display()));
    out.status.success().then(|| text(&out.stdout))
}

/// The journal of the run that resumed `first` (the other file in `dir`).
fn resumed_journal(dir: &Path, first: &Path) -> Vec<Value> {
    let files = journals_in(dir);
    assert_eq!(files.len(), 2, "{files:?}");
    read_journal(files.iter().find(|f| *f != first).unwrap())
}

/// Starts `recover run RB` in the background, waits until step `step` runs its long command
/// (it writes `long.pid`), then stops it with SIGINT; returns the first journal's path.
fn run_until_step_then_interrupt(dir: &Path, rb: &Path, step: u64) -> std::path::PathBuf {
    let mut bg = Background::start(dir, &["run", p(rb), "--yes"], &[]);
    assert!(
        eventually(Duration::from_secs(20), || journals_in(dir).len() == 1),
        "no journal: {}",
        bg.output()
    );
    let journal = only_journal(dir);
    assert!(
        wait_for_event(&journal, Duration::from_secs(30), |e| {
            e["event"] == "step_started" && e["step"] == step
        }),
        "step {step} never started: {}",
        bg.output()
    );
    assert!(
        eventually(Duration::from_secs(10), || dir.join("long.pid").exists()),
        "the long step's command never ran"
    );
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(bg.pid(), libc::SIGINT) }, 0);
    let status = bg
        .wait(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("still running 15 s after SIGINT: {}", bg.output()));
    assert_eq!(status.code(), Some(130), "{}", bg.output());
    journal
}

const STEPS: &str = r#"      - name: note on the management host
        local: echo mgmt >> @DIR@/local-trace
        survives_reboot: true
      - name: first on the box
        run: echo first >> @DIR@/trace
      - name: long step
        run: "[ -e @DIR@/hang ] || exit 0; echo $$ > @DIR@/long.pid; exec sleep 300"
        timeout: 2m
      - name: last
        run: echo last >> @DIR@/trace
"#;

#[test]
fn a_resume_after_a_reboot_starts_again_and_skips_only_what_survives_it() {
    let Some(sshd) = Sshd::start_with_boot_id(BOOT_A) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "rebooted",
        &sshd.runbook_target_yaml("spark"),
        "",
        STEPS,
    );
    fs::write(dir.path().join("hang"), "").unwrap();
    let first = run_until_step_then_interrupt(dir.path(), &rb, 3);
    let journal = read_journal(&first);
    assert!(
        events(&journal, "connected")
            .iter()
            .all(|c| c["boot_id"] == BOOT_A),
        "{}",
        dump(&journal)
    );

    // The box reboots (a second power cut); the operator resumes.
    sshd.set_boot_id(BOOT_B);
    fs::remove_file(dir.path().join("hang")).unwrap();
    let ran = run_to_end(
        dir.path(),
        &["run", p(&rb), "--resume", "--yes"],
        &[],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert!(
        ran.stderr.contains("STARTING AGAIN") && ran.stderr.contains("rebooted"),
        "the reason is said in one line: {}",
        ran.context()
    );

    let resumed = resumed_journal(dir.path(), &first);
    let rewound = events(&resumed, "rewound");
    assert_eq!(rewound.len(), 1, "{}", dump(&resumed));
    assert_eq!(rewound[0]["from_step"], 3);
    assert_eq!(rewound[0]["to_step"], 1);
    assert_eq!(rewound[0]["old_boot_id"], BOOT_A);
    assert_eq!(rewound[0]["new_boot_id"], BOOT_B);
    // Every step tied to the box ran again; the management host's note did not.
    assert_eq!(started_steps(&resumed), vec![2, 3, 4], "{}", dump(&resumed));
    let kept = step_event(&resumed, "step_finished", 1);
    assert_eq!(kept["outcome"], "skipped");
    assert!(
        kept["reason"].as_str().unwrap().contains("survives_reboot"),
        "{kept}"
    );
    assert_eq!(
        remote_file(&sshd, &dir.path().join("trace")).as_deref(),
        Some("first\nfirst\nlast\n")
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("local-trace")).unwrap(),
        "mgmt\n"
    );
    assert_eq!(last_event(&resumed)["outcome"], "success");

    // The same resume without a reboot goes on where the run stopped (the control).
    let dir2 = tempfile::tempdir().unwrap();
    let rb2 = write_runbook(
        dir2.path(),
        "not-rebooted",
        &sshd.runbook_target_yaml("spark"),
        "",
        STEPS,
    );
    fs::write(dir2.path().join("hang"), "").unwrap();
    let first2 = run_until_step_then_interrupt(dir2.path(), &rb2, 3);
    fs::remove_file(dir2.path().join("hang")).unwrap();
    let ran = run_to_end(
        dir2.path(),
        &["run", p(&rb2), "--resume", "--yes"],
        &[],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let resumed = resumed_journal(dir2.path(), &first2);
    assert!(events(&resumed, "rewound").is_empty(), "{}", dump(&resumed));
    assert_eq!(started_steps(&resumed), vec![3, 4], "{}", dump(&resumed));
    assert_eq!(
        remote_file(&sshd, &dir2.path().join("trace")).as_deref(),
        Some("first\nlast\n")
    );
}

#[test]
fn a_resume_that_finds_the_box_not_answering_starts_again_and_waits_for_it() {
    let Some(mut sshd) = Sshd::start_with_boot_id(BOOT_A) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let steps = format!("      - wait_ssh: {{ every: 1s, timeout: 60s }}\n{STEPS}");
    let rb = write_runbook(
        dir.path(),
        "gone",
        &sshd.runbook_target_yaml("spark"),
        "",
        &steps,
    );
    fs::write(dir.path().join("hang"), "").unwrap();
    let first = run_until_step_then_interrupt(dir.path(), &rb, 4);
    fs::remove_file(dir.path().join("hang")).unwrap();

    // The box is down when the operator resumes; it comes back (rebooted) a few seconds later.
    sshd.stop();
    sshd.set_boot_id(BOOT_B);
    let mut bg = Background::start(dir.path(), &["run", p(&rb), "--resume", "--yes"], &[]);
    std::thread::sleep(Duration::from_secs(4));
    sshd.start_again();
    let status = bg
        .wait(QUICK)
        .unwrap_or_else(|| panic!("the resumed run did not end: {}", bg.output()));
    assert_eq!(status.code(), Some(0), "{}", bg.output());
    let resumed = resumed_journal(dir.path(), &first);
    let rewound = events(&resumed, "rewound");
    assert_eq!(rewound.len(), 1, "{}", dump(&resumed));
    assert_eq!(rewound[0]["to_step"], 1);
    assert!(
        rewound[0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not answer"),
        "{}",
        rewound[0]
    );
    assert_eq!(
        started_steps(&resumed),
        vec![1, 3, 4, 5],
        "{}",
        dump(&resumed)
    );
    assert_eq!(
        remote_file(&sshd, &dir.path().join("trace")).as_deref(),
        Some("first\nfirst\nlast\n")
    );
}

#[test]
fn a_reboot_seen_mid_run_starts_the_run_again_by_itself() {
    let Some(mut sshd) = Sshd::start_with_boot_id(BOOT_A) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        dir.path(),
        "midrun",
        &sshd.runbook_target_yaml("spark"),
        "",
        r#"      - name: first on the box
        run: echo first >> @DIR@/trace
      - name: rides through the reboot
        run: "[ -e @DIR@/hang ] || exit 0; echo $$ > @DIR@/long.pid; exec sleep 300"
        timeout: 20s
        retry: { every: 1s, timeout: 60s }
      - name: last
        run: echo last >> @DIR@/trace
"#,
    );
    fs::write(dir.path().join("hang"), "").unwrap();
    let mut bg = Background::start(dir.path(), &["run", p(&rb)], &[]);
    assert!(
        eventually(Duration::from_secs(20), || dir
            .path()
            .join("long.pid")
            .exists()),
        "the long step never ran: {}",
        bg.output()
    );
    // A power cut of the box: its sshd and everything under it gone; it boots again.
    sshd.stop();
    fs::remove_file(dir.path().join("hang")).unwrap();
    sshd.set_boot_id(BOOT_B);
    std::thread::sleep(Duration::from_secs(2));
    sshd.start_again();
    let status = bg
        .wait(QUICK)
        .unwrap_or_else(|| panic!("the run did not end: {}", bg.output()));
    assert_eq!(status.code(), Some(0), "{}", bg.output());
    let journal = read_journal(&only_journal(dir.path()));
    let rewound = events(&journal, "rewound");
    assert_eq!(rewound.len(), 1, "{}", dump(&journal));
    assert_eq!(rewound[0]["from_step"], 2);
    assert_eq!(rewound[0]["to_step"], 1);
    assert!(
        !events(&journal, "boot_id_changed").is_empty(),
        "{}",
        dump(&journal)
    );
    // Step 1 ran on both boots; the run ended once, in success.
    assert_eq!(
        remote_file(&sshd, &dir.path().join("trace")).as_deref(),
        Some("first\nfirst\nlast\n")
    );
    assert_eq!(events(&journal, "run_finished").len(), 1);
    assert_eq!(last_event(&journal)["outcome"], "success");
    // A journal with a rewind reads back for the report.
    let out = common::recover_in(dir.path())
        .args(["report", p(&only_journal(dir.path())), "--format", "md"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn success_needs_every_started_unit_healthy_at_the_end_not_only_every_step_passed() {
    let Some(mut sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    sshd.systemctl_standin(dir.path());
    let api = HttpServer::start();
    api.respond("GET", "/health", 200, "ok");
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", 200, "ok");
    let head = format!(
        "vars:\n  api: {}\nnotify:\n  ops: {{ webhook: \"{}\", format: json }}\n",
        api.url(),
        hook.url_for("/hook")
    );
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
    let ran = run_to_end(dir.path(), &["run", p(&rb)], &[], QUICK);
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    assert!(
        hook.requests_to("/hook")
            .iter()
            .all(|r| !r.body.contains("We are back")),
        "a false \"we are back\" was posted"
    );
    let journal = read_journal(&only_journal(dir.path()));
    let verified = events(&journal, "verified");
    assert_eq!(verified.len(), 1, "{}", dump(&journal));
    assert_eq!(verified[0]["ok"], false);
    let units = verified[0]["units"].as_array().unwrap();
    assert_eq!(units.len(), 2);
    assert_eq!(units[0]["unit"], "vpn.service");
    assert_eq!(units[0]["healthy"], false);
    assert_eq!(units[1]["healthy"], true);
    assert_eq!(units[1]["probe"], "passed");
    let end = last_event(&journal);
    assert_eq!(end["outcome"], "failed");
    assert_eq!(end["failed_step"], 1, "resume at the unit's start step");
    let message = end["message"].as_str().unwrap();
    assert!(message.contains("vpn.service"), "{message}");
    assert!(
        events(&journal, "step_started")
            .iter()
            .all(|s| s["step"] != 4),
        "the notify step must not run: {}",
        dump(&journal)
    );

    // Resumed, the unit is started again and the run ends true, with its post.
    let ran = run_to_end(dir.path(), &["run", p(&rb), "--resume"], &[], QUICK);
    assert_eq!(
        ran.code,
        Some(1),
        "the stand-in step stops the vpn again: {}",
        ran.context()
    );
    // Without the saboteur the end check holds and the post goes out once.
    let rb_ok = write_runbook(
        dir.path(),
        "endcheck-ok",
        &sshd.runbook_target_yaml("spark"),
        &head,
        r#"      - start: vpn.service
      - start: api.service
        health:
          http: { url: "{{ vars.api }}/health", expect: { status: 200 } }
          every: 1s
          timeout: 10s
      - notify: ops
        message: "We are back. All units healthy."
"#,
    );
    let before = hook.requests_to("/hook").len();
    let ran = run_to_end(dir.path(), &["run", p(&rb_ok)], &[], QUICK);
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let posts = hook.requests_to("/hook");
    assert_eq!(posts.len(), before + 1);
    assert!(posts[before].body.contains("We are back"));
}
