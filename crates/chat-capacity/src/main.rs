//! chat-capacity: prints a capacity plan, a local run's prediction, the prod overlay's patches or
//! the unit-cost table (chat-capacity --help). A calculator: no server, so no /metrics or
//! /healthz; errors go to stderr with exit status 2.

use clap::Parser;

fn main() {
    let cli = chat_capacity::cli::Cli::parse();
    match chat_capacity::cli::run(&cli) {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("chat-capacity: {e}");
            std::process::exit(2);
        }
    }
}
