//! The `s3lead` binary: parse the command line, set up logging (`log.rs`) and a
//! single-threaded runtime, run the subcommand, and map its outcome to an exit status
//! (`exit.rs`).
//!
//! The runtime is current-thread on purpose: the child is spawned from the main thread,
//! and `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, so a worker thread
//! of a pool must never be the one that spawns it.
//!
//! Once logging is set up nothing here writes to stderr itself: the last error line goes
//! through the log queue, which neither blocks on a stuck stderr nor fails on a closed
//! one, and exiting waits for it a bounded time only.

mod cli;
mod hooks;
mod log;
mod peer;
mod pid1;
mod proof_cache;
mod supervise;
mod supervisor;

use clap::Parser;
use cli::{Cli, Command};
use s3lead::exit;
use std::io::Write;

fn main() {
    if pid1::is_pid1() {
        // A container's entrypoint: a minimal init in front of s3lead (pid1.rs says why).
        std::process::exit(pid1::main());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and usage errors come before any lock is touched, so a stuck stream
            // holds nothing back here; `print` returns a write error instead of panicking.
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let settings = cli.log_settings();
    match cli.command {
        Command::Run(args) => {
            // Now, while s3lead is one thread: logging and the runtime start threads,
            // and only the fork of a one-thread process may go on running Rust code.
            let guard = match supervise::Standby::fork() {
                Ok(g) => g,
                Err(e) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "s3lead: cannot start the guard process: {e}"
                    );
                    std::process::exit(exit::OS_ERROR);
                }
            };
            serve(settings, cli::run::run(*args, guard))
        }
        Command::Status(args) => {
            end_quietly_when_stdout_is_gone();
            serve(settings, cli::status::status(args))
        }
        Command::Check(args) => serve(settings, cli::check::check(args)),
    }
}

/// Sets up logging and a current-thread runtime, runs `job` on it, and exits with its
/// status, its error line going out through the log.
fn serve(settings: log::Settings, job: impl Future<Output = Result<i32, cli::Failure>>) -> ! {
    let log = match log::init(settings) {
        Ok(log) => log,
        Err(e) => {
            // No lock is touched yet: a plain write cannot hold a lease back, and it
            // must not panic.
            let _ = writeln!(std::io::stderr(), "s3lead: {e}");
            std::process::exit(exit::OS_ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => log.exit(
            exit::OS_ERROR,
            Some(&format!("cannot start the async runtime: {e}")),
        ),
    };
    let outcome = runtime.block_on(job);
    // Dropping the runtime would wait for blocking tasks (a stuck file lock, a DNS
    // look-up); the outcome is decided, so exit without waiting.
    std::mem::forget(runtime);
    match outcome {
        Ok(code) => log.exit(code, None),
        Err(f) => log.exit(f.code, Some(&f.message)),
    }
}

/// `s3lead status … | head -c0`: end as `cat` and `ls` do when nobody reads their output
/// any more, killed by SIGPIPE, silently. Rust ignores SIGPIPE, which turns that write
/// into an error, and `println!` panics on it (exit 101 and a panic message).
///
/// Only for `status`, one read and a few lines: `run` and `check` keep ignoring SIGPIPE
/// because the S3 client writes its sockets with `writev`, which would raise it on a
/// connection the server had reset, and end them without a word.
fn end_quietly_when_stdout_is_gone() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler code, and no other thread runs yet.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
