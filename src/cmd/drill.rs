//! `recover drill RUNBOOK [--unit UNIT]... [--yes]`: the chaos test, with consent.

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::DrillArgs;
use crate::drill::record;
use crate::engine::{self, Emitter};
use crate::error::Error;
use crate::exit::Exit;
use crate::journal::{self, Journal};
use crate::lock;
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
    // Consent: --yes, or each unit's name typed at a terminal; without either nothing runs.
    let consent = a.yes
        || (std::io::stdin().is_terminal()
            && confirmed(
                &chosen,
                &mut std::io::stdin().lock(),
                &mut std::io::stderr(),
            ));
    if !consent {
        return Err(Error::DrillNotConfirmed {
            units: chosen.join(", "),
        });
    }
    let state = StateDir::from_env().ok_or(Error::NoStateDir)?;
    let key = plan.state_key();
    let run_id = journal::new_run_id();
    let journal_path = Journal::new_path(&state, &format!("{key}-drill"), &run_id);
    // A drill kills live processes: never beside a run of this runbook or against this host
    // (the run's own lock, taken before anything is contacted).
    let locks = super::run::locks_for_run(Some(&state));
    let (_lock, taken_over) = locks.acquire(
        &super::run::lock_keys(&plan),
        &lock::Owner::me(&plan.name, &journal_path),
    )?;
    for w in locks
        .warning
        .iter()
        .cloned()
        .chain(taken_over.iter().map(lock::TakenOver::warning))
    {
        eprintln!("warning: {w}");
    }
    let journal = super::run::open_journal(&journal_path)?;
    let sinks: Vec<Box<dyn engine::Sink>> = vec![
        Box::new(journal),
        Box::new(crate::report::for_terminal(a.json)),
    ];
    let out = Emitter::new(Box::new(engine::event::Fanout(sinks)), plan.secrets.clone());
    let settings = super::read_only_settings(run_id);
    let stop_cause = settings.stop.clone();
    let rt = super::runtime()?;
    let rows = rt.block_on(async {
        // Ctrl-C, SIGTERM and SIGHUP stop the drill between polls (the unit being drilled is
        // not recorded); a second one quits at once.
        let rx = super::run::cancel_on_signals(stop_cause.clone(), "the drill")?;
        Ok::<_, Error>(
            engine::Engine::new(&plan, settings, out, rx)
                .drill(&chosen)
                .await,
        )
    })?;
    print!("{}", crate::drill::table(&rows));
    let now = chrono::Utc::now();
    let entries: Vec<(String, record::UnitDrill)> = rows
        .iter()
        .filter_map(|m| Some((m.unit.clone(), record::entry(m, &plan.sha256, now)?)))
        .collect();
    if !entries.is_empty() {
        let path = state.drill(&key);
        match record::save(&path, entries) {
            Ok(()) => eprintln!("drill recorded: {}", path.display()),
            Err(e) => eprintln!(
                "warning: cannot record the drill in {}: {e}",
                path.display()
            ),
        }
    }
    let _ = writeln!(std::io::stderr(), "journal: {}", journal_path.display());
    if let Some(stop) = stop_cause.get() {
        return Ok(stop.exit());
    }
    let all_passed = rows.iter().all(|m| crate::drill::judge(m).passed());
    Ok(if all_passed && rows.len() == chosen.len() {
        Exit::Ok
    } else {
        Exit::StepFailed
    })
}

/// The operator types each unit's name to consent to its kill; anything else (or the end of
/// the input) refuses, and nothing is killed.
fn confirmed(units: &[String], input: &mut dyn BufRead, err: &mut dyn Write) -> bool {
    for u in units {
        let _ = write!(
            err,
            "The drill will SIGKILL the main process of {u} on the live stack.\nType `{u}` to go on: "
        );
        let _ = err.flush();
        let mut line = String::new();
        if input.read_line(&mut line).unwrap_or(0) == 0 || line.trim() != u {
            let _ = writeln!(err, "Not confirmed.");
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(units: &[&str], typed: &str) -> (bool, String) {
        let units: Vec<String> = units.iter().map(|u| u.to_string()).collect();
        let mut err = Vec::new();
        let ok = confirmed(&units, &mut typed.as_bytes(), &mut err);
        (ok, String::from_utf8(err).unwrap())
    }

    #[test]
    fn typing_each_units_name_consents() {
        let (ok, said) = ask(&["a.service", "b.service"], "a.service\n  b.service  \n");
        assert!(ok, "{said}");
        assert_eq!(said.matches("Type `").count(), 2, "{said}");
        assert!(
            said.contains("SIGKILL the main process of b.service"),
            "{said}"
        );
    }

    #[test]
    fn anything_else_refuses_at_the_first_wrong_answer() {
        for typed in ["yes\n", "a\n", "", "a.service\nb\n", "A.SERVICE\n"] {
            let (ok, said) = ask(&["a.service", "b.service"], typed);
            assert!(!ok, "{typed:?}: {said}");
            assert!(said.ends_with("Not confirmed.\n"), "{typed:?}: {said}");
        }
        // refused at the first unit: the second is never asked
        let (_, said) = ask(&["a.service", "b.service"], "no\n");
        assert!(!said.contains("b.service"), "{said}");
    }
}
