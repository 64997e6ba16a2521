//! `recover audit RUNBOOK [--strict]`: every unit the runbook starts, judged against the six
//! habits, with the drop-in that fixes each warning. Read-only.

use crate::cli::AuditArgs;
use crate::engine::event::{Event, Sink};
use crate::engine::{self, Emitter};
use crate::error::Error;
use crate::exit::Exit;
use crate::report::one_line;

/// Says on stderr what goes wrong with the connection; the audit itself goes to stdout.
struct Stderr;

impl Sink for Stderr {
    fn emit(&mut self, event: &Event) {
        match event {
            Event::ConnectionLost { target, error } => {
                eprintln!(
                    "warning: lost the connection to {target}: {}",
                    one_line(error)
                );
            }
            Event::Warning { message, .. } => eprintln!("warning: {}", one_line(message)),
            _ => {}
        }
    }
}

pub fn audit(a: &AuditArgs) -> Result<Exit, Error> {
    let (_, plan) = super::load_plan(&a.runbook, &a.resolve.overlays, &super::options(&a.resolve))?;
    let out = Emitter::new(Box::new(Stderr), plan.secrets.clone());
    let settings = super::read_only_settings(crate::journal::new_run_id());
    let rt = super::runtime()?;
    let results = rt.block_on(async {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        engine::Engine::new(&plan, settings, out, rx).audit().await
    });
    if results.is_empty() {
        println!("{}: no `start` steps, nothing to audit", plan.name);
        return Ok(Exit::Ok);
    }
    let mut audits = Vec::new();
    let mut unread = 0;
    for r in results {
        match r.result {
            Ok(x) => audits.push(x),
            Err(e) => {
                unread += 1;
                eprintln!("error: step {} ({}): {}", r.step, r.unit, one_line(&e));
            }
        }
    }
    let width = console::Term::stdout()
        .size_checked()
        .map(|(_, w)| usize::from(w))
        .unwrap_or(100);
    print!("{}", crate::audit::render(&audits, width));
    let warnings: usize = audits.iter().map(|x| x.warnings()).sum();
    Ok(if unread > 0 || (a.strict && warnings > 0) {
        Exit::StepFailed
    } else {
        Exit::Ok
    })
}
