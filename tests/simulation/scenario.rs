//! What a seed chooses before the run starts: how many candidates, each one's timing and
//! clock, how hostile the network and the store are, when crashes, pauses, partitions
//! and congestion strike, and how long the fault phase lasts. `world.rs` then plays the
//! scenario out; everything it decides on the way (each delay, each fault, each tie)
//! comes from a second stream seeded by the same seed.
//!
//! A [`Variant`] says which world is simulated: the real one (the sound variant, whose
//! every run must keep the promise) or a deliberately broken one, which the checker must
//! catch (a checker that never fails proves nothing).

use super::rng::Rng;
use s3lead::clock::Instant;
use s3lead::timing::{Timing, TimingSpec, default_margin};
use std::fmt;
use std::time::Duration;

/// Simulated real time, in nanoseconds since the run began.
pub type Nanos = u64;

pub const MS: Nanos = 1_000_000;
pub const SECOND: Nanos = 1_000 * MS;

pub fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `12.345678s`: real instants in traces and messages.
pub struct At(pub Nanos);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / SECOND, (self.0 % SECOND) / 1_000)
    }
}

/// One host's boot-time clock: `local = offset + real × (1 + ppb / 10⁹)`. The offset
/// stands for hosts booted at different times (the protocol never compares instants of
/// two hosts, so any offset must do); the rate for quartz drift and NTP slewing, which
/// the safety margin has to absorb.
#[derive(Clone, Copy, Debug)]
pub struct LocalClock {
    pub offset: Nanos,
    pub ppb: i64,
}

const BILLION: i128 = 1_000_000_000;

impl LocalClock {
    fn local_ns(&self, real: Nanos) -> i128 {
        // `real × ppb / 10⁹`, floored, without a 128-bit division (this runs for every
        // timer): whole seconds times `ppb` are exact, and the rest fits in 64 bits.
        let (secs, rest) = ((real / SECOND) as i64, (real % SECOND) as i64);
        let drift = secs * self.ppb + (rest * self.ppb).div_euclid(BILLION as i64);
        i128::from(self.offset) + i128::from(real) + i128::from(drift)
    }

    /// What this host's clock reads at real instant `real`.
    pub fn at(&self, real: Nanos) -> Instant {
        Instant::from_origin(Duration::from_nanos(self.local_ns(real) as u64))
    }

    /// The first real instant at which this clock reads `local` or later: when a timer
    /// armed for `local` on this host fires.
    pub fn real_at(&self, local: Instant) -> Nanos {
        let target = local.since_origin().as_nanos() as i128;
        if target <= self.local_ns(0) {
            return 0;
        }
        // A floating-point estimate, within a few nanoseconds; the loops make it exact.
        let estimate = (target - i128::from(self.offset)) as f64 / (1.0 + self.ppb as f64 / 1e9);
        let mut r = estimate.max(0.0) as Nanos;
        while self.local_ns(r) < target {
            r += 1;
        }
        while r > 0 && self.local_ns(r - 1) >= target {
            r -= 1;
        }
        r
    }
}

/// The bound on how late a SIGKILL timer fires and how long the kernel takes to end a
/// process after it: in the simulation a process dies a random while up to this after
/// its SIGKILL. The fixed part of the default margin covers it.
pub use s3lead::timing::KILL_LATENCY;

/// What a broken world gets wrong in the supervisor or around the protocol. The stop
/// policy itself is always the real one; a flaw is in what drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flaw {
    /// None: the guard kills at the watchdog's deadline, the supervisor wakes when the
    /// policy asks, followers remember what they saw.
    None,
    /// The guard has no watchdog timer: it kills only when its supervisor dies, so a
    /// paused supervisor's child runs on past its lease.
    NoWatchdog,
    /// The supervisor polls the policy only when something happens (the lease changes,
    /// the command exits), never at the instants the policy asks for, and the guard has
    /// no watchdog timer: the stop waits for the state machine to say so.
    NoTimers,
    /// Every follower forgets the lock object when it is deleted (it is restarted at the
    /// deletion), as followers that do not wait out a deleted record's lease would.
    ForgetsDeletedRecord,
}

/// How long a candidate waits for an answer before treating the request as unanswered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeouts {
    /// The store's own timeout: the timing's request timeout.
    Store,
    /// `lease.rs`'s backstop: request timeout + 1 s (a store that ignores its timeout).
    Backstop,
    /// Two leases: slow but definite answers arrive, long after they were useful.
    Patient,
}

/// Which world is simulated.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// For `S3LEAD_SIM_WORLD`.
    pub key: &'static str,
    pub name: &'static str,
    /// Clock rates are drawn from `1 ± rate_bound_ppb / 10⁹`.
    pub rate_bound_ppb: i64,
    /// `None`: timings that `Timing::new` accepts. `Some`: this unchecked one.
    pub timing: Option<fn() -> Timing>,
    pub flaw: Flaw,
    /// `None`: drawn per seed.
    pub timeouts: Option<Timeouts>,
    /// Adjusts the drawn scenario, so that a broken world meets its flaw often.
    pub tune: fn(&mut Scenario),
}

fn as_drawn(_: &mut Scenario) {}

impl Variant {
    /// The real thing: validated timings, clock rates within the documented bound
    /// (each clock within ±0.99 %, so any two differ by less than 2 %), the supervisor
    /// of `cli/run.rs` driving the real stop policy, and a guard with its watchdog.
    pub const SOUND: Variant = Variant {
        key: "sound",
        name: "sound",
        rate_bound_ppb: 9_900_000,
        timing: None,
        flaw: Flaw::None,
        timeouts: None,
        tune: as_drawn,
    };

    /// Broken: a 1 ms margin and clocks that differ by up to 10 %, so a slow leader's
    /// lease outlasts a fast follower's wait.
    pub const TINY_MARGIN_FAST_CLOCKS: Variant = Variant {
        key: "tiny-margin",
        name: "1 ms margin, clock rates ±5 %",
        rate_bound_ppb: 50_000_000,
        timing: Some(tiny_margin_timing),
        flaw: Flaw::None,
        timeouts: None,
        tune: as_drawn,
    };

    /// Broken, narrowly: clock rates within the documented bound, but a margin of 1 %
    /// of a one-minute lease where a 2 % rate difference needs 2 %.
    pub const HALF_THE_MARGIN: Variant = Variant {
        key: "half-margin",
        name: "margin 1 % of the lease, clock rates within the documented bound",
        rate_bound_ppb: 9_900_000,
        timing: Some(half_margin_timing),
        flaw: Flaw::None,
        timeouts: None,
        tune: as_drawn,
    };

    /// Broken: the supervisor looks at the policy only when something happens, never
    /// when the policy's own timers are due, and there is no watchdog; the driver waits
    /// patiently for slow answers, so the stop waits for the state machine, which waits
    /// for an answer.
    pub const NO_TIMERS: Variant = Variant {
        key: "no-timers",
        name: "supervisor acts only on lease changes, no watchdog",
        rate_bound_ppb: 9_900_000,
        timing: None,
        flaw: Flaw::NoTimers,
        timeouts: Some(Timeouts::Patient),
        tune: worst_case_commands,
    };

    /// Broken: the guard kills only when its supervisor dies, never at the deadline, so
    /// a supervisor stalled past its lease leaves its child running.
    pub const NO_WATCHDOG: Variant = Variant {
        key: "no-watchdog",
        name: "guard without a watchdog timer",
        rate_bound_ppb: 9_900_000,
        timing: None,
        flaw: Flaw::NoWatchdog,
        timeouts: None,
        tune: worst_case_commands,
    };

    /// Broken, narrowly: the margin covers the clock rates (`max(1 s, 2 %)`) but not the
    /// kill latency, on a one-minute lease where the rates use up the whole 2 %: a child
    /// killed at `valid_until` is still dying when a fast follower takes over.
    pub const NO_KILL_LATENCY_MARGIN: Variant = Variant {
        key: "no-kill-latency",
        name: "margin max(1 s, 2 %) without the kill latency, children killed at valid_until",
        rate_bound_ppb: 9_900_000,
        timing: Some(rates_only_margin_timing),
        flaw: Flaw::None,
        timeouts: None,
        tune: worst_case_commands_cut_off,
    };

    /// Broken: the lock object is deleted now and then, and followers forget what they
    /// saw, so they create a new record at once while the last leader's child still runs.
    pub const FORGETS_DELETED_RECORD: Variant = Variant {
        key: "forgets-deleted",
        name: "followers do not wait out a deleted record's lease",
        rate_bound_ppb: 9_900_000,
        timing: None,
        flaw: Flaw::ForgetsDeletedRecord,
        timeouts: None,
        tune: frequent_deletions,
    };

    pub const ALL: [Variant; 7] = [
        Variant::SOUND,
        Variant::TINY_MARGIN_FAST_CLOCKS,
        Variant::HALF_THE_MARGIN,
        Variant::NO_TIMERS,
        Variant::NO_WATCHDOG,
        Variant::NO_KILL_LATENCY_MARGIN,
        Variant::FORGETS_DELETED_RECORD,
    ];
}

/// Commands that ignore the stop signal: they live until SIGKILL, at `valid_until`.
fn worst_case_commands(sc: &mut Scenario) {
    sc.command.ignore_stop = 1.0;
}

/// Worst-case commands, clocks at the extremes of the rate bound, prompt answers, and
/// leaders that often lose their network right after a renewal: the moment at which a
/// lease has least room, with nothing but the margin to cover the kill latency.
fn worst_case_commands_cut_off(sc: &mut Scenario) {
    worst_case_commands(sc);
    let bound = sc.variant.rate_bound_ppb;
    for (i, c) in sc.candidates.iter_mut().enumerate() {
        c.clock.ppb = if (sc.seed >> i) & 1 == 0 {
            bound
        } else {
            -bound
        };
    }
    sc.faults.fast_delay = sc.faults.fast_delay.min(MS);
    sc.faults.cut_after_renewal = 0.3;
}

/// Deletions in every run, many of them right after a leader's renewal.
fn frequent_deletions(sc: &mut Scenario) {
    let mut rng = Rng::new(sc.seed ^ 0xDE1E7E);
    sc.deletions = (0..4).map(|_| rng.below(sc.fault_phase)).collect();
    sc.faults.delete_after_renewal = 0.05;
    sc.faults.host_pause = 0.0;
}

/// The margin as it was before it had a fixed part: clock rates only.
fn rates_only_margin_timing() -> Timing {
    let lease = Duration::from_secs(60);
    Timing::unchecked(&TimingSpec {
        lease,
        renew_every: Duration::from_secs(20),
        retry_period: Duration::from_secs(2),
        kill_after: Duration::from_secs(5),
        margin: Some((lease / 50).max(Duration::from_secs(1))),
        request_timeout: Some(Duration::from_secs(5)),
        follow_every: None,
    })
}

fn half_margin_timing() -> Timing {
    Timing::unchecked(&TimingSpec {
        lease: Duration::from_secs(60),
        renew_every: Duration::from_secs(20),
        retry_period: Duration::from_secs(2),
        kill_after: Duration::from_secs(5),
        margin: Some(Duration::from_millis(600)),
        request_timeout: Some(Duration::from_secs(5)),
        follow_every: None,
    })
}

fn tiny_margin_timing() -> Timing {
    Timing::unchecked(&TimingSpec {
        margin: Some(Duration::from_millis(1)),
        ..short_spec()
    })
}

/// A realistic short timing: every round of the protocol fits in a few simulated seconds.
fn short_spec() -> TimingSpec {
    TimingSpec {
        lease: Duration::from_secs(3),
        renew_every: Duration::from_secs(1),
        // 250 ms, not 300: with the margin's fixed part (1.25 s in all), 300 ms no
        // longer fits the 3 s lease.
        retry_period: Duration::from_millis(250),
        kill_after: Duration::from_millis(500),
        margin: None,
        request_timeout: None,
        follow_every: None,
    }
}

/// Another short timing, whose retry period is longer than its margin: a lease that
/// counts from the wrong attempt of a retried write is then wrong by more than the
/// margin can hide (with the first short timing, by less).
fn short_spec_slow_retry() -> TimingSpec {
    TimingSpec {
        lease: Duration::from_secs(10),
        renew_every: Duration::from_secs(3),
        retry_period: Duration::from_secs(2),
        kill_after: Duration::from_secs(1),
        margin: None,
        request_timeout: None,
        follow_every: None,
    }
}

/// A timing that `Timing::new` accepts: the short one, the CLI defaults, or any other
/// (the promise holds for every timing the validation lets through, including those
/// exactly on its boundary). Leases of 50 s and more get the tightest default margin,
/// whose clock-rate part is exactly 2 %, where the clock-rate arithmetic has least room.
fn sound_timing(rng: &mut Rng) -> Timing {
    let spec = match rng.below(100) {
        0..35 => short_spec(),
        35..55 => short_spec_slow_retry(),
        55..70 => TimingSpec::default(),
        70..85 => random_spec(rng, 1_500, 60_000),
        _ => random_spec(rng, 50_000, 300_000),
    };
    Timing::new(&spec).unwrap_or_else(|e| panic!("generated timing {spec:?} refused: {e}"))
}

/// A lease of `min_ms..=max_ms`, the rest drawn to fit the validation.
fn random_spec(rng: &mut Rng, min_ms: u64, max_ms: u64) -> TimingSpec {
    let ms = Duration::from_millis;
    let lease = rng.between(min_ms, max_ms);
    // Rounded up: 2 % of the lease is not always a whole millisecond.
    let margin = default_margin(ms(lease)).as_micros().div_ceil(1_000) as u64;
    // renew + retry + kill_after ≤ lease − margin; half the time exactly equal.
    let budget = lease - margin;
    let floor = (budget / 20).max(20);
    let total = if rng.chance(0.5) {
        budget
    } else {
        rng.between(3 * floor, budget)
    };
    let spare = total - 3 * floor;
    let (a, b) = (rng.upto(spare), rng.upto(spare));
    let mut parts = [a.min(b), a.max(b) - a.min(b), spare - a.max(b)].map(|p| floor + p);
    // Any part may be the large one.
    let k = rng.below(3) as usize;
    parts.swap(0, k);
    let renew = parts[0];
    TimingSpec {
        lease: ms(lease),
        renew_every: ms(renew),
        retry_period: ms(parts[1]),
        kill_after: ms(parts[2]),
        margin: None,
        request_timeout: rng.chance(0.3).then(|| ms(rng.between(1, renew - 1))),
        follow_every: rng.chance(0.5).then(|| ms(rng.between(1, lease))),
    }
}

/// One candidate host.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub timing: Timing,
    pub clock: LocalClock,
    /// When its first supervisor starts campaigning.
    pub start_at: Nanos,
}

/// How hostile the fault phase is. Each probability applies to one request.
#[derive(Clone, Debug)]
pub struct Faults {
    /// The request never reaches the store (connection reset before the body was read):
    /// the sender hears nothing until its timeout.
    pub lose_request: f64,
    /// The store applied the request but the answer is lost (a timeout after the PUT
    /// took effect): the sender hears nothing until its timeout.
    pub lose_answer: f64,
    /// 409 ConditionalRequestConflict: nothing written.
    pub conflict: f64,
    /// 503 SlowDown / refused before sending: certainly nothing written.
    pub unavailable: f64,
    /// 500 without writing: ambiguous to the sender.
    pub fail_before: f64,
    /// The write landed, then the answer is an error: 500 (the front end failed:
    /// ambiguous), or one time in four 412 (a gateway that retried our PUT on its own
    /// and saw our own write as a conflicting one).
    pub fail_after: f64,
    /// A one-way delay drawn up to a whole lease instead of up to `fast_delay` (a
    /// congested path, a stalled connection pool, a store under GC): answers arrive after
    /// the sender's timeout, and writes land after the sender was told "ambiguous".
    pub slow: f64,
    pub fast_delay: Nanos,
    /// The write landed, then the answer is a definite-looking error that says nothing
    /// of the write: a 200 without an ETag, an answer the client cannot parse.
    pub fatal_after_write: f64,
    /// The write landed, then the client reports that nothing was sent (a gateway that
    /// answers 408 after storing the body, a connection error misread as a refusal).
    pub unavailable_after_write: f64,
    /// A supervisor that exits is restarted (systemd, cron) within this delay.
    pub restart_within: Nanos,
    /// Chance that a leader loses its network right after a write extended its lease
    /// (see `World::maybe_cut_off_leader`).
    pub cut_after_renewal: f64,
    /// Chance that a pause stops the whole host (a VM paused), its guard and its
    /// command too, rather than the supervisor alone.
    pub host_pause: f64,
    /// Chance that the lock object is deleted (an operator, a lifecycle rule) shortly
    /// after a leader's renewal landed, when a follower's view is most out of date.
    pub delete_after_renewal: f64,
    /// Chance that a command, once started, loses its leader's `--quorum` a while later:
    /// the policy stops it and pauses, the lease is kept, and the command starts again
    /// under the same lease when the quorum is back.
    pub quorum_loss: f64,
}

/// How the supervised command behaves: its stop signal may be ignored, it may leave a
/// descendant behind, and it may finish its job.
#[derive(Clone, Debug)]
pub struct Command {
    /// Chance that a new leader's command exits on its own (job done) at some point in
    /// the fault phase, after which the supervisor releases the lease.
    pub exits_on_its_own: f64,
    /// Chance that a process of the command ignores the stop signal: it lives until
    /// SIGKILL, the worst case. Otherwise it exits a random while after the signal.
    pub ignore_stop: f64,
    /// Chance that the command has a descendant that lives on when the command exits
    /// (something it started in the background), until it is stopped or finishes too.
    pub leftover: f64,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub variant: Variant,
    pub candidates: Vec<Candidate>,
    pub timeouts: Timeouts,
    pub faults: Faults,
    pub command: Command,
    /// Faults happen in `[0, fault_phase)`; then the calm phase: no new fault, no crash,
    /// no pause, no command finishing its job, no operator signal or deletion, one-way
    /// delays up to `calm_delay`.
    pub fault_phase: Nanos,
    pub calm_delay: Nanos,
    /// When a `kill -9` hits some supervisor (a leader half of the time).
    pub crashes: Vec<Nanos>,
    /// When some supervisor is paused (SIGSTOP, a VM pause, a long GC), for how long is
    /// drawn then.
    pub freezes: Vec<Nanos>,
    /// When some host (a leader half of the time) loses its network, for up to two
    /// leases.
    pub partitions: Vec<Nanos>,
    /// When some host's network becomes very slow, for up to two leases.
    pub congestions: Vec<Nanos>,
    /// When the operator sends a signal to some supervisor (a leader most of the time):
    /// TERM or INT (stop the command, release the lease), now and then a second one, or
    /// a HUP to forward.
    pub signals: Vec<Nanos>,
    /// When the lock object is deleted behind the protocol's back. Drawn only when all
    /// hosts share one timing (a follower cannot wait out a lease it never saw) and never
    /// with host pauses (fencing cannot answer a late child once the object that held
    /// the terms is gone).
    pub deletions: Vec<Nanos>,
}

impl Scenario {
    pub fn generate(seed: u64, variant: Variant) -> Scenario {
        let mut rng = Rng::new(seed);
        let n = rng.between(3, 5) as usize;
        let shared = match variant.timing {
            Some(t) => t(),
            None => sound_timing(&mut rng),
        };
        // Mixed configurations (docs/design.md §2: followers wait out the holder's lease_ms).
        let mixed = variant.timing.is_none() && rng.chance(0.15);
        let all_at_once = rng.chance(0.3);
        let bound = variant.rate_bound_ppb;
        let candidates: Vec<Candidate> = (0..n)
            .map(|_| {
                let timing = if mixed {
                    sound_timing(&mut rng)
                } else {
                    shared
                };
                let offset = match rng.below(5) {
                    0 => 0,
                    1 | 2 => rng.upto(10 * SECOND),
                    // Up to about 30 years of uptime: offsets of any size.
                    _ => rng.upto(1_000_000_000 * SECOND),
                };
                // The extremes are where the margin is tested; draw them often.
                let ppb = match rng.below(3) {
                    0 => -bound,
                    1 => bound,
                    _ => rng.upto(2 * bound as u64) as i64 - bound,
                };
                let start_at = if all_at_once {
                    0
                } else {
                    rng.upto(nanos(timing.lease()) / 2)
                };
                Candidate {
                    timing,
                    clock: LocalClock { offset, ppb },
                    start_at,
                }
            })
            .collect();
        let max_lease = candidates
            .iter()
            .map(|c| nanos(c.timing.lease()))
            .max()
            .unwrap_or(0);
        let min_retry = candidates
            .iter()
            .map(|c| nanos(c.timing.retry_period()))
            .min()
            .unwrap_or(0);
        let min_request_timeout = candidates
            .iter()
            .map(|c| nanos(c.timing.request_timeout()))
            .min()
            .unwrap_or(0);
        let timeouts = variant.timeouts.unwrap_or_else(|| match rng.below(10) {
            0..6 => Timeouts::Store,
            6..8 => Timeouts::Backstop,
            _ => Timeouts::Patient,
        });
        let intensity = rng.pick(&[0.0, 0.05, 0.15, 0.3]);
        let mut p = || rng.unit() * intensity / 2.0;
        let faults = Faults {
            lose_request: p(),
            lose_answer: p(),
            conflict: p(),
            unavailable: p(),
            fail_before: p(),
            fail_after: p(),
            slow: p(),
            fatal_after_write: p(),
            unavailable_after_write: p(),
            fast_delay: 0,
            restart_within: 0,
            cut_after_renewal: 0.0,
            host_pause: 0.0,
            delete_after_renewal: 0.0,
            // From a stream of its own, so that a seed without quorum losses plays out
            // exactly as before they were simulated.
            quorum_loss: Rng::new(seed ^ 0x0909_0A0A).pick(&[0.0, 0.0, 0.3, 0.8]),
        };
        // Half the runs without each of the answers that hide a landed write, so that
        // the others are seen on their own too.
        let fatal_after_write = if rng.chance(0.5) {
            faults.fatal_after_write
        } else {
            0.0
        };
        let unavailable_after_write = if rng.chance(0.5) {
            faults.unavailable_after_write
        } else {
            0.0
        };
        let deletes = !mixed && rng.chance(0.25);
        let faults = Faults {
            fast_delay: rng.pick(&[0, MS / 10, MS, 20 * MS, min_retry / 2]),
            restart_within: rng.upto(max_lease),
            cut_after_renewal: rng.pick(&[0.0, 0.02, 0.1]),
            host_pause: if deletes {
                0.0
            } else {
                rng.pick(&[0.0, 0.1, 0.3])
            },
            delete_after_renewal: if deletes {
                rng.pick(&[0.0, 0.01, 0.05])
            } else {
                0.0
            },
            fatal_after_write,
            unavailable_after_write,
            ..faults
        };
        let command = Command {
            exits_on_its_own: rng.unit() * 0.5,
            ignore_stop: rng.pick(&[0.0, 0.5, 1.0]),
            leftover: rng.pick(&[0.0, 0.0, 0.3]),
        };
        let fault_phase = rng.between(8, 40) * max_lease;
        // Calm round trips must fit well inside every request timeout.
        let calm_delay = rng.between(MS / 10, (50 * MS).min(min_request_timeout / 4).max(MS / 10));
        let crashes = (0..rng.upto(4)).map(|_| rng.below(fault_phase)).collect();
        let freezes = (0..rng.upto(4)).map(|_| rng.below(fault_phase)).collect();
        let partitions = (0..rng.upto(4)).map(|_| rng.below(fault_phase)).collect();
        let congestions = (0..rng.upto(4)).map(|_| rng.below(fault_phase)).collect();
        let signals = (0..rng.upto(3)).map(|_| rng.below(fault_phase)).collect();
        let deletions = if deletes {
            (0..rng.between(1, 3))
                .map(|_| rng.below(fault_phase))
                .collect()
        } else {
            Vec::new()
        };
        let mut sc = Scenario {
            seed,
            variant,
            candidates,
            timeouts,
            faults,
            command,
            fault_phase,
            calm_delay,
            crashes,
            freezes,
            partitions,
            congestions,
            signals,
            deletions,
        };
        (variant.tune)(&mut sc);
        sc
    }

    pub fn max_lease(&self) -> Nanos {
        self.candidates
            .iter()
            .map(|c| nanos(c.timing.lease()))
            .max()
            .unwrap_or(0)
    }

    pub fn max_retry(&self) -> Nanos {
        self.candidates
            .iter()
            .map(|c| nanos(c.timing.retry_period()))
            .max()
            .unwrap_or(0)
    }

    /// The longest slow polling period of any candidate: a follower sees a write at most
    /// this long after it landed.
    pub fn max_follow(&self) -> Nanos {
        self.candidates
            .iter()
            .map(|c| nanos(c.timing.follow_every()))
            .max()
            .unwrap_or(0)
    }

    /// How long a candidate waits for an answer, on its own clock.
    pub fn timeout(&self, c: usize) -> Duration {
        let t = &self.candidates[c].timing;
        match self.timeouts {
            Timeouts::Store => t.request_timeout(),
            Timeouts::Backstop => t.request_timeout() + Duration::from_secs(1),
            Timeouts::Patient => 2 * t.lease(),
        }
    }

    /// The longest a calm world may go without a running child (see `check::liveness`).
    ///
    /// From the instant the last child ended (or the calm phase drained, if later): the
    /// dead holder's last write may still be on its way (one delay); a follower's next
    /// read reaches the store within a retry period plus a round trip and comes back (one
    /// delay): that is its `first_seen`; it waits the lease on its own clock and sends
    /// the takeover, which lands and is answered (a round trip). A follower whose
    /// takeover of the previous ETag races that last write loses one more round trip
    /// (412, then the re-read). So `lease + retry period + 8 one-way delays`, the
    /// durations stretched by 2 % for a clock up to 1 % slow, plus a millisecond for
    /// rounding.
    ///
    /// docs/design.md §1.3 says "lease + poll period + one request": that is this bound with
    /// instant requests; a real request is two delays, and the follower needs a read and
    /// a write after the holder's last write has landed.
    pub fn liveness_bound(&self) -> Nanos {
        (self.max_lease() + self.max_retry().max(self.max_follow())) * 102 / 100
            + 8 * self.calm_delay
            + MS
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} ({} world): {} candidates, timeouts {:?}, fault phase until {}, calm delays ≤ {}",
            self.seed,
            self.variant.name,
            self.candidates.len(),
            self.timeouts,
            At(self.fault_phase),
            At(self.calm_delay)
        )?;
        for (i, c) in self.candidates.iter().enumerate() {
            let t = &c.timing;
            writeln!(
                f,
                "  c{i}: lease {:?} renew {:?} retry {:?} kill_after {:?} margin {:?} request timeout {:?}; \
                 clock offset {}, rate {:+.4} %; starts at {}",
                t.lease(),
                t.renew_every(),
                t.retry_period(),
                t.kill_after(),
                t.margin(),
                t.request_timeout(),
                At(c.clock.offset),
                c.clock.ppb as f64 / 1e7,
                At(c.start_at)
            )?;
        }
        let fl = &self.faults;
        writeln!(
            f,
            "  faults per request: lose request {:.3}, lose answer {:.3}, 409 {:.3}, 503 {:.3}, \
             500 before write {:.3}, 500 after write {:.3}, fatal after write {:.3}, \
             \"not sent\" after write {:.3}, slow {:.3}; fast delays ≤ {}",
            fl.lose_request,
            fl.lose_answer,
            fl.conflict,
            fl.unavailable,
            fl.fail_before,
            fl.fail_after,
            fl.fatal_after_write,
            fl.unavailable_after_write,
            fl.slow,
            At(fl.fast_delay)
        )?;
        let cmd = &self.command;
        writeln!(
            f,
            "  command: exits on its own {:.2}, ignores the stop signal {:.2}, leaves a descendant {:.2}",
            cmd.exits_on_its_own, cmd.ignore_stop, cmd.leftover
        )?;
        let instants = |ts: &[Nanos]| ts.iter().map(|t| At(*t).to_string()).collect::<Vec<_>>();
        write!(
            f,
            "  restart within {}, crashes at {:?}, pauses at {:?} (whole host {:.2}), \
             network cut at {:?} (after a renewal {:.2}), congested at {:?}, operator signals at {:?}, \
             object deleted at {:?} (after a renewal {:.2}), quorum lost after a start {:.2}",
            At(fl.restart_within),
            instants(&self.crashes),
            instants(&self.freezes),
            fl.host_pause,
            instants(&self.partitions),
            fl.cut_after_renewal,
            instants(&self.congestions),
            instants(&self.signals),
            instants(&self.deletions),
            fl.delete_after_renewal,
            fl.quorum_loss
        )
    }
}
