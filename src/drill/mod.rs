//! The drill's verdicts: after a SIGKILL of a unit's main process, did systemd restart it
//! (active again, with a new `MainPID`), and did its health probe pass again, within the
//! unit's timeout? Pure; the engine measures, this judges and renders the table.

use std::time::Duration;

use crate::plan::fmt_duration;

pub mod record;

/// What the drill measured on one unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measured {
    pub unit: String,
    /// `Restart=` as systemd reported it before the kill.
    pub restart: String,
    pub old_pid: u64,
    /// The main process after the restart (None: never active again with a new one).
    pub new_pid: Option<u64>,
    /// Kill to `active` with a new MainPID.
    pub restarted_after: Option<Duration>,
    /// Kill to the health probe passing again (None: no probe, or it never passed).
    pub healthy_after: Option<Duration>,
    /// Whether the unit has a health probe.
    pub has_probe: bool,
    /// The unit's state when the drill gave up on it (`failed`, `inactive`), if it did.
    pub gave_up_state: Option<String>,
    /// The bound: the start step's timeout.
    pub bound: Duration,
    /// Why the kill itself could not be done, if it could not.
    pub kill_error: Option<String>,
    /// Why the drill did not kill this unit on purpose (its start limit), if it did not.
    pub refused: Option<String>,
    /// `NRestarts` before the kill and once the unit was back (None: not read).
    pub n_restarts_before: Option<u64>,
    pub n_restarts_after: Option<u64>,
    /// Ctrl-C or a signal stopped the drill before this unit was measured to the end.
    pub interrupted: bool,
}

impl Measured {
    /// Whether the drill saw this unit through: back with a new main process and (if it has a
    /// probe) healthy, or given up on by systemd, or not killed at all.
    pub fn complete(&self) -> bool {
        self.kill_error.is_some()
            || self.refused.is_some()
            || self.gave_up_state.is_some()
            || (self.restarted_after.is_some() && (!self.has_probe || self.healthy_after.is_some()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    /// Not killed on purpose: killing it would have done harm (its start limit).
    Skipped(String),
}

impl Verdict {
    pub fn passed(&self) -> bool {
        *self == Verdict::Pass
    }
}

pub fn judge(m: &Measured) -> Verdict {
    if let Some(why) = &m.refused {
        return Verdict::Skipped(why.clone());
    }
    if m.interrupted {
        return Verdict::Skipped("interrupted before it was measured to the end".into());
    }
    if let Some(e) = &m.kill_error {
        return Verdict::Fail(format!("could not kill its main process: {e}"));
    }
    if m.restarted_after.is_none() {
        let policy = if m.restart == "no" || m.restart.is_empty() {
            format!(
                "Restart={}: systemd leaves it down after a SIGKILL; set Restart=on-failure (recover audit shows the drop-in)",
                if m.restart.is_empty() {
                    "?"
                } else {
                    &m.restart
                }
            )
        } else {
            format!(
                "not active with a new main process within {} (Restart={})",
                fmt_duration(m.bound),
                m.restart
            )
        };
        let state = m
            .gave_up_state
            .as_deref()
            .map(|s| format!("{s}; "))
            .unwrap_or_default();
        return Verdict::Fail(format!("not restarted: {state}{policy}"));
    }
    if m.has_probe && m.healthy_after.is_none() {
        return Verdict::Fail(format!(
            "restarted, but its health probe did not pass again within {}",
            fmt_duration(m.bound)
        ));
    }
    Verdict::Pass
}

/// Seconds with one decimal: `6.2s`.
fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1}s", d.as_secs_f64()))
        .unwrap_or_else(|| "-".to_string())
}

/// The table: unit, restarted after, healthy after, verdict.
pub fn table(rows: &[Measured]) -> String {
    let unit_w = rows
        .iter()
        .map(|m| m.unit.len())
        .chain(["unit".len()])
        .max()
        .unwrap_or(4);
    let mut out = format!(
        "{:<unit_w$}  {:>15}  {:>13}  verdict\n",
        "unit", "restarted after", "healthy after"
    );
    for m in rows {
        let verdict = match judge(m) {
            Verdict::Pass => "pass".to_string(),
            Verdict::Fail(why) => format!("FAIL: {why}"),
            Verdict::Skipped(why) => format!("SKIPPED: {why}"),
        };
        let healthy = if m.has_probe {
            secs(m.healthy_after)
        } else {
            "(no probe)".to_string()
        };
        out.push_str(&format!(
            "{:<unit_w$}  {:>15}  {:>13}  {verdict}\n",
            m.unit,
            secs(m.restarted_after),
            healthy
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restarted() -> Measured {
        Measured {
            unit: "vllm-qwen36.service".into(),
            restart: "on-failure".into(),
            old_pid: 367,
            new_pid: Some(407),
            restarted_after: Some(Duration::from_millis(6200)),
            healthy_after: Some(Duration::from_millis(20_400)),
            has_probe: true,
            bound: Duration::from_secs(540),
            ..Measured::default()
        }
    }

    #[test]
    fn a_restarted_healthy_unit_passes() {
        assert_eq!(judge(&restarted()), Verdict::Pass);
    }

    #[test]
    fn restart_no_fails_and_says_what_to_change() {
        let m = Measured {
            unit: "reranker.service".into(),
            restart: "no".into(),
            old_pid: 382,
            gave_up_state: Some("failed".into()),
            has_probe: true,
            bound: Duration::from_secs(60),
            ..Measured::default()
        };
        match judge(&m) {
            Verdict::Fail(why) => {
                assert!(
                    why.starts_with("not restarted: failed; Restart=no"),
                    "{why}"
                );
                assert!(why.contains("Restart=on-failure"), "{why}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn restarted_but_never_healthy_fails() {
        let mut m = restarted();
        m.healthy_after = None;
        assert!(
            matches!(judge(&m), Verdict::Fail(w) if w.contains("did not pass again within 9m"))
        );
    }

    #[test]
    fn the_table_has_a_row_per_unit() {
        let mut r = restarted();
        r.unit = "sglang-mistral.service".into();
        let no = Measured {
            unit: "reranker.service".into(),
            restart: "no".into(),
            has_probe: false,
            bound: Duration::from_secs(60),
            ..Measured::default()
        };
        let t = table(&[restarted(), no]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[0].starts_with("unit                 restarted after  healthy after  verdict"),
            "{t}"
        );
        assert!(
            lines[1].contains("6.2s") && lines[1].contains("20.4s") && lines[1].ends_with("pass"),
            "{t}"
        );
        assert!(
            lines[2].contains("(no probe)") && lines[2].contains("FAIL: not restarted"),
            "{t}"
        );
    }
}
