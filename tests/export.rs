//! `recover export`: the binder copy, through the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{recover_in, require_tool, run_bounded, text};

use recover::plan::{self, Action, BOOT_ID_COMMAND, Options, Plan, Probe};
use recover::template::shell_quote;

const RUNBOOK: &str = "runbooks/spark-power.yaml";
/// 2024-06-01 12:00:00 UTC.
const EPOCH: &str = "1717243200";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `recover export` with a fixed clock, home and state directory, and no secrets set
/// unless given in `env`.
fn export(runbook: &str, format: &str, state: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = recover_in(state);
    cmd.current_dir(root())
        .args(["export", runbook, "--format", format])
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("HOME", "/home/operator")
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the recover binary runs")
}

fn export_ok(runbook: &str, format: &str, state: &Path, env: &[(&str, &str)]) -> String {
    let out = export(runbook, format, state, env);
    assert!(
        out.status.success(),
        "export {format} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the export is UTF-8")
}

/// The Plan the binary resolves, with the same home directory.
fn spark_plan() -> Plan {
    let loaded = recover::runbook::load(&root().join(RUNBOOK)).expect("valid");
    plan::resolve(&loaded, &Options::default()).expect("resolves")
}

/// Undo the HTML escaping the export does, and drop the spans that keep words whole.
fn unescape(html: &str) -> String {
    html.replace("<span class=\"w\">", "")
        .replace("</span>", "")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn no_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn markdown_snapshot() {
    let state = tempfile::tempdir().unwrap();
    let md = export_ok(RUNBOOK, "md", state.path(), &[]);
    insta::assert_snapshot!("spark_power_md", md);
}

#[test]
fn html_snapshot() {
    let state = tempfile::tempdir().unwrap();
    let html = export_ok(RUNBOOK, "html", state.path(), &[]);
    insta::assert_snapshot!("spark_power_html", html);
}

/// What a person must find in the binder for each step, taken from the Plan.
fn plan_items(plan: &Plan) -> Vec<(usize, String)> {
    let mut items = Vec::new();
    for s in plan.phases.iter().flat_map(|p| &p.steps) {
        let mut add = |x: String| items.push((s.number, x));
        add(s.name.clone());
        match &s.action {
            Action::Manual { text, .. } => add(squash(text)),
            Action::Run(c) | Action::DropCaches(c) | Action::PreviousBoot { command: c, .. } => {
                // As typed after the login function: one argument, so a script with single
                // quotes is quoted again (`'\''`).
                add(if c.script.contains('\'') && !c.sudo {
                    shell_quote(&c.script)
                } else {
                    c.script.clone()
                });
                add(shell_quote(&c.wire));
            }
            Action::Local(c) => add(c.script.clone()),
            Action::WaitSsh { .. } => add(BOOT_ID_COMMAND.to_owned()),
            Action::Start {
                unit,
                start,
                health,
                ..
            } => {
                add(unit.clone());
                add(start.script.clone());
                add(shell_quote(&start.wire));
                add(format!("systemctl is-active {unit}"));
                match health.as_ref().map(|g| &g.probe) {
                    Some(Probe::Http(r)) => {
                        // The query is printed decoded, in the curl line's `--data-urlencode`.
                        add(r.url.split('?').next().unwrap_or(&r.url).to_owned());
                        add(r.curl());
                    }
                    Some(Probe::Run { command, .. }) => {
                        add(command.script.clone());
                        add(shell_quote(&command.wire));
                    }
                    None => {}
                }
            }
            Action::Http(r) => {
                // The query is printed decoded, in the curl line's `--data-urlencode`.
                add(r.url.split('?').next().unwrap_or(&r.url).to_owned());
                add(r.curl());
            }
            // `{{ run.elapsed }}` is what the person fills in as `$ELAPSED`.
            Action::Notify { message, .. } => add(message.replace("{{ run.elapsed }}", "$ELAPSED")),
            Action::Ups(w) => {
                let at = format!("{}@{}:{}", w.ups.name, w.ups.host, w.ups.port);
                add(format!("upsc {at} \"$1\""));
                add(format!("GET VAR {} %s", w.ups.name));
                add(format!("nc -w 5 {} {}", w.ups.host, w.ups.port));
            }
            Action::PowerOn(p) => p.by_hand().into_iter().for_each(&mut add),
        }
    }
    items
}

#[test]
fn every_step_command_is_in_both_exports() {
    let state = tempfile::tempdir().unwrap();
    let md = export_ok(RUNBOOK, "md", state.path(), &[]);
    let html = unescape(&export_ok(RUNBOOK, "html", state.path(), &[]));
    let plan = spark_plan();
    let items = plan_items(&plan);
    assert!(items.len() > 60, "{} items", items.len());
    for (n, item) in &items {
        // The Markdown escapes prose (not code); compare prose with its escapes removed.
        let md_plain = md.replace('\\', "");
        let item_plain = item.replace('\\', "");
        assert!(
            md.contains(item.as_str()) || squash(&md_plain).contains(&squash(&item_plain)),
            "step {n}: `{item}` is not in the Markdown export"
        );
        assert!(
            html.contains(item.as_str()) || squash(&html).contains(&squash(item)),
            "step {n}: `{item}` is not in the HTML export"
        );
    }
    for s in plan.phases.iter().flat_map(|p| &p.steps) {
        assert!(
            md.contains(&format!("- [ ] **Step {} done**, time ______", s.number)),
            "no checkbox for step {}",
            s.number
        );
    }
    let first = plan.abort.message.lines().next().unwrap();
    assert!(md.contains(first) && html.contains(first));
}

#[test]
fn secrets_are_shown_as_variables_never_as_values() {
    let state = tempfile::tempdir().unwrap();
    let secret = "https://hooks.slack.com/services/T0ZZ/B0ZZ/sekrit-XYZ-4242";
    for format in ["md", "html"] {
        let doc = export_ok(
            RUNBOOK,
            format,
            state.path(),
            &[("RECOVER_WEBHOOK", secret)],
        );
        assert!(!doc.contains(secret), "{format}: the webhook URL leaked");
        assert!(
            !doc.contains("sekrit"),
            "{format}: part of the webhook URL leaked"
        );
        assert!(
            !doc.contains("T0ZZ"),
            "{format}: part of the webhook URL leaked"
        );
        assert!(
            doc.contains("$RECOVER_WEBHOOK"),
            "{format}: no $RECOVER_WEBHOOK"
        );
        let doc = unescape(&doc);
        assert!(
            doc.contains("-w '\\n%{http_code}\\n' \"$RECOVER_WEBHOOK\""),
            "{format}: the status post does not read the variable"
        );
    }
}

#[test]
fn secrets_inside_commands_stay_typable() {
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("secret.yaml");
    std::fs::write(
        &rb,
        r#"name: secret-demo
budget: 10m
targets:
  box: { host: box.local, user: ops }
notify:
  ops: { webhook: "https://ntfy.example/{{ env.NTFY_TOPIC }}", format: ntfy }
phases:
  - name: only
    window: 0m-10m
    steps:
      - name: call the API
        http:
          url: https://api.example/v1
          headers: { Authorization: "Bearer {{ env.API_TOKEN }}" }
          expect: { status: 200 }
      - name: use it on the box
        run: "curl -H 'X-Key: {{ env.API_TOKEN }}' http://127.0.0.1/"
      - notify: ops
        message: done
"#,
    )
    .unwrap();
    let token = "tok&en<42>x";
    let leaks = [
        token,
        "tok&amp;en",
        "en<42>",
        "en&lt;42",
        "42>x",
        "topic-secret",
        "777",
    ];
    let topic = "topic-secret-777";
    let rb = rb.to_str().unwrap();
    for format in ["md", "html"] {
        let doc = export_ok(
            rb,
            format,
            dir.path(),
            &[("API_TOKEN", token), ("NTFY_TOPIC", topic)],
        );
        for leak in leaks {
            assert!(!doc.contains(leak), "{format}: `{leak}` leaked");
        }
        let doc = unescape(&doc);
        assert!(
            doc.contains(r#"-H 'Authorization: Bearer '"$API_TOKEN" "#),
            "{format}: header does not read $API_TOKEN"
        );
        assert!(
            doc.contains(r#" https://ntfy.example/"$NTFY_TOPIC""#),
            "{format}: webhook does not read $NTFY_TOPIC"
        );
        assert!(
            doc.contains("--data-raw done"),
            "{format}: ntfy posts the message as plain text"
        );
    }
}

#[test]
fn the_last_rehearsal_is_read_and_a_broken_record_tolerated() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("recover/rehearsals");
    std::fs::create_dir_all(&dir).unwrap();
    let plan = spark_plan();
    std::fs::write(
        dir.join("spark-power.json"),
        format!(
            r#"{{"date": "2024-05-20T09:15:00Z", "sha256": "{}", "result": "passed"}}"#,
            plan.sha256
        ),
    )
    .unwrap();
    let md = export_ok(RUNBOOK, "md", state.path(), &[]);
    assert!(
        md.contains("- **Last rehearsal:** 2024-05-20 09:15 UTC, passed (rehearse every 90d)"),
        "{md}"
    );
    std::fs::write(dir.join("spark-power.json"), "{not json").unwrap();
    let md = export_ok(RUNBOOK, "md", state.path(), &[]);
    assert!(md.contains("**never rehearsed (the record "), "{md}");
}

#[test]
fn the_binder_says_how_long_a_drilled_restart_and_reload_took() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("recover/drills");
    std::fs::create_dir_all(&dir).unwrap();
    // As `recover drill` records it (src/drill/record.rs): one entry per drilled unit.
    std::fs::write(
        dir.join("spark-power.json"),
        r#"{"units": {
            "vllm-qwen36.service": {"date": "2024-05-29T08:00:00Z", "sha256": "x", "passed": true,
              "restarted_after": 6.2, "healthy_after": 20.4, "n_restarts_before": 0, "n_restarts_after": 1},
            "caddy.service": {"date": "2024-05-31T08:00:00Z", "sha256": "x", "passed": false,
              "restarted_after": null, "healthy_after": null, "reason": "not restarted"}}}"#,
    )
    .unwrap();
    for format in ["md", "html"] {
        let doc = export_ok(RUNBOOK, format, state.path(), &[]);
        let doc = if format == "html" {
            unescape(&doc)
        } else {
            doc
        };
        assert!(
            doc.contains("When drilled on 2024-05-29 (3 days before this copy), systemd restarted it 6.2s after a SIGKILL and its health probe passed again after 20.4s (the reload)."),
            "{format}: {doc}"
        );
        assert!(
            doc.contains("When drilled on 2024-05-31 (1 day before this copy), systemd did NOT restart it after a SIGKILL."),
            "{format}"
        );
        assert_eq!(
            doc.matches("When drilled on").count(),
            2,
            "{format}: only the drilled units"
        );
    }
    // A record that cannot be read: the binder is written, without drill lines.
    std::fs::write(dir.join("spark-power.json"), "{not json").unwrap();
    assert!(!export_ok(RUNBOOK, "md", state.path(), &[]).contains("When drilled"));
}

#[test]
fn markdown_has_no_raw_html_and_balanced_fences() {
    let state = tempfile::tempdir().unwrap();
    let md = export_ok(RUNBOOK, "md", state.path(), &[]);
    let mut fence: Option<String> = None;
    for line in md.lines() {
        let ticks: String = line.chars().take_while(|&c| c == '`').collect();
        match &fence {
            Some(f) if line.trim_end() == f => fence = None,
            Some(_) => {}
            None if ticks.len() >= 3 => fence = Some(ticks),
            None => {
                let outside_code: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
                let raw_tag = outside_code
                    .match_indices('<')
                    .any(|(i, _)| i == 0 || !outside_code[..i].ends_with('\\'));
                assert!(!raw_tag, "raw HTML in the Markdown: {line}");
            }
        }
    }
    assert!(fence.is_none(), "a code fence is not closed");
}

#[test]
fn html_is_self_contained() {
    let state = tempfile::tempdir().unwrap();
    let html = export_ok(RUNBOOK, "html", state.path(), &[]);
    let lower = html.to_ascii_lowercase();
    for forbidden in [
        "src=", "href=", "url(", "@import", "<script", "<link", "<img", "<iframe",
    ] {
        assert!(
            !lower.contains(forbidden),
            "the HTML fetches something: {forbidden}"
        );
    }
    assert!(lower.contains("@page"));
    assert!(lower.contains("@media print"));
    assert!(lower.contains("break-inside: avoid"));
    assert!(lower.contains("white-space: pre-wrap"));
    assert!(lower.contains("overflow-wrap: anywhere"));
}

#[test]
fn output_goes_to_the_file_given() {
    let state = tempfile::tempdir().unwrap();
    let out = state.path().join("binder.html");
    let status = recover_in(state.path())
        .current_dir(root())
        .args(["export", RUNBOOK, "--format", "html", "-o"])
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .unwrap();
    assert!(status.status.success());
    assert!(status.stdout.is_empty());
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
}

#[test]
fn a_bad_source_date_epoch_is_a_usage_error() {
    let state = tempfile::tempdir().unwrap();
    let out = export(
        RUNBOOK,
        "md",
        state.path(),
        &[("SOURCE_DATE_EPOCH", "yesterday")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SOURCE_DATE_EPOCH"));
}

/// Runs `cmd` (killed if it outlives `limit`); panics with its output unless it succeeds.
fn run_ok(what: &str, cmd: Command, limit: Duration) {
    let out = run_bounded(cmd, limit);
    assert!(
        out.status.success(),
        "{what} failed ({}, limit {limit:?}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Every command box of the HTML, as printed by Chromium on A4 and on Letter, is on the
/// pages in full: nothing cut at the margin, nothing lost between pages.
#[test]
fn printed_pages_carry_every_command() {
    let Some(chromium) = require_tool(&["chromium", "chromium-browser", "google-chrome"]) else {
        return;
    };
    let Some(pdftotext) = require_tool(&["pdftotext"]) else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let html = export_ok(RUNBOOK, "html", state.path(), &[]);

    // Every <pre> box, and the plan's own commands.
    let mut expected: Vec<String> = html
        .split("<pre class=\"cmd")
        .skip(1)
        .map(|rest| {
            let body = &rest[rest.find('>').unwrap() + 1..];
            unescape(&body[..body.find("</pre>").unwrap()])
        })
        .collect();
    assert!(expected.len() > 40, "{} command boxes", expected.len());
    let plan = spark_plan();
    expected.extend(plan_items(&plan).into_iter().map(|(_, item)| item));

    for size in ["A4", "Letter"] {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("binder.html");
        std::fs::write(
            &page,
            html.replacen("</style>", &format!("@page {{ size: {size}; }}</style>"), 1),
        )
        .unwrap();
        let pdf = dir.path().join("binder.pdf");
        let profile = dir.path().join("profile");
        let mut cmd = Command::new(&chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--no-pdf-header-footer",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", page.display()));
        run_ok(
            "chromium printing the binder",
            cmd,
            Duration::from_secs(120),
        );

        let txt = dir.path().join("binder.txt");
        let mut cmd = Command::new(&pdftotext);
        // -raw: in reading order, and without joining a line that ends in `-` to the next.
        cmd.arg("-raw").arg(&pdf).arg(&txt);
        run_ok("pdftotext reading the PDF", cmd, Duration::from_secs(60));
        let text = std::fs::read_to_string(&txt).unwrap();
        let pages = text.matches('\u{c}').count();
        assert!(
            (6..=32).contains(&pages),
            "{size}: {pages} pages is not a binder"
        );
        let flat = no_whitespace(&text);
        for item in &expected {
            assert!(
                flat.contains(&no_whitespace(item)),
                "{size}: not on the printed pages: {item}"
            );
        }
        assert!(
            flat.contains("ABORTPROCEDURE"),
            "{size}: no abort procedure"
        );
        assert!(
            flat.contains(&format!("page1of{pages}")),
            "{size}: no page numbers"
        );
    }
}

#[test]
fn status_posts_use_each_channel_format() {
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("formats.yaml");
    let mut yaml =
        String::from("name: formats\nbudget: 5m\ntargets:\n  box: { host: box.local }\nnotify:\n");
    for f in ["slack", "discord", "ntfy", "json"] {
        yaml.push_str(&format!(
            "  {f}: {{ webhook: \"https://hooks.example/{f}\", format: {f} }}\n"
        ));
    }
    yaml.push_str("phases:\n  - name: only\n    window: 0m-5m\n    steps:\n");
    for f in ["slack", "discord", "ntfy", "json"] {
        yaml.push_str(&format!(
            "      - notify: {f}\n        message: \"it's back\"\n"
        ));
    }
    std::fs::write(&rb, yaml).unwrap();
    let md = export_ok(rb.to_str().unwrap(), "md", dir.path(), &[]);
    for expected in [
        r#"-H 'Content-Type: application/json' --data-raw '{"text":"it'\''s back"}' -w '\n%{http_code}\n' https://hooks.example/slack"#,
        r#"-H 'Content-Type: application/json' --data-raw '{"content":"it'\''s back"}' -w '\n%{http_code}\n' https://hooks.example/discord"#,
        r#"-H 'Content-Type: text/plain; charset=utf-8' --data-raw 'it'\''s back' -w '\n%{http_code}\n' https://hooks.example/ntfy"#,
        r#"-H 'Content-Type: application/json' --data-raw '{"message":"it'\''s back","runbook":"formats","source":"recover"}' -w '\n%{http_code}\n' https://hooks.example/json"#,
    ] {
        assert!(md.contains(expected), "missing: {expected}\n{md}");
    }
}

#[test]
fn var_and_target_overrides_reach_the_binder() {
    let state = tempfile::tempdir().unwrap();
    let out = recover_in(state.path())
        .current_dir(root())
        .args(["export", RUNBOOK, "--format", "md"])
        .args([
            "--target",
            "spark=10.9.8.7",
            "--var",
            "vllm=http://10.9.8.7:8000",
        ])
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .unwrap();
    assert!(out.status.success());
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.contains("ops@10.9.8.7 'sudo -n /usr/bin/timeout"));
    assert!(md.contains("http://10.9.8.7:8000/v1/chat/completions"));
    assert!(!md.contains("ops@spark.local"));
}

/// After a real run, the binder prints beside each step's allowance how long it took then
/// ("usually 0.2s (the run of YYYY-MM-DD)"), read from the run's journal in the state
/// directory.
#[test]
fn each_step_shows_how_long_it_took_in_the_last_run() {
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("timed.yaml");
    std::fs::write(
        &rb,
        "name: timed\nbudget: 10m\ntargets:\n  box: { host: box.local }\nphases:\n  - name: Here\n    window: 0m-10m\n    steps:\n      - name: quick\n        local: \"true\"\n      - name: slower\n        local: sleep 1.2\n",
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let md = export_ok(rb.to_str().unwrap(), "md", state.path(), &[]);
    assert!(!md.contains("usually"), "no run yet:\n{md}");
    let ran = recover_in(state.path())
        .args(["run", rb.to_str().unwrap(), "--yes"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let md = export_ok(rb.to_str().unwrap(), "md", state.path(), &[]);
    let about = |name: &str| {
        md.split(&format!(". {name}\n"))
            .nth(1)
            .and_then(|rest| rest.lines().find(|l| l.starts_with('*')))
            .unwrap_or_else(|| panic!("no step {name}:\n{md}"))
            .to_owned()
    };
    let slower = about("slower");
    let re = regex::Regex::new(r"usually (\d+)\.(\d)s \(the run of \d{4}-\d{2}-\d{2}\)").unwrap();
    let c = re.captures(&slower).unwrap_or_else(|| panic!("{slower}"));
    let took: f64 = format!("{}.{}", &c[1], &c[2]).parse().unwrap();
    assert!((1.2..10.0).contains(&took), "{slower}");
    assert!(re.is_match(&about("quick")), "{}", about("quick"));
}

/// A manual step's `pass:` is its good result in the binder and "done when" in the dry run.
#[test]
fn a_manual_step_says_when_it_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("manual.yaml");
    std::fs::write(
        &rb,
        "name: manual\nbudget: 10m\ntargets:\n  box: { host: box.local }\nphases:\n  - name: Power\n    window: 0m-10m\n    steps:\n      - manual: Press the power button once.\n        pass: the front LED is steady white\n      - manual: Look at the panel.\n",
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let md = export_ok(rb.to_str().unwrap(), "md", state.path(), &[]);
    assert!(
        md.contains("**Good result:** the front LED is steady white. Write down"),
        "{md}"
    );
    // Without `pass:`, the text itself is the condition.
    assert!(md.contains("**Good result:** everything the text above asks for is so."));
    let dry = recover_in(state.path())
        .args(["run", "--dry-run", rb.to_str().unwrap()])
        .output()
        .unwrap();
    let dry = text(&dry.stdout);
    assert!(
        dry.lines()
            .any(|l| l.trim() == "done when the front LED is steady white"),
        "{dry}"
    );
}
