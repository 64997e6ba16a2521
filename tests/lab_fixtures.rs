//! The reference runbook's checks and the gate's parsers against real outputs captured from the
//! lab VM (real systemd 252, journald, e2fsck; see fixtures/lab/README.md for each command).

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
