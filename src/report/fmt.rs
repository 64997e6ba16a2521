//! How the reporters fit text; the times they write (`4m02s`) are `crate::duration`'s, shared
//! with the incident report so every view says them the same way.

use console::{measure_text_width, truncate_str};

pub use crate::duration::{clock, duration, left, span, window};
pub use crate::text::{clean, one_line};

/// Cut `s` to `width` columns, ending with `…` when cut. Escape codes are kept and not counted.
pub fn fit(s: &str, width: usize) -> String {
    truncate_str(s, width, "…").into_owned()
}

/// `left` and `right` on one line of at most `width` columns, two spaces apart; `left` gives way.
pub fn fit_pair(left: &str, right: &str, width: usize) -> String {
    let rw = measure_text_width(right);
    if rw + 2 >= width {
        return fit(&format!("{left}  {right}"), width);
    }
    format!("{}  {right}", fit(left, width - rw - 2))
}

/// What a drill measured on one unit, in words: `restarted after 6.2s, healthy again after
/// 20.4s (NRestarts 0 → 1)`, or why it failed; empty for any other event.
pub fn drilled(e: &crate::engine::Event) -> String {
    let crate::engine::Event::DrillMeasured {
        passed,
        reason,
        restarted_after,
        healthy_after,
        n_restarts_before,
        n_restarts_after,
        ..
    } = e
    else {
        return String::new();
    };
    if !passed {
        return clean(reason.as_deref().unwrap_or("failed"));
    }
    let mut l = "restarted".to_owned();
    if let Some(r) = restarted_after {
        l.push_str(&format!(" after {r:.1}s"));
    }
    l.push_str(", healthy again");
    if let Some(h) = healthy_after {
        l.push_str(&format!(" after {h:.1}s"));
    }
    if let (Some(b), Some(a)) = (n_restarts_before, n_restarts_after) {
        l.push_str(&format!(" (NRestarts {b} → {a})"));
    }
    l
}

/// The last `n` non-empty lines of some output, cleaned.
pub fn tail(s: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = s.lines().map(one_line).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// Word-wrap `text` to `width` columns, keeping its own line breaks and indentation; the lines
/// of a list item (`1.`, `-`, `*`) hang under its text. A word longer than the width stays whole.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(20);
    let mut out = Vec::new();
    for para in text.lines() {
        let indent = para.len() - para.trim_start().len();
        let hang = list_marker(para).unwrap_or(0);
        let cont = " ".repeat(indent + hang);
        let mut line = String::new();
        for word in para.split_whitespace() {
            if line.is_empty() {
                line = format!("{}{word}", &para[..indent]);
            } else if measure_text_width(&line) + 1 + measure_text_width(word) <= width {
                line.push(' ');
                line.push_str(word);
            } else {
                out.push(std::mem::take(&mut line));
                line = format!("{cont}{word}");
            }
        }
        out.push(line);
    }
    out
}

/// `text` as its author wrapped it when every line fits `width`; otherwise re-flowed: the lines
/// of a paragraph or of a list item are joined, then [`wrap`]ped, so a narrow terminal does not
/// leave a short orphan after every long line.
pub fn reflow(text: &str, width: usize) -> Vec<String> {
    if text.lines().all(|l| measure_text_width(l) <= width) {
        return text.lines().map(String::from).collect();
    }
    let mut paras: Vec<String> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            paras.push(String::new());
            open = false;
        } else if open && list_marker(line).is_none() {
            if let Some(p) = paras.last_mut() {
                p.push(' ');
                p.push_str(line.trim());
            }
        } else {
            paras.push(line.trim_end().to_owned());
            open = true;
        }
    }
    paras.iter().flat_map(|p| wrap(p, width)).collect()
}

/// The width of the list marker (`1.`, `-`, `*`) that starts `line`, with its space.
fn list_marker(line: &str) -> Option<usize> {
    let first = line.split_whitespace().next()?;
    let numbered = first.len() > 1
        && first.ends_with('.')
        && first[..first.len() - 1].bytes().all(|b| b.is_ascii_digit());
    (first == "-" || first == "*" || numbered).then_some(first.len() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_in_words() {
        let measured = |passed: bool| crate::engine::Event::DrillMeasured {
            step: 3,
            unit: "vllm-qwen36.service".into(),
            restart: "on-failure".into(),
            old_pid: 367,
            new_pid: Some(412),
            restarted_after: Some(6.24),
            healthy_after: Some(20.4),
            n_restarts_before: Some(0),
            n_restarts_after: Some(1),
            passed,
            reason: (!passed).then(|| "not restarted: failed; Restart=no".into()),
        };
        assert_eq!(
            drilled(&measured(true)),
            "restarted after 6.2s, healthy again after 20.4s (NRestarts 0 → 1)"
        );
        assert_eq!(
            drilled(&measured(false)),
            "not restarted: failed; Restart=no"
        );
    }

    #[test]
    fn fitting_keeps_the_right_side() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
        assert_eq!(
            fit_pair("start vllm-qwen36.service", "4m02s", 16),
            "start vl…  4m02s"
        );
        assert_eq!(fit_pair("short", "4m02s", 40), "short  4m02s");
    }

    #[test]
    fn foreign_output_is_made_harmless() {
        assert_eq!(one_line("\x1b[31mred\x1b[0m\tx\r"), "red x");
        assert_eq!(one_line("bell\x07"), "bell?");
        assert_eq!(tail("a\n\nb\nc\n", 2), vec!["b", "c"]);
    }

    #[test]
    fn wrapping_keeps_words_and_breaks() {
        let w = wrap(
            "one two three four five six\n\n  1. seven eight nine ten eleven",
            20,
        );
        assert_eq!(
            w,
            vec![
                "one two three four",
                "five six",
                "",
                "  1. seven eight",
                "     nine ten eleven"
            ]
        );
        assert!(w.iter().all(|l| l.len() <= 20));
    }

    #[test]
    fn reflow_joins_hard_wrapped_lines_only_when_needed() {
        let text = "Follow this:\n1. Leave it idle. Do not\n   power-cycle it.\n2. Call.";
        assert_eq!(reflow(text, 40), text.lines().collect::<Vec<_>>());
        assert_eq!(
            reflow(text, 22),
            vec![
                "Follow this:",
                "1. Leave it idle. Do",
                "   not power-cycle it.",
                "2. Call."
            ]
        );
    }
}
