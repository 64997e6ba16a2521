//! `recover export`: the binder copy, complete enough to recover by hand.
//!
//! Rendered from the same [`Plan`] as `run --dry-run`, so the paper never disagrees with
//! what the tool runs. The Plan becomes a [`Binder`] (plain data: every command line final,
//! every secret replaced by the variable to read), which one of two minijinja templates
//! turns into Markdown or a self-contained, printable HTML page.

mod ere;
mod shell;
mod text;

use std::time::Duration;

use chrono::{DateTime, Utc};
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

pub use crate::rehearsal::last::Rehearsal;

use crate::plan::{
    Action, BOOT_ID_COMMAND, Command, Gate, Plan, Probe, Request, Step, TargetSpec, fmt_duration,
};
use crate::runbook::model::{Format as ChannelFormat, OnFail};
use crate::verdict::{HttpExpect, Matcher};
use shell::{as_typed, secrets_as_variables};

/// What the binder says besides the Plan: when it was made and the last rehearsal.
#[derive(Debug, Clone)]
pub struct Context {
    pub generated: DateTime<Utc>,
    pub rehearsal: Rehearsal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

/// The binder in `format`. Secrets appear only as the variables to read.
pub fn render(plan: &Plan, format: Format, cx: &Context) -> Result<String, minijinja::Error> {
    let binder = Binder::new(plan, cx);
    let env = environment();
    let name = match format {
        Format::Markdown => "binder.md",
        Format::Html => "binder.html",
    };
    let doc = env
        .get_template(name)?
        .render(Value::from(minijinja::value::Serde(&binder)))?;
    // Every string was cleaned on the way in; this pass makes sure, whatever the template did.
    Ok(text_without_secrets(plan, &doc))
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    // Output: HTML-escaped in HTML, Markdown-escaped in Markdown, unless marked safe.
    env.set_formatter(|out, state, value| {
        let s = if value.is_safe() {
            value.to_string()
        } else if value.is_none() || value.is_undefined() {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::UndefinedError,
                "a missing value reached the output",
            ));
        } else {
            let s = value
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            match state.auto_escape() {
                AutoEscape::Html => text::html_inline(&s),
                _ => text::md_inline(&s),
            }
        };
        out.write_str(&s)
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
    });
    env.add_filter("prose", |state: &minijinja::State, s: String| {
        Value::from_safe_string(match state.auto_escape() {
            AutoEscape::Html => text::html_prose(&s),
            _ => text::md_prose(&s),
        })
    });
    env.add_filter("code", |state: &minijinja::State, s: String| {
        Value::from_safe_string(match state.auto_escape() {
            AutoEscape::Html => text::html_code(&s),
            _ => text::md_code(&s),
        })
    });
    env.add_filter("fence", |s: String| {
        Value::from_safe_string(text::md_fence(&s, "sh"))
    });
    env.add_template("binder.md", include_str!("binder.md.j2"))
        .expect("the Markdown template parses");
    env.add_template("binder.html", include_str!("binder.html.j2"))
        .expect("the HTML template parses");
    env.add_global(
        "css",
        Value::from_safe_string(include_str!("binder.css").to_owned()),
    );
    env
}

/// Everything the templates show, as plain strings and lists.
#[derive(Debug, Serialize)]
struct Binder {
    title: String,
    name: String,
    source: String,
    sha256: String,
    generated: String,
    rehearsal: String,
    rehearsal_attention: bool,
    rehearse_every: Option<String>,
    budget: String,
    steps_total: usize,
    steps_changing: usize,
    targets: Vec<TargetView>,
    channels: Vec<ChannelView>,
    secrets: Vec<String>,
    abort: AbortView,
    phases: Vec<PhaseView>,
}

#[derive(Debug, Serialize)]
struct TargetView {
    name: String,
    default: bool,
    about: String,
    login: String,
}

#[derive(Debug, Serialize)]
struct ChannelView {
    name: String,
    format: String,
    url: String,
}

#[derive(Debug, Serialize)]
struct AbortView {
    message: String,
    post: Option<Block>,
}

#[derive(Debug, Serialize)]
struct PhaseView {
    number: usize,
    name: String,
    window: String,
    steps: String,
    items: Vec<StepView>,
}

#[derive(Debug, Serialize)]
struct StepView {
    number: usize,
    name: String,
    /// `run on spark · read-only · allow 30s`
    about: String,
    /// The operator's instructions (manual) or the message (notify).
    text: Option<Labelled>,
    blocks: Vec<Block>,
    /// What the person does when it goes wrong: `(label, text, abort)`.
    outcomes: Vec<Outcome>,
}

#[derive(Debug, Serialize)]
struct Labelled {
    label: String,
    text: String,
}

/// One thing to do: optional repeat instruction, a sentence, the command lines, and what a
/// good result looks like.
#[derive(Debug, Serialize)]
struct Block {
    repeat: Option<String>,
    say: String,
    cmds: Vec<Cmd>,
    expect: Option<String>,
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct Cmd {
    /// Where to type it: "From the management host", "Logged in on spark".
    on: String,
    line: String,
    /// The tool's exact line (wrapper included), printed second and smaller.
    exact: bool,
}

impl Cmd {
    fn typed(on: impl Into<String>, line: String) -> Cmd {
        Cmd {
            on: on.into(),
            line,
            exact: false,
        }
    }

    fn exact(on: impl Into<String>, line: String) -> Cmd {
        Cmd {
            on: on.into(),
            line,
            exact: true,
        }
    }
}

#[derive(Debug, Serialize)]
struct Outcome {
    label: String,
    text: String,
    abort: bool,
}

const ON_HOST: &str = "From the management host";
const ON_HOST_LC: &str = "from the management host";

impl Binder {
    fn new(plan: &Plan, cx: &Context) -> Binder {
        let clean = |s: &str| text_without_secrets(plan, s);
        let (rehearsal, rehearsal_attention) =
            cx.rehearsal
                .describe(&plan.sha256, plan.rehearse_every, cx.generated);
        let mut secrets: Vec<String> = plan
            .secrets
            .values
            .iter()
            .map(|(n, _)| n.clone())
            .chain(plan.secrets.missing.iter().cloned())
            .collect();
        secrets.sort();
        secrets.dedup();

        let b = Builder { plan };
        let abort = AbortView {
            message: clean(plan.abort.message.trim()),
            post: plan.abort.channel.as_ref().map(|c| {
                b.post(
                    c,
                    &format!(
                        "ABORTED: {} is off the {} timeline. Following the long procedure.",
                        plan.title,
                        fmt_duration(plan.budget)
                    ),
                )
            }),
        };
        Binder {
            title: clean(&plan.title),
            name: plan.name.clone(),
            source: clean(&plan.source.display().to_string()),
            sha256: plan.sha256.clone(),
            generated: cx.generated.format("%Y-%m-%d %H:%M UTC").to_string(),
            rehearsal: clean(&rehearsal),
            rehearsal_attention,
            rehearse_every: plan.rehearse_every.map(fmt_duration),
            budget: fmt_duration(plan.budget),
            steps_total: plan.phases.iter().map(|p| p.steps.len()).sum(),
            steps_changing: plan
                .phases
                .iter()
                .flat_map(|p| &p.steps)
                .filter(|s| s.mutates)
                .count(),
            targets: plan
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| TargetView {
                    name: clean(&t.name),
                    default: i == 0,
                    about: clean(&target_about(t)),
                    login: b.shell(&login_line(t)),
                })
                .collect(),
            channels: plan
                .channels
                .iter()
                .map(|c| ChannelView {
                    name: clean(&c.name),
                    format: format_name(c.format).into(),
                    url: clean(&c.url),
                })
                .collect(),
            secrets,
            abort,
            phases: plan
                .phases
                .iter()
                .enumerate()
                .map(|(i, ph)| PhaseView {
                    number: i + 1,
                    name: clean(&ph.name),
                    window: format!("{}–{}", minutes(ph.window.start), minutes(ph.window.end)),
                    steps: match (ph.steps.first(), ph.steps.last()) {
                        (Some(a), Some(z)) if a.number == z.number => a.number.to_string(),
                        (Some(a), Some(z)) => format!("{}–{}", a.number, z.number),
                        _ => String::new(),
                    },
                    items: ph.steps.iter().map(|s| b.step(s)).collect(),
                })
                .collect(),
        }
    }
}

/// `s` with every secret, set or not, shown as the variable to read: `$NAME`.
fn text_without_secrets(plan: &Plan, s: &str) -> String {
    plan.secrets.as_variables(s)
}

/// Builds the views of steps; every command line passes through [`Builder::shell`] and
/// every text through [`Builder::text`], which replace secrets.
struct Builder<'a> {
    plan: &'a Plan,
}

impl Builder<'_> {
    fn shell(&self, line: &str) -> String {
        self.text(&secrets_as_variables(line, &self.plan.secrets))
    }

    fn text(&self, s: &str) -> String {
        text_without_secrets(self.plan, s)
    }

    fn target(&self, s: &Step) -> Option<&TargetSpec> {
        self.plan.targets.get(s.target)
    }

    fn target_name(&self, s: &Step) -> String {
        self.target(s)
            .map(|t| t.name.clone())
            .unwrap_or_else(|| "the target".into())
    }

    /// The two ways to run a remote command: the plain command once logged in, and the
    /// exact line the tool sends from the management host.
    fn remote(&self, s: &Step, c: &Command) -> Vec<Cmd> {
        let mut cmds = vec![Cmd::typed(
            format!("Logged in on {}", self.target_name(s)),
            self.shell(&as_typed(c)),
        )];
        if let Some(t) = self.target(s) {
            cmds.push(Cmd::exact(
                format!("Or {ON_HOST_LC}"),
                self.shell(&t.ssh_line(&c.wire)),
            ));
        }
        cmds
    }

    /// A request sent with curl: from here, or from the target over ssh.
    fn request(&self, s: &Step, r: &Request) -> Vec<Cmd> {
        let curl = r.curl();
        match (r.on_target.is_some(), self.target(s)) {
            (true, Some(t)) => vec![
                Cmd::typed(format!("Logged in on {}", t.name), self.shell(&curl)),
                Cmd::exact(
                    format!("Or {ON_HOST_LC}, sent from {}", t.name),
                    self.shell(&t.ssh_line(&curl)),
                ),
            ],
            _ => vec![Cmd::typed(ON_HOST, self.shell(&curl))],
        }
    }

    /// A status post to `channel` with `message`, in the channel's payload format.
    fn post(&self, channel: &str, message: &str) -> Block {
        let Some(c) = self.plan.channels.iter().find(|c| c.name == channel) else {
            return Block {
                repeat: None,
                say: format!("Tell the operators on channel {channel}."),
                cmds: Vec::new(),
                expect: None,
                note: None,
            };
        };
        let req = c.post(
            &self.plan.name,
            message,
            crate::plan::DEFAULT_NOTIFY_TIMEOUT,
        );
        let note = message.contains("{{ run.elapsed }}").then(|| {
            "Write the time since the recovery started in place of `{{ run.elapsed }}`.".to_owned()
        });
        Block {
            repeat: None,
            say: self.text(&format!(
                "Post to {} ({} webhook):",
                c.name,
                format_name(c.format)
            )),
            cmds: vec![Cmd::typed(ON_HOST, self.shell(&req.curl()))],
            expect: Some("the last line is an HTTP status in the 200s.".into()),
            note,
        }
    }

    fn step(&self, s: &Step) -> StepView {
        let tname = self.target_name(s);
        let mut text = None;
        let mut blocks = Vec::new();
        let kind = match &s.action {
            Action::Manual { text: t } => {
                text = Some(Labelled {
                    label: "Do".into(),
                    text: self.text(t.trim()),
                });
                "by hand".to_owned()
            }
            Action::Run(c) => {
                blocks.push(Block {
                    repeat: None,
                    say: "Run:".into(),
                    cmds: self.remote(s, c),
                    expect: Some(expect_text(s.expect.as_ref())),
                    note: retry_note(s),
                });
                format!("command on {tname}")
            }
            Action::Local(c) => {
                blocks.push(Block {
                    repeat: None,
                    say: "Run:".into(),
                    cmds: vec![Cmd::typed(ON_HOST, self.shell(&c.script))],
                    expect: Some(expect_text(s.expect.as_ref())),
                    note: retry_note(s),
                });
                "command on the management host".into()
            }
            Action::WaitSsh { every, timeout } => {
                let line = self
                    .target(s)
                    .map(|t| t.ssh_line(BOOT_ID_COMMAND))
                    .unwrap_or_else(|| BOOT_ID_COMMAND.to_owned());
                blocks.push(Block {
                    repeat: Some(format!(
                        "Repeat every {} until it answers; give up after {}.",
                        fmt_duration(*every),
                        fmt_duration(*timeout)
                    )),
                    say: format!("Try to log in to {tname}:"),
                    cmds: vec![Cmd::typed(ON_HOST, self.shell(&line))],
                    expect: Some(
                        "it prints one line, the boot id (a UUID such as `0d1e5c6a-…`).".into(),
                    ),
                    note: None,
                });
                format!("wait for {tname}")
            }
            Action::DropCaches(c) => {
                blocks.push(Block {
                    repeat: None,
                    say: "Flush to disk, then drop the page cache, as root:".into(),
                    cmds: self.remote(s, c),
                    expect: Some(
                        "exit code 0; it prints `Cached:` twice, the second much smaller.".into(),
                    ),
                    note: None,
                });
                format!("command on {tname}")
            }
            Action::Start {
                unit,
                start,
                health,
                ..
            } => {
                self.start(s, unit, start, health.as_deref(), &mut blocks);
                format!("start a unit on {tname}")
            }
            Action::Http(r) => {
                blocks.push(Block {
                    repeat: None,
                    say: format!("Send the {} request:", r.method),
                    cmds: self.request(s, r),
                    expect: Some(http_expect_text(&r.expect)),
                    note: retry_note(s),
                });
                if r.on_target.is_some() {
                    format!("HTTP request from {tname}")
                } else {
                    "HTTP request".into()
                }
            }
            Action::Notify { channel, message } => {
                text = Some(Labelled {
                    label: "Message".into(),
                    text: self.text(message.trim()),
                });
                blocks.push(self.post(channel, message.trim()));
                format!("post to {channel}")
            }
        };
        let mut about = vec![
            kind,
            if s.mutates {
                "changes state".into()
            } else {
                "read-only".into()
            },
            format!("allow {}", fmt_duration(s.timeout)),
        ];
        if let Some(r) = &s.retry {
            about.push(format!(
                "retry every {} up to {}",
                fmt_duration(r.every),
                fmt_duration(r.timeout)
            ));
        }
        StepView {
            number: s.number,
            name: self.text(&s.name),
            about: self.text(&about.join(" · ")),
            text,
            blocks,
            outcomes: self.outcomes(s),
        }
    }

    fn start(
        &self,
        s: &Step,
        unit: &str,
        start: &Command,
        health: Option<&Gate>,
        blocks: &mut Vec<Block>,
    ) {
        let tname = self.target_name(s);
        blocks.push(Block {
            repeat: None,
            say: format!(
                "Start `{unit}` (this returns at once; the unit starts in the background):"
            ),
            cmds: self.remote(s, start),
            expect: None,
            note: None,
        });
        // By hand, `is-active` says it in one word; the tool reads `status` (`systemctl show`).
        let active = format!("systemctl is-active {}", crate::template::shell_quote(unit));
        let mut active_cmds = vec![Cmd::typed(
            format!("Logged in on {tname}"),
            self.shell(&active),
        )];
        if let Some(t) = self.target(s) {
            active_cmds.push(Cmd::exact(
                format!("Or {ON_HOST_LC}"),
                self.shell(&t.ssh_line(&active)),
            ));
        }
        let failed = format!(
            "`active`. `activating`: not yet. `failed`: it will not come up, stop repeating; `sudo journalctl -u {} -n 50 --no-pager` says why.",
            crate::template::shell_quote(unit)
        );
        match health {
            None => blocks.push(Block {
                repeat: Some(format!(
                    "Repeat every 5s until it is active; give up after {}.",
                    fmt_duration(s.timeout)
                )),
                say: "Check the unit is active:".into(),
                cmds: active_cmds,
                expect: Some(failed),
                note: None,
            }),
            Some(g) => {
                let times = if g.successes == 1 {
                    "once".to_owned()
                } else {
                    format!("{} times in a row", g.successes)
                };
                blocks.push(Block {
                    repeat: Some(format!(
                        "Then repeat checks a and b every {} until both pass {times}; give up after {}.",
                        fmt_duration(g.every),
                        fmt_duration(g.timeout)
                    )),
                    say: "a. The unit is active:".into(),
                    cmds: active_cmds,
                    expect: Some(failed),
                    note: None,
                });
                let (cmds, expect) = match &g.probe {
                    Probe::Http(r) => (self.request(s, r), http_expect_text(&r.expect)),
                    Probe::Run { command, expect } => {
                        (self.remote(s, command), expect_text(expect.as_ref()))
                    }
                };
                blocks.push(Block {
                    repeat: None,
                    say: "b. It does its work (the health probe):".into(),
                    cmds,
                    expect: Some(expect),
                    note: None,
                });
            }
        }
    }

    fn outcomes(&self, s: &Step) -> Vec<Outcome> {
        let mut out = Vec::new();
        if let Some(m) = &s.abort_if {
            for cond in matcher_parts(m) {
                out.push(Outcome {
                    label: "ABORT if".into(),
                    text: format!("{cond}."),
                    abort: true,
                });
            }
        }
        let manual = matches!(s.action, Action::Manual { .. });
        let notify = matches!(s.action, Action::Notify { .. });
        // A wait_ssh that runs out of time aborts, whatever `on_fail` says (SPEC: abort
        // conditions); a manual step aborts when the operator says so.
        let wait = matches!(s.action, Action::WaitSsh { .. });
        let label = if manual {
            "If not"
        } else if wait {
            "If no answer in time"
        } else {
            "If it fails"
        };
        let (text, abort) = if wait {
            ("ABORT.".to_owned(), true)
        } else if notify {
            (
                "go on: a failed status post never stops a recovery. Tell the operators another way."
                    .to_owned(),
                false,
            )
        } else {
            match s.on_fail {
                OnFail::Abort => ("ABORT.".to_owned(), true),
                OnFail::Stop => (
                    "stop here. Do not go on to the next step: find the cause, then do this step again."
                        .to_owned(),
                    false,
                ),
                OnFail::Continue => ("write it down and go on with the next step.".to_owned(), false),
            }
        };
        out.push(Outcome {
            label: label.into(),
            text,
            abort,
        });
        let can_abort =
            wait || manual || s.abort_if.is_some() || (s.on_fail == OnFail::Abort && !notify);
        if let Some(m) = &s.abort_message {
            out.push(Outcome {
                label: if can_abort { "On abort" } else { "Note" }.into(),
                text: self.text(&m.split_whitespace().collect::<Vec<_>>().join(" ")),
                abort: false,
            });
        }
        out
    }
}

fn retry_note(s: &Step) -> Option<String> {
    s.retry.map(|r| {
        format!(
            "If it fails, try again every {} for up to {} before giving up.",
            fmt_duration(r.every),
            fmt_duration(r.timeout)
        )
    })
}

/// `5m`, and `0m` rather than `0s` at the start of the timeline.
fn minutes(d: Duration) -> String {
    if d.is_zero() {
        "0m".into()
    } else {
        fmt_duration(d)
    }
}

fn format_name(f: ChannelFormat) -> &'static str {
    match f {
        ChannelFormat::Slack => "Slack",
        ChannelFormat::Discord => "Discord",
        ChannelFormat::Ntfy => "ntfy",
        ChannelFormat::Json => "JSON",
    }
}

fn target_about(t: &TargetSpec) -> String {
    let mut parts = vec![format!("`{}`", t.destination())];
    if let Some(p) = t.port {
        parts.push(format!("port {p}"));
    }
    if let Some(i) = &t.identity {
        parts.push(format!("key `{}`", i.display()));
    }
    if let Some(k) = &t.known_hosts {
        parts.push(format!("known hosts `{}`", k.display()));
    }
    if let Some(c) = &t.ssh_config {
        parts.push(format!("ssh config `{}`", c.display()));
    }
    parts.push("host key checked strictly".into());
    parts.join(", ")
}

/// `ssh [options] DESTINATION`: log in for an interactive shell.
fn login_line(t: &TargetSpec) -> String {
    // `ssh_line` ends with the quoted remote command; a bare word is left as it is.
    let line = t.ssh_line("true");
    line.strip_suffix(" true").unwrap_or(&line).to_owned()
}

/// Conditions in words, each one separately (an `abort_if` fires on any of them).
fn matcher_parts(m: &Matcher) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(e) = &m.exit {
        let codes: Vec<String> = e.iter().map(i32::to_string).collect();
        parts.push(format!("exit code {}", codes.join(" or ")));
    }
    if let Some(r) = &m.stdout {
        parts.push(format!("its output matches `{}`", r.as_str()));
    }
    if let Some(r) = &m.stderr {
        parts.push(format!("its error output matches `{}`", r.as_str()));
    }
    parts
}

/// What a good result of a command is (every condition holds); exit 0 when nothing is said.
fn expect_text(m: Option<&Matcher>) -> String {
    let mut parts = m.map(matcher_parts).unwrap_or_default();
    if m.is_none_or(|m| m.exit.is_none()) {
        parts.insert(0, "exit code 0".into());
    }
    format!("{}.", parts.join(", and "))
}

fn http_expect_text(e: &HttpExpect) -> String {
    let status = match &e.status {
        Some(s) => format!(
            "the last line (the HTTP status) is {}",
            s.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        None => "the last line (the HTTP status) is in the 200s".to_owned(),
    };
    match &e.body {
        Some(b) => format!("{status}, and the body above it matches `{}`.", b.as_str()),
        None => format!("{status}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_line_drops_the_remote_command() {
        let t = TargetSpec {
            name: "spark".into(),
            host: "spark.local".into(),
            user: Some("ops".into()),
            port: Some(22),
            identity: None,
            known_hosts: None,
            ssh_config: None,
            boot_id: crate::plan::BOOT_ID_COMMAND.into(),
        };
        assert_eq!(login_line(&t), "ssh -p 22 ops@spark.local");
    }

    #[test]
    fn expectations_in_words() {
        assert_eq!(expect_text(None), "exit code 0.");
        let m = Matcher {
            exit: None,
            stdout: Some(regex::Regex::new("a|b").unwrap()),
            stderr: None,
        };
        assert_eq!(
            expect_text(Some(&m)),
            "exit code 0, and its output matches `a|b`."
        );
    }
}
