//! Values that reach a command line, a header, a URL or a file name, checked where they are
//! written: what YAML and serde accept but cannot work, or would be read as something else.
//!
//! The checks are pure functions of one value (`unit_name`, `header_value`, ...), so that a
//! value rendered from a template can be checked with the same rules; [`check`] applies them to
//! what the runbook writes literally and reports each refusal at its place.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::diag::{Pos, Problem, Source};
use super::model::{self, HumanDuration};

/// Why a value is refused, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub help: String,
}

fn refuse(message: impl Into<String>, help: impl Into<String>) -> Refusal {
    Refusal {
        message: message.into(),
        help: help.into(),
    }
}

/// A value as a message shows it: control characters written as escapes, never sent raw to
/// the terminal.
pub fn shown(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The first character of `s` that is a control character, named.
fn control_char(s: &str, allow_tab: bool) -> Option<String> {
    s.chars()
        .find(|c| c.is_control() && !(allow_tab && *c == '\t'))
        .map(|c| match c {
            '\n' => "a line break (LF)".to_owned(),
            '\r' => "a carriage return (CR)".to_owned(),
            '\t' => "a tab".to_owned(),
            '\0' => "a NUL byte".to_owned(),
            c => format!("the control character U+{:04X}", c as u32),
        })
}

/// The unit types systemd knows (systemd.unit(5)): a unit name ends in one of them.
pub const UNIT_TYPES: [&str; 11] = [
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// Longest unit name systemd accepts, in bytes (`UNIT_NAME_MAX` less the NUL).
pub const UNIT_NAME_MAX: usize = 255;

/// A unit `recover` can start, by systemd's rules (`unit_name_is_valid` in systemd's
/// unit-name.c): ASCII letters, digits and `:-_.\`, at most one `@` and not first, a type
/// suffix after the last `.`, at most 255 bytes. A template (`getty@.service`) is refused: it
/// cannot be started without an instance.
pub fn unit_name(s: &str) -> Result<(), Refusal> {
    const HOW: &str = "a unit name is letters, digits and `:-_.\\`, an optional `@instance`, then a type suffix, like `vllm-qwen36.service` or `getty@tty1.service` (systemd.unit(5))";
    let bad = |why: String| {
        refuse(
            format!("`{}` is not a systemd unit name: {why}", shown(s)),
            HOW,
        )
    };
    if s.is_empty() {
        return Err(refuse(
            "the unit name is empty",
            "write one systemd unit, like `vllm-qwen36.service`",
        ));
    }
    if let Some(c) = control_char(s, false) {
        return Err(bad(format!("it holds {c}")));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace()) {
        let what = if c == ' ' {
            "a space".to_owned()
        } else {
            format!("the space character U+{:04X}", c as u32)
        };
        return Err(refuse(
            format!("`{}` is not a systemd unit name: it holds {what}", shown(s)),
            "one step starts one unit: write one name, or split it into several `start` steps",
        ));
    }
    if s.len() > UNIT_NAME_MAX {
        return Err(bad(format!(
            "it is {} bytes long, and systemd allows {UNIT_NAME_MAX}",
            s.len()
        )));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c)))
    {
        return Err(bad(format!(
            "`{}` is not allowed in a unit name",
            shown(&c.to_string())
        )));
    }
    let Some((stem, suffix)) = s.rsplit_once('.').filter(|(stem, _)| !stem.is_empty()) else {
        return Err(refuse(
            format!("`{}` has no unit type suffix", shown(s)),
            format!(
                "write the full unit name, like `{}.service`; the suffixes are .{}",
                s.trim_start_matches('.'),
                UNIT_TYPES.join(", .")
            ),
        ));
    };
    if !UNIT_TYPES.contains(&suffix) {
        return Err(refuse(
            format!(
                "`{}` does not end in a unit type: `.{suffix}` is not one",
                shown(s)
            ),
            format!("the suffixes are .{}", UNIT_TYPES.join(", .")),
        ));
    }
    if stem.starts_with('@') {
        return Err(bad(
            "it starts with `@`, where the unit's own name goes".into()
        ));
    }
    if let Some((_, instance)) = stem.split_once('@') {
        if instance.is_empty() {
            return Err(refuse(
                format!("`{s}` is a template: it cannot be started without an instance"),
                format!(
                    "name the instance after the `@`, like `{}tty1.{suffix}`",
                    stem
                ),
            ));
        }
        if instance.contains('@') {
            return Err(bad("it holds more than one `@`".into()));
        }
    }
    Ok(())
}

/// An HTTP header name: a token (RFC 9110 section 5.1).
pub fn header_name(s: &str) -> Result<(), Refusal> {
    const HOW: &str = "a header name is ASCII letters, digits and !#$%&'*+-.^_`|~ (RFC 9110), like `Authorization` or `X-Api-Key`";
    if s.is_empty() {
        return Err(refuse("a header name is empty", HOW));
    }
    let bad = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(*c)));
    match bad {
        None => Ok(()),
        Some(c) => {
            let what = match control_char(&c.to_string(), false) {
                Some(name) => name,
                None if c == ' ' => "a space".to_owned(),
                None => format!("`{c}`"),
            };
            Err(refuse(
                format!("`{}` is not an HTTP header name: it holds {what}", shown(s)),
                HOW,
            ))
        }
    }
}

/// An HTTP header value: no CR, LF, NUL or other control character but a tab (RFC 9110
/// section 5.5). A line break would end the header and start another: header injection.
pub fn header_value(name: &str, s: &str) -> Result<(), Refusal> {
    match control_char(s, true) {
        None => Ok(()),
        Some(c) if c.contains("line break") || c.contains("carriage return") => Err(refuse(
            format!(
                "the value of header `{}` holds {c}: it would end the header and start another",
                shown(name)
            ),
            "write the value on one line: a YAML block value (`|` or `>`) keeps its line breaks, use a plain or quoted value",
        )),
        Some(c) => Err(refuse(
            format!("the value of header `{}` holds {c}", shown(name)),
            "remove it: a header value is printable text",
        )),
    }
}

/// A URL requested or posted to: parses, http or https, with a host, and no whitespace or
/// control character anywhere (the parser would drop or encode them silently).
pub fn url(s: &str) -> Result<(), Refusal> {
    if let Some(c) = control_char(s, false) {
        return Err(refuse(
            format!("the URL `{}` holds {c}", shown(s)),
            "write the URL on one line, without control characters",
        ));
    }
    if s.contains(char::is_whitespace) {
        return Err(refuse(
            format!("the URL `{s}` holds a space"),
            "percent-encode a space in a URL as %20",
        ));
    }
    let parsed = reqwest::Url::parse(s).map_err(|e| {
        refuse(
            format!("`{s}` is not a valid URL: {e}"),
            "write the full URL, like http://spark.local:8000/v1/models",
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(refuse(
            format!("`{s}` is not an http:// or https:// URL"),
            "write the full URL, like http://spark.local:8000/v1/models",
        ));
    }
    Ok(())
}

/// An ssh destination host: ssh takes it as an argument, so one that starts with `-` would be
/// read as an option (`-oProxyCommand=...` runs a command on the management host).
pub fn ssh_host(s: &str) -> Result<(), Refusal> {
    const HOW: &str = "write an ssh destination: a host name, an alias from ~/.ssh/config or an address, like `spark.local` or `10.0.0.5`";
    if s.starts_with('-') {
        return Err(refuse(
            format!(
                "the host `{}` starts with `-`: ssh would read it as an option",
                shown(s)
            ),
            HOW,
        ));
    }
    if let Some(c) = control_char(s, false) {
        return Err(refuse(format!("the host `{}` holds {c}", shown(s)), HOW));
    }
    if s.contains(char::is_whitespace) {
        return Err(refuse(format!("the host `{s}` holds a space"), HOW));
    }
    Ok(())
}

/// An ssh login name: no whitespace or control character, and not an option.
pub fn ssh_user(s: &str) -> Result<(), Refusal> {
    const HOW: &str = "write the login name on the target, like `ops`";
    if s.is_empty() {
        return Err(refuse("the user is empty", HOW));
    }
    if let Some(c) = control_char(s, false) {
        return Err(refuse(format!("the user `{}` holds {c}", shown(s)), HOW));
    }
    if s.contains(char::is_whitespace) {
        return Err(refuse(format!("the user `{s}` holds a space"), HOW));
    }
    if s.starts_with('-') {
        return Err(refuse(
            format!(
                "the user `{}` starts with `-`: ssh would read it as an option",
                shown(s)
            ),
            HOW,
        ));
    }
    Ok(())
}

/// A file name handed to ssh (`identity`, `known_hosts`, `ssh_config`).
pub fn file_name(key: &str, s: &str) -> Result<(), Refusal> {
    if s.is_empty() {
        return Err(refuse(
            format!("`{key}` is empty"),
            format!("write the path of the file, or remove `{key}`"),
        ));
    }
    match control_char(s, false) {
        None => Ok(()),
        Some(c) => Err(refuse(
            format!("the file name in `{key}` holds {c}"),
            "write the path on one line, without control characters",
        )),
    }
}

/// A shell command: any text the shell reads, quoted when sent, except a NUL byte, which no
/// command line can carry (the command sent would be cut there).
pub fn command(s: &str) -> Result<(), Refusal> {
    if s.contains('\0') {
        return Err(refuse(
            "this command holds a NUL byte: no command line can carry one, the command would be cut there",
            "remove it (in a double-quoted YAML value it is written `\\0`)",
        ));
    }
    Ok(())
}

/// Every literal value of the runbook checked by the rules above, and the durations that
/// cannot work (a zero timeout, a gate probing every 0s). Values that hold a template are
/// checked by the same rules once rendered, when the Plan is made.
pub fn check(rb: &model::Runbook, src: &Source) -> Vec<Problem> {
    let mut c = Checker {
        src,
        problems: Vec::new(),
    };
    for (name, t) in rb.targets.value.iter() {
        c.target(name, t);
    }
    for (_, ch) in rb.notify.iter() {
        c.literal_url(&ch.webhook);
    }
    for phase in &rb.phases.value {
        for step in &phase.steps.value {
            c.step(step);
        }
    }
    c.problems
        .sort_by_key(|p| (p.pos.line, p.pos.column, p.message.clone()));
    c.problems
}

struct Checker<'a> {
    src: &'a Source,
    problems: Vec<Problem>,
}

fn has_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

impl Checker<'_> {
    fn refused(&mut self, pos: Pos, r: Refusal) {
        self.problems
            .push(Problem::error(self.src, pos, r.message).help(r.help));
    }

    fn at(&mut self, pos: Pos, result: Result<(), Refusal>) {
        if let Err(r) = result {
            self.refused(pos, r);
        }
    }

    /// Where the value of `key:` is written in the mapping whose first key is at `block`.
    fn value_of(&self, block: Pos, key: &str) -> Pos {
        self.src.value_in_block(block, key).unwrap_or(block)
    }

    fn target(&mut self, name: &Spanned<String>, t: &model::Target) {
        let host = &t.host;
        self.at(Pos::of(&host.referenced), ssh_host(&host.value));
        // The target's own keys are not spanned: found in its mapping, after its name.
        let key = Pos::of(&name.referenced);
        let block = self
            .src
            .find_after(key, "host", 8)
            .map(|p| self.src.block_start(p))
            .unwrap_or(key);
        if let Some(u) = &t.user {
            let pos = self.value_of(block, "user");
            self.at(pos, ssh_user(u));
        }
        for (k, v) in [
            ("identity", &t.identity),
            ("known_hosts", &t.known_hosts),
            ("ssh_config", &t.ssh_config),
        ] {
            if let Some(v) = v {
                let pos = self.value_of(block, k);
                self.at(pos, file_name(k, v));
            }
        }
    }

    fn literal_url(&mut self, u: &Spanned<String>) {
        if !has_template(&u.value) {
            self.at(Pos::of(&u.referenced), url(&u.value));
        }
    }

    fn zero(&mut self, d: &Spanned<HumanDuration>, message: &str, help: &str) {
        if d.value.0 == Duration::ZERO {
            self.refused(Pos::of(&d.referenced), refuse(message, help));
        }
    }

    fn step(&mut self, st: &Spanned<model::Step>) {
        let s = &st.value;
        if let Some(t) = &s.timeout {
            self.zero(
                t,
                "a timeout of 0s leaves the step no time: it would fail at once",
                "give the step time, like `timeout: 30s`, or remove `timeout:` for the default",
            );
        }
        for cmd in [&s.run, &s.local].into_iter().flatten() {
            self.at(Pos::of(&cmd.referenced), command(&cmd.value));
        }
        if let Some(u) = &s.start
            && !has_template(&u.value)
        {
            self.at(Pos::of(&u.referenced), unit_name(&u.value));
        }
        if let Some(h) = &s.http {
            self.http(&h.value);
        }
        if let Some(h) = &s.health {
            self.health(h);
        }
    }

    fn http(&mut self, h: &model::Http) {
        self.literal_url(&h.url);
        for (name, value) in h.headers.iter() {
            self.at(Pos::of(&name.referenced), header_name(&name.value));
            // Template syntax holds no control character: the raw text is checked whole.
            self.at(
                Pos::of(&value.referenced),
                header_value(&name.value, &value.value),
            );
        }
        if let Some(t) = &h.timeout {
            self.zero(
                t,
                "an HTTP timeout of 0s leaves the request no time: it would fail at once",
                "give the request time, like `timeout: 30s`, or remove `timeout:` for the default",
            );
        }
    }

    fn health(&mut self, h: &Spanned<model::Health>) {
        let hpos = Pos::of(&h.referenced);
        let g = &h.value;
        if let Some(t) = &g.timeout {
            self.zero(
                t,
                "a health gate that waits 0s can never see the unit healthy",
                "give the gate time, like `timeout: 8m`, or remove `timeout:` for the default",
            );
        }
        if g.every.is_some_and(|e| e.0 == Duration::ZERO) {
            let pos = self.value_of(hpos, "every");
            self.refused(
                pos,
                refuse(
                    "a health gate that probes every 0s never pauses between probes",
                    "probe at an interval, like `every: 10s`; a cheap refusal is re-probed sooner by itself",
                ),
            );
        }
        if let Some(http) = &g.http {
            self.http(&http.value);
        }
        if let Some(run) = &g.run {
            self.at(Pos::of(&run.referenced), command(&run.value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_follow_systemd() {
        for ok in [
            "vllm-qwen36.service",
            "getty@tty1.service",
            "dev-nvme0n1p1.device",
            "a:b_c\\x2d.mount",
            "x.y.target",
            &format!("{}.service", "a".repeat(UNIT_NAME_MAX - 8)),
        ] {
            assert_eq!(unit_name(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("../../etc/passwd", "`/` is not allowed"),
            ("vllm", "has no unit type suffix"),
            ("vllm.serv", "`.serv` is not one"),
            (".service", "has no unit type suffix"),
            ("a b.service", "a space"),
            ("a\nb.service", "a line break"),
            ("getty@.service", "is a template"),
            ("@tty1.service", "starts with `@`"),
            ("a@b@c.service", "more than one `@`"),
            ("é.service", "`é` is not allowed"),
            ("a;reboot.service", "`;` is not allowed"),
            (
                &format!("{}.service", "a".repeat(UNIT_NAME_MAX - 7)),
                "256 bytes long",
            ),
        ] {
            let e = unit_name(bad).expect_err(bad);
            assert!(e.message.contains(says), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn header_names_are_tokens_and_values_hold_no_line_break() {
        assert!(header_name("X-Api-Key").is_ok());
        assert!(
            header_name("X Api")
                .unwrap_err()
                .message
                .contains("a space")
        );
        assert!(header_name("X:Y").unwrap_err().message.contains("`:`"));
        assert!(header_name("X\r\nY").unwrap_err().message.contains("(CR)"));
        assert!(header_value("A", "Bearer x\ty").is_ok());
        let e = header_value("A", "x\r\nSet-Cookie: y").unwrap_err();
        assert!(e.message.contains("start another"), "{}", e.message);
        assert!(
            header_value("A", "x\ny")
                .unwrap_err()
                .message
                .contains("(LF)")
        );
        assert!(
            header_value("A", "x\u{7}")
                .unwrap_err()
                .message
                .contains("U+0007")
        );
    }

    #[test]
    fn urls_hosts_users_files_and_commands() {
        assert!(url("http://spark.local:8000/v1/models").is_ok());
        assert!(
            url("http://spark local/")
                .unwrap_err()
                .message
                .contains("a space")
        );
        assert!(
            url("http://x/\ny")
                .unwrap_err()
                .message
                .contains("line break")
        );
        assert!(
            url("http://[::1/")
                .unwrap_err()
                .message
                .contains("not a valid URL")
        );
        assert!(url("ftp://x/").is_err());
        assert!(ssh_host("spark.local").is_ok());
        assert!(ssh_host("-oProxyCommand=touch x").is_err());
        assert!(
            ssh_host("-oProxyCommand=x")
                .unwrap_err()
                .message
                .contains("option")
        );
        assert!(ssh_user("ops").is_ok());
        assert!(ssh_user("-x").is_err());
        assert!(file_name("identity", "~/.ssh/id").is_ok());
        assert!(file_name("identity", "a\nb").is_err());
        assert!(command("echo 'a\tb'\n").is_ok());
        assert!(command("echo a\0b").is_err());
        assert_eq!(shown("a\nb\u{1b}"), "a\\nb\\u{1b}");
    }
}
