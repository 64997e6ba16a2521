//! Steps: the checks every step gets, then one resolve function per [`Kind`].
//!
//! A new kind adds a variant to `Kind`, its rules in [`rules`], one arm in
//! [`Resolver::step`] and one function here that returns its [`Resolved`].

use std::time::Duration;

use serde_saphyr::Spanned;

use super::rehearse;
use super::resolve::{Resolver, first_line, matcher};
use super::wire::{DROP_CACHES_COMMAND, marker};
use super::{
    Action, ChannelSpec, Command, DEFAULT_DROP_CACHES_TIMEOUT, DEFAULT_IPMI_TIMEOUT,
    DEFAULT_MANUAL_TIMEOUT, DEFAULT_NOTIFY_TIMEOUT, DEFAULT_PREVIOUS_BOOT_TIMEOUT,
    DEFAULT_RUN_TIMEOUT, DEFAULT_START_TIMEOUT, DEFAULT_UPS_EVERY, DEFAULT_UPS_TIMEOUT,
    DEFAULT_WAIT_SSH_EVERY, DEFAULT_WAIT_SSH_TIMEOUT, DEFAULT_WOL_TIMEOUT, Otherwise, PowerOn,
    RetrySpec, Step, TargetSpec, UpsWait, fmt_duration,
};
use crate::power::ipmi::{self, Bmc};
use crate::power::{nut, wol};
use crate::runbook::diag::Pos;
use crate::runbook::model::{self, Kind, OnFail};
use crate::template::{Context, shell_quote};

/// What the runbook language allows each kind: which optional keys apply, and whether it
/// always (or never) changes state.
struct Rules {
    health: bool,
    message: bool,
    /// `pass:`, the done-condition of a manual step.
    pass: bool,
    retry: bool,
    expect: bool,
    sudo: bool,
    on_fail: bool,
    /// `Some(m)`: `mutates:` cannot change it.
    mutates: Option<bool>,
}

fn rules(kind: Kind) -> Rules {
    let base = Rules {
        health: false,
        message: false,
        pass: false,
        retry: false,
        expect: false,
        sudo: false,
        on_fail: true,
        mutates: None,
    };
    match kind {
        Kind::Manual => Rules {
            mutates: Some(true),
            pass: true,
            ..base
        },
        Kind::Run => Rules {
            retry: true,
            expect: true,
            sudo: true,
            ..base
        },
        Kind::Local => Rules {
            retry: true,
            expect: true,
            ..base
        },
        Kind::WaitSsh => Rules {
            mutates: Some(false),
            ..base
        },
        Kind::DropCaches => Rules {
            sudo: true,
            mutates: Some(true),
            ..base
        },
        Kind::PreviousBoot => Rules {
            sudo: true,
            mutates: Some(false),
            ..base
        },
        Kind::Start => Rules {
            health: true,
            sudo: true,
            mutates: Some(true),
            ..base
        },
        Kind::Http => Rules {
            retry: true,
            ..base
        },
        Kind::Notify => Rules {
            message: true,
            on_fail: false,
            mutates: Some(true),
            ..base
        },
        Kind::Ups => Rules {
            mutates: Some(false),
            ..base
        },
        Kind::PowerOn => Rules {
            mutates: Some(true),
            ..base
        },
    }
}

/// The kinds for which `pick` holds, as the runbook writes them.
fn kinds_where(pick: impl Fn(&Rules) -> bool) -> String {
    Kind::ALL
        .into_iter()
        .filter(|k| pick(&rules(*k)))
        .map(Kind::name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// "a `run`", "an `http`": a step kind with its article.
fn a_kind(kind: Kind) -> String {
    let article = if kind == Kind::Http { "an" } else { "a" };
    format!("{article} `{kind}`")
}

/// What every kind's resolve function reads.
struct StepCx<'s> {
    step: &'s model::Step,
    pos: Pos,
    target: Option<&'s TargetSpec>,
    /// `recover:<runbook>:<number>`, carried by every remote command of the step.
    marker: String,
    /// The step's `timeout:`, if written.
    timeout: Option<Duration>,
}

impl StepCx<'_> {
    /// Sudo as asked, except on a target reached as root.
    fn sudo(&self, want: bool) -> bool {
        want && !self.target.map(TargetSpec::is_root).unwrap_or(false)
    }

    fn target_name(&self) -> &str {
        self.target.map(|t| t.name.as_str()).unwrap_or("target")
    }
}

/// What a kind's resolve function gives the step.
struct Resolved {
    action: Action,
    /// The step's timeout (its `timeout:` already applied).
    timeout: Duration,
    /// The name shown when the step has no `name:`.
    name: String,
    /// Whether it changes state, unless `mutates:` says otherwise.
    mutates: bool,
}

impl Resolver<'_> {
    pub(super) fn step(
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
        let kind = match s.kinds().as_slice() {
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
                let at = self.key_at(spos, b.name(), Pos::of(p));
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
        self.check_keys(kind, s, spos);

        let cx = StepCx {
            step: s,
            pos: spos,
            target: targets.get(target),
            marker: marker(&self.loaded.runbook.name.value, number),
            timeout: s.timeout.as_ref().map(|t| t.value.0),
        };
        let r = match kind {
            Kind::Manual => self.manual(&cx, number),
            Kind::Run => self.run(&cx),
            Kind::Local => self.local(&cx),
            Kind::WaitSsh => self.wait_ssh(&cx, channels),
            Kind::DropCaches => Some(self.drop_caches(&cx)),
            Kind::PreviousBoot => Some(self.previous_boot(&cx)),
            Kind::Start => self.start(&cx),
            Kind::Http => self.http(&cx),
            Kind::Notify => self.notify(&cx, channels),
            Kind::Ups => self.ups(&cx),
            Kind::PowerOn => self.power_on(&cx),
        }?;

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
            Some(n) => self.render(n, Context::Text, cx.target, false),
            None => r.name,
        };
        let abort_message = s
            .abort_message
            .as_ref()
            .map(|m| self.render(m, Context::Text, cx.target, true));

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

        let when_unclean = match &s.when {
            None => None,
            Some(w) => match (w.value, self.previous_boot) {
                (model::When::UncleanShutdown, Some(n)) => Some(n),
                (model::When::UncleanShutdown, None) => {
                    self.err(
                        Pos::of(&w.referenced),
                        "`when: unclean_shutdown` needs an earlier `previous_boot` step to say how the box went down",
                        "add `- previous_boot: { on_unclean: warn }` before this step (right after `wait_ssh`)",
                    );
                    None
                }
            },
        };
        if kind == Kind::PreviousBoot {
            self.previous_boot = Some(number);
        }

        if self.problems.len() > before {
            return None;
        }
        let mutates = s.mutates.unwrap_or(r.mutates);
        let mut step = Step {
            number,
            name,
            target,
            rehearse: rehearse::policy(&r.action, mutates),
            action: r.action,
            timeout: r.timeout,
            timeout_explicit: cx.timeout.is_some() || matches!(kind, Kind::WaitSsh | Kind::Ups),
            retry,
            expect: s.expect.as_ref().map(|m| matcher(&m.value)),
            abort_if: s.abort_if.as_ref().map(|m| matcher(&m.value)),
            on_fail: s.on_fail.unwrap_or(OnFail::Stop),
            mutates,
            abort_message,
            expected: s.expected.clone().unwrap_or_default(),
            when_unclean,
            survives_reboot: s.survives_reboot.as_ref().is_some_and(|k| k.value),
            pos: spos,
            sudo_check: None,
        };
        step.sudo_check = rehearse::sudo_check(&step);
        Some(step)
    }

    /// Keys that only some kinds take.
    fn check_keys(&mut self, kind: Kind, s: &model::Step, spos: Pos) {
        let rule = rules(kind);
        let checks: [(&str, Option<Pos>, bool, String, &str); 6] = [
            (
                "pass",
                s.pass.as_ref().map(|h| Pos::of(&h.referenced)),
                rule.pass,
                kinds_where(|r| r.pass),
                "`pass` says when a manual step is done; other steps have `expect`",
            ),
            (
                "health",
                s.health.as_ref().map(|h| Pos::of(&h.referenced)),
                rule.health,
                kinds_where(|r| r.health),
                "move the gate under a `start` step, or use an `http` step",
            ),
            (
                "message",
                s.message.as_ref().map(|h| Pos::of(&h.referenced)),
                rule.message,
                kinds_where(|r| r.message),
                "`message` is the text of a `notify` step",
            ),
            (
                "retry",
                s.retry.as_ref().map(|h| Pos::of(&h.referenced)),
                rule.retry,
                kinds_where(|r| r.retry),
                "remove `retry`; gates and wait_ssh have their own `every`",
            ),
            (
                "expect",
                s.expect.as_ref().map(|h| Pos::of(&h.referenced)),
                rule.expect,
                kinds_where(|r| r.expect),
                if kind == Kind::Http {
                    "put HTTP expectations inside `http:`, as `expect: { status: 200, body: ... }`"
                } else {
                    "remove `expect` from this step"
                },
            ),
            (
                "abort_if",
                s.abort_if.as_ref().map(|h| Pos::of(&h.referenced)),
                rule.expect,
                kinds_where(|r| r.expect),
                "remove `abort_if`, or move the check into a `run` step",
            ),
        ];
        for (key, pos, allowed, kinds, help) in checks {
            if let (Some(pos), false) = (pos, allowed) {
                let at = self.key_at(spos, key, pos);
                self.err(
                    at,
                    format!(
                        "`{key}` does not apply to {} step (it applies to: {kinds})",
                        a_kind(kind)
                    ),
                    help,
                );
            }
        }
        if s.sudo.is_some() && !rule.sudo {
            self.err(
                self.key_at(spos, "sudo", spos),
                format!("`sudo` does not apply to {} step", a_kind(kind)),
                "sudo applies to run, start, drop_caches and previous_boot, which run on the target",
            );
        }
        if !rule.on_fail && s.on_fail.is_some() {
            self.err(
                self.key_at(spos, "on_fail", spos),
                "`on_fail` does not apply to a notify step: a failing post never stops a recovery",
                "remove `on_fail`; a failed post is retried, then reported",
            );
        }
        if let (false, Some(u)) = (kind == Kind::Manual, &s.unattended) {
            self.err(
                self.key_at(spos, "unattended", Pos::of(&u.referenced)),
                format!(
                    "`unattended` does not apply to {} step: only a manual step waits for a person",
                    a_kind(kind)
                ),
                "remove `unattended`; an unattended run does every other step as written",
            );
        }
        if let (false, Some(k)) = (
            matches!(kind, Kind::Manual | Kind::Local),
            &s.survives_reboot,
        ) {
            self.err(
                self.key_at(spos, "survives_reboot", Pos::of(&k.referenced)),
                format!(
                    "`survives_reboot` does not apply to {} step: what it does is tied to the box's boot (or to the outage), and runs again after a reboot",
                    a_kind(kind)
                ),
                "remove `survives_reboot`; only a manual or local step (the management host's side) can be kept across a reboot of the box",
            );
        }
        if let (Kind::WaitSsh, Some(t)) = (kind, &s.timeout) {
            self.err(
                self.key_at(spos, "timeout", Pos::of(&t.referenced)),
                "a wait_ssh step takes its timeout inside: `wait_ssh: { every: 15s, timeout: 5m }`",
                "move `timeout` into the wait_ssh mapping",
            );
        }
        if let (Kind::Ups, Some(t)) = (kind, &s.timeout) {
            self.err(
                self.key_at(spos, "timeout", Pos::of(&t.referenced)),
                "a ups step takes its timeout inside: `ups: { ..., every: 5s, timeout: 30m }`",
                "move `timeout` into the ups mapping",
            );
        }
        if let (Some(m), Some(f)) = (s.mutates, rule.mutates)
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

    fn manual(&mut self, cx: &StepCx, number: usize) -> Option<Resolved> {
        let manual = cx.step.manual.as_ref()?;
        let text = self.render(manual, Context::Text, cx.target, false);
        let pass = cx
            .step
            .pass
            .as_ref()
            .map(|p| self.render(p, Context::Text, cx.target, false));
        let unattended = cx.step.unattended.as_ref().map(|u| u.value);
        if self.opts.unattended && unattended.is_none() {
            let which = match &cx.step.name {
                Some(n) => format!("step {number} (`{}`)", n.value),
                None => format!("step {number} (`{}`)", first_line(&text, 40)),
            };
            self.err(
                self.key_at(cx.pos, "manual", Pos::of(&manual.referenced)),
                format!(
                    "{which} is a manual step without `unattended:`: an unattended run has nobody to ask"
                ),
                "add `unattended: skip` (go on; the journal and the abort channel say nobody confirmed it) or `unattended: abort` (stop the run here)",
            );
        }
        Some(Resolved {
            name: first_line(&text, 60),
            action: Action::Manual {
                text,
                pass,
                unattended,
            },
            timeout: cx.timeout.unwrap_or(DEFAULT_MANUAL_TIMEOUT),
            mutates: true,
        })
    }

    /// The script of a `run` or `local` step, rendered for the shell.
    fn script(&mut self, cx: &StepCx, kind: Kind, src: &Spanned<String>) -> String {
        if src.value.trim().is_empty() {
            self.err(
                Pos::of(&src.referenced),
                format!("empty `{kind}` command"),
                "write the shell command to run",
            );
        }
        let script = self.render(src, Context::Shell, cx.target, false);
        self.refuse(
            Pos::of(&src.referenced),
            crate::runbook::validate::command(&script),
        );
        script
    }

    fn run(&mut self, cx: &StepCx) -> Option<Resolved> {
        let script = self.script(cx, Kind::Run, cx.step.run.as_ref()?);
        let timeout = cx.timeout.unwrap_or(DEFAULT_RUN_TIMEOUT);
        let sudo = cx.sudo(cx.step.sudo.unwrap_or(false));
        Some(Resolved {
            name: first_line(&script, 60),
            action: Action::Run(Command::remote(script, sudo, timeout, &cx.marker)),
            timeout,
            mutates: true,
        })
    }

    fn local(&mut self, cx: &StepCx) -> Option<Resolved> {
        let script = self.script(cx, Kind::Local, cx.step.local.as_ref()?);
        Some(Resolved {
            name: format!("local: {}", first_line(&script, 60)),
            action: Action::Local(Command::local(script, &cx.marker)),
            timeout: cx.timeout.unwrap_or(DEFAULT_RUN_TIMEOUT),
            mutates: true,
        })
    }

    fn wait_ssh(&mut self, cx: &StepCx, channels: &[ChannelSpec]) -> Option<Resolved> {
        let w = &cx.step.wait_ssh.as_ref()?.value;
        let every = w.every.map(|d| d.0).unwrap_or(DEFAULT_WAIT_SSH_EVERY);
        let timeout = w.timeout.map(|d| d.0).unwrap_or(DEFAULT_WAIT_SSH_TIMEOUT);
        if every.is_zero() || every > timeout {
            self.err(
                self.key_at(cx.pos, "wait_ssh", cx.pos),
                format!(
                    "wait_ssh tries every {} but gives up after {}",
                    fmt_duration(every),
                    fmt_duration(timeout)
                ),
                "`every` must be shorter than `timeout`, like { every: 15s, timeout: 5m }",
            );
        }
        let otherwise = w.otherwise.as_ref().map(|o| {
            let o = &o.value;
            let channel = match &o.notify {
                Some(ch) => {
                    if !channels.iter().any(|c| c.name == ch.value) {
                        self.unknown_channel(ch);
                    }
                    Some(ch.value.clone())
                }
                None => self
                    .loaded
                    .runbook
                    .abort
                    .as_ref()
                    .and_then(|a| a.value.notify.as_ref())
                    .map(|n| n.value.clone()),
            };
            Otherwise {
                text: self.render(&o.manual, Context::Text, cx.target, false),
                channel,
                timeout: o.timeout.map(|d| d.0).unwrap_or(timeout),
            }
        });
        if let (true, Some(o), Some(src)) = (self.opts.unattended, &otherwise, w.otherwise.as_ref())
            && o.channel.is_none()
        {
            self.err(
                Pos::of(&src.referenced),
                "this `otherwise:` ask has no channel to be posted to, and an unattended run has nobody at a terminal: nobody would be asked",
                "add `notify: CHANNEL` to `otherwise:`, or an abort channel (`abort: { notify: CHANNEL }`)",
            );
        }
        let total = timeout + otherwise.as_ref().map_or(Duration::ZERO, |o| o.timeout);
        Some(Resolved {
            name: format!("wait for SSH on {}", cx.target_name()),
            action: Action::WaitSsh {
                every,
                timeout,
                otherwise,
            },
            timeout: total,
            mutates: false,
        })
    }

    fn previous_boot(&mut self, cx: &StepCx) -> Resolved {
        let timeout = cx.timeout.unwrap_or(DEFAULT_PREVIOUS_BOOT_TIMEOUT);
        let on_unclean = cx
            .step
            .previous_boot
            .as_ref()
            .and_then(|p| p.value.on_unclean)
            .unwrap_or_default();
        let command = Command::remote(
            crate::previous_boot::EVIDENCE_COMMAND.into(),
            cx.sudo(cx.step.sudo.unwrap_or(false)),
            timeout,
            &cx.marker,
        );
        Resolved {
            name: format!("how {} went down last time", cx.target_name()),
            action: Action::PreviousBoot {
                command,
                on_unclean,
            },
            timeout,
            mutates: false,
        }
    }

    fn drop_caches(&mut self, cx: &StepCx) -> Resolved {
        let timeout = cx.timeout.unwrap_or(DEFAULT_DROP_CACHES_TIMEOUT);
        let command = Command::remote(
            DROP_CACHES_COMMAND.into(),
            cx.sudo(true),
            timeout,
            &cx.marker,
        );
        Resolved {
            name: format!("drop the page cache on {}", cx.target_name()),
            action: Action::DropCaches(command),
            timeout,
            mutates: true,
        }
    }

    fn start(&mut self, cx: &StepCx) -> Option<Resolved> {
        let s = cx.step;
        let u = s.start.as_ref()?;
        let rendered_before = self.problems.len();
        let unit = self.render(u, Context::Text, cx.target, false);
        // A literal name was checked as the runbook was read; a rendered one is checked here.
        if self.problems.len() == rendered_before && !self.holds_unset(&unit) {
            self.refuse(
                Pos::of(&u.referenced),
                crate::runbook::validate::unit_name(&unit),
            );
        }
        let sudo = cx.sudo(s.sudo.unwrap_or(true));
        let step_timeout = cx.timeout.unwrap_or(DEFAULT_START_TIMEOUT);
        let start = Command::remote(
            format!("systemctl start --no-block {}", shell_quote(&unit)),
            sudo,
            super::DEFAULT_PROBE_TIMEOUT.min(step_timeout),
            &cx.marker,
        );
        let health = match &s.health {
            Some(h) => {
                let key = self.key_at(cx.pos, "health", Pos::of(&h.referenced));
                self.gate(h, key, cx.target, sudo, &cx.marker, cx.timeout)
                    .map(|mut g| {
                        g.remedy = self.remedy(h, &unit, cx.target, sudo, &cx.marker);
                        Box::new(g)
                    })
            }
            None => None,
        };
        Some(Resolved {
            name: format!("start {unit}"),
            action: Action::Start {
                status: super::gate::unit_status(
                    &unit,
                    health.as_ref().is_some_and(|g| g.remedy.is_some()),
                    &cx.marker,
                ),
                journal: super::gate::unit_journal(&unit, sudo, &cx.marker),
                audit: Command::remote(
                    crate::audit::show_command(&unit),
                    false,
                    super::gate::UNIT_READ_TIMEOUT,
                    &cx.marker,
                ),
                drill: Box::new(super::DrillLines {
                    state: super::gate::unit_status(&unit, true, &cx.marker),
                    kill: Command::remote(
                        crate::remedy::kill_command(&shell_quote(&unit)),
                        sudo,
                        super::gate::UNIT_READ_TIMEOUT,
                        &cx.marker,
                    ),
                }),
                unit,
                start,
                health,
            },
            timeout: step_timeout,
            mutates: true,
        })
    }

    fn http(&mut self, cx: &StepCx) -> Option<Resolved> {
        let h = cx.step.http.as_ref()?;
        if h.value.timeout.is_some() && cx.step.timeout.is_some() {
            self.err(
                self.key_at(cx.pos, "timeout", cx.pos),
                "this http step has two timeouts, one inside `http:` and one on the step",
                "keep one of them",
            );
        }
        let req = self.request(h, cx.target, cx.timeout, &cx.marker);
        Some(Resolved {
            name: format!("{} {}", req.method, req.url),
            timeout: req.timeout,
            action: Action::Http(req),
            mutates: false,
        })
    }

    fn notify(&mut self, cx: &StepCx, channels: &[ChannelSpec]) -> Option<Resolved> {
        let ch = cx.step.notify.as_ref()?;
        if !channels.iter().any(|c| c.name == ch.value) {
            self.unknown_channel(ch);
        }
        let message = match &cx.step.message {
            Some(m) => self.render_for_notify(m, cx.target, true),
            None => {
                self.err(
                    Pos::of(&ch.referenced),
                    "a notify step needs a `message`",
                    "add `message: \"We are back after {{ run.elapsed }}.\"`",
                );
                String::new()
            }
        };
        Some(Resolved {
            name: format!("notify {}", ch.value),
            action: Action::Notify {
                channel: ch.value.clone(),
                message,
            },
            timeout: cx.timeout.unwrap_or(DEFAULT_NOTIFY_TIMEOUT),
            mutates: true,
        })
    }

    fn ups(&mut self, cx: &StepCx) -> Option<Resolved> {
        let spanned = cx.step.ups.as_ref()?;
        let u = &spanned.value;
        let name = self.render(&u.name, Context::Text, cx.target, false);
        if !name.contains("{{") && !nut::valid_name(&name) {
            self.err(
                Pos::of(&u.name.referenced),
                format!("`{name}` is not a NUT UPS name"),
                "write the name of the UPS as upsd knows it (letters, digits, `_`, `-`, `.`); `upsc -l HOST` lists them",
            );
        }
        let host = self.render(&u.host, Context::Text, cx.target, false);
        if host.trim().is_empty() || host.contains(char::is_whitespace) {
            self.err(
                Pos::of(&u.host.referenced),
                format!("`{host}` is not a host name"),
                "write the host that runs upsd, like `localhost` or `nut.internal`",
            );
        }
        let min_charge = u.min_charge.as_ref().map(|m| m.value);
        if let Some(m) = &u.min_charge
            && !(0.0..=100.0).contains(&m.value)
        {
            self.err(
                Pos::of(&m.referenced),
                format!("min_charge {} is not a percentage", m.value),
                "write the least battery charge to wait for, from 0 to 100, like `min_charge: 50`",
            );
        }
        let every = u.every.map(|d| d.0).unwrap_or(DEFAULT_UPS_EVERY);
        let timeout = u.timeout.map(|d| d.0).unwrap_or(DEFAULT_UPS_TIMEOUT);
        let stable_for = u.stable_for.0;
        if every.is_zero() || every > timeout {
            self.err(
                self.key_at(cx.pos, "ups", cx.pos),
                format!(
                    "ups reads every {} but gives up after {}",
                    fmt_duration(every),
                    fmt_duration(timeout)
                ),
                "`every` must be shorter than `timeout`, like { every: 5s, timeout: 30m }",
            );
        } else if stable_for >= timeout {
            self.err(
                self.key_at(cx.pos, "ups", cx.pos),
                format!(
                    "ups waits for {} on line but gives up after {}",
                    fmt_duration(stable_for),
                    fmt_duration(timeout)
                ),
                "make `timeout` longer than `stable_for`, like { stable_for: 1m, timeout: 30m }",
            );
        }
        // `host: nut.internal:3494` also works (a port written with the host, e.g. from a var
        // an overlay sets); an explicit `port:` wins.
        let (host, written_port) = match host.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.contains(':') => match p.parse::<u16>() {
                Ok(p) if p > 0 => (h.to_owned(), Some(p)),
                _ => (host, None),
            },
            _ => (host, None),
        };
        let ups = nut::Ups {
            name,
            host,
            port: u
                .port
                .map(|p| p.0)
                .or(written_port)
                .unwrap_or(nut::DEFAULT_PORT),
        };
        Some(Resolved {
            name: format!("mains stable on UPS {ups}"),
            action: Action::Ups(UpsWait {
                ups,
                want: nut::Stable {
                    stable_for,
                    min_charge,
                },
                every,
                timeout,
            }),
            timeout,
            mutates: false,
        })
    }

    fn power_on(&mut self, cx: &StepCx) -> Option<Resolved> {
        let spanned = cx.step.power_on.as_ref()?;
        let p = &spanned.value;
        let at = Pos::of(&spanned.referenced);
        let (name, power, timeout) = match (&p.wol, &p.ipmi) {
            (Some(_), Some(ipmi)) => {
                self.err(
                    Pos::of(&ipmi.referenced),
                    "`power_on` takes `wol` or `ipmi`, not both",
                    "keep the one this box has; a second way to power on is a second step",
                );
                return None;
            }
            (None, None) => {
                self.err(
                    at,
                    "`power_on` needs `wol: MAC` or `ipmi: HOST`",
                    "write `power_on: { wol: aa:bb:cc:dd:ee:ff }` or `power_on: { ipmi: bmc.local, user: admin, password: \"{{ env.IPMI_PASSWORD }}\" }`",
                );
                return None;
            }
            (Some(w), None) => {
                for (key, pos) in [("user", &p.user), ("password", &p.password)] {
                    if let Some(v) = pos {
                        self.err(
                            Pos::of(&v.referenced),
                            format!("`{key}` belongs to `ipmi`, not to `wol`"),
                            "Wake-on-LAN takes `wol`, `address` and `port`",
                        );
                    }
                }
                let text = self.render(w, Context::Text, cx.target, false);
                let mac = match text.parse::<wol::Mac>() {
                    Ok(mac) => mac,
                    Err(e) => {
                        self.err(
                            Pos::of(&w.referenced),
                            e.to_string(),
                            "the MAC is on the box's label or in `ip link` on it",
                        );
                        return None;
                    }
                };
                let address = match &p.address {
                    Some(a) => self.render(a, Context::Text, cx.target, false),
                    None => wol::DEFAULT_ADDRESS.to_string(),
                };
                let port = p.port.map_or(wol::DEFAULT_PORT, |p| p.0);
                (
                    format!("power on {mac} by Wake-on-LAN"),
                    PowerOn::Wol { mac, address, port },
                    DEFAULT_WOL_TIMEOUT,
                )
            }
            (None, Some(h)) => {
                if let Some(a) = &p.address {
                    self.err(
                        Pos::of(&a.referenced),
                        "`address` belongs to `wol`, not to `ipmi`",
                        "IPMI takes `ipmi` (the BMC's host), `user`, `password` and `port`",
                    );
                }
                let host = self.render(h, Context::Text, cx.target, false);
                let user = match &p.user {
                    Some(u) => self.render(u, Context::Text, cx.target, false),
                    None => {
                        self.err(
                            Pos::of(&h.referenced),
                            "`power_on: { ipmi: ... }` needs a `user`",
                            "add the BMC user, like `user: admin`",
                        );
                        String::new()
                    }
                };
                let password = match &p.password {
                    Some(pw) => self.render(pw, Context::Text, cx.target, false),
                    None => {
                        self.err(
                            Pos::of(&h.referenced),
                            "`power_on: { ipmi: ... }` needs a `password`",
                            "add `password: \"{{ env.IPMI_PASSWORD }}\"`: it reaches ipmitool through its environment, never its command line",
                        );
                        String::new()
                    }
                };
                let bmc = Bmc {
                    host,
                    port: p.port.map_or(ipmi::DEFAULT_PORT, |p| p.0),
                    user,
                };
                (
                    format!("power on {} by IPMI", bmc.host),
                    PowerOn::Ipmi {
                        on: bmc.command_line(ipmi::Action::On),
                        status: bmc.command_line(ipmi::Action::Status),
                        bmc,
                        password,
                    },
                    DEFAULT_IPMI_TIMEOUT,
                )
            }
        };
        Some(Resolved {
            name,
            action: Action::PowerOn(power),
            timeout: cx.timeout.unwrap_or(timeout),
            mutates: true,
        })
    }
}
