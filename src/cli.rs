//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::Exit;
use crate::plan::Destination;

const EXAMPLES: &str = "\
Examples:
  recover check spark-power.yaml              validate and lint, contact nothing
  recover run spark-power.yaml --dry-run      every command exactly as it would be sent
  recover run spark-power.yaml                after mains returns
  recover run spark-power.yaml --resume       continue after a failure or Ctrl-C
  recover rehearse spark-power.yaml           each quarter, against the live stack
  recover report --last spark-power.yaml --format html -o incident.html
                                              after the incident: timeline, table, comparison";

/// The examples, then every exit code.
fn top_help() -> String {
    format!("{EXAMPLES}\n\n{}", Exit::table_all())
}

fn check_exit_codes() -> String {
    Exit::table(&[
        (
            Exit::Ok,
            "the runbook is valid (warnings are printed but allowed, unless --strict)",
        ),
        (
            Exit::Usage,
            "the runbook has errors or cannot be read, or --strict and it has warnings",
        ),
    ])
}

fn report_exit_codes() -> String {
    Exit::table(&[
        (Exit::Ok, "the report (or the history) was written"),
        (
            Exit::Usage,
            "usage error, or no journal to report on: nothing was written",
        ),
    ])
}

fn export_exit_codes() -> String {
    Exit::table(&[
        (Exit::Ok, "the binder copy was written"),
        (Exit::Usage, "usage or runbook error: nothing was written"),
    ])
}

fn drill_exit_codes() -> String {
    Exit::table(&[
        (
            Exit::Ok,
            "every unit was restarted by systemd and healthy again",
        ),
        (
            Exit::StepFailed,
            "a unit was not restarted, not healthy again within its step's timeout, or skipped (its start limit)",
        ),
        (
            Exit::Usage,
            "usage or runbook error, or no consent: nothing was killed",
        ),
    ])
}

fn audit_exit_codes() -> String {
    Exit::table(&[
        (
            Exit::Ok,
            "every unit audited (warnings are printed, not failures)",
        ),
        (
            Exit::StepFailed,
            "a unit's settings could not be read, or --strict and a warning",
        ),
        (Exit::Usage, "usage or runbook error: nothing was read"),
    ])
}

#[derive(Debug, Parser)]
#[command(
    name = "recover",
    version,
    about = "Bring a self-hosted AI box back to full service after a power failure.",
    long_about = "Bring a self-hosted AI box back to full service after a power failure.\n\n\
recover executes a YAML runbook of timed phases over SSH against the target: wait for SSH, \
check the kernel log and the filesystem, drop the page cache, start units in dependency order \
behind health gates, smoke-test the real work and post \"we are back\", all against a time budget.",
    after_help = top_help()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Execute a runbook against its target (or print its plan with --dry-run)
    #[command(after_help = Exit::table_all())]
    Run(RunArgs),
    /// Run the read-only steps against the live target and verify the runbook against it
    #[command(after_help = Exit::table_all())]
    Rehearse(RehearseArgs),
    /// Validate and lint a runbook; errors carry file:line:column and a snippet
    #[command(
        long_about = "Validate and lint a runbook, contacting nothing.\n\n\
The runbook is read and resolved exactly as `run` would. Each error is reported as \
file:line:column with a snippet and what to change: YAML syntax, unknown keys, wrong types, \
bad durations, regexes and windows, undefined template names, unknown targets and channels. \
Reading stops at the first YAML or type error; the mistakes found after that (targets, \
channels, templates, windows, steps) are all reported at once, in file order.\n\n\
Warnings flag what is legal but probably wrong: a unit started before the page cache is \
dropped, a start without a health gate, a step timeout shorter than its gate, a webhook URL \
written into the file, a gap in the timeline.",
        after_help = check_exit_codes()
    )]
    Check(CheckArgs),
    /// Print the runbook as a binder copy, complete enough to recover by hand
    #[command(after_help = export_exit_codes())]
    Export(ExportArgs),
    /// After the incident: what happened in a run, against the budget and the runs before it
    #[command(
        long_about = "After the incident: the report of a run, read from its journal, contacting nothing.\n\n\
Give the journal's path, or --last RUNBOOK for the newest run of a runbook (its file or its \
name). A resumed run is reported with the run it resumed, as one incident. The report shows \
each phase against its window and each step (started, took, result, gate probes, the reason \
of a failure), each beside the last rehearsal and the previous run of the same runbook, and \
where the time went: waiting on the box (wait_ssh, gates), commands, the operator (manual \
steps) and recover's own overhead. HTML is one self-contained file with an SVG timeline that \
prints on A4 and Letter; Markdown carries the same tables for an incident document.\n\n\
--history RUNBOOK lists every run and rehearsal of the runbook instead: date, kind, total \
against the budget, result, and whether the runbook changed (sha256).\n\n\
A journal cut by a crash or holding lines this version does not understand is reported as \
far as it goes, and the page lists the lines it could not use.",
        after_help = report_exit_codes()
    )]
    Report(ReportArgs),
    /// Judge every unit the runbook starts against the six habits of a stack that survives power events
    #[command(
        long_about = "Judge every unit the runbook starts against the six habits of a stack that \
survives power events, read-only (`systemctl show` on the target): a pre-flight page-cache flush \
(ExecStartPre=) for inference units; explicit After=/Wants=/Requires= that agree with the \
runbook's order; bounded restart (Restart=on-failure, RestartSec=, a start limit that can trip); \
resource ceilings (MemoryHigh=, MemoryMax=, CPUQuota=); settings in an EnvironmentFile= rather \
than flags in ExecStart=; a graceful stop (TimeoutStopSec=, KillSignal=). Prints a table per \
unit (pass / warn, why) and the drop-in lines that fix its warnings.",
        after_help = audit_exit_codes()
    )]
    Audit(AuditArgs),
    /// Chaos drill: SIGKILL live units' main processes and time systemd's restart and the reload
    #[command(
        long_about = "Chaos drill, on the live healthy stack, only with consent (--yes, or typing \
each unit's name at a terminal). For each chosen `start` unit (all of them without --unit): note \
its MainPID and Restart=, SIGKILL the main pid systemd reports, then time until the unit is \
active with a new main pid (systemd's restart) and until its health probe passes again (the \
reload), bounded by the step's timeout. Prints a table; recorded in a journal like a run and in \
the drill record that `check` and the binder read (\"last drilled N days ago\", with the times). A \
unit that systemd does not restart (Restart=no) fails the drill; a unit whose restart would go \
beyond its start limit is skipped, not killed. Takes the run's lock: never beside a run.",
        after_help = drill_exit_codes()
    )]
    Drill(DrillArgs),
    /// Print a sudoers drop-in that permits exactly the runbook's sudo commands
    #[command(
        long_about = "Print a sudoers drop-in that permits exactly the commands the runbook sends \
with `sudo -n`, each with its exact arguments, and nothing else: every `sudo: true` step, \
drop_caches, each start and its gate, and the remote kill of each on a timeout or Ctrl-C. \
Check it with `visudo -cf FILE`, install it on the target as /etc/sudoers.d/NAME (mode 0440). \
`recover rehearse` reports every sudo command the target's sudoers no longer permits.",
        after_help = sudoers_exit_codes()
    )]
    Sudoers(SudoersArgs),
    /// One read-only pass: is the box back? (reachable, boot id, units, probes, UPS, runs, hold)
    #[command(
        long_about = "One read-only pass over what the runbook brings back, bounded to a few \
seconds: is each target reachable and what is its boot id; for each unit the runbook starts, is \
it active and does its health gate's probe pass once; the UPS when the runbook has an `ups` step; \
a run in progress (who holds the lock); a hold (`recover hold`); the last run and how it ended. \
Nothing on the box is changed: only the runbook's own read-only lines are sent. A table for \
people, --json for scripts.",
        after_help = status_exit_codes()
    )]
    Status(StatusArgs),
    /// Planned maintenance: `recover watch` starts nothing for the runbook until it ends
    #[command(
        long_about = "Planned maintenance: while a hold stands, `recover watch` starts nothing \
for the runbook, so a box shut down on purpose is not \"recovered\". Recorded in the state \
directory with who put it, why and until when (at most 30 days); shown by `status` and `check`. \
`--release` ends it at once.",
        after_help = hold_exit_codes()
    )]
    Hold(HoldArgs),
    /// The service that starts `run --unattended` when a power event needs it (level, not edge)
    #[command(
        long_about = "The service that brings the box back by itself: every --every (and at once \
on a nudge: SIGUSR1, or `recover watch RUNBOOK --nudge`, which the upsmon hook sends) it looks at \
the box as `recover status` does, and starts `recover run --unattended` of the runbook (as a \
child process) when a power event needs it: the box is unreachable, or its boot id changed since \
it was last seen healthy (kept in the state directory, so it survives this host's own reboot); \
and mains is stable by the runbook's `ups` step's terms, when it has one; and no run is in \
progress; and no hold stands. A unit down on a box that did not reboot is not a power event: \
it is posted once (\"degraded, not recovering\") and nothing is started. After a failed run it \
waits (10 minutes, then doubling) and runs at most 3 times per power event, then waits for a \
person. Each decision is one line of the watch journal (watch/KEY.jsonl under the state \
directory); each change of decision is posted to the abort channel. SIGTERM stops it (and the \
run it started, cleanly).",
        after_help = watch_exit_codes()
    )]
    Watch(WatchArgs),
    /// Print the runbook's JSON Schema (draft 2020-12), for editors
    #[command(
        long_about = "Print the runbook's JSON Schema (draft 2020-12), generated from the types \
the loader reads, for editors that complete and check YAML (yaml-language-server). Save it and \
put this modeline at the top of a runbook:\n\n    \
# yaml-language-server: $schema=/usr/local/share/recover/runbook.schema.json"
    )]
    Schema,
    /// Print the shell completion script for SHELL
    #[command(
        long_about = "Print the shell completion script for SHELL on standard output, e.g.\n\n    \
recover completions bash > ~/.local/share/bash-completion/completions/recover\n    \
recover completions zsh > ~/.zfunc/_recover\n    \
recover completions fish > ~/.config/fish/completions/recover.fish"
    )]
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page recover(1), or write a page per command into DIR
    Man {
        /// Write recover.1 and recover-COMMAND.1 for each command into DIR
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn status_exit_codes() -> String {
    Exit::table(&[
        (
            Exit::Ok,
            "healthy: every target reachable, every started unit active and its probe passing, the UPS on line",
        ),
        (
            Exit::StepFailed,
            "degraded: reachable, but a unit is not active, a probe fails, or the UPS is not on line",
        ),
        (Exit::Usage, "usage or runbook error: nothing was checked"),
        (Exit::Aborted, "down: a target does not answer"),
    ])
}

fn hold_exit_codes() -> String {
    Exit::table(&[
        (Exit::Ok, "the hold was recorded (or released)"),
        (
            Exit::Usage,
            "usage or runbook error, or no state directory: nothing was recorded",
        ),
    ])
}

fn watch_exit_codes() -> String {
    Exit::table(&[
        (
            Exit::Ok,
            "stopped by SIGTERM or SIGINT (a run it started was stopped cleanly); with --nudge: the watch was nudged",
        ),
        (
            Exit::StepFailed,
            "with --nudge: no watch of this runbook is listening",
        ),
        (Exit::Usage, "usage or runbook error: nothing was watched"),
    ])
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The runbook (YAML)
    pub runbook: PathBuf,
    /// One JSON object on stdout, for scripts
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub resolve: Resolve,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["length", "release"])))]
pub struct HoldArgs {
    /// The runbook (YAML)
    pub runbook: PathBuf,
    /// How long: `2h`, `45m`, `1d` (at most 30 days)
    #[arg(long = "for", value_name = "DURATION", value_parser = hold_length, requires = "why")]
    pub length: Option<std::time::Duration>,
    /// Why, for whoever reads `status` at 3am
    #[arg(long, value_name = "TEXT", value_parser = started_by)]
    pub why: Option<String>,
    /// End the hold now
    #[arg(long, conflicts_with_all = ["length", "why"])]
    pub release: bool,
    /// Lay an overlay over the runbook (its state is kept apart: `name@overlay`)
    #[arg(long = "overlay", value_name = "FILE")]
    pub overlays: Vec<PathBuf>,
}

fn hold_length(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::runbook::model::parse_duration(s)?;
    if d.is_zero() {
        return Err("a hold of no time holds nothing: say how long, e.g. 2h".into());
    }
    if d > crate::hold::MAX {
        return Err("at most 30d: a forgotten hold would keep every recovery out".into());
    }
    Ok(d)
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The runbook (YAML)
    pub runbook: PathBuf,
    /// How often to look (a nudge looks at once)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = watch_every)]
    pub every: std::time::Duration,
    /// Make the running watch of this runbook look now (what the upsmon hook does), and exit
    #[arg(long)]
    pub nudge: bool,
    /// The first wait after a failed run (then doubling); for tests
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = watch_every, hide = true)]
    pub backoff: std::time::Duration,
    /// Look this many times, then exit; for tests
    #[arg(long, value_name = "N", hide = true)]
    pub checks: Option<u64>,
    #[command(flatten)]
    pub resolve: Resolve,
}

fn watch_every(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::runbook::model::parse_duration(s)?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(86400) {
        return Err("between 100ms and 1d".into());
    }
    Ok(d)
}

fn sudoers_exit_codes() -> String {
    Exit::table(&[
        (Exit::Ok, "the drop-in was printed"),
        (
            Exit::Usage,
            "usage or runbook error, or a sudo command no rule can match exactly: nothing was printed",
        ),
    ])
}

#[derive(Debug, Args)]
pub struct SudoersArgs {
    /// The runbook (YAML)
    pub runbook: PathBuf,
    /// The user the rules are for (default: each target's `user:`)
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    #[command(flatten)]
    pub resolve: Resolve,
}

#[derive(Debug, Args)]
pub struct Resolve {
    /// Set or override a var: `--var api=http://10.0.0.5:8000` (repeatable)
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = key_value)]
    pub vars: Vec<(String, String)>,
    /// Point a target at another place, e.g. a rehearsal lab: `--target spark=ops@127.0.0.1:2222`
    /// (`[USER@]HOST[:PORT]`, an IPv6 address in brackets: `ops@[::1]:2222`; repeatable). The user
    /// and port the runbook gives are kept when not written here
    #[arg(long = "target", value_name = "NAME=[USER@]HOST[:PORT]", value_parser = target_destination)]
    pub targets: Vec<(String, Destination)>,
    /// The ssh key for target NAME: `--identity spark=/var/tmp/recover-lab/id_ed25519` (repeatable)
    #[arg(long = "identity", value_name = "NAME=PATH", value_parser = key_path)]
    pub identities: Vec<(String, PathBuf)>,
    /// The known_hosts file for target NAME: `--known-hosts spark=./known_hosts` (repeatable)
    #[arg(long = "known-hosts", value_name = "NAME=PATH", value_parser = key_path)]
    pub known_hosts: Vec<(String, PathBuf)>,
    /// Lay an overlay over the runbook: a YAML file without `extends:` that sets targets, vars,
    /// notify channels, budget or title, as an `extends:` overlay does (repeatable, the last wins;
    /// applied before --target, --identity, --known-hosts and --var)
    #[arg(long = "overlay", value_name = "FILE")]
    pub overlays: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The runbook (YAML)
    pub runbook: PathBuf,
    /// Print the fully resolved plan (exact commands, timeouts, what changes state) and contact nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Continue the last unfinished run of this runbook from its failed or interrupted step
    #[arg(long, conflicts_with = "from")]
    pub resume: bool,
    /// Start at this step: its number or its name (see --dry-run)
    #[arg(long, value_name = "STEP")]
    pub from: Option<String>,
    /// Confirm manual steps without asking (required when there is no terminal)
    #[arg(long, short = 'y', conflicts_with = "unattended")]
    pub yes: bool,
    /// Nobody is there (started by upsmon or a systemd unit when mains returns): no prompt,
    /// no terminal needed; each manual step does what its `unattended: skip | abort` says, and
    /// a runbook with a manual step without it is refused before anything runs
    #[arg(long)]
    pub unattended: bool,
    /// Who or what started the run, recorded in the journal and said in every status post,
    /// e.g. `--started-by "the UPS: upsmon ONLINE, UPS spark-ups@localhost on line power"`
    #[arg(long, value_name = "TEXT", value_parser = started_by)]
    pub started_by: Option<String>,
    /// With --resume: accept a runbook that changed since the journal was written
    #[arg(long)]
    pub force: bool,
    /// Write the journal here instead of $XDG_STATE_HOME/recover/
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// Print events as JSON lines on stdout, for machines
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub resolve: Resolve,
}

#[derive(Debug, Args)]
pub struct RehearseArgs {
    /// The runbook (YAML)
    pub runbook: PathBuf,
    /// Also write the rehearsal report as Markdown to FILE
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print events as JSON lines on stdout, for machines
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub resolve: Resolve,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The runbook (YAML)
    pub runbook: PathBuf,
    /// Drill only this unit (repeatable); default: every unit the runbook starts
    #[arg(long = "unit", value_name = "UNIT")]
    pub units: Vec<String>,
    /// Consent: kill without asking
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print events as JSON lines on stdout, for machines
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub resolve: Resolve,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The runbook (YAML)
    pub runbook: PathBuf,
    /// Exit 1 when there is any warning (for CI)
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub resolve: Resolve,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The runbook (YAML)
    pub runbook: PathBuf,
    /// Treat warnings as errors: exit 2 if there are any (for CI)
    #[arg(long)]
    pub strict: bool,
    /// Also check that the runbook can run unattended (`run --unattended`): every manual step
    /// says `unattended: skip | abort`
    #[arg(long)]
    pub unattended: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Md,
    Html,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The runbook (YAML)
    pub runbook: PathBuf,
    /// Markdown for a forge, or one self-contained HTML file to print
    #[arg(long, value_enum, default_value = "md")]
    pub format: ExportFormat,
    /// Write to FILE instead of standard output
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub resolve: Resolve,
}

fn target_destination(s: &str) -> Result<(String, Destination), String> {
    let (name, dest) = key_value(s).map_err(|_| format!("`{s}` is not NAME=[USER@]HOST[:PORT]"))?;
    Ok((name, dest.parse()?))
}

/// `--started-by`: one line of printable text, short enough for a status post.
fn started_by(s: &str) -> Result<String, String> {
    const MAX: usize = 200;
    let t = s.trim();
    if t.is_empty() {
        return Err("say who or what started the run".into());
    }
    if t.chars().any(char::is_control) {
        return Err("one line of text, without control characters".into());
    }
    if t.chars().count() > MAX {
        return Err(format!("at most {MAX} characters"));
    }
    Ok(t.to_owned())
}

fn key_path(s: &str) -> Result<(String, PathBuf), String> {
    match key_value(s) {
        Ok((k, v)) if !v.is_empty() => Ok((k, PathBuf::from(v))),
        _ => Err(format!("`{s}` is not NAME=PATH")),
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["journal", "last", "history"])))]
pub struct ReportArgs {
    /// The journal of the run (JSON Lines, as `recover run` writes it)
    pub journal: Option<PathBuf>,
    /// Report on the newest run of RUNBOOK (its file, or its name)
    #[arg(long, value_name = "RUNBOOK")]
    pub last: Option<String>,
    /// List every run and rehearsal of RUNBOOK (its file, or its name)
    #[arg(long, value_name = "RUNBOOK")]
    pub history: Option<String>,
    /// Markdown for an incident document, or one self-contained HTML file with the timeline
    #[arg(long, value_enum, default_value = "md")]
    pub format: ExportFormat,
    /// Write to FILE instead of standard output
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}
