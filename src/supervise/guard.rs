//! The guard process: the parent of the command, the reaper of every descendant, and the
//! watchdog of the lease's deadline. It runs no async runtime and does nothing but wait
//! in `poll(2)`.
//!
//! It is forked at the very start of `s3lead run` ([`super::Standby::fork`]), while
//! s3lead is still one thread, and waits there for the command: a fork of a process with
//! one thread may run any code, where the child of a threaded process may only call
//! async-signal-safe functions until it execs. Forking early spares an exec and a start of
//! the whole binary (its loading, relocation and argument parsing) at the moment the lease
//! is won. Until then it waits on its control pipe for `start` (the first deadline, the
//! command, its environment); end-of-file means s3lead ended without running one.
//!
//! With the command running it waits on three things:
//!
//! - its control pipe from s3lead: `deadline <boot-ns>` re-arms the watchdog, `kill`
//!   starts killing, `done` ends the guard; end-of-file means s3lead died (`kill -9`,
//!   a panic): kill everything;
//! - a `CLOCK_BOOTTIME` timerfd armed at the deadline: when it fires, kill everything,
//!   whatever s3lead is doing (blocked on a write, stopped, wedged);
//! - SIGCHLD (signal-hook's self-pipe): reap, report the command's exit status, and
//!   report `gone` once no child is left.
//!
//! "Kill everything" is SIGKILL to every descendant found by parentage (`tree.rs`),
//! repeated every few milliseconds until the guard has no child left; as a subreaper it
//! inherits every orphan of its subtree, so nothing can leave it by exiting its parent.
//!
//! The guard ignores every signal s3lead catches ([`s3lead::signals::CAUGHT`]), so a
//! signal meant for the job, or systemd's SIGTERM to the whole unit, cannot take the
//! watchdog away before the command is gone; the command gets them back at their
//! defaults. It never writes to stderr, which may be the blocked pipe that stalled
//! s3lead: its reports go through a non-blocking pipe of its own. Its process name is
//! [`NAME`] (`ps -o comm`, `/proc/PID/comm`).
//!
//! On a terminal, the guard also hands the terminal to the command's group and back, and
//! turns the command's Ctrl-Z into s3lead's (`terminal.rs`).

use super::ChildExit;
use super::terminal::Terminal;
use super::tree;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, Signal, signal as set_handler};
use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use s3lead::signals::CAUGHT;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// The guard's process name, as `ps -o comm` shows it.
pub const NAME: &str = "s3lead-guard";

/// How often the guard walks and kills again while something is left.
const KILL_EVERY: Duration = Duration::from_millis(10);

/// How often the guard looks whether a stopped s3lead runs again, after a Ctrl-Z.
const SUSPENDED_EVERY: Duration = Duration::from_millis(50);

/// What the guard tells s3lead, one line each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Started(Pid),
    SpawnFailed { not_found: bool, message: String },
    Exited(ChildExit),
    Watchdog,
    Gone,
}

impl Report {
    fn line(&self) -> String {
        match self {
            Report::Started(pid) => format!("started {pid}\n"),
            Report::SpawnFailed { not_found, message } => {
                let kind = if *not_found { "notfound" } else { "cannot" };
                format!("spawn-failed {kind} {}\n", message.replace('\n', " "))
            }
            Report::Exited(ChildExit::Code(c)) => format!("exit code {c}\n"),
            Report::Exited(ChildExit::Signaled(s)) => format!("exit signal {}\n", *s as i32),
            Report::Watchdog => "watchdog\n".into(),
            Report::Gone => "gone\n".into(),
        }
    }

    pub fn parse(line: &str) -> Option<Report> {
        let mut words = line.splitn(3, ' ');
        match (words.next()?, words.next(), words.next()) {
            ("started", Some(pid), None) => Some(Report::Started(Pid::from_raw(pid.parse().ok()?))),
            ("spawn-failed", Some(kind), message) => Some(Report::SpawnFailed {
                not_found: kind == "notfound",
                message: message.unwrap_or_default().to_owned(),
            }),
            ("exit", Some("code"), Some(c)) => {
                Some(Report::Exited(ChildExit::Code(c.parse().ok()?)))
            }
            ("exit", Some("signal"), Some(n)) => Some(Report::Exited(ChildExit::Signaled(
                Signal::try_from(n.parse::<i32>().ok()?).ok()?,
            ))),
            ("watchdog", None, None) => Some(Report::Watchdog),
            ("gone", None, None) => Some(Report::Gone),
            _ => None,
        }
    }
}

/// The first whole line of `buf`, taken out of it (the pipes between s3lead and its guard
/// carry lines, read in whatever chunks the kernel hands over).
pub(super) fn take_line(buf: &mut Vec<u8>) -> Option<String> {
    let i = buf.iter().position(|&b| b == b'\n')?;
    let line: Vec<u8> = buf.drain(..=i).collect();
    Some(String::from_utf8_lossy(&line[..i]).into_owned())
}

/// What s3lead tells a waiting guard to start: the watchdog's first deadline, the
/// command, and the environment variables to set after every inherited `S3LEAD_*` one is
/// removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    pub deadline_ns: u64,
    pub argv: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
}

impl Start {
    /// `start DEADLINE LEN\n` and LEN bytes of NUL-terminated fields, `a` and an argument
    /// or `e` and `KEY=VALUE` (neither can hold a NUL, so the framing is exact).
    pub fn encode(&self) -> Vec<u8> {
        let mut fields = Vec::new();
        for a in &self.argv {
            fields.push(b'a');
            fields.extend_from_slice(a.as_bytes());
            fields.push(0);
        }
        for (k, v) in &self.env {
            fields.push(b'e');
            fields.extend_from_slice(k.as_bytes());
            fields.push(b'=');
            fields.extend_from_slice(v.as_bytes());
            fields.push(0);
        }
        let mut msg = format!("start {} {}\n", self.deadline_ns, fields.len()).into_bytes();
        msg.extend_from_slice(&fields);
        msg
    }

    /// The message at the front of `buf`, taken out of it once it is whole: `None` while
    /// more bytes are needed, `Some(Err)` for bytes that are no start message.
    pub fn take(buf: &mut Vec<u8>) -> Option<Result<Start, ()>> {
        let nl = buf.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&buf[..nl]).map_err(drop);
        let parsed = header.and_then(|h| {
            let mut words = h.split(' ');
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("start"), Some(d), Some(n), None) => Ok((
                    d.parse::<u64>().map_err(drop)?,
                    n.parse::<usize>().map_err(drop)?,
                )),
                _ => Err(()),
            }
        });
        let (deadline_ns, len) = match parsed {
            Ok(p) => p,
            Err(()) => return Some(Err(())),
        };
        if buf.len() < nl + 1 + len {
            return None;
        }
        let fields: Vec<u8> = buf.drain(..nl + 1 + len).skip(nl + 1).collect();
        let mut start = Start {
            deadline_ns,
            argv: Vec::new(),
            env: Vec::new(),
        };
        for field in fields.split(|&b| b == 0).filter(|f| !f.is_empty()) {
            let (kind, rest) = field.split_at(1);
            match kind {
                b"a" => start.argv.push(OsStr::from_bytes(rest).to_owned()),
                b"e" => {
                    let eq = rest.iter().position(|&b| b == b'=');
                    let Some(eq) = eq else { return Some(Err(())) };
                    start.env.push((
                        OsStr::from_bytes(&rest[..eq]).to_owned(),
                        OsStr::from_bytes(&rest[eq + 1..]).to_owned(),
                    ));
                }
                _ => return Some(Err(())),
            }
        }
        Some(Ok(start))
    }
}

/// The guard's whole life, from the fork: wait for `start` on `ctl`, then run the command
/// and guard it, reporting on `report`; after `again` (the command is gone, and s3lead
/// keeps its lease to start it again: `--quorum`), wait for the next `start`. Returns the
/// guard's exit status.
pub fn standby(ctl: OwnedFd, report: OwnedFd) -> i32 {
    for sig in CAUGHT {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { set_handler(sig, SigHandler::SigIgn) };
    }
    // Its own group: a Ctrl-C on the terminal reaches s3lead (which forwards it), not
    // the guard, which must outlive everything it guards.
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    if let Ok(name) = std::ffi::CString::new(NAME) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let mut guard = match Guard::new(ctl, report) {
        Ok(g) => g,
        Err(_) => return s3lead::exit::OS_ERROR,
    };
    loop {
        let start = match guard.wait_start() {
            Ok(start) => start,
            Err(code) => return code,
        };
        if guard.arm(start.deadline_ns).is_err() {
            return s3lead::exit::OS_ERROR;
        }
        guard.terminal = Terminal::detect();
        guard.spawn(&start);
        match guard.run() {
            Ran::Done => return 0,
            Ran::Again => guard.reset(),
        }
    }
}

/// How a guarded run ended.
enum Ran {
    /// The guard's work is over (`done`, or s3lead is gone and so is everything).
    Done,
    /// s3lead keeps the lease and will send another `start`.
    Again,
}

struct Guard {
    ctl: OwnedFd,
    report: OwnedFd,
    timer: TimerFd,
    sigchld: UnixStream,
    child: Option<Pid>,
    child_exited: bool,
    killing: bool,
    /// s3lead is gone (end-of-file on the control pipe).
    orphaned: bool,
    gone: bool,
    ctl_buf: Vec<u8>,
    /// The terminal s3lead was in the foreground of, if any.
    terminal: Option<Terminal>,
    /// The command stopped on a terminal (Ctrl-Z), and s3lead was sent SIGTSTP; `true`
    /// once s3lead was seen stopped, so that it is continued only after `fg` or `bg`.
    suspended: Option<bool>,
}

impl Guard {
    fn new(ctl: OwnedFd, report: OwnedFd) -> std::io::Result<Guard> {
        nix::sys::prctl::set_child_subreaper(true)?;
        let (sigchld, sigchld_w) = UnixStream::pair()?;
        sigchld.set_nonblocking(true)?;
        sigchld_w.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGCHLD, sigchld_w)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_BOOTTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Guard {
            ctl,
            report,
            timer,
            sigchld,
            child: None,
            child_exited: false,
            killing: false,
            orphaned: false,
            gone: false,
            ctl_buf: Vec::new(),
            terminal: None,
            suspended: None,
        })
    }

    /// Waits for the next `start` on the control pipe (what came after it stays for the
    /// run loop); `Err` with the guard's exit status when s3lead ended without one.
    fn wait_start(&mut self) -> Result<Start, i32> {
        loop {
            match Start::take(&mut self.ctl_buf) {
                Some(Ok(start)) => return Ok(start),
                Some(Err(())) => return Err(s3lead::exit::INTERNAL),
                None => {}
            }
            let mut fds = [PollFd::new(self.ctl.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return Err(s3lead::exit::OS_ERROR),
            }
            let mut chunk = [0u8; 4096];
            match nix::unistd::read(self.ctl.as_fd(), &mut chunk) {
                // s3lead ended without a command to run (busy, interrupted, an error).
                Ok(0) => return Err(0),
                Ok(n) => self.ctl_buf.extend_from_slice(&chunk[..n]),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => return Err(s3lead::exit::OS_ERROR),
            }
        }
    }

    /// Back to waiting for a `start`, after `again`: nothing of the command is left.
    fn reset(&mut self) {
        let _ = self.timer.unset();
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(self.timer.as_fd(), &mut buf);
        self.child = None;
        self.child_exited = false;
        self.killing = false;
        self.gone = false;
        self.terminal = None;
        self.suspended = None;
    }

    fn arm(&self, deadline_ns: u64) -> std::io::Result<()> {
        // By raw system call: a time-faking preload must not move the watchdog.
        s3lead::clock::arm_boot_timer(
            self.timer.as_fd(),
            s3lead::clock::Instant::from_origin(Duration::from_nanos(deadline_ns)),
        )
    }

    fn tell(&self, r: &Report) {
        // Non-blocking: a stopped s3lead must not stop its watchdog.
        let _ = nix::unistd::write(&self.report, r.line().as_bytes());
    }

    fn spawn(&mut self, start: &Start) {
        let failed = |message: &str| Report::SpawnFailed {
            not_found: false,
            message: message.into(),
        };
        let Some((first, rest)) = start.argv.split_first() else {
            self.tell(&failed("no command given"));
            self.child_exited = true;
            self.gone = true;
            return;
        };
        if s3lead::clock::boot_now().since_origin() >= Duration::from_nanos(start.deadline_ns) {
            // s3lead was held up between winning the lease and this message: the lease
            // may be someone else's by now.
            self.tell(&failed("the lease ended before the command could start"));
            self.child_exited = true;
            self.gone = true;
            return;
        }
        let mut cmd = std::process::Command::new(first);
        cmd.args(rest).process_group(0);
        for (k, _) in std::env::vars_os() {
            if k.as_bytes().starts_with(b"S3LEAD_") {
                cmd.env_remove(&k);
            }
        }
        cmd.envs(start.env.iter().map(|(k, v)| (k, v)));
        let guard_pid = nix::unistd::getpid();
        let on_terminal = self.terminal.is_some();
        // SAFETY: between fork and exec this calls only signal, prctl, getppid, getpgrp
        // and tcsetpgrp, all async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || {
                for sig in CAUGHT {
                    set_handler(sig, SigHandler::SigDfl).map_err(std::io::Error::from)?;
                }
                if on_terminal {
                    Terminal::take_in_child();
                }
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                // The guard may have died between fork and prctl: then nobody would send
                // the death signal, so do not run at all.
                if nix::unistd::getppid() != guard_pid {
                    return Err(std::io::Error::other(
                        "the guard exited before the command started",
                    ));
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                // Reaped here by pid, with the orphans: the std handle is not waited on.
                drop(child);
                if let Some(terminal) = &self.terminal {
                    terminal.give_to(pid);
                }
                self.child = Some(pid);
                self.tell(&Report::Started(pid));
            }
            Err(e) => {
                self.tell(&Report::SpawnFailed {
                    not_found: e.kind() == std::io::ErrorKind::NotFound,
                    message: e.to_string(),
                });
                self.child_exited = true;
                self.gone = true;
            }
        }
    }

    fn run(&mut self) -> Ran {
        loop {
            if self.killing {
                tree::signal_all(nix::unistd::getpid(), Signal::SIGKILL, None);
            }
            self.reap();
            if self.gone && (self.orphaned || self.child.is_none()) {
                return Ran::Done;
            }
            self.follow_suspension();
            let timeout = if self.killing && !self.gone {
                PollTimeout::try_from(KILL_EVERY).unwrap_or(PollTimeout::ZERO)
            } else if self.suspended.is_some() {
                // s3lead's stop and continue send the guard nothing: look again soon.
                PollTimeout::try_from(SUSPENDED_EVERY).unwrap_or(PollTimeout::ZERO)
            } else {
                PollTimeout::NONE
            };
            let (ctl_ready, timer_ready, chld_ready) = {
                let mut fds = [
                    PollFd::new(self.ctl.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.timer.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.sigchld.as_fd(), PollFlags::POLLIN),
                ];
                if self.orphaned {
                    // A closed pipe stays readable forever: stop polling it.
                    fds[0] = PollFd::new(self.timer.as_fd(), PollFlags::empty());
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(_) => std::thread::sleep(KILL_EVERY),
                }
                let ready = |f: &PollFd| f.any().unwrap_or(false);
                (
                    !self.orphaned && ready(&fds[0]),
                    ready(&fds[1]),
                    ready(&fds[2]),
                )
            };
            if timer_ready {
                let mut buf = [0u8; 8];
                let _ = nix::unistd::read(self.timer.as_fd(), &mut buf);
                if !self.gone {
                    self.killing = true;
                    self.tell(&Report::Watchdog);
                }
            }
            if chld_ready {
                let mut buf = [0u8; 64];
                while matches!((&self.sigchld).read(&mut buf), Ok(n) if n > 0) {}
            }
            if ctl_ready {
                if let Some(ran) = self.read_ctl() {
                    return ran;
                }
            }
        }
    }

    /// After a Ctrl-Z: once s3lead, stopped, runs again (`fg`, `bg`), the command does too.
    fn follow_suspension(&mut self) {
        let (Some(terminal), Some(seen_stopped), Some(child)) =
            (&self.terminal, self.suspended, self.child)
        else {
            return;
        };
        if self.child_exited {
            self.suspended = None;
            return;
        }
        match (seen_stopped, terminal.s3lead_stopped()) {
            (false, true) => self.suspended = Some(true),
            (true, false) => {
                terminal.s3lead_continued(child);
                self.suspended = None;
            }
            _ => {}
        }
    }

    /// Reads and obeys control lines; `Some` when s3lead says "done" or "again".
    fn read_ctl(&mut self) -> Option<Ran> {
        let mut chunk = [0u8; 512];
        match nix::unistd::read(self.ctl.as_fd(), &mut chunk) {
            Ok(0) => {
                // s3lead died: nothing it started may outlive it.
                self.orphaned = true;
                self.killing = true;
                return None;
            }
            Ok(n) => self.ctl_buf.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
        while let Some(line) = take_line(&mut self.ctl_buf) {
            let mut words = line.split(' ');
            match (words.next(), words.next()) {
                (Some("deadline"), Some(ns)) => {
                    if let Ok(ns) = ns.parse::<u64>() {
                        let _ = self.arm(ns);
                    }
                }
                (Some("kill"), None) => self.killing = true,
                (Some("done"), None) => return Some(Ran::Done),
                // Sent only once the guard said "gone"; what follows is the next start.
                (Some("again"), None) if self.gone => return Some(Ran::Again),
                _ => {}
            }
        }
        None
    }

    /// The terminal back to s3lead's group, once the command (the leader of `group`) is
    /// gone: s3lead then writes its last lines, and the shell waits for it, in the
    /// foreground.
    fn hand_back(&self, group: Pid) {
        if let Some(terminal) = &self.terminal {
            terminal.hand_back(group);
        }
    }

    /// Reaps every exited child (the command, and orphans reparented to the guard).
    ///
    /// Why `waitpid(-1)`, any child, and not the command's pid or its process group (as
    /// tini does, for the same reasons): a descendant may leave the group (`setsid`,
    /// `setpgid`) and its parent may exit, and then it is the guard's child by
    /// reparenting, in no group the guard knows. Waiting on any child reaps those too, so
    /// none stays a zombie that the kill loop would find in `/proc` forever; and ECHILD
    /// from it is the one answer the kernel gives atomically that no process of the
    /// command is left, which is when "gone" may be reported and the lease released.
    fn reap(&mut self) {
        // Told in one write: "exit" and "gone" together when the command left nothing, so
        // that s3lead never sees an exited command with processes seemingly left.
        let mut told = String::new();
        // On a terminal, the command's stops are reported too (Ctrl-Z).
        let flags = if self.terminal.is_some() {
            WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED
        } else {
            WaitPidFlag::WNOHANG
        };
        loop {
            match waitpid(None::<Pid>, Some(flags)) {
                Ok(WaitStatus::Stopped(pid, _)) if Some(pid) == self.child => {
                    if let Some(terminal) = &self.terminal {
                        if !self.killing && !self.orphaned {
                            self.suspended = Some(terminal.command_stopped(pid));
                        }
                    }
                }
                Ok(WaitStatus::Exited(pid, code)) if Some(pid) == self.child => {
                    self.hand_back(pid);
                    self.child_exited = true;
                    told.push_str(&Report::Exited(ChildExit::Code(code)).line());
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if Some(pid) == self.child => {
                    self.hand_back(pid);
                    self.child_exited = true;
                    told.push_str(&Report::Exited(ChildExit::Signaled(sig)).line());
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // ECHILD: no child at all is left, so no descendant either.
                    if self.child_exited && !self.gone {
                        self.gone = true;
                        self.killing = false;
                        told.push_str(&Report::Gone.line());
                    }
                    break;
                }
            }
        }
        if !told.is_empty() {
            // Non-blocking, as every report: a stopped s3lead must not stop its watchdog.
            let _ = nix::unistd::write(&self.report, told.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Started(Pid::from_raw(42)),
            Report::SpawnFailed {
                not_found: true,
                message: "No such file or directory (os error 2)".into(),
            },
            Report::Exited(ChildExit::Code(3)),
            Report::Exited(ChildExit::Signaled(Signal::SIGKILL)),
            Report::Watchdog,
            Report::Gone,
        ] {
            let line = r.line();
            assert_eq!(Report::parse(line.trim_end()), Some(r), "{line:?}");
        }
        assert_eq!(Report::parse("nonsense"), None);
    }

    #[test]
    fn a_start_message_round_trips_whole_and_waits_for_its_last_byte() {
        let start = Start {
            deadline_ns: 123_456_789,
            argv: vec!["sh".into(), "-c".into(), "echo a=b\n c".into(), "".into()],
            env: vec![
                ("S3LEAD_TERM".into(), "7".into()),
                ("K".into(), "v=w".into()),
            ],
        };
        let mut msg = start.encode();
        msg.extend_from_slice(b"deadline 5\n");
        let mut partial = msg[..msg.len() - 12].to_vec();
        assert_eq!(Start::take(&mut partial), None, "one byte short");
        let mut buf = msg.clone();
        let decoded = Start::take(&mut buf).expect("whole").expect("valid");
        assert_eq!(decoded, start, "an empty argument too");
        assert_eq!(buf, b"deadline 5\n", "what follows stays for the run loop");
        assert_eq!(Start::take(&mut b"deadline 5\n".to_vec()), Some(Err(())));
    }
}
