//! What each command does, from parsed arguments to an exit code.

use std::io::{IsTerminal, Write};
use std::path::Path;

use crate::cli::{CheckArgs, Cli, Cmd, RehearseArgs, Resolve, RunArgs};
use crate::plan::{self, Options, Plan};
use crate::runbook::diag::Problem;
use crate::runbook::{self, Loaded, lint::lint};

/// Process exit codes: the contract in `--help` and the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const STEP_FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const ABORTED: i32 = 3;
    pub const INTERRUPTED: i32 = 130;
}

pub fn main(cli: Cli) -> i32 {
    match cli.command {
        Cmd::Check(a) => check(&a),
        Cmd::Run(a) if a.dry_run => dry_run(&a),
        Cmd::Run(a) => run(&a),
        Cmd::Rehearse(a) => rehearse(&a),
        Cmd::Export(a) => crate::export::export(&a),
    }
}

/// Print problems the way a compiler does: `file:line:col`, snippet, help.
pub fn print_problems(problems: &[Problem]) {
    let handler = handler();
    let mut err = std::io::stderr().lock();
    for p in problems {
        let mut out = String::new();
        let _ = handler.render_report(&mut out, p);
        let kind = if p.severity == miette::Severity::Warning {
            "warning"
        } else {
            "error"
        };
        let _ = writeln!(err, "{kind}: {}: {}", p.place(), p.message);
        let _ = writeln!(err, "{out}");
    }
}

pub fn render_problem(p: &Problem) -> String {
    let mut out = String::new();
    let _ = handler().render_report(&mut out, p);
    out
}

fn handler() -> miette::GraphicalReportHandler {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    miette::GraphicalReportHandler::new_themed(theme).with_context_lines(2)
}

pub(crate) fn options(r: &Resolve) -> Options {
    Options {
        vars: r.vars.clone(),
        targets: r.targets.clone(),
        ..Options::from_process_env()
    }
}

/// Load and resolve, printing problems; `Err` carries the exit code.
pub fn load_plan(path: &Path, opts: &Options) -> Result<(Loaded, Plan), i32> {
    let loaded = match runbook::load(path) {
        Ok(Ok(l)) => l,
        Ok(Err(problems)) => {
            print_problems(&problems);
            summary(&problems, path);
            return Err(exit::USAGE);
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("{}: nothing was run.", path.display());
            return Err(exit::USAGE);
        }
    };
    if let Err(e) = plan::check_overrides(&loaded, opts) {
        eprintln!("error: {e}");
        eprintln!("{}: nothing was run.", path.display());
        return Err(exit::USAGE);
    }
    match plan::resolve(&loaded, opts) {
        Ok(p) => Ok((loaded, p)),
        Err(problems) => {
            print_problems(&problems);
            summary(&problems, path);
            Err(exit::USAGE)
        }
    }
}

fn summary(problems: &[Problem], path: &Path) {
    let errors = problems
        .iter()
        .filter(|p| p.severity != miette::Severity::Warning)
        .count();
    if errors > 0 {
        eprintln!(
            "{}: {errors} error{} in the runbook; nothing was run.",
            path.display(),
            if errors == 1 { "" } else { "s" }
        );
    }
}

fn check(a: &CheckArgs) -> i32 {
    let opts = Options::from_process_env();
    let (loaded, plan) = match load_plan(&a.runbook, &opts) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let warnings = lint(&loaded, &plan);
    print_problems(&warnings);
    print_rehearsal_notice(&plan);
    let steps: usize = plan.phases.iter().map(|p| p.steps.len()).sum();
    eprintln!(
        "{}: ok: {}, {}, budget {}; {}",
        a.runbook.display(),
        count(plan.phases.len(), "phase"),
        count(steps, "step"),
        plan::fmt_duration(plan.budget),
        count(warnings.len(), "warning"),
    );
    if a.strict && !warnings.is_empty() {
        eprintln!("--strict: warnings count as errors");
        return exit::USAGE;
    }
    exit::OK
}

/// "1 phase", "4 phases".
fn count(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn dry_run(a: &RunArgs) -> i32 {
    let opts = options(&a.resolve);
    let (_, plan) = match load_plan(&a.runbook, &opts) {
        Ok(x) => x,
        Err(code) => return code,
    };
    print!("{}", crate::show::plan_text(&plan));
    exit::OK
}

/// Which step `--from` names: a number, a name (any case), or a unique part of a name.
pub fn find_step(plan: &Plan, want: &str) -> Result<usize, String> {
    let steps: Vec<&plan::Step> = plan.phases.iter().flat_map(|p| &p.steps).collect();
    if let Ok(n) = want.trim().parse::<usize>() {
        if steps.iter().any(|s| s.number == n) {
            return Ok(n);
        }
        return Err(format!(
            "--from {n}: the runbook has steps 1 to {}",
            steps.len()
        ));
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
        [] => Err(format!(
            "--from {want:?}: no step has that name; `recover run --dry-run` lists them"
        )),
        many => Err(format!(
            "--from {want:?} matches {} steps ({}); give the step number",
            many.len(),
            many.iter()
                .map(|s| format!("{} {}", s.number, s.name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The exact command that continues this run.
fn resume_command(a: &RunArgs) -> String {
    let mut parts = vec![
        "recover".to_owned(),
        "run".to_owned(),
        crate::template::shell_quote(&a.runbook.display().to_string()),
        "--resume".to_owned(),
    ];
    if let Some(j) = &a.journal {
        parts.push(format!(
            "--journal {}",
            crate::template::shell_quote(&j.display().to_string())
        ));
    }
    if a.yes {
        parts.push("--yes".into());
    }
    for (k, v) in &a.resolve.vars {
        parts.push(format!(
            "--var {}",
            crate::template::shell_quote(&format!("{k}={v}"))
        ));
    }
    for (k, v) in &a.resolve.targets {
        parts.push(format!(
            "--target {}",
            crate::template::shell_quote(&format!("{k}={v}"))
        ));
    }
    if a.json {
        parts.push("--json".into());
    }
    parts.join(" ")
}

fn run(a: &RunArgs) -> i32 {
    let opts = options(&a.resolve);
    let (_, plan) = match load_plan(&a.runbook, &opts) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if !plan.secrets.missing.is_empty() {
        eprintln!(
            "error: the runbook reads {} from the environment, and {} not set: export {} and run again. Nothing was run.",
            plan.secrets.missing.join(", "),
            if plan.secrets.missing.len() == 1 {
                "it is"
            } else {
                "they are"
            },
            if plan.secrets.missing.len() == 1 {
                "it"
            } else {
                "them"
            },
        );
        return exit::USAGE;
    }

    print_rehearsal_notice(&plan);

    // Where to start: --resume, --from, or the beginning.
    let mut first_step = 1;
    let mut resumed_from = None;
    let mut elapsed_offset = std::time::Duration::ZERO;
    let mut known_boot_ids = std::collections::BTreeMap::new();
    if a.resume {
        let path = a
            .journal
            .clone()
            .or_else(|| crate::journal::latest(&plan.name));
        let Some(path) = path else {
            eprintln!(
                "error: nothing to resume: no journal of `{}` under {}. Start the run without --resume.",
                plan.name,
                crate::journal::runs_dir().display()
            );
            return exit::USAGE;
        };
        match crate::journal::unfinished(&path) {
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
            Ok(None) => {
                eprintln!(
                    "error: nothing to resume: the last run of `{}` ({}) finished successfully.",
                    plan.name,
                    path.display()
                );
                return exit::USAGE;
            }
            Ok(Some(u)) => {
                if u.sha256 != plan.sha256 && !a.force {
                    eprintln!(
                        "error: {} changed since the run being resumed (sha256 {} then, {} now). \
                         Resuming would mix two procedures. Check the change with --dry-run, then resume with --force, or start afresh without --resume.",
                        a.runbook.display(),
                        &u.sha256[..12.min(u.sha256.len())],
                        &plan.sha256[..12]
                    );
                    return exit::USAGE;
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
                first_step = u.step;
                resumed_from = Some(u.run_id.clone());
                elapsed_offset = std::time::Duration::from_secs_f64(u.elapsed.max(0.0));
                known_boot_ids = u.boot_ids.clone();
            }
        }
    } else if let Some(f) = &a.from {
        match find_step(&plan, f) {
            Ok(n) => first_step = n,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        }
    }

    // Manual steps need someone to ask, or --yes: decided before anything runs.
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let manual: Vec<String> = plan
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .filter(|s| s.number >= first_step && matches!(s.action, plan::Action::Manual { .. }))
        .map(|s| format!("{} ({})", s.number, s.name))
        .collect();
    if !manual.is_empty() && !a.yes && !interactive {
        eprintln!(
            "error: there is no terminal to confirm the manual steps {}: do them, then run again with --yes. Nothing was run.",
            manual.join(", ")
        );
        return exit::USAGE;
    }

    let run_id = crate::journal::new_run_id();
    let journal_path = a
        .journal
        .clone()
        .unwrap_or_else(|| crate::journal::Journal::new_path(&plan.name, &run_id));
    let journal = match open_journal(&journal_path) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let term = crate::report::for_terminal(a.json);
    let suspender = term.suspender();
    let sinks: Vec<Box<dyn crate::engine::Sink>> = vec![Box::new(journal), Box::new(term)];
    let out = crate::engine::Emitter::new(
        Box::new(crate::engine::event::Fanout(sinks)),
        plan.secrets.clone(),
    );

    // The prompt draws above the progress bars; nothing is emitted while it waits.
    let prompt: Option<crate::engine::Prompt> = (interactive && !a.yes).then(|| {
        Box::new(move |name: &str, text: &str| suspender.suspend(|| ask(name, text)))
            as crate::engine::Prompt
    });
    let settings = crate::engine::Settings {
        mode: crate::engine::Mode::Run,
        run_id,
        first_step,
        yes: a.yes,
        prompt,
        resumed_from,
        elapsed_offset,
        known_boot_ids,
        resume_command: resume_command(a),
    };
    let code = execute(&plan, settings, out);
    eprintln!("journal: {}", journal_path.display());
    code
}

/// Run the engine on a runtime, with Ctrl-C wired to cancellation.
pub fn execute(plan: &Plan, settings: crate::engine::Settings, out: crate::engine::Emitter) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return exit::USAGE;
        }
    };
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = tx.send(true);
                eprintln!(
                    "\nInterrupted: stopping the current step (Ctrl-C again to quit at once)…"
                );
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(exit::INTERRUPTED);
                }
            }
        });
        let engine = crate::engine::Engine::new(plan, settings, out, rx);
        engine.run().await.exit_code()
    })
}

/// Ask the operator at a manual step, on the terminal.
fn ask(name: &str, text: &str) -> crate::engine::Answer {
    use crate::engine::Answer;
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

fn rehearse(a: &RehearseArgs) -> i32 {
    let opts = options(&a.resolve);
    let (_, plan) = match load_plan(&a.runbook, &opts) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let run_id = crate::journal::new_run_id();
    let journal_path =
        crate::journal::Journal::new_path(&format!("{}-rehearsal", plan.name), &run_id);
    let journal = match open_journal(&journal_path) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let collector = crate::rehearsal::Collector::default();
    let sinks: Vec<Box<dyn crate::engine::Sink>> = vec![
        Box::new(journal),
        Box::new(collector.clone()),
        Box::new(crate::report::for_terminal(a.json)),
    ];
    let out = crate::engine::Emitter::new(
        Box::new(crate::engine::event::Fanout(sinks)),
        plan.secrets.clone(),
    );
    let settings = crate::engine::Settings {
        mode: crate::engine::Mode::Rehearse,
        run_id,
        first_step: 1,
        yes: false,
        prompt: None,
        resumed_from: None,
        elapsed_offset: std::time::Duration::ZERO,
        known_boot_ids: Default::default(),
        resume_command: format!(
            "recover rehearse {}",
            crate::template::shell_quote(&a.runbook.display().to_string())
        ),
    };
    let code = execute(&plan, settings, out);
    let events = collector.events();
    if code == exit::INTERRUPTED {
        eprintln!("Rehearsal interrupted: not recorded.");
        return code;
    }
    let rec = crate::rehearsal::record(&plan, &events);
    for p in rec.phases.iter().filter(|p| p.would_overrun) {
        eprintln!(
            "warning: phase `{}` took longer than its window: it would overrun in a real recovery",
            p.name
        );
    }
    match crate::rehearsal::save(&rec) {
        Ok(p) => eprintln!("rehearsal recorded: {} ({})", p.display(), rec.result),
        Err(e) => eprintln!("warning: cannot record the rehearsal: {e}"),
    }
    if let Some(path) = &a.report {
        let md = crate::rehearsal::markdown(&plan, &rec, &events);
        if let Err(e) = std::fs::write(path, md) {
            eprintln!("error: cannot write the report {}: {e}", path.display());
            return exit::USAGE;
        }
        eprintln!("report: {}", path.display());
    }
    eprintln!("journal: {}", journal_path.display());
    code
}

/// "last rehearsed N days ago", with what needs attention (information, never a lint).
fn print_rehearsal_notice(plan: &Plan) {
    let (notice, attention) = crate::rehearsal::notice(plan);
    eprintln!("rehearsal: {notice}{}", if attention { " (!)" } else { "" });
}

/// The journal, or the exit code when it cannot be written (before anything runs).
fn open_journal(path: &Path) -> Result<crate::journal::Journal, i32> {
    crate::journal::Journal::open(path).map_err(|e| {
        eprintln!(
            "error: cannot write the journal {}: {e}. Nothing was run.",
            path.display()
        );
        exit::USAGE
    })
}
