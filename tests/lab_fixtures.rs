//! The reference runbook's checks and the gate's parsers against real outputs captured from the
//! lab VM (real systemd 252, journald, e2fsck; see fixtures/lab/README.md for each command).

mod common;

use std::path::{Path, PathBuf};

use recover::engine::gate::{UnitDeps, UnitState, order_problems};
use recover::plan::{Action, Options, Plan, Step};
use recover::verdict::{Output, Verdict, judge};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lab")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn spark_plan() -> Plan {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("runbooks/spark-power.yaml");
    let loaded = recover::runbook::load(&path).unwrap();
    recover::plan::resolve(&loaded, &Options::default()).unwrap()
}

fn step<'p>(plan: &'p Plan, name: &str) -> &'p Step {
    plan.phases
        .iter()
        .flat_map(|p| &p.steps)
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name:?}"))
}

fn verdict(s: &Step, stdout: &str, exit: i32) -> Verdict {
    let out = Output {
        exit: Some(exit),
        stdout: stdout.to_owned(),
        stderr: String::new(),
        timed_out: false,
    };
    judge(&out, s.expect.as_ref(), s.abort_if.as_ref())
}

#[test]
fn unit_states_from_real_systemctl_show() {
    let active = UnitState::parse(&fixture("systemctl-show-active.txt"));
    assert_eq!((active.active.as_str(), active.fatal()), ("active", None));

    let failed = UnitState::parse(&fixture("systemctl-show-failed.txt"));
    assert!(failed.fatal().is_some(), "{failed:?}");

    let limit = UnitState::parse(&fixture("systemctl-show-start-limit-hit.txt"));
    assert_eq!(limit.result, "start-limit-hit");
    assert!(limit.fatal().unwrap().contains("start-limit-hit"));

    // systemd 252 reports a crash loop as failed with Result=exit-code: the gate must still end.
    let crash = UnitState::parse(&fixture("systemctl-show-crash-loop.txt"));
    assert_eq!(crash.result, "exit-code");
    assert!(crash.fatal().is_some(), "{crash:?}");

    let missing = UnitState::parse(&fixture("systemctl-show-not-found.txt"));
    assert!(missing.fatal().unwrap().contains("does not exist"));
}

#[test]
fn real_dependencies_of_the_dispatcher_agree_with_the_reference_order() {
    let deps = UnitDeps::parse(&fixture("systemctl-show-deps-dispatcher.txt"));
    assert!(
        deps.after.iter().any(|u| u == "vllm-qwen36.service"),
        "{deps:?}"
    );
    let order = [
        "tailscale.service",
        "prometheus-node-exporter.service",
        "vllm-qwen36.service",
        "sglang-mistral.service",
        "dispatcher.service",
        "mcp-server.service",
        "caddy.service",
    ];
    let (errors, _) = order_problems("dispatcher.service", &order, &deps);
    assert!(errors.is_empty(), "{errors:?}");
    let wrong = [
        "dispatcher.service",
        "vllm-qwen36.service",
        "sglang-mistral.service",
    ];
    let (errors, _) = order_problems("dispatcher.service", &wrong, &deps);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("After=vllm-qwen36.service")),
        "{errors:?}"
    );
}

#[test]
fn the_kernel_log_checks_pass_a_clean_boot_and_a_power_cut_and_abort_on_an_ext4_error() {
    let plan = spark_plan();
    for name in [
        "Last kernel messages",
        "kernel log has no filesystem or disk errors",
    ] {
        let s = step(&plan, name);
        assert_eq!(
            verdict(s, &fixture("dmesg-tail-clean.txt"), 0),
            Verdict::Pass,
            "{name}"
        );
        assert_eq!(
            verdict(s, &fixture("dmesg-tail-after-powercut.txt"), 0),
            Verdict::Pass,
            "{name}"
        );
        match verdict(s, &fixture("dmesg-tail-kmsg-ext4.txt"), 0) {
            Verdict::Abort(r) => assert!(r.contains("EXT4-fs error"), "{r}"),
            v => panic!("{name}: {v:?}"),
        }
        assert!(
            matches!(
                verdict(s, &fixture("dmesg-tail-fs-error.txt"), 0),
                Verdict::Abort(_)
            ),
            "{name}"
        );
    }
}

#[test]
fn the_journal_check_passes_clean_and_power_cut_boots_and_aborts_on_an_fs_error() {
    let plan = spark_plan();
    let s = step(&plan, "Errors logged since boot");
    assert_eq!(
        verdict(s, &fixture("journalctl-err-clean-boot.txt"), 0),
        Verdict::Pass
    );
    assert_eq!(
        verdict(s, &fixture("journalctl-err-after-powercut.txt"), 0),
        Verdict::Pass
    );
    assert!(matches!(
        verdict(s, &fixture("journalctl-err-fs-error.txt"), 0),
        Verdict::Abort(_)
    ));
}

#[test]
fn fsck_passes_a_healthy_root_and_aborts_on_a_flagged_one_even_though_it_exits_0() {
    let plan = spark_plan();
    let s = step(&plan, "Read-only filesystem check of the root device");
    assert!(matches!(s.action, Action::Run(_)));
    assert_eq!(verdict(s, &fixture("fsck-n-clean.txt"), 0), Verdict::Pass);
    assert_eq!(
        verdict(s, &fixture("fsck-n-after-powercut.txt"), 0),
        Verdict::Pass
    );
    match verdict(s, &fixture("fsck-n-fs-error.txt"), 0) {
        Verdict::Abort(r) => assert!(r.contains("contains a file system with errors"), "{r}"),
        v => panic!("{v:?}"),
    }
}

#[test]
fn the_tailscale_gate_follows_the_backend_state() {
    let plan = spark_plan();
    let s = step(&plan, "start tailscale.service");
    let Action::Start {
        health: Some(g), ..
    } = &s.action
    else {
        panic!("no gate")
    };
    let recover::plan::Probe::Run { expect, .. } = &g.probe else {
        panic!("not a run probe")
    };
    let judge_probe = |text: &str| {
        let out = Output {
            exit: Some(0),
            stdout: text.to_owned(),
            stderr: String::new(),
            timed_out: false,
        };
        judge(&out, expect.as_ref(), None)
    };
    assert_eq!(
        judge_probe(&fixture("tailscale-status-running.txt")),
        Verdict::Pass
    );
    assert!(matches!(
        judge_probe(&fixture("tailscale-status-stopped.txt")),
        Verdict::Fail(_)
    ));
}

/// `script` through `sh` in `dir`, bounded: its output as the verdict functions read it.
fn sh_in(dir: &Path, script: &str) -> Output {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(script).current_dir(dir);
    let out = common::run_bounded(cmd, std::time::Duration::from_secs(20));
    assert!(out.status.code().is_some(), "`{script}` hangs");
    Output {
        exit: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        timed_out: false,
    }
}

fn script_of(s: &Step) -> &str {
    match &s.action {
        Action::Run(c) => &c.script,
        _ => panic!("step {:?} is not a run step", s.name),
    }
}

/// The lab's stand-ins (tests/lab/guest/usr/local/bin: the GPU and the clock, which a VM
/// without a GPU or a network time source lacks) answer the reference runbook's commands the
/// way its checks want; the lab's model files match their SHA256SUMS, and a damaged copy fails
/// the checksum step, which runs only when the shutdown was not clean.
#[test]
fn the_lab_stand_ins_and_model_files_satisfy_the_reference_checks() {
    let plan = spark_plan();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guest = root.join("tests/lab/guest");
    let bin = guest.join("usr/local/bin");
    let judge_step = |s: &Step, out: &Output| judge(out, s.expect.as_ref(), s.abort_if.as_ref());

    // Each stand-in through the step's own command line; then what the real tool says when
    // it is not so (nvidia-smi without a driver answering: exit 9; a clock not synced: `no`).
    for (name, tool, (exit, bad)) in [
        (
            "GPU answers",
            "nvidia-smi",
            (
                9,
                "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n",
            ),
        ),
        ("Clock synchronised", "timedatectl", (0, "no\n")),
    ] {
        let s = step(&plan, name);
        let cmd = script_of(s).replacen(tool, &bin.join(tool).display().to_string(), 1);
        assert_eq!(judge_step(s, &sh_in(root, &cmd)), Verdict::Pass, "{name}");
        let not_so = Output {
            exit: Some(exit),
            stdout: bad.into(),
            stderr: String::new(),
            timed_out: false,
        };
        assert!(matches!(judge_step(s, &not_so), Verdict::Fail(_)), "{name}");
    }

    let sums = step(&plan, "Model files match their checksums");
    let boot = step(&plan, "How the Spark went down");
    assert!(matches!(boot.action, Action::PreviousBoot { .. }));
    assert_eq!(sums.when_unclean, Some(boot.number));
    assert!(boot.number < sums.number);
    let models = tempfile::tempdir().unwrap();
    let copy = sh_in(
        root,
        &format!(
            "cp -R {}/. {}",
            guest.join("srv/models").display(),
            models.path().display()
        ),
    );
    assert_eq!(copy.exit, Some(0), "{copy:?}");
    let cmd = script_of(sums).replacen("/srv/models", &models.path().display().to_string(), 1);
    assert_eq!(judge_step(sums, &sh_in(root, &cmd)), Verdict::Pass);
    // A hard cut truncated a shard.
    let shard = models
        .path()
        .join("qwen36/model-00001-of-00001.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = sh_in(root, &cmd);
    assert!(
        matches!(judge_step(sums, &out), Verdict::Fail(_)),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("qwen36/model-00001-of-00001.safetensors: FAILED"),
        "{out:?}"
    );

    // Free space: the runbook's own line, on this machine's filesystems.
    let df = step(&plan, "Free space on the root, model and log filesystems");
    assert!(script_of(df).starts_with("df -P / /srv/models /var/log | awk "));
    let out = sh_in(root, &script_of(df).replacen("/srv/models", "/tmp", 1));
    let full = out.stdout.lines().skip(1).any(|l| {
        l.split_whitespace()
            .nth(4)
            .and_then(|p| p.trim_end_matches('%').parse::<u32>().ok())
            .is_some_and(|p| p >= 90)
    });
    assert_eq!(judge_step(df, &out) == Verdict::Pass, !full, "{out:?}");
}
