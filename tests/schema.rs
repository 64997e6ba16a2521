//! `recover schema`: the runbook's JSON Schema, checked with a real validator (the `jsonschema`
//! crate, draft 2020-12) against the bundled runbooks, the test runbooks the loader accepts, and
//! broken runbooks the loader rejects.

mod common;

use std::path::{Path, PathBuf};

use common::recover_in;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema() -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = recover_in(dir.path()).arg("schema").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("recover schema prints JSON")
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .expect("the schema is a valid draft 2020-12 schema")
}

/// A YAML runbook as JSON, the way an editor's language server sees it.
fn as_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The validation errors, as (instance path, message).
fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<(String, String)> {
    v.iter_errors(instance)
        .map(|e| (e.instance_path().to_string(), e.to_string()))
        .collect()
}

fn show(errs: &[(String, String)]) -> String {
    errs.iter()
        .map(|(at, e)| format!("{at}: {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An error at `at`, or at a part that holds it (an optional part reports its whole value as
/// not matching); never only at the root unless `at` is the root.
fn reported_at(errs: &[(String, String)], at: &str) -> bool {
    errs.iter()
        .any(|(path, _)| path == at || (!path.is_empty() && at.starts_with(&format!("{path}/"))))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_schema_is_draft_2020_12_and_describes_a_runbook() {
    let s = schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(s["type"], "object");
    assert_eq!(s["additionalProperties"], false, "unknown keys are errors");
    let required: Vec<&str> = s["else"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for key in ["name", "budget", "targets", "phases"] {
        assert!(required.contains(&key), "{key} is required: {required:?}");
    }
    for key in ["title", "vars", "notify", "abort", "rehearse_every"] {
        assert!(!required.contains(&key), "{key} is optional");
    }
    let step = &s["$defs"]["Step"];
    assert_eq!(
        step["oneOf"].as_array().map(Vec::len),
        Some(recover::runbook::model::KINDS.len()),
        "{step}"
    );
}

#[test]
fn the_bundled_runbooks_and_the_loaders_good_runbooks_pass() {
    let v = validator(&schema());
    let mut files = yaml_files(&repo().join("runbooks"));
    assert!(files.len() >= 2, "{files:?}");
    files.extend(yaml_files(&repo().join("tests/runbooks/lint")));
    files.push(repo().join("tests/runbooks/env-url.yaml"));
    for path in files {
        let errs = errors(&v, &as_json(&path));
        assert!(errs.is_empty(), "{}:\n{}", path.display(), show(&errs));
    }
    // An overlay may not bring phases of its own; a whole runbook must have them.
    let mut lab = as_json(&repo().join("runbooks/lab.yaml"));
    lab["phases"] = json!([]);
    assert!(
        !v.is_valid(&lab),
        "an overlay with phases passes the schema"
    );
    let mut whole = as_json(&repo().join("runbooks/spark-power.yaml"));
    whole.as_object_mut().unwrap().remove("phases");
    assert!(
        !v.is_valid(&whole),
        "a runbook without phases passes the schema"
    );
}

/// Broken runbooks of `tests/runbooks/broken/` whose mistake is one of shape (keys, types,
/// kinds, units, ranges): the schema rejects each where the loader does.
#[test]
fn broken_runbooks_fail_the_schema_where_the_loader_rejects_them() {
    let v = validator(&schema());
    let cases = [
        ("duration-without-unit", "/budget"),
        ("duration-garbage-in-window", "/phases/0/window"),
        ("exit-code-out-of-range", "/phases/0/steps/0/expect/exit"),
        ("port-as-string", "/targets/spark/port"),
        ("step-without-kind", "/phases/0/steps/0"),
        ("step-kind-typo", "/phases/0/steps/0"),
        ("sudo-not-a-boolean", "/phases/0/steps/0/sudo"),
        ("missing-budget", ""),
        ("missing-host", "/targets/spark"),
        ("drop-caches-with-settings", "/phases/0/steps/0/drop_caches"),
        ("name-as-list", "/name"),
        (
            "status-code-not-a-number",
            "/phases/0/steps/0/http/expect/status",
        ),
        (
            "successes-not-a-number",
            "/phases/0/steps/0/health/successes",
        ),
        ("steps-not-a-list", "/phases/0/steps"),
    ];
    for (name, at) in cases {
        let path = repo().join(format!("tests/runbooks/broken/{name}.yaml"));
        let errs = errors(&v, &as_json(&path));
        assert!(!errs.is_empty(), "{name}: the schema accepts it");
        assert!(
            reported_at(&errs, at),
            "{name}: no error at `{at}`:\n{}",
            show(&errs)
        );
        let dir = tempfile::tempdir().unwrap();
        let out = recover_in(dir.path())
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: the loader rejects it too"
        );
    }
}

/// A change to a runbook's JSON.
type Edit = fn(&mut Value);

/// Mistakes made in an editor on a real runbook: each is an error of the schema and of `check`.
#[test]
fn edits_that_break_the_lab_runbook_fail_the_schema_and_check() {
    let v = validator(&schema());
    // lab.yaml is an overlay of spark-power.yaml: the phases and steps are edited in the base.
    let lab = as_json(&repo().join("runbooks/spark-power.yaml"));
    assert!(errors(&v, &lab).is_empty());
    let step = json!({ "run": "true" });
    let edits: [(&str, Edit); 5] = [
        ("an unknown top-level key", |r| r["budjet"] = json!("30m")),
        ("two kinds in one step", |r| {
            r["phases"][0]["steps"][0]["local"] = json!("true")
        }),
        ("a step without a kind", |r| {
            r["phases"][0]["steps"][0] = json!({ "name": "nothing" })
        }),
        (
            "an unknown notify format",
            |r| {
                r["notify"] =
                    json!({ "ops": { "webhook": "https://example.invalid", "format": "teams" } })
            },
        ),
        ("a window without its end", |r| {
            r["phases"][0]["window"] = json!("0m")
        }),
    ];
    for (what, edit) in edits {
        let mut broken = lab.clone();
        edit(&mut broken);
        assert_ne!(broken, lab, "{what}: the edit changed nothing");
        assert!(!v.is_valid(&broken), "{what}: the schema accepts it");
        // JSON is YAML: the loader reads the same document.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broken.yaml");
        std::fs::write(&file, serde_json::to_string_pretty(&broken).unwrap()).unwrap();
        let out = recover_in(dir.path())
            .arg("check")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{what}: check rejects it too");
    }
    let mut fixed = lab.clone();
    fixed["phases"][0]["steps"][0] = step;
    assert!(v.is_valid(&fixed), "a good edit passes");
}
