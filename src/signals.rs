//! The signals s3lead catches, and what each one asks of it: one list ([`CAUGHT`]) that
//! `run` listens to, that the guard (`supervise/guard.rs`) ignores so that the watchdog
//! outlives the command, and that `check` can wait on for a shutdown.
//!
//! Every caught signal means one of two things ([`Delivery`]): **shutdown** (TERM, INT:
//! systemd's stop, Ctrl-C), which the stop policy (`stop.rs`) turns into the stop signal
//! to every process of the command and, the second time, SIGKILL; or **forward**, a
//! signal meant for the job, which goes to the command's process group as tini does.
//! Before there is a command (while waiting for the lock), a shutdown ends the wait, and
//! so do HUP and QUIT, which would have ended s3lead without a handler; a forwarded
//! signal with no command to receive it is dropped.
//!
//! The set is narrower than tini's, which forwards every signal that is not synchronous.
//! s3lead leaves out, on purpose:
//! - SIGILL, SIGFPE, SIGSEGV, SIGBUS, SIGABRT, SIGTRAP, SIGSYS: faults of s3lead itself
//!   (tini leaves them out too);
//! - SIGCHLD: the guard's and s3lead's own reaping;
//! - SIGPIPE, SIGURG, SIGIO, SIGXCPU, SIGXFSZ, SIGPROF, SIGVTALRM, SIGALRM: raised for
//!   s3lead's own sockets, files, limits and timers; forwarding them would hand the
//!   command a signal about s3lead's connection to the store;
//! - SIGTSTP, SIGTTIN, SIGTTOU, SIGCONT: job control stays with s3lead. Ctrl-Z stops
//!   s3lead itself, whose lease then runs out under the guard's watchdog; forwarded, it
//!   would stop the command while s3lead renews the lease for it, and hold the lock for a
//!   job that does nothing, for as long as nobody types `fg` (on a terminal, Ctrl-Z
//!   reaches the command first, as its group has the terminal, and the guard then stops
//!   s3lead with it: `supervise/terminal.rs`);
//! - realtime signals: no daemon we know takes orders on them, and glibc reserves the
//!   first few for its threads.

use nix::sys::signal::Signal;
use std::future::poll_fn;
use std::task::Poll;
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};

/// What a signal caught by s3lead asks of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Stop the command (the stop signal, then SIGKILL on a second one), release the
    /// lease and exit; before the command runs, stop waiting for the lock.
    Shutdown(Signal),
    /// The signal is meant for the command: forward it to its process group.
    Forward(Signal),
}

impl Delivery {
    /// What `sig` means to s3lead. A signal outside [`CAUGHT`] is never delivered; it
    /// would count as one to forward.
    pub fn of(sig: Signal) -> Delivery {
        match rule(sig) {
            Some(r) if r.shutdown => Delivery::Shutdown(sig),
            _ => Delivery::Forward(sig),
        }
    }

    /// The signal itself.
    pub fn signal(self) -> Signal {
        match self {
            Delivery::Shutdown(s) | Delivery::Forward(s) => s,
        }
    }

    /// Whether it ends a wait that has no command to forward to: a shutdown, or a HUP
    /// or QUIT, whose default is to end the process.
    pub fn ends_wait(self) -> bool {
        rule(self.signal()).is_some_and(|r| r.ends_wait)
    }
}

/// One caught signal and what it means.
struct Rule {
    signal: Signal,
    /// A shutdown (else: forwarded to the command).
    shutdown: bool,
    /// Ends the wait for the lock, when there is no command yet.
    ends_wait: bool,
}

const RULES: [Rule; 7] = [
    Rule {
        signal: Signal::SIGTERM,
        shutdown: true,
        ends_wait: true,
    },
    Rule {
        signal: Signal::SIGINT,
        shutdown: true,
        ends_wait: true,
    },
    Rule {
        signal: Signal::SIGHUP,
        shutdown: false,
        ends_wait: true,
    },
    Rule {
        signal: Signal::SIGQUIT,
        shutdown: false,
        ends_wait: true,
    },
    Rule {
        signal: Signal::SIGUSR1,
        shutdown: false,
        ends_wait: false,
    },
    Rule {
        signal: Signal::SIGUSR2,
        shutdown: false,
        ends_wait: false,
    },
    Rule {
        signal: Signal::SIGWINCH,
        shutdown: false,
        ends_wait: false,
    },
];

/// Every signal s3lead catches (and its guard ignores).
pub const CAUGHT: [Signal; RULES.len()] = {
    let mut out = [Signal::SIGTERM; RULES.len()];
    let mut i = 0;
    while i < RULES.len() {
        out[i] = RULES[i].signal;
        i += 1;
    }
    out
};

fn rule(sig: Signal) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.signal == sig)
}

/// The caught signals, as they arrive. Listening starts at [`Signals::listen`]: from then
/// on none of them has its default effect on this process.
pub struct Signals {
    streams: Vec<(Signal, SignalStream)>,
}

impl Signals {
    /// Starts catching every signal of [`CAUGHT`]. Needs a tokio runtime.
    pub fn listen() -> std::io::Result<Signals> {
        let streams = CAUGHT
            .iter()
            .map(|&sig| Ok((sig, signal(SignalKind::from_raw(sig as i32))?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Signals { streams })
    }

    /// The next caught signal. Cancel-safe: a signal that arrives while nobody waits is
    /// kept for the next call.
    pub async fn recv(&mut self) -> Delivery {
        poll_fn(|cx| {
            for (sig, stream) in &mut self.streams {
                // `None` only once the runtime is shutting down: nothing more will come.
                if let Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return Poll::Ready(Delivery::of(*sig));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Waits for a signal that ends a wait ([`Delivery::ends_wait`]), dropping the ones
    /// meant for a command, and returns it: for work that has no command to forward to.
    pub async fn shutdown(&mut self) -> Signal {
        loop {
            let d = self.recv().await;
            if d.ends_wait() {
                return d.signal();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_and_int_shut_down_and_the_rest_is_forwarded() {
        assert_eq!(
            Delivery::of(Signal::SIGTERM),
            Delivery::Shutdown(Signal::SIGTERM)
        );
        assert_eq!(
            Delivery::of(Signal::SIGINT),
            Delivery::Shutdown(Signal::SIGINT)
        );
        for sig in [
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGWINCH,
        ] {
            assert_eq!(Delivery::of(sig), Delivery::Forward(sig));
        }
    }

    #[test]
    fn only_what_would_end_s3lead_ends_the_wait() {
        let ends: Vec<Signal> = CAUGHT
            .into_iter()
            .filter(|&s| Delivery::of(s).ends_wait())
            .collect();
        assert_eq!(
            ends,
            [
                Signal::SIGTERM,
                Signal::SIGINT,
                Signal::SIGHUP,
                Signal::SIGQUIT
            ]
        );
    }

    #[test]
    fn the_list_has_no_job_control_and_no_own_signals() {
        for sig in [
            Signal::SIGCHLD,
            Signal::SIGPIPE,
            Signal::SIGTSTP,
            Signal::SIGCONT,
            Signal::SIGALRM,
            Signal::SIGKILL,
        ] {
            assert!(!CAUGHT.contains(&sig), "{sig}");
        }
    }
}
