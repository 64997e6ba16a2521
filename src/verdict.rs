//! Verdicts: pure functions that turn what a command or an HTTP request produced into
//! pass, fail or abort, with a one-line reason an operator can read at midnight.
//!
//! Nothing here waits, prints or touches the outside world. Reasons are bounded
//! ([`REASON_MAX_CHARS`]) and never contain raw control characters: anything that came
//! from the target is escaped (`\n`, `\t`, `\u{1b}`, ...) before it is quoted.

use regex::{Regex, RegexBuilder};

/// The longest reason any verdict carries, in characters.
pub const REASON_MAX_CHARS: usize = 300;

/// Characters of an output line or body quoted in a reason (quotes excluded).
const QUOTE_MAX_CHARS: usize = 200;
/// Characters of a response body shown after `body starts:`.
const BODY_MAX_CHARS: usize = 120;
/// Characters of a regex shown between slashes.
const PATTERN_MAX_CHARS: usize = 60;
/// Exit codes or HTTP statuses listed in a reason before the list is cut.
const LIST_MAX_ITEMS: usize = 8;
/// Characters of context kept before a match found deep inside a long line.
const CONTEXT_BEFORE_MATCH: usize = 40;
/// Characters of a match that must fit in a quote taken from the start of its line.
const MATCH_SHOWN_CHARS: usize = 20;

/// What a command produced. `exit` is None when it was killed (timeout, signal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// `expect:` / `abort_if:` of a step: each field optional; regexes already compiled.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub exit: Option<Vec<i32>>,
    pub stdout: Option<Regex>,
    pub stderr: Option<Regex>,
}

/// HTTP expectations: `expect: { status: 200, body: '"choices"' }`.
#[derive(Debug, Clone, Default)]
pub struct HttpExpect {
    pub status: Option<Vec<u16>>,
    pub body: Option<Regex>,
}

/// The outcome of one step, with the reason when it is not a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Abort(String),
}

/// Compiles a runbook regex the way an operator who knows `grep` expects it to behave:
/// `^` and `$` match at the start and end of every line (`\n` or `\r\n`), not only of the
/// whole output. Plain `Regex::new("^active$")` never matches `systemctl is-active`'s
/// `"active\n"`, because without multi-line mode `$` matches only at the very end.
pub fn pattern(source: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(source)
        .multi_line(true)
        .crlf(true)
        .build()
}

/// Judges a finished (or killed) command.
///
/// 1. `abort_if` first, even on the partial output of a timed-out command: any given field
///    that matches (exit code in the list, regex found in stdout / stderr) aborts, and the
///    reason quotes the first matching line.
/// 2. A timed-out command fails, with its last output line.
/// 3. `expect`: every given field must hold; the exit code must be in `exit`, which is
///    `[0]` when `expect` or its `exit` is absent. A killed command (no exit status) fails.
pub fn judge(out: &Output, expect: Option<&Matcher>, abort_if: Option<&Matcher>) -> Verdict {
    if let Some(reason) = abort_if.and_then(|m| abort_reason(out, m)) {
        return Verdict::Abort(bounded(reason));
    }
    if out.timed_out {
        let mut reason = String::from("timed out");
        if let Some(line) = last_output_line(out) {
            reason.push_str(&format!(" (last line: {})", quote(line, QUOTE_MAX_CHARS)));
        }
        return Verdict::Fail(bounded(reason));
    }
    let Some(code) = out.exit else {
        return Verdict::Fail("killed (no exit status)".to_string());
    };
    let expected_exit = expect.and_then(|m| m.exit.as_deref()).unwrap_or(&[0]);
    if !expected_exit.contains(&code) {
        return Verdict::Fail(bounded(format!(
            "exit {code}, expected {}",
            alternatives(expected_exit, "exit")
        )));
    }
    if let Some(m) = expect {
        for (name, re, text) in streams(m, out) {
            if let Some(re) = re
                && !re.is_match(text)
            {
                let seen = match last_line(text) {
                    Some(line) => format!("last line: {}", quote(line, QUOTE_MAX_CHARS)),
                    None => format!("{name} empty"),
                };
                return Verdict::Fail(bounded(format!(
                    "{name} did not match {} ({seen})",
                    show_pattern(re)
                )));
            }
        }
    }
    Verdict::Pass
}

/// Judges an HTTP response. Without `status`, any 2xx passes; with it, the status must be
/// in the list. A `body` regex must be found in the body.
pub fn judge_http(status: u16, body: &str, expect: Option<&HttpExpect>) -> Verdict {
    let statuses = expect.and_then(|e| e.status.as_deref());
    let status_ok = match statuses {
        Some(list) => list.contains(&status),
        None => (200..300).contains(&status),
    };
    if !status_ok {
        let wanted = match statuses {
            Some(list) => alternatives(list, "status"),
            None => "2xx".to_string(),
        };
        return Verdict::Fail(bounded(format!("HTTP {status}, expected {wanted}")));
    }
    if let Some(re) = expect.and_then(|e| e.body.as_ref())
        && !re.is_match(body)
    {
        let seen = if body.trim().is_empty() {
            "body empty".to_string()
        } else {
            format!(
                "body starts: {}",
                quote(&squeeze(body, BODY_MAX_CHARS), BODY_MAX_CHARS)
            )
        };
        return Verdict::Fail(bounded(format!(
            "body did not match {} ({seen})",
            show_pattern(re)
        )));
    }
    Verdict::Pass
}

/// The last non-empty line of `s`, trimmed. Lines end at `\n` or `\r`, so a progress line
/// rewritten with carriage returns yields what a terminal would show last.
pub fn last_line(s: &str) -> Option<&str> {
    s.split(is_line_end)
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
}

fn streams<'a>(m: &'a Matcher, out: &'a Output) -> [(&'static str, &'a Option<Regex>, &'a str); 2] {
    [
        ("stdout", &m.stdout, out.stdout.as_str()),
        ("stderr", &m.stderr, out.stderr.as_str()),
    ]
}

fn abort_reason(out: &Output, m: &Matcher) -> Option<String> {
    if let (Some(codes), Some(code)) = (&m.exit, out.exit)
        && codes.contains(&code)
    {
        return Some(format!(
            "exit {code} matched abort_if {}",
            list(codes, LIST_MAX_ITEMS)
        ));
    }
    for (name, re, text) in streams(m, out) {
        if let Some(re) = re
            && let Some(found) = re.find(text)
        {
            return Some(format!(
                "{name} matched {}: {}",
                show_pattern(re),
                quote_match(text, found.start(), found.end())
            ));
        }
    }
    None
}

/// Last line of stdout, or of stderr when stdout has none.
fn last_output_line(out: &Output) -> Option<&str> {
    last_line(&out.stdout).or_else(|| last_line(&out.stderr))
}

fn is_line_end(c: char) -> bool {
    c == '\n' || c == '\r'
}

/// Quotes the line holding a match, cut around the match when the line is long.
fn quote_match(text: &str, start: usize, end: usize) -> String {
    // A match that begins with line ends belongs to the line after them.
    let skipped = text[start..end]
        .find(|c| !is_line_end(c))
        .unwrap_or(end - start);
    let at = start + skipped;
    let line_start = text[..at].rfind(is_line_end).map_or(0, |i| i + 1);
    let line_end = text[at..].find(is_line_end).map_or(text.len(), |i| at + i);
    let raw = &text[line_start..line_end];
    let line = raw.trim_start();
    let at_in_line = (at - line_start).saturating_sub(raw.len() - line.len());
    let line = line.trim_end();

    let before = &line[..at_in_line.min(line.len())];
    if escaped_width(line, QUOTE_MAX_CHARS) <= QUOTE_MAX_CHARS
        || escaped_width(before, QUOTE_MAX_CHARS) + MATCH_SHOWN_CHARS <= QUOTE_MAX_CHARS
    {
        return quote(line, QUOTE_MAX_CHARS);
    }
    // Deep in a long line: start the quote a little before the match, so it shows.
    let mut from = before.len();
    let mut context = 0;
    for (i, c) in before.char_indices().rev() {
        context += escape_char(c, true).chars().count();
        if context > CONTEXT_BEFORE_MATCH {
            break;
        }
        from = i;
    }
    let mut quoted = String::from("\"…");
    push_escaped(&mut quoted, &line[from..], QUOTE_MAX_CHARS - 1);
    quoted.push('"');
    quoted
}

/// Width of `s` once escaped, counted no further than just past `cap`.
fn escaped_width(s: &str, cap: usize) -> usize {
    let mut width = 0;
    for c in s.chars() {
        width += escape_char(c, true).chars().count();
        if width > cap {
            break;
        }
    }
    width
}

/// `"s"`, escaped, with at most `max` characters between the quotes (`…` marks a cut).
fn quote(s: &str, max: usize) -> String {
    let mut quoted = String::from("\"");
    push_escaped(&mut quoted, s, max);
    quoted.push('"');
    quoted
}

/// Appends `s` escaped, stopping before `max` characters are written (a cut ends in `…`).
fn push_escaped(out: &mut String, s: &str, max: usize) {
    let mut written = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let piece = escape_char(c, true);
        let len = piece.chars().count();
        let room = if chars.peek().is_some() { max - 1 } else { max };
        if written + len > room {
            out.push('…');
            return;
        }
        out.push_str(&piece);
        written += len;
    }
}

/// Characters that must never reach a terminal or a log line raw: C0/C1 controls, DEL,
/// bidirectional overrides and isolates, line and paragraph separators.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_char(c: char, in_quotes: bool) -> String {
    match c {
        '\n' => "\\n".to_string(),
        '\r' => "\\r".to_string(),
        '\t' => "\\t".to_string(),
        '"' | '\\' if in_quotes => format!("\\{c}"),
        c if is_unsafe(c) => format!("\\u{{{:x}}}", u32::from(c)),
        c => c.to_string(),
    }
}

/// `/regex/` with unescaped slashes escaped, control characters escaped, and long
/// patterns cut.
fn show_pattern(re: &Regex) -> String {
    let mut shown = String::from("/");
    let mut written = 0;
    let mut after_backslash = false;
    for c in re.as_str().chars() {
        let piece = if c == '/' && !after_backslash {
            "\\/".to_string()
        } else {
            escape_char(c, false)
        };
        after_backslash = c == '\\' && !after_backslash;
        let len = piece.chars().count();
        if written + len > PATTERN_MAX_CHARS - 1 {
            shown.push('…');
            break;
        }
        shown.push_str(&piece);
        written += len;
    }
    shown.push('/');
    shown
}

/// The start of `s` with whitespace runs folded to one space, so a pretty-printed JSON body
/// previews on one line. Stops one character past `max`, so a quote of it shows the cut.
fn squeeze(s: &str, max: usize) -> String {
    let mut folded = String::new();
    let mut count = 0;
    let mut space = false;
    for c in s.trim_start().chars() {
        if count > max {
            break;
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space {
            folded.push(' ');
            count += 1;
            space = false;
        }
        folded.push(c);
        count += 1;
    }
    folded
}

fn list<T: std::fmt::Display>(items: &[T], max: usize) -> String {
    let mut shown: Vec<String> = items.iter().take(max).map(T::to_string).collect();
    if items.len() > max {
        shown.push("…".to_string());
    }
    format!("[{}]", shown.join(", "))
}

/// `0`, `0 or 1`, `one of 0, 1, 2`; an empty list accepts nothing and says so.
fn alternatives<T: std::fmt::Display>(items: &[T], what: &str) -> String {
    match items {
        [] => format!("nothing (empty {what} list)"),
        [one] => one.to_string(),
        [a, b] => format!("{a} or {b}"),
        _ => {
            let shown = list(items, LIST_MAX_ITEMS);
            format!("one of {}", &shown[1..shown.len() - 1])
        }
    }
}

/// Caps a reason at [`REASON_MAX_CHARS`], marking the cut with `…`.
fn bounded(reason: String) -> String {
    if reason.chars().count() <= REASON_MAX_CHARS {
        return reason;
    }
    let mut cut: String = reason.chars().take(REASON_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    /// The abort condition of the bundled runbook's `dmesg | tail -50` step.
    const PRODUCTION_ABORT: &str = "EXT4-fs error|I/O error";

    fn fixture(rel: &str) -> String {
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fixtures", rel]
            .iter()
            .collect();
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
    }

    /// A captured command: `NAME.stdout`, `NAME.stderr` and `NAME.exit` under `fixtures/DIR`.
    fn captured(dir: &str, name: &str) -> Output {
        let exit = fixture(&format!("{dir}/{name}.exit"));
        Output {
            exit: Some(exit.trim().parse().expect("exit file holds a number")),
            stdout: fixture(&format!("{dir}/{name}.stdout")),
            stderr: fixture(&format!("{dir}/{name}.stderr")),
            timed_out: false,
        }
    }

    fn re(source: &str) -> Regex {
        pattern(source).expect("test regex compiles")
    }

    fn on_stdout(source: &str) -> Matcher {
        Matcher {
            stdout: Some(re(source)),
            ..Matcher::default()
        }
    }

    fn on_stderr(source: &str) -> Matcher {
        Matcher {
            stderr: Some(re(source)),
            ..Matcher::default()
        }
    }

    fn on_exit(codes: &[i32]) -> Matcher {
        Matcher {
            exit: Some(codes.to_vec()),
            ..Matcher::default()
        }
    }

    fn ran(exit: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            exit: Some(exit),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            timed_out: false,
        }
    }

    fn fail(reason: &str) -> Verdict {
        Verdict::Fail(reason.to_string())
    }

    fn abort(reason: &str) -> Verdict {
        Verdict::Abort(reason.to_string())
    }

    fn reason(v: &Verdict) -> &str {
        match v {
            Verdict::Pass => "",
            Verdict::Fail(r) | Verdict::Abort(r) => r,
        }
    }

    fn assert_clean_reason(v: &Verdict) {
        let r = reason(v);
        assert!(r.chars().count() <= REASON_MAX_CHARS, "too long: {r}");
        assert!(!r.chars().any(is_unsafe), "unescaped control: {r:?}");
    }

    #[test]
    fn clean_dmesg_capture_passes_the_production_abort_regex() {
        let out = captured("dmesg", "clean_tail50");
        // The capture holds the near miss `EXT4-fs (vda): mounted filesystem ...`.
        assert!(out.stdout.contains("EXT4-fs (vda)"));
        let abort_if = on_stdout(PRODUCTION_ABORT);
        assert_eq!(judge(&out, None, Some(&abort_if)), Verdict::Pass);
    }

    #[test]
    fn derived_kernel_error_lines_abort_and_the_reason_quotes_the_line() {
        let clean = fixture("dmesg/clean_tail50.stdout");
        let (head, tail) = clean.split_at(clean.len() / 2);
        let head = &head[..=head.rfind('\n').expect("capture has lines")];
        let abort_if = on_stdout(PRODUCTION_ABORT);
        let lines = fixture("dmesg/derived_error_lines.txt");
        assert_eq!(lines.lines().count(), 5);
        for line in lines.lines() {
            let out = ran(0, &format!("{head}{line}\n{tail}"), "");
            let verdict = judge(&out, None, Some(&abort_if));
            assert_eq!(
                verdict,
                abort(&format!(
                    "stdout matched /EXT4-fs error|I\\/O error/: \"{line}\""
                )),
            );
            assert_clean_reason(&verdict);
        }
    }

    #[test]
    fn production_abort_regex_known_gaps() {
        // Real kernel formats of disk trouble that `EXT4-fs error|I/O error` does not
        // catch: a runbook that must abort on them needs a wider regex.
        let abort_if = on_stdout(PRODUCTION_ABORT);
        for line in fixture("dmesg/derived_missed_lines.txt").lines() {
            let out = ran(0, line, "");
            assert_eq!(judge(&out, None, Some(&abort_if)), Verdict::Pass, "{line}");
        }
    }

    #[test]
    fn fsck_captures_judged_with_expect_exit_0() {
        let expect = on_exit(&[0]);
        let table = [
            ("clean", Verdict::Pass),
            ("corrupt", fail("exit 4, expected 0")),
            ("unflagged_forced", fail("exit 4, expected 0")),
            // Real e2fsck behaviour: without -f a filesystem marked clean is not checked.
            ("unflagged", Verdict::Pass),
            // Read-only check skips journal replay and trusts the clean flag.
            ("journal", Verdict::Pass),
            // util-linux fsck ran no checker at all (relative path) and exited 0.
            ("relative_path", Verdict::Pass),
        ];
        for (name, want) in table {
            let out = captured("fsck", name);
            assert_eq!(judge(&out, Some(&expect), None), want, "fsck/{name}");
            assert_eq!(judge(&out, None, None), want, "fsck/{name}, default expect");
        }
    }

    #[test]
    fn fsck_stdout_expectation_catches_a_check_that_checked_nothing() {
        let expect = Matcher {
            exit: Some(vec![0]),
            stdout: Some(re(r"\d+/\d+ files")),
            stderr: None,
        };
        assert_eq!(
            judge(&captured("fsck", "clean"), Some(&expect), None),
            Verdict::Pass
        );
        assert_eq!(
            judge(&captured("fsck", "relative_path"), Some(&expect), None),
            fail(
                "stdout did not match /\\d+\\/\\d+ files/ \
                 (last line: \"fsck from util-linux 2.38.1\")"
            )
        );
    }

    #[test]
    fn abort_if_exit_codes() {
        let abort_if = on_exit(&[4, 8]);
        let table = [
            ("clean", Verdict::Pass),
            ("corrupt", abort("exit 4 matched abort_if [4, 8]")),
        ];
        for (name, want) in table {
            let out = captured("fsck", name);
            assert_eq!(judge(&out, None, Some(&abort_if)), want, "fsck/{name}");
        }
        let killed = Output::default();
        assert_eq!(
            judge(&killed, None, Some(&abort_if)),
            fail("killed (no exit status)")
        );
    }

    #[test]
    fn abort_if_fires_when_any_field_matches_and_before_expect() {
        let abort_if = Matcher {
            exit: Some(vec![12]),
            stdout: Some(re("never")),
            stderr: Some(re("Read-only file system")),
        };
        let expect = on_exit(&[0]);
        let table = [
            (ran(0, "ok", ""), Verdict::Pass),
            (
                ran(
                    0,
                    "ok",
                    "x\ntouch: cannot touch '/x': Read-only file system\n",
                ),
                abort(
                    "stderr matched /Read-only file system/: \
                     \"touch: cannot touch '/x': Read-only file system\"",
                ),
            ),
            (ran(12, "", ""), abort("exit 12 matched abort_if [12]")),
            (ran(1, "", ""), fail("exit 1, expected 0")),
        ];
        for (out, want) in table {
            assert_eq!(judge(&out, Some(&expect), Some(&abort_if)), want, "{out:?}");
        }
    }

    #[test]
    fn timed_out_commands() {
        let abort_if = on_stdout(PRODUCTION_ABORT);
        let partial = "[    3.1] ok\n[    4.2] EXT4-fs error (device vda): boom\n[    5.0] wait";
        let timed_out = |stdout: &str, stderr: &str, exit| Output {
            exit,
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            timed_out: true,
        };
        let table = [
            (
                timed_out(partial, "", None),
                Some(&abort_if),
                abort(
                    "stdout matched /EXT4-fs error|I\\/O error/: \
                     \"[    4.2] EXT4-fs error (device vda): boom\"",
                ),
            ),
            (
                timed_out("[    3.1] ok\nwaiting for device\n\n", "", None),
                Some(&abort_if),
                fail("timed out (last line: \"waiting for device\")"),
            ),
            (
                timed_out("", "ssh: connect to host spark.local port 22\n", None),
                None,
                fail("timed out (last line: \"ssh: connect to host spark.local port 22\")"),
            ),
            (timed_out("", "", None), None, fail("timed out")),
            // The remote `timeout` wrapper's 124 does not turn a timeout into an exit check.
            (timed_out("", "", Some(124)), None, fail("timed out")),
        ];
        for (out, abort_if, want) in table {
            assert_eq!(judge(&out, None, abort_if), want, "{out:?}");
        }
    }

    #[test]
    fn killed_without_exit_status_fails() {
        let out = Output {
            exit: None,
            stdout: "half a line".to_string(),
            ..Output::default()
        };
        let expect = on_stdout("half");
        for expect in [None, Some(&expect)] {
            assert_eq!(judge(&out, expect, None), fail("killed (no exit status)"));
        }
    }

    #[test]
    fn expect_exit_stdout_and_stderr() {
        let both = Matcher {
            exit: None,
            stdout: Some(re("^active$")),
            stderr: Some(re(r"\A\s*\z")),
        };
        let codes = |c: &[i32]| on_exit(c);
        let table: Vec<(Output, Matcher, Verdict)> = vec![
            (ran(0, "active\n", ""), on_stdout("^active$"), Verdict::Pass),
            (
                ran(0, "inactive\n", ""),
                on_stdout("^active$"),
                fail("stdout did not match /^active$/ (last line: \"inactive\")"),
            ),
            (
                ran(0, "", "warning\n"),
                on_stdout("active"),
                fail("stdout did not match /active/ (stdout empty)"),
            ),
            (
                ran(3, "inactive\n", ""),
                on_stdout("^active$"),
                fail("exit 3, expected 0"),
            ),
            (
                ran(0, "", "Job started\n"),
                on_stderr("started"),
                Verdict::Pass,
            ),
            (
                ran(0, "", "Job for x.service failed.\nSee logs.\r\n"),
                on_stderr("started"),
                fail("stderr did not match /started/ (last line: \"See logs.\")"),
            ),
            (ran(0, "active\n", ""), both.clone(), Verdict::Pass),
            (
                ran(0, "active\n", "noise\n"),
                both,
                fail("stderr did not match /\\A\\s*\\z/ (last line: \"noise\")"),
            ),
            (ran(1, "", ""), codes(&[0, 1]), Verdict::Pass),
            (
                ran(2, "", ""),
                codes(&[0, 1]),
                fail("exit 2, expected 0 or 1"),
            ),
            (
                ran(9, "", ""),
                codes(&[0, 1, 2]),
                fail("exit 9, expected one of 0, 1, 2"),
            ),
            (
                ran(0, "", ""),
                codes(&[]),
                fail("exit 0, expected nothing (empty exit list)"),
            ),
            (
                ran(-1, "", ""),
                Matcher::default(),
                fail("exit -1, expected 0"),
            ),
        ];
        for (out, expect, want) in table {
            assert_eq!(judge(&out, Some(&expect), None), want, "{out:?}");
        }
    }

    #[test]
    fn multi_line_patterns_match_like_grep() {
        let out = ran(0, "active\n", "");
        let plain = Matcher {
            stdout: Some(Regex::new("^active$").expect("compiles")),
            ..Matcher::default()
        };
        assert!(matches!(judge(&out, Some(&plain), None), Verdict::Fail(_)));
        assert_eq!(
            judge(&out, Some(&on_stdout("^active$")), None),
            Verdict::Pass
        );
        let crlf = ran(0, "inactive\r\nactive\r\n", "");
        assert_eq!(
            judge(&crlf, Some(&on_stdout("^active$")), None),
            Verdict::Pass
        );
    }

    #[test]
    fn http_status_and_body() {
        let ok = fixture("http/chat_completion_ok.json");
        let loading = fixture("http/llamacpp_loading_503.json");
        let expect = |status: &[u16], body: Option<&str>| HttpExpect {
            status: (!status.is_empty()).then(|| status.to_vec()),
            body: body.map(re),
        };
        let smoke = expect(&[200], Some(r#""choices""#));
        let created = expect(&[200, 201], None);
        let length = expect(&[], Some("\"finish_reason\": \"length\""));
        let none = HttpExpect {
            status: Some(vec![]),
            body: None,
        };
        let table = [
            (200, ok.as_str(), None, Verdict::Pass),
            (204, "", None, Verdict::Pass),
            (200, ok.as_str(), Some(&smoke), Verdict::Pass),
            (
                503,
                loading.as_str(),
                Some(&smoke),
                fail("HTTP 503, expected 200"),
            ),
            (503, loading.as_str(), None, fail("HTTP 503, expected 2xx")),
            (301, "", None, fail("HTTP 301, expected 2xx")),
            (
                200,
                loading.as_str(),
                Some(&smoke),
                fail(
                    "body did not match /\"choices\"/ (body starts: \"{\\\"error\\\":\
                     {\\\"code\\\":503,\\\"message\\\":\\\"Loading model\\\",\
                     \\\"type\\\":\\\"unavailable_error\\\"}}\")",
                ),
            ),
            (
                200,
                "  \n",
                Some(&smoke),
                fail("body did not match /\"choices\"/ (body empty)"),
            ),
            (201, "{}", Some(&created), Verdict::Pass),
            (
                202,
                "{}",
                Some(&created),
                fail("HTTP 202, expected 200 or 201"),
            ),
            (
                200,
                ok.as_str(),
                Some(&length),
                fail(
                    "body did not match /\"finish_reason\": \"length\"/ (body starts: \
                     \"{ \\\"id\\\": \\\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\\\", \
                     \\\"object\\\": \\\"chat.completion\\\", \\\"created\\\": 1741569952, \
                     \\\"model…\")",
                ),
            ),
            (
                200,
                "x",
                Some(&none),
                fail("HTTP 200, expected nothing (empty status list)"),
            ),
        ];
        for (status, body, expect, want) in table {
            let got = judge_http(status, body, expect);
            assert_clean_reason(&got);
            assert_eq!(got, want, "HTTP {status}");
        }
    }

    #[test]
    fn reasons_escape_control_characters() {
        let line = "\u{1b}[31mI/O error\u{1b}[0m\tdev\u{7}\u{202e}sda \"x\" \\ end";
        let out = ran(0, &format!("ok\n{line}\n"), "");
        let verdict = judge(&out, None, Some(&on_stdout("I/O error")));
        assert_eq!(
            verdict,
            abort(
                "stdout matched /I\\/O error/: \"\\u{1b}[31mI/O error\\u{1b}[0m\\tdev\
                 \\u{7}\\u{202e}sda \\\"x\\\" \\\\ end\""
            )
        );
        assert_clean_reason(&verdict);

        let timed_out = Output {
            stdout: "10%\r50%\r\u{1b}[K90%".to_string(),
            timed_out: true,
            ..Output::default()
        };
        assert_eq!(
            judge(&timed_out, None, None),
            fail("timed out (last line: \"\\u{1b}[K90%\")")
        );

        let pattern_with_tab = Matcher {
            stdout: Some(Regex::new("a\tb").expect("compiles")),
            ..Matcher::default()
        };
        assert_eq!(
            judge(&ran(0, "zzz", ""), Some(&pattern_with_tab), None),
            fail("stdout did not match /a\\tb/ (last line: \"zzz\")")
        );
    }

    #[test]
    fn reasons_stay_short_and_show_the_match_in_long_lines() {
        let filler = "x".repeat(5_000);
        let out = ran(
            0,
            &format!("{filler} EXT4-fs error (device sda): deep {filler}"),
            "",
        );
        let verdict = judge(&out, None, Some(&on_stdout(PRODUCTION_ABORT)));
        assert_clean_reason(&verdict);
        let r = reason(&verdict);
        assert!(
            r.starts_with("stdout matched /EXT4-fs error|I\\/O error/: \"…"),
            "{r}"
        );
        assert!(r.contains("EXT4-fs error (device sda): deep"), "{r}");
        assert!(r.ends_with("…\""), "{r}");

        let early = ran(0, &format!("I/O error {filler}"), "");
        let r = judge(&early, None, Some(&on_stdout("I/O error")));
        assert!(reason(&r).contains(": \"I/O error xxx"), "{r:?}");
        assert_clean_reason(&r);

        let long_pattern = format!("({}z)", "abcdefghij|".repeat(20));
        let verdict = judge(&ran(0, &filler, ""), Some(&on_stdout(&long_pattern)), None);
        assert_clean_reason(&verdict);
        assert!(reason(&verdict).starts_with("stdout did not match /(abcdefghij|"));
        assert!(reason(&verdict).contains("…/ (last line: \"xxx"));

        let many: Vec<i32> = (1..=50).collect();
        let verdict = judge(&ran(0, "", ""), Some(&on_exit(&many)), None);
        assert_eq!(
            verdict,
            fail("exit 0, expected one of 1, 2, 3, 4, 5, 6, 7, 8, …")
        );
        let verdict = judge(&ran(7, "", ""), None, Some(&on_exit(&many)));
        assert_eq!(
            verdict,
            abort("exit 7 matched abort_if [1, 2, 3, 4, 5, 6, 7, 8, …]")
        );

        let bells = "\u{7}".repeat(60);
        let verdict = judge(
            &ran(0, &format!("{bells}I/O error"), ""),
            None,
            Some(&on_stdout("I/O")),
        );
        assert_clean_reason(&verdict);
        assert!(
            reason(&verdict).ends_with("\\u{7}\\u{7}I/O error\""),
            "{verdict:?}"
        );
        assert!(reason(&verdict).contains(": \"…\\u{7}"), "{verdict:?}");

        let wide = "\u{1}".repeat(1_000);
        let verdict = judge(&ran(0, &wide, ""), Some(&on_stdout("nope")), None);
        assert_clean_reason(&verdict);
    }

    #[test]
    fn slashes_in_patterns_are_escaped_once() {
        let table = [
            ("a/b", "/a\\/b/"),
            ("a\\/b", "/a\\/b/"),
            ("a\\\\/b", "/a\\\\\\/b/"),
            ("https?://x", "/https?:\\/\\/x/"),
        ];
        for (source, shown) in table {
            assert_eq!(show_pattern(&re(source)), shown, "{source}");
        }
    }

    #[test]
    fn last_line_is_the_last_non_empty_trimmed_line() {
        let table = [
            ("", None),
            ("\n\n  \n", None),
            ("one", Some("one")),
            ("one\ntwo\n", Some("two")),
            ("one\r\n  two  \r\n\r\n", Some("two")),
            ("10%\r20%\r30%", Some("30%")),
            ("a\n\t\n", Some("a")),
        ];
        for (text, want) in table {
            assert_eq!(last_line(text), want, "{text:?}");
        }
    }

    #[test]
    fn match_starting_with_a_newline_quotes_the_line_it_lands_on() {
        let out = ran(0, "first\nsecond error\n", "");
        let verdict = judge(&out, None, Some(&on_stdout(r"\nsecond")));
        assert_eq!(
            verdict,
            abort("stdout matched /\\nsecond/: \"second error\"")
        );
    }

    const PATTERNS: &[&str] = &[
        "EXT4-fs error|I/O error",
        "^$",
        "",
        r"\n",
        "(?s).*",
        "x*",
        "[\u{1}-\u{1f}]",
        "é|ü",
        "^active$",
    ];

    fn matcher() -> impl Strategy<Value = Matcher> {
        (
            proptest::option::of(proptest::collection::vec(-2i32..300, 0..4)),
            proptest::option::of(proptest::sample::select(PATTERNS)),
            proptest::option::of(proptest::sample::select(PATTERNS)),
        )
            .prop_map(|(exit, stdout, stderr)| Matcher {
                exit,
                stdout: stdout.map(re),
                stderr: stderr.map(re),
            })
    }

    fn output() -> impl Strategy<Value = Output> {
        (
            proptest::option::of(-2i32..300),
            any::<String>(),
            "(\\PC|[\\n\\r\\t\\x00-\\x1f\\u{202e}]){0,400}",
            any::<bool>(),
        )
            .prop_map(|(exit, stdout, stderr, timed_out)| Output {
                exit,
                stdout,
                stderr,
                timed_out,
            })
    }

    proptest! {
        #[test]
        fn judge_never_panics_and_reasons_stay_clean(
            out in output(),
            expect in proptest::option::of(matcher()),
            abort_if in proptest::option::of(matcher()),
        ) {
            let verdict = judge(&out, expect.as_ref(), abort_if.as_ref());
            let r = reason(&verdict);
            prop_assert!(r.chars().count() <= REASON_MAX_CHARS);
            prop_assert!(!r.chars().any(is_unsafe));
        }

        #[test]
        fn judge_http_never_panics_and_reasons_stay_clean(
            status in any::<u16>(),
            body in any::<String>(),
            statuses in proptest::option::of(proptest::collection::vec(any::<u16>(), 0..4)),
            body_re in proptest::option::of(proptest::sample::select(PATTERNS)),
        ) {
            let expect = HttpExpect { status: statuses, body: body_re.map(re) };
            let verdict = judge_http(status, &body, Some(&expect));
            let r = reason(&verdict);
            prop_assert!(r.chars().count() <= REASON_MAX_CHARS);
            prop_assert!(!r.chars().any(is_unsafe));
        }

        #[test]
        fn last_line_is_trimmed_and_single_line(s in any::<String>()) {
            if let Some(line) = last_line(&s) {
                prop_assert!(!line.is_empty());
                prop_assert_eq!(line, line.trim());
                prop_assert!(!line.contains(['\n', '\r']));
            }
        }
    }
}
