//! The signals that stop a run: Ctrl-C (SIGINT), a systemd stop or a `kill` (SIGTERM), a
//! closed terminal or a dropped ssh session to the management host (SIGHUP). Each stops the
//! run the same way (the remote command killed, the journal flushed, the resume command
//! printed); the exit code says which, 128 + the signal's number, as a shell reports it.
//!
//! One stop often arrives more than once: a closed terminal sends SIGHUP to the foreground
//! process group and the shell sends it again to its jobs; `timeout`, and supervisors like it,
//! signal the process and then its group. The two deliveries come microseconds apart and,
//! when the kernel has not merged them, the second used to be taken for "again to quit at
//! once": `recover` exited without killing the remote command or finishing the journal. A
//! second signal now quits at once only when it is a deliberate one ([`Stop::quits_at_once`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::exit::Exit;

/// Why a run was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// SIGINT: Ctrl-C.
    Interrupt,
    /// SIGTERM: `systemctl stop`, `kill`.
    Terminate,
    /// SIGHUP: the terminal or the ssh session to the management host went away.
    Hangup,
}

impl Stop {
    pub fn exit_code(self) -> i32 {
        128 + self.number()
    }

    /// How the process ends after it.
    pub fn exit(self) -> Exit {
        match self {
            Stop::Interrupt => Exit::Interrupted,
            Stop::Terminate => Exit::Terminated,
            Stop::Hangup => Exit::HungUp,
        }
    }

    /// The signal's number on Linux.
    pub fn number(self) -> i32 {
        match self {
            Stop::Interrupt => libc::SIGINT,
            Stop::Terminate => libc::SIGTERM,
            Stop::Hangup => libc::SIGHUP,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
            Stop::Hangup => "SIGHUP",
        }
    }

    /// The interrupted step's reason: which signal stopped it, and from where.
    pub fn step_reason(self) -> &'static str {
        match self {
            Stop::Interrupt => "interrupted by the operator (Ctrl-C)",
            Stop::Terminate => "terminated by SIGTERM (systemctl stop, kill)",
            Stop::Hangup => "hung up: SIGHUP (the terminal or the ssh session closed)",
        }
    }

    /// Whether this signal, arriving `after` the one that stopped the run, quits at once. Only
    /// a deliberate second Ctrl-C or SIGTERM does, at least [`REPEAT_WINDOW`] after the first:
    /// within it, a signal is the same stop delivered twice; a SIGHUP never does (nobody is
    /// left at the closed terminal to send it on purpose).
    pub fn quits_at_once(self, after: Duration) -> bool {
        self != Stop::Hangup && after >= REPEAT_WINDOW
    }

    /// What the line printed at the first signal says about a second one.
    pub fn again(self) -> &'static str {
        match self {
            Stop::Hangup => "",
            Stop::Interrupt | Stop::Terminate => " (again to quit at once)",
        }
    }

    /// "Interrupted (Ctrl-C)", for the line printed when it arrives.
    pub fn describe(self) -> &'static str {
        match self {
            Stop::Interrupt => "Interrupted (Ctrl-C)",
            Stop::Terminate => "Terminated (SIGTERM)",
            Stop::Hangup => "Hung up (SIGHUP: the terminal or session closed)",
        }
    }
}

/// How long after the first stop a second signal is taken for the same stop delivered twice
/// (the kernel's and the shell's SIGHUP, `timeout`'s signal to the process and to its group)
/// and changes nothing. A person's second Ctrl-C comes later than this.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(1);

/// Which signal stopped a run: set once by whoever cancels the run, before it cancels, and
/// read by the engine to say so and exit with the signal's code.
#[derive(Debug, Clone, Default)]
pub struct StopCause(Arc<OnceLock<Stop>>);

impl StopCause {
    /// Records the first stop; later ones change nothing.
    pub fn set(&self, stop: Stop) {
        let _ = self.0.set(stop);
    }

    pub fn get(&self) -> Option<Stop> {
        self.0.get().copied()
    }
}

/// The three signals, listened to from the moment this is made (the default action, dying
/// at once, no longer applies). Needs a tokio runtime with signals enabled.
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    pub fn listen() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next of the three to arrive.
    pub async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.int.recv() => Stop::Interrupt,
            _ = self.term.recv() => Stop::Terminate,
            _ = self.hup.recv() => Stop::Hangup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_128_plus_the_signal() {
        for s in [Stop::Interrupt, Stop::Terminate, Stop::Hangup] {
            assert_eq!(i32::from(s.exit().code()), s.exit_code());
        }
        assert_eq!(Stop::Terminate.exit_code(), 143);
        assert_eq!(Stop::Hangup.exit_code(), 129);
        let cause = StopCause::default();
        cause.set(Stop::Hangup);
        cause.set(Stop::Interrupt);
        assert_eq!(cause.get(), Some(Stop::Hangup));
    }

    #[test]
    fn only_a_deliberate_second_signal_quits_at_once() {
        let soon = Duration::from_millis(1);
        let later = REPEAT_WINDOW + Duration::from_millis(1);
        for s in [Stop::Interrupt, Stop::Terminate, Stop::Hangup] {
            assert!(!s.quits_at_once(Duration::ZERO), "{s:?}");
            assert!(!s.quits_at_once(soon), "{s:?}");
        }
        assert!(Stop::Interrupt.quits_at_once(later));
        assert!(Stop::Terminate.quits_at_once(later));
        assert!(!Stop::Hangup.quits_at_once(later));
        assert!(!Stop::Hangup.quits_at_once(Duration::from_secs(3600)));
        assert_eq!(Stop::Hangup.again(), "");
        assert!(Stop::Interrupt.again().contains("again"));
    }

    #[tokio::test]
    async fn each_signal_is_told_apart() {
        let mut s = Signals::listen().unwrap();
        for stop in [Stop::Hangup, Stop::Terminate] {
            // SAFETY: raise(3) a signal this process now handles.
            assert_eq!(unsafe { libc::raise(stop.number()) }, 0);
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), s.next())
                .await
                .expect("the signal arrives");
            assert_eq!(got, stop);
        }
    }
}
