//! Resolution: a loaded runbook becomes its Plan, or every problem found on the way.
//! Templates, targets, vars, channels, the abort handler and the phases are resolved here;
//! each step is resolved by its kind (`kinds.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::{
    AbortSpec, BOOT_ID_COMMAND, ChannelSpec, Command, Phase, Plan, Secrets, Step, TargetSpec,
    fmt_duration, fmt_window, placeholder,
};
use crate::runbook::diag::{Pos, Problem, Source};
use crate::runbook::model::{self, Format};
use crate::runbook::{Field, Loaded};
use crate::template::{Context, Templates, Values, check_name};
use crate::verdict::Matcher;

/// How a plan is resolved.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--var KEY=VALUE`: replaces or adds a var.
    pub vars: Vec<(String, String)>,
    /// `--target NAME=[USER@]HOST[:PORT]`: points a target at another host.
    pub targets: Vec<(String, Destination)>,
    /// `--identity NAME=PATH`: the target's ssh key.
    pub identities: Vec<(String, PathBuf)>,
    /// `--known-hosts NAME=PATH`: the target's known_hosts file.
    pub known_hosts: Vec<(String, PathBuf)>,
    /// The environment `env.X` reads (the process environment, or a test's).
    pub env: BTreeMap<String, String>,
    /// `--unattended`: nobody will be at a terminal, so every `manual` step must say what to
    /// do without a person (`unattended: skip | abort`).
    pub unattended: bool,
}

/// Where `--target` points a target: `ops@127.0.0.1:2222`, `[::1]:2222`, `spark.lab`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        match (self.host.contains(':'), self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (_, None) => f.write_str(&self.host),
        }
    }
}

impl std::str::FromStr for Destination {
    type Err = String;

    /// `[USER@]HOST[:PORT]`; an IPv6 address with a port is written in brackets, `[::1]:2222`.
    fn from_str(s: &str) -> Result<Self, String> {
        let how = "write [USER@]HOST[:PORT], like ops@127.0.0.1:2222 or ops@[::1]:2222";
        let (user, rest) = match s.rsplit_once('@') {
            Some(("", _)) => return Err(format!("`{s}` has an empty user: {how}")),
            Some((u, r)) => (Some(u.to_owned()), r),
            None => (None, s),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let Some((h, after)) = inner.split_once(']') else {
                return Err(format!(
                    "`{s}`: the `[` of an IPv6 address is not closed: {how}"
                ));
            };
            match after {
                "" => (h, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => {
                        return Err(format!("`{s}`: after `]` comes `:PORT` or nothing: {how}"));
                    }
                },
            }
        } else if rest.matches(':').count() > 1 {
            // A bare IPv6 address: no port.
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.trim().is_empty() {
            return Err(format!("`{s}` has no host: {how}"));
        }
        for checked in [
            crate::runbook::validate::ssh_host(host),
            user.as_deref()
                .map_or(Ok(()), crate::runbook::validate::ssh_user),
        ] {
            checked.map_err(|r| format!("{}: {}", r.message, r.help))?;
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("`{p}` is not a port (1 to 65535): {how}")),
            },
        };
        Ok(Destination {
            user,
            host: host.to_owned(),
            port,
        })
    }
}

impl Options {
    pub fn from_process_env() -> Self {
        Options {
            env: std::env::vars().collect(),
            ..Options::default()
        }
    }
}

pub(super) struct Resolver<'a> {
    pub(super) loaded: &'a Loaded,
    /// The file being resolved: an overlay for the values it set, else the base.
    pub(super) src: Source,
    pub(super) opts: &'a Options,
    pub(super) templates: Templates,
    pub(super) problems: Vec<Problem>,
    pub(super) secrets: Secrets,
    pub(super) var_names: Vec<String>,
    pub(super) values: Values,
    /// Set while rendering what only status posts read (webhooks, notify and abort messages).
    pub(super) for_notify: bool,
    /// The last `previous_boot` step resolved so far, for `when: unclean_shutdown`.
    pub(super) previous_boot: Option<usize>,
    /// The var being rendered, while it is: an unset `env` value it reads is needed only if
    /// something other than a status post reads the var.
    pub(super) in_var: Option<String>,
    /// For each var, the unset `env` variables its value holds (directly or through vars).
    pub(super) var_unset: std::collections::BTreeMap<String, Vec<String>>,
    /// Set when a template rendered since it was last cleared read an `env` value, directly or
    /// through a var: what holds it travels on stdin, never in a command line (see
    /// [`Resolver::reads_env`]).
    pub(super) read_env: bool,
    /// The vars whose value holds an `env` value (directly or through vars).
    pub(super) var_env: std::collections::BTreeSet<String>,
    /// Set when the step being resolved has a command sent with sudo that read an `env` value
    /// (however short: redaction does not look for values under 3 bytes).
    pub(super) sudo_secret: bool,
}

impl<'a> Resolver<'a> {
    pub(super) fn err(&mut self, pos: Pos, msg: impl Into<String>, help: impl Into<String>) {
        let p = Problem::error(&self.src, pos, msg).help(help);
        self.problems.push(p);
    }

    /// A value refused by the rules of `runbook::validate`, reported at `pos`.
    pub(super) fn refuse(
        &mut self,
        pos: Pos,
        checked: Result<(), crate::runbook::validate::Refusal>,
    ) {
        if let Err(r) = checked {
            self.err(pos, r.message, r.help);
        }
    }

    /// Whether `value` holds the placeholder of an unset `env` variable: known only when the
    /// run starts, so not checked now.
    pub(super) fn holds_unset(&self, value: &str) -> bool {
        self.secrets
            .missing
            .iter()
            .any(|n| value.contains(&placeholder(n)))
    }

    /// A command sent with sudo travels base64-encoded (see `wire`), where no redaction can
    /// find a secret, and its sudoers rule would hold it: refused, fail closed.
    fn no_secret_under_sudo(&mut self, step: &Step) {
        let carries = |c: &&Command| {
            c.sudo
                && (self.secrets.redact(&c.script) != c.script
                    || self
                        .secrets
                        .missing
                        .iter()
                        .any(|m| c.script.contains(&placeholder(m))))
        };
        if std::mem::take(&mut self.sudo_secret) || step.commands().iter().any(carries) {
            self.err(
                step.pos,
                format!(
                    "step {} runs a command with sudo that contains an `env` secret",
                    step.number
                ),
                "a sudo command is sent encoded, where the secret cannot be hidden from the screen and the journal, and its sudoers rule would hold it: let the command read the secret on the target (a file only root can read), or drop `sudo: true`",
            );
        }
    }

    /// Where `key:` is written in the mapping whose first key is at `block`, else `fallback`.
    pub(super) fn key_at(&self, block: Pos, key: &str, fallback: Pos) -> Pos {
        self.loaded
            .source
            .key_in_block(block, key)
            .unwrap_or(fallback)
    }

    /// [`Resolver::render`] for what only status posts read: an unset `env` value there does
    /// not stop the run, it only keeps the post from being sent.
    pub(super) fn render_for_notify(
        &mut self,
        s: &Spanned<String>,
        target: Option<&TargetSpec>,
        late_ok: bool,
    ) -> String {
        self.for_notify = true;
        let out = self.render(s, Context::Text, target, late_ok);
        self.for_notify = false;
        out
    }

    /// Render a template, reporting undefined names and syntax errors at `s`.
    pub(super) fn render(
        &mut self,
        s: &Spanned<String>,
        ctx: Context,
        target: Option<&TargetSpec>,
        late_ok: bool,
    ) -> String {
        let pos = Pos::of(&s.referenced);
        self.render_at(&s.value, pos, ctx, target, late_ok)
    }

    pub(super) fn render_at(
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
                    "templates read vars.X (from `vars:`), env.X (the environment, kept secret), target.host/user/port/name, run.elapsed and run.events"
                };
                let at = self
                    .src
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
            if let Some(var) = n.strip_prefix("vars.") {
                let var = var.split('.').next().unwrap_or(var);
                for unset in self.var_unset.get(var).cloned().unwrap_or_default() {
                    self.reads_unset(&unset);
                }
                if self.var_env.contains(var) {
                    self.env_read();
                }
            }
            if let Some(var) = n.strip_prefix("env.") {
                self.env_read();
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
                        self.reads_unset(&var);
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
            values
                .run
                .insert("events".into(), "{{ run.events }}".into());
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

pub(super) fn matcher(m: &model::Matcher) -> Matcher {
    Matcher {
        exit: m.exit.as_ref().map(|e| e.to_vec()),
        stdout: m.stdout.as_ref().map(|p| p.0.clone()),
        stderr: m.stderr.as_ref().map(|p| p.0.clone()),
    }
}

pub(super) fn first_line(s: &str, max: usize) -> String {
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
        src: loaded.source.clone(),
        opts,
        templates: Templates::new(),
        problems: Vec::new(),
        secrets: Secrets::default(),
        var_names: Vec::new(),
        values: Values::default(),
        for_notify: false,
        previous_boot: None,
        in_var: None,
        var_unset: Default::default(),
        read_env: false,
        var_env: Default::default(),
        sudo_secret: false,
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
        r.src = loaded.source_of(&Field::Budget).clone();
        r.err(
            Pos::of(&rb.budget.referenced),
            "the budget is zero",
            "give the whole timeline, like `budget: 30m`",
        );
        r.src = loaded.source.clone();
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
        let named = |list: &[(String, PathBuf)]| {
            list.iter()
                .rev()
                .find(|(n, _)| *n == tname.value)
                .map(|(_, p)| p.clone())
        };
        let mut host = t.host.value.clone();
        let mut user = t.user.clone();
        let mut port = t.port.map(|p| p.0);
        if let Some((_, d)) = opts.targets.iter().rev().find(|(n, _)| *n == tname.value) {
            host = d.host.clone();
            user = d.user.clone().or(user);
            port = d.port.or(port);
        }
        if host.trim().is_empty() {
            r.src = loaded.source_of(&Field::Host(tname.value.clone())).clone();
            r.err(
                Pos::of(&t.host.referenced),
                format!("target `{}` has an empty host", tname.value),
                "write an ssh destination, like `spark.local`",
            );
            r.src = loaded.source.clone();
        }
        targets.push(TargetSpec {
            name: tname.value.clone(),
            host,
            user,
            port,
            identity: named(&opts.identities).or(t.identity.as_deref().map(expand_home)),
            known_hosts: named(&opts.known_hosts).or(t.known_hosts.as_deref().map(expand_home)),
            ssh_config: t.ssh_config.as_deref().map(expand_home),
            boot_id: BOOT_ID_COMMAND.to_owned(),
        });
    }
    // Targets named by --target must exist: a typo would silently aim at the real box.
    // That is a usage error reported by the caller, see `check_overrides`.

    // vars: rendered in order; a var may use env and earlier vars.
    for (k, _) in rb.vars.iter() {
        r.var_names.push(k.value.clone());
    }
    for (i, (k, v)) in rb.vars.iter().enumerate() {
        r.src = loaded.source_of(&Field::Var(k.value.clone())).clone();
        let value = match opts.vars.iter().rev().find(|(n, _)| *n == k.value) {
            Some((_, over)) => over.clone(),
            None if r.uses_later_var(i, v) => v.value.clone(),
            None => {
                let first = targets.first().cloned();
                r.in_var = Some(k.value.clone());
                let value = r.render(v, Context::Text, first.as_ref(), false);
                r.in_var = None;
                value
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
        r.src = loaded
            .source_of(&Field::Webhook(cname.value.clone()))
            .clone();
        let url = r.render_for_notify(&c.webhook, targets.first().cloned().as_ref(), false);
        if !r.holds_unset(&url) && !url.contains("{{") {
            r.refuse(
                Pos::of(&c.webhook.referenced),
                crate::runbook::validate::url(&url),
            );
        }
        channels.push(ChannelSpec {
            name: cname.value.clone(),
            url,
            format: c.format.unwrap_or(Format::Json),
            failures: c.failures.unwrap_or(false),
        });
    }

    // The rest is written in the base.
    r.src = loaded.source.clone();

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
            abort.message = r.render_for_notify(m, targets.first().cloned().as_ref(), true);
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
            r.sudo_secret = false;
            if let Some(s) = r.step(number, st, &targets, &channels) {
                r.no_secret_under_sudo(&s);
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
            files: loaded.files.clone(),
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

/// Check the target names of `--target`, `--identity` and `--known-hosts` against the
/// runbook: a typo must not go unnoticed.
pub fn check_overrides(loaded: &Loaded, opts: &Options) -> Result<(), String> {
    let names = opts
        .targets
        .iter()
        .map(|(n, _)| ("--target", n))
        .chain(opts.identities.iter().map(|(n, _)| ("--identity", n)))
        .chain(opts.known_hosts.iter().map(|(n, _)| ("--known-hosts", n)));
    for (flag, n) in names {
        if !loaded.runbook.targets.value.contains(n) {
            let known: Vec<&str> = loaded.runbook.targets.value.keys().collect();
            return Err(format!(
                "{flag} {n}=…: the runbook has no target `{n}`; its targets: {}",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

impl Resolver<'_> {
    /// What is being rendered reads an `env` value: a var holds it for whoever reads the var.
    fn env_read(&mut self) {
        self.read_env = true;
        if let Some(cur) = &self.in_var {
            self.var_env.insert(cur.clone());
        }
    }

    /// Runs `render` and says whether what it rendered read an `env` value.
    pub(super) fn reads_env<T>(&mut self, render: impl FnOnce(&mut Self) -> T) -> (T, bool) {
        let before = std::mem::replace(&mut self.read_env, false);
        let out = render(self);
        let read = self.read_env;
        self.read_env = before || read;
        (out, read)
    }

    /// What is being rendered reads unset `env` variable `var`: a var holds it for whoever
    /// reads the var; a status post does not need it; anything else does (the run cannot
    /// start without it).
    fn reads_unset(&mut self, var: &str) {
        if let Some(cur) = &self.in_var {
            let list = self.var_unset.entry(cur.clone()).or_default();
            if !list.iter().any(|v| v == var) {
                list.push(var.to_owned());
            }
        } else if !self.for_notify && !self.secrets.needed.iter().any(|v| v == var) {
            self.secrets.needed.push(var.to_owned());
        }
    }

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
                .src
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

    pub(super) fn unknown_channel(&mut self, ch: &Spanned<String>) {
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
}
