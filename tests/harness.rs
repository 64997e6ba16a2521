//! Tests of the test harness itself, with the system `ssh` client and a std TcpStream client:
//! if these fail, the integration tests built on the harness cannot be trusted.

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    HttpServer, Sshd, closed_port_url, eventually, require_tool, run_bounded, skipped, text,
};

/// Command lines of every process on the machine, from /proc.
fn cmdlines() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // Zombies have an empty cmdline and are not running anything.
        if let Ok(raw) = fs::read(entry.path().join("cmdline"))
            && !raw.is_empty()
        {
            out.push((pid, text(&raw).replace('\0', " ")));
        }
    }
    out
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

// --- sshd ----------------------------------------------------------------------------------

#[test]
fn sshd_accepts_the_client_key_with_strict_checking_and_runs_a_command() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };

    let config = fs::read_to_string(sshd.ssh_config()).unwrap();
    assert!(config.contains("StrictHostKeyChecking yes"), "{config}");
    assert!(config.contains("BatchMode yes"), "{config}");
    let known = fs::read_to_string(sshd.known_hosts()).unwrap();
    assert!(
        known.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port())),
        "{known}"
    );

    let out = sshd.ssh("echo hello from $(id -un); echo to-stderr >&2; exit 3");
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("hello from {}\n", sshd.user()));
    assert!(text(&out.stderr).contains("to-stderr"));

    // The same with the plain command line a user would type, without the alias.
    let out = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o"])
        .arg("StrictHostKeyChecking=yes")
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            sshd.known_hosts().display()
        ))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-F",
            "/dev/null",
            "-i",
        ])
        .arg(sshd.identity())
        .args(["-p", &sshd.port().to_string()])
        .arg(format!("{}@{}", sshd.user(), sshd.host()))
        .arg("echo plain")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "plain\n");

    assert!(
        sshd.log().contains("Accepted publickey for"),
        "{}",
        sshd.log()
    );
}

#[test]
fn sshd_stop_makes_ssh_fail_and_start_again_keeps_port_and_host_key() {
    let Some(mut sshd) = Sshd::start_or_skip() else {
        return;
    };
    let port = sshd.port();
    let host_key = fs::read_to_string(sshd.host_key_pub()).unwrap();
    let first_pid = sshd.pid().unwrap();

    sshd.stop();
    assert!(!sshd.is_running());
    assert!(!alive(first_pid), "listener {first_pid} survived stop()");
    let out = sshd.ssh_timeout("true", Duration::from_secs(10));
    assert!(!out.status.success(), "ssh succeeded after stop()");
    assert!(
        text(&out.stderr).contains("Connection refused"),
        "{}",
        text(&out.stderr)
    );

    sshd.start_again();
    assert_eq!(sshd.port(), port);
    assert_eq!(fs::read_to_string(sshd.host_key_pub()).unwrap(), host_key);
    assert_ne!(sshd.pid(), Some(first_pid));
    // The same known_hosts, with strict checking, still accepts the host.
    let out = sshd.ssh("echo again");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "again\n");
    assert_eq!(sshd.log().matches("=== harness: start #").count(), 2);
}

#[test]
fn sshd_start_again_waits_for_its_port_to_be_free() {
    let Some(mut sshd) = Sshd::start_or_skip() else {
        return;
    };
    sshd.stop();
    // Someone holds the port for a moment, as a slow-to-die listener would.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", sshd.port())).unwrap();
    let release = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        drop(squatter);
    });
    sshd.start_again();
    release.join().unwrap();
    assert!(sshd.ssh("true").status.success());
    assert!(
        sshd.log().contains("Address already in use"),
        "{}",
        sshd.log()
    );
}

#[test]
fn sshd_stop_kills_open_sessions_and_their_remote_commands() {
    let Some(mut sshd) = Sshd::start_or_skip() else {
        return;
    };
    // A unique remote command line to look for.
    let marker = format!("sleep 600.{}", sshd.port());
    let mut session = sshd
        .ssh_command()
        .arg(sshd.alias())
        .arg(format!("exec {marker}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || cmdlines()
            .iter()
            .any(|(_, c)| c.trim() == marker)),
        "the remote command never started"
    );

    let t = Instant::now();
    sshd.stop();
    // The client sees its connection drop at once.
    assert!(
        eventually(Duration::from_secs(5), || session
            .try_wait()
            .unwrap()
            .is_some()),
        "ssh client still connected after stop()"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_ne!(session.wait().unwrap().code(), Some(0));

    let leftovers: Vec<_> = cmdlines()
        .into_iter()
        .filter(|(_, c)| c.trim() == marker || c.contains(&*sshd.dir().to_string_lossy()))
        .collect();
    assert!(leftovers.is_empty(), "left running: {leftovers:?}");
}

#[test]
fn sshd_drop_leaves_no_process_behind() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let pid = sshd.pid().unwrap();
    let dir = sshd.dir().to_path_buf();
    let mut busy = sshd
        .ssh_command()
        .arg(sshd.alias())
        .arg("sleep 30")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || sshd
        .log()
        .contains("Starting session")));
    drop(sshd);

    assert!(!alive(pid), "listener {pid} survived drop");
    // The client's connection dropped with the daemon.
    assert!(eventually(Duration::from_secs(5), || busy
        .try_wait()
        .unwrap()
        .is_some()));
    assert!(!dir.exists(), "tempdir {} not removed", dir.display());
    let dir = dir.to_string_lossy().into_owned();
    let leftovers: Vec<_> = cmdlines()
        .into_iter()
        .filter(|(_, c)| c.contains(&dir))
        .collect();
    assert!(leftovers.is_empty(), "left running: {leftovers:?}");
}

#[test]
fn sshd_wrong_known_hosts_is_refused() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let wrong = sshd.wrong_host_key_known_hosts();
    let line = fs::read_to_string(&wrong).unwrap();
    assert!(line.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port())));
    assert_ne!(line, fs::read_to_string(sshd.known_hosts()).unwrap());

    let mut cmd = sshd.ssh_command();
    cmd.arg("-o")
        .arg(format!("UserKnownHostsFile={}", wrong.display()))
        .arg(sshd.alias())
        .arg("echo should-not-run");
    let out = common::run_bounded(cmd, Duration::from_secs(20));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(text(&out.stdout).is_empty());
    assert!(
        err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || err.contains("Host key verification failed"),
        "{err}"
    );
}

#[test]
fn sshd_allows_many_sessions_over_one_multiplexed_connection() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let control = sshd.dir().join("cm.sock");
    let control_opt = format!("ControlPath={}", control.display());

    // A master in the background, as openssh's native-mux does (-f: forks once connected).
    let mut master = sshd.ssh_command();
    master
        .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-o"])
        .arg(&control_opt)
        .args(["-f", "-N"])
        .arg(sshd.alias());
    let out = common::run_bounded(master, Duration::from_secs(20));
    assert!(out.status.success(), "master: {}", text(&out.stderr));

    // 30 concurrent sessions: more than sshd's default MaxSessions (10).
    let clients: Vec<_> = (0..30)
        .map(|i| {
            sshd.ssh_command()
                .args(["-o", "ControlMaster=no", "-o"])
                .arg(&control_opt)
                .arg(sshd.alias())
                .arg(format!("sleep 1; echo session-{i}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "session {i}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("session-{i}\n"));
    }
    // One TCP connection carried them all.
    assert_eq!(sshd.log().matches("Accepted publickey").count(), 2); // start() + master

    let mut exit = sshd.ssh_command();
    exit.args(["-o"])
        .arg(&control_opt)
        .args(["-O", "exit"])
        .arg(sshd.alias());
    let out = common::run_bounded(exit, Duration::from_secs(10));
    assert!(out.status.success(), "-O exit: {}", text(&out.stderr));
}

#[test]
fn sshd_freeze_makes_connections_time_out_and_thaw_resumes() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    sshd.freeze();
    let mut cmd = sshd.ssh_command();
    cmd.args(["-o", "ConnectTimeout=1"])
        .arg(sshd.alias())
        .arg("true");
    let t = Instant::now();
    let out = common::run_bounded(cmd, Duration::from_secs(15));
    assert!(!out.status.success());
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let err = text(&out.stderr);
    assert!(err.contains("timed out"), "{err}");

    sshd.thaw();
    let out = sshd.ssh("echo thawed");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "thawed\n");
}

#[test]
fn runbook_target_yaml_renders_the_targets_entry() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let yaml = sshd.runbook_target_yaml("lab");
    let expected = format!(
        "  lab:\n    host: 127.0.0.1\n    port: {}\n    user: {}\n    identity: {}\n    known_hosts: {}\n",
        sshd.port(),
        sshd.user(),
        sshd.identity().display(),
        sshd.known_hosts().display()
    );
    assert_eq!(yaml, expected);
}

// --- http ----------------------------------------------------------------------------------

/// A minimal HTTP/1.1 client: one request, `Connection: close`, reads to EOF.
fn http(
    url: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {resp:?}")))?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

const T: Duration = Duration::from_secs(5);

#[test]
fn http_records_a_post_body_and_answers_the_route() {
    let server = HttpServer::start();
    server.respond("POST", "/hook", 200, r#"{"ok":true}"#);

    let body = r#"{"text":"We are back after 12m"}"#;
    let (status, answer) = http(&server.url(), "POST", "/hook?x=1", Some(body), T).unwrap();
    assert_eq!((status, answer.as_str()), (200, r#"{"ok":true}"#));

    assert!(server.wait_for_requests("/hook", 1, T));
    let reqs = server.requests_to("/hook");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/hook?x=1");
    assert_eq!(reqs[0].query(), Some("x=1"));
    assert_eq!(reqs[0].body, body);
    assert_eq!(reqs[0].json()["text"], "We are back after 12m");
    assert_eq!(reqs[0].header("content-type"), Some("application/json"));

    // Unknown routes and other methods get 404, and are recorded too.
    assert_eq!(http(&server.url(), "GET", "/hook", None, T).unwrap().0, 404);
    assert_eq!(http(&server.url(), "GET", "/nope", None, T).unwrap().0, 404);
    assert_eq!(server.requests().len(), 3);
    assert!(!server.wait_for_requests("/never", 1, Duration::from_millis(100)));
}

#[test]
fn http_delayed_route_answers_after_the_delay() {
    let server = HttpServer::start();
    server.respond_after("GET", "/slow", Duration::from_millis(400), 200, "late");
    let t = Instant::now();
    let (status, body) = http(&server.url(), "GET", "/slow", None, T).unwrap();
    assert_eq!((status, body.as_str()), (200, "late"));
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn http_respond_from_is_503_until_the_instant() {
    let server = HttpServer::start();
    let healthy_at = Instant::now() + Duration::from_millis(500);
    server.respond_from("GET", "/health", healthy_at, 200, "ok");
    assert_eq!(
        http(&server.url(), "GET", "/health", None, T).unwrap().0,
        503
    );
    thread::sleep(healthy_at.saturating_duration_since(Instant::now()));
    let (status, body) = http(&server.url(), "GET", "/health", None, T).unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[test]
fn http_respond_seq_answers_in_order_and_repeats_the_last() {
    let server = HttpServer::start();
    server.respond_seq("GET", "/flaky", &[(500, "a"), (502, "b"), (200, "c")]);
    let got: Vec<_> = (0..4)
        .map(|_| http(&server.url(), "GET", "/flaky", None, T).unwrap())
        .collect();
    let got: Vec<_> = got.iter().map(|(s, b)| (*s, b.as_str())).collect();
    assert_eq!(got, [(500, "a"), (502, "b"), (200, "c"), (200, "c")]);
}

#[test]
fn http_hang_times_the_client_out_and_stop_releases_it() {
    let mut server = HttpServer::start();
    server.hang("POST", "/v1/chat/completions");

    let t = Instant::now();
    let err = http(
        &server.url(),
        "POST",
        "/v1/chat/completions",
        Some("{}"),
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err:?}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(server.requests_to("/v1/chat/completions").len(), 1);

    // A second hung client is released (EOF, no answer) as soon as the server stops.
    let addr = server.url().strip_prefix("http://").unwrap().to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    assert!(server.wait_for_requests("/v1/chat/completions", 2, T));
    let t = Instant::now();
    server.stop();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "a hung route answered: {:?}", text(&rest));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // Stopped: the port refuses connections.
    assert!(TcpStream::connect(&addr).is_err());
}

#[test]
fn http_chunked_and_expect_continue_bodies_are_read() {
    let server = HttpServer::start();
    server.respond("PUT", "/c", 201, "made");
    let addr = server.url().strip_prefix("http://").unwrap().to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(
        b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"),
        "{resp}"
    );
    assert!(resp.ends_with("\r\n\r\nmade"), "{resp}");
    assert_eq!(server.requests_to("/c")[0].body, "hello world");
}

#[test]
fn closed_port_url_refuses_connections() {
    let url = closed_port_url();
    let err = http(&url, "POST", "/hook", Some("{}"), T).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err:?}");
}

// --- recover ---------------------------------------------------------------------------------

#[test]
fn recover_gets_a_clean_environment() {
    let state = tempfile::tempdir().unwrap();
    let out = common::clean_command("env", state.path()).output().unwrap();
    assert!(out.status.success());
    let env = text(&out.stdout);
    let vars: Vec<&str> = env.lines().collect();
    assert!(vars.contains(&"NO_COLOR=1"), "{env}");
    assert!(
        vars.contains(&format!("XDG_STATE_HOME={}", state.path().display()).as_str()),
        "{env}"
    );
    for removed in [
        "TERM=",
        "COLORTERM=",
        "COLUMNS=",
        "SSH_AUTH_SOCK=",
        "RECOVER_",
    ] {
        assert!(
            !vars
                .iter()
                .any(|v| v.starts_with(removed) && !v.starts_with("RECOVER_LOCK_DIR=")),
            "{removed} in {env}"
        );
    }
    // Locks stay among the runs of one state directory, never the machine's /run/lock.
    let locks = format!(
        "RECOVER_LOCK_DIR={}",
        state.path().join(common::LOCK_DIR).display()
    );
    assert!(vars.contains(&locks.as_str()), "{env}");
    assert!(vars.iter().any(|v| v.starts_with("PATH=")), "{env}");

    // And the binary itself runs under it, found through CARGO_BIN_EXE_recover.
    let out = common::recover_in(state.path()).output().unwrap();
    assert!(out.status.code().is_some(), "{out:?}");
    assert!(common::recover().output().unwrap().status.code().is_some());
}

// --- skips -----------------------------------------------------------------------------------

const MISSING_TOOL: &str = "recover-test-no-such-tool";
/// Set by the parent test for its child: the probe only probes there.
const PROBE_VAR: &str = "RECOVER_TEST_MISSING_TOOL_PROBE";

#[test]
#[ignore = "run by a_missing_tool_is_a_visible_skip_and_a_failure_in_ci, in a child process"]
fn probe_of_a_missing_tool() {
    if std::env::var_os(PROBE_VAR).is_none() {
        skipped("runs only as the child of a_missing_tool_is_a_visible_skip_and_a_failure_in_ci");
        return;
    }
    let Some(found) = require_tool(&[MISSING_TOOL]) else {
        return;
    };
    panic!("{MISSING_TOOL} is installed at {}", found.display());
}

/// This test binary running only `probe_of_a_missing_tool`, its output captured as usual.
fn probe(ci: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args(["probe_of_a_missing_tool", "--exact", "--ignored"])
        .env_remove("CI")
        .env(PROBE_VAR, "1")
        .stdin(Stdio::null());
    if let Some(v) = ci {
        cmd.env("CI", v);
    }
    run_bounded(cmd, Duration::from_secs(60))
}

#[test]
fn a_missing_tool_is_a_visible_skip_and_a_failure_in_ci() {
    let local = probe(None);
    let (stdout, stderr) = (text(&local.stdout), text(&local.stderr));
    assert!(local.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("test probe_of_a_missing_tool ... ok"),
        "{stdout}"
    );
    // Shown although the test passed and its output was captured.
    assert!(
        stderr.contains(&format!(
            "SKIPPED: probe_of_a_missing_tool: needs {MISSING_TOOL} (install it with scripts/setup)"
        )),
        "{stderr}"
    );

    let ci = probe(Some("true"));
    let (stdout, stderr) = (text(&ci.stdout), text(&ci.stderr));
    assert!(
        !ci.status.success(),
        "a skip passed under CI:\n{stdout}{stderr}"
    );
    assert!(
        stdout.contains("test probe_of_a_missing_tool ... FAILED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("CI is set, where a missing tool is a broken setup"),
        "{stdout}{stderr}"
    );
    assert!(!stderr.contains("SKIPPED"), "{stderr}");
}

#[test]
fn require_tool_finds_a_tool_on_path_and_by_its_path() {
    let sh = require_tool(&[MISSING_TOOL, "sh"]).expect("sh is on PATH");
    assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
    assert_eq!(
        require_tool(&[sh.to_str().unwrap()]).as_deref(),
        Some(sh.as_path())
    );
}
