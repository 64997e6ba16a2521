//! The signals that stop a run: Ctrl-C (SIGINT), a systemd stop or a `kill` (SIGTERM), a
//! closed terminal or a dropped ssh session to the management host (SIGHUP). Each stops the
//! run the same way (the remote command killed, the journal flushed, the resume command
//! printed); the exit code says which, 128 + the signal's number, as a shell reports it.

use tokio::signal::unix::{Signal, SignalKind, signal};

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

    /// "Interrupted (Ctrl-C)", for the line printed when it arrives.
    pub fn describe(self) -> &'static str {
        match self {
            Stop::Interrupt => "Interrupted (Ctrl-C)",
            Stop::Terminate => "Terminated (SIGTERM)",
            Stop::Hangup => "Hung up (SIGHUP: the terminal or session closed)",
        }
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
        assert_eq!(Stop::Interrupt.exit_code(), 130);
        assert_eq!(Stop::Terminate.exit_code(), 143);
        assert_eq!(Stop::Hangup.exit_code(), 129);
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
