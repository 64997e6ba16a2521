//! The one error type of the library. Every variant says what went wrong, where, and what to
//! do next; [`Error::exit_code`] says how the process ends because of it.

use std::path::PathBuf;

use crate::exit::Exit;
use crate::runbook::ReadError;
use crate::runbook::diag::Problem;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    /// The runbook has errors (or, with `--strict`, warnings): each is a miette diagnostic
    /// with file:line:column.
    #[error("{}", problems_summary(path, problems))]
    Runbook {
        path: PathBuf,
        #[related]
        problems: Vec<Problem>,
    },

    #[error("{source}\n{}: nothing was run.", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: ReadError,
    },

    /// A `--target` or `--var` that does not fit the runbook.
    #[error("{message}\n{}: nothing was run.", path.display())]
    Override { path: PathBuf, message: String },

    #[error("--strict: warnings count as errors")]
    StrictWarnings,

    #[error(
        "the runbook reads {} from the environment, and {} not set: export {} and run again. Nothing was run.",
        names.join(", "),
        if names.len() == 1 { "it is" } else { "they are" },
        if names.len() == 1 { "it" } else { "them" }
    )]
    MissingSecrets { names: Vec<String> },

    #[error(
        "nothing to resume: no journal of `{runbook}` under {}. Start the run without --resume.",
        dir.display()
    )]
    NoJournal { runbook: String, dir: PathBuf },

    #[error(
        "nothing to resume: the last run of `{runbook}` ({}) finished successfully.",
        journal.display()
    )]
    AlreadyFinished { runbook: String, journal: PathBuf },

    /// `--resume` cannot use the journal: unreadable, empty, damaged, or not of this Plan.
    #[error("{0}. Nothing was run.")]
    Journal(#[from] crate::journal::JournalError),

    /// Another run holds a lock this run needs.
    #[error("{0}")]
    Locked(#[from] crate::lock::LockError),

    #[error(
        "{} changed since the run being resumed (sha256 {then} then, {now} now). Resuming would mix two procedures. Check the change with --dry-run, then resume with --force, or start afresh without --resume.",
        path.display()
    )]
    RunbookChanged {
        path: PathBuf,
        then: String,
        now: String,
    },

    #[error("--from {number}: the runbook has steps 1 to {steps}")]
    NoSuchStep { number: usize, steps: usize },

    #[error("--from {want:?}: no step has that name; `recover run --dry-run` lists them")]
    NoStepNamed { want: String },

    #[error("--from {want:?} matches {} steps ({}); give the step number", matches.len(), matches.join(", "))]
    AmbiguousStep { want: String, matches: Vec<String> },

    #[error(
        "there is no terminal to confirm the manual steps {}: do them, then run again with --yes (or, with nobody there, --unattended and an `unattended:` key on each). Nothing was run.",
        steps.join(", ")
    )]
    NoTerminal { steps: Vec<String> },

    #[error(
        "there is no state directory for the journal: set XDG_STATE_HOME to an absolute path or HOME, or give --journal. Nothing was run."
    )]
    NoStateDir,

    #[error("cannot write the journal {}: {source}. Nothing was run.", path.display())]
    JournalOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "a drill SIGKILLs {units} on purpose: confirm with --yes, or at a terminal by typing each unit's name. Nothing was killed."
    )]
    DrillNotConfirmed { units: String },
    #[error("--unit {unit}: the runbook starts no such unit (it starts: {known})")]
    NoSuchUnit { unit: String, known: String },
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),

    #[error("cannot write the report {}: {source}", path.display())]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("SOURCE_DATE_EPOCH=`{0}` is not a number of seconds since 1970")]
    SourceDateEpoch(String),

    #[error("cannot render the binder: {0}")]
    Render(#[source] minijinja::Error),

    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write the binder: {0}")]
    Stdout(#[source] std::io::Error),

    #[error("cannot print {what}: {source}")]
    Print {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A sudo command no sudoers rule can permit exactly, or a user name sudoers cannot hold.
    #[error("{0}. Nothing was printed.")]
    Sudoers(#[from] crate::sudoers::SudoersError),

    /// A journal given to `recover report` that cannot be read or holds no run.
    #[error("{0}. Give the journal of a run (`recover run` prints its path at the end).")]
    Incident(#[source] crate::incident::IncidentError),

    #[error(
        "no journal of `{runbook}` under {}: nothing to report. Give the journal's path if it was written elsewhere (--journal).",
        dir.display()
    )]
    NoRunOf { runbook: String, dir: PathBuf },

    #[error(
        "there is no state directory to find journals in: set XDG_STATE_HOME to an absolute path or HOME, or give the journal's path"
    )]
    NoStateDirForReport,

    /// `status`, `hold` and `watch`: what cannot be done, in a sentence.
    #[error("{0}")]
    Usage(String),
}

impl From<crate::runbook::LoadError> for Error {
    fn from(e: crate::runbook::LoadError) -> Self {
        match e {
            crate::runbook::LoadError::Runbook { path, problems } => {
                Error::Runbook { path, problems }
            }
            crate::runbook::LoadError::Unreadable { path, source } => {
                Error::Unreadable { path, source }
            }
        }
    }
}

impl Error {
    /// How the process ends because of this error: nothing was run, so always a usage error.
    pub fn exit_code(&self) -> Exit {
        match self {
            Error::Runbook { .. }
            | Error::Unreadable { .. }
            | Error::Override { .. }
            | Error::StrictWarnings
            | Error::MissingSecrets { .. }
            | Error::NoJournal { .. }
            | Error::AlreadyFinished { .. }
            | Error::Journal(_)
            | Error::Locked(_)
            | Error::RunbookChanged { .. }
            | Error::NoSuchStep { .. }
            | Error::NoStepNamed { .. }
            | Error::AmbiguousStep { .. }
            | Error::NoTerminal { .. }
            | Error::NoStateDir
            | Error::DrillNotConfirmed { .. }
            | Error::NoSuchUnit { .. }
            | Error::JournalOpen { .. }
            | Error::Runtime(_)
            | Error::Report { .. }
            | Error::SourceDateEpoch(_)
            | Error::Render(_)
            | Error::Write { .. }
            | Error::Stdout(_)
            | Error::Print { .. }
            | Error::Sudoers(_)
            | Error::Incident(_)
            | Error::NoRunOf { .. }
            | Error::NoStateDirForReport
            | Error::Usage(_) => Exit::Usage,
        }
    }
}

/// "three-errors.yaml: 3 errors in the runbook; nothing was run."
fn problems_summary(path: &std::path::Path, problems: &[Problem]) -> String {
    let errors = error_count(problems);
    format!(
        "{}: {errors} error{} in the runbook; nothing was run.",
        path.display(),
        if errors == 1 { "" } else { "s" }
    )
}

/// How many of `problems` are errors, not warnings.
pub fn error_count(problems: &[Problem]) -> usize {
    problems
        .iter()
        .filter(|p| p.severity != miette::Severity::Warning)
        .count()
}
