//! One run at a time: a lock per runbook and per target host, under the state directory.
//!
//! Each lock is a file held with `flock(2)`: the kernel releases it when the holder exits,
//! however it exits, so a crashed run never blocks the next one. The file records who holds it
//! (pid, start time, journal), so a second run can say who is driving the target; a record
//! left by a process that is gone (the run crashed or was killed) is taken over with a warning
//! naming it. Lock files are never removed, only emptied on release: removing a file that
//! another process has open would let two processes hold "the same" lock on two inodes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who holds a lock, as its file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// RFC 3339, UTC.
    pub started: String,
    pub journal: PathBuf,
    pub runbook: String,
}

impl Owner {
    /// This process, starting a run now that writes `journal`.
    pub fn me(runbook: &str, journal: &Path) -> Owner {
        Owner {
            pid: std::process::id(),
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            journal: journal.to_path_buf(),
            runbook: runbook.to_owned(),
        }
    }

    /// "pid 123, started 2026-12-03T13:00:00Z, journal /path": for messages.
    pub fn describe(&self) -> String {
        format!(
            "pid {}, started {}, journal {}",
            self.pid,
            self.started,
            self.journal.display()
        )
    }
}

/// What one lock protects: a runbook, or a target host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// "runbook `spark-power`", "host spark.local:22".
    pub what: String,
    /// The lock file's name in the lock directory.
    pub file: String,
}

/// The locks a run of `runbook` against `hosts` (host, port) takes.
pub fn keys<'a>(runbook: &str, hosts: impl IntoIterator<Item = (&'a str, u16)>) -> Vec<Key> {
    let mut out = vec![Key {
        what: format!("runbook `{runbook}`"),
        file: format!("runbook-{}.lock", file_word(runbook)),
    }];
    for (host, port) in hosts {
        let id = format!("{host}:{port}");
        let key = Key {
            what: format!("host {id}"),
            file: format!(
                "host-{}-{port}-{}.lock",
                file_word(host),
                &crate::runbook::sha256_hex(id.as_bytes())[..8]
            ),
        };
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// A word safe in a file name: letters, digits, `.`, `-` and `_`, other characters as `_`;
/// the hash beside it keeps two hosts that differ only there apart.
fn file_word(s: &str) -> String {
    let w: String = s
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) || (c == '.' && !s.starts_with('.')) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if w.is_empty() { "_".to_owned() } else { w }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another run holds the lock of the {}: {}. Nothing was contacted. See it with `ps -p {pid} -o pid,lstart,args` and `tail -f {journal}`; wait for it to finish, or stop it (it prints its resume command)",
        key.what,
        owner.as_ref().map_or("its record is being written".to_owned(), |o| o.describe()),
        pid = owner.as_ref().map_or("PID".to_owned(), |o| o.pid.to_string()),
        journal = owner.as_ref().map_or("JOURNAL".to_owned(), |o| crate::template::shell_quote(&o.journal.display().to_string())),
    )]
    Held {
        key: Box<Key>,
        owner: Option<Box<Owner>>,
    },
    #[error("cannot take the lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A lock whose previous holder is gone without releasing it: that run did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    pub key: Key,
    pub owner: Owner,
}

impl TakenOver {
    /// The warning to show when the run starts.
    pub fn warning(&self) -> String {
        format!(
            "took over the lock of the {} left by pid {}, which is no longer running (started {}, journal {}): that run did not finish; `--resume` continues it",
            self.key.what,
            self.owner.pid,
            self.owner.started,
            self.owner.journal.display()
        )
    }
}

/// Locks held by this process; released (their records emptied) when dropped, and by the
/// kernel if the process dies first.
#[derive(Debug)]
pub struct Held {
    files: Vec<(File, PathBuf)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for (f, _) in &mut self.files {
            // Emptied while still locked: the next run finds a free lock with no record.
            let _ = f.set_len(0);
            let _ = f.sync_data();
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether process `pid` exists (it may belong to someone else).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn read_owner(f: &mut File) -> Option<Owner> {
    let mut text = String::new();
    f.rewind().ok()?;
    f.take(64 * 1024).read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// Take every lock of `keys` in `dir` for `me`, or none: `Held` names the first one another
/// run holds. Also returns the locks taken over from processes that are gone.
pub fn acquire(dir: &Path, keys: &[Key], me: &Owner) -> Result<(Held, Vec<TakenOver>), LockError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut held = Held { files: Vec::new() };
    let mut taken = Vec::new();
    for key in keys {
        let path = dir.join(&key.file);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        // SAFETY: flock on a file descriptor this function owns; non-blocking.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(&path)(e));
            }
            // `held` is dropped here: the locks already taken are released.
            return Err(LockError::Held {
                key: Box::new(key.clone()),
                owner: read_owner(&mut f).map(Box::new),
            });
        }
        if let Some(prev) = read_owner(&mut f).filter(|o| o.pid != me.pid) {
            taken.push(TakenOver {
                key: key.clone(),
                owner: prev,
            });
        }
        let record = serde_json::to_string(me).map_err(|e| io(&path)(e.into()))?;
        f.set_len(0)
            .and_then(|_| f.rewind())
            .and_then(|_| f.write_all(format!("{record}\n").as_bytes()))
            .and_then(|_| f.sync_data())
            .map_err(io(&path))?;
        held.files.push((f, path));
    }
    Ok((held, taken))
}

/// A run in progress that holds one of `keys`, read without taking or disturbing any lock
/// (for `rehearse` and `--dry-run`, which take none): a record whose process is alive.
pub fn in_progress(dir: &Path, keys: &[Key]) -> Option<(Key, Owner)> {
    keys.iter().find_map(|key| {
        let mut f = File::open(dir.join(&key.file)).ok()?;
        let owner = read_owner(&mut f)?;
        (alive(owner.pid) && owner.pid != std::process::id()).then(|| (key.clone(), owner))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pid: u32, journal: &str) -> Owner {
        Owner {
            pid,
            started: "2026-12-03T13:00:00Z".into(),
            journal: PathBuf::from(journal),
            runbook: "spark-power".into(),
        }
    }

    /// The pid of a process that has exited.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
        pid
    }

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys("spark-power", [("spark.local", 22)]);
        let me = Owner::me("spark-power", Path::new("/state/runs/a.jsonl"));
        let (held, taken) = acquire(dir.path(), &k, &me).unwrap();
        assert!(taken.is_empty());
        // flock locks belong to an open file: a second open, even in this process, conflicts.
        let other = owner(me.pid + 1, "/state/runs/b.jsonl");
        let e = acquire(dir.path(), &k, &other).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "another run holds the lock of the runbook `spark-power`: pid {}, started {}, journal /state/runs/a.jsonl. Nothing was contacted.",
                me.pid, me.started
            )),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("ps -p {} -o pid,lstart,args", me.pid)),
            "{msg}"
        );
        assert!(msg.contains("tail -f /state/runs/a.jsonl"), "{msg}");
        drop(held);
        let (_again, taken) = acquire(dir.path(), &k, &other).unwrap();
        assert!(taken.is_empty(), "a released lock is not stale: {taken:?}");
    }

    #[test]
    fn the_host_lock_is_shared_by_two_runbooks_on_one_host() {
        let dir = tempfile::tempdir().unwrap();
        let me = owner(std::process::id(), "/j/a.jsonl");
        let _a = acquire(dir.path(), &keys("a", [("spark.local", 22)]), &me).unwrap();
        let e = acquire(dir.path(), &keys("b", [("spark.local", 22)]), &me).unwrap_err();
        assert!(
            e.to_string().contains("lock of the host spark.local:22"),
            "{e}"
        );
        // The runbook lock of `b` was released again: a failed acquire holds nothing.
        let _c = acquire(dir.path(), &keys("b", [("other.local", 22)]), &me).unwrap();
        let _d = acquire(dir.path(), &keys("c", [("spark.local", 2222)]), &me).unwrap();
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_taken_over_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys("spark-power", []);
        let gone = owner(dead_pid(), "/state/runs/crashed.jsonl");
        std::fs::write(
            dir.path().join(&k[0].file),
            serde_json::to_string(&gone).unwrap(),
        )
        .unwrap();
        assert_eq!(in_progress(dir.path(), &k), None);
        let me = Owner::me("spark-power", Path::new("/j/new.jsonl"));
        let (_held, taken) = acquire(dir.path(), &k, &me).unwrap();
        assert_eq!(taken.len(), 1);
        let w = taken[0].warning();
        assert!(
            w.contains(&format!(
                "left by pid {}, which is no longer running (started 2026-12-03T13:00:00Z, journal /state/runs/crashed.jsonl)",
                gone.pid
            )),
            "{w}"
        );
        let record = std::fs::read_to_string(dir.path().join(&k[0].file)).unwrap();
        assert_eq!(serde_json::from_str::<Owner>(record.trim()).unwrap(), me);
    }

    #[test]
    fn a_run_in_progress_is_seen_without_taking_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys("spark-power", [("spark.local", 22)]);
        // A live process other than this one: the parent of the test harness.
        let parent = std::os::unix::process::parent_id();
        let theirs = owner(parent, "/j/theirs.jsonl");
        let (held, _) = acquire(dir.path(), &k, &theirs).unwrap();
        let (key, found) = in_progress(dir.path(), &k).unwrap();
        assert_eq!(
            (key.what.as_str(), found),
            ("runbook `spark-power`", theirs)
        );
        drop(held);
        assert_eq!(in_progress(dir.path(), &k), None);
        assert_eq!(in_progress(&dir.path().join("none"), &k), None);
    }

    #[test]
    fn a_garbled_record_is_neither_trusted_nor_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys("x", []);
        std::fs::write(dir.path().join(&k[0].file), "\u{0}{\"pid\":é").unwrap();
        assert_eq!(in_progress(dir.path(), &k), None);
        let (_held, taken) = acquire(dir.path(), &k, &owner(std::process::id(), "/j")).unwrap();
        assert!(taken.is_empty());
    }

    #[test]
    fn lock_file_names_are_safe_and_distinct() {
        let k = keys(
            "spark-power",
            [("../../etc", 22), ("a/b", 22), ("a_b", 22), ("a_b", 22)],
        );
        assert_eq!(k.len(), 4, "{k:?}");
        for key in &k {
            assert!(
                !key.file.contains('/') && !key.file.starts_with('.'),
                "{key:?}"
            );
        }
        assert_ne!(k[2].file, k[3].file);
    }
}
