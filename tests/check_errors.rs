//! `recover check` on broken runbooks: the real binary, one small runbook per fault under
//! `tests/runbooks/broken/`. Every case must exit 2, point at the exact line and column,
//! say what is wrong (and, where there is one, the fix), and end with "nothing was run".

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// One broken runbook: where the error must point, and what it must say.
struct Case {
    file: &'static str,
    line: usize,
    column: usize,
    message: &'static str,
    /// A fragment of the help line, when the fix is the point of the case.
    help: Option<&'static str>,
    /// Checked with `check --unattended`: an error only for a run nobody attends.
    unattended: bool,
}

const fn case(file: &'static str, line: usize, column: usize, message: &'static str) -> Case {
    Case {
        file,
        line,
        column,
        message,
        help: None,
        unattended: false,
    }
}

const fn with_help(
    file: &'static str,
    line: usize,
    column: usize,
    message: &'static str,
    help: &'static str,
) -> Case {
    Case {
        file,
        line,
        column,
        message,
        help: Some(help),
        unattended: false,
    }
}

/// A runbook that is valid for a person at a terminal but cannot run unattended: an error
/// under `check --unattended` (and `run --unattended`), fine under plain `check`.
const fn unattended(
    file: &'static str,
    line: usize,
    column: usize,
    message: &'static str,
    help: &'static str,
) -> Case {
    Case {
        unattended: true,
        ..with_help(file, line, column, message, help)
    }
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Unknown keys, at every level.
    with_help("unknown-top-level-key", 3, 1, "unknown key `colour` at the top level", "The top level takes: name, title, budget"),
    with_help("unknown-target-key", 5, 5, "unknown key `hostname` in a target", "did you mean `host`?"),
    with_help("unknown-channel-key", 7, 5, "unknown key `url` in a notify channel", "did you mean `webhook`?"),
    with_help("unknown-step-key", 10, 9, "unknown key `sudoo` in a step", "did you mean `sudo`?"),
    with_help("step-kind-typo", 9, 9, "unknown key `wait-ssh` in a step", "did you mean `wait_ssh`? Step kinds: manual, run"),
    with_help("unknown-http-key", 11, 11, "unknown key `header` in `http:`", "did you mean `headers`?"),
    with_help("unknown-health-key", 12, 11, "unknown key `interval` in a health gate", "did you mean `every`?"),
    with_help("unknown-retry-key", 10, 29, "unknown key `for` in `retry`", "`retry` takes: every, timeout"),
    with_help("unknown-expect-key", 10, 19, "unknown key `exit_code` in `expect`", "did you mean `exit`?"),
    with_help("drop-caches-with-settings", 9, 24, "unknown key `level`: `drop_caches` takes no settings", "write `drop_caches: {}`"),
    // Duplicate keys: the second one is the mistake; the first is named.
    with_help("duplicate-top-level-key", 5, 1, "duplicate key `budget` (first written on line 2)", "each key may appear once"),
    case("duplicate-step-key", 11, 9, "duplicate key `run` (first written on line 9)"),
    // Step kinds.
    with_help("two-kinds-in-one-step", 10, 9, "step 1 has two kinds, `run` and `local`", "split it into two steps"),
    with_help("step-without-kind", 9, 9, "step 1 (`Last kernel messages`) has no kind", "give it exactly one of: manual, run, local"),
    // Durations, wherever they are written.
    with_help("duration-without-unit", 2, 9, "`30` has no unit", "write 30s, 30m or 30h"),
    with_help("duration-garbage-in-budget", 2, 9, "`half an hour` is not a duration", "like 15s, 5m, 1h30m or 90d"),
    case("duration-garbage-in-step-timeout", 10, 18, "`soon` is not a duration"),
    with_help("duration-without-unit-in-every", 9, 28, "`15` has no unit", "write 15s, 15m or 15h"),
    case("duration-garbage-in-window", 7, 13, "window `0m-5x`: `5x` is not a duration: `x` is not a unit"),
    with_help("window-without-dash", 7, 13, "`5m` is not a window", "write START-END on the timeline, like 0m-5m"),
    // Regular expressions, checked where they are written.
    with_help("bad-regex-in-expect", 10, 27, r#"`"BackendState": ("Running"` is not a valid regular expression: unclosed group"#, "put a backslash before it"),
    case("bad-regex-in-abort-if", 11, 19, "`EXT4-fs error|[I/O error` is not a valid regular expression: unclosed character class"),
    case("bad-regex-in-http-expect-body", 11, 40, "`*choices` is not a valid regular expression"),
    // Names that must exist.
    with_help("unknown-notify-channel-in-step", 11, 17, "unknown notify channel `operator`", "channels defined under `notify:`: operators"),
    with_help("unknown-notify-channel-in-abort", 8, 11, "unknown notify channel `oncall`", "channels defined under `notify:`: operators"),
    with_help("unknown-target", 10, 17, "unknown target `sparky`", "targets defined under `targets:`: spark"),
    // Templates: pointed at the name itself, inside the value.
    with_help("undefined-var", 11, 26, "`vars.apj` is not defined: vars has `api`", "define it under `vars:`"),
    with_help("unknown-template-name", 9, 49, "`secrets.token` is not defined", "env.X (the environment, kept secret)"),
    with_help("var-used-before-defined", 6, 12, "var `api` reads `vars.host`, which is defined below it", "move `host` above `api`"),
    with_help("unquoted-template", 11, 16, "`start` must be text, not a mapping", "put the template in quotes"),
    with_help("run-elapsed-outside-message", 9, 30, "`run.elapsed` is only known while the run is going", "only notify and abort messages"),
    with_help("template-syntax-error", 11, 22, "template syntax error: unexpected `}`", "check the braces"),
    // The timeline.
    with_help("reversed-window", 7, 13, "window 5m-0m ends before it starts", "START before END"),
    with_help("overlapping-windows", 11, 13, "window 4m-10m overlaps the previous phase `Boot`, which ends at 5m", "start this window at or after"),
    with_help("window-past-budget", 11, 13, "window 5m-45m runs past the budget of 30m", "raise `budget:`"),
    // Keys on the wrong kind of step.
    with_help("health-on-non-start-step", 10, 9, "`health` does not apply to a `run` step", "move the gate under a `start` step"),
    with_help("expect-on-http-step", 10, 19, "unknown key `status` in `expect`", "HTTP expectations go inside `http:`"),
    with_help("expect-beside-http-probe", 12, 11, "`expect` beside an http probe: put it inside `http:`", "expect: { status: 200"),
    with_help("sudo-on-http-step", 10, 9, "`sudo` does not apply to an `http` step", "sudo applies to run, start, drop_caches and previous_boot"),
    with_help("on-fail-on-notify-step", 13, 9, "`on_fail` does not apply to a notify step", "remove `on_fail`"),
    with_help("mutates-false-on-start", 10, 9, "a `start` step always changes state; `mutates: false` cannot change that", "remove `mutates`"),
    with_help("pass-on-run-step", 10, 9, "`pass` does not apply to a `run` step (it applies to: manual)", "`pass` says when a manual step is done"),
    with_help("when-without-previous-boot", 10, 15, "`when: unclean_shutdown` needs an earlier `previous_boot` step", "add `- previous_boot: { on_unclean: warn }` before this step"),
    with_help("wait-ssh-with-step-timeout", 10, 9, "a wait_ssh step takes its timeout inside", "move `timeout` into the wait_ssh mapping"),
    // HTTP.
    with_help("http-json-and-body", 12, 17, "an http step has both `json` and `body`", "keep one"),
    with_help("http-two-timeouts", 10, 9, "this http step has two timeouts", "keep one of them"),
    with_help("non-http-url", 9, 22, "`spark.local:8000/v1/models` is not an http:// or https:// URL", "write the full URL"),
    with_help("bad-http-method", 9, 65, "`FETCH` is not an HTTP method", "use GET, HEAD, POST"),
    // Gates and retries.
    with_help("gate-with-http-and-run", 12, 11, "this health gate has two probes, `http:` and `run:`", "keep one probe"),
    with_help("health-gate-without-probe", 10, 9, "this health gate has no probe", "probe the real work"),
    with_help("retry-every-longer-than-timeout", 10, 9, "retry every 2m but give up after 1m", "`every` must be shorter than `timeout`"),
    case("wait-ssh-every-longer-than-timeout", 9, 9, "wait_ssh tries every 10m but gives up after 5m"),
    // Wrong types and values.
    with_help("port-as-string", 6, 11, "`twenty-two` is not a port number", "`port: 22`"),
    with_help("name-as-list", 1, 7, "`name` must be text, not a list", "write a single value"),
    with_help("steps-not-a-list", 9, 7, "`steps` must be a list, not a mapping", "each starting with `- `"),
    with_help("exit-code-not-a-number", 10, 25, "`zero` is not an exit code", "`exit: 0` or `exit: [0, 1]`"),
    with_help("exit-code-out-of-range", 10, 29, "256 is not an exit code", "it runs from 0 to 255"),
    with_help("status-code-not-a-number", 11, 35, "`ok` is not an HTTP status", "`status: 200` or `status: [200, 204]`"),
    with_help("sudo-not-a-boolean", 10, 15, "`please` is not true or false", "write `true` or `false`"),
    case("successes-not-a-number", 12, 22, "`two` is not a whole number"),
    with_help("unknown-format", 8, 13, "`teams` is not one of: slack, discord, ntfy, json", "use one of"),
    case("unknown-on-fail", 10, 18, "`ignore` is not one of: stop, abort, continue"),
    with_help("name-with-spaces", 1, 7, "runbook name `spark power` must be a single word", "put prose in `title:`"),
    // Empty or missing parts.
    with_help("empty-value", 5, 9, "`host` has no value", "write the value after the colon"),
    with_help("step-as-a-word", 9, 9, "each item of `steps` must be a mapping (`key: value`), not `drop_caches`", "like `- drop_caches: {}`"),
    with_help("two-documents", 11, 1, "a second YAML document starts here", "remove the `---` line"),
    with_help("empty-phases", 5, 9, "no phases: nothing to run", "add at least one phase"),
    with_help("empty-steps", 8, 12, "phase `Boot` has no steps", "add steps, or remove the phase"),
    with_help("missing-budget", 1, 1, "missing key `budget`", "add `budget: 30m`"),
    with_help("missing-window", 6, 5, "missing key `window`", "like `window: 0m-5m`"),
    with_help("missing-host", 5, 5, "missing key `host`", "an ssh destination"),
    with_help("notify-without-message", 11, 17, "a notify step needs a `message`", "add `message:"),
    with_help("empty-file", 1, 1, "the runbook is empty", "start from runbooks/spark-power.yaml"),
    // YAML syntax.
    with_help("yaml-bad-indentation", 6, 4, "YAML syntax error: while parsing a block mapping, did not find expected key", "check the indentation"),
    with_help("yaml-unclosed-quote", 9, 14, "unclosed quote: this value has no closing quote", "close the quote"),
    with_help("tab-indentation", 4, 2, "YAML syntax error: tabs disallowed", "indent with spaces"),
    with_help("colon-in-unquoted-value", 9, 36, "YAML syntax error: mapping values are not allowed in this context", "must be quoted"),
    // Values that cannot work, or would be read as something else (issue 10).
    with_help("zero-step-timeout", 10, 18, "a timeout of 0s leaves the step no time", "like `timeout: 30s`"),
    with_help("negative-step-timeout", 10, 18, "`-5s` is a negative duration", "like 15s, 5m"),
    with_help("huge-step-timeout", 10, 18, "`1000000000h` is too long a duration: the longest is 365d", "like 15s, 5m"),
    with_help("zero-http-timeout", 9, 68, "an HTTP timeout of 0s leaves the request no time", "like `timeout: 30s`"),
    with_help("gate-every-zero", 12, 18, "a health gate that probes every 0s never pauses between probes", "like `every: 10s`"),
    with_help("gate-timeout-zero", 12, 20, "a health gate that waits 0s can never see the unit healthy", "like `timeout: 8m`"),
    with_help("successes-zero", 12, 11, "a health gate needs at least one success", "set `successes: 1` or more"),
    with_help("successes-negative", 12, 22, "`-1` is not a whole number", "write digits only"),
    with_help("header-value-with-line-break", 12, 28, "the value of header `Authorization` holds a carriage return (CR): it would end the header and start another", "write the value on one line"),
    with_help("header-value-block-scalar", 13, 15, "the value of header `Authorization` holds a line break (LF)", "a YAML block value (`|` or `>`) keeps its line breaks"),
    with_help("header-value-with-control-character", 11, 31, "the value of header `X-Token` holds the control character U+0007", "remove it"),
    with_help("header-name-with-space", 11, 22, "`X Token` is not an HTTP header name: it holds a space", "(RFC 9110)"),
    with_help("unit-path-traversal", 9, 16, "`../../etc/passwd` is not a systemd unit name: `/` is not allowed in a unit name", "systemd.unit(5)"),
    with_help("unit-with-space", 9, 16, "`vllm.service caddy.service` is not a systemd unit name: it holds a space", "split it into several `start` steps"),
    with_help("unit-with-newline", 9, 16, "`vllm.service\\nreboot` is not a systemd unit name: it holds a line break (LF)", "systemd.unit(5)"),
    with_help("unit-without-suffix", 9, 16, "`vllm` has no unit type suffix", "like `vllm.service`"),
    with_help("unit-unknown-suffix", 9, 16, "`vllm.daemon` does not end in a unit type: `.daemon` is not one", "the suffixes are .service, .socket"),
    with_help("unit-template-without-instance", 9, 16, "`getty@.service` is a template: it cannot be started without an instance", "like `getty@tty1.service`"),
    with_help("unit-too-long", 9, 16, "is not a systemd unit name: it is 258 bytes long, and systemd allows 255", "systemd.unit(5)"),
    with_help("url-with-space", 9, 22, "the URL `http://spark.local:8000/v1/chat completions` holds a space", "percent-encode"),
    with_help("webhook-url-with-space", 6, 25, "the URL `https://hooks.example/a b` holds a space", "percent-encode"),
    with_help("command-with-nul", 9, 14, "this command holds a NUL byte", "remove it"),
    with_help("host-starting-with-dash", 5, 17, "the host `-oProxyCommand=touch /tmp/owned` starts with `-`: ssh would read it as an option", "write an ssh destination"),
    with_help("identity-with-newline", 7, 15, "the file name in `identity` holds a line break (LF)", "write the path on one line"),
    // Rendered values are checked by the same rules, at the place of the template.
    with_help("unit-from-a-var", 11, 16, "`../../etc/passwd` is not a systemd unit name: `/` is not allowed in a unit name", "systemd.unit(5)"),
    with_help("header-from-a-var-with-line-break", 13, 37, "the value of header `Authorization` holds a line break (LF): it would end the header and start another", "write the value on one line"),
    // The bytes of the file: UTF-8 only, said where it is not; a BOM and CRLF line ends are fine.
    with_help("not-utf8", 9, 20, "the runbook is not valid UTF-8: the byte 0xE9 at byte offset 135 is not UTF-8", "save the file as UTF-8"),
    case("bom-then-error", 10, 18, "`soon` is not a duration"),
    case("crlf-then-error", 11, 18, "`soon` is not a duration"),
    // Columns count characters, whatever multi-byte text comes before.
    case("unicode-before-error", 11, 18, "`5 minutes et demie` is not a duration"),
    case("unicode-on-the-error-line", 10, 61, "`5 minutes et demie` is not a duration"),
    // The power steps.
    with_help("ups-bad-name", 9, 22, "`my ups` is not a NUT UPS name", "`upsc -l HOST` lists them"),
    with_help("ups-min-charge-out-of-range", 9, 74, "min_charge 150 is not a percentage", "from 0 to 100"),
    with_help("ups-unknown-key", 9, 46, "unknown key `stable` in `ups:`", "`ups:` takes: name, host, port, stable_for"),
    with_help("ups-stable-for-beyond-timeout", 9, 9, "ups waits for 30m on line but gives up after 10m", "make `timeout` longer than `stable_for`"),
    case("power-on-bad-mac", 9, 26, "`aa:bb:cc:dd:ee` is not a MAC address: write six hex pairs, as aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff"),
    with_help("power-on-wol-and-ipmi", 9, 53, "`power_on` takes `wol` or `ipmi`, not both", "a second way to power on is a second step"),
    with_help("power-on-ipmi-without-password", 9, 27, "`power_on: { ipmi: ... }` needs a `password`", "never its command line"),
    with_help("wait-ssh-otherwise-unknown-channel", 13, 65, "unknown notify channel `oncall`", "channels defined under `notify:`: operators"),
    with_help("power-on-user-with-wol", 9, 53, "`user` belongs to `ipmi`, not to `wol`", "Wake-on-LAN takes `wol`, `address` and `port`"),
    // Unattended runs (issue 12): the key, and what `--unattended` refuses.
    with_help("unattended-on-run-step", 10, 9, "`unattended` does not apply to a `run` step: only a manual step waits for a person", "remove `unattended`"),
    with_help("unattended-unknown-value", 10, 21, "`later` is not one of: skip, abort", "use one of: skip, abort"),
    unattended("unattended-manual-without-key", 11, 9, "step 2 (`read the UPS panel`) is a manual step without `unattended:`: an unattended run has nobody to ask", "add `unattended: skip` (go on; the journal and the abort channel say nobody confirmed it) or `unattended: abort` (stop the run here)"),
    unattended("unattended-otherwise-without-channel", 12, 22, "this `otherwise:` ask has no channel to be posted to, and an unattended run has nobody at a terminal: nobody would be asked", "add `notify: CHANNEL` to `otherwise:`"),
];

fn runbooks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runbooks")
}

/// `recover` in `dir`, with the clean environment and empty state of `common::recover`.
fn recover(dir: &Path) -> Command {
    let mut cmd = common::recover();
    cmd.current_dir(dir);
    cmd
}

#[test]
fn every_broken_runbook_is_an_error_at_its_place_and_nothing_runs() {
    let dir = runbooks().join("broken");
    let mut failures = Vec::new();
    for c in CASES {
        let file = format!("{}.yaml", c.file);
        let mut cmd = recover(&dir);
        cmd.arg("check");
        if c.unattended {
            cmd.arg("--unattended");
        }
        let out = cmd.arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let place = format!("{file}:{}:{}", c.line, c.column);
        let mut wrong = Vec::new();
        if out.status.code() != Some(2) {
            wrong.push(format!("exit {:?}, not 2", out.status.code()));
        }
        let first = stderr.lines().next().unwrap_or("");
        let expected_first = format!("error: {place}: ");
        if !first.starts_with(&expected_first) {
            wrong.push(format!("first line does not start with `{expected_first}`"));
        }
        if !first.contains(c.message) {
            wrong.push(format!("first line lacks the message `{}`", c.message));
        }
        if let Some(h) = c.help
            && !stderr.contains(h)
        {
            wrong.push(format!("no help containing `{h}`"));
        }
        if !stderr.trim_end().ends_with("nothing was run.") {
            wrong.push("stderr does not end with `nothing was run.`".into());
        }
        if !out.stdout.is_empty() {
            wrong.push("something was printed on stdout".into());
        }
        if !wrong.is_empty() {
            failures.push(format!("{file}: {}\n{stderr}", wrong.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases are wrong:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_and_the_corpus_hold_the_same_runbooks() {
    let mut on_disk: Vec<String> = std::fs::read_dir(runbooks().join("broken"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".yaml").map(str::to_owned))
        .collect();
    on_disk.sort();
    let mut in_table: Vec<String> = CASES.iter().map(|c| c.file.to_owned()).collect();
    in_table.sort();
    assert_eq!(on_disk, in_table);
    assert!(CASES.len() >= 35, "the corpus shrank to {}", CASES.len());
}

#[test]
fn three_independent_mistakes_are_reported_together_in_source_order() {
    let out = recover(&runbooks())
        .args(["check", "three-errors.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(
        errors,
        [
            "error: three-errors.yaml:14:13: window 4m-10m overlaps the previous phase `Boot`, which ends at 5m",
            "error: three-errors.yaml:17:17: unknown target `sparky`",
            "error: three-errors.yaml:21:26: `vars.apj` is not defined: vars has `api`",
        ],
        "{stderr}"
    );
    assert!(
        stderr
            .trim_end()
            .ends_with("three-errors.yaml: 3 errors in the runbook; nothing was run."),
        "{stderr}"
    );
}

#[test]
fn an_unknown_target_override_is_refused_by_name() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = recover(root)
        .args([
            "run",
            "--dry-run",
            "--target",
            "nope=1.2.3.4",
            "runbooks/spark-power.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the runbook has no target `nope`; its targets: spark"),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with("nothing was run."), "{stderr}");
    assert!(out.stdout.is_empty(), "a plan was printed");
}

#[test]
fn a_missing_file_is_a_clear_usage_error() {
    let out = recover(&runbooks())
        .args(["check", "no-such-runbook.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: cannot read runbook no-such-runbook.yaml: no such file"),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with("nothing was run."), "{stderr}");
}

#[test]
fn a_directory_is_not_a_runbook() {
    let out = recover(&runbooks()).args(["check", "."]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("it is a directory"), "{stderr}");
}

#[test]
fn an_unset_env_url_is_left_for_the_run_and_a_set_one_is_never_shown() {
    let out = recover(&runbooks())
        .env_remove("RECOVER_API")
        .args(["check", "env-url.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let out = recover(&runbooks())
        .env("RECOVER_API", "spark-secret:8000")
        .args(["check", "env-url.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "error: env-url.yaml:10:22: `***/v1/models` is not an http:// or https:// URL"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("spark-secret"),
        "the env value leaked:\n{stderr}"
    );
}

/// What a plan says, without the line naming the file and its hash.
fn plan_of(dir: &Path, file: &str) -> String {
    let out = recover(dir)
        .env("RECOVER_WEBHOOK", "https://hooks.example/x")
        .args(["run", "--dry-run", file])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| !l.trim_start().starts_with("runbook "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn crlf_line_ends_and_a_byte_order_mark_are_accepted_and_plan_the_same_commands() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("runbooks/spark-power.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lf.yaml"), &text).unwrap();
    std::fs::write(dir.path().join("crlf.yaml"), text.replace('\n', "\r\n")).unwrap();
    std::fs::write(dir.path().join("bom.yaml"), format!("\u{feff}{text}")).unwrap();
    for file in ["crlf.yaml", "bom.yaml"] {
        let out = recover(dir.path()).args(["check", file]).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lf = plan_of(dir.path(), "lf.yaml");
    assert!(lf.contains("systemctl start --no-block"), "{lf}");
    assert!(!plan_of(dir.path(), "crlf.yaml").contains('\r'));
    assert_eq!(plan_of(dir.path(), "crlf.yaml"), lf);
    assert_eq!(plan_of(dir.path(), "bom.yaml"), lf);
}

#[test]
fn a_runbook_cut_inside_a_character_is_refused_by_run_too() {
    let dir = tempfile::tempdir().unwrap();
    // `é` is two bytes: the file ends after the first.
    let text = "name: mini\nbudget: 30m\ntitle: R\u{e9}";
    std::fs::write(
        dir.path().join("cut.yaml"),
        &text.as_bytes()[..text.len() - 1],
    )
    .unwrap();
    let out = recover(dir.path())
        .args(["run", "--dry-run", "cut.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: cut.yaml:3:9: the runbook is not valid UTF-8: the file ends at byte offset 31 in the middle of a character (0xC3)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn what_cannot_run_unattended_is_refused_by_run_too_and_passes_for_a_person() {
    let dir = runbooks().join("broken");
    let state = tempfile::tempdir().unwrap();
    for c in CASES.iter().filter(|c| c.unattended) {
        let file = format!("{}.yaml", c.file);
        // `run --unattended`: the same error at the same place, before anything is contacted
        // (the target, spark.local, is never resolved) and before a journal is opened.
        let out = common::recover_in(state.path())
            .current_dir(&dir)
            .args(["run", "--unattended", "--started-by", "the test", &file])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        let first = stderr.lines().next().unwrap_or("");
        assert_eq!(
            first,
            format!("error: {file}:{}:{}: {}", c.line, c.column, c.message),
            "{stderr}"
        );
        assert!(stderr.trim_end().ends_with("nothing was run."), "{stderr}");
        assert!(common::journals_in(state.path()).is_empty(), "{file}");
        // For a person at a terminal, the same runbook is fine.
        let out = recover(&dir).args(["check", &file]).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn unattended_and_yes_cannot_be_given_together() {
    let out = recover(&runbooks())
        .args(["run", "--unattended", "--yes", "three-errors.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'--unattended' cannot be used with '--yes'")
            || stderr.contains("'--yes' cannot be used with '--unattended'"),
        "{stderr}"
    );
}

#[test]
fn the_bundled_runbooks_can_run_unattended() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for runbook in ["runbooks/spark-power.yaml", "runbooks/lab.yaml"] {
        let out = recover(root)
            .args(["check", "--unattended", runbook])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{runbook}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
