//! `recover run`, and `run --dry-run`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::cli::RunArgs;
use crate::engine::{self, Answer, Confirm, Emitter, Mode, Resume, Settings};
use crate::error::Error;
use crate::exit::Exit;
use crate::journal::{self, Journal};
use crate::lock;
use crate::plan::{self, Plan};
use crate::signals::Signals;
use crate::state::StateDir;
use crate::template::shell_quote;

/// `run --dry-run`: the resolved plan on stdout, nothing contacted.
pub fn dry_run(a: &RunArgs) -> Result<Exit, Error> {
    let (_, plan) = super::load_plan(&a.runbook, &a.resolve.overlays, &super::options(&a.resolve))?;
    say_if_a_run_is_in_progress(&plan, StateDir::from_env().as_ref());
    print!("{}", crate::plan::display::plan_text(&plan));
    Ok(Exit::Ok)
}

/// Where `run` starts, as the arguments say it; [`Start::resolve`] checks it against the plan.
enum Start<'a> {
    Beginning,
    /// `--from STEP`.
    From(&'a str),
    /// `--resume` (with `--force`: accept a changed runbook).
    Resume {
        force: bool,
    },
}

impl<'a> Start<'a> {
    fn of(a: &'a RunArgs) -> Self {
        match (&a.from, a.resume) {
            (_, true) => Start::Resume { force: a.force },
            (Some(f), false) => Start::From(f),
            (None, false) => Start::Beginning,
        }
    }

    /// The first step to run, and what a resumed run takes over.
    fn resolve(
        self,
        a: &RunArgs,
        plan: &Plan,
        state: Option<&StateDir>,
    ) -> Result<(usize, Option<Resume>), Error> {
        match self {
            Start::Beginning => Ok((1, None)),
            Start::From(f) => Ok((find_step(plan, f)?, None)),
            Start::Resume { force } => {
                let path = match (&a.journal, state) {
                    (Some(j), _) => j.clone(),
                    (None, Some(s)) => {
                        journal::latest(s, &plan.state_key()).ok_or_else(|| Error::NoJournal {
                            runbook: plan.state_key(),
                            dir: s.runs(),
                        })?
                    }
                    (None, None) => return Err(Error::NoStateDir),
                };
                let u = match journal::unfinished(&path) {
                    // Nothing ran: what an operator would do is start afresh, so do that.
                    Err(journal::JournalError::NeverStarted { path }) => {
                        eprintln!(
                            "journal {}: empty, its run was stopped before its first step. Nothing to resume: starting from step 1.",
                            path.display()
                        );
                        return Ok((1, None));
                    }
                    other => other?,
                };
                let Some(u) = u else {
                    return Err(Error::AlreadyFinished {
                        runbook: plan.name.clone(),
                        journal: path,
                    });
                };
                u.check_steps(plan.phases.iter().map(|p| p.steps.len()).sum())?;
                if u.sha256 != plan.sha256 && !force {
                    let short = |s: &str| s.chars().take(12).collect::<String>();
                    return Err(Error::RunbookChanged {
                        path: a.runbook.clone(),
                        then: short(&u.sha256),
                        now: short(&plan.sha256),
                    });
                }
                if u.torn {
                    eprintln!(
                        "journal {}: its last line was cut short (a crash or kill mid-write): ignored; everything before it stands.",
                        path.display()
                    );
                }
                eprintln!(
                    "Resuming run {} from step {}{} (journal {}).",
                    u.run_id,
                    u.step,
                    if u.step_name.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", u.step_name)
                    },
                    path.display()
                );
                let resume = Resume {
                    origin_step: u.origin_step,
                    elapsed: u.elapsed(),
                    run_id: u.run_id,
                    boot_ids: u.boot_ids,
                };
                Ok((u.step, Some(resume)))
            }
        }
    }
}

/// Which step `--from` names: a number, a name (any case), or a unique part of a name.
pub fn find_step(plan: &Plan, want: &str) -> Result<usize, Error> {
    let steps: Vec<&plan::Step> = plan.steps().collect();
    if let Ok(n) = want.trim().parse::<usize>() {
        if steps.iter().any(|s| s.number == n) {
            return Ok(n);
        }
        return Err(Error::NoSuchStep {
            number: n,
            steps: steps.len(),
        });
    }
    let w = want.trim().to_lowercase();
    if let Some(s) = steps.iter().find(|s| s.name.to_lowercase() == w) {
        return Ok(s.number);
    }
    let hits: Vec<&&plan::Step> = steps
        .iter()
        .filter(|s| s.name.to_lowercase().contains(&w))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.number),
        [] => Err(Error::NoStepNamed {
            want: want.to_owned(),
        }),
        many => Err(Error::AmbiguousStep {
            want: want.to_owned(),
            matches: many
                .iter()
                .map(|s| format!("{} {}", s.number, s.name))
                .collect(),
        }),
    }
}

/// The exact command that continues this run.
fn resume_command(a: &RunArgs, confirm: &Confirm<()>) -> String {
    let mut parts = vec![
        "recover".to_owned(),
        "run".to_owned(),
        shell_quote(&a.runbook.display().to_string()),
        "--resume".to_owned(),
    ];
    if let Some(j) = &a.journal {
        parts.push(format!(
            "--journal {}",
            shell_quote(&j.display().to_string())
        ));
    }
    // Whoever reads it types it: an unattended run's resume is a person's, without
    // --unattended or --started-by.
    if matches!(confirm, Confirm::Yes) {
        parts.push("--yes".into());
    }
    for (k, v) in &a.resolve.vars {
        parts.push(format!("--var {}", shell_quote(&format!("{k}={v}"))));
    }
    for o in &a.resolve.overlays {
        parts.push(format!(
            "--overlay {}",
            shell_quote(&o.display().to_string())
        ));
    }
    for (k, v) in &a.resolve.targets {
        parts.push(format!("--target {}", shell_quote(&format!("{k}={v}"))));
    }
    for (flag, list) in [
        ("--identity", &a.resolve.identities),
        ("--known-hosts", &a.resolve.known_hosts),
    ] {
        for (k, p) in list {
            let kv = format!("{k}={}", p.display());
            parts.push(format!("{flag} {}", shell_quote(&kv)));
        }
    }
    if a.json {
        parts.push("--json".into());
    }
    parts.join(" ")
}

pub fn run(a: &RunArgs) -> Result<Exit, Error> {
    let stoppable = Stoppable::new()?;
    let opts = plan::Options {
        unattended: a.unattended,
        ..super::options(&a.resolve)
    };
    let (_, plan) = super::load_plan(&a.runbook, &a.resolve.overlays, &opts)?;
    // An unset secret a step needs stops the run before anything runs; one that only status
    // posts read does not: a failing post never stops a recovery, neither may a missing one.
    if !plan.secrets.needed.is_empty() {
        return Err(Error::MissingSecrets {
            names: plan.secrets.needed.clone(),
        });
    }
    let mut warnings = unsent_posts(&plan);
    let state = StateDir::from_env();
    super::print_rehearsal_notice(state.as_ref(), &plan);

    let (first_step, resume) = Start::of(a).resolve(a, &plan, state.as_ref())?;

    // Manual steps need someone to ask, --yes, or --unattended (whose refusal of a manual
    // step without `unattended:` came with the plan): decided before anything runs.
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let confirm = Confirm::decide(a.yes, a.unattended, interactive);
    let manual: Vec<String> = plan
        .steps()
        .filter(|s| s.number >= first_step && matches!(s.action, plan::Action::Manual { .. }))
        .map(|s| format!("{} ({})", s.number, s.name))
        .collect();
    if !manual.is_empty() && matches!(confirm, Confirm::Refuse) {
        return Err(Error::NoTerminal { steps: manual });
    }

    let run_id = journal::new_run_id();
    let journal_path = match (&a.journal, &state) {
        (Some(j), _) => j.clone(),
        (None, Some(s)) => Journal::new_path(s, &plan.state_key(), &run_id),
        (None, None) => return Err(Error::NoStateDir),
    };
    // One run at a time: taken before anything is contacted, held until the run ends.
    let locks = locks_for_run(state.as_ref());
    let (_lock, taken_over) = locks.acquire(
        &lock_keys(&plan),
        &lock::Owner::me(&plan.name, &journal_path),
    )?;
    let journal = open_journal(&journal_path)?;
    let term = crate::report::for_terminal(a.json);
    let suspender = term.suspender();
    let sinks: Vec<Box<dyn engine::Sink>> = vec![Box::new(journal), Box::new(term)];
    let out = Emitter::new(Box::new(engine::event::Fanout(sinks)), plan.secrets.clone());
    warnings.extend(locks.warning);
    warnings.extend(taken_over.iter().map(lock::TakenOver::warning));

    let resume_command = resume_command(a, &confirm);
    // The prompt draws above the progress bars; nothing is emitted while it waits.
    let confirm = confirm.with_prompt(|| {
        Box::new(move |name: &str, text: &str| suspender.suspend(|| ask(name, text)))
    });
    let settings = Settings {
        mode: Mode::Run,
        run_id,
        first_step,
        confirm,
        started_by: a.started_by.clone(),
        resume,
        resume_command,
        stop: crate::signals::StopCause::default(),
        warnings,
    };
    let exit = execute_on(stoppable, &plan, settings, out)?;
    // After SIGHUP the terminal may be gone: a failed write must not turn the exit into a panic.
    let _ = writeln!(std::io::stderr(), "journal: {}", journal_path.display());
    Ok(exit)
}

/// The engine's runtime, with Ctrl-C, SIGTERM and SIGHUP listened to from the moment it is
/// made: made first thing, so that a signal while the plan loads or the lock is taken stops
/// the run before its first step (it was the default action, dying at once with a journal
/// that has no `run_started`).
pub(super) struct Stoppable {
    rt: tokio::runtime::Runtime,
    signals: Signals,
}

impl Stoppable {
    pub(super) fn new() -> Result<Stoppable, Error> {
        let rt = super::runtime()?;
        let signals = {
            let _in = rt.enter();
            Signals::listen().map_err(Error::Runtime)?
        };
        Ok(Stoppable { rt, signals })
    }
}

/// Run the engine on a runtime, with Ctrl-C, SIGTERM and SIGHUP wired to cancellation: the
/// first stops the run cleanly, a deliberate second one quits at once.
pub(super) fn execute(plan: &Plan, settings: Settings, out: Emitter) -> Result<Exit, Error> {
    execute_on(Stoppable::new()?, plan, settings, out)
}

/// [`execute`] on a runtime listening since the command started.
pub(super) fn execute_on(
    on: Stoppable,
    plan: &Plan,
    settings: Settings,
    out: Emitter,
) -> Result<Exit, Error> {
    let Stoppable { rt, signals } = on;
    rt.block_on(async move {
        let stopped = settings.stop.clone();
        let rx = cancel_on(signals, settings.stop.clone(), "the current step");
        let engine = engine::Engine::new(plan, settings, out, rx);
        Ok(engine.run().await.exit_after(stopped.get()))
    })
}

/// Within the runtime: the first Ctrl-C, SIGTERM or SIGHUP is recorded in `cause` and cancels
/// (the receiver turns true), saying that it is stopping `what`; a deliberate second one quits
/// at once ([`crate::signals::Stop::quits_at_once`]).
pub(super) fn cancel_on_signals(
    cause: crate::signals::StopCause,
    what: &'static str,
) -> Result<tokio::sync::watch::Receiver<bool>, Error> {
    let signals = Signals::listen().map_err(Error::Runtime)?;
    Ok(cancel_on(signals, cause, what))
}

fn cancel_on(
    mut signals: Signals,
    cause: crate::signals::StopCause,
    what: &'static str,
) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let stop = signals.next().await;
        let first = std::time::Instant::now();
        cause.set(stop);
        let _ = tx.send(true);
        // The terminal may be gone (SIGHUP): a failed write must not end the run.
        let _ = writeln!(
            std::io::stderr(),
            "\n{}: stopping {what}{}…",
            stop.describe(),
            stop.again()
        );
        // The same stop delivered twice (a terminal's hang-up from the kernel and the shell,
        // a signal to the process and to its group) is not a second one.
        loop {
            let again = signals.next().await;
            if again.quits_at_once(first.elapsed()) {
                std::process::exit(again.exit().code().into());
            }
        }
    });
    rx
}

/// One warning per unset variable that only status posts read, naming the channels that will
/// not be posted to.
fn unsent_posts(plan: &Plan) -> Vec<String> {
    plan.secrets
        .notify_only()
        .iter()
        .map(|name| {
            let marker = crate::secrets::placeholder(name);
            let channels: Vec<String> = plan
                .channels
                .iter()
                .filter(|c| c.url.contains(&marker))
                .map(|c| format!("`{}`", c.name))
                .collect();
            let to = if channels.is_empty() {
                "its status posts".to_owned()
            } else {
                format!("the status posts to {}", channels.join(", "))
            };
            format!(
                "{name} is not set: {to} will not be sent. The recovery goes on; tell the operators another way, or export {name} and start again"
            )
        })
        .collect()
}

/// The locks a run of `plan` takes: its runbook, and each target host.
pub(super) fn lock_keys(plan: &Plan) -> Vec<lock::Key> {
    lock::keys(
        &plan.name,
        plan.targets
            .iter()
            .map(|t| (t.host.as_str(), t.port.unwrap_or(22))),
    )
}

/// Where a run (or a drill) takes its locks: the machine-wide directory, or this account's own
/// with a warning.
pub(super) fn locks_for_run(state: Option<&StateDir>) -> lock::Dir {
    lock::Dir::for_run(&lock::shared_dir(), own_lock_dir(state))
}

/// This account's own lock directory, where a run takes its locks when the machine-wide one
/// cannot be used: the state directory, or without one a directory in the temporary directory.
fn own_lock_dir(state: Option<&StateDir>) -> PathBuf {
    match state {
        Some(s) => s.locks(),
        None => {
            // SAFETY: getuid(2) cannot fail.
            let uid = unsafe { libc::getuid() };
            std::env::temp_dir().join(format!("recover-{uid}-locks"))
        }
    }
}

/// Every directory a run's lock may be in: the machine-wide one and this account's own.
pub(super) fn lock_dirs(state: Option<&StateDir>) -> Vec<PathBuf> {
    vec![lock::shared_dir(), own_lock_dir(state)]
}

/// For the commands that take no lock (`rehearse`, `--dry-run`): say that a run is in progress.
pub(super) fn say_if_a_run_is_in_progress(plan: &Plan, state: Option<&StateDir>) {
    let dirs = [lock::shared_dir(), own_lock_dir(state)];
    if let Some((key, owner)) = lock::in_progress(&dirs, &lock_keys(plan)) {
        let what = match &owner {
            _ if key.what.starts_with("runbook") => {
                "a run of this runbook is in progress".to_owned()
            }
            Some(o) => format!(
                "a run of `{}` against the {} is in progress",
                o.runbook, key.what
            ),
            None => format!("a run against the {} is in progress", key.what),
        };
        let who = owner.map_or("its record is being written".to_owned(), |o| o.describe());
        eprintln!("note: {what}: {who}; this takes no lock and does not stop it");
    }
}

/// Ask the operator at a manual step, on the terminal.
fn ask(name: &str, text: &str) -> Answer {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "\n== Manual step: {name}\n{}\n", text.trim_end());
    loop {
        let _ = write!(err, "Done? [d]one / [s]kip / [a]bort: ");
        let _ = err.flush();
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).unwrap_or(0) == 0 {
            return Answer::Abort;
        }
        match line.trim().to_lowercase().as_str() {
            "d" | "done" | "y" | "yes" => return Answer::Done,
            "s" | "skip" => return Answer::Skip,
            "a" | "abort" => return Answer::Abort,
            _ => {}
        }
    }
}

/// The journal, opened before anything runs.
pub(super) fn open_journal(path: &Path) -> Result<Journal, Error> {
    Journal::open(path).map_err(|source| Error::JournalOpen {
        path: PathBuf::from(path),
        source,
    })
}
