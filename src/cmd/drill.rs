//! `recover drill RUNBOOK [--unit UNIT]... [--yes]`: the chaos test, with consent.

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::DrillArgs;
use crate::engine::{self, Emitter};
use crate::error::Error;
use crate::exit::Exit;
use crate::journal::{self, Journal};
use crate::plan::Action;
use crate::state::StateDir;

pub fn drill(a: &DrillArgs) -> Result<Exit, Error> {
    let (_, plan) = super::load_plan(&a.runbook, &a.resolve.overlays, &super::options(&a.resolve))?;
    let started: Vec<String> = plan
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .filter_map(|s| match &s.action {
            Action::Start { unit, .. } => Some(unit.clone()),
            _ => None,
        })
        .collect();
    for u in &a.units {
        if !started.contains(u) {
            return Err(Error::NoSuchUnit {
                unit: u.clone(),
                known: started.join(", "),
            });
        }
    }
    let chosen: Vec<String> = if a.units.is_empty() {
        started.clone()
    } else {
        a.units.clone()
    };
    if !a.yes && !confirmed(&chosen) {
        return Err(Error::DrillNotConfirmed {
            units: chosen.join(", "),
        });
    }
    let state = StateDir::from_env().ok_or(Error::NoStateDir)?;
    let run_id = journal::new_run_id();
    let journal_path = Journal::new_path(&state, &format!("{}-drill", plan.name), &run_id);
    let journal = super::run::open_journal(&journal_path)?;
    let sinks: Vec<Box<dyn engine::Sink>> = vec![
        Box::new(journal),
        Box::new(crate::report::for_terminal(a.json)),
    ];
    let out = Emitter::new(Box::new(engine::event::Fanout(sinks)), plan.secrets.clone());
    let settings = super::read_only_settings(run_id);
    let rt = super::runtime()?;
    let rows = rt.block_on(async {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        engine::Engine::new(&plan, settings, out, rx)
            .drill(&chosen)
            .await
    });
    print!("{}", crate::drill::table(&rows));
    eprintln!("journal: {}", journal_path.display());
    let all_passed = rows.iter().all(|m| crate::drill::judge(m).passed());
    Ok(if all_passed && rows.len() == chosen.len() {
        Exit::Ok
    } else {
        Exit::StepFailed
    })
}

/// At a terminal, the operator types each unit's name to consent to its kill.
fn confirmed(units: &[String]) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    let mut err = std::io::stderr();
    let stdin = std::io::stdin();
    for u in units {
        let _ = write!(
            err,
            "The drill will SIGKILL the main process of {u} on the live stack.\nType `{u}` to go on: "
        );
        let _ = err.flush();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 || line.trim() != u {
            let _ = writeln!(err, "Not confirmed.");
            return false;
        }
    }
    true
}
