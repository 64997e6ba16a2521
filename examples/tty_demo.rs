//! What `recover run` shows on a terminal, played from a script in about 20 seconds:
//! `cargo run --example tty_demo` (add `abort` to see an abort instead).
//! Timeline positions are the script's, so the run looks 20 minutes long; between events the
//! clock ticks in real time, as it does during a real run.

use std::thread::sleep;
use std::time::Duration;

use recover::engine::event::{Event, Mode, RunOutcome, Sink, StepOutcome, TargetInfo};
use recover::report::Tty;

struct Demo {
    tty: Tty,
    at: f64,
    phase: (usize, &'static str, f64, f64, f64),
}

impl Demo {
    fn emit(&mut self, e: Event) {
        self.tty.emit(&e);
    }

    fn phase(&mut self, phase: usize, name: &'static str, window: (f64, f64)) {
        if self.phase.0 > 0 {
            self.end_phase(StepOutcome::Passed);
        }
        self.phase = (phase, name, window.0, window.1, self.at);
        let (window_start, window_end, at) = (window.0, window.1, self.at);
        let name = name.into();
        self.emit(Event::PhaseStarted {
            phase,
            name,
            window_start,
            window_end,
            at,
        });
    }

    fn end_phase(&mut self, result: StepOutcome) {
        let (phase, name, window_start, window_end, started) = self.phase;
        let (name, at) = (name.into(), self.at);
        self.emit(Event::PhaseFinished {
            phase,
            name,
            started,
            at,
            window_start,
            window_end,
            result,
        });
    }

    fn start(&mut self, step: usize, name: &str, timeout: f64) {
        let (phase, name, kind, target) = (
            self.phase.0,
            name.into(),
            recover::runbook::model::Kind::Run,
            "spark".into(),
        );
        let at = self.at;
        self.emit(Event::StepStarted {
            step,
            phase,
            name,
            kind,
            target,
            mutates: true,
            command: None,
            timeout,
            at,
        });
    }

    /// Shows `lines` as the step's output, one every `every` seconds of real time.
    fn output(&mut self, step: usize, every: f64, lines: &[&str]) {
        for line in lines {
            sleep(Duration::from_secs_f64(every));
            self.emit(Event::StepProgress {
                step,
                line: (*line).into(),
            });
        }
    }

    fn finish(
        &mut self,
        step: usize,
        name: &str,
        took: f64,
        outcome: StepOutcome,
        reason: Option<&str>,
    ) {
        self.at += took;
        let (phase, name, at, reason) =
            (self.phase.0, name.into(), self.at, reason.map(String::from));
        let stderr = reason.as_ref().map(|_| {
            "curl: (7) Failed to connect to spark.local port 8080: Connection refused".into()
        });
        self.emit(Event::StepFinished {
            step,
            phase,
            name,
            outcome,
            exit: None,
            duration: took,
            at,
            reason,
            stdout: None,
            stderr,
            waited: None,
        });
    }

    fn step(&mut self, step: usize, name: &str, took: f64, every: f64, lines: &[&str]) {
        self.start(step, name, 540.0);
        self.output(step, every, lines);
        sleep(Duration::from_secs_f64(every));
        self.finish(step, name, took, StepOutcome::Passed, None);
    }

    fn end(&mut self, outcome: RunOutcome, message: &str, resume: Option<&str>) {
        let (exit_code, at, message) = (outcome.exit_code(), self.at, message.into());
        let resume = resume.map(String::from);
        self.emit(Event::RunFinished {
            outcome,
            exit_code,
            at,
            budget: 1800.0,
            failed_step: None,
            message,
            resume,
        });
    }
}

fn main() {
    let abort = std::env::args().any(|a| a == "abort");
    let mut d = Demo {
        tty: Tty::new(),
        at: 0.0,
        phase: (0, "", 0.0, 0.0, 0.0),
    };
    let spark = TargetInfo {
        name: "spark".into(),
        destination: "ops@spark.local".into(),
        port: Some(22),
    };
    d.emit(Event::RunStarted {
        run_id: "20261122T050100-spark-power".into(),
        mode: Mode::Run,
        runbook: "spark-power".into(),
        path: "runbooks/spark-power.yaml".into(),
        sha256: "2338aeba".into(),
        budget: 1800.0,
        steps: 20,
        phases: 4,
        resumed_from: None,
        unattended: false,
        started_by: None,
        first_step: 1,
        origin_step: None,
        targets: vec![spark],
        files: Vec::new(),
    });
    d.phase(1, "Power on and POST", (0.0, 300.0));
    d.step(1, "Mains stable on the UPS", 48.2, 0.3, &[]);
    d.step(2, "Power on the Spark", 31.0, 0.3, &[]);
    d.step(
        3,
        "wait for SSH on spark",
        97.4,
        0.7,
        &["ssh: connect to host spark.local port 22: Connection refused"],
    );
    d.phase(2, "Filesystem check and page-cache flush", (300.0, 600.0));
    d.step(4, "Last kernel messages", 0.4, 0.3, &[]);
    if abort {
        d.start(5, "kernel log has no filesystem or disk errors", 30.0);
        sleep(Duration::from_secs(1));
        let why = "stdout matches /EXT4-fs error|I/O error/";
        d.finish(
            5,
            "kernel log has no filesystem or disk errors",
            0.3,
            StepOutcome::Aborted,
            Some(why),
        );
        d.emit(Event::AbortProcedure {
            step: 5,
            reason: why.into(),
            step_message: Some("The kernel reported filesystem or disk errors after the power cut.".into()),
            message: "OFF THE 30-MINUTE TIMELINE. Do not start any more services. Follow the long procedure:\n1. Leave the Spark powered but idle. Do not power-cycle it again: each unclean boot can\n   make filesystem damage worse.\n2. Filesystem repair: boot the rescue USB stick, run `fsck -f /dev/nvme0n1p1`.\n".into(),
        });
        d.end_phase(StepOutcome::Aborted);
        d.end(
            RunOutcome::Aborted,
            "Aborted at step 5: off the 30-minute timeline; follow the abort procedure above.",
            None,
        );
        return;
    }
    d.step(
        7,
        "Read-only filesystem check of the root device",
        41.7,
        0.7,
        &[
            "Pass 1: Checking inodes, blocks, and sizes",
            "Pass 5: Checking group summary information",
        ],
    );
    d.phase(3, "Start services in dependency order", (600.0, 1200.0));
    d.step(11, "start vllm-qwen36.service", 242.0, 1.0, &[
        "unit activating; probe: connection refused",
        "unit active; probe: HTTP 503 Service Unavailable",
        "INFO Loading safetensors checkpoint shards: 62% Completed | 10/16 [00:41<00:25, 1.6s/it]",
    ]);
    d.at = 1179.0; // fast-forward: sglang took its time
    d.step(12, "start sglang-mistral.service", 9.0, 0.5, &[]);
    d.start(13, "start dispatcher.service", 120.0);
    for i in 1..=16 {
        d.output(
            13,
            1.0,
            &[&format!("unit activating; probe {i}: connection refused")],
        );
        if i == 12 {
            let name = "Start services in dependency order".into();
            d.emit(Event::PhaseOverrun {
                phase: 3,
                name,
                window_end: 1200.0,
                at: 1200.0,
            });
        }
    }
    let why = "dispatcher.service failed (start-limit-hit) before it became healthy";
    d.finish(
        13,
        "start dispatcher.service",
        16.2,
        StepOutcome::Failed,
        Some(why),
    );
    d.end_phase(StepOutcome::Failed);
    d.end(
        RunOutcome::Failed,
        "Step 13 (start dispatcher.service) failed: fix the unit on spark, then resume.",
        Some("recover run runbooks/spark-power.yaml --resume"),
    );
}
