use clap::Parser;

fn main() {
    let cli = recover::cli::Cli::parse();
    std::process::exit(recover::app::main(cli));
}
