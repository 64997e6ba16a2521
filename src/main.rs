use clap::{FromArgMatches, Subcommand};
use recover::cli::{Cli, Tools};

fn main() {
    let matches = recover::cli::command().get_matches();
    let code = match matches.subcommand_name() {
        Some(name) if Tools::has_subcommand(name) => {
            recover::tools::main(Tools::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
        }
        _ => recover::app::main(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())),
    };
    std::process::exit(code);
}
