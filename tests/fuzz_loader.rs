//! No input makes the loader panic: arbitrary text, YAML built from the runbook's own
//! vocabulary, and single mutations and truncations of the reference runbook all go through
//! parse, resolve, the plan text, the lints and the rendering of every problem.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use recover::cmd::render_problem;
use recover::plan::display::plan_text;
use recover::plan::lint::lint;
use recover::plan::{Options, resolve};
use recover::runbook::{Loaded, diag::Problem, parse, parse_bytes};

const REFERENCE: &str = include_str!("../runbooks/spark-power.yaml");

/// Everything `check` and `run --dry-run` do with a runbook's text, short of running it.
fn exercise(text: &str) {
    after_parse(parse(Path::new("fuzz.yaml"), text, "0".repeat(64)));
}

/// The same from the file's bytes, which may not be UTF-8.
fn exercise_bytes(bytes: &[u8]) {
    after_parse(parse_bytes(Path::new("fuzz.yaml"), bytes));
}

fn after_parse(parsed: Result<Loaded, Vec<Problem>>) {
    let loaded = match parsed {
        Ok(l) => l,
        Err(problems) => {
            assert!(!problems.is_empty(), "an error without a problem");
            for p in &problems {
                render_problem(p);
                p.place();
            }
            return;
        }
    };
    match resolve(&loaded, &Options::default()) {
        Ok(plan) => {
            plan_text(&plan);
            for p in lint(&loaded, &plan) {
                render_problem(&p);
            }
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "an error without a problem");
            for p in &problems {
                render_problem(p);
            }
        }
    }
}

/// Keys a runbook uses, at any level, plus near misses.
const KEYS: &[&str] = &[
    "name",
    "title",
    "budget",
    "rehearse_every",
    "targets",
    "vars",
    "notify",
    "abort",
    "phases",
    "host",
    "user",
    "port",
    "identity",
    "known_hosts",
    "ssh_config",
    "webhook",
    "format",
    "message",
    "window",
    "steps",
    "manual",
    "run",
    "local",
    "wait_ssh",
    "drop_caches",
    "start",
    "http",
    "health",
    "target",
    "timeout",
    "sudo",
    "retry",
    "expect",
    "abort_if",
    "on_fail",
    "mutates",
    "abort_message",
    "every",
    "successes",
    "url",
    "method",
    "headers",
    "json",
    "body",
    "status",
    "from",
    "exit",
    "stdout",
    "stderr",
    "spark",
    "operators",
    "api",
    "wait-ssh",
    "sudoo",
    "é",
    "🔌",
];

/// Scalars that mean something somewhere in a runbook, and some that mean nothing.
const SCALARS: &[&str] = &[
    "30m",
    "0m-5m",
    "5m-0m",
    "10m-20m",
    "15s",
    "5",
    "90d",
    "soon",
    "1h30m",
    "0s",
    "",
    "~",
    "true",
    "false",
    "yes",
    "0",
    "200",
    "-1",
    "65536",
    "99999999999999999999",
    "1.5",
    "spark.local",
    "spark",
    "operators",
    "slack",
    "json",
    "teams",
    "stop",
    "abort",
    "continue",
    "target",
    "management",
    "POST",
    "FETCH",
    "http://spark.local:8000/v1/models",
    "{{ vars.api }}/x",
    "{{ env.RECOVER_WEBHOOK }}",
    "{{ run.elapsed }}",
    "{{ vars.nope }}",
    "{{ secrets.x }}",
    "{{ target.host }}",
    "{{ vars.api }",
    "{% if %}",
    "EXT4-fs error|I/O error",
    "(unclosed",
    "[",
    "*",
    "\"quoted\"",
    "'single'",
    "a: b",
    "- item",
    "# comment",
    "&anchor",
    "*alias",
    "!!int x",
    "é",
    "🔌 ⚡",
    "Récupération",
    "dmesg | tail -50",
    "tailscale.service",
    "a\u{0}b",
    "\t",
    "\r\n",
    "-5s",
    "../../etc/passwd",
    "getty@.service",
    "x.daemon",
    "-oProxyCommand=x",
    "x\r\nSet-Cookie: y",
    "http://a b/",
    "\u{feff}",
];

#[derive(Debug, Clone)]
enum Node {
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(SCALARS).prop_map(str::to_owned),
        1 => "[ -~é🔌]{0,12}",
    ]
}

fn node() -> impl Strategy<Value = Node> {
    scalar()
        .prop_map(Node::Scalar)
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Node::Seq),
                prop::collection::vec(
                    (prop::sample::select(KEYS).prop_map(str::to_owned), inner),
                    0..6
                )
                .prop_map(Node::Map),
            ]
        })
}

/// A top-level mapping drawn from the runbook's keys: the shape the loader expects.
fn document() -> impl Strategy<Value = (Vec<(String, Node)>, bool)> {
    (
        prop::collection::vec(
            (prop::sample::select(KEYS).prop_map(str::to_owned), node()),
            0..10,
        ),
        any::<bool>(),
    )
}

fn quote(s: &str, flow: bool) -> String {
    let special_start = s.starts_with([
        ' ', '-', '[', '{', '&', '*', '!', '#', '|', '>', '\'', '"', '%', '@',
    ]);
    let special_inside = s.contains([':', '#', '\n', '\r', '\t', '\0'])
        || (flow && s.contains([',', '[', ']', '{', '}']));
    let plain = !(s.is_empty() || special_start || special_inside);
    if plain {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}

/// Whether a node is written on its key's line: scalars and empty collections.
fn inline(n: &Node) -> bool {
    match n {
        Node::Scalar(_) => true,
        Node::Seq(v) => v.is_empty(),
        Node::Map(v) => v.is_empty(),
    }
}

/// YAML text for a node: block style, or flow style when `flow`.
fn emit(node: &Node, indent: usize, flow: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Node::Scalar(s) => out.push_str(&quote(s, flow)),
        Node::Seq(items) if flow || items.is_empty() => {
            out.push('[');
            for (i, n) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                emit(n, 0, true, out);
            }
            out.push(']');
        }
        Node::Map(entries) if flow || entries.is_empty() => {
            out.push('{');
            for (i, (k, n)) in entries.iter().enumerate() {
                out.push_str(if i > 0 { ", " } else { " " });
                out.push_str(&quote(k, true));
                out.push_str(": ");
                emit(n, 0, true, out);
            }
            out.push_str(" }");
        }
        Node::Seq(items) => {
            for n in items {
                out.push('\n');
                out.push_str(&pad);
                out.push_str("- ");
                emit(n, indent + 2, false, out);
            }
        }
        Node::Map(entries) => {
            for (k, n) in entries {
                out.push('\n');
                out.push_str(&pad);
                out.push_str(&quote(k, false));
                out.push(':');
                if inline(n) {
                    out.push(' ');
                }
                emit(n, indent + 2, false, out);
            }
        }
    }
}

fn render_document(entries: &[(String, Node)], flow: bool) -> String {
    let mut out = String::new();
    for (k, n) in entries {
        out.push_str(&quote(k, false));
        out.push(':');
        if flow || inline(n) {
            out.push(' ');
        }
        emit(n, 2, flow, &mut out);
        out.push('\n');
    }
    out
}

/// Values for a key: the first `good` of them are valid, the rest are mistakes.
fn pick(values: &'static [&'static str], good: usize, valid: bool) -> BoxedStrategy<String> {
    let n = if valid { good } else { values.len() };
    prop::sample::select(&values[..n])
        .prop_map(str::to_owned)
        .boxed()
}

/// A value for `key` in a step, as flow-style YAML; only valid ones when `valid`.
fn step_value(key: &'static str, valid: bool) -> BoxedStrategy<String> {
    const TEXT: &[&str] = &[
        "dmesg | tail -50",
        "fsck -n {{ vars.dev }}",
        "echo {{ target.host }}",
        "tailscale.service",
        "it's é🔌",
        "echo a\u{0}b",
        "{{ vars.nope }}",
        "{{ run.elapsed }}",
        "{{ vars.api }",
        "",
    ];
    const DURATION: &[&str] = &["15s", "1m", "2h", "1m30s", "0s", "-5s", "5", "soon"];
    const REGEX: &[&str] = &["'EXT4-fs error'", "'\"choices\"'", "'.*'", "'(open'"];
    const CODES: &[&str] = &["0", "[0, 1]", "256", "zero", "[]"];
    match key {
        "wait_ssh" => pick(
            &[
                "{ every: 15s, timeout: 5m }",
                "{}",
                "{ every: 10m, timeout: 1m }",
            ],
            2,
            valid,
        ),
        "retry" => pick(
            &[
                "{ every: 15s, timeout: 2m }",
                "{ every: 2m, timeout: 1m }",
                "{ every: 5 }",
            ],
            1,
            valid,
        ),
        "drop_caches" => Just("{}".to_owned()).boxed(),
        "timeout" => pick(DURATION, 4, valid),
        "sudo" | "mutates" => pick(&["true", "false", "maybe"], 2, valid),
        "on_fail" => pick(&["stop", "abort", "continue", "ignore"], 3, valid),
        "expect" | "abort_if" => (pick(CODES, 2, valid), pick(REGEX, 3, valid))
            .prop_map(|(c, r)| format!("{{ exit: {c}, stdout: {r} }}"))
            .boxed(),
        "http" => (
            pick(
                &[
                    "\"{{ vars.api }}/v1\"",
                    "http://x:1/",
                    "\"{{ env.TOKEN }}/x\"",
                    "ftp://x",
                    "\"http://a b/\"",
                    "\"http://[::1/\"",
                ],
                3,
                valid,
            ),
            pick(&["GET", "POST", "FETCH"], 2, valid),
            pick(
                &[
                    "",
                    ", json: { model: \"{{ vars.m }}\", n: [1, \"{{ target.port }}\"] }",
                    ", body: x",
                    ", json: {}, body: y",
                ],
                3,
                valid,
            ),
            pick(
                &[
                    "",
                    ", expect: { status: [200, 204], body: '\"choices\"' }",
                    ", timeout: 10s",
                    ", from: target",
                    ", headers: { X-Api-Key: \"{{ env.TOKEN }}\", Accept: text/plain }",
                    ", expect: { status: ok }",
                    ", timeout: 0s",
                    ", headers: { \"X Key\": a }",
                    ", headers: { A: \"x\\r\\nB: c\" }",
                    ", headers: { A: \"x\\u0007\" }",
                ],
                5,
                valid,
            ),
        )
            .prop_map(|(u, m, b, e)| format!("{{ url: {u}, method: {m}{b}{e} }}"))
            .boxed(),
        "health" => (
            pick(
                &[
                    "http: { url: \"{{ vars.api }}/health\" }",
                    "run: systemctl is-active x",
                    "http: { url: y }, run: z",
                    "every: 5s",
                ],
                2,
                valid,
            ),
            pick(
                &[
                    "",
                    ", every: 10s, timeout: 1m",
                    ", timeout: 1m, successes: 2",
                    ", successes: 0",
                    ", every: 0s",
                    ", timeout: 0s",
                    ", successes: -1",
                ],
                3,
                valid,
            ),
        )
            .prop_map(|(p, rest)| format!("{{ {p}{rest} }}"))
            .boxed(),
        "notify" => pick(&["operators", "nobody"], 1, valid),
        "start" => pick(
            &[
                "tailscale.service",
                "\"{{ vars.unit }}\"",
                "two words",
                "{{ vars.unit }}",
                "../../etc/passwd",
                "vllm",
                "getty@.service",
                "x.daemon",
                "\"a\\nb.service\"",
            ],
            2,
            valid,
        ),
        "target" => pick(&["spark", "nowhere"], 1, valid),
        "message" => pick(&["\"back after {{ run.elapsed }}\""], 1, valid),
        _ => pick(TEXT, 5, valid).prop_map(|t| format!("{t:?}")).boxed(),
    }
}

/// The keys each step kind takes besides its own.
fn keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "manual" => &["name", "timeout", "abort_message"],
        "run" => &[
            "name", "target", "timeout", "sudo", "retry", "expect", "abort_if", "on_fail",
            "mutates",
        ],
        "local" => &[
            "name", "timeout", "retry", "expect", "abort_if", "on_fail", "mutates",
        ],
        "start" => &["name", "target", "timeout", "health", "on_fail"],
        "http" => &["name", "retry", "on_fail", "mutates"],
        "notify" => &["name", "message"],
        _ => &["name"],
    }
}

const KINDS: &[&str] = &recover::runbook::model::KINDS;
const COMMON: &[&str] = &[
    "health",
    "message",
    "name",
    "target",
    "timeout",
    "sudo",
    "retry",
    "expect",
    "abort_if",
    "on_fail",
    "mutates",
    "abort_message",
];

/// One step, in flow style: mostly a kind with keys and values that fit it; sometimes any
/// keys with any values.
fn step() -> impl Strategy<Value = String> {
    let fitting = prop::sample::select(KINDS).prop_flat_map(|k| {
        let others = keys_of(k);
        prop::sample::subsequence(others, 0..=others.len().min(3)).prop_map(move |mut rest| {
            rest.insert(0, k);
            if k == "notify" && !rest.contains(&"message") {
                rest.push("message");
            }
            (rest, true)
        })
    });
    let any_keys = (
        prop::sample::subsequence([KINDS, COMMON].concat(), 0..=4),
        Just(false),
    );
    prop_oneof![6 => fitting, 1 => any_keys]
        .prop_flat_map(|(keys, valid)| {
            keys.into_iter()
                .map(|k| {
                    let v = prop_oneof![12 => step_value(k, valid), 1 => step_value(k, false)];
                    v.prop_map(move |v| format!("{k}: {v}"))
                })
                .collect::<Vec<_>>()
        })
        .prop_map(|pairs| format!("      - {{ {} }}\n", pairs.join(", ")))
}

/// A runbook with the right skeleton and random steps, windows, vars and channels: the shape
/// that gets past the loader to the plan, the lints and the plan text.
fn runbook() -> impl Strategy<Value = String> {
    /// Mostly `good`, sometimes one of `bad`.
    fn mostly(good: &'static str, bad: &'static [&'static str]) -> BoxedStrategy<&'static str> {
        prop_oneof![6 => Just(good), 1 => prop::sample::select(bad)].boxed()
    }
    let phase = (
        prop::option::weighted(
            0.05,
            prop::sample::select(&["4m-12m", "10m-0m", "20m-40m"][..]),
        ),
        prop::collection::vec(step(), 1..5),
    );
    (
        mostly("spark-power", &["spark power", "é"]),
        mostly("30m", &["0s", "5"]),
        mostly(
            "  lab: { host: 127.0.0.1, user: root, port: 2222 }\n",
            &[
                "",
                "  lab: { host: \"\" }\n",
                "  lab: { host: \"-oProxyCommand=x\" }\n",
                "  lab: { host: x, user: \"a b\", identity: \"k\\n\" }\n",
            ],
        ),
        mostly(
            "vars:\n  api: http://spark.local:8000\n  dev: /dev/sda 1\n  unit: x.service\n  m: \"{{ vars.api }}\"\n",
            &["", "vars:\n  api: \"{{ vars.later }}\"\n  later: x\n"],
        ),
        mostly(
            "notify:\n  operators: { webhook: \"{{ env.HOOK }}\", format: slack }\n",
            &[
                "",
                "notify:\n  operators: { webhook: \"https://hooks.slack.com/services/T0/B0/X1234567890123456789\" }\n",
                "notify:\n  operators: { webhook: \"https://a b/\" }\n",
            ],
        ),
        mostly(
            "abort: { notify: operators, message: \"late: {{ run.elapsed }}\" }\n",
            &["", "abort: { notify: nobody }\n"],
        ),
        prop::collection::vec(phase, 1..4),
    )
        .prop_map(|(name, budget, target, vars, notify, abort, phases)| {
            let mut out = format!(
                "name: {name}\nbudget: {budget}\ntargets:\n  spark: {{ host: spark.local }}\n{target}{vars}{notify}{abort}phases:\n"
            );
            if phases.is_empty() {
                out.push_str("  []\n");
            }
            for (i, (bad, steps)) in phases.iter().enumerate() {
                let window = bad.map_or(format!("{}m-{}m", i * 5, i * 5 + 5), str::to_owned);
                out.push_str(&format!("  - name: P{i}\n    window: {window}\n    steps:\n"));
                for s in steps {
                    out.push_str(s);
                }
            }
            out
        })
}

/// One edit of the reference runbook's bytes.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let n = REFERENCE.len();
    let byte = prop_oneof![
        prop::sample::select(b" \n\t:-{}[],'\"#&*!|>%@0123456789amsx".to_vec()),
        any::<u8>(),
    ];
    prop_oneof![
        (0..n, byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (0..=n, byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        (0..n, 1..40usize).prop_map(|(i, k)| Edit::Delete(i, k)),
        (0..=n).prop_map(Edit::Truncate),
    ]
}

fn apply(e: &Edit) -> Vec<u8> {
    let mut b = REFERENCE.as_bytes().to_vec();
    match *e {
        Edit::Replace(i, x) => b[i] = x,
        Edit::Insert(i, x) => b.insert(i, x),
        Edit::Delete(i, k) => {
            b.drain(i..(i + k).min(b.len()));
        }
        Edit::Truncate(i) => b.truncate(i),
    }
    b
}

fn config() -> Config {
    Config {
        cases: 512,
        // A failure prints the input that caused it; there is no source file to persist to.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in prop_oneof![
        any::<String>(),
        "[ -~\n\t:{}\\[\\],'\"#&*!|>éø🔌⚡-]{0,300}",
    ]) {
        exercise(&text);
    }

    #[test]
    fn yaml_from_the_runbook_vocabulary_never_panics((doc, flow) in document()) {
        exercise(&render_document(&doc, flow));
    }

    #[test]
    fn runbook_shaped_yaml_never_panics(text in runbook()) {
        exercise(&text);
    }

    #[test]
    fn mutations_of_the_reference_runbook_never_panic(e in edit()) {
        exercise_bytes(&apply(&e));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise_bytes(&bytes);
    }
}

#[test]
fn the_reference_runbook_goes_through_cleanly() {
    let loaded = parse(Path::new("spark-power.yaml"), REFERENCE, "0".repeat(64)).unwrap();
    let plan = resolve(&loaded, &Options::default()).unwrap();
    assert!(lint(&loaded, &plan).is_empty());
    assert!(plan_text(&plan).contains("Phase 4"));
}

#[test]
fn multibyte_text_before_an_error_renders() {
    for text in [
        "title: é\nbudget: 5 zz\n",
        "title: 🔌🔌🔌\nname: [é, 🔌]\n",
        "name: \"é🔌\nbudget: 1m\n",
        "é: 🔌\n",
        "name: mini\nbudget: 30m\ntargets: { 🔌: { host: é } }\nphases:\n  - name: ⚡\n    window: 0m-5m\n    steps:\n      - { manual: \"é🔌\", timeout: 5 é }\n",
        "🔌",
        "\u{feff}name: x\n",
    ] {
        exercise(text);
    }
}

#[test]
fn the_generated_yaml_is_what_it_claims_to_be() {
    let doc = vec![
        ("name".to_owned(), Node::Scalar("a: b".into())),
        (
            "phases".to_owned(),
            Node::Seq(vec![Node::Map(vec![
                ("window".into(), Node::Scalar("0m-5m".into())),
                ("steps".into(), Node::Seq(vec![])),
            ])]),
        ),
    ];
    assert_eq!(
        render_document(&doc, false),
        "name: \"a: b\"\nphases:\n  - \n    window: 0m-5m\n    steps: []\n"
    );
}
