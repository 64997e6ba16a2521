//! `recover export`: the binder copy, complete enough to recover by hand.
//!
//! Rendered from the same [`Plan`] as `run --dry-run`, so the paper never disagrees with
//! what the tool runs. The Plan becomes a [`Binder`] (plain data: every command line final,
//! every secret replaced by the variable to read), which one of two minijinja templates
//! turns into Markdown or a self-contained, printable HTML page.

mod ere;
mod fold;
mod posts;
mod shell;
mod text;

pub use fold::{RULE as FOLD_RULE, WIDTH as FOLD_WIDTH, unfold};

use std::time::Duration;

use chrono::{DateTime, Utc};
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

pub use crate::drill::record::Drills;
pub use crate::rehearsal::last::Rehearsal;

use crate::plan::{
    Action, BOOT_ID_COMMAND, Command, Gate, Plan, PowerOn, Probe, Request, Step, TargetSpec,
    fmt_duration,
};
use crate::runbook::model::{Format as ChannelFormat, OnFail, Unattended};
use crate::verdict::{HttpExpect, Matcher};
use ere::translate;
use shell::{function_name, remote_arg, secrets_as_variables};

/// What the binder says besides the Plan: when it was made, the last rehearsal, and the last
/// drill of each unit.
#[derive(Debug, Clone)]
pub struct Context {
    pub generated: DateTime<Utc>,
    pub rehearsal: Rehearsal,
    /// Step timings of the latest run or rehearsal, for "usually 12s" beside each allowance.
    pub usual: Option<crate::incident::Baseline>,
    pub drills: Drills,
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
    // Every command box: lines longer than the page folded where the shell allows it.
    env.add_filter("fold", |s: String| fold::fold(&s, fold::WIDTH));
    env.add_global("fold_rule", fold::RULE);
    // A post's text, line by line, as a quotation.
    env.add_filter("message", |state: &minijinja::State, s: String| {
        Value::from_safe_string(match state.auto_escape() {
            AutoEscape::Html => format!(
                "<blockquote class=\"message\">{}</blockquote>",
                s.lines()
                    .map(text::html_inline)
                    .collect::<Vec<_>>()
                    .join("<br>")
            ),
            _ => s
                .lines()
                .map(|l| format!("> {}", text::md_inline(l)))
                .collect::<Vec<_>>()
                .join("  \n"),
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

/// One file of an overlay chain.
#[derive(Debug, Serialize)]
struct BinderFile {
    label: &'static str,
    path: String,
    sha256: String,
}

/// Everything the templates show, as plain strings and lists.
#[derive(Debug, Serialize)]
struct Binder {
    title: String,
    name: String,
    source: String,
    sha256: String,
    /// For an overlay: every file, each with its sha256 (empty for one file).
    files: Vec<BinderFile>,
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
    /// `spark() { ssh ... "$@"; }`: typed once, used by every remote line.
    function: String,
    fname: String,
    /// When it answers after the power cut: `once step 2 ("Box answers on SSH") passes`.
    answers: String,
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
    /// The status post's text, as it reaches the channel (blanks shown as `$N`).
    text: String,
    post: Option<Block>,
    /// The failure post: when a step still fails and the run stops there.
    failure: PostView,
    /// Where the posts go: `operators`.
    channel: Option<String>,
}

#[derive(Debug, Serialize)]
struct PostView {
    text: String,
    post: Block,
}

#[derive(Debug, Serialize)]
struct PhaseView {
    number: usize,
    name: String,
    window: String,
    steps: String,
    items: Vec<StepView>,
    /// The last phase: the boot id written at the wait for SSH, compared again.
    reboot: Option<RebootView>,
}

#[derive(Debug, Serialize)]
struct RebootView {
    /// The step that wrote the boot id down.
    step: usize,
    block: Block,
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
    /// More lines than a page holds: the printed card may split between its boxes.
    long: bool,
}

#[derive(Debug, Serialize)]
struct Labelled {
    label: String,
    text: String,
}

/// One thing to do: optional repeat instruction, a sentence, the command lines, and what a
/// good result looks like.
#[derive(Debug, Default, Serialize)]
struct Block {
    repeat: Option<String>,
    say: String,
    cmds: Vec<Cmd>,
    /// Typed after the command: each prints `ABORT` or `FAIL`, or nothing when all is well.
    checks: Vec<String>,
    /// Typed after the command: prints the step's verdict in one word and its reason.
    verdict: Option<String>,
    expect: Option<String>,
    note: Option<String>,
}

impl Block {
    fn say(say: String) -> Block {
        Block {
            say,
            ..Block::default()
        }
    }
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

        let b = Builder {
            plan,
            usual: cx.usual.as_ref(),
            drills: &cx.drills,
            generated: cx.generated,
        };
        // The runbook's own abort procedure, as the engine posts it, with blanks.
        let target = plan
            .targets
            .first()
            .map(|t| format!("{} ({})", t.name, t.destination()))
            .unwrap_or_else(|| "?".into());
        let budget = fmt_duration(plan.budget);
        let source = plan.source.display().to_string();
        let run = posts::Run {
            title: &plan.title,
            budget: &budget,
            target: &target,
            source: &source,
        };
        let mut post_text = posts::abort_text(&run, &plan.abort.message);
        let mut failure_text = posts::failure_text(&run);
        if b.units_line().is_none() {
            let none = "none (the runbook starts no units).";
            failure_text = failure_text.replace(posts::UNITS.token, none);
            post_text = post_text.replace(posts::UNITS.token, none);
        }
        // Failures go where aborts go; without an abort channel, to the first channel.
        let channel = plan
            .abort
            .channel
            .clone()
            .or_else(|| plan.channels.first().map(|c| c.name.clone()));
        let failure = PostView {
            text: clean(&posts::shown(&failure_text)),
            post: match &channel {
                Some(c) => b.post(c, &failure_text),
                None => Block::say(
                    "No status channel: tell the operators another way (phone), with the text above."
                        .into(),
                ),
            },
        };
        let abort = AbortView {
            message: clean(plan.abort.message.trim()),
            text: clean(&posts::shown(&post_text)),
            post: plan.abort.channel.as_ref().map(|c| b.post(c, &post_text)),
            failure,
            channel: channel.map(|c| clean(&c)),
        };
        Binder {
            title: clean(&plan.title),
            name: plan.name.clone(),
            source: clean(&plan.source.display().to_string()),
            sha256: plan.sha256.clone(),
            files: match plan.files.as_slice() {
                [_] | [] => Vec::new(),
                files => files
                    .iter()
                    .map(|f| BinderFile {
                        label: f.role.label(),
                        path: clean(&f.path.display().to_string()),
                        sha256: f.sha256.clone(),
                    })
                    .collect(),
            },
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
                    function: b.shell(&login_function(t)),
                    fname: function_name(&t.name),
                    answers: plan
                        .phases
                        .iter()
                        .flat_map(|p| &p.steps)
                        .find(|s| s.target == i && matches!(s.action, Action::WaitSsh { .. }))
                        .map(|s| clean(&format!("once step {} (\"{}\") passes", s.number, s.name)))
                        .unwrap_or_else(|| "once it has booted".into()),
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
                    reboot: (i + 1 == plan.phases.len() && i > 0)
                        .then(|| b.reboot_check())
                        .flatten(),
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
    usual: Option<&'a crate::incident::Baseline>,
    drills: &'a Drills,
    generated: DateTime<Utc>,
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

    /// The login function of the step's target: `spark`.
    fn login(&self, s: &Step) -> String {
        function_name(&self.target_name(s))
    }

    /// A remote command as typed, its output saved for the checks, and the exact line the
    /// tool sends, in small print.
    fn remote(&self, s: &Step, c: &Command) -> Vec<Cmd> {
        let typed = format!("{} {}", self.login(s), remote_arg(c));
        let mut cmds = vec![Cmd::typed(ON_HOST, self.shell(&saved(&typed, s.number)))];
        if let Some(t) = self.target(s) {
            cmds.push(Cmd::exact(EXACT, self.shell(&t.ssh_line(&c.wire))));
        }
        cmds
    }

    /// A request sent with curl: from here, or from the target through its login function.
    fn request_line(&self, s: &Step, r: &Request) -> (String, Option<String>) {
        let curl = r.curl();
        match (r.on_target.is_some(), self.target(s)) {
            (true, Some(t)) => (
                self.shell(&format!("{} {}", self.login(s), double_quoted(&curl))),
                Some(self.shell(&t.ssh_line(&curl))),
            ),
            _ => (self.shell(&curl), None),
        }
    }

    fn request(&self, s: &Step, r: &Request) -> Vec<Cmd> {
        let (line, exact) = self.request_line(s, r);
        let mut cmds = vec![Cmd::typed(ON_HOST, saved(&line, s.number))];
        cmds.extend(exact.map(|e| Cmd::exact(EXACT, e)));
        cmds
    }

    /// A status post to `channel` with `message`, in the channel's payload format.
    fn post(&self, channel: &str, message: &str) -> Block {
        let Some(c) = self.plan.channels.iter().find(|c| c.name == channel) else {
            return Block::say(format!("Tell the operators on channel {channel}."));
        };
        let req = c.post(
            &self.plan.name,
            message,
            crate::plan::DEFAULT_NOTIFY_TIMEOUT,
        );
        let mut line = self.shell(&req.curl());
        let mut cmds = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        let mut fills: Vec<String> = Vec::new();
        // An example inside the budget: a third of it, in whole minutes.
        let example = (self.plan.budget.as_secs() / 180).max(1);
        for blank in posts::BLANKS {
            if !message.contains(blank.token) {
                continue;
            }
            // Inside the single-quoted body: close the quotes around the variable.
            line = line.replace(blank.token, &format!("'\"${}\"'", blank.var));
            let fill = match blank.var {
                "N" => {
                    notes.push("`N=__; NAME='__'`: the number and title of the step; each step prints this line ready to type.".into());
                    Some("N=__; NAME='__'".to_owned())
                }
                "WHY" => {
                    notes.push(WHY_NOTE.into());
                    Some("WHY='__'".to_owned())
                }
                "EVENTS" => {
                    notes.push("`EVENTS='__'`: what happened on the way, from your notes: an unclean shutdown (the previous-boot verdict), a remedy applied (`REMEDY APPLIED` at step N: the unit killed and restarted), a step that failed and was passed over, a reboot; `EVENTS=none` when nothing did. No quotes or backslashes.".into());
                    Some("EVENTS='__'".to_owned())
                }
                "ELAPSED" => {
                    notes.push(format!("`ELAPSED=__m`: the minutes from the recovery start written on the first page to now, rounded up to a whole minute (`ELAPSED={example}m`)."));
                    Some("ELAPSED=__m".to_owned())
                }
                "OUT" => Some(posts::out_line()),
                "UNITS" => self.units_line(),
                _ => None,
            };
            fills.extend(fill);
        }
        // The blanks in one box, typed before the post.
        if !fills.is_empty() {
            cmds.push(Cmd::typed(ON_HOST, fills.join("\n")));
        }
        if message.contains(posts::OUT.token) {
            notes.push("`OUT` and `UNITS` fill themselves in: the last lines step `$N` saved, and whether each unit is active.".into());
        }
        cmds.push(Cmd::typed(ON_HOST, line));
        Block {
            say: self.text(&format!(
                "Post to {} ({} webhook):",
                c.name,
                format_name(c.format)
            )),
            cmds,
            expect: Some("the last line is an HTTP status in the 200s.".into()),
            note: (!notes.is_empty()).then(|| notes.join(" ")),
            ..Block::default()
        }
    }

    /// The boot id the first wait for SSH had the person write down, compared with the one
    /// the box has now: `None` without a wait for SSH.
    fn reboot_check(&self) -> Option<RebootView> {
        let wait = self
            .plan
            .phases
            .iter()
            .flat_map(|p| &p.steps)
            .find(|s| matches!(s.action, Action::WaitSsh { .. }))?;
        let f = self.login(wait);
        let back = self
            .plan
            .phases
            .iter()
            .flat_map(|p| &p.steps)
            .find(|s| matches!(s.action, Action::PreviousBoot { .. }))
            .map(|s| format!("step {} (\"{}\")", s.number, self.text(&s.name)))
            .unwrap_or_else(|| format!("step {}", wait.number));
        Some(RebootView {
            step: wait.number,
            block: Block {
                say: format!(
                    "Before this phase: type the boot id you wrote down at step {}, then compare it with the one {} has now:",
                    wait.number,
                    self.target_name(wait)
                ),
                cmds: vec![
                    Cmd::typed(ON_HOST, "BOOT_ID=__".into()),
                    Cmd::typed(
                        ON_HOST,
                        format!(
                            "[ \"$({f} {BOOT_ID_COMMAND})\" = \"$BOOT_ID\" ] && echo SAME BOOT || echo REBOOTED"
                        ),
                    ),
                ],
                expect: Some("`SAME BOOT`.".into()),
                note: Some(format!(
                    "`REBOOTED`: the box restarted during the recovery (another power cut, a crash, a watchdog), and what was started may not be running. Say so in the last post (`EVENTS`), then go back to {back}."
                )),
                ..Block::default()
            },
        })
    }

    /// `UNITS=...`: each unit the runbook starts, with `systemctl is-active` of it, in one ssh
    /// call per target; `None` when the runbook starts no unit.
    fn units_line(&self) -> Option<String> {
        let mut parts = Vec::new();
        for (i, t) in self.plan.targets.iter().enumerate() {
            let units: Vec<String> = self
                .plan
                .phases
                .iter()
                .flat_map(|p| &p.steps)
                .filter(|s| s.target == i)
                .filter_map(|s| match &s.action {
                    Action::Start { unit, .. } => Some(crate::template::shell_quote(unit)),
                    _ => None,
                })
                .collect();
            if units.is_empty() {
                continue;
            }
            let script = format!(
                "for u in {}; do printf \"%s %s; \" \"$u\" \"$(systemctl is-active \"$u\")\"; done",
                units.join(" ")
            );
            parts.push(format!(
                "$({} {})",
                function_name(&t.name),
                crate::template::shell_quote(&script)
            ));
        }
        (!parts.is_empty()).then(|| self.shell(&format!("UNITS=\"{}\"", parts.concat())))
    }

    fn step(&self, s: &Step) -> StepView {
        let tname = self.target_name(s);
        let mut text = None;
        let mut blocks = Vec::new();
        let kind = match &s.action {
            Action::Manual {
                text: t,
                pass,
                unattended,
            } => {
                text = Some(Labelled {
                    label: "Do".into(),
                    text: self.text(t.trim()),
                });
                blocks.push(Block {
                    expect: Some(match pass {
                        Some(p) => format!(
                            "{}. Write down what you saw if it is not.",
                            self.text(&p.split_whitespace().collect::<Vec<_>>().join(" "))
                                .trim_end_matches('.')
                        ),
                        None => "everything the text above asks for is so. Write down what you saw if it is not."
                            .into(),
                    }),
                    note: Some(self.text(match unattended {
                        Some(Unattended::Skip) => {
                            "If recover ran by itself (`recover run --unattended`, started when mains returned), nobody did this step: the run went on without it (`unattended: skip`) and told the channel so. Do it now."
                        }
                        Some(Unattended::Abort) => {
                            "If recover ran by itself (`recover run --unattended`, started when mains returned), it stopped here (`unattended: abort`) and posted the abort: go on by hand from this step."
                        }
                        None => {
                            "This step has no `unattended:`: `recover run --unattended` refuses this runbook, so it is never run with nobody there."
                        }
                    })),
                    ..Block::default()
                });
                "by hand".to_owned()
            }
            Action::Run(c) => {
                blocks.push(self.command_block(s, self.remote(s, c), s.expect.as_ref(), c));
                format!("command on {tname}")
            }
            Action::Local(c) => {
                let cmds = vec![Cmd::typed(ON_HOST, self.shell(&saved(&c.script, s.number)))];
                blocks.push(self.command_block(s, cmds, s.expect.as_ref(), c));
                "command on the management host".into()
            }
            Action::WaitSsh {
                every,
                timeout,
                otherwise,
            } => {
                let f = self.login(s);
                blocks.push(Block {
                    repeat: Some(format!(
                        "Try every {} until it answers; the loop gives up by itself after {}.",
                        fmt_duration(*every),
                        fmt_duration(*timeout)
                    )),
                    say: format!("Wait for {tname} to answer:"),
                    cmds: vec![Cmd::typed(
                        ON_HOST,
                        until_loop(*every, *timeout, &format!("{f} {BOOT_ID_COMMAND}")),
                    )],
                    expect: Some(
                        "it prints one line, the boot id (a UUID such as `0d1e5c6a-…`), and the loop ends. Write it here: ______ (the last phase compares it: a different id then means the box rebooted again). `GAVE UP`: no answer in time.".into(),
                    ),
                    ..Block::default()
                });
                if let Some(ask) = otherwise {
                    blocks.push(Block {
                        repeat: Some(format!(
                            "Try every {} until it answers; the loop gives up by itself after {}.",
                            fmt_duration(*every),
                            fmt_duration(ask.timeout)
                        )),
                        say: format!(
                            "Only if the wait above printed `GAVE UP` (no answer after {}): {} Then wait again:",
                            fmt_duration(*timeout),
                            self.text(&ask.text.split_whitespace().collect::<Vec<_>>().join(" "))
                        ),
                        cmds: vec![Cmd::typed(
                            ON_HOST,
                            until_loop(*every, ask.timeout, &format!("{f} {BOOT_ID_COMMAND}")),
                        )],
                        expect: Some(
                            "it prints the boot id and the loop ends. `GAVE UP` again: no answer in time.".into(),
                        ),
                        ..Block::default()
                    });
                }
                format!("wait for {tname}")
            }
            Action::PreviousBoot {
                command,
                on_unclean,
            } => {
                use crate::runbook::model::OnUnclean;
                let n = s.number;
                let then = match on_unclean {
                    OnUnclean::Abort => "`UNCLEAN`: follow the abort procedure.",
                    OnUnclean::Warn => "`UNCLEAN` or `UNKNOWN`: post it (below), then go on.",
                    OnUnclean::Continue => "`UNCLEAN` or `UNKNOWN`: write it down and go on.",
                };
                blocks.push(Block {
                    say: "Find out whether the box shut down cleanly or lost power (read-only):"
                        .into(),
                    cmds: self.remote(s, command),
                    verdict: Some(crate::previous_boot::typed_verdict(&out_file(n))),
                    expect: Some(format!(
                        "the verdict prints one line. `CLEAN`: the previous boot shut down (its journal has systemd's \"System shutdown initiated\" and journald's \"Journal stopped\"). `UNCLEAN: ...` names the sign it found: journald's \"corrupted or uncleanly shut down\", the root file system's journal replayed at boot (\"recovering journal\", \"recovery complete\"), or a journal that ends without a shutdown. `UNKNOWN: ...`: no evidence either way (no earlier boot in the journal). {then}"
                    )),
                    note: Some(format!(
                        "An `UNREADABLE: ...` line before the verdict names a sign it could not read (a file or the journal that needs root): the verdict is made without it, so an `UNCLEAN` may hide behind an `UNKNOWN`. In `{}`, a section that ends in `exit 1` (`@@ ext4 exit 1`, `@@ unclean exit 1`) only means that journalctl found no such line: that is good, not an error.",
                        out_file(n)
                    )),
                    ..Block::default()
                });
                if *on_unclean == OnUnclean::Warn
                    && let Some(channel) = self
                        .plan
                        .abort
                        .channel
                        .clone()
                        .or_else(|| self.plan.channels.first().map(|c| c.name.clone()))
                {
                    let later: Vec<String> = self
                        .plan
                        .phases
                        .iter()
                        .flat_map(|p| &p.steps)
                        .filter(|x| x.when_unclean == Some(n))
                        .map(|x| x.number.to_string())
                        .collect();
                    let runs = match later.as_slice() {
                        [] => String::new(),
                        [one] => format!(", and step {one} (only after an unclean shutdown) runs"),
                        many => format!(
                            ", and steps {} (only after an unclean shutdown) run",
                            many.join(", ")
                        ),
                    };
                    let message = format!(
                        "{}: {tname} did not shut down cleanly before this boot ({}). The recovery goes on: the file-system checks look for damage{runs}.",
                        self.plan.title,
                        posts::WHY.token
                    );
                    let mut post = self.post(&channel, &message);
                    post.say = format!("Only if it printed `UNCLEAN` or `UNKNOWN`: {}", post.say);
                    let rest = post.note.take().unwrap_or_default().replace(WHY_NOTE, "");
                    post.note = Some(format!(
                        "`WHY='__'`: the verdict line, without quotes or backslashes (`WHY='UNCLEAN: journald found the journal uncleanly shut down'`). {}",
                        rest.trim()
                    ).trim_end().to_owned());
                    blocks.push(post);
                }
                format!("check on {tname}")
            }
            Action::DropCaches(c) => {
                let mut b = self.command_block(s, self.remote(s, c), None, c);
                // As `recover` judges it: both `Cached:` lines, before and after.
                b.checks.push(format!(
                    "[ \"$(grep -cE '^Cached:[[:space:]]*[0-9]+' {})\" = 2 ] || echo FAIL",
                    out_file(s.number)
                ));
                b.say = "Flush to disk, then drop the page cache, as root:".into();
                b.expect = Some(format!(
                    "no check prints anything: {} shows `Cached:` twice, before and after, in kB, as `recover` asks (it reports both sizes, and sets no figure the second must be under). The second is usually much smaller; the cache fills again as soon as anything reads the disk.",
                    out_file(s.number)
                ));
                blocks.push(b);
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
                let mut cmds = self.request(s, r);
                let checks = http_checks(s.number, &r.expect);
                if let Some(retry) = s.retry {
                    let (line, _) = self.request_line(s, r);
                    cmds[0] = Cmd::typed(
                        ON_HOST,
                        until_loop(
                            retry.every,
                            retry.timeout,
                            &attempt(&line, s.number, &checks),
                        ),
                    );
                }
                blocks.push(Block {
                    repeat: s.retry.map(retry_text),
                    say: format!("Send the {} request:", r.method),
                    cmds,
                    checks,
                    expect: Some(http_expect_text(&r.expect)),
                    ..Block::default()
                });
                if r.on_target.is_some() {
                    format!("HTTP request from {tname}")
                } else {
                    "HTTP request".into()
                }
            }
            Action::Notify { channel, message } => {
                // The last post of the run says what happened on the way.
                let last = self
                    .plan
                    .phases
                    .iter()
                    .flat_map(|p| &p.steps)
                    .rfind(|x| matches!(x.action, Action::Notify { .. }))
                    .is_some_and(|x| x.number == s.number);
                // `{{ run.events }}` is the person's `EVENTS`, as the engine fills it in.
                let message = message
                    .trim()
                    .replace("{{ run.events }}", posts::EVENTS.token);
                let message = if last && !message.contains(posts::EVENTS.token) {
                    posts::last_post(&message)
                } else {
                    message
                };
                text = Some(Labelled {
                    label: "Message".into(),
                    text: self.text(&posts::shown(&message)),
                });
                blocks.push(self.post(channel, &message));
                format!("post to {channel}")
            }
            Action::Ups(w) => {
                let charge = w
                    .want
                    .min_charge
                    .map(|c| format!(", and battery.charge is at least {c}"))
                    .unwrap_or_default();
                blocks.push(Block {
                    checks: Vec::new(),
                    verdict: None,
                    repeat: Some(format!(
                        "Reads the UPS every {}; a status without OL, or with OB, LB or FSD{}, starts the count again; the loop gives up by itself after {}.",
                        fmt_duration(w.every),
                        if w.want.min_charge.is_some() { ", or too little charge" } else { "" },
                        fmt_duration(w.timeout)
                    )),
                    say: "Read the UPS from upsd until mains has been stable long enough (`upsc` if it is installed, else `nc`; or read the UPS's panel):".into(),
                    cmds: vec![Cmd::typed(ON_HOST, self.shell(&ups_loop(w)))],
                    expect: Some(format!(
                        "the loop ends without `GAVE UP` once the status held OL, and none of OB, LB, FSD, for {} without a break{charge}; each line shows what it read.",
                        fmt_duration(w.want.stable_for)
                    )),
                    note: Some("`GAVE UP`: mains never stayed stable for long enough. Mains that will not hold is no supply to start a recovery on: see below.".into()),
                });
                "wait for mains".into()
            }
            Action::PowerOn(p) => {
                let (say, expect, note) = match p {
                    PowerOn::Wol { .. } => (
                        "Send the Wake-on-LAN magic packet (Debian package `wakeonlan`):",
                        "the box powers on (fans, front LED) within a few seconds.",
                        None,
                    ),
                    PowerOn::Ipmi { .. } => (
                        "Power on through the BMC, then read the power state:",
                        "the second command prints `Chassis Power is on`.",
                        Some(
                            "ipmitool reads the BMC password from $IPMI_PASSWORD (`-E`): export it first."
                                .to_owned(),
                        ),
                    ),
                };
                blocks.push(Block {
                    checks: Vec::new(),
                    verdict: None,
                    repeat: None,
                    say: say.into(),
                    cmds: p
                        .by_hand()
                        .iter()
                        .map(|c| Cmd::typed(ON_HOST, self.shell(c)))
                        .collect(),
                    expect: Some(expect.into()),
                    note,
                });
                "power on".into()
            }
        };
        if let Some(n) = s.when_unclean
            && let Some(first) = blocks.first_mut()
        {
            first.say = format!(
                "Only if step {n} did not find a clean shutdown (unclean, or it could not tell); after a clean one, tick this step as skipped. {}",
                first.say
            );
        }
        let mut about = vec![
            kind,
            if s.mutates {
                "changes state".into()
            } else {
                "read-only".into()
            },
            format!("allow {}", fmt_duration(s.timeout)),
        ];
        if let Some(u) = self.usual {
            // The nth step of this name: a name may repeat (two `drop_caches`).
            let nth = self
                .plan
                .phases
                .iter()
                .flat_map(|p| &p.steps)
                .take_while(|x| x.number < s.number)
                .filter(|x| x.name == s.name)
                .count();
            if let Some(t) = u.step(&s.name, nth) {
                about.push(format!(
                    "usually {} ({})",
                    crate::report::duration(t),
                    u.label
                ));
            }
        }
        if let Some(r) = &s.retry {
            about.push(format!(
                "retry every {} up to {}",
                fmt_duration(r.every),
                fmt_duration(r.timeout)
            ));
        }
        let lines: usize = blocks
            .iter()
            .map(|b| {
                b.cmds
                    .iter()
                    .map(|c| c.line.lines().count() + 2)
                    .sum::<usize>()
                    + b.checks.len()
                    + b.verdict.as_deref().map_or(0, |v| v.lines().count())
                    + 6
            })
            .sum();
        StepView {
            long: lines > 60,
            number: s.number,
            name: self.text(&s.name),
            about: self.text(&about.join(" · ")),
            text,
            blocks,
            outcomes: self.outcomes(s),
        }
    }

    /// A command, its checks, and (for a step with `retry`) the bounded loop around both.
    fn command_block(
        &self,
        s: &Step,
        mut cmds: Vec<Cmd>,
        expect: Option<&Matcher>,
        c: &Command,
    ) -> Block {
        let checks = command_checks(s.number, expect, s.abort_if.as_ref());
        if let Some(retry) = s.retry {
            let typed = match &s.action {
                Action::Local(_) => c.script.clone(),
                _ => format!("{} {}", self.login(s), remote_arg(c)),
            };
            cmds[0] = Cmd::typed(
                ON_HOST,
                self.shell(&until_loop(
                    retry.every,
                    retry.timeout,
                    &attempt(&typed, s.number, &checks),
                )),
            );
        }
        Block {
            repeat: s.retry.map(retry_text),
            say: "Run:".into(),
            cmds,
            expect: Some(expect_text(s.number, expect, s.abort_if.as_ref(), c)),
            checks,
            ..Block::default()
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
        let f = self.login(s);
        let mut started = self.remote(s, start);
        started[0] = Cmd::typed(
            ON_HOST,
            self.shell(&format!("{f} {}; echo \"exit $?\"", remote_arg(start))),
        );
        blocks.push(Block {
            say: format!(
                "Start `{unit}` (this returns at once; the unit starts in the background):"
            ),
            cmds: started,
            expect: Some("it prints `exit 0`.".into()),
            ..Block::default()
        });
        let q = crate::template::shell_quote(unit);
        let active = format!("[ \"$({f} systemctl is-active {q})\" = active ]");
        let failed = format!(
            "`UNIT FAILED`, or `{f} systemctl is-active {q}` prints `failed`: it will not come up. The loop saved the last lines of its journal in `s{n}.out` (`cat s{n}.out`; the failure post carries them); `{f} sudo journalctl -u {q} -n 50 --no-pager` shows more. To try once more: `{f} sudo systemctl reset-failed {q}`, then start it again. Units started before this one stay running.",
            n = s.number
        );
        let (every, timeout, successes) = match health {
            Some(g) => (g.every, g.timeout, g.successes),
            None => (Duration::from_secs(5), s.timeout, 1),
        };
        let times = if successes <= 1 {
            String::new()
        } else {
            format!(" It must pass {successes} times in a row, as `recover` asks.")
        };
        let remedy = health.and_then(|g| g.remedy.as_ref());
        // A kill or restart counts only probes that got no answer in time: curl's exit 28,
        // and `timeout`'s 124 around a command probe (the engine's 10 s).
        let hang = remedy.is_some_and(|r| !crate::remedy::counts(&r.policy.action, false));
        let n = s.number;
        let (probe, checks, expect, exact) = match health.map(|g| &g.probe) {
            None => (
                None,
                Vec::new(),
                "the loop ends quietly: the unit is active.".to_owned(),
                None,
            ),
            Some(Probe::Http(r)) => {
                let (line, exact) = self.request_line(s, r);
                // From the management host, the probe is the typed curl line itself.
                let exact = exact.or_else(|| Some(self.shell(&r.curl())));
                let checks = http_checks(n, &r.expect);
                (
                    Some(line),
                    checks,
                    format!(
                        "the loop ends quietly, then no check prints anything ({})",
                        http_expect_text(&r.expect)
                    ),
                    exact,
                )
            }
            Some(Probe::Run { command, expect }) => {
                let bound = if hang { "timeout 10 " } else { "" };
                let typed = format!("{bound}{f} {}", remote_arg(command));
                let checks = command_checks(n, expect.as_ref(), None);
                (
                    Some(typed),
                    checks,
                    format!(
                        "the loop ends quietly, then no check prints anything ({})",
                        expect_text(n, expect.as_ref(), None, command)
                    ),
                    self.target(s)
                        .map(|t| self.shell(&t.ssh_line(&command.wire))),
                )
            }
        };
        let typed_remedy = remedy.map(|r| TypedRemedy {
            after: r.policy.after,
            max: r.policy.max,
            hang,
            apply: format!("{f} {}", remote_arg(&r.apply)),
            limit: hang.then(|| {
                format!("{f} systemctl show -p NRestarts -p StartLimitBurst -p Restart {q}")
            }),
        });
        let line = match &probe {
            None => until_loop(every, timeout, &active),
            Some(p) => gate_loop(&GateLoop {
                n,
                every,
                timeout,
                state: &format!("{f} systemctl is-active {q}"),
                probe: p,
                checks: &checks,
                successes,
                remedy: typed_remedy.as_ref(),
                journal: &format!("{f} sudo -n journalctl -u {q} -n 20 --no-pager"),
            }),
        };
        // Without a probe's output (the unit failed first), one `FAIL` and nothing else.
        let checks = if checks.is_empty() {
            checks
        } else {
            let mut c = vec![format!("if [ -e s{n}.rc ]; then")];
            c.extend(checks.iter().map(|x| format!("  {x}")));
            c.push("else echo FAIL; fi".into());
            c
        };
        let mut cmds = vec![Cmd::typed(ON_HOST, self.shell(&line))];
        cmds.extend(exact.map(|e| Cmd::exact(EXACT, e)));
        let mut repeat = format!(
            "Checks every {} that the unit is active{}; the loop gives up by itself after {}.{times}",
            fmt_duration(every),
            if health.is_some() {
                " and does its work (the health probe)"
            } else {
                ""
            },
            fmt_duration(timeout)
        );
        let mut note = failed;
        let mut expect = expect;
        if let Some(r) = remedy {
            let what = match &r.policy.action {
                crate::remedy::Action::Kill => {
                    format!("{unit} was killed (SIGKILL) and systemd restarted it")
                }
                crate::remedy::Action::Restart => format!("{unit} was restarted"),
                crate::remedy::Action::Run(_) => "the remedy command ran on the box".to_owned(),
            };
            expect.push_str(&format!(
                " If it printed `REMEDY APPLIED` before it ended, the step passed, but only after the remedy: {what}. Write down `step {n}: REMEDY APPLIED ({what})` here: ______, and put it in the last post (`EVENTS`)."
            ));
            repeat.push_str(&format!(
                " It applies the remedy by itself and says `REMEDY APPLIED` (its output in `s{n}.remedy.out`): {}.",
                crate::remedy::when(&r.policy)
            ));
            if hang {
                note.push_str(&format!(
                    " `REMEDY REFUSED`: one more start would go beyond the unit's start limit (or systemd would not restart it): the loop goes on without it; `s{n}.limit` says why."
                ));
            }
            // The remedy's own line, as `recover` sends it, for reference only.
            if let Some(t) = self.target(s) {
                cmds.push(Cmd::exact(
                    "Small print: the remedy the loop applies, as `recover` sends it",
                    self.shell(&t.ssh_line(&r.apply.wire)),
                ));
            }
        }
        blocks.push(Block {
            repeat: Some(repeat),
            say: "Wait until it is up:".into(),
            cmds,
            checks,
            verdict: None,
            expect: Some(expect),
            note: Some(note),
        });
        if let Some(d) = self.drill_text(unit) {
            blocks.push(Block::say(d));
        }
    }

    /// What the last drill of `unit` measured, for the reader timing a restart by hand: "When
    /// drilled on 2026-12-02 (3 days before this copy), systemd restarted it 6.2s after a
    /// SIGKILL and its health probe passed again after 20.4s (the reload)."
    fn drill_text(&self, unit: &str) -> Option<String> {
        let d = self.drills.unit(unit)?;
        let date = DateTime::parse_from_rfc3339(d.date.trim())
            .ok()?
            .with_timezone(&Utc);
        let days = self.generated.signed_duration_since(date).num_days().max(0);
        let secs = |s: f64| format!("{s:.1}s");
        let what = match (d.restarted_after, d.healthy_after) {
            (Some(r), Some(h)) => format!(
                "systemd restarted it {} after a SIGKILL and its health probe passed again after {} (the reload)",
                secs(r),
                secs(h)
            ),
            (Some(r), None) if d.passed => {
                format!("systemd restarted it {} after a SIGKILL", secs(r))
            }
            (Some(r), None) => format!(
                "systemd restarted it {} after a SIGKILL, but its health probe did not pass again",
                secs(r)
            ),
            (None, _) => "systemd did NOT restart it after a SIGKILL".to_string(),
        };
        Some(self.text(&format!(
            "When drilled on {} ({days} day{} before this copy), {what}.",
            date.format("%Y-%m-%d"),
            if days == 1 { "" } else { "s" }
        )))
    }

    fn outcomes(&self, s: &Step) -> Vec<Outcome> {
        let mut out = Vec::new();
        // The line the posts read, typed before either.
        let step_line = self.text(&posts::step_line(s.number, &s.name));
        let escalate = format!(
            "type `{step_line}`, then send the failure post (\"If a step still fails\", on the first pages)"
        );
        if let Some(m) = &s.abort_if {
            for cond in matcher_parts(m) {
                out.push(Outcome {
                    label: "ABORT if".into(),
                    text: format!(
                        "a check prints `ABORT` ({cond}). For the ABORT post, type `{step_line}`."
                    ),
                    abort: true,
                });
            }
        }
        let manual = matches!(s.action, Action::Manual { .. });
        let notify = matches!(s.action, Action::Notify { .. });
        // A wait_ssh that runs out of time aborts, whatever `on_fail` says (SPEC: abort
        // conditions); a manual step aborts when the operator says so.
        let wait = matches!(s.action, Action::WaitSsh { .. });
        if let Action::PreviousBoot { on_unclean, .. } = &s.action {
            use crate::runbook::model::OnUnclean;
            let (label, text, abort) = match on_unclean {
                OnUnclean::Abort => (
                    "If it prints UNCLEAN",
                    format!("ABORT: the long procedure. For the ABORT post, type `{step_line}`."),
                    true,
                ),
                OnUnclean::Warn => (
                    "If it prints UNCLEAN or UNKNOWN",
                    "post it (the box above), then go on: the next steps look for filesystem damage themselves, and a step marked \"only if this step did not find a clean shutdown\" runs now.".to_owned(),
                    false,
                ),
                OnUnclean::Continue => (
                    "If it prints UNCLEAN or UNKNOWN",
                    "write it down and go on.".to_owned(),
                    false,
                ),
            };
            out.push(Outcome {
                label: label.into(),
                text,
                abort,
            });
            out.push(Outcome {
                label: "If the command fails".into(),
                text: format!(
                    "no verdict (ssh failed, or no `@@` sections in `s{}.out`): do it once more. If it still fails: {escalate}, and stop here.",
                    s.number
                ),
                abort: false,
            });
            return out;
        }
        let label = if manual {
            "If it is not so"
        } else if matches!(
            s.action,
            Action::WaitSsh {
                otherwise: Some(_),
                ..
            }
        ) {
            "If the second wait prints GAVE UP too"
        } else if wait || matches!(s.action, Action::Ups(_)) {
            "If it prints GAVE UP"
        } else if notify {
            "If it fails"
        } else {
            "If a check prints FAIL"
        };
        let (text, abort) = if wait {
            (
                format!("ABORT. For the ABORT post, type `{step_line}`."),
                true,
            )
        } else if notify {
            (
                "go on: a failed status post never stops a recovery. Tell the operators another way."
                    .to_owned(),
                false,
            )
        } else {
            match s.on_fail {
                OnFail::Abort => (
                    format!("ABORT. For the ABORT post, type `{step_line}`."),
                    true,
                ),
                OnFail::Stop => (
                    format!(
                        "do this step once more if you can fix the cause. If it still fails: {escalate}, and stop here: do not go on to the next step, leave the box idle."
                    ),
                    false,
                ),
                OnFail::Continue => (
                    format!(
                        "write it down and go on with the next step: this runbook says a failure here does not stop the recovery (`on_fail: continue`). To tell the operators now, {escalate}."
                    ),
                    false,
                ),
            }
        };
        out.push(Outcome {
            label: label.into(),
            text,
            abort,
        });
        if !s.expected.is_empty() {
            out.push(Outcome {
                label: "Expected and harmless".into(),
                text: self.text(&s.expected.join("; ")),
                abort: false,
            });
        }
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

/// `"LINE"` when double quotes keep it as it is (no `"`, `$`, backquote, and no backslash
/// before one of them), else the line single-quoted.
fn double_quoted(line: &str) -> String {
    let mut chars = line.chars().peekable();
    let mut plain = true;
    while let Some(c) = chars.next() {
        let escapes = c == '\\' && chars.peek().is_some_and(|n| "$`\"\\\n".contains(*n));
        if "\"$`!".contains(c) || escapes {
            plain = false;
        }
    }
    if plain {
        format!("\"{line}\"")
    } else {
        crate::template::shell_quote(line)
    }
}

/// What the person writes in a post's `WHY` blank.
const WHY_NOTE: &str = "`WHY='__'`: what went wrong, in a few words (the check's output, `GAVE UP`, `UNIT FAILED`), without quotes or backslashes.";

/// Where the login-function lines are typed.
const EXACT: &str = "Small print: the exact line `recover` sends (same effect)";

fn out_file(n: usize) -> String {
    format!("s{n}.out")
}

/// `LINE > s4.out 2> s4.err; echo "exit $?" | tee s4.rc`: the output kept for the checks.
fn saved(line: &str, n: usize) -> String {
    format!("{line} > s{n}.out 2> s{n}.err; echo \"exit $?\" | tee s{n}.rc")
}

/// One try inside a loop: the command, its exit code saved, and the checks all silent.
fn attempt(line: &str, n: usize, checks: &[String]) -> String {
    let run = format!("{{ {line} > s{n}.out 2> s{n}.err; echo \"exit $?\" > s{n}.rc; }}");
    if checks.is_empty() {
        run
    } else {
        format!("{run} && [ -z \"$({})\" ]", checks.join("; "))
    }
}

/// A loop that tries `cond` every `every` and gives up by itself after `timeout`.
fn until_loop(every: Duration, timeout: Duration, cond: &str) -> String {
    format!(
        "end=$(( $(date +%s) + {} ))\nuntil {cond}; do\n  [ \"$(date +%s)\" -lt \"$end\" ] || {{ echo GAVE UP; break; }}\n  sleep {}\ndone",
        timeout.as_secs(),
        every.as_secs().max(1)
    )
}

/// The `ups` step as a person types it: NUT's `GET VAR` through `upsc` when installed, else
/// `nc` speaking the protocol itself; every `every` the status and the charge; the count of
/// seconds on line starts again on a status without `OL` or with `OB`, `LB`, `FSD`, or a
/// charge below the minimum; ends once on line for `stable_for`, or says `GAVE UP`.
fn ups_loop(w: &crate::plan::UpsWait) -> String {
    let (name, host, port) = (&w.ups.name, &w.ups.host, w.ups.port);
    let min = w
        .want
        .min_charge
        // Whole percents: a fractional minimum asks for the next one up.
        .map(|c| {
            format!(
                "\n  [ \"${{ch%%.*}}\" -ge {} ] 2>/dev/null || ok=0",
                c.ceil() as u64
            )
        })
        .unwrap_or_default();
    format!(
        "ups() {{ if command -v upsc >/dev/null; then upsc {name}@{host}:{port} \"$1\" 2>/dev/null; else printf 'GET VAR {name} %s\\nLOGOUT\\n' \"$1\" | nc -w 5 {host} {port} | sed -n 's/^VAR [^ ]* [^ ]* \"\\(.*\\)\"$/\\1/p'; fi; }}\n\
end=$(( $(date +%s) + {timeout} )); since=\n\
until [ -n \"$since\" ] && [ $(( $(date +%s) - since )) -ge {stable} ]; do\n\
\x20 [ \"$(date +%s)\" -lt \"$end\" ] || {{ echo GAVE UP; break; }}\n\
\x20 st=$(ups ups.status); ch=$(ups battery.charge); echo \"status: $st, charge: $ch\"\n\
\x20 case \" $st \" in *\" OL \"*) ok=1 ;; *) ok=0 ;; esac\n\
\x20 case \" $st \" in *\" OB \"*|*\" LB \"*|*\" FSD \"*) ok=0 ;; esac{min}\n\
\x20 if [ \"$ok\" = 1 ]; then since=${{since:-$(date +%s)}}; else since=; fi\n\
\x20 sleep {every}\n\
done",
        timeout = w.timeout.as_secs(),
        stable = w.want.stable_for.as_secs(),
        every = w.every.as_secs().max(1),
    )
}

/// A gate's remedy as the typed loop applies it.
struct TypedRemedy {
    after: u32,
    max: u32,
    /// Only probes with no answer in time count (kill, restart); a start-limit check first.
    hang: bool,
    /// The typed remedy line (login function and remote command).
    apply: String,
    /// For kill and restart: the typed `systemctl show` of NRestarts, StartLimitBurst, Restart.
    limit: Option<String>,
}

/// A health gate as a person types it.
struct GateLoop<'a> {
    n: usize,
    every: Duration,
    timeout: Duration,
    /// The typed `systemctl is-active UNIT`.
    state: &'a str,
    /// The typed probe, its output saved by the loop.
    probe: &'a str,
    checks: &'a [String],
    successes: u32,
    remedy: Option<&'a TypedRemedy>,
    /// The typed read of the unit's journal, saved on `UNIT FAILED` for the failure post.
    journal: &'a str,
}

/// The engine's gate loop, typed: every `every`, while the unit is active, the probe (its
/// output in `sN.out`/`sN.err`/`sN.rc`); `successes` passes in a row end it. With a remedy,
/// failed probes are counted as the engine counts them ([`crate::remedy::counts`]); at
/// `after` in a row the remedy runs (its output in `sN.remedy.*`, never in the files the
/// checks read) and the loop says `REMEDY APPLIED`, at most `max` times; a kill or restart is
/// refused when one more start would go beyond the unit's `StartLimitBurst`. The loop keeps
/// probing until `timeout`, then says `GAVE UP`; a unit that reached `failed` ends it at once
/// (`UNIT FAILED`), as it ends the engine's gate.
fn gate_loop(g: &GateLoop) -> String {
    let n = g.n;
    let counted = g.successes > 1;
    // No output of an earlier try is left for the checks to read.
    let mut l = vec![format!("rm -f s{n}.out s{n}.err s{n}.rc")];
    l.push(format!(
        "end=$(( $(date +%s) + {} )){}{}",
        g.timeout.as_secs(),
        if counted { "; ok=0" } else { "" },
        if g.remedy.is_some() {
            "; n=0; applied=0"
        } else {
            ""
        }
    ));
    l.push("while :; do".into());
    l.push(format!("  state=$({})", g.state));
    l.push("  if [ \"$state\" = active ]; then".into());
    l.push(format!(
        "    {} > s{n}.out 2> s{n}.err; echo \"exit $?\" > s{n}.rc",
        g.probe
    ));
    let pass = if g.checks.is_empty() {
        "true".to_owned()
    } else {
        format!("[ -z \"$({})\" ]", g.checks.join("; "))
    };
    l.push(format!("    if {pass}; then"));
    if g.successes <= 1 {
        l.push("      break".into());
    } else {
        l.push(format!(
            "      ok=$((ok + 1)); [ \"$ok\" -ge {} ] && break",
            g.successes
        ));
    }
    if counted {
        l.push("    else".into());
        l.push("      ok=0".into());
    } else if g.remedy.is_some() {
        l.push("    else".into());
    }
    if let Some(r) = g.remedy {
        if r.hang {
            l.push(format!(
                "      if grep -qxE 'exit (28|124)' s{n}.rc; then n=$((n + 1)); else n=0; fi"
            ));
        } else {
            l.push("      n=$((n + 1))".into());
        }
        l.push(format!(
            "      if [ \"$n\" -ge {} ] && [ \"$applied\" -lt {} ]; then",
            r.after, r.max
        ));
        l.push("        n=0; applied=$((applied + 1))".into());
        let apply = format!(
            "{} > s{n}.remedy.out 2> s{n}.remedy.err; echo \"exit $?\" > s{n}.remedy.rc; echo REMEDY APPLIED",
            r.apply
        );
        match &r.limit {
            Some(limit) => {
                l.push(format!("        {limit} > s{n}.limit"));
                l.push(format!(
                    "        nr=$(sed -n 's/^NRestarts=//p' s{n}.limit); burst=$(sed -n 's/^StartLimitBurst=//p' s{n}.limit)"
                ));
                l.push(format!(
                    "        if grep -qxE 'Restart=(no|on-success)' s{n}.limit || {{ [ \"${{burst:-0}}\" -gt 0 ] && [ $(( ${{nr:-0}} + 2 )) -gt \"$burst\" ]; }}; then"
                ));
                l.push(format!("          echo REMEDY REFUSED; applied={}", r.max));
                l.push("        else".into());
                l.push(format!("          {apply}"));
                l.push("        fi".into());
            }
            None => l.push(format!("        {apply}")),
        }
        l.push("      fi".into());
    }
    l.push("    fi".into());
    l.push("  elif [ \"$state\" = failed ]; then".into());
    // The unit's journal in place of a probe's output: the checks print one `FAIL`, and the
    // failure post carries the journal's last lines.
    l.push(format!(
        "    echo UNIT FAILED; rm -f s{n}.rc; {} > s{n}.out 2> s{n}.err; break",
        g.journal
    ));
    if counted {
        l.push("  else".into());
        l.push("    ok=0".into());
    }
    l.push("  fi".into());
    l.push("  [ \"$(date +%s)\" -lt \"$end\" ] || { echo GAVE UP; break; }".into());
    l.push(format!("  sleep {}", g.every.as_secs().max(1)));
    l.push("done".into());
    l.join("\n")
}

fn retry_text(r: crate::plan::RetrySpec) -> String {
    format!(
        "Tries every {} until the checks pass; the loop gives up by itself after {}. Then run the checks once more.",
        fmt_duration(r.every),
        fmt_duration(r.timeout)
    )
}

/// `exit 0` or `exit (4|8)` as a line pattern.
fn exit_pattern(codes: &[i32]) -> String {
    match codes {
        [one] => format!("exit {one}"),
        many => format!(
            "exit ({})",
            many.iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join("|")
        ),
    }
}

/// The typed checks of a command, in the order the verdict takes them: abort conditions
/// print `ABORT`, unmet expectations `FAIL`; all silent is a pass.
fn command_checks(n: usize, expect: Option<&Matcher>, abort_if: Option<&Matcher>) -> Vec<String> {
    let mut out = Vec::new();
    let (rc, stdout, stderr) = (format!("s{n}.rc"), format!("s{n}.out"), format!("s{n}.err"));
    if let Some(m) = abort_if {
        if let Some(e) = &m.exit {
            out.push(format!(
                "grep -qxE '{}' {rc} && echo ABORT",
                exit_pattern(e)
            ));
        }
        if let Some(r) = &m.stdout {
            out.push(format!(
                "{} && echo ABORT",
                translate(r.as_str()).line("", &stdout)
            ));
        }
        if let Some(r) = &m.stderr {
            out.push(format!(
                "{} && echo ABORT",
                translate(r.as_str()).line("", &stderr)
            ));
        }
    }
    let exits = expect
        .and_then(|m| m.exit.clone())
        .unwrap_or_else(|| vec![0]);
    out.push(format!(
        "grep -qxE '{}' {rc} || echo FAIL",
        exit_pattern(&exits)
    ));
    if let Some(m) = expect {
        if let Some(r) = &m.stdout {
            out.push(format!(
                "{} || echo FAIL",
                translate(r.as_str()).line("-q", &stdout)
            ));
        }
        if let Some(r) = &m.stderr {
            out.push(format!(
                "{} || echo FAIL",
                translate(r.as_str()).line("-q", &stderr)
            ));
        }
    }
    out
}

/// The checks of a curl response saved in `sN.out`: the status is its last line, the body
/// the lines above it.
fn http_checks(n: usize, e: &HttpExpect) -> Vec<String> {
    let status = match &e.status {
        Some(list) => format!(
            "({})",
            list.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join("|")
        ),
        None => "2[0-9][0-9]".into(),
    };
    let mut out = vec![format!(
        "tail -n 1 s{n}.out | grep -qxE '{status}' || echo FAIL"
    )];
    if let Some(b) = &e.body {
        out.push(format!(
            "sed '$d' s{n}.out | {} || echo FAIL",
            translate(b.as_str()).line("-q", "").trim_end()
        ));
    }
    out
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

/// The login as a shell function: strict host key, no password prompt, and a bound on each
/// connection attempt so that a retry loop never hangs on one.
fn login_function(t: &TargetSpec) -> String {
    let login = login_line(t);
    let opts = login.strip_prefix("ssh ").unwrap_or(&login);
    format!(
        "{}() {{ ssh -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10 {opts} \"$@\"; }}",
        function_name(&t.name)
    )
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
fn expect_text(n: usize, m: Option<&Matcher>, abort_if: Option<&Matcher>, c: &Command) -> String {
    let exits = m.and_then(|m| m.exit.clone()).unwrap_or_else(|| vec![0]);
    let shown: Vec<String> = exits.iter().map(|e| format!("`exit {e}`")).collect();
    let mut parts = vec![format!("it prints {}", shown.join(" or "))];
    parts.extend(
        m.map(matcher_parts)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !p.starts_with("exit")),
    );
    let mut text = format!("{}, and no check prints anything.", parts.join(", and "));
    if abort_if.is_some() && m.is_none_or(|m| m.stdout.is_none()) {
        text.push_str(&format!(" `s{n}.out` may well be empty: that is good."));
        if c.script.contains("journalctl") {
            text.push_str(" `-- No entries --` means nothing was logged: good.");
        }
    }
    if c.script.contains("dumpe2fs") {
        text.push_str(" `needs_recovery` among the features is normal on a mounted root: ext4 sets it while the file system is mounted.");
    }
    text
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
        let c = Command::remote(
            "journalctl -p err".into(),
            true,
            Duration::from_secs(5),
            "m",
        );
        assert_eq!(
            expect_text(4, None, None, &c),
            "it prints `exit 0`, and no check prints anything."
        );
        let m = Matcher {
            exit: Some(vec![0, 1]),
            stdout: Some(regex::Regex::new("a|b").unwrap()),
            stderr: None,
        };
        assert_eq!(
            expect_text(4, Some(&m), None, &c),
            "it prints `exit 0` or `exit 1`, and its output matches `a|b`, and no check prints anything."
        );
        assert!(expect_text(4, None, Some(&m), &c).contains("`-- No entries --`"));
    }

    #[test]
    fn checks_print_abort_or_fail() {
        let m = Matcher {
            exit: Some(vec![4, 8]),
            stdout: Some(regex::Regex::new(r"a\s").unwrap()),
            stderr: None,
        };
        assert_eq!(
            command_checks(7, None, Some(&m)),
            vec![
                "grep -qxE 'exit (4|8)' s7.rc && echo ABORT",
                "grep -E 'a[[:space:]]' s7.out && echo ABORT",
                "grep -qxE 'exit 0' s7.rc || echo FAIL",
            ]
        );
        let loop_ = until_loop(Duration::from_secs(15), Duration::from_secs(300), "x");
        assert!(loop_.starts_with("end=$(( $(date +%s) + 300 ))\nuntil x; do"));
    }
}
