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
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(checks)
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sh runs");
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "step {n}: the checks hang"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let printed = child.wait_with_output().unwrap();
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
    if key == "fsck-n-" {
        for name in [
            "clean",
            "corrupt",
            "journal",
            "unflagged",
            "unflagged_forced",
        ] {
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
        for line in checks.get(&s.number).into_iter().flat_map(|c| c.lines()) {
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
