//! `recover rehearse`: the read-only steps against the live target, recorded.

use std::io::Write;

use crate::cli::RehearseArgs;
use crate::engine::{self, Confirm, Emitter, Mode, Settings};
use crate::error::Error;
use crate::exit::Exit;
use crate::journal::{self, Journal};
use crate::state::StateDir;

pub fn rehearse(a: &RehearseArgs) -> Result<Exit, Error> {
    let (_, plan) = super::load_plan(&a.runbook, &a.resolve.overlays, &super::options(&a.resolve))?;
    let state = StateDir::from_env().ok_or(Error::NoStateDir)?;
    super::run::say_if_a_run_is_in_progress(&plan, Some(&state));
    let run_id = journal::new_run_id();
    let journal_path =
        Journal::new_path(&state, &format!("{}-rehearsal", plan.state_key()), &run_id);
    let journal = super::run::open_journal(&journal_path)?;
    let collector = crate::rehearsal::Collector::default();
    let sinks: Vec<Box<dyn engine::Sink>> = vec![
        Box::new(journal),
        Box::new(collector.clone()),
        Box::new(crate::report::for_terminal(a.json)),
    ];
    let out = Emitter::new(Box::new(engine::event::Fanout(sinks)), plan.secrets.clone());
    let settings = Settings {
        mode: Mode::Rehearse,
        run_id,
        first_step: 1,
        confirm: Confirm::Refuse,
        started_by: None,
        resume: None,
        resume_command: format!(
            "recover rehearse {}",
            crate::template::shell_quote(&a.runbook.display().to_string())
        ),
        stop: crate::signals::StopCause::default(),
        warnings: Vec::new(),
    };
    let exit = super::run::execute(&plan, settings, out)?;
    let events = collector.events();
    if matches!(exit, Exit::Interrupted | Exit::Terminated | Exit::HungUp) {
        let _ = writeln!(std::io::stderr(), "Rehearsal interrupted: not recorded.");
        return Ok(exit);
    }
    let rec = crate::rehearsal::record(&plan, &events);
    for p in rec.phases.iter().filter(|p| p.would_overrun) {
        eprintln!(
            "warning: phase `{}` took longer than its window: it would overrun in a real recovery",
            p.name
        );
    }
    match crate::rehearsal::save(&state, &rec) {
        Ok(p) => eprintln!("rehearsal recorded: {} ({})", p.display(), rec.result),
        Err(e) => eprintln!("warning: cannot record the rehearsal: {e}"),
    }
    // The rehearsal ran: a report that cannot be written is said, and the rehearsal's own
    // verdict stays the exit code (a 2 would claim nothing was run).
    if let Some(path) = &a.report {
        let md = crate::rehearsal::markdown(&plan, &rec, &events);
        match crate::private::write(path, md) {
            Ok(()) => eprintln!("report: {}", path.display()),
            Err(source) => eprintln!(
                "warning: {}",
                Error::Report {
                    path: path.clone(),
                    source,
                }
            ),
        }
    }
    eprintln!("journal: {}", journal_path.display());
    Ok(exit)
}
