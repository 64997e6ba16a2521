//! The target over SSH: one multiplexed master connection (openssh, native-mux), strict host
//! keys, keep-alives so a dead or rebooted target is noticed in seconds, reconnection with
//! backoff, boot id recorded at each (re)connect.
//!
//! Dropping an ssh channel does not kill the remote process, so every remote command is
//! wrapped (`timeout -k` on the target, see `plan::wire`) and carries a marker word that
//! its kill line (`pkill -f`, also from the Plan) finds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssh::{KnownHosts, Session, SessionBuilder};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{Capture, ExecError, Finished, last_line};
use crate::plan::{KILL_GRACE, TargetSpec};
use crate::verdict::Output;

/// Keep-alive interval; ssh gives up after three missed answers.
pub const KEEPALIVE: Duration = Duration::from_secs(2);
/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long killing a step's remote command may take, a new connection for it included.
pub const KILL_BUDGET: Duration = Duration::from_secs(10);

/// Something about the connection the engine should report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Connected { boot_id: String, reconnect: bool },
    BootIdChanged { old: String, new: String },
    Lost { error: String },
}

pub struct Ssh {
    pub spec: TargetSpec,
    control_dir: PathBuf,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    boot_id: Mutex<Option<String>>,
    notes: Mutex<Vec<Note>>,
    connected_once: Mutex<bool>,
}

impl Ssh {
    pub fn new(spec: TargetSpec) -> Self {
        let control_dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        Ssh {
            spec,
            control_dir,
            session: tokio::sync::Mutex::new(None),
            boot_id: Mutex::new(None),
            notes: Mutex::new(Vec::new()),
            connected_once: Mutex::new(false),
        }
    }

    /// What happened to the connection since the last call.
    pub fn take_notes(&self) -> Vec<Note> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn boot_id(&self) -> Option<String> {
        self.boot_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note(&self, n: Note) {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).push(n);
    }

    fn builder(&self, connect_timeout: Duration) -> SessionBuilder {
        let mut b = SessionBuilder::default();
        b.known_hosts_check(KnownHosts::Strict)
            .server_alive_interval(KEEPALIVE)
            .connect_timeout(connect_timeout.max(Duration::from_secs(1)))
            .control_directory(&self.control_dir);
        if let Some(u) = &self.spec.user {
            b.user(u.clone());
        }
        if let Some(p) = self.spec.port {
            b.port(p);
        }
        if let Some(k) = &self.spec.identity {
            b.keyfile(k);
        }
        if let Some(k) = &self.spec.known_hosts {
            b.user_known_hosts_file(k);
        }
        if let Some(c) = &self.spec.ssh_config {
            b.config_file(c);
        }
        b
    }

    /// Open a fresh master connection and read the boot id over it.
    pub async fn connect(&self, timeout: Duration) -> Result<String, ExecError> {
        let mut guard = self.session.lock().await;
        if let Some(old) = guard.take() {
            drop(old);
        }
        let session = tokio::time::timeout(
            timeout + Duration::from_secs(2),
            self.builder(timeout).connect_mux(&self.spec.host),
        )
        .await
        .map_err(|_| self.connect_error(format!("no answer within {}s", timeout.as_secs())))?
        .map_err(|e| self.connect_error(error_chain(&e)))?;
        let session = Arc::new(session);
        let out = bounded_output(
            &session,
            &self.spec.boot_id,
            timeout.max(Duration::from_secs(5)),
        )
        .await
        .map_err(|e| match e {
            None => self.connect_error("connected, but reading the boot id timed out".into()),
            Some(e) => self.connect_error(e),
        })?;
        if out.exit != Some(0) || out.overflowed {
            return Err(self.connect_error(format!(
                "connected, but `{}` failed{}: {}",
                self.spec.boot_id,
                if out.overflowed {
                    format!(" (more than {READ_LIMIT} bytes of output)")
                } else {
                    String::new()
                },
                shown(&out.stderr)
            )));
        }
        let boot_id = parse_boot_id(&out.stdout).map_err(|came| {
            self.connect_error(format!(
                "connected, but `{}` printed {came}, {NOT_A_BOOT_ID}: a start-up file of the login shell (~/.bashrc, /etc/bash.bashrc) may print to stdout",
                self.spec.boot_id
            ))
        })?;
        let reconnect = {
            let mut once = self
                .connected_once
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *once, true)
        };
        let old = self
            .boot_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(boot_id.clone());
        self.note(Note::Connected {
            boot_id: boot_id.clone(),
            reconnect,
        });
        if let Some(old) = old
            && old != boot_id
        {
            self.note(Note::BootIdChanged {
                old,
                new: boot_id.clone(),
            });
        }
        *guard = Some(session);
        Ok(boot_id)
    }

    /// Forget the boot id recorded before (a resumed run sets the previous one here).
    pub fn set_known_boot_id(&self, id: Option<String>) {
        *self.boot_id.lock().unwrap_or_else(|e| e.into_inner()) = id;
        *self
            .connected_once
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
    }

    fn connect_error(&self, reason: String) -> ExecError {
        let reason = if reason.contains("Host key verification failed")
            || reason.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        {
            format!(
                "the host key does not match known_hosts{}. The machine may have been reinstalled, or something is impersonating it: compare the key fingerprint with the one in the binder, then fix known_hosts (ssh-keygen -R {}).",
                self.spec
                    .known_hosts
                    .as_ref()
                    .map(|k| format!(" ({})", k.display()))
                    .unwrap_or_default(),
                self.spec.host
            )
        } else {
            reason
        };
        ExecError::Connect {
            target: self.spec.name.clone(),
            reason,
        }
    }

    /// The live session, reconnecting with backoff until `deadline` when it is gone.
    async fn session(&self, deadline: Instant) -> Result<Arc<Session>, ExecError> {
        {
            let guard = self.session.lock().await;
            if let Some(s) = guard.as_ref() {
                if s.check().await.is_ok() {
                    return Ok(s.clone());
                }
                self.note(Note::Lost {
                    error: "the master connection is gone".into(),
                });
            }
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .connect(CONNECT_TIMEOUT.min(left.max(Duration::from_secs(1))))
                .await
            {
                Ok(_) => {
                    let guard = self.session.lock().await;
                    if let Some(s) = guard.as_ref() {
                        return Ok(s.clone());
                    }
                }
                Err(e) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Reconnecting changes neither a wrong host key nor what the login shell prints.
                    let fatal = matches!(&e, ExecError::Connect { reason, .. }
                        if reason.contains("host key") || reason.contains(NOT_A_BOOT_ID));
                    if fatal || left <= backoff {
                        return Err(e);
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Run `wire` (already wrapped with the remote timeout) and wait for it, at most
    /// `timeout` plus grace. On cancel or a local deadline the remote process is killed
    /// with `kill`, the Plan's kill line for it.
    pub async fn exec(
        &self,
        wire: &str,
        kill: Option<&str>,
        timeout: Duration,
        cancel: &mut watch::Receiver<bool>,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<Finished, ExecError> {
        let started = Instant::now();
        // Reconnecting can take the step's whole timeout: Ctrl-C must not wait for it.
        let session = tokio::select! {
            s = self.session(started + timeout) => s?,
            _ = cancel.wait_for(|c| *c) => return Err(ExecError::Interrupted),
        };
        let child = session
            .raw_command(wire)
            .stdin(openssh::Stdio::null())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped())
            .spawn()
            .await;
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                // The master died under us (keep-alives on a hung host): report it and
                // let the next command reconnect.
                let reason = error_chain(&e);
                self.note(Note::Lost {
                    error: reason.clone(),
                });
                self.forget().await;
                return Err(ExecError::Lost {
                    target: self.spec.name.clone(),
                    reason,
                });
            }
        };
        let mut out = child
            .stdout()
            .take()
            .ok_or_else(|| ExecError::Spawn("no stdout".into()))?;
        let mut err = child
            .stderr()
            .take()
            .ok_or_else(|| ExecError::Spawn("no stderr".into()))?;
        let (mut so, mut se) = (Capture::default(), Capture::default());
        let (mut obuf, mut ebuf) = ([0u8; 8192], [0u8; 8192]);
        let (mut odone, mut edone) = (false, false);
        // The remote `timeout` ends the command itself; this is the backstop.
        let backstop = tokio::time::sleep(timeout + KILL_GRACE + Duration::from_secs(5));
        tokio::pin!(backstop);
        let result = loop {
            tokio::select! {
                n = out.read(&mut obuf), if !odone => match n {
                    Ok(0) | Err(_) => odone = true,
                    Ok(n) => { so.push(&obuf[..n]); if let Some(l) = last_line(&obuf[..n]) { progress(l) } }
                },
                n = err.read(&mut ebuf), if !edone => match n {
                    Ok(0) | Err(_) => edone = true,
                    Ok(n) => se.push(&ebuf[..n]),
                },
                _ = &mut backstop => break Err(None),
                _ = cancel.changed() => {
                    if *cancel.borrow() { break Err(Some(ExecError::Interrupted)); }
                },
                _ = std::future::ready(()), if odone && edone => break Ok(()),
            }
        };
        match result {
            Ok(()) => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let exit = match status {
                    Ok(Ok(s)) => s.code(),
                    Ok(Err(e)) => {
                        let reason = error_chain(&e);
                        self.note(Note::Lost {
                            error: reason.clone(),
                        });
                        self.forget().await;
                        return Err(ExecError::Lost {
                            target: self.spec.name.clone(),
                            reason,
                        });
                    }
                    Err(_) => None,
                };
                let elapsed = started.elapsed();
                let timed_out = matches!(exit, Some(124) | Some(137))
                    && elapsed + Duration::from_secs(1) >= timeout;
                Ok(Finished {
                    output: Output {
                        exit,
                        stdout: so.text(),
                        stderr: se.text(),
                        timed_out,
                    },
                    duration: elapsed,
                })
            }
            Err(e) => {
                drop(child);
                if let Some(kill) = kill {
                    self.kill_remote(kill).await;
                }
                match e {
                    Some(e) => Err(e),
                    None => Ok(Finished {
                        output: Output {
                            exit: None,
                            stdout: so.text(),
                            stderr: se.text(),
                            timed_out: true,
                        },
                        duration: started.elapsed(),
                    }),
                }
            }
        }
    }

    async fn forget(&self) {
        self.session.lock().await.take();
    }

    /// Kill the remote process tree of a step with its kill line (it finds the marker word).
    /// A stop that reached the whole control group (`systemctl stop`, KillMode=control-group)
    /// killed the ssh master with `recover`: the kill then goes over a new connection, the
    /// remote command must not outlive the run. Bounded: [`KILL_BUDGET`] in all.
    pub async fn kill_remote(&self, kill: &str) -> bool {
        let deadline = Instant::now() + KILL_BUDGET;
        // Twice at most: the master may pass its check and die before the kill reaches it.
        for _ in 0..2 {
            let Ok(session) = self.session(deadline).await else {
                return false;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match bounded_output(&session, kill, left).await {
                Ok(o) => return o.exit == Some(0),
                Err(Some(error)) => {
                    self.note(Note::Lost { error });
                    self.forget().await;
                }
                Err(None) => return false,
            }
        }
        false
    }

    /// Close the master connection.
    pub async fn close(&self) {
        let s = self.session.lock().await.take();
        if let Some(s) = s
            && let Ok(s) = Arc::try_unwrap(s)
        {
            let _ = s.close().await;
        }
    }
}

/// What a connection error says when the boot id command printed something else.
const NOT_A_BOOT_ID: &str = "not a boot id (a UUID)";

/// How much of each stream of a short command (the boot id, a remote kill) is read: a box that
/// prints without end cannot fill the management host's memory.
pub const READ_LIMIT: usize = 4096;

/// What a short command printed, at most [`READ_LIMIT`] bytes of each stream.
struct Short {
    exit: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// A stream had more: the command is not waited for.
    overflowed: bool,
}

/// Runs `cmd` over `session`, reading at most [`READ_LIMIT`] bytes of each stream, within
/// `timeout`. Err(None): timed out; Err(Some(why)): the channel failed.
async fn bounded_output(
    session: &Session,
    cmd: &str,
    timeout: Duration,
) -> Result<Short, Option<String>> {
    let run = async {
        let mut child = session
            .raw_command(cmd)
            .stdin(openssh::Stdio::null())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped())
            .spawn()
            .await
            .map_err(|e| Some(error_chain(&e)))?;
        let (Some(mut out), Some(mut err)) = (child.stdout().take(), child.stderr().take()) else {
            return Err(Some("no stdout or stderr".to_owned()));
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let (mut obuf, mut ebuf) = ([0u8; 1024], [0u8; 1024]);
        let (mut odone, mut edone) = (false, false);
        // Both streams at once, until both end or either passes the limit.
        while !(odone && edone) && stdout.len() <= READ_LIMIT && stderr.len() <= READ_LIMIT {
            tokio::select! {
                n = out.read(&mut obuf), if !odone => match n {
                    Ok(0) | Err(_) => odone = true,
                    Ok(n) => stdout.extend_from_slice(&obuf[..n]),
                },
                n = err.read(&mut ebuf), if !edone => match n {
                    Ok(0) | Err(_) => edone = true,
                    Ok(n) => stderr.extend_from_slice(&ebuf[..n]),
                },
            }
        }
        let overflowed = stdout.len() > READ_LIMIT || stderr.len() > READ_LIMIT;
        let exit = if overflowed {
            None
        } else {
            child
                .wait()
                .await
                .map_err(|e| Some(error_chain(&e)))?
                .code()
        };
        Ok(Short {
            exit,
            stdout,
            stderr,
            overflowed,
        })
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| None)?
}

/// Remote bytes as one line for a message, every control character shown as an escape
/// (`\e`, `\a`, `\n`, `\x..`: what came, and nothing the terminal acts on), cut to 200
/// characters.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (n, c) in text.trim().chars().enumerate() {
        if n == 200 {
            out.push('…');
            break;
        }
        match c {
            '\x1b' => out.push_str("\\e"),
            '\x07' => out.push_str("\\a"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// The boot id in what the boot id command printed: one UUID (`/proc/sys/kernel/random/boot_id`
/// prints `8-4-4-4-12` lowercase hex digits), alone on its line. Err: what came instead,
/// cleaned and quoted, for the message.
fn parse_boot_id(stdout: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(stdout);
    let id = text.trim();
    let groups: Vec<&str> = id.split('-').collect();
    let uuid = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if uuid {
        Ok(id.to_ascii_lowercase())
    } else if id.is_empty() {
        Err("nothing".to_owned())
    } else {
        Err(format!("`{}`", shown(stdout)))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_uuid_is_a_boot_id_and_what_came_is_shown_cleaned() {
        let id = "282545b8-b608-44e2-9226-95f9d390cec3";
        assert_eq!(parse_boot_id(format!("{id}\n").as_bytes()).unwrap(), id);
        assert_eq!(
            parse_boot_id(b"282545B8-B608-44E2-9226-95F9D390CEC3\r\n").unwrap(),
            id
        );
        let hostile = format!("\x1b]0;pwned\x07\x1b[2J{id}\n");
        let e = parse_boot_id(hostile.as_bytes()).unwrap_err();
        assert!(!e.contains('\x1b') && !e.contains('\x07'), "{e:?}");
        assert!(e.contains(&format!("\\e]0;pwned\\a\\e[2J{id}")), "{e}");
        for bad in [
            "",
            "not-a-uuid",
            "282545b8-b608-44e2-9226-95f9d390cec3 extra",
            "282545b8b60844e2922695f9d390cec3",
            "282545b8-b608-44e2-9226-95f9d390cecg",
        ] {
            assert!(parse_boot_id(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let huge = "A".repeat(100_000);
        let e = parse_boot_id(huge.as_bytes()).unwrap_err();
        assert!(e.chars().count() < 210, "{}", e.len());
    }
}
