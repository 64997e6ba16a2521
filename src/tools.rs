//! `recover schema`, `recover completions SHELL`, `recover man`: generated from the model types
//! and from the clap definitions of `cli`, never written by hand.

use std::io::Write;
use std::path::Path;

use crate::cli::{self, Tools};

/// Runs one of the [`Tools`]; returns the exit code.
pub fn main(tool: Tools) -> i32 {
    let written = match &tool {
        Tools::Schema => print_schema(),
        Tools::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut cli::command(), "recover", &mut out);
            std::io::stdout().write_all(&out)
        }
        Tools::Man { dir: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cli::command())
                .render(&mut out)
                .and_then(|()| std::io::stdout().write_all(&out))
        }
        Tools::Man { dir: Some(dir) } => man_pages(dir),
    };
    match written {
        Ok(()) => 0,
        // The reader stopped reading (`recover schema | head`): nothing to report.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            let what = match tool {
                Tools::Schema => "the schema".to_owned(),
                Tools::Completions { shell } => format!("the {shell} completions"),
                Tools::Man { dir: None } => "the man page".to_owned(),
                Tools::Man { dir: Some(d) } => format!("the man pages into {}", d.display()),
            };
            eprintln!("recover: could not write {what}: {e}");
            2
        }
    }
}

fn print_schema() -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&crate::schema::runbook_schema())?;
    writeln!(std::io::stdout(), "{text}")
}

fn man_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cli::command(), dir)
}
