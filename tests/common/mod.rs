//! The integration-test harness: real servers on 127.0.0.1 and the `recover` binary in a clean
//! environment. Included by each integration test file with `mod common;`; every test file
//! launches `recover` through it, never on its own.
//!
//! - [`Sshd`]: a real OpenSSH daemon with its own keys, known_hosts and ssh_config.
//! - [`HttpServer`]: a small real HTTP/1.1 server with routes set at run time.
//! - [`recover_in`]: the `recover` binary with `XDG_STATE_HOME` in the caller's directory;
//!   [`recover`] with a shared one, for runs whose state nobody reads.
//! - [`process`]: [`run_to_end`], [`Background`], [`eventually`]: runs and waits, bounded.
//! - [`journal`]: the journals a run writes, and their events.
//! - [`runbook`]: [`write_runbook`], [`remote_pid_alive`], [`logins`], [`sha256_file`].
//! - [`skip`]: [`require_tool`], [`say`]: skips that show, and fail in CI.
//! - [`nut`], [`upsmon`]: a real upsd with the dummy-ups driver, and a real upsmon running a
//!   NOTIFYCMD on its events.
//!
//! ```ignore
//! mod common;
//! use common::{HttpServer, Sshd, recover_in};
//!
//! #[test]
//! fn a_run_step_reaches_the_target() {
//!     let Some(sshd) = Sshd::start_or_skip() else { return };
//!     let api = HttpServer::start();
//!     api.respond("GET", "/health", 200, "ok");
//!     let dir = tempfile::tempdir().unwrap();
//!     let runbook = dir.path().join("rb.yaml");
//!     std::fs::write(&runbook, format!(
//!         "name: t\nbudget: 5m\ntargets:\n{}vars:\n  api: {}\nphases: ...",
//!         sshd.runbook_target_yaml("lab"), api.url())).unwrap();
//!     recover_in(dir.path()).args(["run", "--yes"]).arg(&runbook).assert().success();
//!     assert_eq!(sshd.ssh("cat /tmp/marker").stdout, b"done\n");
//!     assert!(api.wait_for_requests("/health", 1, std::time::Duration::from_secs(5)));
//! }
//! ```

// Each test file uses a different part of this module (and of its re-exports).
#![allow(dead_code, unused_imports)]

pub mod http;
pub mod ipmi;
pub mod journal;
pub mod nut;
pub mod process;
pub mod runbook;
pub mod skip;
pub mod sshd;
pub mod upsmon;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

pub use http::{HttpServer, Request, closed_port_url};
pub use journal::{
    dump, dump_without_progress, events, journals_in, last_event, only_journal, read_journal,
    started_steps, step_event, wait_for_event,
};
pub use process::{Background, Ran, eventually, eventually_every, p, run_to_end, tail, text};
pub use runbook::{logins, remote_pid_alive, sha256_file, write_runbook};
pub use skip::{find_tool, require_root, require_tool, say, skipped};
pub use sshd::{ALIAS, Sshd, free_port, run_bounded};

/// The bound put on every `recover` run unless the test sets its own `.timeout(..)`.
pub const RECOVER_TIMEOUT: Duration = Duration::from_secs(120);

/// The machine-wide lock directory of a test's runs, in its state directory.
pub const LOCK_DIR: &str = "machine-locks";

/// Variables that would make the run depend on the developer's terminal or shell.
const REMOVED_VARS: &[&str] = &[
    "TERM",
    "COLORTERM",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "FORCE_COLOR",
    "COLUMNS",
    "LINES",
    "TERM_PROGRAM",
    "TERM_PROGRAM_VERSION",
    "TMUX",
    "STY",
    "WT_SESSION",
    "VTE_VERSION",
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "XDG_STATE_HOME",
];

/// The `recover` binary with a clean environment and its state (journals) under `state_dir`:
/// `XDG_STATE_HOME=state_dir`, `NO_COLOR=1`, terminal variables, the ssh agent and every
/// `RECOVER_*` variable removed, stdin empty, and a 120 s timeout (override with `.timeout`).
/// The machine-wide lock directory is `state_dir`'s [`LOCK_DIR`] (`RECOVER_LOCK_DIR`), so that
/// runs with the same `state_dir` see each other's locks and other tests' runs do not.
/// `state_dir` must be absolute: a relative `XDG_STATE_HOME` is ignored (XDG base directory
/// spec), and the state would go to the developer's `~/.local/state`.
pub fn recover_in(state_dir: &Path) -> assert_cmd::Command {
    let mut cmd =
        assert_cmd::Command::from_std(clean_command(env!("CARGO_BIN_EXE_recover"), state_dir));
    cmd.timeout(RECOVER_TIMEOUT);
    cmd
}

/// Any program with the environment `recover_in` gives `recover` (see there).
pub fn clean_command(program: impl AsRef<OsStr>, state_dir: &Path) -> std::process::Command {
    assert!(
        state_dir.is_absolute(),
        "the state directory must be absolute: {}",
        state_dir.display()
    );
    let mut cmd = std::process::Command::new(program);
    for var in REMOVED_VARS {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RECOVER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("XDG_STATE_HOME", state_dir)
        .env("RECOVER_LOCK_DIR", state_dir.join(LOCK_DIR))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    cmd
}

/// `recover_in` with a state directory shared by the whole test process (removed at exit):
/// for runs whose state nobody inspects (`--help`, `check`, usage errors). Tests that read or
/// depend on the journal must use their own directory with [`recover_in`].
pub fn recover() -> assert_cmd::Command {
    recover_in(&shared_state_dir())
}

fn shared_state_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("recover-state-")
            .tempdir()
            .expect("create a state tempdir")
            .keep();
        // Statics are never dropped: remove the directory when the test process exits.
        extern "C" fn remove_shared_state() {
            if let Some(dir) = DIR.get() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        // SAFETY: registers a plain function with atexit(3); it only reads a set OnceLock.
        unsafe {
            libc::atexit(remove_shared_state);
        }
        dir
    })
    .clone()
}
