//! IPMI through the system `ipmitool` (the operator's own tool, like `ssh`): the command lines
//! for `chassis power on` and `chassis power status`, running them, and reading the answer.
//!
//! The password never appears on a command line: `-E` makes ipmitool read it from the
//! `IPMI_PASSWORD` environment variable, which is set for the child process only.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::duration::fmt_duration;
use crate::template::shell_quote;

/// The program run; found on `PATH`.
pub const IPMITOOL: &str = "ipmitool";
/// Where `-E` makes ipmitool read the password.
pub const PASSWORD_ENV: &str = "IPMI_PASSWORD";
/// RMCP+'s port, left off command lines.
pub const DEFAULT_PORT: u16 = 623;
/// How often `power_on` asks for the status until the chassis reports it is on.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// The most of ipmitool's stderr quoted in an error.
const STDERR_MAX: usize = 300;

/// A BMC reached over the network (`-I lanplus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmc {
    pub host: String,
    pub port: u16,
    pub user: String,
}

/// The two commands a `power_on` step sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    On,
    Status,
}

impl Action {
    fn words(self) -> &'static str {
        match self {
            Action::On => "on",
            Action::Status => "status",
        }
    }
}

/// The chassis power, as `chassis power status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    On,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpmiError {
    #[error("ipmitool is not installed on the management host (apt install ipmitool)")]
    NotInstalled,
    #[error("cannot start ipmitool: {0}")]
    Spawn(String),
    #[error(
        "no IPMI session with {host} as {user}: check the BMC address, the user and IPMI_PASSWORD ({stderr})"
    )]
    Session {
        host: String,
        user: String,
        stderr: String,
    },
    #[error("`{command}` exited with {code}: {stderr}")]
    Failed {
        command: String,
        code: String,
        stderr: String,
    },
    #[error("`{command}` printed no power state: {stdout:?}")]
    NoState { command: String, stdout: String },
    #[error("`{command}` did not finish within {}", fmt_duration(*after))]
    Timeout { command: String, after: Duration },
    #[error("the chassis still reports power off {} after `chassis power on`", fmt_duration(*.0))]
    StillOff(Duration),
}

impl Bmc {
    /// ipmitool's arguments for `action`; `-p` only for a port other than 623.
    pub fn args(&self, action: Action) -> Vec<String> {
        let mut args = vec![
            "-I".into(),
            "lanplus".into(),
            "-H".into(),
            self.host.clone(),
        ];
        if self.port != DEFAULT_PORT {
            args.extend(["-p".into(), self.port.to_string()]);
        }
        args.extend(["-U".into(), self.user.clone(), "-E".into()]);
        args.extend(["chassis", "power", action.words()].map(String::from));
        args
    }

    /// The command line to type, quoted for a POSIX shell (the password comes from
    /// `$IPMI_PASSWORD`).
    pub fn command_line(&self, action: Action) -> String {
        std::iter::once(IPMITOOL.to_string())
            .chain(self.args(action).iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs `action` within `deadline` and returns its standard output.
    pub async fn run(
        &self,
        action: Action,
        password: &str,
        deadline: Duration,
    ) -> Result<String, IpmiError> {
        let command = self.command_line(action);
        let child = tokio::process::Command::new(IPMITOOL)
            .args(self.args(action))
            .env(PASSWORD_ENV, password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => IpmiError::NotInstalled,
                _ => IpmiError::Spawn(e.to_string()),
            })?;
        let out = tokio::time::timeout(deadline, child.wait_with_output())
            .await
            .map_err(|_| IpmiError::Timeout {
                command: command.clone(),
                after: deadline,
            })?
            .map_err(|e| IpmiError::Spawn(e.to_string()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = tail(&String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            return Ok(stdout);
        }
        if stderr.contains("Unable to establish") {
            return Err(IpmiError::Session {
                host: self.host.clone(),
                user: self.user.clone(),
                stderr,
            });
        }
        Err(IpmiError::Failed {
            command,
            code: out
                .status
                .code()
                .map_or_else(|| "a signal".into(), |c| c.to_string()),
            stderr,
        })
    }

    /// `chassis power status`.
    pub async fn status(&self, password: &str, deadline: Duration) -> Result<Power, IpmiError> {
        let stdout = self.run(Action::Status, password, deadline).await?;
        parse_status(&stdout).ok_or_else(|| IpmiError::NoState {
            command: self.command_line(Action::Status),
            stdout: tail(&stdout),
        })
    }

    /// `chassis power on`, then `chassis power status` every second until it says on, all
    /// within `deadline`.
    pub async fn power_on(&self, password: &str, deadline: Duration) -> Result<(), IpmiError> {
        let started = Instant::now();
        let left = || deadline.saturating_sub(started.elapsed());
        self.run(Action::On, password, deadline).await?;
        loop {
            if self.status(password, left()).await? == Power::On {
                return Ok(());
            }
            if left() <= STATUS_EVERY {
                return Err(IpmiError::StillOff(started.elapsed()));
            }
            tokio::time::sleep(STATUS_EVERY).await;
        }
    }
}

/// `Chassis Power is on` / `Chassis Power is off`.
pub fn parse_status(stdout: &str) -> Option<Power> {
    stdout
        .lines()
        .find_map(|l| match l.trim().strip_prefix("Chassis Power is ")? {
            "on" => Some(Power::On),
            "off" => Some(Power::Off),
            _ => None,
        })
}

/// The last lines of `s`, at most [`STDERR_MAX`] characters, on one line.
fn tail(s: &str) -> String {
    let one = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let skip = one.chars().count().saturating_sub(STDERR_MAX);
    one.chars().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bmc(port: u16) -> Bmc {
        Bmc {
            host: "bmc.local".into(),
            port,
            user: "admin".into(),
        }
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            bmc(623).command_line(Action::On),
            "ipmitool -I lanplus -H bmc.local -U admin -E chassis power on"
        );
        assert_eq!(
            bmc(6230).command_line(Action::Status),
            "ipmitool -I lanplus -H bmc.local -p 6230 -U admin -E chassis power status"
        );
        let odd = Bmc {
            host: "bmc.local".into(),
            port: 623,
            user: "o'brien admin".into(),
        };
        assert_eq!(
            odd.command_line(Action::On),
            r"ipmitool -I lanplus -H bmc.local -U 'o'\''brien admin' -E chassis power on"
        );
    }

    #[test]
    fn the_password_is_never_an_argument() {
        let args = bmc(623).args(Action::On);
        assert!(args.contains(&"-E".to_string()));
        assert!(!args.iter().any(|a| a == "-P" || a == "-f"));
    }

    #[test]
    fn parses_the_power_state() {
        assert_eq!(parse_status("Chassis Power is on\n"), Some(Power::On));
        assert_eq!(parse_status("Chassis Power is off"), Some(Power::Off));
        assert_eq!(
            parse_status("Unable to Get Channel Cipher Suites\nChassis Power is on\n"),
            Some(Power::On)
        );
        for other in [
            "",
            "Chassis Power is unknown",
            "chassis power is on",
            "\u{0}\u{ff}",
        ] {
            assert_eq!(parse_status(other), None, "{other:?}");
        }
    }

    #[test]
    fn stderr_is_kept_short() {
        let long = "x".repeat(1000);
        assert_eq!(tail(&format!("first\n{long}")).len(), STDERR_MAX);
        assert_eq!(tail("a\n  b\n"), "a b");
    }
}
