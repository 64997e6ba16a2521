//! What each command does, from parsed arguments to an exit code.

use std::io::{IsTerminal, Write};
use std::path::Path;

use crate::cli::{CheckArgs, Cli, Cmd, Resolve, RunArgs};
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
        Cmd::Run(_) | Cmd::Rehearse(_) | Cmd::Export(_) => {
            eprintln!("recover: this command is not built yet; `run --dry-run` and `check` are.");
            exit::USAGE
        }
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

fn options(r: &Resolve) -> Options {
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
