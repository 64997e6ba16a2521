//! Text from the box cannot drive the operator's terminal (issue 20): the loopback sshd with a
//! shell start-up file (`BASH_ENV`, read as a login account's `~/.bashrc` is) that prints
//! `ESC ] 0;pwned BEL ESC [2J` (set the window title, clear the screen), and a `systemctl`
//! whose `show` values hold the same. Nothing of it reaches the plain or the terminal view.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{Sshd, clean_command, p, run_bounded, run_to_end, text, write_runbook};

/// What the hostile box prints.
const JUNK: &str = "\x1b]0;pwned\x07\x1b[2J";
/// The shell line that prints it.
const PRINT_JUNK: &str = r"printf '\033]0;pwned\007\033[2J'";

const LIMIT: Duration = Duration::from_secs(90);

/// No escape (ESC) and no bell in `s`.
fn no_escapes(what: &str, s: &str) {
    assert!(
        !s.contains('\x1b') && !s.contains('\x07'),
        "{what}: the box's escapes reached the output:\n{s:?}"
    );
}

fn runbook(dir: &Path, sshd: &Sshd, steps: &str) -> std::path::PathBuf {
    write_runbook(dir, "hostile", &sshd.runbook_target_yaml("lab"), "", steps)
}

#[test]
fn a_shell_rc_printing_escapes_fails_the_connection_naming_them_and_never_reaches_the_terminal() {
    let Some(mut sshd) = Sshd::start_or_skip() else {
        return;
    };
    sshd.set_shell_rc(&format!("{PRINT_JUNK}\n"));
    // The box's shell really prints them, before every command's own output.
    assert!(text(&sshd.ssh("true").stdout).contains(JUNK));

    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(dir.path(), &sshd, "      - run: touch @DIR@/ran\n");
    for json in [false, true] {
        let mut args = vec!["run", "--yes", p(&rb)];
        if json {
            args.push("--json");
        }
        let ran = run_to_end(dir.path(), &args, &[], LIMIT);
        assert!(ran.code.is_some_and(|c| c != 0), "{}", ran.context());
        no_escapes("stderr", &ran.stderr);
        no_escapes("stdout", &ran.stdout);
        assert!(
            ran.stderr.contains(r"printed `\e]0;pwned\a\e[2J")
                && ran.stderr.contains("not a boot id (a UUID)"),
            "{}",
            ran.context()
        );
    }
    assert!(!dir.path().join("ran").exists());
}

#[test]
fn escapes_a_box_prints_in_step_output_are_cleaned_in_the_plain_and_the_terminal_view() {
    let Some(mut sshd) = Sshd::start_or_skip() else {
        return;
    };
    // On stderr only: the boot id is read cleanly, every step's stderr starts with them.
    sshd.set_shell_rc(&format!("{PRINT_JUNK} >&2\n"));
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(
        dir.path(),
        &sshd,
        "      - run: |\n          printf 'before\\033]0;pwned\\007\\033[2Jafter\\n' >&2; exit 3\n",
    );
    let ran = run_to_end(dir.path(), &["run", "--yes", p(&rb)], &[], LIMIT);
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    no_escapes("plain view", &ran.stderr);
    assert!(
        ran.stderr
            .lines()
            .any(|l| l.contains("stderr| before") && l.contains("after")),
        "the step's stderr is shown, cleaned: {}",
        ran.context()
    );

    // The terminal view, on a real pseudo-terminal (`script`): its own drawing uses escapes,
    // never the box's.
    let Some(_) = common::require_tool(&["script"]) else {
        return;
    };
    let mut cmd = clean_command("script", dir.path());
    cmd.env("TERM", "xterm").args([
        "-qfec",
        &format!("{} run --yes {}", env!("CARGO_BIN_EXE_recover"), p(&rb)),
        "/dev/null",
    ]);
    let out = run_bounded(cmd, LIMIT);
    let screen = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{screen}");
    assert!(
        screen.contains("FAILED (exit 3)") && screen.contains("beforeafter"),
        "the terminal view, the step's stderr cleaned: {screen:?}"
    );
    for bad in ["\x1b]0;", "\x1b[2J", "\x07"] {
        assert!(
            !screen.contains(bad),
            "{bad:?} reached the terminal: {screen:?}"
        );
    }
}

#[test]
fn values_of_systemctl_show_from_the_box_are_cleaned_in_the_audit() {
    let Some(mut sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A `systemctl` first on the box's PATH (a fixture for what a unit file can hold): the
    // lab's captured `show` of a real unit, after an ExecStart and a Description with escapes;
    // for `bad.service`, a failure whose stderr holds them.
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lab/systemctl-show-audit-reranker.txt");
    let fake = bin.join("systemctl");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\n\
             case \"$*\" in *bad.service*) {PRINT_JUNK} >&2; echo ' no such unit' >&2; exit 1;; esac\n\
             printf 'Description=\\033]0;pwned\\007\\033[2J evil\\n'\n\
             printf 'ExecStart={{ path=/usr/bin/vllm ; argv[]=/usr/bin/vllm serve --port 8000 --title \\033]0;pwned\\007\\033[2Jx ; ignore_errors=no }}\\n'\n\
             cat {}\n",
            fixture.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    sshd.set_shell_rc(&format!("PATH={}:$PATH; export PATH\n", bin.display()));
    assert!(text(&sshd.ssh("systemctl show x").stdout).contains("pwned"));

    let rb = runbook(
        dir.path(),
        &sshd,
        "      - start: vllm.service\n      - start: bad.service\n",
    );
    let ran = run_to_end(dir.path(), &["audit", p(&rb)], &[], LIMIT);
    no_escapes("audit stdout", &ran.stdout);
    no_escapes("audit stderr", &ran.stderr);
    assert!(
        ran.stdout.contains("ExecStart hard-codes --port 8000"),
        "the value is shown, cleaned: {}",
        ran.context()
    );
    assert!(
        ran.stderr.contains("error: step 2 (bad.service)") && ran.stderr.contains("no such unit"),
        "{}",
        ran.context()
    );
}
