//! The child of docs/design.md §4: the command, everything it starts, and the guard that holds
//! them. This room touches no store; `supervisor.rs` joins it to the lease, and the stop
//! policy (`stop.rs`) says when to signal.
//!
//! ```text
//! s3lead run                  renews the lease, drives the stop policy
//!   └─ s3lead-guard           forked at start; own process group, subreaper, watchdog
//!        └─ the command       own process group, PR_SET_PDEATHSIG = SIGKILL
//!             └─ descendants  whatever they do to their group or session
//! ```
//!
//! Why the guard sits between s3lead and the command, and not beside it:
//! - **The deadline has a floor that nothing in s3lead can stall.** s3lead hands the
//!   guard every new `valid_until`; the guard arms a `CLOCK_BOOTTIME` timerfd and, when
//!   it passes, SIGKILLs every descendant, whether s3lead is blocked on a write, stopped
//!   by SIGSTOP, panicked or killed. s3lead's own stop sequence runs first.
//! - **Every descendant, not the process group.** The guard is a child subreaper, so a
//!   descendant whose parent exits is reparented to the guard and never to init: its
//!   subtree, walked by parentage in `/proc` (`tree.rs`), is every process the command
//!   started, whatever `setsid`/`setpgid` they called (GNU `timeout`, `set -m` shells,
//!   sudo with `use_pty`). A cgroup would kill a tree atomically, but only where the host
//!   delegates one (systemd `Delegate=yes`); parentage works everywhere, and the kill is
//!   repeated until nothing is left, which a process being SIGKILLed cannot outrun.
//! - **`kill -9` of s3lead**: the guard sees end-of-file on its control pipe and kills
//!   its whole subtree. PDEATHSIG alone would not do: it does not survive `fork`, and a
//!   setuid exec clears it.
//! - **The guard dies** (OOM killer): the command dies of PDEATHSIG; what it left is
//!   reparented to s3lead (a subreaper too), which sees end-of-file on the report pipe,
//!   kills and reaps the rest itself, and ends the run.
//!
//! The guard reaps the command and reports its exit status, and "gone" once it has no
//! child left. A descendant this user may not signal (a setuid program that kept its
//! privileges) cannot be stopped by s3lead or its guard: it is reported by pid, the
//! lease is kept (renewed) while it lives, and the run cannot end before it does.
//!
//! Stop signals go to every descendant and are followed by SIGCONT (as systemd does);
//! other forwarded signals go to the command's process group, as tini does.

pub mod guard;
pub mod terminal;
pub mod tree;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};
use s3lead::clock::Instant;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};

/// What to run.
#[derive(Clone, Debug)]
pub enum Program {
    /// argv, executed directly (no shell).
    Argv(Vec<OsString>),
    /// A command line for `$SHELL -c` (default `/bin/sh`).
    Shell(String),
}

pub use s3lead::stop::ChildExit;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{program}: command not found")]
    NotFound { program: String },
    #[error("{program}: cannot run the command: {source}")]
    CannotRun {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot set up supervision: {0}")]
    Setup(String),
}

impl SpawnError {
    /// 127 for a command that does not exist, 126 for one that cannot be run, as shells do.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotFound { .. } => 127,
            SpawnError::CannotRun { .. } => 126,
            SpawnError::Setup(_) => s3lead::exit::OS_ERROR,
        }
    }
}

/// Makes s3lead the reaper of its descendants' orphans (the guard's, should it die).
/// Call once, before spawning.
pub fn become_subreaper() -> Result<(), SpawnError> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| SpawnError::Setup(format!("PR_SET_CHILD_SUBREAPER: {e}")))
}

/// What the supervised command did, as the guard reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeEvent {
    /// The command itself exited; its descendants may live on.
    ChildExited(ChildExit),
    /// The watchdog's deadline passed: the guard is killing everything.
    WatchdogFired,
    /// No process of the command is left.
    Gone,
    /// The guard died (OOM killer, `kill -9`): PDEATHSIG killed the command, and what
    /// it left behind was reparented to s3lead, which must now end it.
    GuardLost(String),
}

/// A supervised command: the guard process, the command under it, and every descendant.
pub struct Supervised {
    guard_pid: Pid,
    child_pid: Pid,
    /// The pipes to and from the guard; `None` once handed back ([`Supervised::recycle`]).
    ctl: Option<tokio::net::unix::pipe::Sender>,
    reports: Option<LineReader>,
    sigchld: SignalStream,
    /// The guard is gone: s3lead reaps and kills what is left itself.
    orphaned: bool,
    gone: bool,
    finished: bool,
    /// Descendants reported once as impossible to signal.
    refused: std::collections::HashSet<Pid>,
}

/// The guard, forked while s3lead is one thread and waiting to be told what to start
/// (`guard.rs` says why it is forked early rather than spawned when the lease is won).
/// Dropped without starting anything, it sees end-of-file and exits.
#[derive(Debug)]
pub struct Standby {
    pid: Pid,
    /// The control pipe's write end.
    ctl: OwnedFd,
    /// The report pipe's read end.
    reports: OwnedFd,
}

impl Standby {
    /// Forks the guard. Call it while the process has one thread only, before logging or
    /// the runtime start theirs: the child runs ordinary Rust code after the fork, which
    /// only a one-thread parent makes sound.
    pub fn fork() -> std::io::Result<Standby> {
        let flags = OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let (ctl_r, ctl_w) = pipe2(flags)?;
        let (rep_r, rep_w) = pipe2(flags)?;
        // SAFETY: the caller guarantees that no other thread exists (see above), so the
        // child inherits no lock another thread held, and may allocate and format.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                // s3lead's ends are closed, so that end-of-file reaches each side when
                // the other is gone.
                drop((ctl_w, rep_r));
                std::process::exit(guard::standby(ctl_r, rep_w));
            }
            nix::unistd::ForkResult::Parent { child } => Ok(Standby {
                pid: child,
                ctl: ctl_w,
                reports: rep_r,
            }),
        }
    }
}

impl Supervised {
    /// Tells the guard to spawn `program` under it with `env` added after every inherited
    /// `S3LEAD_*` variable is removed, and waits for it to say whether the command
    /// started. The watchdog holds `deadline` before the command exists.
    pub async fn spawn(
        guard: Standby,
        program: &Program,
        env: &[(String, String)],
        deadline: Instant,
    ) -> Result<Self, SpawnError> {
        let setup =
            |what: &str, e: &dyn std::fmt::Display| SpawnError::Setup(format!("{what}: {e}"));
        // SIGCHLD is listened to before the command exists, so its death cannot be missed.
        let sigchld = signal(SignalKind::child()).map_err(|e| setup("SIGCHLD handler", &e))?;
        let argv: Vec<OsString> = match program {
            Program::Argv(argv) => argv.clone(),
            Program::Shell(line) => {
                let shell = std::env::var_os("SHELL")
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "/bin/sh".into());
                vec![shell, "-c".into(), line.into()]
            }
        };
        if argv.is_empty() {
            return Err(SpawnError::Setup("no command given".into()));
        }
        let Standby { pid, ctl, reports } = guard;
        let mut ctl = tokio::net::unix::pipe::Sender::from_owned_fd(ctl)
            .map_err(|e| setup("guard pipe", &e))?;
        let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(reports)
            .map_err(|e| setup("guard pipe", &e))?;
        let start = guard::Start {
            deadline_ns: nanos(deadline),
            argv: argv.clone(),
            env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        };
        if ctl.write_all(&start.encode()).await.is_err() {
            // Killed while s3lead waited for the lock.
            return Err(SpawnError::Setup(format!(
                "the guard process is gone ({})",
                exit_of(pid)
            )));
        }
        let mut sup = Supervised {
            guard_pid: pid,
            child_pid: pid,
            ctl: Some(ctl),
            reports: Some(LineReader::new(receiver)),
            sigchld,
            orphaned: false,
            gone: false,
            finished: false,
            refused: Default::default(),
        };
        sup.started(&argv).await.map(|()| sup)
    }

    /// Waits for the guard's first report: the command started, or why it did not.
    async fn started(&mut self, argv: &[OsString]) -> Result<(), SpawnError> {
        let guard_pid = self.guard_pid;
        match self.next_report().await {
            Some(line) => match guard::Report::parse(&line) {
                Some(guard::Report::Started(pid)) => {
                    self.child_pid = pid;
                    Ok(())
                }
                Some(guard::Report::SpawnFailed { not_found, message }) => {
                    self.finish();
                    let program = argv[0].to_string_lossy().into_owned();
                    Err(if not_found {
                        SpawnError::NotFound { program }
                    } else {
                        SpawnError::CannotRun {
                            program,
                            source: std::io::Error::other(message),
                        }
                    })
                }
                _ => Err(SpawnError::Setup(format!(
                    "the guard process said {line:?}"
                ))),
            },
            None => {
                let _ = waitpid(guard_pid, None);
                Err(SpawnError::Setup(
                    "the guard process exited before starting the command".into(),
                ))
            }
        }
    }

    /// The command's pid (also its process group).
    pub fn pid(&self) -> Pid {
        self.child_pid
    }

    /// Hands the watchdog a new deadline (boot-time clock).
    pub fn watchdog(&mut self, deadline: Instant) {
        self.tell(&format!("deadline {}\n", nanos(deadline)));
    }

    /// Sends `sig` to every process of the command (its group, then every descendant,
    /// wherever its group or session), then SIGCONT so a stopped process can act on it,
    /// as systemd does. Returns the processes that may not be signalled, once each.
    pub fn stop(&mut self, sig: Signal) -> Vec<Pid> {
        let refused = self.signal_everything(sig);
        if sig != Signal::SIGKILL && sig != Signal::SIGCONT {
            self.signal_everything(Signal::SIGCONT);
        }
        self.newly_refused(refused)
    }

    /// SIGKILL to every process of the command; the guard keeps killing until nothing is
    /// left.
    pub fn kill(&mut self) -> Vec<Pid> {
        let refused = self.signal_everything(Signal::SIGKILL);
        self.tell("kill\n");
        self.newly_refused(refused)
    }

    /// Forwards `sig` to the command's process group (tini's semantics for signals that
    /// are not a stop: a HUP or USR1 is for the job, not for what it detached).
    pub fn forward(&self, sig: Signal) {
        match killpg(self.child_pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!("cannot send {sig} to process group {}: {e}", self.child_pid),
        }
    }

    fn root(&self) -> Pid {
        if self.orphaned {
            nix::unistd::getpid()
        } else {
            self.guard_pid
        }
    }

    /// Signals the group, then every descendant outside it; returns those this user may
    /// not signal.
    fn signal_everything(&self, sig: Signal) -> Vec<Pid> {
        if self.gone {
            return Vec::new();
        }
        // The command's group at once (tini's way), then whatever left it, each once.
        let skip = killpg(self.child_pid, sig).ok().map(|()| self.child_pid);
        tree::signal_all(self.root(), sig, skip).refused
    }

    /// The processes of `refused` not reported before.
    fn newly_refused(&mut self, refused: Vec<Pid>) -> Vec<Pid> {
        refused
            .into_iter()
            .filter(|p| self.refused.insert(*p))
            .collect()
    }

    /// A line to the guard. The pipe is non-blocking: s3lead never waits on its guard.
    /// A full pipe (the guard stopped for long) drops the line, which can only make the
    /// guard's deadline earlier than the lease's, never later.
    fn tell(&mut self, line: &str) {
        if self.orphaned {
            return;
        }
        if let Some(ctl) = &self.ctl {
            let _ = ctl.try_write(line.as_bytes());
        }
    }

    /// The next thing the command did. Cancel-safe: call it again after a `select!`.
    pub async fn next(&mut self) -> TreeEvent {
        if self.gone {
            // Nothing is left to report (and the guard, told "done", exits).
            return std::future::pending().await;
        }
        loop {
            if self.orphaned {
                if let Some(e) = self.reap_orphans() {
                    return e;
                }
                tokio::select! {
                    _ = self.sigchld.recv() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
            // Only the guard holds the write end of the report pipe (close-on-exec keeps
            // it from the command): end-of-file means the guard is gone.
            match self.next_report().await {
                Some(line) => match guard::Report::parse(&line) {
                    Some(guard::Report::Exited(e)) => return TreeEvent::ChildExited(e),
                    Some(guard::Report::Watchdog) => return TreeEvent::WatchdogFired,
                    Some(guard::Report::Gone) => {
                        self.gone = true;
                        return TreeEvent::Gone;
                    }
                    _ => {}
                },
                None => return self.guard_died(),
            }
        }
    }

    /// The guard's next report line; `None` once its pipe is closed.
    async fn next_report(&mut self) -> Option<String> {
        match self.reports.as_mut() {
            Some(r) => r.next_line().await,
            None => None,
        }
    }

    fn guard_died(&mut self) -> TreeEvent {
        self.orphaned = true;
        TreeEvent::GuardLost(exit_of(self.guard_pid))
    }

    /// Without a guard, the command's leftovers are s3lead's children (it is their
    /// subreaper): reap them, and report when none is left. Any child, as the guard
    /// reaps (`guard.rs`, `Guard::reap`, says why): ECHILD is the proof that nothing is
    /// left.
    fn reap_orphans(&mut self) -> Option<TreeEvent> {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return None,
                Ok(_) => continue,
                Err(Errno::ECHILD) => {
                    if self.gone {
                        return None;
                    }
                    self.gone = true;
                    return Some(TreeEvent::Gone);
                }
                Err(_) => return None,
            }
        }
    }

    /// Everything is gone: the guard can stand down.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if !self.orphaned {
            self.tell("done\n");
            // Reaped if it has exited already; otherwise it exits on its own, and s3lead
            // never waits on it (a guard stopped by someone must not hold the release).
            let _ = waitpid(self.guard_pid, Some(WaitPidFlag::WNOHANG));
        }
    }

    /// Nothing of the command is left and the lease is kept to start it again
    /// (`--quorum`): the guard goes back to waiting for a command, as at the start.
    /// `None` if the guard is gone, or the command is not.
    pub fn recycle(mut self) -> Option<Standby> {
        if self.orphaned || !self.gone || self.finished {
            return None;
        }
        self.tell("again\n");
        self.finished = true;
        let ctl = self.ctl.take()?.into_nonblocking_fd().ok()?;
        let reports = self.reports.take()?.pipe.into_nonblocking_fd().ok()?;
        Some(Standby {
            pid: self.guard_pid,
            ctl,
            reports,
        })
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Leaving without `finish` (an error path): nothing of the command may survive
        // us. Closing the control pipe makes the guard kill whatever is left.
        if !self.finished && !self.gone {
            self.signal_everything(Signal::SIGKILL);
        }
    }
}

/// How the guard ended, waiting for it: it is gone or going (its pipe closed).
fn exit_of(guard: Pid) -> String {
    match waitpid(guard, None) {
        Ok(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
        Ok(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => e.to_string(),
    }
}

fn nanos(t: Instant) -> u64 {
    u64::try_from(t.since_origin().as_nanos()).unwrap_or(u64::MAX)
}

/// Lines from the guard's report pipe.
struct LineReader {
    pipe: tokio::net::unix::pipe::Receiver,
    buf: Vec<u8>,
    eof: bool,
}

impl LineReader {
    fn new(pipe: tokio::net::unix::pipe::Receiver) -> LineReader {
        LineReader {
            pipe,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// The next whole line; `None` at end-of-file. Cancel-safe: bytes read stay in the
    /// buffer.
    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(line) = guard::take_line(&mut self.buf) {
                return Some(line);
            }
            if self.eof {
                return None;
            }
            let mut chunk = [0u8; 512];
            match self.pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Parses a signal as `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("unknown signal number {n}"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("unknown signal {s:?} (examples: TERM, INT, HUP, KILL, 15)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signals_by_name_and_number() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigint"), Ok(Signal::SIGINT));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
        assert!(parse_signal("FOO").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(ChildExit::Code(3).code(), 3);
        assert_eq!(ChildExit::Signaled(Signal::SIGKILL).code(), 137);
    }
}
