//! The report as one self-contained HTML page: no script, no external fetch (a CSP forbids
//! it), print CSS that fits A4 and Letter.

use std::fmt::Write;

use super::Report;
use super::history::HistoryRow;
use super::markdown::{over_budget, sha_cell};
use super::svg::{escape, timeline};
use super::view;
use crate::duration::{clock, duration};
use crate::engine::event::StepOutcome;

const CSS: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 10.5pt; color: #111;
  background: #fff; max-width: 1050px; margin: 1.5em auto; padding: 0 1em; line-height: 1.35; }
h1 { font-size: 17pt; margin: 0 0 .4em; }
h2 { font-size: 12.5pt; margin: 1.2em 0 .4em; border-bottom: 1px solid #999; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; margin: 0; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.bad { font-weight: bold; }
table { border-collapse: collapse; width: 100%; margin: .3em 0; }
table.narrow { width: auto; min-width: 40%; }
th, td { border: 1px solid #999; padding: .15em .4em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; white-space: nowrap; }
th { white-space: nowrap; }
td.reason { overflow-wrap: anywhere; font-size: 9pt; }
tr.overran td, tr.failed td { background: #fde8e8; }
tr.overran td:first-child, tr.failed td:first-child { border-left: 4px double #000; }
figure { margin: .5em 0; }
svg { display: block; width: 100%; height: auto; }
ul.events { padding-left: 1.2em; }
footer { margin-top: 1.5em; font-size: 8.5pt; color: #444; }
@page { margin: 12mm; }
@media print {
  html, body { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  body { max-width: none; margin: 0; padding: 0; font-size: 9pt; }
  h2 { break-after: avoid; }
  figure, tr { break-inside: avoid; }
  thead { display: table-header-group; }
}
"#;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

fn cells(list: &[String]) -> String {
    list.iter()
        .map(|c| format!("<td class=\"num\">{}</td>", escape(c)))
        .collect()
}

pub fn html(r: &Report) -> String {
    let inc = &r.incident;
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>Recovery report: {}</h1>",
        escape(&inc.last().runbook)
    );
    b.push_str("<dl class=\"facts\">\n");
    for (k, v) in view::facts(r) {
        let class = if k == "result" && !v.starts_with("success") {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = writeln!(b, "<dt>{k}</dt><dd{class}>{}</dd>", escape(&v));
    }
    b.push_str("</dl>\n");

    b.push_str("<h2>Timeline</h2>\n<figure>\n");
    b.push_str(&timeline(inc));
    b.push_str("</figure>\n");

    b.push_str("<h2>Where the time went</h2>\n<table class=\"narrow\"><thead><tr><th></th><th>took</th><th>share</th></tr></thead><tbody>\n");
    for (name, took, share) in view::time_rows(&r.time_split()) {
        let _ = writeln!(
            b,
            "<tr><td>{name}</td><td class=\"num\">{took}</td><td class=\"num\">{share}</td></tr>"
        );
    }
    b.push_str("</tbody></table>\n");

    let heads = view::baseline_headers(r);
    let n = heads.len();
    let extra: String = heads
        .iter()
        .map(|h| format!("<th>{}</th>", escape(h)))
        .collect();
    let _ = writeln!(
        b,
        "<h2>Phases</h2>\n<table><thead><tr><th>#</th><th>phase</th><th>window</th><th>actual</th><th>took</th><th>result</th>{extra}</tr></thead><tbody>"
    );
    for p in view::phase_rows(r) {
        let _ = writeln!(
            b,
            "<tr{}><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td>{}</tr>",
            if p.overran { " class=\"overran\"" } else { "" },
            p.number,
            escape(&p.name),
            p.window,
            p.actual,
            p.took,
            escape(&p.result),
            cells(&p.compared.cells(n))
        );
    }
    b.push_str("</tbody></table>\n");

    let _ = writeln!(
        b,
        "<h2>Steps</h2>\n<table><thead><tr><th>#</th><th>step</th><th>started</th><th>took</th><th>result</th><th>probes</th><th>reason</th>{extra}</tr></thead><tbody>"
    );
    for s in view::step_rows(r) {
        let bad = matches!(
            s.outcome,
            Some(StepOutcome::Failed | StepOutcome::Aborted | StepOutcome::Interrupted) | None
        );
        let _ = writeln!(
            b,
            "<tr{}><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"reason\">{}</td>{}</tr>",
            if bad { " class=\"failed\"" } else { "" },
            s.number,
            escape(&s.name),
            s.started,
            s.took,
            escape(&s.result),
            escape(&s.probes),
            escape(&s.reason),
            cells(&s.compared.cells(n))
        );
    }
    b.push_str("</tbody></table>\n");
    let notable = view::notable(r);
    if !notable.is_empty() {
        b.push_str("<h2>Compared with before</h2>\n<ul>\n");
        for line in notable {
            let _ = writeln!(b, "<li>{}</li>", escape(&line));
        }
        b.push_str("</ul>\n");
    }

    let events = view::events(r);
    if !events.is_empty() {
        b.push_str("<h2>Events</h2>\n<ul class=\"events\">\n");
        for (at, text, important) in events {
            let text = if important {
                format!("<strong>{}</strong>", escape(&text))
            } else {
                escape(&text)
            };
            let _ = writeln!(b, "<li>{} {text}</li>", clock(at));
        }
        b.push_str("</ul>\n");
    }
    if r.baselines.is_empty() {
        b.push_str(
            "<p>No earlier rehearsal or run of this runbook was found to compare with.</p>\n",
        );
    }
    if !inc.problems.is_empty() {
        b.push_str("<h2>Journal lines not used</h2>\n<ul>\n");
        for p in &inc.problems {
            let _ = writeln!(b, "<li>{}</li>", escape(p));
        }
        b.push_str("</ul>\n");
    }
    let _ = writeln!(
        b,
        "<footer>Generated by recover {} on {} from {}.</footer>",
        env!("CARGO_PKG_VERSION"),
        r.generated.format("%Y-%m-%d %H:%M UTC"),
        escape(&r.journal.display().to_string())
    );
    page(&format!("Recovery report: {}", inc.last().runbook), &b)
}

/// The history as a page: one row per run, rehearsal and drill.
pub fn history_html(runbook: &str, rows: &[HistoryRow]) -> String {
    let mut b = format!(
        "<h1>History: {}</h1>\n<table><thead><tr><th>date</th><th>kind</th><th>total</th><th>budget</th><th>result</th><th>runbook sha256</th><th>journal</th></tr></thead><tbody>\n",
        escape(runbook)
    );
    for h in rows {
        let _ = writeln!(
            b,
            "<tr{}><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
            if h.result == "success" {
                ""
            } else {
                " class=\"failed\""
            },
            h.date
                .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default(),
            escape(&h.kind),
            duration(h.end_at),
            over_budget(h),
            h.result,
            escape(&sha_cell(h)),
            escape(&h.path.display().to_string())
        );
    }
    b.push_str("</tbody></table>\n");
    if rows.is_empty() {
        b.push_str("<p>No journal of this runbook was found.</p>\n");
    }
    page(&format!("History: {runbook}"), &b)
}
