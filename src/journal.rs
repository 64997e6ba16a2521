//! The journal: JSON Lines, one event a line, flushed as written. `--resume` reads it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::engine::{Event, RunOutcome, Sink, StepOutcome};
use crate::state::StateDir;

/// A journal line: the event with a wall-clock timestamp, as `--json` prints it.
pub use crate::report::record;

pub struct Journal {
    file: File,
    pub path: PathBuf,
    failed: bool,
    /// Why writing failed, until the caller takes it (`Sink::take_warning`).
    warning: Option<String>,
}

impl Journal {
    /// Open for appending (creating folders as needed). A last line cut short by a crash is
    /// ended first, so that the next run's first event starts a line of its own.
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private::create_dir_all(dir)?;
        }
        // 0600 whatever the umask: it holds what the box printed.
        let mut file = crate::private::options()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        crate::private::narrow(&file)?;
        if ends_cut_short(&mut file)? {
            file.write_all(b"\n")?;
        }
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            failed: false,
            warning: None,
        })
    }

    /// A new journal file for a run of `runbook`, under the state directory.
    pub fn new_path(state: &StateDir, runbook: &str, run_id: &str) -> PathBuf {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        state
            .runs()
            .join(format!("{runbook}-{stamp}-{run_id}.jsonl"))
    }
}

/// Whether a non-empty file's last byte is not a line break.
fn ends_cut_short(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

impl Sink for Journal {
    fn emit(&mut self, event: &Event) {
        if matches!(event, Event::StepProgress { .. }) || self.failed {
            return;
        }
        let mut line = record(event).to_string();
        line.push('\n');
        // Every event is synced as written, but a gate's probes: up to one every half second
        // for minutes, none of them read by `--resume`. Their lines are written at once (in
        // the page cache, so a crash of `recover` loses none) and made durable by the next
        // synced event, at the latest the step's end.
        let sync = !matches!(event, Event::GateProbe { .. });
        let ok = self
            .file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .and_then(|_| if sync { self.file.sync_data() } else { Ok(()) });
        if let Err(e) = ok {
            self.failed = true;
            self.warning = Some(format!(
                "cannot write the journal {}: {e}; the run goes on, but `--resume` and `recover report` will not see what follows",
                self.path.display()
            ));
        }
    }

    fn take_warning(&mut self) -> Option<String> {
        self.warning.take()
    }
}

/// Where an unfinished run stopped, read back from its journal. Every value is checked as
/// it is read: a hash is 64 hex digits, times are finite and within a year, step numbers
/// start at 1, ids and boot ids are short printable words.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    pub journal: PathBuf,
    pub run_id: String,
    pub sha256: String,
    /// The step to run first: the one that failed or was interrupted.
    pub step: usize,
    pub step_name: String,
    /// Where the run's timeline stood, in seconds: finite, 0 to [`MAX_ELAPSED`].
    pub elapsed: f64,
    pub boot_ids: BTreeMap<String, String>,
    pub outcome: Option<RunOutcome>,
    /// The highest step the journal records as finished (0: none).
    pub last_finished: usize,
    /// The first step of the chain of runs (a resumed run's `origin_step`, else its
    /// `first_step`): where the run starts again when the box rebooted since.
    pub origin_step: usize,
    /// Its last line was cut short (a crash or a kill mid-write) and ignored.
    pub torn: bool,
}

/// The longest timeline a journal may claim, in seconds: a year.
pub const MAX_ELAPSED: f64 = 366.0 * 24.0 * 3600.0;

/// Why `--resume` cannot use a journal. Each message says how to go on.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot read journal {}: {source}. Give the right file with --journal, or start afresh without --resume", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no run: it is empty, or not a journal of recover. Start afresh without --resume, or start at a step with --from N", path.display())]
    NoRun { path: PathBuf },
    /// The file holds not one whole line: the run was stopped (killed, or its machine lost
    /// power) between creating its journal and writing its first event, so nothing ran.
    #[error("{} is empty: its run was stopped before it began", path.display())]
    NeverStarted { path: PathBuf },
    #[error("journal {} is damaged at line {line}: {what}. {}", path.display(), way_on(*last_finished))]
    Damaged {
        path: PathBuf,
        line: usize,
        what: String,
        last_finished: usize,
    },
    #[error("journal {} would resume at step {step}, but the runbook has {steps} steps: it was edited, or belongs to another version of the runbook. {}", path.display(), way_on(*last_finished))]
    StepOutOfRange {
        path: PathBuf,
        step: usize,
        steps: usize,
        last_finished: usize,
    },
}

/// How to go on without the journal: `--from` the step after the last one it records as
/// finished, or from the start.
fn way_on(last_finished: usize) -> String {
    if last_finished == 0 {
        "Start afresh without --resume, or start at a step with --from N (`run --dry-run` lists them)".to_owned()
    } else {
        format!(
            "It records steps up to {last_finished} as finished: go on with --from {} instead of --resume (check the step with `run --dry-run`), or start afresh",
            last_finished.saturating_add(1)
        )
    }
}

impl Unfinished {
    /// The step to resume at must be one of the Plan's `steps`.
    pub fn check_steps(&self, steps: usize) -> Result<(), JournalError> {
        if (1..=steps).contains(&self.step) {
            return Ok(());
        }
        Err(JournalError::StepOutOfRange {
            path: self.journal.clone(),
            step: self.step,
            steps,
            last_finished: self.last_finished.min(steps),
        })
    }

    /// Where the run's timeline stood.
    pub fn elapsed(&self) -> std::time::Duration {
        std::time::Duration::try_from_secs_f64(self.elapsed).unwrap_or_default()
    }
}

/// The journal events `--resume` reads; the others are skipped, whatever they hold.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line {
    RunStarted {
        run_id: String,
        sha256: String,
        first_step: usize,
        #[serde(default)]
        origin_step: Option<usize>,
    },
    /// The run started again from `to_step` (its box rebooted under it).
    Rewound {
        to_step: usize,
    },
    Connected {
        target: String,
        boot_id: String,
    },
    StepStarted {
        step: usize,
        name: String,
        at: f64,
    },
    StepFinished {
        step: usize,
        name: String,
        outcome: StepOutcome,
        at: f64,
    },
    RunFinished {
        outcome: RunOutcome,
        failed_step: Option<usize>,
        at: f64,
    },
    #[serde(other)]
    Other,
}

/// A value of a journal line that cannot be right, in words.
fn implausible(line: &Line) -> Option<String> {
    let word = |what: &str, v: &str| -> Option<String> {
        let ok = !v.is_empty()
            && v.chars().count() <= 64
            && v.chars().all(|c| c.is_ascii_graphic() || c == '-');
        (!ok).then(|| {
            format!(
                "{what} `{}` is not a short printable id",
                crate::runbook::validate::shown(&v.chars().take(64).collect::<String>())
            )
        })
    };
    let time = |at: f64| -> Option<String> {
        (!(at.is_finite() && (0.0..=MAX_ELAPSED).contains(&at)))
            .then(|| format!("the time `{at:?}` s is not a place on a run's timeline"))
    };
    let step = |n: usize| -> Option<String> {
        (n == 0).then(|| "step 0 does not exist: steps are numbered from 1".to_owned())
    };
    match line {
        Line::RunStarted {
            run_id,
            sha256,
            first_step,
            origin_step,
        } => word("the run id", run_id)
            .or_else(|| {
                let hex = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
                (!hex).then(|| {
                    format!(
                        "the runbook hash `{}` is not a sha256 (64 hex digits)",
                        crate::runbook::validate::shown(
                            &sha256.chars().take(80).collect::<String>()
                        )
                    )
                })
            })
            .or_else(|| step(*first_step))
            .or_else(|| origin_step.and_then(step)),
        Line::Rewound { to_step } => step(*to_step),
        Line::Connected { target, boot_id } => {
            word("the target", target).or_else(|| word("the boot id", boot_id))
        }
        Line::StepStarted { step: n, at, .. } | Line::StepFinished { step: n, at, .. } => {
            step(*n).or_else(|| time(*at))
        }
        Line::RunFinished {
            failed_step, at, ..
        } => failed_step.and_then(step).or_else(|| time(*at)),
        Line::Other => None,
    }
}

/// Read the last run segment of a journal. `Ok(None)`: it finished successfully.
///
/// A line cut short by a crash in the middle of a write (the file's last line, or the last
/// of a run followed by a resumed one) is ignored and everything before it stands; any other
/// line that is not a well-formed event with plausible values is an error naming the line,
/// never a guess.
pub fn unfinished(path: &Path) -> Result<Option<Unfinished>, JournalError> {
    let bytes = std::fs::read(path).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut state: Option<Unfinished> = None;
    // Each target's boot id as last connected; `Unfinished::boot_ids` is what it was when the
    // run last began a step: the boot the steps before stood on. A reconnect after that (the
    // failure post asking a box that came back rebooted) must not pass for it.
    let mut current_boot: BTreeMap<String, String> = BTreeMap::new();
    let mut open_step: Option<(usize, String)> = None;
    let mut last_passed = 0usize;
    let mut last_finished = 0usize;
    let mut done_ok = false;
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let cut_short = !bytes.ends_with(b"\n");
    let parse = |raw: &[u8]| {
        std::str::from_utf8(raw)
            .map_err(|e| format!("it is not UTF-8 (byte {})", e.valid_up_to()))
            .and_then(|t| serde_json::from_str::<Line>(t).map_err(|e| e.to_string()))
    };
    // Whether the next line that is not blank starts a run: the one before it ended a run.
    let before_a_run = |i: usize| {
        lines[i + 1..]
            .iter()
            .find(|l| !l.iter().all(u8::is_ascii_whitespace))
            .is_some_and(|l| matches!(parse(l), Ok(Line::RunStarted { .. })))
    };
    for (i, raw) in lines.iter().enumerate() {
        let number = i + 1;
        let last = i + 1 == lines.len();
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let damaged = |what: String| JournalError::Damaged {
            path: path.to_path_buf(),
            line: number,
            what,
            last_finished,
        };
        let ev = match parse(raw) {
            Ok(ev) => ev,
            Err(_) if last && cut_short => {
                if let Some(s) = state.as_mut() {
                    s.torn = true;
                }
                break;
            }
            Err(_) if before_a_run(i) => continue,
            Err(e) => return Err(damaged(format!("not a journal event ({e})"))),
        };
        if let Some(what) = implausible(&ev) {
            return Err(damaged(what));
        }
        match ev {
            Line::RunStarted {
                run_id,
                sha256,
                first_step,
                origin_step,
            } => {
                state = Some(Unfinished {
                    origin_step: origin_step.unwrap_or(first_step).min(first_step),
                    torn: false,
                    journal: path.to_path_buf(),
                    run_id,
                    sha256,
                    step: first_step,
                    step_name: String::new(),
                    elapsed: 0.0,
                    boot_ids: state.map(|s| s.boot_ids).unwrap_or_default(),
                    outcome: None,
                    last_finished: 0,
                });
                open_step = None;
                done_ok = false;
                last_passed = first_step.saturating_sub(1);
                last_finished = last_passed;
            }
            Line::Rewound { to_step } => {
                // Everything from `to_step` on runs again: what was done before is void.
                last_passed = to_step.saturating_sub(1);
                last_finished = last_passed;
                open_step = None;
            }
            Line::Connected { target, boot_id } => {
                current_boot.insert(target, boot_id);
            }
            Line::StepStarted { step, name, at } => {
                open_step = Some((step, name));
                if let Some(s) = state.as_mut() {
                    s.elapsed = at;
                    s.boot_ids.extend(current_boot.clone());
                }
            }
            Line::StepFinished {
                step,
                name,
                outcome,
                at,
            } => {
                if let Some(s) = state.as_mut() {
                    s.elapsed = at;
                    match outcome {
                        StepOutcome::Passed
                        | StepOutcome::Skipped
                        | StepOutcome::FailedContinued
                        | StepOutcome::WouldRun => {
                            last_passed = last_passed.max(step);
                            last_finished = last_passed;
                            open_step = None;
                        }
                        _ => open_step = Some((step, name)),
                    }
                }
            }
            Line::RunFinished {
                outcome,
                failed_step,
                at,
            } => {
                if let Some(s) = state.as_mut() {
                    s.elapsed = at;
                    s.outcome = Some(outcome);
                    if outcome == RunOutcome::Success {
                        done_ok = true;
                    } else if let Some(f) = failed_step {
                        let name = open_step
                            .as_ref()
                            .filter(|(n, _)| *n == f)
                            .map(|(_, n)| n.clone())
                            .unwrap_or_default();
                        open_step = Some((f, name));
                    }
                }
            }
            Line::Other => {}
        }
    }
    let Some(mut s) = state else {
        // Not one whole line: a run killed between opening its journal and its first event.
        if !bytes.contains(&b'\n') {
            return Err(JournalError::NeverStarted {
                path: path.to_path_buf(),
            });
        }
        return Err(JournalError::NoRun {
            path: path.to_path_buf(),
        });
    };
    if done_ok {
        return Ok(None);
    }
    match open_step {
        Some((n, name)) => {
            s.step = n;
            s.step_name = crate::runbook::validate::shown(&name);
        }
        None => s.step = last_passed.saturating_add(1),
    }
    s.last_finished = last_passed;
    Ok(Some(s))
}

/// The newest journal of `runbook` under the state directory.
pub fn latest(state: &StateDir, runbook: &str) -> Option<PathBuf> {
    let prefix = format!("{runbook}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(state.runs())
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "jsonl")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.strip_prefix(&prefix)
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                })
        })
        .collect();
    // Names carry a UTC timestamp: the lexically last is the newest.
    found.sort();
    found.pop()
}

/// A short id for a run: time and process, hashed.
pub fn new_run_id() -> String {
    let seed = format!("{:?}-{}", std::time::SystemTime::now(), std::process::id());
    crate::runbook::sha256_hex(seed.as_bytes())[..8].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "007af32bd206f2daa66e03968da15d055ea3c72539c59edcebb23e8c2d2a274c";

    fn started(sha: &str) -> String {
        format!(
            r#"{{"event":"run_started","run_id":"ab12cd34","mode":"run","runbook":"t","path":"t.yaml","sha256":"{sha}","budget":1800.0,"steps":3,"phases":1,"resumed_from":null,"first_step":1,"targets":[]}}"#
        )
    }

    fn step(n: usize, outcome: &str, at: &str) -> String {
        format!(
            r#"{{"event":"step_started","step":{n},"phase":1,"name":"s{n}","kind":"run","target":"t","mutates":true,"command":null,"timeout":60.0,"at":{at}}}
{{"event":"step_finished","step":{n},"phase":1,"name":"s{n}","outcome":"{outcome}","exit":0,"duration":0.1,"at":{at},"reason":null,"stdout":null,"stderr":null}}"#
        )
    }

    fn read(text: &str) -> Result<Option<Unfinished>, JournalError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, text).unwrap();
        unfinished(&path)
    }

    fn damaged(text: &str) -> String {
        match read(text) {
            Err(e @ JournalError::Damaged { .. }) => e.to_string(),
            other => panic!("not refused as damaged: {other:?}"),
        }
    }

    #[test]
    fn an_interrupted_run_resumes_at_its_open_step() {
        let text = format!(
            "{}\n{}\n{}\n",
            started(SHA),
            step(1, "passed", "1.5"),
            step(2, "interrupted", "3.0")
        );
        let u = read(&text).unwrap().unwrap();
        assert_eq!(
            (u.step, u.last_finished, u.step_name.as_str()),
            (2, 1, "s2")
        );
        assert_eq!(u.elapsed(), std::time::Duration::from_secs(3));
        assert!(u.check_steps(3).is_ok());
    }

    #[test]
    fn a_run_that_started_again_after_a_reboot_resumes_from_its_new_walk() {
        // Steps 1-3 passed on the old boot; the box rebooted; step 1 passed again, step 2 was
        // interrupted: what step 3 did is void.
        let text = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n",
            started(SHA),
            step(1, "passed", "1.0"),
            step(2, "passed", "2.0"),
            step(3, "passed", "3.0"),
            r#"{"event":"rewound","target":"t","reason":"t rebooted","from_step":4,"to_step":1,"old_boot_id":"a","new_boot_id":"b","at":4.0}"#,
            step(1, "passed", "5.0"),
        ) + &step(2, "interrupted", "6.0")
            + "\n";
        let u = read(&text).unwrap().unwrap();
        assert_eq!((u.step, u.last_finished, u.origin_step), (2, 1, 1));
        // A rewind to step 0 is not a place in a run.
        let bad = format!(
            "{}\n{}\n",
            started(SHA),
            r#"{"event":"rewound","target":"t","reason":"r","from_step":2,"to_step":0,"old_boot_id":null,"new_boot_id":null,"at":1.0}"#
        );
        assert!(matches!(
            read(&bad),
            Err(JournalError::Damaged { line: 2, .. })
        ));
    }

    #[test]
    fn the_boot_id_is_the_one_the_steps_stood_on_not_a_later_reconnect() {
        // Step 2 began on boot a; the box was cut during it; the failure post's question
        // reconnected to the rebooted box (boot b). A resume must compare with a, not b
        // (benches/soak, seed 7, cycle 2: the resumed run skipped the units the cut undid).
        let connected = |id: &str| {
            format!(
                r#"{{"event":"connected","target":"spark","destination":"d","boot_id":"{id}","reconnect":true}}"#
            )
        };
        let text = format!(
            "{}\n{}\n{}\n{}\n{}\n",
            started(SHA),
            connected("aaaa"),
            step(1, "passed", "1.0"),
            step(2, "failed", "2.0"),
            connected("bbbb"),
        );
        let u = read(&text).unwrap().unwrap();
        assert_eq!(u.boot_ids.get("spark").map(String::as_str), Some("aaaa"));
        assert_eq!(u.step, 2);
    }

    #[test]
    fn a_resumed_run_keeps_the_first_step_of_its_chain() {
        let text =
            started(SHA).replace(r#""first_step":1"#, r#""first_step":3,"origin_step":2"#) + "\n";
        let u = read(&text).unwrap().unwrap();
        assert_eq!((u.step, u.origin_step), (3, 2));
    }

    #[test]
    fn a_last_line_cut_by_a_crash_is_ignored() {
        let text = format!(
            "{}\n{}\n{{\"event\":\"step_sta",
            started(SHA),
            step(1, "passed", "1")
        );
        let u = read(&text).unwrap().unwrap();
        assert_eq!(u.step, 2);
        assert!(u.torn, "the cut line is said");
        let whole = format!("{}\n{}\n", started(SHA), step(1, "passed", "1"));
        assert!(!read(&whole).unwrap().unwrap().torn);
        assert!(matches!(read(""), Err(JournalError::NeverStarted { .. })));
        assert!(matches!(
            read("{\"event\":\"run_sta"),
            Err(JournalError::NeverStarted { .. })
        ));
        assert!(matches!(
            read("{\"event\":\"other\"}\n"),
            Err(JournalError::NoRun { .. })
        ));
    }

    #[test]
    fn garbled_lines_wrong_types_and_huge_numbers_are_refused_with_a_way_on() {
        let head = format!("{}\n{}\n", started(SHA), step(1, "passed", "1"));
        // A broken line in the middle is not a crash: it is refused, never skipped.
        let e = damaged(&format!("{head}not json\n{}\n", step(2, "failed", "2")));
        assert!(
            e.contains("is damaged at line 4: not a journal event"),
            "{e}"
        );
        assert!(e.contains("go on with --from 2 instead of --resume"), "{e}");
        let e = damaged(&format!("{head}{}\n", step(2, "failed", "\"soon\"")));
        assert!(
            e.contains("line 4: not a journal event (invalid type: string"),
            "{e}"
        );
        let e = damaged(&format!("{head}{}\n", step(2, "failed", "1e300")));
        assert!(e.contains("the time `1e300` s is not a place"), "{e}");
        let e = damaged(&format!("{head}{}\n", step(2, "failed", "-4")));
        assert!(e.contains("the time `-4.0` s"), "{e}");
        let e = damaged(&format!("{head}{}\n", step(0, "failed", "2")));
        assert!(e.contains("step 0 does not exist"), "{e}");
        let e = damaged(&format!("{head}{}\n", step(2, "exploded", "2")));
        assert!(e.contains("unknown variant `exploded`"), "{e}");
        let huge =
            format!("{head}{}\n", step(2, "failed", "2")).replace("\"step\":2", "\"step\":1e30");
        assert!(damaged(&huge).contains("line 4"));
        let bytes = format!("{head}\u{0}\n").replace('\u{0}', "{\"event\":\"connected\",\"target\":\"t\",\"boot_id\":\"\\u001b[2J\",\"destination\":\"x\",\"reconnect\":false}");
        assert!(damaged(&bytes).contains("the boot id `\\u{1b}[2J` is not a short printable id"));
    }

    #[test]
    fn a_hash_with_multibyte_text_is_refused_not_sliced() {
        let e = damaged(&format!("{}\n", started(&"é".repeat(40))));
        assert!(e.contains("line 1: the runbook hash `éééé"), "{e}");
        assert!(e.contains("is not a sha256"), "{e}");
        assert!(
            e.contains("Start afresh without --resume, or start at a step with --from N"),
            "{e}"
        );
    }

    #[test]
    fn a_step_beyond_the_plan_is_refused() {
        let text = format!("{}\n{}\n", started(SHA), step(57, "failed", "2"));
        let u = read(&text).unwrap().unwrap();
        assert_eq!(u.step, 57);
        let e = u.check_steps(20).unwrap_err().to_string();
        assert!(
            e.contains("would resume at step 57, but the runbook has 20 steps"),
            "{e}"
        );
        let max = format!("{}\n{}\n", started(SHA), step(usize::MAX, "passed", "2"));
        let u = read(&max).unwrap().unwrap();
        assert!(u.check_steps(20).is_err());
    }

    #[test]
    fn a_run_resumed_after_a_crash_mid_line_keeps_the_journal_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let first = format!("{}\n{}\n", started(SHA), step(1, "passed", "1"));
        std::fs::write(&path, format!("{first}{{\"event\":\"step_sta")).unwrap();
        // The resumed run appends to the same journal: its first event gets a line of its own.
        let mut j = Journal::open(&path).unwrap();
        j.file
            .write_all(format!("{}\n", started(SHA)).as_bytes())
            .unwrap();
        j.file
            .write_all(format!("{}\n", step(2, "failed", "2")).as_bytes())
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("{\"event\":\"step_sta\n{\"event\":\"run_started\""),
            "{text}"
        );
        let u = unfinished(&path).unwrap().unwrap();
        assert_eq!((u.step, u.last_finished), (2, 0));
        // A line that is no event anywhere else is still refused.
        std::fs::write(
            &path,
            format!("{first}garbage\n{}\n", step(2, "failed", "2")),
        )
        .unwrap();
        assert!(matches!(
            unfinished(&path),
            Err(JournalError::Damaged { line: 4, .. })
        ));
    }

    #[test]
    fn events_the_reader_does_not_need_are_skipped_whatever_they_hold() {
        let text = format!(
            "{}\n{{\"event\":\"something_new\",\"step\":\"x\",\"at\":1e300}}\n{}\n",
            started(SHA),
            step(1, "failed", "1")
        );
        assert_eq!(read(&text).unwrap().unwrap().step, 1);
    }

    #[test]
    fn a_journal_that_cannot_be_written_says_so_once_through_the_other_sinks() {
        use crate::engine::event::Fanout;
        use std::sync::{Arc, Mutex};
        struct Seen(Arc<Mutex<Vec<Event>>>);
        impl Sink for Seen {
            fn emit(&mut self, event: &Event) {
                self.0.lock().unwrap().push(event.clone());
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = Journal::open(&path).unwrap();
        // A descriptor open for reading only: every write fails.
        j.file = File::open(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut out = Fanout(vec![Box::new(j), Box::new(Seen(seen.clone()))]);
        let note = Event::Warning {
            step: Some(1),
            message: "a".into(),
        };
        out.emit(&note);
        out.emit(&note);
        let seen = seen.lock().unwrap();
        let warnings: Vec<&str> = seen
            .iter()
            .filter_map(|e| match e {
                Event::Warning {
                    step: None,
                    message,
                } => Some(message.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(warnings.len(), 1, "{seen:?}");
        assert!(
            warnings[0].starts_with(&format!("cannot write the journal {}: ", path.display())),
            "{}",
            warnings[0]
        );
    }
}
