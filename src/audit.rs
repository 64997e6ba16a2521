//! The unit audit: judges a unit's `systemctl show` output against the six habits of a stack
//! that survives power events, and says for each finding the exact drop-in lines that fix it.
//!
//! Pure: the caller runs [`show_command`] on the target and hands its stdout to
//! [`audit_unit`] with what the runbook says about the unit ([`UnitContext`]). Nothing here
//! waits, prints or touches the outside world, and nothing panics on what the target printed.
//!
//! `systemctl show` prints *effective* values, so a setting left at systemd's default is
//! indistinguishable from one declared with the default's value; the audit names the default
//! when it sees one ("systemd's default, so probably not declared").

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The properties the audit reads; `ActiveState`, `NRestarts` and `MainPID` also serve the
/// remedies and the drill.
pub const PROPERTIES: [&str; 24] = [
    "Id",
    "LoadState",
    "ActiveState",
    "User",
    "DynamicUser",
    "ExecStartPre",
    "ExecStartPreEx",
    "ExecStart",
    "After",
    "Wants",
    "Requires",
    "BindsTo",
    "Restart",
    "RestartUSec",
    "StartLimitBurst",
    "StartLimitIntervalUSec",
    "NRestarts",
    "MemoryHigh",
    "MemoryMax",
    "CPUQuotaPerSecUSec",
    "EnvironmentFiles",
    "TimeoutStopUSec",
    "KillSignal",
    "MainPID",
];

/// `systemctl show -p A,B,... UNIT`: the read-only command whose stdout [`audit_unit`] judges.
/// The unit name is quoted for a POSIX shell.
pub fn show_command(unit: &str) -> String {
    format!(
        "systemctl show -p {} {}",
        PROPERTIES.join(","),
        shell_quote(unit)
    )
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// systemd's defaults, as `systemctl show` prints them for a unit that does not set them.
const DEFAULT_RESTART_SEC: Duration = Duration::from_millis(100);
const DEFAULT_START_LIMIT_BURST: u64 = 5;
const DEFAULT_START_LIMIT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT_STOP: Duration = Duration::from_secs(90);
/// A stop timeout below this leaves a server no time to finish in-flight requests.
const MIN_TIMEOUT_STOP: Duration = Duration::from_secs(10);
/// A RestartSec below this restarts a crash loop many times a second.
const MIN_RESTART_SEC: Duration = Duration::from_secs(1);

/// The parsed output of `systemctl show`: each property's values, in the order printed (a
/// property such as `ExecStartPre` or `EnvironmentFiles` can be printed once per item).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Show {
    props: BTreeMap<String, Vec<String>>,
}

impl Show {
    /// Reads `KEY=VALUE` lines; anything else (a blank line, a stray message) is ignored.
    pub fn parse(text: &str) -> Show {
        let mut props: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
                continue;
            }
            // The box's text: cleaned as step output is before any reporter prints it.
            props
                .entry(k.to_string())
                .or_default()
                .push(crate::report::one_line(v));
        }
        Show { props }
    }

    /// The first value of a property; None when it was not printed.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props
            .get(key)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Every non-empty value of a property.
    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.props
            .get(key)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A space-separated list property (`After=a.service b.target`).
    pub fn list(&self, key: &str) -> Vec<&str> {
        self.all(key).flat_map(str::split_whitespace).collect()
    }

    /// A number property (`NRestarts=3`, `MainPID=0`); None when absent or not a number.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.trim().parse().ok())
    }

    /// A time span property (`RestartUSec=5s`): `Some(None)` for `infinity`.
    pub fn span(&self, key: &str) -> Option<Span> {
        self.get(key).and_then(parse_timespan)
    }
}

/// A systemd time span as `systemctl show` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Span {
    Finite(Duration),
    Infinity,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Span::Infinity => f.write_str("infinity"),
            Span::Finite(d) => f.write_str(&format_span(*d)),
        }
    }
}

/// Parses systemd's `format_timespan()` output: `infinity`, `0`, `100ms`, `1min 30s`,
/// `2h 5min`, `1d 12h`, `1w`, `1month`, `1y`, `500us`, and plain seconds with a fraction
/// (`1.5s`). None for anything else.
pub fn parse_timespan(text: &str) -> Option<Span> {
    let t = text.trim();
    if t == "infinity" {
        return Some(Span::Infinity);
    }
    if t.is_empty() {
        return None;
    }
    let mut total = 0f64;
    for word in t.split_whitespace() {
        let split = word
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(word.len());
        let (num, unit) = word.split_at(split);
        let n: f64 = num.parse().ok()?;
        let secs = match unit {
            "" | "s" | "sec" => 1.0,
            "us" | "usec" | "µs" => 1e-6,
            "ms" | "msec" => 1e-3,
            "min" | "m" => 60.0,
            "h" | "hr" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            "month" | "M" => 2_629_800.0,
            "y" => 31_557_600.0,
            _ => return None,
        };
        total += n * secs;
    }
    if !total.is_finite() || !(0.0..=1e12).contains(&total) {
        return None;
    }
    Some(Span::Finite(Duration::from_secs_f64(total)))
}

/// A duration the way a unit file writes it: `100ms`, `5s`, `90s`, `5min`, `2h`.
fn format_span(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) && s >= 300 {
        format!("{}min", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Signal numbers as `systemctl show` prints `KillSignal=` (x86-64 and arm64 agree).
fn signal_name(n: u64) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    let i = usize::try_from(n).ok()?.checked_sub(1)?;
    NAMES.get(i).copied()
}

/// The six habits, in the order the table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Habit {
    PreFlight,
    Dependencies,
    BoundedRestart,
    ResourceCeilings,
    EnvironmentFile,
    GracefulStop,
}

impl Habit {
    pub const ALL: [Habit; 6] = [
        Habit::PreFlight,
        Habit::Dependencies,
        Habit::BoundedRestart,
        Habit::ResourceCeilings,
        Habit::EnvironmentFile,
        Habit::GracefulStop,
    ];

    /// The short name the table shows.
    pub fn name(self) -> &'static str {
        match self {
            Habit::PreFlight => "pre-flight",
            Habit::Dependencies => "dependencies",
            Habit::BoundedRestart => "bounded restart",
            Habit::ResourceCeilings => "resource ceilings",
            Habit::EnvironmentFile => "environment file",
            Habit::GracefulStop => "graceful stop",
        }
    }
}

impl fmt::Display for Habit {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
        }
    }
}

/// One habit's verdict on one unit: why, and (for a warning) the drop-in that fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub habit: Habit,
    pub status: Status,
    /// One or more sentences; each problem found is one sentence.
    pub why: String,
    /// Lines of a drop-in (`systemctl edit UNIT`), section headers included; empty on a pass.
    pub fix: Vec<String>,
}

/// What the runbook says about the unit being audited.
#[derive(Debug, Clone, Default)]
pub struct UnitContext<'a> {
    pub unit: &'a str,
    /// An inference engine (loads weights): the pre-flight cache flush applies.
    pub inference: bool,
    /// The units the runbook starts before this one, in its order.
    pub started_before: &'a [String],
    /// The units the runbook starts after this one.
    pub started_after: &'a [String],
}

/// The audit of one unit: its findings, one per habit, in [`Habit::ALL`]'s order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitAudit {
    pub unit: String,
    pub findings: Vec<Finding>,
}

impl UnitAudit {
    pub fn warnings(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.status == Status::Warn)
            .count()
    }

    /// Every fix of this unit as one drop-in, sections merged in order
    /// (`[Unit]` lines first, then `[Service]`), comment lines kept with their section.
    pub fn drop_in(&self) -> Vec<String> {
        let mut sections: Vec<(String, Vec<String>)> = Vec::new();
        for f in &self.findings {
            let mut current = String::from("[Service]");
            for line in &f.fix {
                if line.starts_with('[') {
                    current = line.clone();
                    continue;
                }
                match sections.iter_mut().find(|(s, _)| *s == current) {
                    Some((_, lines)) => {
                        if !lines.contains(line) || line.is_empty() {
                            lines.push(line.clone());
                        }
                    }
                    None => sections.push((current.clone(), vec![line.clone()])),
                }
            }
        }
        sections.sort_by_key(|(s, _)| s != "[Unit]");
        let mut out = Vec::new();
        for (s, lines) in sections {
            out.push(s);
            out.extend(lines);
        }
        out
    }
}

/// Judges one unit. `show` is the stdout of [`show_command`]. A unit systemd does not know
/// (`LoadState=not-found`) or output without the properties gives six warnings that say so.
pub fn audit_unit(show: &str, ctx: &UnitContext) -> UnitAudit {
    let s = Show::parse(show);
    let load = s.get("LoadState").unwrap_or("");
    let findings = if load != "loaded" {
        let why = if load.is_empty() {
            "systemctl show printed no LoadState: nothing to judge.".to_string()
        } else {
            format!(
                "the unit is {load} (LoadState={load}): install its unit file, then audit again."
            )
        };
        Habit::ALL
            .iter()
            .map(|&habit| Finding {
                habit,
                status: Status::Warn,
                why: why.clone(),
                fix: Vec::new(),
            })
            .collect()
    } else {
        vec![
            pre_flight(&s, ctx),
            dependencies(&s, ctx),
            bounded_restart(&s),
            resource_ceilings(&s, ctx),
            environment_file(&s, ctx),
            graceful_stop(&s),
        ]
    };
    UnitAudit {
        unit: ctx.unit.to_string(),
        findings,
    }
}

fn finding(habit: Habit, problems: Vec<String>, fix: Vec<String>, ok: String) -> Finding {
    if problems.is_empty() {
        Finding {
            habit,
            status: Status::Pass,
            why: ok,
            fix: Vec::new(),
        }
    } else {
        Finding {
            habit,
            status: Status::Warn,
            why: problems.join(" "),
            fix,
        }
    }
}

/// The argv of an `Exec*` property: `{ path=... ; argv[]=ARGS ; ... }` gives ARGS.
fn exec_argv(value: &str) -> Option<&str> {
    let start = value.find("argv[]=")? + "argv[]=".len();
    let rest = &value[start..];
    let end = rest.find(" ; ").unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// The `flags=` of an `Exec*Ex` property.
fn exec_flags(value: &str) -> &str {
    value
        .find("flags=")
        .map(|i| {
            let rest = &value[i + "flags=".len()..];
            let end = rest.find(" ; ").unwrap_or(rest.len());
            rest[..end].trim()
        })
        .unwrap_or("")
}

const FLUSH: &str = "ExecStartPre=+/bin/sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'";

fn pre_flight(s: &Show, ctx: &UnitContext) -> Finding {
    let habit = Habit::PreFlight;
    let pre: Vec<&str> = s.all("ExecStartPre").filter_map(exec_argv).collect();
    if !ctx.inference {
        let ok = if pre.is_empty() {
            "not an inference unit: no weights to load, no cache flush needed.".to_string()
        } else {
            format!(
                "not an inference unit; its ExecStartPre runs `{}`.",
                pre.join("`, `")
            )
        };
        return finding(habit, Vec::new(), Vec::new(), ok);
    }
    let Some(flush) = pre.iter().find(|a| a.contains("drop_caches")) else {
        let why = if pre.is_empty() {
            "an inference unit without ExecStartPre=: when systemd restarts it (a crash, a \
             remedy's kill, a reboot) it loads its weights into a page cache full of stale \
             pages, the OOM at restart the runbook's flush prevents only when the runbook runs."
        } else {
            "an inference unit whose ExecStartPre= does not flush the page cache \
             (/proc/sys/vm/drop_caches) before it loads its weights."
        };
        return finding(
            habit,
            vec![why.to_string()],
            vec!["[Service]".into(), FLUSH.into()],
            String::new(),
        );
    };
    // The flush writes to /proc as root: a unit running as another user needs the `+` prefix.
    let unprivileged = s.get("DynamicUser") == Some("yes")
        || s.get("User").is_some_and(|u| !u.is_empty() && u != "root");
    let privileged = s
        .all("ExecStartPreEx")
        .filter(|v| v.contains("drop_caches"))
        .any(|v| exec_flags(v).split('|').any(|f| f == "privileged"));
    if unprivileged && !privileged {
        return finding(
            habit,
            vec![format!(
                "ExecStartPre runs `{flush}` as the unit's unprivileged user, so the write to \
                 drop_caches fails (and, without `-`, the start with it): prefix it with `+`."
            )],
            vec!["[Service]".into(), "ExecStartPre=".into(), FLUSH.into()],
            String::new(),
        );
    }
    finding(
        habit,
        Vec::new(),
        Vec::new(),
        format!("ExecStartPre flushes the page cache before the weights load (`{flush}`)."),
    )
}

/// Dependencies systemd adds by itself: they say nothing about the stack's order.
fn implicit(dep: &str) -> bool {
    const IMPLICIT: [&str; 8] = [
        "sysinit.target",
        "basic.target",
        "shutdown.target",
        "system.slice",
        "-.mount",
        "-.slice",
        "tmp.mount",
        "dbus.socket",
    ];
    IMPLICIT.contains(&dep)
        || dep.starts_with("systemd-")
        || dep.ends_with(".slice")
        || dep.ends_with(".mount")
}

fn dependencies(s: &Show, ctx: &UnitContext) -> Finding {
    let habit = Habit::Dependencies;
    let after: Vec<&str> = s
        .list("After")
        .into_iter()
        .filter(|d| !implicit(d))
        .collect();
    let pulls: Vec<&str> = ["Requires", "BindsTo", "Wants"]
        .iter()
        .flat_map(|k| s.list(k))
        .filter(|d| !implicit(d))
        .collect();
    let mut problems = Vec::new();
    let mut fix = Vec::new();
    // The runbook must start what this unit is ordered after before it, not after it.
    let late: Vec<&str> = after
        .iter()
        .chain(pulls.iter())
        .copied()
        .filter(|d| ctx.started_after.iter().any(|u| u == d))
        .collect::<Vec<_>>();
    let mut late_dedup: Vec<&str> = Vec::new();
    for d in late {
        if !late_dedup.contains(&d) {
            late_dedup.push(d);
        }
    }
    if !late_dedup.is_empty() {
        problems.push(format!(
            "the runbook starts it before {}, which it depends on: move the start of {} before {} in the runbook.",
            late_dedup.join(", "),
            late_dedup.join(", "),
            ctx.unit
        ));
    }
    // Wants=/Requires= without After= pulls a unit in but starts both at once.
    let unordered: Vec<&str> = pulls
        .iter()
        .copied()
        .filter(|d| d.ends_with(".service") && !after.contains(d))
        .collect();
    if !unordered.is_empty() {
        problems.push(format!(
            "Wants=/Requires= {} without After=: systemd starts them at the same time.",
            unordered.join(" ")
        ));
        fix.push("[Unit]".to_string());
        fix.push(format!("After={}", unordered.join(" ")));
    }
    let ordered_on_stack: Vec<&str> = after
        .iter()
        .copied()
        .filter(|d| ctx.started_before.iter().any(|u| u == d))
        .collect();
    if let Some(prev) = ctx.started_before.last()
        && ordered_on_stack.is_empty()
        && unordered.is_empty()
    {
        problems.push(format!(
            "no After= on any unit the runbook starts before it ({}): at boot, or when another \
             unit pulls it in, systemd starts it in parallel with them.",
            ctx.started_before.join(", ")
        ));
        fix.push("[Unit]".to_string());
        fix.push(format!("After={prev}"));
        fix.push(format!("Wants={prev}"));
    }
    let ok = if after.is_empty() {
        "first in the runbook's order; depends on no other unit.".to_string()
    } else if ordered_on_stack.is_empty() {
        format!("After={}; first of the runbook's units.", after.join(" "))
    } else {
        format!(
            "After={}, started earlier by the runbook.",
            ordered_on_stack.join(" ")
        )
    };
    finding(habit, problems, fix, ok)
}

fn bounded_restart(s: &Show) -> Finding {
    let habit = Habit::BoundedRestart;
    let restart = s.get("Restart").unwrap_or("");
    let restart_sec = match s.span("RestartUSec") {
        Some(Span::Finite(d)) => Some(d),
        _ => None,
    };
    let burst = s.number("StartLimitBurst");
    let interval = s.span("StartLimitIntervalUSec");
    let mut problems = Vec::new();
    let mut service = Vec::new();
    let mut unit = Vec::new();
    match restart {
        "on-failure" => {}
        "always" => {
            problems.push(
                "Restart=always also restarts after a clean exit: a process that exits 0 on \
                 purpose, or is stopped with SIGTERM by hand, comes back; on-failure restarts \
                 after a crash, a non-zero exit or a SIGKILL only."
                    .to_string(),
            );
            service.push("Restart=on-failure".to_string());
        }
        "no" | "" => {
            problems.push(
                "Restart=no: after a crash or a SIGKILL (the remedy for a hang) systemd leaves \
                 it down."
                    .to_string(),
            );
            service.push("Restart=on-failure".to_string());
        }
        other => {
            problems.push(format!(
                "Restart={other} does not restart after every failure (a non-zero exit, a \
                 signal, a timeout): use on-failure."
            ));
            service.push("Restart=on-failure".to_string());
        }
    }
    let sec = restart_sec.unwrap_or(DEFAULT_RESTART_SEC);
    let mut new_sec = sec;
    if sec < MIN_RESTART_SEC {
        let what = if sec == DEFAULT_RESTART_SEC {
            "systemd's default".to_string()
        } else {
            "below one second".to_string()
        };
        problems.push(format!(
            "RestartSec={} ({what}): a crash loop restarts without a pause.",
            format_span(sec)
        ));
        new_sec = Duration::from_secs(10);
        service.push(format!("RestartSec={}", format_span(new_sec)));
    }
    let burst_n = burst.unwrap_or(DEFAULT_START_LIMIT_BURST);
    let mut new_burst = burst_n;
    match interval {
        Some(Span::Finite(d)) if d.is_zero() => {
            problems.push(
                "StartLimitIntervalSec=0 turns the start limit off: a crash loop never ends."
                    .to_string(),
            );
        }
        Some(Span::Finite(_)) | None | Some(Span::Infinity) => {}
    }
    if burst == Some(0) {
        problems.push("StartLimitBurst=0 turns the start limit off.".to_string());
        new_burst = DEFAULT_START_LIMIT_BURST;
    }
    let interval_d = match interval {
        Some(Span::Finite(d)) => d,
        Some(Span::Infinity) => Duration::MAX,
        None => DEFAULT_START_LIMIT_INTERVAL,
    };
    let defaults =
        burst_n == DEFAULT_START_LIMIT_BURST && interval_d == DEFAULT_START_LIMIT_INTERVAL;
    if defaults {
        problems.push(
            "StartLimitBurst=5 and StartLimitIntervalSec=10s are systemd's defaults, so \
             probably not declared: set them in [Unit] for this service."
                .to_string(),
        );
    }
    // The limit trips when more than `burst` starts fall within the interval: with a pause of
    // RestartSec between them, burst x RestartSec must be shorter than the interval.
    let needed = new_sec.saturating_mul(u32::try_from(new_burst).unwrap_or(u32::MAX));
    let trips = !interval_d.is_zero() && needed < interval_d;
    let off = interval_d.is_zero() || burst == Some(0);
    if !trips && !off {
        problems.push(format!(
            "RestartSec={} x StartLimitBurst={} = {} is not shorter than \
             StartLimitIntervalSec={}: the start limit can never trip, so a crash loop restarts \
             forever.",
            format_span(new_sec),
            new_burst,
            format_span(needed),
            Span::Finite(interval_d)
        ));
    }
    if !trips || defaults || burst == Some(0) {
        // Twice what the burst needs, whole minutes, at least five.
        let want = needed.saturating_mul(2).as_secs().div_ceil(60).max(5) * 60;
        unit.push(format!("StartLimitBurst={new_burst}"));
        unit.push(format!(
            "StartLimitIntervalSec={}",
            format_span(Duration::from_secs(want))
        ));
    }
    let mut fix = Vec::new();
    if !unit.is_empty() {
        fix.push("[Unit]".to_string());
        fix.extend(unit);
    }
    if !service.is_empty() {
        fix.push("[Service]".to_string());
        fix.extend(service);
    }
    let ok = format!(
        "Restart={restart}, RestartSec={}, at most {burst_n} starts in {} ({} of pauses: the limit trips).",
        format_span(sec),
        Span::Finite(interval_d),
        format_span(needed)
    );
    finding(habit, problems, fix, ok)
}

/// A memory property: None for `infinity` (unset), or bytes.
fn memory(s: &Show, key: &str) -> Option<u64> {
    s.get(key).and_then(|v| v.trim().parse().ok())
}

fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (u, n) in UNITS {
        if b >= n && b.is_multiple_of(n) {
            return format!("{}{u}", b / n);
        }
    }
    b.to_string()
}

fn resource_ceilings(s: &Show, ctx: &UnitContext) -> Finding {
    let habit = Habit::ResourceCeilings;
    let high = memory(s, "MemoryHigh");
    let max = memory(s, "MemoryMax");
    let cpu = s.span("CPUQuotaPerSecUSec");
    // Percentages of the machine's memory; systemd accepts `N%` for both.
    let (want_high, want_max, want_cpu) = if ctx.inference {
        ("MemoryHigh=85%", "MemoryMax=90%", "CPUQuota=600%")
    } else {
        ("MemoryHigh=8%", "MemoryMax=10%", "CPUQuota=200%")
    };
    let mut problems = Vec::new();
    let mut fix = vec!["[Service]".to_string()];
    match (high, max) {
        (None, None) => {
            problems.push(
                "no MemoryHigh=/MemoryMax= (both infinity): it can take all the memory and starve \
                 the other units."
                    .to_string(),
            );
            fix.push(want_high.to_string());
            fix.push(want_max.to_string());
        }
        (Some(_), None) => {
            problems
                .push("MemoryHigh= without MemoryMax=: reclaim, but no hard ceiling.".to_string());
            fix.push(want_max.to_string());
        }
        (None, Some(_)) => {
            problems.push(
                "MemoryMax= without MemoryHigh=: killed at the ceiling without reclaim first."
                    .to_string(),
            );
            fix.push(want_high.to_string());
        }
        (Some(h), Some(m)) if h >= m => {
            problems.push(format!(
                "MemoryHigh={} is not below MemoryMax={}: no reclaim before the kill.",
                human_bytes(h),
                human_bytes(m)
            ));
            fix.push(want_high.to_string());
            fix.push(want_max.to_string());
        }
        (Some(_), Some(_)) => {}
    }
    let cpu_ok = matches!(cpu, Some(Span::Finite(_)));
    if !cpu_ok {
        problems.push("no CPUQuota= (infinity): it can take every core.".to_string());
        fix.push(want_cpu.to_string());
    }
    let quota = match cpu {
        Some(Span::Finite(d)) => format!("{}%", d.as_millis() / 10),
        _ => "-".to_string(),
    };
    let ok = format!(
        "MemoryHigh={}, MemoryMax={}, CPUQuota={quota}.",
        high.map_or("-".into(), human_bytes),
        max.map_or("-".into(), human_bytes)
    );
    finding(habit, problems, fix, ok)
}

/// Long options in ExecStart's argv whose values are written out (not `$VARIABLE`s):
/// `("--port", Some("8000"))`, or `("--trust-remote-code", None)` for a switch.
fn literal_flags(argv: &str) -> Vec<(String, Option<String>)> {
    let words: Vec<&str> = argv.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 1;
    while i < words.len() {
        let w = words[i];
        i += 1;
        if !w.starts_with("--") || w.len() <= 2 {
            continue;
        }
        if let Some((name, value)) = w.split_once('=') {
            if !value.contains('$') {
                out.push((name.to_string(), Some(value.to_string())));
            }
            continue;
        }
        match words.get(i) {
            Some(v) if !v.starts_with('-') => {
                i += 1;
                if !v.contains('$') {
                    out.push((w.to_string(), Some(v.to_string())));
                }
            }
            _ => out.push((w.to_string(), None)),
        }
    }
    out
}

/// `--max-model-len` -> `MAX_MODEL_LEN`.
fn env_name(flag: &str) -> String {
    flag.trim_start_matches('-')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn environment_file(s: &Show, ctx: &UnitContext) -> Finding {
    let habit = Habit::EnvironmentFile;
    let files: Vec<&str> = s
        .all("EnvironmentFiles")
        .map(|v| v.split(" (").next().unwrap_or(v).trim())
        .collect();
    let argv = s.all("ExecStart").find_map(exec_argv).unwrap_or("");
    let flags = literal_flags(argv);
    if flags.is_empty() {
        let ok = if files.is_empty() {
            "no settings hard-coded in ExecStart.".to_string()
        } else {
            format!(
                "settings come from EnvironmentFile={}; ExecStart hard-codes none.",
                files.join(" ")
            )
        };
        return finding(habit, Vec::new(), Vec::new(), ok);
    }
    let shown: Vec<String> = flags
        .iter()
        .map(|(f, v)| match v {
            Some(v) => format!("{f} {v}"),
            None => f.clone(),
        })
        .collect();
    let mut problem = format!("ExecStart hard-codes {}", shown.join(", "));
    if files.is_empty() {
        problem.push_str(" and there is no EnvironmentFile=");
    }
    problem.push_str(
        ": a change means editing the unit and a daemon-reload; move them to an environment file.",
    );
    let stem = ctx.unit.strip_suffix(".service").unwrap_or(ctx.unit);
    let env_path = files
        .first()
        .map(|f| f.trim_start_matches('-').to_string())
        .unwrap_or_else(|| format!("/etc/default/{stem}"));
    // The same command with each written-out flag replaced by its variable.
    let mut words: Vec<String> = Vec::new();
    let mut it = argv.split_whitespace().peekable();
    let mut first = true;
    while let Some(w) = it.next() {
        if first {
            first = false;
            words.push(w.to_string());
            continue;
        }
        if let Some((name, value)) = w.split_once('=')
            && name.starts_with("--")
            && !value.contains('$')
        {
            words.push(format!("{name}=${{{}}}", env_name(name)));
            continue;
        }
        if w.starts_with("--")
            && w.len() > 2
            && let Some(v) = it.peek()
            && !v.starts_with('-')
        {
            let v = it.next().unwrap_or_default();
            if v.contains('$') {
                words.push(w.to_string());
                words.push(v.to_string());
            } else {
                words.push(w.to_string());
                words.push(format!("${{{}}}", env_name(w)));
            }
            continue;
        }
        words.push(w.to_string());
    }
    let mut fix = vec![format!("# {env_path}:")];
    for (f, v) in &flags {
        if let Some(v) = v {
            fix.push(format!("#   {}={v}", env_name(f)));
        }
    }
    fix.insert(0, "[Service]".to_string());
    if files.is_empty() {
        fix.push(format!("EnvironmentFile={env_path}"));
    }
    fix.push("ExecStart=".to_string());
    fix.push(format!("ExecStart={}", words.join(" ")));
    finding(habit, vec![problem], fix, String::new())
}

fn graceful_stop(s: &Show) -> Finding {
    let habit = Habit::GracefulStop;
    let timeout = s.span("TimeoutStopUSec");
    let signal = s.number("KillSignal");
    let mut problems = Vec::new();
    let mut fix = vec!["[Service]".to_string()];
    match timeout {
        Some(Span::Infinity) => {
            problems.push(
                "TimeoutStopSec=infinity: a stop that hangs holds up the shutdown until the UPS \
                 runs dry."
                    .to_string(),
            );
            fix.push("TimeoutStopSec=180s".to_string());
        }
        Some(Span::Finite(d)) if d == DEFAULT_TIMEOUT_STOP => {
            problems.push(
                "TimeoutStopSec=90s is systemd's default, so probably not declared: give the \
                 drain time this service needs."
                    .to_string(),
            );
            fix.push("TimeoutStopSec=180s".to_string());
        }
        Some(Span::Finite(d)) if d < MIN_TIMEOUT_STOP => {
            problems.push(format!(
                "TimeoutStopSec={}: too short to finish in-flight requests before the SIGKILL.",
                format_span(d)
            ));
            fix.push("TimeoutStopSec=180s".to_string());
        }
        Some(Span::Finite(_)) => {}
        None => {
            problems.push("systemctl show printed no TimeoutStopUSec.".to_string());
            fix.push("TimeoutStopSec=180s".to_string());
        }
    }
    let name = signal.and_then(signal_name);
    match name {
        Some("SIGTERM") | Some("SIGINT") => {}
        Some("SIGKILL") => {
            problems.push(
                "KillSignal=SIGKILL: a stop kills it outright, with no chance to finish \
                 requests or flush state."
                    .to_string(),
            );
            fix.push("KillSignal=SIGTERM".to_string());
        }
        Some(other) => {
            problems.push(format!(
                "KillSignal={other}: the stop signal servers handle is SIGTERM."
            ));
            fix.push("KillSignal=SIGTERM".to_string());
        }
        None => {
            problems.push("systemctl show printed no KillSignal.".to_string());
            fix.push("KillSignal=SIGTERM".to_string());
        }
    }
    let ok = format!(
        "TimeoutStopSec={}, KillSignal={}.",
        timeout.map_or("-".to_string(), |t| t.to_string()),
        name.unwrap_or("-")
    );
    finding(habit, problems, fix, ok)
}

/// The audit as text: per unit a table (habit, verdict, why), then the drop-in that fixes its
/// warnings (`sudo systemctl edit UNIT`), and a last line with the count. `width` wraps the
/// "why" column (at least 40).
pub fn render(audits: &[UnitAudit], width: usize) -> String {
    let width = width.max(40);
    let habit_w = Habit::ALL.iter().map(|h| h.name().len()).max().unwrap_or(0);
    let why_w = width.saturating_sub(habit_w + 10).max(20);
    let mut out = String::new();
    for a in audits {
        out.push_str(&format!("{}\n", a.unit));
        for f in &a.findings {
            let mut first = true;
            for line in wrap(&f.why, why_w) {
                if first {
                    out.push_str(&format!(
                        "  {:<habit_w$}  {}  {line}\n",
                        f.habit.name(),
                        f.status.as_str()
                    ));
                    first = false;
                } else {
                    out.push_str(&format!("  {:<habit_w$}        {line}\n", ""));
                }
            }
        }
        let drop_in = a.drop_in();
        if !drop_in.is_empty() {
            out.push_str(&format!(
                "  fix: sudo systemctl edit {}, then add:\n",
                a.unit
            ));
            for l in drop_in {
                out.push_str(&format!("    {l}\n"));
            }
        }
        out.push('\n');
    }
    let warnings: usize = audits.iter().map(UnitAudit::warnings).sum();
    let units = audits.iter().filter(|a| a.warnings() > 0).count();
    out.push_str(&format!(
        "{} unit(s) audited: {warnings} warning(s) on {units} unit(s)\n",
        audits.len()
    ));
    out
}

/// Greedy word wrap; a word longer than the width gets a line of its own.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Whether a runbook's unit is an inference engine (it loads weights, so the pre-flight cache
/// flush applies): its name names an engine, or its health probe asks for real inference.
pub fn looks_like_inference(unit: &str, probe_url: Option<&str>) -> bool {
    const ENGINES: [&str; 14] = [
        "vllm",
        "sglang",
        "llama",
        "ollama",
        "tgi",
        "text-generation",
        "triton",
        "tensorrt",
        "trtllm",
        "lmdeploy",
        "exllama",
        "embedding",
        "rerank",
        "inference",
    ];
    const PATHS: [&str; 5] = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/rerank",
        "/generate",
    ];
    let name = unit.to_ascii_lowercase();
    ENGINES.iter().any(|e| name.contains(e))
        || probe_url.is_some_and(|u| PATHS.iter().any(|p| u.contains(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab's start order (runbooks/lab.yaml), then the two units outside the stack.
    const ORDER: [&str; 9] = [
        "tailscale.service",
        "prometheus-node-exporter.service",
        "vllm-qwen36.service",
        "sglang-mistral.service",
        "dispatcher.service",
        "mcp-server.service",
        "caddy.service",
        "embeddings.service",
        "reranker.service",
    ];

    fn fixture(unit: &str) -> String {
        let stem = unit.strip_suffix(".service").unwrap_or(unit);
        let path = format!(
            "{}/fixtures/lab/systemctl-show-audit-{stem}.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn audit(unit: &str, order: &[&str]) -> UnitAudit {
        let pos = order.iter().position(|u| *u == unit).unwrap_or(order.len());
        let before: Vec<String> = order[..pos].iter().map(|s| s.to_string()).collect();
        let after: Vec<String> = order[(pos + 1).min(order.len())..]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ctx = UnitContext {
            unit,
            inference: looks_like_inference(unit, None),
            started_before: &before,
            started_after: &after,
        };
        audit_unit(&fixture(unit), &ctx)
    }

    fn status(a: &UnitAudit) -> Vec<(&'static str, &'static str)> {
        a.findings
            .iter()
            .map(|f| (f.habit.name(), f.status.as_str()))
            .collect()
    }

    fn get(a: &UnitAudit, h: Habit) -> &Finding {
        a.findings.iter().find(|f| f.habit == h).expect("habit")
    }

    #[test]
    fn the_fixture_commands_are_show_command() {
        let tsv = include_str!("../fixtures/lab/commands-heal.tsv");
        let mut seen = 0;
        for line in tsv.lines() {
            let mut cols = line.splitn(3, '\t');
            let (Some(name), Some(_), Some(cmd)) = (cols.next(), cols.next(), cols.next()) else {
                continue;
            };
            if let Some(stem) = name.strip_prefix("systemctl-show-audit-") {
                assert_eq!(cmd, show_command(&format!("{stem}.service")), "{name}");
                seen += 1;
            }
        }
        assert_eq!(seen, 10, "nine lab units and nosuch.service");
    }

    #[test]
    fn parses_captured_show_output() {
        let s = Show::parse(&fixture("reranker.service"));
        assert_eq!(s.get("Restart"), Some("no"));
        assert_eq!(
            s.span("StartLimitIntervalUSec"),
            Some(Span::Finite(Duration::from_secs(60)))
        );
        assert_eq!(
            s.span("CPUQuotaPerSecUSec"),
            Some(Span::Finite(Duration::from_secs(1)))
        );
        assert_eq!(s.all("EnvironmentFiles").count(), 2);
        assert!(
            s.list("After")
                .contains(&"prometheus-node-exporter.service")
        );
        assert_eq!(memory(&s, "MemoryMax"), Some(256 << 20));
        let nosuch = Show::parse(&fixture("nosuch.service"));
        assert_eq!(
            nosuch.span("TimeoutStopUSec"),
            Some(Span::Finite(Duration::from_secs(90)))
        );
        assert_eq!(nosuch.span("CPUQuotaPerSecUSec"), Some(Span::Infinity));
    }

    #[test]
    fn timespans_as_systemd_prints_them() {
        let f = |s| parse_timespan(s);
        assert_eq!(f("100ms"), Some(Span::Finite(Duration::from_millis(100))));
        assert_eq!(f("1min 30s"), Some(Span::Finite(Duration::from_secs(90))));
        assert_eq!(f("2h 5min"), Some(Span::Finite(Duration::from_secs(7500))));
        assert_eq!(
            f("1d 12h"),
            Some(Span::Finite(Duration::from_secs(129_600)))
        );
        assert_eq!(f("500us"), Some(Span::Finite(Duration::from_micros(500))));
        assert_eq!(f("0"), Some(Span::Finite(Duration::ZERO)));
        assert_eq!(f("infinity"), Some(Span::Infinity));
        assert_eq!(f(""), None);
        assert_eq!(f("soon"), None);
        assert_eq!(f("5 parsecs"), None);
        assert_eq!(f("99999999999999999999y"), None);
    }

    #[test]
    fn the_primary_engine_needs_a_flush_and_ceilings() {
        let a = audit("vllm-qwen36.service", &ORDER);
        assert_eq!(
            status(&a),
            vec![
                ("pre-flight", "warn"),
                ("dependencies", "pass"),
                ("bounded restart", "pass"),
                ("resource ceilings", "warn"),
                ("environment file", "pass"),
                ("graceful stop", "pass"),
            ]
        );
        assert_eq!(get(&a, Habit::PreFlight).fix, vec!["[Service]", FLUSH]);
        assert!(
            get(&a, Habit::Dependencies)
                .why
                .contains("prometheus-node-exporter.service"),
        );
        assert!(get(&a, Habit::BoundedRestart).why.contains("15s of pauses"));
        assert_eq!(
            get(&a, Habit::ResourceCeilings).fix,
            vec![
                "[Service]",
                "MemoryHigh=85%",
                "MemoryMax=90%",
                "CPUQuota=600%"
            ]
        );
    }

    #[test]
    fn a_non_inference_unit_needs_no_flush() {
        let a = audit("dispatcher.service", &ORDER);
        let f = get(&a, Habit::PreFlight);
        assert_eq!(f.status, Status::Pass);
        assert!(f.why.contains("not an inference unit"));
        assert_eq!(get(&a, Habit::Dependencies).status, Status::Pass);
        assert_eq!(
            get(&a, Habit::ResourceCeilings).fix,
            vec![
                "[Service]",
                "MemoryHigh=8%",
                "MemoryMax=10%",
                "CPUQuota=200%"
            ]
        );
    }

    #[test]
    fn the_weak_unit_fails_every_habit_with_its_fix() {
        let a = audit("embeddings.service", &ORDER);
        assert_eq!(a.warnings(), 6, "{a:#?}");
        let deps = get(&a, Habit::Dependencies);
        assert!(deps.why.contains("no After="), "{}", deps.why);
        assert_eq!(
            deps.fix,
            vec!["[Unit]", "After=caddy.service", "Wants=caddy.service"]
        );
        let r = get(&a, Habit::BoundedRestart);
        assert!(r.why.contains("Restart=always"), "{}", r.why);
        assert!(r.why.contains("can never trip"), "{}", r.why);
        assert!(
            r.why.contains("30s x StartLimitBurst=5 = 150s"),
            "{}",
            r.why
        );
        assert_eq!(
            r.fix,
            vec![
                "[Unit]",
                "StartLimitBurst=5",
                "StartLimitIntervalSec=5min",
                "[Service]",
                "Restart=on-failure"
            ]
        );
        let e = get(&a, Habit::EnvironmentFile);
        assert!(e.why.contains("--port 8300"), "{}", e.why);
        assert!(e.why.contains("no EnvironmentFile="), "{}", e.why);
        assert_eq!(
            e.fix,
            vec![
                "[Service]",
                "# /etc/default/embeddings:",
                "#   UNIT=embeddings.service",
                "#   MODE=inference",
                "#   PORT=8300",
                "#   MODEL=BAAI/bge-m3",
                "#   WARMUP=2",
                "EnvironmentFile=/etc/default/embeddings",
                "ExecStart=",
                "ExecStart=/usr/bin/python3 -u /usr/local/lib/lab/standin.py --unit ${UNIT} --mode ${MODE} --port ${PORT} --model ${MODEL} --warmup ${WARMUP}",
            ]
        );
        let g = get(&a, Habit::GracefulStop);
        assert!(
            g.why.contains("infinity") && g.why.contains("SIGKILL"),
            "{}",
            g.why
        );
        assert_eq!(
            g.fix,
            vec!["[Service]", "TimeoutStopSec=180s", "KillSignal=SIGTERM"]
        );
        // One drop-in for the lot, [Unit] first, each line once.
        let d = a.drop_in();
        assert_eq!(d[0], "[Unit]");
        assert_eq!(d.iter().filter(|l| l.starts_with('[')).count(), 2, "{d:#?}");
        assert_eq!(d.iter().filter(|l| *l == "Restart=on-failure").count(), 1);
    }

    #[test]
    fn the_sound_unit_with_restart_no_fails_only_the_restart_habit() {
        let a = audit("reranker.service", &ORDER);
        assert_eq!(a.warnings(), 1, "{a:#?}");
        let r = get(&a, Habit::BoundedRestart);
        assert_eq!(r.status, Status::Warn);
        assert!(r.why.contains("Restart=no"), "{}", r.why);
        assert_eq!(r.fix, vec!["[Service]", "Restart=on-failure"]);
        let p = get(&a, Habit::PreFlight);
        assert!(p.why.contains("drop_caches"), "{}", p.why);
        let c = get(&a, Habit::ResourceCeilings);
        assert_eq!(c.why, "MemoryHigh=192M, MemoryMax=256M, CPUQuota=100%.");
    }

    #[test]
    fn the_runbook_order_must_agree_with_after() {
        // dispatcher.service is After= both inference units: started before them, it warns.
        let order = [
            "tailscale.service",
            "prometheus-node-exporter.service",
            "dispatcher.service",
            "vllm-qwen36.service",
            "sglang-mistral.service",
        ];
        let a = audit("dispatcher.service", &order);
        let d = get(&a, Habit::Dependencies);
        assert_eq!(d.status, Status::Warn);
        assert!(
            d.why
                .contains("before vllm-qwen36.service, sglang-mistral.service"),
            "{}",
            d.why
        );
    }

    #[test]
    fn an_unknown_unit_is_six_warnings() {
        let a = audit("nosuch.service", &ORDER);
        assert_eq!(a.warnings(), 6);
        assert!(a.findings[0].why.contains("not-found"));
    }

    #[test]
    fn an_unprivileged_flush_is_caught() {
        let text = "LoadState=loaded\nDynamicUser=yes\nExecStartPre={ path=/bin/sh ; argv[]=/bin/sh -c echo 3 > /proc/sys/vm/drop_caches ; ignore_errors=no }\nExecStartPreEx={ path=/bin/sh ; argv[]=/bin/sh -c echo 3 > /proc/sys/vm/drop_caches ; flags= }\n";
        let ctx = UnitContext {
            unit: "vllm.service",
            inference: true,
            ..UnitContext::default()
        };
        let a = audit_unit(text, &ctx);
        let p = get(&a, Habit::PreFlight);
        assert_eq!(p.status, Status::Warn);
        assert!(p.why.contains("prefix it with `+`"), "{}", p.why);
    }

    #[test]
    fn garbage_never_panics() {
        let ctx = UnitContext {
            unit: "x.service",
            inference: true,
            ..UnitContext::default()
        };
        for text in [
            "",
            "=\n==\nLoadState=loaded\nExecStart={ argv[]=",
            "LoadState=loaded\nRestartUSec=99999999999y\nStartLimitBurst=-1\nKillSignal=999\nMemoryMax=-5\nExecStart={ path=x ; argv[]=x --a=$B --c\n",
            "LoadState=loaded\nStartLimitIntervalUSec=0\nStartLimitBurst=0\nRestart=on-abnormal\n",
        ] {
            let a = audit_unit(text, &ctx);
            assert_eq!(a.findings.len(), 6);
        }
    }

    #[test]
    fn renders_a_table_per_unit_with_its_drop_in() {
        let audits = [
            audit("reranker.service", &ORDER),
            audit("embeddings.service", &ORDER),
        ];
        let text = render(&audits, 100);
        assert!(
            text.starts_with("reranker.service\n  pre-flight         pass  ExecStartPre"),
            "{text}"
        );
        assert!(
            text.contains("  bounded restart    warn  Restart=no"),
            "{text}"
        );
        assert!(
            text.contains("  fix: sudo systemctl edit embeddings.service, then add:\n    [Unit]\n"),
            "{text}"
        );
        assert!(
            text.ends_with("2 unit(s) audited: 7 warning(s) on 2 unit(s)\n"),
            "{text}"
        );
        assert!(
            text.lines().all(|l| l.chars().count() <= 100
                || !l.contains(' ')
                || l.starts_with("    ExecStart=")),
            "{text}"
        );
    }

    #[test]
    fn inference_is_told_by_name_or_probe() {
        assert!(looks_like_inference("vllm-qwen36.service", None));
        assert!(looks_like_inference("sglang-mistral.service", None));
        assert!(!looks_like_inference("dispatcher.service", None));
        assert!(looks_like_inference(
            "engine.service",
            Some("http://127.0.0.1:8000/v1/chat/completions")
        ));
    }
}
