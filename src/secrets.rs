//! Values from the environment that must never be shown, and the one rule that hides them.
//!
//! The rule: a secret is looked for in every form it can take on its way to the screen or the
//! journal ([`forms`]): its value; escaped the way JSON (and Rust's `Debug`) writes it, so a
//! token inside a JSON body that a step prints is found too; shell-quoted (`'` as `'\''`, up to
//! three times, as a quoted command inside a wire line inside an `ssh` line has it); percent-encoded the way a
//! URL normalises it (reqwest's error messages show the normalised URL: in a query, a path, a
//! fragment, user info, or every byte encoded); and each of those JSON-escaped. A run of base64
//! whose decoding holds a value is hidden whole ([`Redactor::redact`]), whatever command it
//! encodes. The placeholder an unset one renders as (`${NAME}`) is looked for too. Values
//! shorter than [`MIN_LEN`] bytes are not looked for: hiding every `1` or `ok` in the output
//! would make it unreadable and protect nothing. Longer matches win, and the text is read once
//! from left to right, so a replacement is never searched again.

/// The shortest value, in bytes, that is hidden wherever it appears.
pub const MIN_LEN: usize = 3;

/// What a hidden secret becomes in output meant for the screen or the journal.
pub const REDACTED: &str = "***";

/// Values from the environment that must never be shown. Its `Debug` names the variables,
/// never their values.
#[derive(Clone, Default)]
pub struct Secrets {
    /// (variable name, value) for each `env.X` used.
    pub values: Vec<(String, String)>,
    /// Variables used by the runbook but not set.
    pub missing: Vec<String>,
    /// Those of `missing` that a step reads, directly or through a var (a command, a header, a
    /// URL): the run cannot start without them. The others only status posts read: the run goes on and
    /// those posts are not sent.
    pub needed: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set: Vec<String> = self
            .values
            .iter()
            .map(|(name, _)| format!("{name}={REDACTED}"))
            .collect();
        f.debug_struct("Secrets")
            .field("values", &set)
            .field("missing", &self.missing)
            .field("needed", &self.needed)
            .finish()
    }
}

impl Secrets {
    /// The unset variables only status posts read.
    pub fn notify_only(&self) -> Vec<String> {
        self.missing
            .iter()
            .filter(|m| !self.needed.contains(m))
            .cloned()
            .collect()
    }
}

/// What a missing environment variable renders as in a plan that is only shown.
pub fn placeholder(name: &str) -> String {
    format!("${{{name}}}")
}

/// One text to look for, and the variable it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needle<'a> {
    pub text: String,
    pub name: &'a str,
}

impl Secrets {
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.missing.is_empty()
    }

    /// Every text that gives away a secret set or not, longest first.
    pub fn needles(&self) -> Vec<Needle<'_>> {
        self.collect(true)
    }

    /// Replace every secret value, in each of its forms (and the placeholder of a set one), in
    /// `text` with `***`. Placeholders of unset variables stay: they show what the run will
    /// need.
    pub fn redact(&self, text: &str) -> String {
        self.redactor().redact(text)
    }

    /// What [`Secrets::redact`] looks for, worked out once for many texts.
    pub fn redactor(&self) -> Redactor {
        let mut needles: Vec<String> = Vec::new();
        let mut values = Vec::new();
        for (name, value) in &self.values {
            if value.len() >= MIN_LEN {
                values.push(value.clone());
                for f in forms(value) {
                    if !needles.contains(&f) {
                        needles.push(f);
                    }
                }
            }
            needles.push(placeholder(name));
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let forms = needles
            .iter()
            .map(|n| Needle {
                text: n.clone(),
                name: "",
            })
            .collect();
        Redactor {
            needles,
            forms,
            values,
        }
    }

    /// Whether `text` holds a set secret in any of its forms (or the placeholder of any).
    pub fn holds(&self, text: &str) -> bool {
        self.redact(text) != text || self.missing.iter().any(|m| text.contains(&placeholder(m)))
    }

    /// Replace every secret, set or not, with the variable to read, `$NAME`, for printed
    /// copies.
    pub fn as_variables(&self, text: &str) -> String {
        replace(text, &self.needles(), |name| format!("${name}"))
    }

    fn collect(&self, missing_too: bool) -> Vec<Needle<'_>> {
        let mut needles = Vec::new();
        for (name, value) in &self.values {
            if value.len() >= MIN_LEN {
                let escaped = serde_json::to_string(value)
                    .ok()
                    .and_then(|q| q.get(1..q.len() - 1).map(str::to_owned));
                needles.push(Needle {
                    text: value.clone(),
                    name,
                });
                if let Some(e) = escaped.filter(|e| e != value) {
                    needles.push(Needle { text: e, name });
                }
            }
            needles.push(Needle {
                text: placeholder(name),
                name,
            });
        }
        if missing_too {
            for name in &self.missing {
                needles.push(Needle {
                    text: placeholder(name),
                    name,
                });
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.text.len()));
        needles
    }
}

/// Every form of `value` worth looking for (at least [`MIN_LEN`] bytes), the value first.
pub fn forms(value: &str) -> Vec<String> {
    let mut base = vec![value.to_owned(), crate::template::shell_quote(value)];
    // A command quoted for `sh -c`, inside a wire line quoted for the login shell, inside an
    // `ssh` line: three levels.
    let mut quoted = value.to_owned();
    for _ in 0..3 {
        quoted = quoted.replace('\'', r"'\''");
        base.push(quoted.clone());
    }
    // As `echo` of dash (the target's `sh`) and `printf %b` print it: backslash escapes
    // interpreted (`\e` becomes ESC).
    if let Some(e) = echoed(value) {
        base.push(e);
    }
    base.extend(url_forms(value));
    let mut out: Vec<String> = Vec::new();
    for f in base {
        let json = serde_json::to_string(&f)
            .ok()
            .and_then(|q| q.get(1..q.len() - 1).map(str::to_owned));
        for x in std::iter::once(f).chain(json) {
            if x.len() >= MIN_LEN && !out.contains(&x) {
                out.push(x);
            }
        }
    }
    out
}

/// `value` with the backslash escapes of `echo` (dash, `printf %b`) interpreted, when it has
/// any: `\\a \\b \\e \\f \\n \\r \\t \\v \\\\`, `\\0NNN` (octal); it stops at `\\c`.
fn echoed(value: &str) -> Option<String> {
    if !value.contains('\\') {
        return None;
    }
    let mut out = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('a') => out.push('\u{7}'),
            Some('b') => out.push('\u{8}'),
            Some('e') => out.push('\u{1b}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('v') => out.push('\u{b}'),
            Some('\\') => out.push('\\'),
            Some('c') => break,
            Some('0') => {
                let mut n = 0u32;
                for _ in 0..3 {
                    match chars.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            n = n * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(n).unwrap_or('?'));
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    (out != value).then_some(out)
}

/// `value` as a URL holds it once normalised (what reqwest's errors print): in a query, a path,
/// a fragment, a password, a user name; and every byte but the unreserved ones percent-encoded
/// (`%20` and `+` for a blank), as forms and `curl --data-urlencode` send it.
fn url_forms(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (before, after) in [
        ("http://h/?", ""),
        ("http://h/", ""),
        ("http://h/#", ""),
        ("http://u:", "@h/"),
        ("http://", "@h/"),
    ] {
        let Ok(url) = reqwest::Url::parse(&format!("{before}{value}{after}")) else {
            continue;
        };
        if let Some(mid) = url
            .as_str()
            .strip_prefix(before)
            .and_then(|r| r.strip_suffix(after))
        {
            out.push(mid.to_owned());
        }
    }
    let mut all = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            all.push(char::from(b));
        } else {
            all.push_str(&format!("%{b:02X}"));
        }
    }
    out.push(all.replace("%20", "+"));
    out.push(all);
    out
}

/// The forms of a set of secrets, worked out once: see [`Secrets::redactor`].
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Vec<String>,
    /// `needles` as [`replace`] reads them.
    forms: Vec<Needle<'static>>,
    values: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} forms)", self.needles.len())
    }
}

impl Redactor {
    /// `text` with every run of base64 that decodes to something holding a secret, and every
    /// form of a secret, replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        if self.needles.is_empty() {
            return text.to_owned();
        }
        let text = self.base64_runs(text);
        let text = replace(&text, &self.forms, |_| REDACTED.to_owned());
        self.cut_edges(&text)
    }

    /// A secret cut in two where the text was cut: output kept to its last bytes (`[… N bytes
    /// before …]`), its first and last (`[… N bytes not kept …]`), a line cut to its first
    /// characters, output read in chunks. The end of a form of a secret ([`MIN_LEN`] bytes or
    /// more) where a piece of text starts, and its start where a piece ends, are hidden too;
    /// pieces are the text and what lies between `[…` and `…]` marks.
    fn cut_edges(&self, text: &str) -> String {
        let mut starts = vec![0];
        let mut ends = vec![text.len()];
        for (i, _) in text.match_indices("\u{2026}]") {
            let after = i + "\u{2026}]".len();
            starts.push(if text[after..].starts_with('\n') {
                after + 1
            } else {
                after
            });
        }
        for (i, _) in text.match_indices("[\u{2026}") {
            ends.push(if text[..i].ends_with('\n') { i - 1 } else { i });
        }
        // (from, to) byte ranges to hide, found on the text as it is.
        let mut hide: Vec<(usize, usize)> = Vec::new();
        for form in self.needles.iter().filter(|n| n.len() > MIN_LEN) {
            for &start in &starts {
                let rest = &text[start..];
                // The longest proper suffix of the form that `rest` starts with.
                let found = (1..form.len())
                    .filter(|k| form.is_char_boundary(*k) && form.len() - k >= MIN_LEN)
                    .find(|k| rest.starts_with(&form[*k..]));
                if let Some(k) = found {
                    hide.push((start, start + form.len() - k));
                }
            }
            for &end in &ends {
                let head = &text[..end];
                let found = (MIN_LEN..form.len())
                    .rev()
                    .filter(|k| form.is_char_boundary(*k))
                    .find(|k| head.ends_with(&form[..*k]));
                if let Some(k) = found {
                    hide.push((end - k, end));
                }
            }
        }
        if hide.is_empty() {
            return text.to_owned();
        }
        hide.sort();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (from, to) in hide {
            if from < at {
                at = at.max(to);
                continue;
            }
            out.push_str(&text[at..from]);
            out.push_str(REDACTED);
            at = to;
        }
        out.push_str(&text[at..]);
        out
    }

    /// Each run of base64 characters (8 or more, `=` padding included) whose decoding, from
    /// any of its first four characters, holds a secret value, replaced by `***`.
    fn base64_runs(&self, text: &str) -> String {
        if self.values.is_empty() {
            return text.to_owned();
        }
        let b = text.as_bytes();
        let is_b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
        let mut out = String::with_capacity(text.len());
        let (mut i, mut copied) = (0, 0);
        while i < b.len() {
            if !is_b64(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && is_b64(b[i]) {
                i += 1;
            }
            for _ in 0..2 {
                if b.get(i) == Some(&b'=') {
                    i += 1;
                }
            }
            let run = &text[start..i];
            if run.len() >= 8 && self.decodes_to_secret(run) {
                out.push_str(&text[copied..start]);
                out.push_str(REDACTED);
                copied = i;
            }
        }
        out.push_str(&text[copied..]);
        out
    }

    fn decodes_to_secret(&self, run: &str) -> bool {
        let run = run.trim_end_matches('=');
        (0..4).any(|skip| {
            let bytes = decode_base64(run.get(skip..).unwrap_or(""));
            self.values
                .iter()
                .any(|v| bytes.windows(v.len()).any(|w| w == v.as_bytes()))
        })
    }
}

/// Standard base64 without padding, decoded as far as it goes (a last partial group dropped).
fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            _ => 63,
        }
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (value(c) << (18 - 6 * i as u32)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

/// `text` read once from left to right, each needle replaced by `with(name)`.
fn replace(text: &str, needles: &[Needle<'_>], with: impl Fn(&str) -> String) -> String {
    if needles.is_empty() {
        return text.to_owned();
    }
    // Only where a needle could start is each one tried.
    let mut first = [false; 256];
    for n in needles {
        if let Some(b) = n.text.bytes().next() {
            first[usize::from(b)] = true;
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(rest) = text.get(i..).filter(|r| !r.is_empty()) {
        let may = first[usize::from(rest.as_bytes()[0])];
        if let Some(n) = needles
            .iter()
            .find(|n| may && rest.starts_with(n.text.as_str()))
        {
            out.push_str(&with(n.name));
            i += n.text.len();
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(values: &[(&str, &str)], missing: &[&str]) -> Secrets {
        Secrets {
            values: values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            missing: missing.iter().map(|m| (*m).to_owned()).collect(),
            ..Secrets::default()
        }
    }

    #[test]
    fn values_are_redacted_everywhere_they_appear() {
        let s = secrets(&[("TOKEN", "s3cr3t")], &[]);
        assert_eq!(
            s.redact("Bearer s3cr3t, again s3cr3ts3cr3t"),
            "Bearer ***, again ******"
        );
        assert_eq!(s.as_variables("Bearer s3cr3t"), "Bearer $TOKEN");
    }

    #[test]
    fn short_values_are_left_alone() {
        let s = secrets(&[("N", "1"), ("OK", "ok")], &[]);
        assert_eq!(s.redact("1 ok 10"), "1 ok 10");
        assert_eq!(
            s.redact("${N}"),
            "***",
            "the placeholder of a set secret is hidden"
        );
    }

    #[test]
    fn json_escaped_forms_are_found() {
        let s = secrets(&[("T", r#"a"b\c"#)], &[]);
        assert_eq!(
            s.redact(r#"raw a"b\c, in JSON {"t":"a\"b\\c"}"#),
            r#"raw ***, in JSON {"t":"***"}"#
        );
    }

    #[test]
    fn the_longest_secret_wins() {
        let s = secrets(&[("SHORT", "abc"), ("LONG", "abcdef")], &[]);
        assert_eq!(s.as_variables("abcdef abc abcde"), "$LONG $SHORT $SHORTde");
    }

    #[test]
    fn unset_secrets_show_as_variables_in_copies_and_stay_in_the_plan() {
        let s = secrets(&[], &["HOOK"]);
        assert_eq!(s.as_variables("curl '${HOOK}'"), "curl '$HOOK'");
        assert_eq!(s.redact("curl '${HOOK}'"), "curl '${HOOK}'");
        assert_eq!(s.needles()[0].name, "HOOK");
    }

    /// The issue's secrets: a'b"c$d\e, and what `RB_SECRET='Sx9a'"'"'b"c$d\eQz'` sets.
    const HOSTILE: [&str; 2] = [r#"a'b"c$d\e"#, r#"Sx9a'b"c$d\eQz"#];

    fn assert_hidden(s: &Secrets, secret: &str, shown: &str, what: &str) {
        let red = s.redact(shown);
        assert!(
            red.contains(REDACTED),
            "{what}: nothing redacted in {shown}"
        );
        // No piece of the secret longer than two characters is left, in any form of it.
        for f in forms(secret) {
            assert!(!red.contains(&f), "{what}: {f:?} left in {red}");
        }
        for w in secret.as_bytes().windows(4) {
            let w = std::str::from_utf8(w).unwrap();
            assert!(
                !red.contains(w),
                "{what}: {w:?} of the secret left in {red}"
            );
        }
    }

    #[test]
    fn every_form_of_a_hostile_secret_is_redacted() {
        for secret in HOSTILE {
            let s = secrets(&[("RB_SECRET", secret)], &[]);
            let quoted = crate::template::shell_quote(secret);
            // The script a `run:` step renders, and that script quoted again in a wire line
            // and once more in an `ssh` line.
            let script = format!("sleep 1; test -n {quoted}");
            let wire = format!(
                "timeout -k 5s 60s sh -c {} recover:x:1",
                crate::template::shell_quote(&script)
            );
            let ssh = format!("ssh ops@box {}", crate::template::shell_quote(&wire));
            let json = serde_json::to_string(&serde_json::json!({ "command": &wire })).unwrap();
            for (what, shown) in [
                ("literal", format!("token {secret} rejected")),
                ("json", serde_json::to_string(secret).unwrap()),
                ("script", script.clone()),
                ("wire", wire.clone()),
                ("ssh line", ssh),
                ("json of the wire", json),
                ("debug", format!("{:?}", script)),
            ] {
                assert_hidden(&s, secret, &shown, what);
            }
            assert_eq!(s.redact(&script), "sleep 1; test -n ***");
            // What dash's `echo` prints of it (`\e` is ESC), as the journal writes it too.
            let echo = std::process::Command::new("sh")
                .args(["-c", "echo \"$1\"", "sh", secret])
                .output()
                .unwrap();
            let printed = String::from_utf8(echo.stdout).unwrap();
            assert_eq!(s.redact(&printed), "***\n", "{printed:?}");
            let json = serde_json::to_string(&printed).unwrap();
            assert_eq!(s.redact(&json), "\"***\\n\"", "{json}");

            // base64 of any command holding it, wherever the secret falls in it.
            for pad in 0..6 {
                let cmd = format!("{}curl -H 'X: {secret}' http://h/", "#".repeat(pad));
                let b64 = crate::plan::wire::tests_base64(cmd.as_bytes());
                let shown = format!("sudo -n sh -c PROGRAM {b64} recover:x:1");
                let red = s.redact(&shown);
                assert_eq!(red, "sudo -n sh -c PROGRAM *** recover:x:1", "pad {pad}");
            }
            // base64 of something else stays.
            let other = crate::plan::wire::tests_base64(b"dmesg | tail -50");
            assert_eq!(s.redact(&other), other);

            // The URL a reqwest error prints, normalised.
            for url in [
                format!("http://127.0.0.1:1/hook?token={secret}"),
                format!("http://127.0.0.1:1/{secret}/x"),
                format!("http://127.0.0.1:1/x#{secret}"),
                format!("http://u:{secret}@127.0.0.1:1/"),
            ] {
                // (`\` ends the user info of an http URL: that one does not parse.)
                let Ok(normalised) = reqwest::Url::parse(&url).map(|u| u.to_string()) else {
                    continue;
                };
                assert_hidden(&s, secret, &normalised, &url);
                assert_hidden(
                    &s,
                    secret,
                    &format!("error sending request for url ({normalised})"),
                    &url,
                );
            }
            // Every byte but the unreserved ones percent-encoded (curl --data-urlencode, forms).
            let all: String = secret
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            assert_eq!(s.redact(&format!("q={all}&x=1")), "q=***&x=1");

            // Debug names the variable, never its value.
            let debug = format!("{s:?} {:?}", s.redactor());
            assert!(debug.contains("RB_SECRET"), "{debug}");
            assert_hidden(&s, secret, &format!("{debug} {secret}"), "debug");
            assert!(!debug.contains(&secret[..4]), "{debug}");
        }
    }

    #[test]
    fn a_secret_cut_where_the_output_was_cut_is_hidden() {
        for secret in HOSTILE {
            let s = secrets(&[("T", secret)], &[]);
            let n = secret.len();
            for cut in MIN_LEN..n - MIN_LEN {
                let (head, tail) = secret.split_at(cut);
                // Kept to its last bytes, as the journal keeps output.
                let kept = format!("[\u{2026} 4096 bytes before \u{2026}]\n{tail} and on");
                assert_eq!(
                    s.redact(&kept),
                    "[\u{2026} 4096 bytes before \u{2026}]\n*** and on"
                );
                // Its first and last bytes kept, the secret across the cut.
                let both = format!("x {head}\n[\u{2026} 9 bytes not kept \u{2026}]\n{tail} y");
                assert_eq!(
                    s.redact(&both),
                    "x ***\n[\u{2026} 9 bytes not kept \u{2026}]\n*** y"
                );
                // A line cut short, a chunk read in two.
                assert_eq!(s.redact(&format!("token: {head}")), "token: ***");
                assert_eq!(s.redact(&format!("{tail} rejected")), "*** rejected");
            }
            // Text that only shares a short piece with it stays.
            assert_eq!(s.redact("ends in a'"), "ends in a'");
        }
        // Real output cut by the engine and the capture.
        let secret = HOSTILE[1];
        let s = secrets(&[("T", secret)], &[]);
        for kept in 1..secret.len() {
            // The journal keeps the last 4000 bytes: the last `kept` of the secret's.
            let out = format!("xxxxxxxxxx{secret}{}", "y".repeat(4000 - kept));
            let cut = crate::engine::truncate(&out).unwrap();
            assert!(cut.contains(&secret[secret.len() - kept..]), "{cut}");
            let red = s.redact(&cut);
            for w in secret.as_bytes().windows(MIN_LEN + 1) {
                let w = std::str::from_utf8(w).unwrap();
                assert!(!red.contains(w), "kept {kept}: {w:?} in {red}");
            }
        }
    }

    #[test]
    fn a_reqwest_error_url_is_redacted() {
        let secret = HOSTILE[0];
        let s = secrets(&[("HOOK_TOKEN", secret)], &[]);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A port nothing listens on: the error names the URL.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = rt
            .block_on(
                reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .unwrap()
                    .get(format!("http://127.0.0.1:{port}/h/{secret}?t={secret}"))
                    .send(),
            )
            .unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("127.0.0.1"), "{shown}");
        assert_hidden(&s, secret, &shown, "reqwest error");
        assert_eq!(s.redact(&shown).matches(REDACTED).count(), 2, "{shown}");
    }
}
