//! Issue 20: secrets never in argv, never in the clear.
//!
//! A `{{ env.X }}` in a `run:` step, a `from: target` curl header and a `local:` step, with the
//! issue's hostile secrets, against the real sshd of tests/common (loopback: the target's
//! processes are this machine's). While the run goes on, every process's command line
//! (`/proc/*/cmdline`, what `ps` shows every user) is read again and again: no form of the
//! secret may be in any of them. The terminal output, `--json` and the journal hold none either,
//! and the values arrived intact where they were sent (the step's output, the header the
//! server received, the file the local step wrote).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Background, HttpServer, Sshd, only_journal, recover_in, text};

/// The issue's secrets: `a'b"c$d\e`, and what `RB_SECRET='Sx9a'"'"'b"c$d\eQz'` sets.
const HOSTILE: [&str; 2] = [r#"a'b"c$d\e"#, r#"Sx9a'b"c$d\eQz"#];

/// What would give the secret away in a command line: the value, any five bytes of it in a
/// row, shell-quoted (`'\''`), and its base64 wherever it falls in a longer text.
fn giveaways(secret: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        secret.as_bytes().to_vec(),
        secret.replace('\'', r"'\''").into_bytes(),
    ];
    for w in secret.as_bytes().windows(5) {
        out.push(w.to_vec());
    }
    for skip in 0..3 {
        let padded = format!("{}{secret}", "#".repeat(skip));
        let b64 = base64(padded.as_bytes());
        // The characters that depend on the secret's bytes alone.
        let first = (skip * 4).div_ceil(3);
        let last = (padded.len() / 3) * 4;
        if last > first + 8 {
            out.push(b64.as_bytes()[first + 1..last].to_vec());
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    let out = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    text(&out.stdout)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Reads every process's command line until stopped: (the command lines that gave the secret
/// away, the command lines that carried `marker`, the number of scans).
fn watch_cmdlines(
    secret: &str,
    marker: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, Vec<String>, usize)> {
    let give = giveaways(secret);
    let marker = marker.to_owned();
    let me = std::process::id().to_string();
    std::thread::spawn(move || {
        let (mut leaks, mut seen, mut scans) = (Vec::new(), Vec::new(), 0);
        let started = Instant::now();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
            scans += 1;
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
                    continue;
                }
                let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                    continue;
                };
                let shown = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if give.iter().any(|g| contains(&cmd, g)) && !leaks.contains(&shown) {
                    leaks.push(shown.clone());
                }
                if shown.contains(&marker) && !seen.contains(&shown) {
                    seen.push(shown);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (leaks, seen, scans)
    })
}

fn runbook(dir: &Path, sshd: &Sshd, api: &HttpServer, out: &Path) -> std::path::PathBuf {
    let path = dir.join("sec.yaml");
    let text = format!(
        r#"name: sec
budget: 10m
targets:
{target}vars:
  out: "{out}"
phases:
  - name: All
    window: 0m-10m
    steps:
      - name: remote
        run: "sleep 1.5; test -n {{{{ env.RB_SECRET }}}} && printf '%s' {{{{ env.RB_SECRET }}}} | wc -c && echo {{{{ env.RB_SECRET }}}}"
        mutates: false
      - name: from the target
        http:
          url: "{api}/slow"
          from: target
          headers:
            X-Token: "{{{{ env.RB_SECRET }}}}"
      - name: here
        local: "sleep 1.5; printf '%s' {{{{ env.RB_SECRET }}}} > {{{{ vars.out }}}}; echo {{{{ env.RB_SECRET }}}} >&2"
"#,
        target = sshd.runbook_target_yaml("box"),
        out = out.display(),
        api = api.url(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The issue's experiment, with each hostile secret, with the plain reporter and with --json.
#[test]
fn a_secret_is_never_in_a_command_line_the_output_or_the_journal() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let api = HttpServer::start();
    api.respond_after("GET", "/slow", Duration::from_millis(1500), 200, "ok");
    for secret in HOSTILE {
        for json in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("local.out");
            let rb = runbook(dir.path(), &sshd, &api, &out);
            let state = dir.path().join("state");
            let before = api.requests_to("/slow").len();

            let stop = Arc::new(AtomicBool::new(false));
            let watch = watch_cmdlines(secret, "recover:sec:1", stop.clone());
            let mut args = vec!["run", "--yes", rb.to_str().unwrap()];
            if json {
                args.push("--json");
            }
            let mut bg = Background::start(&state, &args, &[("RB_SECRET", secret)]);
            let status = bg.wait(Duration::from_secs(90));
            stop.store(true, Ordering::SeqCst);
            let (leaks, seen, scans) = watch.join().unwrap();
            let shown = bg.output();
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(0),
                "{secret} json={json}:\n{shown}"
            );

            // ps: the scan saw the step's remote processes, and the secret in no command line.
            assert!(
                scans > 20 && !seen.is_empty(),
                "the scan never saw step 1's remote process ({scans} scans)"
            );
            assert!(
                leaks.is_empty(),
                "{secret}: in a command line:\n{}",
                leaks.join("\n")
            );

            // It arrived intact: its length and its bytes on the target, the header the server
            // received from curl on the target, the file the local step wrote.
            let journal = std::fs::read_to_string(only_journal(&state)).unwrap();
            assert!(
                journal.contains(&format!("\"stdout\":\"{}\\n***\\n\"", secret.len())),
                "{journal}"
            );
            let got = api.requests_to("/slow");
            assert_eq!(got.len(), before + 1);
            assert_eq!(got[before].header("X-Token"), Some(secret));
            assert_eq!(std::fs::read_to_string(&out).unwrap(), secret);

            // The terminal (or --json) and the journal: no form of it.
            for (what, text) in [("output", &shown), ("journal", &journal)] {
                for g in giveaways(secret) {
                    assert!(
                        !contains(text.as_bytes(), &g),
                        "{secret} json={json}: {what} holds {:?}:\n{text}",
                        String::from_utf8_lossy(&g)
                    );
                }
                // The journal and --json always carry step 1's output (redacted); the plain
                // reporter shows only some progress lines, as they come.
                if what == "journal" || json {
                    assert!(text.contains("***"), "{what}:\n{text}");
                }
            }
            if json {
                assert!(
                    shown.lines().any(|l| l.starts_with('{')),
                    "--json printed no JSON:\n{shown}"
                );
            }
        }
    }
}

/// `--dry-run` shows exactly what is sent: the wire line, and the command it reads on stdin
/// (the secret hidden), for each of the three.
#[test]
fn the_dry_run_shows_the_command_sent_on_stdin() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let api = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rb = runbook(dir.path(), &sshd, &api, &dir.path().join("x"));
    let secret = HOSTILE[1];
    let out = recover_in(dir.path())
        .args(["run", "--dry-run"])
        .arg(&rb)
        .env("RB_SECRET", secret)
        .output()
        .unwrap();
    let dry = text(&out.stdout);
    assert!(out.status.success(), "{dry}{}", text(&out.stderr));
    for g in giveaways(secret) {
        assert!(!contains(dry.as_bytes(), &g), "{dry}");
    }
    let program = r#"sh -c 's=$(cat; echo .) && s=${s%.} && exec </dev/null && eval "$s"'"#;
    assert!(
        dry.contains(&format!("timeout -k 5s 60s {program} recover:sec:1")),
        "{dry}"
    );
    assert!(
        dry.contains("on stdin  sleep 1.5; test -n *** && printf '%s' *** | wc -c && echo ***"),
        "{dry}"
    );
    assert!(
        dry.contains(
            "on stdin  curl -sS -m 30 -w '\\n%{http_code}\\n' --config - <<'RECOVER_CURL_CONFIG'"
        ),
        "{dry}"
    );
    assert!(dry.contains("header = \"X-Token: ***\""), "{dry}");
    assert!(dry.contains(&format!("local     {program}")), "{dry}");
}

/// `power_on: ipmi` takes its password from the environment only: a literal (or anything but
/// one `{{ env.X }}`) is refused by `check`, without printing it.
#[test]
fn a_literal_ipmi_password_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let rb = |password: &str| {
        let path = dir.path().join("ipmi.yaml");
        std::fs::write(
            &path,
            format!(
                "name: ipmi\nbudget: 10m\ntargets:\n  box: {{ host: box.local }}\nvars:\n  pw: hunter2-literal\nphases:\n  - name: All\n    window: 0m-10m\n    steps:\n      - power_on: {{ ipmi: bmc.local, user: admin, password: {password} }}\n"
            ),
        )
        .unwrap();
        path
    };
    for (password, ok) in [
        ("hunter2-literal", false),
        (r#""a'b\"c$d\\e""#, false),
        (r#""{{ vars.pw }}""#, false),
        (r#""x{{ env.IPMI_PASSWORD }}""#, false),
        (r#""{{ env.IPMI_PASSWORD }}""#, true),
        (r#""{{env.IPMI_PASSWORD}}""#, true),
    ] {
        let out = recover_in(dir.path())
            .arg("check")
            .arg(rb(password))
            .env("IPMI_PASSWORD", "from-the-env")
            .output()
            .unwrap();
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        if ok {
            assert_eq!(out.status.code(), Some(0), "{password}: {all}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{password}: {all}");
            assert!(
                all.contains("the IPMI password is written in the runbook"),
                "{password}: {all}"
            );
            assert!(all.contains("{{ env.IPMI_PASSWORD }}"), "{all}");
        }
        assert!(!all.contains("from-the-env"), "{all}");
    }
}

/// A command sent on stdin is still killed by its marker: Ctrl-C (SIGINT) during a `run:`
/// step that holds a secret ends the remote shell, and the run exits 130. Ten tries.
#[test]
fn ctrl_c_kills_a_remote_command_that_holds_a_secret() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    for attempt in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("remote.pid");
        let rb = dir.path().join("k.yaml");
        std::fs::write(
            &rb,
            format!(
                "name: k\nbudget: 10m\ntargets:\n{}phases:\n  - name: All\n    window: 0m-10m\n    steps:\n      - run: \"echo $$ > {}; sleep 300; test -n {{{{ env.RB_SECRET }}}}\"\n        timeout: 5m\n",
                sshd.runbook_target_yaml("box"),
                pid_file.display()
            ),
        )
        .unwrap();
        let state = dir.path().join("state");
        let mut bg = Background::start(
            &state,
            &["run", "--yes", rb.to_str().unwrap()],
            &[("RB_SECRET", HOSTILE[attempt % 2])],
        );
        assert!(
            common::eventually(Duration::from_secs(30), || std::fs::read_to_string(
                &pid_file
            )
            .is_ok_and(|p| p.ends_with('\n'))),
            "the step never started:\n{}",
            bg.output()
        );
        assert!(common::remote_pid_alive(&sshd, &pid_file));
        // SAFETY: kill(2) of the child this test started.
        assert_eq!(unsafe { libc::kill(bg.pid(), libc::SIGINT) }, 0);
        let status = bg
            .wait(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("still running 30 s after SIGINT:\n{}", bg.output()));
        assert_eq!(status.code(), Some(130), "try {attempt}:\n{}", bg.output());
        assert!(
            common::eventually(Duration::from_secs(10), || !common::remote_pid_alive(
                &sshd, &pid_file
            )),
            "try {attempt}: the remote shell survived Ctrl-C"
        );
    }
}
