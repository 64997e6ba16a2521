//! HTTP requests: resolved from `http:` (a step or a gate's probe), and their `curl` line.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::resolve::Resolver;
use super::{Command, DEFAULT_HTTP_TIMEOUT, Request, TargetSpec, placeholder};
use crate::runbook::diag::Pos;
use crate::runbook::model;
use crate::template::{Context, shell_quote};
use crate::verdict::HttpExpect;

/// How far below a `json:` key its strings are looked for, to point an error at one.
const JSON_SEARCH_LINES: usize = 50;
/// How much longer than curl's own `-m` the remote side of `from: target` may take.
pub const CURL_GRACE: Duration = Duration::from_secs(2);

impl Request {
    /// The `curl` line that sends this request by hand; `-w` prints the status last.
    pub fn curl(&self) -> String {
        let mut parts = vec!["curl -sS".to_owned()];
        if self.method != "GET" {
            parts.push(format!("-X {}", self.method));
        }
        parts.push(format!("-m {}", self.timeout.as_secs().max(1)));
        for (k, v) in &self.headers {
            parts.push(format!("-H {}", shell_quote(&format!("{k}: {v}"))));
        }
        if let Some(b) = &self.body {
            parts.push(format!("--data-raw {}", shell_quote(b)));
        }
        parts.push("-w '\\n%{http_code}\\n'".to_owned());
        match decoded_query(&self.url).filter(|_| self.method == "GET" && self.body.is_none()) {
            Some((base, params)) => {
                parts.push("-G".to_owned());
                for p in params {
                    parts.push(format!("--data-urlencode {}", shell_quote(&p)));
                }
                parts.push(shell_quote(base));
            }
            None => parts.push(shell_quote(&self.url)),
        }
        parts.join(" ")
    }
}

impl Request {
    /// The `curl` command that sends this request with no part of it in curl's command line:
    /// URL, method, headers and body are curl's config, read from its stdin (`--config -`, a
    /// here-document), for a request that holds an `env` secret. The command itself travels on
    /// stdin too ([`Command::remote_secret`]).
    pub fn curl_config(&self) -> String {
        let mut config = vec![format!("url = {}", curl_quote(&self.url))];
        if self.method != "GET" {
            config.push(format!("request = {}", curl_quote(&self.method)));
        }
        for (k, v) in &self.headers {
            config.push(format!("header = {}", curl_quote(&format!("{k}: {v}"))));
        }
        if let Some(b) = &self.body {
            config.push(format!("data-raw = {}", curl_quote(b)));
        }
        format!(
            "curl -sS -m {} -w '\\n%{{http_code}}\\n' --config - <<'{CONFIG_END}'\n{}\n{CONFIG_END}\n",
            self.timeout.as_secs().max(1),
            config.join("\n")
        )
    }
}

/// The end of the here-document that holds curl's config: every line of the config starts
/// with an option's name, so no line of it can be this word.
const CONFIG_END: &str = "RECOVER_CURL_CONFIG";

/// A value in curl's config file: in double quotes, `\\` `"` and line breaks escaped.
fn curl_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The URL without its query, and each parameter decoded as `name=value`, when curl can send
/// the same query from them (`-G`, one `--data-urlencode` each): a person reads and types
/// `up{instance="spark.local:9100"}`, not `up%7Binstance%3D...`. `None` when a parameter has
/// no `=`, a name needs encoding (curl encodes only the value), or a value does not decode.
fn decoded_query(url: &str) -> Option<(&str, Vec<String>)> {
    if url.contains('#') {
        return None;
    }
    let (base, query) = url.split_once('?')?;
    if query.is_empty() {
        return None;
    }
    query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let plain = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
            if name.is_empty() || !name.chars().all(plain) {
                return None;
            }
            Some(format!("{name}={}", percent_decoded(value)?))
        })
        .collect::<Option<Vec<_>>>()
        .map(|params| (base, params))
}

/// A query value decoded as a server reads it (`%XX`, and `+` for a space); `None` for a
/// broken escape or bytes that are not UTF-8.
fn percent_decoded(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl Resolver<'_> {
    pub(super) fn request(
        &mut self,
        h: &Spanned<model::Http>,
        target: Option<&TargetSpec>,
        step_timeout: Option<Duration>,
        marker: &str,
    ) -> Request {
        let v = &h.value;
        let before = self.problems.len();
        let env_before = std::mem::replace(&mut self.read_env, false);
        let url = self.render(&v.url, Context::Text, target, false);
        // An unset `env.X` at the front is only known when the run starts: not a check error.
        let unset = self
            .secrets
            .missing
            .iter()
            .any(|n| url.starts_with(&placeholder(n)));
        // A URL still holding `{{` comes from a var whose template failed: already reported.
        let checkable = self.problems.len() == before && !unset && !url.contains("{{");
        if checkable && !url.starts_with("http://") && !url.starts_with("https://") {
            self.err(
                Pos::of(&v.url.referenced),
                format!("`{url}` is not an http:// or https:// URL"),
                "write the full URL, like http://spark.local:8000/v1/models",
            );
        } else if checkable && !self.holds_unset(&url) {
            self.refuse(
                Pos::of(&v.url.referenced),
                crate::runbook::validate::url(&url),
            );
        }
        let method = match &v.method {
            Some(m) => {
                let up = m.value.to_ascii_uppercase();
                if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                    .contains(&up.as_str())
                {
                    self.err(
                        Pos::of(&m.referenced),
                        format!("`{}` is not an HTTP method", m.value),
                        "use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS",
                    );
                }
                up
            }
            None => {
                if v.json.is_some() || v.body.is_some() {
                    "POST".into()
                } else {
                    "GET".into()
                }
            }
        };
        let mut headers = Vec::new();
        for (k, val) in v.headers.iter() {
            let rendered = self.render(val, Context::Text, target, false);
            self.refuse(
                Pos::of(&val.referenced),
                crate::runbook::validate::header_value(&k.value, &rendered),
            );
            headers.push((k.value.clone(), rendered));
        }
        let body = match (&v.json, &v.body) {
            (Some(_), Some(b)) => {
                self.err(
                    Pos::of(&b.referenced),
                    "an http step has both `json` and `body`",
                    "keep one: `json` sends a JSON document, `body` sends text",
                );
                None
            }
            (Some(j), None) => {
                let rendered = self.render_json(&j.value, Pos::of(&j.referenced), target);
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    headers.push(("Content-Type".into(), "application/json".into()));
                }
                Some(serde_json::to_string(&rendered).unwrap_or_default())
            }
            (None, Some(b)) => Some(self.render(b, Context::Text, target, false)),
            (None, None) => None,
        };
        let expect = v.expect.as_ref().map(|e| HttpExpect {
            status: e.status.as_ref().map(|s| s.to_vec()),
            body: e.body.as_ref().map(|p| p.0.clone()),
        });
        let timeout = v
            .timeout
            .as_ref()
            .map(|t| t.value.0)
            .or(step_timeout)
            .unwrap_or(DEFAULT_HTTP_TIMEOUT);
        let mut r = Request {
            method,
            url,
            headers,
            body,
            expect: expect.unwrap_or_default(),
            timeout,
            on_target: None,
        };
        let secret = self.read_env;
        self.read_env |= env_before;
        if v.from == Some(model::From::Target) {
            // curl's own `-m` ends first; the remote timeout is the backstop.
            let t = timeout + CURL_GRACE;
            r.on_target = Some(if secret {
                Command::remote_secret(r.curl_config(), t, marker)
            } else {
                Command::remote(r.curl(), false, t, marker)
            });
        }
        r
    }

    /// Render every string inside a JSON value.
    fn render_json(
        &mut self,
        v: &serde_json::Value,
        pos: Pos,
        target: Option<&TargetSpec>,
    ) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            J::String(s) => {
                let first = s.lines().next().unwrap_or("");
                let at = self
                    .loaded
                    .source
                    .find_after(pos, first, JSON_SEARCH_LINES)
                    .map(|p| Pos { len: 0, ..p })
                    .unwrap_or(pos);
                J::String(self.render_at(s, at, Context::Text, target, false))
            }
            J::Array(a) => J::Array(a.iter().map(|x| self.render_json(x, pos, target)).collect()),
            J::Object(o) => J::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), self.render_json(x, pos, target)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn a_query_is_printed_decoded_for_curl_to_encode() {
        let (base, params) = decoded_query(
            "http://p:9090/api/v1/query?query=up%7Binstance%3D%22spark.local%3A9100%22%7D&x=a+b",
        )
        .unwrap();
        assert_eq!(base, "http://p:9090/api/v1/query");
        assert_eq!(
            params,
            [r#"query=up{instance="spark.local:9100"}"#, "x=a b"]
        );
        assert_eq!(decoded_query("http://h/p"), None);
        assert_eq!(decoded_query("http://h/p?flag"), None);
        assert_eq!(decoded_query("http://h/p?q=%ZZ"), None);
        assert_eq!(decoded_query("http://h/p?q%5B%5D=1"), None);
        assert_eq!(decoded_query("http://h/p?q=1#top"), None);
    }
}
