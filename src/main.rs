use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = recover::cli::Cli::parse();
    match recover::cmd::main(cli) {
        Ok(exit) => exit.into(),
        Err(e) => recover::cmd::report_error(&e).into(),
    }
}
