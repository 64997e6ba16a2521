//! Planned maintenance: `recover hold RUNBOOK --for 2h --why "…"`. While a hold stands,
//! `recover watch` starts nothing for the runbook (a box shut down on purpose is not
//! "recovered"); `status` and `check` show who holds it, why and until when.
//!
//! One file per runbook, `holds/<key>.json` under the state directory (mode 0600): written
//! whole to a temporary file and renamed, so a reader never sees half of one. An expired hold
//! holds nothing; `--release` removes the file.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::StateDir;

/// The longest hold: a hold forgotten for months would silently disable the watch.
pub const MAX: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Who put it: the account, and the person behind sudo when there is one.
    pub by: String,
    pub why: String,
    /// RFC 3339, UTC.
    pub since: String,
    pub until: String,
}

impl Hold {
    pub fn new(by: String, why: String, now: DateTime<Utc>, length: std::time::Duration) -> Hold {
        let until = now + chrono::Duration::from_std(length.min(MAX)).unwrap_or_default();
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Hold {
            by,
            why,
            since: fmt(now),
            until: fmt(until),
        }
    }

    pub fn until(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.until)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Whether it still holds at `now` (an unreadable end holds nothing).
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        self.until().is_some_and(|u| u > now)
    }

    /// "held by ops until 2026-12-07T16:00:00Z: firmware update".
    pub fn describe(&self) -> String {
        format!(
            "held by {} until {} (since {}): {}",
            crate::status::clean(&self.by, 80),
            self.until,
            self.since,
            crate::status::clean(&self.why, 300)
        )
    }
}

/// Where the hold of runbook `key` is kept.
pub fn path(state: &StateDir, key: &str) -> PathBuf {
    state.path().join("holds").join(format!("{key}.json"))
}

/// The account running this, and the person behind `sudo` when there is one.
pub fn who() -> String {
    // SAFETY: getuid(2) cannot fail.
    let uid = unsafe { libc::getuid() };
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty() && !u.chars().any(char::is_control));
    let mut who = match user {
        Some(u) => format!("{u} (uid {uid})"),
        None => format!("uid {uid}"),
    };
    if let Ok(s) = std::env::var("SUDO_USER")
        && !s.is_empty()
        && !s.chars().any(char::is_control)
    {
        who.push_str(&format!(" via sudo by {s}"));
    }
    who
}

/// The hold of `key`, if a file is there (expired or not).
pub fn read(state: &StateDir, key: &str) -> std::io::Result<Option<Hold>> {
    let p = path(state, key);
    match std::fs::read(&p) {
        Ok(bytes) if bytes.len() <= 64 * 1024 => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than any hold",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The hold that stands now, if any.
pub fn current(state: &StateDir, key: &str) -> Option<Hold> {
    read(state, key)
        .ok()
        .flatten()
        .filter(|h| h.holds_at(Utc::now()))
}

/// Write `hold` for `key` (0600, directories 0700), replacing any.
pub fn write(state: &StateDir, key: &str, hold: &Hold) -> std::io::Result<PathBuf> {
    let p = path(state, key);
    let text = serde_json::to_vec_pretty(hold).map_err(std::io::Error::other)?;
    write_private(&p, &text)?;
    Ok(p)
}

/// Remove the hold of `key`; whether there was one.
pub fn release(state: &StateDir, key: &str) -> std::io::Result<bool> {
    match std::fs::remove_file(path(state, key)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// `bytes` into `path` through a private temporary file in the same directory and a rename;
/// the directory is made 0700 when missing.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    // The rename itself on disk: a power cut of this host right after must not lose it.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_holds_until_its_end_and_no_longer() {
        let now = Utc::now();
        let h = Hold::new(
            "ops".into(),
            "firmware".into(),
            now,
            std::time::Duration::from_secs(7200),
        );
        assert!(h.holds_at(now));
        assert!(h.holds_at(now + chrono::Duration::seconds(7199)));
        assert!(!h.holds_at(now + chrono::Duration::seconds(7201)));
    }

    #[test]
    fn a_huge_hold_is_capped_and_an_unreadable_end_holds_nothing() {
        let now = Utc::now();
        let h = Hold::new(
            "ops".into(),
            "x".into(),
            now,
            std::time::Duration::from_secs(u64::MAX / 4),
        );
        assert!(!h.holds_at(now + chrono::Duration::days(31)));
        let bad = Hold {
            until: "tomorrow".into(),
            ..h
        };
        assert!(!bad.holds_at(now));
    }

    #[test]
    fn written_private_read_back_and_released() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::resolve(Some(dir.path().into()), None).unwrap();
        let h = Hold::new(
            "a'b\"c$d\\e".into(),
            "why: a'b\"c$d\\e".into(),
            Utc::now(),
            std::time::Duration::from_secs(60),
        );
        let p = write(&state, "rb@lab", &h).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read(&state, "rb@lab").unwrap(), Some(h.clone()));
        assert_eq!(current(&state, "rb@lab"), Some(h));
        assert!(release(&state, "rb@lab").unwrap());
        assert!(!release(&state, "rb@lab").unwrap());
        assert_eq!(read(&state, "rb@lab").unwrap(), None);
    }
}
