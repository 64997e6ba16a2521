//! Issue 4, end to end: the real `recover` binary against the lab VM of `tests/lab` (a Debian
//! VM under qemu with real systemd, journald, sshd and kernel, python stand-ins for the Spark's
//! seven units, ports forwarded to 127.0.0.1 only).
//!
//! One test, [`lab_end_to_end`], boots the lab from cold and runs the scenarios in sequence on
//! that one VM (two power cuts, so three boots in all), resetting between them with
//! `lab fault clear` and `lab stack stop`. Each scenario asserts what can be observed: exit
//! codes, the JSONL journal, what the VM did (`lab ssh`), what the webhook received. A failed
//! scenario does not stop the others; the test then fails naming every failed scenario, with
//! its journal paths (kept on disk), the journal's last events and the lab console's tail.
//!
//! The lab is the only one on the machine (fixed ports): the suite takes it over (`lab down`,
//! then a fresh `lab up`) and leaves it down.
//!
//! Environment:
//! - `RECOVER_SKIP_LAB=1`: skip the suite (passes, saying so), for a fast local loop. It is
//!   also skipped when `qemu-system-x86_64` is missing (with `CI` set, that fails it instead);
//!   nothing else skips it.
//! - `RECOVER_LAB_SCENARIOS=2,5`: run only these scenarios (by number), in the suite's order.
//! - `RECOVER_LAB_KEEP=1`: leave the lab running at the end (`tests/lab/lab down` stops it).
//! - `RECOVER_LAB_DIR`: the lab directory, as for `tests/lab/lab`.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::nut::{MONITOR_PASSWORD, MONITOR_USER};
use common::upsmon::Upsmon;
use common::{
    Background, HttpServer, Ran, dump_without_progress, events, eventually_every, journals_in, p,
    read_journal, require_tool, run_bounded, run_to_end, say, step_event, tail, text,
};
use serde_json::{Value, json};

const LAB_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/lab");
const LAB_RUNBOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/lab.yaml");
/// The lab directory and ports `runbooks/lab.yaml` is written for.
const DEFAULT_LAB_DIR: &str = "/var/tmp/recover-lab";
/// How often a wait asks the VM again (each question is an ssh round trip).
const POLL: Duration = Duration::from_millis(200);

/// A scenario: it panics when an assertion fails.
type ScenarioFn = fn(&Lab, &Scenario);

/// The scenarios, in the order they run (numbers are the issue's).
const SCENARIOS: &[(u32, &str, ScenarioFn)] = &[
    (
        1,
        "the full runbooks/lab.yaml from a cold boot",
        full_runbook,
    ),
    (
        6,
        "rehearse: After= contradiction, then a clean rehearsal",
        rehearse_order,
    ),
    (
        3,
        "a unit that fails, hits its start limit, crash-loops",
        unit_faults,
    ),
    (
        4,
        "a hung inference stand-in healed by its remedy",
        hung_inference,
    ),
    (
        2,
        "a power cut mid-recovery, wait_ssh, then --resume",
        power_cut,
    ),
    (
        7,
        "zero touch: upsmon starts the unattended recovery when mains returns",
        zero_touch,
    ),
    (5, "a filesystem error in the kernel log aborts", kmsg_abort),
];

// --- the lab ---------------------------------------------------------------------------------

fn lab_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(LAB_SCRIPT);
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// `tests/lab/lab ARGS`, at most `limit`.
fn lab_try(args: &[&str], limit: Duration) -> Output {
    run_bounded(lab_command(args), limit)
}

/// `tests/lab/lab ARGS`, at most `limit`; its stdout. Panics with its output unless it succeeds.
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

/// The running lab, as `lab env` describes it.
struct Lab {
    env: BTreeMap<String, String>,
}

impl Lab {
    fn read() -> Lab {
        let env = labctl(&["env"], Duration::from_secs(20))
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches(['"', '\'']).to_owned()))
            .collect();
        Lab { env }
    }

    fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("`lab env` has no {key}: {:?}", self.env))
    }

    /// CMD in the guest as ops; (exit status, stdout).
    fn ssh_status(&self, cmd: &str) -> (Option<i32>, String) {
        let out = lab_try(&["ssh", cmd], Duration::from_secs(60));
        (out.status.code(), text(&out.stdout))
    }

    /// CMD in the guest as ops; its stdout. Panics unless it succeeds.
    fn ssh(&self, cmd: &str) -> String {
        labctl(&["ssh", cmd], Duration::from_secs(60))
    }

    fn boot_id(&self) -> String {
        self.ssh("cat /proc/sys/kernel/random/boot_id")
            .trim()
            .to_owned()
    }

    /// `systemctl show -p P...` of each unit, in order.
    fn unit_props(&self, units: &[String], props: &[&str]) -> Vec<BTreeMap<String, String>> {
        let ps: Vec<String> = props.iter().map(|p| format!("-p {p}")).collect();
        let out = self.ssh(&format!(
            "systemctl show {} {}",
            ps.join(" "),
            units.join(" ")
        ));
        let blocks: Vec<BTreeMap<String, String>> = out
            .split("\n\n")
            .filter(|b| !b.trim().is_empty())
            .map(|b| {
                b.lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect();
        assert_eq!(blocks.len(), units.len(), "systemctl show said:\n{out}");
        blocks
    }

    fn active_states(&self, units: &[String]) -> Vec<String> {
        self.unit_props(units, &["ActiveState"])
            .into_iter()
            .map(|m| m.get("ActiveState").cloned().unwrap_or_default())
            .collect()
    }

    /// `ActiveEnterTimestampMonotonic` of each unit (microseconds since boot; 0: never active).
    fn active_since(&self, units: &[String]) -> Vec<u64> {
        self.unit_props(units, &["ActiveEnterTimestampMonotonic"])
            .into_iter()
            .map(|m| {
                m.get("ActiveEnterTimestampMonotonic")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// `GET url` from the host: the status code, or None without an answer.
    fn http_status(&self, url: &str) -> Option<u16> {
        let rest = url.strip_prefix("http://")?;
        let (hostport, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let mut s = TcpStream::connect(hostport).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = Vec::new();
        let _ = s.take(4096).read_to_end(&mut buf);
        text(&buf).split_whitespace().nth(1)?.parse().ok()
    }
}

/// The last `lines` lines of the lab's serial console (kernel, initramfs, systemd).
fn console_tail(lines: usize) -> String {
    let out = lab_try(&["console"], Duration::from_secs(20));
    let path = text(&out.stdout).trim().to_owned();
    match fs::read(&path) {
        Ok(bytes) => {
            let t = text(&bytes);
            format!(
                "lab console ({path}), last {lines} lines:\n{}",
                tail(&t, lines)
            )
        }
        Err(e) => format!("lab console ({path:?}): cannot read: {e}"),
    }
}

/// Back to a known state between scenarios: the VM on, no faults, the stack stopped, the
/// suite's warm-ups.
fn reset() {
    if !lab_try(&["status"], Duration::from_secs(30))
        .status
        .success()
    {
        labctl(&["boot"], Duration::from_secs(240));
    }
    labctl(&["sudoers", "--all"], Duration::from_secs(60));
    labctl(&["fault", "clear"], Duration::from_secs(60));
    labctl(&["stack", "stop"], Duration::from_secs(120));
    labctl(&["warmup", "8", "4"], Duration::from_secs(30));
}

/// Stops the lab when the suite ends, however it ends.
struct LabDown;

impl Drop for LabDown {
    fn drop(&mut self) {
        if std::env::var_os("RECOVER_LAB_KEEP").is_some_and(|v| v == "1") {
            say("lab e2e: RECOVER_LAB_KEEP=1: the lab stays up (tests/lab/lab down)");
            return;
        }
        let out = lab_try(&["down"], Duration::from_secs(60));
        if !out.status.success() {
            say(&format!(
                "lab e2e: `lab down` failed: {}",
                text(&out.stderr)
            ));
        }
    }
}

// --- runbooks derived from runbooks/lab.yaml ---------------------------------------------------

/// `runbooks/lab.yaml`, an overlay, laid over the runbook it extends (spark-power.yaml) the way
/// `recover` does: targets merged key by key, vars and title replaced. Scenarios edit this whole
/// runbook (its phases and steps are spark-power.yaml's own).
fn lab_yaml() -> Value {
    let read = |path: &Path| -> Value {
        let src = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
        serde_saphyr::from_str(&src).unwrap_or_else(|e| panic!("{path:?} parses: {e}"))
    };
    let overlay = read(Path::new(LAB_RUNBOOK));
    let extends = overlay["extends"]
        .as_str()
        .expect("runbooks/lab.yaml extends the reference runbook");
    let mut rb = read(&Path::new(LAB_RUNBOOK).with_file_name(extends));
    for (name, keys) in overlay["targets"].as_object().into_iter().flatten() {
        for (k, v) in keys.as_object().into_iter().flatten() {
            rb["targets"][name][k] = v.clone();
        }
    }
    for (k, v) in overlay["vars"].as_object().into_iter().flatten() {
        rb["vars"][k] = v.clone();
    }
    if let Some(t) = overlay.get("title") {
        rb["title"] = t.clone();
    }
    rb
}

/// The runbook's `vars` that name lab ports, and the `lab env` URL each must be.
fn port_vars(lab: &Lab) -> Vec<(&'static str, String)> {
    vec![
        ("vllm", lab.get("LAB_VLLM_URL").to_owned()),
        ("sglang", lab.get("LAB_SGLANG_URL").to_owned()),
        ("dispatcher", lab.get("LAB_DISPATCHER_URL").to_owned()),
        ("node_exporter", lab.get("LAB_NODE_EXPORTER_URL").to_owned()),
        ("proxy", lab.get("LAB_CADDY_URL").to_owned()),
        ("prometheus", lab.get("LAB_PROMETHEUS_URL").to_owned()),
        (
            "public_mcp",
            format!("{}/mcp/health", lab.get("LAB_PUBLIC_URL")),
        ),
    ]
}

/// `rb` aimed at the running lab: its target block and port variables from `lab env`.
fn retarget(rb: &mut Value, lab: &Lab) {
    let port: u16 = lab.get("LAB_SSH_PORT").parse().expect("a port");
    rb["targets"] = json!({
        "spark": {
            "host": lab.get("LAB_SSH_HOST"),
            "user": lab.get("LAB_SSH_USER"),
            "port": port,
            "identity": lab.get("LAB_IDENTITY"),
            "known_hosts": lab.get("LAB_KNOWN_HOSTS"),
        }
    });
    for (k, v) in port_vars(lab) {
        rb["vars"][k] = json!(v);
    }
}

/// `runbooks/lab.yaml` aimed at the running lab, renamed `name`.
fn derived(lab: &Lab, name: &str) -> Value {
    let mut rb = lab_yaml();
    retarget(&mut rb, lab);
    rb["name"] = json!(name);
    rb["title"] = json!(format!("lab e2e: {name}"));
    rb
}

fn phases(rb: &Value) -> &Vec<Value> {
    rb["phases"].as_array().expect("phases")
}

/// The phase whose name starts with `prefix`.
fn phase(rb: &Value, prefix: &str) -> Value {
    phases(rb)
        .iter()
        .find(|p| p["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .unwrap_or_else(|| panic!("runbooks/lab.yaml has no phase `{prefix}…`"))
        .clone()
}

fn steps_mut(phase: &mut Value) -> &mut Vec<Value> {
    phase["steps"].as_array_mut().expect("steps")
}

/// The first phase with only its `wait_ssh` step (`every`, `timeout` as given).
fn wait_ssh_phase(rb: &Value, every: &str, timeout: &str) -> Value {
    let mut p = phase(rb, "Power on");
    let steps = steps_mut(&mut p);
    steps.retain(|s| s.get("wait_ssh").is_some());
    assert_eq!(steps.len(), 1, "runbooks/lab.yaml: one wait_ssh step");
    steps[0]["wait_ssh"] = json!({ "every": every, "timeout": timeout });
    p
}

/// The service phase's `start` step of `unit`.
fn start_step(rb: &Value, unit: &str) -> Value {
    phase(rb, "Start services")["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["start"] == unit)
        .unwrap_or_else(|| panic!("runbooks/lab.yaml does not start {unit}"))
        .clone()
}

/// The units the runbook starts, in its order.
fn started_units(rb: &Value) -> Vec<String> {
    phases(rb)
        .iter()
        .flat_map(|p| p["steps"].as_array().into_iter().flatten())
        .filter_map(|s| s["start"].as_str().map(str::to_owned))
        .collect()
}

/// Writes `rb` to `DIR/NAME.yaml` (as JSON, which is YAML) and returns the path.
fn write_runbook(dir: &Path, rb: &Value) -> PathBuf {
    let name = rb["name"].as_str().expect("a name");
    let path = dir.join(format!("{name}.yaml"));
    fs::write(&path, serde_json::to_string_pretty(rb).unwrap()).expect("write the runbook");
    path
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

// --- running recover ---------------------------------------------------------------------------

/// One scenario's place: a directory (kept when the scenario fails), the webhook receiver,
/// the journals it wrote (named in the failure report).
struct Scenario {
    dir: PathBuf,
    hook: HttpServer,
    journals: RefCell<Vec<PathBuf>>,
}

impl Scenario {
    fn new(dir: PathBuf) -> Scenario {
        let hook = HttpServer::start();
        hook.respond("POST", "/hook", 200, "ok");
        Scenario {
            dir,
            hook,
            journals: RefCell::new(Vec::new()),
        }
    }

    fn journal(&self, name: &str) -> PathBuf {
        let p = self.dir.join(format!("{name}.jsonl"));
        self.note_journal(&p);
        p
    }

    fn note_journal(&self, p: &Path) {
        let mut js = self.journals.borrow_mut();
        if !js.iter().any(|j| j == p) {
            js.push(p.to_path_buf());
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn webhook(&self) -> String {
        self.hook.url_for("/hook")
    }

    /// `recover ARGS` to its end (at most `limit`), state under the scenario's directory.
    fn recover(&self, args: &[&str], limit: Duration) -> Ran {
        run_to_end(
            &self.state(),
            args,
            &[("RECOVER_WEBHOOK", &self.webhook())],
            limit,
        )
    }

    /// `recover ARGS` in the background.
    fn background(&self, args: &[&str]) -> Background {
        Background::start(&self.state(), args, &[("RECOVER_WEBHOOK", &self.webhook())])
    }

    /// What the webhook received: the Slack `text` of each post.
    fn posts(&self) -> Vec<String> {
        self.hook
            .requests_to("/hook")
            .iter()
            .map(|r| r.json()["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Issue 11's proof: from here on `ops` holds only the drop-in `recover sudoers` generates for the
/// runbook `args` name (`lab sudoers FILE`: ops leaves the sudo group), and a command outside the
/// runbook is refused. [`reset`] (and the end of the scenario) gives `NOPASSWD: ALL` back.
fn only_the_drop_in(lab: &Lab, sc: &Scenario, args: &[&str]) {
    let mut sudoers = vec!["sudoers"];
    sudoers.extend_from_slice(args);
    sudoers.extend_from_slice(&["--user", "ops"]);
    let made = sc.recover(&sudoers, Duration::from_secs(60));
    assert_eq!(made.code, Some(0), "{}", made.context());
    assert!(
        made.stdout.contains("ops ALL=(root) NOPASSWD: ") && !made.stdout.contains("NOPASSWD: ALL"),
        "{}",
        made.stdout
    );
    let file = sc.dir.join("ops.sudoers");
    fs::write(&file, &made.stdout).expect("write the drop-in");
    labctl(&["sudoers", p(&file)], Duration::from_secs(60));
    let (code, out) = lab.ssh_status("sudo -n id; echo \"exit $?\"");
    assert!(
        code == Some(0) && out.contains("exit 1") && !out.contains("uid=0"),
        "`sudo -n id` must be refused to ops under the drop-in: {code:?} {out}"
    );
    say(&format!(
        "lab e2e:   ops holds only the generated drop-in ({} rules); `sudo -n id` is refused",
        made.stdout
            .lines()
            .filter(|l| l.starts_with("ops "))
            .count()
    ));
}

/// Issue 20's lab proof: the guest's sudoers without `secure_path` (sudo's own default, where
/// the caller's PATH reaches what sudo runs), programs planted first in `ops`'s PATH
/// (`~/bin/sh`, `timeout`, `base64`, `systemctl`, ...; each leaves `/var/tmp/planted/NAME-UID`
/// and runs the real one), and `ops` holding the generated drop-in alone. [`HostilePath::check`]
/// then requires that no planted file ran as root, and that `ops`'s own commands did run the
/// planted ones (the PATH was in force). Dropping it puts the guest back.
struct HostilePath {
    lab_ssh: Vec<String>,
}

const PLANTED_DIR: &str = "/var/tmp/planted";

impl HostilePath {
    fn plant(lab: &Lab) -> HostilePath {
        let h = HostilePath {
            lab_ssh: vec![
                "-F".into(),
                lab.get("LAB_SSH_CONFIG").into(),
                "-l".into(),
                "root".into(),
                "-o".into(),
                "BatchMode=yes".into(),
                lab.get("LAB_HOST").into(),
            ],
        };
        h.root(&format!(
            r#"set -eu
mkdir -p {PLANTED_DIR} && chmod 1777 {PLANTED_DIR} && rm -f {PLANTED_DIR}/*
[ -f /etc/sudoers.recover-test ] || cp -p /etc/sudoers /etc/sudoers.recover-test
sed -i 's/^\(Defaults[[:space:]]*secure_path\)/#\1/' /etc/sudoers
visudo -cq
if grep -q '^[^#]*secure_path' /etc/sudoers; then echo "secure_path still set" >&2; exit 1; fi
install -d -o ops -g ops -m 0755 /home/ops/bin
for n in sh dash bash base64 timeout pkill systemctl journalctl dmesg sync grep cat id fsck tail sleep curl printf echo env sed; do
  real=
  for d in /usr/bin /bin /usr/sbin /sbin; do [ -x "$d/$n" ] && real=$d/$n && break; done
  [ -n "$real" ] || continue
  printf '#!/bin/sh\n/usr/bin/touch "{PLANTED_DIR}/%s-$(/usr/bin/id -u)"\nexec %s "$@"\n' "$n" "$real" > /home/ops/bin/$n
  chmod 0755 /home/ops/bin/$n && chown ops:ops /home/ops/bin/$n
done
[ -f /home/ops/.bashrc.recover-test ] || cp -p /home/ops/.bashrc /home/ops/.bashrc.recover-test
sed -i '1i PATH=/home/ops/bin:$PATH' /home/ops/.bashrc
"#
        ));
        // What an ssh command of ops (as recover sends them) finds first.
        let found = lab.ssh("command -v sh timeout base64");
        assert_eq!(
            found.lines().collect::<Vec<_>>(),
            [
                "/home/ops/bin/sh",
                "/home/ops/bin/timeout",
                "/home/ops/bin/base64"
            ],
            "the planted PATH is not in force for ops's ssh commands"
        );
        say(
            "lab e2e:   the guest's sudoers has no secure_path; ops has sh, timeout, base64, systemctl, ... planted first in its PATH",
        );
        h
    }

    /// `script` as root in the guest (bash reads it from stdin); its stdout.
    fn root(&self, script: &str) -> String {
        let file = tempfile::NamedTempFile::new().expect("a temp file");
        fs::write(file.path(), script).expect("write the script");
        let mut cmd = Command::new("ssh");
        cmd.args(&self.lab_ssh)
            .arg("bash -s")
            .stdin(fs::File::open(file.path()).expect("open the script"));
        let out = run_bounded(cmd, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "as root in the guest:\n{script}\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// No planted file ran as root; ops's own commands ran planted ones.
    fn check(&self) {
        let marks = self.root(&format!("ls -1 {PLANTED_DIR}"));
        let marks: Vec<&str> = marks.lines().collect();
        let as_root: Vec<&&str> = marks.iter().filter(|m| m.ends_with("-0")).collect();
        assert!(
            as_root.is_empty(),
            "planted programs ran as root through the drop-in: {as_root:?} (all: {marks:?})"
        );
        assert!(
            marks
                .iter()
                .any(|m| m.starts_with("timeout-") || m.starts_with("sh-")),
            "ops's commands never ran the planted programs, so this proved nothing: {marks:?}"
        );
        say(&format!(
            "lab e2e:   no planted program ran as root; ops's own ran {} of them",
            marks.len()
        ));
    }
}

impl Drop for HostilePath {
    fn drop(&mut self) {
        let undo = format!(
            "set -u
[ -f /etc/sudoers.recover-test ] && mv /etc/sudoers.recover-test /etc/sudoers
[ -f /home/ops/.bashrc.recover-test ] && mv /home/ops/.bashrc.recover-test /home/ops/.bashrc
rm -rf /home/ops/bin {PLANTED_DIR}
visudo -cq"
        );
        if catch_unwind(AssertUnwindSafe(|| self.root(&undo))).is_err() {
            say("lab e2e: could not put the guest's sudoers and ops's PATH back (`lab down` does)");
        }
    }
}

// --- the suite ---------------------------------------------------------------------------------

/// Says so on the real stderr: the test harness captures `eprintln!` of passing tests.
fn skipped(why: &str) {
    say(&format!(
        "SKIPPED: the lab end-to-end suite (tests/lab_e2e.rs): {why}"
    ));
}

#[test]
fn lab_end_to_end() {
    if std::env::var_os("RECOVER_SKIP_LAB").is_some_and(|v| v == "1") {
        skipped("RECOVER_SKIP_LAB=1");
        return;
    }
    if require_tool(&["qemu-system-x86_64"]).is_none() {
        return;
    }
    // An empty or blank RECOVER_LAB_SCENARIOS means all of them, never none.
    let only: Option<Vec<u32>> = std::env::var("RECOVER_LAB_SCENARIOS")
        .ok()
        .map(|v| {
            v.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().expect("RECOVER_LAB_SCENARIOS: numbers, like 2,5"))
                .collect::<Vec<u32>>()
        })
        .filter(|v| !v.is_empty());

    let suite = Instant::now();
    let t = Instant::now();
    labctl(&["build"], Duration::from_secs(20 * 60));
    let build_took = t.elapsed();

    // A cold boot on a fresh disk: whatever ran before is gone.
    let _down = LabDown;
    labctl(&["down"], Duration::from_secs(60));
    let t = Instant::now();
    let up = lab_try(&["up"], Duration::from_secs(300));
    assert!(
        up.status.success(),
        "`tests/lab/lab up` failed ({}):\n{}{}\n{}",
        up.status,
        text(&up.stdout),
        text(&up.stderr),
        console_tail(60)
    );
    let boot_took = t.elapsed();
    labctl(&["warmup", "8", "4"], Duration::from_secs(30));
    let lab_ = Lab::read();

    let mut report = vec![
        format!("lab build {build_took:.1?}"),
        format!("lab up (cold boot) {boot_took:.1?}"),
    ];
    let mut failures = Vec::new();
    let mut first = true;
    for (n, name, scenario) in SCENARIOS {
        if only.as_ref().is_some_and(|o| !o.contains(n)) {
            continue;
        }
        let t = Instant::now();
        let reset_first = !first;
        first = false;
        let dir = tempfile::Builder::new()
            .prefix(&format!("recover-lab-e2e-{n}-"))
            .tempdir()
            .expect("a tempdir")
            .keep();
        let sc = Scenario::new(dir.clone());
        say(&format!("lab e2e: scenario {n}: {name} …"));
        let result = catch_unwind(AssertUnwindSafe(|| {
            if reset_first {
                reset();
            }
            scenario(&lab_, &sc)
        }));
        let took = t.elapsed();
        match result {
            Ok(()) => {
                let _ = fs::remove_dir_all(&dir);
                report.push(format!("scenario {n} ({name}): ok in {took:.1?}"));
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "(no message)".into());
                let mut msg = format!(
                    "scenario {n} ({name}) FAILED after {took:.1?}:\n{why}\n\nscenario directory (kept): {}\n",
                    dir.display()
                );
                for j in sc.journals.borrow().iter() {
                    msg.push_str(&format!("journal: {}\n", j.display()));
                    if let Ok(t) = fs::read_to_string(j) {
                        let evs: Vec<Value> = t
                            .lines()
                            .filter_map(|l| serde_json::from_str(l).ok())
                            .collect();
                        msg.push_str(&format!(
                            "its last events:\n{}\n",
                            tail(&dump_without_progress(&evs), 12)
                        ));
                    }
                }
                msg.push_str(&console_tail(40));
                let status = lab_try(&["status"], Duration::from_secs(30));
                msg.push_str(&format!("\nlab status:\n{}", text(&status.stdout)));
                eprintln!("{msg}");
                report.push(format!("scenario {n} ({name}): FAILED in {took:.1?}"));
                failures.push(msg);
            }
        }
    }
    report.push(format!("suite {:.1?}", suite.elapsed()));
    say(&format!("lab e2e timings:\n  {}", report.join("\n  ")));
    assert!(
        failures.is_empty(),
        "{} lab scenario(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n==========\n\n")
    );
}

// --- 1. the full runbook -------------------------------------------------------------------------

/// The arguments that aim `runbooks/lab.yaml` at the running lab: none when the lab has the
/// directory and ports it is written for; otherwise `--target`, `--identity`, `--known-hosts`
/// and `--var` (the runbook itself, steps unchanged).
fn lab_yaml_args(lab: &Lab) -> Vec<String> {
    let defaults = lab.get("LAB_DIR") == DEFAULT_LAB_DIR
        && lab.get("LAB_SSH_PORT") == "2222"
        && port_vars(lab)
            .iter()
            .all(|(k, v)| lab_yaml()["vars"][*k].as_str() == Some(v.as_str()));
    if defaults {
        return Vec::new();
    }
    say(
        "lab e2e: the lab's directory or ports are not the defaults: --target, --identity, --known-hosts, --var",
    );
    let mut args = vec![
        "--target".to_owned(),
        format!(
            "spark={}@{}:{}",
            lab.get("LAB_SSH_USER"),
            lab.get("LAB_SSH_HOST"),
            lab.get("LAB_SSH_PORT")
        ),
        "--identity".to_owned(),
        format!("spark={}", lab.get("LAB_IDENTITY")),
        "--known-hosts".to_owned(),
        format!("spark={}", lab.get("LAB_KNOWN_HOSTS")),
    ];
    for (k, v) in port_vars(lab) {
        args.push("--var".to_owned());
        args.push(format!("{k}={v}"));
    }
    args
}

fn full_runbook(lab: &Lab, sc: &Scenario) {
    let rb = lab_yaml();
    let units = started_units(&rb);
    assert_eq!(
        units.len(),
        7,
        "runbooks/lab.yaml starts seven units: {units:?}"
    );
    assert!(
        lab.active_states(&units).iter().all(|s| s == "inactive"),
        "a freshly booted lab has its units stopped"
    );
    let aim = lab_yaml_args(lab);
    let mut which = vec![LAB_RUNBOOK];
    which.extend(aim.iter().map(String::as_str));
    only_the_drop_in(lab, sc, &which);
    let planted = HostilePath::plant(lab);
    let jpath = sc.journal("full");
    let mut args = vec!["run", LAB_RUNBOOK, "--yes", "--journal", p(&jpath)];
    args.extend(aim.iter().map(String::as_str));
    let ran = sc.recover(&args, Duration::from_secs(8 * 60));
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let j = read_journal(&jpath);
    let boot_id = lab.boot_id();

    // Complete: run_started first, run_finished success last, the real boot id.
    assert_eq!(
        j[0]["event"],
        "run_started",
        "{}",
        dump_without_progress(&j)
    );
    // The reference runbook's phases and steps, through the overlay: both files named.
    assert_eq!(j[0]["runbook"], "spark-power", "{}", j[0]);
    let files: Vec<(&str, &str)> = j[0]["files"]
        .as_array()
        .expect("run_started names the overlay's files")
        .iter()
        .map(|f| (str_of(f, "role"), str_of(f, "path")))
        .collect();
    assert_eq!(files.len(), 2, "{}", j[0]);
    assert_eq!(files[0], ("runbook", LAB_RUNBOOK), "{}", j[0]);
    assert_eq!(files[1].0, "base", "{}", j[0]);
    assert!(
        files[1].1.ends_with("runbooks/spark-power.yaml"),
        "{}",
        j[0]
    );
    let total = j[0]["steps"].as_u64().expect("steps");
    let end = j.last().unwrap();
    assert_eq!(
        end["event"],
        "run_finished",
        "{}",
        dump_without_progress(&j)
    );
    assert_eq!(end["outcome"], "success");
    assert_eq!(end["exit_code"], 0);
    let connected = events(&j, "connected");
    assert!(!connected.is_empty(), "{}", dump_without_progress(&j));
    for c in &connected {
        assert_eq!(c["boot_id"], boot_id.as_str(), "{c}");
    }
    assert!(
        events(&j, "boot_id_changed").is_empty(),
        "{}",
        dump_without_progress(&j)
    );

    // Every step ran and passed, in order.
    let started: Vec<u64> = events(&j, "step_started")
        .iter()
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        started,
        (1..=total).collect::<Vec<_>>(),
        "{}",
        dump_without_progress(&j)
    );
    for n in 1..=total {
        let f = step_event(&j, "step_finished", n);
        assert_eq!(f["outcome"], "passed", "step {n}: {f}");
    }
    for ph in events(&j, "phase_finished") {
        assert_eq!(ph["result"], "passed", "{ph}");
    }

    // The seven units, started in the runbook's order, each gate passed.
    let starts: Vec<&Value> = events(&j, "step_started")
        .into_iter()
        .filter(|e| e["kind"] == "start")
        .collect();
    let journal_units: Vec<String> = starts
        .iter()
        .map(|e| {
            let cmd = str_of(e, "command");
            units
                .iter()
                .find(|u| cmd.contains(&format!("systemctl start --no-block {u}")))
                .unwrap_or_else(|| panic!("start step command names no unit: {cmd}"))
                .clone()
        })
        .collect();
    assert_eq!(journal_units, units, "{}", dump_without_progress(&j));
    for s in &starts {
        let f = step_event(&j, "step_finished", s["step"].as_u64().unwrap());
        assert!(
            str_of(f, "reason").contains("active and healthy after"),
            "gate: {f}"
        );
    }
    // ... and on the VM: all active, entered active in that order.
    assert!(
        lab.active_states(&units).iter().all(|s| s == "active"),
        "{:?}",
        lab.active_states(&units)
    );
    let since = lab.active_since(&units);
    assert!(
        since.iter().all(|t| *t > 0) && since.windows(2).all(|w| w[0] < w[1]),
        "ActiveEnterTimestampMonotonic not increasing in runbook order {units:?}: {since:?}"
    );

    // drop_caches: as root through `sudo -n` (the target user is ops), verified.
    let dc = events(&j, "step_started")
        .into_iter()
        .find(|e| e["kind"] == "drop_caches")
        .expect("a drop_caches step");
    assert!(
        str_of(dc, "command").starts_with("sudo -n "),
        "drop_caches runs through sudo -n: {dc}"
    );
    let dcf = step_event(&j, "step_finished", dc["step"].as_u64().unwrap());
    assert_eq!(dcf["exit"], 0, "{dcf}");
    let reason = str_of(dcf, "reason");
    let re = regex::Regex::new(r"^page cache dropped: (\d+) MB before, (\d+) MB after$").unwrap();
    assert!(re.is_match(reason), "{dcf}");
    let cached: Vec<u64> = str_of(dcf, "stdout")
        .lines()
        .filter_map(|l| l.strip_prefix("Cached:"))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(cached.len(), 2, "before and after: {dcf}");
    assert!(cached[1] < cached[0], "the page cache shrank: {cached:?}");
    // dmesg and journalctl ran as root too, and passed.
    let dmesg = events(&j, "step_started")
        .into_iter()
        .find(|e| str_of(e, "command").contains("dmesg | tail -50"))
        .expect("the dmesg step");
    assert!(str_of(dmesg, "command").starts_with("sudo -n "), "{dmesg}");

    // We are back.
    let posts = sc.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(posts[0].starts_with("We are back"), "{posts:?}");
    assert!(!posts[0].contains("{{"), "{posts:?}");
    planted.check();
}

// --- 6. rehearse -------------------------------------------------------------------------------

fn rehearse_order(lab: &Lab, sc: &Scenario) {
    labctl(&["stack", "start"], Duration::from_secs(180));
    let base = lab_yaml();
    let units = started_units(&base);
    lab.ssh("rm -f /tmp/rehearsal-marker");
    let before = lab.active_since(&units);
    assert!(before.iter().all(|t| *t > 0), "stack running: {before:?}");

    // A state-changing step that a rehearsal must not run.
    let marker = json!({ "name": "leave a marker", "run": "touch /tmp/rehearsal-marker" });
    let with_marker = |rb: &mut Value| {
        let services = rb["phases"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p["name"].as_str().unwrap().starts_with("Start services"))
            .unwrap();
        steps_mut(services).insert(0, marker.clone());
    };

    // Wrong: dispatcher.service before vllm-qwen36.service (its After= says otherwise).
    let mut wrong = derived(lab, "lab-e2e-wrong-order");
    with_marker(&mut wrong);
    {
        let services = wrong["phases"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p["name"].as_str().unwrap().starts_with("Start services"))
            .unwrap();
        let steps = steps_mut(services);
        let d = steps
            .iter()
            .position(|s| s["start"] == "dispatcher.service")
            .unwrap();
        let v = steps
            .iter()
            .position(|s| s["start"] == "vllm-qwen36.service")
            .unwrap();
        let dispatcher = steps.remove(d);
        steps.insert(v, dispatcher);
    }
    let wrong_path = write_runbook(&sc.dir, &wrong);
    let report = sc.dir.join("wrong-order-report.md");
    let ran = sc.recover(
        &["rehearse", p(&wrong_path), "--report", p(&report)],
        Duration::from_secs(5 * 60),
    );
    let jpath = journals_in(&sc.state())
        .into_iter()
        .find(|p| p.to_string_lossy().contains("lab-e2e-wrong-order"))
        .expect("the rehearsal's journal");
    sc.note_journal(&jpath);
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    let j = read_journal(&jpath);
    assert_eq!(j[0]["mode"], "rehearse");
    let bad: Vec<&Value> = events(&j, "step_finished")
        .into_iter()
        .filter(|e| e["outcome"] == "failed_continued")
        .collect();
    assert_eq!(bad.len(), 1, "one problem:\n{}", dump_without_progress(&j));
    let why = str_of(bad[0], "reason");
    assert_eq!(bad[0]["name"], "start dispatcher.service", "{}", bad[0]);
    assert!(
        why.contains("dispatcher.service is ordered After=vllm-qwen36.service")
            && why.contains("starts vllm-qwen36.service later"),
        "{why}"
    );
    let end = j.last().unwrap();
    assert_eq!(end["event"], "run_finished");
    assert_eq!(end["outcome"], "failed");
    let md = fs::read_to_string(&report).expect("the --report file");
    assert!(md.contains("After=vllm-qwen36.service"), "{md}");

    // Right: the runbook's own order, plus the marker step.
    let mut right = derived(lab, "lab-e2e-right-order");
    with_marker(&mut right);
    let right_path = write_runbook(&sc.dir, &right);
    let ran = sc.recover(&["rehearse", p(&right_path)], Duration::from_secs(5 * 60));
    let jpath = journals_in(&sc.state())
        .into_iter()
        .find(|p| p.to_string_lossy().contains("lab-e2e-right-order"))
        .expect("the rehearsal's journal");
    sc.note_journal(&jpath);
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let j = read_journal(&jpath);
    let finished = events(&j, "step_finished");
    for f in &finished {
        assert!(
            f["outcome"] == "passed" || f["outcome"] == "would_run",
            "{f}\n{}",
            dump_without_progress(&j)
        );
    }
    let marker_step = finished
        .iter()
        .find(|f| f["name"] == "leave a marker")
        .expect("the marker step");
    assert_eq!(marker_step["outcome"], "would_run", "{marker_step}");
    assert!(str_of(marker_step, "reason").contains("touch /tmp/rehearsal-marker"));
    for f in finished
        .iter()
        .filter(|f| str_of(f, "name").starts_with("start ") && f["outcome"] == "would_run")
    {
        assert!(
            str_of(f, "reason").contains("order agrees with its After="),
            "{f}"
        );
    }
    assert_eq!(
        finished
            .iter()
            .filter(|f| str_of(f, "name").starts_with("start "))
            .count(),
        7
    );

    // Nothing changed on the VM, nothing was posted.
    let (code, out) =
        lab.ssh_status("test -e /tmp/rehearsal-marker && echo present || echo absent");
    assert_eq!((code, out.trim()), (Some(0), "absent"));
    assert_eq!(lab.active_since(&units), before, "units were restarted");
    assert!(sc.posts().is_empty(), "{:?}", sc.posts());
}

// --- 3. unit failures ----------------------------------------------------------------------------

fn unit_faults(lab: &Lab, sc: &Scenario) {
    let base = derived(lab, "lab-e2e-unit-fault");
    let mut rb = base.clone();
    let mut services = phase(&base, "Start services");
    let mut step = start_step(&base, "dispatcher.service");
    // A long gate, so "ends at once" is visible against it.
    step["timeout"] = json!("4m");
    step["health"]["timeout"] = json!("3m");
    *steps_mut(&mut services) = vec![step];
    rb["phases"] = json!([wait_ssh_phase(&base, "5s", "1m"), services]);
    let path = write_runbook(&sc.dir, &rb);
    let unit = ["dispatcher.service".to_owned()];

    for (fault, log_line) in [
        ("unit-fails", "invalid configuration (fault: unit-fails)"),
        ("start-limit", "lost the GPU context"),
        ("crash-loop", "failed to initialise"),
    ] {
        if fault != "unit-fails" {
            labctl(&["fault", "clear"], Duration::from_secs(60));
            labctl(&["stack", "stop"], Duration::from_secs(120));
        }
        labctl(&["fault", fault], Duration::from_secs(60));
        sc.hook.clear_requests();
        let jpath = sc.journal(fault);
        let ran = sc.recover(
            &["run", p(&path), "--yes", "--journal", p(&jpath)],
            Duration::from_secs(4 * 60),
        );
        assert_eq!(ran.code, Some(1), "{fault}: {}", ran.context());
        let j = read_journal(&jpath);
        let end = j.last().unwrap();
        assert_eq!(
            end["event"],
            "run_finished",
            "{fault}: {}",
            dump_without_progress(&j)
        );
        assert_eq!(end["outcome"], "failed", "{fault}");
        let f = step_event(
            &j,
            "step_finished",
            end["failed_step"].as_u64().expect("failed_step"),
        );
        assert_eq!(f["name"], "start dispatcher.service", "{fault}: {f}");
        let reason = str_of(f, "reason");
        let out = str_of(f, "stdout");
        // Ended by the unit's failure, at once, not by the gate's three minutes.
        assert!(
            reason.contains("dispatcher.service: the unit failed (state failed"),
            "{fault}: {f}"
        );
        let took = f["duration"].as_f64().unwrap();
        say(&format!(
            "lab e2e:   {fault}: the gate ended after {took:.1} s"
        ));
        assert!(took < 90.0, "{fault}: the gate took {took} s");
        // The unit's own journal lines are in the failure.
        assert!(
            out.contains("last journal lines of dispatcher.service") && out.contains(log_line),
            "{fault}: {f}"
        );
        let state = &lab.unit_props(&unit, &["ActiveState", "Result", "NRestarts"])[0];
        assert_eq!(state["ActiveState"], "failed", "{fault}: {state:?}");
        match fault {
            "unit-fails" => {
                assert!(reason.contains("result exit-code"), "{f}");
                assert_eq!(state["Result"], "exit-code");
            }
            "start-limit" => {
                assert_eq!(state["Result"], "start-limit-hit");
                assert!(reason.contains("result start-limit-hit"), "{f}");
                assert!(
                    reason.contains("systemctl reset-failed dispatcher.service"),
                    "{f}"
                );
            }
            _ => {
                // systemd 252 reports a crash loop as exit-code, yet the unit is failed.
                assert_eq!(state["Result"], "exit-code");
                assert!(reason.contains("state failed"), "{f}");
                assert!(
                    out.matches("failed to initialise").count() >= 2,
                    "restarted before failing: {f}"
                );
            }
        }

        // Issue 23: one failure post to the abort channel, naming the step, the reason, the
        // unit's journal lines, the unit's state as the VM reports it, and the resume command.
        let posts = sc.posts();
        assert_eq!(posts.len(), 1, "{fault}: {posts:?}");
        let post = &posts[0];
        fs::write(sc.dir.join(format!("{fault}-post.txt")), post).expect("keep the post");
        if fault == "start-limit" {
            say(&format!(
                "lab e2e:   the start-limit failure post, verbatim:\n{post}"
            ));
        }
        let step = end["failed_step"].as_u64().unwrap();
        assert!(
            post.starts_with(&format!(
                "FAILED: lab e2e: lab-e2e-unit-fault stopped at step {step} (start dispatcher.service) after "
            )),
            "{fault}: {post}"
        );
        let reason_line = format!("Reason: {}", reason.lines().collect::<Vec<_>>().join(" "));
        assert!(post.lines().any(|l| l == reason_line), "{fault}: {post}");
        let quoted: Vec<&str> = post.lines().filter_map(|l| l.strip_prefix("> ")).collect();
        assert!(
            !quoted.is_empty() && quoted.iter().all(|l| out.contains(l.trim_end_matches('…'))),
            "{fault}: the quoted lines are the step's output: {post}"
        );
        assert!(
            quoted.iter().any(|l| l.contains(log_line)),
            "{fault}: {post}"
        );
        let result = if fault == "start-limit" {
            "start-limit-hit"
        } else {
            "exit-code"
        };
        assert!(
            post.lines()
                .any(|l| l == format!("Units: NOT active: dispatcher.service (failed, {result})")),
            "{fault}: {post}"
        );
        let resume = end["resume"].as_str().expect("a resume command");
        assert!(
            post.lines()
                .any(|l| l == format!("Fix the cause, then continue from this step: {resume}")),
            "{fault}: {post}"
        );
        assert!(
            post.ends_with("\n(attended run, started by hand)"),
            "{fault}: {post}"
        );
    }
}

// --- 4. a hung inference engine ------------------------------------------------------------------

/// The reference runbook's own vLLM gate against a hang that `/health` hides: its `remedy: kill`
/// SIGKILLs the main pid, systemd's `Restart=on-failure` revives the unit, the gate passes.
/// (The same hang without a remedy failing its gate is `tests/lab_heal.rs`'s.)
fn hung_inference(lab: &Lab, sc: &Scenario) {
    // Warm-up 1 s: the gate's probes meet the hang, not the loading model.
    labctl(&["warmup", "1", "1"], Duration::from_secs(30));
    labctl(&["fault", "hang"], Duration::from_secs(60));
    let base = derived(lab, "lab-e2e-hang");
    let mut rb = base.clone();
    let mut services = phase(&base, "Start services");
    let mut step = start_step(&base, "vllm-qwen36.service");
    assert_eq!(
        step["health"]["remedy"], "kill",
        "the reference runbook kills a hung vLLM: {step}"
    );
    // Only the clock is the lab's: 5 s probes instead of 30 s, so the run takes a minute.
    step["timeout"] = json!("3m");
    step["health"]["timeout"] = json!("2m");
    step["health"]["every"] = json!("5s");
    step["health"]["http"]["timeout"] = json!("5s");
    *steps_mut(&mut services) = vec![step];
    rb["phases"] = json!([wait_ssh_phase(&base, "5s", "1m"), services]);
    let path = write_runbook(&sc.dir, &rb);

    let jpath = sc.journal("hang");
    let ran = sc.recover(
        &["run", p(&path), "--yes", "--journal", p(&jpath)],
        Duration::from_secs(4 * 60),
    );
    let j = read_journal(&jpath);
    assert_eq!(
        ran.code,
        Some(0),
        "{}\n{}",
        ran.context(),
        dump_without_progress(&j)
    );
    let applied = events(&j, "remedy_applied");
    assert_eq!(applied.len(), 1, "{}", dump_without_progress(&j));
    assert_eq!(applied[0]["action"], "kill");
    assert_eq!(applied[0]["unit"], "vllm-qwen36.service");
    let old = applied[0]["old_pid"].as_u64().expect("old_pid");
    let back = events(&j, "remedy_restarted");
    assert_eq!(back.len(), 1, "{}", dump_without_progress(&j));
    let new = back[0]["new_pid"].as_u64().expect("new_pid");
    assert_ne!(new, old, "{}", dump_without_progress(&j));
    let f = step_event(&j, "step_finished", 2);
    assert_eq!(f["outcome"], "passed", "{f}");
    say(&format!(
        "lab e2e:   hang: killed pid {old}, systemd started pid {new}, gate passed after {:.1} s",
        f["duration"].as_f64().unwrap_or(0.0)
    ));

    // What the box did: the hung process answered /health while its completions hung, was killed
    // with SIGKILL, and the unit runs again under the pid the journal names.
    let unit = ["vllm-qwen36.service".to_owned()];
    assert_eq!(lab.active_states(&unit), vec!["active"]);
    let props = lab.unit_props(&unit, &["MainPID"]);
    assert_eq!(
        props[0].get("MainPID").map(String::as_str),
        Some(&*new.to_string())
    );
    let log = lab.ssh("journalctl -u vllm-qwen36.service -n 60 --no-pager");
    assert!(
        log.contains(&format!("the engine is hung (fault: hang, pid {old})")),
        "{log}"
    );
    assert!(log.contains("code=killed, status=9/KILL"), "{log}");
    let health = format!("{}/health", lab.get("LAB_VLLM_URL"));
    assert_eq!(lab.http_status(&health), Some(200), "{health}");
}

// --- 7. zero touch --------------------------------------------------------------------------------

/// Issue 12's whole promise, with nobody at the keyboard: a real `upsmon` watches the lab's UPS
/// stand-in (a real upsd + dummy-ups on 127.0.0.1) with the shipped `contrib/recover-upsmon-hook`
/// as its NOTIFYCMD. The UPS goes on battery, the box loses power (a real cut), mains returns
/// (the UPS back on line, the box booting by itself); upsmon runs the hook, the hook starts
/// `recover run --unattended runbooks/lab.yaml` detached, and the reference runbook brings the
/// box back, from its `ups` gate and `previous_boot` to the "we are back" post.
fn zero_touch(lab: &Lab, sc: &Scenario) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let logs = sc.dir.join("hook-logs");
    let state = sc.dir.join("unattended-state");
    let conf = sc.dir.join("unattended.conf");
    let aim = lab_yaml_args(lab);
    fs::write(
        &conf,
        format!(
            "RECOVER_RUNBOOK=\"{LAB_RUNBOOK}\"\nRECOVER_ARGS=\"{}\"\nRECOVER_START=\"detach\"\n\
             RECOVER_BIN=\"{}\"\nRECOVER_LOG_DIR=\"{}\"\nRECOVER_STATE_DIR=\"{}\"\n\
             RECOVER_WEBHOOK=\"{}\"\nRECOVER_LOCK_DIR=\"{}\"\n",
            aim.join(" "),
            env!("CARGO_BIN_EXE_recover"),
            logs.display(),
            state.display(),
            sc.webhook(),
            // The scenario's own machine-wide lock directory: the host's /run/lock/recover
            // may be one an older recover made (1777), which the run rightly refuses.
            sc.dir.join("machine-locks").display()
        ),
    )
    .expect("write the hook's configuration");
    let ups = format!("spark-ups@127.0.0.1:{}", lab.get("LAB_NUT_PORT"));
    let hook_log = logs.join("upsmon-hook.log");
    let hook_says = |what: &str| fs::read_to_string(&hook_log).is_ok_and(|t| t.contains(what));
    let Some(_upsmon) = Upsmon::start(
        &ups,
        MONITOR_USER,
        MONITOR_PASSWORD,
        &repo.join("contrib/recover-upsmon-hook"),
        &[("RECOVER_UNATTENDED_CONF", p(&conf))],
    ) else {
        return; // said SKIPPED (a failure under CI)
    };

    // Mains fails: the UPS goes on battery (upsmon tells the hook, which ignores it), then the
    // box loses power.
    labctl(&["ups", "set", "OB", "80"], Duration::from_secs(30));
    assert!(
        eventually_every(POLL, Duration::from_secs(60), || hook_says(
            "NOTIFYTYPE=ONBATT"
        )),
        "upsmon never ran the hook on ONBATT: {}",
        fs::read_to_string(&hook_log).unwrap_or_default()
    );
    let old_boot = lab.boot_id();
    labctl(&["powercut"], Duration::from_secs(60));
    // Mains returns: the box boots by itself (Auto Boot) and the UPS is back on line.
    labctl(&["boot", "--no-wait"], Duration::from_secs(60));
    labctl(&["ups", "set", "OL", "100"], Duration::from_secs(30));
    assert!(
        eventually_every(POLL, Duration::from_secs(60), || hook_says("ONLINE from")),
        "upsmon never ran the hook on ONLINE: {}",
        fs::read_to_string(&hook_log).unwrap_or_default()
    );
    let run_logs = || -> String {
        fs::read_dir(&logs)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("recover-"))
                    .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    assert!(
        eventually_every(POLL, Duration::from_secs(30), || !journals_in(&state)
            .is_empty()),
        "the hook started no run: {}\n{}",
        fs::read_to_string(&hook_log).unwrap_or_default(),
        run_logs()
    );
    let jpath = journals_in(&state)[0].clone();
    sc.note_journal(&jpath);
    let finished = |j: &Path| read_journal(j).iter().any(|e| e["event"] == "run_finished");
    assert!(
        eventually_every(Duration::from_secs(1), Duration::from_secs(12 * 60), || {
            finished(&jpath)
        }),
        "the unattended run did not finish in 12 minutes: {}",
        tail(&run_logs(), 40)
    );
    let j = read_journal(&jpath);
    let end = j.last().expect("events");
    assert_eq!(
        end["outcome"],
        "success",
        "{}\n{}",
        dump_without_progress(&j),
        tail(&run_logs(), 40)
    );

    // Nobody typed it, and it says so: unattended, started by the UPS.
    let start = &j[0];
    assert_eq!(start["event"], "run_started");
    assert_eq!(start["unattended"], true, "{start}");
    let by = str_of(start, "started_by");
    assert!(by.contains("upsmon ONLINE") && by.contains(&ups), "{start}");
    // The reference runbook's own path: the UPS gate first, then the box's boot, then the
    // previous boot judged unclean (a real cut).
    let kinds: Vec<&str> = events(&j, "step_started")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds.first(), Some(&"ups"), "{kinds:?}");
    assert!(kinds.contains(&"previous_boot"), "{kinds:?}");
    let unclean = events(&j, "step_finished")
        .iter()
        .any(|e| str_of(e, "reason").starts_with("previous boot unclean"));
    assert!(unclean, "{}", dump_without_progress(&j));
    let new_boot = lab.boot_id();
    assert_ne!(new_boot, old_boot);
    assert_eq!(
        events(&j, "connected")[0]["boot_id"],
        new_boot.as_str(),
        "the run saw the box's new boot"
    );
    let units = started_units(&lab_yaml());
    assert!(
        lab.active_states(&units).iter().all(|s| s == "active"),
        "{units:?}"
    );
    let posts = sc.posts();
    let back = posts
        .iter()
        .find(|t| t.starts_with("We are back"))
        .unwrap_or_else(|| panic!("no we-are-back post: {posts:?}"));
    assert!(back.contains("started by the UPS"), "{back}");
    say(&format!(
        "lab e2e:   zero touch: upsmon ONLINE → we are back in {:.0} s, unattended",
        end["at"].as_f64().unwrap_or(0.0)
    ));
}

// --- 2. the power cut ----------------------------------------------------------------------------

fn power_cut(lab: &Lab, sc: &Scenario) {
    let base = derived(lab, "lab-e2e-powercut");
    let units = started_units(&base);
    let mut rb = base.clone();
    rb["phases"] = json!([
        wait_ssh_phase(&base, "5s", "3m"),
        phase(&base, "Start services")
    ]);
    let path = write_runbook(&sc.dir, &rb);
    only_the_drop_in(lab, sc, &[p(&path)]);

    // The run, cut while vllm-qwen36.service loads its model: the likeliest moment for a cut
    // mid-recovery, and the longest gate (the journal holds no progress lines, so the VM says
    // when the unit has been started and the gate is waiting for its warm-up).
    const CUT_IN: &str = "vllm-qwen36.service";
    let mut bg = sc.background(&["run", p(&path), "--yes"]);
    assert!(
        eventually_every(POLL, Duration::from_secs(30), || !journals_in(&sc.state())
            .is_empty()),
        "no journal appeared: {}",
        tail(&bg.output(), 80)
    );
    let jpath = journals_in(&sc.state())[0].clone();
    sc.note_journal(&jpath);
    let started_step = |jpath: &Path| -> Option<u64> {
        let t = fs::read_to_string(jpath).unwrap_or_default();
        t.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| {
                e["event"] == "step_started"
                    && str_of(e, "command")
                        .contains(&format!("systemctl start --no-block {CUT_IN}"))
            })
            .and_then(|e| e["step"].as_u64())
    };
    assert!(
        eventually_every(POLL, Duration::from_secs(180), || started_step(&jpath)
            .is_some()),
        "the start of {CUT_IN} never began: {}",
        tail(&bg.output(), 80)
    );
    let step_n = started_step(&jpath).unwrap();
    let old_boot = events(&read_journal(&jpath), "connected")[0]["boot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(old_boot, lab.boot_id());
    let unit = [CUT_IN.to_owned()];
    assert!(
        eventually_every(POLL, Duration::from_secs(60), || lab.active_states(&unit)
            [0]
            != "inactive"),
        "{CUT_IN} was never started: {}",
        tail(&bg.output(), 80)
    );
    let first = read_journal(&jpath);
    assert!(
        events(&first, "step_finished")
            .iter()
            .all(|e| e["step"] != step_n),
        "the gate of {CUT_IN} ended before the cut (warm-up too short?):\n{}",
        dump_without_progress(&first)
    );
    let cut_index = first.len();
    labctl(&["powercut"], Duration::from_secs(60));
    let cut = Instant::now();
    let status = bg.wait(Duration::from_secs(90));
    let after_cut = cut.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "recover still runs 90 s after the cut:\n{}",
            tail(&bg.output(), 80)
        )
    });
    assert_eq!(status.code(), Some(1), "{}", tail(&bg.output(), 80));
    say(&format!(
        "lab e2e:   recover ended {after_cut:.1?} after the cut (exit 1)"
    ));
    assert!(
        after_cut < Duration::from_secs(30),
        "recover ended {after_cut:.1?} after the cut"
    );
    let j = read_journal(&jpath);
    let lost = events(&j[cut_index..], "connection_lost");
    assert!(
        !lost.is_empty(),
        "connection_lost after the cut:\n{}",
        dump_without_progress(&j)
    );
    let f = step_event(&j, "step_finished", step_n);
    assert_eq!(f["outcome"], "failed", "{f}");
    say(&format!(
        "lab e2e:   step {step_n} failed: {}",
        str_of(f, "reason")
    ));
    assert!(
        str_of(f, "reason").starts_with("lost the connection to spark while waiting for"),
        "{f}"
    );
    let end = j.last().unwrap();
    assert_eq!(
        end["event"],
        "run_finished",
        "{}",
        dump_without_progress(&j)
    );
    assert_eq!(end["outcome"], "failed");
    assert_eq!(end["failed_step"], step_n);
    assert!(str_of(end, "resume").contains("--resume"), "{end}");
    let started_after: Vec<&Value> = events(&j, "step_started")
        .into_iter()
        .filter(|e| e["step"].as_u64().unwrap() > step_n)
        .collect();
    assert!(started_after.is_empty(), "{}", dump_without_progress(&j));
    let run_id = str_of(&j[0], "run_id").to_owned();

    // Mains back: wait_ssh sees the box come back.
    labctl(&["boot", "--no-wait"], Duration::from_secs(60));
    let mut wait = base.clone();
    wait["name"] = json!("lab-e2e-wait-ssh");
    wait["phases"] = json!([wait_ssh_phase(&base, "5s", "4m")]);
    let wait_path = write_runbook(&sc.dir, &wait);
    let wj = sc.journal("wait-ssh");
    let ran = sc.recover(
        &["run", p(&wait_path), "--yes", "--journal", p(&wj)],
        Duration::from_secs(5 * 60),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let wjv = read_journal(&wj);
    let new_boot = lab.boot_id();
    assert_ne!(new_boot, old_boot, "the VM booted again");
    let ws = events(&wjv, "step_finished")
        .into_iter()
        .find(|e| e["outcome"] == "passed")
        .expect("wait_ssh passed");
    let attempts: u32 = regex::Regex::new(r"after (\d+) attempt")
        .unwrap()
        .captures(str_of(ws, "reason"))
        .and_then(|c| c[1].parse().ok())
        .unwrap_or_else(|| panic!("{ws}"));
    say(&format!(
        "lab e2e:   wait_ssh saw the VM back after {attempts} attempts, {:.1?}",
        ran.took
    ));
    assert!(attempts >= 2, "wait_ssh began while the VM was down: {ws}");
    assert_eq!(str_of(ws, "stdout").trim(), new_boot);

    // --resume continues from the interrupted step, on the new boot.
    let ran = sc.recover(
        &["run", p(&path), "--resume", "--yes"],
        Duration::from_secs(5 * 60),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    let js = journals_in(&sc.state());
    assert_eq!(js.len(), 2, "{js:?}");
    let rj = js[1].clone();
    sc.note_journal(&rj);
    let r = read_journal(&rj);
    assert_eq!(r[0]["event"], "run_started");
    assert_eq!(r[0]["resumed_from"], run_id.as_str(), "{}", r[0]);
    assert_eq!(r[0]["first_step"], step_n, "{}", r[0]);
    let changed = events(&r, "boot_id_changed");
    assert_eq!(changed.len(), 1, "{}", dump_without_progress(&r));
    assert_eq!(changed[0]["old"], old_boot.as_str());
    assert_eq!(changed[0]["new"], new_boot.as_str());
    assert_ne!(changed[0]["old"], changed[0]["new"]);
    // The box rebooted since the run being resumed: every step tied to the old boot is
    // void, and the resumed run starts again from the first step, saying why.
    let rewound = events(&r, "rewound");
    assert_eq!(rewound.len(), 1, "{}", dump_without_progress(&r));
    assert_eq!(rewound[0]["from_step"], step_n);
    assert_eq!(rewound[0]["to_step"], 1);
    assert_eq!(rewound[0]["old_boot_id"], old_boot.as_str());
    assert_eq!(rewound[0]["new_boot_id"], new_boot.as_str());
    assert!(
        ran.stderr.contains("STARTING AGAIN"),
        "the reason is said: {}",
        ran.context()
    );
    let started: Vec<u64> = events(&r, "step_started")
        .iter()
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(started.first(), Some(&1), "{}", dump_without_progress(&r));
    for f in events(&r, "step_finished") {
        assert_eq!(f["outcome"], "passed", "{f}");
    }
    let end = r.last().unwrap();
    assert_eq!(end["outcome"], "success", "{}", dump_without_progress(&r));
    // Success is a fact: the run's end check saw every unit healthy, and every one of the
    // seven is active on the new boot, in the runbook's order (tailscale.service, started
    // before the cut and pulled in by nothing after it, among them).
    let verified = events(&r, "verified");
    assert_eq!(verified.len(), 1, "{}", dump_without_progress(&r));
    assert_eq!(verified[0]["ok"], true, "{}", verified[0]);
    assert_eq!(
        verified[0]["units"].as_array().map(Vec::len),
        Some(units.len())
    );
    assert_eq!(units.len(), 7, "{units:?}");
    assert!(
        lab.active_states(&units).iter().all(|s| s == "active"),
        "{units:?}: {:?}\n{}",
        lab.active_states(&units),
        dump_without_progress(&r)
    );
    let since = lab.active_since(&units);
    assert!(
        since.windows(2).all(|w| w[0] < w[1]),
        "{units:?}: {since:?}"
    );
}

// --- 5. a filesystem error in the kernel log -------------------------------------------------

fn kmsg_abort(lab: &Lab, sc: &Scenario) {
    labctl(&["fault", "kmsg-ext4"], Duration::from_secs(60));
    let base = derived(lab, "lab-e2e-kmsg");
    let units = started_units(&base);
    let mut rb = base.clone();
    // The filesystem phase's checksum step (`when: unclean_shutdown`) needs the previous-boot
    // judgement before it: the first phase keeps it after wait_ssh.
    let mut first = wait_ssh_phase(&base, "5s", "1m");
    let judged = phase(&base, "Power on")["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s.get("previous_boot").is_some())
        .expect("the reference runbook judges the previous boot")
        .clone();
    steps_mut(&mut first).push(judged);
    rb["phases"] = json!([
        first,
        phase(&base, "Filesystem check"),
        phase(&base, "Start services")
    ]);
    let path = write_runbook(&sc.dir, &rb);
    let jpath = sc.journal("kmsg");
    let ran = sc.recover(
        &["run", p(&path), "--yes", "--journal", p(&jpath)],
        Duration::from_secs(3 * 60),
    );
    assert_eq!(ran.code, Some(3), "{}", ran.context());
    let j = read_journal(&jpath);
    let end = j.last().unwrap();
    assert_eq!(
        end["event"],
        "run_finished",
        "{}",
        dump_without_progress(&j)
    );
    assert_eq!(end["outcome"], "aborted");
    let n = end["failed_step"].as_u64().unwrap();
    let f = step_event(&j, "step_finished", n);
    assert_eq!(f["name"], "Last kernel messages", "{f}");
    assert_eq!(f["outcome"], "aborted");
    assert!(str_of(f, "reason").contains("EXT4-fs error"), "{f}");
    let ap = events(&j, "abort_procedure");
    assert_eq!(ap.len(), 1, "{}", dump_without_progress(&j));
    assert!(str_of(ap[0], "message").contains("OFF THE 30-MINUTE TIMELINE"));
    // No unit was started.
    assert!(
        events(&j, "step_started")
            .iter()
            .all(|e| e["kind"] != "start"),
        "{}",
        dump_without_progress(&j)
    );
    assert!(
        lab.active_states(&units).iter().all(|s| s == "inactive"),
        "{:?}",
        lab.active_states(&units)
    );
    // The abort notice reached the channel.
    let posts = sc.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(
        posts[0].starts_with("ABORT") && posts[0].contains("Last kernel messages"),
        "{posts:?}"
    );
    assert!(
        posts[0].contains("The kernel reported filesystem or disk errors"),
        "{posts:?}"
    );
}
