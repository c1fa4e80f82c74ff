//! `ablate`: the command line. Parses arguments, sets up tracing, renders errors and progress,
//! and maps outcomes to exit codes. All the work lives in the library crates. It imports every
//! library crate except `ablate-models` and `ablate-nn`, which it reaches through `ablate-ops`.

mod cli;
mod cmd_cache;
mod cmd_exec;
mod cmd_ops;
mod cmd_plan;
mod cmd_report;
mod cmd_run;
mod cmd_show;
mod cmd_status;
mod cmd_table;
mod error;
mod load;
mod report;
mod results;
mod signals;
mod stdout;

use std::process::ExitCode;

use clap::Parser;

/// Everything went well.
pub const EXIT_OK: u8 = 0;
/// Something broke or an instance failed.
pub const EXIT_FAILURE: u8 = 1;
/// The input (pipeline file, arguments) is wrong.
pub const EXIT_INVALID_INPUT: u8 = 2;
/// Stopped by Ctrl-C (SIGTERM gives 143 and SIGHUP 129: 128 + the signal, as shells report).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The name of the runtime's threads, where ops run.
pub const WORKER_THREAD: &str = "ablate-worker";

fn main() -> ExitCode {
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ABLATE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // An op that panics fails its instance, and the `failed` event carries the message; the
    // default hook would also print it over the progress display. Panics elsewhere are bugs
    // and keep the default report.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(WORKER_THREAD) {
            tracing::debug!("op panicked: {info}");
        } else {
            default_hook(info);
        }
    }));
    let result = match args.command {
        cli::Command::Run(a) => cmd_run::run(&args.global, a),
        cli::Command::Plan(a) => cmd_plan::plan(&args.global, a),
        cli::Command::Ops(a) => cmd_ops::ops(a),
        cli::Command::Cache(a) => cmd_cache::cache(&args.global, a),
        cli::Command::Table(a) => cmd_table::table(a),
        cli::Command::Show(a) => cmd_show::show(&args.global, a),
        cli::Command::Report(a) => cmd_report::report(&args.global, a),
        cli::Command::Status(a) => cmd_status::status(&args.global, a),
        cli::Command::Exec(a) => cmd_exec::exec(&args.global, a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => error::report(&e),
    }
}
