//! `recover status RUNBOOK [--json]`: one read-only pass, bounded to a few seconds.

use crate::cli::StatusArgs;
use crate::error::Error;
use crate::exit::Exit;
use crate::state::StateDir;
use crate::status::{Bounds, Places, check};

pub fn status(a: &StatusArgs) -> Result<Exit, Error> {
    let (_, plan) = super::load_plan(&a.runbook, &a.resolve.overlays, &super::options(&a.resolve))?;
    let places = places(StateDir::from_env());
    let rt = super::runtime()?;
    let report = rt.block_on(check(&plan, &places, Bounds::default()));
    if a.json {
        let text = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
        println!("{}", plan.secrets.redact(&text));
    } else {
        print!("{}", plan.secrets.redact(&report.table()));
    }
    Ok(report.health.exit())
}

/// Where a run of this account would hold its lock, the hold and the journals.
pub(super) fn places(state: Option<StateDir>) -> Places {
    Places {
        lock_dirs: super::run::lock_dirs(state.as_ref()),
        state,
    }
}
