//! Reading a runbook: all YAML loading lives here.

pub mod diag;
pub mod lint;
pub mod model;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use diag::{Pos, Problem, Source};

/// A runbook read from disk: its text, its hash and its typed form.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub source: Source,
    pub sha256: String,
    pub runbook: model::Runbook,
}

/// Why a runbook could not be read at all (as opposed to what is wrong inside it).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read runbook {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Read and parse a runbook file. Problems carry file, line, column and a fix.
pub fn load(path: &Path) -> Result<Result<Loaded, Vec<Problem>>, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(parse(path, &text, sha256_hex(&bytes)))
}

/// Parse runbook text as if read from `path`.
pub fn parse(path: &Path, text: &str, sha256: String) -> Result<Loaded, Vec<Problem>> {
    let source = Source::new(path.display().to_string(), text);
    if text.trim().is_empty() {
        return Err(vec![
            Problem::error(&source, Pos::default(), "the runbook is empty").help(
                "start from runbooks/spark-power.yaml; `recover check --help` describes the format",
            ),
        ]);
    }
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
    };
    match serde_saphyr::from_str_with_options::<model::Runbook>(text, options) {
        Ok(runbook) => Ok(Loaded {
            path: path.to_path_buf(),
            source,
            sha256,
            runbook,
        }),
        Err(e) => Err(vec![yaml_problem(&source, &e)]),
    }
}

fn yaml_problem(source: &Source, e: &serde_saphyr::Error) -> Problem {
    let pos = e.location().map(|l| Pos::of(&l)).unwrap_or_default();
    let raw = e.without_snippet().to_string();
    let message = clean_message(&raw);
    let help = help_for(&message);
    let mut p = Problem::error(source, pos, message);
    if let Some(h) = help {
        p = p.help(h);
    }
    p
}

/// serde-saphyr appends " at line X column Y"; the diagnostic shows the place itself.
fn clean_message(raw: &str) -> String {
    let first = raw.lines().next().unwrap_or(raw).trim();
    let cut = first
        .find(" at line ")
        .map(|i| &first[..i])
        .unwrap_or(first);
    cut.trim_end_matches('.').to_owned()
}

fn help_for(message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    let h = if m.contains("unknown field") {
        if let Some(k) = known_kind_typo(message) {
            k
        } else {
            "remove the key, or check its spelling against the runbook format in the README"
                .to_owned()
        }
    } else if m.contains("duplicate") {
        "each key may appear once in a mapping: remove or rename one of them".to_owned()
    } else if m.contains("missing field") {
        "add the missing key; the README's runbook format lists what each part needs".to_owned()
    } else if m.contains("invalid type") {
        "check the value's shape: a string, a number, a list or a mapping as the format says"
            .to_owned()
    } else if m.contains("unknown variant") {
        "use one of the values the message lists".to_owned()
    } else {
        return None;
    };
    Some(h)
}

/// When an unknown key is a step kind's near miss (`wait-ssh`), name the kind.
fn known_kind_typo(message: &str) -> Option<String> {
    let key = message.split('`').nth(1)?;
    let norm = key.replace('-', "_").to_ascii_lowercase();
    model::KINDS
        .iter()
        .find(|k| **k == norm || (norm.len() > 3 && k.starts_with(&norm)))
        .map(|k| {
            format!(
                "did you mean `{k}`? Step kinds: {}",
                model::KINDS.join(", ")
            )
        })
}
