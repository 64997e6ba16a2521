//! Reading a runbook: all YAML loading lives here.

pub mod diag;
pub mod model;
pub mod overlay;
pub mod remedy;
pub mod validate;

pub use overlay::Field;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use diag::{Pos, Problem, Source};

/// A runbook read from disk: its text, its hash and its typed form. For an overlay (a file
/// that `extends:` another), `runbook` is the merge, `source` the base's text (where the phases
/// and steps are written) and `files` every file read.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file given on the command line.
    pub path: PathBuf,
    /// The base runbook's text: the phases and steps are written there.
    pub source: Source,
    /// The file's sha256, or for several files the sha256 of all of theirs.
    pub sha256: String,
    /// Every file read, the one that wins first: `--overlay` files, the file given, then each
    /// file it extends.
    pub files: Vec<File>,
    origins: overlay::Origins,
    pub runbook: model::Runbook,
}

/// One file a runbook was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: PathBuf,
    pub sha256: String,
    pub role: Role,
}

/// What a file is to the runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The file given on the command line.
    Runbook,
    /// A file the runbook extends (`extends:`), directly or through another overlay.
    Base,
    /// A file given with `--overlay`.
    Overlay,
}

impl Role {
    /// The word `--dry-run` and the reports put before the file.
    pub fn label(self) -> &'static str {
        match self {
            Role::Runbook => "runbook",
            Role::Base => "extends",
            Role::Overlay => "overlay",
        }
    }
}

impl Loaded {
    /// The text where `field` was written: the overlay that set it, else the base.
    pub fn source_of(&self, field: &Field) -> &Source {
        self.origins.get(field).unwrap_or(&self.source)
    }
}

/// Why a runbook could not be read at all (as opposed to what is wrong inside it).
/// Why a runbook could not be loaded: this layer's own error, so that loading YAML depends on
/// nothing above it. The crate's [`crate::Error`] wraps it (`From`), with the same words.
#[derive(Debug)]
pub enum LoadError {
    /// The file has errors: each a diagnostic with file:line:column.
    Runbook {
        path: PathBuf,
        problems: Vec<diag::Problem>,
    },
    /// The file cannot be read.
    Unreadable { path: PathBuf, source: ReadError },
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read runbook {path}: {}", describe_io(source))]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// An I/O error in words, without the OS error number.
fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "no such file".into(),
        K::PermissionDenied => "permission denied".into(),
        K::IsADirectory => "it is a directory, not a runbook file".into(),
        _ => e.to_string(),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Read and parse a runbook file (and what it extends). Problems carry file, line, column and
/// a fix.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    load_with(path, &[])
}

/// Read a runbook file, then lay each `--overlay` file over it, the last one winning.
pub fn load_with(path: &Path, overlays: &[PathBuf]) -> Result<Loaded, LoadError> {
    let as_error = |path: &Path| {
        let path = path.to_path_buf();
        move |problems| LoadError::Runbook { path, problems }
    };
    let bytes = read(path)?;
    let mut loaded = parse_bytes(path, &bytes).map_err(as_error(path))?;
    for o in overlays {
        let bytes = read(o)?;
        let text = utf8(o, &bytes).map_err(as_error(o))?;
        loaded = overlay::apply_file(loaded, o, text, sha256_hex(&bytes)).map_err(as_error(o))?;
    }
    Ok(loaded)
}

/// A file's bytes.
fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Unreadable {
        path: path.to_path_buf(),
        source: ReadError::Io {
            path: path.display().to_string(),
            source,
        },
    })
}

/// Parse a runbook file's bytes as if read from `path`. They must be UTF-8: bytes that are
/// not would become U+FFFD, and the command sent would differ from the one in the file.
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Loaded, Vec<Problem>> {
    let text = utf8(path, bytes)?;
    parse(path, text, sha256_hex(bytes))
}

/// The file's text, or where it stops being UTF-8.
fn utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, Vec<Problem>> {
    std::str::from_utf8(bytes).map_err(|e| vec![not_utf8(path, bytes, &e)])
}

/// The first byte that is not UTF-8: its line, column (in characters) and byte offset.
fn not_utf8(path: &Path, bytes: &[u8], e: &std::str::Utf8Error) -> Problem {
    let good = e.valid_up_to();
    let text = String::from_utf8_lossy(bytes);
    let before = String::from_utf8_lossy(&bytes[..good]);
    let before = before.strip_prefix('\u{feff}').unwrap_or(&before);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let bad = &bytes[good..good + e.error_len().unwrap_or(bytes.len() - good)];
    let shown: Vec<String> = bad.iter().map(|b| format!("0x{b:02X}")).collect();
    let what = if e.error_len().is_some() {
        format!(
            "the byte {} at byte offset {good} is not UTF-8",
            shown.join(" ")
        )
    } else {
        format!(
            "the file ends at byte offset {good} in the middle of a character ({})",
            shown.join(" ")
        )
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let source = Source::new(path.display().to_string(), text);
    Problem::error(
        &source,
        Pos::at(line, column, 3),
        format!("the runbook is not valid UTF-8: {what}"),
    )
    .label("not UTF-8")
    .help(
        "save the file as UTF-8 (in the editor, or `iconv -f latin1 -t utf-8 FILE`): recover does not guess an encoding, so that the command sent is the command written",
    )
}

/// Parse runbook text as if read from `path` (an overlay reads what it extends from disk). A
/// UTF-8 byte-order mark and CRLF line ends, as other editors write them, are accepted.
pub fn parse(path: &Path, text: &str, sha256: String) -> Result<Loaded, Vec<Problem>> {
    let mut loaded = parse_in(path, text, sha256, &mut Vec::new())?;
    if let Some(f) = loaded.files.first_mut() {
        f.role = Role::Runbook;
    }
    Ok(loaded)
}

/// Parse one file of a chain; `chain` holds the overlays that extend it.
fn parse_in(
    path: &Path,
    text: &str,
    sha256: String,
    chain: &mut Vec<PathBuf>,
) -> Result<Loaded, Vec<Problem>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let source = Source::new(path.display().to_string(), text);
    if text.trim().is_empty() {
        return Err(vec![
            Problem::error(&source, Pos::at(1, 1, 0), "the runbook is empty").help(
                "start from runbooks/spark-power.yaml; `recover check --help` describes the format",
            ),
        ]);
    }
    if let Some(extends) = overlay::extends_of(text) {
        return overlay::load_chain(path, &source, sha256, &extends, chain);
    }
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
    };
    match serde_saphyr::from_str_with_options::<model::Runbook>(text, options) {
        Ok(runbook) => {
            let refused = validate::check(&runbook, &source);
            if !refused.is_empty() {
                return Err(refused);
            }
            Ok(Loaded {
                path: path.to_path_buf(),
                source,
                files: vec![File {
                    path: path.to_path_buf(),
                    sha256: sha256.clone(),
                    role: Role::Base,
                }],
                sha256,
                origins: overlay::Origins::new(),
                runbook,
            })
        }
        Err(e) => Err(vec![yaml_problem(&source, &e)]),
    }
}

fn yaml_problem(source: &Source, e: &serde_saphyr::Error) -> Problem {
    let e = innermost(e);
    let pos = e.location().map(|l| Pos::of(&l)).unwrap_or_default();
    let found = Found::new(source, pos);
    describe(e, source, pos, &found)
}

/// The error itself, without the snippet or alias wrappers serde-saphyr puts around it.
fn innermost(e: &serde_saphyr::Error) -> &serde_saphyr::Error {
    match e {
        serde_saphyr::Error::WithSnippet { error, .. }
        | serde_saphyr::Error::AliasError { error, .. } => innermost(error),
        other => other,
    }
}

/// What is written at the place of an error, for messages that name it.
struct Found {
    text: String,
}

impl Found {
    fn new(source: &Source, pos: Pos) -> Self {
        let (start, len) = source.span(Pos { len: 0, ..pos });
        let text = if pos.is_known() {
            source.text[start..start + len].trim().to_owned()
        } else {
            String::new()
        };
        Found { text }
    }

    /// "a list", "a mapping" or the value itself.
    fn shape(&self) -> String {
        match self.text.chars().next() {
            None => "nothing".into(),
            Some('[') => "a list".into(),
            Some('-') if self.text == "-" || self.text.starts_with("- ") => "a list".into(),
            Some('{') => "a mapping".into(),
            Some(_) if self.is_key() => "a mapping".into(),
            Some(_) => format!("`{}`", self.text),
        }
    }

    fn is_key(&self) -> bool {
        let t = self.text.trim_start_matches(['"', '\'']);
        t.split_once(':').is_some_and(|(k, rest)| {
            !k.contains(char::is_whitespace) && (rest.is_empty() || rest.starts_with(' '))
        })
    }
}

fn describe(e: &serde_saphyr::Error, source: &Source, pos: Pos, found: &Found) -> Problem {
    use serde_saphyr::Error as E;
    match e {
        // Our own messages (durations, regexes, codes): "message\nhelp".
        E::Message { msg, .. } => {
            let (message, help) = match msg.split_once('\n') {
                Some((m, h)) => (m, Some(h)),
                None => (msg.as_str(), None),
            };
            let d = Problem::error(source, pos, message);
            match help {
                Some(h) => d.help(h),
                None => d,
            }
        }
        E::SerdeUnknownField {
            field, expected, ..
        } => unknown_key(
            source,
            pos,
            field,
            expected,
            source.key_for(source.block_start(pos)),
        ),
        E::SerdeMissingField { field, .. } => {
            let start = source.block_start(pos);
            let top = start.column == 1;
            let label = if top {
                format!("the runbook has no `{field}`")
            } else {
                format!("this mapping has no `{field}`")
            };
            Problem::error(source, start, format!("missing key `{field}`"))
                .label(label)
                .help(missing_help(field, top))
        }
        E::DuplicateMappingKey { key, .. } => {
            let key = key.clone().unwrap_or_else(|| found.text.clone());
            let key = key.split(':').next().unwrap_or(&key).trim().to_owned();
            let first = source
                .key_in_block(source.block_start(pos), &key)
                .filter(|p| p.line < pos.line);
            let message = match first {
                Some(f) => format!("duplicate key `{key}` (first written on line {})", f.line),
                None => format!("duplicate key `{key}`"),
            };
            Problem::error(source, pos, message)
                .label("written again here")
                .help("each key may appear once in a mapping: remove one of them, or merge them")
        }
        E::InvalidScalar { ty, .. } => {
            let (what, help) = scalar_kind(ty);
            Problem::error(source, pos, format!("{} is not {what}", found.shape())).help(help)
        }
        E::InvalidBooleanStrict { .. } => Problem::error(
            source,
            pos,
            format!("{} is not true or false", found.shape()),
        )
        .help("write `true` or `false`"),
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => wrong_shape(
            source,
            pos,
            expected_kind(expected),
            unexpected_kind(unexpected),
            found,
        ),
        E::Unexpected { expected, .. } => {
            wrong_shape(source, pos, expected_kind(expected), found.shape(), found)
        }
        E::NullIntoString { .. } => {
            // The place is the key's colon, or just after it.
            let after = Pos {
                column: pos.column + 1,
                ..pos
            };
            let message = match source.key_for(pos).or_else(|| source.key_for(after)) {
                Some(k) => format!("`{k}` has no value"),
                None => "a value is missing here".to_owned(),
            };
            Problem::error(source, pos, message)
                .help("write the value after the colon, or remove the key")
        }
        E::MultipleDocuments { .. } => Problem::error(
            source,
            pos,
            "a second YAML document starts here: a runbook is one document",
        )
        .help("remove the `---` line and what follows it, or merge the two"),
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let d = Problem::error(
                source,
                pos,
                format!("`{variant}` is not one of: {}", expected.join(", ")),
            );
            match closest(variant, expected) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!("use one of: {}", expected.join(", "))),
            }
        }
        E::Eof { .. } => Problem::error(source, pos, "the runbook ends in the middle of a value")
            .help("check for an unclosed quote, bracket or brace"),
        other => {
            let message = clean_message(other, pos);
            syntax(source, pos, message)
        }
    }
}

/// A value of the wrong shape: a list where text belongs, a mapping where a list belongs.
fn wrong_shape(
    source: &Source,
    pos: Pos,
    expected: String,
    shape: String,
    found: &Found,
) -> Problem {
    let message = match (source.key_for(pos), source.in_list(pos)) {
        (Some(k), true) => format!("each item of `{k}` must be {expected}, not {shape}"),
        (Some(k), false) => format!("`{k}` must be {expected}, not {shape}"),
        (None, _) => format!("expected {expected} here, not {shape}"),
    };
    let kind = found.text.as_str();
    if model::KINDS.contains(&kind) {
        let example = if kind == "drop_caches" {
            "`- drop_caches: {}`".to_owned()
        } else {
            format!("`- {kind}: ...`")
        };
        return Problem::error(source, pos, message).help(format!(
            "a step is a mapping: its kind is a key with a value, like {example}"
        ));
    }
    let help = if found.text.starts_with("{{") {
        // `start: {{ vars.unit }}` is a flow mapping to YAML.
        "YAML reads a value that starts with `{{` as a mapping: put the template in quotes, like \"{{ vars.unit }}\""
    } else if expected.starts_with("a list") {
        "write the items one per line, each starting with `- `, or as `[a, b]`"
    } else if expected.starts_with("a mapping") {
        "write `key: value` lines indented under the key, or `{ key: value }`"
    } else if expected == "text" {
        "write a single value; quote it if it starts with `[`, `{`, `-`, `*`, `&` or `!`"
    } else {
        "check the value against the runbook format in the README"
    };
    Problem::error(source, pos, message).help(help)
}

/// The error's own text, without the location serde-saphyr appends.
fn clean_message(e: &serde_saphyr::Error, pos: Pos) -> String {
    let raw = e.to_string();
    let suffix = format!(" at line {}, column {}", pos.line, pos.column);
    let raw = raw.strip_suffix(&suffix).unwrap_or(&raw);
    raw.lines()
        .next()
        .unwrap_or(raw)
        .trim()
        .trim_end_matches('.')
        .to_owned()
}

/// YAML syntax errors: say what to look for, and find an unclosed quote where it opens.
fn syntax(source: &Source, pos: Pos, message: String) -> Problem {
    let m = message.to_ascii_lowercase();
    if m.contains("quote") || m.contains("quoted scalar") {
        let open = source.unclosed_quote_before(pos).unwrap_or(pos);
        return Problem::error(source, open, "unclosed quote: this value has no closing quote")
            .label("opens here")
            .help("close the quote at the end of the value, or remove it: a value needs quotes only when it contains `: ` or starts with a special character");
    }
    let help = if m.contains("mapping values are not allowed") {
        "a value that contains `: ` must be quoted: put it in single quotes, like run: 'curl -H \"Accept: text/plain\" http://...'"
    } else if m.contains("tab") {
        "indent with spaces: YAML does not allow tabs in indentation"
    } else if m.contains("did not find expected key") || m.contains("indentation") {
        "check the indentation: the keys of one mapping start in the same column, indented with spaces"
    } else if m.contains("expected ',' or ']'") || m.contains("expected ',' or '}'") {
        "check the brackets and commas: a flow list is `[a, b]`, a flow mapping `{ a: 1, b: 2 }`"
    } else {
        "this is a YAML syntax error: check the indentation, quotes and brackets on this line and the one before"
    };
    Problem::error(source, pos, format!("YAML syntax error: {message}")).help(help)
}

/// Which part of the runbook an unknown key was found in, from the keys that part takes.
fn part_of(expected: &[&str], parent: Option<String>) -> (String, String) {
    let (part, takes) = part_name(expected);
    // Parts whose keys say less than the key they sit under (`expect` or `abort_if`?).
    let shared = part.is_empty() || expected.contains(&"stdout");
    match parent {
        Some(p) if shared => (format!("in `{p}`"), format!("`{p}` takes")),
        _ if part.is_empty() => ("here".into(), "This mapping takes".into()),
        _ => (part.into(), takes.into()),
    }
}

fn part_name(expected: &[&str]) -> (&'static str, &'static str) {
    let has = |k: &str| expected.contains(&k);
    if has("budget") {
        ("at the top level", "The top level takes")
    } else if has("window") {
        ("in a phase", "A phase takes")
    } else if has("stable_for") {
        ("in `ups:`", "`ups:` takes")
    } else if has("wol") {
        ("in `power_on:`", "`power_on:` takes")
    } else if has("host") {
        ("in a target", "A target takes")
    } else if has("webhook") {
        ("in a notify channel", "A notify channel takes")
    } else if has("drop_caches") {
        ("in a step", "A step takes")
    } else if has("manual") {
        ("in `otherwise:`", "`otherwise:` takes")
    } else if has("successes") {
        ("in a health gate", "A health gate takes")
    } else if has("url") {
        ("in `http:`", "`http:` takes")
    } else if has("status") {
        ("in an HTTP `expect`", "An HTTP `expect` takes")
    } else if has("stdout") {
        ("in `expect`/`abort_if`", "`expect` and `abort_if` take")
    } else if has("message") {
        ("in `abort:`", "`abort:` takes")
    } else {
        ("", "")
    }
}

fn unknown_key(
    source: &Source,
    pos: Pos,
    field: &str,
    expected: &[&str],
    parent: Option<String>,
) -> Problem {
    if expected.is_empty() {
        let what = parent.map_or("this".to_owned(), |p| format!("`{p}`"));
        return Problem::error(
            source,
            pos,
            format!("unknown key `{field}`: {what} takes no settings"),
        )
        .help("write `drop_caches: {}`");
    }
    let (part, takes) = part_of(expected, parent);
    let list = format!("{takes}: {}", expected.join(", "));
    let hint = if ["status", "body"].contains(&field) && expected.contains(&"stdout") {
        Some(
            "HTTP expectations go inside `http:`, like `http: { url: ..., expect: { status: 200 } }`; a step's `expect` checks a command's exit, stdout and stderr"
                .to_owned(),
        )
    } else {
        closest(field, expected).map(|s| {
            if model::KINDS.contains(&s) {
                format!(
                    "did you mean `{s}`? Step kinds: {}",
                    model::KINDS.join(", ")
                )
            } else {
                format!("did you mean `{s}`?")
            }
        })
    };
    let help = match hint {
        Some(h) => format!("{h}\n{list}"),
        None => list,
    };
    Problem::error(source, pos, format!("unknown key `{field}` {part}")).help(help)
}

/// The known word `word` was probably meant to be: same after `-`/case, a near miss,
/// a longer or shorter form, or a common synonym.
fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let norm = word.replace('-', "_").to_ascii_lowercase();
    let synonyms: &[(&str, &str)] = &[
        ("interval", "every"),
        ("period", "every"),
        ("hostname", "host"),
        ("address", "host"),
        ("url", "webhook"),
        ("exit_code", "exit"),
        ("exitcode", "exit"),
        ("code", "status"),
        ("status_code", "status"),
        ("deadline", "timeout"),
        ("command", "run"),
        ("cmd", "run"),
        ("unit", "start"),
        ("service", "start"),
    ];
    let known_has = |k: &str| known.iter().copied().find(|x| *x == k);
    if let Some(k) = known_has(&norm) {
        return Some(k);
    }
    if let Some((_, to)) = synonyms.iter().find(|(from, _)| *from == norm)
        && let Some(k) = known_has(to)
    {
        return Some(k);
    }
    let best = known
        .iter()
        .map(|k| (edit_distance(&norm, k), *k))
        .min_by_key(|(d, _)| *d)?;
    let limit = if norm.chars().count() <= 4 { 1 } else { 2 };
    if best.0 <= limit {
        return Some(best.1);
    }
    known
        .iter()
        .copied()
        .find(|k| k.len() >= 3 && norm.len() >= 3 && (norm.starts_with(k) || k.starts_with(&norm)))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn missing_help(field: &str, top: bool) -> String {
    match field {
        "budget" => "add `budget: 30m`: the whole timeline the recovery must fit in".into(),
        "name" if top => {
            "add `name: spark-power`: one word, used for the journal and state files".into()
        }
        "name" => "give the phase a name, like `name: Power on and POST`".into(),
        "targets" => {
            "add the machine to recover: `targets: { spark: { host: spark.local } }`".into()
        }
        "phases" => "add `phases:`, a list of phases, each with a name, a window and steps".into(),
        "window" => "add the phase's place on the timeline, like `window: 0m-5m`".into(),
        "steps" => "add `steps:`, the list of what the phase does".into(),
        "host" => "add `host:`, an ssh destination like `spark.local`".into(),
        "url" => "add `url:`, like `url: http://spark.local:8000/v1/models`".into(),
        "webhook" => "add `webhook: \"{{ env.RECOVER_WEBHOOK }}\"`".into(),
        "every" | "timeout" => "write both, like `retry: { every: 15s, timeout: 2m }`".into(),
        _ => format!("add `{field}:`; the README's runbook format says what it holds"),
    }
}

/// What an integer or boolean scalar was expected to be, in words, and how to write it.
fn scalar_kind(ty: &str) -> (&'static str, &'static str) {
    match ty {
        "bool" | "boolean" => ("true or false", "write `true` or `false`"),
        t if t.starts_with('u') => ("a whole number", "write digits only, like `2`"),
        t if t.starts_with('i') => ("a whole number", "write digits only, like `2`"),
        _ => ("a number", "write digits, like `2`"),
    }
}

/// serde's "expected" phrases, in the runbook's words.
fn expected_kind(expected: &str) -> String {
    let e = expected.trim();
    if e.contains("sequence") || e.contains("seq") {
        "a list".into()
    } else if e.contains("string") {
        "text".into()
    } else if e.contains("map") || e.starts_with("struct") {
        "a mapping (`key: value`)".into()
    } else if e.contains("bool") {
        "true or false".into()
    } else if e.starts_with('u') || e.starts_with('i') {
        "a whole number".into()
    } else {
        e.to_owned()
    }
}

/// serde's "unexpected" phrases (`string "x"`, `sequence`, `map`), in the runbook's words.
fn unexpected_kind(unexpected: &str) -> String {
    let u = unexpected.trim();
    if u.starts_with("sequence") {
        "a list".into()
    } else if u.starts_with("map") {
        "a mapping".into()
    } else if let Some(s) = u.strip_prefix("string ") {
        format!("the text {s}")
    } else {
        u.to_owned()
    }
}
