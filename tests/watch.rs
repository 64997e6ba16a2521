//! `recover status`, `recover hold` and `recover watch` (issue 21) against a real sshd, a real
//! webhook listener and a real upsd on 127.0.0.1. The box's systemd and its boot id are
//! played by two small stand-ins put first in the sessions' PATH (sshd's `SetEnv`):
//! `systemctl` (start, stop and show of units kept as files) and `cat` (the boot id read,
//! from a file the test rewrites to "reboot" the box). Assertions are on exit codes, the
//! watch journal, the posts received, the runs journaled and what the box's units are.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::nut::Upsd;
use common::{Background, HttpServer, Sshd, eventually, p, run_to_end};

const QUICK: Duration = Duration::from_secs(60);

const SYSTEMCTL: &str = r#"#!/bin/sh
# systemctl stand-in: units are files in $RECOVER_TEST_UNITS (UNIT.active); UNIT.fails makes
# a start fail.
d=$RECOVER_TEST_UNITS
for unit in "$@"; do :; done
case "$1" in
  start)
    if [ -e "$d/$unit.fails" ]; then : >"$d/$unit.failed"; exit 0; fi
    : >"$d/$unit.active"; echo "$unit" >>"$d/starts"; exit 0 ;;
  stop) rm -f "$d/$unit.active"; exit 0 ;;
  show)
    echo LoadState=loaded
    if [ -e "$d/$unit.active" ]; then echo ActiveState=active; echo SubState=running; echo Result=success
    elif [ -e "$d/$unit.failed" ]; then echo ActiveState=failed; echo SubState=failed; echo Result=exit-code
    else echo ActiveState=inactive; echo SubState=dead; echo Result=success; fi
    exit 0 ;;
esac
echo "systemctl stand-in: unexpected $*" >&2; exit 2
"#;

const CAT: &str = r#"#!/bin/sh
# cat stand-in: the boot id from $RECOVER_TEST_UNITS/boot_id, everything else the real cat.
if [ "$1" = /proc/sys/kernel/random/boot_id ]; then exec /bin/cat "$RECOVER_TEST_UNITS/boot_id"; fi
exec /bin/cat "$@"
"#;

const BOOT_1: &str = "6f1c9a52-3b0e-4d7a-9a51-0c2f8e7d1a01";
const BOOT_2: &str = "6f1c9a52-3b0e-4d7a-9a51-0c2f8e7d1a02";

/// A box: the sshd with the stand-ins, its units directory, a webhook, the test directory.
struct Lab {
    sshd: Sshd,
    hook: HttpServer,
    dir: tempfile::TempDir,
    units: PathBuf,
    state: PathBuf,
}

impl Lab {
    fn start() -> Option<Lab> {
        let mut sshd = Sshd::start_or_skip()?;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let units = dir.path().join("units");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&units).unwrap();
        for (name, text) in [("systemctl", SYSTEMCTL), ("cat", CAT)] {
            let f = bin.join(name);
            fs::write(&f, text).unwrap();
            fs::set_permissions(
                &f,
                <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
            )
            .unwrap();
        }
        fs::write(units.join("boot_id"), format!("{BOOT_1}\n")).unwrap();
        let mut cfg = fs::read_to_string(sshd.sshd_config()).unwrap();
        cfg.push_str(&format!(
            "SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin RECOVER_TEST_UNITS={}\n",
            bin.display(),
            units.display()
        ));
        fs::write(sshd.sshd_config(), cfg).unwrap();
        sshd.stop();
        sshd.start_again();
        let hook = HttpServer::start();
        hook.respond("POST", "/hook", 200, "ok");
        let state = dir.path().join("state");
        fs::create_dir_all(&state).unwrap();
        Some(Lab {
            sshd,
            hook,
            dir,
            units,
            state,
        })
    }

    /// The runbook: wait for SSH, the UPS (when `ups` is given), start `a.service` and
    /// `b.service` (gates: `run:` probes), post "we are back".
    fn runbook(&self, ups: Option<&Upsd>) -> PathBuf {
        let ups_step = ups
            .map(|u| {
                format!(
                    "      - ups: {{ name: {}, host: {}, port: {}, stable_for: 1s, every: 1s, timeout: 30s }}\n",
                    u.name(),
                    u.host(),
                    u.port()
                )
            })
            .unwrap_or_default();
        let text = format!(
            "name: watched\n\
             budget: 5m\n\
             targets:\n{target}\
             notify:\n\
             \x20 ops: {{ webhook: \"{{{{ env.RECOVER_WEBHOOK }}}}\", format: slack }}\n\
             abort:\n\
             \x20 notify: ops\n\
             \x20 message: Off the timeline.\n\
             phases:\n\
             \x20 - name: All\n\
             \x20   window: 0m-5m\n\
             \x20   steps:\n\
             {ups_step}\
             \x20     - wait_ssh: {{ every: 1s, timeout: 20s }}\n\
             \x20     - start: a.service\n\
             \x20       timeout: 15s\n\
             \x20       health: {{ run: \"true\", every: 1s, timeout: 5s }}\n\
             \x20     - start: b.service\n\
             \x20       timeout: 15s\n\
             \x20       health: {{ run: \"test -e {units}/b.service.active\", every: 1s, timeout: 5s }}\n\
             \x20     - notify: ops\n\
             \x20       message: \"We are back after {{{{ run.elapsed }}}}.\"\n",
            target = self.sshd.runbook_target_yaml("box"),
            units = self.units.display(),
        );
        let path = self.dir.path().join("watched.yaml");
        fs::write(&path, text).unwrap();
        path
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("RECOVER_WEBHOOK".into(), self.hook.url_for("/hook")),
            (
                "RECOVER_RUN_DIR".into(),
                self.dir.path().join("run").display().to_string(),
            ),
        ]
    }

    fn status(&self, rb: &Path, json: bool) -> common::Ran {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut args = vec!["status", p(rb)];
        if json {
            args.push("--json");
        }
        run_to_end(&self.state, &args, &env, QUICK)
    }

    fn up(&self, units: &[&str]) {
        for u in units {
            fs::write(self.units.join(format!("{u}.active")), "").unwrap();
        }
    }

    /// A reboot of the box: a new boot id, every unit down.
    fn reboot(&self, boot_id: &str) {
        for u in ["a.service", "b.service"] {
            let _ = fs::remove_file(self.units.join(format!("{u}.active")));
        }
        fs::write(self.units.join("boot_id"), format!("{boot_id}\n")).unwrap();
    }

    fn starts(&self) -> usize {
        fs::read_to_string(self.units.join("starts"))
            .map(|t| t.lines().filter(|l| *l == "a.service").count())
            .unwrap_or(0)
    }

    /// The watch, in the background, looking every `every`, first backoff `backoff`.
    fn watch(&self, rb: &Path, every: &str, backoff: &str) -> Watch {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Watch(Background::start(
            &self.state,
            &["watch", p(rb), "--every", every, "--backoff", backoff],
            &env,
        ))
    }

    fn nudge(&self, rb: &Path) -> common::Ran {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_to_end(&self.state, &["watch", p(rb), "--nudge"], &env, QUICK)
    }

    /// The watch journal's decisions, in order.
    fn decisions(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.state.join("recover/watch/watched.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn decision_words(&self) -> Vec<String> {
        self.decisions()
            .iter()
            .map(|d| d["decision"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    fn posts(&self) -> Vec<String> {
        self.hook
            .requests_to("/hook")
            .iter()
            .map(|r| r.json()["text"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// How many journals of runs the state directory holds.
    fn runs(&self) -> usize {
        fs::read_dir(self.state.join("recover/runs"))
            .map(|d| d.filter(|e| e.is_ok()).count())
            .unwrap_or(0)
    }

    fn context(&self, w: &Watch) -> String {
        format!(
            "--- watch output ---\n{}\n--- decisions ---\n{:#?}\n--- posts ---\n{:#?}",
            common::tail(&w.0.output(), 60),
            self.decision_words(),
            self.posts()
        )
    }
}

/// The watch: stopped with SIGTERM (which it passes on to a run it started) when dropped.
struct Watch(Background);

impl Watch {
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) of the watch this test started, by its pid.
        unsafe {
            libc::kill(self.0.pid(), libc::SIGTERM);
        }
        self.0.wait(Duration::from_secs(30))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[test]
fn status_says_healthy_degraded_and_down_with_its_exit_codes() {
    let Some(mut lab) = Lab::start() else {
        return;
    };
    let rb = lab.runbook(None);
    lab.up(&["a.service", "b.service"]);
    let ran = lab.status(&rb, false);
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert!(ran.stdout.contains("HEALTHY"), "{}", ran.context());
    assert!(ran.stdout.contains(BOOT_1), "{}", ran.context());
    assert!(ran.took < Duration::from_secs(10), "{}", ran.context());

    // b.service stopped: degraded, exit 1, and the JSON says which and why.
    fs::remove_file(lab.units.join("b.service.active")).unwrap();
    let ran = lab.status(&rb, true);
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    let v: serde_json::Value = serde_json::from_str(ran.stdout.trim()).expect("one JSON object");
    assert_eq!(v["health"], "degraded");
    assert_eq!(v["targets"][0]["boot_id"], BOOT_1);
    assert_eq!(v["units"][0]["unit"], "a.service");
    assert_eq!(v["units"][0]["active"], "active");
    assert_eq!(v["units"][0]["probe"]["passed"], true);
    assert_eq!(v["units"][1]["active"], "inactive");
    assert!(v["run_in_progress"].is_null());
    assert!(v["hold"].is_null());

    // An active unit whose probe fails is degraded too.
    lab.up(&["b.service"]);
    let rb_probe = lab.dir.path().join("probe.yaml");
    fs::write(
        &rb_probe,
        fs::read_to_string(&rb)
            .unwrap()
            .replace("run: \"true\"", "run: \"echo 'a'b\\\"c$d\\\\e'; exit 7\""),
    )
    .unwrap();
    let ran = lab.status(&rb_probe, true);
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    let v: serde_json::Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(v["units"][0]["probe"]["passed"], false, "{v:#}");

    // The box gone: down, exit 3, quickly.
    lab.sshd.stop();
    let ran = lab.status(&rb, false);
    assert_eq!(ran.code, Some(3), "{}", ran.context());
    assert!(ran.stdout.contains("DOWN"), "{}", ran.context());
    assert!(ran.stdout.contains("UNREACHABLE"), "{}", ran.context());
    assert!(ran.took < Duration::from_secs(15), "{}", ran.context());
}

#[test]
fn a_hold_is_recorded_shown_by_status_and_check_and_released() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let rb = lab.runbook(None);
    lab.up(&["a.service", "b.service"]);
    let why = "firmware a'b\"c$d\\e";
    let ran = run_to_end(
        &lab.state,
        &["hold", p(&rb), "--for", "2h", "--why", why],
        &[("USER", "operator-x")],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let ran = lab.status(&rb, true);
    let v: serde_json::Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(v["hold"]["why"], why, "{v:#}");
    assert!(
        v["hold"]["by"].as_str().unwrap().starts_with("operator-x"),
        "{v:#}"
    );
    let ran = run_to_end(&lab.state, &["check", p(&rb)], &[], QUICK);
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert!(
        ran.stderr.contains("hold: held by operator-x"),
        "{}",
        ran.context()
    );
    assert!(ran.stderr.contains(why), "{}", ran.context());

    let ran = run_to_end(&lab.state, &["hold", p(&rb), "--release"], &[], QUICK);
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let ran = lab.status(&rb, true);
    let v: serde_json::Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert!(v["hold"].is_null(), "{v:#}");
    let ran = run_to_end(&lab.state, &["check", p(&rb)], &[], QUICK);
    assert!(!ran.stderr.contains("hold:"), "{}", ran.context());

    // Refusals: no length, a zero or huge length, --why without --for.
    for args in [
        vec!["hold", p(&rb), "--why", "x"],
        vec!["hold", p(&rb), "--for", "0s", "--why", "x"],
        vec!["hold", p(&rb), "--for", "1000000000h", "--why", "x"],
        vec!["hold", p(&rb), "--for", "1h"],
    ] {
        let ran = run_to_end(&lab.state, &args, &[], QUICK);
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.context());
    }
}

#[test]
fn a_healthy_box_starts_nothing_and_a_new_boot_id_starts_exactly_one_run() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let rb = lab.runbook(None);
    lab.up(&["a.service", "b.service"]);
    let mut w = lab.watch(&rb, "500ms", "1h");
    assert!(
        eventually(QUICK, || lab.decision_words().len() >= 4),
        "{}",
        lab.context(&w)
    );
    assert!(
        lab.decision_words().iter().all(|d| d == "healthy"),
        "{}",
        lab.context(&w)
    );
    assert_eq!(lab.runs(), 0, "{}", lab.context(&w));
    assert!(lab.posts().is_empty(), "{}", lab.context(&w));

    lab.reboot(BOOT_2);
    assert!(
        eventually(QUICK, || lab
            .posts()
            .iter()
            .any(|p| p.contains("We are back"))),
        "{}",
        lab.context(&w)
    );
    // Back to healthy, and it stays so: one run, both units started once more.
    assert!(
        eventually(QUICK, || {
            lab.decision_words().last().is_some_and(|d| d == "healthy")
        }),
        "{}",
        lab.context(&w)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.runs(), 1, "{}", lab.context(&w));
    assert_eq!(lab.starts(), 1, "{}", lab.context(&w));
    let words = lab.decision_words();
    assert_eq!(
        words.iter().filter(|d| *d == "start_run").count(),
        1,
        "{}",
        lab.context(&w)
    );
    let start = lab
        .decisions()
        .into_iter()
        .find(|d| d["decision"] == "start_run")
        .unwrap();
    assert!(
        start["text"]
            .as_str()
            .unwrap()
            .contains(&format!("boot id {BOOT_1} then, {BOOT_2} now")),
        "{start:#}"
    );
    let posts = lab.posts();
    assert!(
        posts[0].contains("starting the recovery, run 1 of 3"),
        "{posts:#?}"
    );
    // The run says who started it.
    let journal = fs::read_dir(lab.state.join("recover/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = fs::read_to_string(journal).unwrap();
    assert!(text.contains("recover watch: box rebooted"), "{text}");
    assert_eq!(
        w.stop().and_then(|s| s.code()),
        Some(0),
        "{}",
        lab.context(&w)
    );
    // `status` tells the last run and how it ended, and the new boot id.
    let ran = lab.status(&rb, true);
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let v: serde_json::Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(v["last_run"]["outcome"], "success", "{v:#}");
    assert_eq!(v["targets"][0]["boot_id"], BOOT_2, "{v:#}");
}

#[test]
fn a_unit_stopped_on_a_box_that_did_not_reboot_is_posted_once_and_nothing_starts() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let rb = lab.runbook(None);
    lab.up(&["a.service", "b.service"]);
    let w = lab.watch(&rb, "300ms", "1h");
    assert!(
        eventually(QUICK, || lab
            .decision_words()
            .contains(&"healthy".to_owned())),
        "{}",
        lab.context(&w)
    );
    fs::remove_file(lab.units.join("b.service.active")).unwrap();
    assert!(
        eventually(QUICK, || {
            lab.decision_words()
                .iter()
                .filter(|d| *d == "degraded")
                .count()
                >= 8
        }),
        "{}",
        lab.context(&w)
    );
    let posts = lab.posts();
    assert_eq!(posts.len(), 1, "{}", lab.context(&w));
    assert!(
        posts[0].contains("degraded, not recovering: b.service is inactive"),
        "{posts:#?}"
    );
    assert_eq!(lab.runs(), 0, "{}", lab.context(&w));
    assert_eq!(lab.starts(), 0, "{}", lab.context(&w));
    // Fixed by hand: one "healthy" post.
    lab.up(&["b.service"]);
    assert!(
        eventually(QUICK, || lab.posts().len() == 2),
        "{}",
        lab.context(&w)
    );
    assert!(lab.posts()[1].contains("healthy"), "{}", lab.context(&w));
}

#[test]
fn a_hold_keeps_the_watch_from_recovering_until_it_is_released() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let rb = lab.runbook(None);
    lab.up(&["a.service", "b.service"]);
    let w = lab.watch(&rb, "300ms", "1h");
    assert!(
        eventually(QUICK, || lab
            .decision_words()
            .contains(&"healthy".to_owned())),
        "{}",
        lab.context(&w)
    );
    let ran = run_to_end(
        &lab.state,
        &["hold", p(&rb), "--for", "2h", "--why", "maintenance"],
        &[],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    lab.reboot(BOOT_2);
    assert!(
        eventually(QUICK, || {
            lab.decision_words().iter().filter(|d| *d == "held").count() >= 6
        }),
        "{}",
        lab.context(&w)
    );
    assert_eq!(lab.runs(), 0, "{}", lab.context(&w));
    assert_eq!(lab.posts().len(), 1, "{}", lab.context(&w));
    assert!(
        lab.posts()[0].contains("maintenance"),
        "{}",
        lab.context(&w)
    );

    let ran = run_to_end(&lab.state, &["hold", p(&rb), "--release"], &[], QUICK);
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert!(
        eventually(QUICK, || lab
            .posts()
            .iter()
            .any(|p| p.contains("We are back"))),
        "{}",
        lab.context(&w)
    );
    assert_eq!(lab.runs(), 1, "{}", lab.context(&w));
}

#[test]
fn a_failing_run_backs_off_doubling_and_stops_after_three_runs() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let rb = lab.runbook(None);
    lab.up(&["a.service", "b.service"]);
    let w = lab.watch(&rb, "300ms", "2s");
    assert!(
        eventually(QUICK, || lab
            .decision_words()
            .contains(&"healthy".to_owned())),
        "{}",
        lab.context(&w)
    );
    fs::write(lab.units.join("a.service.fails"), "").unwrap();
    lab.reboot(BOOT_2);
    assert!(
        eventually(Duration::from_secs(120), || {
            lab.decision_words()
                .contains(&"waiting_for_a_person".to_owned())
        }),
        "{}",
        lab.context(&w)
    );
    // Long enough for a fourth run if there were one (the last backoff would be 8 s).
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(lab.runs(), 3, "{}", lab.context(&w));
    let posts = lab.posts();
    let failed: Vec<&String> = posts
        .iter()
        .filter(|p| p.contains("the recovery failed"))
        .collect();
    assert_eq!(failed.len(), 3, "{posts:#?}");
    assert!(
        failed[0].contains("run 1 of 3: next try in 2s"),
        "{posts:#?}"
    );
    assert!(
        failed[1].contains("run 2 of 3: next try in 4s"),
        "{posts:#?}"
    );
    assert!(failed[2].contains("run 3 of 3: no more runs"), "{posts:#?}");
    assert_eq!(
        posts
            .iter()
            .filter(|p| p.contains("waiting for a person"))
            .count(),
        1,
        "one post per change, the run-3 failure's: {posts:#?}"
    );
    assert!(
        !posts.iter().any(|p| p.contains("the next one not before")),
        "the backoff is said once, with the failure: {posts:#?}"
    );
    // Each failed run also sends its own failure post (the step, its output, the units:
    // `engine::failure`), once: 3 starts, 3 failure posts of the runs, 3 of the watch's
    // decisions.
    let run_posts = posts.iter().filter(|p| p.starts_with("FAILED: ")).count();
    assert_eq!(run_posts, 3, "one failure post per run: {posts:#?}");
    assert_eq!(
        posts.len(),
        9,
        "3 starts, 3 run failures, 3 decisions: {posts:#?}"
    );
    // The backoff was kept: the second run came at least 2 s after the first ended.
    let d = lab.decisions();
    let at = |i: usize| chrono::DateTime::parse_from_rfc3339(d[i]["at"].as_str().unwrap()).unwrap();
    let ends: Vec<usize> = (0..d.len())
        .filter(|i| d[*i]["decision"] == "run_finished")
        .collect();
    let starts: Vec<usize> = (0..d.len())
        .filter(|i| d[*i]["decision"] == "start_run")
        .collect();
    assert_eq!(starts.len(), 3, "{}", lab.context(&w));
    assert!(
        (at(starts[1]) - at(ends[0])).num_seconds() >= 2,
        "{}",
        lab.context(&w)
    );
    assert!(
        (at(starts[2]) - at(ends[1])).num_seconds() >= 4,
        "{}",
        lab.context(&w)
    );
}

#[test]
fn a_nudge_makes_the_watch_look_at_once_and_mains_must_be_stable_first() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let Some(mut ups) = Upsd::start("spark-ups", "OL", 90) else {
        return;
    };
    let rb = lab.runbook(Some(&ups));
    lab.up(&["a.service", "b.service"]);
    // Every hour: only a nudge makes it look again.
    let w = lab.watch(&rb, "1h", "1h");
    assert!(
        eventually(QUICK, || lab.decision_words().len() == 1),
        "{}",
        lab.context(&w)
    );
    ups.set("OB DISCHRG", 80);
    lab.reboot(BOOT_2);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lab.decision_words().len(), 1, "{}", lab.context(&w));
    let ran = lab.nudge(&rb);
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert!(
        eventually(QUICK, || {
            lab.decision_words()
                .contains(&"waiting_for_mains".to_owned())
        }),
        "{}",
        lab.context(&w)
    );
    assert_eq!(lab.runs(), 0, "{}", lab.context(&w));
    ups.set("OL CHRG", 85);
    assert!(
        eventually(QUICK, || lab
            .posts()
            .iter()
            .any(|p| p.contains("We are back"))),
        "{}",
        lab.context(&w)
    );
    assert_eq!(lab.runs(), 1, "{}", lab.context(&w));

    // No watch listening: --nudge says so and exits 1.
    drop(w);
    let ran = lab.nudge(&rb);
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    assert!(
        ran.stderr.contains("no watch is listening"),
        "{}",
        ran.context()
    );
}

/// The shipped hook.
fn hook_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/recover-upsmon-hook")
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(
        path,
        <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(mode),
    )
    .unwrap();
}

/// The hook run as upsmon runs it, bounded, with `conf`.
fn run_hook(conf: &Path, notifytype: &str, message: &str, cwd: &Path) -> std::process::Output {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg(hook_path())
        .arg(message)
        .current_dir(cwd)
        .env("RECOVER_UNATTENDED_CONF", conf)
        .env("NOTIFYTYPE", notifytype)
        .env("UPSNAME", "spark-ups@localhost");
    common::run_bounded(cmd, Duration::from_secs(30))
}

#[test]
fn the_hook_reads_its_config_as_data_and_refuses_one_others_can_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A recording stand-in for recover: its arguments and one variable, one a line.
    let bin = d.join("record");
    fs::write(
        &bin,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >{args}\nprintf '%s' \"$SECRET\" >{secret}\n",
            args = d.join("args").display(),
            secret = d.join("secret").display()
        ),
    )
    .unwrap();
    chmod(&bin, 0o755);
    for f in ["a", "b"] {
        fs::write(d.join(f), "").unwrap();
    }
    let secret = "a'b\"c$d\\e";
    let conf = d.join("hook.conf");
    let text = format!(
        "# comment\n\
         RECOVER_START=\"nudge\"\n\
         \x20 RECOVER_RUNBOOK=\"/srv/run books/rb.yaml\"\n\
         RECOVER_ARGS=\"--var x=* --overlay $(touch {d}/pwned)\"\n\
         RECOVER_BIN=\"{bin}\"\n\
         SECRET=\"{secret}\"\n\
         EVIL=`touch {d}/pwned2`\n\
         not a line\n",
        d = d.display(),
        bin = bin.display(),
    );
    fs::write(&conf, &text).unwrap();
    chmod(&conf, 0o644);
    let out = run_hook(&conf, "ONLINE", "UPS on line power", d);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let args = fs::read_to_string(d.join("args")).unwrap();
    assert_eq!(
        args,
        format!(
            "watch\n--nudge\n--var\nx=*\n--overlay\n$(touch\n{}/pwned)\n/srv/run books/rb.yaml\n",
            d.display()
        ),
        "split on blanks, never globbed, never run"
    );
    assert_eq!(fs::read_to_string(d.join("secret")).unwrap(), secret);
    assert!(!d.join("pwned").exists() && !d.join("pwned2").exists());
    assert!(
        common::text(&out.stderr).contains("ignored a line that is not KEY=VALUE"),
        "{}",
        common::text(&out.stderr)
    );

    // Writable by group or others, or not root's: nothing is done.
    fs::remove_file(d.join("args")).unwrap();
    for mode in [0o664, 0o646, 0o666] {
        chmod(&conf, mode);
        let out = run_hook(&conf, "ONLINE", "x", d);
        assert_eq!(out.status.code(), Some(1), "{mode:o}");
        assert!(
            common::text(&out.stderr).contains("must be owned by root and not writable"),
            "{mode:o}: {}",
            common::text(&out.stderr)
        );
        assert!(!d.join("args").exists(), "{mode:o}");
    }
    chmod(&conf, 0o644);
    if std::process::Command::new("chown")
        .arg("nobody")
        .arg(&conf)
        .status()
        .is_ok_and(|s| s.success())
    {
        let out = run_hook(&conf, "ONLINE", "x", d);
        assert_eq!(out.status.code(), Some(1));
        assert!(!d.join("args").exists());
    }
}

#[test]
fn the_hooks_started_by_is_cut_at_200_characters_never_inside_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = d.join("record");
    fs::write(
        &bin,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >{}\n",
            d.join("args").display()
        ),
    )
    .unwrap();
    chmod(&bin, 0o755);
    let conf = d.join("hook.conf");
    fs::write(
        &conf,
        format!(
            "RECOVER_START=detach\nRECOVER_RUNBOOK=/rb.yaml\nRECOVER_BIN={}\nRECOVER_LOG_DIR={}\n",
            bin.display(),
            d.join("log").display()
        ),
    )
    .unwrap();
    chmod(&conf, 0o644);
    let message = format!("é\u{1b}[2J{}", "€".repeat(300));
    let out = run_hook(&conf, "ONLINE", &message, d);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(eventually(Duration::from_secs(10), || d
        .join("args")
        .exists()));
    let mut args = String::new();
    assert!(eventually(Duration::from_secs(10), || {
        args = fs::read_to_string(d.join("args")).unwrap_or_default();
        args.lines().count() >= 5
    }));
    let by = args.lines().nth(3).unwrap();
    assert_eq!(by.chars().count(), 200, "{by}");
    assert!(
        by.starts_with("the UPS: upsmon ONLINE spark-ups@localhost: é[2J€"),
        "{by}"
    );
    assert!(!by.chars().any(char::is_control), "{by:?}");
    // recover itself takes it.
    let ran = run_to_end(
        d,
        &["run", "--dry-run", "--started-by", by, "/nonexistent.yaml"],
        &[],
        QUICK,
    );
    assert!(!ran.stderr.contains("--started-by"), "{}", ran.context());
}

#[test]
fn upsmon_as_nut_runs_the_shipped_hook_and_its_nudge_reaches_the_watch() {
    let Some(lab) = Lab::start() else {
        return;
    };
    if !common::require_root() {
        return;
    }
    let Some(mut ups) = Upsd::start("spark-ups", "OL", 90) else {
        return;
    };
    let rb = lab.runbook(Some(&ups));
    // What upsmon's `nut` must reach: the runbook, the run directory, the binary.
    chmod(lab.dir.path(), 0o755);
    fs::create_dir_all(lab.dir.path().join("run")).unwrap();
    chmod(&lab.dir.path().join("run"), 0o755);
    lab.up(&["a.service", "b.service"]);
    let w = lab.watch(&rb, "1h", "1h");
    assert!(
        eventually(QUICK, || lab.decision_words().len() == 1),
        "{}",
        lab.context(&w)
    );
    let conf = lab.dir.path().join("upsmon-hook.conf");
    fs::write(
        &conf,
        format!(
            "RECOVER_START=\"nudge\"\nRECOVER_RUNBOOK=\"{}\"\nRECOVER_BIN=\"{}\"\nRECOVER_RUN_DIR=\"{}\"\n",
            rb.display(),
            env!("CARGO_BIN_EXE_recover"),
            lab.dir.path().join("run").display()
        ),
    )
    .unwrap();
    // First unreadable by anyone but root: the hook must say so, which proves it is not root.
    chmod(&conf, 0o600);
    let conf_env = conf.display().to_string();
    let Some(mon) = common::upsmon::Upsmon::start_as(
        "nut",
        &ups.monitor(),
        common::nut::MONITOR_USER,
        common::nut::MONITOR_PASSWORD,
        &hook_path(),
        &[("RECOVER_UNATTENDED_CONF", &conf_env)],
    ) else {
        return;
    };
    ups.set("OB DISCHRG", 80);
    assert!(
        eventually(QUICK, || mon.log().contains("cannot read")),
        "{}",
        mon.log()
    );
    assert_eq!(lab.decision_words().len(), 1, "{}", lab.context(&w));
    chmod(&conf, 0o644);
    // The box loses power and comes back with mains: upsmon says ONLINE, the hook nudges.
    lab.reboot(BOOT_2);
    ups.set("OL CHRG", 85);
    assert!(
        eventually(QUICK, || mon.log().contains("nudged the watch")),
        "{}",
        mon.log()
    );
    assert!(
        eventually(QUICK, || lab
            .posts()
            .iter()
            .any(|p| p.contains("We are back"))),
        "{}\n--- upsmon ---\n{}",
        lab.context(&w),
        mon.log()
    );
    assert!(
        w.0.output().contains("nudged (the socket)"),
        "{}",
        lab.context(&w)
    );
    assert_eq!(lab.runs(), 1, "{}", lab.context(&w));
}

#[test]
fn status_watch_and_hold_document_their_exit_codes_in_help() {
    for (cmd, wants) in [
        (
            "status",
            &["0    healthy", "1    degraded", "2    usage", "3    down"][..],
        ),
        ("hold", &["0    the hold was recorded", "2    usage"][..]),
        (
            "watch",
            &["0    stopped by SIGTERM", "1    with --nudge", "2    usage"][..],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ran = run_to_end(dir.path(), &[cmd, "--help"], &[], QUICK);
        assert_eq!(ran.code, Some(0), "{}", ran.context());
        for want in wants {
            assert!(
                ran.stdout.contains(want),
                "{cmd} --help lacks `{want}`:\n{}",
                ran.stdout
            );
        }
    }
}

/// A management host without CA certificates (a minimal Debian has no `ca-certificates`):
/// `status` neither panics nor loses its plain-HTTP probes.
#[test]
fn status_without_ca_certificates_still_probes_over_http() {
    let Some(lab) = Lab::start() else {
        return;
    };
    lab.hook.respond("GET", "/health", 200, "ok");
    let rb = lab.runbook(None);
    let text = fs::read_to_string(&rb).unwrap().replace(
        &format!("run: \"test -e {}/b.service.active\"", lab.units.display()),
        &format!("http: {{ url: \"{}\" }}", lab.hook.url_for("/health")),
    );
    fs::write(&rb, text).unwrap();
    lab.up(&["a.service", "b.service"]);
    let empty = lab.dir.path().join("empty.pem");
    fs::write(&empty, "").unwrap();
    let certs = lab.dir.path().join("no-certs");
    fs::create_dir_all(&certs).unwrap();
    let ran = run_to_end(
        &lab.state,
        &["status", p(&rb), "--json"],
        &[("SSL_CERT_FILE", p(&empty)), ("SSL_CERT_DIR", p(&certs))],
        QUICK,
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let v: serde_json::Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(v["units"][1]["probe"]["passed"], true, "{v:#}");
    assert_eq!(lab.hook.requests_to("/health").len(), 1);
}

/// What no run could do with nobody there is refused when the watch starts (exit 2), not by
/// each run at 3am: a manual step without `unattended:`, a secret a step needs unset.
#[test]
fn a_watch_of_a_runbook_that_cannot_run_unattended_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manual = d.join("manual.yaml");
    fs::write(
        &manual,
        "name: m\nbudget: 5m\ntargets:\n  box: { host: box.invalid }\nphases:\n  - name: P\n    window: 0m-5m\n    steps:\n      - manual: Press the power button.\n",
    )
    .unwrap();
    let secret = d.join("secret.yaml");
    fs::write(
        &secret,
        "name: s\nbudget: 5m\ntargets:\n  box: { host: box.invalid }\nphases:\n  - name: P\n    window: 0m-5m\n    steps:\n      - run: \"test -n {{ env.RB_TOKEN }}\"\n",
    )
    .unwrap();
    for rb in [&manual, &secret] {
        let ran = run_to_end(d, &["watch", p(rb), "--every", "1s"], &[], QUICK);
        assert_eq!(ran.code, Some(2), "{}: {}", rb.display(), ran.context());
        assert!(ran.took < Duration::from_secs(10), "{}", ran.context());
    }
    assert!(
        !d.join("recover/watch").exists()
            || fs::read_dir(d.join("recover/watch")).unwrap().all(|e| !e
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".jsonl"))
    );
}

/// A box that stops answering: one check without an answer is looked at again, the second in a
/// row is a power event, and the run waits for the box and recovers it.
#[test]
fn a_box_that_stops_answering_is_a_power_event_on_the_second_check() {
    let Some(mut lab) = Lab::start() else {
        return;
    };
    let rb = lab.runbook(None);
    lab.up(&["a.service", "b.service"]);
    let w = lab.watch(&rb, "1s", "1h");
    assert!(
        eventually(QUICK, || lab
            .decision_words()
            .contains(&"healthy".to_owned())),
        "{}",
        lab.context(&w)
    );
    lab.sshd.stop();
    lab.reboot(BOOT_2);
    assert!(
        eventually(QUICK, || lab
            .decision_words()
            .contains(&"start_run".to_owned())),
        "{}",
        lab.context(&w)
    );
    lab.sshd.start_again();
    assert!(
        eventually(QUICK, || lab
            .posts()
            .iter()
            .any(|p| p.contains("We are back"))),
        "{}",
        lab.context(&w)
    );
    let words = lab.decision_words();
    let first_miss = words.iter().position(|d| d == "not_answering").unwrap();
    let start = words.iter().position(|d| d == "start_run").unwrap();
    assert_eq!(start, first_miss + 1, "{words:?}");
    let d = lab.decisions();
    assert!(
        d[start]["text"]
            .as_str()
            .unwrap()
            .contains("box does not answer"),
        "{:#?}",
        d[start]
    );
    assert_eq!(lab.runs(), 1, "{}", lab.context(&w));
    assert!(
        !lab.posts().iter().any(|p| p.contains("looking again")),
        "{}",
        lab.context(&w)
    );
}
