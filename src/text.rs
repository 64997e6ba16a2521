//! Text from outside the process (the box's output, a journal, a unit's description) made
//! safe to show: one home for the cleaning every reporter and record uses. A leaf: it needs
//! nothing of the crate.

/// One line of someone else's output made safe for a single terminal line: no escape codes,
/// no control characters, tabs as spaces.
pub fn one_line(s: &str) -> String {
    console::strip_ansi_codes(s)
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Text made safe to print as several lines: no escape codes, no control characters but newlines.
pub fn clean(s: &str) -> String {
    console::strip_ansi_codes(s)
        .chars()
        .map(|c| match c {
            '\t' => ' ',
            '\n' => '\n',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// One trimmed line with every control character a blank, at most `max` characters (then `…`):
/// for short values kept in records (who holds a hold, and why).
pub fn bounded(text: &str, max: usize) -> String {
    let line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > max {
        let mut s: String = line.chars().take(max).collect();
        s.push('…');
        s
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_never_pass() {
        let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2Jok\tthen\r\nmore";
        assert_eq!(one_line(hostile), "ok then  more");
        assert_eq!(clean(hostile), "ok then?\nmore");
        assert_eq!(bounded("  a\u{7}b ", 10), "a b");
        assert_eq!(bounded("ééééé", 3), "ééé…");
    }
}
