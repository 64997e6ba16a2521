//! The runbook's JSON Schema (draft 2020-12), for editors: `recover schema`.
//!
//! It is generated from the model types of `runbook::model` (their derives), so it cannot drift
//! from what the loader reads. The scalars the model parses itself (durations, windows, regexes,
//! exit and status codes, ports, ordered mappings) get their schemas here.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};

use crate::runbook::model::{
    ExitCodes, HumanDuration, OrderedMap, Pattern, Port, Runbook, StatusCodes, Window,
};

/// The units `HumanDuration` accepts (humantime's).
const UNITS: &str = "nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|\
minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|\
years|year|yrs|yr|y";

/// One duration, unanchored: numbers each followed by a unit, `15s`, `1h 30m`, `1.5h`.
fn duration_pattern() -> String {
    format!(r"\s*(\d+(\.\d+)?\s*({UNITS})\s*)+")
}

/// The runbook's schema as JSON.
pub fn runbook_schema() -> serde_json::Value {
    let schema = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<Runbook>();
    let mut v = schema.to_value();
    overlays(&mut v);
    v
}

/// The keys an overlay (`extends: PATH`) may set, besides `extends`.
const OVERLAY_KEYS: [&str; 6] = ["extends", "title", "budget", "targets", "vars", "notify"];

/// A runbook with `extends:` is an overlay (`runbook/overlay.rs`): it needs none of the keys a
/// whole runbook requires and may set only `OVERLAY_KEYS`; any other file is a whole runbook.
fn overlays(root: &mut serde_json::Value) {
    let Some(obj) = root.as_object_mut() else {
        return;
    };
    if let Some(props) = obj.get_mut("properties").and_then(|p| p.as_object_mut()) {
        props.insert(
            "extends".into(),
            serde_json::json!({
                "type": "string",
                "description": "This file is an overlay of the runbook at PATH (relative to this file): it may set title, budget, targets, vars and notify.",
            }),
        );
    }
    let required = obj
        .remove("required")
        .unwrap_or_else(|| serde_json::json!([]));
    obj.insert("if".into(), serde_json::json!({ "required": ["extends"] }));
    obj.insert(
        "then".into(),
        serde_json::json!({ "propertyNames": { "enum": OVERLAY_KEYS } }),
    );
    obj.insert("else".into(), serde_json::json!({ "required": required }));
}

impl<V: JsonSchema> JsonSchema for OrderedMap<V> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("OrderedMap_of_{}", V::schema_name()).into()
    }
    fn schema_id() -> Cow<'static, str> {
        format!("OrderedMap<{}>", V::schema_id()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<V>();
        json_schema!({ "type": "object", "additionalProperties": value })
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": format!("^{}$", duration_pattern()),
            "description": "A duration with a unit: 15s, 5m, 1h30m, 90d.",
            "examples": ["15s", "5m", "1h30m"],
        })
    }
}

impl JsonSchema for Window {
    fn schema_name() -> Cow<'static, str> {
        "Window".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let d = duration_pattern();
        json_schema!({
            "type": "string",
            "pattern": format!("^{d}-{d}$"),
            "description": "START-END on the timeline, like 0m-5m.",
            "examples": ["0m-5m"],
        })
    }
}

impl JsonSchema for Pattern {
    fn schema_name() -> Cow<'static, str> {
        "Regex".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "regex",
            "description": "A regular expression (Rust syntax, multi-line: ^ and $ match at each line).",
        })
    }
}

/// A number in `min..=max`, or (when `list`) a non-empty list of them.
fn codes(min: u32, max: u32, list: bool, description: &str) -> Schema {
    if !list {
        return json_schema!({
            "type": "integer",
            "minimum": min,
            "maximum": max,
            "description": description,
        });
    }
    let one = serde_json::json!({ "type": "integer", "minimum": min, "maximum": max });
    json_schema!({
        "description": description,
        "oneOf": [one, { "type": "array", "items": one, "minItems": 1 }],
    })
}

impl JsonSchema for ExitCodes {
    fn schema_name() -> Cow<'static, str> {
        "ExitCodes".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        codes(0, 255, true, "An exit code or a list of them: 0, [0, 1].")
    }
}

impl JsonSchema for StatusCodes {
    fn schema_name() -> Cow<'static, str> {
        "StatusCodes".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        codes(
            100,
            599,
            true,
            "An HTTP status or a list of them: 200, [200, 204].",
        )
    }
}

impl JsonSchema for Port {
    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        codes(1, 65535, false, "An SSH port.")
    }
}

impl JsonSchema for crate::remedy::Spec {
    fn schema_name() -> Cow<'static, str> {
        "Remedy".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "What to do when the unit is active but its probe keeps failing (a hang): kill (SIGKILL the MainPID, systemd restarts it), restart, or a command.",
            "oneOf": [
                { "type": "string", "enum": ["kill", "restart"] },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "kill": { "type": "boolean" },
                        "restart": { "type": "boolean" },
                        "run": { "type": "string" },
                        "after": { "type": "integer", "minimum": 1 },
                        "max": { "type": "integer", "minimum": 1 }
                    }
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duration_pattern_accepts_what_the_loader_accepts() {
        let re = regex::Regex::new(&format!("^{}$", duration_pattern())).unwrap();
        for ok in ["15s", "5m", "1h30m", "1h 30m", "90d", "1.5h", "2 days"] {
            assert!(crate::runbook::model::parse_duration(ok).is_ok(), "{ok}");
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in ["15", "5 parsecs", "", "m5"] {
            assert!(crate::runbook::model::parse_duration(bad).is_err(), "{bad}");
            assert!(!re.is_match(bad), "{bad}");
        }
    }
}
