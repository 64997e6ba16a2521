//! Runbook patterns (Rust `regex` syntax) as `grep` command lines a person can type.
//!
//! `grep -E` takes POSIX extended regular expressions, which have no `\s`, `\d`, `\w`, no
//! inline flags and no escapes inside brackets. [`translate`] rewrites what has a POSIX
//! equivalent and gives up on the rest, which is then printed for `grep -P` (PCRE reads
//! Rust's syntax as written). `grep` reads line by line, as `recover`'s patterns do (`^`
//! and `$` match at every line).

/// A pattern ready for `grep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grep {
    /// A POSIX ERE: `grep -E` (with `-i` when the pattern started with `(?i)`).
    Ere { pattern: String, ignore_case: bool },
    /// No POSIX equivalent: `grep -P` with the pattern as written.
    Perl(String),
}

impl Grep {
    /// `grep -E 'PATTERN' FILE` (`options` go first, e.g. `-q`).
    pub fn line(&self, options: &str, file: &str) -> String {
        let opts = if options.is_empty() {
            String::new()
        } else {
            format!("{options} ")
        };
        match self {
            Grep::Ere {
                pattern,
                ignore_case,
            } => {
                let i = if *ignore_case { "-i " } else { "" };
                format!("grep {opts}{i}-E {} {file}", quoted(pattern))
            }
            Grep::Perl(p) => format!("grep {opts}-P {} {file}", quoted(p)),
        }
    }
}

/// In single quotes always, so that a pattern reads the same in every line.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `grep` form of a Rust regex: POSIX ERE when it can be written so, else `grep -P`.
pub fn translate(rust: &str) -> Grep {
    match to_ere(rust) {
        Some((pattern, ignore_case)) => Grep::Ere {
            pattern,
            ignore_case,
        },
        None => Grep::Perl(rust.to_owned()),
    }
}

/// Translate, or None when some construct has no POSIX ERE equivalent.
fn to_ere(rust: &str) -> Option<(String, bool)> {
    let mut s = rust;
    let mut ignore_case = false;
    // Leading flags: `(?i)` becomes `grep -i`; `(?m)` is how grep reads anyway.
    while let Some(rest) = s.strip_prefix("(?").filter(|r| !r.starts_with(':')) {
        let end = rest.find(')')?;
        for f in rest[..end].chars() {
            match f {
                'i' => ignore_case = true,
                'm' => {}
                _ => return None,
            }
        }
        s = &rest[end + 1..];
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let n = *chars.get(i + 1)?;
                i += 2;
                match n {
                    's' => out.push_str("[[:space:]]"),
                    'S' => out.push_str("[^[:space:]]"),
                    'd' => out.push_str("[0-9]"),
                    'D' => out.push_str("[^0-9]"),
                    'w' => out.push_str("[[:alnum:]_]"),
                    'W' => out.push_str("[^[:alnum:]_]"),
                    '.' | '[' | ']' | '(' | ')' | '{' | '}' | '*' | '+' | '?' | '|' | '^' | '$'
                    | '\\' => {
                        out.push('\\');
                        out.push(n);
                    }
                    n if n.is_ascii_punctuation() => out.push(n),
                    _ => return None,
                }
                continue;
            }
            '[' => {
                let (class, next) = bracket(&chars, i)?;
                out.push_str(&class);
                i = next;
                continue;
            }
            '(' => {
                if chars.get(i + 1) == Some(&'?') {
                    // Only a non-capturing group has an ERE form (a plain group).
                    if chars.get(i + 2) == Some(&':') {
                        out.push('(');
                        i += 3;
                        continue;
                    }
                    return None;
                }
                out.push('(');
            }
            '*' | '+' | '?' | '}' => {
                out.push(c);
                // A lazy quantifier finds a match exactly when the greedy one does.
                if chars.get(i + 1) == Some(&'?') {
                    i += 1;
                }
            }
            _ => out.push(c),
        }
        i += 1;
    }
    Some((out, ignore_case))
}

/// A bracket expression starting at `chars[at] == '['`: its ERE form and the index after it.
fn bracket(chars: &[char], at: usize) -> Option<(String, usize)> {
    let mut i = at + 1;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    // ERE has no escapes in brackets: `]` must come first, `-` last, `^` not first.
    let mut items = String::new();
    let (mut close, mut dash, mut caret) = (false, false, false);
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        match c {
            ']' if !first => {
                i += 1;
                break;
            }
            '[' if chars.get(i + 1) == Some(&':') => {
                let end = (i + 2..chars.len().saturating_sub(1))
                    .find(|&k| chars[k] == ':' && chars[k + 1] == ']')?;
                items.extend(&chars[i..end + 2]);
                i = end + 2;
                first = false;
                continue;
            }
            '[' => return None,
            '&' | '~' if chars.get(i + 1) == Some(&c) => return None,
            '\\' => {
                let n = *chars.get(i + 1)?;
                i += 2;
                match n {
                    's' => items.push_str("[:space:]"),
                    'd' => items.push_str("0-9"),
                    'w' => items.push_str("[:alnum:]_"),
                    ']' => close = true,
                    '-' => dash = true,
                    '^' => caret = true,
                    n if n.is_ascii_punctuation() => items.push(n),
                    _ => return None,
                }
                first = false;
                continue;
            }
            ']' => close = true,
            '^' => caret = true,
            '-' if first || chars.get(i + 1) == Some(&']') => dash = true,
            c => items.push(c),
        }
        first = false;
        i += 1;
    }
    let mut out = String::from("[");
    if negated {
        out.push('^');
    }
    if close {
        out.push(']');
    }
    if items.is_empty() && !close && !dash && caret && !negated {
        // `[\^]` alone: a caret first would negate, so write it as an escaped character.
        return Some(("\\^".into(), i));
    }
    out.push_str(&items);
    if caret {
        out.push('^');
    }
    if dash {
        out.push('-');
    }
    out.push(']');
    Some((out, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ere(p: &str) -> String {
        match translate(p) {
            Grep::Ere { pattern, .. } => pattern,
            Grep::Perl(p) => panic!("{p} was not translated"),
        }
    }

    #[test]
    fn plain_alternatives_are_unchanged() {
        assert_eq!(ere("EXT4-fs error|I/O error"), "EXT4-fs error|I/O error");
        assert_eq!(
            ere("Inode .* has illegal block"),
            "Inode .* has illegal block"
        );
        assert_eq!(ere("node_"), "node_");
    }

    #[test]
    fn perl_classes_become_posix_classes() {
        assert_eq!(
            ere(r#""BackendState":\s*"Running""#),
            r#""BackendState":[[:space:]]*"Running""#
        );
        assert_eq!(
            ere(r"\d+\w\S\D\W"),
            "[0-9]+[[:alnum:]_][^[:space:]][^0-9][^[:alnum:]_]"
        );
        assert_eq!(ere(r"[\d\s]"), "[0-9[:space:]]");
    }

    #[test]
    fn escapes_inside_brackets_are_rearranged() {
        assert_eq!(
            ere(r#""value":\s*\[[^\]]*"1"\]"#),
            r#""value":[[:space:]]*\[[^]]*"1"\]"#
        );
        assert_eq!(ere(r"[a\-z]"), "[az-]");
        assert_eq!(ere(r"[\^a]"), "[a^]");
        assert_eq!(ere(r"[]a]"), "[]a]");
        assert_eq!(ere(r"[[:digit:]x]"), "[[:digit:]x]");
    }

    #[test]
    fn flags_groups_and_lazy_quantifiers() {
        assert_eq!(
            translate("(?i)not clean"),
            Grep::Ere {
                pattern: "not clean".into(),
                ignore_case: true
            }
        );
        assert_eq!(ere("(?m)^active$"), "^active$");
        assert_eq!(ere("(?:a|b)c"), "(a|b)c");
        assert_eq!(ere("a.*?b"), "a.*b");
        assert_eq!(ere(r"\/x\-y"), "/x-y");
    }

    #[test]
    fn what_has_no_ere_form_is_left_to_grep_p() {
        for p in [
            r"\bword\b",
            "(?s)a.b",
            r"\p{L}",
            "a(?i)b",
            r"\n",
            r"\A",
            "[a&&b]",
        ] {
            assert_eq!(translate(p), Grep::Perl(p.into()), "{p}");
        }
    }

    #[test]
    fn grep_lines_quote_the_pattern() {
        assert_eq!(
            translate("it's").line("-q", "s4.out"),
            r"grep -q -E 'it'\''s' s4.out"
        );
        assert_eq!(translate("(?i)x").line("", "f"), "grep -i -E 'x' f");
        assert_eq!(translate(r"\bx").line("", "f"), r"grep -P '\bx' f");
    }
}
