//! A real OpenSSH `sshd` on 127.0.0.1, in its own temporary directory, for integration tests.
//!
//! Everything the daemon and the client need lives in one `TempDir`: an ed25519 host key, an
//! ed25519 client key (`id_ed25519`), `authorized_keys`, `sshd_config`, a strict `known_hosts`
//! and an `ssh_config` whose host alias [`ALIAS`] points at the daemon. [`Sshd::start`] returns
//! only once a real `ssh -F ssh_config recover-test true` has succeeded.
//!
//! Stopping kills the listener *and* every session process under it (and the remote commands
//! they run): a connection's sshd re-titles itself (`sshd: root@notty`), so a match on the
//! command line alone would miss it; the process tree is walked through `/proc` instead.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::require_tool;

thread_local! {
    /// The boot id file of the daemon [`Sshd::start_with_boot_id`] is starting.
    static BOOT_ID_FILE: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// The host alias that `ssh_config()` defines.
pub const ALIAS: &str = "recover-test";

/// How long `start()` and `start_again()` wait for the daemon to accept a real login.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many fresh ports `start()` tries when the one it picked was taken in the meantime.
const PORT_ATTEMPTS: usize = 5;
/// The default bound on a command run with [`Sshd::ssh`].
pub const SSH_TIMEOUT: Duration = Duration::from_secs(30);

const SSHD: &str = "/usr/sbin/sshd";
const PRIVSEP_DIR: &str = "/run/sshd";

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A running `sshd` on 127.0.0.1 and the client files to reach it. Dropping it stops the daemon
/// and its sessions and removes the directory.
pub struct Sshd {
    dir: TempDir,
    port: u16,
    user: String,
    child: Option<Child>,
    starts: u32,
    /// Set by [`Sshd::start_with_boot_id`]: the file bind-mounted over the kernel's boot id
    /// in the daemon's own mount namespace.
    boot_id_file: Option<PathBuf>,
}

impl Sshd {
    /// [`Sshd::start`] when OpenSSH (`sshd`, `ssh`, `ssh-keygen`) is installed; otherwise None,
    /// after saying the test is skipped ([`require_tool`]: with `CI` set, it panics instead).
    pub fn start_or_skip() -> Option<Sshd> {
        let installed = [SSHD, "ssh", "ssh-keygen"]
            .iter()
            .all(|tool| require_tool(&[tool]).is_some());
        installed.then(Sshd::start)
    }

    /// Generates the keys and configuration, starts `sshd` on a free port and waits (at most
    /// 10 s) until `ssh -F ssh_config recover-test true` succeeds. Panics with the sshd log
    /// when it does not.
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("recover-sshd-")
            .tempdir()
            .expect("create the sshd tempdir");
        // From here on a panic drops `sshd`, which stops whatever was started.
        let mut sshd = Sshd {
            dir,
            port: 0,
            user: current_user(),
            child: None,
            starts: 0,
            boot_id_file: None,
        };
        keygen(&sshd.host_key());
        keygen(&sshd.identity());
        fs::copy(
            sshd.identity().with_extension("pub"),
            sshd.authorized_keys(),
        )
        .expect("write authorized_keys");

        for attempt in 1..=PORT_ATTEMPTS {
            sshd.port = free_port();
            sshd.write_config();
            match sshd.launch() {
                Launch::Ready => return sshd,
                Launch::PortTaken if attempt < PORT_ATTEMPTS => continue,
                Launch::PortTaken => sshd.fail("the port was taken on every attempt"),
                Launch::Failed(why) => sshd.fail(&why),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Like [`Sshd::start`], but the daemon and its sessions read the boot id
    /// (`/proc/sys/kernel/random/boot_id`) from a file of the test's, bind-mounted over the
    /// kernel's in a mount namespace of the daemon's own (`unshare -m`, root only): so a test
    /// can make the target look rebooted ([`Sshd::set_boot_id`]) while every command still
    /// runs on a real sshd. `None` (after saying why) without root or `unshare`.
    pub fn start_with_boot_id(id: &str) -> Option<Sshd> {
        let installed = [SSHD, "ssh", "ssh-keygen", "unshare", "mount"]
            .iter()
            .all(|tool| require_tool(&[tool]).is_some());
        if !installed {
            return None;
        }
        if !super::skip::require_root() {
            return None;
        }
        let file = std::env::temp_dir().join(format!(
            "recover-boot-id-{}-{}",
            std::process::id(),
            free_port()
        ));
        fs::write(&file, format!("{id}\n")).expect("write the boot id file");
        BOOT_ID_FILE.with(|f| *f.borrow_mut() = Some(file));
        let sshd = Sshd::start();
        BOOT_ID_FILE.with(|f| f.borrow_mut().take());
        Some(sshd)
    }

    /// What the target's boot id reads from now on (a [`Sshd::start_with_boot_id`] daemon): a
    /// new id is a reboot, as far as a client can tell.
    pub fn set_boot_id(&self, id: &str) {
        let file = self
            .boot_id_file
            .as_ref()
            .expect("set_boot_id needs Sshd::start_with_boot_id");
        // In place (same inode): the bind mount shows the new text at once.
        fs::write(file, format!("{id}\n")).expect("write the boot id file");
    }

    /// A `systemctl` stand-in on the target's PATH (real systemd is the lab's): `start` marks
    /// the unit active in `@DIR@/units/UNIT`, `show` reports what the file says. The test stops
    /// a unit behind the run's back by removing its file.
    pub fn systemctl_standin(&mut self, dir: &Path) {
        let bin = dir.join("bin");
        fs::create_dir_all(bin.join("../units")).unwrap();
        let script = format!(
            r#"#!/bin/sh
units={units}
verb=$1
for unit in "$@"; do :; done
case "$verb" in
  start) echo active > "$units/$unit" ;;
  show)
    if [ -e "$units/$unit" ]; then st=$(cat "$units/$unit"); else st=inactive; fi
    sub=dead; [ "$st" = active ] && sub=running
    printf 'LoadState=loaded\nActiveState=%s\nSubState=%s\nResult=success\nMainPID=4242\nNRestarts=0\n' "$st" "$sub" ;;
  is-active) [ "$(cat "$units/$unit" 2>/dev/null)" = active ] ;;
  *) exit 0 ;;
esac
"#,
            units = dir.join("units").display()
        );
        let path = bin.join("systemctl");
        fs::write(&path, script).unwrap();
        let mut perm = fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        fs::set_permissions(&path, perm).unwrap();
        let mut cfg = fs::read_to_string(self.sshd_config()).unwrap();
        cfg.push_str(&format!(
            "SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin\n",
            bin.display()
        ));
        fs::write(self.sshd_config(), cfg).unwrap();
        self.stop();
        self.start_again();
    }

    /// Starts the daemon again after `stop()`: same port, same host key, same client files.
    /// Waits like `start()`. Does nothing if it is already running.
    pub fn start_again(&mut self) {
        if self.child.is_some() {
            return;
        }
        // The port was ours a moment ago; something else may grab it in between, or a
        // just-killed listener may still hold it for an instant. Retry briefly, bounded.
        for attempt in 1..=20 {
            match self.launch() {
                Launch::Ready => return,
                Launch::PortTaken if attempt < 20 => thread::sleep(Duration::from_millis(100)),
                Launch::PortTaken => self.fail(&format!("port {} stays taken", self.port)),
                Launch::Failed(why) => self.fail(&why),
            }
        }
    }

    /// Kills the daemon and every session process under it (and the remote commands they
    /// run), then reaps the listener. Existing connections drop at once, as when the target
    /// loses power with its network still answering. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(child.id());
            let _ = child.wait();
        }
        // Belt and braces: anything left that still shows this instance's config path.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(self.sshd_config())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Makes every later session's shell read `rc` first, as bash reads a login account's
    /// `~/.bashrc` (`SetEnv BASH_ENV=FILE` in sshd_config; the daemon is restarted). Returns
    /// the file: rewrite it to change what later sessions read.
    pub fn set_shell_rc(&mut self, rc: &str) -> PathBuf {
        let path = self.dir.path().join("shell-rc");
        fs::write(&path, rc).expect("write the shell rc");
        let mut cfg = fs::read_to_string(self.sshd_config()).expect("read sshd_config");
        if !cfg.contains("SetEnv BASH_ENV=") {
            cfg.push_str(&format!("SetEnv BASH_ENV={}\n", path.display()));
            fs::write(self.sshd_config(), cfg).expect("write sshd_config");
            self.stop();
            self.start_again();
        }
        path
    }

    /// Freezes (SIGSTOP) the daemon and its sessions: TCP still connects, but nothing answers,
    /// as with a hung host. Connections time out instead of dropping. Undo with `thaw()`.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            stop_tree(child.id());
        }
    }

    /// Resumes (SIGCONT) what `freeze()` stopped.
    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            let root = child.id();
            let mut pids = descendants(root);
            pids.push(root);
            for pid in pids {
                signal(pid, libc::SIGCONT);
            }
        }
    }

    /// Whether the daemon was started and not stopped since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The listener's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The user the client logs in as: the current user (`id -un`).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The host alias defined in `ssh_config()`.
    pub fn alias(&self) -> &'static str {
        ALIAS
    }

    /// The client's private key (`id_ed25519`, no passphrase).
    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// A known_hosts file holding exactly `[127.0.0.1]:PORT` and this daemon's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// An ssh_config defining `Host recover-test` with strict host key checking, batch mode,
    /// the identity and the known_hosts above.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// The daemon's configuration file (unique to this instance).
    pub fn sshd_config(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    /// The host's public key file.
    pub fn host_key_pub(&self) -> PathBuf {
        self.host_key().with_extension("pub")
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's log so far (LogLevel VERBOSE, every start appended).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A known_hosts file for the same `[127.0.0.1]:PORT` but a different ed25519 key: with it,
    /// a strict client must refuse the host.
    pub fn wrong_host_key_known_hosts(&self) -> PathBuf {
        let key = self.dir.path().join("wrong_host_ed25519_key");
        if !key.exists() {
            keygen(&key);
        }
        let path = self.dir.path().join("known_hosts_wrong");
        write_known_hosts(&path, self.port, &key.with_extension("pub"));
        path
    }

    /// An `ssh -F ssh_config` command (stdin null, no agent) to add options, the alias and a
    /// command to.
    pub fn ssh_command(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg(self.ssh_config())
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd` on the target over a fresh ssh connection with the harness config, bounded by
    /// [`SSH_TIMEOUT`]. For tests to inspect what the target actually did.
    pub fn ssh(&self, cmd: &str) -> Output {
        self.ssh_timeout(cmd, SSH_TIMEOUT)
    }

    /// Like [`Sshd::ssh`] with an explicit bound; on expiry the local ssh is killed and the
    /// output so far returned (its status then shows the signal).
    pub fn ssh_timeout(&self, cmd: &str, timeout: Duration) -> Output {
        let mut c = self.ssh_command();
        c.arg(ALIAS).arg("--").arg(cmd);
        run_bounded(c, timeout)
    }

    /// The entry for a runbook's `targets:` map, in recover's format, indented for pasting
    /// under `targets:` (two spaces before the name, four before the keys).
    pub fn runbook_target_yaml(&self, name: &str) -> String {
        format!(
            "  {name}:\n    host: {host}\n    port: {port}\n    user: {user}\n    identity: {identity}\n    known_hosts: {known_hosts}\n",
            name = yaml_scalar(name),
            host = self.host(),
            port = self.port,
            user = yaml_scalar(&self.user),
            identity = yaml_scalar(&self.identity().to_string_lossy()),
            known_hosts = yaml_scalar(&self.known_hosts().to_string_lossy()),
        )
    }

    // ---------------------------------------------------------------------------------------

    fn host_key(&self) -> PathBuf {
        self.dir.path().join("ssh_host_ed25519_key")
    }

    fn authorized_keys(&self) -> PathBuf {
        self.dir.path().join("authorized_keys")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("sshd.pid")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    fn write_config(&self) {
        let mut cfg = format!(
            "# written by tests/common/sshd.rs\n\
             ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             PidFile {pid_file}\n\
             UsePAM no\n\
             StrictModes no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             LogLevel VERBOSE\n\
             UseDNS no\n\
             MaxSessions 100\n\
             MaxStartups 100:30:200\n\
             MaxAuthTries 10\n\
             LoginGraceTime 30\n\
             ClientAliveInterval 0\n\
             ClientAliveCountMax 3\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n\
             Subsystem sftp internal-sftp\n",
            port = self.port,
            host_key = self.host_key().display(),
            authorized_keys = self.authorized_keys().display(),
            pid_file = self.pid_file().display(),
        );
        if openssh_at_least(9, 8) {
            // 9.8+ penalises sources that fail authentication or crash sessions: the
            // host-key-mismatch and power-cut tests would get 127.0.0.1 refused.
            cfg.push_str("PerSourcePenalties no\n");
        }
        fs::write(self.sshd_config(), cfg).expect("write sshd_config");

        write_known_hosts(&self.known_hosts(), self.port, &self.host_key_pub());

        let client = format!(
            "# written by tests/common/sshd.rs\n\
             Host {ALIAS}\n\
             \x20 HostName 127.0.0.1\n\
             \x20 Port {port}\n\
             \x20 User {user}\n\
             \x20 IdentityFile {identity}\n\
             \x20 IdentitiesOnly yes\n\
             \x20 UserKnownHostsFile {known_hosts}\n\
             \x20 GlobalKnownHostsFile /dev/null\n\
             \x20 StrictHostKeyChecking yes\n\
             \x20 CheckHostIP no\n\
             \x20 UpdateHostKeys no\n\
             \x20 BatchMode yes\n\
             \x20 ConnectTimeout 5\n",
            port = self.port,
            user = self.user,
            identity = self.identity().display(),
            known_hosts = self.known_hosts().display(),
        );
        fs::write(self.ssh_config(), client).expect("write ssh_config");
    }

    fn launch(&mut self) -> Launch {
        ensure_privsep_dir();
        let _ = fs::remove_file(self.pid_file());
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the sshd log");
        let _ = writeln!(
            log,
            "=== harness: start #{} on port {} ===",
            self.starts, self.port
        );
        let log_len = log.metadata().map(|m| m.len()).unwrap_or(0);

        if self.boot_id_file.is_none() {
            self.boot_id_file = BOOT_ID_FILE.with(|f| f.borrow().clone());
        }
        let mut command = match &self.boot_id_file {
            // unshare(1) execs its command (no fork): the child is still the daemon itself.
            Some(file) => {
                let mut c = Command::new("unshare");
                c.args([
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    "mount --bind \"$0\" /proc/sys/kernel/random/boot_id && exec \"$@\"",
                ])
                .arg(file)
                .arg(SSHD);
                c
            }
            None => Command::new(SSHD),
        };
        let child = command
            .args(["-D", "-e", "-f"])
            .arg(self.sshd_config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {SSHD}: {e}"));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_ssh: Option<Output> = None;
        // Bounded by the deadline and by a count (10 s / 20 ms).
        for _ in 0..500 {
            if let Some(status) = self.child_exit() {
                self.child = None;
                let log = self.log();
                let this_start = log.get(log_len as usize..).unwrap_or(&log);
                if this_start.contains("Address already in use") {
                    return Launch::PortTaken;
                }
                return Launch::Failed(format!("sshd exited early ({status})"));
            }
            if self.pid_file().exists() {
                let out = self.ssh_timeout("true", Duration::from_secs(5));
                if out.status.success() {
                    return Launch::Ready;
                }
                last_ssh = Some(out);
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let ssh = match last_ssh {
            Some(out) => format!(
                "last `ssh true`: {}, stderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            None => "sshd never wrote its pid file (not listening)".to_string(),
        };
        Launch::Failed(format!("sshd not ready after {READY_TIMEOUT:?}; {ssh}"))
    }

    fn child_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn fail(&mut self, why: &str) -> ! {
        self.stop();
        panic!(
            "test sshd on 127.0.0.1:{} failed: {why}\n--- sshd_config ---\n{}\n--- sshd log ({}) ---\n{}",
            self.port,
            fs::read_to_string(self.sshd_config()).unwrap_or_default(),
            self.log_path().display(),
            self.log()
        );
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Launch {
    Ready,
    PortTaken,
    Failed(String),
}

/// `ssh-keygen -q -N '' -t ed25519 -f PATH`.
fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", "recover-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen -f {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_known_hosts(path: &Path, port: u16, pub_key: &Path) {
    let key = fs::read_to_string(pub_key).expect("read a public key");
    fs::write(path, format!("[127.0.0.1]:{port} {}\n", key.trim())).expect("write known_hosts");
}

fn current_user() -> String {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        let out = Command::new("id").arg("-un").output().expect("run id -un");
        assert!(out.status.success(), "id -un failed");
        String::from_utf8(out.stdout)
            .expect("user name is UTF-8")
            .trim()
            .to_string()
    })
    .clone()
}

/// sshd refuses to start as root without its privilege separation directory, which only
/// exists on a booted Debian system (systemd's tmpfiles create it). Not needed as non-root.
fn ensure_privsep_dir() {
    if current_user() == "root" && !Path::new(PRIVSEP_DIR).is_dir() {
        fs::create_dir_all(PRIVSEP_DIR).expect("create /run/sshd");
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(PRIVSEP_DIR, fs::Permissions::from_mode(0o755));
    }
}

/// Whether the installed OpenSSH (per `ssh -V`) is at least MAJOR.MINOR.
fn openssh_at_least(major: u32, minor: u32) -> bool {
    static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
    let v = *VERSION.get_or_init(|| {
        let out = Command::new("ssh").arg("-V").output().expect("run ssh -V");
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        // "OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL ..."
        let v = text
            .strip_prefix("OpenSSH_")
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit() && c != '.').next())
            .unwrap_or("0.0");
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    });
    v >= (major, minor)
}

/// A YAML scalar: plain when that is unambiguous, else double-quoted (JSON strings are valid
/// YAML double-quoted scalars).
fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
        && !s.starts_with(['-', '.'])
        && !matches!(
            s,
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
        )
        && s.parse::<f64>().is_err();
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("a string serialises")
    }
}

/// Runs `cmd` with piped stdout/stderr, killing it when `timeout` passes.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn a command");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a command") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait().expect("wait for a killed command");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

// --- process tree -----------------------------------------------------------------------------

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we read from our own child or /proc; no memory involved.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// All processes below `root` (not `root`), from one pass over /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let mut stat = String::new();
            if File::open(entry.path().join("stat"))
                .and_then(|mut f| f.read_to_string(&mut stat))
                .is_err()
            {
                continue;
            }
            // "pid (comm) state ppid ..." where comm may hold spaces and parentheses.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            queue.push(c);
        }
    }
    out
}

/// SIGSTOPs `root` and then, until the tree stops growing (bounded), every descendant: a
/// stopped process cannot fork, so the returned set is the whole tree.
fn stop_tree(root: u32) -> Vec<u32> {
    signal(root, libc::SIGSTOP);
    let mut stopped: HashSet<u32> = HashSet::from([root]);
    for _ in 0..50 {
        let new: Vec<u32> = descendants(root)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for p in new {
            signal(p, libc::SIGSTOP);
            stopped.insert(p);
        }
    }
    stopped.into_iter().collect()
}

/// Kills `root` and everything under it.
fn kill_tree(root: u32) {
    for pid in stop_tree(root) {
        signal(pid, libc::SIGKILL);
    }
}
