//! A real NUT `upsd` with the `dummy-ups` driver (Debian's nut-server) on 127.0.0.1, in its
//! own temporary directory, for integration tests.
//!
//! The driver reads `<ups>.dev` (`ups.status: OL CHRG`, `battery.charge: 64`) and reads it
//! again whenever its modification time changes: [`Upsd::set`] rewrites it and waits until
//! upsd serves the new values. [`Upsd::freeze_driver`] stops the driver (SIGSTOP), so upsd
//! declares the data stale (`ERR DATA-STALE`) after `MAXAGE`; [`Upsd::stop_driver`] ends it
//! (`ERR DRIVER-NOT-CONNECTED`).
//!
//! `upsd.users` holds one account, [`MONITOR_USER`], for a `upsmon` ([`super::upsmon`]).
//!
//! As root both daemons drop to the `nut` user: the directory is world-readable and its state
//! directory (the driver's socket) belongs to `nut`. `NUT_CONFPATH` and `NUT_STATEPATH` point
//! them at the directory. Every wait is bounded; a failure panics with both logs.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

use super::{free_port, require_tool};

const UPSD: &str = "/lib/nut/upsd";
const DUMMY_UPS: &str = "/lib/nut/dummy-ups";
const NUT_USER: &str = "nut";
/// upsd declares data stale when the driver has not answered for this many seconds.
pub const MAXAGE_SECS: u64 = 3;
/// How long a state change may take to show through upsd.
const SETTLE: Duration = Duration::from_secs(15);
const PORT_ATTEMPTS: usize = 5;
/// The account in `upsd.users` a `upsmon` (`tests/common/upsmon.rs`) logs in with.
pub const MONITOR_USER: &str = "recover-monitor";
pub const MONITOR_PASSWORD: &str = "recover-monitor-pw";

/// A running upsd serving one dummy UPS. Dropping it stops both daemons and removes the
/// directory.
pub struct Upsd {
    dir: TempDir,
    name: String,
    port: u16,
    upsd: Option<Child>,
    driver: Option<Child>,
    epoch: SystemTime,
    writes: u64,
}

impl Upsd {
    /// Starts a driver reporting `status` and `charge` for UPS `name` and a upsd on a free
    /// port, and waits until upsd serves that status. `None`, with a visible skip line (a
    /// failure under CI), when nut-server is not installed.
    pub fn start(name: &str, status: &str, charge: u32) -> Option<Upsd> {
        for tool in [UPSD, DUMMY_UPS] {
            require_tool(&[tool])?;
        }
        let dir = tempfile::Builder::new()
            .prefix("recover-nut-")
            .tempdir()
            .expect("create the upsd tempdir");
        let mut upsd = Upsd {
            dir,
            name: name.to_string(),
            port: 0,
            upsd: None,
            driver: None,
            epoch: SystemTime::now(),
            writes: 0,
        };
        upsd.prepare_dirs();
        upsd.write_file(
            "ups.conf",
            &format!(
                "[{name}]\n  driver = dummy-ups\n  port = {name}.dev\n  desc = \"recover test\"\n"
            ),
        );
        upsd.write_file(
            "upsd.users",
            &format!("[{MONITOR_USER}]\n  password = {MONITOR_PASSWORD}\n  upsmon primary\n"),
        );
        upsd.write_dev(status, charge);
        upsd.start_driver();
        for _ in 0..PORT_ATTEMPTS {
            upsd.port = free_port();
            upsd.write_file(
                "upsd.conf",
                &format!("LISTEN 127.0.0.1 {}\nMAXAGE {MAXAGE_SECS}\n", upsd.port),
            );
            let child = upsd.command(UPSD, &[]).spawn().expect("spawn upsd");
            upsd.upsd = Some(child);
            if upsd.wait_until(|r| r == format!("\"{status}\"")) {
                return Some(upsd);
            }
            if let Some(mut c) = upsd.upsd.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        upsd.fail(&format!("upsd never served status {status:?}"));
    }

    /// 127.0.0.1.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UPS as upsmon's `MONITOR` line names it: `name@127.0.0.1:port`.
    pub fn monitor(&self) -> String {
        format!("{}@{}:{}", self.name, self.host(), self.port)
    }

    /// Rewrites the driver's `.dev` file and waits until upsd serves the new status and charge.
    pub fn set(&mut self, status: &str, charge: u32) {
        self.write_dev(status, charge);
        let (want_status, want_charge) = (format!("\"{status}\""), format!("\"{charge}\""));
        let ok = self.wait_until(|r| r == want_status)
            && self.wait_var_until("battery.charge", |r| r == want_charge);
        if !ok {
            self.fail(&format!("upsd never served {status:?} / {charge}"));
        }
    }

    /// Stops the driver (SIGSTOP) and waits until upsd answers `ERR DATA-STALE`.
    pub fn freeze_driver(&mut self) {
        self.signal_driver(libc::SIGSTOP);
        if !self.wait_until(|r| r == "ERR DATA-STALE") {
            self.fail("upsd never declared the data stale");
        }
    }

    /// Lets a frozen driver go on (SIGCONT) and waits until upsd serves its status again.
    pub fn thaw_driver(&mut self) {
        self.signal_driver(libc::SIGCONT);
        if !self.wait_until(|r| r.starts_with('"')) {
            self.fail("upsd never served the driver's data again");
        }
    }

    /// Ends the driver and waits until upsd answers `ERR DRIVER-NOT-CONNECTED`.
    pub fn stop_driver(&mut self) {
        if let Some(mut c) = self.driver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.wait_until(|r| r == "ERR DRIVER-NOT-CONNECTED") {
            self.fail("upsd never noticed the driver was gone");
        }
    }

    /// What upsd answers to `GET VAR <ups> <var>` right now: the quoted value or `ERR CODE`
    /// (read with a plain socket, not with the code under test).
    pub fn query(&self, var: &str) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(format!("GET VAR {} {var}\n", self.name).as_bytes())
            .ok()?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).ok()?;
        let _ = stream.write_all(b"LOGOUT\n");
        let line = line.trim_end();
        let prefix = format!("VAR {} {var} ", self.name);
        Some(line.strip_prefix(&prefix).unwrap_or(line).to_string())
    }

    fn wait_until(&mut self, ok: impl Fn(&str) -> bool) -> bool {
        self.wait_var_until("ups.status", ok)
    }

    fn wait_var_until(&mut self, var: &str, ok: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            if self.query(var).is_some_and(|r| ok(&r)) {
                return true;
            }
            if let Some(c) = self.upsd.as_mut()
                && !matches!(c.try_wait(), Ok(None))
            {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn signal_driver(&self, signal: i32) {
        let pid = self
            .driver
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("the driver is running");
        // SAFETY: kill(2) on the pid of a child this struct started and has not reaped.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    fn start_driver(&mut self) {
        let child = self
            .command(DUMMY_UPS, &["-a", &self.name.clone()])
            .spawn()
            .expect("spawn dummy-ups");
        self.driver = Some(child);
    }

    /// `program -F [-u nut] args...` with the NUT paths set and output to `<program>.log`.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let base = Path::new(program)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("nut");
        let log = fs::File::create(self.path(&format!("{base}.log"))).expect("create a log");
        let mut cmd = Command::new(program);
        cmd.args(args).arg("-F");
        if is_root() {
            cmd.args(["-u", NUT_USER]);
        }
        cmd.env("NUT_CONFPATH", self.dir.path())
            .env("NUT_STATEPATH", self.state_dir())
            .env("NUT_ALTPIDPATH", self.state_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone a log handle"))
            .stderr(log);
        cmd
    }

    fn prepare_dirs(&self) {
        fs::set_permissions(self.dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the upsd dir");
        fs::create_dir(self.state_dir()).expect("create the NUT state dir");
        fs::set_permissions(self.state_dir(), fs::Permissions::from_mode(0o770))
            .expect("chmod the NUT state dir");
        if is_root() {
            let (uid, gid) = nut_ids().unwrap_or_else(|| {
                panic!("user {NUT_USER} missing: nut-server's package creates it")
            });
            std::os::unix::fs::chown(self.state_dir(), Some(uid), Some(gid))
                .expect("chown the NUT state dir");
        }
    }

    /// The `.dev` file, written whole (temp file and rename) with a modification time that
    /// always moves forward, so the driver sees every change even within one second.
    fn write_dev(&mut self, status: &str, charge: u32) {
        self.writes += 1;
        let tmp = self.path(".dev.tmp");
        fs::write(
            &tmp,
            format!("ups.status: {status}\nbattery.charge: {charge}\n"),
        )
        .expect("write the .dev file");
        let file = fs::File::options()
            .write(true)
            .open(&tmp)
            .expect("open the .dev file");
        file.set_modified(self.epoch + Duration::from_secs(self.writes))
            .expect("set the .dev file's mtime");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).expect("chmod .dev");
        fs::rename(&tmp, self.path(&format!("{}.dev", self.name))).expect("rename .dev");
    }

    fn write_file(&self, name: &str, text: &str) {
        let path = self.path(name);
        fs::write(&path, text).expect("write a NUT config file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod a config");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    fn fail(&self, what: &str) -> ! {
        let log = |n: &str| fs::read_to_string(self.path(n)).unwrap_or_default();
        panic!(
            "{what}\n--- upsd.log\n{}\n--- dummy-ups.log\n{}",
            log("upsd.log"),
            log("dummy-ups.log")
        );
    }
}

impl Drop for Upsd {
    fn drop(&mut self) {
        for child in [self.driver.take(), self.upsd.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn nut_ids() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(NUT_USER))?;
    let mut fields = line.split(':').skip(2);
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((uid, gid))
}
