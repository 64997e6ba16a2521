//! The Plan and its parts: plain data, every line final.

use std::path::PathBuf;
use std::time::Duration;

use super::Secrets;
use crate::runbook::File;
use crate::runbook::diag::Pos;
use crate::runbook::model::{Format, Kind, OnFail, Window};
use crate::template::shell_quote;
use crate::verdict::{HttpExpect, Matcher};

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub title: String,
    /// The file given on the command line, and the sha256 of every file read.
    pub source: PathBuf,
    pub sha256: String,
    /// Every file read (an overlay, then what it extends), each with its own sha256.
    pub files: Vec<File>,
    pub budget: Duration,
    pub rehearse_every: Option<Duration>,
    pub targets: Vec<TargetSpec>,
    pub channels: Vec<ChannelSpec>,
    pub abort: AbortSpec,
    pub phases: Vec<Phase>,
    pub secrets: Secrets,
}

impl Plan {
    /// Every step, in order, across the phases.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.phases.iter().flat_map(|p| &p.steps)
    }

    /// The `start` steps, in order, with the unit each starts.
    pub fn started_units(&self) -> impl Iterator<Item = (&Step, &str)> {
        self.steps().filter_map(|s| match &s.action {
            Action::Start { unit, .. } => Some((s, unit.as_str())),
            _ => None,
        })
    }

    /// The name this runbook's records go by (journal file names, the rehearsal and drill
    /// records, `report --last` and `--history`): see [`state_key`].
    pub fn state_key(&self) -> String {
        state_key(
            &self.name,
            self.files.iter().map(|f| (f.role, f.path.as_path())),
        )
    }
}

/// The key of a runbook's state: its `name` for a runbook run as it is; for an overlay (the
/// file given is one with `extends:`, or `--overlay` files are laid over it) `name@STEM`, with
/// the stem of the file given and of each `--overlay` file (`spark-power@lab`,
/// `spark-power@lab+night`). So a rehearsal of the lab overlay never stands for one of the
/// production runbook, and their journals and histories stay apart. Characters outside
/// `[A-Za-z0-9._-]` in a stem become `_`: the key names files.
pub fn state_key<'p>(
    name: &str,
    files: impl Iterator<Item = (crate::runbook::Role, &'p std::path::Path)>,
) -> String {
    use crate::runbook::Role;
    let files: Vec<(Role, &std::path::Path)> = files.collect();
    let extends = files.iter().any(|(r, _)| *r == Role::Base);
    let stem = |p: &std::path::Path| -> String {
        p.file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let layers: Vec<String> = files
        .iter()
        .filter(|(r, _)| (*r == Role::Runbook && extends) || *r == Role::Overlay)
        .map(|(_, p)| stem(p))
        .collect();
    if layers.is_empty() {
        name.to_owned()
    } else {
        format!("{name}@{}", layers.join("+"))
    }
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
    /// `failures: true`: the failure post goes here (instead of the abort channel).
    pub failures: bool,
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
    /// `when: unclean_shutdown`: the number of the earlier `previous_boot` step whose verdict
    /// decides; the step is skipped (and says so) only when that step found a clean shutdown.
    pub when_unclean: Option<usize>,
    /// `survives_reboot: true` (manual and local steps only): when the box rebooted under the
    /// run, the run starts again from its beginning but does not repeat this step if it was
    /// done before.
    pub survives_reboot: bool,
    /// What `rehearse` does with it.
    pub rehearse: Rehearse,
    /// Rehearsal's `sudo -n -l` of every command the step runs with sudo (it runs nothing):
    /// prints each one the target's sudoers does not permit. `None` without sudo.
    pub sudo_check: Option<Command>,
    /// Where the step starts in the runbook.
    pub pos: Pos,
}

impl Step {
    /// Every command the step may send to its target, in the order they are shown.
    pub fn commands(&self) -> Vec<&Command> {
        let mut out = Vec::new();
        match &self.action {
            Action::Run(c) | Action::Local(c) | Action::DropCaches(c) => out.push(c),
            Action::PreviousBoot { command, .. } => out.push(command),
            Action::Start {
                start,
                status,
                health,
                journal,
                audit,
                drill,
                ..
            } => {
                out.push(start);
                out.push(status);
                out.push(audit);
                out.push(&drill.state);
                out.push(&drill.kill);
                match health.as_ref().map(|g| &g.probe) {
                    Some(Probe::Run { command, .. }) => out.push(command),
                    Some(Probe::Http(r)) => out.extend(&r.on_target),
                    None => {}
                }
                if let Some(r) = health.as_ref().and_then(|g| g.remedy.as_ref()) {
                    out.push(&r.apply);
                }
                out.push(journal);
            }
            Action::Http(r) => out.extend(&r.on_target),
            Action::Manual { .. }
            | Action::WaitSsh { .. }
            | Action::Notify { .. }
            | Action::Ups(_)
            | Action::PowerOn(_) => {}
        }
        match &self.rehearse {
            Rehearse::CheckPaths(c) | Rehearse::InspectUnit(c) => out.push(c),
            Rehearse::Run | Rehearse::WouldRun => {}
        }
        out.extend(&self.sudo_check);
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
    /// Every argument list this command runs with `sudo -n` (the command, then its kill
    /// signals), each argument free of blanks: what `recover sudoers` permits and `rehearse`
    /// checks with `sudo -n -l`. Empty without sudo.
    pub sudo_argvs: Vec<Vec<String>>,
}

#[derive(Debug, Clone)]
// A Plan is built once per command and holds a few dozen steps: the size of its largest
// variant (a start step with its gate, remedy, audit and drill lines) costs nothing that matters.
#[allow(clippy::large_enum_variant)]
pub enum Action {
    Manual {
        text: String,
        /// `pass:`: what is true once it is done.
        pass: Option<String>,
        /// What an unattended run does here (`None`: it cannot run unattended).
        unattended: Option<crate::runbook::model::Unattended>,
    },
    Run(Command),
    Local(Command),
    WaitSsh {
        every: Duration,
        timeout: Duration,
        otherwise: Option<Otherwise>,
    },
    DropCaches(Command),
    /// The previous-boot evidence, read-only.
    PreviousBoot {
        command: Command,
        on_unclean: crate::runbook::model::OnUnclean,
    },
    Start {
        unit: String,
        start: Command,
        /// `systemctl show` of the unit's state, read before each probe.
        status: Command,
        health: Option<Box<Gate>>,
        /// What the unit said last, read when it fails.
        journal: Command,
        /// `systemctl show` of what `recover audit` (and `rehearse`) judge; read-only.
        audit: Command,
        /// `recover drill`'s lines: the unit's state (main pid, restarts) and the SIGKILL.
        drill: Box<DrillLines>,
    },
    Http(Request),
    Notify {
        channel: String,
        message: String,
    },
    Ups(UpsWait),
    PowerOn(PowerOn),
}

/// What a `wait_ssh` does when it times out: ask a person, then wait again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otherwise {
    pub text: String,
    /// Where the ask is posted (the step's `notify`, else the abort channel).
    pub channel: Option<String>,
    /// How long the second wait lasts.
    pub timeout: Duration,
}

/// A `ups` step: read the UPS every `every` until it has been on line for long enough.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsWait {
    pub ups: crate::power::nut::Ups,
    pub want: crate::power::nut::Stable,
    pub every: Duration,
    pub timeout: Duration,
}

/// A `power_on` step, from the management host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerOn {
    /// The magic packet for `mac`, by UDP to `address:port`.
    Wol {
        mac: crate::power::wol::Mac,
        address: String,
        port: u16,
    },
    /// `ipmitool ... chassis power on`, then `... chassis power status` until it says on.
    Ipmi {
        bmc: crate::power::ipmi::Bmc,
        /// Given to ipmitool as `IPMI_PASSWORD`, never on its command line.
        password: String,
        on: String,
        status: String,
    },
}

impl PowerOn {
    /// What a person types to do it by hand.
    pub fn by_hand(&self) -> Vec<String> {
        match self {
            PowerOn::Wol { mac, address, port } => vec![format!(
                "wakeonlan -i {} -p {port} {mac}",
                shell_quote(address)
            )],
            PowerOn::Ipmi { on, status, .. } => vec![on.clone(), status.clone()],
        }
    }
}

impl Action {
    pub fn kind(&self) -> Kind {
        match self {
            Action::Manual { .. } => Kind::Manual,
            Action::Run(_) => Kind::Run,
            Action::Local(_) => Kind::Local,
            Action::WaitSsh { .. } => Kind::WaitSsh,
            Action::DropCaches(_) => Kind::DropCaches,
            Action::PreviousBoot { .. } => Kind::PreviousBoot,
            Action::Start { .. } => Kind::Start,
            Action::Http(_) => Kind::Http,
            Action::Notify { .. } => Kind::Notify,
            Action::Ups(_) => Kind::Ups,
            Action::PowerOn(_) => Kind::PowerOn,
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
    pub remedy: Option<GateRemedy>,
}

/// What `recover drill` sends for a start step's unit.
#[derive(Debug, Clone)]
pub struct DrillLines {
    /// `systemctl show` with the main pid, the restart count and `Restart=`.
    pub state: Command,
    /// SIGKILL of the main pid systemd reports at that moment.
    pub kill: Command,
}

/// A gate's `remedy:`: when and how often, and the line that applies it.
#[derive(Debug, Clone)]
pub struct GateRemedy {
    pub policy: crate::remedy::Policy,
    /// The kill (MainPID read from systemd on the spot), the restart, or the runbook's command.
    pub apply: Command,
}

#[derive(Debug, Clone)]
pub enum Probe {
    Http(Request),
    Run {
        command: Command,
        expect: Option<Matcher>,
    },
}

#[cfg(test)]
mod state_key_tests {
    use std::path::Path;

    use super::state_key;
    use crate::runbook::Role;

    #[test]
    fn an_overlay_has_a_key_of_its_own() {
        let key = |files: &[(Role, &str)]| {
            state_key(
                "spark-power",
                files.iter().map(|(r, p)| (*r, Path::new(*p))),
            )
        };
        assert_eq!(key(&[]), "spark-power");
        assert_eq!(
            key(&[(Role::Runbook, "runbooks/spark-power.yaml")]),
            "spark-power"
        );
        assert_eq!(
            key(&[
                (Role::Runbook, "runbooks/lab.yaml"),
                (Role::Base, "runbooks/spark-power.yaml")
            ]),
            "spark-power@lab"
        );
        // an overlay of an overlay: the file given names it
        assert_eq!(
            key(&[
                (Role::Runbook, "lab-local.yaml"),
                (Role::Base, "runbooks/lab.yaml"),
                (Role::Base, "runbooks/spark-power.yaml")
            ]),
            "spark-power@lab-local"
        );
        assert_eq!(
            key(&[
                (Role::Overlay, "/tmp/my night.yaml"),
                (Role::Runbook, "runbooks/spark-power.yaml")
            ]),
            "spark-power@my_night"
        );
    }
}
