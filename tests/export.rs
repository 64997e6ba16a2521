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

/// The export with its folded command lines joined back by the rule the binder prints (HTML:
/// unescaped first).
fn export_ok(runbook: &str, format: &str, state: &Path, env: &[(&str, &str)]) -> String {
    let raw = export_raw(runbook, format, state, env);
    if format == "html" {
        recover::export::unfold(&unescape(&raw))
    } else {
        recover::export::unfold(&raw)
    }
}

/// The export as written.
fn export_raw(runbook: &str, format: &str, state: &Path, env: &[(&str, &str)]) -> String {
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
    let md = export_raw(RUNBOOK, "md", state.path(), &[]);
    insta::assert_snapshot!("spark_power_md", md);
}

#[test]
fn html_snapshot() {
    let state = tempfile::tempdir().unwrap();
    let html = export_raw(RUNBOOK, "html", state.path(), &[]);
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
                add(if c.script.contains('\'') && c.sudo {
                    // Quoted for `sudo sh -c`, then as the login function's argument.
                    shell_quote(&format!("sudo sh -c {}", shell_quote(&c.script)))
                } else if c.script.contains('\'') {
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
            // `{{ run.elapsed }}` and `{{ run.events }}`: what the person fills in.
            Action::Notify { message, .. } => add(message
                .replace("{{ run.elapsed }}", "$ELAPSED")
                .replace("{{ run.events }}", "$EVENTS")),
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
        // The last post, with what happened on the way.
        assert!(
            doc.contains("--data-raw 'done\nOn the way: '\"$EVENTS\"''"),
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
    let html = export_raw(RUNBOOK, "html", state.path(), &[]);

    // Every <pre> box, and the plan's own commands.
    let mut expected: Vec<String> = html
        .split("<pre class=\"cmd")
        .skip(1)
        .map(|rest| {
            let body = &rest[rest.find('>').unwrap() + 1..];
            recover::export::unfold(&unescape(&body[..body.find("</pre>").unwrap()]))
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
            (6..=40).contains(&pages),
            "{size}: {pages} pages is not a binder"
        );
        let flat = no_whitespace(&recover::export::unfold(&text));
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
        // The last post, with what happened on the way.
        r#"-H 'Content-Type: application/json' --data-raw '{"message":"it'\''s back\nOn the way: '"$EVENTS"'","runbook":"formats","source":"recover"}' -w '\n%{http_code}\n' https://hooks.example/json"#,
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

/// Every line of every command box fits the printed page, in both bundled runbooks and in a
/// runbook with long, hostile values: a line on the paper is a line to type (issue 22).
#[test]
fn every_typed_line_fits_the_page() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("long.yaml");
    std::fs::write(
        &rb,
        format!(
            "name: long\nbudget: 5m\ntargets:\n  box: {{ host: box.local }}\nnotify:\n  ops: {{ webhook: \"https://hooks.example/{}\", format: slack }}\nabort:\n  notify: ops\n  message: \"{}\"\nphases:\n  - name: only\n    window: 0m-5m\n    steps:\n      - name: long\n        run: \"printf '%s' 'a'\\\\''b\\\"c$d\\\\e {}' && echo {}\"\n        expect: {{ stdout: '{}' }}\n",
            "x".repeat(150),
            "It's off. ".repeat(20),
            "word ".repeat(40),
            "y".repeat(200),
            "z".repeat(120),
        ),
    )
    .unwrap();
    for runbook in [RUNBOOK, "runbooks/lab.yaml", rb.to_str().unwrap()] {
        let md = export_raw(runbook, "md", state.path(), &[]);
        let mut inside = false;
        let mut lines = 0;
        for line in md.lines() {
            if line.starts_with("```") {
                inside = !inside;
                continue;
            }
            if inside {
                lines += 1;
                assert!(
                    line.chars().count() <= recover::export::FOLD_WIDTH,
                    "{runbook}: a typed line wider than the page ({} columns):\n{line}",
                    line.chars().count()
                );
            }
        }
        assert!(lines > 10, "{runbook}: {lines} lines in command boxes");
        assert!(
            md.contains(recover::export::FOLD_RULE),
            "{runbook}: no rule"
        );
    }
}

/// The ABORT post says what this runbook's `abort:` says, as the engine posts it; every step
/// gives its way out (the line the posts read); the first pages name steps by their titles.
#[test]
fn the_abort_post_is_this_runbooks_own_and_every_failure_has_a_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("own.yaml");
    std::fs::write(
        &rb,
        "name: own\ntitle: Small box\nbudget: 10m\ntargets:\n  box: { host: box.local, user: ops }\nnotify:\n  pager: { webhook: \"https://ntfy.example/t\", format: ntfy }\nabort:\n  notify: pager\n  message: |\n    Call Jo on 555-0100; it's Jo's box.\n\n    Then wait.\nphases:\n  - name: only\n    window: 0m-10m\n    steps:\n      - name: Box answers on SSH\n        wait_ssh: { every: 5s, timeout: 1m }\n      - name: A check\n        run: \"true\"\n      - name: Optional\n        run: \"true\"\n        on_fail: continue\n      - start: a.service\n        health: { run: \"true\", every: 5s, timeout: 1m }\n",
    )
    .unwrap();
    let md = export_ok(rb.to_str().unwrap(), "md", dir.path(), &[]);
    assert!(!md.contains("Following the long procedure"), "{md}");
    assert!(!md.contains("wait for SSH"), "{md}");
    assert!(
        md.contains("answers only once step 1 (\"Box answers on SSH\") passes"),
        "{md}"
    );
    // The runbook's own procedure, its first paragraph as the engine posts it.
    assert!(
        md.contains("--data-raw 'ABORT: Small box stopped at step '\"$N\"' ('\"$NAME\"') after '\"$ELAPSED\"' of the 10m budget, on box (ops@box.local).\nReason: '\"$WHY\"'\nThe abort procedure is being followed:\nCall Jo on 555-0100; it'\\''s Jo'\\''s box.\n(the rest of the procedure: see the binder)\nLast output of step '\"$N\"':\n> '\"$OUT\"'\nUnits: '\"$UNITS\"'\nOnce the abort procedure is done, to continue from this step: recover run "),
        "{md}"
    );
    assert!(md.contains("## If a step still fails"), "{md}");
    assert!(
        md.contains("Fix the cause, then continue from this step: recover run ")
            && md.contains(" --from '\"$N\"'"),
        "{md}"
    );
    for (n, name) in [
        (1, "'Box answers on SSH'"),
        (2, "'A check'"),
        (3, "Optional"),
    ] {
        assert!(
            md.contains(&format!("type `N={n}; NAME={name}`")),
            "step {n} gives no line for the posts"
        );
    }
    assert!(md.contains("type `N=4; NAME='start a.service'`"), "{md}");
    assert!(md.contains("(`on_fail: continue`)"), "{md}");
    assert!(md.contains("If it still fails: type `N=2;"), "{md}");
}

/// The frictions of issue 22 (items 4 and 5), each said plainly in the reference binder.
#[test]
fn the_binder_says_plainly_what_a_pass_a_gave_up_and_a_reboot_mean() {
    let state = tempfile::tempdir().unwrap();
    let md = export_ok(RUNBOOK, "md", state.path(), &[]);
    let plan = spark_plan();
    let steps: Vec<_> = plan.phases.iter().flat_map(|p| &p.steps).collect();
    let section = |n: usize| {
        md.split("\n### ")
            .find(|s| s.starts_with(&format!("{n}. ")))
            .unwrap_or_else(|| panic!("no step {n}"))
            .to_owned()
    };
    // The UPS step: no "go on at your own risk" beside "stop here".
    let ups = steps
        .iter()
        .find(|s| matches!(s.action, Action::Ups(_)))
        .unwrap();
    let ups = section(ups.number);
    assert!(!ups.contains("at your own risk"), "{ups}");
    assert!(ups.contains("stop here"), "{ups}");
    // The boot id written at the wait is compared at the start of the last phase.
    let wait = steps
        .iter()
        .find(|s| matches!(s.action, Action::WaitSsh { .. }))
        .unwrap();
    let last_phase = md.rsplit("\n## Phase ").next().unwrap();
    assert!(
        last_phase.contains(&format!("### Same boot as at step {}", wait.number))
            && last_phase.contains("= \"$BOOT_ID\" ] && echo SAME BOOT || echo REBOOTED"),
        "{last_phase}"
    );
    // Every start step's HTTP probe from the management host has its small print.
    for s in &steps {
        if let Action::Start {
            health: Some(g), ..
        } = &s.action
            && let Probe::Http(r) = &g.probe
            && r.on_target.is_none()
        {
            let sec = section(s.number);
            assert!(
                sec.contains("*Small print: the exact line `recover` sends")
                    && sec.contains(&r.curl()),
                "step {}: no small print for its probe",
                s.number
            );
        }
    }
    // drop_caches: the figure recover uses (none: both lines), checked as recover checks.
    let drop = steps
        .iter()
        .find(|s| matches!(s.action, Action::DropCaches(_)))
        .unwrap();
    let sec = section(drop.number);
    assert!(
        sec.contains("sets no figure the second must be under"),
        "{sec}"
    );
    let check = format!(
        "[ \"$(grep -cE '^Cached:[[:space:]]*[0-9]+' s{}.out)\" = 2 ] || echo FAIL",
        drop.number
    );
    assert!(sec.contains(&check), "{sec}");
    for (out, said) in [
        ("Cached:  1048576 kB\nCached:    20480 kB\n", ""),
        ("Cached:  1048576 kB\n", "FAIL\n"),
        ("nothing\n", "FAIL\n"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("s{}.out", drop.number)), out).unwrap();
        let ran = Command::new("sh")
            .arg("-c")
            .arg(&check)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&ran.stdout), said, "{out:?}");
    }
    assert!(md.contains("`needs_recovery` among the features is normal on a mounted root"));
    assert!(md.contains("The clock starts when mains returned"));
    // The example of ELAPSED lies inside this 30-minute budget.
    assert!(
        md.contains("(`ELAPSED=10m`)"),
        "no example within the budget"
    );
    assert!(!md.contains("ELAPSED=23m"));
    // A pass after a remedy, said plainly, with the line to write down.
    assert!(
        md.contains("the step passed, but only after the remedy: vllm-qwen36.service was killed (SIGKILL) and systemd restarted it. Write down `step "),
        "no plain word on a remedy"
    );
    // The last post carries what happened on the way.
    let last = steps
        .iter()
        .rfind(|s| matches!(s.action, Action::Notify { .. }))
        .unwrap();
    let sec = section(last.number);
    assert!(sec.contains("On the way: '\"$EVENTS\"'"), "{sec}");
    assert!(sec.contains("EVENTS='__'"), "{sec}");
}

/// Chromium's print of the HTML binder, on `size` paper, as a PDF in `dir`.
fn print_pdf(chromium: &Path, html: &str, size: &str, dir: &Path) -> PathBuf {
    let page = dir.join(format!("binder-{size}.html"));
    std::fs::write(
        &page,
        html.replacen("</style>", &format!("@page {{ size: {size}; }}</style>"), 1),
    )
    .unwrap();
    let pdf = dir.join(format!("binder-{size}.pdf"));
    let mut cmd = Command::new(chromium);
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
    .arg(format!("--user-data-dir={}", dir.join("profile").display()))
    .arg(format!("--print-to-pdf={}", pdf.display()))
    .arg(format!("file://{}", page.display()));
    run_ok(
        "chromium printing the binder",
        cmd,
        Duration::from_secs(120),
    );
    pdf
}

/// The fenced command blocks of the Markdown binder, in order.
fn md_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<&str>> = None;
    for line in md.lines() {
        if line.starts_with("```") {
            match cur.take() {
                Some(lines) => out.push(lines.join("\n")),
                None => cur = Some(Vec::new()),
            }
        } else if let Some(lines) = cur.as_mut() {
            lines.push(line);
        }
    }
    out
}

/// A code box on a rendered page: where it starts and how wide it is, in pixels.
struct Boxed {
    page: usize,
    top: usize,
    left: usize,
    width: usize,
}

/// The command boxes on a page rendered by pdftoppm: a dark left rule followed by the
/// boxes' grey, which glyphs interrupt but white never does; rows in a run at the same left
/// edge are one box.
fn code_boxes(page: usize, w: usize, h: usize, px: &[[u8; 3]]) -> Vec<Boxed> {
    let grey = |p: [u8; 3]| p.iter().all(|&c| (236..=250).contains(&c));
    let dark = |p: [u8; 3]| p.iter().all(|&c| c < 90);
    let white = |p: [u8; 3]| p.iter().all(|&c| c >= 252);
    let mut rows: Vec<Option<(usize, usize)>> = vec![None; h];
    for (y, row) in rows.iter_mut().enumerate() {
        let line = &px[y * w..(y + 1) * w];
        let mut x = 0;
        while x + 4 < w {
            if dark(line[x]) && !dark(line[x + 1]) && (1..4).any(|d| grey(line[x + d])) {
                // Walk back over the rule, then right until the first white pixel.
                let mut left = x;
                while left > 0 && dark(line[left - 1]) {
                    left -= 1;
                }
                let mut right = x + 1;
                while right < w && !white(line[right]) {
                    right += 1;
                }
                if right - left > 6 {
                    *row = Some((left, right - left));
                    break;
                }
            }
            x += 1;
        }
    }
    let mut out: Vec<Boxed> = Vec::new();
    let mut run: Option<(usize, usize, usize, usize)> = None; // top, left, width, rows
    for (y, row) in rows.iter().enumerate().chain([(h, &None)]) {
        match (row, run.as_mut()) {
            (Some((l, wd)), Some((_, left, width, n))) if l.abs_diff(*left) <= 2 => {
                *width = (*width).max(*wd);
                *n += 1;
            }
            (row, _) => {
                if let Some((top, left, width, n)) = run.take()
                    && n >= 4
                {
                    out.push(Boxed {
                        page,
                        top,
                        left,
                        width,
                    });
                }
                run = row.map(|(l, wd)| (y, l, wd, 1));
            }
        }
    }
    out
}

/// The lines of pdftotext's text with the page footers and form feeds taken out, each
/// trimmed (the page margin and a line's indentation are one to pdftotext).
fn pdf_lines(text: &str, name: &str) -> Vec<String> {
    text.split(['\n', '\u{c}'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !(l.starts_with(&format!("{name} ·")) || l.starts_with("page ")))
        .map(squash)
        .collect()
}

/// The printed binder read back, as a person with only the paper would (issue 22): Chromium
/// prints the HTML to PDF on A4 and on US Letter; pdftotext gives back each command block,
/// which, joined by the rule the binder prints, is exactly the Markdown's command, for every
/// block of both bundled runbooks and of a runbook with every step kind and channel format;
/// and on every page rendered to PNG, no command box is narrower than half the text width
/// (the ABORT post was once squeezed into a column two words wide).
#[test]
fn the_printed_pdf_gives_back_every_command_block_on_a4_and_letter() {
    let Some(chromium) = require_tool(&["chromium", "chromium-browser", "google-chrome"]) else {
        return;
    };
    let (Some(pdftotext), Some(pdftoppm)) =
        (require_tool(&["pdftotext"]), require_tool(&["pdftoppm"]))
    else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let every = root().join("tests/runbooks/every-kind.yaml");
    for runbook in [RUNBOOK, "runbooks/lab.yaml", every.to_str().unwrap()] {
        let md = export_raw(runbook, "md", state.path(), &[]);
        let html = export_raw(runbook, "html", state.path(), &[]);
        let name = md
            .split("Binder copy of the runbook `")
            .nth(1)
            .and_then(|r| r.split('`').next())
            .unwrap()
            .to_owned();
        let blocks = md_blocks(&md);
        assert!(blocks.len() > 20, "{runbook}: {} blocks", blocks.len());
        for (size, mm) in [("A4", 210.0), ("Letter", 215.9)] {
            let dir = tempfile::tempdir().unwrap();
            let pdf = print_pdf(&chromium, &html, size, dir.path());
            let txt = dir.path().join("binder.txt");
            let mut cmd = Command::new(&pdftotext);
            // -layout: the spaces inside a line as printed (-raw squeezes them).
            cmd.arg("-layout").arg(&pdf).arg(&txt);
            run_ok("pdftotext reading the PDF", cmd, Duration::from_secs(60));
            let lines = pdf_lines(&std::fs::read_to_string(&txt).unwrap(), &name);
            // Each block's lines, one printed line for each: no wrap the binder did not
            // mark, nothing cut, nothing lost between pages.
            let mut cursor = 0;
            for block in &blocks {
                let want: Vec<String> = block
                    .lines()
                    .map(squash)
                    .filter(|l| !l.is_empty())
                    .collect();
                let at = |from: usize| {
                    (from..lines.len().saturating_sub(want.len() - 1))
                        .find(|&i| want.iter().enumerate().all(|(k, l)| lines[i + k] == *l))
                };
                let Some(i) = at(cursor).or_else(|| at(0)) else {
                    let near = lines
                        .iter()
                        .position(|l| *l == want[0])
                        .map(|i| lines[i..(i + want.len() + 2).min(lines.len())].join("\n"))
                        .unwrap_or_else(|| "(its first line is not on the pages)".into());
                    panic!(
                        "{runbook} on {size}: a command block is not on the pages as printed:\n{block}\n--- the PDF has:\n{near}"
                    );
                };
                cursor = i + want.len();
                let printed = lines[i..cursor].join("\n");
                let joined: Vec<String> = block
                    .lines()
                    .map(squash)
                    .filter(|l| !l.is_empty())
                    .collect();
                assert_eq!(
                    recover::export::unfold(&printed),
                    recover::export::unfold(&joined.join("\n")),
                    "{runbook} on {size}"
                );
            }
            // Every page as an image: every command box at least half the text width.
            let prefix = dir.path().join("page");
            let mut cmd = Command::new(&pdftoppm);
            cmd.args(["-r", "50", "-png"]).arg(&pdf).arg(&prefix);
            run_ok(
                "pdftoppm rendering the pages",
                cmd,
                Duration::from_secs(120),
            );
            let mut pngs: Vec<PathBuf> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "png"))
                .collect();
            pngs.sort();
            let mut found = 0;
            for (n, png) in pngs.iter().enumerate() {
                let (w, h, px) = decode_png(&std::fs::read(png).unwrap());
                let text_width = w as f64 * (mm - 26.0) / mm;
                for b in code_boxes(n + 1, w, h, &px) {
                    found += 1;
                    assert!(
                        b.width as f64 >= text_width / 2.0,
                        "{runbook} on {size}: a command box {}px wide, under half the text width ({text_width:.0}px), on page {} at {}px from the top, {}px from the left",
                        b.width,
                        b.page,
                        b.top,
                        b.left
                    );
                }
            }
            assert!(
                found * 10 >= blocks.len() * 8,
                "{runbook} on {size}: {found} boxes seen on the pages for {} blocks",
                blocks.len()
            );
        }
    }
}

/// A minimal PNG reader for pdftoppm's pages: 8-bit RGB or RGBA, not interlaced.
fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let mut pos = 8;
    let (mut w, mut h, mut channels) = (0usize, 0usize, 0usize);
    let mut idat = Vec::new();
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = &bytes[pos + 8..pos + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "bit depth");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("colour type {other}"),
                };
                assert_eq!(data[12], 0, "interlaced");
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).expect("inflate");
    let stride = w * channels;
    let mut prev = vec![0u8; stride];
    let mut pixels = Vec::with_capacity(w * h);
    for row in 0..h {
        let start = row * (stride + 1);
        let filter = raw[start];
        let mut cur = raw[start + 1..start + 1 + stride].to_vec();
        for i in 0..stride {
            let a = if i >= channels { cur[i - channels] } else { 0 } as i16;
            let b = prev[i] as i16;
            let c = if i >= channels { prev[i - channels] } else { 0 } as i16;
            let add = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("filter {f}"),
            };
            cur[i] = cur[i].wrapping_add(add as u8);
        }
        for px in cur.chunks(channels) {
            pixels.push([px[0], px[1], px[2]]);
        }
        prev = cur;
    }
    (w, h, pixels)
}
