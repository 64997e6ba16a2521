//! One run at a time: a lock per runbook and per target host, machine-wide.
//!
//! Each lock is a file held with `flock(2)`: the kernel releases it when the holder exits,
//! however it exits, so a crashed run never blocks the next one. The files live in one
//! directory for the whole machine, `/run/lock/recover` (or `$RECOVER_LOCK_DIR`), made at boot
//! by systemd-tmpfiles from `contrib/recover.tmpfiles` ([`TMPFILES_LINE`]: root's, group
//! `recover`, mode 1770), so that the service account and the operators who run `recover` (the
//! group's members) see each other's runs, and nobody else can make, hold or jam a lock file
//! in it. A directory any other account could write (world-writable, group-writable without
//! the sticky bit, owned by someone other than root or this account, a symbolic link) is
//! refused, naming it and what is expected: whoever wrote it could keep every run out. Where
//! it is missing and cannot be made safely, or this account cannot write it, the account's own
//! directory is used with a warning saying other accounts will not see the run.
//!
//! The file records who holds it (pid, start time, journal), mode 0660 in the directory's
//! group (the next holder may be another member), so a second run can say who is driving the
//! target; a record left by a process that is gone (the run crashed or was killed) is taken
//! over with a warning naming it. Whether a lock is held is always asked of the kernel (a
//! non-blocking `flock`), never guessed from a recorded pid that may have been reused. Lock
//! files are never removed, only emptied on release: removing a file that another process has
//! open would let two processes hold "the same" lock on two inodes. A lock file is opened
//! with `O_NOFOLLOW|O_NONBLOCK` and must be a plain file with one link: root's run never writes
//! its record through a planted link, and a planted FIFO never blocks `rehearse` or a dry run.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The machine-wide lock directory.
pub const SHARED_DIR: &str = "/run/lock/recover";

/// The systemd-tmpfiles line that makes [`SHARED_DIR`] at boot, as `contrib/recover.tmpfiles`
/// ships it.
pub const TMPFILES_LINE: &str = "d /run/lock/recover 1770 root recover -";

/// The group whose members share the machine-wide directory.
pub const GROUP: &str = "recover";

/// The variable that names another machine-wide lock directory (an absolute path).
pub const DIR_VAR: &str = "RECOVER_LOCK_DIR";

/// The machine-wide lock directory of this environment: `$RECOVER_LOCK_DIR` when it is an
/// absolute path, else [`SHARED_DIR`].
pub fn shared_dir() -> PathBuf {
    std::env::var_os(DIR_VAR)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(SHARED_DIR))
}

/// Where a run takes its locks, and what to tell the operator about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    pub path: PathBuf,
    /// The machine-wide directory (`path` too, unless it could not be used).
    pub shared: PathBuf,
    /// What the operator is told: `path` is this account's own directory, not the
    /// machine-wide one; or root narrowed an older recover's 1777 directory.
    pub warning: Option<String>,
    /// Set when the machine-wide directory is one other accounts could write: no lock is
    /// taken ([`Dir::acquire`] refuses), and why.
    pub refused: Option<String>,
}

impl Dir {
    /// The machine-wide directory `shared`, made if missing where that is safe (as root, or
    /// in a parent only this account writes: mode 1770); where it cannot be made or written,
    /// `own` (this account's) with a warning; refused when other accounts could write it.
    pub fn for_run(shared: &Path, own: PathBuf) -> Dir {
        match prepare_shared(shared) {
            Ok(note) => Dir {
                path: shared.to_path_buf(),
                shared: shared.to_path_buf(),
                warning: note,
                refused: None,
            },
            Err(Unusable::Unsafe(why)) => Dir {
                path: shared.to_path_buf(),
                shared: shared.to_path_buf(),
                warning: None,
                refused: Some(why),
            },
            Err(Unusable::Io(e)) => Dir {
                shared: shared.to_path_buf(),
                warning: Some(format!(
                    "the machine-wide lock directory {} cannot be used ({e}): this run's locks are in {}, which runs of other accounts (the automatic start, another operator) do not see. To share it: install contrib/recover.tmpfiles as /etc/tmpfiles.d/recover.conf (`{TMPFILES_LINE}`), `sudo systemd-tmpfiles --create recover.conf`, and add the accounts that run recover to the group `{GROUP}`",
                    shared.display(),
                    own.display(),
                )),
                path: own,
                refused: None,
            },
        }
    }
}

impl Dir {
    /// [`acquire`] in `path`; when that is this account's own directory, a run holding a lock
    /// in the machine-wide one (readable even where it is not writable) is still refused.
    pub fn acquire(&self, keys: &[Key], me: &Owner) -> Result<(Held, Vec<TakenOver>), LockError> {
        if let Some(why) = &self.refused {
            return Err(LockError::UnsafeDir {
                dir: self.shared.clone(),
                why: why.clone(),
            });
        }
        if self.path != self.shared {
            for key in keys {
                let path = self.shared.join(&key.file);
                if let Ok(Some(owner)) = holder(&path) {
                    return Err(LockError::Held {
                        key: Box::new(key.clone()),
                        owner: owner.map(Box::new),
                    });
                }
            }
        }
        acquire(&self.path, keys, me)
    }
}

/// Why the machine-wide directory is not used.
enum Unusable {
    /// Missing and not made, or not writable by this account: its own directory instead.
    Io(std::io::Error),
    /// Other accounts could write it: refused.
    Unsafe(String),
}

impl From<std::io::Error> for Unusable {
    fn from(e: std::io::Error) -> Self {
        Unusable::Io(e)
    }
}

/// This process's effective uid.
fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() }
}

/// Why directory `meta` is one another account could write, if it is: not a directory (a
/// symbolic link included), owned by someone other than root or this account, writable by
/// others, or by its group without the sticky bit (a member could remove another's lock).
fn unsafe_dir(meta: &std::fs::Metadata) -> Option<String> {
    let mode = meta.mode() & 0o7777;
    let what = if meta.file_type().is_symlink() {
        Some("a symbolic link".to_owned())
    } else if !meta.is_dir() {
        None
    } else if meta.uid() != 0 && meta.uid() != euid() {
        Some(format!("owned by uid {}", meta.uid()))
    } else if mode & 0o002 != 0 {
        Some(format!("writable by every account (mode {mode:04o})"))
    } else if mode & 0o020 != 0 && mode & 0o1000 == 0 {
        Some(format!(
            "writable by its group without the sticky bit (mode {mode:04o})"
        ))
    } else {
        None
    };
    what.map(|what| {
        format!(
            "it is {what}; expected a directory owned by root (or this account), writable by no other account but its group's members, with the sticky bit: as systemd-tmpfiles makes it from contrib/recover.tmpfiles (`{TMPFILES_LINE}`)"
        )
    })
}

/// The gid of group `name`, if it exists.
fn group_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `group` is plain C data; all zeroes is a valid value for getgrnam_r to fill.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r(3) with a NUL-terminated name and a buffer this function owns; the
    // result points into `grp` and `buf`, read before they go.
    let r =
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some(grp.gr_gid)
}

/// As root, a root-owned directory of mode 1777 (what an older recover made of the
/// machine-wide one) is narrowed to 1770 in the group [`GROUP`], its root-owned lock files to
/// 0660: it takes write access away from other accounts, nothing more. Says so.
fn narrow_legacy(dir: &Path, meta: &std::fs::Metadata) -> std::io::Result<Option<String>> {
    if !(euid() == 0 && meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o7777 == 0o1777) {
        return Ok(None);
    }
    if let Some(gid) = group_id(GROUP) {
        let _ = std::os::unix::fs::chown(dir, Some(0), Some(gid));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1770))?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if let Ok(m) = std::fs::symlink_metadata(entry.path())
            && m.is_file()
            && m.uid() == 0
        {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o660));
        }
    }
    Ok(Some(format!(
        "the machine-wide lock directory {} was every account's (mode 1777, as an older recover made it): narrowed to 1770, as `{TMPFILES_LINE}` makes it",
        dir.display()
    )))
}

/// Makes `dir` (mode 1770; as root, in the group [`GROUP`] when it exists) if it does not
/// exist and that is safe: as root, or in a parent no other account can write. Under a
/// temporary name, then renamed, so that it never exists with other permissions. Then checks
/// that no other account could write it, and that this account can make files in it.
fn prepare_shared(dir: &Path) -> Result<Option<String>, Unusable> {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::symlink_metadata(dir).is_err() {
        let name = dir.file_name().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no directory name")
        })?;
        let parent = dir.parent().unwrap_or(Path::new("/"));
        let private = std::fs::symlink_metadata(parent)
            .is_ok_and(|m| m.is_dir() && unsafe_dir(&m).is_none() && m.mode() & 0o022 == 0);
        if euid() != 0 && !private {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "it does not exist, and an account other than root does not make it where other accounts could make it first",
            )
            .into());
        }
        let tmp = dir.with_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&tmp)?;
        let group = if euid() == 0 { group_id(GROUP) } else { None };
        let made = match group {
            Some(gid) => std::os::unix::fs::chown(&tmp, Some(0), Some(gid)),
            None => Ok(()),
        }
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1770)))
        .and_then(|_| std::fs::rename(&tmp, dir));
        if made.is_err() {
            // Another process made it first, or the rename is not allowed: check what is there.
            let _ = std::fs::remove_dir(&tmp);
        }
    }
    let mut meta = std::fs::symlink_metadata(dir)?;
    let mut note = None;
    // An older recover made the machine-wide directory 1777 itself: root narrows it (and only
    // that path: never a 1777 directory such as /tmp given in RECOVER_LOCK_DIR).
    if dir == Path::new(SHARED_DIR) {
        note = narrow_legacy(dir, &meta)?;
        meta = std::fs::symlink_metadata(dir)?;
    }
    if let Some(why) = unsafe_dir(&meta) {
        return Err(Unusable::Unsafe(why));
    }
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a directory").into());
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: access(2) on a NUL-terminated path this function owns.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(note)
}

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
    #[error(
        "refusing the machine-wide lock directory {}: {why}. Any account that can write it could hold a lock and keep every run out. Nothing was contacted. Remove it (`sudo rm -r {}`) and let systemd-tmpfiles make it (`sudo systemd-tmpfiles --create recover.conf`)",
        dir.display(),
        crate::template::shell_quote(&dir.display().to_string())
    )]
    UnsafeDir { dir: PathBuf, why: String },
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

/// The record in a lock file, if it is one: a record with a control character in it (the file
/// is writable by every account) is not shown to anyone.
fn read_owner(f: &mut File) -> Option<Owner> {
    let mut text = String::new();
    f.rewind().ok()?;
    f.take(64 * 1024).read_to_string(&mut text).ok()?;
    let owner: Owner = serde_json::from_str(text.trim()).ok()?;
    let plain = |s: &str| !s.chars().any(char::is_control);
    (plain(&owner.started) && plain(&owner.runbook) && plain(&owner.journal.to_string_lossy()))
        .then_some(owner)
}

/// How often, and how far apart, a lock found held is asked for again before it counts as
/// held: `in_progress` holds a lock for a moment to test it.
const TRIES: u32 = 5;
const PAUSE: Duration = Duration::from_millis(20);

/// `flock(fd, op | LOCK_NB)`: Ok(true) when taken, Ok(false) when another holds it.
fn try_flock(f: &File, op: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock on a file descriptor the caller owns; non-blocking.
    if unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Opens lock file `path`, never through a symbolic link and never waiting (`O_NONBLOCK`: a
/// FIFO opens at once, and is refused), and checks it is a plain file with one link. `write`:
/// read-write, made (mode 0660, in the directory's group) if missing; else read-only.
fn open_lock(path: &Path, write: bool) -> std::io::Result<File> {
    let open = |create: bool| {
        let mut o = OpenOptions::new();
        o.read(true)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
        if create {
            // Exclusive: an existing file is opened without O_CREAT, which a sticky directory
            // refuses for another account's file when `fs.protected_regular` is set.
            o.create_new(true).mode(0o660);
        }
        o.open(path)
    };
    let mut tries = 0;
    let f = loop {
        tries += 1;
        match open(false) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && write && tries < 3 => {
                match open(true) {
                    Ok(f) => {
                        // The directory's other members may hold it next: its group, and
                        // not narrowed by this account's umask.
                        let dir_gid = path
                            .parent()
                            .and_then(|d| std::fs::metadata(d).ok())
                            .map(|m| m.gid());
                        if let Some(gid) =
                            dir_gid.filter(|g| f.metadata().is_ok_and(|m| m.gid() != *g))
                        {
                            let _ = std::os::unix::fs::fchown(&f, None, Some(gid));
                        }
                        f.set_permissions(std::fs::Permissions::from_mode(0o660))?;
                        break f;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            other => break other?,
        }
    };
    let meta = f.metadata()?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(std::io::Error::other(
            "not a plain lock file (a FIFO, a directory, a device or a hard link): remove it",
        ));
    }
    // A file of this account left readable by every account (mode 0666, an older recover's):
    // narrowed to its group.
    if write && meta.uid() == euid() && meta.mode() & 0o007 != 0 {
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o660));
    }
    Ok(f)
}

/// Take every lock of `keys` in `dir` for `me`, or none: `Held` names the first one another
/// run holds. Also returns the locks taken over from processes that are gone.
pub fn acquire(dir: &Path, keys: &[Key], me: &Owner) -> Result<(Held, Vec<TakenOver>), LockError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut held = Held { files: Vec::new() };
    let mut taken = Vec::new();
    for key in keys {
        let path = dir.join(&key.file);
        let mut f = match open_lock(&path, true) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                // Another account's file this one cannot write: held, or not usable by us.
                if let Some(owner) = holder(&path).map_err(io(&path))? {
                    return Err(LockError::Held {
                        key: Box::new(key.clone()),
                        owner: owner.map(Box::new),
                    });
                }
                return Err(io(&path)(std::io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; it is not writable by this account: its owner or root can remove it"
                    ),
                )));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let mut got = false;
        for i in 0..TRIES {
            if i > 0 {
                std::thread::sleep(PAUSE);
            }
            got = try_flock(&f, libc::LOCK_EX).map_err(io(&path))?;
            if got {
                break;
            }
        }
        if !got {
            // `held` is dropped here: the locks already taken are released.
            return Err(LockError::Held {
                key: Box::new(key.clone()),
                owner: read_owner(&mut f).filter(|o| alive(o.pid)).map(Box::new),
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

/// Whether lock file `path` is held, asked of the kernel through a read-only descriptor (any
/// account can): `Some(record)` when held (the record when one is readable and its process
/// alive), `None` when free or missing.
fn holder(path: &Path) -> std::io::Result<Option<Option<Owner>>> {
    let mut f = match open_lock(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Shared: two testers never conflict; closing the file releases it at once.
    if try_flock(&f, libc::LOCK_SH)? {
        return Ok(None);
    }
    Ok(Some(read_owner(&mut f).filter(|o| alive(o.pid))))
}

/// A run in progress that holds one of `keys` in one of `dirs`, told by the kernel (the lock
/// is held) without disturbing it, for `rehearse` and `--dry-run`, which take none; with its
/// record when one is readable. A lock this process holds is not reported.
pub fn in_progress(dirs: &[PathBuf], keys: &[Key]) -> Option<(Key, Option<Owner>)> {
    dirs.iter().find_map(|dir| {
        keys.iter().find_map(|key| {
            let owner = holder(&dir.join(&key.file)).ok()??;
            let mine = owner.as_ref().is_some_and(|o| o.pid == std::process::id());
            (!mine).then(|| (key.clone(), owner))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `f` again until it succeeds, a few times over two seconds at most: after a drop, another
    /// test of this process may be between fork and exec, its child still holding a copy of the
    /// lock's descriptor until the exec closes it (close-on-exec).
    fn once_released<T, E>(mut f: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        let mut r = f();
        for _ in 0..100 {
            if r.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            r = f();
        }
        r
    }

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
        let (_again, taken) = once_released(|| acquire(dir.path(), &k, &other)).unwrap();
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
        assert_eq!(in_progress(&[dir.path().to_path_buf()], &k), None);
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
        let dirs = [dir.path().join("none"), dir.path().to_path_buf()];
        let (key, found) = in_progress(&dirs, &k).unwrap();
        assert_eq!(
            (key.what.as_str(), found),
            ("runbook `spark-power`", Some(theirs))
        );
        drop(held);
        once_released(|| match in_progress(&dirs, &k) {
            None => Ok(()),
            Some((key, _)) => Err(key.what.clone()),
        })
        .unwrap();
        // Testing it took nothing: the lock is free for a run.
        let _next = acquire(dir.path(), &k, &owner(std::process::id(), "/j")).unwrap();
    }

    #[test]
    fn a_garbled_record_is_neither_trusted_nor_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys("x", []);
        std::fs::write(dir.path().join(&k[0].file), "\u{0}{\"pid\":é").unwrap();
        assert_eq!(in_progress(&[dir.path().to_path_buf()], &k), None);
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

    #[test]
    fn a_live_pid_in_a_free_lock_is_not_a_run_in_progress() {
        // The pid may have been reused by any process: only the kernel's lock says a run holds it.
        let dir = tempfile::tempdir().unwrap();
        let k = keys("spark-power", []);
        let parent = owner(std::os::unix::process::parent_id(), "/j/old.jsonl");
        std::fs::write(
            dir.path().join(&k[0].file),
            serde_json::to_string(&parent).unwrap(),
        )
        .unwrap();
        assert!(alive(parent.pid));
        assert_eq!(in_progress(&[dir.path().to_path_buf()], &k), None);
        // And a held lock whose record is not written yet is still a run in progress.
        let file = File::open(dir.path().join(&k[0].file)).unwrap();
        std::fs::write(dir.path().join(&k[0].file), "").unwrap();
        assert!(try_flock(&file, libc::LOCK_EX).unwrap());
        let (key, found) = in_progress(&[dir.path().to_path_buf()], &k).unwrap();
        assert_eq!((key, found), (k[0].clone(), None));
    }

    #[test]
    fn a_record_with_control_characters_is_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys("x", []);
        let mut bad = owner(std::os::unix::process::parent_id(), "/j/\u{1b}[2Jx.jsonl");
        bad.runbook = "x".into();
        std::fs::write(
            dir.path().join(&k[0].file),
            serde_json::to_string(&bad).unwrap(),
        )
        .unwrap();
        let file = File::open(dir.path().join(&k[0].file)).unwrap();
        assert!(try_flock(&file, libc::LOCK_EX).unwrap());
        assert_eq!(
            in_progress(&[dir.path().to_path_buf()], &k),
            Some((k[0].clone(), None))
        );
    }

    #[test]
    fn the_shared_directory_is_made_1770_and_lock_files_0660_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("recover");
        // SAFETY: umask(2) cannot fail; restored below (this test's files only).
        let old = unsafe { libc::umask(0o077) };
        let d = Dir::for_run(&shared, dir.path().join("own"));
        assert_eq!(
            d,
            Dir {
                path: shared.clone(),
                shared: shared.clone(),
                warning: None,
                refused: None,
            }
        );
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1770, "{mode:o}");
        // Made again: the existing directory is used as it is.
        assert_eq!(Dir::for_run(&shared, dir.path().join("own")).warning, None);
        let k = keys("spark-power", []);
        let _held = acquire(&shared, &k, &owner(std::process::id(), "/j")).unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let meta = std::fs::metadata(shared.join(&k[0].file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), std::fs::metadata(&shared).unwrap().gid());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("recover")]);
    }

    /// `Dir::for_run` of `shared` refuses it, naming it and what is expected, and takes no lock.
    fn refused(shared: &Path, what: &str) {
        let d = Dir::for_run(shared, shared.with_file_name("own"));
        let why = d
            .refused
            .clone()
            .unwrap_or_else(|| panic!("{what}: not refused: {d:?}"));
        assert!(why.contains(what), "{why}");
        let k = keys("spark-power", []);
        let e = d.acquire(&k, &owner(std::process::id(), "/j")).unwrap_err();
        let msg = e.to_string();
        for s in [
            format!(
                "refusing the machine-wide lock directory {}: it is {what}",
                shared.display()
            ),
            "expected a directory owned by root (or this account)".to_owned(),
            TMPFILES_LINE.to_owned(),
            "Nothing was contacted".to_owned(),
        ] {
            assert!(msg.contains(&s), "no `{s}` in: {msg}");
        }
        assert!(
            !shared.join(&k[0].file).exists(),
            "{what}: a lock file was made"
        );
        assert!(!shared.with_file_name("own").exists(), "{what}: fell back");
    }

    #[test]
    fn root_narrows_an_older_recovers_1777_directory_and_nothing_else() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("recover");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let f = d.join("runbook-x.lock");
        std::fs::write(&f, "").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let meta = std::fs::symlink_metadata(&d).unwrap();
        let note = narrow_legacy(&d, &meta).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        if euid() != 0 {
            assert_eq!((note, mode(&d)), (None, 0o1777), "only root narrows");
            return;
        }
        assert!(note.unwrap().contains("narrowed to 1770"));
        assert_eq!((mode(&d), mode(&f)), (0o1770, 0o660));
        assert!(unsafe_dir(&std::fs::symlink_metadata(&d).unwrap()).is_none());
        // A 1777 directory that is not the machine-wide one (say /tmp, given in
        // RECOVER_LOCK_DIR) is refused, never narrowed.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            Dir::for_run(&other, dir.path().join("own"))
                .refused
                .is_some()
        );
        assert_eq!(mode(&other), 0o1777);
    }

    #[test]
    fn a_directory_other_accounts_could_write_is_refused_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for (name, mode, what) in [
            ("world", 0o1777, "writable by every account (mode 1777)"),
            ("open", 0o0777, "writable by every account (mode 0777)"),
            (
                "group",
                0o0770,
                "writable by its group without the sticky bit (mode 0770)",
            ),
        ] {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            refused(&d, what);
        }
        // A link to a directory root owns and nobody else writes is still a link.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        refused(&link, "a symbolic link");
        // Another account's directory, mode 1770 or not (root can make one to test it).
        if euid() == 0 {
            let theirs = dir.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o1770)).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            refused(&theirs, "owned by uid 65534");
        } else {
            eprintln!("skipped: another account's directory needs root to make");
        }
        // Stricter than 1770 is fine.
        let strict = dir.path().join("strict");
        std::fs::create_dir(&strict).unwrap();
        std::fs::set_permissions(&strict, std::fs::Permissions::from_mode(0o0700)).unwrap();
        assert_eq!(Dir::for_run(&strict, dir.path().join("own")).refused, None);
    }

    #[test]
    fn a_missing_directory_where_others_could_make_it_first_is_made_only_by_root() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("tmp");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let shared = open.join("recover");
        let d = Dir::for_run(&shared, dir.path().join("own"));
        if euid() == 0 {
            assert_eq!(d.path, shared, "{d:?}");
            let mode = std::fs::metadata(&shared).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o1770, "{mode:o}");
        } else {
            assert_eq!(d.path, dir.path().join("own"), "{d:?}");
            assert!(!shared.exists());
            assert!(d.warning.unwrap().contains("does not exist"));
        }
    }

    #[test]
    fn a_planted_fifo_is_refused_at_once_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys("spark-power", []);
        let fifo = dir.path().join(&k[0].file);
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path in this test's directory.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        let path = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let seen = in_progress(std::slice::from_ref(&path), &k);
            let taken = acquire(&path, &k, &owner(std::process::id(), "/j")).map(|_| ());
            let _ = tx.send((seen, taken.map_err(|e| e.to_string())));
        });
        let (seen, taken) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("opening a FIFO lock file blocked");
        assert_eq!(seen, None);
        let e = taken.unwrap_err();
        assert!(e.contains("not a plain lock file (a FIFO"), "{e}");
    }

    #[test]
    fn the_shipped_tmpfiles_line_makes_a_directory_recover_accepts() {
        let conf = include_str!("../contrib/recover.tmpfiles");
        let lines: Vec<&str> = conf
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(lines, vec![TMPFILES_LINE]);
        let fields: Vec<&str> = TMPFILES_LINE.split_whitespace().collect();
        assert_eq!(fields[..5], ["d", SHARED_DIR, "1770", "root", GROUP]);
        // The real systemd-tmpfiles, as root, with the path moved and the group one that
        // exists here (nogroup standing in for `recover`).
        let tool = Path::new("/usr/bin/systemd-tmpfiles");
        if euid() != 0 || !tool.exists() {
            eprintln!("skipped: systemd-tmpfiles as root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("recover");
        let line = TMPFILES_LINE
            .replace(SHARED_DIR, &shared.display().to_string())
            .replace(" recover -", " 65534 -");
        std::fs::write(dir.path().join("recover.conf"), format!("{line}\n")).unwrap();
        let st = std::process::Command::new(tool)
            .arg("--create")
            .arg(dir.path().join("recover.conf"))
            .status()
            .unwrap();
        assert!(st.success());
        let d = Dir::for_run(&shared, dir.path().join("own"));
        assert_eq!((&d.refused, &d.warning), (&None, &None));
        let k = keys("spark-power", []);
        let _held = d.acquire(&k, &owner(std::process::id(), "/j")).unwrap();
        let meta = std::fs::metadata(shared.join(&k[0].file)).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 65534));
    }

    #[test]
    fn without_the_shared_directory_a_run_uses_its_own_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("no-such-parent/recover");
        let own = dir.path().join("own");
        let d = Dir::for_run(&shared, own.clone());
        assert_eq!(d.path, own);
        let w = d.warning.expect("a warning");
        assert!(
            w.starts_with(&format!(
                "the machine-wide lock directory {} cannot be used (",
                shared.display()
            )),
            "{w}"
        );
        assert!(
            w.contains(
                "which runs of other accounts (the automatic start, another operator) do not see"
            ),
            "{w}"
        );
        assert!(w.contains(TMPFILES_LINE), "{w}");
        // A file where the directory should be is not a directory.
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(
            Dir::for_run(&file, own)
                .warning
                .unwrap()
                .contains("not a directory")
        );
    }

    #[test]
    fn a_planted_link_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys("spark-power", []);
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let locks = dir.path().join("locks");
        std::fs::create_dir(&locks).unwrap();
        let me = owner(std::process::id(), "/j");
        std::os::unix::fs::symlink(&victim, locks.join(&k[0].file)).unwrap();
        assert!(acquire(&locks, &k, &me).is_err());
        std::fs::remove_file(locks.join(&k[0].file)).unwrap();
        std::fs::hard_link(&victim, locks.join(&k[0].file)).unwrap();
        let e = acquire(&locks, &k, &me).unwrap_err();
        assert!(e.to_string().contains("not a plain lock file"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    #[test]
    fn a_run_in_its_own_directory_still_sees_a_holder_in_the_shared_one() {
        // The shared directory exists but this account cannot write it: it falls back to its
        // own, and must not start beside a run (root's automatic start) holding the shared lock.
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let k = keys("spark-power", [("spark.local", 22)]);
        let root = owner(std::os::unix::process::parent_id(), "/root/j.jsonl");
        let (held, _) = acquire(&shared, &k, &root).unwrap();
        let fallback = Dir {
            path: dir.path().join("own"),
            shared: shared.clone(),
            warning: Some("own".into()),
            refused: None,
        };
        let me = owner(std::process::id(), "/j");
        let e = fallback.acquire(&k, &me).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("pid {}, started", root.pid)),
            "{e}"
        );
        drop(held);
        let (_mine, _) = once_released(|| fallback.acquire(&k, &me)).unwrap();
        assert!(dir.path().join("own").join(&k[0].file).exists());
    }
}
