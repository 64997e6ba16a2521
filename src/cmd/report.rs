//! `recover report`: find the journal (or every journal of a runbook), render the incident
//! report or the history, write it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::{ExportFormat, ReportArgs};
use crate::error::Error;
use crate::exit::Exit;
use crate::incident;
use crate::state::StateDir;

pub fn report(a: &ReportArgs) -> Result<Exit, Error> {
    let state = StateDir::from_env();
    let generated =
        super::export::generation_time(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref())?;
    if let Some(rb) = &a.history {
        let state = state.ok_or(Error::NoStateDirForReport)?;
        let name = runbook_name(rb)?;
        let (journals, problems) = incident::journals(&state.runs(), &name);
        for p in &problems {
            eprintln!("warning: {p}");
        }
        let rows = incident::history(&journals);
        let doc = match a.format {
            ExportFormat::Md => incident::history_markdown(&name, &rows),
            ExportFormat::Html => incident::history_html(&name, &rows),
        };
        return write(
            a.output.as_deref(),
            &doc,
            &format!("history of {name} ({} runs)", rows.len()),
        );
    }
    let journal = match (&a.journal, &a.last) {
        (Some(j), _) => j.clone(),
        // clap requires one of JOURNAL, --last and --history
        (None, rb) => {
            let state = state.as_ref().ok_or(Error::NoStateDirForReport)?;
            let name = runbook_name(rb.as_deref().unwrap_or_default())?;
            crate::journal::latest(state, &name).ok_or_else(|| Error::NoRunOf {
                runbook: name,
                dir: state.runs(),
            })?
        }
    };
    let (runs_dir, record) = match &state {
        Some(s) => {
            let probe = incident::load(&journal, &[]).map_err(Error::Incident)?;
            let record = incident::rehearsal_record(&s.rehearsal(&probe.last().key));
            (s.runs(), record)
        }
        None => (PathBuf::new(), None),
    };
    let r = incident::report(&journal, &runs_dir, record.as_ref(), generated)
        .map_err(Error::Incident)?;
    for p in &r.incident.problems {
        eprintln!("warning: {}: {p}", journal.display());
    }
    let doc = match a.format {
        ExportFormat::Md => incident::markdown(&r),
        ExportFormat::Html => incident::html(&r),
    };
    write(
        a.output.as_deref(),
        &doc,
        &format!(
            "report of {} ({})",
            r.incident.last().runbook,
            r.incident.last().result_word()
        ),
    )
}

/// A runbook file's state key (its `name`, or `name@overlay` for an overlay: the lab's runs
/// are not production's), or the argument itself when it is not a file.
fn runbook_name(arg: &str) -> Result<String, Error> {
    let path = Path::new(arg);
    if path.is_file() {
        let loaded = crate::runbook::load(path)?;
        return Ok(crate::plan::state_key(
            &loaded.runbook.name.value,
            loaded.files.iter().map(|f| (f.role, f.path.as_path())),
        ));
    }
    Ok(arg.to_owned())
}

fn write(output: Option<&Path>, doc: &str, what: &str) -> Result<Exit, Error> {
    match output {
        Some(path) => {
            crate::private::write(path, doc).map_err(|source| Error::Write {
                path: path.to_owned(),
                source,
            })?;
            eprintln!("{}: {what} written", path.display());
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(doc.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|source| Error::Write {
                    path: PathBuf::from("standard output"),
                    source,
                })?;
        }
    }
    Ok(Exit::Ok)
}
