//! Diagnostics for what the operator wrote: file, line, column, a snippet and a fix.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, SourceCode};
use serde_saphyr::Location;

/// The runbook text, shared by every diagnostic that points into it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: String,
    pub text: Arc<String>,
}

impl Source {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            path: path.into(),
            text: Arc::new(text.into()),
        }
    }

    /// Byte offset of a 1-based line and (character) column; always on a character boundary.
    pub fn offset(&self, line: usize, column: usize) -> usize {
        let mut off = 0;
        for (i, l) in self.text.split_inclusive('\n').enumerate() {
            if i + 1 == line {
                let col: usize = l
                    .char_indices()
                    .nth(column.saturating_sub(1))
                    .map(|(b, _)| b)
                    .unwrap_or(l.trim_end_matches('\n').len());
                return off + col;
            }
            off += l.len();
        }
        self.text.len()
    }

    /// The byte range to underline for `pos`: the value's own length when the loader knew it,
    /// else the token that starts there; never past the end of its line. Always inside the
    /// text and on character boundaries.
    pub fn span(&self, pos: Pos) -> (usize, usize) {
        let start = self.offset(pos.line, pos.column);
        let len = match self.flow_len(start) {
            Some(n) if pos.len <= 1 => n,
            _ if pos.len > 0 => pos.len,
            _ => self.token_len(start),
        };
        let line_end = self.text[start..]
            .find(['\r', '\n'])
            .map_or(self.text.len(), |i| start + i);
        let mut end = (start + len)
            .min(line_end.max(start + 1))
            .min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end += 1;
        }
        (start, end - start)
    }

    /// Length of the flow collection (`{ ... }` or `[ ... ]`) that starts at `offset`, when it
    /// closes on the same line.
    fn flow_len(&self, offset: usize) -> Option<usize> {
        let rest = self.text.get(offset..)?;
        if !rest.starts_with(['{', '[']) {
            return None;
        }
        let mut depth = 0i32;
        let mut quote: Option<char> = None;
        for (i, c) in rest.char_indices() {
            match (quote, c) {
                (_, '\n') => return None,
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '{' | '[') => depth += 1,
                (None, '}' | ']') => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Length of the token that starts at `offset`: up to the end of the line or a comment,
    /// and inside a flow collection (`{ a: 1, b: 2 }`) up to the next `,`, `}` or `]`.
    fn token_len(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let depth: i32 = self.text[line_start..offset]
            .chars()
            .map(|c| match c {
                '{' | '[' => 1,
                '}' | ']' => -1,
                _ => 0,
            })
            .sum();
        let rest = &self.text[offset..];
        let line = rest.split('\n').next().unwrap_or("");
        let line = line.split(" #").next().unwrap_or(line);
        let token = if depth > 0 && !line.starts_with(['"', '\'']) {
            line.split([',', '}', ']']).next().unwrap_or(line)
        } else {
            line
        };
        token.trim_end().len().max(1)
    }

    /// The text of a 1-based line, without its line break.
    fn line_text(&self, line: usize) -> Option<&str> {
        let l = self.text.split('\n').nth(line.checked_sub(1)?)?;
        Some(l.strip_suffix('\r').unwrap_or(l))
    }

    /// Where `key:` is written in the block mapping whose first key is at `block`: keys of a
    /// mapping line up in one column, and the mapping ends at the first line indented less.
    pub fn key_in_block(&self, block: Pos, key: &str) -> Option<Pos> {
        if !block.is_known() {
            return None;
        }
        let col = block.column.saturating_sub(1);
        let first = self.line_text(block.line)?;
        // The first line may hold the mapping in flow style, `- { run: x, sudo: true }`:
        // its keys follow `{` or `,` at the same bracket depth.
        let depth_at = |i: usize| -> i32 {
            first
                .chars()
                .take(i)
                .map(|c| match c {
                    '{' | '[' => 1,
                    '}' | ']' => -1,
                    _ => 0,
                })
                .sum()
        };
        let depth = depth_at(col);
        let mut from = col;
        while let Some(i) = char_find(first, key, from) {
            let lead: String = first.chars().take(i).collect();
            let lead = lead.trim_end();
            let flow_key = depth > 0 && depth_at(i) == depth && lead.ends_with(['{', ',']);
            if (i == col || flow_key) && is_key_at(first, i, key) {
                return Some(Pos::at(block.line, i + 1, key.len()));
            }
            from = i + 1;
        }
        for line in block.line + 1.. {
            let text = self.line_text(line)?;
            let trimmed = text.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = text.chars().count() - trimmed.chars().count();
            if indent < col {
                return None;
            }
            if indent == col && is_key_at(text, col, key) {
                return Some(Pos::at(line, col + 1, key.len()));
            }
        }
        None
    }

    /// Where the value of `key:` starts in the mapping whose first key is at `block`.
    pub fn value_in_block(&self, block: Pos, key: &str) -> Option<Pos> {
        let k = self.key_in_block(block, key)?;
        let text = self.line_text(k.line)?;
        let after: String = text
            .chars()
            .skip(k.column - 1 + key.chars().count())
            .collect();
        let rest = after.trim_start_matches(' ').strip_prefix(':')?;
        let skipped = after.chars().count() - rest.trim_start_matches(' ').chars().count();
        Some(Pos::at(k.line, k.column + key.chars().count() + skipped, 0))
    }

    /// Where the block mapping holding the key at `pos` starts: the first of its keys.
    pub fn block_start(&self, pos: Pos) -> Pos {
        if !pos.is_known() {
            return pos;
        }
        let col = pos.column.saturating_sub(1);
        if let Some(text) = self.line_text(pos.line) {
            let before: String = text.chars().take(col).collect();
            if open_bracket(&before).is_some() {
                return pos;
            }
        }
        let mut start = pos;
        let mut line = pos.line;
        while line > 1 {
            line -= 1;
            let Some(text) = self.line_text(line) else {
                break;
            };
            let trimmed = text.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = text.chars().count() - trimmed.chars().count();
            if indent > col {
                continue;
            }
            if indent == col {
                if trimmed.starts_with("- ") {
                    break;
                }
                start = Pos::at(line, col + 1, 0);
                continue;
            }
            // `  - name: x`: the list item that holds this mapping starts here.
            let after_dashes = trimmed.trim_start_matches(['-', ' ']);
            let key_col = text.chars().count() - after_dashes.chars().count();
            if trimmed.starts_with("- ") && key_col == col {
                start = Pos::at(line, col + 1, 0);
            }
            break;
        }
        start
    }

    /// The first place `needle` is written at or after `pos`, within `lines` lines.
    pub fn find_after(&self, pos: Pos, needle: &str, lines: usize) -> Option<Pos> {
        if !pos.is_known() || needle.is_empty() {
            return None;
        }
        for line in pos.line..pos.line + lines.max(1) {
            let text = self.line_text(line)?;
            let from = if line == pos.line {
                pos.column.saturating_sub(1)
            } else {
                0
            };
            if let Some(i) = char_find(text, needle, from) {
                return Some(Pos::at(line, i + 1, needle.len()));
            }
        }
        None
    }

    /// Whether the value at `pos` is an item of a list (`- x`, or inside `[ ... ]`) rather than
    /// the value of a key.
    pub fn in_list(&self, pos: Pos) -> bool {
        let Some(text) = self.line_text(pos.line) else {
            return false;
        };
        let before: String = text.chars().take(pos.column.saturating_sub(1)).collect();
        if before.trim_end().ends_with(':') {
            return false;
        }
        match open_bracket(&before) {
            Some(i) => before[i..].starts_with('['),
            None => {
                before.trim_start().starts_with('-')
                    && before.trim_start_matches([' ', '-']).is_empty()
            }
        }
    }

    /// The key a value at `pos` belongs to: `name` for `name: [a, b]`, or for a value on the
    /// lines below its key, the nearest key indented less.
    pub fn key_for(&self, pos: Pos) -> Option<String> {
        let text = self.line_text(pos.line)?;
        let before: String = text.chars().take(pos.column.saturating_sub(1)).collect();
        let key_before = |lead: &str| -> Option<String> {
            let k = lead.trim_end().strip_suffix(':')?;
            let k = k.rsplit(['{', '[', ',', ' ']).next().unwrap_or(k).trim();
            (!k.is_empty()).then(|| k.to_owned())
        };
        // `key: value` on this line.
        if let Some(k) = key_before(&before) {
            return Some(k);
        }
        // Inside `key: { ... }` on this line: the key before the open bracket.
        if let Some(i) = open_bracket(&before) {
            return key_before(&before[..i]);
        }
        if !before.trim_start_matches(['-', ' ']).is_empty() {
            return None;
        }
        let col = before.chars().count();
        for line in (1..pos.line).rev() {
            let text = self.line_text(line)?;
            let trimmed = text.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = text.chars().count() - trimmed.chars().count();
            if indent < col {
                let item = trimmed.trim_start_matches(['-', ' ']);
                let (k, _) = item.split_once(':')?;
                let k = k.trim();
                return (!k.is_empty() && !k.starts_with(['{', '['])).then(|| k.to_owned());
            }
        }
        None
    }

    /// When `pos` lies inside a quoted value that is never closed, where that value opens.
    pub fn unclosed_quote_before(&self, pos: Pos) -> Option<Pos> {
        let mut open: Option<(char, Pos)> = None;
        for line in 1..=pos.line {
            let text = self.line_text(line)?;
            let chars: Vec<char> = text.chars().collect();
            let mut i = 0;
            while i < chars.len() {
                let c = chars[i];
                match open {
                    Some(('"', _)) if c == '\\' => i += 1,
                    Some((q, _)) if c == q => {
                        if q == '\'' && chars.get(i + 1) == Some(&'\'') {
                            i += 1;
                        } else {
                            open = None;
                        }
                    }
                    Some(_) => {}
                    None if c == '#' && (i == 0 || chars[i - 1] == ' ') => break,
                    None if c == '"' || c == '\'' => {
                        let lead = chars[..i].iter().rev().find(|c| **c != ' ');
                        if matches!(lead, None | Some(':' | '-' | '[' | '{' | ',' | '?')) {
                            open = Some((c, Pos::at(line, i + 1, 1)));
                        }
                    }
                    None => {}
                }
                i += 1;
            }
        }
        open.map(|(_, p)| p)
    }
}

/// Byte index of the last `{` or `[` in `text` that is not closed in it.
fn open_bracket(text: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in text.char_indices().rev() {
        match c {
            '}' | ']' => depth += 1,
            '{' | '[' if depth == 0 => return Some(i),
            '{' | '[' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Character index of `needle` in `text` at or after character `from`.
fn char_find(text: &str, needle: &str, from: usize) -> Option<usize> {
    let start = text.char_indices().nth(from).map(|(b, _)| b)?;
    let b = text[start..].find(needle)? + start;
    Some(text[..b].chars().count())
}

/// Whether `key` followed by `:` is written at character `col` of `text`.
fn is_key_at(text: &str, col: usize, key: &str) -> bool {
    let rest: String = text.chars().skip(col).collect();
    rest.strip_prefix(key)
        .map(|r| r.trim_start_matches(' ').starts_with(':'))
        .unwrap_or(false)
}

/// A place in the runbook, 1-based, and how many bytes of the value start there (0: unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
    pub len: usize,
}

impl Pos {
    pub fn at(line: usize, column: usize, len: usize) -> Pos {
        Pos { line, column, len }
    }
    pub fn of(loc: &Location) -> Pos {
        Pos {
            line: loc.line() as usize,
            column: loc.column() as usize,
            len: loc.span().byte_len().unwrap_or(0) as usize,
        }
    }
    pub fn is_known(&self) -> bool {
        self.line > 0
    }
}

/// One error (or lint) in a runbook.
#[derive(Debug, Clone)]
pub struct Problem {
    pub message: String,
    pub pos: Pos,
    pub label: String,
    pub help: Option<String>,
    pub source: Source,
    pub severity: miette::Severity,
}

impl Problem {
    pub fn error(source: &Source, pos: Pos, message: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            pos,
            label: "here".into(),
            help: None,
            source: source.clone(),
            severity: miette::Severity::Error,
        }
    }
    pub fn warning(source: &Source, pos: Pos, message: impl Into<String>) -> Self {
        Problem {
            severity: miette::Severity::Warning,
            ..Problem::error(source, pos, message)
        }
    }
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    /// Whether there is a place in the text to show: not for an unknown place or a blank file.
    fn has_snippet(&self) -> bool {
        self.pos.is_known() && !self.source.text.trim().is_empty()
    }
    /// `file:line:column`, the way editors and terminals link it.
    pub fn place(&self) -> String {
        if self.pos.is_known() {
            format!("{}:{}:{}", self.source.path, self.pos.line, self.pos.column)
        } else {
            self.source.path.clone()
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        if self.has_snippet() {
            Some(self as &dyn SourceCode)
        } else {
            None
        }
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if !self.has_snippet() {
            return None;
        }
        let (off, len) = self.source.span(self.pos);
        Some(Box::new(std::iter::once(LabeledSpan::new(
            Some(self.label.clone()),
            off,
            len,
        ))))
    }
}

impl SourceCode for Problem {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let text = self.source.text.as_str();
        let contents = text.read_span(span, before, after)?;
        // miette counts columns in bytes; the runbook's positions count characters.
        let off = contents.span().offset();
        let line_start = text
            .get(..off)
            .and_then(|t| t.rfind('\n'))
            .map_or(0, |i| i + 1);
        let column = text
            .get(line_start..off)
            .map_or(contents.column(), |t| t.chars().count());
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.source.path.clone(),
            contents.data(),
            *contents.span(),
            contents.line(),
            column,
            contents.line_count(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Source {
        Source::new("t.yaml", text)
    }

    #[test]
    fn offsets_and_spans_stay_on_character_boundaries() {
        let s = src("title: é🔌 ⚡x\nbudget: 5 zz # note\n");
        // Column 9 is the emoji, 4 bytes wide, after the 2-byte `é`.
        assert_eq!(s.offset(1, 9), "title: é".len());
        assert_eq!(&s.text[s.offset(1, 9)..s.offset(1, 10)], "🔌");
        // A length hint that ends inside a character is widened to the whole character.
        let (start, len) = s.span(Pos::at(1, 9, 1));
        assert_eq!(&s.text[start..start + len], "🔌");
        // Past the end of a line or the text: clamped, never a panic.
        for (line, column) in [(1, 200), (2, 99), (3, 1), (99, 1), (0, 0)] {
            for len in [0, 1, 3, 1000] {
                let (start, n) = s.span(Pos::at(line, column, len));
                assert!(
                    s.text.get(start..start + n).is_some(),
                    "{line}:{column}+{len}"
                );
            }
        }
        // The token stops at a comment.
        let (start, n) = s.span(Pos::at(2, 9, 0));
        assert_eq!(&s.text[start..start + n], "5 zz");
    }

    #[test]
    fn a_problem_after_multibyte_text_renders_with_its_character_column() {
        let s = src("title: Récupération ⚡\nsteps: { manual: \"⏻ 🔌\", timeout: zz }\n");
        let pos = Pos::at(2, 34, 0);
        let (start, n) = s.span(pos);
        assert_eq!(&s.text[start..start + n], "zz");
        let p = Problem::error(&s, pos, "`zz` is not a duration");
        let mut out = String::new();
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .render_report(&mut out, &p)
            .unwrap();
        // miette counts bytes; the header must count characters, like the `error:` line.
        assert!(out.contains("[t.yaml:2:34]"), "{out}");
        assert!(out.contains("╰── here"), "{out}");
        assert_eq!(p.place(), "t.yaml:2:34");
    }

    #[test]
    fn flow_collections_are_underlined_whole() {
        let s = src("a:\n  retry: { every: 2m, timeout: 1m }\n  b: [1, \"]\", 2] # c\n");
        let (start, n) = s.span(Pos::at(2, 10, 1));
        assert_eq!(&s.text[start..start + n], "{ every: 2m, timeout: 1m }");
        let (start, n) = s.span(Pos::at(3, 6, 1));
        assert_eq!(&s.text[start..start + n], "[1, \"]\", 2]");
        // A plain token inside a flow mapping ends at the comma.
        let (start, n) = s.span(Pos::at(2, 19, 0));
        assert_eq!(&s.text[start..start + n], "2m");
    }

    #[test]
    fn keys_are_found_in_their_own_mapping_only() {
        let s = src(concat!(
            "steps:\n",
            "  - http: { url: x, timeout: 10s }\n",
            "    expect: { exit: 0 }\n",
            "    health:\n",
            "      timeout: 1m\n",
            "    timeout: 30s\n",
            "  - run: y\n",
            "    sudo: true\n",
            "  - { run: z, sudo: true }\n",
        ));
        let step = Pos::at(2, 5, 0);
        assert_eq!(s.key_in_block(step, "timeout"), Some(Pos::at(6, 5, 7)));
        assert_eq!(s.key_in_block(step, "health"), Some(Pos::at(4, 5, 6)));
        assert_eq!(s.key_in_block(step, "sudo"), None);
        assert_eq!(
            s.key_in_block(Pos::at(9, 7, 0), "sudo"),
            Some(Pos::at(9, 15, 4))
        );
    }

    #[test]
    fn a_mapping_starts_at_its_first_key() {
        let s = src("name: a\n\n# c\nbudget: 1m\nphases:\n  - name: b\n    steps: []\n");
        assert_eq!(s.block_start(Pos::at(5, 1, 0)), Pos::at(1, 1, 0));
        assert_eq!(s.block_start(Pos::at(7, 5, 0)), Pos::at(6, 5, 0));
    }

    #[test]
    fn the_key_of_a_value() {
        let s = src("name: [a, b]\nretry: { every: 1s, for: 2 }\nsteps:\n  run: x\n");
        assert_eq!(s.key_for(Pos::at(1, 7, 0)).as_deref(), Some("name"));
        assert_eq!(s.key_for(Pos::at(2, 21, 0)).as_deref(), Some("retry"));
        assert_eq!(s.key_for(Pos::at(4, 3, 0)).as_deref(), Some("steps"));
        let s = src("phases: [foo, { a: 1 }]\nsteps:\n  - run\n  - x: [1]\n");
        assert!(s.in_list(Pos::at(1, 10, 0)));
        assert!(!s.in_list(Pos::at(1, 18, 0)));
        assert!(s.in_list(Pos::at(3, 5, 0)));
        assert!(!s.in_list(Pos::at(4, 8, 0)));
        assert_eq!(s.key_for(Pos::at(3, 5, 0)).as_deref(), Some("steps"));
    }

    #[test]
    fn an_unclosed_quote_is_found_where_it_opens() {
        let s = src("a: \"ok\"\nb: it's fine\nc: \"never closed\nd: 1\n");
        assert_eq!(
            s.unclosed_quote_before(Pos::at(4, 1, 0)),
            Some(Pos::at(3, 4, 1))
        );
        let s = src("a: 'it''s closed'\nb: \"esc \\\" still open\n");
        assert_eq!(
            s.unclosed_quote_before(Pos::at(2, 20, 0)),
            Some(Pos::at(2, 4, 1))
        );
        let s = src("a: \"multi\n  line\"\nb: 1\n");
        assert_eq!(s.unclosed_quote_before(Pos::at(3, 1, 0)), None);
    }
}
