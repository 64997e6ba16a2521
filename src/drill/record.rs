//! The drill record, as `recover drill` leaves it: `<state dir>/drills/<key>.json`
//! ([`crate::state::StateDir::drill`]), one entry per unit, each replaced by that unit's latest
//! drill (a drill of one unit keeps the others' entries):
//!
//! ```json
//! {"units": {"vllm-qwen36.service": {"date": "2026-12-02T10:00:00Z", "sha256": "...",
//!   "passed": true, "restarted_after": 6.2, "healthy_after": 20.4,
//!   "n_restarts_before": 0, "n_restarts_after": 1, "reason": null}}}
//! ```
//!
//! `check` and the binder read it ("last drilled 3 days ago: restarted after 6.2s, healthy
//! after 20.4s"). A missing file means "never drilled"; a file that cannot be understood is
//! reported as such, never an error: the binder must print whatever happens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Measured, judge};

/// One unit's last drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitDrill {
    /// RFC 3339, UTC.
    pub date: String,
    /// The runbook's sha256 when it was drilled.
    pub sha256: String,
    pub passed: bool,
    /// Seconds from the SIGKILL to `active` with a new main pid (systemd's restart).
    pub restarted_after: Option<f64>,
    /// Seconds from the SIGKILL to the health probe passing again (the reload).
    pub healthy_after: Option<f64>,
    #[serde(default)]
    pub n_restarts_before: Option<u64>,
    #[serde(default)]
    pub n_restarts_after: Option<u64>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub units: BTreeMap<String, UnitDrill>,
}

/// What the state directory says about the drills of a runbook.
#[derive(Debug, Clone, PartialEq)]
pub enum Drills {
    Never,
    Unreadable { path: PathBuf, why: String },
    Done(Record),
}

impl Drills {
    /// The last drill of `unit`, if it was drilled and the record can be read.
    pub fn unit(&self, unit: &str) -> Option<&UnitDrill> {
        match self {
            Drills::Done(r) => r.units.get(unit),
            _ => None,
        }
    }
}

/// Read the record at `path`, tolerating a missing or malformed file.
pub fn read(path: &Path) -> Drills {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Drills::Never,
        Err(e) => {
            return Drills::Unreadable {
                path: path.to_owned(),
                why: e.to_string(),
            };
        }
    };
    match serde_json::from_str::<Record>(&text) {
        Ok(r) => Drills::Done(r),
        Err(e) => Drills::Unreadable {
            path: path.to_owned(),
            why: e.to_string(),
        },
    }
}

/// The entry a drill of one unit leaves; None for a unit the drill did not kill (refused
/// before the kill, or its state could not be read): the previous entry stays.
pub fn entry(m: &Measured, sha256: &str, date: DateTime<Utc>) -> Option<UnitDrill> {
    if m.kill_error.is_some() || m.refused.is_some() || m.interrupted {
        return None;
    }
    let verdict = judge(m);
    Some(UnitDrill {
        date: date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        sha256: sha256.to_owned(),
        passed: verdict.passed(),
        restarted_after: m.restarted_after.map(|d| round1(d.as_secs_f64())),
        healthy_after: m.healthy_after.map(|d| round1(d.as_secs_f64())),
        n_restarts_before: m.n_restarts_before,
        n_restarts_after: m.n_restarts_after,
        reason: match verdict {
            super::Verdict::Fail(why) => Some(why),
            _ => None,
        },
    })
}

fn round1(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}

/// Merge the drilled units into the record at `path` (replacing each unit's previous entry,
/// keeping the others), written atomically. A previous record that cannot be read is replaced.
pub fn save(path: &Path, entries: Vec<(String, UnitDrill)>) -> std::io::Result<()> {
    let mut rec = match read(path) {
        Drills::Done(r) => r,
        _ => Record::default(),
    };
    rec.units.extend(entries);
    if let Some(d) = path.parent() {
        crate::private::create_dir_all(d)?;
    }
    let tmp = path.with_extension("json.tmp");
    crate::private::write(&tmp, serde_json::to_string_pretty(&rec).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

/// Seconds as `6.2s`.
fn secs(s: f64) -> String {
    format!("{s:.1}s")
}

/// "last drilled 3 days ago (2026-12-02 10:00 UTC): restarted after 6.2s, healthy after
/// 20.4s, passed", or "never drilled". The second value says whether it needs attention
/// (never drilled, failed, or unreadable).
pub fn describe(d: &Drills, unit: &str, now: DateTime<Utc>) -> (String, bool) {
    if let Drills::Unreadable { path, why } = d {
        return (
            format!(
                "never drilled (the record {} cannot be read: {why})",
                path.display()
            ),
            true,
        );
    }
    let Some(u) = d.unit(unit) else {
        return ("never drilled".into(), true);
    };
    let Ok(date) = DateTime::parse_from_rfc3339(u.date.trim()).map(|d| d.with_timezone(&Utc))
    else {
        return (
            format!("never drilled (the date `{}` is not RFC 3339)", u.date),
            true,
        );
    };
    let days = now.signed_duration_since(date).num_days().max(0);
    let mut s = format!(
        "last drilled {days} day{} ago ({})",
        if days == 1 { "" } else { "s" },
        date.format("%Y-%m-%d %H:%M UTC")
    );
    let mut parts = Vec::new();
    if let Some(r) = u.restarted_after.filter(|r| r.is_finite()) {
        parts.push(format!("restarted after {}", secs(r)));
    }
    if let Some(h) = u.healthy_after.filter(|h| h.is_finite()) {
        parts.push(format!("healthy after {}", secs(h)));
    }
    parts.push(if u.passed {
        "passed".to_string()
    } else {
        format!(
            "FAILED: {}",
            u.reason.as_deref().unwrap_or("no reason recorded")
        )
    });
    s.push_str(": ");
    s.push_str(&parts.join(", "));
    (s, !u.passed)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn measured(unit: &str) -> Measured {
        Measured {
            unit: unit.into(),
            restart: "on-failure".into(),
            old_pid: 367,
            new_pid: Some(407),
            restarted_after: Some(Duration::from_millis(6240)),
            healthy_after: Some(Duration::from_millis(20_410)),
            has_probe: true,
            bound: Duration::from_secs(540),
            n_restarts_before: Some(0),
            n_restarts_after: Some(1),
            ..Measured::default()
        }
    }

    #[test]
    fn a_drill_is_saved_merged_and_described() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("drills/spark-power.json");
        assert_eq!(read(&p), Drills::Never);
        let then = now() - chrono::Duration::days(3);
        let sha = "ab".repeat(32);
        let a = entry(&measured("a.service"), &sha, then).unwrap();
        save(&p, vec![("a.service".into(), a)]).unwrap();
        let mut no = measured("b.service");
        no.restart = "no".into();
        no.restarted_after = None;
        no.healthy_after = None;
        no.new_pid = None;
        let b = entry(&no, &sha, now()).unwrap();
        save(&p, vec![("b.service".into(), b)]).unwrap();
        let r = read(&p);
        let (text, attention) = describe(&r, "a.service", now());
        assert_eq!(
            text,
            "last drilled 3 days ago (2026-12-02 12:00 UTC): restarted after 6.2s, healthy after 20.4s, passed"
        );
        assert!(!attention);
        let (text, attention) = describe(&r, "b.service", now());
        assert!(
            text.starts_with("last drilled 0 days ago") && text.contains("FAILED: not restarted"),
            "{text}"
        );
        assert!(attention);
        assert_eq!(r.unit("a.service").unwrap().n_restarts_after, Some(1));
        assert_eq!(describe(&r, "c.service", now()).0, "never drilled");
    }

    #[test]
    fn a_unit_not_killed_leaves_no_entry() {
        let mut m = measured("a.service");
        m.refused = Some("start limit".into());
        assert_eq!(entry(&m, "x", now()), None);
        let mut m = measured("a.service");
        m.kill_error = Some("cannot read its state".into());
        assert_eq!(entry(&m, "x", now()), None);
    }

    #[test]
    fn malformed_records_are_tolerated() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        for bad in [
            "",
            "not json",
            r#"{"units": 3}"#,
            r#"{"units": {"a": {"date": 1}}}"#,
        ] {
            std::fs::write(&p, bad).unwrap();
            let r = read(&p);
            assert!(matches!(r, Drills::Unreadable { .. }), "{bad}: {r:?}");
            let (text, attention) = describe(&r, "a", now());
            assert!(text.starts_with("never drilled (the record"), "{text}");
            assert!(attention);
        }
        std::fs::write(&p, r#"{"units": {"a": {"date": "yesterday", "sha256": "", "passed": true, "restarted_after": null, "healthy_after": null}}}"#).unwrap();
        assert!(describe(&read(&p), "a", now()).0.contains("not RFC 3339"));
    }
}
