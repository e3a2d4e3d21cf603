//! `s3lead run`: campaign for the lock, run the command only while the lease is held,
//! stop it before the lease can pass to anyone else, release after it is gone.
//!
//! This is where the lease (`lease.rs`) meets the child (`supervise.rs`); neither knows
//! the other. The order of the stop path is the promise of DESIGN §1: the stop signal
//! at `stop_at`, SIGKILL of the whole group at the latest at `valid_until`, and the
//! release only once no process of the group is left.

use super::{Failure, RunArgs};
use crate::clock::{Instant, boot_now, sleep_until};
use crate::election::FatalError;
use crate::exit;
use crate::lease::{CampaignError, CampaignOptions, Candidate, Leadership, LeaseState};
use crate::store::StoreError;
use crate::supervise::{Child, ChildExit, Program, become_subreaper};
use crate::timing::{Dur, Timing, TimingSpec};
use nix::sys::signal::Signal;
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use tracing::{info, warn};

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

    let campaign = Candidate::new(store, timing, holder.clone(), lock).campaign(CampaignOptions {
        nonblock: args.nonblock,
        give_up_at: args.timeout.map(|d| boot_now() + d),
    });
    tokio::pin!(campaign);
    let leadership = loop {
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
    let leadership = match leadership {
        Ok(l) => l,
        Err(e) => return campaign_failure(lock, &args, e),
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
    let spawned = become_subreaper().and_then(|()| Child::spawn(&program, &env));
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
        stop_signal: args.signal,
        kill_after: timing.kill_after(),
        child,
        leadership,
        signals,
        stopping: None,
        lost: false,
    }
    .run(args.lost_exit_code)
    .await
}

/// The stop sequence once begun: stop signal sent, SIGKILL due at `kill_at`.
struct Stopping {
    kill_at: Instant,
    killed: bool,
}

struct Supervision<'a> {
    lock: &'a str,
    stop_signal: Signal,
    kill_after: std::time::Duration,
    child: Child,
    leadership: Leadership,
    signals: Signals,
    stopping: Option<Stopping>,
    /// The lease was lost (or reached its stop point) while the command ran.
    lost: bool,
}

impl Supervision<'_> {
    async fn run(mut self, lost_exit_code: u8) -> Result<i32, Failure> {
        let lock = self.lock;
        let mut lease_open = true;
        // Phase 1: until the child itself exits.
        let exit = loop {
            let st = self.leadership.status();
            let kill_at = self.kill_deadline(st.valid_until);
            let killed = self.stopping.as_ref().is_some_and(|s| s.killed);
            tokio::select! {
                e = self.child.wait() => break e,
                sig = self.signals.recv() => self.on_signal(sig),
                st = self.leadership.changed(), if lease_open => match st {
                    Some(st) if matches!(st.state, LeaseState::AtRisk | LeaseState::Lost(_)) => self.lose(),
                    Some(_) => {}
                    None => { lease_open = false; self.lose(); }
                },
                // The lease task signals the stop point too; these timers make the child's
                // deadlines independent of that task being scheduled in time.
                _ = sleep_until(st.stop_at), if self.stopping.is_none() => {
                    if boot_now() >= self.leadership.status().stop_at {
                        self.lose();
                    }
                }
                _ = sleep_until(kill_at), if !killed => {
                    let st = self.leadership.status();
                    let now = boot_now();
                    if now >= st.valid_until {
                        // The lease ran out (a pause or a stalled scheduler can bring us
                        // here before the stop point's branch ran): it is lost.
                        self.lose();
                    }
                    if now >= self.kill_deadline(st.valid_until) {
                        self.kill();
                    }
                }
            }
        };
        // The child may have exited in the same instant the lease was lost; a lease past
        // its stop point is not ours to release, and the run counts as lost.
        let st = self.leadership.status();
        if matches!(st.state, LeaseState::AtRisk | LeaseState::Lost(_)) || boot_now() >= st.stop_at
        {
            self.lost = true;
        }
        match exit {
            ChildExit::Code(c) => info!(lock, "command exited with status {c}"),
            ChildExit::Signaled(s) => info!(lock, "command killed by {s}"),
        }

        // Phase 2: the child is gone; what is left of its group is stopped too, and the
        // lease is kept (renewing) until no process of the group remains.
        if self.child.group_alive() {
            warn!(
                lock,
                "the command exited but left processes in its group; stopping them"
            );
            self.begin_stop(self.stop_signal);
            while self.child.group_alive() {
                let st = self.leadership.status();
                let kill_at = self.kill_deadline(st.valid_until);
                let killed = self.stopping.as_ref().is_some_and(|s| s.killed);
                tokio::select! {
                    _ = self.child.wait_group_gone() => {}
                    sig = self.signals.recv() => self.on_signal(sig),
                    st = self.leadership.changed(), if lease_open => match st {
                        Some(st) if matches!(st.state, LeaseState::AtRisk | LeaseState::Lost(_)) => self.lose(),
                        Some(_) => {}
                        None => { lease_open = false; self.lose(); }
                    },
                    _ = sleep_until(kill_at), if !killed => self.kill(),
                }
            }
        }
        self.child.finish();

        if self.lost {
            return Ok(i32::from(lost_exit_code));
        }
        match self.leadership.release().await {
            LeaseState::Released => {}
            other => warn!(
                lock,
                "release did not complete ({other:?}); the lease will expire"
            ),
        }
        Ok(exit.code())
    }

    /// SIGKILL is due at the stop sequence's deadline, and never later than the lease.
    fn kill_deadline(&self, valid_until: Instant) -> Instant {
        match &self.stopping {
            Some(s) => s.kill_at.min(valid_until),
            None => valid_until,
        }
    }

    fn on_signal(&mut self, sig: Signal) {
        let shutdown = matches!(sig, Signal::SIGTERM | Signal::SIGINT);
        if shutdown && self.stopping.is_some() {
            // A second TERM/INT: the user means it.
            info!(
                lock = self.lock,
                "second {sig}: killing the command's process group"
            );
            self.kill();
            return;
        }
        info!(lock = self.lock, "forwarding {sig} to the command");
        if shutdown {
            self.begin_stop(sig);
        } else {
            self.child.signal_group(sig);
        }
    }

    /// The lease is at risk or lost: stop the command now.
    fn lose(&mut self) {
        if !self.lost {
            self.lost = true;
            warn!(
                lock = self.lock,
                "stopping the command: the lease is no longer safe to hold"
            );
        }
        self.begin_stop(self.stop_signal);
    }

    fn begin_stop(&mut self, sig: Signal) {
        if self.stopping.is_some() {
            return;
        }
        self.child.signal_group(sig);
        let now = boot_now();
        let st = self.leadership.status();
        let kill_at = (now + self.kill_after).min(st.valid_until);
        self.stopping = Some(Stopping {
            kill_at,
            killed: false,
        });
        info!(
            lock = self.lock,
            now_ms = ms(now),
            valid_until_ms = ms(st.valid_until),
            "sent {sig} to the command; SIGKILL in {} at the latest",
            Dur(kill_at - now)
        );
    }

    fn kill(&mut self) {
        warn!(
            lock = self.lock,
            now_ms = ms(boot_now()),
            valid_until_ms = ms(self.leadership.status().valid_until),
            "sending SIGKILL to the command's process group"
        );
        self.child.signal_group(Signal::SIGKILL);
        match &mut self.stopping {
            Some(s) => s.killed = true,
            None => {
                self.stopping = Some(Stopping {
                    kill_at: boot_now(),
                    killed: true,
                })
            }
        }
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
        CampaignError::Fatal(FatalError::Record(msg)) => Err(Failure::new(
            exit::BAD_RECORD,
            format!(
                "{lock}: {msg}; s3lead never overwrites an object it cannot read (move it aside or use another key)"
            ),
        )),
    }
}
