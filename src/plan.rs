//! The Plan: one resolution of a runbook into final steps.
//!
//! Templates are rendered, commands wrapped (sudo, remote timeout, kill marker) and quoted,
//! deadlines and `mutates` decided. `run --dry-run`, `export` and `rehearse` all use it,
//! so what is printed is what runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

pub use crate::secrets::{Secrets, placeholder};

use crate::runbook::Loaded;
use crate::runbook::diag::{Pos, Problem};
use crate::runbook::model::{self, Format, OnFail, Window};
use crate::template::{Context, Templates, Values, check_name, shell_quote};
use crate::verdict::{HttpExpect, Matcher};

pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MANUAL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_DROP_CACHES_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_WAIT_SSH_EVERY: Duration = Duration::from_secs(15);
pub const DEFAULT_WAIT_SSH_TIMEOUT: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_GATE_EVERY: Duration = Duration::from_secs(5);
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How far below a `json:` key its strings are looked for, to point an error at one.
const JSON_SEARCH_LINES: usize = 50;
/// Grace the remote `timeout` gives a command between TERM and KILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// The command that reads the target's boot id: proof of a working SSH session.
pub const BOOT_ID_COMMAND: &str = "cat /proc/sys/kernel/random/boot_id";
/// `sync`, then drop the page cache, printing the cache size before and after as proof.
pub const DROP_CACHES_COMMAND: &str = "sync && grep ^Cached: /proc/meminfo && echo 3 > /proc/sys/vm/drop_caches && grep ^Cached: /proc/meminfo";

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
    /// Where the step starts in the runbook.
    pub pos: Pos,
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
        health: Option<Gate>,
    },
    Http(Request),
    Notify {
        channel: String,
        message: String,
    },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Manual { .. } => "manual",
            Action::Run(_) => "run",
            Action::Local(_) => "local",
            Action::WaitSsh { .. } => "wait_ssh",
            Action::DropCaches(_) => "drop_caches",
            Action::Start { .. } => "start",
            Action::Http(_) => "http",
            Action::Notify { .. } => "notify",
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
    /// Sent by `curl` on the target instead of from the management host.
    pub from_target: bool,
}

impl Request {
    /// The `curl` line that sends this request by hand; `-w` prints the status last.
    pub fn curl(&self) -> String {
        let mut parts = vec!["curl -sS".to_owned()];
        if self.method != "GET" {
            parts.push(format!("-X {}", self.method));
        }
        parts.push(format!("-m {}", self.timeout.as_secs().max(1)));
        for (k, v) in &self.headers {
            parts.push(format!("-H {}", shell_quote(&format!("{k}: {v}"))));
        }
        if let Some(b) = &self.body {
            parts.push(format!("--data-raw {}", shell_quote(b)));
        }
        parts.push("-w '\\n%{http_code}\\n'".to_owned());
        parts.push(shell_quote(&self.url));
        parts.join(" ")
    }
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

/// How a plan is resolved.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--var KEY=VALUE`: replaces or adds a var.
    pub vars: Vec<(String, String)>,
    /// `--target NAME=HOST`: points a target at another host.
    pub targets: Vec<(String, String)>,
    /// The environment `env.X` reads (the process environment, or a test's).
    pub env: BTreeMap<String, String>,
}

impl Options {
    pub fn from_process_env() -> Self {
        Options {
            env: std::env::vars().collect(),
            ..Options::default()
        }
    }
}

/// `[sudo -n ]timeout -k 5s 60s sh -c 'CMD' MARKER`: the remote side dies at its deadline.
pub fn remote_wire(script: &str, sudo: bool, timeout: Duration, marker: &str) -> String {
    let mut s = String::new();
    if sudo {
        s.push_str("sudo -n ");
    }
    s.push_str(&format!(
        "timeout -k {}s {}s sh -c {} {}",
        KILL_GRACE.as_secs(),
        timeout.as_secs().max(1),
        shell_quote(script),
        marker
    ));
    s
}

struct Resolver<'a> {
    loaded: &'a Loaded,
    opts: &'a Options,
    templates: Templates,
    problems: Vec<Problem>,
    secrets: Secrets,
    var_names: Vec<String>,
    values: Values,
}

impl<'a> Resolver<'a> {
    fn err(&mut self, pos: Pos, msg: impl Into<String>, help: impl Into<String>) {
        let p = Problem::error(&self.loaded.source, pos, msg).help(help);
        self.problems.push(p);
    }

    /// Where `key:` is written in the mapping whose first key is at `block`, else `fallback`.
    fn key_at(&self, block: Pos, key: &str, fallback: Pos) -> Pos {
        self.loaded
            .source
            .key_in_block(block, key)
            .unwrap_or(fallback)
    }

    /// Render a template, reporting undefined names and syntax errors at `s`.
    fn render(
        &mut self,
        s: &Spanned<String>,
        ctx: Context,
        target: Option<&TargetSpec>,
        late_ok: bool,
    ) -> String {
        let pos = Pos::of(&s.referenced);
        self.render_at(&s.value, pos, ctx, target, late_ok)
    }

    fn render_at(
        &mut self,
        src: &str,
        pos: Pos,
        ctx: Context,
        target: Option<&TargetSpec>,
        late_ok: bool,
    ) -> String {
        let names = match self.templates.names(src) {
            Ok(n) => n,
            Err(e) => {
                let message = match e.strip_prefix("syntax error") {
                    Some(rest) => format!("template syntax error{rest}"),
                    None => format!("template error: {e}"),
                };
                self.err(
                    pos,
                    message,
                    "templates look like `{{ vars.api }}`: check the braces",
                );
                return src.to_owned();
            }
        };
        let var_names = self.var_names.clone();
        let vars: Vec<&str> = var_names.iter().map(String::as_str).collect();
        let mut in_order = names.clone();
        in_order.sort_by_key(|n| src.find(n.as_str()).unwrap_or(usize::MAX));
        let mut ok = true;
        for n in &in_order {
            if let Err(e) = check_name(n, &vars, late_ok) {
                ok = false;
                let help = if n.starts_with("vars.") {
                    "define it under `vars:` at the top of the runbook, or pass --var KEY=VALUE"
                } else if n.starts_with("run.") {
                    "commands are fixed before the run starts; only notify and abort messages are rendered as they are sent"
                } else {
                    "templates read vars.X (from `vars:`), env.X (the environment, kept secret), target.host/user/port/name and run.elapsed"
                };
                let at = self
                    .loaded
                    .source
                    .find_after(pos, n, src.lines().count() + 1)
                    .unwrap_or(pos);
                self.err(at, e, help);
            }
        }
        if !ok {
            return src.to_owned();
        }
        let mut values = self.values.clone();
        for n in &names {
            if let Some(var) = n.strip_prefix("env.") {
                let var = var.split('.').next().unwrap_or(var).to_owned();
                let value = match self.opts.env.get(&var) {
                    Some(v) => {
                        if !self.secrets.values.iter().any(|(k, _)| *k == var) {
                            self.secrets.values.push((var.clone(), v.clone()));
                        }
                        v.clone()
                    }
                    None => {
                        if !self.secrets.missing.contains(&var) {
                            self.secrets.missing.push(var.clone());
                        }
                        placeholder(&var)
                    }
                };
                values.env.insert(var, value);
            }
        }
        if late_ok {
            values
                .run
                .insert("elapsed".into(), "{{ run.elapsed }}".into());
        }
        if let Some(t) = target {
            values.target = target_values(t);
        }
        match self.templates.render(src, ctx, &values) {
            Ok(s) => s,
            Err(e) => {
                self.err(
                    pos,
                    format!("template error: {e}"),
                    "check the names used between {{ }}",
                );
                src.to_owned()
            }
        }
    }
}

fn target_values(t: &TargetSpec) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("name".into(), t.name.clone());
    m.insert("host".into(), t.host.clone());
    m.insert("user".into(), t.user.clone().unwrap_or_default());
    m.insert("port".into(), t.port.unwrap_or(22).to_string());
    m
}

fn expand_home(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    PathBuf::from(p)
}

fn matcher(m: &model::Matcher) -> Matcher {
    Matcher {
        exit: m.exit.as_ref().map(|e| e.to_vec()),
        stdout: m.stdout.as_ref().map(|p| p.0.clone()),
        stderr: m.stderr.as_ref().map(|p| p.0.clone()),
    }
}

fn first_line(s: &str, max: usize) -> String {
    let line = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// Resolve a loaded runbook into its Plan, or every problem found on the way.
pub fn resolve(loaded: &Loaded, opts: &Options) -> Result<Plan, Vec<Problem>> {
    let rb = &loaded.runbook;
    let mut r = Resolver {
        loaded,
        opts,
        templates: Templates::new(),
        problems: Vec::new(),
        secrets: Secrets::default(),
        var_names: Vec::new(),
        values: Values::default(),
    };

    // name: used in file names and kill markers.
    let name = rb.name.value.clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        r.err(
            Pos::of(&rb.name.referenced),
            format!("runbook name `{name}` must be a single word of letters, digits, `-`, `_` or `.`"),
            "the name is used for the journal and state files: write it like `spark-power`; put prose in `title:`",
        );
    }
    let budget = rb.budget.value.0;
    if budget.is_zero() {
        r.err(
            Pos::of(&rb.budget.referenced),
            "the budget is zero",
            "give the whole timeline, like `budget: 30m`",
        );
    }

    // Targets, with --target overrides.
    let mut targets = Vec::new();
    if rb.targets.value.is_empty() {
        r.err(
            Pos::of(&rb.targets.referenced),
            "no targets: a runbook needs at least one machine to recover",
            "add `targets: { spark: { host: spark.local } }`",
        );
    }
    for (tname, t) in rb.targets.value.iter() {
        let mut host = t.host.value.clone();
        if let Some((_, h)) = opts.targets.iter().rev().find(|(n, _)| *n == tname.value) {
            host = h.clone();
        }
        if host.trim().is_empty() {
            r.err(
                Pos::of(&t.host.referenced),
                format!("target `{}` has an empty host", tname.value),
                "write an ssh destination, like `spark.local`",
            );
        }
        targets.push(TargetSpec {
            name: tname.value.clone(),
            host,
            user: t.user.clone(),
            port: t.port.map(|p| p.0),
            identity: t.identity.as_deref().map(expand_home),
            known_hosts: t.known_hosts.as_deref().map(expand_home),
            ssh_config: t.ssh_config.as_deref().map(expand_home),
        });
    }
    // Targets named by --target must exist: a typo would silently aim at the real box.
    // That is a usage error reported by the caller, see `check_overrides`.

    // vars: rendered in order; a var may use env and earlier vars.
    for (k, _) in rb.vars.iter() {
        r.var_names.push(k.value.clone());
    }
    for (i, (k, v)) in rb.vars.iter().enumerate() {
        let value = match opts.vars.iter().rev().find(|(n, _)| *n == k.value) {
            Some((_, over)) => over.clone(),
            None if r.uses_later_var(i, v) => v.value.clone(),
            None => {
                let first = targets.first().cloned();
                r.render(v, Context::Text, first.as_ref(), false)
            }
        };
        r.values.vars.insert(k.value.clone(), value);
    }
    for (k, v) in &opts.vars {
        if !r.var_names.contains(k) {
            r.var_names.push(k.clone());
            r.values.vars.insert(k.clone(), v.clone());
        }
    }

    // Notify channels.
    let mut channels = Vec::new();
    for (cname, c) in rb.notify.iter() {
        let url = r.render(
            &c.webhook,
            Context::Text,
            targets.first().cloned().as_ref(),
            false,
        );
        channels.push(ChannelSpec {
            name: cname.value.clone(),
            url,
            format: c.format.unwrap_or(Format::Json),
        });
    }

    // Abort handler.
    let mut abort = AbortSpec::default();
    if let Some(a) = &rb.abort {
        if let Some(ch) = &a.value.notify {
            if rb.notify.contains(&ch.value) {
                abort.channel = Some(ch.value.clone());
            } else {
                r.unknown_channel(ch);
            }
        }
        if let Some(m) = &a.value.message {
            abort.message = r.render(m, Context::Text, targets.first().cloned().as_ref(), true);
        }
    }

    // Phases: windows inside the budget, in order, never overlapping.
    let mut phases = Vec::new();
    let mut number = 0;
    let mut prev_end: Option<(Duration, String)> = None;
    if rb.phases.value.is_empty() {
        r.err(
            Pos::of(&rb.phases.referenced),
            "no phases: nothing to run",
            "add at least one phase with a window and steps",
        );
    }
    for ph in &rb.phases.value {
        let w = ph.window.value;
        let wpos = Pos::of(&ph.window.referenced);
        if w.start >= w.end {
            r.err(
                wpos,
                format!("window {} ends before it starts", fmt_window(&w)),
                "write START-END with START before END, like 5m-10m",
            );
        } else if w.end > budget {
            r.err(
                wpos,
                format!(
                    "window {} runs past the budget of {}",
                    fmt_window(&w),
                    fmt_duration(budget)
                ),
                "end the window within the budget, or raise `budget:`",
            );
        }
        if let Some((end, prev)) = &prev_end
            && w.start < *end
        {
            r.err(
                wpos,
                format!(
                    "window {} overlaps the previous phase `{prev}`, which ends at {}",
                    fmt_window(&w),
                    fmt_duration(*end)
                ),
                "phases run one after the other: start this window at or after the previous one's end",
            );
        }
        prev_end = Some((w.end, ph.name.value.clone()));
        if ph.steps.value.is_empty() {
            r.err(
                Pos::of(&ph.steps.referenced),
                format!("phase `{}` has no steps", ph.name.value),
                "add steps, or remove the phase",
            );
        }
        let mut steps = Vec::new();
        for st in &ph.steps.value {
            number += 1;
            if let Some(s) = r.step(number, st, &targets, &channels) {
                steps.push(s);
            }
        }
        phases.push(Phase {
            name: ph.name.value.clone(),
            window: w,
            steps,
        });
    }

    if r.problems.is_empty() {
        Ok(Plan {
            name,
            title: rb.title.clone().unwrap_or_else(|| rb.name.value.clone()),
            source: loaded.path.clone(),
            sha256: loaded.sha256.clone(),
            budget,
            rehearse_every: rb.rehearse_every.map(|d| d.0),
            targets,
            channels,
            abort,
            phases,
            secrets: r.secrets,
        })
    } else {
        // Reported in the order they are written, as a compiler does; a message that quotes a
        // rendered value must not show an `env` secret.
        r.problems.sort_by_key(|p| (p.pos.line, p.pos.column));
        for p in &mut r.problems {
            p.message = r.secrets.redact(&p.message);
            p.help = p.help.as_deref().map(|h| r.secrets.redact(h));
        }
        Err(r.problems)
    }
}

/// Check `--target NAME=HOST` names against the runbook: a typo must not go unnoticed.
pub fn check_overrides(loaded: &Loaded, opts: &Options) -> Result<(), String> {
    for (n, _) in &opts.targets {
        if !loaded.runbook.targets.value.contains(n) {
            let known: Vec<&str> = loaded.runbook.targets.value.keys().collect();
            return Err(format!(
                "--target {n}=…: the runbook has no target `{n}`; its targets: {}",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// "a `run`", "an `http`": a step kind with its article.
fn a_kind(kind: &str) -> String {
    let article = if kind == "http" { "an" } else { "a" };
    format!("{article} `{kind}`")
}

/// `0m-5m`, `5m-10m`: a window as the runbook writes it (zero takes the other end's unit).
pub fn fmt_window(w: &Window) -> String {
    let zero_like = |other: Duration| -> String {
        let other = fmt_duration(other);
        let unit: String = other
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        format!("0{unit}")
    };
    let start = if w.start.is_zero() {
        zero_like(w.end)
    } else {
        fmt_duration(w.start)
    };
    let end = if w.end.is_zero() {
        zero_like(w.start)
    } else {
        fmt_duration(w.end)
    };
    format!("{start}-{end}")
}

/// `5m`, `1m30s`, `2h`, `90d`: the shortest exact human form.
pub fn fmt_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let ms = d.subsec_millis();
    if secs == 0 {
        return if ms == 0 {
            "0s".into()
        } else {
            format!("{ms}ms")
        };
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

impl Resolver<'_> {
    /// Whether var number `i` reads itself or a var defined below it (reported here): vars are
    /// rendered in order, so it could only be undefined.
    fn uses_later_var(&mut self, i: usize, v: &Spanned<String>) -> bool {
        let Ok(names) = self.templates.names(&v.value) else {
            return false;
        };
        let vars = &self.loaded.runbook.vars;
        let this = vars
            .0
            .get(i)
            .map(|(k, _)| k.value.clone())
            .unwrap_or_default();
        let mut found = false;
        for n in names {
            let Some(name) = n.strip_prefix("vars.") else {
                continue;
            };
            let name = name.split('.').next().unwrap_or(name);
            let Some(j) = vars.0.iter().position(|(k, _)| k.value == name) else {
                continue;
            };
            if j < i {
                continue;
            }
            found = true;
            let pos = Pos::of(&v.referenced);
            let at = self
                .loaded
                .source
                .find_after(pos, &n, v.value.lines().count() + 1)
                .unwrap_or(pos);
            let (message, help) = if j == i {
                (
                    format!("var `{this}` reads itself"),
                    "give it a value that does not depend on itself".to_owned(),
                )
            } else {
                (
                    format!("var `{this}` reads `vars.{name}`, which is defined below it"),
                    format!("vars are read in order: move `{name}` above `{this}` under `vars:`"),
                )
            };
            self.err(at, message, help);
        }
        found
    }

    fn unknown_channel(&mut self, ch: &Spanned<String>) {
        let known: Vec<&str> = self.loaded.runbook.notify.keys().collect();
        let help = if known.is_empty() {
            "define it under `notify:` with a webhook and a format".to_owned()
        } else {
            format!("channels defined under `notify:`: {}", known.join(", "))
        };
        self.err(
            Pos::of(&ch.referenced),
            format!("unknown notify channel `{}`", ch.value),
            help,
        );
    }

    fn step(
        &mut self,
        number: usize,
        st: &Spanned<model::Step>,
        targets: &[TargetSpec],
        channels: &[ChannelSpec],
    ) -> Option<Step> {
        let s = &st.value;
        let spos = Pos::of(&st.referenced);
        let before = self.problems.len();

        // Exactly one kind.
        let present: Vec<(&str, Pos)> = [
            ("manual", s.manual.as_ref().map(|v| Pos::of(&v.referenced))),
            ("run", s.run.as_ref().map(|v| Pos::of(&v.referenced))),
            ("local", s.local.as_ref().map(|v| Pos::of(&v.referenced))),
            (
                "wait_ssh",
                s.wait_ssh.as_ref().map(|v| Pos::of(&v.referenced)),
            ),
            (
                "drop_caches",
                s.drop_caches.as_ref().map(|v| Pos::of(&v.referenced)),
            ),
            ("start", s.start.as_ref().map(|v| Pos::of(&v.referenced))),
            ("http", s.http.as_ref().map(|v| Pos::of(&v.referenced))),
            ("notify", s.notify.as_ref().map(|v| Pos::of(&v.referenced))),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.map(|p| (k, p)))
        .collect();
        let kind = match present.as_slice() {
            [] => {
                let which = match &s.name {
                    Some(n) => format!("step {number} (`{}`)", n.value),
                    None => format!("step {number}"),
                };
                self.err(
                    spos,
                    format!("{which} has no kind: it does not say what to do"),
                    format!("give it exactly one of: {}", model::KINDS.join(", ")),
                );
                return None;
            }
            [(k, _)] => *k,
            [(a, _), (b, p), ..] => {
                let at = self.key_at(spos, b, *p);
                self.err(
                    at,
                    format!("step {number} has two kinds, `{a}` and `{b}`"),
                    "a step does one thing: split it into two steps",
                );
                return None;
            }
        };

        // Which target.
        let target = match &s.target {
            Some(t) => match targets.iter().position(|x| x.name == t.value) {
                Some(i) => i,
                None => {
                    let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                    self.err(
                        Pos::of(&t.referenced),
                        format!("unknown target `{}`", t.value),
                        format!("targets defined under `targets:`: {}", known.join(", ")),
                    );
                    0
                }
            },
            None => 0,
        };
        let tspec = targets.get(target).cloned();
        let tref = tspec.as_ref();

        // Keys that only some kinds take.
        let only = |key: &str, allowed: &[&str]| -> Option<String> {
            if allowed.contains(&kind) {
                None
            } else {
                Some(format!(
                    "`{key}` does not apply to {} step (it applies to: {})",
                    a_kind(kind),
                    allowed.join(", ")
                ))
            }
        };
        let checks: Vec<(Option<Pos>, Option<String>, &str)> = vec![
            (
                s.health.as_ref().map(|h| Pos::of(&h.referenced)),
                only("health", &["start"]),
                "move the gate under a `start` step, or use an `http` step",
            ),
            (
                s.message.as_ref().map(|h| Pos::of(&h.referenced)),
                only("message", &["notify"]),
                "`message` is the text of a `notify` step",
            ),
            (
                s.retry.as_ref().map(|h| Pos::of(&h.referenced)),
                only("retry", &["run", "local", "http"]),
                "remove `retry`; gates and wait_ssh have their own `every`",
            ),
            (
                s.expect.as_ref().map(|h| Pos::of(&h.referenced)),
                only("expect", &["run", "local"]),
                if kind == "http" {
                    "put HTTP expectations inside `http:`, as `expect: { status: 200, body: ... }`"
                } else {
                    "remove `expect` from this step"
                },
            ),
            (
                s.abort_if.as_ref().map(|h| Pos::of(&h.referenced)),
                only("abort_if", &["run", "local"]),
                "remove `abort_if`, or move the check into a `run` step",
            ),
        ];
        let keys = ["health", "message", "retry", "expect", "abort_if"];
        for ((pos, msg, help), key) in checks.into_iter().zip(keys) {
            if let (Some(pos), Some(msg)) = (pos, msg) {
                let at = self.key_at(spos, key, pos);
                self.err(at, msg, help);
            }
        }
        if s.sudo.is_some() && !["run", "start", "drop_caches"].contains(&kind) {
            self.err(
                self.key_at(spos, "sudo", spos),
                format!("`sudo` does not apply to {} step", a_kind(kind)),
                "sudo applies to run, start and drop_caches, which run on the target",
            );
        }
        if kind == "notify" && s.on_fail.is_some() {
            self.err(
                self.key_at(spos, "on_fail", spos),
                "`on_fail` does not apply to a notify step: a failing post never stops a recovery",
                "remove `on_fail`; a failed post is retried, then reported",
            );
        }
        if let (true, Some(t)) = (kind == "wait_ssh", &s.timeout) {
            self.err(
                self.key_at(spos, "timeout", Pos::of(&t.referenced)),
                "a wait_ssh step takes its timeout inside: `wait_ssh: { every: 15s, timeout: 5m }`",
                "move `timeout` into the wait_ssh mapping",
            );
        }
        if let Some(m) = s.mutates {
            let fixed = match kind {
                "manual" | "drop_caches" | "start" | "notify" => Some(true),
                "wait_ssh" => Some(false),
                _ => None,
            };
            if let Some(f) = fixed
                && f != m
            {
                self.err(
                    self.key_at(spos, "mutates", spos),
                    format!(
                        "{} step {} state; `mutates: {m}` cannot change that",
                        a_kind(kind),
                        if f { "always changes" } else { "never changes" }
                    ),
                    "remove `mutates` from this step",
                );
            }
        }

        let marker = format!("recover:{}:{number}", self.loaded.runbook.name.value);
        let explicit_timeout = s.timeout.as_ref().map(|t| t.value.0);
        let sudo_for = |want: bool| want && !tref.map(TargetSpec::is_root).unwrap_or(false);

        let (action, default_timeout, default_name, mutates_default) = match kind {
            "manual" => {
                let text = self.render(s.manual.as_ref()?, Context::Text, tref, false);
                let name = first_line(&text, 60);
                (Action::Manual { text }, DEFAULT_MANUAL_TIMEOUT, name, true)
            }
            "run" | "local" => {
                let src = if kind == "run" {
                    s.run.as_ref()?
                } else {
                    s.local.as_ref()?
                };
                if src.value.trim().is_empty() {
                    self.err(
                        Pos::of(&src.referenced),
                        format!("empty `{kind}` command"),
                        "write the shell command to run",
                    );
                }
                let script = self.render(src, Context::Shell, tref, false);
                let timeout = explicit_timeout.unwrap_or(DEFAULT_RUN_TIMEOUT);
                let name = first_line(&script, 60);
                if kind == "run" {
                    let sudo = sudo_for(s.sudo.unwrap_or(false));
                    let wire = remote_wire(&script, sudo, timeout, &marker);
                    (
                        Action::Run(Command {
                            script,
                            sudo,
                            wire,
                            marker: marker.clone(),
                        }),
                        DEFAULT_RUN_TIMEOUT,
                        name,
                        true,
                    )
                } else {
                    let wire = format!("sh -c {}", shell_quote(&script));
                    (
                        Action::Local(Command {
                            script,
                            sudo: false,
                            wire,
                            marker: marker.clone(),
                        }),
                        DEFAULT_RUN_TIMEOUT,
                        format!("local: {name}"),
                        true,
                    )
                }
            }
            "wait_ssh" => {
                let w = &s.wait_ssh.as_ref()?.value;
                let every = w.every.map(|d| d.0).unwrap_or(DEFAULT_WAIT_SSH_EVERY);
                let timeout = w.timeout.map(|d| d.0).unwrap_or(DEFAULT_WAIT_SSH_TIMEOUT);
                if every.is_zero() || every > timeout {
                    self.err(
                        self.key_at(spos, "wait_ssh", spos),
                        format!(
                            "wait_ssh tries every {} but gives up after {}",
                            fmt_duration(every),
                            fmt_duration(timeout)
                        ),
                        "`every` must be shorter than `timeout`, like { every: 15s, timeout: 5m }",
                    );
                }
                let name = format!(
                    "wait for SSH on {}",
                    tref.map(|t| t.name.as_str()).unwrap_or("target")
                );
                (Action::WaitSsh { every, timeout }, timeout, name, false)
            }
            "drop_caches" => {
                let timeout = explicit_timeout.unwrap_or(DEFAULT_DROP_CACHES_TIMEOUT);
                let sudo = sudo_for(true);
                let wire = remote_wire(DROP_CACHES_COMMAND, sudo, timeout, &marker);
                let name = format!(
                    "drop the page cache on {}",
                    tref.map(|t| t.name.as_str()).unwrap_or("target")
                );
                (
                    Action::DropCaches(Command {
                        script: DROP_CACHES_COMMAND.into(),
                        sudo,
                        wire,
                        marker: marker.clone(),
                    }),
                    DEFAULT_DROP_CACHES_TIMEOUT,
                    name,
                    true,
                )
            }
            "start" => {
                let u = s.start.as_ref()?;
                let rendered_before = self.problems.len();
                let unit = self.render(u, Context::Text, tref, false);
                if self.problems.len() == rendered_before
                    && (unit.trim().is_empty() || unit.contains(char::is_whitespace))
                {
                    self.err(
                        Pos::of(&u.referenced),
                        format!("`{unit}` is not a unit name"),
                        "write one systemd unit, like `vllm-qwen36.service`",
                    );
                }
                let sudo = sudo_for(s.sudo.unwrap_or(true));
                let step_timeout = explicit_timeout.unwrap_or(DEFAULT_START_TIMEOUT);
                let script = format!("systemctl start --no-block {}", shell_quote(&unit));
                let start_timeout = DEFAULT_PROBE_TIMEOUT.min(step_timeout);
                let wire = remote_wire(&script, sudo, start_timeout, &marker);
                let health = match &s.health {
                    Some(h) => {
                        let key = self.key_at(spos, "health", Pos::of(&h.referenced));
                        self.gate(h, key, tref, sudo, &marker, explicit_timeout)
                    }
                    None => None,
                };
                (
                    Action::Start {
                        unit: unit.clone(),
                        start: Command {
                            script,
                            sudo,
                            wire,
                            marker: marker.clone(),
                        },
                        health,
                    },
                    DEFAULT_START_TIMEOUT,
                    format!("start {unit}"),
                    true,
                )
            }
            "http" => {
                let h = s.http.as_ref()?;
                if h.value.timeout.is_some() && s.timeout.is_some() {
                    self.err(
                        self.key_at(spos, "timeout", spos),
                        "this http step has two timeouts, one inside `http:` and one on the step",
                        "keep one of them",
                    );
                }
                let req = self.request(h, tref, explicit_timeout);
                let mutates = s.mutates.unwrap_or(false);
                let name = format!("{} {}", req.method, req.url);
                let t = req.timeout;
                (Action::Http(req), t, name, mutates)
            }
            "notify" => {
                let ch = s.notify.as_ref()?;
                if !channels.iter().any(|c| c.name == ch.value) {
                    self.unknown_channel(ch);
                }
                let message = match &s.message {
                    Some(m) => self.render(m, Context::Text, tref, true),
                    None => {
                        self.err(
                            Pos::of(&ch.referenced),
                            "a notify step needs a `message`",
                            "add `message: \"We are back after {{ run.elapsed }}.\"`",
                        );
                        String::new()
                    }
                };
                (
                    Action::Notify {
                        channel: ch.value.clone(),
                        message,
                    },
                    DEFAULT_NOTIFY_TIMEOUT,
                    format!("notify {}", ch.value),
                    true,
                )
            }
            _ => return None,
        };

        let retry = s.retry.as_ref().map(|r| RetrySpec {
            every: r.value.every.0,
            timeout: r.value.timeout.0,
        });
        if let (Some(rs), Some(r)) = (retry, &s.retry)
            && (rs.every.is_zero() || rs.every > rs.timeout)
        {
            self.err(
                self.key_at(spos, "retry", Pos::of(&r.referenced)),
                format!(
                    "retry every {} but give up after {}",
                    fmt_duration(rs.every),
                    fmt_duration(rs.timeout)
                ),
                "`every` must be shorter than `timeout`",
            );
        }
        let name = match &s.name {
            Some(n) => self.render(n, Context::Text, tref, false),
            None => default_name,
        };
        let abort_message = s
            .abort_message
            .as_ref()
            .map(|m| self.render(m, Context::Text, tref, true));
        let timeout = match &action {
            Action::WaitSsh { timeout, .. } => *timeout,
            Action::Http(r) => r.timeout,
            _ => explicit_timeout.unwrap_or(default_timeout),
        };

        if let Some(a) = &s.abort_if {
            let m = &a.value;
            let everything = [&m.stdout, &m.stderr]
                .into_iter()
                .flatten()
                .any(|p| p.0.is_match(""));
            if everything {
                self.err(
                    Pos::of(&a.referenced),
                    "this abort_if pattern matches empty output, so every run would abort",
                    "make the pattern require text, e.g. `EXT4-fs error` rather than `(error)*`",
                );
            }
        }
        for m in [&s.expect, &s.abort_if].into_iter().flatten() {
            if matches!(&m.value.exit, Some(e) if e.to_vec().is_empty()) {
                self.err(
                    Pos::of(&m.referenced),
                    "`exit: []` lists no exit code",
                    "list the codes, like `exit: 0` or `exit: [0, 1]`",
                );
            }
        }

        if self.problems.len() > before {
            return None;
        }
        Some(Step {
            number,
            name,
            target,
            action,
            timeout,
            timeout_explicit: explicit_timeout.is_some() || kind == "wait_ssh",
            retry,
            expect: s.expect.as_ref().map(|m| matcher(&m.value)),
            abort_if: s.abort_if.as_ref().map(|m| matcher(&m.value)),
            on_fail: s.on_fail.unwrap_or(OnFail::Stop),
            mutates: s.mutates.unwrap_or(mutates_default),
            abort_message,
            pos: spos,
        })
    }

    fn request(
        &mut self,
        h: &Spanned<model::Http>,
        target: Option<&TargetSpec>,
        step_timeout: Option<Duration>,
    ) -> Request {
        let v = &h.value;
        let before = self.problems.len();
        let url = self.render(&v.url, Context::Text, target, false);
        // An unset `env.X` at the front is only known when the run starts: not a check error.
        let unset = self
            .secrets
            .missing
            .iter()
            .any(|n| url.starts_with(&placeholder(n)));
        // A URL still holding `{{` comes from a var whose template failed: already reported.
        let checkable = self.problems.len() == before && !unset && !url.contains("{{");
        if checkable && !url.starts_with("http://") && !url.starts_with("https://") {
            self.err(
                Pos::of(&v.url.referenced),
                format!("`{url}` is not an http:// or https:// URL"),
                "write the full URL, like http://spark.local:8000/v1/models",
            );
        }
        let method = match &v.method {
            Some(m) => {
                let up = m.value.to_ascii_uppercase();
                if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                    .contains(&up.as_str())
                {
                    self.err(
                        Pos::of(&m.referenced),
                        format!("`{}` is not an HTTP method", m.value),
                        "use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS",
                    );
                }
                up
            }
            None => {
                if v.json.is_some() || v.body.is_some() {
                    "POST".into()
                } else {
                    "GET".into()
                }
            }
        };
        let mut headers = Vec::new();
        for (k, val) in v.headers.iter() {
            let rendered = self.render(val, Context::Text, target, false);
            headers.push((k.value.clone(), rendered));
        }
        let body = match (&v.json, &v.body) {
            (Some(_), Some(b)) => {
                self.err(
                    Pos::of(&b.referenced),
                    "an http step has both `json` and `body`",
                    "keep one: `json` sends a JSON document, `body` sends text",
                );
                None
            }
            (Some(j), None) => {
                let rendered = self.render_json(&j.value, Pos::of(&j.referenced), target);
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    headers.push(("Content-Type".into(), "application/json".into()));
                }
                Some(serde_json::to_string(&rendered).unwrap_or_default())
            }
            (None, Some(b)) => Some(self.render(b, Context::Text, target, false)),
            (None, None) => None,
        };
        let expect = v.expect.as_ref().map(|e| HttpExpect {
            status: e.status.as_ref().map(|s| s.to_vec()),
            body: e.body.as_ref().map(|p| p.0.clone()),
        });
        let timeout = v
            .timeout
            .as_ref()
            .map(|t| t.value.0)
            .or(step_timeout)
            .unwrap_or(DEFAULT_HTTP_TIMEOUT);
        Request {
            method,
            url,
            headers,
            body,
            expect: expect.unwrap_or(HttpExpect {
                status: None,
                body: None,
            }),
            timeout,
            from_target: v.from == Some(model::From::Target),
        }
    }

    /// Render every string inside a JSON value.
    fn render_json(
        &mut self,
        v: &serde_json::Value,
        pos: Pos,
        target: Option<&TargetSpec>,
    ) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            J::String(s) => {
                let first = s.lines().next().unwrap_or("");
                let at = self
                    .loaded
                    .source
                    .find_after(pos, first, JSON_SEARCH_LINES)
                    .map(|p| Pos { len: 0, ..p })
                    .unwrap_or(pos);
                J::String(self.render_at(s, at, Context::Text, target, false))
            }
            J::Array(a) => J::Array(a.iter().map(|x| self.render_json(x, pos, target)).collect()),
            J::Object(o) => J::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), self.render_json(x, pos, target)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The health gate of a start step; `key` is where `health:` is written.
    fn gate(
        &mut self,
        h: &Spanned<model::Health>,
        key: Pos,
        target: Option<&TargetSpec>,
        sudo: bool,
        marker: &str,
        explicit_timeout: Option<Duration>,
    ) -> Option<Gate> {
        let v = &h.value;
        let hpos = Pos::of(&h.referenced);
        let step_timeout = explicit_timeout.unwrap_or(DEFAULT_START_TIMEOUT);
        let explicit = explicit_timeout.is_some();
        let every = v.every.map(|d| d.0).unwrap_or(DEFAULT_GATE_EVERY);
        let timeout = v
            .timeout
            .as_ref()
            .map(|d| d.value.0)
            .unwrap_or(DEFAULT_GATE_TIMEOUT);
        let successes = v.successes.unwrap_or(1);
        if successes == 0 {
            self.err(
                self.key_at(hpos, "successes", hpos),
                "a health gate needs at least one success",
                "set `successes: 1` or more",
            );
        }
        if explicit && timeout > step_timeout {
            let tpos = v
                .timeout
                .as_ref()
                .map(|t| Pos::of(&t.referenced))
                .unwrap_or(hpos);
            self.err(
                tpos,
                format!(
                    "the health gate waits up to {} but the step times out after {}",
                    fmt_duration(timeout),
                    fmt_duration(step_timeout)
                ),
                "raise the step's `timeout` above the gate's, or shorten the gate",
            );
        }
        let probe = match (&v.http, &v.run) {
            (Some(http), Some(run)) => {
                let (hp, rp) = (Pos::of(&http.referenced), Pos::of(&run.referenced));
                let second = if (rp.line, rp.column) > (hp.line, hp.column) {
                    self.key_at(hpos, "run", rp)
                } else {
                    self.key_at(hpos, "http", hp)
                };
                self.err(
                    second,
                    "this health gate has two probes, `http:` and `run:`",
                    "keep one probe, the one that exercises the real work; a gate checks one thing again and again",
                );
                return None;
            }
            (None, None) => {
                self.err(
                    key,
                    "this health gate has no probe: add `http:` or `run:`",
                    "probe the real work, e.g. `http: { url: ..., method: POST, json: ..., expect: { status: 200 } }`",
                );
                return None;
            }
            (Some(http), None) => {
                if v.expect.is_some() {
                    self.err(
                        self.key_at(hpos, "expect", hpos),
                        "`expect` beside an http probe: put it inside `http:`",
                        "write `http: { ..., expect: { status: 200, body: ... } }`",
                    );
                }
                Probe::Http(self.request(http, target, Some(DEFAULT_PROBE_TIMEOUT)))
            }
            (None, Some(run)) => {
                let script = self.render(run, Context::Shell, target, false);
                let t = DEFAULT_PROBE_TIMEOUT
                    .min(every.max(Duration::from_secs(1)) * 2)
                    .max(Duration::from_secs(2));
                let wire = remote_wire(&script, sudo, t, marker);
                Probe::Run {
                    command: Command {
                        script,
                        sudo,
                        wire,
                        marker: marker.to_owned(),
                    },
                    expect: v.expect.as_ref().map(matcher),
                }
            }
        };
        Some(Gate {
            every,
            timeout,
            successes,
            probe,
        })
    }
}

/// Content type and body of a status post in a channel's format.
pub fn payload(format: Format, runbook: &str, text: &str) -> (&'static str, String) {
    match format {
        Format::Slack => (
            "application/json",
            serde_json::json!({ "text": text }).to_string(),
        ),
        Format::Discord => (
            "application/json",
            serde_json::json!({ "content": text }).to_string(),
        ),
        Format::Ntfy => ("text/plain; charset=utf-8", text.to_owned()),
        Format::Json => (
            "application/json",
            serde_json::json!({ "runbook": runbook, "message": text, "source": "recover" })
                .to_string(),
        ),
    }
}
