//! Time as the protocol sees it: instants on `CLOCK_BOOTTIME`, which keeps counting while
//! the host is suspended (`CLOCK_MONOTONIC` does not, so a laptop or VM that slept would
//! wake up believing it still leads), and `sleep_until`, a sleep on the boot-time clock
//! itself (a timerfd), so that a deadline passed during a suspend fires at once on resume.
//!
//! The protocol (`election.rs`) takes "now" as an argument instead of reading a clock, so
//! tests and the simulation need no clock object: they pass instants of their own.
//!
//! Nothing here reads the wall clock: wall-clock time only appears in the record's
//! human-readable fields (`record.rs`).

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on one host's boot-time clock. Instants from different hosts are never
/// compared: only durations measured on one host mean anything.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Instant(Duration);

impl Instant {
    /// The instant `d` after the clock's origin (boot, or zero in tests and simulations).
    pub const fn from_origin(d: Duration) -> Self {
        Instant(d)
    }

    /// The time from the clock's origin to this instant.
    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// `self - d`, floored at the origin.
    pub fn saturating_sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(d))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

/// Reads `CLOCK_BOOTTIME`. It cannot fail on Linux ≥ 2.6.39 with a valid clock id; if
/// it ever did, falling back to `CLOCK_MONOTONIC` keeps durations meaningful.
pub fn boot_now() -> Instant {
    use nix::time::{ClockId, clock_gettime};
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    Instant(Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
}

/// Sleeps until `deadline` on `CLOCK_BOOTTIME`.
///
/// tokio's timers run on `CLOCK_MONOTONIC`, which stops during suspend: a tokio sleep
/// armed before a suspend would still have its whole remaining time to run after the
/// resume, while the lease it guards has already expired. A timerfd armed with an
/// absolute boot-time deadline fires as soon as the host resumes past it.
pub async fn sleep_until(deadline: Instant) {
    if let Err(e) = timerfd_sleep(deadline).await {
        // Without a timerfd (seccomp, exotic kernels), sleep in short slices and look
        // at the boot clock between them, so a suspend is noticed within one slice.
        tracing::debug!("timerfd unavailable ({e}); sleeping in slices");
        loop {
            let now = boot_now();
            if now >= deadline {
                return;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(100))).await;
        }
    }
}

async fn timerfd_sleep(deadline: Instant) -> std::io::Result<()> {
    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    use std::os::fd::AsFd;
    use tokio::io::unix::AsyncFd;

    /// Gives tokio the raw descriptor of a timerfd that it owns for its whole life.
    struct BootTimer(TimerFd);
    impl std::os::fd::AsRawFd for BootTimer {
        fn as_raw_fd(&self) -> std::os::fd::RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    let fd = TimerFd::new(
        ClockId::CLOCK_BOOTTIME,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    // An all-zero expiration disarms a timerfd; the origin itself is long past anyway.
    let at = deadline.0.max(Duration::from_nanos(1));
    fd.set(
        Expiration::OneShot(TimeSpec::from_duration(at)),
        TimerSetTimeFlags::TFD_TIMER_ABSTIME,
    )?;
    // SAFETY: the descriptor belongs to the TimerFd moved into the AsyncFd, which keeps it
    // open and unchanged until the AsyncFd (and so the registration) is dropped.
    let fd = unsafe { AsyncFd::register(BootTimer(fd)) }.map_err(std::io::Error::from)?;
    loop {
        let mut guard = fd.readable().await?;
        let mut buf = [0u8; 8];
        match nix::unistd::read(guard.get_inner().0.as_fd(), &mut buf) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_saturate_instead_of_panicking() {
        let a = Instant::from_origin(Duration::from_secs(1));
        let b = Instant::from_origin(Duration::from_secs(3));
        assert_eq!(a - b, Duration::ZERO);
        assert_eq!(b - a, Duration::from_secs(2));
        assert_eq!(a.saturating_sub(Duration::from_secs(5)), Instant::default());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sleep_until_reaches_its_deadline_on_the_boot_clock() {
        let deadline = boot_now() + Duration::from_millis(30);
        sleep_until(deadline).await;
        assert!(boot_now() >= deadline);
        // A deadline in the past returns at once.
        sleep_until(Instant::from_origin(Duration::from_secs(1))).await;
    }
}
