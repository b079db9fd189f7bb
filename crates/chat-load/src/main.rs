//! chat-load's entry point: the coordinator, or (with the hidden `--worker-index`) one of the
//! worker processes it starts.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = chat_load::args::Args::parse();
    let result = if args.worker_index.is_some() {
        chat_load::worker::run(args).map(|()| std::process::ExitCode::SUCCESS)
    } else {
        chat_load::coordinator::run(args)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chat-load: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
