//! The `s3lead` binary: parse the command line, set up logging and a single-threaded
//! runtime, run the subcommand, and map its outcome to an exit status (`exit.rs`).
//!
//! The runtime is current-thread on purpose: the child is spawned from the main thread,
//! and `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, so a worker thread
//! of a pool must never be the one that spawns it.

use clap::Parser;
use s3lead::cli::{Cli, Command, LogFormat};
use s3lead::exit;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Command::Guard(g) = &cli.command {
        // Before logging or a runtime: the guard has no use for either.
        std::process::exit(s3lead::supervise::guard::main(
            g.ctl_fd,
            g.report_fd,
            g.deadline_ns,
            &g.argv,
        ));
    }
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("s3lead: cannot start the async runtime: {e}");
            std::process::exit(exit::OS_ERROR);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => s3lead::cli::run::run(*args).await,
            Command::Status(args) => s3lead::cli::status::status(args).await,
            Command::Check(args) => s3lead::cli::check::check(args).await,
            Command::Guard(_) => Ok(0),
        }
    });
    // Dropping the runtime would wait for blocking tasks (a stuck file lock, a DNS
    // look-up); the outcome is decided, so exit without waiting.
    std::mem::forget(runtime);
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(f) => {
            eprintln!("s3lead: {}", f.message);
            std::process::exit(f.code);
        }
    }
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // Our own crate at the chosen level; the AWS SDK's chatter only when asked for.
    let filter = tracing_subscriber::EnvFilter::try_from_env("S3LEAD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,s3lead={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
