//! The Plan and its parts: plain data, every line final.

use std::path::PathBuf;
use std::time::Duration;

use super::Secrets;
use crate::runbook::diag::Pos;
use crate::runbook::model::{Format, Kind, OnFail, Window};
use crate::template::shell_quote;
use crate::verdict::{HttpExpect, Matcher};

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub title: String,
    pub source: PathBuf,
    pub sha256: String,
    pub budget: Duration,
    pub rehearse_every: Option<Duration>,
    pub targets: Vec<TargetSpec>,
    pub channels: Vec<ChannelSpec>,
    pub abort: AbortSpec,
    pub phases: Vec<Phase>,
    pub secrets: Secrets,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub name: String,
    pub host: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub ssh_config: Option<PathBuf>,
    /// Read at each (re)connection: proof of a working session, and a reboot shows.
    pub boot_id: String,
}

impl TargetSpec {
    /// `user@host` (or `host`), the ssh destination.
    pub fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// Whether commands run as root without sudo.
    pub fn is_root(&self) -> bool {
        self.user.as_deref() == Some("root")
    }

    /// The `ssh ...` line a person types to run `remote` on this target by hand.
    pub fn ssh_line(&self, remote: &str) -> String {
        let mut parts = vec!["ssh".to_owned()];
        if let Some(f) = &self.ssh_config {
            parts.push(format!("-F {}", shell_quote(&f.display().to_string())));
        }
        if let Some(p) = self.port {
            parts.push(format!("-p {p}"));
        }
        if let Some(i) = &self.identity {
            parts.push(format!("-i {}", shell_quote(&i.display().to_string())));
        }
        if let Some(k) = &self.known_hosts {
            parts.push(format!(
                "-o UserKnownHostsFile={}",
                shell_quote(&k.display().to_string())
            ));
        }
        parts.push(shell_quote(&self.destination()));
        parts.push(shell_quote(remote));
        parts.join(" ")
    }
}

#[derive(Debug, Clone)]
pub struct ChannelSpec {
    pub name: String,
    pub url: String,
    pub format: Format,
}

#[derive(Debug, Clone, Default)]
pub struct AbortSpec {
    pub channel: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub window: Window,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based, across the whole runbook: what `--from` and the journal use.
    pub number: usize,
    pub name: String,
    pub target: usize,
    pub action: Action,
    pub timeout: Duration,
    pub timeout_explicit: bool,
    pub retry: Option<RetrySpec>,
    pub expect: Option<Matcher>,
    pub abort_if: Option<Matcher>,
    pub on_fail: OnFail,
    pub mutates: bool,
    pub abort_message: Option<String>,
    /// What the step may show that is expected and harmless, for the operator.
    pub expected: Vec<String>,
    /// What `rehearse` does with it.
    pub rehearse: Rehearse,
    /// Where the step starts in the runbook.
    pub pos: Pos,
}

impl Step {
    /// Every command the step may send to its target, in the order they are shown.
    pub fn commands(&self) -> Vec<&Command> {
        let mut out = Vec::new();
        match &self.action {
            Action::Run(c) | Action::Local(c) | Action::DropCaches(c) => out.push(c),
            Action::Start {
                start,
                status,
                health,
                journal,
                ..
            } => {
                out.push(start);
                out.push(status);
                match health.as_ref().map(|g| &g.probe) {
                    Some(Probe::Run { command, .. }) => out.push(command),
                    Some(Probe::Http(r)) => out.extend(&r.on_target),
                    None => {}
                }
                out.push(journal);
            }
            Action::Http(r) => out.extend(&r.on_target),
            Action::Manual { .. } | Action::WaitSsh { .. } | Action::Notify { .. } => {}
        }
        match &self.rehearse {
            Rehearse::CheckPaths(c) | Rehearse::InspectUnit(c) => out.push(c),
            Rehearse::Run | Rehearse::WouldRun => {}
        }
        out
    }
}

/// What `rehearse` does with a step: only read-only lines reach the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rehearse {
    /// Read-only: run as in a real run.
    Run,
    /// Changes state: not run, reported as what would run.
    WouldRun,
    /// A state-changing `run`: not run, but the absolute paths it names are looked for.
    CheckPaths(Command),
    /// A `start`: nothing is started; the unit is inspected and its probe run once.
    InspectUnit(Command),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySpec {
    pub every: Duration,
    pub timeout: Duration,
}

/// A command as the target receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// What the runbook asked for, templates rendered.
    pub script: String,
    pub sudo: bool,
    /// The exact line sent: sudo, remote timeout and kill marker included.
    pub wire: String,
    /// A unique word in the remote process's command line, to find and kill it.
    pub marker: String,
    /// The line that kills the remote process tree on cancel or deadline (`None`: local).
    pub kill: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Action {
    Manual {
        text: String,
    },
    Run(Command),
    Local(Command),
    WaitSsh {
        every: Duration,
        timeout: Duration,
    },
    DropCaches(Command),
    Start {
        unit: String,
        start: Command,
        /// `systemctl show` of the unit's state, read before each probe.
        status: Command,
        health: Option<Box<Gate>>,
        /// What the unit said last, read when it fails.
        journal: Command,
    },
    Http(Request),
    Notify {
        channel: String,
        message: String,
    },
}

impl Action {
    pub fn kind(&self) -> Kind {
        match self {
            Action::Manual { .. } => Kind::Manual,
            Action::Run(_) => Kind::Run,
            Action::Local(_) => Kind::Local,
            Action::WaitSsh { .. } => Kind::WaitSsh,
            Action::DropCaches(_) => Kind::DropCaches,
            Action::Start { .. } => Kind::Start,
            Action::Http(_) => Kind::Http,
            Action::Notify { .. } => Kind::Notify,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub expect: HttpExpect,
    pub timeout: Duration,
    /// `from: target`: sent by this `curl` command on the target instead of from here.
    pub on_target: Option<Command>,
}

#[derive(Debug, Clone)]
pub struct Gate {
    pub every: Duration,
    pub timeout: Duration,
    pub successes: u32,
    pub probe: Probe,
}

#[derive(Debug, Clone)]
pub enum Probe {
    Http(Request),
    Run {
        command: Command,
        expect: Option<Matcher>,
    },
}
