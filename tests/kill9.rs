//! The management host's side of a second power cut (issue 24, item 4): `recover` SIGKILLed at
//! a random moment (as when the management host itself loses power), then `--resume` as an
//! operator would. Against a real sshd and real HTTP servers on 127.0.0.1, over a runbook with
//! run, http, retry and notify steps. After every try:
//!
//! - the run completes (the resume, or a fresh run when the killed one left no journal);
//! - no step that changes state and was journaled as passed ran again (on this target, which
//!   did not reboot): a later run of the chain never starts it;
//! - a step's work happened at most as often as a run started it;
//! - every journal parses, but for a line torn by the kill at the end of the killed one, which
//!   the resume tolerates.
//!
//! `RECOVER_KILL9_TRIES` (default 50, the CI figure) and `RECOVER_KILL9_SEED` (default 24)
//! set the count and the moments; a failing try names its seed, moment and directory (kept).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Background, HttpServer, Sshd, journals_in, p, run_to_end, say, write_runbook};
use serde_json::Value;

/// The moments are drawn over this span after the start: a whole run takes about as long.
const SPAN_MS: u64 = 2600;
const THREADS: usize = 3;

/// xorshift64*: enough to spread the moments, the same for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The journal's events; a last line cut short is allowed only when `torn_ok` (the killed
/// run). Returns the events and whether the last line was torn.
fn parse_journal(path: &Path, torn_ok: bool) -> Result<(Vec<Value>, bool), String> {
    let bytes = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    let mut torn = false;
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(l) {
            Ok(v) => out.push(v),
            Err(e) if i + 1 == lines.len() && torn_ok => {
                torn = true;
                let _ = e;
            }
            Err(e) => {
                return Err(format!(
                    "{} line {}: not JSON ({e}): {l}",
                    path.display(),
                    i + 1
                ));
            }
        }
    }
    Ok((out, torn))
}

const STEPS: &str = r#"      - name: write one
        run: echo one >> @DIR@/t1
      - name: post the work
        http:
          url: "@API@/work/@TRY@"
          method: POST
          json: { try: "@TRY@" }
          expect: { status: 200 }
          timeout: 5s
        mutates: true
      - name: retried write
        run: "sleep 0.3; echo three >> @DIR@/t3"
        retry: { every: 1s, timeout: 10s }
      - notify: ops
        message: "halfway @TRY@"
      - name: write five
        run: "sleep 0.2; echo five >> @DIR@/t5"
      - notify: ops
        message: "We are back @TRY@"
"#;

/// The steps that change state, and what each leaves behind for counting.
enum Mark {
    File(&'static str),
    Request(&'static str),
}
const MUTATING: [(u64, Mark); 6] = [
    (1, Mark::File("t1")),
    (2, Mark::Request("/work/")),
    (3, Mark::File("t3")),
    (4, Mark::Request("halfway")),
    (5, Mark::File("t5")),
    (6, Mark::Request("We are back")),
];

struct Peers {
    sshd: Sshd,
    api: HttpServer,
    hook: HttpServer,
}

/// One try: start, SIGKILL after `delay_ms`, resume. `Err` says what went wrong.
fn one_try(peers: &Peers, root: &Path, i: u64, delay_ms: u64) -> Result<String, String> {
    let work = root.join(format!("try-{i}"));
    let state = work.join("state");
    fs::create_dir_all(&state).unwrap();
    let steps = STEPS
        .replace("@API@", &peers.api.url())
        .replace("@TRY@", &i.to_string());
    let head = format!(
        "notify:\n  ops: {{ webhook: \"{}\", format: json }}\n",
        peers.hook.url_for(&format!("/hook/{i}"))
    );
    let rb = write_runbook(
        &work,
        "kill9",
        &peers.sshd.runbook_target_yaml("spark"),
        &head,
        &steps,
    );
    let mut bg = Background::start(&state, &["run", p(&rb), "--yes"], &[]);
    std::thread::sleep(Duration::from_millis(delay_ms));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(bg.pid(), libc::SIGKILL) };
    let first = bg
        .wait(Duration::from_secs(10))
        .ok_or("still running 10 s after SIGKILL")?;
    let finished_first = first.code() == Some(0);

    let mut journals_before = journals_in(&state);
    let killed_journal = journals_before.first().cloned();
    // Where the kill landed: the last step the killed run started.
    let landed = killed_journal
        .as_ref()
        .and_then(|j| parse_journal(j, true).ok())
        .and_then(|(events, _)| {
            events
                .iter()
                .rev()
                .find(|e| e["event"] == "step_started")
                .map(|e| format!("step {} ({})", e["step"], e["kind"].as_str().unwrap_or("?")))
        })
        .unwrap_or_else(|| "before any step".to_owned());
    let how = if finished_first {
        "finished before the kill".to_owned()
    } else if killed_journal.is_none() {
        // Killed before it wrote a journal: the operator starts again.
        let ran = run_to_end(
            &state,
            &["run", p(&rb), "--yes"],
            &[],
            Duration::from_secs(90),
        );
        if ran.code != Some(0) {
            return Err(format!("the fresh run failed: {}", ran.context()));
        }
        "killed before its journal; run again".to_owned()
    } else {
        let ran = run_to_end(
            &state,
            &["run", p(&rb), "--resume", "--yes"],
            &[],
            Duration::from_secs(90),
        );
        let (events, _) = parse_journal(killed_journal.as_ref().unwrap(), true)?;
        let finished = events.iter().any(|e| e["event"] == "run_finished");
        match ran.code {
            Some(0) => "resumed".to_owned(),
            // Killed after its journal said it finished: nothing to resume.
            Some(2) if finished && ran.stderr.contains("finished") => {
                "killed after it finished".to_owned()
            }
            _ => return Err(format!("the resume failed: {}", ran.context())),
        }
    };
    journals_before = journals_in(&state);

    // Every journal parses; only the killed one may end in a torn line.
    let mut chain: Vec<Vec<Value>> = Vec::new();
    let mut torn_seen = false;
    for j in &journals_before {
        let killed = Some(j) == killed_journal.as_ref() && !finished_first;
        let (events, torn) = parse_journal(j, killed)?;
        torn_seen |= torn;
        chain.push(events);
    }
    let last = chain.last().ok_or("no journal at all")?;
    let end = last.last().ok_or("an empty last journal")?;
    if !(end["event"] == "run_finished" && end["outcome"] == "success") {
        return Err(format!("the chain did not end in success: {end}"));
    }

    // No passed state-changing step runs again; each one's work at most once per start.
    for (n, mark) in &MUTATING {
        let started_in: Vec<usize> = chain
            .iter()
            .enumerate()
            .filter(|(_, j)| {
                j.iter()
                    .any(|e| e["event"] == "step_started" && e["step"] == *n)
            })
            .map(|(k, _)| k)
            .collect();
        let passed_in = chain.iter().position(|j| {
            j.iter().any(|e| {
                e["event"] == "step_finished" && e["step"] == *n && e["outcome"] == "passed"
            })
        });
        let Some(passed_in) = passed_in else {
            return Err(format!("step {n} never passed"));
        };
        if let Some(again) = started_in.iter().find(|k| **k > passed_in) {
            return Err(format!(
                "step {n} passed in journal {passed_in} and ran again in journal {again}"
            ));
        }
        let done = match mark {
            Mark::File(f) => fs::read_to_string(work.join(f))
                .map(|t| t.lines().count())
                .unwrap_or(0),
            Mark::Request(needle) => {
                let api = peers
                    .api
                    .requests_to(&format!("/work/{i}"))
                    .into_iter()
                    .filter(|_| *needle == "/work/")
                    .count();
                let posts = peers
                    .hook
                    .requests_to(&format!("/hook/{i}"))
                    .into_iter()
                    .filter(|r| r.body.contains(needle))
                    .count();
                api + posts
            }
        };
        if done == 0 || done > started_in.len() {
            return Err(format!(
                "step {n}'s work happened {done} time(s), started {} time(s)",
                started_in.len()
            ));
        }
    }
    let _ = fs::remove_dir_all(&work);
    Ok(format!(
        "landed in {landed}, {how}{}",
        if torn_seen { ", torn last line" } else { "" }
    ))
}

#[test]
fn sigkill_at_any_moment_then_resume_completes_and_repeats_no_passed_step() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let api = HttpServer::start();
    let hook = HttpServer::start();
    let tries = env_u64("RECOVER_KILL9_TRIES", 50);
    let seed = env_u64("RECOVER_KILL9_SEED", 24).max(1);
    for i in 0..tries {
        api.respond("POST", &format!("/work/{i}"), 200, "ok");
        hook.respond("POST", &format!("/hook/{i}"), 200, "ok");
    }
    let peers = Arc::new(Peers { sshd, api, hook });
    let root: PathBuf = tempfile::Builder::new()
        .prefix("recover-kill9-")
        .tempdir()
        .unwrap()
        .keep();
    let mut rng = Rng(seed);
    let plan: Vec<(u64, u64)> = (0..tries).map(|i| (i, rng.next() % SPAN_MS)).collect();
    let queue = Arc::new(Mutex::new(plan));
    let results = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    // Bounded: each worker takes tries from the queue until it is empty.
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (queue, results, peers, root) =
                (queue.clone(), results.clone(), peers.clone(), root.clone());
            std::thread::spawn(move || {
                loop {
                    let next = queue.lock().unwrap().pop();
                    let Some((i, ms)) = next else { break };
                    let r = one_try(&peers, &root, i, ms);
                    results.lock().unwrap().push((i, ms, r));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker panicked");
    }
    let mut results = results.lock().unwrap().clone();
    results.sort_by_key(|r| r.0);
    let mut failed = Vec::new();
    let mut torn = 0;
    for (i, ms, r) in &results {
        match r {
            Ok(how) => {
                torn += usize::from(how.contains("torn"));
                say(&format!(
                    "kill9: try {i} (seed {seed}) at {ms} ms: ok, {how}"
                ));
            }
            Err(why) => {
                say(&format!(
                    "kill9: try {i} (seed {seed}) at {ms} ms: FAILED: {why}"
                ));
                failed.push(format!(
                    "try {i} at {ms} ms: {why} (kept: {})",
                    root.join(format!("try-{i}")).display()
                ));
            }
        }
    }
    say(&format!(
        "kill9: {} passed, {} failed ({} with a torn last line) in {:.0?}",
        results.len() - failed.len(),
        failed.len(),
        torn,
        started.elapsed()
    ));
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(results.len() as u64, tries);
    let _ = fs::remove_dir_all(&root);
}
