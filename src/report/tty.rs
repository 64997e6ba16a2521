//! The terminal view: finished steps scroll above three live lines that tick by themselves:
//!
//! ```text
//!   ✓ 10 start prometheus-node-exporter.service  4.1s
//! ⠙ 11 start vllm-qwen36.service  1m02s of 9m  › probe: HTTP 503
//! Phase 3/4 Start services in dependency order  window 10m-20m ▕███░░░░░░░░░▏ 3m12s in, 6m48s left
//! [12:34 / 30:00] ████████████████████░░░░░░░░░░░░░░░░░░░░░ 42%  17m26s left
//! ```
//!
//! Every state is said in words and signs (`✓ ✗ ⊘ → !`, `OVERRAN`), never by colour alone.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use console::{Style, measure_text_width};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::fmt::{
    self, clean, clock, duration, fit, fit_pair, one_line, reflow, span, tail, window, wrap,
};
use super::{Summary, Suspender};
use crate::engine::event::{Event, Mode, RunOutcome, Sink, StepOutcome};

const TICK: Duration = Duration::from_millis(200);
const SPINNER: &[&str] = &["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", "·"];
/// How many lines of a failed step's output are shown under it.
const OUTPUT_TAIL: usize = 5;
/// Indentation of the lines under a finished step.
const UNDER: &str = "      ";

pub struct Tty {
    multi: MultiProgress,
    step: ProgressBar,
    phase: ProgressBar,
    timeline: ProgressBar,
    clock: Live,
    summary: Summary,
    budget: f64,
    phases: usize,
    current_phase: Option<PhaseView>,
    commands: HashMap<usize, String>,
    finished: bool,
}

/// What the live lines read at each tick: the run's timeline position, which moves between
/// events, and the terminal's width.
#[derive(Clone)]
struct Live {
    base: Instant,
    /// f64 bits: the timeline position at `base`.
    offset: Arc<AtomicU64>,
    width: fn() -> usize,
}

impl Live {
    fn new(width: fn() -> usize) -> Self {
        Live {
            base: Instant::now(),
            offset: Arc::new(AtomicU64::new(0f64.to_bits())),
            width,
        }
    }

    fn now(&self) -> f64 {
        f64::from_bits(self.offset.load(Ordering::Relaxed)) + self.base.elapsed().as_secs_f64()
    }

    fn set(&self, at: f64) {
        let offset = at - self.base.elapsed().as_secs_f64();
        self.offset.store(offset.to_bits(), Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
struct PhaseView {
    phase: usize,
    name: String,
    window_start: f64,
    window_end: f64,
    started: f64,
    overran: bool,
}

#[derive(Debug, Clone)]
struct StepView {
    step: usize,
    name: String,
    timeout: f64,
    started: f64,
}

/// The usable width of stderr: one column is left free so a full line never wraps.
fn term_width() -> usize {
    console::Term::stderr()
        .size_checked()
        .map(|(_, w)| w as usize)
        .unwrap_or(80)
        .saturating_sub(1)
        .max(20)
}

fn st() -> Style {
    Style::new().for_stderr()
}

/// `true` when `NO_COLOR` is set to something (https://no-color.org: set but empty does not
/// count). The one reading of it: the live view and the diagnostics agree.
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// A bar style whose one line is drawn by `line(timeline_now, width)` at every tick.
fn line_style(
    clock: &Live,
    spinner: bool,
    line: impl Fn(f64, usize) -> String + Send + Sync + Clone + 'static,
) -> ProgressStyle {
    let template = if spinner {
        "{spinner} {line}{wide_msg}"
    } else {
        "{line}"
    };
    let room = if spinner { 2 } else { 0 };
    let clock = clock.clone();
    ProgressStyle::with_template(template)
        .expect("a fixed, valid template")
        .tick_strings(SPINNER)
        .with_key(
            "line",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&line(clock.now(), (clock.width)().saturating_sub(room)));
            },
        )
}

/// `[12:34 / 30:00] ██████████░░░░░░ 42%  17m26s left`
fn timeline_line(now: f64, budget: f64, width: usize) -> String {
    if budget <= 0.0 {
        return fit(&format!("[{}]", clock(now)), width);
    }
    let head = format!("[{} / {}] ", clock(now), clock(budget));
    let frac = now / budget;
    let pct = format!(" {:>3}%", (frac * 100.0).floor() as u64);
    let left = budget - now;
    let tail = if left >= 0.0 {
        format!("  {} left", fmt::left(budget, now))
    } else {
        format!(
            "  {}",
            st().red()
                .bold()
                .apply_to(format!("OVER BUDGET by {}", duration(-left)))
        )
    };
    let room = width.saturating_sub(head.len() + pct.len() + measure_text_width(&tail));
    let bar = bar(frac, room.clamp(10, 50));
    fit(&format!("{head}{bar}{pct}{tail}"), width)
}

/// `█████░░░░░`, `cells` wide.
fn bar(frac: f64, cells: usize) -> String {
    let frac = if frac.is_finite() {
        frac.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let full = ((frac * cells as f64).round() as usize).min(cells);
    format!("{}{}", "█".repeat(full), "░".repeat(cells - full))
}

/// `Phase 3/4 Start services  window 10m-20m ▕███░░░░░░░░░▏ 3m12s in, 6m48s left`, or once the
/// window has closed `! Phase 3/4 Start services  OVERRAN window 10m-20m by 1m02s, 11m02s in`.
fn phase_line(p: &PhaseView, phases: usize, now: f64, width: usize) -> String {
    let head = format!("Phase {}/{} {}", p.phase, phases, p.name);
    let since = duration(now - p.started);
    let win = window(p.window_start, p.window_end);
    if p.overran || now > p.window_end {
        let right = format!(
            "OVERRAN window {win} by {}, {since} in",
            duration(now - p.window_end)
        );
        let line = fit_pair(&format!("! {head}"), &right, width);
        return st().yellow().bold().apply_to(line).to_string();
    }
    let span = p.window_end - p.window_start;
    let frac = if span > 0.0 {
        (now - p.window_start) / span
    } else {
        1.0
    };
    let right = format!(
        "window {win} ▕{}▏ {since} in, {} left",
        bar(frac, 12),
        fmt::left(p.window_end, now)
    );
    fit_pair(&head, &right, width)
}

/// `11 start vllm-qwen36.service  1m02s of 9m`, for the spinner line.
fn step_line(s: &StepView, now: f64, width: usize) -> String {
    let right = if s.timeout > 0.0 {
        format!("{} of {}", duration(now - s.started), span(s.timeout))
    } else {
        duration(now - s.started)
    };
    // leave the right part of the line for the step's latest output
    let room = (width * 3 / 5).max(measure_text_width(&right) + 12);
    fit_pair(&format!("{} {}", s.step, s.name), &right, room.min(width))
}

impl Default for Tty {
    fn default() -> Self {
        Self::new()
    }
}

impl Tty {
    /// Draws on stderr. Honours `NO_COLOR`.
    pub fn new() -> Self {
        Self::with_draw_target(ProgressDrawTarget::stderr())
    }

    /// Draws on `target`: `ProgressDrawTarget::hidden()` in tests.
    pub fn with_draw_target(target: ProgressDrawTarget) -> Self {
        Self::build(target, term_width)
    }

    fn build(target: ProgressDrawTarget, width: fn() -> usize) -> Self {
        if no_color() {
            console::set_colors_enabled_stderr(false);
        }
        let multi = MultiProgress::with_draw_target(target);
        let clock = Live::new(width);
        let step = multi.add(ProgressBar::new_spinner());
        let phase = multi.add(ProgressBar::new_spinner());
        let timeline = multi.add(ProgressBar::new_spinner());
        let tty = Tty {
            multi,
            step,
            phase,
            timeline,
            clock,
            summary: Summary::new(),
            budget: 0.0,
            phases: 0,
            current_phase: None,
            commands: HashMap::new(),
            finished: false,
        };
        tty.idle("starting");
        tty.phase
            .set_style(line_style(&tty.clock, false, |_, _| String::new()));
        tty.restyle_timeline();
        for b in [&tty.step, &tty.phase, &tty.timeline] {
            b.enable_steady_tick(TICK);
        }
        tty
    }

    /// Hide the live lines, run `f` (a prompt for a manual step), then draw them again.
    /// Do not emit events from inside `f`.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.multi.suspend(f)
    }

    /// A handle that can [`suspend`](Self::suspend) from wherever the prompt is asked.
    pub fn suspender(&self) -> Suspender {
        Suspender::new(Some(self.multi.clone()))
    }

    fn width(&self) -> usize {
        (self.clock.width)()
    }

    fn print(&self, line: impl AsRef<str>) {
        // nothing useful can be done if the terminal is gone
        let _ = self.multi.println(line);
    }

    fn idle(&self, what: &str) {
        let what = st().dim().apply_to(what.to_owned()).to_string();
        self.step
            .set_style(line_style(&self.clock, true, move |_, w| fit(&what, w)));
        self.step.set_message("");
    }

    fn restyle_timeline(&self) {
        let budget = self.budget;
        self.timeline
            .set_style(line_style(&self.clock, false, move |now, w| {
                timeline_line(now, budget, w)
            }));
    }

    fn restyle_phase(&self) {
        let Some(p) = self.current_phase.clone() else {
            return;
        };
        let phases = self.phases;
        self.phase
            .set_style(line_style(&self.clock, false, move |now, w| {
                phase_line(&p, phases, now, w)
            }));
    }

    fn step_finished(&self, event: &Event) {
        let Event::StepFinished {
            step,
            name,
            outcome,
            exit,
            duration: took,
            reason,
            stdout,
            stderr,
            ..
        } = event
        else {
            return;
        };
        let (step, outcome, exit, took) = (*step, *outcome, *exit, *took);
        let reason = reason.as_deref();
        let output = [stderr.as_deref(), stdout.as_deref()];
        let width = self.width();
        let label = format!("{step} {}", one_line(name));
        let (glyph, right) = match outcome {
            StepOutcome::Passed => (st().green().apply_to("✓"), duration(took)),
            StepOutcome::Skipped => (st().dim().apply_to("⊘"), "skipped".into()),
            StepOutcome::WouldRun => (st().cyan().apply_to("→"), "would run".into()),
            StepOutcome::Interrupted => (
                st().yellow().bold().apply_to("■"),
                format!("{}  interrupted", duration(took)),
            ),
            o => {
                let exit = exit.map(|e| format!(" (exit {e})")).unwrap_or_default();
                (
                    st().red().bold().apply_to("✗"),
                    format!(
                        "{}  {}{exit}",
                        duration(took),
                        st().red().bold().apply_to(o.word())
                    ),
                )
            }
        };
        self.print(fit_pair(&format!("  {glyph} {label}"), &right, width));

        let mut under = Vec::new();
        match outcome {
            StepOutcome::WouldRun => {
                if let Some(what) = reason.or(self.commands.get(&step).map(String::as_str)) {
                    let line = format!("would run: {}", one_line(what));
                    under.extend(wrap(&line, width - UNDER.len()));
                }
            }
            StepOutcome::Skipped => {
                if let Some(r) = reason {
                    under.extend(
                        wrap(&clean(r), width - UNDER.len())
                            .into_iter()
                            .map(|l| st().dim().apply_to(l).to_string()),
                    );
                }
            }
            _ => {
                if let Some(r) = reason {
                    under.extend(wrap(clean(r).trim_end(), width - UNDER.len()));
                }
                if matches!(
                    outcome,
                    StepOutcome::Failed | StepOutcome::FailedContinued | StepOutcome::Aborted
                ) {
                    for out in output.into_iter().flatten() {
                        for l in tail(out, OUTPUT_TAIL) {
                            let l = fit(&format!("│ {l}"), width - UNDER.len());
                            under.push(st().dim().apply_to(l).to_string());
                        }
                    }
                }
            }
        }
        for l in under {
            self.print(format!("{UNDER}{l}"));
        }
    }

    fn abort_box(&self, step: usize, reason: &str, step_message: Option<&str>, message: &str) {
        let width = self.width().min(100);
        let inner = width.saturating_sub(4);
        let red = st().red().bold();
        let title = format!(" ABORT at step {step}: follow this procedure now ");
        let rule = width.saturating_sub(measure_text_width(&title) + 3);
        let mut lines = vec![
            String::new(),
            red.apply_to(format!("┏━{title}{}", "━".repeat(rule)))
                .to_string(),
        ];
        let mut body: Vec<String> = Vec::new();
        body.extend(wrap(&format!("Why: {}", clean(reason).trim()), inner));
        if let Some(m) = step_message {
            body.push(String::new());
            body.extend(reflow(clean(m).trim_end(), inner));
        }
        body.push(String::new());
        body.extend(reflow(clean(message).trim_end(), inner));
        for l in body {
            lines.push(format!("{} {l}", red.apply_to("┃")));
        }
        lines.push(
            red.apply_to(format!("┗{}", "━".repeat(width - 1)))
                .to_string(),
        );
        for l in lines {
            self.print(l);
        }
    }

    fn run_finished(
        &mut self,
        outcome: RunOutcome,
        exit_code: i32,
        message: &str,
        resume: Option<&str>,
    ) {
        self.print("");
        let width = self.width();
        for l in self.summary.render_within(width).lines() {
            self.print(l);
        }
        self.print("");
        let (glyph, word, style) = match outcome {
            RunOutcome::Success => ("✓", "DONE", st().green().bold()),
            RunOutcome::Failed => ("✗", "FAILED", st().red().bold()),
            RunOutcome::Aborted => ("✗", "ABORTED", st().red().bold()),
            RunOutcome::Interrupted => ("■", "INTERRUPTED", st().yellow().bold()),
        };
        let text = format!(
            "{glyph} {word} (exit {exit_code}): {}",
            clean(message).trim()
        );
        for (i, l) in wrap(&text, width - 2).into_iter().enumerate() {
            let indent = if i == 0 { "" } else { "  " };
            self.print(style.apply_to(format!("{indent}{l}")).to_string());
        }
        if let Some(r) = resume {
            self.print(format!(
                "  Resume with:  {}",
                st().bold().apply_to(one_line(r))
            ));
        }
        for b in [&self.step, &self.phase, &self.timeline] {
            b.finish_and_clear();
        }
        self.finished = true;
    }
}

impl Sink for Tty {
    fn emit(&mut self, event: &Event) {
        if self.finished {
            return;
        }
        self.summary.emit(event);
        if let Some(at) = event.at() {
            self.clock.set(at);
        }
        match event {
            Event::RunStarted {
                run_id,
                mode,
                runbook,
                path,
                budget,
                steps,
                phases,
                resumed_from,
                first_step,
                targets,
                started_by,
                ..
            } => {
                self.budget = *budget;
                self.phases = *phases;
                self.restyle_timeline();
                let width = self.width();
                let verb = match mode {
                    Mode::Run => "run",
                    Mode::Rehearse => "rehearse",
                    Mode::Drill => "drill",
                };
                self.print(fit(
                    &st()
                        .bold()
                        .apply_to(format!("recover {verb} {runbook}  ({path})"))
                        .to_string(),
                    width,
                ));
                let mut l = if *mode == Mode::Drill {
                    format!("  {steps} unit(s) to drill")
                } else {
                    format!(
                        "  budget {}, {steps} steps in {phases} phases",
                        span(*budget)
                    )
                };
                for t in targets {
                    let port = t.port.map(|p| format!(":{p}")).unwrap_or_default();
                    let _ = write!(l, ", {} {}{port}", t.name, t.destination);
                }
                let _ = write!(l, ", run {run_id}");
                self.print(fit(&l, width));
                if let Some(from) = resumed_from {
                    self.print(fit(
                        &format!("  continuing run {from} from step {first_step}"),
                        width,
                    ));
                }
                if let Some(by) = started_by {
                    self.print(fit(&format!("  started by {by}"), width));
                }
                if *mode == Mode::Rehearse {
                    let l = "  REHEARSAL: read-only steps run; steps that change state are shown (→), not run";
                    self.print(fit(&st().cyan().apply_to(l).to_string(), width));
                }
            }
            Event::Connected {
                target,
                destination,
                boot_id,
                reconnect,
            } => {
                let verb = if *reconnect {
                    "reconnected"
                } else {
                    "connected"
                };
                let l = format!(
                    "  ● {verb} to {target} ({destination}), boot id {}",
                    short_id(boot_id)
                );
                self.print(fit(&st().dim().apply_to(l).to_string(), self.width()));
                self.step.set_message("");
            }
            Event::BootIdChanged { target, old, new } => {
                let l = format!(
                    "  ! {target} REBOOTED: boot id {} → {}",
                    short_id(old),
                    short_id(new)
                );
                self.print(st().yellow().bold().apply_to(l).to_string());
            }
            Event::ConnectionLost { target, error } => {
                let l = format!("  ! lost the connection to {target}: {}", one_line(error));
                self.print(fit(
                    &st().yellow().bold().apply_to(l).to_string(),
                    self.width(),
                ));
                self.step
                    .set_message(format!("  › reconnecting to {target}"));
            }
            Event::PhaseStarted {
                phase,
                name,
                window_start,
                window_end,
                at,
            } => {
                self.current_phase = Some(PhaseView {
                    phase: *phase,
                    name: name.clone(),
                    window_start: *window_start,
                    window_end: *window_end,
                    started: *at,
                    overran: false,
                });
                self.restyle_phase();
                self.print("");
                let l = format!(
                    "Phase {phase}/{}  {name}  window {}",
                    self.phases,
                    window(*window_start, *window_end)
                );
                self.print(st().bold().apply_to(fit(&l, self.width())).to_string());
            }
            Event::PhaseOverrun {
                phase,
                name,
                window_end,
                at,
            } => {
                if let Some(p) = self.current_phase.as_mut().filter(|p| p.phase == *phase) {
                    p.overran = true;
                }
                self.restyle_phase();
                let l = format!(
                    "! Phase {phase} OVERRAN its window (ended at {}) at {}: {name}",
                    span(*window_end),
                    duration(*at)
                );
                self.print(
                    st().yellow()
                        .bold()
                        .apply_to(fit(&l, self.width()))
                        .to_string(),
                );
            }
            Event::PhaseFinished { .. } => {}
            Event::StepStarted {
                step,
                name,
                command,
                timeout,
                at,
                ..
            } => {
                if let Some(c) = command {
                    self.commands.insert(*step, c.clone());
                }
                let view = StepView {
                    step: *step,
                    name: one_line(name),
                    timeout: *timeout,
                    started: *at,
                };
                self.step
                    .set_style(line_style(&self.clock, true, move |now, w| {
                        step_line(&view, now, w)
                    }));
                self.step.set_message("");
            }
            Event::GateProbe { .. } => {}
            Event::StepProgress { line, .. } => {
                let line = one_line(line);
                if !line.is_empty() {
                    self.step
                        .set_message(format!("  {}", st().dim().apply_to(format!("› {line}"))));
                }
            }
            Event::StepFinished { .. } => {
                self.step_finished(event);
                self.idle("…");
            }
            Event::DrillMeasured { unit, passed, .. } => {
                let mark = if *passed { "✓" } else { "✗" };
                let text = format!("{mark} drill: {unit}: {}", super::fmt::drilled(event));
                self.print(format!("  {text}"));
            }
            Event::RemedyApplied { step, message, .. } => {
                let text = format!("⚕ remedy (step {step}): {}", clean(message).trim());
                for l in wrap(&text, self.width().saturating_sub(2)) {
                    self.print(format!("  {}", st().magenta().apply_to(l)));
                }
            }
            Event::RemedyRestarted {
                step,
                unit,
                new_pid,
                after,
                ..
            } => {
                let text = format!(
                    "⚕ remedy (step {step}): {unit} active again, main pid {new_pid}, after {after:.1}s"
                );
                self.print(format!("  {}", st().magenta().apply_to(text)));
            }
            Event::Rewound { reason, .. } => {
                let text = format!("↺ STARTING AGAIN: {}", clean(reason).trim());
                for l in wrap(&text, self.width().saturating_sub(2)) {
                    self.print(format!("  {}", st().yellow().bold().apply_to(l)));
                }
            }
            Event::Verified { ok, units, .. } => {
                if *ok {
                    let l = format!(
                        "  ✓ end check: all {} units active and healthy",
                        units.len()
                    );
                    self.print(st().green().apply_to(l).to_string());
                } else {
                    let l = "  ✗ END CHECK FAILED: not every unit is healthy";
                    self.print(st().red().bold().apply_to(l).to_string());
                    for u in units.iter().filter(|u| !u.healthy) {
                        let text = format!(
                            "{} (step {}): {}{}",
                            clean(&u.unit),
                            u.step,
                            one_line(&u.state),
                            u.probe
                                .as_deref()
                                .map(|p| format!(", probe: {}", one_line(p)))
                                .unwrap_or_default()
                        );
                        for l in wrap(&text, self.width().saturating_sub(6)) {
                            self.print(format!("      {}", st().red().apply_to(l)));
                        }
                    }
                }
            }
            Event::Warning { step, message } => {
                let on = step.map(|s| format!(" (step {s})")).unwrap_or_default();
                let text = format!("! warning{on}: {}", clean(message).trim());
                for l in wrap(&text, self.width().saturating_sub(2)) {
                    self.print(format!("  {}", st().yellow().apply_to(l)));
                }
            }
            Event::Notified {
                channel,
                ok,
                attempts,
                error,
            } => {
                let l = if *ok {
                    st().dim()
                        .apply_to(format!("  ✉ notified {channel}"))
                        .to_string()
                } else {
                    let err = error.as_deref().map(one_line).unwrap_or_default();
                    st().yellow()
                        .bold()
                        .apply_to(format!(
                            "  ! could not notify {channel} after {attempts} attempts: {err} (the run goes on)"
                        ))
                        .to_string()
                };
                self.print(fit(&l, self.width()));
            }
            Event::AbortProcedure {
                step,
                reason,
                step_message,
                message,
            } => self.abort_box(*step, reason, step_message.as_deref(), message),
            Event::RunFinished {
                outcome,
                exit_code,
                message,
                resume,
                ..
            } => self.run_finished(*outcome, *exit_code, message, resume.as_deref()),
        }
    }
}

/// The first 8 characters of a boot id, cleaned (a journal's may be anything).
fn short_id(id: &str) -> String {
    one_line(id).chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::scenarios;

    fn plain(s: &str) -> String {
        console::strip_ansi_codes(s).into_owned()
    }

    #[test]
    fn timeline_line_fits_and_says_what_is_left() {
        let l = plain(&timeline_line(754.0, 1800.0, 80));
        assert!(l.starts_with("[12:34 / 30:00] █"), "{l}");
        assert!(l.ends_with(" 41%  17m26s left"), "{l}");
        assert!(measure_text_width(&l) <= 80);
        let over = plain(&timeline_line(1862.0, 1800.0, 80));
        assert!(over.ends_with("103%  OVER BUDGET by 1m02s"), "{over}");
    }

    #[test]
    fn phase_line_turns_into_a_warning_when_the_window_closes() {
        let mut p = PhaseView {
            phase: 3,
            name: "Start services in dependency order".into(),
            window_start: 600.0,
            window_end: 1200.0,
            started: 612.0,
            overran: false,
        };
        let l = plain(&phase_line(&p, 4, 804.0, 100));
        assert_eq!(
            l,
            "Phase 3/4 Start services in dependency order  window 10m-20m ▕████░░░░░░░░▏ 3m12s in, 6m36s left"
        );
        let narrow = plain(&phase_line(&p, 4, 804.0, 70));
        assert!(measure_text_width(&narrow) <= 70, "{narrow}");
        assert!(narrow.ends_with("3m12s in, 6m36s left"), "{narrow}");
        p.overran = true;
        let l = plain(&phase_line(&p, 4, 1262.0, 100));
        assert_eq!(
            l,
            "! Phase 3/4 Start services in dependency order  OVERRAN window 10m-20m by 1m02s, 10m50s in"
        );
    }

    #[test]
    fn step_line_leaves_room_for_output() {
        let s = StepView {
            step: 11,
            name: "start vllm-qwen36.service".into(),
            timeout: 540.0,
            started: 700.0,
        };
        assert_eq!(
            step_line(&s, 762.0, 80),
            "11 start vllm-qwen36.service  1m02s of 9m"
        );
        let l = step_line(&s, 762.0, 40);
        assert!(measure_text_width(&l) <= 40, "{l}");
        assert!(l.ends_with("1m02s of 9m"), "{l}");
    }

    /// A terminal that keeps every line written to it.
    #[derive(Debug, Default, Clone)]
    struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);

    impl indicatif::TermLike for Recorder {
        fn width(&self) -> u16 {
            WIDTH as u16 + 1
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            if let Ok(mut lines) = self.0.lock() {
                lines.extend(s.lines().map(|l| plain(l).trim_end().to_owned()));
            }
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const WIDTH: usize = 99;

    /// Everything the terminal view printed for `events`, escape codes removed.
    fn screen(events: &[Event]) -> String {
        let rec = Recorder::default();
        let target = ProgressDrawTarget::term_like(Box::new(rec.clone()));
        let mut t = Tty::build(target, || WIDTH);
        for e in events {
            t.emit(e);
        }
        drop(t);
        let lines = rec.0.lock().map(|l| l.clone()).unwrap_or_default();
        for l in &lines {
            // indicatif pads the spinner's message to the terminal's full width
            assert!(measure_text_width(l) <= WIDTH + 1, "too wide: {l:?}");
        }
        lines.join("\n")
    }

    #[test]
    fn prints_finished_steps_with_result_and_duration() {
        let out = screen(&scenarios::clean_run());
        assert!(
            out.contains("Phase 3/4  Start services in dependency order  window 10m-20m"),
            "{out}"
        );
        assert!(
            out.contains("  ✓ 11 start vllm-qwen36.service  4m02s"),
            "{out}"
        );
        assert!(out.contains("  ✓ 4 Last kernel messages  0.4s"), "{out}");
        assert!(
            out.contains("Total 12m24s of 30m budget (17m36s to spare)"),
            "{out}"
        );
        assert!(out.contains("✓ DONE (exit 0): Recovered"), "{out}");
    }

    #[test]
    fn failure_shows_reason_output_and_resume() {
        let out = screen(&scenarios::failure());
        assert!(
            out.contains("  ✗ 13 start dispatcher.service  31s  FAILED"),
            "{out}"
        );
        assert!(
            out.contains(
                "      dispatcher.service failed (start-limit-hit) before it became healthy"
            ),
            "{out}"
        );
        assert!(out.contains("      │ curl: (7) Failed to connect"), "{out}");
        assert!(out.contains("✗ FAILED (exit 1): Step 13"), "{out}");
        assert!(
            out.contains("  Resume with:  recover run runbooks/spark-power.yaml --resume"),
            "{out}"
        );
    }

    #[test]
    fn abort_procedure_is_boxed_whole() {
        let out = screen(&scenarios::abort());
        assert!(
            out.contains("┏━ ABORT at step 5: follow this procedure now ━"),
            "{out}"
        );
        for l in scenarios::ABORT_MESSAGE.lines() {
            assert!(out.contains(&format!("┃ {l}")), "missing {l:?} in\n{out}");
        }
        assert!(out.contains("✗ ABORTED (exit 3)"), "{out}");
    }

    #[test]
    fn overrun_and_rehearsal_are_said_in_words() {
        let out = screen(&scenarios::overrun());
        assert!(
            out.contains("! Phase 3 OVERRAN its window (ended at 20m) at 20m00s"),
            "{out}"
        );
        assert!(
            out.contains("! spark REBOOTED: boot id 3f2a9c1d → 77aa0b12"),
            "{out}"
        );
        let out = screen(&scenarios::rehearsal());
        assert!(out.contains("REHEARSAL: read-only steps run"), "{out}");
        assert!(
            out.contains("  → 11 start vllm-qwen36.service  would run"),
            "{out}"
        );
        assert!(out.contains("      would run: sudo -n timeout -k 5s 10s sh -c 'systemctl start --no-block vllm-qwen36.service'"), "{out}");
        let out = screen(&scenarios::interrupted());
        assert!(
            out.contains("  ■ 11 start vllm-qwen36.service  1m15s  interrupted"),
            "{out}"
        );
        assert!(out.contains("■ INTERRUPTED (exit 130)"), "{out}");
    }

    #[test]
    fn takes_every_scenario_without_panicking() {
        for (_, events) in scenarios::all() {
            let mut t = Tty::with_draw_target(ProgressDrawTarget::hidden());
            let s = t.suspender();
            for e in &events {
                t.emit(e);
            }
            assert_eq!(s.suspend(|| 42), 42);
            assert_eq!(t.suspend(|| "asked"), "asked");
            assert!(t.summary.is_finished());
            // after the end, further events are ignored
            t.emit(&events[0]);
        }
    }
}
