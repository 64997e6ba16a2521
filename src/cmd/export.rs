//! `recover export`: resolve, render the binder copy, write it.

use std::io::Write;

use chrono::{DateTime, Utc};

use crate::cli::{ExportArgs, ExportFormat};
use crate::error::Error;
use crate::exit::Exit;
use crate::export::{Context, Format, Rehearsal, render};
use crate::state::StateDir;

pub fn export(a: &ExportArgs) -> Result<Exit, Error> {
    let (_, plan) = super::load_plan(&a.runbook, &a.resolve.overlays, &super::options(&a.resolve))?;
    let generated = generation_time(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref())?;
    let rehearsal = StateDir::from_env()
        .map(|s| crate::rehearsal::last::read(&s.rehearsal(&plan.state_key())))
        .unwrap_or(Rehearsal::Never);
    let format = match a.format {
        ExportFormat::Md => Format::Markdown,
        ExportFormat::Html => Format::Html,
    };
    let drills = StateDir::from_env()
        .map(|s| crate::drill::record::read(&s.drill(&plan.state_key())))
        .unwrap_or(crate::drill::record::Drills::Never);
    let cx = Context {
        generated,
        rehearsal,
        drills,
    };
    let doc = render(&plan, format, &cx).map_err(Error::Render)?;
    match &a.output {
        Some(path) => {
            std::fs::write(path, &doc).map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
            let steps: usize = plan.phases.iter().map(|p| p.steps.len()).sum();
            eprintln!(
                "{}: binder copy of {} ({} phases, {steps} steps) written",
                path.display(),
                plan.name,
                plan.phases.len()
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(doc.as_bytes())
                .and_then(|()| out.flush())
                .map_err(Error::Stdout)?;
        }
    }
    Ok(Exit::Ok)
}

/// The generation date: now, or `SOURCE_DATE_EPOCH` (seconds) for reproducible copies.
pub fn generation_time(source_date_epoch: Option<&str>) -> Result<DateTime<Utc>, Error> {
    match source_date_epoch.map(str::trim) {
        None | Some("") => Ok(Utc::now()),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .ok_or_else(|| Error::SourceDateEpoch(s.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_date_epoch_sets_the_date() {
        let t = generation_time(Some("1717243200")).unwrap();
        assert_eq!(
            t.format("%Y-%m-%d %H:%M UTC").to_string(),
            "2024-06-01 12:00 UTC"
        );
        assert!(generation_time(Some("soon")).is_err());
        assert!(generation_time(None).is_ok());
        assert!(generation_time(Some("")).is_ok());
    }
}
