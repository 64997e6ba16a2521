//! The help a tired operator reads: every command says what it does and its exit codes.

mod common;

fn help(args: &[&str]) -> String {
    let out = common::recover().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn top_level_and_run_help_list_every_exit_code() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["run", "--help"],
        &["rehearse", "--help"],
    ] {
        let text = help(args);
        for line in [
            "Exit codes:",
            "  0    success",
            "  1    a step failed",
            "  2    usage or runbook error: nothing was run",
            "  3    aborted by an abort condition",
            "  130  interrupted (Ctrl-C)",
        ] {
            assert!(text.contains(line), "{args:?} lacks `{line}`:\n{text}");
        }
    }
}

#[test]
fn check_help_says_what_is_checked_and_what_strict_does() {
    let text = help(&["check", "--help"]);
    for fragment in [
        "contacting nothing",
        "file:line:column",
        "--strict",
        "  0    the runbook is valid",
        "  2    the runbook has errors or cannot be read, or --strict and it has warnings",
    ] {
        assert!(text.contains(fragment), "lacks `{fragment}`:\n{text}");
    }
}

#[test]
fn run_help_documents_dry_run_and_overrides() {
    let text = help(&["run", "--help"]);
    for fragment in [
        "--dry-run",
        "contact nothing",
        "--target <NAME=HOST>",
        "--var <KEY=VALUE>",
    ] {
        assert!(text.contains(fragment), "lacks `{fragment}`:\n{text}");
    }
}
