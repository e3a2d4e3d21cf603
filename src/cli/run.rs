//! `s3lead run`: campaign for the lock, run the command only while the lease is held,
//! stop it before the lease can pass to anyone else, release after it is gone.
//!
//! This is where the lease (`lease.rs`) meets the child (`supervise.rs`); neither knows
//! the other, and the stop policy (`stop.rs`) decides between them: the stop signal at
//! `stop_at`, SIGKILL of every process of the command at the latest at `valid_until`
//! (with the guard's watchdog as the floor), and the release only once no process of the
//! command is left.

use super::{Failure, RunArgs};
use crate::clock::{Instant, boot_now, sleep_until};
use crate::election::FatalError;
use crate::exit;
use crate::lease::{
    CampaignError, CampaignOptions, Candidate, Leadership, LeaseState, LeaseStatus,
};
use crate::stop::{Action, KillWhy, StopConfig, StopPolicy, StopWhy};
use crate::store::StoreError;
use crate::supervise::{ChildExit, Program, Supervised, TreeEvent, become_subreaper};
use crate::timing::{Dur, Timing, TimingSpec};
use nix::sys::signal::Signal;
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use tracing::{debug, error, info, warn};

/// Runs `s3lead run`; returns the exit status.
pub async fn run(args: RunArgs) -> Result<i32, Failure> {
    let lock = args.lock.as_str();
    // Everything the user can get wrong is refused here, before any request.
    let url = super::lock_url(lock)?;
    let timing = Timing::new(&TimingSpec {
        lease: args.lease_duration,
        renew_every: args.renew_every,
        retry_period: args.retry_period,
        kill_after: args.kill_after,
        margin: None,
        request_timeout: args.request_timeout,
    })
    .map_err(|e| Failure::new(exit::USAGE, format!("{lock}: {e}")))?;
    let program = match &args.shell_command {
        Some(line) => Program::Shell(line.clone()),
        None => Program::Argv(args.argv.clone()),
    };
    let holder = args.id.clone().unwrap_or_else(default_holder);
    let store = super::open_store(lock, &url, &args.s3, timing.request_timeout()).await?;
    // Signals are caught from here on: a stop request while waiting for the lock ends
    // the wait at once (consul lock ignores them there, and `systemctl stop` hangs).
    let mut signals =
        Signals::new().map_err(|e| Failure::new(exit::OS_ERROR, format!("{lock}: {e}")))?;

    let store = std::sync::Arc::new(store);
    let opts = CampaignOptions {
        nonblock: args.nonblock,
        give_up_at: args.timeout.map(|d| boot_now() + d),
    };
    let leadership = loop {
        let campaign = Candidate::new(store.clone(), timing, holder.clone(), lock).campaign(opts);
        tokio::pin!(campaign);
        let outcome = loop {
            tokio::select! {
                outcome = &mut campaign => break outcome,
                sig = signals.recv() => {
                    if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT) {
                        info!(lock, "{sig} while waiting for the lock; not running the command");
                        return Ok(128 + sig as i32);
                    }
                }
            }
        };
        let leadership = match outcome {
            Ok(l) => l,
            Err(e) => return campaign_failure(lock, &args, e),
        };
        // Spawn only with runway: the election announces a lease only with a retry
        // period left before its stop point, but this task may have been starved since
        // (a loaded host, a stopped process). A command that would be stopped at once is
        // not started: the lease is released and the campaign begins again.
        let left = leadership.status().stop_at.saturating_since(boot_now());
        if left >= timing.min_runway() {
            break leadership;
        }
        warn!(
            lock,
            term = %leadership.term(),
            "elected too late to run the command (its stop point is {} away, less than the {} minimum); releasing and campaigning again",
            Dur(left),
            Dur(timing.min_runway())
        );
        leadership.release().await;
    };

    let term = leadership.term();
    let env = vec![
        ("S3LEAD_TERM".to_owned(), term.to_string()),
        ("S3LEAD_LOCK".to_owned(), lock.to_owned()),
        ("S3LEAD_HOLDER".to_owned(), holder),
        (
            "S3LEAD_LEASE_ID".to_owned(),
            leadership.lease_id().to_string(),
        ),
    ];
    let cfg = StopConfig {
        stop_signal: args.signal,
        kill_after: timing.kill_after(),
        lost_exit_code: i32::from(args.lost_exit_code),
    };
    let status = leadership.status();
    let spawned = match become_subreaper() {
        Ok(()) => Supervised::spawn(&program, &env, status.valid_until).await,
        Err(e) => Err(e),
    };
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            leadership.release().await;
            return Err(Failure::new(e.exit_code(), format!("{lock}: {e}")));
        }
    };
    info!(lock, %term, pid = child.pid().as_raw(), "command started");
    Supervision {
        lock,
        policy: StopPolicy::new(cfg, status),
        child,
        leadership: Some(leadership),
        signals,
    }
    .run()
    .await
}

/// `s3lead run` once the command runs: the stop policy (`stop.rs`) decides, this loop
/// performs. Every signal is sent before the line that reports it, and the log writer
/// never blocks (`log.rs`), so nothing on the stop path waits on stderr.
struct Supervision<'a> {
    lock: &'a str,
    policy: StopPolicy,
    child: Supervised,
    leadership: Option<Leadership>,
    signals: Signals,
}

impl Supervision<'_> {
    async fn run(mut self) -> Result<i32, Failure> {
        let lock = self.lock;
        let mut lease_open = true;
        loop {
            let now = boot_now();
            let wait = match self.policy.poll(now) {
                Action::Wait(t) => t,
                Action::Exit(code) => return Ok(code),
                Action::Watchdog(t) => {
                    self.child.watchdog(t);
                    continue;
                }
                Action::Forward(sig) => {
                    self.child.forward(sig);
                    info!(lock, "forwarded {sig} to the command");
                    continue;
                }
                Action::Stop { sig, why } => {
                    let refused = self.child.stop(sig);
                    self.report_stop(sig, &why, now);
                    self.report_refused(&refused);
                    continue;
                }
                Action::Kill(why) => {
                    let refused = self.child.kill();
                    self.report_kill(&why, now);
                    self.report_refused(&refused);
                    continue;
                }
                Action::Release => {
                    self.child.finish();
                    if let Some(l) = self.leadership.take() {
                        match l.release().await {
                            LeaseState::Released => {}
                            other => warn!(
                                lock,
                                "release did not complete ({other:?}); the lease will expire"
                            ),
                        }
                    }
                    self.policy.on_released();
                    continue;
                }
            };
            let sleep = async {
                match wait {
                    Some(t) => sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = self.child.next() => self.on_tree(ev),
                sig = self.signals.recv() => self.policy.on_signal(sig, boot_now()),
                st = changed(&mut self.leadership), if lease_open => match st {
                    Some(st) => self.policy.on_lease(st),
                    None => {
                        lease_open = false;
                        if let Some(l) = &self.leadership {
                            self.policy.on_lease(l.status());
                        }
                    }
                },
                _ = sleep => {}
            }
        }
    }

    fn on_tree(&mut self, ev: TreeEvent) {
        let lock = self.lock;
        let now = boot_now();
        match ev {
            TreeEvent::ChildExited(e) => {
                self.policy.on_child_exit(e, now);
                match e {
                    ChildExit::Code(c) => info!(lock, "command exited with status {c}"),
                    ChildExit::Signaled(s) => info!(lock, "command killed by {s}"),
                }
            }
            TreeEvent::WatchdogFired => warn!(
                lock,
                now_ms = ms(now),
                "the watchdog's deadline passed: the guard is killing every process of the command"
            ),
            TreeEvent::Gone => {
                self.child.finish();
                self.policy.on_tree_gone(now);
            }
            TreeEvent::GuardLost(how) => {
                self.policy.on_guard_lost(now);
                error!(
                    lock,
                    "the guard process {how}; the command died with it, and s3lead is killing what it left"
                );
            }
        }
    }

    fn report_stop(&self, sig: Signal, why: &StopWhy, now: Instant) {
        let lock = self.lock;
        let kill_at = self.policy.kill_at().unwrap_or(now);
        let valid_until = self.leadership.as_ref().map(|l| l.status().valid_until);
        let reason = match why {
            StopWhy::Shutdown(s) => format!("{s} to s3lead: forwarded"),
            StopWhy::AtRisk => "renewals failed up to the stop point".into(),
            StopWhy::Expired => "the lease ran out".into(),
            StopWhy::Leftovers => "the command exited and left processes behind".into(),
        };
        if matches!(why, StopWhy::Shutdown(_) | StopWhy::Leftovers) {
            info!(
                lock,
                now_ms = ms(now),
                valid_until_ms = valid_until.map(ms),
                "sent {sig} to the command; SIGKILL in {} at the latest ({reason})",
                Dur(kill_at - now)
            );
        } else {
            warn!(
                lock,
                now_ms = ms(now),
                valid_until_ms = valid_until.map(ms),
                "sent {sig} to the command; SIGKILL in {} at the latest: the lease is no longer safe to hold ({reason})",
                Dur(kill_at - now)
            );
        }
    }

    fn report_kill(&self, why: &KillWhy, now: Instant) {
        let lock = self.lock;
        let valid_until = self.leadership.as_ref().map(|l| l.status().valid_until);
        let reason = match why {
            KillWhy::GraceOver => "the grace after the stop signal ran out".to_string(),
            KillWhy::LeaseEnds => "the lease ends now".into(),
            KillWhy::SecondSignal(s) => format!("second {s}"),
            KillWhy::LeaseGone(r) => format!("{r}; no grace, another holder may already run"),
            KillWhy::GuardLost => "the guard process is gone".into(),
            KillWhy::Again => {
                debug!(lock, "processes remain after SIGKILL; sent it again");
                return;
            }
        };
        warn!(
            lock,
            now_ms = ms(now),
            valid_until_ms = valid_until.map(ms),
            "sent SIGKILL to every process of the command ({reason})"
        );
    }

    fn report_refused(&self, refused: &[nix::unistd::Pid]) {
        for pid in refused {
            error!(
                lock = self.lock,
                "process {pid} of the command may not be signalled by this user (a setuid program?); \
                 s3lead keeps the lease while it lives and cannot stop it (run s3lead as its user or root)"
            );
        }
    }
}

/// The lease's next change, or `None` once its renewal task has ended.
async fn changed(leadership: &mut Option<Leadership>) -> Option<LeaseStatus> {
    match leadership {
        Some(l) => l.changed().await,
        None => None,
    }
}

/// The signals s3lead forwards to the command (tini's set).
struct Signals {
    term: SignalStream,
    int: SignalStream,
    hup: SignalStream,
    quit: SignalStream,
    usr1: SignalStream,
    usr2: SignalStream,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.hup.recv() => Signal::SIGHUP,
            _ = self.quit.recv() => Signal::SIGQUIT,
            _ = self.usr1.recv() => Signal::SIGUSR1,
            _ = self.usr2.recv() => Signal::SIGUSR2,
        }
    }
}

/// A boot-clock instant in milliseconds, for log lines.
fn ms(t: Instant) -> u64 {
    u64::try_from(t.since_origin().as_millis()).unwrap_or(u64::MAX)
}

/// `HOSTNAME (pid N)`.
fn default_holder() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host} (pid {})", std::process::id())
}

fn campaign_failure(lock: &str, args: &RunArgs, e: CampaignError) -> Result<i32, Failure> {
    let busy = i32::from(args.conflict_exit_code);
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
        CampaignError::TimedOutUnreachable => Err(Failure::new(
            busy,
            format!(
                "{lock}: the wait timed out before the store answered (check the endpoint and the network)"
            ),
        )),
        CampaignError::Fatal(FatalError::Store(kind, msg)) => {
            Err(super::store_failure(lock, &StoreError::Fatal(kind, msg)))
        }
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
