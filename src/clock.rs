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
///
/// The clock is read by a raw system call, not through libc: a preloaded library that
/// fakes time (libfaketime) must not move the instants the lease is measured in, nor
/// shift them differently from the timers armed on them ([`arm_boot_timer`]).
pub fn boot_now() -> Instant {
    let read = |clock: libc::clockid_t| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::syscall(libc::SYS_clock_gettime, clock, &mut ts) };
        (rc == 0).then_some(ts)
    };
    let ts = read(libc::CLOCK_BOOTTIME)
        .or_else(|| read(libc::CLOCK_MONOTONIC))
        .unwrap_or(libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
    Instant(Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    ))
}

/// Arms the `CLOCK_BOOTTIME` timerfd `fd` to fire once at the boot-clock instant `at`
/// (absolute), by a raw system call.
///
/// Not through libc, which a preloaded library may wrap: libfaketime, even with
/// `DONT_FAKE_MONOTONIC=1`, leaves `clock_gettime(CLOCK_BOOTTIME)` alone but shifts the
/// absolute deadline of `timerfd_settime` by its fake offset. Under `faketime -f -1h`
/// every timer of s3lead would then fire an hour late: the leader stops renewing and the
/// watchdog lets the command outlive its lease. An all-zero `at` would disarm the timer;
/// it is raised to one nanosecond (the origin is long past anyway).
pub fn arm_boot_timer(fd: std::os::fd::BorrowedFd<'_>, at: Instant) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let at = at.0.max(Duration::from_nanos(1));
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: libc::time_t::try_from(at.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(at.subsec_nanos() as i32),
        },
    };
    // SAFETY: `spec` is a valid itimerspec; a null old value is allowed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_timerfd_settime,
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut::<libc::itimerspec>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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
    use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
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
    arm_boot_timer(fd.as_fd(), deadline)?;
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
