//! Snapshots of what the operator reads: the dry-run plan of the reference runbook, and the
//! rendered errors of representative broken runbooks. Review changes with `cargo insta review`
//! (or read the `.snap.new` files): every line must read well at midnight.

mod common;

use std::path::Path;

use assert_cmd::Command;

const SECRET: &str = "https://hooks.slack.com/services/T0/B0/SECRETSECRET";
const RUNBOOK: &str = "runbooks/spark-power.yaml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The real binary, with an environment that makes its output the same on every machine:
/// `common::recover`'s, and a fixed home for the `~` of the runbook's paths.
fn recover(dir: &Path) -> Command {
    let mut cmd = common::recover();
    cmd.current_dir(dir)
        .env("HOME", "/home/operator")
        .env("RECOVER_WEBHOOK", SECRET);
    cmd
}

fn dry_run() -> (String, String) {
    let out = recover(root())
        .args(["run", "--dry-run", RUNBOOK])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn dry_run_of_the_reference_runbook() {
    let (stdout, _) = dry_run();
    // The sha256 changes with every comment in the runbook; it is checked below instead.
    insta::with_settings!({ filters => vec![(r"sha256 [0-9a-f]{64}", "sha256 [sha256 of the runbook]")] }, {
        insta::assert_snapshot!("dry_run_spark_power", stdout);
    });
}

#[test]
fn dry_run_names_the_runbook_by_its_sha256() {
    let (stdout, _) = dry_run();
    let bytes = std::fs::read(root().join(RUNBOOK)).unwrap();
    let sha = recover::runbook::sha256_hex(&bytes);
    assert!(stdout.contains(&format!("sha256 {sha}")), "{stdout}");
}

#[test]
fn dry_run_never_shows_the_webhook_secret() {
    let (stdout, stderr) = dry_run();
    assert!(
        !stdout.contains(SECRET),
        "the webhook URL leaked:\n{stdout}"
    );
    assert!(
        !stdout.contains("SECRETSECRET"),
        "the token leaked:\n{stdout}"
    );
    assert!(
        !stderr.contains("SECRETSECRET"),
        "the token leaked:\n{stderr}"
    );
    assert!(
        stdout.contains("notify    operators: Slack webhook ***"),
        "{stdout}"
    );
}

#[test]
fn dry_run_drops_the_page_cache_before_starting_units_in_dependency_order() {
    let (stdout, _) = dry_run();
    let drop = stdout
        .find("echo 3 > /proc/sys/vm/drop_caches")
        .expect("a drop_caches step");
    let first_start = stdout.find("systemctl start").expect("a systemctl start");
    assert!(
        drop < first_start,
        "the page cache is dropped after a start"
    );
    let units: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split("systemctl start --no-block ").nth(1))
        .filter_map(|rest| rest.split('\'').next())
        .collect();
    assert_eq!(
        units,
        [
            "tailscale.service",
            "prometheus-node-exporter.service",
            "vllm-qwen36.service",
            "sglang-mistral.service",
            "dispatcher.service",
            "mcp-server.service",
            "caddy.service",
        ]
    );
}

/// The stderr of `recover check FILE` on a runbook under `tests/runbooks/`.
fn check_stderr(dir: &str, file: &str, code: i32) -> String {
    let out = recover(&root().join("tests/runbooks").join(dir))
        .args(["check", file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code), "{file}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn rendered_errors() {
    for file in [
        "unknown-step-key.yaml",
        "yaml-unclosed-quote.yaml",
        "undefined-var.yaml",
        "overlapping-windows.yaml",
        "exit-code-not-a-number.yaml",
        "missing-budget.yaml",
        "expect-on-http-step.yaml",
    ] {
        let name = format!("check_{}", file.trim_end_matches(".yaml"));
        insta::assert_snapshot!(name, check_stderr("broken", file, 2));
    }
}

#[test]
fn rendered_errors_three_at_once() {
    insta::assert_snapshot!(
        "check_three_errors",
        check_stderr(".", "three-errors.yaml", 2)
    );
}

#[test]
fn rendered_warning() {
    insta::assert_snapshot!(
        "check_start_before_drop_caches",
        check_stderr("lint", "start-before-drop-caches.yaml", 0)
    );
}
