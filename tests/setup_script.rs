//! `scripts/setup` on machine states that are not this one's (issue 11, item 1).
//!
//! Two dpkg states are built from this machine's `/var/lib/dpkg/status`: (a) with every `qemu-*`
//! package removed, a machine without any qemu; (b) the same plus the newer backports
//! `qemu-utils` (1:10.x, `Breaks: qemu-system-common (<< 1:8.0+dfsg-5~)`) that machines of the
//! kind CI runs on ship with. `scripts/setup --simulate` (apt-get -s, changes nothing) must
//! succeed on both and install qemu-system-x86 and qemu-utils from one QEMU release; on (b) the
//! unpinned `apt-get install qemu-system-x86 qemu-utils` must fail, as it did before the fix.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BACKPORTS_QEMU_UTILS: &str = "fixtures/setup/qemu-utils-backports.status";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why the test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    for tool in ["apt-get", "apt-cache", "dpkg-query"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is missing (not a Debian machine)"));
        }
    }
    if !Path::new("/var/lib/dpkg/status").is_file() {
        return Some("/var/lib/dpkg/status is missing".into());
    }
    let policy = Command::new("apt-cache")
        .args(["policy", "qemu-system-x86"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&policy.stdout);
    if !text.contains("Candidate:") || text.contains("Candidate: (none)") {
        return Some("apt has no candidate for qemu-system-x86 (run apt-get update)".into());
    }
    None
}

/// The dpkg status file's stanzas (paragraphs separated by blank lines) minus every `qemu-*`
/// package.
fn status_without_qemu() -> String {
    let status = std::fs::read_to_string("/var/lib/dpkg/status").expect("read dpkg status");
    let mut out = String::new();
    for stanza in status.split("\n\n") {
        let stanza = stanza.trim_matches('\n');
        if stanza.is_empty() {
            continue;
        }
        let package = stanza
            .lines()
            .find_map(|l| l.strip_prefix("Package: "))
            .unwrap_or("");
        if package.starts_with("qemu-") {
            continue;
        }
        out.push_str(stanza);
        out.push_str("\n\n");
    }
    out
}

/// A dpkg admin directory whose `status` is `status`.
fn admindir(status: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("status"), status).expect("write status");
    dir
}

fn simulate_setup(admindir: &Path) -> Output {
    Command::new(repo().join("scripts/setup"))
        .arg("--simulate")
        .env("SETUP_ADMINDIR", admindir)
        .output()
        .expect("run scripts/setup")
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The version apt would install of `package`: its `Inst PACKAGE [OLD] (VERSION ...)` line.
fn installed_by_apt(stdout: &str, package: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let rest = line.strip_prefix("Inst ")?.strip_prefix(package)?;
        let rest = rest.strip_prefix(' ')?;
        let (_, after) = rest.split_once('(')?;
        after.split_whitespace().next().map(str::to_owned)
    })
}

/// Asserts that setup succeeds on this state and installs the qemu pair at one version; returns it.
fn assert_setup_installs_matching_qemu(state: &str, dir: &Path) -> String {
    let out = simulate_setup(dir);
    assert!(
        out.status.success(),
        "scripts/setup --simulate failed on {state}:\n{}",
        show(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let system = installed_by_apt(&stdout, "qemu-system-x86");
    let utils = installed_by_apt(&stdout, "qemu-utils");
    let (Some(system), Some(utils)) = (system, utils) else {
        panic!(
            "on {state}, apt would not install both qemu-system-x86 and qemu-utils:\n{}",
            show(&out)
        );
    };
    assert_eq!(
        system,
        utils,
        "on {state}, qemu-system-x86 and qemu-utils come from different releases:\n{}",
        show(&out)
    );
    system
}

#[test]
fn setup_installs_one_qemu_release_with_or_without_a_backports_qemu_utils() {
    if let Some(why) = missing_tools() {
        common::skip::skipped_unless_ci(&why);
        return;
    }
    let base = status_without_qemu();
    assert!(
        base.contains("Package: dpkg\n"),
        "the synthetic state keeps the rest of the machine's packages"
    );
    assert!(!base.contains("Package: qemu-"));

    // (a) a machine without any qemu.
    let no_qemu = admindir(&base);
    let version_a = assert_setup_installs_matching_qemu("a machine without qemu", no_qemu.path());

    // (b) the same plus the newer backports qemu-utils.
    let stanza =
        std::fs::read_to_string(repo().join(BACKPORTS_QEMU_UTILS)).expect("read the fixture");
    let backports_version = stanza
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .expect("the fixture has a Version")
        .to_owned();
    assert!(stanza.contains("Breaks: qemu-system-common (<< 1:8.0"));
    let with_backports = admindir(&format!("{base}{}\n", stanza.trim_end()));
    let version_b = assert_setup_installs_matching_qemu(
        "a machine with the backports qemu-utils",
        with_backports.path(),
    );
    assert_eq!(version_a, version_b, "both states get the same release");
    assert_ne!(
        version_b, backports_version,
        "qemu-utils is downgraded to qemu-system-x86's release"
    );

    // The problem is real: the unpinned install is refused on state (b).
    let status_opt = format!(
        "Dir::State::status={}",
        with_backports.path().join("status").display()
    );
    let unpinned = Command::new("apt-get")
        .args(["-o", &status_opt, "-s", "install"])
        .args(["qemu-system-x86", "qemu-utils"])
        .output()
        .expect("run apt-get");
    assert!(
        !unpinned.status.success(),
        "the unpinned install should fail on the backports state:\n{}",
        show(&unpinned)
    );
    let stderr = String::from_utf8_lossy(&unpinned.stderr);
    let stdout = String::from_utf8_lossy(&unpinned.stdout);
    assert!(
        stderr.contains("held broken packages"),
        "apt refuses for the Breaks, not another reason:\n{}",
        show(&unpinned)
    );
    assert!(stdout.contains("Breaks: qemu-system-common"));
}
