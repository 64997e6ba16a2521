//! Running one step: the kinds, retries and verdicts.

use std::time::{Duration, Instant};

use super::{Answer, Engine, Event, Mode, StepOutcome, StepResult, truncate};
use crate::plan::{Action, Command, Otherwise, PowerOn, Rehearse, Step, fmt_duration};
use crate::runbook::model::{OnFail, Unattended};
use crate::target::{ExecError, Finished, local};
use crate::verdict::{Verdict, judge, judge_http};

impl Engine<'_> {
    /// Run a step and emit its start and end.
    pub(crate) async fn step(&mut self, phase: usize, s: &Step) -> StepResult {
        let target = self
            .plan
            .targets
            .get(s.target)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let started = Instant::now();
        self.out.emit(Event::StepStarted {
            step: s.number,
            phase,
            name: s.name.clone(),
            kind: s.action.kind(),
            target,
            mutates: s.mutates,
            command: describe(s),
            timeout: s.timeout.as_secs_f64(),
            at: self.at(),
        });
        let rehearse = if self.settings.mode == Mode::Rehearse {
            &s.rehearse
        } else {
            &Rehearse::Run
        };
        let refused = match &s.sudo_check {
            Some(check) if self.settings.mode == Mode::Rehearse => {
                self.rehearse_sudo(s, check).await
            }
            _ => None,
        };
        let mut res = match (refused, rehearse, &s.action) {
            (Some(refused), _, _) => refused,
            (None, Rehearse::Run, _) => self.execute(s).await,
            (None, Rehearse::InspectUnit(inspect), Action::Start { unit, health, .. }) => {
                self.rehearse_start(s, unit, inspect, health.as_deref())
                    .await
            }
            (None, Rehearse::CheckPaths(check), Action::Run(c)) => {
                self.rehearse_paths(s, c, check).await
            }
            // The reason is what would run: the reporters say "would run:" before it.
            _ => StepResult::with(
                StepOutcome::WouldRun,
                describe(s).unwrap_or_else(|| s.name.clone()),
            ),
        };
        if self.cancelled() && res.outcome != StepOutcome::Passed {
            res.outcome = StepOutcome::Interrupted;
            let stop = self
                .settings
                .stop
                .get()
                .unwrap_or(crate::signals::Stop::Interrupt);
            res.reason = Some(stop.step_reason().into());
        }
        if self.settings.mode == Mode::Rehearse
            && matches!(res.outcome, StepOutcome::Failed | StepOutcome::Aborted)
        {
            self.rehearsal_problems += 1;
            res.outcome = StepOutcome::FailedContinued;
        } else if res.outcome == StepOutcome::Failed {
            match s.on_fail {
                OnFail::Stop => {}
                // A box that went away did not fail the check: the run says how to go on
                // (and starts again by itself when it sees the box rebooted).
                OnFail::Abort if res.connection_lost || self.reboot_pending() => {}
                OnFail::Abort => res.outcome = StepOutcome::Aborted,
                OnFail::Continue => res.outcome = StepOutcome::FailedContinued,
            }
        }
        self.out.emit(Event::StepFinished {
            step: s.number,
            phase,
            name: s.name.clone(),
            outcome: res.outcome,
            exit: res.exit,
            duration: started.elapsed().as_secs_f64(),
            at: self.at(),
            reason: res.reason.clone(),
            stdout: res.stdout.as_deref().and_then(truncate),
            stderr: res.stderr.as_deref().and_then(truncate),
            waited: res.waited,
        });
        self.failure.step_ended(s.number, &res);
        res
    }

    async fn execute(&mut self, s: &Step) -> StepResult {
        match &s.action {
            Action::Manual {
                text,
                pass,
                unattended,
            } => {
                let text = match pass {
                    Some(p) => format!("{}\nDone when: {}", text.trim_end(), p.trim()),
                    None => text.clone(),
                };
                self.manual(s, &text, *unattended).await
            }
            Action::Run(c) | Action::DropCaches(c) => {
                let c = c.clone();
                self.with_retry(s, |e| Box::pin(e.remote(s, &c))).await
            }
            Action::Local(c) => {
                let c = c.clone();
                self.with_retry(s, |e| Box::pin(e.local(s, &c))).await
            }
            Action::WaitSsh {
                every,
                timeout,
                otherwise,
            } => {
                let first = self.wait_ssh(s, *every, *timeout).await;
                match otherwise {
                    Some(o) if first.outcome == StepOutcome::Aborted && !self.cancelled() => {
                        self.ask_then_wait(s, *every, *timeout, o, first).await
                    }
                    _ => first,
                }
            }
            Action::PreviousBoot {
                command,
                on_unclean,
            } => self.previous_boot(s, command, *on_unclean).await,
            Action::Start {
                unit,
                start,
                status,
                health,
                journal,
                ..
            } => {
                self.start(s, unit, (start, status, journal), health.as_deref())
                    .await
            }
            Action::Http(req) => {
                let req = req.clone();
                self.with_retry(s, |e| {
                    let req = req.clone();
                    Box::pin(async move {
                        let r = e.send(&req, s.target).await;
                        match r.status {
                            Some(code) => {
                                let v = judge_http(code, &r.body, Some(&req.expect));
                                let mut res = verdict_result(v);
                                res.stdout = Some(r.body);
                                res
                            }
                            None => StepResult::with(
                                StepOutcome::Failed,
                                r.error.unwrap_or_else(|| "no answer".into()),
                            ),
                        }
                    })
                })
                .await
            }
            Action::Notify { channel, message } => {
                let text = message
                    .replace(
                        "{{ run.elapsed }}",
                        &fmt_duration(Duration::from_secs(self.elapsed().as_secs())),
                    )
                    .replace("{{ run.events }}", &self.out.events());
                if self.notify(channel, &text, s.timeout).await {
                    StepResult::passed()
                } else {
                    StepResult::with(
                        StepOutcome::FailedContinued,
                        format!("the post to `{channel}` failed; the recovery goes on"),
                    )
                }
            }
            Action::Ups(w) => self.ups(s, w).await,
            Action::PowerOn(p) => self.power_on(s, p).await,
        }
    }

    /// The wait timed out: ask a person (posted to the channel, and asked on the terminal when
    /// there is one), then wait again. Unattended, the post is the ask.
    async fn ask_then_wait(
        &mut self,
        s: &Step,
        every: Duration,
        first: Duration,
        o: &Otherwise,
        timed_out: StepResult,
    ) -> StepResult {
        self.out.emit(Event::StepProgress {
            step: s.number,
            line: format!(
                "no SSH after {}: asking a person: {}",
                fmt_duration(first),
                super::first_line(&o.text)
            ),
        });
        let posted = match &o.channel {
            Some(ch) => {
                let text = format!("{}: {}", s.name, o.text.trim_end());
                self.notify(ch, &text, crate::plan::DEFAULT_NOTIFY_TIMEOUT)
                    .await
            }
            None => false,
        };
        if self.settings.confirm.is_unattended() {
            // Nobody to prompt: the post was the ask; wait again for whoever reads it.
            self.out.emit(Event::StepProgress {
                step: s.number,
                line: format!(
                    "unattended: {}; waiting {} more without asking anyone here",
                    match (&o.channel, posted) {
                        (Some(ch), true) => format!("the ask was posted to {ch}"),
                        (Some(ch), false) => format!("the ask could not be posted to {ch}"),
                        (None, _) => "no channel to post the ask to".to_owned(),
                    },
                    fmt_duration(o.timeout)
                ),
            });
        } else {
            let asked = self.manual(s, &o.text, None).await;
            if matches!(
                asked.outcome,
                StepOutcome::Aborted | StepOutcome::Interrupted
            ) {
                return asked;
            }
        }
        let asked = if self.settings.confirm.is_unattended() {
            "the ask was posted (unattended: nobody prompted)"
        } else {
            "a person was asked"
        };
        let mut res = self.wait_ssh(s, every, o.timeout).await;
        let reason = res.reason.take().unwrap_or_default();
        res.reason = Some(match res.outcome {
            StepOutcome::Aborted => format!(
                "{}; then no SSH {} after asking a person",
                timed_out.reason.unwrap_or_default(),
                fmt_duration(o.timeout)
            ),
            StepOutcome::Passed => format!(
                "no SSH within {}, so {asked}; then {reason}",
                fmt_duration(first)
            ),
            _ => reason,
        });
        res
    }

    async fn manual(&mut self, s: &Step, text: &str, unattended: Option<Unattended>) -> StepResult {
        if self.settings.confirm.is_unattended() {
            return self.nobody_to_confirm(s, text, unattended).await;
        }
        let prompt = match &mut self.settings.confirm {
            super::Confirm::Yes => {
                return StepResult::with(StepOutcome::Passed, "confirmed with --yes");
            }
            super::Confirm::Unattended => {
                return StepResult::with(StepOutcome::Failed, "nobody to confirm");
            }
            super::Confirm::Refuse => {
                return StepResult::with(
                    StepOutcome::Failed,
                    "a manual step needs a terminal to ask, or --yes",
                );
            }
            super::Confirm::Ask(prompt) => prompt,
        };
        match prompt(&s.name, text) {
            Answer::Done => StepResult::with(StepOutcome::Passed, "confirmed by the operator"),
            Answer::Skip => StepResult::with(StepOutcome::Skipped, "skipped by the operator"),
            Answer::Abort => StepResult::with(StepOutcome::Aborted, "the operator chose to abort"),
        }
    }

    /// An unattended run at a manual step: nobody is asked. `skip` goes on, the journal saying
    /// that nobody confirmed the step, and the failure post at the end of the run; `abort`
    /// stops the run here.
    async fn nobody_to_confirm(
        &mut self,
        s: &Step,
        text: &str,
        unattended: Option<Unattended>,
    ) -> StepResult {
        match unattended {
            Some(Unattended::Skip) => {
                let reason = "not done: nobody confirmed it (unattended run, `unattended: skip`)";
                self.out.emit(Event::Warning {
                    step: Some(s.number),
                    message: format!(
                        "step {} ({}) was skipped: nobody confirmed it (unattended run). Check by hand: {}",
                        s.number,
                        s.name,
                        super::first_line(text)
                    ),
                });
                self.failure.unconfirmed(s, text);
                StepResult::with(StepOutcome::Skipped, reason)
            }
            Some(Unattended::Abort) => StepResult::with(
                StepOutcome::Aborted,
                "unattended run: nobody to confirm this manual step (`unattended: abort`)",
            ),
            None => StepResult::with(
                StepOutcome::Failed,
                "a manual step without `unattended:` cannot run unattended",
            ),
        }
    }

    /// Repeat an attempt per the step's `retry` until it passes, aborts, or time runs out.
    async fn with_retry<'s, F>(&'s self, s: &'s Step, mut attempt: F) -> StepResult
    where
        F: FnMut(&'s Self) -> std::pin::Pin<Box<dyn std::future::Future<Output = StepResult> + 's>>,
    {
        let started = Instant::now();
        let mut n = 0u32;
        loop {
            n += 1;
            let before = started.elapsed();
            let mut res = attempt(self).await;
            if n > 1 {
                res.waited = Some(before.as_secs_f64());
            }
            if res.outcome != StepOutcome::Failed || self.cancelled() || self.reboot_pending() {
                return res;
            }
            let Some(r) = s.retry else { return res };
            if started.elapsed() + r.every >= r.timeout {
                let mut res = res;
                res.reason = Some(format!(
                    "{} (after {n} attempts over {})",
                    res.reason.unwrap_or_default(),
                    fmt_duration(Duration::from_secs(started.elapsed().as_secs()))
                ));
                return res;
            }
            self.out.emit(Event::StepProgress {
                step: s.number,
                line: format!(
                    "attempt {n} failed: {}; next in {}",
                    super::first_line(res.reason.as_deref().unwrap_or("")),
                    fmt_duration(r.every)
                ),
            });
            let mut cancel = self.cancel.clone();
            tokio::select! {
                _ = tokio::time::sleep(r.every) => {}
                _ = cancel.wait_for(|c| *c) => return res,
            }
        }
    }

    pub(crate) async fn remote(&self, s: &Step, c: &Command) -> StepResult {
        let out = self.exec_remote(s, c, s.timeout).await;
        let mut res = match out {
            Ok(f) => finished_result(s, &f),
            Err(ExecError::Interrupted) => {
                StepResult::with(StepOutcome::Interrupted, "interrupted")
            }
            Err(e @ (ExecError::Connect { .. } | ExecError::Lost { .. })) => {
                let mut res = StepResult::with(StepOutcome::Failed, e.to_string());
                res.connection_lost = true;
                res
            }
            Err(e) => StepResult::with(StepOutcome::Failed, e.to_string()),
        };
        if matches!(s.action, Action::DropCaches(_)) && res.outcome == StepOutcome::Passed {
            match cache_sizes(res.stdout.as_deref().unwrap_or("")) {
                Some((before, after)) => {
                    res.reason = Some(format!(
                        "page cache dropped: {} MB before, {} MB after",
                        before / 1024,
                        after / 1024
                    ));
                }
                None => {
                    res.outcome = StepOutcome::Failed;
                    res.reason = Some("could not verify the page cache was dropped (no `Cached:` lines before and after)".into());
                }
            }
        }
        res
    }

    pub(crate) async fn exec_remote(
        &self,
        s: &Step,
        c: &Command,
        timeout: Duration,
    ) -> Result<Finished, ExecError> {
        let Some(t) = self.targets.get(s.target) else {
            return Err(ExecError::Spawn("no such target".into()));
        };
        let mut cancel = self.cancel.clone();
        let out = self.out.clone();
        let number = s.number;
        let seen = self.failure.seen(number);
        let mut progress = move |line: String| {
            seen.push(&line);
            out.emit(Event::StepProgress { step: number, line })
        };
        let exec = t.exec(
            &c.wire,
            c.stdin.as_deref(),
            c.kill.as_deref(),
            timeout,
            &mut cancel,
            &mut progress,
        );
        tokio::pin!(exec);
        // Report a lost connection (and the reconnect) as it happens, not after the step.
        let mut notes = tokio::time::interval(Duration::from_millis(250));
        let r = loop {
            tokio::select! {
                r = &mut exec => break r,
                _ = notes.tick() => self.drain_notes(),
            }
        };
        self.drain_notes();
        r
    }

    async fn local(&self, s: &Step, c: &Command) -> StepResult {
        let mut cancel = self.cancel.clone();
        let out = self.out.clone();
        let number = s.number;
        let seen = self.failure.seen(number);
        let mut progress = move |line: String| {
            seen.push(&line);
            out.emit(Event::StepProgress { step: number, line })
        };
        let run = match &c.stdin {
            Some(text) => local::run(
                crate::plan::wire::STDIN_PROGRAM,
                Some(text),
                s.timeout,
                &mut cancel,
                &mut progress,
            ),
            None => local::run(&c.script, None, s.timeout, &mut cancel, &mut progress),
        };
        match run.await {
            Ok(f) => finished_result(s, &f),
            Err(ExecError::Interrupted) => {
                StepResult::with(StepOutcome::Interrupted, "interrupted")
            }
            Err(e) => StepResult::with(StepOutcome::Failed, e.to_string()),
        }
    }

    async fn wait_ssh(&self, s: &Step, every: Duration, timeout: Duration) -> StepResult {
        let Some(t) = self.targets.get(s.target) else {
            return StepResult::with(StepOutcome::Failed, "no such target");
        };
        let started = Instant::now();
        let mut n = 0;
        let mut last = String::new();
        while started.elapsed() < timeout {
            n += 1;
            let tick = Instant::now();
            let left = timeout.saturating_sub(started.elapsed());
            let mut cancel = self.cancel.clone();
            let attempt = t.connect(
                every
                    .min(crate::target::ssh::CONNECT_TIMEOUT)
                    .min(left)
                    .max(Duration::from_secs(1)),
            );
            let r = tokio::select! {
                r = attempt => r,
                _ = cancel.wait_for(|c| *c) => return StepResult::with(StepOutcome::Interrupted, "interrupted"),
            };
            self.drain_notes();
            match r {
                Ok(boot_id) => {
                    let mut res = StepResult::with(
                        StepOutcome::Passed,
                        format!("SSH answered after {n} attempt(s); boot id {boot_id}"),
                    );
                    res.stdout = Some(boot_id);
                    return res;
                }
                Err(ExecError::Connect { reason, .. }) if reason.contains("host key") => {
                    return StepResult::with(StepOutcome::Failed, reason);
                }
                Err(e) => last = e.to_string(),
            }
            self.out.emit(Event::StepProgress {
                step: s.number,
                line: format!("attempt {n}: {}", super::first_line(&last)),
            });
            let next = every
                .saturating_sub(tick.elapsed())
                .min(timeout.saturating_sub(started.elapsed()));
            let mut cancel = self.cancel.clone();
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = cancel.wait_for(|c| *c) => return StepResult::with(StepOutcome::Interrupted, "interrupted"),
            }
        }
        StepResult::with(
            StepOutcome::Aborted,
            format!(
                "no SSH after {} ({n} attempts); last error: {last}",
                fmt_duration(timeout)
            ),
        )
    }
}

impl Engine<'_> {
    /// Rehearsal: whether the target's sudoers still permits each command the step runs with
    /// sudo (`sudo -n -l`, which runs nothing). A failure names each one it does not.
    async fn rehearse_sudo(&self, s: &Step, check: &Command) -> Option<StepResult> {
        let f = match self.exec_remote(s, check, Duration::from_secs(10)).await {
            Ok(f) => f,
            Err(e) => return Some(StepResult::with(StepOutcome::Failed, e.to_string())),
        };
        if f.output.exit != Some(0) {
            return Some(StepResult::with(
                StepOutcome::Failed,
                format!(
                    "could not ask sudo what it permits: {}",
                    super::first_line(&f.output.stderr)
                ),
            ));
        }
        let refused: Vec<&str> = f.output.stdout.lines().filter(|l| !l.is_empty()).collect();
        if refused.is_empty() {
            return None;
        }
        Some(StepResult::with(
            StepOutcome::Failed,
            format!(
                "the target's sudoers no longer permits {} of this step's sudo commands: {}; generate the drop-in again (recover sudoers RUNBOOK) and install it",
                refused.len(),
                refused.join(", ")
            ),
        ))
    }

    /// Rehearsal of a state-changing `run`: not run, but the devices it names must exist on
    /// the target (an error), and other absolute paths it names should (a warning: the step
    /// may create them).
    async fn rehearse_paths(&self, s: &Step, c: &Command, check: &Command) -> StepResult {
        let would = sent(c);
        let missing: Vec<String> = match self.exec_remote(s, check, Duration::from_secs(10)).await {
            Ok(f) if f.output.exit == Some(0) => {
                f.output.stdout.lines().map(str::to_owned).collect()
            }
            Ok(f) => {
                return StepResult::with(
                    StepOutcome::Failed,
                    format!(
                        "could not check the paths it uses: {}",
                        super::first_line(&f.output.stderr)
                    ),
                );
            }
            Err(e) => return StepResult::with(StepOutcome::Failed, e.to_string()),
        };
        let (devices, others): (Vec<String>, Vec<String>) =
            missing.into_iter().partition(|p| p.starts_with("/dev/"));
        for p in &others {
            self.out.emit(Event::Warning {
                step: Some(s.number),
                message: format!("{p} does not exist on the target (unless this step creates it)"),
            });
        }
        if !devices.is_empty() {
            return StepResult::with(
                StepOutcome::Failed,
                format!(
                    "{} missing on the target: the runbook names a device that is not there",
                    devices.join(", ")
                ),
            );
        }
        StepResult::with(StepOutcome::WouldRun, would)
    }
}

/// A verdict as a step result.
pub(crate) fn verdict_result(v: Verdict) -> StepResult {
    match v {
        Verdict::Pass => StepResult::passed(),
        Verdict::Fail(r) => StepResult::with(StepOutcome::Failed, r),
        Verdict::Abort(r) => StepResult::with(StepOutcome::Aborted, r),
    }
}

fn finished_result(s: &Step, f: &Finished) -> StepResult {
    let mut res = verdict_result(judge(&f.output, s.expect.as_ref(), s.abort_if.as_ref()));
    res.exit = f.output.exit;
    res.stdout = Some(f.output.stdout.clone());
    res.stderr = Some(f.output.stderr.clone());
    if res.outcome == StepOutcome::Failed
        && f.output.stderr.contains("sudo: a password is required")
    {
        res.reason = Some(format!(
            "{}; sudo asked for a password: give the user passwordless sudo for this command (NOPASSWD in sudoers)",
            res.reason.unwrap_or_default()
        ));
    }
    res
}

/// `Cached:` in kB before and after, from the drop_caches command's output.
pub(crate) fn cache_sizes(out: &str) -> Option<(u64, u64)> {
    let v: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("Cached:"))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    match v.as_slice() {
        [b, a] => Some((*b, *a)),
        _ => None,
    }
}

/// The exact command or request a step sends, for the display and the journal.
pub fn describe(s: &Step) -> Option<String> {
    Some(match &s.action {
        Action::Manual { text, .. } => format!("ask the operator: {}", super::first_line(text)),
        Action::Run(c) | Action::DropCaches(c) => sent(c),
        Action::PreviousBoot { command, .. } => sent(command),
        Action::Local(c) => sent(c),
        Action::WaitSsh { .. } => crate::plan::BOOT_ID_COMMAND.to_owned(),
        Action::Start { start, .. } => sent(start),
        Action::Http(r) => r.curl(),
        Action::Notify { channel, message } => {
            format!("post to {channel}: {}", super::first_line(message))
        }
        Action::Ups(w) => format!(
            "GET VAR {} ups.status, battery.charge from upsd at {}:{}",
            w.ups.name, w.ups.host, w.ups.port
        ),
        Action::PowerOn(PowerOn::Wol { mac, address, port }) => {
            format!("send the Wake-on-LAN magic packet for {mac} to {address}:{port} (UDP)")
        }
        Action::PowerOn(PowerOn::Ipmi { on, .. }) => on.clone(),
    })
}

/// The line sent; with sudo, it travels encoded, so what it runs as root follows it; a
/// command that holds a secret travels on stdin, and follows it too.
fn sent(c: &Command) -> String {
    if let Some(stdin) = &c.stdin {
        return format!("{} (the command, on its stdin: {stdin})", c.wire);
    }
    if !c.sudo {
        return c.wire.clone();
    }
    let mut lines = c.script.lines();
    let first = lines.next().unwrap_or("");
    let more = if lines.next().is_some() { " ..." } else { "" };
    format!("{} (as root: {first}{more})", c.wire)
}

#[cfg(test)]
mod tests {
    use super::cache_sizes;

    #[test]
    fn cache_sizes_reads_before_and_after() {
        let out = "Cached:          1048576 kB\nCached:            20480 kB\n";
        assert_eq!(cache_sizes(out), Some((1_048_576, 20_480)));
        assert_eq!(cache_sizes("Cached: 5 kB\n"), None);
        assert_eq!(cache_sizes(""), None);
    }
}
