//! The timeline as an inline SVG: the budget as the axis, each phase a band over its window
//! with its actual span on it, each step a bar, probes as ticks, events as marks, the reboot
//! and the resume as lines across. Every state has a pattern as well as a colour, so the page
//! still reads when printed in black and white.

use std::fmt::Write;

use super::model::{Incident, MarkKind, Step};
use crate::duration::{clock, duration, span};
use crate::engine::event::StepOutcome;

const W: f64 = 1000.0;
const X0: f64 = 250.0;
const X1: f64 = 985.0;
const AXIS: f64 = 26.0;
const LANE: f64 = 22.0;
const PHASE_ROW: f64 = 22.0;
const STEP_ROW: f64 = 15.0;
const LABEL_CHARS: usize = 40;

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn label(s: &str) -> String {
    let n = s.chars().count();
    if n <= LABEL_CHARS {
        return escape(s);
    }
    let cut: String = s.chars().take(LABEL_CHARS - 1).collect();
    escape(&format!("{cut}…"))
}

/// The axis: where the timeline ends, and the step between ticks.
fn scale(inc: &Incident) -> (f64, f64) {
    let windows = inc
        .phases()
        .iter()
        .map(|p| p.window_end)
        .fold(0.0, f64::max);
    let end = inc.budget().max(inc.end_at()).max(windows).max(10.0);
    let step = [
        10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
    ]
    .into_iter()
    .find(|s| end / s <= 12.0)
    // a journal with absurd times still gets a dozen ticks, never an endless axis
    .unwrap_or(end / 12.0);
    ((end / step).ceil() * step, step)
}

/// Fill of a step's bar by how it ended (a pattern, not only a colour).
fn fill(o: Option<StepOutcome>) -> &'static str {
    match o {
        Some(StepOutcome::Passed) => "#3d6b3d",
        Some(StepOutcome::Failed) => "url(#p-failed)",
        Some(StepOutcome::Aborted) => "url(#p-aborted)",
        Some(StepOutcome::Interrupted) => "url(#p-interrupted)",
        Some(StepOutcome::FailedContinued) => "url(#p-continued)",
        Some(StepOutcome::WouldRun) | Some(StepOutcome::Skipped) => "#ffffff",
        None => "url(#p-running)",
    }
}

const DEFS: &str = r##"<defs>
<pattern id="p-overrun" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)"><rect width="6" height="6" fill="#c62828"/><rect width="2.5" height="6" fill="#ffffff"/></pattern>
<pattern id="p-failed" patternUnits="userSpaceOnUse" width="5" height="5"><rect width="5" height="5" fill="#c62828"/><path d="M0 0L5 5M5 0L0 5" stroke="#ffffff" stroke-width="1.2"/></pattern>
<pattern id="p-aborted" patternUnits="userSpaceOnUse" width="4" height="4" patternTransform="rotate(-45)"><rect width="4" height="4" fill="#7f0000"/><rect width="1.2" height="4" fill="#ffffff"/></pattern>
<pattern id="p-interrupted" patternUnits="userSpaceOnUse" width="4" height="4"><rect width="4" height="4" fill="#e68a00"/><circle cx="2" cy="2" r="0.9" fill="#000000"/></pattern>
<pattern id="p-continued" patternUnits="userSpaceOnUse" width="4" height="4"><rect width="4" height="4" fill="#d4a017"/><rect y="1.5" width="4" height="1" fill="#000000"/></pattern>
<pattern id="p-running" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)"><rect width="6" height="6" fill="#9db7d5"/><rect width="1" height="6" fill="#1f4e79"/></pattern>
</defs>
"##;

pub fn timeline(inc: &Incident) -> String {
    let (end, step) = scale(inc);
    let x = |t: f64| X0 + t.clamp(0.0, end) / end * (X1 - X0);
    // Linear in the journal's size: every lookup below goes through a map made once (a
    // journal of 100k events, or of 10k steps, renders in well under 2 s).
    let steps = inc.steps();
    let phases = inc.phases();
    let end_at = inc.end_at();
    let mut groups: Vec<usize> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut spans_of: std::collections::HashMap<usize, Vec<_>> = std::collections::HashMap::new();
    let mut members_of: std::collections::HashMap<usize, Vec<&Step>> =
        std::collections::HashMap::new();
    for p in &phases {
        if seen.insert(p.number) {
            groups.push(p.number);
        }
        spans_of.entry(p.number).or_default().push(*p);
    }
    for s in &steps {
        if seen.insert(s.phase) {
            groups.push(s.phase);
        }
        members_of.entry(s.phase).or_default().push(*s);
    }
    let mut attempts: std::collections::HashMap<usize, Vec<&Step>> =
        std::collections::HashMap::new();
    for s in inc
        .segments
        .iter()
        .flat_map(|seg| &seg.steps)
        .filter(|s| s.started.is_some())
    {
        attempts.entry(s.number).or_default().push(s);
    }
    let rows: f64 = groups
        .iter()
        .map(|g| PHASE_ROW + STEP_ROW * members_of.get(g).map_or(0, Vec::len) as f64)
        .sum();
    let chart_top = AXIS;
    let chart_bottom = AXIS + LANE + rows + 6.0;
    let height = chart_bottom + 66.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r##"<svg viewBox="0 0 {W} {height}" width="100%" role="img" aria-label="Timeline of the run against its budget" font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif" font-size="11">"##
    );
    o.push_str(DEFS);

    // the axis: a tick and a grid line every `step`, the budget as a heavy line
    for i in 0..=12 {
        let t = f64::from(i) * step;
        if t > end + 1e-6 {
            break;
        }
        let _ = writeln!(
            o,
            r##"<line x1="{0:.1}" y1="{chart_top}" x2="{0:.1}" y2="{chart_bottom}" stroke="#d9d9d9" stroke-width="0.6"/><text x="{0:.1}" y="14" text-anchor="middle" fill="#333">{1}</text>"##,
            x(t),
            span(t)
        );
    }
    let budget = inc.budget();
    if budget > 0.0 {
        let _ = writeln!(
            o,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{chart_bottom}" stroke="#000" stroke-width="2"/><text x="{2:.1}" y="{3}" text-anchor="end" font-weight="bold">budget {4}</text>"##,
            x(budget),
            chart_top - 4.0,
            x(budget) - 3.0,
            chart_top + 9.0,
            span(budget)
        );
    }

    // events lane
    let lane_y = AXIS + LANE / 2.0 + 2.0;
    let _ = writeln!(
        o,
        r##"<text x="4" y="{:.1}" fill="#333">events</text><line x1="{X0}" y1="{lane_y:.1}" x2="{X1}" y2="{lane_y:.1}" stroke="#bbb" stroke-width="0.6"/>"##,
        lane_y + 4.0
    );
    for m in inc.marks() {
        let cx = x(m.at);
        let title = escape(&format!("{} {}", clock(m.at), mark_title(&m.what)));
        let shape = match &m.what {
            MarkKind::ConnectionLost { .. } => format!(
                r##"<circle cx="{cx:.1}" cy="{lane_y:.1}" r="4" fill="#fff" stroke="#000" stroke-width="1.5"/>"##
            ),
            MarkKind::Reconnected { .. } => {
                format!(r##"<circle cx="{cx:.1}" cy="{lane_y:.1}" r="4" fill="#000"/>"##)
            }
            MarkKind::Remedy { .. } => format!(
                r##"<path d="M{cx:.1} {:.1}l5 5l-5 5l-5 -5z" fill="#6a1b9a" stroke="#000" stroke-width="0.8"/>"##,
                lane_y - 5.0
            ),
            MarkKind::AbortProcedure { .. } => format!(
                r##"<path d="M{cx:.1} {:.1}l5 9h-10z" fill="#7f0000" stroke="#000" stroke-width="0.8"/>"##,
                lane_y - 5.0
            ),
            MarkKind::Notified { ok, .. } => format!(
                r##"<rect x="{:.1}" y="{:.1}" width="7" height="7" fill="{}" stroke="#000" stroke-width="0.8"/>"##,
                cx - 3.5,
                lane_y - 3.5,
                if *ok { "#fff" } else { "url(#p-failed)" }
            ),
            MarkKind::Warning { .. } => format!(
                r##"<path d="M{cx:.1} {:.1}l4 7h-8z" fill="#fff" stroke="#8a6d00" stroke-width="1.2"/>"##,
                lane_y - 4.0
            ),
            // drawn as a line across the whole chart below
            MarkKind::BootIdChanged { .. } => String::new(),
        };
        if !shape.is_empty() {
            let _ = writeln!(o, "<g><title>{title}</title>{shape}</g>");
        }
    }

    // phases and their steps
    let mut y = AXIS + LANE;
    for g in &groups {
        let spans = spans_of.remove(g).unwrap_or_default();
        let members = members_of.remove(g).unwrap_or_default();
        let group_h = PHASE_ROW + STEP_ROW * members.len() as f64;
        let name = spans
            .first()
            .map(|p| p.name.clone())
            .unwrap_or_else(|| format!("phase {g}"));
        if let Some(p) = spans.first() {
            let _ = writeln!(
                o,
                r##"<g><title>{} window {}</title><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#eef2f7" stroke="#6f87a8" stroke-width="0.8" stroke-dasharray="3 2"/></g>"##,
                escape(&name),
                crate::duration::window(p.window_start, p.window_end),
                x(p.window_start),
                y + 1.0,
                (x(p.window_end) - x(p.window_start)).max(1.0),
                group_h - 2.0
            );
        }
        let _ = writeln!(
            o,
            r##"<text x="4" y="{:.1}" font-weight="bold">{g}  {}</text>"##,
            y + 15.0,
            label(&name)
        );
        for p in &spans {
            let ended = p.ended.unwrap_or(end_at);
            let (a, b) = (x(p.started), x(ended).max(x(p.started) + 1.5));
            let _ = writeln!(
                o,
                r##"<g><title>{} {}-{}, took {}</title><rect x="{a:.1}" y="{:.1}" width="{:.1}" height="9" fill="#1f4e79"/></g>"##,
                escape(&p.name),
                clock(p.started),
                clock(ended),
                duration(ended - p.started),
                y + 7.0,
                b - a
            );
            if ended > p.window_end + 0.5 {
                let from = p.started.max(p.window_end);
                let _ = writeln!(
                    o,
                    r##"<g><title>{} OVERRAN its window by {}</title><rect x="{:.1}" y="{:.1}" width="{:.1}" height="13" fill="url(#p-overrun)" stroke="#000" stroke-width="0.8"/></g>"##,
                    escape(&p.name),
                    duration(ended - p.window_end),
                    x(from),
                    y + 5.0,
                    (x(ended) - x(from)).max(1.5)
                );
            }
        }
        y += PHASE_ROW;
        for s in members {
            let tries = attempts.get(&s.number).map_or(&[][..], Vec::as_slice);
            step_row(&mut o, s, tries, y, &x, end_at);
            y += STEP_ROW;
        }
    }

    // lines across: the reboot, the resume
    for m in inc.marks() {
        if let MarkKind::BootIdChanged { target, old, new } = &m.what {
            let _ = writeln!(
                o,
                r##"<g><title>{t}: boot id {old} became {new}</title><line x1="{lx:.1}" y1="{chart_top}" x2="{lx:.1}" y2="{chart_bottom}" stroke="#000" stroke-width="1.6" stroke-dasharray="6 3"/><text x="{tx:.1}" y="{ty:.1}" font-weight="bold">{t} rebooted</text></g>"##,
                t = escape(target),
                old = escape(old),
                new = escape(new),
                lx = x(m.at),
                tx = x(m.at) + 3.0,
                ty = chart_bottom + 12.0
            );
        }
    }
    for (at, id) in inc.resumes() {
        let _ = writeln!(
            o,
            r##"<g><title>resumed (run {} left off here)</title><line x1="{1:.1}" y1="{2}" x2="{1:.1}" y2="{3}" stroke="#000" stroke-width="1.2" stroke-dasharray="1.5 2.5"/><text x="{4:.1}" y="{5:.1}">resumed</text></g>"##,
            escape(id),
            x(at),
            chart_top,
            chart_bottom,
            x(at) + 3.0,
            chart_bottom + 24.0
        );
    }
    legend(&mut o, chart_bottom + 34.0);
    o.push_str("</svg>\n");
    o
}

fn mark_title(m: &MarkKind) -> String {
    match m {
        MarkKind::ConnectionLost { target, error } => {
            format!("connection to {target} lost: {error}")
        }
        MarkKind::Reconnected { target } => format!("reconnected to {target}"),
        MarkKind::BootIdChanged { target, .. } => format!("{target} rebooted"),
        MarkKind::Remedy { action, detail } => format!(
            "remedy {action}{}",
            detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
        MarkKind::Warning { message } => format!("warning: {message}"),
        MarkKind::Notified { channel, ok, .. } => {
            format!("post to {channel} {}", if *ok { "sent" } else { "FAILED" })
        }
        MarkKind::AbortProcedure { reason } => format!("abort procedure: {reason}"),
    }
}

fn step_row(
    o: &mut String,
    s: &Step,
    attempts: &[&Step],
    y: f64,
    x: &impl Fn(f64) -> f64,
    end: f64,
) {
    let _ = writeln!(
        o,
        r##"<text x="14" y="{:.1}" fill="#222">{}  {}</text>"##,
        y + 11.0,
        s.number,
        label(&s.name)
    );
    if attempts.is_empty() {
        let _ = writeln!(
            o,
            r##"<text x="{X0}" y="{:.1}" fill="#666" font-style="italic">{}</text>"##,
            y + 11.0,
            s.outcome.map(|o| o.word()).unwrap_or("not run")
        );
    }
    for a in attempts {
        attempt(o, a, y, x, end);
    }
}

/// One run of a step: its bar, and its gate's probes as ticks.
fn attempt(o: &mut String, s: &Step, y: f64, x: &impl Fn(f64) -> f64, end: f64) {
    let Some(start) = s.started else { return };
    let stop = s.ended().unwrap_or(end);
    let (a, b) = (x(start), x(stop).max(x(start) + 2.0));
    let dashed = if matches!(s.outcome, Some(StepOutcome::WouldRun)) {
        r#" stroke-dasharray="2 1.5""#
    } else {
        ""
    };
    let _ = writeln!(
        o,
        r##"<g><title>{} {}: {}{}</title><rect x="{a:.1}" y="{:.1}" width="{:.1}" height="9" fill="{}" stroke="#000" stroke-width="0.6"{dashed}/></g>"##,
        escape(&s.name),
        clock(start),
        s.outcome.map(|o| o.word()).unwrap_or("still running"),
        s.duration
            .map(|d| format!(", took {}", duration(d)))
            .unwrap_or_default(),
        y + 3.0,
        b - a,
        fill(s.outcome)
    );
    for p in &s.probes {
        let px = x(p.at);
        let title = escape(&format!(
            "{} probe {}{}",
            clock(p.at),
            if p.passed { "passed" } else { "FAILED" },
            p.detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ));
        if p.passed {
            let _ = writeln!(
                o,
                r##"<g><title>{title}</title><line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#0b3d0b" stroke-width="1.4"/></g>"##,
                y,
                y + 14.0
            );
        } else {
            let _ = writeln!(
                o,
                r##"<g><title>{title}</title><path d="M{:.1} {:.1}l6 6M{:.1} {:.1}l-6 6" stroke="#b00000" stroke-width="1.6"/></g>"##,
                px - 3.0,
                y + 1.5,
                px + 3.0,
                y + 1.5
            );
        }
    }
}

fn legend(o: &mut String, y: f64) {
    let items: [(&str, &str); 7] = [
        ("#3d6b3d", "ok"),
        ("url(#p-failed)", "failed"),
        ("url(#p-aborted)", "aborted"),
        ("url(#p-interrupted)", "interrupted"),
        ("url(#p-continued)", "failed, continued"),
        ("url(#p-running)", "still running"),
        ("url(#p-overrun)", "phase overran its window"),
    ];
    let mut lx = 4.0;
    for (fill, text) in items {
        let _ = writeln!(
            o,
            r##"<rect x="{lx:.1}" y="{:.1}" width="16" height="9" fill="{fill}" stroke="#000" stroke-width="0.6"/><text x="{:.1}" y="{:.1}">{text}</text>"##,
            y,
            lx + 20.0,
            y + 8.5
        );
        lx += 26.0 + 6.2 * text.len() as f64;
    }
    let y2 = y + 16.0;
    let _ = writeln!(
        o,
        r##"<rect x="4" y="{0:.1}" width="16" height="9" fill="#eef2f7" stroke="#6f87a8" stroke-dasharray="3 2"/><text x="24" y="{1:.1}">phase window</text><rect x="110" y="{0:.1}" width="16" height="9" fill="#1f4e79"/><text x="130" y="{1:.1}">phase actual span</text><line x1="250" y1="{0:.1}" x2="250" y2="{2:.1}" stroke="#0b3d0b" stroke-width="1.4"/><text x="256" y="{1:.1}">probe passed</text><path d="M340 {0:.1}l6 6M346 {0:.1}l-6 6" stroke="#b00000" stroke-width="1.6"/><text x="352" y="{1:.1}">probe failed</text><circle cx="440" cy="{3:.1}" r="4" fill="#fff" stroke="#000" stroke-width="1.5"/><text x="448" y="{1:.1}">connection lost</text><circle cx="550" cy="{3:.1}" r="4" fill="#000"/><text x="558" y="{1:.1}">reconnected</text><path d="M640 {4:.1}l5 5l-5 5l-5 -5z" fill="#6a1b9a"/><text x="650" y="{1:.1}">remedy</text><line x1="710" y1="{4:.1}" x2="710" y2="{2:.1}" stroke="#000" stroke-width="1.6" stroke-dasharray="6 3"/><text x="716" y="{1:.1}">reboot (boot id changed)</text>"##,
        y2,
        y2 + 8.5,
        y2 + 10.0,
        y2 + 4.5,
        y2 - 1.0
    );
}
