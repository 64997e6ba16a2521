//! Issue 21 under real systemd: the lab guest plays the management host too. The built
//! `recover` binary is copied into the guest, the README's set-up block ("Starting by itself
//! when mains returns", between its `setup-watch` markers) runs there as it stands, as root,
//! and `recover-watch.service` watches the guest itself (ssh to 127.0.0.1 as `ops`) through an
//! overlay of the reference runbook with the guest's own ports. The UPS is a NUT responder in
//! the guest (the VM reaches no network, not even the host's upsd), and the operators' channel
//! a webhook receiver in the guest, both enabled at boot.
//!
//! Scenario (a): the stack up and seen healthy by the watch, then `lab powercut` (the box and
//! its management host go down together) and `lab boot`: with no upsmon at all, the service
//! recovers the stack by itself and "we are back" is posted; the seconds from power back to
//! that post are printed. Also `systemd-analyze security recover-watch.service` in the guest
//! (at most 4.0).
//!
//! Environment, as for `tests/lab_e2e.rs`: `RECOVER_SKIP_LAB=1` skips it (saying so), as does
//! a missing `qemu-system-x86_64`; `RECOVER_LAB_KEEP=1` leaves the lab running.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{require_tool, run_bounded, say, text};

const LAB_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/lab");

fn lab_try(args: &[&str], limit: Duration) -> Output {
    let mut cmd = Command::new(LAB_SCRIPT);
    cmd.args(args).stdin(Stdio::null());
    if std::env::var_os("LAB_BOOT_TIMEOUT").is_none() {
        cmd.env("LAB_BOOT_TIMEOUT", "600");
    }
    run_bounded(cmd, limit)
}

fn labctl(args: &[&str], limit: Duration) -> String {
    let out = lab_try(args, limit);
    assert!(
        out.status.success(),
        "`tests/lab/lab {}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn lab_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("RECOVER_LAB_DIR").unwrap_or_else(|_| "/var/tmp/recover-lab".into()),
    )
}

/// `cmd` as root in the guest (a fresh connection), `input` on its stdin, bounded.
fn root(cmd: &str, input: Option<&Path>, limit: Duration) -> Output {
    let mut c = Command::new("ssh");
    c.arg("-F").arg(lab_dir().join("ssh_config")).args([
        "-o",
        "BatchMode=yes",
        "-l",
        "root",
        "spark-lab",
        "--",
        cmd,
    ]);
    match input {
        Some(f) => c.stdin(std::fs::File::open(f).expect("open the input")),
        None => c.stdin(Stdio::null()),
    };
    run_bounded(c, limit)
}

/// [`root`], which must succeed; its stdout.
fn root_ok(cmd: &str, limit: Duration) -> String {
    let out = root(cmd, None, limit);
    assert!(
        out.status.success(),
        "in the guest, as root: `{cmd}` failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The README's set-up block, between its markers.
fn readme_setup_block() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- setup-watch")
        .expect("the README's setup-watch marker");
    let rest = &readme[start..];
    let end = rest.find("<!-- /setup-watch -->").expect("its end marker");
    let block = &rest[..end];
    let code = block
        .split_once("```sh\n")
        .and_then(|(_, b)| b.split_once("```"))
        .map(|(b, _)| b)
        .expect("a sh block between the markers");
    code.to_owned()
}

/// The NUT responder (the UPS, from /etc/lab/ups.status) and the webhook receiver (each post
/// a line of /var/lib/lab-hook/posts: the time, then the body), as units enabled at boot.
const GUEST_SETUP: &str = r#"set -eu
mkdir -p /etc/lab /var/lib/lab-hook /usr/local/lib/lab
[ -e /etc/lab/ups.status ] || echo OL > /etc/lab/ups.status
cat > /usr/local/lib/lab/nut.py <<'PY'
import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for raw in self.rfile:
            words = raw.decode(errors="replace").split()
            if words[:2] == ["GET", "VAR"] and len(words) == 4:
                ups, var = words[2], words[3]
                if var == "ups.status":
                    value = open("/etc/lab/ups.status").read().strip()
                elif var == "battery.charge":
                    value = "100"
                else:
                    self.wfile.write(b"ERR VAR-NOT-SUPPORTED\n"); continue
                self.wfile.write(f'VAR {ups} {var} "{value}"\n'.encode())
            elif words[:1] == ["LOGOUT"]:
                self.wfile.write(b"OK Goodbye\n"); return
            else:
                self.wfile.write(b"ERR UNKNOWN-COMMAND\n")
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("127.0.0.1", 3493), H).serve_forever()
PY
cat > /usr/local/lib/lab/hook.py <<'PY'
import http.server, os, time
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with open("/var/lib/lab-hook/posts", "ab") as f:
            f.write(b"%.3f " % time.time() + body.replace(b"\n", b" ") + b"\n")
            f.flush(); os.fsync(f.fileno())
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 18999), H).serve_forever()
PY
for u in nut hook; do
cat > /etc/systemd/system/lab-$u.service <<UNIT
[Unit]
Description=lab: the $u stand-in for recover-watch.service
Before=recover-watch.service
[Service]
ExecStart=/usr/bin/python3 /usr/local/lib/lab/$u.py
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
done
systemctl daemon-reload
systemctl enable --now lab-nut.service lab-hook.service
"#;

/// The overlay the guest's watch runs: the reference runbook, pointed at the guest itself.
const GUEST_RUNBOOK: &str = "extends: /usr/local/share/recover/runbooks/spark-power.yaml
title: Power failure recovery, the lab guest watching itself
targets:
  spark:
    host: 127.0.0.1
    port: 22
    user: ops
    identity: /var/lib/recover/.ssh/id_lab
    known_hosts: /var/lib/recover/.ssh/known_hosts
vars:
  nut: 127.0.0.1:3493
  root_device: /dev/vda
  vllm: http://127.0.0.1:8000
  sglang: http://127.0.0.1:30000
  dispatcher: http://127.0.0.1:8100
  node_exporter: http://127.0.0.1:9100
  proxy: http://127.0.0.1:80
  prometheus: http://127.0.0.1:9090
  public_mcp: http://127.0.0.1:80/mcp/health
";

const STACK: &[&str] = &[
    "tailscale.service",
    "prometheus-node-exporter.service",
    "vllm-qwen36.service",
    "sglang-mistral.service",
    "dispatcher.service",
    "mcp-server.service",
    "caddy.service",
];

/// The watch journal's lines in the guest.
fn decisions() -> Vec<serde_json::Value> {
    let out = root(
        "cat /var/lib/recover/recover/watch/spark-power@guest.jsonl 2>/dev/null",
        None,
        Duration::from_secs(30),
    );
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The posts the guest's webhook received: (time, text).
fn posts() -> Vec<(f64, String)> {
    let out = root(
        "cat /var/lib/lab-hook/posts 2>/dev/null",
        None,
        Duration::from_secs(30),
    );
    text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (t, body) = l.split_once(' ')?;
            let v: serde_json::Value = serde_json::from_str(body).ok()?;
            Some((t.parse().ok()?, v["text"].as_str()?.to_owned()))
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    for _ in 0..(limit.as_secs() / 2 + 2) {
        if cond() {
            return;
        }
        if t0.elapsed() >= limit {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let status = root(
        "systemctl status --no-pager recover-watch.service; journalctl -u recover-watch.service -n 80 --no-pager",
        None,
        Duration::from_secs(30),
    );
    panic!(
        "{what}: not within {limit:?}\n--- decisions ---\n{:#?}\n--- posts ---\n{:#?}\n--- the service ---\n{}{}",
        decisions()
            .iter()
            .map(|d| format!("{} {} {}", d["at"], d["decision"], d["text"]))
            .collect::<Vec<_>>(),
        posts(),
        text(&status.stdout),
        text(&status.stderr)
    );
}

/// Leaves the lab down however the test ends (a VM left up keeps the lab's lock: its qemu
/// inherits the descriptor `flock` holds).
struct DownAtTheEnd;

impl Drop for DownAtTheEnd {
    fn drop(&mut self) {
        if std::env::var_os("RECOVER_LAB_KEEP").is_none() {
            let _ = lab_try(&["down"], Duration::from_secs(60));
        }
    }
}

#[test]
fn lab_watch() {
    if std::env::var_os("RECOVER_SKIP_LAB").is_some_and(|v| v == "1") {
        common::skipped("RECOVER_SKIP_LAB=1");
        return;
    }
    if require_tool(&["qemu-system-x86_64"]).is_none() {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    // What the guest gets: the clone's scripts, contrib and runbooks, and the binary built here
    // (stripped), where `cargo build --release` would have put it.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = tmp.path().join("recover");
    std::fs::copy(env!("CARGO_BIN_EXE_recover"), &bin).unwrap();
    let _ = Command::new("strip").arg(&bin).status();
    let tar = tmp.path().join("src.tar");
    let out = run_bounded(
        {
            let mut c = Command::new("tar");
            c.arg("-C").arg(repo).arg("-cf").arg(&tar).args([
                "scripts",
                "contrib",
                "runbooks",
                "README.md",
            ]);
            c
        },
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "tar: {}", text(&out.stderr));

    labctl(&["down"], Duration::from_secs(60));
    let _down = DownAtTheEnd;
    labctl(&["up"], Duration::from_secs(1500));
    say(&format!(
        "lab watch: cold boot in {:.0} s",
        t0.elapsed().as_secs_f64()
    ));
    labctl(&["warmup", "8", "4"], Duration::from_secs(60));

    let src = "/root/recover-src";
    let put = root(
        &format!("mkdir -p {src} && tar -C {src} -xf -"),
        Some(&tar),
        Duration::from_secs(120),
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    let put = root(
        &format!(
            "mkdir -p {src}/target/release {src}/stand-ins && cat > {src}/target/release/recover && chmod 0755 {src}/target/release/recover"
        ),
        Some(&bin),
        Duration::from_secs(300),
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    // A management host has `ca-certificates`; the lab image (minbase) does not: the host's.
    let put = root(
        "mkdir -p /etc/ssl/certs && cat > /etc/ssl/certs/ca-certificates.crt",
        Some(Path::new("/etc/ssl/certs/ca-certificates.crt")),
        Duration::from_secs(60),
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    // The build was done here: in the guest, `cargo build` finds it made.
    root_ok(
        &format!(
            "printf '#!/bin/sh\\n[ -x target/release/recover ]\\n' > {src}/stand-ins/cargo && chmod 0755 {src}/stand-ins/cargo"
        ),
        Duration::from_secs(30),
    );

    // The README's set-up block, as it stands, as root.
    let block = readme_setup_block();
    let script = tmp.path().join("setup.sh");
    std::fs::write(&script, &block).unwrap();
    let out = root(
        &format!("cd {src} && PATH={src}/stand-ins:$PATH sh -ex"),
        Some(&script),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "the README's set-up block failed in the guest:\n{block}\n--- stdout\n{}\n--- stderr\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    say("lab watch: the README's set-up block ran in the guest");
    assert_eq!(
        root_ok(
            "systemctl is-enabled recover-watch.service",
            Duration::from_secs(30)
        )
        .trim(),
        "enabled"
    );
    assert_eq!(
        root_ok(
            "stat -c '%a %U %G' /run/lock/recover && id -u recover >/dev/null && echo ok",
            Duration::from_secs(30)
        )
        .lines()
        .collect::<Vec<_>>(),
        ["1770 root recover", "ok"]
    );
    let security = root_ok(
        "systemd-analyze security --no-pager recover-watch.service",
        Duration::from_secs(60),
    );
    let exposure = security
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for recover-watch.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{security}"));
    say(&format!(
        "lab watch: systemd-analyze security recover-watch.service in the guest: exposure {exposure}"
    ));
    assert!(exposure <= 4.0, "{security}");

    // The guest watches itself: its stand-ins, the overlay, the key and host key, the conf.
    let setup = tmp.path().join("guest-setup.sh");
    std::fs::write(&setup, GUEST_SETUP).unwrap();
    let out = root("sh", Some(&setup), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let rb = tmp.path().join("guest.yaml");
    std::fs::write(&rb, GUEST_RUNBOOK).unwrap();
    let out = root(
        "cat > /etc/recover/guest.yaml && chmod 0644 /etc/recover/guest.yaml",
        Some(&rb),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = root(
        "install -m 0600 -o recover -g recover /dev/stdin /var/lib/recover/.ssh/id_lab",
        Some(&lab_dir().join("id_ed25519")),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    root_ok(
        "set -e; k=$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub); \
         printf '127.0.0.1 %s\\n[127.0.0.1]:22 %s\\n' \"$k\" \"$k\" > /var/lib/recover/.ssh/known_hosts; \
         chown recover:recover /var/lib/recover/.ssh/known_hosts; \
         printf 'RECOVER_RUNBOOK=\"/etc/recover/guest.yaml\"\\nRECOVER_ARGS=\"--every 5s\"\\nRECOVER_WEBHOOK=\"http://127.0.0.1:18999/hook\"\\n' > /etc/recover/watch.conf; \
         sudo -u recover recover check --unattended /etc/recover/guest.yaml; \
         sync; \
         systemctl restart recover-watch.service",
        Duration::from_secs(60),
    );

    // The stack up by hand; the watch sees it healthy (and keeps the boot id, synced).
    labctl(&["stack", "start"], Duration::from_secs(300));
    let boot_before = root_ok(
        "cat /proc/sys/kernel/random/boot_id",
        Duration::from_secs(30),
    );
    wait_for(
        "the watch sees the stack healthy",
        Duration::from_secs(180),
        || {
            decisions()
                .last()
                .is_some_and(|d| d["decision"] == "healthy")
        },
    );
    std::thread::sleep(Duration::from_secs(6));
    let posts_before = posts().len();

    // (a) Both down at once; power back; nobody, no upsmon.
    say("lab watch: (a) powercut of the box and its management host");
    labctl(&["powercut"], Duration::from_secs(60));
    let back = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    labctl(&["boot"], Duration::from_secs(900));
    say(&format!(
        "lab watch: (a) the guest answers ssh {:.0} s after power back",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            - back
    ));
    let boot_after = root_ok(
        "cat /proc/sys/kernel/random/boot_id",
        Duration::from_secs(30),
    );
    assert_ne!(boot_before, boot_after);
    wait_for(
        "\"we are back\" after the cut",
        Duration::from_secs(900),
        || {
            posts()
                .iter()
                .skip(posts_before)
                .any(|(_, t)| t.contains("We are back"))
        },
    );
    let posts = posts();
    let (at, text_back) = posts
        .iter()
        .skip(posts_before)
        .find(|(_, t)| t.contains("We are back"))
        .unwrap()
        .clone();
    say(&format!(
        "lab watch: (a) power back to \"we are back\": {:.0} s (the post: {text_back})",
        at - back
    ));
    assert!(
        text_back.contains("started by recover watch: spark"),
        "{text_back}"
    );
    let d = decisions();
    let starts: Vec<&serde_json::Value> =
        d.iter().filter(|x| x["decision"] == "start_run").collect();
    assert_eq!(starts.len(), 1, "{d:#?}");
    assert!(
        starts[0]["text"]
            .as_str()
            .unwrap()
            .contains(&format!("{} now", boot_after.trim())),
        "{:#?}",
        starts[0]
    );
    for unit in STACK {
        assert_eq!(
            root_ok(
                &format!("systemctl is-active {unit}"),
                Duration::from_secs(30)
            )
            .trim(),
            "active",
            "{unit}"
        );
    }
    // The run's own journal, in the service's state directory: a success, unattended.
    let journal = root_ok(
        "ls -t /var/lib/recover/recover/runs/spark-power@guest-*.jsonl | head -1 | xargs tail -1",
        Duration::from_secs(30),
    );
    assert!(
        journal.contains("\"run_finished\"") && journal.contains("success"),
        "{journal}"
    );

    // (c) A unit stopped by hand on a box that did not reboot: one "degraded" post, no run.
    say("lab watch: (c) caddy.service stopped by hand");
    let runs_before = d.iter().filter(|x| x["decision"] == "start_run").count();
    let posted_before = posts.len();
    root_ok("systemctl stop caddy.service", Duration::from_secs(60));
    wait_for("a degraded decision", Duration::from_secs(120), || {
        decisions()
            .iter()
            .filter(|x| x["decision"] == "degraded")
            .count()
            >= 4
    });
    let now = crate::posts();
    let new: Vec<&String> = now.iter().skip(posted_before).map(|(_, t)| t).collect();
    // One post for it (a loaded guest may add one when a probe times out: another set of
    // units, another decision).
    assert!(!new.is_empty(), "{new:#?}");
    assert!(
        new[0].contains("degraded, not recovering: caddy.service is inactive"),
        "{new:#?}"
    );
    let d = decisions();
    assert_eq!(
        d.iter().filter(|x| x["decision"] == "start_run").count(),
        runs_before,
        "no run for a unit stopped by hand"
    );
    assert_eq!(
        root_ok(
            "systemctl is-active caddy.service || true",
            Duration::from_secs(30)
        )
        .trim(),
        "inactive"
    );
    root_ok("systemctl start caddy.service", Duration::from_secs(60));
    wait_for("healthy again", Duration::from_secs(120), || {
        decisions()
            .last()
            .is_some_and(|x| x["decision"] == "healthy")
    });

    if std::env::var_os("RECOVER_LAB_KEEP").is_none() {
        let _ = lab_try(&["down"], Duration::from_secs(60));
    }
    say(&format!(
        "lab watch: done in {:.0} s",
        t0.elapsed().as_secs_f64()
    ));
}
