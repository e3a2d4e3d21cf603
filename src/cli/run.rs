//! `s3lead run` as the command line sees it: the arguments become a validated
//! [`RunPlan`] (everything the user can get wrong is refused there, before any request),
//! the library's supervisor (`supervisor.rs`) runs it, and this room renders how it ended
//! as one line and an exit status.

use super::{Failure, RunArgs, store_failure};
use crate::hooks::HookCommands;
use crate::peer::{Endpoint, View};
use crate::proof_cache::ProofCache;
use crate::supervise::{Program, Standby};
use crate::supervisor::{self, Ended, EventTap, Job, RunError};
use s3lead::election::FatalError;
use s3lead::exit;
use s3lead::lease::CampaignError;
use s3lead::record::{LastRun, OncePer};
use s3lead::signals::Signals;
use s3lead::store::proof::Condition;
use s3lead::store::s3::S3Options;
use s3lead::store::{AnyStore, LockStore, RequestCounters};
use s3lead::timing::{Dur, Timing, TimingSpec};
use tracing::info;

/// What `s3lead run` was asked to do, validated: derived from the arguments as a whole,
/// as ripgrep derives its `HiArgs` from the flags.
#[derive(Clone, Debug)]
pub struct RunPlan {
    /// The lock, the timing, the holder, the command and how to stop it.
    pub job: Job,
    /// How to reach the store, if it is S3.
    pub s3: S3Options,
    /// The exit status when the lock is busy (`-n`) or the wait timed out (`-w`).
    pub conflict_exit_code: i32,
    /// `--stats`: report the store requests at exit even without `-v`.
    pub stats: bool,
    /// Prove an S3 store at acquisition (not `--no-verify-store`).
    pub verify_store: bool,
    /// `--peer-listen`: serve the endpoint (`peer.rs`) here.
    pub peer_listen: Option<std::net::SocketAddr>,
    /// The bearer token the endpoint asks for (`--peer-token-file`).
    pub peer_token: Option<String>,
    /// `--quorum N` (it requires `--peer-listen` and `--advertise`).
    pub quorum: Option<usize>,
}

impl RunPlan {
    /// Validates the arguments: the lock's name, the timing (whose request timeout also
    /// bounds the S3 client's requests), the command and the holder. A usage error names
    /// the lock and the fix.
    pub fn from_args(args: RunArgs) -> Result<RunPlan, Failure> {
        let lock = super::lock_url(&args.lock)?;
        let timing = Timing::new(&TimingSpec {
            lease: args.lease_duration,
            renew_every: args.renew_every,
            retry_period: args.retry_period,
            kill_after: args.kill_after,
            margin: None,
            request_timeout: args.request_timeout,
            follow_every: args.follow_every,
        })
        .map_err(|e| Failure::new(exit::USAGE, format!("{lock}: {e}")))?;
        let once_per = once_per_plan(&lock, &args)?;
        if args.hook_timeout.is_zero() {
            return Err(Failure::new(
                exit::USAGE,
                format!("{lock}: --hook-timeout must be positive"),
            ));
        }
        if args.min_hold.is_some_and(|d| d.is_zero()) {
            return Err(Failure::new(
                exit::USAGE,
                format!("{lock}: --min-hold must be positive"),
            ));
        }
        let peer_token = match &args.peer_token_file {
            None => None,
            Some(path) => Some(super::read_token(&lock, path)?),
        };
        if let Some(url) = &args.advertise {
            check_advertise(&lock, url)?;
        }
        let holder = args.id.unwrap_or_else(default_holder);
        let peer_link = Some(std::sync::Arc::new(crate::peer::PeerClient::new(
            peer_token.clone(),
            &holder,
        )));
        let program = match args.shell_command {
            Some(line) => Program::Shell(line),
            None => Program::Argv(args.argv),
        };
        Ok(RunPlan {
            s3: args.s3.options(timing.request_timeout()),
            job: Job {
                lock,
                timing,
                holder,
                program,
                nonblock: args.nonblock,
                timeout: args.timeout,
                stop_signal: args.signal,
                lost_exit_code: i32::from(args.lost_exit_code),
                min_hold: args.min_hold,
                once_per,
                // Set once the store is open: only an S3 store is asked.
                verify_store: None,
                hooks: HookCommands {
                    on_elected: args.on_elected,
                    on_lost: args.on_lost,
                    on_released: args.on_released,
                    timeout: args.hook_timeout,
                },
                tap: None,
                advertise: args.advertise,
                peer_link,
                // Set once the endpoint is up: the followers are those it hears.
                quorum: None,
            },
            quorum: args.quorum.map(usize::from),
            peer_listen: args.peer_listen,
            peer_token,
            conflict_exit_code: i32::from(args.conflict_exit_code),
            stats: args.stats,
            verify_store: !args.no_verify_store,
        })
    }
}

/// `--once-per WINDOW` and its offset, validated: whole seconds, a window of 1s at least.
fn once_per_plan(
    lock: &s3lead::store::LockUrl,
    args: &RunArgs,
) -> Result<Option<OncePer>, Failure> {
    Ok(match args.once_per {
        None => None,
        Some(every) => {
            let offset = args.once_per_offset.unwrap_or_default();
            for (flag, d) in [("--once-per", every), ("--once-per-offset", offset)] {
                if d.subsec_nanos() != 0 {
                    return Err(Failure::new(
                        exit::USAGE,
                        format!("{lock}: {flag} must be whole seconds (got {})", Dur(d)),
                    ));
                }
            }
            if every.is_zero() {
                return Err(Failure::new(
                    exit::USAGE,
                    format!("{lock}: --once-per must be at least 1s"),
                ));
            }
            Some(OncePer {
                every,
                offset,
                retry_failed: args.retry_failed,
                unused_claim: None,
            })
        }
    })
}

/// `--advertise` must be an `http://HOST:PORT` URL: followers only follow those.
fn check_advertise(lock: &s3lead::store::LockUrl, url: &str) -> Result<(), Failure> {
    let ok = url
        .strip_prefix("http://")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
    if ok {
        return Ok(());
    }
    Err(Failure::new(
        exit::USAGE,
        format!("{lock}: --advertise {url:?} is not an http://HOST:PORT URL"),
    ))
}

/// Runs `s3lead run`; returns the exit status.
/// `guard` is the guard process, forked at start (`supervise/guard.rs`).
pub async fn run(args: RunArgs, guard: Standby) -> Result<i32, Failure> {
    let mut plan = RunPlan::from_args(args)?;
    let store = plan
        .job
        .lock
        .open(&plan.s3)
        .await
        .map_err(|e| store_failure(&plan.job.lock, &e))?;
    // The store as the one line of a failed proof names it.
    let mut store_name = String::from("the store");
    if let AnyStore::S3(s3) = &store {
        store_name = format!("the store at {} (bucket {})", s3.endpoint(), s3.bucket());
        if plan.verify_store {
            plan.job.verify_store = Some(ProofCache::for_store(s3.endpoint(), s3.bucket()));
        }
    }
    if let Some(addr) = plan.peer_listen {
        let view = View::new(
            plan.job.lock.as_str(),
            &plan.job.holder,
            store.counters().cloned(),
        );
        let endpoint = Endpoint::bind(addr, view.clone(), plan.peer_token.take())
            .await
            .map_err(|e| {
                Failure::new(
                    exit::OS_ERROR,
                    format!(
                        "{}: cannot listen on --peer-listen {addr}: {e}",
                        plan.job.lock
                    ),
                )
            })?;
        let bound = endpoint.local_addr().unwrap_or(addr);
        info!(lock = %plan.job.lock, "peer endpoint listening on http://{bound}");
        tokio::spawn(endpoint.serve());
        plan.job.quorum = plan.quorum.map(|need| crate::peer::Quorum {
            need,
            followers: view.followers().clone(),
        });
        plan.job.tap = Some(EventTap(std::sync::Arc::new(move |e| view.on_event(e))));
    }
    let lock = &plan.job.lock;
    // Caught from here on, before the first request: a stop request while waiting for
    // the lock ends the wait at once.
    let signals =
        Signals::listen().map_err(|e| Failure::new(exit::OS_ERROR, format!("{lock}: {e}")))?;
    let counters = store.counters().cloned();
    let ended = supervisor::run(&plan.job, store, guard, signals).await;
    if let Some(c) = &counters {
        report_requests(lock.as_str(), c, plan.stats);
    }
    match ended {
        Ok(Ended::Exited(code)) => Ok(code),
        Ok(Ended::Interrupted(sig)) => Ok(128 + sig as i32),
        Err(RunError::Spawn(e)) => Err(Failure::new(e.exit_code(), format!("{lock}: {e}"))),
        Err(RunError::Campaign(e)) => campaign_failure(&plan, &store_name, e),
    }
}

/// The store requests of the whole run, by kind and outcome: one line at exit, under
/// `--stats` whatever the log level (its own log target, which the filter always lets
/// through), else at debug level (`-v`).
fn report_requests(lock: &str, c: &RequestCounters, stats: bool) {
    use s3lead::store::counters::Outcome::*;
    macro_rules! requests_line {
        ($level:ident, $($target:tt)*) => {
            tracing::$level!(
                $($target)*
                lock,
                get = c.get(Get),
                not_modified = c.get(NotModified),
                missing = c.get(Missing),
                put = c.get(Put),
                precondition_failed = c.get(PreconditionFailed),
                conflict = c.get(Conflict),
                server_error = c.get(ServerError),
                timeout = c.get(Timeout),
                other = c.get(Other),
                total = c.total(),
                "requests: {c}"
            )
        };
    }
    if stats {
        requests_line!(info, target: crate::log::STATS_TARGET,);
    } else {
        requests_line!(debug,);
    }
}

/// `HOSTNAME (pid N)`.
fn default_holder() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host} (pid {})", std::process::id())
}

/// A campaign that ended without a lease: busy and timed out are outcomes (a line on the
/// log, the conflict status), the rest one error line naming the lock.
fn campaign_failure(plan: &RunPlan, store: &str, e: CampaignError) -> Result<i32, Failure> {
    let lock = plan.job.lock.as_str();
    let busy = plan.conflict_exit_code;
    match e {
        CampaignError::Busy { holder, term } => {
            info!(
                lock,
                "held by {holder} (term {term}); not running the command (-n)"
            );
            Ok(busy)
        }
        CampaignError::TimedOut { holder, term } => {
            info!(
                lock,
                "still held by {holder} (term {term}) after waiting; not running the command (-w)"
            );
            Ok(busy)
        }
        CampaignError::AlreadyRan(run) => {
            info!(
                lock,
                "{}; not running the command (--once-per)",
                already_ran(&run)
            );
            Ok(busy)
        }
        CampaignError::UnsafeStore(condition) => Err(Failure::new(
            exit::UNSAFE_STORE,
            format!(
                "{lock}: {store} ignores {condition} ({} was accepted), so two copies of the command could run at once; not running it (run `s3lead check {lock}` for the full picture)",
                match condition {
                    Condition::IfNoneMatch => "a create of the existing lock object",
                    Condition::IfMatch => "a replace of the lock object with a wrong ETag",
                }
            ),
        )),
        CampaignError::TimedOutUnreachable { cause } => Err(Failure::new(
            busy,
            match cause {
                Some(cause) => {
                    format!("{lock}: the wait timed out before the store answered: {cause}")
                }
                None => format!(
                    "{lock}: the wait timed out before the store answered (check the endpoint and the network)"
                ),
            },
        )),
        CampaignError::Fatal(FatalError::Store(kind, msg)) => Err(store_failure(
            lock,
            &s3lead::store::StoreError::Fatal(kind, msg),
        )),
        // A message that already names its fix (the term at its maximum) stands alone.
        CampaignError::Fatal(FatalError::Record(msg)) if msg.contains("use a new lock key") => {
            Err(Failure::new(exit::BAD_RECORD, format!("{lock}: {msg}")))
        }
        CampaignError::Fatal(FatalError::Record(msg)) => Err(Failure::new(
            exit::BAD_RECORD,
            format!(
                "{lock}: {msg}; s3lead never overwrites an object it cannot read (move it aside or use another key)"
            ),
        )),
    }
}

/// A run that spends the window, in one line's words: who ran it and when.
fn already_ran(run: &LastRun) -> String {
    let end = match (&run.finished_at, run.exit_status) {
        (Some(at), Some(status)) => format!("finished {at} with status {status}"),
        _ => "not finished (still running, or its lease was lost)".into(),
    };
    format!(
        "already ran in this window (window of {} from {}): by {}, term {}, started {}, {end}",
        Dur(std::time::Duration::from_secs(run.window_s)),
        run.window,
        run.holder,
        run.term,
        run.started_at
    )
}
