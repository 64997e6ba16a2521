//! Process exit codes: the contract in `--help`, the README and the journal's `exit_code`.
//!
//! The table below is the only place a code is written. A new code is one line in it: the
//! enum, [`Exit::ALL`] and the `--help` text follow.

macro_rules! exit_codes {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $meaning:literal;)+) => {
        /// How the process ends.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Exit {
            $($(#[$doc])* $name = $code,)+
        }

        impl Exit {
            /// Every code, in the order `--help` lists them.
            pub const ALL: &[Exit] = &[$(Exit::$name),+];

            /// What the code means, as `--help` says it.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Exit::$name => $meaning,)+
                }
            }
        }
    };
}

exit_codes! {
    /// The run (or check, or export) did what was asked.
    Ok = 0, "success";
    /// A step failed and the run stopped.
    StepFailed = 1, "a step failed (the run stopped; the journal says which step and why)";
    /// Bad arguments or a bad runbook: nothing was run.
    Usage = 2, "usage or runbook error: nothing was run";
    /// An abort condition ended the run.
    Aborted = 3, "aborted by an abort condition: off the timeline, follow the abort procedure";
    /// Ctrl-C.
    Interrupted = 130, "interrupted (Ctrl-C); the journal is flushed and the resume command printed";
    /// SIGTERM: `systemctl stop`, `kill`.
    Terminated = 143, "terminated (SIGTERM: systemctl stop, kill); stopped as Ctrl-C stops";
    /// SIGHUP: the terminal or the ssh session to the management host closed.
    HungUp = 129, "hung up (SIGHUP: the terminal or session closed); stopped as Ctrl-C stops";
}

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// `Exit codes:` and one line per code, as `--help` prints it; `meaning` overrides the
    /// general wording for a command whose codes say something more precise.
    pub fn table(codes: &[(Exit, &str)]) -> String {
        let mut out = String::from("Exit codes:");
        for (exit, meaning) in codes {
            out.push_str(&format!("\n  {:<5}{meaning}", exit.code()));
        }
        out
    }

    /// The table of every code with its general meaning.
    pub fn table_all() -> String {
        let codes: Vec<(Exit, &str)> = Exit::ALL.iter().map(|e| (*e, e.meaning())).collect();
        Exit::table(&codes)
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_the_documented_ones() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 130, 143, 129]);
    }

    #[test]
    fn the_table_aligns_codes_and_meanings() {
        let t = Exit::table(&[(Exit::Ok, "fine"), (Exit::Interrupted, "stopped")]);
        assert_eq!(t, "Exit codes:\n  0    fine\n  130  stopped");
        assert!(
            Exit::table_all().contains("\n  2    usage or runbook error: nothing was run\n"),
            "{}",
            Exit::table_all()
        );
    }
}
