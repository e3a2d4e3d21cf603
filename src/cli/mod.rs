//! The command line, defined once with clap's derive: `--help`, the man pages in `man/`
//! and the shell completions in `completions/` are all generated from these types (see
//! `cli/generated_docs.rs`, which fails when the committed files are stale).
//!
//! One file per subcommand holds what it does; this file holds only the definitions and
//! the error type every subcommand reports through.

pub mod check;
#[cfg(test)]
mod generated_docs;
pub mod run;
pub mod status;

use crate::supervise::parse_signal;
use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;
use s3lead::exit;
use s3lead::store::s3::S3Options;
use s3lead::store::{AnyStore, FatalKind, LockUrl, StoreError};
use s3lead::timing::parse_duration;
use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "s3lead",
    version,
    about = "Run a command only while holding a lease kept in one S3 object",
    long_about = "Run a command only while holding a lease kept in one S3 object (or a local file). \
Two copies of the command never run at once, and every leader gets a fencing term \
(S3LEAD_TERM) larger than the one before.",
    after_long_help = s3lead::exit::EXIT_STATUS_TEXT,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More logging on stderr (-v: debug; -vv: trace, and the AWS SDK's own lines).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "S3LEAD_LOG_FORMAT", global = true)]
    pub log_format: LogFormat,
}

impl Cli {
    /// What the global flags ask of the log.
    pub fn log_settings(&self) -> crate::log::Settings {
        crate::log::Settings {
            quiet: self.quiet,
            verbose: self.verbose,
            json: self.log_format == LogFormat::Json,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Campaign for the lock; run the command only while the lease is held.
    ///
    /// The command runs under a guard process that is its parent and reaper: every
    /// process it starts stays under the guard, whatever it does to its process group or
    /// session (setsid, setpgid, timeout, set -m, sudo use_pty), and is stopped with the
    /// rest. The guard is also the lease's watchdog: it holds the lease's latest end and
    /// SIGKILLs every process of the command when that instant passes on its own
    /// boot-time clock, even if s3lead itself is blocked, stopped (SIGSTOP) or killed.
    /// The stop signal goes out at the stop point (lease end minus --kill-after), SIGKILL
    /// no later than the lease's end; a lease taken over or deleted gets no grace. The
    /// lease is released only when no process of the command is left.
    ///
    /// Outside the promise: a process the kernel cannot kill in time (uninterruptible
    /// I/O), a whole host or VM paused past its lease, a setuid descendant an unprivileged
    /// s3lead may not signal, clock rates differing by more than 2 %. For these, have
    /// whatever the command writes to refuse writes carrying a smaller S3LEAD_TERM than it
    /// has seen: the fencing term protects the data when a process outlives its lease.
    ///
    /// A cron job that must run once across the fleet, in every host's crontab:
    /// `s3lead run -q -n --once-per 1d --once-per-offset 14h s3://ops-locks/nightly-report
    /// -- ./nightly-report.sh`. The first host to fire runs it and records the run; every
    /// host that fires later in the same window (by its own wall clock) prints nothing and
    /// exits 75 (systemd: SuccessExitStatus=75; cron: `|| [ $? -eq 75 ]`). Without -q it
    /// says in one line who ran the job and when. Windows start at UTC multiples of the
    /// window plus --once-per-offset: keep their edges far from the fire time, since hosts'
    /// clocks may be off by at most that distance.
    #[command(
        after_long_help = s3lead::exit::EXIT_STATUS_TEXT,
        override_usage = "s3lead run [OPTIONS] <LOCK> -- <COMMAND> [ARGS]...\n       s3lead run [OPTIONS] <LOCK> -c '<shell command>'"
    )]
    Run(Box<RunArgs>),
    /// Show who holds the lock (one read; writes nothing).
    ///
    /// Exits 0 when the lock appears live: held, and renewed within its lease by this
    /// host's reading of the record's renewed_at. Exits 1 when it is absent, released or
    /// stale. One read cannot prove a holder alive (renewed_at was written by another
    /// host's clock): only `s3lead run` decides, by watching the record change.
    #[command(after_long_help = s3lead::exit::EXIT_STATUS_TEXT)]
    Status(status::StatusArgs),
    /// Prove that the lock's store keeps the conditional-write contract, racing writers
    /// included (on scratch keys next to the lock; the lock itself is not touched).
    ///
    /// One write at a time: a create (If-None-Match: *) wins only on a missing key, a
    /// replace (If-Match) only with the current ETag, a refused write changes nothing,
    /// every write gives a new ETag, and a conditional read of the current ETag answers
    /// 304 (only a warning if not: it costs a download per poll). Then --rounds races of
    /// --writers concurrent creates, then as many concurrent replaces with one ETag:
    /// exactly one writer may win (HTTP 200) in each round, and the object must hold its
    /// body. The scratch keys (KEY.s3lead-check-RANDOM) are deleted afterwards. One line
    /// per check, then a verdict; exit 0 when the store is safe for s3lead, 78 when not.
    #[command(after_long_help = s3lead::exit::EXIT_STATUS_TEXT)]
    Check(check::CheckArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The lock: s3://BUCKET/KEY, file:///ABS/PATH, or a local path (the file store).
    pub lock: String,

    /// Holder identity shown to operators [default: HOSTNAME (pid N)]. Ownership is a
    /// random lease id, so two holders with the same id never share a lease.
    #[arg(long, env = "S3LEAD_ID")]
    pub id: Option<String>,

    /// How long followers wait after last seeing the record change.
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "S3LEAD_LEASE_DURATION")]
    pub lease_duration: Duration,

    /// The leader's renewal interval.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "S3LEAD_RENEW_EVERY")]
    pub renew_every: Duration,

    /// Retry interval for failed requests, and the followers' fast polling period (while
    /// the holder's renewal is overdue, or the lock is free).
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "S3LEAD_RETRY_PERIOD")]
    pub retry_period: Duration,

    /// The followers' slow polling period, while the holder renews on time [default: the
    /// shorter of 10s and a third of --lease-duration]. A holder killed with -9 is
    /// replaced within --lease-duration + --follow-every (40s at the defaults: 30s + 10s);
    /// a follower costs one read per --follow-every (360 an hour at the defaults). Each
    /// wait is shortened by up to 5 % at random, so followers do not read in step. On
    /// the file store a follower also wakes as soon as the lock file changes.
    #[arg(long, value_parser = parse_duration, env = "S3LEAD_FOLLOW_EVERY")]
    pub follow_every: Option<Duration>,

    /// Grace between the stop signal and SIGKILL.
    #[arg(short = 'k', long, default_value = "5s", value_parser = parse_duration, env = "S3LEAD_KILL_AFTER")]
    pub kill_after: Duration,

    /// Bound on each request to the store [default: the shorter of 5s and half of
    /// --renew-every].
    #[arg(long, value_parser = parse_duration, env = "S3LEAD_REQUEST_TIMEOUT")]
    pub request_timeout: Option<Duration>,

    /// The stop signal (name or number).
    #[arg(short = 's', long, default_value = "TERM", value_parser = parse_signal, env = "S3LEAD_SIGNAL")]
    pub signal: Signal,

    /// If another holder leads, exit at once without running the command.
    #[arg(short = 'n', long)]
    pub nonblock: bool,

    /// Give up campaigning after this long.
    #[arg(short = 'w', long, value_parser = parse_duration, env = "S3LEAD_TIMEOUT")]
    pub timeout: Option<Duration>,

    /// Keep the lease until DUR after it was won, even if the command exits sooner, then
    /// release. For cron with -n: hosts that fire later find the lock held and exit with
    /// the conflict status (75) instead of running the job again. Measured on this host's
    /// boot clock, never the wall clock. TERM or INT to s3lead ends the hold at once.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, env = "S3LEAD_MIN_HOLD")]
    pub min_hold: Option<Duration>,

    /// Run the command at most once per WINDOW of wall-clock time (15m, 1h, 1d) across all
    /// candidates. The record keeps the last run; a candidate that finds a run in the
    /// current window exits with the conflict status (75) without running, and says who
    /// ran it and when. Windows are aligned on UTC multiples of WINDOW (see
    /// --once-per-offset). A run still going, or one whose lease was lost, spends the
    /// window; so does a failed one unless --retry-failed.
    #[arg(long, value_name = "WINDOW", value_parser = parse_duration, env = "S3LEAD_ONCE_PER")]
    pub once_per: Option<Duration>,

    /// Shift the --once-per windows by DUR from UTC multiples of WINDOW, so that their
    /// edges fall far from the time cron fires (a daily 02:00 job in UTC: 14h).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "once_per", env = "S3LEAD_ONCE_PER_OFFSET")]
    pub once_per_offset: Option<Duration>,

    /// With --once-per: a run that exited with a non-zero status leaves the window open,
    /// and the next candidate to fire in it runs the command again.
    #[arg(long, requires = "once_per")]
    pub retry_failed: bool,

    /// Exit status when the lock is busy (-n), the wait timed out (-w), or the command
    /// already ran in this window (--once-per).
    #[arg(short = 'E', long, default_value_t = s3lead::exit::CONFLICT as u8, env = "S3LEAD_CONFLICT_EXIT_CODE")]
    pub conflict_exit_code: u8,

    /// Exit status when the lease was lost and the command stopped.
    #[arg(long, default_value_t = s3lead::exit::LOST as u8, env = "S3LEAD_LOST_EXIT_CODE")]
    pub lost_exit_code: u8,

    /// At exit, print one line with the store requests made, by kind and outcome (JSON
    /// with --log-format json); -v prints it too.
    #[arg(long)]
    pub stats: bool,

    /// Do not prove, once elected, that an S3 store refuses a create of an existing
    /// object (If-None-Match) and a replace with a wrong ETag (If-Match). The proof costs
    /// two PUTs, once a day per endpoint and bucket (remembered under
    /// $XDG_CACHE_HOME/s3lead). Without it, a store that ignores conditions elects every
    /// candidate at once: use only for a store proven with `s3lead check`.
    #[arg(long, env = "S3LEAD_NO_VERIFY_STORE")]
    pub no_verify_store: bool,

    /// Run CMD with /bin/sh -c once a lease is won, with the command's S3LEAD_*
    /// environment and S3LEAD_EVENT=elected. Hooks are news, not part of the promise:
    /// they run outside the lease, a failing one is logged and changes nothing, and one
    /// still running after --hook-timeout is killed with its process group.
    #[arg(long, value_name = "CMD", env = "S3LEAD_ON_ELECTED")]
    pub on_elected: Option<String>,

    /// Run CMD with /bin/sh -c once the lease is at risk or lost (S3LEAD_EVENT=lost,
    /// S3LEAD_LOST_REASON says why), after the command was sent its stop signal or
    /// SIGKILL: the hook never delays the stop.
    #[arg(long, value_name = "CMD", env = "S3LEAD_ON_LOST")]
    pub on_lost: Option<String>,

    /// Run CMD with /bin/sh -c once the release landed (S3LEAD_EVENT=released).
    #[arg(long, value_name = "CMD", env = "S3LEAD_ON_RELEASED")]
    pub on_released: Option<String>,

    /// A hook still running this long after it started is SIGKILLed with its process
    /// group. At exit s3lead waits for running hooks, at most this long each.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration, env = "S3LEAD_HOOK_TIMEOUT")]
    pub hook_timeout: Duration,

    /// Serve a read-only HTTP endpoint on ADDR (127.0.0.1:9464): GET /healthz, GET
    /// /metrics (Prometheus text: s3lead_is_leader, s3lead_term,
    /// s3lead_leader_changes_total, s3lead_store_requests_total,
    /// s3lead_renewals_at_risk_total, s3lead_seconds_since_last_renewal) and GET /v1/lease
    /// (the lease as this candidate knows it, JSON). It serves what the candidate has
    /// seen and decides nothing.
    #[arg(long, value_name = "ADDR", env = "S3LEAD_PEER_LISTEN")]
    pub peer_listen: Option<std::net::SocketAddr>,

    /// Run the command only while at least N candidates are live, this one included: the
    /// leader and the followers it hears long-polling its endpoint (peer mode; needs
    /// --peer-listen and --advertise). Below N the command is stopped as on a lost lease
    /// (the stop signal, SIGKILL after --kill-after) while the lease is kept and renewed;
    /// it starts again, under the same term, once N are live. An availability policy:
    /// the promise rests on the store's conditional writes, not on this.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..),
          requires_all = ["peer_listen", "advertise"], conflicts_with = "once_per",
          env = "S3LEAD_QUORUM")]
    pub quorum: Option<u16>,

    /// Ask for `Authorization: Bearer TOKEN` on /metrics and /v1/lease (/healthz stays
    /// open), TOKEN being the first line of FILE; a follower also sends it to the
    /// leader's advertised endpoint. Never on the command line, never logged.
    #[arg(long, value_name = "FILE", env = "S3LEAD_PEER_TOKEN_FILE")]
    pub peer_token_file: Option<std::path::PathBuf>,

    /// Write URL (http://HOST:PORT, where other candidates reach this one's
    /// --peer-listen) into the lock's record while leading: followers then long-poll it
    /// for each renewal instead of reading the store, and read the store again when it
    /// does not answer as leader. No answer of it can cause or hasten a takeover.
    #[arg(
        long,
        value_name = "URL",
        requires = "peer_listen",
        env = "S3LEAD_ADVERTISE"
    )]
    pub advertise: Option<String>,

    /// Run STRING with $SHELL -c (default /bin/sh) instead of a command after `--`.
    #[arg(
        short = 'c',
        long = "command",
        value_name = "STRING",
        conflicts_with = "argv"
    )]
    pub shell_command: Option<String>,

    #[command(flatten)]
    pub s3: S3Args,

    /// The command and its arguments, after `--`.
    #[arg(
        last = true,
        value_name = "COMMAND",
        required_unless_present = "shell_command"
    )]
    pub argv: Vec<OsString>,
}

/// S3 settings; the standard AWS environment and config files apply underneath.
#[derive(Debug, Args, Clone, Default)]
pub struct S3Args {
    /// S3-compatible endpoint (MinIO, Ceph RGW, R2 …) [env: AWS_ENDPOINT_URL_S3,
    /// AWS_ENDPOINT_URL].
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// AWS region [env: AWS_REGION, AWS_DEFAULT_REGION].
    #[arg(long)]
    pub region: Option<String>,

    /// Profile of the shared AWS config files [env: AWS_PROFILE].
    #[arg(long)]
    pub profile: Option<String>,

    /// Path-style addressing (always on with a custom endpoint).
    #[arg(long)]
    pub path_style: bool,
}

impl S3Args {
    pub fn options(&self, request_timeout: Duration) -> S3Options {
        S3Options {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            path_style: self.path_style,
            request_timeout,
        }
    }
}

/// The bound on each request of the one-shot subcommands (`status`, `check`), which
/// have no renewal interval to fit in.
pub const ONE_SHOT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The lock argument, parsed; a usage error names the forms it may take.
pub fn lock_url(lock: &str) -> Result<LockUrl, Failure> {
    LockUrl::parse(lock).map_err(|m| Failure::new(exit::USAGE, m))
}

/// Opens the lock's store. No request is sent, so this may come before validation
/// that must precede any request.
pub async fn open(url: &LockUrl, s3: &S3Options) -> Result<AnyStore, Failure> {
    url.open(s3).await.map_err(|e| store_failure(url, &e))
}

/// A store error as the one line the user sees and its exit status. The stores' words
/// leave the object unnamed, so the lock is named here, once, as the user spelt it.
pub(crate) fn store_failure(lock: impl fmt::Display, e: &StoreError) -> Failure {
    let code = match e {
        StoreError::Fatal(FatalKind::Permission, _) => exit::PERMISSION,
        StoreError::Fatal(FatalKind::TooLarge, _) => exit::BAD_RECORD,
        _ => exit::UNAVAILABLE,
    };
    Failure::new(code, format!("{lock}: {e}"))
}

/// A failure to report as one line on stderr, with its exit status.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// The token of `--peer-token-file`: its first line, which must not be empty. The
/// messages name the file, never what is in it.
pub fn read_token(
    lock: &s3lead::store::LockUrl,
    path: &std::path::Path,
) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!(
                "{lock}: cannot read --peer-token-file {}: {e}",
                path.display()
            ),
        )
    })?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{lock}: --peer-token-file {} is empty (put the token on its first line)",
                path.display()
            ),
        ));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_argv_after_double_dash() {
        let cli =
            Cli::try_parse_from(["s3lead", "run", "./x.lock", "--", "echo", "-n", "hi"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.argv, ["echo", "-n", "hi"]);
        assert_eq!(r.lease_duration, Duration::from_secs(30));
        assert_eq!(r.signal, Signal::SIGTERM);
        assert_eq!(r.conflict_exit_code, 75);
    }

    #[test]
    fn check_has_defaults_and_bounds() {
        let cli = Cli::try_parse_from(["s3lead", "check", "s3://b/k"]).unwrap();
        let Command::Check(c) = cli.command else {
            panic!()
        };
        assert_eq!((c.rounds, c.writers, c.json), (20, 8, false));
        assert!(Cli::try_parse_from(["s3lead", "check", "x", "--writers", "1"]).is_err());
        assert!(Cli::try_parse_from(["s3lead", "check", "x", "--rounds", "0"]).is_err());
    }

    #[test]
    fn run_refuses_both_a_shell_command_and_argv() {
        assert!(Cli::try_parse_from(["s3lead", "run", "x", "-c", "true", "--", "true"]).is_err());
        assert!(Cli::try_parse_from(["s3lead", "run", "x"]).is_err());
        assert!(Cli::try_parse_from(["s3lead", "run", "x", "-c", "true"]).is_ok());
    }
}
