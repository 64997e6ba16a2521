//! A real NUT `upsmon` (Debian's nut-client) on this machine, in its own temporary directory,
//! watching one UPS over the network and running a `NOTIFYCMD` on its events: what starts an
//! unattended recovery when mains returns (`contrib/recover-upsmon-hook`).
//!
//! ```ignore
//! let upsd = Upsd::start("tups", "OB", 90)?;                       // tests/common/nut.rs
//! let mon = Upsmon::start(&upsd.monitor(), MONITOR_USER, MONITOR_PASSWORD, &hook,
//!                         &[("RECOVER_UNATTENDED_CONF", conf)])?;
//! ```
//!
//! Its configuration (`upsmon.conf`, mode 0600; `NUT_CONFPATH` points at the directory):
//! `RUN_AS_USER root`, one `MONITOR` line (power value 1, `primary`), `NOTIFYCMD` the given
//! program, `NOTIFYFLAG ONLINE EXEC` and `ONBATT EXEC` (so a test can tell upsmon has seen the
//! UPS on battery before it flips it back), every other event `IGNORE` (no `wall` to the
//! machine's terminals), `POLLFREQ 1`, and `SHUTDOWNCMD "/bin/true"` with the power-down flag
//! in the directory: it can never shut the machine down. The `NOTIFYCMD` inherits the
//! environment given here, plus upsmon's `NOTIFYTYPE` and `UPSNAME`.
//!
//! upsmon allows one instance per machine: as root it keeps its pid in `/run/nut/upsmon.pid`
//! (NUT_ALTPIDPATH does not move it) and refuses to start beside a live one. So a `Upsmon` holds
//! an exclusive lock on [`MACHINE_LOCK`] for its whole life (another test process waits for it,
//! bounded), and skips visibly (fails under CI) when an upsmon it did not start is running.
//! upsmon forks a monitoring child: both run in their own process group, which `Drop` ends
//! (SIGTERM, then SIGKILL) by its id.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::process::eventually;
use super::{require_tool, skipped};

const UPSMON: &str = "/lib/nut/upsmon";
/// Where upsmon (as root) keeps its pid, whatever NUT_ALTPIDPATH says.
const PID_FILE: &str = "/run/nut/upsmon.pid";
/// Held while a test's upsmon runs: one upsmon per machine.
pub const MACHINE_LOCK: &str = "/tmp/recover-test-upsmon.lock";
/// How long to wait for another test process's upsmon to end.
const LOCK_WAIT: Duration = Duration::from_secs(600);
/// The events upsmon would otherwise `wall` to every terminal: ignored here.
const QUIET: &[&str] = &[
    "LOWBATT", "FSD", "COMMOK", "COMMBAD", "SHUTDOWN", "REPLBATT", "NOCOMM", "NOPARENT",
];

/// A running upsmon. Dropping it stops it (the whole process group) and releases the lock.
pub struct Upsmon {
    dir: TempDir,
    child: Option<Child>,
    _lock: fs::File,
}

impl Upsmon {
    /// Starts upsmon watching `ups` (`name@host:port`, logging in as `user`/`password`, which
    /// upsd.users must grant `upsmon primary`), running `notifycmd` on ONLINE and ONBATT with
    /// `env` added to its environment. `None`, with a visible skip line (a failure under CI),
    /// when nut-client is not installed, when not root (RUN_AS_USER root and /run/nut need
    /// it), or when an upsmon this harness did not start runs on the machine.
    pub fn start(
        ups: &str,
        user: &str,
        password: &str,
        notifycmd: &Path,
        env: &[(&str, &str)],
    ) -> Option<Upsmon> {
        Upsmon::start_as("root", ups, user, password, notifycmd, env)
    }

    /// [`Upsmon::start`] with `RUN_AS_USER run_as`: upsmon's monitoring child (which runs the
    /// `NOTIFYCMD`) drops to that account, as Debian's nut-client runs it as `nut`. Its
    /// directory is then readable by that account and its state directory owned by it.
    pub fn start_as(
        run_as: &str,
        ups: &str,
        user: &str,
        password: &str,
        notifycmd: &Path,
        env: &[(&str, &str)],
    ) -> Option<Upsmon> {
        require_tool(&[UPSMON])?;
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            super::skip::skipped_unless_ci(
                "needs root: upsmon runs with RUN_AS_USER root and keeps its pid in /run/nut",
            );
            return None;
        }
        let lock = machine_lock();
        if let Some(pid) = live_upsmon() {
            let why = format!(
                "an upsmon this test did not start runs here (pid {pid}, {PID_FILE}): upsmon allows one per machine"
            );
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                "{why}; CI is set, where this is a broken setup"
            );
            skipped(&why);
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("recover-upsmon-")
            .tempdir()
            .expect("create the upsmon tempdir");
        fs::create_dir(dir.path().join("state")).expect("create upsmon's state dir");
        if run_as != "root" {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
                .expect("chmod upsmon's dir");
            let chown = Command::new("chown")
                .arg(run_as)
                .arg(dir.path().join("state"))
                .status()
                .expect("run chown");
            assert!(chown.success(), "chown {run_as} upsmon's state dir");
        }
        let mut conf = format!(
            "RUN_AS_USER {run_as}\n\
             MONITOR {ups} 1 {user} {password} primary\n\
             MINSUPPLIES 1\n\
             SHUTDOWNCMD \"/bin/true\"\n\
             POWERDOWNFLAG {}\n\
             NOTIFYCMD \"{}\"\n\
             NOTIFYFLAG ONLINE EXEC\n\
             NOTIFYFLAG ONBATT EXEC\n\
             POLLFREQ 1\n\
             POLLFREQALERT 1\n\
             DEADTIME 3\n",
            dir.path().join("killpower").display(),
            notifycmd.display()
        );
        for event in QUIET {
            conf.push_str(&format!("NOTIFYFLAG {event} IGNORE\n"));
        }
        let path = dir.path().join("upsmon.conf");
        fs::write(&path, conf).expect("write upsmon.conf");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod upsmon.conf");
        let log = fs::File::create(dir.path().join("upsmon.log")).expect("create upsmon.log");
        let mut cmd = Command::new(UPSMON);
        cmd.arg("-F")
            .env("NUT_CONFPATH", dir.path())
            .env("NUT_STATEPATH", dir.path().join("state"))
            .env("NUT_ALTPIDPATH", dir.path().join("state"))
            .envs(env.iter().copied())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn upsmon");
        let mon = Upsmon {
            dir,
            child: Some(child),
            _lock: lock,
        };
        let up = eventually(Duration::from_secs(10), || {
            mon.log().contains(&format!("UPS: {ups}"))
        });
        if !up {
            mon.fail("upsmon did not start monitoring");
        }
        Some(mon)
    }

    /// What upsmon printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("upsmon.log")).unwrap_or_default()
    }

    /// Its configuration directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether upsmon still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn fail(&self, what: &str) -> ! {
        panic!("{what}\n--- upsmon.log\n{}", self.log());
    }
}

impl Drop for Upsmon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The process group upsmon leads: it and its monitoring child.
        let group = -(child.id() as i32);
        // SAFETY: kill(2) of the process group this struct created (process_group(0)).
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
        let gone = eventually(Duration::from_secs(5), || {
            // SAFETY: signal 0 only asks whether the group has a live member.
            matches!(child.try_wait(), Ok(Some(_))) && unsafe { libc::kill(group, 0) } != 0
        });
        if !gone {
            // SAFETY: as above.
            unsafe {
                libc::kill(group, libc::SIGKILL);
            }
        }
        let _ = child.wait();
        // Its pid file, left by the group just ended (no live upsmon holds it any more).
        if fs::metadata(PID_FILE).is_ok() && live_upsmon().is_none() {
            let _ = fs::remove_file(PID_FILE);
        }
    }
}

/// The machine-wide lock, waited for at most [`LOCK_WAIT`].
fn machine_lock() -> fs::File {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(MACHINE_LOCK)
        .expect("open the upsmon lock");
    let locked = eventually(LOCK_WAIT, || {
        // SAFETY: flock(2) on a file descriptor this function owns.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    });
    assert!(
        locked,
        "another test's upsmon held {MACHINE_LOCK} for {LOCK_WAIT:?}"
    );
    file
}

/// The pid of a live upsmon recorded in upsmon's pid file, if any (a zombie is not live).
fn live_upsmon() -> Option<i32> {
    let pid: i32 = fs::read_to_string(PID_FILE).ok()?.trim().parse().ok()?;
    let stat = fs::read_to_string(PathBuf::from(format!("/proc/{pid}/stat"))).ok()?;
    let state = stat.rsplit(')').next()?.split_whitespace().next()?;
    (state != "Z" && stat.contains("(upsmon)")).then_some(pid)
}
