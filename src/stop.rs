//! The stop policy of `s3lead run` as a state machine that performs no I/O, in the manner
//! of `election.rs`: the driver tells it what happened (the lease changed, the command
//! exited, no process of the command is left, a signal arrived, the guard died), asks
//! [`StopPolicy::poll`] what to do at "now", and performs the [`Action`] it is given.
//! `supervisor.rs` drives it with tokio and real processes; the deterministic simulation
//! drives the very same code with simulated ones, so the policy users run is the policy
//! the simulation checks.
//!
//! The promise, as this room keeps it (docs/design.md §4 "The stop point"):
//! - The stop signal goes to every process of the command at the lease's stop point
//!   (`valid_until − kill_after`) unless a renewal moved it; SIGKILL follows after
//!   `kill_after`, and never later than `valid_until`.
//! - A lease that can no longer be proven (the record was taken over by another lease,
//!   deleted, or overwritten with something unreadable) gets no grace: someone else may
//!   already lead, so SIGKILL at once.
//! - The watchdog (the guard process, `supervise.rs`) is told every new `valid_until`
//!   and kills everything when it passes, whatever this supervisor is doing: the policy
//!   says when to tell it, first thing, before any stop decision.
//! - The lease is released only when no process of the command is left, and only if it
//!   was never at risk: a lease past its stop point is not ours to release.
//! - TERM or INT to s3lead is forwarded as the stop signal while the lease is renewed; a
//!   second one kills. Other forwarded signals go to the command's process group (tini).

use crate::clock::Instant;
use crate::election::LossReason;
use crate::lease::{LeaseState, LeaseStatus};
use crate::signals::Delivery;
use nix::sys::signal::Signal;
use std::collections::VecDeque;
use std::time::Duration;

/// While SIGKILL has been sent and processes remain (a descendant forked in the instant
/// it was killed, or left the group), it is sent again this often.
pub const KILL_AGAIN_EVERY: Duration = Duration::from_millis(100);

/// How the command (the guard's child) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildExit {
    /// It exited with this status.
    Code(i32),
    /// This signal killed it.
    Signaled(Signal),
}

impl ChildExit {
    /// The shell convention: the exit code, or 128 + N for death by signal N.
    pub fn code(self) -> i32 {
        match self {
            ChildExit::Code(c) => c,
            ChildExit::Signaled(s) => 128 + s as i32,
        }
    }
}

/// What the policy needs to know of the run's settings.
#[derive(Clone, Copy, Debug)]
pub struct StopConfig {
    /// `--signal`: what the command gets at the stop point.
    pub stop_signal: Signal,
    /// `--kill-after`: the grace between the stop signal and SIGKILL.
    pub kill_after: Duration,
    /// `--lost-exit-code`.
    pub lost_exit_code: i32,
}

/// Why the command is being stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopWhy {
    /// TERM or INT to s3lead (systemd stop, Ctrl-C).
    Shutdown(Signal),
    /// The stop point passed without a renewal.
    AtRisk,
    /// The lease ran out.
    Expired,
    /// The command exited and left processes behind.
    Leftovers,
    /// Fewer candidates than `--quorum` are live; the lease is kept.
    QuorumLost,
}

/// Why SIGKILL is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillWhy {
    /// The grace after the stop signal ran out.
    GraceOver,
    /// The lease ends now (the kill is never later than `valid_until`).
    LeaseEnds,
    /// A second TERM/INT to s3lead.
    SecondSignal(Signal),
    /// The record shows the lease can no longer be proven ours.
    LeaseGone(LossReason),
    /// The guard process died: the watchdog is gone, so nothing may run on.
    GuardLost,
    /// Processes remain after an earlier SIGKILL.
    Again,
}

/// What the driver should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Hand the watchdog this deadline: it SIGKILLs every process of the command when
    /// its own boot-time clock reaches it.
    Watchdog(Instant),
    /// Send `sig` to every process of the command (its group and every descendant,
    /// wherever its group or session), then SIGCONT so a stopped one can act on it.
    Stop {
        /// The stop signal (`--signal`).
        sig: Signal,
        /// Why the command is stopped, for the log.
        why: StopWhy,
    },
    /// Forward `sig` to the command's process group, as tini does.
    Forward(Signal),
    /// SIGKILL every process of the command.
    Kill(KillWhy),
    /// Release the lease: nothing of the command is left and the lease is still ours.
    Release,
    /// The command was stopped for a lost quorum and nothing of it is left, while the
    /// lease is still held and was never at risk: keep the lease, and start the command
    /// again under a new policy once the quorum is back. This policy is done.
    Pause,
    /// The run is over: exit with this status.
    Exit(i32),
    /// Nothing to do before this instant (or before the next event, if `None`).
    Wait(Option<Instant>),
}

/// How the run ended, as far as the lease is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The lease was kept to the end and is to be released.
    Kept,
    /// The lease was at risk or lost while the command ran: exit with the lost code and
    /// do not release.
    Lost,
    /// The guard died; the command was killed. The lease is released (it was never at
    /// risk), and the run ends with [`crate::exit::INTERNAL`].
    GuardLost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Release {
    NotYet,
    Requested,
    Done,
}

/// The stop sequence once begun.
#[derive(Clone, Copy, Debug)]
struct Stopping {
    /// SIGKILL is due then (and at `valid_until` at the latest).
    kill_at: Instant,
}

/// One supervised command's stop policy, from spawn to exit.
#[derive(Debug)]
pub struct StopPolicy {
    config: StopConfig,
    lease: LeaseStatus,
    /// The deadline the watchdog holds.
    watchdog: Option<Instant>,
    stopping: Option<Stopping>,
    /// TERM or INT reached s3lead.
    shutdown: bool,
    /// When SIGKILL was last sent.
    killed_at: Option<Instant>,
    child: Option<ChildExit>,
    tree_gone: bool,
    verdict: Verdict,
    release: Release,
    actions: VecDeque<Action>,
    exited: bool,
    /// `--min-hold`: once nothing of the command is left, keep the lease until then.
    hold_until: Option<Instant>,
    /// The command is being stopped because the quorum was lost (`--quorum`).
    quorum_lost: bool,
}

impl StopPolicy {
    /// The command has just been spawned under `lease`.
    pub fn new(config: StopConfig, lease: LeaseStatus) -> StopPolicy {
        StopPolicy {
            config,
            lease,
            watchdog: None,
            stopping: None,
            shutdown: false,
            killed_at: None,
            child: None,
            tree_gone: false,
            verdict: Verdict::Kept,
            release: Release::NotYet,
            actions: VecDeque::new(),
            exited: false,
            hold_until: None,
            quorum_lost: false,
        }
    }

    /// `--min-hold`: once nothing of the command is left, keep the lease (renewed as
    /// usual) until `until` on the boot clock before releasing it, so that candidates
    /// that come later find it held. TERM or INT to s3lead ends the hold at once; a lease
    /// no longer held ends it too (there is nothing left to keep).
    pub fn hold_until(&mut self, until: Instant) {
        self.hold_until = Some(until);
    }

    /// The run's exit status as it stands once nothing of the command is left (what the
    /// run will exit with), or `None` before.
    pub fn outcome(&self) -> Option<i32> {
        self.tree_gone.then(|| self.exit_code())
    }

    /// The lease changed (a renewal moved `valid_until`, it is at risk, lost, …).
    pub fn on_lease(&mut self, lease: LeaseStatus) {
        self.lease = lease;
    }

    /// A signal reached s3lead.
    pub fn on_signal(&mut self, sig: Signal, now: Instant) {
        if self.tree_gone {
            if let Delivery::Shutdown(_) = Delivery::of(sig) {
                // systemd stop during --min-hold: release now.
                self.hold_until = None;
            }
            return;
        }
        if let Delivery::Forward(sig) = Delivery::of(sig) {
            self.actions.push_back(Action::Forward(sig));
            return;
        }
        if self.shutdown {
            // A second TERM/INT: the user means it.
            self.kill(KillWhy::SecondSignal(sig), now);
        } else {
            // The first one, also while a stop is under way for another reason (at risk,
            // leftovers): that stop's grace goes on, and only a second TERM cuts it short.
            self.shutdown = true;
            self.begin_stop(sig, StopWhy::Shutdown(sig), now);
        }
    }

    /// Fewer candidates than `--quorum` are live: stop the command as on a lost lease (the
    /// stop signal, SIGKILL after the grace) but keep the lease; once nothing of the
    /// command is left, [`Action::Pause`]. Nothing changes once the command has exited
    /// or a stop is under way for a signal to s3lead: that run is ending anyway.
    pub fn on_quorum_lost(&mut self, now: Instant) {
        if self.tree_gone || self.child.is_some() || self.shutdown || self.quorum_lost {
            return;
        }
        self.quorum_lost = true;
        self.begin_stop(self.config.stop_signal, StopWhy::QuorumLost, now);
    }

    /// The command itself exited (its descendants may live on).
    pub fn on_child_exit(&mut self, exit: ChildExit, now: Instant) {
        if self.child.is_some() {
            return;
        }
        self.child = Some(exit);
        // Exited in the instant the lease reached its stop point: the lease is no longer
        // ours to release, and the run counts as lost.
        if self.verdict == Verdict::Kept && self.past_stop_point(now) {
            self.verdict = Verdict::Lost;
        }
    }

    /// No process of the command is left.
    pub fn on_tree_gone(&mut self, now: Instant) {
        if self.tree_gone {
            return;
        }
        self.tree_gone = true;
        if self.verdict == Verdict::Kept && self.past_stop_point(now) {
            self.verdict = Verdict::Lost;
        }
    }

    /// The guard (the watchdog) died. PDEATHSIG killed the command itself; whatever it
    /// left is now ours, and is killed at once.
    pub fn on_guard_lost(&mut self, now: Instant) {
        if self.tree_gone {
            return; // it had nothing left to guard
        }
        if self.verdict == Verdict::Kept {
            self.verdict = Verdict::GuardLost;
        }
        self.kill(KillWhy::GuardLost, now);
    }

    /// The release the policy asked for has completed (landed or not).
    pub fn on_released(&mut self) {
        self.release = Release::Done;
    }

    /// Where the run stands.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// The instant SIGKILL is due, once the stop has begun.
    pub fn kill_at(&self) -> Option<Instant> {
        self.stopping.map(|s| s.kill_at.min(self.lease.valid_until))
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Action {
        if self.exited {
            return Action::Wait(None);
        }
        // The watchdog first: whatever else happens, it must hold the latest deadline.
        if !self.tree_gone && self.watchdog != Some(self.lease.valid_until) {
            self.watchdog = Some(self.lease.valid_until);
            return Action::Watchdog(self.lease.valid_until);
        }
        if let Some(a) = self.actions.pop_front() {
            return a;
        }
        if !self.tree_gone {
            self.judge_lease(now);
            if self.child.is_some() && self.stopping.is_none() {
                self.begin_stop(self.config.stop_signal, StopWhy::Leftovers, now);
            }
            if let Some(kill_at) = self.kill_at() {
                match self.killed_at {
                    None if now >= kill_at => {
                        let why = if now >= self.lease.valid_until {
                            KillWhy::LeaseEnds
                        } else {
                            KillWhy::GraceOver
                        };
                        self.kill(why, now);
                    }
                    Some(t) if now >= t + KILL_AGAIN_EVERY => self.kill(KillWhy::Again, now),
                    _ => {}
                }
            }
            if let Some(a) = self.actions.pop_front() {
                return a;
            }
            return Action::Wait(self.next_deadline());
        }
        // Nothing of the command is left.
        if self.quorum_lost
            && !self.shutdown
            && self.verdict == Verdict::Kept
            && self.release == Release::NotYet
            && self.lease.state == LeaseState::Held
        {
            self.exited = true;
            return Action::Pause;
        }
        match (&self.verdict, self.release) {
            (Verdict::Lost, _) | (_, Release::Done) => {
                self.exited = true;
                Action::Exit(self.exit_code())
            }
            (_, Release::NotYet)
                if self.lease.state == LeaseState::Held
                    && self.hold_until.is_some_and(|h| now < h) =>
            {
                Action::Wait(self.hold_until)
            }
            (_, Release::NotYet) => {
                self.release = Release::Requested;
                Action::Release
            }
            (_, Release::Requested) => Action::Wait(None),
        }
    }

    /// The exit status of the run, once it is over.
    fn exit_code(&self) -> i32 {
        match self.verdict {
            Verdict::Lost => self.config.lost_exit_code,
            Verdict::GuardLost => crate::exit::INTERNAL,
            Verdict::Kept => self.child.map_or(crate::exit::INTERNAL, ChildExit::code),
        }
    }

    fn past_stop_point(&self, now: Instant) -> bool {
        now >= self.lease.stop_at
            || matches!(self.lease.state, LeaseState::AtRisk | LeaseState::Lost(_))
    }

    /// Decides from the lease (and the policy's own reading of the clock, so the child's
    /// deadlines do not depend on the renewal task being scheduled in time) whether the
    /// command must be stopped.
    fn judge_lease(&mut self, now: Instant) {
        if let LeaseState::Lost(reason) = &self.lease.state {
            if reason.is_superseded() {
                let reason = reason.clone();
                self.verdict = Verdict::Lost;
                if self.killed_at.is_none() {
                    self.kill(KillWhy::LeaseGone(reason), now);
                }
                return;
            }
        }
        let at_risk = now >= self.lease.stop_at || self.lease.state != LeaseState::Held;
        if at_risk && self.lease.state != LeaseState::Released {
            self.verdict = Verdict::Lost;
            if now >= self.lease.valid_until {
                // Past the lease's end (s3lead was stopped or starved, and the watchdog
                // has fired already): no stop signal first, the grace is over.
                if self.killed_at.is_none() {
                    self.kill(KillWhy::LeaseEnds, now);
                }
                return;
            }
            let why = if matches!(self.lease.state, LeaseState::Lost(_)) {
                StopWhy::Expired
            } else {
                StopWhy::AtRisk
            };
            self.begin_stop(self.config.stop_signal, why, now);
        }
    }

    fn begin_stop(&mut self, sig: Signal, why: StopWhy, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(Stopping {
            kill_at: (now + self.config.kill_after).min(self.lease.valid_until),
        });
        if self.killed_at.is_none() {
            self.actions.push_back(Action::Stop { sig, why });
        }
    }

    fn kill(&mut self, why: KillWhy, now: Instant) {
        if self.stopping.is_none() {
            self.stopping = Some(Stopping { kill_at: now });
        }
        self.killed_at = Some(now);
        self.actions.push_back(Action::Kill(why));
    }

    /// Once SIGKILL was sent only the next SIGKILL matters; once the stop began, only
    /// the first SIGKILL; before, the stop point (and the lease's end, should a lease
    /// arrive already past its stop point).
    fn next_deadline(&self) -> Option<Instant> {
        if let Some(k) = self.killed_at {
            return Some(k + KILL_AGAIN_EVERY);
        }
        if let Some(k) = self.kill_at() {
            return Some(k);
        }
        Some(self.lease.stop_at.min(self.lease.valid_until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(ms))
    }

    fn config() -> StopConfig {
        StopConfig {
            stop_signal: Signal::SIGTERM,
            kill_after: Duration::from_millis(5_000),
            lost_exit_code: 76,
        }
    }

    fn held(valid_until_ms: u64) -> LeaseStatus {
        LeaseStatus {
            state: LeaseState::Held,
            valid_until: at(valid_until_ms),
            stop_at: at(valid_until_ms - 5_000),
        }
    }

    /// Polls until the policy waits; returns the actions on the way and the wait.
    fn drain(p: &mut StopPolicy, now: Instant) -> (Vec<Action>, Action) {
        let mut seen = Vec::new();
        for _ in 0..100 {
            match p.poll(now) {
                w @ Action::Wait(_) => return (seen, w),
                a @ Action::Exit(_) => {
                    seen.push(a.clone());
                    return (seen, a);
                }
                a => seen.push(a),
            }
        }
        panic!("the policy does not settle: {seen:?}");
    }

    #[test]
    fn min_hold_keeps_the_lease_after_the_command_then_releases() {
        let mut p = StopPolicy::new(config(), held(30_000));
        p.hold_until(at(60_000));
        drain(&mut p, at(0));
        p.on_child_exit(ChildExit::Code(0), at(1_000));
        p.on_tree_gone(at(1_000));
        assert_eq!(p.outcome(), Some(0));
        assert_eq!(p.poll(at(1_000)), Action::Wait(Some(at(60_000))));
        p.on_lease(held(70_000));
        assert_eq!(p.poll(at(59_999)), Action::Wait(Some(at(60_000))));
        assert_eq!(p.poll(at(60_000)), Action::Release);
        p.on_released();
        assert_eq!(p.poll(at(60_000)), Action::Exit(0));
    }

    #[test]
    fn a_shutdown_signal_or_a_lost_lease_ends_the_hold() {
        let gone = |p: &mut StopPolicy| {
            p.hold_until(at(60_000));
            drain(p, at(0));
            p.on_child_exit(ChildExit::Code(3), at(1_000));
            p.on_tree_gone(at(1_000));
        };
        let mut p = StopPolicy::new(config(), held(30_000));
        gone(&mut p);
        p.on_signal(Signal::SIGHUP, at(2_000));
        assert_eq!(
            p.poll(at(2_000)),
            Action::Wait(Some(at(60_000))),
            "HUP is not a stop"
        );
        p.on_signal(Signal::SIGTERM, at(2_000));
        assert_eq!(p.poll(at(2_000)), Action::Release);
        p.on_released();
        assert_eq!(p.poll(at(2_000)), Action::Exit(3), "the command's status");

        let mut p = StopPolicy::new(config(), held(30_000));
        gone(&mut p);
        p.on_lease(LeaseStatus {
            state: LeaseState::Lost(LossReason::Deleted),
            ..held(30_000)
        });
        assert_eq!(p.poll(at(2_000)), Action::Release, "nothing left to hold");
    }

    #[test]
    fn the_watchdog_gets_every_new_deadline_first() {
        let mut p = StopPolicy::new(config(), held(30_000));
        let (acts, wait) = drain(&mut p, at(0));
        assert_eq!(acts, [Action::Watchdog(at(30_000))]);
        assert_eq!(wait, Action::Wait(Some(at(25_000))));
        p.on_lease(held(40_000));
        p.on_signal(Signal::SIGHUP, at(1));
        let (acts, _) = drain(&mut p, at(10_000));
        assert_eq!(
            acts,
            [
                Action::Watchdog(at(40_000)),
                Action::Forward(Signal::SIGHUP)
            ]
        );
    }

    #[test]
    fn stop_point_then_sigkill_no_later_than_valid_until_then_lost_without_release() {
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        // The renewal task has not said anything, but the clock passed the stop point.
        let (acts, wait) = drain(&mut p, at(26_000));
        assert_eq!(
            acts,
            [Action::Stop {
                sig: Signal::SIGTERM,
                why: StopWhy::AtRisk
            }]
        );
        // kill_at = min(26 + 5, 30) = 30.
        assert_eq!(wait, Action::Wait(Some(at(30_000))));
        let (acts, _) = drain(&mut p, at(30_000));
        assert_eq!(acts, [Action::Kill(KillWhy::LeaseEnds)]);
        p.on_child_exit(ChildExit::Signaled(Signal::SIGKILL), at(30_010));
        p.on_tree_gone(at(30_020));
        let (acts, _) = drain(&mut p, at(30_020));
        assert_eq!(acts, [Action::Exit(76)], "lost: no release");
    }

    #[test]
    fn a_supervisor_resumed_past_its_lease_kills_without_a_stop_signal() {
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        let (acts, _) = drain(&mut p, at(31_000));
        assert_eq!(acts, [Action::Kill(KillWhy::LeaseEnds)]);
        assert_eq!(p.verdict(), &Verdict::Lost);
    }

    #[test]
    fn a_lease_taken_over_gets_no_grace() {
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        p.on_lease(LeaseStatus {
            state: LeaseState::Lost(LossReason::Deleted),
            ..held(30_000)
        });
        let (acts, _) = drain(&mut p, at(3_000));
        assert_eq!(
            acts,
            [Action::Kill(KillWhy::LeaseGone(LossReason::Deleted))]
        );
    }

    #[test]
    fn shutdown_forwards_keeps_the_lease_and_releases_once_everything_is_gone() {
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        p.on_signal(Signal::SIGTERM, at(1_000));
        let (acts, wait) = drain(&mut p, at(1_000));
        assert_eq!(
            acts,
            [Action::Stop {
                sig: Signal::SIGTERM,
                why: StopWhy::Shutdown(Signal::SIGTERM)
            }]
        );
        assert_eq!(wait, Action::Wait(Some(at(6_000))));
        p.on_child_exit(ChildExit::Code(0), at(2_000));
        // A descendant is still there: the lease is kept, nothing released yet.
        let (acts, _) = drain(&mut p, at(2_000));
        assert_eq!(acts, []);
        p.on_tree_gone(at(3_000));
        let (acts, wait) = drain(&mut p, at(3_000));
        assert_eq!(acts, [Action::Release]);
        assert_eq!(wait, Action::Wait(None));
        p.on_released();
        assert_eq!(p.poll(at(3_100)), Action::Exit(0));
    }

    #[test]
    fn a_second_term_kills() {
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        p.on_signal(Signal::SIGINT, at(1_000));
        drain(&mut p, at(1_000));
        p.on_signal(Signal::SIGTERM, at(1_500));
        let (acts, _) = drain(&mut p, at(1_500));
        assert_eq!(acts, [Action::Kill(KillWhy::SecondSignal(Signal::SIGTERM))]);
    }

    #[test]
    fn a_first_term_during_another_stop_keeps_that_stop_s_grace() {
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        p.on_child_exit(ChildExit::Code(0), at(1_000));
        drain(&mut p, at(1_000)); // leftovers: stop signal, SIGKILL due at 6 s
        p.on_signal(Signal::SIGTERM, at(2_000));
        let (acts, wait) = drain(&mut p, at(2_000));
        assert_eq!(acts, [], "no kill yet, no second stop signal");
        assert_eq!(wait, Action::Wait(Some(at(6_000))));
        p.on_signal(Signal::SIGTERM, at(3_000));
        let (acts, _) = drain(&mut p, at(3_000));
        assert_eq!(acts, [Action::Kill(KillWhy::SecondSignal(Signal::SIGTERM))]);
    }

    #[test]
    fn leftovers_are_stopped_and_killed_again_until_gone() {
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        p.on_child_exit(ChildExit::Code(3), at(1_000));
        let (acts, _) = drain(&mut p, at(1_000));
        assert_eq!(
            acts,
            [Action::Stop {
                sig: Signal::SIGTERM,
                why: StopWhy::Leftovers
            }]
        );
        let (acts, wait) = drain(&mut p, at(6_000));
        assert_eq!(acts, [Action::Kill(KillWhy::GraceOver)]);
        assert_eq!(wait, Action::Wait(Some(at(6_100))));
        let (acts, _) = drain(&mut p, at(6_100));
        assert_eq!(acts, [Action::Kill(KillWhy::Again)]);
        p.on_tree_gone(at(6_150));
        assert_eq!(p.poll(at(6_150)), Action::Release);
        p.on_released();
        assert_eq!(p.poll(at(6_200)), Action::Exit(3));
    }

    #[test]
    fn a_child_that_exits_past_the_stop_point_counts_as_lost() {
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        p.on_child_exit(ChildExit::Code(0), at(25_500));
        p.on_tree_gone(at(25_500));
        assert_eq!(drain(&mut p, at(25_500)).1, Action::Exit(76));
    }

    #[test]
    fn a_dead_guard_kills_the_rest_and_ends_with_an_internal_error() {
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        p.on_guard_lost(at(1_000));
        let (acts, _) = drain(&mut p, at(1_000));
        assert_eq!(acts, [Action::Kill(KillWhy::GuardLost)]);
        p.on_tree_gone(at(1_050));
        assert_eq!(p.poll(at(1_050)), Action::Release);
        p.on_released();
        assert_eq!(p.poll(at(1_060)), Action::Exit(crate::exit::INTERNAL));
    }

    #[test]
    fn a_lost_quorum_stops_the_command_then_pauses_keeping_the_lease() {
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        p.on_quorum_lost(at(1_000));
        let (acts, wait) = drain(&mut p, at(1_000));
        assert_eq!(
            acts,
            [Action::Stop {
                sig: Signal::SIGTERM,
                why: StopWhy::QuorumLost
            }]
        );
        assert_eq!(
            wait,
            Action::Wait(Some(at(6_000))),
            "SIGKILL after the grace"
        );
        p.on_quorum_lost(at(2_000));
        assert_eq!(p.poll(at(2_000)), Action::Wait(Some(at(6_000))), "once");
        let (acts, _) = drain(&mut p, at(6_000));
        assert_eq!(acts, [Action::Kill(KillWhy::GraceOver)]);
        p.on_child_exit(ChildExit::Signaled(Signal::SIGKILL), at(6_001));
        p.on_tree_gone(at(6_001));
        assert_eq!(
            p.poll(at(6_001)),
            Action::Pause,
            "no release: the lease is kept"
        );
        assert_eq!(p.poll(at(6_001)), Action::Wait(None), "this policy is done");
    }

    #[test]
    fn a_lost_quorum_does_not_pause_a_run_that_ends_or_loses_its_lease() {
        // The command had exited already: the run ends as it would have.
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        p.on_child_exit(ChildExit::Code(4), at(1_000));
        p.on_quorum_lost(at(1_000));
        p.on_tree_gone(at(1_000));
        assert_eq!(p.poll(at(1_000)), Action::Release);
        p.on_released();
        assert_eq!(p.poll(at(1_000)), Action::Exit(4));

        // A stop request during the quorum's stop: release and exit.
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        p.on_quorum_lost(at(1_000));
        drain(&mut p, at(1_000));
        p.on_signal(Signal::SIGTERM, at(1_500));
        p.on_child_exit(ChildExit::Code(0), at(1_600));
        p.on_tree_gone(at(1_600));
        assert_eq!(p.poll(at(1_600)), Action::Release);

        // The lease at risk during the quorum's stop: lost, no pause, no release.
        let mut p = StopPolicy::new(config(), held(30_000));
        drain(&mut p, at(0));
        p.on_quorum_lost(at(1_000));
        drain(&mut p, at(1_000));
        p.on_lease(LeaseStatus {
            state: LeaseState::AtRisk,
            ..held(30_000)
        });
        p.on_child_exit(ChildExit::Code(0), at(2_000));
        p.on_tree_gone(at(2_000));
        let (_, end) = drain(&mut p, at(2_000));
        assert_eq!(end, Action::Exit(config().lost_exit_code));
    }
}
