//! The health gate of a `start` step (probe, pace, successes), and the unit reads the gate
//! makes on the target: its state before each probe, its journal when it fails.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::resolve::{Resolver, matcher};
use super::{
    Command, DEFAULT_GATE_EVERY, DEFAULT_GATE_TIMEOUT, DEFAULT_PROBE_TIMEOUT,
    DEFAULT_START_TIMEOUT, Gate, GateRemedy, Probe, TargetSpec, fmt_duration,
};
use crate::runbook::diag::Pos;
use crate::runbook::model;
use crate::template::{Context, shell_quote};

/// How long one read of the unit (state or journal) may take on the target.
pub const UNIT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading the unit's journal may take.
pub const JOURNAL_TIMEOUT: Duration = Duration::from_secs(15);

/// `systemctl show` of the unit's load, active and sub state and result: read before each
/// probe, so a unit that failed ends the gate at once. A gate with a remedy also reads the
/// main pid, the restart count and the start limit ([`crate::remedy::STATE_PROPERTIES`]).
pub fn unit_status(unit: &str, remedy: bool, marker: &str) -> Command {
    let props = if remedy {
        format!("-p {}", crate::remedy::STATE_PROPERTIES)
    } else {
        "-p LoadState -p ActiveState -p SubState -p Result".to_string()
    };
    Command::remote(
        format!("systemctl show {props} {}", shell_quote(unit)),
        false,
        UNIT_READ_TIMEOUT,
        marker,
    )
}

/// `journalctl -u UNIT -n 30`: what the unit said last, shown when it fails.
pub fn unit_journal(unit: &str, sudo: bool, marker: &str) -> Command {
    Command::remote(
        format!("journalctl -u {} -n 30 --no-pager", shell_quote(unit)),
        sudo,
        JOURNAL_TIMEOUT,
        marker,
    )
}

impl Resolver<'_> {
    /// The health gate of a start step; `key` is where `health:` is written.
    pub(super) fn gate(
        &mut self,
        h: &Spanned<model::Health>,
        key: Pos,
        target: Option<&TargetSpec>,
        sudo: bool,
        marker: &str,
        explicit_timeout: Option<Duration>,
    ) -> Option<Gate> {
        let v = &h.value;
        let hpos = Pos::of(&h.referenced);
        let step_timeout = explicit_timeout.unwrap_or(DEFAULT_START_TIMEOUT);
        let explicit = explicit_timeout.is_some();
        let every = v.every.map(|d| d.0).unwrap_or(DEFAULT_GATE_EVERY);
        let timeout = v
            .timeout
            .as_ref()
            .map(|d| d.value.0)
            .unwrap_or(DEFAULT_GATE_TIMEOUT);
        let successes = v.successes.unwrap_or(1);
        if successes == 0 {
            self.err(
                self.key_at(hpos, "successes", hpos),
                "a health gate needs at least one success",
                "set `successes: 1` or more",
            );
        }
        if explicit && timeout > step_timeout {
            let tpos = v
                .timeout
                .as_ref()
                .map(|t| Pos::of(&t.referenced))
                .unwrap_or(hpos);
            self.err(
                tpos,
                format!(
                    "the health gate waits up to {} but the step times out after {}",
                    fmt_duration(timeout),
                    fmt_duration(step_timeout)
                ),
                "raise the step's `timeout` above the gate's, or shorten the gate",
            );
        }
        let probe = match (&v.http, &v.run) {
            (Some(http), Some(run)) => {
                let (hp, rp) = (Pos::of(&http.referenced), Pos::of(&run.referenced));
                let second = if (rp.line, rp.column) > (hp.line, hp.column) {
                    self.key_at(hpos, "run", rp)
                } else {
                    self.key_at(hpos, "http", hp)
                };
                self.err(
                    second,
                    "this health gate has two probes, `http:` and `run:`",
                    "keep one probe, the one that exercises the real work; a gate checks one thing again and again",
                );
                return None;
            }
            (None, None) => {
                self.err(
                    key,
                    "this health gate has no probe: add `http:` or `run:`",
                    "probe the real work, e.g. `http: { url: ..., method: POST, json: ..., expect: { status: 200 } }`",
                );
                return None;
            }
            (Some(http), None) => {
                if v.expect.is_some() {
                    self.err(
                        self.key_at(hpos, "expect", hpos),
                        "`expect` beside an http probe: put it inside `http:`",
                        "write `http: { ..., expect: { status: 200, body: ... } }`",
                    );
                }
                Probe::Http(self.request(http, target, Some(DEFAULT_PROBE_TIMEOUT), marker))
            }
            (None, Some(run)) => {
                let (script, secret) =
                    self.reads_env(|r| r.render(run, Context::Shell, target, false));
                let t = DEFAULT_PROBE_TIMEOUT
                    .min(every.max(Duration::from_secs(1)) * 2)
                    .max(Duration::from_secs(2));
                Probe::Run {
                    command: self.remote_command(script, sudo, t, marker, secret),
                    expect: v.expect.as_ref().map(matcher),
                }
            }
        };
        Some(Gate {
            every,
            timeout,
            successes,
            probe,
            remedy: None,
        })
    }

    /// The gate's `remedy:`: its counts and the line that applies it.
    pub(super) fn remedy(
        &mut self,
        h: &Spanned<model::Health>,
        unit: &str,
        target: Option<&TargetSpec>,
        sudo: bool,
        marker: &str,
    ) -> Option<GateRemedy> {
        h.value.remedy.as_ref().map(|r| {
            let policy = r.value.policy();
            let q = shell_quote(unit);
            let at = Pos::of(&r.referenced);
            let ((script, t), secret) = match &policy.action {
                crate::remedy::Action::Kill => {
                    ((crate::remedy::kill_command(&q), UNIT_READ_TIMEOUT), false)
                }
                crate::remedy::Action::Restart => (
                    (crate::remedy::restart_command(&q), UNIT_READ_TIMEOUT),
                    false,
                ),
                crate::remedy::Action::Run(cmd) => self.reads_env(|this| {
                    (
                        this.render_at(cmd, at, Context::Shell, target, false),
                        DEFAULT_PROBE_TIMEOUT,
                    )
                }),
            };
            GateRemedy {
                policy,
                apply: self.remote_command(script, sudo, t, marker, secret),
            }
        })
    }
}
