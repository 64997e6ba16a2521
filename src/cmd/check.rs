//! `recover check`: validate and lint, contacting nothing.

use crate::cli::CheckArgs;
use crate::error::Error;
use crate::exit::Exit;
use crate::plan::lint::lint;
use crate::plan::{self, Options};
use crate::state::StateDir;

pub fn check(a: &CheckArgs) -> Result<Exit, Error> {
    let opts = Options {
        unattended: a.unattended,
        ..Options::from_process_env()
    };
    let (loaded, plan) = super::load_plan(&a.runbook, &[], &opts)?;
    let warnings = lint(&loaded, &plan);
    super::print_problems(&warnings);
    super::print_rehearsal_notice(StateDir::from_env().as_ref(), &plan);
    super::print_drill_notice(StateDir::from_env().as_ref(), &plan);
    if let Some(s) = StateDir::from_env()
        && let Some(h) = crate::hold::current(&s, &plan.state_key())
    {
        eprintln!("hold: {} (`recover watch` starts nothing)", h.describe());
    }
    if plan.files.len() > 1 {
        for f in &plan.files {
            eprintln!(
                "{}: {} {}, sha256 {}",
                a.runbook.display(),
                f.role.label(),
                f.path.display(),
                f.sha256
            );
        }
    }
    let steps: usize = plan.phases.iter().map(|p| p.steps.len()).sum();
    eprintln!(
        "{}: ok: {}, {}, budget {}; {}",
        a.runbook.display(),
        super::count(plan.phases.len(), "phase"),
        super::count(steps, "step"),
        plan::fmt_duration(plan.budget),
        super::count(warnings.len(), "warning"),
    );
    if a.strict && !warnings.is_empty() {
        return Err(Error::StrictWarnings);
    }
    Ok(Exit::Ok)
}
