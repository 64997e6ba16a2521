//! The command layer: one module per command, from typed arguments to an [`Exit`].
//!
//! Each command returns `Ok(exit)` for how it ended or `Err(Error)` when it could not start;
//! only this layer prints what the reporters do not, and only `main` exits.

mod audit;
mod check;
mod drill;
mod export;
mod hold;
mod rehearse;
mod report;
mod run;
mod status;
mod sudoers;
mod tools;
mod watch;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::cli::{Cli, Cmd, Resolve};
use crate::error::{Error, error_count};
use crate::exit::Exit;
use crate::plan::{self, Options, Plan};
use crate::runbook::diag::Problem;
use crate::runbook::{self, Loaded};
use crate::state::StateDir;

/// Run the command the arguments name.
pub fn main(cli: Cli) -> Result<Exit, Error> {
    match cli.command {
        Cmd::Check(a) => check::check(&a),
        Cmd::Run(a) if a.dry_run => run::dry_run(&a),
        Cmd::Run(a) => run::run(&a),
        Cmd::Rehearse(a) => rehearse::rehearse(&a),
        Cmd::Export(a) => export::export(&a),
        Cmd::Sudoers(a) => sudoers::sudoers(&a),
        Cmd::Schema => tools::schema(),
        Cmd::Completions { shell } => tools::completions(shell),
        Cmd::Man { dir } => tools::man(dir.as_deref()),
        Cmd::Audit(a) => audit::audit(&a),
        Cmd::Drill(a) => drill::drill(&a),
        Cmd::Report(a) => report::report(&a),
        Cmd::Status(a) => status::status(&a),
        Cmd::Hold(a) => hold::hold(&a),
        Cmd::Watch(a) => watch::watch(&a),
    }
}

/// Print an error the way the operator reads it, and say how the process ends.
pub fn report_error(e: &Error) -> Exit {
    match e {
        Error::Runbook { problems, .. } => {
            print_problems(problems);
            if error_count(problems) > 0 {
                eprintln!("{e}");
            }
        }
        Error::StrictWarnings => eprintln!("{e}"),
        _ => eprintln!("error: {e}"),
    }
    e.exit_code()
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

/// One problem as `print_problems` draws it below its headline.
pub fn render_problem(p: &Problem) -> String {
    let mut out = String::new();
    let _ = handler().render_report(&mut out, p);
    out
}

fn handler() -> miette::GraphicalReportHandler {
    let color = std::io::stderr().is_terminal() && !crate::report::no_color();
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    miette::GraphicalReportHandler::new_themed(theme).with_context_lines(2)
}

/// `--var` and `--target` over the process environment.
fn options(r: &Resolve) -> Options {
    Options {
        vars: r.vars.clone(),
        targets: r.targets.clone(),
        identities: r.identities.clone(),
        known_hosts: r.known_hosts.clone(),
        ..Options::from_process_env()
    }
}

/// Load the runbook at `path` with its `--overlay` files, and resolve it.
fn load_plan(path: &Path, overlays: &[PathBuf], opts: &Options) -> Result<(Loaded, Plan), Error> {
    let loaded = runbook::load_with(path, overlays)?;
    plan::check_overrides(&loaded, opts).map_err(|message| Error::Override {
        path: path.to_path_buf(),
        message,
    })?;
    let plan = plan::resolve(&loaded, opts).map_err(|problems| Error::Runbook {
        path: path.to_path_buf(),
        problems,
    })?;
    Ok((loaded, plan))
}

/// "last rehearsed N days ago", with what needs attention (information, never a lint).
fn print_rehearsal_notice(state: Option<&StateDir>, plan: &Plan) {
    let (notice, attention) = crate::rehearsal::notice(state, plan);
    eprintln!("rehearsal: {notice}{}", if attention { " (!)" } else { "" });
}

/// "last drilled N days ago" for each unit the runbook starts, with its measured restart and
/// reload times; the units never drilled on one line (information, never a lint).
fn print_drill_notice(state: Option<&StateDir>, plan: &Plan) {
    let drills = state.map_or(crate::drill::record::Drills::Never, |s| {
        crate::drill::record::read(&s.drill(&plan.state_key()))
    });
    let now = chrono::Utc::now();
    let mut never = Vec::new();
    for s in plan.steps() {
        let plan::Action::Start { unit, .. } = &s.action else {
            continue;
        };
        match (&drills, drills.unit(unit)) {
            (crate::drill::record::Drills::Unreadable { .. }, _) | (_, Some(_)) => {
                let (text, attention) = crate::drill::record::describe(&drills, unit, now);
                eprintln!(
                    "drill: {unit}: {text}{}",
                    if attention { " (!)" } else { "" }
                );
            }
            _ => never.push(unit.as_str()),
        }
    }
    if !never.is_empty() {
        eprintln!(
            "drill: never drilled: {} (`recover drill` times each one's restart on the live stack)",
            never.join(", ")
        );
    }
}

/// "1 phase", "4 phases".
fn count(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// The engine's settings for a command that only reads the live stack or acts on it outside a
/// run (`audit`, `drill`): rehearsal mode, nothing to confirm, nothing to resume.
fn read_only_settings(run_id: String) -> crate::engine::Settings {
    crate::engine::Settings {
        mode: crate::engine::Mode::Rehearse,
        run_id,
        first_step: 1,
        confirm: crate::engine::Confirm::Refuse,
        started_by: None,
        resume: None,
        resume_command: String::new(),
        stop: crate::signals::StopCause::default(),
        warnings: Vec::new(),
    }
}

/// The runtime the engine runs on: two worker threads are plenty for one run's I/O.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}
