//! Reporters: they consume the engine's [`Event`]s and decide nothing.
//!
//! - [`Tty`]: the live terminal view (timeline, phase, spinner; finished steps above), on stderr;
//! - [`Plain`]: one timestamped line per event, for logs and pipes;
//! - [`Json`]: one JSON record per event on stdout (`--json`), the journal's shape ([`record`]);
//! - [`Summary`]: the end-of-run table of phases against their windows, and the total.
//!
//! [`for_terminal`] picks the human view for wherever stderr goes.

mod fmt;
mod json;
mod plain;
mod summary;
mod tty;

#[cfg(test)]
mod scenarios;

use std::io::IsTerminal;

use indicatif::MultiProgress;

pub use fmt::{clean, clock, duration, one_line, span, window};
pub use json::{Json, record, record_at};
pub use plain::Plain;
pub use summary::Summary;
pub use tty::{Tty, no_color};

use crate::engine::event::{Event, Fanout, Sink};

/// Runs a prompt with the live terminal lines out of the way. Cheap to clone and `Send`, so the
/// engine can hold one apart from the sink. For a plain or JSON reporter it just runs the prompt.
#[derive(Clone, Default)]
pub struct Suspender(Option<MultiProgress>);

impl Suspender {
    fn new(multi: Option<MultiProgress>) -> Self {
        Suspender(multi)
    }

    /// Hide the live lines, run `f`, draw them again. Do not emit events from inside `f`:
    /// the terminal is locked while it runs.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.0 {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }
}

/// The human reporter for this process, and a JSON one beside it when asked.
pub struct Terminal {
    sinks: Fanout,
    suspender: Suspender,
    live: bool,
}

impl Terminal {
    /// The handle the engine uses to ask a manual step's question.
    pub fn suspender(&self) -> Suspender {
        self.suspender.clone()
    }

    /// [`Suspender::suspend`].
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.suspender.suspend(f)
    }

    /// True when the live terminal view is in use (not plain lines).
    pub fn is_live(&self) -> bool {
        self.live
    }
}

impl Sink for Terminal {
    fn emit(&mut self, event: &Event) {
        self.sinks.emit(event);
    }
}

/// True when stderr can show the live view: a terminal, and `TERM` is not `dumb`.
pub fn stderr_is_live() -> bool {
    std::io::stderr().is_terminal() && !matches!(std::env::var("TERM").as_deref(), Ok("dumb"))
}

/// [`Tty`] when stderr is a terminal that can take it, else [`Plain`] on stderr; with `json`,
/// also [`Json`] on stdout (human output stays on stderr).
pub fn for_terminal(json: bool) -> Terminal {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let live = stderr_is_live();
    let suspender = if live {
        let tty = Tty::new();
        let s = tty.suspender();
        sinks.push(Box::new(tty));
        s
    } else {
        sinks.push(Box::new(Plain::stderr()));
        Suspender::default()
    };
    if json {
        sinks.push(Box::new(Json::stdout()));
    }
    Terminal {
        sinks: Fanout(sinks),
        suspender,
        live,
    }
}
