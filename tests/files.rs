//! Files (issue 20): what recover writes is private whatever the umask (directories 0700,
//! files 0600), and a hostile journal cannot make `recover report` read outside the state
//! directory. The real binary, no target needed (`local:` steps, a journal written here).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{clean_command, only_journal, p, run_bounded, text, write_runbook};

const LIMIT: Duration = Duration::from_secs(60);

/// `recover ARGS` under `umask`, in `state`'s environment.
fn recover_with_umask(state: &Path, umask: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = clean_command("sh", state);
    cmd.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_recover"))
        .args(args);
    run_bounded(cmd, LIMIT)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

#[test]
fn journals_and_reports_are_private_whatever_the_umask() {
    for umask in ["000", "022"] {
        let dir = tempfile::tempdir().unwrap();
        let rb = write_runbook(
            dir.path(),
            "private",
            "  lab: { host: 127.0.0.1, port: 9 }\n",
            "",
            "      - local: echo the box said dmesg and tailscale\n",
        );
        let out = recover_with_umask(dir.path(), umask, &["run", "--yes", p(&rb)]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let state = dir.path().join("recover");
        let journal = only_journal(dir.path());
        for d in [state.clone(), state.join("runs")] {
            assert_eq!(mode(&d), 0o700, "umask {umask}: {}", d.display());
        }
        assert_eq!(mode(&journal), 0o600, "umask {umask}: the journal");

        let report = dir.path().join("report.md");
        let out = recover_with_umask(
            dir.path(),
            umask,
            &["report", p(&journal), "-o", p(&report)],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(mode(&report), 0o600, "umask {umask}: the report");
    }
}

#[test]
fn a_journal_naming_the_runbook_dot_dot_cannot_make_report_read_outside_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    // Where `rehearsals/../../x.json` leads from the state directory ($XDG_STATE_HOME/recover):
    // a FIFO, which an open for reading would wait on for ever.
    fs::create_dir_all(dir.path().join("recover/rehearsals")).unwrap();
    let bait = dir.path().join("x.json");
    let c = std::ffi::CString::new(bait.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path in this test's directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let journal = dir.path().join("hostile.jsonl");
    fs::write(
        &journal,
        concat!(
            r#"{"event":"run_started","run_id":"ab12cd34","mode":"run","runbook":"../../x","path":"x.yaml","sha256":"00","budget":600.0,"steps":1,"phases":1,"resumed_from":null,"first_step":1,"targets":[],"ts":"2026-12-03T13:00:00.000Z"}"#,
            "\n",
            r#"{"event":"run_finished","outcome":"success","exit_code":0,"at":1.0,"budget":600.0,"failed_step":null,"message":"ok","resume":null,"ts":"2026-12-03T13:00:01.000Z"}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = common::recover_in(dir.path())
        .args(["report", p(&journal)])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some(),
        "report hung: it opened {} through the journal's runbook name",
        bait.display()
    );
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// A journal of `steps` gate steps with `probes` probes each (steps × (probes + 2) + 5
/// events), as a run of a long runbook writes it.
fn big_journal(path: &Path, steps: usize, probes: usize) -> usize {
    use std::fmt::Write as _;
    let ts = "2026-12-03T13:00:00.000Z";
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"{{"event":"run_started","run_id":"ab12cd34","mode":"run","runbook":"big","path":"big.yaml","sha256":"00","budget":360000.0,"steps":{steps},"phases":1,"resumed_from":null,"first_step":1,"targets":[],"ts":"{ts}"}}"#
    );
    let _ = writeln!(
        s,
        r#"{{"event":"phase_started","phase":1,"name":"All","window_start":0.0,"window_end":360000.0,"at":0.0,"ts":"{ts}"}}"#
    );
    let mut at = 0.0f64;
    let mut n = 2;
    for step in 1..=steps {
        let _ = writeln!(
            s,
            r#"{{"event":"step_started","step":{step},"phase":1,"name":"s{step}","kind":"start","target":"lab","mutates":true,"command":null,"timeout":60.0,"at":{at},"ts":"{ts}"}}"#
        );
        for i in 0..probes {
            at += 0.5;
            let ok = i + 1 == probes;
            let _ = writeln!(
                s,
                r#"{{"event":"gate_probe","step":{step},"at":{at},"ok":{ok},"detail":"refused","ts":"{ts}"}}"#
            );
        }
        let _ = writeln!(
            s,
            r#"{{"event":"step_finished","step":{step},"phase":1,"name":"s{step}","outcome":"passed","exit":0,"duration":1.0,"at":{at},"reason":null,"stdout":null,"stderr":null,"ts":"{ts}"}}"#
        );
        n += probes + 2;
    }
    let _ = writeln!(
        s,
        r#"{{"event":"phase_finished","phase":1,"name":"All","started":0.0,"at":{at},"window_start":0.0,"window_end":360000.0,"result":"passed","ts":"{ts}"}}"#
    );
    let _ = writeln!(
        s,
        r#"{{"event":"run_finished","outcome":"success","exit_code":0,"at":{at},"budget":360000.0,"failed_step":null,"message":"ok","resume":null,"ts":"{ts}"}}"#
    );
    fs::write(path, s).unwrap();
    n + 2
}

/// How long `recover report JOURNAL --format html` takes (the SVG timeline, the tables).
fn report_time(state: &Path, journal: &Path) -> Duration {
    let out_file = journal.with_extension("html");
    let started = std::time::Instant::now();
    let out = common::recover_in(state)
        .args(["report", p(journal), "--format", "html", "-o", p(&out_file)])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(fs::read_to_string(&out_file).unwrap().contains("<svg"));
    took
}

/// The report is linear in the journal's size, in its number of steps too (it was quadratic:
/// a lookup per step over every step). 10k steps of 8 probes, 100k events, against a quarter
/// of it: a linear report takes about 4 times as long, a quadratic one 16. The figures are
/// printed (`--nocapture`); the bound on the time itself is loose, for a debug build on a
/// busy machine.
#[test]
fn the_report_of_a_100k_event_journal_is_linear_in_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.jsonl");
    let big = dir.path().join("big.jsonl");
    let n_small = big_journal(&small, 2_500, 8);
    let n_big = big_journal(&big, 10_000, 8);
    assert!(n_big >= 100_000, "{n_big}");
    // The best of two: the machine's other load only ever adds.
    let best = |j: &Path| report_time(dir.path(), j).min(report_time(dir.path(), j));
    let (t_small, t_big) = (best(&small), best(&big));
    let ratio = t_big.as_secs_f64() / t_small.as_secs_f64().max(0.001);
    eprintln!(
        "report --format html: {n_small} events {t_small:.2?}, {n_big} events {t_big:.2?} (x{ratio:.1})"
    );
    assert!(
        ratio < 8.0,
        "not linear: x{ratio:.1} for 4 times the events"
    );
    assert!(t_big < Duration::from_secs(20), "{t_big:?}");
}
