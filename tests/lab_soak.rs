//! The soak of `benches/soak` in the lab suite (issue 24, item 5): two cycles with a fixed seed,
//! each a recovery of `runbooks/lab.yaml` cut by a real power cut of the lab VM at a drawn
//! moment, then `--resume` as an operator would; every cycle must pass (exit 0, all seven units
//! active in order on the final boot, the filesystem checks on the final boot, every journal
//! parses and renders, exactly one "we are back" post). The long run (30+ cycles) is the same
//! script by hand: `benches/soak --cycles 30`.
//!
//! Skipped like the other lab suites: `RECOVER_SKIP_LAB=1`, or no `qemu-system-x86_64` (with
//! `CI` set, that fails it instead). `RECOVER_SOAK_CYCLES` and `RECOVER_SOAK_SEED` override 2 and 7.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{require_tool, run_bounded, say, skipped};

#[test]
fn two_cycles_of_the_power_cut_soak_pass() {
    if std::env::var_os("RECOVER_SKIP_LAB").is_some_and(|v| v == "1") {
        skipped("RECOVER_SKIP_LAB=1");
        return;
    }
    if require_tool(&["qemu-system-x86_64"]).is_none() || require_tool(&["python3"]).is_none() {
        return;
    }
    let cycles = std::env::var("RECOVER_SOAK_CYCLES").unwrap_or_else(|_| "2".into());
    let seed = std::env::var("RECOVER_SOAK_SEED").unwrap_or_else(|_| "7".into());
    let mut c = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/soak"));
    c.args(["--cycles", &cycles, "--seed", &seed])
        .env("RECOVER_SOAK_BIN", env!("CARGO_BIN_EXE_recover"))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null());
    let out = run_bounded(c, Duration::from_secs(45 * 60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stdout.lines() {
        say(&format!("soak: {line}"));
    }
    assert!(
        out.status.success(),
        "the soak failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let want = format!("{cycles} passed, 0 failed");
    assert!(
        stdout.lines().any(|l| l.trim() == want),
        "no `{want}` line:\n{stdout}\n{stderr}"
    );
}
