//! The lab replay: the Markdown binder of `runbooks/lab.yaml` (aimed at the running lab),
//! followed as a person would after a real power cut. Every command box of every step is run
//! exactly as printed through `sh`, in a scratch HOME, with the login function of the first
//! page defined; then the step's printed checks. Each check must give the verdict recover's
//! own verdict functions give on the same saved output, and the lab must be recovered at the
//! end (every unit active, the public endpoint answering).
//!
//! Skips visibly with `RECOVER_SKIP_LAB=1` or without qemu. Uses `RECOVER_LAB_DIR` and the
//! `LAB_*_PORT` variables as `tests/lab/lab` does, and leaves the lab down.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{require_tool, run_bounded, say, text};
use recover::plan::{self, Action, Options, Plan, Probe, Step};
use recover::verdict::{self, Output, Verdict};
use serde_json::{Value, json};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/lab");
const RUNBOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/lab.yaml");

fn lab(args: &[&str], limit: Duration) -> String {
    let mut cmd = Command::new(LAB);
    cmd.args(args).stdin(Stdio::null());
    let out = run_bounded(cmd, limit);
    assert!(
        out.status.success(),
        "`lab {}` failed:\n{}{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

struct Down;
impl Drop for Down {
    fn drop(&mut self) {
        let mut cmd = Command::new(LAB);
        cmd.arg("down").stdin(Stdio::null());
        let _ = run_bounded(cmd, Duration::from_secs(60));
    }
}

/// `runbooks/lab.yaml` aimed at the running lab (`lab env`).
fn retargeted(env: &BTreeMap<String, String>) -> Value {
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("lab env: no {k}"))
    };
    let src = std::fs::read_to_string(RUNBOOK).unwrap();
    let mut rb: Value = serde_saphyr::from_str(&src).unwrap();
    // lab.yaml is an overlay: the copy written elsewhere extends the reference runbook by an
    // absolute path.
    if let Some(base) = rb["extends"].as_str() {
        let abs = Path::new(RUNBOOK)
            .parent()
            .expect("runbooks/")
            .join(base)
            .canonicalize()
            .expect("the base runbook");
        rb["extends"] = json!(abs.to_str().expect("a UTF-8 path"));
    }
    rb["targets"] = json!({ "spark": {
        "host": get("LAB_SSH_HOST"), "user": get("LAB_SSH_USER"),
        "port": get("LAB_SSH_PORT").parse::<u16>().unwrap(),
        "identity": get("LAB_IDENTITY"), "known_hosts": get("LAB_KNOWN_HOSTS"),
    }});
    for (k, v) in [
        ("vllm", get("LAB_VLLM_URL")),
        ("sglang", get("LAB_SGLANG_URL")),
        ("dispatcher", get("LAB_DISPATCHER_URL")),
        ("node_exporter", get("LAB_NODE_EXPORTER_URL")),
        ("proxy", get("LAB_CADDY_URL")),
        ("prometheus", get("LAB_PROMETHEUS_URL")),
        (
            "public_mcp",
            format!("{}/mcp/health", get("LAB_PUBLIC_URL")),
        ),
    ] {
        rb["vars"][k] = json!(v);
    }
    rb
}

/// A step's boxes as printed: the lines to type (in order) and the check lines.
#[derive(Default, Debug)]
struct Printed {
    typed: Vec<String>,
    checks: Option<String>,
    /// The `previous_boot` step's verdict, typed after its command.
    verdict: Option<String>,
    /// Typed only when the boxes above printed `GAVE UP` (a wait's second chance).
    if_gave_up: Vec<String>,
    /// `when: unclean_shutdown`: typed only unless this earlier step found a clean shutdown.
    unless_clean: Option<usize>,
}

/// Each fenced box with the paragraph before it (empty for a box right after another).
fn boxes(section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = section;
    while let Some(at) = rest.find("```sh\n") {
        let before = rest[..at]
            .trim_end()
            .rsplit("\n\n")
            .next()
            .unwrap_or("")
            .to_owned();
        let body_start = at + "```sh\n".len();
        let end = rest[body_start..].find("\n```").expect("a closed fence") + body_start;
        out.push((before, rest[body_start..end].to_owned()));
        rest = &rest[end + 4..];
    }
    out
}

/// What a box is for, from the paragraph before it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    /// Typed, unconditionally, in order.
    Typed,
    /// The step's checks, typed after the boxes above.
    Check,
    /// The `previous_boot` verdict, typed after the boxes above.
    Verdict,
    /// "Only if it printed `UNCLEAN` ...": the post of an unclean shutdown, to a channel the
    /// replay does not have; not typed.
    IfUnclean,
    /// The exact line `recover` sends: reference only, never typed.
    SmallPrint,
    /// "Only if step N did not find a clean shutdown ...": the whole step is typed only then.
    UnlessClean(usize),
    /// "Only if the wait above printed `GAVE UP` ...": typed only then.
    IfGaveUp,
}

/// The paragraphs the binder puts before a box a person types as a matter of course. Anything
/// else (a box that is typed only on a condition: a remedy, "if it gave up") must not be run
/// blindly: [`classify`] fails loudly on it, so a new kind of box gets a rule here first.
const TYPED: &[&str] = &[
    "Run:",
    "Wait until it is up:",
    "Start `",
    "Send the ",
    "Post to ",
    "Find out whether the box shut down cleanly",
    "Flush to disk, then drop the page cache",
    "Wait for ",
    "Read the UPS",
];

fn classify(step: usize, before: &str, previous: Option<Class>) -> Class {
    if before.starts_with("*Small print") {
        Class::SmallPrint
    } else if before == "Check:" {
        Class::Check
    } else if before == "Verdict:" {
        Class::Verdict
    } else if before.starts_with("Only if it printed `UNCLEAN`")
        || (before.is_empty() && previous == Some(Class::IfUnclean))
    {
        Class::IfUnclean
    } else if TYPED.iter().any(|t| before.starts_with(t)) {
        Class::Typed
    } else if before.starts_with("Only if the wait above printed `GAVE UP`") {
        Class::IfGaveUp
    } else if let Some(rest) = before.strip_prefix("Only if step ")
        && rest.contains("did not find a clean shutdown")
    {
        let n = rest
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("step {step}: which step? {before:?}"));
        Class::UnlessClean(n)
    } else if before.is_empty() && matches!(previous, Some(Class::Typed | Class::UnlessClean(_))) {
        // A second line of the same instruction (`ELAPSED=...`, then the post).
        Class::Typed
    } else {
        panic!(
            "step {step}: a box this replay cannot classify (is it conditional?), after {before:?}"
        )
    }
}

fn printed(md: &str) -> (String, BTreeMap<usize, Printed>) {
    let (front, _) = md.split_once("\n## Phase 1").expect("phases");
    // The login function(s) of the first page: the box after "Define its login once".
    let login = boxes(front)
        .into_iter()
        .filter(|(before, _)| before.contains("Define its login once"))
        .map(|(_, b)| b)
        .collect::<Vec<_>>()
        .join("\n");
    let mut steps = BTreeMap::new();
    for section in md.split("\n### ").skip(1) {
        let Some(n) = section
            .split('.')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let mut p = Printed::default();
        let mut previous = None;
        for (before, body) in boxes(section) {
            let class = classify(n, &before, previous);
            match class {
                Class::SmallPrint | Class::IfUnclean => {}
                Class::Verdict => {
                    assert!(p.verdict.is_none(), "step {n}: two Verdict boxes");
                    p.verdict = Some(body);
                }
                Class::Check => {
                    assert!(p.checks.is_none(), "step {n}: two Check boxes");
                    p.checks = Some(body);
                }
                Class::Typed => p.typed.push(body),
                Class::IfGaveUp => p.if_gave_up.push(body),
                Class::UnlessClean(of) => {
                    p.unless_clean = Some(of);
                    p.typed.push(body);
                }
            }
            previous = Some(class);
        }
        steps.insert(n, p);
    }
    (login, steps)
}

/// `script` through `sh` in `home`, at most `limit`; its stdout.
fn sh(home: &Path, script: &str, limit: Duration) -> String {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(home)
        .env("HOME", home)
        .env("RECOVER_WEBHOOK", "http://127.0.0.1:9/")
        .stdin(Stdio::null());
    let out = run_bounded(cmd, limit);
    text(&out.stdout)
}

fn said(out: &str) -> Verdict {
    let has = |w: &str| out.lines().any(|l| l.trim() == w);
    if has("ABORT") {
        Verdict::Abort(out.into())
    } else if has("FAIL") {
        Verdict::Fail(out.into())
    } else {
        Verdict::Pass
    }
}

/// recover's verdict on the output the person's commands saved for step `s`.
fn recovers_verdict(s: &Step, dir: &Path) -> Option<Verdict> {
    let read = |ext: &str| std::fs::read_to_string(dir.join(format!("s{}.{ext}", s.number)));
    let stdout = read("out").ok()?;
    let exit = read("rc")
        .ok()
        .and_then(|r| r.trim().strip_prefix("exit ")?.parse().ok());
    let out = Output {
        exit,
        stdout: stdout.clone(),
        stderr: read("err").unwrap_or_default(),
        timed_out: false,
    };
    let http = |e| {
        let body = stdout.trim_end_matches('\n');
        let (body, status) = body.rsplit_once('\n').unwrap_or(("", body));
        verdict::judge_http(status.trim().parse().unwrap_or(0), body, Some(e))
    };
    match &s.action {
        Action::Run(_) | Action::DropCaches(_) => {
            Some(verdict::judge(&out, s.expect.as_ref(), s.abort_if.as_ref()))
        }
        Action::Http(r) => Some(http(&r.expect)),
        Action::Start { health, .. } => match health.as_ref().map(|g| &g.probe) {
            Some(Probe::Run { expect, .. }) => Some(verdict::judge(&out, expect.as_ref(), None)),
            Some(Probe::Http(r)) => Some(http(&r.expect)),
            None => None,
        },
        _ => None,
    }
}

#[test]
fn the_binder_recovers_the_lab_after_a_real_power_cut() {
    if std::env::var_os("RECOVER_SKIP_LAB").is_some_and(|v| v == "1") {
        say("SKIPPED: the lab binder replay (tests/lab_binder.rs): RECOVER_SKIP_LAB=1");
        return;
    }
    if require_tool(&["qemu-system-x86_64"]).is_none() {
        return;
    }
    lab(&["build"], Duration::from_secs(20 * 60));
    let _down = Down;
    lab(&["up"], Duration::from_secs(300));
    let env: BTreeMap<String, String> = lab(&["env"], Duration::from_secs(20))
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches(['"', '\'']).to_owned()))
        .collect();

    let work = tempfile::tempdir().unwrap();
    let rb_path = work.path().join("lab.yaml");
    std::fs::write(&rb_path, serde_json::to_string(&retargeted(&env)).unwrap()).unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = common::recover_in(state.path())
        .args(["export", rb_path.to_str().unwrap(), "--format", "md"])
        .env("RECOVER_WEBHOOK", "http://127.0.0.1:9/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = text(&out.stdout);
    let loaded = recover::runbook::load(&rb_path).unwrap();
    let plan: Plan = plan::resolve(&loaded, &Options::default()).unwrap();
    let (login, steps) = printed(&md);
    assert!(login.contains("() { ssh "), "no login function:\n{login}");

    // The mains go, and come back: the box boots by itself when AC returns (the Spark's
    // "After Power Loss Behavior: Auto Boot"), and the person starts at step 1.
    lab(&["powercut"], Duration::from_secs(60));
    let mut booted = false;
    if !md.contains("power button") || !has_manual_power_button(&plan) {
        lab(&["boot", "--no-wait"], Duration::from_secs(60));
        booted = true;
    }
    let home = tempfile::tempdir().unwrap();
    let scratch = "mkdir -p ~/recovery && cd ~/recovery";
    assert!(md.contains(scratch));
    let dir = home.path().join("recovery");
    let mut judged = 0;
    for s in plan.phases.iter().flat_map(|p| &p.steps) {
        let p = steps
            .get(&s.number)
            .unwrap_or_else(|| panic!("step {} missing", s.number));
        if let Action::Manual { text: t, .. } = &s.action {
            if t.contains("power button") && !booted {
                lab(&["boot", "--no-wait"], Duration::from_secs(60));
                booted = true;
            }
            continue;
        }
        if let Some(of) = p.unless_clean {
            // The person reads step `of`'s saved evidence as the binder says; recover's own
            // verdict on the same output decides here, and must agree with the Plan.
            assert_eq!(s.when_unclean, Some(of), "step {}", s.number);
            let evidence = std::fs::read_to_string(dir.join(format!("s{of}.out")))
                .unwrap_or_else(|e| panic!("step {of} saved no evidence: {e}"));
            let v = recover::previous_boot::judge(&evidence);
            // After a real power cut, the previous boot is unclean: the step runs.
            assert_eq!(
                v.state,
                recover::previous_boot::State::Unclean,
                "step {of} after a power cut: {v:?}"
            );
        }
        let limit = s.timeout + Duration::from_secs(120);
        let typed = p.typed.join("\n");
        let mut shown = sh(home.path(), &format!("{login}\n{scratch}\n{typed}"), limit);
        if shown.lines().any(|l| l.trim() == "GAVE UP") && !p.if_gave_up.is_empty() {
            // The second chance the binder gives (the person pressed the power button).
            let again = p.if_gave_up.join("\n");
            shown = sh(home.path(), &format!("{login}\n{scratch}\n{again}"), limit);
        }
        if let Some(verdict) = &p.verdict {
            // The printed verdict over the evidence the person saved: after a real power cut,
            // UNCLEAN, as recover's own judgement of the same output says.
            let said = sh(home.path(), &format!("{scratch}\n{verdict}"), limit);
            let evidence = std::fs::read_to_string(dir.join(format!("s{}.out", s.number)))
                .unwrap_or_else(|e| panic!("step {} saved no evidence: {e}", s.number));
            let v = recover::previous_boot::judge(&evidence);
            let last = said.lines().last().unwrap_or("");
            assert!(
                last.starts_with(&v.state.as_str().to_uppercase()),
                "step {}: the printed verdict says {said:?}, recover says {v:?}",
                s.number
            );
            assert!(
                last.starts_with("UNCLEAN: "),
                "step {} after a power cut: {said}",
                s.number
            );
            assert!(!said.contains("UNREADABLE"), "step {}: {said}", s.number);
            judged += 1;
        }
        let Some(checks) = &p.checks else {
            if matches!(s.action, Action::WaitSsh { .. }) {
                assert!(!shown.contains("GAVE UP"), "step {}: {shown}", s.number);
            }
            continue;
        };
        let got = said(&sh(home.path(), &format!("{scratch}\n{checks}"), limit));
        let want =
            recovers_verdict(s, &dir).unwrap_or_else(|| panic!("step {}: nothing saved", s.number));
        assert_eq!(
            std::mem::discriminant(&got),
            std::mem::discriminant(&want),
            "step {} `{}`: the printed checks say {got:?}, recover says {want:?}\n{typed}\n{checks}",
            s.number,
            s.name
        );
        assert_eq!(
            got,
            Verdict::Pass,
            "step {} after a clean power cut: {got:?}",
            s.number
        );
        judged += 1;
    }
    assert!(judged >= 12, "only {judged} steps judged");
    // Recovered: every unit the binder started is active, and the public endpoint answers.
    let units: Vec<&str> = plan
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .filter_map(|s| match &s.action {
            Action::Start { unit, .. } => Some(unit.as_str()),
            _ => None,
        })
        .collect();
    let active = lab(
        &["ssh", &format!("systemctl is-active {}", units.join(" "))],
        Duration::from_secs(60),
    );
    assert_eq!(
        active.lines().filter(|l| *l == "active").count(),
        units.len(),
        "{active}"
    );
    let public = plan
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .find_map(|s| match &s.action {
            Action::Http(r) if s.name.contains("from outside") => Some(r.url.clone()),
            _ => None,
        })
        .expect("a step checks the public endpoint from outside");
    let answered = sh(
        home.path(),
        &format!("curl -sS -m 10 -o /dev/null -w '%{{http_code}}' '{public}'"),
        Duration::from_secs(30),
    );
    assert_eq!(answered.trim(), "200", "the public endpoint {public}");
}

/// Whether the runbook asks a person for the power button as a step of its own (the box does
/// not boot by itself), rather than only when the wait for SSH runs out (`otherwise:`).
fn has_manual_power_button(plan: &Plan) -> bool {
    plan.phases
        .iter()
        .flat_map(|p| &p.steps)
        .any(|s| matches!(&s.action, Action::Manual { text, .. } if text.contains("power button")))
}
