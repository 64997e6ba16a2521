//! Files that hold what the box said (dmesg, the journal's tails, tailscale's output) and what
//! was done to it: journals, rehearsal and drill records, reports. Private to this account
//! whatever the umask: directories 0700, files 0600.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the directories made.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files written.
pub const FILE_MODE: u32 = 0o600;

/// `dir` and its missing parents, made 0700 (a directory that exists is left as it is: it
/// may be the operator's own, named with `--journal`).
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Options that make a file 0600 (the umask can only take bits away).
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// An open file set to 0600 when it is not (it existed before, or the umask was odd).
pub fn narrow(f: &File) -> std::io::Result<()> {
    let meta = f.metadata()?;
    if meta.mode() & 0o777 != FILE_MODE {
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

/// `std::fs::write`, the file 0600.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    let mut f = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    narrow(&f)?;
    f.write_all(bytes.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_made_0700_and_files_0600_even_when_they_existed_open() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_dir_all(&d).unwrap();
        for p in [dir.path().join("a"), d.clone()] {
            assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
        }
        let f = d.join("f");
        std::fs::write(&f, "old").unwrap();
        std::fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        write(&f, "new").unwrap();
        let meta = std::fs::metadata(&f).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
    }
}
