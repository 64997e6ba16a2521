//! HTTP from the management host (reqwest, rustls, explicit timeouts, no proxies) or from
//! the target (`curl` over SSH), and the status posts.

use std::time::Duration;

use super::{Engine, Event};
use crate::plan::request::CURL_GRACE;
use crate::plan::{Command, Request, fmt_duration};

/// Connecting must never eat a request's whole timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A status post is tried this many times.
pub const NOTIFY_ATTEMPTS: u32 = 3;

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("recover/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A response, or why there is none.
pub(crate) struct Reply {
    pub status: Option<u16>,
    pub body: String,
    pub error: Option<String>,
    /// No answer within the request's timeout (a hang, as opposed to a refusal).
    pub timed_out: bool,
}

impl Engine<'_> {
    /// Send a request from where the step says, within its timeout.
    pub(crate) async fn send(&self, req: &Request, target: usize) -> Reply {
        if let Some(curl) = &req.on_target {
            return self.send_from_target(req, curl, target).await;
        }
        let method =
            reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut rb = self.http.request(method, &req.url).timeout(req.timeout);
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        if let Some(b) = &req.body {
            rb = rb.body(b.clone());
        }
        let mut cancel = self.cancel.clone();
        let fut = async {
            let resp = rb.send().await?;
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            Ok::<_, reqwest::Error>((status, body))
        };
        tokio::select! {
            r = fut => match r {
                Ok((status, body)) => Reply { status: Some(status), body, error: None, timed_out: false },
                Err(e) => Reply { status: None, body: String::new(), error: Some(describe(&e, req.timeout)), timed_out: e.is_timeout() },
            },
            _ = cancel.wait_for(|c| *c) => Reply { status: None, body: String::new(), error: Some("interrupted".into()), timed_out: false },
        }
    }

    /// `from: target`: the plan's curl command, run on the target.
    async fn send_from_target(&self, req: &Request, curl: &Command, target: usize) -> Reply {
        let Some(t) = self.targets.get(target) else {
            return Reply {
                status: None,
                body: String::new(),
                error: Some("no such target".into()),
                timed_out: false,
            };
        };
        let mut cancel = self.cancel.clone();
        let res = t
            .exec(
                &curl.wire,
                curl.stdin.as_deref(),
                curl.kill.as_deref(),
                req.timeout + CURL_GRACE,
                &mut cancel,
                &mut |_| {},
            )
            .await;
        match res {
            Ok(f) if f.output.exit == Some(0) => {
                let text = f.output.stdout.trim_end_matches('\n');
                let (body, code) = text.rsplit_once('\n').unwrap_or(("", text));
                let status = code.trim().parse::<u16>().ok().filter(|s| *s != 0);
                Reply {
                    status,
                    body: body.to_owned(),
                    error: status.is_none().then(|| "no HTTP answer".to_owned()),
                    timed_out: false,
                }
            }
            // curl's exit 28: "Operation timed out".
            Ok(f) => Reply {
                timed_out: f.output.exit == Some(28) || f.output.timed_out,
                status: None,
                body: String::new(),
                error: Some(format!(
                    "curl on {} failed (exit {}): {}",
                    t.spec.name,
                    f.output
                        .exit
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "none".into()),
                    super::first_line(&f.output.stderr)
                )),
            },
            Err(e) => Reply {
                status: None,
                body: String::new(),
                error: Some(e.to_string()),
                timed_out: false,
            },
        }
    }

    /// Post a status message, retried, all attempts `within` the given time; never fails the
    /// run. Returns whether it got through.
    pub(crate) async fn notify(&self, channel: &str, text: &str, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        let Some(ch) = self.plan.channels.iter().find(|c| c.name == channel) else {
            return false;
        };
        let text = match self.provenance() {
            Some(line) => format!("{}\n{line}", text.trim_end()),
            None => text.to_owned(),
        };
        let mut req = ch.post(&self.plan.name, &text, Duration::from_secs(10));
        let mut last = None;
        let mut attempts = 0;
        for attempt in 1..=NOTIFY_ATTEMPTS {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(name) = self
                .plan
                .secrets
                .missing
                .iter()
                .find(|n| ch.url.contains(&crate::secrets::placeholder(n)))
            {
                last = Some(format!("not sent: {name} is not set"));
                break;
            }
            attempts = attempt;
            req.timeout = left.min(Duration::from_secs(10));
            let r = self.send(&req, 0).await;
            match (r.status, r.error) {
                (Some(s), _) if (200..300).contains(&s) => {
                    self.out.emit(Event::Notified {
                        channel: channel.to_owned(),
                        ok: true,
                        attempts: attempt,
                        error: None,
                    });
                    return true;
                }
                (Some(s), _) => last = Some(format!("HTTP {s}: {}", super::first_line(&r.body))),
                (None, e) => last = e,
            }
            if self.cancelled() {
                break;
            }
            if attempt < NOTIFY_ATTEMPTS {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let mut cancel = self.cancel.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(attempt as u64).min(left)) => {}
                    _ = cancel.wait_for(|c| *c) => break,
                }
            }
        }
        self.out.emit(Event::Notified {
            channel: channel.to_owned(),
            ok: false,
            attempts,
            error: last.clone(),
        });
        self.out.emit(Event::Warning {
            step: None,
            message: format!(
                "could not post to `{channel}`: {}. Tell the operators another way.",
                last.unwrap_or_else(|| "no answer".into())
            ),
        });
        false
    }
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {}", fmt_duration(timeout))
    } else if e.is_connect() {
        let mut s = "cannot connect".to_owned();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(c) = cur {
            s = format!("cannot connect: {c}");
            cur = c.source();
        }
        s
    } else {
        e.to_string()
    }
}
