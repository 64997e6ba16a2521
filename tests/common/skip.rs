//! Saying what a passing test could not do: a tool the machine lacks is a visible skip, and a
//! broken setup in CI.
//!
//! The test harness captures `print!` and `eprint!` of passing tests, so these lines go to the
//! real stderr ([`say`]): `cargo test` shows them among its `test … ok` lines.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A line on the real stderr, shown even when the test passes.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The running test's name (libtest names each test's thread after it).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned()
}

/// Says the running test is skipped, and why, on the real stderr.
pub fn skipped(why: &str) {
    say(&format!("SKIPPED: {}: {why}", test_name()));
}

/// A skip for a reason other than a missing tool (not root, no apt candidate, ...): visible
/// like [`skipped`], and with `CI` set a failure, since CI runs as root on a machine that
/// `scripts/setup` prepared.
pub fn skipped_unless_ci(why: &str) {
    assert!(
        !in_ci(),
        "{}: {why}; CI is set, where this is a broken setup, not a skip",
        test_name()
    );
    skipped(why);
}

/// Whether a `CI` variable is set: there, `scripts/setup` has installed every tool.
fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The first of `names` that is installed: a path with a `/` as given, a bare name on `PATH`.
pub fn find_tool(names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|name| {
        if name.contains('/') {
            return Path::new(name).is_file().then(|| PathBuf::from(name));
        }
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The installed tool among `names` (alternatives: `["chromium", "chromium-browser"]`).
/// When none is, says `SKIPPED: <test>: needs <tool> …` and returns None, so the test returns
/// early; with `CI` set it panics instead: a skip in CI is a broken setup.
///
/// ```ignore
/// let Some(chromium) = require_tool(&["chromium", "chromium-browser"]) else { return };
/// ```
pub fn require_tool(names: &[&str]) -> Option<PathBuf> {
    let found = find_tool(names);
    if found.is_none() {
        let why = format!(
            "needs {} (install it with scripts/setup)",
            names.join(" or ")
        );
        assert!(
            !in_ci(),
            "{}: {why}; CI is set, where a missing tool is a broken setup, not a skip",
            test_name()
        );
        skipped(&why);
    }
    found
}

/// Whether this process runs as root. When it does not, says `SKIPPED: <test>: needs root …`
/// and returns false, so the test returns early; with `CI` set (CI runs as root) it panics.
pub fn require_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skipped_unless_ci("needs root (to run a second account's `recover` with setpriv)");
    }
    root
}
