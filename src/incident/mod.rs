//! After the incident: a run's journal read back into what happened ([`Incident`]), set beside
//! the runs before it ([`Baseline`]), with where the time went ([`TimeSplit`]), rendered as
//! Markdown or as one self-contained HTML page with an SVG timeline. Pure functions of the
//! journals; the command layer finds the files and writes the output.
//!
//! (`report/` is the live view during a run; this is the report written afterwards.)

mod history;
mod html;
mod markdown;
mod model;
mod read;
mod svg;
mod time;
mod view;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

pub use history::{
    Baseline, HistoryRow, Journaled, baselines, chain, history, journals, latest, versus,
};
pub use html::{history_html, html};
pub use markdown::{history_markdown, markdown};
pub use model::{End, Incident, Mark, MarkKind, Phase, Probe, Run, Step};
pub use read::parse;
pub use time::{Share, TimeSplit};

use crate::rehearsal::Record;

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("cannot read the journal {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no run (no readable `run_started` line){}", first_problem(.problems))]
    NoRun {
        path: PathBuf,
        problems: Vec<String>,
    },
}

fn first_problem(problems: &[String]) -> String {
    problems
        .first()
        .map(|p| format!(": {p}"))
        .unwrap_or_default()
}

/// Everything a report page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub journal: PathBuf,
    pub incident: Incident,
    pub baselines: Vec<Baseline>,
    /// When the report was made (shown at the foot of the page).
    pub generated: DateTime<Utc>,
}

impl Report {
    /// The split of the incident's time.
    pub fn time_split(&self) -> TimeSplit {
        let steps = self.incident.steps();
        TimeSplit::with_retries(
            self.incident.wall(),
            steps.iter().filter(|s| s.ran()).filter_map(|s| {
                Some((s.kind?, s.duration.unwrap_or(0.0), s.waited.unwrap_or(0.0)))
            }),
        )
    }
}

/// Read the journal at `path` into an incident (with the runs it resumed, looked for among
/// `others`), tolerating cut and garbled lines.
pub fn load(path: &Path, others: &[Journaled]) -> Result<Incident, IncidentError> {
    let bytes = std::fs::read(path).map_err(|source| IncidentError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (runs, problems) = parse(&String::from_utf8_lossy(&bytes));
    if runs.is_empty() {
        return Err(IncidentError::NoRun {
            path: path.to_owned(),
            problems,
        });
    }
    Ok(Incident {
        segments: chain(runs, others),
        problems,
    })
}

/// The report of the journal at `path`: the incident, and the baselines among the runbook's
/// other journals under `runs_dir` and its rehearsal record.
pub fn report(
    path: &Path,
    runs_dir: &Path,
    record: Option<&Record>,
    generated: DateTime<Utc>,
) -> Result<Report, IncidentError> {
    let probe = load(path, &[])?;
    let (others, _) = journals(runs_dir, &probe.last().key);
    let incident = load(path, &others)?;
    let baselines = baselines(&incident, &others, record);
    Ok(Report {
        journal: path.to_owned(),
        incident,
        baselines,
        generated,
    })
}

/// The rehearsal record at `path` (`rehearsal::path`), with its phase timings; `None` when it is
/// missing or cannot be understood (the report then compares with journals only).
pub fn rehearsal_record(path: &Path) -> Option<Record> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}
