//! `recover check` lints: legal runbooks that are probably wrong. One runbook per lint under
//! `tests/runbooks/lint/`; each warns once, at its place, exits 0, and exits 2 with --strict.

mod common;

use std::path::{Path, PathBuf};

struct Lint {
    file: &'static str,
    line: usize,
    column: usize,
    message: &'static str,
    help: &'static str,
}

#[rustfmt::skip]
const LINTS: &[Lint] = &[
    Lint {
        file: "start-before-drop-caches", line: 9, column: 9,
        message: "`vllm-qwen36.service` starts before the page cache is dropped (step 2)",
        help: "move drop_caches before the first start",
    },
    Lint {
        file: "default-timeout-shorter-than-gate", line: 10, column: 9,
        message: "the default step timeout (2m) is shorter than the health gate's 8m: the gate is cut short",
        help: "set `timeout:` on the step, e.g. `timeout: 8m30s`",
    },
    Lint {
        file: "literal-webhook-secret", line: 7, column: 14,
        message: "channel `operators` has a literal webhook URL that looks like a credential",
        help: r#"`webhook: "{{ env.RECOVER_WEBHOOK }}"`"#,
    },
    Lint {
        file: "start-without-health-gate", line: 10, column: 9,
        message: "`caddy.service` has no health gate: only `active` will be checked",
        help: "add `health:` with a probe of the real work",
    },
    Lint {
        file: "timeline-gap", line: 11, column: 13,
        message: "gap in the timeline: 5m to 10m belongs to no phase (after phase `Boot`)",
        help: "start this window at 5m, or extend the previous one",
    },
    Lint {
        file: "step-longer-than-its-window", line: 9, column: 9,
        message: "step 1 allows 15m, longer than the 5m window of phase `Power`: used in full, it overruns the window on its own",
        help: "shorten the step's timeout to 5m or less, or widen the phase's `window:`",
    },
    Lint {
        file: "no-failure-channel", line: 6, column: 3,
        message: "no channel gets the failure post: a run that fails, aborts or is stopped tells nobody",
        help: "name a channel in `abort: { notify: operators }`, or mark one `failures: true`",
    },
    Lint {
        file: "timeline-gap-at-the-start", line: 7, column: 13,
        message: "gap in the timeline: 0s to 2m belongs to no phase (before the first phase)",
        help: "start the first window at 0s",
    },
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn lint_dir() -> PathBuf {
    root().join("tests/runbooks/lint")
}

fn check(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = common::recover_in(state_dir())
        .current_dir(dir)
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A state directory with no rehearsal records, so the notice is always "never rehearsed".
fn state_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

#[test]
fn each_lint_warns_once_at_its_place_and_passes_unless_strict() {
    for l in LINTS {
        let file = format!("{}.yaml", l.file);
        let (code, stdout, stderr) = check(&lint_dir(), &[&file]);
        assert_eq!(code, Some(0), "{file} without --strict\n{stderr}");
        assert!(stdout.is_empty(), "{file}: stdout {stdout}");
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|x| x.starts_with("warning: "))
            .collect();
        assert_eq!(
            warnings,
            [format!(
                "warning: {file}:{}:{}: {}",
                l.line, l.column, l.message
            )],
            "{file}\n{stderr}"
        );
        assert!(
            stderr.contains(l.help),
            "{file}: no help `{}`\n{stderr}",
            l.help
        );
        assert!(
            stderr.trim_end().ends_with("; 1 warning"),
            "{file}: summary\n{stderr}"
        );
        assert!(
            !stderr.lines().any(|x| x.starts_with("error")),
            "{file}: an error\n{stderr}"
        );

        let (code, _, stderr) = check(&lint_dir(), &["--strict", &file]);
        assert_eq!(code, Some(2), "{file} with --strict\n{stderr}");
        assert!(
            stderr.contains("--strict: warnings count as errors"),
            "{stderr}"
        );
    }
}

#[test]
fn every_lint_in_the_corpus_is_in_the_table() {
    let mut on_disk: Vec<String> = std::fs::read_dir(lint_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".yaml").map(str::to_owned))
        .collect();
    on_disk.sort();
    let mut in_table: Vec<String> = LINTS.iter().map(|l| l.file.to_owned()).collect();
    in_table.sort();
    assert_eq!(on_disk, in_table);
}

#[test]
fn the_reference_runbook_is_clean_even_when_strict() {
    for args in [
        &["runbooks/spark-power.yaml"][..],
        &["--strict", "runbooks/spark-power.yaml"],
    ] {
        let (code, stdout, stderr) = check(root(), args);
        assert_eq!(code, Some(0), "{args:?}\n{stderr}");
        assert!(stdout.is_empty());
        assert_eq!(
            stderr,
            "rehearsal: `spark-power`: never rehearsed; run `recover rehearse` against the live stack (!)\n\
             drill: never drilled: tailscale.service, prometheus-node-exporter.service, vllm-qwen36.service, sglang-mistral.service, dispatcher.service, mcp-server.service, caddy.service (`recover drill` times each one's restart on the live stack)\n\
             runbooks/spark-power.yaml: ok: 4 phases, 25 steps, budget 30m; 0 warnings\n",
            "{args:?}"
        );
    }
}
