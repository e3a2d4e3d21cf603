//! A command run only while the lease is held: campaign for the lock, spawn the command
//! with runway, stop it before the lease can pass to anyone else, release after it is
//! gone. This is what `s3lead run` does once its arguments are validated; the CLI only
//! builds the [`Job`], calls [`run`] and renders what it returns.
//!
//! This is where the lease (`lease.rs`) meets the child (`supervise.rs`); neither knows
//! the other, and the stop policy (`stop.rs`) decides between them: the stop signal at
//! `stop_at`, SIGKILL of every process of the command at the latest at `valid_until`
//! (with the guard's watchdog as the floor), and the release only once no process of the
//! command is left. Signals to s3lead come in through `signals.rs`.

use crate::hooks::{HookCommands, Hooks};
use crate::peer::Quorum;
use crate::proof_cache::ProofCache;
use crate::supervise::{
    ChildExit, Program, SpawnError, Standby, Supervised, TreeEvent, become_subreaper,
};
use nix::sys::signal::Signal;
use s3lead::clock::{Instant, boot_now, sleep_until};
use s3lead::lease::{
    CampaignError, CampaignOptions, Candidate, Leadership, LeaseEvent, LeaseState, LeaseStatus,
};
use s3lead::record::OncePer;
use s3lead::signals::Signals;
use s3lead::stop::{Action, KillWhy, StopConfig, StopPolicy, StopWhy, Verdict};
use s3lead::store::{LockStore, LockUrl};
use s3lead::timing::{Dur, Timing};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// One command to run under one lock's lease, validated by the caller.
#[derive(Clone, Debug)]
pub struct Job {
    /// The lock, named in every log line as the user spelt it, and given to the command
    /// as `S3LEAD_LOCK`.
    pub lock: LockUrl,
    /// The lease's timing, validated: its stop point leaves the command `kill_after`.
    pub timing: Timing,
    /// Shown to operators in the record; ownership is the lease id, not this.
    pub holder: String,
    /// The command, spawned under the guard only while the lease is held.
    pub program: Program,
    /// Give up as soon as another live holder is seen (`-n`).
    pub nonblock: bool,
    /// Give up campaigning after this long (`-w`).
    pub timeout: Option<Duration>,
    /// What the command gets at the stop point (`--signal`).
    pub stop_signal: Signal,
    /// The exit status when the lease was lost and the command stopped.
    pub lost_exit_code: i32,
    /// `--min-hold`: keep the lease this long after it was won, the command's exit
    /// notwithstanding, so that cron hosts that fire later find it held.
    pub min_hold: Option<Duration>,
    /// `--once-per`: run at most once per window of wall-clock time.
    pub once_per: Option<OncePer>,
    /// Prove at acquisition that the store honours conditional writes, unless this
    /// cache remembers a pass; `None`: never (`--no-verify-store`, or a file lock).
    pub verify_store: Option<ProofCache>,
    /// `--on-elected`, `--on-lost`, `--on-released` (`hooks.rs`).
    pub hooks: HookCommands,
    /// Told every event of the election as well (the `--peer-listen` endpoint's view).
    pub tap: Option<EventTap>,
    /// `--advertise`: our endpoint's URL, written into our records.
    pub advertise: Option<String>,
    /// How a follower long-polls a leader's advertised endpoint (peer mode).
    pub peer_link: Option<Arc<crate::peer::PeerClient>>,
    /// `--quorum N`: run the command only while N candidates are live.
    pub quorum: Option<Quorum>,
}

/// A callback told every [`LeaseEvent`] of the run's election; it must return at once.
#[derive(Clone)]
pub struct EventTap(pub Arc<dyn Fn(&LeaseEvent) + Send + Sync>);

impl std::fmt::Debug for EventTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventTap")
    }
}

/// How a run ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The command ran and the run is over: exit with this status (the command's, or the
    /// lost code, or [`s3lead::exit::INTERNAL`] if the guard died).
    Exited(i32),
    /// A signal ended the wait for the lock; the command never ran.
    Interrupted(Signal),
}

/// Why a run ended before its command could run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The campaign ended without a lease: busy (`-n`), timed out (`-w`) or failed.
    #[error("{0}")]
    Campaign(CampaignError),
    /// The command could not be started; the lease has been released.
    #[error("{0}")]
    Spawn(SpawnError),
}

/// Runs `job` over `store`. The command's environment gets `S3LEAD_TERM`, `S3LEAD_LOCK`,
/// `S3LEAD_HOLDER` and `S3LEAD_LEASE_ID`, and nothing else of s3lead's.
///
/// The promise: no two commands run under one lock at once, as long as the host keeps
/// to what lies inside it (README, "What lies outside the promise"); every run's
/// `S3LEAD_TERM` is larger than any before it. Whatever the command writes should refuse
/// a write carrying a smaller term than it has seen: that is what protects the data from
/// a process that outlives its lease.
///
/// `signals` must be listening before the store is first asked anything: a stop request
/// while waiting for the lock ends the wait at once (consul lock ignores them there, and
/// `systemctl stop` hangs). `guard` is the guard forked at start, told the command once
/// the lease is won (`supervise/guard.rs`).
pub async fn run<S: LockStore>(
    job: &Job,
    store: S,
    guard: Standby,
    signals: Signals,
) -> Result<Ended, RunError> {
    let mut hooks = Hooks::new(job.hooks.clone(), job.lock.as_str(), &job.holder);
    let ended = lead_and_supervise(job, store, guard, signals, &mut hooks).await;
    // After the release (or the lease's loss): hooks never hold either.
    hooks.finish().await;
    ended
}

/// [`run`] but for the hooks still running at its end.
async fn lead_and_supervise<S: LockStore>(
    job: &Job,
    store: S,
    mut guard: Standby,
    mut signals: Signals,
    hooks: &mut Hooks,
) -> Result<Ended, RunError> {
    let lock = job.lock.as_str();
    let store = Arc::new(store);
    // A lease that ends while the command waits for its quorum sends us back here.
    loop {
        let mut leadership = match lead_with_runway(job, store.clone(), &mut signals, hooks).await?
        {
            Ok(l) => l,
            Err(sig) => return Ok(Ended::Interrupted(sig)),
        };
        let elected_at = boot_now();
        if job.once_per.is_some() && !leadership.claimed_run() {
            // The campaign ends before any takeover of a record whose run spends the
            // window, so this is a backstop: the record we replaced showed the window
            // spent.
            if let Some(run) = leadership.last_run().cloned() {
                leadership.release().await;
                return Err(RunError::Campaign(CampaignError::AlreadyRan(Box::new(run))));
            }
        }
        // The command runs, and under `--quorum` runs again after each quorum loss, for
        // as long as this lease lasts.
        loop {
            if let Some(quorum) = &job.quorum {
                match wait_for_quorum(job, quorum, &mut leadership, &mut signals, hooks).await {
                    QuorumWait::Met => {}
                    QuorumWait::LeaseEnded => break,
                    QuorumWait::Signal(sig) => {
                        leadership.release().await;
                        return Ok(Ended::Interrupted(sig));
                    }
                }
            }
            match supervise(job, guard, leadership, elected_at, &mut signals, hooks).await? {
                Stint::Over(code) => return Ok(Ended::Exited(code)),
                Stint::Paused(paused) => (guard, leadership) = *paused,
            }
        }
        info!(
            lock,
            "the lease ended while the command waited for its quorum; campaigning again"
        );
    }
}

/// How one run of the command under a lease ended.
enum Stint {
    /// The run is over: exit with this status.
    Over(i32),
    /// The command was stopped for a lost quorum and is gone; the lease is kept, and the
    /// guard waits to start it again.
    Paused(Box<(Standby, Leadership)>),
}

/// Spawns the command under the guard with the lease's environment, and supervises it
/// until the stop policy ends the run or pauses it (`--quorum`).
async fn supervise(
    job: &Job,
    guard: Standby,
    leadership: Leadership,
    elected_at: Instant,
    signals: &mut Signals,
    hooks: &mut Hooks,
) -> Result<Stint, RunError> {
    let lock = job.lock.as_str();
    let term = leadership.term();
    let env = vec![
        ("S3LEAD_TERM".to_owned(), term.to_string()),
        ("S3LEAD_LOCK".to_owned(), lock.to_owned()),
        ("S3LEAD_HOLDER".to_owned(), job.holder.clone()),
        (
            "S3LEAD_LEASE_ID".to_owned(),
            leadership.lease_id().to_string(),
        ),
    ];
    let cfg = StopConfig {
        stop_signal: job.stop_signal,
        kill_after: job.timing.kill_after(),
        lost_exit_code: job.lost_exit_code,
    };
    let status = leadership.status();
    let spawned = match become_subreaper() {
        Ok(()) => Supervised::spawn(guard, &job.program, &env, status.valid_until).await,
        Err(e) => Err(e),
    };
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            leadership.release().await;
            return Err(RunError::Spawn(e));
        }
    };
    info!(lock, %term, pid = child.pid().as_raw(), "command started");
    let mut policy = StopPolicy::new(cfg, status);
    if let Some(hold) = job.min_hold {
        policy.hold_until(elected_at + hold);
    }
    Ok(Supervision {
        lock,
        policy,
        child,
        leadership: Some(leadership),
        signals,
        run_recorded: false,
        tell: listeners(job, hooks),
        hooks,
        quorum: job.quorum.as_ref(),
    }
    .run()
    .await)
}

/// How a wait for the quorum ended.
enum QuorumWait {
    /// Enough candidates are live, and the lease leaves the command its runway.
    Met,
    /// The lease is at risk or lost: there is nothing to start the command under.
    LeaseEnded,
    /// A stop request to s3lead.
    Signal(Signal),
}

/// `--quorum`: holds the lease (renewed as usual) without running the command until
/// enough candidates are live. Says so once per change of the count.
async fn wait_for_quorum(
    job: &Job,
    quorum: &Quorum,
    leadership: &mut Leadership,
    signals: &mut Signals,
    hooks: &mut Hooks,
) -> QuorumWait {
    let lock = job.lock.as_str();
    let need = quorum.need;
    let mut said = None;
    loop {
        hooks.start_pending();
        let now = boot_now();
        let status = leadership.status();
        if status.state != LeaseState::Held {
            return QuorumWait::LeaseEnded;
        }
        let live = quorum.live(now);
        if live >= need {
            if status.stop_at.saturating_since(now) >= job.timing.min_runway() {
                if said.is_some() {
                    info!(
                        lock,
                        term = %leadership.term(),
                        "quorum reached: {live} of the {need} candidates needed are live; starting the command"
                    );
                }
                return QuorumWait::Met;
            }
        } else if said != Some(live) {
            info!(
                lock,
                term = %leadership.term(),
                "waiting for a quorum: {live} of the {need} candidates needed are live (this one and the followers heard on its endpoint); the lease is held and renewed, the command starts once {need} are"
            );
            said = Some(live);
        }
        tokio::select! {
            () = quorum.until(live < need) => {}
            st = leadership.changed() => {
                if st.is_none() {
                    return QuorumWait::LeaseEnded;
                }
            }
            d = signals.recv() => {
                if d.ends_wait() {
                    let sig = d.signal();
                    info!(lock, "{sig} while waiting for a quorum; releasing the lease");
                    return QuorumWait::Signal(sig);
                }
            }
        }
    }
}

/// Campaigns until elected with enough runway to start the command (`Ok(Ok)`), a signal
/// ends the wait (`Ok(Err)`), or the campaign fails.
///
/// Spawn only with runway: the election announces a lease only with a retry period left
/// before its stop point, but this task may have been starved since (a loaded host, a
/// stopped process). A command that would be stopped at once is not started: the lease is
/// released and the campaign begins again.
async fn lead_with_runway<S: LockStore>(
    job: &Job,
    store: Arc<S>,
    signals: &mut Signals,
    hooks: &Hooks,
) -> Result<Result<Leadership, Signal>, RunError> {
    let lock = job.lock.as_str();
    let timing = job.timing;
    let opts = CampaignOptions {
        nonblock: job.nonblock,
        give_up_at: job.timeout.map(|d| boot_now() + d),
    };
    let mut once_per = job.once_per;
    // Asked once per run at most: a pass is remembered as soon as it is known, so that
    // runs starting meanwhile on this host are spared it too.
    let mut verify = job
        .verify_store
        .as_ref()
        .is_some_and(|cache| !cache.has_fresh_pass());
    loop {
        let campaign = Candidate::new(store.clone(), timing, job.holder.clone(), lock)
            .once_per(once_per)
            .verify_store(verify)
            .advertise(job.advertise.clone());
        let campaign = match &job.peer_link {
            Some(link) => campaign.peer_link(link.clone()),
            None => campaign,
        };
        let campaign = campaign
            .on_event({
                let tell = listeners(job, hooks);
                move |e| tell(e)
            })
            .campaign(opts);
        tokio::pin!(campaign);
        let outcome = loop {
            tokio::select! {
                outcome = &mut campaign => break outcome,
                d = signals.recv() => {
                    if d.ends_wait() {
                        let sig = d.signal();
                        info!(lock, "{sig} while waiting for the lock; not running the command");
                        return Ok(Err(sig));
                    }
                }
            }
        };
        let leadership = outcome.map_err(RunError::Campaign)?;
        if let (true, Some(cache)) = (leadership.store_proven(), &job.verify_store) {
            cache.remember_pass();
            verify = false;
        }
        let left = leadership.status().stop_at.saturating_since(boot_now());
        if left >= timing.min_runway() {
            return Ok(Ok(leadership));
        }
        warn!(
            lock,
            term = %leadership.term(),
            "elected too late to run the command (its stop point is {} away, less than the {} minimum); releasing and campaigning again",
            Dur(left),
            Dur(timing.min_runway())
        );
        if let (Some(o), true) = (once_per.as_mut(), leadership.claimed_run()) {
            // The window this lease claimed was not used: our next campaign must not
            // read our own claim as a run.
            o.unused_claim = Some(leadership.term());
        }
        leadership.release().await;
    }
}

/// The run once the command runs: the stop policy (`stop.rs`) decides, this loop
/// performs. Every signal is sent before the line that reports it, and the log writer
/// never blocks (`log.rs`), so nothing on the stop path waits on stderr.
struct Supervision<'a> {
    lock: &'a str,
    policy: StopPolicy,
    child: Supervised,
    leadership: Option<Leadership>,
    signals: &'a mut Signals,
    /// The run's end has been handed to the lease (`--once-per`).
    run_recorded: bool,
    /// Started only when the policy has nothing to do now (`hooks.rs`).
    hooks: &'a mut Hooks,
    /// `--quorum`: watched while the command runs.
    quorum: Option<&'a Quorum>,
    /// Told of a lease found at risk by the policy's own timer.
    tell: Listeners,
}

impl Supervision<'_> {
    /// Until the policy says the run is over, or paused for a lost quorum.
    async fn run(mut self) -> Stint {
        let mut lease_open = true;
        let mut quorum_watched = self.quorum.is_some();
        loop {
            let now = boot_now();
            let wait = match self.policy.poll(now) {
                Action::Wait(t) => {
                    // Every signal and the release due now have been sent.
                    self.hooks.start_pending();
                    t
                }
                Action::Exit(code) => {
                    self.child.finish();
                    return Stint::Over(code);
                }
                Action::Pause => return self.pause().await,
                action => {
                    self.perform(action, now).await;
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
                ev = self.child.next() => {
                    let exited = matches!(ev, TreeEvent::ChildExited(_));
                    self.on_tree(ev);
                    if exited {
                        // The guard reports "gone" right behind "exit" when nothing else
                        // is left: take it if it is already here, before the policy sees
                        // an exited command with processes left and stops them (an empty
                        // tree, but a misleading line). `next` is cancel-safe.
                        tokio::select! {
                            biased;
                            ev = self.child.next() => self.on_tree(ev),
                            () = std::future::ready(()) => {}
                        }
                    }
                }
                d = self.signals.recv() => self.policy.on_signal(d.signal(), boot_now()),
                st = changed(&mut self.leadership), if lease_open => match st {
                    Some(st) => self.policy.on_lease(st),
                    None => {
                        lease_open = false;
                        if let Some(l) = &self.leadership {
                            self.policy.on_lease(l.status());
                        }
                    }
                },
                () = lost_quorum(self.quorum), if quorum_watched => {
                    quorum_watched = false;
                    self.policy.on_quorum_lost(boot_now());
                }
                _ = sleep => {}
            }
        }
    }

    /// The command was stopped for a lost quorum and nothing of it is left: the guard
    /// goes back to waiting, the lease is kept.
    async fn pause(self) -> Stint {
        let lock = self.lock;
        let Supervision {
            child, leadership, ..
        } = self;
        let Some(leadership) = leadership else {
            return Stint::Over(s3lead::exit::INTERNAL);
        };
        match child.recycle() {
            Some(standby) => {
                info!(
                    lock,
                    term = %leadership.term(),
                    "the command is gone; keeping the lease until the quorum is back"
                );
                Stint::Paused(Box::new((standby, leadership)))
            }
            None => {
                error!(
                    lock,
                    "the guard process cannot start the command again; releasing the lease"
                );
                leadership.release().await;
                Stint::Over(s3lead::exit::INTERNAL)
            }
        }
    }

    /// Performs what the policy asked for at `now` (anything but waiting and exiting).
    async fn perform(&mut self, action: Action, now: Instant) {
        let lock = self.lock;
        match action {
            Action::Watchdog(t) => self.child.watchdog(t),
            Action::Forward(sig) => {
                self.child.forward(sig);
                info!(lock, "forwarded {sig} to the command");
            }
            Action::Stop { sig, why } => {
                let refused = self.child.stop(sig);
                self.report_stop(sig, &why, now);
                self.report_refused(&refused);
                if let (StopWhy::AtRisk | StopWhy::Expired, Some(l)) = (&why, &self.leadership) {
                    // The renewal task says so too when it gets there, but it may be
                    // waiting on a store that does not answer, and the run may end first:
                    // the hooks and the endpoint hear it now (each takes it once).
                    (self.tell)(LeaseEvent::Lost {
                        term: l.term(),
                        state: LeaseState::AtRisk,
                    });
                }
            }
            Action::Kill(why) => {
                let refused = self.child.kill();
                self.report_kill(&why, now);
                self.report_refused(&refused);
            }
            Action::Release => {
                self.child.finish();
                self.record_run_end();
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
            }
            Action::Wait(_) | Action::Exit(_) | Action::Pause => {}
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
                // The guard is told "done" (or, for a quorum's pause, "again") once the
                // policy has decided.
                self.policy.on_tree_gone(now);
                self.record_run_end();
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

    /// Once nothing of the command is left, and the lease was kept: the run's end goes
    /// into the record with the lease's next write (under `--once-per`). A lost lease
    /// cannot write; its run stays recorded as started.
    fn record_run_end(&mut self) {
        if self.run_recorded || *self.policy.verdict() == Verdict::Lost {
            return;
        }
        if let (Some(code), Some(l)) = (self.policy.outcome(), &self.leadership) {
            l.finish_run(code);
            self.run_recorded = true;
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
            StopWhy::QuorumLost => {
                let need = self.quorum.map_or(0, |q| q.need);
                let live = self.quorum.map_or(0, |q| q.live(now));
                warn!(
                    lock,
                    now_ms = ms(now),
                    "sent {sig} to the command; SIGKILL in {} at the latest: the quorum was lost ({live} of the {need} candidates needed are live); the lease is kept, and the command starts again once {need} are",
                    Dur(kill_at - now)
                );
                return;
            }
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

/// Whoever hears the election's events: the hooks, and the endpoint's view if any.
type Listeners = Arc<dyn Fn(LeaseEvent) + Send + Sync>;

/// The listeners of `job`'s run.
fn listeners(job: &Job, hooks: &Hooks) -> Listeners {
    let (hooks, tap) = (hooks.sink(), job.tap.clone());
    Arc::new(move |e| {
        if let Some(tap) = &tap {
            (tap.0)(&e);
        }
        hooks(e);
    })
}

/// Resolves once fewer candidates than the quorum are live; never without a quorum.
async fn lost_quorum(quorum: Option<&Quorum>) {
    match quorum {
        Some(q) => q.until(false).await,
        None => std::future::pending().await,
    }
}

/// The lease's next change, or `None` once its renewal task has ended.
async fn changed(leadership: &mut Option<Leadership>) -> Option<LeaseStatus> {
    match leadership {
        Some(l) => l.changed().await,
        None => None,
    }
}

/// A boot-clock instant in milliseconds, for log lines.
fn ms(t: Instant) -> u64 {
    u64::try_from(t.since_origin().as_millis()).unwrap_or(u64::MAX)
}
