//! The supervised child of the chaos test: the test binary itself, re-executed by
//! `s3lead run` with [`JOURNAL_ENV`] set. It stands for a real job that writes to a
//! downstream system under the fencing term s3lead hands it.
//!
//! Everything it does goes to the shared journal as one line per `write(2)` on an
//! `O_APPEND` file (so lines from concurrent processes never interleave), each stamped
//! with `CLOCK_BOOTTIME`, the clock every process on this host shares and the one
//! s3lead measures its lease on:
//!
//! ```text
//! start <term> <pid> <ns> <holder> <role> <parent>   role: child | setsid | setpgid
//! hb    <term> <pid> <ns>                      every ~20 ms: "still running at ns"
//! write <term> <pid> <ns> accepted|rejected    a fenced write to the downstream
//! end   <term> <pid> <ns>                      on the stop signal, just before exiting
//! ```
//!
//! A process killed by SIGKILL writes no `end`; its last line is then the lower bound of
//! its end. The downstream is a file holding the highest term it has accepted, behind
//! an exclusive `flock`: a write is accepted only if its term is at least that one (the
//! fencing check a real store would make), and its journal line is written while the
//! lock is held, so the journal orders downstream writes exactly as the downstream saw
//! them.
//!
//! On SIGUSR1 (sent by the test) the child starts two *escapees*, the test binary again
//! with [`ROLE_ENV`] set: one calls `setsid` and ignores the stop signal, like a daemon
//! that detached (only SIGKILL ends it); one calls `setpgid`, like a job-control shell's
//! job, and ends on the stop signal. Both journal and write downstream under the same
//! term, so the judge sees whether they outlive it. SIGUSR2 is ignored: the test sends it
//! to s3lead, which forwards it here, only to make s3lead write a log line.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::{getpgid, getpid, getsid};

/// Path of the journal; its presence selects the worker mode. Not an `S3LEAD_*` name:
/// s3lead removes every inherited `S3LEAD_*` variable from its child's environment.
pub const JOURNAL_ENV: &str = "CHAOS_JOURNAL";
/// Path of the downstream's max-term file.
pub const DOWNSTREAM_ENV: &str = "CHAOS_DOWNSTREAM";
/// Set for an escapee: `setsid` or `setpgid`.
pub const ROLE_ENV: &str = "CHAOS_ROLE";
/// The pid of the child that started an escapee.
pub const PARENT_ENV: &str = "CHAOS_PARENT";

/// The worker-mode test, run as `<this binary> <ARGS>`.
pub const TEST_NAME: &str = "chaos_worker";
pub const ARGS: [&str; 5] = [
    TEST_NAME,
    "--exact",
    "--nocapture",
    "--test-threads=1",
    "-q",
];

const HEARTBEAT: Duration = Duration::from_millis(20);
/// A fenced downstream write every this many heartbeats.
const WRITE_EVERY: u32 = 3;
/// A worker outliving any sane test ends itself, so a broken run cannot leak it forever.
const MAX_LIFE: Duration = Duration::from_secs(1800);

static STOP: AtomicBool = AtomicBool::new(false);
static ESCAPE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_escape_signal(_: nix::libc::c_int) {
    ESCAPE.store(true, Ordering::SeqCst);
}

/// `CLOCK_BOOTTIME` in nanoseconds.
pub fn boot_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn handle(sig: Signal, handler: SigHandler) {
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handlers only store to an atomic, which is async-signal-safe; SIG_IGN
    // installs no code.
    unsafe { sigaction(sig, &action) }.expect("signal handler");
}

/// The worker's whole life, when [`JOURNAL_ENV`] is set; otherwise returns at once.
pub fn main() {
    let (Some(journal), Some(downstream)) = (
        std::env::var_os(JOURNAL_ENV),
        std::env::var_os(DOWNSTREAM_ENV),
    ) else {
        return;
    };
    let role = std::env::var(ROLE_ENV).unwrap_or_else(|_| "child".into());
    let parent = match role.as_str() {
        "child" => nix::unistd::getppid().as_raw() as u32,
        "setsid" | "setpgid" => std::env::var(PARENT_ENV)
            .expect("an escapee knows its parent")
            .parse()
            .expect("parent pid"),
        other => panic!("unknown {ROLE_ENV} {other:?}"),
    };
    let me = getpid();
    // An escapee that did not escape would test nothing: refuse to pose as one.
    match role.as_str() {
        "setsid" => assert_eq!(getsid(None).ok(), Some(me), "setsid did not take"),
        "setpgid" => {
            assert_eq!(getpgid(None).ok(), Some(me), "setpgid did not take");
            assert_ne!(
                getsid(None).ok(),
                Some(me),
                "setpgid must not be a new session"
            );
        }
        _ => {}
    }
    let stop = SigHandler::Handler(on_stop_signal);
    if role == "setsid" {
        handle(Signal::SIGTERM, SigHandler::SigIgn);
        handle(Signal::SIGINT, SigHandler::SigIgn);
    } else {
        handle(Signal::SIGTERM, stop);
        handle(Signal::SIGINT, stop);
    }
    handle(Signal::SIGUSR2, SigHandler::SigIgn);
    if role == "child" {
        handle(Signal::SIGUSR1, SigHandler::Handler(on_escape_signal));
    } else {
        handle(Signal::SIGUSR1, SigHandler::SigIgn);
    }
    let term: u64 = std::env::var("S3LEAD_TERM")
        .expect("S3LEAD_TERM from s3lead")
        .parse()
        .expect("S3LEAD_TERM is a number");
    let holder = std::env::var("S3LEAD_HOLDER").unwrap_or_else(|_| "?".into());
    let mut journal = Journal {
        file: OpenOptions::new()
            .append(true)
            .create(true)
            .open(&journal)
            .expect("open journal"),
        term,
        pid: me.as_raw() as u32,
    };
    journal.line("start", &format!("{holder} {role} {parent}"));
    let born = std::time::Instant::now();
    let mut beat = 0u32;
    let mut escaped = false;
    loop {
        if STOP.load(Ordering::SeqCst) || born.elapsed() > MAX_LIFE {
            journal.line("end", "");
            std::process::exit(0);
        }
        if ESCAPE.load(Ordering::SeqCst) && !escaped {
            escaped = true;
            spawn_escapee("setsid");
            spawn_escapee("setpgid");
        }
        if beat % WRITE_EVERY == 0 {
            fenced_write(Path::new(&downstream), &mut journal);
        } else {
            journal.line("hb", "");
        }
        beat = beat.wrapping_add(1);
        std::thread::sleep(HEARTBEAT);
    }
}

/// Starts this binary again as an escapee. It is not waited for: whoever outlives whom,
/// s3lead's guard (a subreaper) inherits and reaps what is left.
fn spawn_escapee(role: &'static str) {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args(ARGS)
        .env(ROLE_ENV, role)
        .env(PARENT_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if role == "setsid" {
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
        }
    } else {
        cmd.process_group(0);
    }
    let child = cmd.spawn().expect("spawn escapee");
    drop(child);
}

struct Journal {
    file: File,
    term: u64,
    pid: u32,
}

impl Journal {
    fn line(&mut self, kind: &str, extra: &str) {
        let mut l = format!("{kind} {} {} {}", self.term, self.pid, boot_ns());
        if !extra.is_empty() {
            l.push(' ');
            l.push_str(extra);
        }
        l.push('\n');
        // One write(2) per line: O_APPEND makes it atomic with respect to other writers.
        self.file
            .write_all(l.as_bytes())
            .expect("append to journal");
    }
}

/// The downstream's fencing check, atomic under an exclusive flock.
fn fenced_write(path: &Path, journal: &mut Journal) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open downstream");
    let mut file = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock downstream");
    let mut seen = String::new();
    file.read_to_string(&mut seen).expect("read downstream");
    let max: u64 = seen.trim().parse().unwrap_or(0);
    let accepted = journal.term >= max;
    if journal.term > max {
        file.set_len(0).expect("truncate downstream");
        file.seek(SeekFrom::Start(0)).expect("seek downstream");
        file.write_all(journal.term.to_string().as_bytes())
            .expect("write downstream");
    }
    journal.line("write", if accepted { "accepted" } else { "rejected" });
    drop(file);
}
