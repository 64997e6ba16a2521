//! The last rehearsal, as `recover rehearse` records it:
//! `<state dir>/rehearsals/<key>.json` ([`crate::state::StateDir::rehearsal`], the key of
//! [`crate::plan::Plan::state_key`]: the runbook's name, or `name@overlay`) holding
//! `{"date": RFC 3339, "sha256": "...", "result": "passed" | "failed"}`.
//!
//! A missing file means "never rehearsed"; a file that cannot be read or understood is
//! reported as such, never an error: the binder must print whatever happens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rehearsal {
    Never,
    /// A record exists but says nothing usable.
    Unreadable {
        path: PathBuf,
        why: String,
    },
    Done {
        date: DateTime<Utc>,
        sha256: String,
        passed: bool,
    },
}

#[derive(Deserialize)]
struct Record {
    date: String,
    sha256: String,
    result: String,
}

/// Read the record at `path`, tolerating a missing or malformed file.
pub fn read(path: &Path) -> Rehearsal {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Rehearsal::Never,
        Err(e) => return unreadable(path, e.to_string()),
    };
    let rec: Record = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => return unreadable(path, e.to_string()),
    };
    let date = match DateTime::parse_from_rfc3339(rec.date.trim()) {
        Ok(d) => d.with_timezone(&Utc),
        Err(e) => return unreadable(path, format!("date `{}`: {e}", rec.date)),
    };
    let passed = match rec.result.as_str() {
        "passed" => true,
        "failed" => false,
        other => {
            return unreadable(
                path,
                format!("result `{other}` is neither passed nor failed"),
            );
        }
    };
    if rec.sha256.len() != 64 || !rec.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return unreadable(path, "sha256 is not 64 hex digits".into());
    }
    Rehearsal::Done {
        date,
        sha256: rec.sha256.to_ascii_lowercase(),
        passed,
    }
}

fn unreadable(path: &Path, why: String) -> Rehearsal {
    Rehearsal::Unreadable {
        path: path.to_owned(),
        why,
    }
}

impl Rehearsal {
    /// One line for the binder, and whether it needs the reader's attention (never
    /// rehearsed, failed, overdue, or rehearsed on another version of the runbook).
    pub fn describe(
        &self,
        sha256: &str,
        every: Option<Duration>,
        now: DateTime<Utc>,
    ) -> (String, bool) {
        match self {
            Rehearsal::Never => ("never rehearsed".into(), true),
            Rehearsal::Unreadable { path, why } => (
                format!(
                    "never rehearsed (the record {} cannot be read: {why})",
                    path.display()
                ),
                true,
            ),
            Rehearsal::Done {
                date,
                sha256: theirs,
                passed,
            } => {
                let mut s = format!(
                    "{}, {}",
                    date.format("%Y-%m-%d %H:%M UTC"),
                    if *passed { "passed" } else { "FAILED" }
                );
                let mut attention = !passed;
                if theirs != sha256 {
                    s.push_str(&format!(
                        "; on another version of the runbook (sha256 {}…)",
                        &theirs[..12]
                    ));
                    attention = true;
                }
                if let Some(every) = every {
                    let age = now.signed_duration_since(*date);
                    if age.to_std().is_ok_and(|a| a > every) {
                        s.push_str(&format!(
                            "; overdue, the runbook asks for one every {}",
                            crate::plan::fmt_duration(every)
                        ));
                        attention = true;
                    }
                }
                (s, attention)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "2338aebae000d38ea48e49b72559cb8f5836fe896be943d15fae646c7e113501";

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("spark-power.json");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_missing_file_is_never_rehearsed() {
        let d = tempfile::tempdir().unwrap();
        let r = read(&d.path().join("nope.json"));
        assert_eq!(r, Rehearsal::Never);
        assert_eq!(r.describe(SHA, None, now()).0, "never rehearsed");
    }

    #[test]
    fn a_good_record_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            &format!(
                r#"{{"date": "2025-05-20T09:15:42+02:00", "sha256": "{SHA}", "result": "passed"}}"#
            ),
        );
        let r = read(&p);
        let (text, attention) = r.describe(SHA, Some(Duration::from_secs(90 * 86400)), now());
        assert_eq!(text, "2025-05-20 07:15 UTC, passed");
        assert!(!attention);
    }

    #[test]
    fn failed_old_or_foreign_rehearsals_need_attention() {
        let d = tempfile::tempdir().unwrap();
        let other = "ab".repeat(32);
        let p = write(
            d.path(),
            &format!(
                r#"{{"date": "2025-01-01T00:00:00Z", "sha256": "{other}", "result": "failed"}}"#
            ),
        );
        let (text, attention) =
            read(&p).describe(SHA, Some(Duration::from_secs(90 * 86400)), now());
        assert!(attention);
        assert!(text.contains("FAILED"), "{text}");
        assert!(text.contains("another version"), "{text}");
        assert!(text.contains("overdue"), "{text}");
    }

    #[test]
    fn malformed_records_are_tolerated() {
        let d = tempfile::tempdir().unwrap();
        for bad in [
            "",
            "not json",
            r#"{"date": "yesterday", "sha256": "x", "result": "passed"}"#,
            &format!(r#"{{"date": "2025-01-01T00:00:00Z", "sha256": "{SHA}", "result": "maybe"}}"#),
            r#"{"date": "2025-01-01T00:00:00Z", "sha256": "short", "result": "passed"}"#,
        ] {
            let r = read(&write(d.path(), bad));
            assert!(matches!(r, Rehearsal::Unreadable { .. }), "{bad}: {r:?}");
            let (text, attention) = r.describe(SHA, None, now());
            assert!(text.starts_with("never rehearsed"), "{text}");
            assert!(attention);
        }
    }
}
