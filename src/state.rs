//! Where recover keeps what outlives a run: journals, rehearsal and drill records.
//!
//! Records and journal names are keyed by [`crate::plan::Plan::state_key`]: the runbook's
//! `name`, or `name@overlay` for an overlay, so the lab's history is not production's.
//!
//! The XDG base-directory rule: `$XDG_STATE_HOME/recover` when `XDG_STATE_HOME` is set to an
//! absolute path, else `$HOME/.local/state/recover`. A relative `XDG_STATE_HOME` is ignored, as
//! the specification asks; an empty variable counts as unset. Without either there is no state
//! directory, and what needs one says so.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir(PathBuf);

impl StateDir {
    /// The state directory of this process's environment.
    pub fn from_env() -> Option<StateDir> {
        StateDir::resolve(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
    }

    /// The state directory for these values of `XDG_STATE_HOME` and `HOME`.
    pub fn resolve(xdg_state_home: Option<OsString>, home: Option<OsString>) -> Option<StateDir> {
        let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
        let base = match set(xdg_state_home) {
            Some(x) if x.is_absolute() => x,
            _ => set(home)?.join(".local/state"),
        };
        Some(StateDir(base.join("recover")))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Where runs keep their journals.
    pub fn runs(&self) -> PathBuf {
        self.0.join("runs")
    }

    /// Where the locks of runs in progress are (`crate::lock`).
    pub fn locks(&self) -> PathBuf {
        self.0.join("locks")
    }

    /// Where the last rehearsal of runbook `name` is recorded.
    pub fn rehearsal(&self, name: &str) -> PathBuf {
        self.0
            .join("rehearsals")
            .join(format!("{}.json", file_name(name)))
    }

    /// Where the drills of runbook `name` are recorded (`crate::drill::record`).
    pub fn drill(&self, name: &str) -> PathBuf {
        self.0
            .join("drills")
            .join(format!("{}.json", file_name(name)))
    }
}

/// A state key as a file name inside its directory: a key read from a journal may be anything
/// (`../../x`), and must not lead outside the state directory. A runbook's own key (letters,
/// digits, `.`, `_`, `-`, `@`, `+`, never a leading `.`) is itself; other characters become
/// `_`, and so does a leading dot.
pub fn file_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(xdg: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
        StateDir::resolve(xdg.map(OsString::from), home.map(OsString::from))
            .map(|d| d.path().to_owned())
    }

    #[test]
    fn a_key_from_a_journal_never_leads_outside_the_state_directory() {
        let s = StateDir(PathBuf::from("/state/recover"));
        for key in [
            "../../x",
            "..",
            "/etc/passwd",
            "a/../../b",
            ".hidden",
            "",
            "a\0b",
        ] {
            for p in [s.rehearsal(key), s.drill(key)] {
                let parent = p.parent().unwrap();
                assert!(
                    parent == s.path().join("rehearsals") || parent == s.path().join("drills"),
                    "{key:?}: {}",
                    p.display()
                );
                let name = p.file_name().unwrap().to_str().unwrap();
                assert!(
                    !name.starts_with('.') && !name.contains('/'),
                    "{key:?}: {name}"
                );
            }
        }
        assert_eq!(
            s.rehearsal("spark-power@lab+night"),
            PathBuf::from("/state/recover/rehearsals/spark-power@lab+night.json")
        );
    }

    #[test]
    fn an_absolute_xdg_state_home_wins() {
        assert_eq!(
            dir(Some("/state"), Some("/home/op")),
            Some(PathBuf::from("/state/recover"))
        );
        assert_eq!(
            dir(Some("/state"), None),
            Some(PathBuf::from("/state/recover"))
        );
    }

    #[test]
    fn a_relative_or_empty_xdg_state_home_is_ignored() {
        for xdg in [Some("relative"), Some("./state"), Some(""), None] {
            assert_eq!(
                dir(xdg, Some("/home/op")),
                Some(PathBuf::from("/home/op/.local/state/recover")),
                "{xdg:?}"
            );
        }
    }

    #[test]
    fn without_either_there_is_none() {
        assert_eq!(dir(None, None), None);
        assert_eq!(dir(Some("relative"), Some("")), None);
    }

    #[test]
    fn journals_and_rehearsals_live_under_it() {
        let d = StateDir::resolve(Some("/s".into()), None).unwrap();
        assert_eq!(d.runs(), PathBuf::from("/s/recover/runs"));
        assert_eq!(
            d.rehearsal("spark-power"),
            PathBuf::from("/s/recover/rehearsals/spark-power.json")
        );
    }
}
