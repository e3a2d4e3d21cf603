//! The supervised child of the chaos test: the test binary itself, re-executed by
//! `s3lead run` with [`JOURNAL_ENV`] set. It stands for a real job that writes to a
//! downstream system under the fencing term s3lead hands it.
//!
//! Everything it does goes to the shared journal as one line per `write(2)` on an
//! `O_APPEND` file (so lines from concurrent children never interleave), each stamped
//! with `CLOCK_BOOTTIME`, the clock every process on this host shares and the one
//! s3lead measures its lease on:
//!
//! ```text
//! start <term> <pid> <ns> <holder>
//! hb    <term> <pid> <ns>                      every ~20 ms: "still running at ns"
//! write <term> <pid> <ns> accepted|rejected    a fenced write to the downstream
//! end   <term> <pid> <ns>                      on the stop signal, just before exiting
//! ```
//!
//! A child killed by SIGKILL writes no `end`; its last line is then the lower bound of
//! its end. The downstream is a file holding the highest term it has accepted, behind
//! an exclusive `flock`: a write is accepted only if its term is at least that one (the
//! fencing check a real store would make), and its journal line is written while the
//! lock is held, so the journal orders downstream writes exactly as the downstream saw
//! them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::time::{ClockId, clock_gettime};

/// Path of the journal; its presence selects the worker mode. Not an `S3LEAD_*` name:
/// s3lead removes every inherited `S3LEAD_*` variable from its child's environment.
pub const JOURNAL_ENV: &str = "CHAOS_JOURNAL";
/// Path of the downstream's max-term file.
pub const DOWNSTREAM_ENV: &str = "CHAOS_DOWNSTREAM";

const HEARTBEAT: Duration = Duration::from_millis(20);
/// A fenced downstream write every this many heartbeats.
const WRITE_EVERY: u32 = 3;
/// A worker outliving any sane test ends itself, so a broken run cannot leak it forever.
const MAX_LIFE: Duration = Duration::from_secs(900);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// `CLOCK_BOOTTIME` in nanoseconds.
pub fn boot_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// The worker's whole life, when [`JOURNAL_ENV`] is set; otherwise returns at once.
pub fn main() {
    let (Some(journal), Some(downstream)) = (
        std::env::var_os(JOURNAL_ENV),
        std::env::var_os(DOWNSTREAM_ENV),
    ) else {
        return;
    };
    let handler = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        sigaction(Signal::SIGTERM, &handler).expect("SIGTERM handler");
        sigaction(Signal::SIGINT, &handler).expect("SIGINT handler");
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
        pid: std::process::id(),
    };
    journal.line("start", &holder);
    let born = std::time::Instant::now();
    let mut beat = 0u32;
    loop {
        if STOP.load(Ordering::SeqCst) || born.elapsed() > MAX_LIFE {
            journal.line("end", "");
            std::process::exit(0);
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
