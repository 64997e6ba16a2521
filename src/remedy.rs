//! Remedies in health gates: what to do when a unit is `active` but its real-work probe keeps
//! failing (the hang: CUDA wedged, a batch deadlocked, `/health` still 200).
//!
//! systemd restarts a unit under `Restart=on-failure` when its main process dies of SIGKILL
//! (SIGHUP, SIGINT, SIGTERM and SIGPIPE count as a clean stop), so `kill` SIGKILLs the
//! unit's `MainPID` and lets systemd's own restart policy revive it. Killing in a loop trips the
//! unit's start limit and causes the outage it meant to cure: a remedy waits for `after`
//! consecutive failed probes while the unit is `active` (for `kill` and `restart`, probes that
//! got no answer in time: see [`counts`]), is applied at most `max` times per
//! gate, never while the unit is `activating`, and never when the restart it causes would go
//! beyond `StartLimitBurst`.
//!
//! Pure: [`decide`] judges; the engine sends [`kill_command`] or [`restart_command`].

use std::time::Duration;

use crate::audit::{Show, Span};

pub use crate::runbook::remedy::{Action, DEFAULT_AFTER, DEFAULT_MAX, Policy, Spec};

/// When and how often, in words: for `--dry-run` and the binder.
pub fn when(p: &Policy) -> String {
    let trigger = match p.action {
        Action::Kill | Action::Restart => "probes that get no answer in time",
        Action::Run(_) => "failed probes",
    };
    let start_limit = match p.action {
        Action::Kill | Action::Restart => {
            ", never while it is activating nor beyond its start limit (StartLimitBurst, NRestarts)"
        }
        Action::Run(_) => ", never while it is activating",
    };
    format!(
        "{} after {} {trigger} in a row while the unit is active; at most {} time(s) in this gate{start_limit}",
        p.action.describe(),
        p.after,
        p.max
    )
}

/// The properties [`decide`] reads, as `systemctl show -p` wants them.
pub const STATE_PROPERTIES: &str = "LoadState,ActiveState,SubState,Result,MainPID,NRestarts,Restart,StartLimitBurst,StartLimitIntervalUSec";

/// The unit, as the gate last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitNow {
    pub active: String,
    pub sub: String,
    pub main_pid: u64,
    pub n_restarts: u64,
    /// `Restart=`; empty when not read.
    pub restart: String,
    /// None: systemctl did not say.
    pub burst: Option<u64>,
    /// None: not said; `Some(None)`: infinity.
    pub interval: Option<Option<Duration>>,
}

impl UnitNow {
    /// From `systemctl show -p` output (properties in any order).
    pub fn parse(text: &str) -> UnitNow {
        let s = Show::parse(text);
        UnitNow {
            active: s.get("ActiveState").unwrap_or("").trim().to_string(),
            sub: s.get("SubState").unwrap_or("").trim().to_string(),
            main_pid: s.number("MainPID").unwrap_or(0),
            n_restarts: s.number("NRestarts").unwrap_or(0),
            restart: s.get("Restart").unwrap_or("").trim().to_string(),
            burst: s.number("StartLimitBurst"),
            interval: s.span("StartLimitIntervalUSec").map(|sp| match sp {
                Span::Finite(d) => Some(d),
                Span::Infinity => None,
            }),
        }
    }
}

/// Whether a failed probe counts toward `after`. A `kill` or `restart` acts on a hang only: a
/// probe that got no answer within its timeout. A quick refusal (connection refused, a 503
/// "model is loading") is an engine still loading its weights, which a kill would only send
/// back to the start; it resets the count. A `run:` remedy (`tailscale up --reset`) answers
/// a wrong answer, so every failed probe counts.
pub fn counts(action: &Action, timed_out: bool) -> bool {
    match action {
        Action::Kill | Action::Restart => timed_out,
        Action::Run(_) => true,
    }
}

/// What the gate should do after a failed probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply the remedy now.
    Apply,
    /// Not yet: fewer than `after` failures in a row (the count so far).
    Wait(u32),
    /// Never in this gate, and why (said once, as a warning).
    Refuse(String),
}

/// Decides after a failed probe. `failures` counts consecutive failed probes while the unit
/// was active; `applied` the remedies this gate has applied so far.
pub fn decide(policy: &Policy, unit: &str, now: &UnitNow, failures: u32, applied: u32) -> Decision {
    if now.active != "active" {
        return Decision::Wait(0);
    }
    if failures < policy.after {
        return Decision::Wait(failures);
    }
    if applied >= policy.max {
        return Decision::Refuse(format!(
            "remedy `{}` already applied {applied} time(s), its max for this gate",
            policy.action.name()
        ));
    }
    if policy.action == Action::Kill && now.main_pid == 0 {
        return Decision::Refuse(format!(
            "{unit} has no main process (MainPID=0): nothing to kill"
        ));
    }
    if policy.action == Action::Kill && matches!(now.restart.as_str(), "no" | "on-success") {
        return Decision::Refuse(format!(
            "{unit} has Restart={}: systemd would not bring it back after a SIGKILL, so the remedy would take it down; not killing it (set Restart=on-failure)",
            now.restart
        ));
    }
    if policy.action != Action::Kill && policy.action != Action::Restart {
        return Decision::Apply;
    }
    match start_limit_refusal(unit, now, &format!("`{}`", policy.action.name())) {
        Some(why) => Decision::Refuse(why),
        None => Decision::Apply,
    }
}

/// Why one more start of `unit` (after a kill or a restart by `what`) would go beyond its start
/// limit, or None when it would not. The start it causes, on top of the first start and the
/// automatic restarts so far, must stay within `StartLimitBurst` (counted as if all fell
/// inside the interval). Shared by the gate's remedies and `recover drill`.
pub fn start_limit_refusal(unit: &str, now: &UnitNow, what: &str) -> Option<String> {
    let limit_off = now.burst == Some(0) || now.interval == Some(Some(Duration::ZERO));
    let burst = now.burst.filter(|_| !limit_off)?;
    let starts_after = now.n_restarts + 2;
    if starts_after <= burst {
        return None;
    }
    let interval = match now.interval {
        Some(Some(d)) => crate::duration::fmt_duration(d),
        Some(None) => "infinity".to_string(),
        None => "its interval".to_string(),
    };
    Some(format!(
        "{unit} has restarted {} time(s) (NRestarts); one more start would go beyond its start limit (StartLimitBurst={burst} in {interval}) and leave it failed: not applying {what}",
        now.n_restarts
    ))
}

/// SIGKILLs the unit's main process, read from systemd at that moment (never a `pgrep` guess).
/// Prints `killed PID`; exits 3 when the unit has no main process.
pub fn kill_command(unit_quoted: &str) -> String {
    format!(
        "pid=$(systemctl show -p MainPID --value {unit_quoted}) && [ \"$pid\" -gt 0 ] || {{ echo \"no main process\" >&2; exit 3; }}; kill -s KILL \"$pid\" && echo \"killed $pid\""
    )
}

/// `systemctl restart UNIT`.
pub fn restart_command(unit_quoted: &str) -> String {
    format!("systemctl restart --no-block {unit_quoted}")
}

/// The pid a [`kill_command`] reported (`killed 1234`).
pub fn killed_pid(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("killed "))
        .and_then(|p| p.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(after: u32, max: u32) -> Policy {
        Policy {
            action: Action::Kill,
            after,
            max,
        }
    }

    fn active(pid: u64, restarts: u64) -> UnitNow {
        UnitNow {
            active: "active".into(),
            sub: "running".into(),
            main_pid: pid,
            n_restarts: restarts,
            restart: "on-failure".into(),
            burst: Some(3),
            interval: Some(Some(Duration::from_secs(60))),
        }
    }

    #[test]
    fn waits_for_after_consecutive_failures() {
        let p = kill(3, 1);
        let u = active(367, 0);
        assert_eq!(decide(&p, "vllm.service", &u, 1, 0), Decision::Wait(1));
        assert_eq!(decide(&p, "vllm.service", &u, 2, 0), Decision::Wait(2));
        assert_eq!(decide(&p, "vllm.service", &u, 3, 0), Decision::Apply);
    }

    #[test]
    fn never_while_activating_and_never_beyond_max() {
        let p = kill(1, 1);
        let mut u = active(367, 0);
        u.active = "activating".into();
        u.sub = "auto-restart".into();
        assert_eq!(decide(&p, "vllm.service", &u, 5, 0), Decision::Wait(0));
        let u = active(400, 1);
        match decide(&p, "vllm.service", &u, 5, 1) {
            Decision::Refuse(why) => assert!(why.contains("max"), "{why}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn never_beyond_the_start_limit() {
        let p = kill(1, 2);
        // Burst 3: the first start and one restart leave room for one more start.
        assert_eq!(
            decide(&p, "vllm.service", &active(367, 1), 1, 0),
            Decision::Apply
        );
        match decide(&p, "vllm.service", &active(367, 2), 1, 0) {
            Decision::Refuse(why) => {
                assert!(why.contains("StartLimitBurst=3 in 1m"), "{why}");
                assert!(why.contains("restarted 2 time(s)"), "{why}");
            }
            d => panic!("{d:?}"),
        }
        // A start limit turned off never refuses.
        let mut off = active(367, 9);
        off.interval = Some(Some(Duration::ZERO));
        assert_eq!(decide(&p, "vllm.service", &off, 1, 0), Decision::Apply);
        // A command remedy does not restart the unit: the limit does not apply.
        let run = Policy {
            action: Action::Run("tailscale up --reset".into()),
            after: 1,
            max: 1,
        };
        assert_eq!(
            decide(&run, "tailscale.service", &active(10, 2), 1, 0),
            Decision::Apply
        );
    }

    #[test]
    fn only_a_hang_counts_for_kill() {
        assert!(counts(&Action::Kill, true));
        assert!(!counts(&Action::Kill, false));
        assert!(!counts(&Action::Restart, false));
        assert!(counts(&Action::Run("tailscale up --reset".into()), false));
    }

    #[test]
    fn no_kill_when_systemd_would_not_restart_it() {
        let mut u = active(382, 0);
        u.restart = "no".into();
        match decide(&kill(1, 1), "reranker.service", &u, 1, 0) {
            Decision::Refuse(why) => assert!(why.contains("Restart=no"), "{why}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn no_main_process_no_kill() {
        match decide(&kill(1, 1), "oneshot.service", &active(0, 0), 1, 0) {
            Decision::Refuse(why) => assert!(why.contains("MainPID=0")),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn parses_the_state_from_captured_output() {
        let text = include_str!("../fixtures/lab/systemctl-show-audit-vllm-qwen36.txt");
        let u = UnitNow::parse(text);
        assert_eq!(u.active, "active");
        assert!(u.main_pid > 0);
        assert_eq!(u.n_restarts, 0);
        assert_eq!(u.burst, Some(3));
        assert_eq!(u.interval, Some(Some(Duration::from_secs(60))));
    }

    fn spec(yaml: &str) -> Result<Spec, String> {
        serde_saphyr::from_str::<Spec>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn short_and_long_forms() {
        assert_eq!(spec("kill").unwrap().policy(), kill(3, 1));
        assert_eq!(spec("restart").unwrap().action, Action::Restart);
        let long = spec("{ run: tailscale up --reset, after: 2, max: 2 }").unwrap();
        assert_eq!(long.action, Action::Run("tailscale up --reset".into()));
        assert_eq!((long.policy().after, long.policy().max), (2, 2));
        assert_eq!(
            spec("{ kill: true, after: 5 }").unwrap().policy(),
            kill(5, 1)
        );
        for bad in [
            "reboot",
            "{ kill: true, restart: true }",
            "{ after: 3 }",
            "{ kill: true, after: 0 }",
            "{ run: '' }",
            "{ kill: true, sometimes: 1 }",
        ] {
            assert!(spec(bad).is_err(), "{bad}");
        }
        assert!(spec("reboot").unwrap_err().contains("not a remedy"));
    }

    #[test]
    fn kill_reads_the_main_pid_from_systemd() {
        let c = kill_command("vllm-qwen36.service");
        assert!(c.contains("systemctl show -p MainPID --value vllm-qwen36.service"));
        assert!(c.contains("kill -s KILL \"$pid\""));
        assert_eq!(killed_pid("killed 367\n"), Some(367));
        assert_eq!(killed_pid("no main process"), None);
    }
}
