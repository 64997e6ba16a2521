//! Values from the environment that must never be shown, and the one rule that hides them.
//!
//! The rule: a secret is looked for as its value and as its value escaped the way JSON writes
//! it (so a token inside a JSON body that a step prints is found too), and as the placeholder
//! an unset one renders as (`${NAME}`). Values shorter than [`MIN_LEN`] bytes are not looked
//! for: hiding every `1` or `ok` in the output would make it unreadable and protect nothing.
//! Longer matches win, and the text is read once from left to right, so a replacement is
//! never searched again.

/// The shortest value, in bytes, that is hidden wherever it appears.
pub const MIN_LEN: usize = 3;

/// What a hidden secret becomes in output meant for the screen or the journal.
pub const REDACTED: &str = "***";

/// Values from the environment that must never be shown.
#[derive(Debug, Clone, Default)]
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

    /// Replace every secret value (and the placeholder of a set one) in `text` with `***`.
    /// Placeholders of unset variables stay: they show what the run will need.
    pub fn redact(&self, text: &str) -> String {
        replace(text, &self.collect(false), |_| REDACTED.to_owned())
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

/// `text` read once from left to right, each needle replaced by `with(name)`.
fn replace(text: &str, needles: &[Needle<'_>], with: impl Fn(&str) -> String) -> String {
    if needles.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(rest) = text.get(i..).filter(|r| !r.is_empty()) {
        if let Some(n) = needles.iter().find(|n| rest.starts_with(n.text.as_str())) {
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
}
