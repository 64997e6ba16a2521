//! `scripts/install PREFIX`: the operator's install path (issue 11, item 2), tried in a
//! temporary prefix with the binary cargo built for the tests: the binary runs, `man -l` formats
//! the page, the bash completion completes `recover ru<TAB>`, the runbooks check.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs into a fresh temporary prefix; returns it.
fn install() -> tempfile::TempDir {
    let prefix = tempfile::tempdir().unwrap();
    let out = common::clean_command(repo().join("scripts/install"), prefix.path())
        .arg(prefix.path())
        .env("RECOVER_BIN", env!("CARGO_BIN_EXE_recover"))
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/install:\n{}", show(&out));
    prefix
}

/// What bash completes for `words` (the last one being completed), with the installed script.
fn complete_bash(prefix: &Path, words: &[&str]) -> Vec<String> {
    let script = prefix.join("share/bash-completion/completions/recover");
    let line = words.join(" ");
    // `complete -p recover` names the function the script registered; it is called as bash
    // calls it: with the command, the word being completed and the word before it.
    let program = r#"
        source "$1" || exit 10
        spec=$(complete -p recover) || exit 11
        fn=${spec#*-F }; fn=${fn%% *}
        shift
        COMP_WORDS=("$@")
        COMP_CWORD=$(( $# - 1 ))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        prev=""
        [ $COMP_CWORD -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD-1]}
        "$fn" recover "${COMP_WORDS[COMP_CWORD]}" "$prev"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", program, "bash"])
        .arg(&script)
        .args(words)
        .output()
        .unwrap();
    assert!(out.status.success(), "completing `{line}`:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn install_into_a_prefix_gives_a_working_binary_man_page_completions_and_runbooks() {
    let prefix = install();
    let p = prefix.path();

    let bin = p.join("bin/recover");
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("recover {}", env!("CARGO_PKG_VERSION"))
    );

    for file in [
        "share/man/man1/recover.1",
        "share/man/man1/recover-run.1",
        "share/bash-completion/completions/recover",
        "share/zsh/site-functions/_recover",
        "share/fish/vendor_completions.d/recover.fish",
        "share/recover/runbook.schema.json",
        "share/recover/runbooks/lab.yaml",
        "share/recover/runbooks/spark-power.yaml",
    ] {
        let meta = std::fs::metadata(p.join(file));
        assert!(meta.as_ref().is_ok_and(|m| m.len() > 0), "{file}: {meta:?}");
    }

    for runbook in ["lab.yaml", "spark-power.yaml"] {
        let state = tempfile::tempdir().unwrap();
        let out = common::clean_command(&bin, state.path())
            .arg("check")
            .arg(p.join("share/recover/runbooks").join(runbook))
            .output()
            .unwrap();
        assert!(out.status.success(), "check {runbook}:\n{}", show(&out));
    }

    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.join("share/recover/runbook.schema.json")).unwrap(),
    )
    .expect("the installed schema is JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

#[test]
fn the_installed_man_page_formats_with_man() {
    if !has("man") {
        common::skip::skipped_unless_ci("man is not installed (scripts/setup installs man-db)");
        return;
    }
    let prefix = install();
    for (page, words) in [
        (
            "recover.1",
            &[
                "recover",
                "run",
                "rehearse",
                "check",
                "export",
                "completions",
            ][..],
        ),
        ("recover-run.1", &["--dry-run", "--resume", "Exit codes"]),
    ] {
        let out = Command::new("man")
            .args(["--warnings", "-P", "cat", "-l"])
            .arg(prefix.path().join("share/man/man1").join(page))
            .env("MANWIDTH", "100")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        assert!(out.status.success(), "man -l {page}:\n{}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("NAME"), "{page}:\n{text}");
        for w in words {
            assert!(text.contains(w), "{page} lacks `{w}`:\n{text}");
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.trim().is_empty(),
            "{page}: groff warnings:\n{stderr}"
        );
    }
}

#[test]
fn the_installed_bash_completion_completes_commands_and_options() {
    if !has("bash") {
        common::skip::skipped_unless_ci("bash is not installed");
        return;
    }
    let prefix = install();
    let p = prefix.path();
    assert_eq!(complete_bash(p, &["recover", "ru"]), ["run"]);
    assert_eq!(complete_bash(p, &["recover", "reh"]), ["rehearse"]);
    let shells = complete_bash(p, &["recover", "completions", ""]);
    for s in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|x| x == s), "{shells:?}");
    }
    let options = complete_bash(p, &["recover", "run", "--dr"]);
    assert_eq!(options, ["--dry-run"]);
}

#[test]
fn the_zsh_and_fish_completions_parse_where_those_shells_exist() {
    let prefix = install();
    let share = prefix.path().join("share");
    for (shell, file) in [
        ("zsh", "zsh/site-functions/_recover"),
        ("fish", "fish/vendor_completions.d/recover.fish"),
    ] {
        let text = std::fs::read_to_string(share.join(file)).unwrap();
        assert!(text.contains("rehearse"), "{file}");
        if !has(shell) {
            common::skip::skipped_unless_ci(&format!(
                "{shell} is not installed: {file} not parsed"
            ));
            continue;
        }
        let out = Command::new(shell)
            .arg("-n")
            .arg(share.join(file))
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell} -n {file}:\n{}", show(&out));
    }
}

/// The installed upsmon hook, run as upsmon runs it (the message as its argument, NOTIFYTYPE
/// and UPSNAME in the environment), with a configuration that names only the runbook: it starts
/// the binary installed beside it, `run --unattended`, detached, stdin empty, its output in the
/// log directory. The runbook has a manual step without `unattended:`, so the run it starts
/// refuses at once (exit 2) and contacts nothing; ONBATT starts nothing.
#[test]
fn the_installed_upsmon_hook_starts_the_installed_binary_unattended_and_only_on_online() {
    let prefix = install();
    let p = prefix.path();
    let hook = p.join("lib/recover/recover-upsmon-hook");
    let unit = std::fs::read_to_string(p.join("lib/systemd/system/recover-unattended.service"))
        .expect("the unit is installed");
    let exec = format!(
        "ExecStart={} run --unattended --started-by ",
        p.join("bin/recover").display()
    );
    assert!(unit.lines().any(|l| l.starts_with(&exec)), "{unit}");
    assert!(
        !unit.lines().any(|l| l.trim() == "[Install]"),
        "never enabled at boot:\n{unit}"
    );
    let conf_example = std::fs::read_to_string(p.join("share/recover/unattended.conf")).unwrap();
    assert!(conf_example.contains("RECOVER_RUNBOOK="), "{conf_example}");

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let runbook = w.join("attended.yaml");
    std::fs::write(
        &runbook,
        "name: attended\nbudget: 5m\ntargets:\n  box: { host: box.invalid }\nphases:\n  - name: P\n    window: 0m-5m\n    steps:\n      - manual: Press the power button.\n",
    )
    .unwrap();
    let logs = w.join("logs");
    let conf = w.join("unattended.conf");
    std::fs::write(
        &conf,
        format!(
            "RECOVER_RUNBOOK=\"{}\"\nRECOVER_START=\"detach\"\nRECOVER_LOG_DIR=\"{}\"\nRECOVER_STATE_DIR=\"{}\"\n",
            runbook.display(),
            logs.display(),
            w.join("state").display()
        ),
    )
    .unwrap();
    let hook_run = |notify_type: &str, message: &str| {
        let out = common::clean_command(&hook, &w.join("state"))
            .arg(message)
            .env("NOTIFYTYPE", notify_type)
            .env("UPSNAME", "tups@127.0.0.1:3493")
            .env("RECOVER_UNATTENDED_CONF", &conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "the hook:\n{}", show(&out));
    };
    let run_logs = || -> Vec<PathBuf> {
        std::fs::read_dir(&logs)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("recover-"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };

    hook_run("ONBATT", "UPS tups@127.0.0.1:3493 on battery");
    let hook_log = std::fs::read_to_string(logs.join("upsmon-hook.log")).unwrap();
    assert!(
        hook_log.contains("NOTIFYTYPE=ONBATT UPSNAME=tups@127.0.0.1:3493: ignored"),
        "{hook_log}"
    );
    assert!(run_logs().is_empty(), "ONBATT started a run");

    hook_run("ONLINE", "UPS tups@127.0.0.1:3493 on line power");
    let mut output = String::new();
    let done = common::eventually(std::time::Duration::from_secs(20), || {
        output = run_logs()
            .first()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .unwrap_or_default();
        output.contains("nothing was run.")
    });
    let hook_log = std::fs::read_to_string(logs.join("upsmon-hook.log")).unwrap();
    assert!(
        done,
        "no refusal from the started run:\n{output}\n--- hook log\n{hook_log}"
    );
    assert!(
        hook_log.contains(&format!(
            "started {} run --unattended",
            p.join("bin/recover").display()
        )),
        "{hook_log}"
    );
    assert!(
        output.contains(
            "is a manual step without `unattended:`: an unattended run has nobody to ask"
        ),
        "{output}"
    );
    assert!(!output.contains("Done?"), "it prompted:\n{output}");
}

/// The watch's unit as installed: enabled at boot after the network, as `recover`, with the
/// hardening issue 20 asks for and an exposure `systemd-analyze security` puts at most at 4.0;
/// the tmpfiles entry of the machine-wide lock directory, exactly; the hook's and the watch's
/// example configurations.
#[test]
fn the_installed_watch_unit_is_hardened_enabled_at_boot_and_ships_the_lock_directory() {
    let prefix = install();
    let p = prefix.path();
    let path = p.join("lib/systemd/system/recover-watch.service");
    let unit = std::fs::read_to_string(&path).expect("the watch unit is installed");
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        format!(
            "ExecStart={} watch $RECOVER_ARGS ${{RECOVER_RUNBOOK}}",
            p.join("bin/recover").display()
        ),
        "[Install]".into(),
        "WantedBy=multi-user.target".into(),
        "After=network-online.target nut-monitor.service systemd-tmpfiles-setup.service".into(),
        "Wants=network-online.target".into(),
        "User=recover".into(),
        "NoNewPrivileges=yes".into(),
        "ProtectSystem=strict".into(),
        "ReadWritePaths=-/run/lock/recover".into(),
        "StateDirectory=recover".into(),
        "PrivateTmp=yes".into(),
        "UMask=0077".into(),
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6".into(),
        "CapabilityBoundingSet=".into(),
        "KillMode=mixed".into(),
    ] {
        assert!(lines.contains(&want.as_str()), "no `{want}` in\n{unit}");
    }
    let tmpfiles = std::fs::read_to_string(p.join("lib/tmpfiles.d/recover.conf")).unwrap();
    assert!(
        tmpfiles
            .lines()
            .any(|l| l == "d /run/lock/recover 1770 root recover"),
        "{tmpfiles}"
    );
    for conf in ["watch.conf", "upsmon-hook.conf"] {
        let text = std::fs::read_to_string(p.join("share/recover").join(conf)).unwrap();
        assert!(
            text.contains(&format!(
                "RECOVER_RUNBOOK=\"{}/share/recover/runbooks/spark-power.yaml\"",
                p.display()
            )),
            "{conf}: {text}"
        );
    }
    assert!(p.join("share/man/man1/recover-watch.1").is_file());
    // The exposure, where systemd-analyze can judge a unit file offline (systemd 250 and later).
    if let Some(analyze) = common::find_tool(&["systemd-analyze"]) {
        let out = Command::new(analyze)
            .args(["security", "--offline=yes", "--threshold=40", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.contains("Unknown command")
            && !String::from_utf8_lossy(&out.stderr).contains("unrecognized option")
        {
            assert!(out.status.success(), "exposure above 4.0:\n{}", show(&out));
            let level = text
                .lines()
                .find_map(|l| {
                    l.split("Overall exposure level for recover-watch.service: ")
                        .nth(1)
                })
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no exposure level:\n{}", show(&out)));
            assert!(level <= 4.0, "{level}");
        }
    }
}
