//! `recover watch RUNBOOK [--every 30s]` and `recover watch RUNBOOK --nudge`: the loop around
//! [`crate::watch::decide`]: look (`status::check`), decide, journal, post on a change, and
//! start `recover run --unattended` as a child when the decision says so.
//!
//! The nudge: a datagram on the watch's socket, `watch-KEY.sock` in the run directory
//! (`$RECOVER_RUN_DIR`, else `/run/recover` when it exists (the unit's `RuntimeDirectory=`),
//! else `$XDG_RUNTIME_DIR/recover`, else the state directory's `watch/`), mode 0666: a nudge
//! only makes the watch look now, so any local account may send one (upsmon's `nut`), and
//! nudges closer than a second apart are one. SIGUSR1 does the same for the watch's own user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};

use crate::cli::WatchArgs;
use crate::error::Error;
use crate::exit::Exit;
use crate::plan::Plan;
use crate::state::StateDir;
use crate::status::{Bounds, Report};
use crate::watch::{self, Decision, Line, Memory};

/// The variable naming the directory of the nudge socket and pid file.
pub const RUN_DIR_VAR: &str = "RECOVER_RUN_DIR";

pub fn watch(a: &WatchArgs) -> Result<Exit, Error> {
    // Resolved as the runs it starts resolve it: unattended, so a runbook that cannot run with
    // nobody there is refused now, not at 3am by each run.
    let opts = crate::plan::Options {
        unattended: !a.nudge,
        ..super::options(&a.resolve)
    };
    let (_, plan) = super::load_plan(&a.runbook, &a.resolve.overlays, &opts)?;
    if !a.nudge && !plan.secrets.needed.is_empty() {
        return Err(Error::MissingSecrets {
            names: plan.secrets.needed.clone(),
        });
    }
    let state = StateDir::from_env();
    let key = plan.state_key();
    let run_dir = run_dir(state.as_ref());
    let socket = run_dir.join(format!("watch-{}.sock", file_word(&key)));
    let pid_file = run_dir.join(format!("watch-{}.pid", file_word(&key)));
    if a.nudge {
        return Ok(nudge(&key, &socket, &pid_file));
    }
    let state = state.ok_or(Error::NoStateDir)?;
    let _single = single(&state, &key)?;
    let rt = super::runtime()?;
    rt.block_on(Loop::new(a, &plan, state, socket, pid_file).run())
}

/// Characters outside `[A-Za-z0-9._@+-]` as `_`: the key names files.
fn file_word(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where the nudge socket and the pid file are.
fn run_dir(state: Option<&StateDir>) -> PathBuf {
    let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(d) = abs(std::env::var_os(RUN_DIR_VAR)) {
        return d;
    }
    let system = Path::new("/run/recover");
    if system.is_dir() {
        return system.to_path_buf();
    }
    if let Some(d) = abs(std::env::var_os("XDG_RUNTIME_DIR")).filter(|d| d.is_dir()) {
        return d.join("recover");
    }
    match state {
        Some(s) => watch::dir(s),
        None => std::env::temp_dir(),
    }
}

/// `--nudge`: a datagram to the socket, else SIGUSR1 to the recorded pid.
fn nudge(key: &str, socket: &Path, pid_file: &Path) -> Exit {
    let sent = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.send_to(b"nudge", socket))
        .map(|_| ());
    match sent {
        Ok(()) => {
            eprintln!("{key}: the watch was nudged ({})", socket.display());
            return Exit::Ok;
        }
        Err(e) => {
            let pid = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
                .filter(|p| *p > 1);
            // SAFETY: kill(2) with a pid read from the watch's own pid file, and SIGUSR1,
            // which the watch takes as "look now".
            if let Some(pid) = pid
                && unsafe { libc::kill(pid, libc::SIGUSR1) } == 0
            {
                eprintln!("{key}: the watch (pid {pid}) was sent SIGUSR1");
                return Exit::Ok;
            }
            eprintln!(
                "{key}: no watch is listening ({}: {e}): nothing nudged",
                socket.display()
            );
        }
    }
    Exit::StepFailed
}

/// One watch per runbook: an exclusive `flock` on `watch/KEY.lock`, held while it runs.
fn single(state: &StateDir, key: &str) -> Result<std::fs::File, Error> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = watch::dir(state);
    let path = dir.join(format!("{}.lock", file_word(key)));
    let io = |e: std::io::Error| Error::Write {
        path: path.clone(),
        source: e,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io)?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut held = String::new();
        let _ = f.read_to_string(&mut held);
        return Err(Error::Usage(format!(
            "a watch of `{key}` is already running (pid {}): one watch per runbook",
            held.trim()
        )));
    }
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = write!(f, "{}", std::process::id());
    Ok(f)
}

struct Loop<'a> {
    a: &'a WatchArgs,
    plan: &'a Plan,
    state: StateDir,
    key: String,
    places: crate::status::Places,
    http: Option<reqwest::Client>,
    socket: PathBuf,
    pid_file: PathBuf,
    journal_warned: bool,
}

/// What ended a wait.
enum Woken {
    Timer,
    Nudge(&'static str),
    Stop(&'static str),
}

impl<'a> Loop<'a> {
    fn new(
        a: &'a WatchArgs,
        plan: &'a Plan,
        state: StateDir,
        socket: PathBuf,
        pid_file: PathBuf,
    ) -> Self {
        Loop {
            a,
            plan,
            key: plan.state_key(),
            places: super::status::places(Some(state.clone())),
            state,
            http: crate::status::client(),
            socket,
            pid_file,
            journal_warned: false,
        }
    }

    /// The socket nudges arrive on, mode 0666; `None` (SIGUSR1 only) when it cannot be made.
    fn bind(&self) -> Option<tokio::net::UnixDatagram> {
        if let Some(d) = self.socket.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        if std::fs::symlink_metadata(&self.socket)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            let _ = std::fs::remove_file(&self.socket);
        }
        match tokio::net::UnixDatagram::bind(&self.socket) {
            Ok(s) => {
                let _ =
                    std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o666));
                let _ = std::fs::write(&self.pid_file, format!("{}\n", std::process::id()));
                Some(s)
            }
            Err(e) => {
                eprintln!(
                    "watch: warning: cannot listen for nudges on {}: {e}; SIGUSR1 still nudges",
                    self.socket.display()
                );
                let _ = std::fs::write(&self.pid_file, format!("{}\n", std::process::id()));
                None
            }
        }
    }

    async fn run(mut self) -> Result<Exit, Error> {
        let sig = |k| signal(k).map_err(Error::Runtime);
        let mut term = sig(SignalKind::terminate())?;
        let mut int = sig(SignalKind::interrupt())?;
        let mut hup = sig(SignalKind::hangup())?;
        let mut usr1 = sig(SignalKind::user_defined1())?;
        let socket = self.bind();
        let mut memory = watch::load(&self.state, &self.key);
        let ups = crate::status::ups_wait(self.plan);
        let mut tracker = ups
            .as_ref()
            .map(|w| crate::power::nut::Tracker::new(w.want));
        let began = Instant::now();
        let mut checks = 0u64;
        eprintln!(
            "watch: {}: looking every {} (nudge: {} or SIGUSR1 to pid {})",
            self.key,
            crate::plan::fmt_duration(self.a.every),
            self.socket.display(),
            std::process::id()
        );
        let exit = 'outer: loop {
            let report = crate::status::check(self.plan, &self.places, Bounds::default()).await;
            let mains = match (&ups, &mut tracker) {
                (Some(w), Some(t)) => {
                    let r = w.ups.read(Duration::from_secs(3)).await;
                    let ok = t.observe(began.elapsed(), r);
                    Some((ok, format!("UPS {}: {}", w.ups, t.progress())))
                }
                _ => None,
            };
            let decision = watch::decide(&report, &mut memory, mains, chrono::Utc::now());
            self.record(&report, &decision, &mut memory, None).await;
            let mut pause = self.a.every;
            if let Decision::WaitingForMains { .. } = decision
                && let Some(w) = &ups
            {
                pause = pause.min(w.every.max(Duration::from_millis(500)));
            }
            if let Decision::Start { why, .. } = &decision {
                watch::started(&mut memory);
                self.save(&memory);
                match self.start_run(why, &mut term, &mut int, &mut hup).await {
                    Ok(code) => {
                        let text = watch::finished(
                            &mut memory,
                            &self.plan.name,
                            code,
                            self.a.backoff,
                            chrono::Utc::now(),
                        );
                        let line = text.clone().unwrap_or_else(|| {
                            format!("{}: the recovery run ended (exit 0)", self.plan.name)
                        });
                        self.line(&report, "run_finished", &line, Some(code));
                        if let Some(t) = text {
                            self.post(&t).await;
                        }
                        self.save(&memory);
                        // Look again soon: a recovered box is seen healthy at once.
                        pause = Duration::from_secs(1);
                    }
                    Err(stop) => {
                        eprintln!("watch: {stop}: stopped (the run it started was stopped)");
                        break 'outer Exit::Ok;
                    }
                }
            }
            self.save(&memory);
            checks += 1;
            if self.a.checks.is_some_and(|n| checks >= n) {
                break Exit::Ok;
            }
            let last = Instant::now();
            match self
                .wait(pause, &socket, &mut term, &mut int, &mut hup, &mut usr1)
                .await
            {
                Woken::Stop(s) => {
                    eprintln!("watch: {s}: stopped");
                    break 'outer Exit::Ok;
                }
                Woken::Timer => {}
                Woken::Nudge(how) => {
                    // Nudges closer than a second apart are one.
                    let since = last.elapsed();
                    if since < Duration::from_secs(1) {
                        tokio::time::sleep(Duration::from_secs(1) - since).await;
                    }
                    eprintln!("watch: nudged ({how}): looking now");
                }
            }
        };
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.pid_file);
        Ok(exit)
    }

    async fn wait(
        &self,
        pause: Duration,
        socket: &Option<tokio::net::UnixDatagram>,
        term: &mut tokio::signal::unix::Signal,
        int: &mut tokio::signal::unix::Signal,
        hup: &mut tokio::signal::unix::Signal,
        usr1: &mut tokio::signal::unix::Signal,
    ) -> Woken {
        let mut buf = [0u8; 64];
        let recv = async {
            match socket {
                Some(s) => {
                    let _ = s.recv(&mut buf).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => Woken::Timer,
            _ = recv => Woken::Nudge("the socket"),
            _ = usr1.recv() => Woken::Nudge("SIGUSR1"),
            _ = term.recv() => Woken::Stop("SIGTERM"),
            _ = int.recv() => Woken::Stop("SIGINT"),
            _ = hup.recv() => Woken::Stop("SIGHUP"),
        }
    }

    /// The arguments that make the child resolve the runbook as this watch does.
    fn resolve_args(&self) -> Vec<String> {
        let r = &self.a.resolve;
        let mut out = Vec::new();
        for (k, v) in &r.vars {
            out.extend(["--var".to_owned(), format!("{k}={v}")]);
        }
        for o in &r.overlays {
            out.extend(["--overlay".to_owned(), o.display().to_string()]);
        }
        for (k, v) in &r.targets {
            out.extend(["--target".to_owned(), format!("{k}={v}")]);
        }
        for (k, p) in &r.identities {
            out.extend(["--identity".to_owned(), format!("{k}={}", p.display())]);
        }
        for (k, p) in &r.known_hosts {
            out.extend(["--known-hosts".to_owned(), format!("{k}={}", p.display())]);
        }
        out
    }

    /// `recover run --unattended` as a child, waited for; a stop signal is passed on to it
    /// (one SIGTERM: it stops cleanly) and ends the watch once it has exited.
    async fn start_run(
        &self,
        why: &str,
        term: &mut tokio::signal::unix::Signal,
        int: &mut tokio::signal::unix::Signal,
        hup: &mut tokio::signal::unix::Signal,
    ) -> Result<i32, &'static str> {
        let by: String = format!("recover watch: {why}")
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("recover"));
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("run")
            .arg("--unattended")
            .arg("--started-by")
            .arg(by.trim())
            .args(self.resolve_args())
            .arg(&self.a.runbook)
            .stdin(std::process::Stdio::null());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("watch: cannot start `recover run`: {e}");
                return Ok(127);
            }
        };
        let pid = child.id();
        eprintln!(
            "watch: started `recover run --unattended` (pid {})",
            pid.unwrap_or(0)
        );
        let stop = tokio::select! {
            s = child.wait() => return Ok(exit_code(s)),
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        if let Some(pid) = pid {
            // SAFETY: kill(2) of the child this watch started and has not reaped.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill().await;
            }
        }
        Err(stop)
    }

    /// The decision's journal line, its post when it changed, and the memory of both.
    async fn record(
        &mut self,
        report: &Report,
        d: &Decision,
        memory: &mut Memory,
        exit: Option<i32>,
    ) {
        let text = self.plan.secrets.redact(&d.text(&self.plan.name));
        eprintln!("watch: {text}");
        self.line(report, d.word(), &text, exit);
        let key = d.key();
        if memory.posted.as_deref() != Some(key.as_str()) {
            if d.posts_after(memory.posted.as_deref()) {
                self.post(&text).await;
            }
            memory.posted = Some(key);
        }
    }

    fn line(&mut self, report: &Report, word: &str, text: &str, exit: Option<i32>) {
        let line = Line {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            decision: word.to_owned(),
            text: self.plan.secrets.redact(text),
            health: report.box_health().word().to_owned(),
            boot_ids: report
                .targets
                .iter()
                .filter_map(|t| Some((t.name.clone(), t.boot_id.clone()?)))
                .collect(),
            exit,
        };
        if let Err(e) = watch::journal(&self.state, &self.key, &line)
            && !self.journal_warned
        {
            self.journal_warned = true;
            eprintln!(
                "watch: warning: cannot write the watch journal {}: {e}",
                watch::journal_path(&self.state, &self.key).display()
            );
        }
    }

    fn save(&self, memory: &Memory) {
        if let Err(e) = watch::save(&self.state, &self.key, memory) {
            eprintln!(
                "watch: warning: cannot keep what the watch saw in {}: {e}",
                watch::memory_path(&self.state, &self.key).display()
            );
        }
    }

    /// Post `text` to the abort channel (or the first one), three tries; never fails.
    async fn post(&self, text: &str) {
        let plan = self.plan;
        let ch = plan
            .abort
            .channel
            .as_ref()
            .and_then(|n| plan.channels.iter().find(|c| &c.name == n))
            .or(plan.channels.first());
        let Some(ch) = ch else { return };
        if plan
            .secrets
            .missing
            .iter()
            .any(|m| ch.url.contains(&crate::secrets::placeholder(m)))
        {
            return;
        }
        let text = plan.secrets.redact(text);
        let req = ch.post(&plan.name, &text, Duration::from_secs(10));
        let Some(http) = &self.http else {
            eprintln!(
                "watch: warning: no HTTP client on this host: the post to `{}` is not sent",
                ch.name
            );
            return;
        };
        for attempt in 1..=3 {
            let mut rb = http
                .post(&req.url)
                .timeout(req.timeout)
                .body(req.body.clone().unwrap_or_default());
            for (k, v) in &req.headers {
                rb = rb.header(k, v);
            }
            match rb.send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => eprintln!(
                    "watch: warning: the post to `{}` got HTTP {} (try {attempt} of 3)",
                    ch.name,
                    r.status().as_u16()
                ),
                Err(_) => eprintln!(
                    "watch: warning: the post to `{}` failed (try {attempt} of 3)",
                    ch.name
                ),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

fn exit_code(s: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match s {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 127,
    }
}
