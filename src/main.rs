//! The `vmagent` binary: parse the command line, run, exit with the run's code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = vmagent::cli::Cli::parse();
    std::process::ExitCode::from(vmagent::cli::run(cli))
}
