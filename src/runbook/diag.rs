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

    /// Byte offset of a 1-based line and (character) column.
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

    /// Length of the token that starts at `offset`: up to the end of the line, trimmed.
    fn token_len(&self, offset: usize) -> usize {
        let rest = &self.text[offset.min(self.text.len())..];
        let line = rest.split('\n').next().unwrap_or("");
        let line = line.split(" #").next().unwrap_or(line);
        line.trim_end().len().max(1)
    }
}

/// A place in the runbook, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub fn of(loc: &Location) -> Pos {
        Pos {
            line: loc.line() as usize,
            column: loc.column() as usize,
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
        if self.pos.is_known() {
            Some(self as &dyn SourceCode)
        } else {
            None
        }
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if !self.pos.is_known() {
            return None;
        }
        let off = self.source.offset(self.pos.line, self.pos.column);
        let len = self.source.token_len(off);
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
        let contents = self.source.text.as_str().read_span(span, before, after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.source.path.clone(),
            contents.data(),
            *contents.span(),
            contents.line(),
            contents.column(),
            contents.line_count(),
        )))
    }
}
