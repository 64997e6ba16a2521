//! Events as JSON Lines for machines (`--json`): the journal's record shape, one a line, flushed.

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::engine::event::{Event, Sink};

/// The record the journal and `--json` write for `event`: the event's own fields (with its
/// `event` tag) plus `ts`, the wall-clock time now, RFC 3339 UTC with milliseconds.
pub fn record(event: &Event) -> Value {
    record_at(event, Utc::now())
}

/// [`record`] with a given wall-clock time.
pub fn record_at(event: &Event, ts: DateTime<Utc>) -> Value {
    let mut map = match serde_json::to_value(event) {
        Ok(Value::Object(m)) => m,
        // Every Event serializes to an object (it is an internally tagged enum); keep the
        // record well-formed even so.
        Ok(other) => Map::from_iter([("event".to_owned(), other)]),
        Err(e) => Map::from_iter([
            ("event".to_owned(), Value::from("unserializable")),
            ("error".to_owned(), Value::from(e.to_string())),
        ]),
    };
    map.insert(
        "ts".into(),
        Value::from(ts.to_rfc3339_opts(SecondsFormat::Millis, true)),
    );
    Value::Object(map)
}

type Clock = Box<dyn FnMut() -> DateTime<Utc> + Send>;

/// Writes each event's [`record`] as one line, flushed at once.
pub struct Json<W: Write + Send = io::Stdout> {
    out: W,
    clock: Clock,
}

impl Json<io::Stdout> {
    pub fn stdout() -> Self {
        Self::new(io::stdout())
    }
}

impl<W: Write + Send> Json<W> {
    pub fn new(out: W) -> Self {
        Self::with_clock(out, Utc::now)
    }

    pub fn with_clock(out: W, clock: impl FnMut() -> DateTime<Utc> + Send + 'static) -> Self {
        Json {
            out,
            clock: Box::new(clock),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Sink for Json<W> {
    fn emit(&mut self, event: &Event) {
        let mut line = record_at(event, (self.clock)()).to_string();
        line.push('\n');
        // A closed stdout (`recover run --json | head`) must not stop a recovery.
        let _ = self.out.write_all(line.as_bytes());
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::scenarios;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T05:01:02.5678Z")
            .expect("a valid time")
            .with_timezone(&Utc)
    }

    #[test]
    fn record_is_the_event_plus_ts() {
        let e = Event::StepProgress {
            step: 4,
            line: "ok".into(),
        };
        assert_eq!(
            record_at(&e, at()),
            serde_json::json!({"event": "step_progress", "step": 4, "line": "ok", "ts": "2026-11-22T05:01:02.567Z"})
        );
        let ts = record(&e)["ts"].as_str().unwrap_or_default().to_owned();
        assert_eq!(ts.len(), "2026-11-22T05:01:02.567Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn one_line_per_event_that_reads_back() {
        let events = scenarios::failure();
        let mut j = Json::with_clock(Vec::new(), at);
        for e in &events {
            j.emit(e);
        }
        let out = String::from_utf8(j.into_inner()).expect("utf-8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), events.len());
        for (l, e) in lines.iter().zip(&events) {
            let mut v: Value = serde_json::from_str(l).expect("a JSON line");
            assert_eq!(v["ts"], "2026-11-22T05:01:02.567Z");
            v.as_object_mut().expect("an object").remove("ts");
            let tag = v["event"].clone();
            let back: Event = serde_json::from_value(v).expect("an event");
            assert_eq!(std::mem::discriminant(&back), std::mem::discriminant(e));
            assert_eq!(
                serde_json::to_value(e).ok().map(|o| o["event"].clone()),
                Some(tag)
            );
        }
        assert!(lines.last().is_some_and(|l| {
            l.contains("\"resume\":\"recover run runbooks/spark-power.yaml --resume\"")
        }));
    }
}
