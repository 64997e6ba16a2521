//! Overlays: a runbook file that starts with `extends: PATH` and sets the targets, vars,
//! notify channels, budget and title of the runbook it extends. Phases and steps come from the
//! base alone. Every value an overlay sets keeps the overlay's `Source`, so a problem in it is
//! reported in the overlay, at the line where it is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::diag::{Pos, Problem, Source};
use super::model::{Format, HumanDuration, OrderedMap, Port, Target};
use super::{File, Loaded, Role};

/// The keys an overlay may set, in the order the README lists them.
pub const KEYS: [&str; 6] = ["extends", "title", "budget", "targets", "vars", "notify"];

/// Top-level keys an overlay may not set, and why.
const REFUSED: [(&str, &str); 4] = [
    (
        "phases",
        "an overlay cannot add, remove or reorder phases or steps: they come from the runbook it extends",
    ),
    (
        "name",
        "an overlay cannot rename the runbook: the name (journal and state files, kill markers) comes from the runbook it extends",
    ),
    (
        "abort",
        "an overlay cannot change the abort handler: it comes from the runbook it extends",
    ),
    (
        "rehearse_every",
        "an overlay cannot change `rehearse_every`: it comes from the runbook it extends",
    ),
];

/// A value an overlay may set, for finding the file it was written in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Budget,
    /// A target's `host` (the target itself when the overlay adds it).
    Host(String),
    Var(String),
    /// A notify channel's `webhook` (the channel itself when the overlay adds it).
    Webhook(String),
}

/// Which file wrote each overlaid value; the rest were written in the base.
pub type Origins = BTreeMap<Field, Source>;

#[derive(Debug, Deserialize)]
struct Probe {
    extends: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overlay {
    /// Read by `extends_of`; listed so that it is a known key.
    #[serde(rename = "extends")]
    _extends: Option<serde::de::IgnoredAny>,
    title: Option<String>,
    budget: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    targets: OrderedMap<TargetPatch>,
    #[serde(default)]
    vars: OrderedMap<Spanned<String>>,
    #[serde(default)]
    notify: OrderedMap<ChannelPatch>,
}

/// Some keys of a target (all of them for a new one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetPatch {
    host: Option<Spanned<String>>,
    user: Option<String>,
    port: Option<Port>,
    identity: Option<String>,
    known_hosts: Option<String>,
    ssh_config: Option<String>,
}

/// Some keys of a notify channel (the webhook at least for a new one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelPatch {
    webhook: Option<Spanned<String>>,
    format: Option<Format>,
    failures: Option<bool>,
}

/// `extends:` when the text is an overlay, `None` for a whole runbook (or text that does not
/// parse, which the whole-runbook parse reports).
pub(super) fn extends_of(text: &str) -> Option<Spanned<String>> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options::<Probe>(text, options)
        .ok()
        .and_then(|p| p.extends)
}

/// Read the overlay in `source` (from `file`) and lay it over `base`.
fn overlay_onto(mut base: Loaded, source: &Source, file: File) -> Result<Loaded, Vec<Problem>> {
    let refused: Vec<Problem> = REFUSED
        .iter()
        .filter_map(|(key, why)| {
            let at = source.key_in_block(Pos::at(1, 1, 0), key)?;
            Some(
                Problem::error(source, at, format!("an overlay cannot set `{key}`"))
                    .label("not allowed in an overlay")
                    .help(format!(
                        "{why} ({}); an overlay sets only: {}",
                        base.source.path,
                        KEYS.join(", ")
                    )),
            )
        })
        .collect();
    if !refused.is_empty() {
        return Err(refused);
    }
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
    };
    let ov = serde_saphyr::from_str_with_options::<Overlay>(&source.text, options)
        .map_err(|e| vec![super::yaml_problem(source, &e)])?;
    let mut problems = refused_values(source, &ov);
    let rb = &mut base.runbook;
    if let Some(t) = ov.title {
        rb.title = Some(t);
    }
    if let Some(b) = ov.budget {
        rb.budget = b;
        base.origins.insert(Field::Budget, source.clone());
    }
    for (name, patch) in ov.targets.0 {
        let n = name.value.clone();
        match rb.targets.value.0.iter_mut().find(|(k, _)| k.value == n) {
            Some((_, t)) => {
                if let Some(h) = patch.host {
                    t.host = h;
                    base.origins.insert(Field::Host(n), source.clone());
                }
                t.user = patch.user.or(t.user.take());
                t.port = patch.port.or(t.port);
                t.identity = patch.identity.or(t.identity.take());
                t.known_hosts = patch.known_hosts.or(t.known_hosts.take());
                t.ssh_config = patch.ssh_config.or(t.ssh_config.take());
            }
            None => match patch.host {
                Some(host) => {
                    rb.targets.value.0.push((
                        name,
                        Target {
                            host,
                            user: patch.user,
                            port: patch.port,
                            identity: patch.identity,
                            known_hosts: patch.known_hosts,
                            ssh_config: patch.ssh_config,
                        },
                    ));
                    base.origins.insert(Field::Host(n), source.clone());
                }
                None => problems.push(new_without(
                    source,
                    &name,
                    "target",
                    "host",
                    &base.source.path,
                    rb.targets.value.keys(),
                )),
            },
        }
    }
    for (name, value) in ov.vars.0 {
        let n = name.value.clone();
        match rb.vars.0.iter_mut().find(|(k, _)| k.value == n) {
            Some((_, v)) => *v = value,
            None => rb.vars.0.push((name, value)),
        }
        base.origins.insert(Field::Var(n), source.clone());
    }
    for (name, patch) in ov.notify.0 {
        let n = name.value.clone();
        match rb.notify.0.iter_mut().find(|(k, _)| k.value == n) {
            Some((_, c)) => {
                if let Some(w) = patch.webhook {
                    c.webhook = w;
                    base.origins.insert(Field::Webhook(n), source.clone());
                }
                c.format = patch.format.or(c.format);
                c.failures = patch.failures.or(c.failures);
            }
            None => match patch.webhook {
                Some(webhook) => {
                    rb.notify.0.push((
                        name,
                        super::model::Channel {
                            webhook,
                            format: patch.format,
                            failures: patch.failures,
                        },
                    ));
                    base.origins.insert(Field::Webhook(n), source.clone());
                }
                None => problems.push(new_without(
                    source,
                    &name,
                    "notify channel",
                    "webhook",
                    &base.source.path,
                    rb.notify.keys(),
                )),
            },
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    base.path = file.path.clone();
    base.files.insert(0, file);
    base.sha256 = combined_sha256(&base.files);
    Ok(base)
}

/// The overlay's target and webhook values, checked as `validate` checks the base's, and
/// reported in the overlay.
fn refused_values(source: &Source, ov: &Overlay) -> Vec<Problem> {
    use super::validate::{Refusal, file_name, ssh_host, ssh_user, url};
    let mut out = Vec::new();
    let mut at = |pos: Pos, r: Result<(), Refusal>| {
        if let Err(r) = r {
            out.push(Problem::error(source, pos, r.message).help(r.help));
        }
    };
    for (name, t) in ov.targets.iter() {
        let key = Pos::of(&name.referenced);
        let place = |k: &str| source.find_after(key, k, 8).unwrap_or(key);
        if let Some(h) = &t.host {
            at(Pos::of(&h.referenced), ssh_host(&h.value));
        }
        if let Some(u) = &t.user {
            at(place("user"), ssh_user(u));
        }
        for (k, v) in [
            ("identity", &t.identity),
            ("known_hosts", &t.known_hosts),
            ("ssh_config", &t.ssh_config),
        ] {
            if let Some(v) = v {
                at(place(k), file_name(k, v));
            }
        }
    }
    for (_, c) in ov.notify.iter() {
        if let Some(w) = &c.webhook
            && !w.value.contains("{{")
            && !w.value.contains("{%")
        {
            at(Pos::of(&w.referenced), url(&w.value));
        }
    }
    out
}

/// An overlay names a target or channel the base does not have, without its required key.
fn new_without<'a>(
    source: &Source,
    name: &Spanned<String>,
    what: &str,
    key: &str,
    base: &str,
    known: impl Iterator<Item = &'a str>,
) -> Problem {
    let known: Vec<&str> = known.collect();
    Problem::error(
        source,
        Pos::of(&name.referenced),
        format!(
            "{what} `{}` is not in {base}, and a new {what} needs `{key}:`",
            name.value
        ),
    )
    .help(format!(
        "check the name against {base} ({}), or give the new {what} its `{key}:`",
        if known.is_empty() {
            "it has none".to_owned()
        } else {
            known.join(", ")
        }
    ))
}

/// One file's sha256, or for an overlay chain the sha256 of every file's, top first: a change
/// to any of them is a change to the runbook.
fn combined_sha256(files: &[File]) -> String {
    match files {
        [one] => one.sha256.clone(),
        _ => {
            let all: Vec<&str> = files.iter().map(|f| f.sha256.as_str()).collect();
            super::sha256_hex(all.join("\n").as_bytes())
        }
    }
}

/// The identity of a file for cycle detection.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Read the overlay at `path` (its `source`), load what it extends, and lay it over that.
/// `chain` holds the files that extend this one (as named), to refuse a cycle.
pub(super) fn load_chain(
    path: &Path,
    source: &Source,
    sha256: String,
    extends: &Spanned<String>,
    chain: &mut Vec<PathBuf>,
) -> Result<Loaded, Vec<Problem>> {
    let pos = Pos::of(&extends.referenced);
    let base_path = path.parent().unwrap_or(Path::new("")).join(&extends.value);
    chain.push(path.to_path_buf());
    let base_id = identity(&base_path);
    if let Some(i) = chain.iter().position(|p| identity(p) == base_id) {
        let names: Vec<String> = chain[i..]
            .iter()
            .chain(std::iter::once(&base_path))
            .map(|p| p.display().to_string())
            .collect();
        return Err(vec![
            Problem::error(
                source,
                pos,
                format!("`extends` makes a cycle: {}", names.join(" extends ")),
            )
            .help("an overlay extends a whole runbook (or another overlay of one); the base must not extend it back"),
        ]);
    }
    let bytes = std::fs::read(&base_path).map_err(|e| {
        vec![
            Problem::error(
                source,
                pos,
                format!(
                    "cannot read {}, which this overlay extends: {}",
                    base_path.display(),
                    super::describe_io(&e)
                ),
            )
            .help("`extends` is a path relative to the overlay's own directory"),
        ]
    })?;
    let text = super::utf8(&base_path, &bytes)?;
    let base = super::parse_in(&base_path, text, super::sha256_hex(&bytes), chain)?;
    let file = File {
        path: path.to_path_buf(),
        sha256,
        role: Role::Base,
    };
    overlay_onto(base, source, file)
}

/// Lay an `--overlay FILE` over a loaded runbook. It has no `extends:`: it extends the runbook
/// given on the command line.
pub(super) fn apply_file(
    mut loaded: Loaded,
    path: &Path,
    text: &str,
    sha256: String,
) -> Result<Loaded, Vec<Problem>> {
    let source = Source::new(path.display().to_string(), text);
    if let Some(e) = extends_of(text) {
        return Err(vec![
            Problem::error(
                &source,
                Pos::of(&e.referenced),
                "an --overlay file has no `extends`: it extends the runbook given on the command line",
            )
            .help(format!(
                "remove `extends:`, or run the overlay itself: `recover run {}`",
                path.display()
            )),
        ]);
    }
    let file = File {
        path: path.to_path_buf(),
        sha256,
        role: Role::Overlay,
    };
    let top = loaded.path.clone();
    loaded = overlay_onto(loaded, &source, file)?;
    loaded.path = top;
    Ok(loaded)
}
