//! Realistic event sequences, as the engine emits them for the reference Spark runbook, for the
//! reporters' tests.

use crate::engine::event::{Event, Mode, RunOutcome, StepOutcome, TargetInfo};

const PHASES: [(&str, f64, f64); 4] = [
    ("Power on and POST", 0.0, 300.0),
    ("Filesystem check and page-cache flush", 300.0, 600.0),
    ("Start services in dependency order", 600.0, 1200.0),
    ("Smoke test and report", 1200.0, 1800.0),
];

/// (phase, name, kind, mutates, timeout, command)
type StepRow = (
    usize,
    &'static str,
    &'static str,
    bool,
    f64,
    Option<&'static str>,
);

const STEPS: [StepRow; 20] = [
    (1, "Mains stable on the UPS", "manual", true, 900.0, None),
    (1, "Power on the Spark", "manual", true, 900.0, None),
    (
        1,
        "wait for SSH on spark",
        "wait_ssh",
        false,
        300.0,
        Some("cat /proc/sys/kernel/random/boot_id"),
    ),
    (
        2,
        "Last kernel messages",
        "run",
        false,
        30.0,
        Some("sudo -n timeout -k 5s 30s sh -c 'dmesg | tail -50' recover:spark-power:4"),
    ),
    (
        2,
        "kernel log has no filesystem or disk errors",
        "run",
        false,
        30.0,
        Some(
            "sudo -n timeout -k 5s 30s sh -c 'dmesg --level=emerg,alert,crit,err' recover:spark-power:5",
        ),
    ),
    (
        2,
        "Errors logged since boot",
        "run",
        false,
        60.0,
        Some(
            "sudo -n timeout -k 5s 60s sh -c 'journalctl -b 0 -p err --no-pager' recover:spark-power:6",
        ),
    ),
    (
        2,
        "Read-only filesystem check of the root device",
        "run",
        false,
        300.0,
        Some("sudo -n timeout -k 5s 300s sh -c 'fsck -n /dev/nvme0n1p1' recover:spark-power:7"),
    ),
    (
        2,
        "drop the page cache on spark",
        "drop_caches",
        true,
        120.0,
        Some(
            "sudo -n timeout -k 5s 120s sh -c 'sync && grep ^Cached: /proc/meminfo && echo 3 > /proc/sys/vm/drop_caches && grep ^Cached: /proc/meminfo' recover:spark-power:8",
        ),
    ),
    (
        3,
        "start tailscale.service",
        "start",
        true,
        90.0,
        Some(
            "sudo -n timeout -k 5s 10s sh -c 'systemctl start --no-block tailscale.service' recover:spark-power:9",
        ),
    ),
    (
        3,
        "start prometheus-node-exporter.service",
        "start",
        true,
        90.0,
        Some(
            "sudo -n timeout -k 5s 10s sh -c 'systemctl start --no-block prometheus-node-exporter.service' recover:spark-power:10",
        ),
    ),
    (
        3,
        "start vllm-qwen36.service",
        "start",
        true,
        540.0,
        Some(
            "sudo -n timeout -k 5s 10s sh -c 'systemctl start --no-block vllm-qwen36.service' recover:spark-power:11",
        ),
    ),
    (
        3,
        "start sglang-mistral.service",
        "start",
        true,
        420.0,
        Some(
            "sudo -n timeout -k 5s 10s sh -c 'systemctl start --no-block sglang-mistral.service' recover:spark-power:12",
        ),
    ),
    (
        3,
        "start dispatcher.service",
        "start",
        true,
        120.0,
        Some(
            "sudo -n timeout -k 5s 10s sh -c 'systemctl start --no-block dispatcher.service' recover:spark-power:13",
        ),
    ),
    (
        3,
        "start mcp-server.service",
        "start",
        true,
        120.0,
        Some(
            "sudo -n timeout -k 5s 10s sh -c 'systemctl start --no-block mcp-server.service' recover:spark-power:14",
        ),
    ),
    (
        3,
        "start caddy.service",
        "start",
        true,
        120.0,
        Some(
            "sudo -n timeout -k 5s 10s sh -c 'systemctl start --no-block caddy.service' recover:spark-power:15",
        ),
    ),
    (
        3,
        "Tailscale identity is the Spark's",
        "run",
        false,
        30.0,
        Some(
            "timeout -k 5s 30s sh -c 'tailscale status --json --peers=false' recover:spark-power:16",
        ),
    ),
    (
        4,
        "Smoke test, a real chat completion",
        "http",
        false,
        90.0,
        Some("POST http://spark.local:8000/v1/chat/completions"),
    ),
    (
        4,
        "Prometheus sees the Spark again",
        "http",
        false,
        10.0,
        Some(
            "GET http://prometheus.internal:9090/api/v1/query?query=up%7Binstance%3D%22spark.local%3A9100%22%7D",
        ),
    ),
    (
        4,
        "Public MCP endpoint answers from outside",
        "http",
        false,
        15.0,
        Some("GET https://mcp.example.com/health"),
    ),
    (
        4,
        "notify operators",
        "notify",
        true,
        30.0,
        Some("post to operators"),
    ),
];

pub const ABORT_MESSAGE: &str =
    "OFF THE 30-MINUTE TIMELINE. Do not start any more services. Follow the long procedure:
1. Leave the Spark powered but idle. Do not power-cycle it again: each unclean boot can
   make filesystem damage worse.
2. Filesystem repair: boot the rescue USB stick, do not mount the root filesystem, run
   `fsck -f /dev/nvme0n1p1` and answer yes to the repairs, then `fsck -n /dev/nvme0n1p1`
   until it reports clean. Reboot into the normal system.
3. Post a status update to the operators channel every 30 minutes until service is back.
";

pub const RESUME: &str = "recover run runbooks/spark-power.yaml --resume";

/// Builds a run's events, keeping the timeline position.
pub struct Script {
    pub events: Vec<Event>,
    pub at: f64,
    mode: Mode,
    phase_started: f64,
}

impl Script {
    pub fn new(mode: Mode) -> Self {
        Self::resumed(mode, None, 1, 0.0)
    }

    pub fn resumed(mode: Mode, from: Option<&str>, first_step: usize, at: f64) -> Self {
        let mut s = Script {
            events: Vec::new(),
            at,
            mode,
            phase_started: at,
        };
        s.events.push(Event::RunStarted {
            run_id: "20261122T050100-spark-power".into(),
            mode,
            runbook: "spark-power".into(),
            path: "runbooks/spark-power.yaml".into(),
            sha256: "2338aebae000d38ea48e49b72559cb8f5836fe896be943d15fae646c7e113501".into(),
            budget: 1800.0,
            steps: 20,
            phases: 4,
            resumed_from: from.map(String::from),
            unattended: false,
            started_by: None,
            first_step,
            origin_step: from.map(|_| 1),
            targets: vec![TargetInfo {
                name: "spark".into(),
                destination: "ops@spark.local".into(),
                port: Some(22),
            }],
            files: Vec::new(),
        });
        s
    }

    pub fn push(&mut self, e: Event) -> &mut Self {
        self.events.push(e);
        self
    }

    pub fn phase(&mut self, n: usize) -> &mut Self {
        let (name, ws, we) = PHASES[n - 1];
        self.phase_started = self.at;
        self.push(Event::PhaseStarted {
            phase: n,
            name: name.into(),
            window_start: ws,
            window_end: we,
            at: self.at,
        })
    }

    pub fn overrun(&mut self, n: usize) -> &mut Self {
        let (name, _, we) = PHASES[n - 1];
        self.push(Event::PhaseOverrun {
            phase: n,
            name: name.into(),
            window_end: we,
            at: we,
        })
    }

    pub fn end_phase(&mut self, n: usize, result: StepOutcome) -> &mut Self {
        let (name, ws, we) = PHASES[n - 1];
        let started = self.phase_started;
        self.push(Event::PhaseFinished {
            phase: n,
            name: name.into(),
            started,
            at: self.at,
            window_start: ws,
            window_end: we,
            result,
        })
    }

    pub fn start(&mut self, n: usize) -> &mut Self {
        let (phase, name, kind, mutates, timeout, command) = STEPS[n - 1];
        self.push(Event::StepStarted {
            step: n,
            phase,
            name: name.into(),
            kind: crate::runbook::model::Kind::from_name(kind).expect("a step kind"),
            target: "spark".into(),
            mutates,
            command: command.map(String::from),
            timeout,
            at: self.at,
        })
    }

    pub fn progress(&mut self, n: usize, line: &str) -> &mut Self {
        self.push(Event::StepProgress {
            step: n,
            line: line.into(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn finish_step(
        &mut self,
        n: usize,
        outcome: StepOutcome,
        exit: Option<i32>,
        took: f64,
        reason: Option<&str>,
        stdout: Option<&str>,
        stderr: Option<&str>,
    ) -> &mut Self {
        let (phase, name, ..) = STEPS[n - 1];
        self.at += took;
        self.push(Event::StepFinished {
            step: n,
            phase,
            name: name.into(),
            outcome,
            exit,
            duration: took,
            at: self.at,
            reason: reason.map(String::from),
            stdout: stdout.map(String::from),
            stderr: stderr.map(String::from),
            waited: None,
        })
    }

    /// A step that starts and passes (or, in a rehearsal, is shown if it changes state).
    pub fn ok(&mut self, n: usize, took: f64) -> &mut Self {
        let (_, _, _, mutates, _, command) = STEPS[n - 1];
        if self.mode == Mode::Rehearse && mutates {
            return self.start(n).finish_step(
                n,
                StepOutcome::WouldRun,
                None,
                0.0,
                Some(command.unwrap_or("ask the operator")),
                None,
                None,
            );
        }
        self.start(n);
        let exit = STEPS[n - 1].2.eq("run").then_some(0);
        self.finish_step(n, StepOutcome::Passed, exit, took, None, None, None)
    }

    pub fn connected(&mut self, reconnect: bool, boot_id: &str) -> &mut Self {
        self.push(Event::Connected {
            target: "spark".into(),
            destination: "ops@spark.local".into(),
            boot_id: boot_id.into(),
            reconnect,
        })
    }

    pub fn finish(
        &mut self,
        outcome: RunOutcome,
        message: &str,
        resume: Option<&str>,
    ) -> Vec<Event> {
        let failed_step = self.events.iter().rev().find_map(|e| match e {
            Event::StepFinished {
                step,
                outcome: StepOutcome::Failed | StepOutcome::Aborted | StepOutcome::Interrupted,
                ..
            } => Some(*step),
            _ => None,
        });
        self.push(Event::RunFinished {
            outcome,
            exit_code: outcome.exit_code(),
            at: self.at,
            budget: 1800.0,
            failed_step,
            message: message.into(),
            resume: resume.map(String::from),
        });
        std::mem::take(&mut self.events)
    }

    /// Phase 1 and 2 of a healthy box.
    fn first_two_phases(&mut self) -> &mut Self {
        self.phase(1).ok(1, 48.2).ok(2, 31.0);
        self.start(3)
            .progress(
                3,
                "ssh: connect to host spark.local port 22: Connection refused",
            )
            .progress(
                3,
                "ssh: connect to host spark.local port 22: Connection refused",
            )
            .connected(false, "3f2a9c1d-6b7e-4c1a-9d2e-5f8a7b6c4d3e")
            .finish_step(3, StepOutcome::Passed, Some(0), 97.4, None, None, None);
        self.end_phase(1, StepOutcome::Passed);
        self.phase(2).ok(4, 0.4).ok(5, 0.3).ok(6, 1.2);
        self.start(7)
            .progress(7, "Pass 1: Checking inodes, blocks, and sizes")
            .progress(7, "Pass 5: Checking group summary information")
            .finish_step(7, StepOutcome::Passed, Some(0), 41.7, None, None, None);
        self.ok(8, 3.2).end_phase(2, StepOutcome::Passed)
    }

    fn vllm(&mut self, took: f64) -> &mut Self {
        self.start(11)
            .progress(11, "unit activating; probe: connection refused")
            .progress(11, "unit active; probe: HTTP 503 Service Unavailable")
            .progress(
                11,
                "INFO Loading safetensors checkpoint shards: 62% Completed | 10/16",
            )
            .finish_step(11, StepOutcome::Passed, None, took, None, None, None)
    }
}

pub fn clean_run() -> Vec<Event> {
    let mut s = Script::new(Mode::Run);
    s.first_two_phases();
    s.phase(3).ok(9, 6.1).ok(10, 4.1);
    s.vllm(242.0)
        .ok(12, 190.3)
        .ok(13, 12.0)
        .ok(14, 5.6)
        .ok(15, 5.2)
        .ok(16, 0.5);
    s.end_phase(3, StepOutcome::Passed);
    s.phase(4).ok(17, 7.9).ok(18, 44.6).ok(19, 1.8);
    s.start(20).push(Event::Notified {
        channel: "operators".into(),
        ok: true,
        attempts: 1,
        error: None,
    });
    s.finish_step(20, StepOutcome::Passed, None, 0.6, None, None, None)
        .end_phase(4, StepOutcome::Passed);
    s.finish(
        RunOutcome::Success,
        "Recovered: every step passed, within the 30m budget.",
        None,
    )
}

/// The hang: vLLM is active and answers `/health`, but completions time out; the gate's
/// `remedy: kill` SIGKILLs its main pid, systemd restarts it, the probe passes.
pub fn healed() -> Vec<Event> {
    let mut s = Script::new(Mode::Run);
    s.first_two_phases();
    s.phase(3).ok(9, 6.1).ok(10, 4.1);
    let kill = "SIGKILL of vllm-qwen36.service's main pid 367, after 3 failed probe(s) while it was active";
    s.start(11)
        .progress(11, "probe: no answer within 30s (timed out)")
        .progress(11, "probe: no answer within 30s (timed out)")
        .push(Event::RemedyApplied {
            step: 11,
            unit: "vllm-qwen36.service".into(),
            action: "kill".into(),
            failures: 3,
            old_pid: Some(367),
            message: kill.into(),
        })
        .push(Event::RemedyRestarted {
            step: 11,
            unit: "vllm-qwen36.service".into(),
            old_pid: Some(367),
            new_pid: 412,
            after: 6.2,
        })
        .finish_step(
            11,
            StepOutcome::Passed,
            None,
            301.0,
            Some(&format!(
                "vllm-qwen36.service active and healthy after 5m01s (14 probes); remedy: {kill}; active again with main pid 412 after 6.2s"
            )),
            None,
            None,
        );
    s.ok(12, 190.3)
        .ok(13, 12.0)
        .ok(14, 5.6)
        .ok(15, 5.2)
        .ok(16, 0.5);
    s.end_phase(3, StepOutcome::Passed);
    s.phase(4).ok(17, 7.9).ok(18, 44.6).ok(19, 1.8).ok(20, 0.6);
    s.end_phase(4, StepOutcome::Passed);
    s.finish(
        RunOutcome::Success,
        "Recovered in 13m of the 30m budget.",
        None,
    )
}

pub fn failure() -> Vec<Event> {
    let mut s = Script::new(Mode::Run);
    s.first_two_phases();
    s.phase(3).ok(9, 6.1).ok(10, 4.1).vllm(242.0).ok(12, 190.3);
    s.start(13)
        .progress(13, "unit activating; probe: connection refused")
        .progress(13, "unit failed (start-limit-hit)")
        .finish_step(
            13,
            StepOutcome::Failed,
            None,
            31.5,
            Some("dispatcher.service failed (start-limit-hit) before it became healthy\nits journal ends:\nNov 22 05:11:41 spark dispatcher[2211]: Error: upstream http://127.0.0.1:8000 refused the connection\nNov 22 05:11:41 spark systemd[1]: dispatcher.service: Start request repeated too quickly."),
            Some("{\"detail\":\"starting\"}\n503\n"),
            Some("curl: (7) Failed to connect to spark.local port 8080 after 2 ms: Connection refused\n"),
        )
        .end_phase(3, StepOutcome::Failed)
        .push(Event::Notified {
            channel: "operators".into(),
            ok: true,
            attempts: 1,
            error: None,
        });
    s.finish(
        RunOutcome::Failed,
        "Step 13 (start dispatcher.service) failed: fix the unit on spark, then resume.",
        Some(RESUME),
    )
}

pub fn abort() -> Vec<Event> {
    let mut s = Script::new(Mode::Run);
    s.phase(1).ok(1, 48.2).ok(2, 31.0);
    s.start(3)
        .connected(false, "3f2a9c1d-6b7e-4c1a-9d2e-5f8a7b6c4d3e")
        .finish_step(3, StepOutcome::Passed, Some(0), 97.4, None, None, None)
        .end_phase(1, StepOutcome::Passed);
    s.phase(2).ok(4, 0.4);
    let reason = "stdout matches /EXT4-fs error|I/O error|Buffer I/O error|blk_update_request/";
    s.start(5)
        .finish_step(
            5,
            StepOutcome::Aborted,
            Some(0),
            0.3,
            Some(reason),
            Some("[   12.348811] EXT4-fs error (device nvme0n1p1): ext4_find_entry:1455: inode #2: comm systemd: reading directory lblock 0\n[   12.349002] Buffer I/O error on dev nvme0n1p1, logical block 0, lost async page write\n"),
            None,
        )
        .push(Event::AbortProcedure {
            step: 5,
            reason: reason.into(),
            step_message: Some(
                "The kernel reported filesystem or disk errors after the power cut.".into(),
            ),
            message: ABORT_MESSAGE.into(),
        })
        .end_phase(2, StepOutcome::Aborted)
        .push(Event::Notified {
            channel: "operators".into(),
            ok: true,
            attempts: 1,
            error: None,
        });
    s.finish(
        RunOutcome::Aborted,
        "Aborted at step 5: off the 30-minute timeline; follow the abort procedure above.",
        None,
    )
}

pub fn interrupted() -> Vec<Event> {
    let mut s = Script::new(Mode::Run);
    s.first_two_phases();
    s.phase(3).ok(9, 6.1).ok(10, 4.1);
    s.start(11)
        .progress(11, "unit active; probe: HTTP 503 Service Unavailable")
        .finish_step(
            11,
            StepOutcome::Interrupted,
            None,
            75.2,
            Some("interrupted by the operator (Ctrl-C); the remote command was killed"),
            None,
            None,
        )
        .end_phase(3, StepOutcome::Interrupted)
        .push(Event::Notified {
            channel: "operators".into(),
            ok: true,
            attempts: 1,
            error: None,
        });
    s.finish(
        RunOutcome::Interrupted,
        "Interrupted at step 11 (start vllm-qwen36.service); the journal is complete.",
        Some(RESUME),
    )
}

pub fn rehearsal() -> Vec<Event> {
    let mut s = Script::new(Mode::Rehearse);
    s.phase(1).ok(1, 0.0).ok(2, 0.0);
    s.start(3)
        .connected(false, "3f2a9c1d-6b7e-4c1a-9d2e-5f8a7b6c4d3e")
        .finish_step(3, StepOutcome::Passed, Some(0), 0.8, None, None, None)
        .end_phase(1, StepOutcome::Passed);
    s.phase(2).ok(4, 0.4).ok(5, 0.3).ok(6, 1.2);
    s.start(7)
        .progress(7, "Pass 1: Checking inodes, blocks, and sizes")
        .progress(7, "Pass 5: Checking group summary information")
        .finish_step(7, StepOutcome::Passed, Some(0), 40.9, None, None, None)
        .ok(8, 0.0);
    s.end_phase(2, StepOutcome::Passed);
    s.phase(3);
    for n in 9..=12 {
        s.ok(n, 0.0);
    }
    // The paths a skipped command names are checked on the target; the missing ones are
    // printed, then warned about.
    let missing = "/etc/dispatcher/routes.toml";
    s.start(13).progress(13, missing).push(Event::Warning {
        step: Some(13),
        message: format!("{missing} does not exist on the target (unless this step creates it)"),
    });
    s.finish_step(
        13,
        StepOutcome::WouldRun,
        None,
        0.0,
        Some("sudo -n systemctl start --no-block dispatcher.service"),
        None,
        None,
    );
    s.ok(14, 0.0).ok(15, 0.0);
    s.ok(16, 0.5).end_phase(3, StepOutcome::Passed);
    s.phase(4).ok(17, 6.4).ok(18, 0.9).ok(19, 1.1).ok(20, 0.0);
    s.end_phase(4, StepOutcome::Passed);
    s.finish(
        RunOutcome::Success,
        "Rehearsal passed: the runbook matches spark; 11 steps that change state were shown, not run.",
        None,
    )
}

pub fn overrun() -> Vec<Event> {
    let mut s = Script::new(Mode::Run);
    s.first_two_phases();
    s.phase(3).ok(9, 6.1).ok(10, 4.1);
    s.start(11)
        .progress(11, "unit active; probe: HTTP 503 Service Unavailable")
        .push(Event::ConnectionLost {
            target: "spark".into(),
            error: "keep-alive timed out after 3 attempts".into(),
        })
        .progress(
            11,
            "lost the connection to spark: keep-alive timed out after 3 attempts; reconnecting",
        )
        .connected(true, "77aa0b12-1c2d-4e5f-8a9b-0c1d2e3f4a5b")
        .push(Event::BootIdChanged {
            target: "spark".into(),
            old: "3f2a9c1d-6b7e-4c1a-9d2e-5f8a7b6c4d3e".into(),
            new: "77aa0b12-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
        })
        .finish_step(11, StepOutcome::Passed, None, 530.0, None, None, None);
    s.ok(12, 415.0).ok(13, 12.0).ok(14, 5.6);
    s.start(15)
        .progress(15, "unit active; probe: HTTP 502")
        .overrun(3)
        .finish_step(15, StepOutcome::Passed, None, 60.4, None, None, None)
        .ok(16, 0.5)
        .end_phase(3, StepOutcome::Passed);
    s.phase(4).ok(17, 7.9).ok(18, 44.6);
    s.start(19)
        .finish_step(
            19,
            StepOutcome::FailedContinued,
            None,
            60.0,
            Some("no answer within 1m (6 tries every 10s): HTTP 502"),
            Some("<html><body>502 Bad Gateway</body></html>\n502\n"),
            None,
        )
        .start(20)
        .push(Event::Notified {
            channel: "operators".into(),
            ok: false,
            attempts: 3,
            error: Some("HTTP 500 from the webhook".into()),
        })
        .push(Event::Warning {
            step: None,
            message: "could not post to `operators`: HTTP 500 from the webhook. Tell the operators another way.".into(),
        })
        .finish_step(
            20,
            StepOutcome::FailedContinued,
            None,
            6.2,
            Some("the status post failed after 3 attempts"),
            None,
            None,
        )
        // Steps let through do not fail their phase.
        .end_phase(4, StepOutcome::Passed);
    s.finish(
        RunOutcome::Success,
        "Recovered with warnings: phase 3 overran its window; step 19 and 20 failed and were let through.",
        None,
    )
}

/// All scenarios, by name.
pub fn all() -> Vec<(&'static str, Vec<Event>)> {
    vec![
        ("clean_run", clean_run()),
        ("healed", healed()),
        ("failure", failure()),
        ("abort", abort()),
        ("interrupted", interrupted()),
        ("rehearsal", rehearsal()),
        ("overrun", overrun()),
    ]
}
