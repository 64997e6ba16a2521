//! Files (issue 20): what recover writes is private whatever the umask (directories 0700,
//! files 0600), and a hostile journal cannot make `recover report` read outside the state
//! directory. The real binary, no target needed (`local:` steps, a journal written here).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{clean_command, only_journal, p, run_bounded, text, write_runbook};

const LIMIT: Duration = Duration::from_secs(60);

/// `recover ARGS` under `umask`, in `state`'s environment.
fn recover_with_umask(state: &Path, umask: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = clean_command("sh", state);
    cmd.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_recover"))
        .args(args);
    run_bounded(cmd, LIMIT)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

#[test]
fn journals_and_reports_are_private_whatever_the_umask() {
    for umask in ["000", "022"] {
        let dir = tempfile::tempdir().unwrap();
        let rb = write_runbook(
            dir.path(),
            "private",
            "  lab: { host: 127.0.0.1, port: 9 }\n",
            "",
            "      - local: echo the box said dmesg and tailscale\n",
        );
        let out = recover_with_umask(dir.path(), umask, &["run", "--yes", p(&rb)]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let state = dir.path().join("recover");
        let journal = only_journal(dir.path());
        for d in [state.clone(), state.join("runs")] {
            assert_eq!(mode(&d), 0o700, "umask {umask}: {}", d.display());
        }
        assert_eq!(mode(&journal), 0o600, "umask {umask}: the journal");

        let report = dir.path().join("report.md");
        let out = recover_with_umask(
            dir.path(),
            umask,
            &["report", p(&journal), "-o", p(&report)],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(mode(&report), 0o600, "umask {umask}: the report");
    }
}

#[test]
fn a_journal_naming_the_runbook_dot_dot_cannot_make_report_read_outside_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    // Where `rehearsals/../../x.json` leads from the state directory ($XDG_STATE_HOME/recover):
    // a FIFO, which an open for reading would wait on for ever.
    fs::create_dir_all(dir.path().join("recover/rehearsals")).unwrap();
    let bait = dir.path().join("x.json");
    let c = std::ffi::CString::new(bait.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path in this test's directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let journal = dir.path().join("hostile.jsonl");
    fs::write(
        &journal,
        concat!(
            r#"{"event":"run_started","run_id":"ab12cd34","mode":"run","runbook":"../../x","path":"x.yaml","sha256":"00","budget":600.0,"steps":1,"phases":1,"resumed_from":null,"first_step":1,"targets":[],"ts":"2026-12-03T13:00:00.000Z"}"#,
            "\n",
            r#"{"event":"run_finished","outcome":"success","exit_code":0,"at":1.0,"budget":600.0,"failed_step":null,"message":"ok","resume":null,"ts":"2026-12-03T13:00:01.000Z"}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = common::recover_in(dir.path())
        .args(["report", p(&journal)])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some(),
        "report hung: it opened {} through the journal's runbook name",
        bait.display()
    );
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
