//! `writ`: the broker, and a CLI for every admin and agent operation.

mod cmd;
mod output;

use std::process::ExitCode;

use clap::Parser;

use cmd::Cli;

/// mimalloc rather than the system allocator: measured in BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before anything counts: the broker's handles are taken at its start.
    if cli.global.no_metrics {
        writ_listen::telemetry::disable();
    } else {
        writ_listen::telemetry::install();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.worker_threads())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(output::EXIT_ERROR);
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(output::exit_code_for(&e))
        }
    }
}
