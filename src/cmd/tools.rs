//! `recover schema`, `recover completions SHELL`, `recover man`: generated from the model types
//! and from the clap definitions of `cli`, never written by hand.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::Error;
use crate::exit::Exit;

pub fn schema() -> Result<Exit, Error> {
    let text = serde_json::to_string_pretty(&crate::schema::runbook_schema())
        .map_err(|e| print_error("the schema", std::io::Error::other(e)))?;
    print("the schema", format!("{text}\n").as_bytes())
}

pub fn completions(shell: clap_complete::Shell) -> Result<Exit, Error> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "recover", &mut out);
    print(&format!("the {shell} completions"), &out)
}

pub fn man(dir: Option<&Path>) -> Result<Exit, Error> {
    match dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|e| print_error("the man page", e))?;
            print("the man page", &out)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
                .map_err(|source| Error::Write {
                    path: dir.to_path_buf(),
                    source,
                })?;
            Ok(Exit::Ok)
        }
    }
}

/// `bytes` on standard output. A reader that stops reading (`recover schema | head`) is no
/// error.
pub fn print(what: &str, bytes: &[u8]) -> Result<Exit, Error> {
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => Ok(Exit::Ok),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Exit::Ok),
        Err(e) => Err(print_error(what, e)),
    }
}

fn print_error(what: &str, source: std::io::Error) -> Error {
    Error::Print {
        what: what.to_owned(),
        source,
    }
}
