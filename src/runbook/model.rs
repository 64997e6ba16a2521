//! The runbook as the operator wrote it: typed, with source locations.
//!
//! Every struct denies unknown keys. Scalars that can be wrong in ways serde cannot see
//! (durations, regexes, windows) are parsed by their own `Deserialize` impls so that the
//! error carries the location of the offending value.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

/// A mapping that keeps its keys' order and their locations (the first target is the default).
#[derive(Debug, Clone)]
pub struct OrderedMap<V>(pub Vec<(Spanned<String>, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V> OrderedMap<V> {
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k.value == key).map(|(_, v)| v)
    }
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.value.as_str())
    }
    pub fn iter(&self) -> impl Iterator<Item = (&Spanned<String>, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Spanned<String>>()? {
                    let v = map.next_value()?;
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

/// A human duration: `15s`, `5m`, `1h 30m`, `90d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration: write a number and a unit, like 15s, 5m or 90d".into());
    }
    if t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{t}` has no unit: write {t}s, {t}m or {t}h (durations always carry a unit)"
        ));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "`{t}` is not a duration ({e}): write a number and a unit, like 15s, 5m, 1h30m or 90d"
        )
    })
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(de::Error::custom)
    }
}

/// A compiled regex, checked where it is written.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::verdict::pattern(&s).map(Pattern).map_err(|e| {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or("invalid regex").trim();
            de::Error::custom(format!(
                "`{s}` is not a valid regular expression ({last}); escape special characters such as ( [ . * with a backslash"
            ))
        })
    }
}

/// `0m-5m`: where a phase sits on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Duration,
    pub end: Duration,
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_window(&s).map_err(de::Error::custom)
    }
}

pub fn parse_window(s: &str) -> Result<Window, String> {
    let Some((a, b)) = s.split_once('-') else {
        return Err(format!(
            "`{s}` is not a window: write START-END on the timeline, like 0m-5m"
        ));
    };
    let start = parse_duration(a).map_err(|e| format!("window start: {e}"))?;
    let end = parse_duration(b).map_err(|e| format!("window end: {e}"))?;
    Ok(Window { start, end })
}

/// `exit: 0` or `exit: [0, 1]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ExitCodes {
    One(i32),
    Many(Vec<i32>),
}

impl ExitCodes {
    pub fn to_vec(&self) -> Vec<i32> {
        match self {
            ExitCodes::One(c) => vec![*c],
            ExitCodes::Many(v) => v.clone(),
        }
    }
}

/// `status: 200` or `status: [200, 204]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusCodes {
    One(u16),
    Many(Vec<u16>),
}

impl StatusCodes {
    pub fn to_vec(&self) -> Vec<u16> {
        match self {
            StatusCodes::One(c) => vec![*c],
            StatusCodes::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    pub name: Spanned<String>,
    pub title: Option<String>,
    pub budget: Spanned<HumanDuration>,
    pub rehearse_every: Option<HumanDuration>,
    pub targets: Spanned<OrderedMap<Target>>,
    #[serde(default)]
    pub vars: OrderedMap<Spanned<String>>,
    #[serde(default)]
    pub notify: OrderedMap<Channel>,
    pub abort: Option<Spanned<Abort>>,
    pub phases: Spanned<Vec<Phase>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub host: Spanned<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<String>,
    pub known_hosts: Option<String>,
    pub ssh_config: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Slack,
    Discord,
    Ntfy,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub webhook: Spanned<String>,
    pub format: Option<Format>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    pub notify: Option<Spanned<String>>,
    pub message: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: Spanned<String>,
    pub window: Spanned<Window>,
    pub steps: Spanned<Vec<Spanned<Step>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    Stop,
    Abort,
    Continue,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub exit: Option<ExitCodes>,
    pub stdout: Option<Pattern>,
    pub stderr: Option<Pattern>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub every: HumanDuration,
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitSsh {
    pub every: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum From {
    Management,
    Target,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpExpect {
    pub status: Option<StatusCodes>,
    pub body: Option<Pattern>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub url: Spanned<String>,
    pub method: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: OrderedMap<Spanned<String>>,
    pub json: Option<Spanned<serde_json::Value>>,
    pub body: Option<Spanned<String>>,
    pub expect: Option<HttpExpect>,
    pub timeout: Option<Spanned<HumanDuration>>,
    pub from: Option<From>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub http: Option<Spanned<Http>>,
    pub run: Option<Spanned<String>>,
    pub expect: Option<Matcher>,
    pub every: Option<HumanDuration>,
    pub timeout: Option<Spanned<HumanDuration>>,
    pub successes: Option<u32>,
}

/// One step: exactly one kind key, plus the common keys.
///
/// The kinds are optional fields rather than an enum so that every key keeps its location
/// and "two kinds in one step" can be reported precisely.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub manual: Option<Spanned<String>>,
    pub run: Option<Spanned<String>>,
    pub local: Option<Spanned<String>>,
    pub wait_ssh: Option<Spanned<WaitSsh>>,
    pub drop_caches: Option<Spanned<Empty>>,
    pub start: Option<Spanned<String>>,
    pub http: Option<Spanned<Http>>,
    pub notify: Option<Spanned<String>>,

    pub health: Option<Spanned<Health>>,
    pub message: Option<Spanned<String>>,

    pub name: Option<Spanned<String>>,
    pub target: Option<Spanned<String>>,
    pub timeout: Option<Spanned<HumanDuration>>,
    pub sudo: Option<bool>,
    pub retry: Option<Spanned<Retry>>,
    pub expect: Option<Spanned<Matcher>>,
    pub abort_if: Option<Spanned<Matcher>>,
    pub on_fail: Option<OnFail>,
    pub mutates: Option<bool>,
    pub abort_message: Option<Spanned<String>>,
}

/// The step kinds, in the order `check` lists them.
pub const KINDS: [&str; 8] = [
    "manual",
    "run",
    "local",
    "wait_ssh",
    "drop_caches",
    "start",
    "http",
    "notify",
];
