//! The runbook as the operator wrote it: typed, with source locations.
//!
//! Every struct denies unknown keys. Scalars that can be wrong in ways serde cannot see
//! (durations, regexes, windows) are parsed by their own `Deserialize` impls so that the
//! error carries the location of the offending value.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
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

/// Parse a human duration. The error is "message\nhelp", as the loader shows it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const HOW: &str = "write a number and a unit, like 15s, 5m, 1h30m or 90d";
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("empty duration\n{HOW}"));
    }
    if t.starts_with('-') {
        return Err(format!(
            "`{t}` is a negative duration: durations count forward\n{HOW}"
        ));
    }
    if t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{t}` has no unit\nwrite {t}s, {t}m or {t}h: durations always carry a unit"
        ));
    }
    let d = humantime::parse_duration(t).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { unit, .. } if !unit.is_empty() => {
            format!("`{t}` is not a duration: `{unit}` is not a unit\n{HOW}")
        }
        humantime::DurationError::NumberOverflow => {
            format!("`{t}` is too long a duration\n{HOW}")
        }
        _ => format!("`{t}` is not a duration\n{HOW}"),
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "`{t}` is too long a duration: the longest is 365d\n{HOW}"
        ));
    }
    Ok(d)
}

/// The longest duration a runbook may write (a timeout, a budget, a window): a year. A
/// deadline this far ahead still fits an `Instant` on every platform; `1000000000h` would
/// overflow it and panic the run.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

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
            let last = last.strip_prefix("error: ").unwrap_or(last);
            de::Error::custom(format!(
                "`{s}` is not a valid regular expression: {last}\nto match a special character such as ( [ . * | literally, put a backslash before it"
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
            "`{s}` is not a window\nwrite START-END on the timeline, like 0m-5m"
        ));
    };
    let start = parse_duration(a).map_err(|e| format!("window `{s}`: {e}"))?;
    let end = parse_duration(b).map_err(|e| format!("window `{s}`: {e}"))?;
    Ok(Window { start, end })
}

/// How one kind of numeric code is written: `exit: 0`, `status: [200, 204]`, `port: 22`.
#[derive(Clone, Copy)]
struct CodeSpec {
    what: &'static str,
    example: &'static str,
    min: i64,
    max: i64,
    list: bool,
}

impl CodeSpec {
    fn wrong<E: de::Error>(&self, shown: &str) -> E {
        let form = if self.list {
            "a number, or a list of numbers"
        } else {
            "a number"
        };
        E::custom(format!(
            "{shown} is not {}\nwrite {form}: {}",
            self.what, self.example
        ))
    }

    fn check<E: de::Error>(&self, n: i64) -> Result<i64, E> {
        if (self.min..=self.max).contains(&n) {
            Ok(n)
        } else {
            Err(E::custom(format!(
                "{n} is not {}\nit runs from {} to {}: {}",
                self.what, self.min, self.max, self.example
            )))
        }
    }

    /// One number, or (when `list`) a list of them. Hand-written rather than
    /// `#[serde(untagged)]`, which loses the location and says only "data did not match any
    /// variant"; a wrong item in a list is reported where it is written.
    fn parse<'de, D: Deserializer<'de>>(self, d: D) -> Result<Vec<i64>, D::Error> {
        d.deserialize_any(CodesVisitor(self))
    }
}

struct CodesVisitor(CodeSpec);

impl<'de> Visitor<'de> for CodesVisitor {
    type Value = Vec<i64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.0.what)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(vec![self.0.check(n)?])
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        let n = i64::try_from(n).map_err(|_| self.0.wrong::<E>(&n.to_string()))?;
        self.visit_i64(n)
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        Err(self.0.wrong(&n.to_string()))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Err(self.0.wrong(&format!("`{b}`")))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Err(self.0.wrong(&format!("`{s}`")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.0.wrong("an empty value"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if !self.0.list {
            return Err(self.0.wrong("a list"));
        }
        let item = CodeSpec {
            list: false,
            ..self.0
        };
        let mut out = Vec::new();
        while let Some(n) = seq.next_element_seed(ItemSeed(item))? {
            out.push(n);
        }
        if out.is_empty() {
            return Err(self.0.wrong("an empty list"));
        }
        Ok(out)
    }
    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Self::Value, A::Error> {
        Err(self.0.wrong("a mapping"))
    }
}

/// One item of a list of codes.
struct ItemSeed(CodeSpec);

impl<'de> de::DeserializeSeed<'de> for ItemSeed {
    type Value = i64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
        match self.0.parse(d)?.as_slice() {
            [n] => Ok(*n),
            _ => Err(self.0.wrong("a list")),
        }
    }
}

/// `exit: 0` or `exit: [0, 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitCodes(pub Vec<i32>);

impl ExitCodes {
    pub fn to_vec(&self) -> Vec<i32> {
        self.0.clone()
    }
}

impl<'de> Deserialize<'de> for ExitCodes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = CodeSpec {
            what: "an exit code",
            example: "`exit: 0` or `exit: [0, 1]`",
            min: 0,
            max: 255,
            list: true,
        };
        let v = spec.parse(d)?;
        Ok(ExitCodes(v.into_iter().map(|n| n as i32).collect()))
    }
}

/// `status: 200` or `status: [200, 204]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCodes(pub Vec<u16>);

impl StatusCodes {
    pub fn to_vec(&self) -> Vec<u16> {
        self.0.clone()
    }
}

impl<'de> Deserialize<'de> for StatusCodes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = CodeSpec {
            what: "an HTTP status",
            example: "`status: 200` or `status: [200, 204]`",
            min: 100,
            max: 599,
            list: true,
        };
        let v = spec.parse(d)?;
        Ok(StatusCodes(v.into_iter().map(|n| n as u16).collect()))
    }
}

/// An SSH port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = CodeSpec {
            what: "a port number",
            example: "`port: 22`",
            min: 1,
            max: 65535,
            list: false,
        };
        let v = spec.parse(d)?;
        Ok(Port(v.first().map_or(22, |n| *n as u16)))
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    pub title: Option<String>,
    #[schemars(with = "HumanDuration")]
    pub budget: Spanned<HumanDuration>,
    pub rehearse_every: Option<HumanDuration>,
    #[schemars(with = "OrderedMap<Target>")]
    pub targets: Spanned<OrderedMap<Target>>,
    #[serde(default)]
    #[schemars(with = "OrderedMap<String>")]
    pub vars: OrderedMap<Spanned<String>>,
    #[serde(default)]
    pub notify: OrderedMap<Channel>,
    #[schemars(with = "Option<Abort>")]
    pub abort: Option<Spanned<Abort>>,
    #[schemars(with = "Vec<Phase>")]
    pub phases: Spanned<Vec<Phase>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    pub user: Option<String>,
    pub port: Option<Port>,
    pub identity: Option<String>,
    pub known_hosts: Option<String>,
    pub ssh_config: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Slack,
    Discord,
    Ntfy,
    Json,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    #[schemars(with = "String")]
    pub webhook: Spanned<String>,
    pub format: Option<Format>,
    /// `failures: true`: this channel gets the failure post (a run that failed, aborted, was
    /// interrupted, or skipped a manual step unattended) instead of the abort channel.
    pub failures: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    #[schemars(with = "Option<String>")]
    pub notify: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub message: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "Window")]
    pub window: Spanned<Window>,
    #[schemars(with = "Vec<Step>")]
    pub steps: Spanned<Vec<Spanned<Step>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    Stop,
    Abort,
    Continue,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub exit: Option<ExitCodes>,
    pub stdout: Option<Pattern>,
    pub stderr: Option<Pattern>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub every: HumanDuration,
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitSsh {
    pub every: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    #[schemars(with = "Option<Otherwise>")]
    pub otherwise: Option<Spanned<Otherwise>>,
}

/// `otherwise:` under `wait_ssh`: when the wait times out, ask a person (posted to `notify`,
/// or to the abort channel), then wait again for `timeout`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Otherwise {
    #[schemars(with = "String")]
    pub manual: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub notify: Option<Spanned<String>>,
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `ups: { name, host, port, stable_for, min_charge, every, timeout }`: mains is stable.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ups {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    pub port: Option<Port>,
    pub stable_for: HumanDuration,
    #[schemars(with = "Option<f64>")]
    pub min_charge: Option<Spanned<f64>>,
    pub every: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
}

/// `power_on: { wol: MAC, address, port }` or `power_on: { ipmi: HOST, user, password, port }`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerOn {
    #[schemars(with = "Option<String>")]
    pub wol: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub address: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub ipmi: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub user: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub password: Option<Spanned<String>>,
    pub port: Option<Port>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum From {
    Management,
    Target,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpExpect {
    pub status: Option<StatusCodes>,
    pub body: Option<Pattern>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Http {
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub method: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "OrderedMap<String>")]
    pub headers: OrderedMap<Spanned<String>>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub json: Option<Spanned<serde_json::Value>>,
    #[schemars(with = "Option<String>")]
    pub body: Option<Spanned<String>>,
    pub expect: Option<HttpExpect>,
    #[schemars(with = "Option<HumanDuration>")]
    pub timeout: Option<Spanned<HumanDuration>>,
    pub from: Option<From>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[schemars(with = "Option<Http>")]
    pub http: Option<Spanned<Http>>,
    #[schemars(with = "Option<String>")]
    pub run: Option<Spanned<String>>,
    pub expect: Option<Matcher>,
    pub every: Option<HumanDuration>,
    #[schemars(with = "Option<HumanDuration>")]
    pub timeout: Option<Spanned<HumanDuration>>,
    pub successes: Option<u32>,
    /// What to do when the unit is active but its probe keeps failing (a hang).
    #[schemars(with = "Option<super::remedy::Spec>")]
    pub remedy: Option<Spanned<super::remedy::Spec>>,
}

/// What a `previous_boot:` step does when the box was cut off rather than shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnUnclean {
    /// Stop the run: the long procedure (fsck, journal recovery, model re-verification).
    #[default]
    Abort,
    /// Go on, with a warning.
    Warn,
    /// Go on; the verdict is only recorded.
    Continue,
}

/// `previous_boot: { on_unclean: abort | warn | continue }`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviousBoot {
    pub on_unclean: Option<OnUnclean>,
}

/// `when:` on a step: the condition it runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Unless an earlier `previous_boot` step of this run said the last shutdown was clean:
    /// after a hard cut, when it could not tell, or when this run started after it.
    UncleanShutdown,
}

/// What an unattended run (`recover run --unattended`: nobody at a terminal) does at a
/// `manual` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Unattended {
    /// Go on: the journal and a post to the abort channel say that nobody confirmed the step.
    Skip,
    /// Stop the run here, through the abort procedure (exit 3, the abort post).
    Abort,
}

/// One step: exactly one kind key, plus the common keys.
///
/// The kinds are optional fields rather than an enum so that every key keeps its location
/// and "two kinds in one step" can be reported precisely.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = one_kind)]
pub struct Step {
    #[schemars(with = "Option<String>")]
    pub manual: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub run: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub local: Option<Spanned<String>>,
    #[schemars(with = "Option<WaitSsh>")]
    pub wait_ssh: Option<Spanned<WaitSsh>>,
    #[schemars(with = "Option<Empty>")]
    pub drop_caches: Option<Spanned<Empty>>,
    #[schemars(with = "Option<PreviousBoot>")]
    pub previous_boot: Option<Spanned<PreviousBoot>>,
    #[schemars(with = "Option<String>")]
    pub start: Option<Spanned<String>>,
    #[schemars(with = "Option<Http>")]
    pub http: Option<Spanned<Http>>,
    #[schemars(with = "Option<String>")]
    pub notify: Option<Spanned<String>>,
    #[schemars(with = "Option<Ups>")]
    pub ups: Option<Spanned<Ups>>,
    #[schemars(with = "Option<PowerOn>")]
    pub power_on: Option<Spanned<PowerOn>>,

    #[schemars(with = "Option<Health>")]
    pub health: Option<Spanned<Health>>,
    #[schemars(with = "Option<String>")]
    pub message: Option<Spanned<String>>,
    /// For a `manual` step: what is true once it is done ("the front LED is steady white"):
    /// the operator's prompt and the binder's good result.
    #[schemars(with = "Option<String>")]
    pub pass: Option<Spanned<String>>,

    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub target: Option<Spanned<String>>,
    #[schemars(with = "Option<HumanDuration>")]
    pub timeout: Option<Spanned<HumanDuration>>,
    pub sudo: Option<bool>,
    #[schemars(with = "Option<Retry>")]
    pub retry: Option<Spanned<Retry>>,
    #[schemars(with = "Option<Matcher>")]
    pub expect: Option<Spanned<Matcher>>,
    #[schemars(with = "Option<Matcher>")]
    pub abort_if: Option<Spanned<Matcher>>,
    pub on_fail: Option<OnFail>,
    pub mutates: Option<bool>,
    #[schemars(with = "Option<String>")]
    pub abort_message: Option<Spanned<String>>,
    /// Messages this step may show that look alarming but are expected and harmless
    /// (after a power cut: journald's "corrupted or uncleanly shut down").
    pub expected: Option<Vec<String>>,
    /// `when: unclean_shutdown`: run the step only unless an earlier `previous_boot` step of
    /// this run found a clean shutdown (verifying model files after a hard cut).
    #[schemars(with = "Option<When>")]
    pub when: Option<Spanned<When>>,
    /// `manual` steps: what an unattended run does here (`skip` or `abort`); a runbook with a
    /// manual step without it cannot run unattended.
    #[schemars(with = "Option<Unattended>")]
    pub unattended: Option<Spanned<Unattended>>,
    /// `manual` and `local` steps: what they did holds when the box reboots (a step of the
    /// management host, say). A run that finds the box rebooted under it starts again from
    /// the beginning and skips such a step when it was done before; every other step is tied
    /// to the box's boot and runs again.
    #[schemars(with = "Option<bool>")]
    pub survives_reboot: Option<Spanned<bool>>,
}

impl Step {
    /// The kind keys this step carries, with where each is written (a valid step has one).
    pub fn kinds(&self) -> Vec<(Kind, serde_saphyr::Location)> {
        let at = |k: Kind, l: Option<serde_saphyr::Location>| l.map(|l| (k, l));
        [
            at(Kind::Manual, self.manual.as_ref().map(|v| v.referenced)),
            at(Kind::Run, self.run.as_ref().map(|v| v.referenced)),
            at(Kind::Local, self.local.as_ref().map(|v| v.referenced)),
            at(Kind::WaitSsh, self.wait_ssh.as_ref().map(|v| v.referenced)),
            at(
                Kind::DropCaches,
                self.drop_caches.as_ref().map(|v| v.referenced),
            ),
            at(
                Kind::PreviousBoot,
                self.previous_boot.as_ref().map(|v| v.referenced),
            ),
            at(Kind::Start, self.start.as_ref().map(|v| v.referenced)),
            at(Kind::Http, self.http.as_ref().map(|v| v.referenced)),
            at(Kind::Notify, self.notify.as_ref().map(|v| v.referenced)),
            at(Kind::Ups, self.ups.as_ref().map(|v| v.referenced)),
            at(Kind::PowerOn, self.power_on.as_ref().map(|v| v.referenced)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// What a step does: the one kind key it carries. Resolution dispatches on it (`plan::kinds`);
/// events carry it (`step_started.kind`, the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Manual,
    Run,
    Local,
    WaitSsh,
    DropCaches,
    PreviousBoot,
    Start,
    Http,
    Notify,
    Ups,
    PowerOn,
}

impl Kind {
    /// Every kind, in the order `check` lists them.
    pub const ALL: [Kind; 11] = [
        Kind::Manual,
        Kind::Run,
        Kind::Local,
        Kind::WaitSsh,
        Kind::DropCaches,
        Kind::PreviousBoot,
        Kind::Start,
        Kind::Http,
        Kind::Notify,
        Kind::Ups,
        Kind::PowerOn,
    ];

    /// The kind a runbook key names.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The key that names the kind in a runbook.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Manual => "manual",
            Kind::Run => "run",
            Kind::Local => "local",
            Kind::WaitSsh => "wait_ssh",
            Kind::DropCaches => "drop_caches",
            Kind::PreviousBoot => "previous_boot",
            Kind::Start => "start",
            Kind::Http => "http",
            Kind::Notify => "notify",
            Kind::Ups => "ups",
            Kind::PowerOn => "power_on",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The step kinds' keys, in the order `check` lists them.
pub const KINDS: [&str; 11] = [
    Kind::ALL[0].name(),
    Kind::ALL[1].name(),
    Kind::ALL[2].name(),
    Kind::ALL[3].name(),
    Kind::ALL[4].name(),
    Kind::ALL[5].name(),
    Kind::ALL[6].name(),
    Kind::ALL[7].name(),
    Kind::ALL[8].name(),
    Kind::ALL[9].name(),
    Kind::ALL[10].name(),
];

/// The schema of a step (`recover schema`): exactly one kind key, `oneOf` the kinds, each
/// requiring its key.
pub fn one_kind(schema: &mut schemars::Schema) {
    let kinds: Vec<serde_json::Value> = KINDS
        .iter()
        .map(|k| serde_json::json!({ "required": [k] }))
        .collect();
    schema.insert("oneOf".into(), kinds.into());
}
