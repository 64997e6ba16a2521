//! `remedy:` of a health gate as a runbook writes it, and its resolved counts: plain data that
//! loading YAML needs. What a remedy does at run time (when to apply it, the unit's state, the
//! command lines) is [`crate::remedy`]'s.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// What a remedy does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL the unit's main process; systemd's restart policy brings it back.
    Kill,
    /// `systemctl restart UNIT`.
    Restart,
    /// A command on the target, such as `tailscale up --reset`.
    Run(String),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Restart => "restart",
            Action::Run(_) => "run",
        }
    }

    /// For the binder and the progress line: `SIGKILL its main process`, `run: CMD`.
    pub fn describe(&self) -> String {
        match self {
            Action::Kill => "SIGKILL its main process (systemd restarts it)".to_string(),
            Action::Restart => "restart it (systemctl restart)".to_string(),
            Action::Run(c) => format!("run `{c}`"),
        }
    }
}

/// A gate's `remedy:` with its counts resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub action: Action,
    /// Consecutive failed probes, while the unit is active, before the remedy (default 3).
    pub after: u32,
    /// Remedies per gate at most (default 1).
    pub max: u32,
}

pub const DEFAULT_AFTER: u32 = 3;
pub const DEFAULT_MAX: u32 = 1;

/// `remedy:` as a runbook writes it: `remedy: kill`, `remedy: restart`, or the long form
/// `remedy: { kill: true | restart: true | run: CMD, after: 3, max: 1 }` (exactly one of
/// `kill`, `restart`, `run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub action: Action,
    pub after: Option<u32>,
    pub max: Option<u32>,
}

impl Spec {
    pub fn policy(&self) -> Policy {
        Policy {
            action: self.action.clone(),
            after: self.after.unwrap_or(DEFAULT_AFTER),
            max: self.max.unwrap_or(DEFAULT_MAX),
        }
    }
}

const SPEC_HELP: &str = "write `remedy: kill`, `remedy: restart`, or `remedy: { run: \"tailscale up --reset\", after: 3, max: 1 }`";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LongSpec {
    kill: Option<bool>,
    restart: Option<bool>,
    run: Option<String>,
    after: Option<u32>,
    max: Option<u32>,
}

impl<'de> Deserialize<'de> for Spec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = Spec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`kill`, `restart`, or a mapping with `run:`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Spec, E> {
                let action = match v.trim() {
                    "kill" => Action::Kill,
                    "restart" => Action::Restart,
                    other => {
                        return Err(E::custom(format!("`{other}` is not a remedy\n{SPEC_HELP}")));
                    }
                };
                Ok(Spec {
                    action,
                    after: None,
                    max: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Spec, A::Error> {
                let l = LongSpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let mut actions = Vec::new();
                if l.kill == Some(true) {
                    actions.push(Action::Kill);
                }
                if l.restart == Some(true) {
                    actions.push(Action::Restart);
                }
                if let Some(cmd) = l.run {
                    if cmd.trim().is_empty() {
                        return Err(de::Error::custom(format!(
                            "`run:` of a remedy is empty\n{SPEC_HELP}"
                        )));
                    }
                    actions.push(Action::Run(cmd));
                }
                if actions.len() != 1 {
                    return Err(de::Error::custom(format!(
                        "a remedy does one thing: `kill: true`, `restart: true` or `run: CMD`\n{SPEC_HELP}"
                    )));
                }
                for (key, n) in [("after", l.after), ("max", l.max)] {
                    if n == Some(0) {
                        return Err(de::Error::custom(format!(
                            "`{key}: 0` would never let the remedy act, or act at once\nuse 1 or more"
                        )));
                    }
                }
                Ok(Spec {
                    action: actions.remove(0),
                    after: l.after,
                    max: l.max,
                })
            }
        }
        d.deserialize_any(SpecVisitor)
    }
}
