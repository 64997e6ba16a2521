//! Command lines folded to fit the printed page: a line longer than [`WIDTH`] is broken only
//! where the shell allows it, and every break is marked by a `\` at the end of the line, so a
//! line on the paper is a line to type, exactly as printed.
//!
//! Three kinds of break, all of them line continuations the shell removes:
//! - between words, outside quotes: `a \` then the next word, indented;
//! - inside a double-quoted string or inside a long word: `ab\` then `cd` at the start of the
//!   next line (nothing before it: a space there would be typed into the string);
//! - inside a single-quoted string, where a `\` is only a character: the quote is closed, the
//!   line continued, and the quote reopened at the start of the next line (`'ab'\` then `'cd'`).
//!
//! [`unfold`] joins the lines back by the rule the binder prints ([`RULE`]): it gives back the
//! line as it was before folding.

/// The longest line printed in a command box: fits A4 and US Letter with the binder's margins
/// and its 8.6pt monospace (about 92 columns on A4), with room for a wider monospace font.
pub const WIDTH: usize = 84;

/// How a person reads a folded line (the "how to read" page says it once).
pub const RULE: &str = "A line that ends in `\\` goes on on the next line: type both as printed, and the shell joins them (the `\\`, the line break and the spaces that start the next line vanish; where a line ends in `'\\` and the next starts with `'`, both quotes vanish too). No other line of a command is broken: each line on the paper is one line to type.";

/// What a break before a character would be inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Unquoted,
    Single,
    Double,
    /// No break here: an escape, a `$name`, a `${...}`, a comment, a here-document.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Single,
    Double,
    /// `$(` or a `(` inside one: its parentheses still open.
    Sub(u32),
    Backtick,
    Brace,
}

/// The context of the gap before each character of `chars`.
fn contexts(chars: &[char]) -> Vec<Ctx> {
    let mut ctx = vec![Ctx::Never; chars.len() + 1];
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    let mut frozen = false;
    let mut comment = false;
    let mut name = false;
    while i < chars.len() {
        let c = chars[i];
        let here = match stack.last() {
            _ if frozen || comment => Ctx::Never,
            None | Some(Frame::Sub(_)) | Some(Frame::Backtick) => Ctx::Unquoted,
            Some(Frame::Single) => Ctx::Single,
            Some(Frame::Double) => Ctx::Double,
            Some(Frame::Brace) => Ctx::Never,
        };
        if name && !(c.is_ascii_alphanumeric() || c == '_') {
            name = false;
        }
        ctx[i] = if name { Ctx::Never } else { here };
        if frozen {
            i += 1;
            continue;
        }
        if comment {
            if c == '\n' {
                comment = false;
            }
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        match stack.last().copied() {
            Some(Frame::Single) => {
                if c == '\'' {
                    stack.pop();
                }
            }
            Some(Frame::Brace) => {
                if c == '}' {
                    stack.pop();
                }
            }
            top => {
                let in_double = top == Some(Frame::Double);
                match c {
                    '\\' => {
                        // The escaped character is glued to its backslash.
                        if i + 1 < chars.len() {
                            ctx[i + 1] = Ctx::Never;
                        }
                        i += 2;
                        continue;
                    }
                    '"' if in_double => {
                        stack.pop();
                    }
                    '"' => stack.push(Frame::Double),
                    '\'' if !in_double => stack.push(Frame::Single),
                    '`' if top == Some(Frame::Backtick) => {
                        stack.pop();
                    }
                    '`' => stack.push(Frame::Backtick),
                    '$' => match next {
                        Some('(') => {
                            stack.push(Frame::Sub(0));
                            ctx[i + 1] = Ctx::Never;
                            i += 2;
                            continue;
                        }
                        Some('{') => {
                            stack.push(Frame::Brace);
                            ctx[i + 1] = Ctx::Never;
                            i += 2;
                            continue;
                        }
                        Some(n) if n.is_ascii_alphanumeric() || "_?#@*!$-".contains(n) => {
                            name = true;
                        }
                        _ => {}
                    },
                    '(' if !in_double => {
                        if let Some(Frame::Sub(d)) = stack.last_mut() {
                            *d += 1;
                        }
                    }
                    ')' if !in_double => {
                        if let Some(Frame::Sub(d)) = stack.last_mut() {
                            if *d == 0 {
                                stack.pop();
                            } else {
                                *d -= 1;
                            }
                        }
                    }
                    '#' if !in_double
                        && i.checked_sub(1)
                            .map(|p| chars[p])
                            .is_none_or(|p| p.is_whitespace() || p == ';') =>
                    {
                        comment = true;
                    }
                    '<' if !in_double && next == Some('<') => frozen = true,
                    _ => {}
                }
            }
        }
        i += 1;
    }
    ctx
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    Space,
    Glued,
    Single,
}

/// Where a line may be broken before `chars[i]`, how, and whether it is a nice place (after a
/// space or a punctuation mark rather than inside a word).
fn break_at(chars: &[char], ctx: &[Ctx], i: usize) -> Option<(Break, bool)> {
    let (a, b) = (chars[i - 1], chars[i]);
    if a == '\n' || b == '\n' {
        return None;
    }
    let punct = |c: char| c == ' ' || ",;:/.-=)]}|&+".contains(c);
    let word = |c: char| c.is_ascii_alphanumeric() || "/._:%+,@-".contains(c);
    match (ctx[i - 1], ctx[i]) {
        (Ctx::Unquoted, Ctx::Unquoted) if a == ' ' && b != ' ' => Some((Break::Space, true)),
        (Ctx::Unquoted, Ctx::Unquoted) if word(a) && word(b) => Some((Break::Glued, punct(a))),
        (Ctx::Double, Ctx::Double) if punct(a) && b != ' ' && b != '"' && a != '\\' => {
            Some((Break::Glued, true))
        }
        (Ctx::Single, Ctx::Single) if b != '\'' => Some((Break::Single, punct(a))),
        _ => None,
    }
}

/// `text` with every line longer than `width` broken where the shell allows it.
pub fn fold(text: &str, width: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let ctx = contexts(&chars);
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    let mut start = 0;
    while start <= chars.len() {
        let end = chars[start..]
            .iter()
            .position(|&c| c == '\n')
            .map_or(chars.len(), |p| start + p);
        fold_line(&chars, &ctx, start, end, width, &mut out);
        if end < chars.len() {
            out.push('\n');
        }
        start = end + 1;
    }
    out
}

fn fold_line(
    chars: &[char],
    ctx: &[Ctx],
    start: usize,
    end: usize,
    width: usize,
    out: &mut String,
) {
    let indent = chars[start..end].iter().take_while(|&&c| c == ' ').count();
    // What the current printed line already holds: the indentation of a continuation, or the
    // reopened quote.
    let mut lead = 0;
    let mut from = start;
    while lead + (end - from) > width {
        // The last break that keeps this printed line, with its mark, within the width; a
        // break between words is preferred when one is in the second half of the line.
        let mut best: Option<(usize, Break)> = None;
        let mut best_nice: Option<(usize, Break)> = None;
        let mut best_space: Option<usize> = None;
        for i in (from + 1)..end {
            let Some((kind, nice)) = break_at(chars, ctx, i) else {
                continue;
            };
            let mark = match kind {
                Break::Space | Break::Glued => 1,
                Break::Single => 2,
            };
            if lead + (i - from) + mark > width {
                break;
            }
            if i - from < 8 {
                continue;
            }
            best = Some((i, kind));
            if nice {
                best_nice = Some((i, kind));
            }
            if kind == Break::Space {
                best_space = Some(i);
            }
        }
        let half = |i: usize| lead + (i - from) >= width / 2;
        let chosen = match (best_space, best_nice, best) {
            (Some(s), _, _) if half(s) => (s, Break::Space),
            (_, Some(n), _) if half(n.0) => n,
            (_, _, Some(b)) => b,
            (Some(s), _, None) => (s, Break::Space),
            (None, _, None) => break,
        };
        let (at, kind) = chosen;
        out.extend(&chars[from..at]);
        match kind {
            Break::Space => {
                out.push_str("\\\n");
                let pad = indent + 4;
                out.extend(std::iter::repeat_n(' ', pad));
                lead = pad;
            }
            Break::Glued => {
                out.push_str("\\\n");
                lead = 0;
            }
            Break::Single => {
                out.push_str("'\\\n'");
                lead = 1;
            }
        }
        from = at;
    }
    out.extend(&chars[from..end]);
}

/// The lines of a folded command joined back by [`RULE`].
pub fn unfold(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut lines = text.split('\n');
    while let Some(first) = lines.next() {
        let mut line = first.to_owned();
        while line.ends_with('\\') {
            let Some(next) = lines.next() else { break };
            if line.ends_with("'\\") && next.starts_with('\'') {
                line.truncate(line.len() - 2);
                line.push_str(&next[1..]);
            } else {
                line.pop();
                line.push_str(next.trim_start_matches(' '));
            }
        }
        out.push(line);
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, width: usize) -> String {
        let folded = fold(line, width);
        for l in folded.lines() {
            assert!(l.chars().count() <= width, "too long: {l:?} in\n{folded}");
        }
        assert_eq!(unfold(&folded), line, "\n{folded}");
        folded
    }

    #[test]
    fn short_lines_are_left_alone() {
        assert_eq!(fold("echo a b", 84), "echo a b");
        assert_eq!(fold("a\n\nb\n", 84), "a\n\nb\n");
    }

    #[test]
    fn words_break_between_them_and_indent() {
        let line = "curl -sS -X POST -m 30 -H 'Content-Type: application/json' -w '\\n%{http_code}\\n' \"$RECOVER_WEBHOOK\"";
        let f = check(line, 40);
        assert!(f.lines().nth(1).unwrap().starts_with("    "), "{f}");
    }

    #[test]
    fn single_quotes_are_closed_and_reopened() {
        let line = r#"curl --data-raw '{"text":"ABORTED: Power failure recovery, DGX Spark is off the 30m timeline. Following the long procedure."}'"#;
        let f = check(line, 40);
        assert!(f.contains("'\\\n'"), "{f}");
    }

    #[test]
    fn double_quotes_and_long_words_break_glued() {
        check(
            "echo \"status: $st, charge: $ch, and a rather long tail of words here\"",
            30,
        );
        check(
            "curl https://hooks.slack.com/services/T000/B000/abcdefghijklmnopqrstuvwxyz0123456789",
            30,
        );
    }

    #[test]
    fn nothing_breaks_inside_names_expansions_or_escapes() {
        let line =
            "x=${SOME_VERY_LONG_VARIABLE_NAME_THAT_GOES_ON:-default} $ANOTHER_LONG_NAME_HERE a\\ b";
        let f = fold(line, 20);
        assert_eq!(unfold(&f), line);
        assert!(f.contains("${SOME_VERY_LONG_VARIABLE_NAME_THAT_GOES_ON:-default}"));
        assert!(f.contains("$ANOTHER_LONG_NAME_HERE"));
    }

    /// Every folded line means what the line meant: the shell prints the same words.
    #[test]
    fn the_shell_reads_a_folded_line_as_the_line() {
        let lines = [
            r#"printf '%s|' 'a b  c' "d  $HOME e" f\ g 'it'\''s' "x\"y" '{"k":"v w x y z"}' 'a:b,c;d/e.f-g' "p:q,r;s/t.u-v" https://h.example/a/b/c/d/e/f"#,
            "printf '%s|' \"$(printf '%s' 'in a sub shell, with words')\" `echo back ticks here`",
            "for w in one two three four five six seven; do printf '%s|' \"$w\"; done",
        ];
        for line in lines {
            for width in [12, 20, 33] {
                let f = fold(line, width);
                assert_eq!(unfold(&f), line);
                let run = |s: &str| {
                    std::process::Command::new("sh")
                        .arg("-c")
                        .arg(s)
                        .env("HOME", "/h o/me")
                        .output()
                        .expect("sh runs")
                        .stdout
                };
                assert_eq!(
                    String::from_utf8_lossy(&run(&f)),
                    String::from_utf8_lossy(&run(line)),
                    "width {width}:\n{f}"
                );
            }
        }
    }

    #[test]
    fn comments_and_here_documents_are_never_broken() {
        let line = "echo a # a comment that is far too long to fit but must stay as it is";
        assert!(fold(line, 20).contains("# a comment that is far too long"));
        let doc = "cat <<EOF\nsome text in a here document that is long enough to be folded\nEOF";
        assert_eq!(fold(doc, 20), doc);
    }
}
