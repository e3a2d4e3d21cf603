//! The lease's timing, validated once before any request (docs/design.md §3 "The margin").
//!
//! A [`Timing`] cannot be built with settings that break the promise: the leader must be
//! able to renew, retry once, stop its child with the full kill grace, and still be
//! inside its lease minus the safety margin, all before any follower may take over.
//!
//! The margin has two parts. One covers clock *rates*: a follower measures the lease on
//! its own clock, which may run up to [`DOCUMENTED_RATE_BOUND`] faster than the leader's,
//! so the part grows with the lease (2 % of it, at least 1 s). The other is fixed,
//! [`KILL_LATENCY`]: the bound on how late the SIGKILL timer at `valid_until` may fire
//! (timer slack, a loaded scheduler) plus how long the kernel may take to end the
//! process after the signal (unmapping a large address space, flushing its files). A
//! child is dead only once both have happened, however short the lease.
//!
//! A lease is at most [`MAX_LEASE`] (one day), the bound a lock record's `lease_ms` must
//! keep, and the command starts only with [`Timing::min_runway`] ahead of its stop point.

use crate::clock::Instant;
use crate::record::MAX_LEASE;
use std::fmt;
use std::time::Duration;

/// What the user asked for; `None` fields take their documented defaults.
#[derive(Clone, Debug)]
pub struct TimingSpec {
    /// `--lease-duration`: how long a write holds the lease; followers wait it out.
    pub lease: Duration,
    /// `--renew-every`: how often the leader renews.
    pub renew_every: Duration,
    /// `--retry-period`: how soon a failed request is retried, and how often followers
    /// poll.
    pub retry_period: Duration,
    /// `--kill-after`: the grace between the stop signal and SIGKILL.
    pub kill_after: Duration,
    /// Default: `max(1 s, 2 % of the lease) + KILL_LATENCY`.
    pub margin: Option<Duration>,
    /// Default: `min(5 s, renew_every / 2)`.
    pub request_timeout: Option<Duration>,
    /// `--follow-every`: the followers' slow polling period, while the holder renews as
    /// it should. Default: `min(10 s, lease / 3)`.
    pub follow_every: Option<Duration>,
}

impl Default for TimingSpec {
    fn default() -> Self {
        TimingSpec {
            lease: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            kill_after: Duration::from_secs(5),
            margin: None,
            request_timeout: None,
            follow_every: None,
        }
    }
}

/// Validated timing: every field positive and
/// `renew_every + retry_period + kill_after + margin ≤ lease`,
/// `request_timeout < renew_every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    lease: Duration,
    renew_every: Duration,
    retry_period: Duration,
    kill_after: Duration,
    margin: Duration,
    request_timeout: Duration,
    follow_every: Duration,
}

/// The relative clock-rate difference between two hosts that the default margin
/// covers: a holder whose clock runs up to 2 % slower than a follower's still stops
/// before the follower takes over.
pub const DOCUMENTED_RATE_BOUND: f64 = 0.02;

/// The fixed part of the default margin: the bound on how late a SIGKILL timer may fire
/// and the kernel may take to end the process. The child must be dead, not merely
/// signalled, before any follower may take over.
pub const KILL_LATENCY: Duration = Duration::from_millis(250);

/// Settings that cannot keep the promise, refused before any request: the message names
/// the flags and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsafe timing: {0}")]
pub struct TimingError(String);

impl Timing {
    /// Validates `spec` (docs/design.md §3 "The margin"), filling in the default margin
    /// and request timeout.
    pub fn new(spec: &TimingSpec) -> Result<Timing, TimingError> {
        let margin = spec.margin.unwrap_or_else(|| default_margin(spec.lease));
        let request_timeout = spec
            .request_timeout
            .unwrap_or_else(|| default_request_timeout(spec.renew_every));
        let follow_every = spec
            .follow_every
            .unwrap_or_else(|| default_follow_every(spec.lease));
        if spec.lease > MAX_LEASE {
            return Err(TimingError(format!(
                "--lease-duration ({}) exceeds the maximum of {}; followers would wait that \
                 long for a holder that died",
                Dur(spec.lease),
                Dur(MAX_LEASE)
            )));
        }
        for (name, d) in [
            ("--lease-duration", spec.lease),
            ("--renew-every", spec.renew_every),
            ("--retry-period", spec.retry_period),
            ("--kill-after", spec.kill_after),
            ("the safety margin", margin),
            ("--request-timeout", request_timeout),
            ("--follow-every", follow_every),
        ] {
            if d.is_zero() {
                return Err(TimingError(format!("{name} must be positive")));
            }
        }
        let needed = spec.renew_every + spec.retry_period + spec.kill_after + margin;
        if needed > spec.lease {
            return Err(TimingError(format!(
                "--renew-every ({}) + --retry-period ({}) + --kill-after ({}) + safety margin ({}) = {} \
                 exceeds --lease-duration ({}); the leader could not renew, retry and stop its \
                 command before a follower takes over (lengthen the lease or shorten the others)",
                Dur(spec.renew_every),
                Dur(spec.retry_period),
                Dur(spec.kill_after),
                Dur(margin),
                Dur(needed),
                Dur(spec.lease)
            )));
        }
        if request_timeout >= spec.renew_every {
            return Err(TimingError(format!(
                "--request-timeout ({}) must be shorter than --renew-every ({})",
                Dur(request_timeout),
                Dur(spec.renew_every)
            )));
        }
        Ok(Timing {
            lease: spec.lease,
            renew_every: spec.renew_every,
            retry_period: spec.retry_period,
            kill_after: spec.kill_after,
            margin,
            request_timeout,
            follow_every,
        })
    }

    /// Builds a timing without validation, so that tests can show what an unsafe one
    /// breaks (the simulation's "checker has teeth" test).
    #[doc(hidden)]
    pub fn unchecked(spec: &TimingSpec) -> Timing {
        Timing {
            lease: spec.lease,
            renew_every: spec.renew_every,
            retry_period: spec.retry_period,
            kill_after: spec.kill_after,
            margin: spec.margin.unwrap_or_else(|| default_margin(spec.lease)),
            request_timeout: spec
                .request_timeout
                .unwrap_or_else(|| default_request_timeout(spec.renew_every)),
            follow_every: spec
                .follow_every
                .unwrap_or_else(|| default_follow_every(spec.lease)),
        }
    }

    /// The lease written into every record (`lease_ms`).
    pub fn lease(&self) -> Duration {
        self.lease
    }
    /// The interval between renewals.
    pub fn renew_every(&self) -> Duration {
        self.renew_every
    }
    /// The wait before a failed request is retried.
    pub fn retry_period(&self) -> Duration {
        self.retry_period
    }
    /// A follower's slow polling period, while the holder renews as it should
    /// (`--follow-every`). A holder that dies is replaced within `lease + follow_every`
    /// (and one request): the follower sees the holder's last write at most one slow
    /// poll after it landed, and waits out the lease from there.
    pub fn follow_every(&self) -> Duration {
        self.follow_every
    }
    /// A follower's fast polling period: the retry period, or the slow period if that is
    /// shorter. Used while the holder's renewal is overdue, while campaigning for an
    /// absent record and after a failed request.
    pub fn fast_poll(&self) -> Duration {
        self.retry_period.min(self.follow_every)
    }
    /// The grace between the stop signal at `stop_at` and SIGKILL at `valid_until`.
    pub fn kill_after(&self) -> Duration {
        self.kill_after
    }
    /// What is taken off every lease for clock rates and kill latency.
    pub fn margin(&self) -> Duration {
        self.margin
    }
    /// The bound on each store request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// s3lead starts the command only if its lease's stop point is at least one retry
    /// period away. A lease recognised late (its write's answer was lost, and a re-read
    /// found it) may have almost none left: a command started then would be stopped
    /// before it did anything, or, with a renewal that lands late, run on a lease with no
    /// room for a single retry. Such a lease is renewed first and announced only once a
    /// renewal lands in time.
    pub fn min_runway(&self) -> Duration {
        self.retry_period
    }

    /// Until when a lease counted from `sent` holds for its leader: `sent + lease −
    /// margin`. `sent` is the instant the write that granted or renewed it was *sent*
    /// (the earliest attempt that could have landed), on the leader's own clock; it
    /// precedes any follower's first sight of that write, and the margin absorbs the
    /// clocks' rate difference and the kill latency. The child must be dead by then.
    pub fn valid_until(&self, sent: Instant) -> Instant {
        (sent + self.lease).saturating_sub(self.margin)
    }

    /// When the stop signal goes to the child of a lease valid until `valid_until`,
    /// unless a renewal lands first: `valid_until − kill_after`, so the child has the
    /// whole kill grace before SIGKILL at `valid_until`.
    pub fn stop_at(&self, valid_until: Instant) -> Instant {
        valid_until.saturating_sub(self.kill_after)
    }

    /// Whether a lease valid until `valid_until` leaves, at `now`, the
    /// [`min_runway`](Timing::min_runway) before its stop point that a child needs to be
    /// started.
    pub fn has_runway(&self, valid_until: Instant, now: Instant) -> bool {
        now + self.min_runway() <= self.stop_at(valid_until)
    }
}

/// `min(5 s, renew_every / 2)`: a request that cannot finish in half a renewal interval
/// is better retried than waited for.
pub fn default_request_timeout(renew_every: Duration) -> Duration {
    (renew_every / 2).min(Duration::from_secs(5))
}

/// `min(10 s, lease / 3)`: at the default 30 s lease a follower reads at most once per
/// 10 s (360 requests an hour) and a dead holder is replaced within 40 s; a shorter lease
/// keeps its failover proportionally short.
pub fn default_follow_every(lease: Duration) -> Duration {
    (lease / 3).min(Duration::from_secs(10))
}

/// `max(1 s, 2 % of the lease) + KILL_LATENCY`: the clock-rate part and the fixed part
/// (see the module comment).
pub fn default_margin(lease: Duration) -> Duration {
    (lease / 50).max(Duration::from_secs(1)) + KILL_LATENCY
}

/// A duration printed the way the user typed it: `250ms`, `30s`, `1m 30s`.
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    /// To the millisecond (`999ms`, not `999ms 998us 694ns`), unless shorter than one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = if self.0 >= Duration::from_millis(1) {
            Duration::from_millis(u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX))
        } else {
            self.0
        };
        humantime::format_duration(d).fmt(f)
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h`, `1m30s` and bare seconds (`30`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return t
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0 && *x < 1e12)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("invalid duration {s:?} (examples: 250ms, 30s, 5m, 1h)"));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("invalid duration {s:?} (examples: 250ms, 30s, 5m, 1h)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_are_safe() {
        let t = Timing::new(&TimingSpec::default()).unwrap();
        assert_eq!(t.margin(), ms(1_250));
        assert_eq!(t.request_timeout(), secs(5));
        assert_eq!(t.min_runway(), secs(2), "one retry period");
        assert_eq!(
            t.follow_every(),
            secs(10),
            "one read per 10 s at the 30 s lease"
        );
        assert_eq!(t.fast_poll(), secs(2));
    }

    #[test]
    fn the_slow_period_scales_with_short_leases_and_bounds_the_fast_one() {
        assert_eq!(default_follow_every(secs(3)), secs(1));
        assert_eq!(default_follow_every(secs(300)), secs(10));
        let t = Timing::new(&TimingSpec {
            follow_every: Some(ms(500)),
            ..TimingSpec::default()
        })
        .unwrap();
        assert_eq!((t.follow_every(), t.fast_poll()), (ms(500), ms(500)));
        let zero = TimingSpec {
            follow_every: Some(Duration::ZERO),
            ..TimingSpec::default()
        };
        assert!(
            Timing::new(&zero)
                .unwrap_err()
                .to_string()
                .contains("--follow-every must be positive")
        );
    }

    #[test]
    fn valid_until_is_send_plus_lease_minus_margin_and_stop_at_kill_after_before() {
        let t = Timing::new(&TimingSpec::default()).unwrap();
        let sent = Instant::from_origin(secs(100));
        let valid_until = t.valid_until(sent);
        assert_eq!(valid_until, Instant::from_origin(ms(128_750)));
        assert_eq!(t.stop_at(valid_until), Instant::from_origin(ms(123_750)));
        assert!(t.has_runway(valid_until, Instant::from_origin(ms(121_750))));
        assert!(!t.has_runway(valid_until, Instant::from_origin(ms(121_751))));
    }

    #[test]
    fn margin_is_two_percent_of_long_leases_plus_the_kill_latency() {
        assert_eq!(KILL_LATENCY, ms(250));
        assert_eq!(default_margin(secs(300)), ms(6_250));
        assert_eq!(default_margin(secs(10)), ms(1_250));
        assert_eq!(default_margin(ms(500)), ms(1_250));
    }

    #[test]
    fn the_margin_s_fixed_part_can_refuse_a_short_lease() {
        // 1 s + 300 ms + 500 ms + 1 s fitted a 3 s lease before the fixed part.
        let mut spec = TimingSpec {
            lease: secs(3),
            renew_every: secs(1),
            retry_period: ms(300),
            kill_after: ms(500),
            ..TimingSpec::default()
        };
        let err = Timing::new(&spec).unwrap_err().to_string();
        assert!(err.contains("safety margin (1s 250ms)"), "{err}");
        spec.retry_period = ms(250);
        assert!(Timing::new(&spec).is_ok());
    }

    #[test]
    fn refuses_a_lease_longer_than_a_day() {
        let spec = |lease| TimingSpec {
            lease,
            renew_every: secs(3_600),
            retry_period: secs(60),
            kill_after: secs(60),
            ..TimingSpec::default()
        };
        assert!(Timing::new(&spec(MAX_LEASE)).is_ok());
        let err = Timing::new(&spec(MAX_LEASE + ms(1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--lease-duration (1day 1ms)"), "{err}");
        assert!(err.contains("maximum of 1day"), "{err}");
    }

    #[test]
    fn refuses_a_renewal_slower_than_the_lease() {
        let spec = TimingSpec {
            lease: secs(5),
            renew_every: secs(10),
            ..TimingSpec::default()
        };
        let err = Timing::new(&spec).unwrap_err().to_string();
        assert!(err.contains("--renew-every (10s)"), "{err}");
        assert!(err.contains("exceeds --lease-duration (5s)"), "{err}");
    }

    #[test]
    fn refuses_a_sum_just_over_the_lease_and_accepts_it_exactly() {
        // 10 + 2 + 5 + 1.25 = 18.25
        let mut spec = TimingSpec {
            lease: ms(18_249),
            ..TimingSpec::default()
        };
        assert!(Timing::new(&spec).is_err());
        spec.lease = ms(18_250);
        assert!(Timing::new(&spec).is_ok());
    }

    #[test]
    fn refuses_zero_durations() {
        let spec = TimingSpec {
            kill_after: Duration::ZERO,
            ..TimingSpec::default()
        };
        assert!(
            Timing::new(&spec)
                .unwrap_err()
                .to_string()
                .contains("--kill-after must be positive")
        );
    }

    #[test]
    fn refuses_request_timeouts_not_shorter_than_the_renewal() {
        let spec = TimingSpec {
            request_timeout: Some(secs(10)),
            ..TimingSpec::default()
        };
        assert!(
            Timing::new(&spec)
                .unwrap_err()
                .to_string()
                .contains("--request-timeout")
        );
    }

    #[test]
    fn parses_durations_as_documented() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), secs(30));
        assert_eq!(parse_duration("5m").unwrap(), secs(300));
        assert_eq!(parse_duration("1h").unwrap(), secs(3600));
        assert_eq!(parse_duration("45").unwrap(), secs(45));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-3s").is_err());
    }
}
