//! Overlays (`extends: PATH`, `--overlay FILE`) and the command-line target flags (`--target
//! NAME=USER@HOST:PORT`, `--identity`, `--known-hosts`): the real binary on the corpus under
//! `tests/runbooks/overlay/`, and runs against the real sshd of `tests/common`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Sshd, dump, events, last_event, p, read_journal, recover, run_to_end};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runbooks/overlay")
}

/// `recover ARGS` in `dir`: (exit code, stdout, stderr).
fn recover_at(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = recover().current_dir(dir).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `--dry-run` plan of `args` in the corpus directory; it must succeed.
fn plan(args: &[&str]) -> String {
    let mut all = vec!["run", "--dry-run"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = recover_at(&corpus(), &all);
    assert_eq!(code, Some(0), "{stderr}");
    stdout
}

/// The `target` line of a plan for target `name`.
fn target_line<'a>(plan: &'a str, name: &str) -> &'a str {
    plan.lines()
        .find(|l| l.starts_with(&format!("  target    {name}  ")))
        .unwrap_or_else(|| panic!("no target {name} in:\n{plan}"))
}

fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

// --- the rules ---------------------------------------------------------------------------------

#[test]
fn a_single_key_of_a_target_changes_and_the_rest_is_the_bases() {
    let out = plan(&["one-key.yaml"]);
    assert!(
        target_line(&out, "spark").starts_with("  target    spark  ops@spark.local:2222  "),
        "{out}"
    );
    // The phases and steps are the base's, and its name.
    assert!(out.starts_with("Plan: Overlay base (base)\n"), "{out}");
    assert!(out.contains("Phase 1  Boot  [0m-5m]"), "{out}");
    assert!(out.contains("Phase 2  Serve  [5m-10m]"), "{out}");
    assert!(
        out.contains("http://spark.local:8000/v1/models/qwen"),
        "{out}"
    );
}

#[test]
fn maps_merge_by_key_and_the_overlay_value_wins() {
    let out = plan(&["merge.yaml"]);
    assert!(out.starts_with("Plan: Overlay merged (base)\n"), "{out}");
    assert!(out.contains("  budget    20m\n"), "{out}");
    // The base's target keeps its user and port; the new target comes after it.
    assert!(
        target_line(&out, "spark").starts_with("  target    spark  ops@127.0.0.1:22  ")
            && target_line(&out, "spark").ends_with("(default)"),
        "{out}"
    );
    assert!(
        target_line(&out, "spare").starts_with("  target    spare  root@10.0.0.9  "),
        "{out}"
    );
    // vars: `api` replaced, `model` the base's.
    assert!(
        out.contains("http://127.0.0.1:18000/v1/models/qwen"),
        "{out}"
    );
    // notify: the base's channel keeps its format with the overlay's webhook; a new one.
    assert!(
        out.contains("  notify    operators: Ntfy webhook http://127.0.0.1:9/hook\n"),
        "{out}"
    );
    assert!(
        out.contains("  notify    lab: Slack webhook http://127.0.0.1:9/lab\n"),
        "{out}"
    );
    // Both files, each with its sha256.
    let base = corpus().join("base.yaml");
    let merge = corpus().join("merge.yaml");
    assert!(
        out.contains(&format!(
            "  runbook   merge.yaml  sha256 {}\n  extends   base.yaml  sha256 {}\n",
            sha256_file(&merge),
            sha256_file(&base)
        )),
        "{out}"
    );
}

#[test]
fn a_chain_of_two_overlays_applies_both_the_top_one_winning() {
    let out = plan(&["chain-top.yaml"]);
    // host and user from the top, port from the middle.
    assert!(
        target_line(&out, "spark").starts_with("  target    spark  top@127.0.0.2:2200  "),
        "{out}"
    );
    // api from the top, model from the middle.
    assert!(
        out.contains("http://127.0.0.2:8000/v1/models/mistral"),
        "{out}"
    );
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  runbook ") || l.starts_with("  extends "))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("  runbook   chain-top.yaml  sha256 "));
    assert!(lines[1].starts_with("  extends   chain-mid.yaml  sha256 "));
    assert!(lines[2].starts_with("  extends   base.yaml  sha256 "));
}

/// One broken overlay: the file and place the first error names, and what it says.
struct Case {
    file: &'static str,
    at: &'static str,
    line: usize,
    column: usize,
    message: &'static str,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { file: "refuse-phases", at: "refuse-phases.yaml", line: 5, column: 1, message: "an overlay cannot set `phases`" },
    Case { file: "refuse-name", at: "refuse-name.yaml", line: 4, column: 1, message: "an overlay cannot set `name`" },
    Case { file: "cycle-a", at: "cycle-b.yaml", line: 2, column: 10, message: "`extends` makes a cycle: cycle-a.yaml extends cycle-b.yaml extends cycle-a.yaml" },
    Case { file: "cycle-b", at: "cycle-a.yaml", line: 1, column: 10, message: "`extends` makes a cycle: cycle-b.yaml extends cycle-a.yaml extends cycle-b.yaml" },
    Case { file: "undefined-var-in-overlay", at: "undefined-var-in-overlay.yaml", line: 4, column: 29, message: "`vars.port` is not defined" },
    Case { file: "step-error-in-base", at: "../base-bad-step.yaml", line: 12, column: 26, message: "`vars.apii` is not defined: vars has `api`" },
    Case { file: "new-target-without-host", at: "new-target-without-host.yaml", line: 4, column: 3, message: "target `spare` is not in ../base.yaml, and a new target needs `host:`" },
    Case { file: "unknown-target-key", at: "unknown-target-key.yaml", line: 4, column: 5, message: "unknown key `hostname` in a target" },
    Case { file: "host-as-an-option", at: "host-as-an-option.yaml", line: 4, column: 11, message: "the host `-oProxyCommand=sh` starts with `-`: ssh would read it as an option" },
    Case { file: "missing-base", at: "missing-base.yaml", line: 2, column: 10, message: "cannot read no-such-base.yaml, which this overlay extends: no such file" },
    Case { file: "zero-budget", at: "zero-budget.yaml", line: 2, column: 9, message: "the budget is zero" },
    Case { file: "var-in-chain-mid", at: "chain-mid-bad.yaml", line: 3, column: 29, message: "`vars.suffix` is not defined" },
    Case { file: "chain-mid-bad", at: "chain-mid-bad.yaml", line: 3, column: 29, message: "`vars.suffix` is not defined" },
];

#[test]
fn every_broken_overlay_is_an_error_in_the_file_and_at_the_place_it_was_written() {
    let dir = corpus().join("broken");
    let mut failures = Vec::new();
    for c in CASES {
        let file = format!("{}.yaml", c.file);
        let (code, stdout, stderr) = recover_at(&dir, &["check", &file]);
        let first = stderr.lines().next().unwrap_or("");
        let want = format!("error: {}:{}:{}: {}", c.at, c.line, c.column, c.message);
        let mut wrong = Vec::new();
        if code != Some(2) {
            wrong.push(format!("exit {code:?}, not 2"));
        }
        if !first.starts_with(&want) {
            wrong.push(format!("first line is not `{want}…`"));
        }
        if !stderr.trim_end().ends_with("nothing was run.") || !stdout.is_empty() {
            wrong.push("not refused before anything ran".to_owned());
        }
        if !wrong.is_empty() {
            failures.push(format!("{file}: {}\n{stderr}", wrong.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_table_and_the_broken_corpus_hold_the_same_files() {
    let mut on_disk: Vec<String> = fs::read_dir(corpus().join("broken"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".yaml").map(str::to_owned))
        .collect();
    on_disk.sort();
    let mut in_table: Vec<String> = CASES.iter().map(|c| c.file.to_owned()).collect();
    in_table.sort();
    assert_eq!(on_disk, in_table);
}

#[test]
fn the_refusal_says_what_an_overlay_may_set() {
    let (_, _, stderr) = recover_at(&corpus().join("broken"), &["check", "refuse-phases.yaml"]);
    assert!(
        stderr.contains("cannot add, remove or reorder phases or steps"),
        "{stderr}"
    );
    assert!(
        stderr.contains("an overlay sets only: extends, title, budget, targets, vars, notify"),
        "{stderr}"
    );
}

// --- the command line --------------------------------------------------------------------------

#[test]
fn target_takes_user_host_and_port_ipv6_in_brackets() {
    let out = plan(&["base.yaml", "--target", "spark=lab@[::1]:2201"]);
    assert!(
        target_line(&out, "spark").starts_with("  target    spark  lab@::1:2201  "),
        "{out}"
    );
    // Only the host: the runbook's user and port stay.
    let out = plan(&["base.yaml", "--target", "spark=10.1.2.3"]);
    assert!(
        target_line(&out, "spark").starts_with("  target    spark  ops@10.1.2.3:22  "),
        "{out}"
    );
    let out = plan(&[
        "base.yaml",
        "--target",
        "spark=127.0.0.1:2222",
        "--identity",
        "spark=/keys/id",
        "--known-hosts",
        "spark=/keys/known",
    ]);
    let line = target_line(&out, "spark");
    assert!(
        line.starts_with(
            "  target    spark  ops@127.0.0.1:2222  (identity /keys/id, known_hosts /keys/known"
        ),
        "{out}"
    );
}

#[test]
fn a_malformed_target_or_an_unknown_name_is_a_usage_error() {
    for (args, says) in [
        (
            vec!["--target", "spark=ops@[::1:22"],
            "the `[` of an IPv6 address is not closed",
        ),
        (
            vec!["--target", "spark=host:99999"],
            "`99999` is not a port",
        ),
        (vec!["--target", "spark=@host"], "has an empty user"),
        (
            vec!["--target", "spark=-oProxyCommand=sh"],
            "starts with `-`: ssh would read it as an option",
        ),
        (vec!["--identity", "spark"], "is not NAME=PATH"),
        (
            vec!["--identity", "sparky=/k"],
            "--identity sparky=…: the runbook has no target `sparky`; its targets: spark",
        ),
        (
            vec!["--known-hosts", "nope=/k"],
            "--known-hosts nope=…: the runbook has no target `nope`",
        ),
    ] {
        let mut all = vec!["run", "--dry-run", "base.yaml"];
        all.extend(args.iter().copied());
        let (code, stdout, stderr) = recover_at(&corpus(), &all);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: a plan was printed");
    }
}

#[test]
fn an_overlay_file_on_the_command_line_is_laid_over_the_runbook() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("aim.yaml");
    fs::write(
        &o,
        "targets:\n  spark: { host: 127.0.0.5 }\nvars:\n  model: tiny\n",
    )
    .unwrap();
    let out = plan(&["one-key.yaml", "--overlay", p(&o)]);
    assert!(
        target_line(&out, "spark").starts_with("  target    spark  ops@127.0.0.5:2222  "),
        "{out}"
    );
    assert!(
        out.contains("http://spark.local:8000/v1/models/tiny"),
        "{out}"
    );
    assert!(
        out.contains(&format!("  overlay   {}  sha256 ", o.display())),
        "{out}"
    );
    // --target and --var still win over it.
    let out = plan(&[
        "one-key.yaml",
        "--overlay",
        p(&o),
        "--target",
        "spark=127.0.0.6",
        "--var",
        "model=big",
    ]);
    assert!(
        target_line(&out, "spark").contains("ops@127.0.0.6:2222"),
        "{out}"
    );
    assert!(out.contains("/v1/models/big"), "{out}");

    // An --overlay file with its own `extends` is refused, at its line.
    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, "vars:\n  model: x\nextends: base.yaml\n").unwrap();
    let (code, _, stderr) = recover_at(
        &corpus(),
        &["run", "--dry-run", "base.yaml", "--overlay", p(&bad)],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: {}:3:10: an --overlay file has no `extends`",
            bad.display()
        )),
        "{stderr}"
    );
}

// --- against the real sshd ---------------------------------------------------------------------

/// A base runbook aimed at a host that does not exist, with one step that writes a file on the
/// target: only an overlay or the flags can make it run.
fn write_base(dir: &Path) -> PathBuf {
    let base = dir.join("base.yaml");
    let out = dir.join("ran-on-target");
    fs::write(
        &base,
        format!(
            "name: aimed\n\
             budget: 2m\n\
             targets:\n\
             \x20 box:\n\
             \x20   host: nowhere.invalid\n\
             \x20   user: nobody-here\n\
             \x20   port: 1\n\
             phases:\n\
             \x20 - name: Everything\n\
             \x20   window: 0m-2m\n\
             \x20   steps:\n\
             \x20     - name: write on the target\n\
             \x20       run: echo \"{{{{ vars.word }}}} $(id -un)\" > {out}\n\
             \x20       timeout: 20s\n\
             vars:\n\
             \x20 word: base\n",
            out = out.display()
        ),
    )
    .unwrap();
    base
}

/// What the step wrote on the target (the same machine), or None.
fn ran_on_target(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join("ran-on-target")).ok()
}

#[test]
fn a_run_through_an_overlay_journals_both_files_and_their_sha256s() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = write_base(dir.path());
    let overlay = dir.path().join("here.yaml");
    let target = sshd.runbook_target_yaml("box");
    fs::write(
        &overlay,
        format!("extends: base.yaml\ntargets:\n{target}vars:\n  word: overlay\n"),
    )
    .unwrap();
    let ran = run_to_end(
        dir.path(),
        &["run", p(&overlay)],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert_eq!(
        ran_on_target(dir.path()).as_deref(),
        Some(format!("overlay {}\n", sshd.user()).as_str())
    );
    let journal = read_journal(&common::only_journal(dir.path()));
    let started = events(&journal, "run_started");
    assert_eq!(started.len(), 1, "{}", dump(&journal));
    let s = started[0];
    assert_eq!(s["runbook"], "aimed");
    assert_eq!(s["path"], p(&overlay));
    let files = s["files"].as_array().expect("files");
    assert_eq!(files.len(), 2, "{s}");
    assert_eq!(files[0]["role"], "runbook");
    assert_eq!(files[0]["path"], p(&overlay));
    assert_eq!(files[0]["sha256"], sha256_file(&overlay));
    assert_eq!(files[1]["role"], "base");
    assert_eq!(files[1]["path"], p(&base));
    assert_eq!(files[1]["sha256"], sha256_file(&base));
    // The run's sha256 covers both: it is neither file's own.
    let sha = s["sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    assert_ne!(sha, sha256_file(&overlay));
    assert_ne!(sha, sha256_file(&base));
    assert_eq!(last_event(&journal)["outcome"], "success");
}

#[test]
fn target_user_host_port_with_identity_and_known_hosts_reaches_the_real_sshd() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = write_base(dir.path());
    let dest = format!("box={}@{}:{}", sshd.user(), sshd.host(), sshd.port());
    let identity = format!("box={}", sshd.identity().display());
    let known = format!("box={}", sshd.known_hosts().display());
    let ran = run_to_end(
        dir.path(),
        &[
            "run",
            p(&base),
            "--target",
            &dest,
            "--identity",
            &identity,
            "--known-hosts",
            &known,
        ],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert_eq!(
        ran_on_target(dir.path()).as_deref(),
        Some(format!("base {}\n", sshd.user()).as_str())
    );
    let journal = read_journal(&common::only_journal(dir.path()));
    let t = &events(&journal, "run_started")[0]["targets"][0];
    assert_eq!(t["destination"], format!("{}@{}", sshd.user(), sshd.host()));
    assert_eq!(t["port"], sshd.port());
    // A single file: no `files` list, the sha256 is the file's own.
    let s = events(&journal, "run_started")[0];
    assert!(s.get("files").is_none(), "{s}");
    assert_eq!(s["sha256"], sha256_file(&base));

    // Without the flags the base's target does not exist: the run cannot connect.
    let ran = run_to_end(dir.path(), &["run", p(&base)], &[], Duration::from_secs(60));
    assert_ne!(ran.code, Some(0), "{}", ran.context());
}

#[test]
fn an_overlay_flag_aims_the_run_at_the_real_sshd() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = write_base(dir.path());
    let o = dir.path().join("aim.yaml");
    fs::write(
        &o,
        format!(
            "targets:\n{}vars:\n  word: flag\n",
            sshd.runbook_target_yaml("box")
        ),
    )
    .unwrap();
    let ran = run_to_end(
        dir.path(),
        &["run", p(&base), "--overlay", p(&o)],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert_eq!(
        ran_on_target(dir.path()).as_deref(),
        Some(format!("flag {}\n", sshd.user()).as_str())
    );
    let journal = read_journal(&common::only_journal(dir.path()));
    let files = events(&journal, "run_started")[0]["files"].clone();
    assert_eq!(files[0]["role"], "overlay", "{files}");
    assert_eq!(files[0]["path"], p(&o));
    assert_eq!(files[1]["role"], "runbook", "{files}");
    assert_eq!(files[1]["path"], p(&base));
}

#[test]
fn check_and_export_name_both_files_and_their_sha256s() {
    let base = sha256_file(&corpus().join("base.yaml"));
    let top = sha256_file(&corpus().join("one-key.yaml"));
    let (code, _, stderr) = recover_at(&corpus(), &["check", "one-key.yaml"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "one-key.yaml: runbook one-key.yaml, sha256 {top}\n"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("one-key.yaml: extends base.yaml, sha256 {base}\n")),
        "{stderr}"
    );
    let (code, md, stderr) = recover_at(&corpus(), &["export", "one-key.yaml"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        md.contains(&format!("- **runbook:** `one-key.yaml` (sha256 `{top}`)\n")),
        "{md}"
    );
    assert!(
        md.contains(&format!("- **extends:** `base.yaml` (sha256 `{base}`)\n")),
        "{md}"
    );
    let (code, html, _) = recover_at(&corpus(), &["export", "one-key.yaml", "--format", "html"]);
    assert_eq!(code, Some(0));
    let line = format!(
        "<dt>extends</dt><dd><code><span class=\"w\">base.yaml</span></code> (sha256 <code class=\"hash\">{base}</code>)</dd>"
    );
    assert!(html.contains(&line), "{html}");
}
