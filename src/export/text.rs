//! Text for the two formats: escaping for HTML and Markdown, code spans, and the little
//! structure runbook prose has (paragraphs, numbered and bulleted lists).
//!
//! Prose may carry `code spans` in backticks, as runbook authors write them; they become
//! `<code>` in HTML and stay code spans in Markdown. Everything else is text, escaped.

/// A piece of prose: text, or the content of a code span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span<'a> {
    Text(&'a str),
    Code(&'a str),
}

/// Split `s` into text and code spans the way CommonMark does: a run of N backticks opens a
/// span closed by the next run of exactly N; an unclosed run is text.
pub fn spans(s: &str) -> Vec<Span<'_>> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut text_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let open = run_len(bytes, i);
        let mut j = i + open;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let n = run_len(bytes, j);
                if n == open {
                    close = Some(j);
                    break;
                }
                j += n;
            } else {
                j += 1;
            }
        }
        match close {
            Some(c) => {
                if text_start < i {
                    out.push(Span::Text(&s[text_start..i]));
                }
                let mut inner = &s[i + open..c];
                if inner.len() >= 2
                    && inner.starts_with(' ')
                    && inner.ends_with(' ')
                    && !inner.trim().is_empty()
                {
                    inner = &inner[1..inner.len() - 1];
                }
                out.push(Span::Code(inner));
                i = c + open;
                text_start = i;
            }
            None => i += open,
        }
    }
    if text_start < s.len() {
        out.push(Span::Text(&s[text_start..]));
    }
    out
}

fn run_len(bytes: &[u8], at: usize) -> usize {
    bytes[at..].iter().take_while(|&&b| b == b'`').count()
}

/// Escape for HTML text and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Words of code longer than this may break anywhere; shorter ones only at spaces.
const UNBREAKABLE: usize = 60;

/// Code as HTML: escaped, each word with punctuation kept on one line (a browser would
/// break `is-active` after the hyphen), so that a printed line break is a space, except
/// inside words too long for a line.
pub fn html_code(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for (i, word) in s.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        for (j, part) in word.split('\n').enumerate() {
            if j > 0 {
                out.push('\n');
            }
            let breakable = part.chars().any(|c| !c.is_alphanumeric());
            if breakable && part.chars().count() <= UNBREAKABLE {
                out.push_str(&format!("<span class=\"w\">{}</span>", html_escape(part)));
            } else {
                out.push_str(&html_escape(part));
            }
        }
    }
    out
}

/// One line of prose as HTML: text escaped, code spans as `<code>`.
pub fn html_inline(s: &str) -> String {
    spans(s)
        .into_iter()
        .map(|sp| match sp {
            Span::Text(t) => html_escape(t),
            Span::Code(c) => format!("<code>{}</code>", html_code(c)),
        })
        .collect()
}

/// A Markdown code span holding `s` verbatim.
pub fn md_code(s: &str) -> String {
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') || (s.starts_with(' ') && s.ends_with(' '))
    {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// A fenced Markdown code block holding `s` verbatim.
pub fn md_fence(s: &str, lang: &str) -> String {
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}{lang}\n{}\n{fence}", s.trim_end_matches('\n'))
}

/// One line of prose as Markdown: text escaped so it renders as written, code spans kept.
pub fn md_inline(s: &str) -> String {
    let mut out = String::new();
    for sp in spans(s) {
        match sp {
            Span::Code(c) => out.push_str(&md_code(c)),
            Span::Text(t) => {
                let chars: Vec<char> = t.chars().collect();
                for (k, &c) in chars.iter().enumerate() {
                    let prev = k.checked_sub(1).and_then(|p| chars.get(p));
                    let next = chars.get(k + 1);
                    let inword = |x: Option<&char>| x.is_some_and(|c| c.is_alphanumeric());
                    let escape = match c {
                        '\\' | '*' | '[' | ']' | '<' | '>' | '|' | '~' | '`' => true,
                        '_' => !(inword(prev) && inword(next)),
                        '&' => next.is_some_and(|n| n.is_ascii_alphabetic() || *n == '#'),
                        _ => false,
                    };
                    if escape {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
        }
    }
    // What would start a block at the beginning of a line: a heading, a list item, a rule.
    let starts_block = out.starts_with('#')
        || out.starts_with("- ")
        || out.starts_with("+ ")
        || out.starts_with('=')
        || out.starts_with("---");
    if starts_block {
        out.insert(0, '\\');
    } else if let Some(d) = out.find(['.', ')'])
        && d > 0
        && out[..d].chars().all(|c| c.is_ascii_digit())
    {
        out.insert(d, '\\');
    }
    out
}

/// Runbook prose, given structure: paragraphs (lines joined), numbered and bulleted lists
/// (an item's indented or following lines continue it). A blank line ends a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Para(String),
    Numbered(Vec<(u32, String)>),
    Bullets(Vec<String>),
}

pub fn blocks(text: &str) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut open = false;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            open = false;
            continue;
        }
        if let Some((n, rest)) = numbered(line) {
            match out.last_mut() {
                Some(Block::Numbered(items)) if open => items.push((n, rest.to_owned())),
                _ => out.push(Block::Numbered(vec![(n, rest.to_owned())])),
            }
        } else if let Some(rest) = line.strip_prefix("- ").or_else(|| line.strip_prefix("* ")) {
            match out.last_mut() {
                Some(Block::Bullets(items)) if open => items.push(rest.trim().to_owned()),
                _ => out.push(Block::Bullets(vec![rest.trim().to_owned()])),
            }
        } else {
            let joined = match out.last_mut() {
                Some(Block::Para(p)) if open => Some(p),
                Some(Block::Numbered(items)) if open => items.last_mut().map(|(_, t)| t),
                Some(Block::Bullets(items)) if open => items.last_mut(),
                _ => None,
            };
            match joined {
                Some(t) => {
                    t.push(' ');
                    t.push_str(line);
                }
                None => out.push(Block::Para(line.to_owned())),
            }
        }
        open = true;
    }
    out
}

fn numbered(line: &str) -> Option<(u32, &str)> {
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 || digits > 4 {
        return None;
    }
    let rest = &line[digits..];
    let rest = rest
        .strip_prefix(". ")
        .or_else(|| rest.strip_prefix(") "))?;
    Some((line[..digits].parse().ok()?, rest.trim()))
}

/// Prose as HTML blocks.
pub fn html_prose(text: &str) -> String {
    let mut out = String::new();
    for b in blocks(text) {
        match b {
            Block::Para(p) => out.push_str(&format!("<p>{}</p>", html_inline(&p))),
            Block::Numbered(items) => {
                let start = items.first().map(|(n, _)| *n).unwrap_or(1);
                if start == 1 {
                    out.push_str("<ol>");
                } else {
                    out.push_str(&format!("<ol start=\"{start}\">"));
                }
                for (_, t) in items {
                    out.push_str(&format!("<li>{}</li>", html_inline(&t)));
                }
                out.push_str("</ol>");
            }
            Block::Bullets(items) => {
                out.push_str("<ul>");
                for t in items {
                    out.push_str(&format!("<li>{}</li>", html_inline(&t)));
                }
                out.push_str("</ul>");
            }
        }
    }
    out
}

/// Prose as Markdown blocks, separated by blank lines.
pub fn md_prose(text: &str) -> String {
    let mut parts = Vec::new();
    for b in blocks(text) {
        parts.push(match b {
            Block::Para(p) => md_inline(&p),
            Block::Numbered(items) => items
                .iter()
                .map(|(n, t)| format!("{n}. {}", md_inline(t)))
                .collect::<Vec<_>>()
                .join("\n"),
            Block::Bullets(items) => items
                .iter()
                .map(|t| format!("- {}", md_inline(t)))
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    parts.join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_follow_commonmark() {
        assert_eq!(
            spans("run `fsck -n` now"),
            vec![
                Span::Text("run "),
                Span::Code("fsck -n"),
                Span::Text(" now")
            ]
        );
        assert_eq!(spans("a `` b`c `` d")[1], Span::Code("b`c"));
        assert_eq!(spans("one ` tick"), vec![Span::Text("one ` tick")]);
    }

    #[test]
    fn html_is_escaped_and_code_marked() {
        assert_eq!(
            html_inline("<b>&'\" `x<y`"),
            "&lt;b&gt;&amp;&#39;&quot; <code><span class=\"w\">x&lt;y</span></code>"
        );
    }

    #[test]
    fn code_breaks_at_spaces_only_unless_a_word_is_too_long() {
        assert_eq!(
            html_code("systemctl is-active a.service"),
            "systemctl <span class=\"w\">is-active</span> <span class=\"w\">a.service</span>"
        );
        let long = format!("http://x/{}", "a".repeat(80));
        assert_eq!(html_code(&long), long);
        assert_eq!(html_code("a\nb-c"), "a\n<span class=\"w\">b-c</span>");
    }

    #[test]
    fn markdown_escapes_what_would_render_differently() {
        assert_eq!(md_inline("a *b* <i> [x](y)"), r"a \*b\* \<i\> \[x\](y)");
        assert_eq!(
            md_inline("node_exporter and _x_"),
            r"node_exporter and \_x\_"
        );
        assert_eq!(md_inline("keep `a*b|c` as code"), "keep `a*b|c` as code");
        assert_eq!(md_inline("# not a heading"), r"\# not a heading");
        assert_eq!(md_inline("2024. a year"), r"2024\. a year");
        assert_eq!(md_inline("&amp; & x"), r"\&amp; & x");
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_code("`x"), "`` `x ``");
        assert_eq!(md_fence("a\n```\nb", "sh"), "````sh\na\n```\nb\n````");
    }

    #[test]
    fn prose_gets_paragraphs_and_lists() {
        let t = "OFF THE TIMELINE. Stop.\n1. Leave it powered. Do not\n   power-cycle it.\n2. Repair:\n   run `fsck`.\n\nThen\nwait.\n- a\n- b\n";
        assert_eq!(
            blocks(t),
            vec![
                Block::Para("OFF THE TIMELINE. Stop.".into()),
                Block::Numbered(vec![
                    (1, "Leave it powered. Do not power-cycle it.".into()),
                    (2, "Repair: run `fsck`.".into()),
                ]),
                Block::Para("Then wait.".into()),
                Block::Bullets(vec!["a".into(), "b".into()]),
            ]
        );
        assert!(html_prose(t).contains("<ol><li>Leave it powered."));
        assert!(md_prose(t).contains("\n1. Leave it powered. Do not power-cycle it.\n2. "));
    }
}
