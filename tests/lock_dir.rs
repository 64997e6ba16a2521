//! The machine-wide lock directory nobody can jam (issue 20): the real `recover` binary with
//! its lock directory (`RECOVER_LOCK_DIR`, the tests' `machine-locks`) made hostile, against
//! the loopback sshd. A FIFO planted as a lock file never blocks `--dry-run` or `rehearse`,
//! and a run refuses it; a directory every account can write is refused before anything is
//! contacted.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Sshd, journals_in, logins, p, recover_in, write_runbook};

/// A bound no step of these runs comes near: a blocked open would reach it.
const BOUND: Duration = Duration::from_secs(30);

fn runbook(dir: &Path, sshd: &Sshd) -> std::path::PathBuf {
    write_runbook(
        dir,
        "jam",
        &sshd.runbook_target_yaml("lab"),
        "",
        "      - run: touch @DIR@/ran\n",
    )
}

/// `recover ARGS` in `dir`, bounded: (exit code, stderr, time taken).
fn recover(dir: &Path, args: &[&str]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let out = recover_in(dir).args(args).timeout(BOUND).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_fifo_planted_as_a_lock_file_never_blocks_a_dry_run_or_a_rehearsal_and_a_run_refuses_it() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(dir.path(), &sshd);
    let locks = dir.path().join(common::LOCK_DIR);
    fs::create_dir(&locks).unwrap();
    let fifo = locks.join("runbook-jam.lock");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path in this test's directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);

    for args in [vec!["run", "--dry-run", p(&rb)], vec!["rehearse", p(&rb)]] {
        let (code, stderr, took) = recover(dir.path(), &args);
        assert_eq!(code, Some(0), "{args:?} after {took:?}: {stderr}");
        assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
    }

    let before = logins(&sshd);
    let (code, stderr, _) = recover(dir.path(), &["run", "--yes", p(&rb)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot take the lock {}", fifo.display()))
            && stderr.contains("not a plain lock file (a FIFO"),
        "{stderr}"
    );
    assert_eq!(logins(&sshd), before, "a refused run logged in");
    assert!(!dir.path().join("ran").exists());
}

#[test]
fn a_lock_directory_every_account_can_write_is_refused_before_anything_is_contacted() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(dir.path(), &sshd);
    let locks = dir.path().join(common::LOCK_DIR);
    fs::create_dir(&locks).unwrap();
    fs::set_permissions(&locks, fs::Permissions::from_mode(0o1777)).unwrap();
    let before = logins(&sshd);
    let (code, stderr, _) = recover(dir.path(), &["run", "--yes", p(&rb)]);
    assert_eq!(code, Some(2), "{stderr}");
    for s in [
        format!(
            "refusing the machine-wide lock directory {}: it is writable by every account (mode 1777)",
            locks.display()
        ),
        "expected a directory owned by root (or this account)".to_owned(),
        "d /run/lock/recover 1770 root recover -".to_owned(),
        "Nothing was contacted".to_owned(),
    ] {
        assert!(stderr.contains(&s), "no `{s}` in:\n{stderr}");
    }
    assert_eq!(logins(&sshd), before, "a refused run logged in");
    assert!(!dir.path().join("ran").exists());
    assert_eq!(
        fs::read_dir(&locks).unwrap().count(),
        0,
        "a lock file was made"
    );
    assert!(journals_in(dir.path()).is_empty());

    // Made as systemd-tmpfiles makes it (mode 1770), the same run goes ahead.
    fs::set_permissions(&locks, fs::Permissions::from_mode(0o1770)).unwrap();
    let (code, stderr, _) = recover(dir.path(), &["run", "--yes", p(&rb)]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(dir.path().join("ran").exists());
}
