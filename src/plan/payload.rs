//! Status posts: the request a `notify` step or the abort handler sends to a channel.

use std::time::Duration;

use super::{ChannelSpec, Request};
use crate::runbook::model::Format;
use crate::verdict::HttpExpect;

/// Content type and body of a status post in a channel's format.
pub fn payload(format: Format, runbook: &str, text: &str) -> (&'static str, String) {
    match format {
        Format::Slack => (
            "application/json",
            serde_json::json!({ "text": text }).to_string(),
        ),
        Format::Discord => (
            "application/json",
            serde_json::json!({ "content": text }).to_string(),
        ),
        Format::Ntfy => ("text/plain; charset=utf-8", text.to_owned()),
        Format::Json => (
            "application/json",
            serde_json::json!({ "runbook": runbook, "message": text, "source": "recover" })
                .to_string(),
        ),
    }
}

impl ChannelSpec {
    /// The POST that carries `text` to this channel, from the management host.
    pub fn post(&self, runbook: &str, text: &str, timeout: Duration) -> Request {
        let (content_type, body) = payload(self.format, runbook, text);
        Request {
            method: "POST".into(),
            url: self.url.clone(),
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Some(body),
            expect: HttpExpect::default(),
            timeout,
            on_target: None,
        }
    }
}
