//! Running `recover` to its end or in the background, and waiting for something to happen,
//! always bounded in time and in count.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{clean_command, recover_in};

/// How many lines of each stream [`Ran::context`] shows.
const CONTEXT_LINES: usize = 100;

/// Lossy UTF-8 of a process's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The last `lines` lines of `s`.
pub fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A path as the `&str` an argument list wants.
pub fn p(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Polls `cond` every 50 ms for at most `timeout`.
pub fn eventually(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    eventually_every(Duration::from_millis(50), timeout, cond)
}

/// Polls `cond` every `every` for at most `timeout` (for a `cond` that is costly to ask).
pub fn eventually_every(
    every: Duration,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    // Each round sleeps `every`, so the deadline comes before the count runs out.
    let rounds = timeout.as_millis() / every.as_millis().max(1) + 2;
    for _ in 0..rounds {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(every);
    }
    false
}

/// What a finished `recover` run left behind.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Ran {
    /// The exit, the time taken and the end of both streams, for assertion messages.
    pub fn context(&self) -> String {
        format!(
            "exit {:?} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.took,
            tail(&self.stdout, CONTEXT_LINES),
            tail(&self.stderr, CONTEXT_LINES)
        )
    }
}

/// Runs `recover ARGS` ([`recover_in`]: clean environment, state under `state`, plus `env`) to
/// its end, at most `limit`.
pub fn run_to_end(state: &Path, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Ran {
    let mut cmd = recover_in(state);
    cmd.args(args).timeout(limit);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd.output().expect("run recover");
    Ran {
        code: out.status.code(),
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
        took: started.elapsed(),
    }
}

/// `recover` started in the background with the environment [`recover_in`] gives it, its
/// output going to `bg.stdout` and `bg.stderr` in the state directory. Killed when dropped.
pub struct Background {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    /// `recover ARGS` with state under `state` (created if need be), plus `env`.
    pub fn start(state: &Path, args: &[&str], env: &[(&str, &str)]) -> Background {
        fs::create_dir_all(state).expect("create the state directory");
        let stdout = state.join("bg.stdout");
        let stderr = state.join("bg.stderr");
        let mut cmd = clean_command(env!("CARGO_BIN_EXE_recover"), state);
        cmd.args(args)
            .stdout(Stdio::from(
                fs::File::create(&stdout).expect("create bg.stdout"),
            ))
            .stderr(Stdio::from(
                fs::File::create(&stderr).expect("create bg.stderr"),
            ));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Background {
            child: cmd.spawn().expect("spawn recover"),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid fits an i32")
    }

    /// Waits at most `timeout` for the exit; None if it is still running.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let every = Duration::from_millis(20);
        let mut status = None;
        eventually_every(every, timeout, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status
    }

    /// The file its stdout goes to.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// Everything it printed so far: stdout, then stderr.
    pub fn output(&self) -> String {
        let mut s = String::new();
        for f in [&self.stdout, &self.stderr] {
            s.push_str(&fs::read(f).map(|b| text(&b)).unwrap_or_default());
        }
        s
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
