//! The binder replayed: every printed check of the Markdown binder of `runbooks/lab.yaml`,
//! taken exactly as printed, runs through `sh` against the captured outputs in `fixtures/`,
//! and must give the verdict `recover`'s own verdict functions give on the same output.
//! A check line that cannot be replayed is a bug in the binder.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use recover::plan::{self, Action, Options, Plan, Probe, Step};
use recover::verdict::{self, HttpExpect, Matcher, Output, Verdict};

const RUNBOOK: &str = "runbooks/lab.yaml";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn binder() -> String {
    let state = tempfile::tempdir().unwrap();
    let out = common::recover_in(state.path())
        .current_dir(root())
        .args(["export", RUNBOOK, "--format", "md"])
        .env("SOURCE_DATE_EPOCH", "1717243200")
        .env("RECOVER_WEBHOOK", "http://127.0.0.1:9/")
        .output()
        .expect("recover export runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn lab_plan() -> Plan {
    let loaded = recover::runbook::load(&root().join(RUNBOOK)).expect("valid");
    plan::resolve(&loaded, &Options::default()).expect("resolves")
}

/// The `Check:` block of each step, exactly as printed: step number -> its lines.
fn printed_checks(md: &str) -> BTreeMap<usize, String> {
    let mut out = BTreeMap::new();
    for section in md.split("\n### ").skip(1) {
        let Some(n) = section
            .split('.')
            .next()
            .and_then(|n| n.trim().parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(rest) = section.split("\nCheck:\n\n```sh\n").nth(1) {
            let body = rest.split("\n```").next().expect("a closed fence");
            out.insert(n, body.to_owned());
        }
    }
    out
}

/// Run the printed checks in a directory holding `sN.out`, `sN.err`, `sN.rc`.
fn replay(n: usize, checks: &str, out: &Output) -> Verdict {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join(format!("s{n}.out")), &out.stdout).unwrap();
    std::fs::write(d.join(format!("s{n}.err")), &out.stderr).unwrap();
    let rc = out.exit.map(|e| format!("exit {e}\n")).unwrap_or_default();
    std::fs::write(d.join(format!("s{n}.rc")), rc).unwrap();
    let printed = sh_bounded(d, checks);
    assert!(printed.status.code().is_some(), "step {n}: the checks hang");
    let text = String::from_utf8_lossy(&printed.stdout);
    let said = |w: &str| text.lines().any(|l| l.trim() == w);
    if said("ABORT") {
        Verdict::Abort(text.into_owned())
    } else if said("FAIL") {
        Verdict::Fail(text.into_owned())
    } else {
        Verdict::Pass
    }
}

fn same(a: &Verdict, b: &Verdict) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Captured outputs for a command, by what it runs: (fixture name, output).
fn fixtures_for(script: &str) -> Vec<(String, Output)> {
    let lab = root().join("fixtures/lab");
    let tsv = std::fs::read_to_string(lab.join("commands.tsv")).unwrap();
    let key = if script.starts_with("dmesg") {
        "dmesg-tail-"
    } else if script.starts_with("journalctl -b 0 -p err") {
        "journalctl-err-"
    } else if script.starts_with("fsck -n") {
        "fsck-n-"
    } else if script.starts_with("dumpe2fs -h") {
        "dumpe2fs-state-"
    } else if script.starts_with("tailscale status") {
        "tailscale-status-"
    } else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for row in tsv.lines() {
        let mut f = row.split('\t');
        let (Some(name), Some(exit)) = (f.next(), f.next()) else {
            continue;
        };
        if !name.starts_with(key) {
            continue;
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        out.push((
            name.to_owned(),
            Output {
                exit: exit.parse().ok(),
                stdout: read(&lab.join(format!("{name}.txt"))),
                stderr: read(&lab.join(format!("{name}.stderr.txt"))),
                timed_out: false,
            },
        ));
    }
    // Real e2fsprogs runs on small images (fixtures/fsck/capture.sh). For the superblock
    // check: `dumpe2fs -h` of a fresh mkfs.ext4 image (its pass path) and of one with the
    // error flag set.
    let fsck: &[&str] = match key {
        "fsck-n-" => &[
            "clean",
            "corrupt",
            "journal",
            "unflagged",
            "unflagged_forced",
        ],
        "dumpe2fs-state-" => &["dumpe2fs_clean", "dumpe2fs_corrupt"],
        _ => &[],
    };
    for name in fsck {
        let dir = root().join("fixtures/fsck");
        let read = |ext: &str| std::fs::read_to_string(dir.join(format!("{name}.{ext}")));
        out.push((
            format!("fsck/{name}"),
            Output {
                exit: read("exit").ok().and_then(|e| e.trim().parse().ok()),
                stdout: read("stdout").unwrap_or_default(),
                stderr: read("stderr").unwrap_or_default(),
                timed_out: false,
            },
        ));
    }
    if key == "dmesg-tail-" {
        let dir = root().join("fixtures/dmesg");
        let read = |ext: &str| std::fs::read_to_string(dir.join(format!("clean_tail50.{ext}")));
        out.push((
            "dmesg/clean_tail50".into(),
            Output {
                exit: Some(0),
                stdout: read("stdout").unwrap_or_default(),
                stderr: read("stderr").unwrap_or_default(),
                timed_out: false,
            },
        ));
        // A non-zero exit must fail the exit check as it fails the verdict.
        out.push((
            "dmesg/denied".into(),
            Output {
                exit: Some(1),
                stdout: String::new(),
                stderr: "dmesg: read kernel buffer failed: Operation not permitted\n".into(),
                timed_out: false,
            },
        ));
    }
    out
}

/// HTTP responses as curl prints them with `-w '\n%{http_code}\n'`: body, then status.
fn http_fixtures() -> Vec<(String, u16, String)> {
    let lab = root().join("fixtures/lab");
    let mut out = Vec::new();
    for name in [
        "http-prometheus-up",
        "http-chat-completion",
        "http-chat-completion-warming-up",
        "http-dispatcher-health",
    ] {
        let text = std::fs::read_to_string(lab.join(format!("{name}.txt"))).unwrap();
        let (body, status) = match text.trim_end().rsplit_once("\nHTTP ") {
            Some((b, s)) => (b.to_owned(), s.trim().parse().unwrap()),
            None => (text.trim_end().to_owned(), 200),
        };
        out.push((name.to_owned(), status, body));
    }
    // The real Prometheus writes no spaces; a target that is down has value "0".
    out.push((
        "prometheus-compact".into(),
        200,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"instance":"spark-lab:9100"},"value":[1795322926.729,"1"]}]}}"#.into(),
    ));
    out.push((
        "prometheus-down".into(),
        200,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"instance":"spark-lab:9100"},"value":[1795322926.729,"0"]}]}}"#.into(),
    ));
    out
}

/// What each step's checks judge: a command (its expect and abort_if) or a response.
enum Judged<'a> {
    Command(&'a str, Option<&'a Matcher>, Option<&'a Matcher>),
    Http(&'a HttpExpect),
}

fn judged(s: &Step) -> Option<Judged<'_>> {
    match &s.action {
        Action::Run(c) => Some(Judged::Command(
            &c.script,
            s.expect.as_ref(),
            s.abort_if.as_ref(),
        )),
        Action::Start { health, .. } => match health.as_ref().map(|g| &g.probe) {
            Some(Probe::Run { command, expect }) => {
                Some(Judged::Command(&command.script, expect.as_ref(), None))
            }
            Some(Probe::Http(r)) => Some(Judged::Http(&r.expect)),
            None => None,
        },
        Action::Http(r) => Some(Judged::Http(&r.expect)),
        _ => None,
    }
}

#[test]
fn every_printed_check_gives_the_verdict_of_recover_on_the_fixtures() {
    let md = binder();
    let checks = printed_checks(&md);
    let plan = lab_plan();
    let mut compared = 0;
    let mut kinds = [0usize; 3];
    let mut clean_superblock = false;
    for s in plan.phases.iter().flat_map(|p| &p.steps) {
        let Some(j) = judged(s) else { continue };
        let printed = checks
            .get(&s.number)
            .unwrap_or_else(|| panic!("step {} prints no checks", s.number));
        let cases: Vec<(String, Verdict, Output)> = match j {
            Judged::Command(script, expect, abort_if) => fixtures_for(script)
                .into_iter()
                .map(|(name, out)| {
                    let v = verdict::judge(&out, expect, abort_if);
                    (name, v, out)
                })
                .collect(),
            Judged::Http(e) => http_fixtures()
                .into_iter()
                .map(|(name, status, body)| {
                    let v = verdict::judge_http(status, &body, Some(e));
                    let out = Output {
                        exit: Some(0),
                        stdout: format!("{body}\n{status}\n"),
                        stderr: String::new(),
                        timed_out: false,
                    };
                    (name, v, out)
                })
                .collect(),
        };
        for (name, want, out) in cases {
            if name == "fsck/dumpe2fs_clean" {
                // The superblock check's pass path, on a real clean superblock.
                assert_eq!(want, Verdict::Pass, "step {}: {name}", s.number);
                clean_superblock = true;
            }
            let got = replay(s.number, printed, &out);
            assert!(
                same(&got, &want),
                "step {} `{}` on {name}: the binder's checks say {got:?}, recover says {want:?}\n{printed}",
                s.number,
                s.name
            );
            compared += 1;
            kinds[match want {
                Verdict::Pass => 0,
                Verdict::Fail(_) => 1,
                Verdict::Abort(_) => 2,
            }] += 1;
        }
    }
    eprintln!(
        "{compared} replays: {} pass, {} fail, {} abort",
        kinds[0], kinds[1], kinds[2]
    );
    assert!(compared >= 40, "only {compared} replays");
    assert!(clean_superblock, "no clean `dumpe2fs -h` replayed");
    assert!(
        kinds.iter().all(|&k| k > 0),
        "every verdict is exercised: {kinds:?}"
    );
}

/// Every printed `grep` of a pattern finds the same fixture lines as the runbook's Rust
/// regex does (grep reads line by line; `recover`'s `^` and `$` match at every line too).
#[test]
fn translated_patterns_match_the_same_fixture_lines() {
    let md = binder();
    let checks = printed_checks(&md);
    let plan = lab_plan();
    let mut lines: Vec<String> = Vec::new();
    for e in std::fs::read_dir(root().join("fixtures/lab")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "txt") {
            let t = std::fs::read_to_string(&p).unwrap_or_default();
            lines.extend(t.lines().map(str::to_owned));
        }
    }
    let (mut greps, mut matched) = (0, 0);
    for s in plan.phases.iter().flat_map(|p| &p.steps) {
        let Some(Judged::Command(_, expect, abort_if)) = judged(s) else {
            continue;
        };
        let out = format!(" s{}.out", s.number);
        // Folded lines joined back by the rule the binder prints.
        let joined = checks.get(&s.number).map(|c| recover::export::unfold(c));
        for line in joined.iter().flat_map(|c| c.lines()) {
            let re = if line.ends_with("&& echo ABORT") {
                abort_if.and_then(|m| m.stdout.as_ref())
            } else {
                expect.and_then(|m| m.stdout.as_ref())
            };
            let (Some(re), Some(at)) = (re, line.find(&out)) else {
                continue;
            };
            // The printed line, numbering the lines it finds (`-q` only silences it).
            let grep = line[..at]
                .replacen("grep -q ", "grep ", 1)
                .replacen("grep ", "grep -n ", 1);
            greps += 1;
            let found = run_grep(&grep, &lines);
            for (i, l) in lines.iter().enumerate() {
                let want = re.is_match(l);
                assert_eq!(
                    found.contains(&(i + 1)),
                    want,
                    "/{re}/ as `{grep}` on {l:?}"
                );
                matched += usize::from(want);
            }
        }
    }
    assert!(
        greps >= 5 && matched > 5,
        "{greps} greps, {matched} matching lines"
    );
}

/// The numbers of the lines `grep -n ...` finds in `lines`.
fn run_grep(grep: &str, lines: &[String]) -> Vec<usize> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lines"), lines.join("\n") + "\n").unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{grep} lines"))
        .current_dir(dir.path())
        .output()
        .expect("sh runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').next()?.parse().ok())
        .collect()
}

/// The printed "Wait until it is up:" loop of step `n`, exactly as printed.
fn printed_gate_loop(md: &str, n: usize) -> String {
    let section = md
        .split("\n### ")
        .find(|s| s.starts_with(&format!("{n}. ")))
        .unwrap_or_else(|| panic!("no step {n}"));
    let rest = section
        .split("\nWait until it is up:\n\n```sh\n")
        .nth(1)
        .unwrap_or_else(|| panic!("step {n} prints no gate loop"));
    rest.split("\n```")
        .next()
        .expect("a closed fence")
        .to_owned()
}

/// Runs a printed gate loop through `sh` with stand-ins for the login function and curl,
/// on a simulated clock: `sleep` moves it, `date` reads it, so a loop of minutes takes
/// milliseconds and stays bounded by its own deadline. Returns what it printed and the dir.
fn run_gate_loop(standins: &str, script: &str) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clock"), "1000000\n").unwrap();
    let prelude = r#"
sleep() { echo $(( $(cat clock) + $1 )) > clock; }
date() { cat clock; }
log() { echo "$1" >> calls; }
"#;
    let out = sh_bounded(dir.path(), &format!("{prelude}\n{standins}\n{script}"));
    assert!(out.status.code().is_some(), "the loop hangs");
    (String::from_utf8_lossy(&out.stdout).into_owned(), dir)
}

/// `script` through `sh` in `dir`, killed after 20 s (then it has no exit code).
fn sh_bounded(dir: &Path, script: &str) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).current_dir(dir);
    common::run_bounded(cmd, Duration::from_secs(20))
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// The step whose gate carries a remedy of this kind.
fn gate_with_remedy(plan: &Plan, kind: &str) -> (usize, recover::remedy::Policy) {
    plan.phases
        .iter()
        .flat_map(|p| &p.steps)
        .find_map(|s| match &s.action {
            Action::Start {
                health: Some(g), ..
            } => g
                .remedy
                .as_ref()
                .filter(|r| r.policy.action.name() == kind)
                .map(|r| (s.number, r.policy.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no gate with a `{kind}` remedy"))
}

/// tailscale's gate (`remedy: { run: tailscale up --reset, after: 3 }`), typed as printed:
/// the remedy runs once, after three failed probes while the unit is active, into its own
/// files; the loop goes on probing, passes, and the printed checks then pass on the probe's
/// output (the remedy never overwrote it).
#[test]
fn the_printed_gate_loop_applies_a_run_remedy_once_into_its_own_files() {
    let md = binder();
    let plan = lab_plan();
    let (n, policy) = gate_with_remedy(&plan, "run");
    let standins = r#"
spark() {
  case "$*" in
    "systemctl is-active "*) echo active ;;
    *"tailscale status"*) log probe
      if [ -e reset ]; then echo '{"BackendState": "Running", "HostName": "spark"}'
      else echo '{"BackendState": "NeedsLogin"}'; fi ;;
    *"tailscale up --reset"*) log remedy; touch reset; echo 'Success.' ;;
    *) echo "unexpected: $*" >&2; return 99 ;;
  esac
}
"#;
    let (printed, dir) = run_gate_loop(standins, &printed_gate_loop(&md, n));
    let d = dir.path();
    let after = policy.after as usize;
    let mut want = vec!["probe"; after];
    want.extend(["remedy", "probe"]);
    assert_eq!(read(d, "calls").lines().collect::<Vec<_>>(), want);
    assert_eq!(printed.matches("REMEDY APPLIED").count(), 1, "{printed}");
    assert!(!printed.contains("GAVE UP"), "{printed}");
    assert_eq!(read(d, &format!("s{n}.remedy.rc")).trim(), "exit 0");
    assert_eq!(read(d, &format!("s{n}.remedy.out")).trim(), "Success.");
    // The checks read the last probe's output, which the remedy left alone.
    let checks = printed_checks(&md);
    let out = Output {
        exit: Some(0),
        stdout: read(d, &format!("s{n}.out")),
        stderr: read(d, &format!("s{n}.err")),
        timed_out: false,
    };
    assert!(out.stdout.contains("Running"), "{}", out.stdout);
    assert_eq!(replay(n, &checks[&n], &out), Verdict::Pass);
}

/// vLLM's gate (`remedy: kill`), typed as printed: a quick refusal (curl exit 7, a model
/// still loading) resets the count, only probes with no answer in time (curl exit 28) count;
/// at `after` the typed start-limit check runs, then the kill, once; the loop goes on and
/// passes. With the start limit nearly used up, the kill is refused, said once, never sent,
/// and the loop gives up by itself at its deadline.
#[test]
fn the_printed_gate_loop_kills_only_a_hang_and_never_past_the_start_limit() {
    let md = binder();
    let plan = lab_plan();
    let (n, policy) = gate_with_remedy(&plan, "kill");
    let script = printed_gate_loop(&md, n);
    let standins = |restarts: u32| {
        format!(
            r#"
spark() {{
  case "$*" in
    "systemctl is-active "*) echo active ;;
    "systemctl show -p NRestarts -p StartLimitBurst -p Restart "*) log limit
      printf 'Restart=on-failure\nNRestarts={restarts}\nStartLimitBurst=3\n' ;;
    *"kill -s KILL"*) log kill; touch killed; echo 'killed 4242' ;;
    *) echo "unexpected: $*" >&2; return 99 ;;
  esac
}}
curl() {{
  t=$(( $(cat tries 2>/dev/null || echo 0) + 1 )); echo $t > tries
  if [ -e killed ]; then log answer; printf '{{"choices":[]}}\n200\n'; return 0; fi
  if [ $t -eq 1 ]; then log refused; echo 'curl: (7) Failed to connect' >&2; return 7; fi
  log hang; echo 'curl: (28) Operation timed out' >&2; return 28
}}
"#
        )
    };
    let after = policy.after as usize;

    let (printed, dir) = run_gate_loop(&standins(0), &script);
    let d = dir.path();
    let mut want = vec!["refused"];
    want.extend(vec!["hang"; after]);
    want.extend(["limit", "kill", "answer"]);
    assert_eq!(read(d, "calls").lines().collect::<Vec<_>>(), want);
    assert_eq!(printed.matches("REMEDY APPLIED").count(), 1, "{printed}");
    assert!(!printed.contains("GAVE UP"), "{printed}");
    assert_eq!(read(d, &format!("s{n}.remedy.out")).trim(), "killed 4242");
    assert_eq!(read(d, &format!("s{n}.rc")).trim(), "exit 0");

    // Two restarts already, burst 3: one more start would trip the limit.
    let (printed, dir) = run_gate_loop(&standins(2), &script);
    let calls = read(dir.path(), "calls");
    assert!(!calls.contains("kill"), "{calls}");
    assert_eq!(calls.matches("limit").count(), 1, "{calls}");
    assert_eq!(printed.matches("REMEDY REFUSED").count(), 1, "{printed}");
    assert!(!printed.contains("REMEDY APPLIED"), "{printed}");
    assert!(printed.contains("GAVE UP"), "{printed}");
    assert!(!dir.path().join(format!("s{n}.remedy.out")).exists());
}

/// A unit that reaches `failed` ends the printed loop at once, as it ends the engine's gate.
#[test]
fn the_printed_gate_loop_stops_when_the_unit_failed() {
    let md = binder();
    let plan = lab_plan();
    let (n, _) = gate_with_remedy(&plan, "kill");
    let standins = r#"
spark() { case "$*" in "systemctl is-active "*) log state; echo failed ;; *journalctl*) echo "Start request repeated too quickly."; echo "Failed with result 'start-limit-hit'." ;; *) return 99 ;; esac; }
curl() { log probe; return 7; }
"#;
    let (printed, dir) = run_gate_loop(standins, &printed_gate_loop(&md, n));
    assert_eq!(read(dir.path(), "calls").trim(), "state");
    assert!(printed.contains("UNIT FAILED"), "{printed}");
    // The journal is kept for the failure post, and the checks say one clear word, nothing
    // about files a probe never wrote.
    assert!(
        read(dir.path(), &format!("s{n}.out")).contains("start-limit-hit"),
        "no journal saved"
    );
    let checks = printed_checks(&md).remove(&n).expect("the gate's checks");
    let out = sh_bounded(dir.path(), &checks);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "FAIL\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "noise from the checks"
    );
}

/// A gate with `successes: 2` (the dispatcher's) ends only after two passes in a row; a
/// failure between them starts the count again.
#[test]
fn the_printed_gate_loop_needs_its_successes_in_a_row() {
    let md = binder();
    let plan = lab_plan();
    let n = plan
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .find(|s| matches!(&s.action, Action::Start { health: Some(g), .. } if g.successes == 2))
        .expect("a gate with successes: 2")
        .number;
    let standins = r#"
spark() { case "$*" in "systemctl is-active "*) echo active ;; *) return 99 ;; esac; }
curl() {
  t=$(( $(cat tries 2>/dev/null || echo 0) + 1 )); echo $t > tries
  if [ $t -eq 2 ]; then log fail; printf 'no\n503\n'; else log pass; printf 'ok\n200\n'; fi
}
"#;
    let (printed, dir) = run_gate_loop(standins, &printed_gate_loop(&md, n));
    assert_eq!(
        read(dir.path(), "calls").lines().collect::<Vec<_>>(),
        ["pass", "fail", "pass", "pass"]
    );
    assert!(!printed.contains("GAVE UP"), "{printed}");
}

/// The printed "Read the UPS" loop of step `n`, exactly as printed.
fn printed_ups_loop(md: &str, n: usize) -> String {
    let section = md
        .split("\n### ")
        .find(|s| s.starts_with(&format!("{n}. ")))
        .unwrap_or_else(|| panic!("no step {n}"));
    let at = section.find("Read the UPS").expect("a UPS box");
    let rest = &section[at..];
    let body = rest.split("```sh\n").nth(1).expect("a fenced box");
    body.split("\n```")
        .next()
        .expect("a closed fence")
        .to_owned()
}

fn ups_step(plan: &Plan) -> (usize, &recover::plan::UpsWait) {
    plan.phases
        .iter()
        .flat_map(|p| &p.steps)
        .find_map(|s| match &s.action {
            Action::Ups(w) => Some((s.number, w)),
            _ => None,
        })
        .expect("a ups step")
}

/// The UPS step typed as printed, against a real upsd (`dummy-ups`, `upsc`) on 127.0.0.1 and
/// the simulated clock: on line with enough charge, it ends after `stable_for` without giving
/// up; on battery, it gives up by itself at its deadline.
#[test]
fn the_printed_ups_loop_reads_a_real_upsd_and_is_bounded() {
    if common::require_tool(&["upsc"]).is_none() {
        return;
    }
    let plan = lab_plan();
    let (n, w) = ups_step(&plan);
    for (status, charge, stable) in [("OL CHRG", 100, true), ("OB DISCHRG", 40, false)] {
        let Some(upsd) = common::nut::Upsd::start(&w.ups.name, status, charge) else {
            return;
        };
        let state = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_recover"))
            .current_dir(root())
            .args(["export", RUNBOOK, "--format", "md", "--var"])
            .arg(format!("nut={}:{}", upsd.host(), upsd.port()))
            .env("XDG_STATE_HOME", state.path())
            .env("RECOVER_WEBHOOK", "http://127.0.0.1:9/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = printed_ups_loop(&String::from_utf8(out.stdout).unwrap(), n);
        assert!(
            script.contains(&format!("{}:{}", upsd.host(), upsd.port())),
            "{script}"
        );
        let (printed, dir) = run_gate_loop("", &script);
        assert!(
            printed.contains(&format!("status: {status}, charge: {charge}")),
            "{printed}"
        );
        let elapsed: u64 = read(dir.path(), "clock").trim().parse::<u64>().unwrap() - 1_000_000;
        if stable {
            assert!(!printed.contains("GAVE UP"), "{printed}");
            let need = w.want.stable_for.as_secs();
            assert!(
                (need..=need + 2 * w.every.as_secs()).contains(&elapsed),
                "ended after {elapsed}s on the simulated clock, stable_for {need}s"
            );
        } else {
            assert!(printed.contains("GAVE UP"), "{printed}");
            assert!(elapsed >= w.timeout.as_secs(), "{elapsed}s");
        }
    }
}

/// A flap back to battery starts the count again, as the engine's tracker does; too little
/// charge holds it back (stand-in `upsc` on the simulated clock, one answer a read).
#[test]
fn the_printed_ups_loop_restarts_the_count_on_a_flap() {
    let md = binder();
    let plan = lab_plan();
    let (n, w) = ups_step(&plan);
    let min = w
        .want
        .min_charge
        .expect("the reference runbook asks for a charge");
    // Reads every `every`: on line, a flap, then on line for good but charging from too low.
    let standins = format!(
        r#"
upsc() {{
  t=$(( $(cat reads 2>/dev/null || echo 0) + 1 )); echo $t > reads
  r=$(( (t + 1) / 2 ))
  case "$2" in
    ups.status) if [ $r -le 3 ] || [ $r -ge 5 ]; then echo 'OL CHRG'; else echo 'OB DISCHRG'; fi ;;
    battery.charge) if [ $r -le 6 ]; then echo {low}; else echo {min}; fi ;;
  esac
}}
"#,
        low = min as u32 - 1,
        min = min.ceil() as u32,
    );
    let (printed, dir) = run_gate_loop(&standins, &printed_ups_loop(&md, n));
    assert!(!printed.contains("GAVE UP"), "{printed}");
    let elapsed: u64 = read(dir.path(), "clock").trim().parse::<u64>().unwrap() - 1_000_000;
    // Good from the 7th read (enough charge, on line), at (7 - 1) x every; then stable_for.
    let every = w.every.as_secs();
    let want = 6 * every + w.want.stable_for.as_secs();
    assert!(
        (want..=want + every).contains(&elapsed),
        "ended after {elapsed}s, want about {want}s\n{printed}"
    );
}

/// The fenced `sh` boxes of `section`, in order.
fn fenced(section: &str) -> Vec<String> {
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("\n```").next().expect("a closed fence").to_owned())
        .collect()
}

/// The `N=...; NAME=...` line step `n` prints for the posts.
fn step_line(md: &str, n: usize) -> String {
    let section = md
        .split("\n### ")
        .find(|s| s.starts_with(&format!("{n}. ")))
        .unwrap_or_else(|| panic!("no step {n}"));
    let at = section
        .find(&format!("type `N={n}; NAME="))
        .unwrap_or_else(|| panic!("step {n} prints no line for the posts:\n{section}"));
    let rest = &section[at + "type `".len()..];
    rest[..rest.find('`').unwrap()].to_owned()
}

/// The posts of the first pages, typed as printed (blanks filled as the person fills them),
/// reach a real webhook listener once each, with the engine's wording and every blank filled:
/// the step, its reason, its last output lines (hostile bytes and all) and which units are
/// active.
#[test]
fn the_printed_failure_and_abort_posts_reach_the_channel_with_every_blank_filled() {
    let md = binder();
    let plan = lab_plan();
    let steps: Vec<&Step> = plan.phases.iter().flat_map(|p| &p.steps).collect();
    let gpu = steps.iter().find(|s| s.name == "GPU answers").unwrap();
    let dmesg = steps
        .iter()
        .find(|s| s.abort_if.is_some() && s.name.starts_with("Last kernel"))
        .unwrap();
    let units: Vec<&str> = steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Start { unit, .. } => Some(unit.as_str()),
            _ => None,
        })
        .collect();
    let (abort_section, rest) = md
        .split_once("## If a step still fails")
        .expect("a failure procedure");
    let abort_section = abort_section.split_once("## Abort procedure").unwrap().1;
    let failure_section = rest.split_once("When the cause is fixed").unwrap().0;
    let why = "no GPU: nvidia-smi says $none";
    let saved = "first\nGPU 0: a'b\"c$d\\e\u{1}f\n\nNo devices were found\n";
    let saved_err = "err: 99999999999999999999\n";
    // What `tail -n 5 | tr -c '[:print:]' ' ' | tr -d '"\\'` makes of the saved output.
    let both = format!("{saved}{saved_err}");
    let lines: Vec<&str> = both.lines().collect();
    let out: String = lines[lines.len().saturating_sub(5)..]
        .iter()
        .map(|l| format!("{l} "))
        .collect::<String>()
        .chars()
        .filter(|c| *c != '"' && *c != '\\')
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let title = &plan.title;
    // As the binder was made: `recover export runbooks/lab.yaml`.
    let source = RUNBOOK;
    let states: String = units
        .iter()
        .map(|u| {
            let state = if u.starts_with("vllm") {
                "failed"
            } else {
                "active"
            };
            format!("{u} {state}; ")
        })
        .collect();
    let procedure = plan.abort.message.trim();
    let first = match procedure.split_once("\n\n") {
        Some((p, _)) => format!("{}\n(the rest of the procedure: see the binder)", p.trim()),
        None => format!("{procedure}\n(see the binder)"),
    };
    // The engine's failure post's words (`engine::failure::compose`), with the blanks filled.
    let t = &plan.targets[0];
    let target = format!("{} ({})", t.name, t.destination());
    let budget = recover::plan::fmt_duration(plan.budget);
    let opening = |word: &str, s: &Step| {
        format!(
            "{word}: {title} stopped at step {} ({}) after 12m of the {budget} budget, on {target}.\nReason: {why}",
            s.number, s.name
        )
    };
    let closing = |s: &Step, resume: &str| {
        format!(
            "Last output of step {n}:\n> {out}\nUnits: {states}\n{resume}: recover run {source} --from {n}\n(run by hand, from the binder)",
            n = s.number
        )
    };
    let cases = [
        (
            failure_section,
            gpu,
            format!(
                "{}\n{}",
                opening("FAILED", gpu),
                closing(gpu, "Fix the cause, then continue from this step")
            ),
        ),
        (
            abort_section,
            dmesg,
            format!(
                "{}\nThe abort procedure is being followed:\n{first}\n{}",
                opening("ABORT", dmesg),
                closing(
                    dmesg,
                    "Once the abort procedure is done, to continue from this step"
                )
            ),
        ),
    ];
    for (section, step, want) in cases {
        let server = common::http::HttpServer::start();
        server.respond("POST", "/hook", 200, "ok");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(format!("s{}.out", step.number)), saved).unwrap();
        std::fs::write(d.join(format!("s{}.err", step.number)), saved_err).unwrap();
        let bin = d.join("bin");
        std::fs::create_dir(&bin).unwrap();
        let systemctl = bin.join("systemctl");
        std::fs::write(
            &systemctl,
            "#!/bin/sh\ncase \"$2\" in vllm*) echo failed ;; *) echo active ;; esac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The login function, standing in for ssh: the remote command runs here.
        let mut script = String::from("spark() { sh -c \"$1\"; }\n");
        let typed = fenced(section);
        assert!(typed.len() >= 2, "{typed:?}");
        for line in typed.iter().flat_map(|b| b.lines()) {
            script.push_str(&match line {
                "N=__; NAME='__'" => step_line(&md, step.number),
                "WHY='__'" => format!("WHY='{why}'"),
                "ELAPSED=__m" => "ELAPSED=12m".to_owned(),
                other => {
                    assert!(
                        !other.contains("__"),
                        "a blank the test does not fill: {other}"
                    );
                    other.to_owned()
                }
            });
            script.push('\n');
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&script)
            .current_dir(d)
            .env("RECOVER_WEBHOOK", server.url_for("/hook"))
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            );
        let ran = common::run_bounded(cmd, Duration::from_secs(30));
        let shown = String::from_utf8_lossy(&ran.stdout);
        assert!(
            shown.trim_end().ends_with("200"),
            "the post did not answer 200:\n{shown}{}\n{script}",
            String::from_utf8_lossy(&ran.stderr)
        );
        let got = server.requests_to("/hook");
        assert_eq!(got.len(), 1, "{script}");
        assert_eq!(
            got[0].json()["text"].as_str(),
            Some(want.as_str()),
            "{script}"
        );
    }
}

/// The printed verdict of the `previous_boot` step, typed as printed over each captured
/// evidence (the lab's four previous-boot fixtures, and hand-made ones for each sign, no
/// permission, a cut-short shutdown and garbage), says what `recover`'s own judgement says:
/// `CLEAN`, `UNCLEAN: <the sign>` or `UNKNOWN`, and `UNREADABLE` for a sign it could not read.
#[test]
fn the_printed_previous_boot_verdict_is_recovers_judgement() {
    use recover::previous_boot::{Points, State, judge};
    let md = binder();
    let plan = lab_plan();
    let n = plan
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .find(|s| matches!(s.action, Action::PreviousBoot { .. }))
        .expect("a previous_boot step")
        .number;
    let section = md
        .split("\n### ")
        .find(|s| s.starts_with(&format!("{n}. ")))
        .unwrap();
    let verdict = section
        .split("\nVerdict:\n\n```sh\n")
        .nth(1)
        .unwrap_or_else(|| panic!("step {n} prints no verdict:\n{section}"))
        .split("\n```")
        .next()
        .unwrap()
        .to_owned();
    let mut cases: Vec<(String, String)> = Vec::new();
    for name in [
        "after-shutdown",
        "after-powercut",
        "no-persistent-journal",
        "first-boot",
    ] {
        let path = root().join(format!("fixtures/lab/previous-boot-{name}.txt"));
        let text = std::fs::read_to_string(&path).unwrap();
        cases.push((
            format!("{name}, cut short"),
            text.replace("Journal stopped", "Journal flushed"),
        ));
        cases.push((format!("{name}, crlf"), text.replace('\n', "\r\n")));
        cases.push((name.to_owned(), text));
    }
    for (name, text) in [
        (
            "fs replayed",
            "@@ boots\n  0 abc Thu\n@@ boots exit 0\n@@ fsck_log\nspark-root: recovering journal\n@@ fsck_log exit 0\n@@ ext4\n2026-12-03T13:56:01+0000 spark-lab kernel: EXT4-fs (vda): 1 orphan inode deleted\n@@ ext4 exit 0\n",
        ),
        (
            "ext4 recovery",
            "@@ ext4\nkernel: EXT4-fs (vda): recovery complete\n@@ ext4 exit 0\n@@ fsck_log\ncat: /run/initramfs/fsck.log: Permission denied\n@@ fsck_log exit 1\n",
        ),
        (
            "no permission",
            "@@ boots\nHint: You are currently not seeing messages from other users and the system.\n@@ boots exit 0\n@@ shutdown\nNo journal files were opened due to insufficient permissions.\n@@ shutdown exit 1\n",
        ),
        ("empty", ""),
        (
            "garbage",
            "@@ \n@@ x exit\n@@ exit 1\n\u{1b}[31m@@ boots\n\0\n'\"$d\\e",
        ),
        (
            "twice",
            "@@ unclean\n@@ unclean exit 0\n@@ unclean\nsystemd-journald[1]: File x corrupted or uncleanly shut down, renaming\n@@ unclean exit 0\n",
        ),
    ] {
        cases.push((name.to_owned(), text.to_owned()));
    }
    let mut states = std::collections::BTreeSet::new();
    for (name, text) in &cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("s{n}.out")), text).unwrap();
        let out = sh_bounded(dir.path(), &verdict);
        assert!(out.status.success(), "{name}: {out:?}");
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = printed.lines().collect();
        let last = *lines.last().unwrap_or(&"");
        let v = judge(text);
        states.insert(v.state.as_str());
        let word = last.split(':').next().unwrap();
        assert_eq!(
            word,
            v.state.as_str().to_uppercase(),
            "{name}: printed {printed:?}, recover says {v:#?}"
        );
        if v.state == State::Clean {
            assert_eq!(last, "CLEAN", "{name}");
        }
        if v.state == State::Unclean {
            // The sign it names is the one recover's reason rests on.
            let sign = last.trim_start_matches("UNCLEAN: ").trim();
            let found = if v.reason.starts_with("journald found") {
                v.evidence
                    .iter()
                    .any(|e| e.source == "journald, this boot" && e.line == sign)
            } else if v.reason.starts_with("the root file system") {
                v.evidence.iter().any(|e| {
                    e.points == Points::Unclean
                        && e.line == sign
                        && !e.source.starts_with("journal")
                })
            } else if v.reason.contains("ends without a shutdown") {
                sign.contains("no shutdown in the journal of the previous boot")
            } else {
                v.reason.contains("during the shutdown") && sign.contains("journald never stopped")
            };
            assert!(
                found,
                "{name}: printed {last:?}, recover says {:?}",
                v.reason
            );
        }
        let fsck_unreadable = v
            .evidence
            .iter()
            .any(|e| e.line.contains("fsck.log without sudo"));
        assert_eq!(
            lines
                .iter()
                .any(|l| l.starts_with("UNREADABLE: /run/initramfs/fsck.log")),
            fsck_unreadable,
            "{name}: {printed}"
        );
        assert_eq!(
            lines.len(),
            1 + lines.iter().filter(|l| l.starts_with("UNREADABLE")).count(),
            "{name}: {printed}"
        );
    }
    assert_eq!(states.len(), 3, "every verdict is tried: {states:?}");
}
