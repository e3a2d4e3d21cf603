//! Logging that can never stall or crash the supervisor.
//!
//! s3lead renews the lease and stops the child from one runtime thread. A log write on
//! that thread that blocks (stderr a pipe nobody drains: a stuck container log driver, a
//! stalled journal, `| tee` on a full disk, Ctrl-S on a terminal) would stop both, and a
//! write to a stderr whose reader is gone (`2>&1 | head -n1`) made tracing-subscriber
//! report the error with `eprintln!`, which panics. So once logging is set up, no thread
//! of s3lead writes fd 2 but one: every line (tracing's events, main's last error line, a panic message) is
//! queued on tracing-appender's lossy non-blocking writer, a bounded channel drained by
//! a worker thread. When the queue is full the line is dropped and counted by the crate,
//! never waited for, and the next line that gets into the queue is preceded by one
//! notice: "N log lines dropped: stderr was not being read".
//!
//! What the crate leaves to this room:
//! - The worker's writer ([`Sink`]) swallows write errors: nobody can read a line that
//!   failed, and the crate's worker would report a failed final flush with `eprintln!`.
//!   On EAGAIN (a stderr that its owner made non-blocking) it waits for the pipe in the
//!   worker thread. fd 2 itself is never made non-blocking: the child inherits the same
//!   open file description, and would get EAGAIN on its own writes.
//! - The crate's `WorkerGuard` is never dropped: its drop waits up to 1.1 s and may
//!   `println!`. [`Log::exit`] flushes with its own bound instead, through a mark that the
//!   worker acknowledges when every line queued before it has been written.

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::io::{self, ErrorKind, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Lines queued while stderr is stuck, at most; later ones are dropped. s3lead logs a
/// line per state change, so a stall of this many lines is a long one, and the memory it
/// holds stays small (a few hundred KiB at s3lead's own levels).
const QUEUE_LINES: usize = 1024;

/// The log target of the `--stats` line, shown whatever the level (even with `-q`):
/// the user asked for it.
pub const STATS_TARGET: &str = "s3lead_stats";

/// How long exiting may wait for the queue to reach stderr. The outcome is decided by
/// then; a stuck stderr must not hold the exit status (or a restart) back for long.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// Retry period for lines of our own (the last error line, a notice) while the queue is
/// full, until their deadline.
const RETRY: Duration = Duration::from_millis(5);

/// Queued after the lines that must be out before exiting; the worker counts it instead
/// of writing it. No log line starts with a NUL byte.
const FLUSH_MARK: &[u8] = b"\0s3lead: flush\0";

/// The handle to the log queue: a [`MakeWriter`] for tracing-subscriber, and the way to
/// write the last lines and exit.
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// The crate's count of lines that did not fit in the queue.
    dropped: ErrorCounter,
    json: bool,
    flushed: Arc<Flushed>,
}

struct Queue {
    tx: NonBlocking,
    /// How much of `dropped` is accounted for: told in a notice, or caused by a line of
    /// our own (a notice, a flush mark) that did not fit, which is no lost log line.
    accounted: usize,
}

impl Queue {
    /// Queues `bytes` if there is room; true if it got in. Every send holds the queue's
    /// lock, so a change of the crate's counter across this call is this line's drop.
    fn try_send(&mut self, dropped: &ErrorCounter, bytes: &[u8]) -> bool {
        let before = dropped.dropped_lines();
        // Lossy mode never fails: a line that does not fit is counted, not an error.
        let _ = self.tx.write(bytes);
        dropped.dropped_lines() == before
    }
}

/// How many flush marks the worker has reached.
#[derive(Default)]
struct Flushed {
    reached: Mutex<u64>,
    changed: Condvar,
}

impl Flushed {
    fn count(&self) -> MutexGuard<'_, u64> {
        self.reached.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the command line asks of the log (`-q`, `-v`/`-vv`, `--log-format`).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Errors only.
    pub quiet: bool,
    /// 0: info; 1: debug; 2 or more: trace.
    pub verbose: u8,
    /// One JSON object per line instead of text.
    pub json: bool,
}

/// The filter for the flags: s3lead's own lines at the chosen level, and nothing of the
/// AWS SDK or the HTTP stack below `-vv`. The SDK reports what s3lead reports again in
/// its own words (a credential failure is a 1,000-character dump of an IMDS error), so
/// its lines are for debugging only; with `-vv` they appear at debug level. (Its trace
/// level prints canonical requests, with a session token in them: never enabled here.)
fn directives(settings: Settings) -> String {
    match (settings.quiet, settings.verbose) {
        (true, _) => format!("off,s3lead=error,{STATS_TARGET}=info"),
        (false, 0) => format!("off,s3lead=info,{STATS_TARGET}=info"),
        (false, 1) => format!("off,s3lead=debug,{STATS_TARGET}=info"),
        (false, _) => format!("debug,s3lead=trace,{STATS_TARGET}=info"),
    }
}

/// Sets up logging for the `s3lead` binary: the queue and its worker, the tracing
/// subscriber at the level the flags ask for, and a panic hook that reports through the
/// queue. Fails only if the worker thread cannot be started.
pub fn init(settings: Settings) -> io::Result<Log> {
    let json = settings.json;
    let log = Log::start(io::stderr(), json, QUEUE_LINES)?;
    let filter = EnvFilter::try_from_env("S3LEAD_LOG")
        .unwrap_or_else(|_| EnvFilter::new(directives(settings)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log.clone())
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_target(false)
        // The writer never fails; were it to, the report would be an `eprintln!`.
        .log_internal_errors(false);
    // Fails only when a subscriber is already set, and then that one logs.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    log.install_panic_hook();
    Ok(log)
}

impl Log {
    /// Starts the worker that writes queued lines to `out`.
    fn start<W>(out: W, json: bool, capacity: usize) -> io::Result<Log>
    where
        W: Write + AsFd + Send + 'static,
    {
        let flushed = Arc::new(Flushed::default());
        let sink = Sink {
            out,
            flushed: flushed.clone(),
        };
        // tracing-appender panics (`expect`) when it cannot spawn its thread.
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            NonBlockingBuilder::default()
                .lossy(true)
                .buffered_lines_limit(capacity)
                .thread_name("s3lead-log")
                .finish(sink)
        }));
        let (tx, guard) =
            started.map_err(|_| io::Error::other("cannot start the thread that writes the log"))?;
        // Never dropped (see the module comment). It holds a sender, so the worker lives
        // until the process ends.
        std::mem::forget(guard);
        let dropped = tx.error_counter();
        Ok(Log {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue { tx, accounted: 0 }),
                dropped,
                json,
                flushed,
            }),
        })
    }

    /// Queues `message` (prefixed `s3lead: `, like every line s3lead prints outside its
    /// log format) after what is queued, waits a bounded time for all of it to reach
    /// stderr, and exits with `code`.
    pub fn exit(&self, code: i32, message: Option<&str>) -> ! {
        self.finish(message.map(|m| format!("s3lead: {m}\n")).as_deref());
        std::process::exit(code)
    }

    /// Queues `line` (or only the notice of dropped lines, if any are untold), then waits
    /// for the queue to reach stderr; all within [`EXIT_WAIT`].
    fn finish(&self, line: Option<&str>) -> bool {
        let deadline = Instant::now() + EXIT_WAIT;
        let queued = self.send_own(line.unwrap_or_default().as_bytes(), deadline);
        queued && self.flush(deadline)
    }

    /// A log line from tracing: queued, or dropped and counted.
    fn send_log_line(&self, bytes: &[u8]) {
        let mut q = self.shared.lock();
        self.tell_dropped(&mut q);
        // Tried even when the notice did not fit: the worker may have made room since.
        q.try_send(&self.shared.dropped, bytes);
    }

    /// Queues a notice of the lines dropped since the last one, if any were; true if
    /// nothing is left untold.
    fn tell_dropped(&self, q: &mut Queue) -> bool {
        let dropped = self.shared.dropped.dropped_lines();
        let untold = dropped.saturating_sub(q.accounted);
        if untold == 0 {
            return true;
        }
        let notice = self.notice(untold);
        if q.try_send(&self.shared.dropped, notice.as_bytes()) {
            q.accounted = dropped;
            true
        } else {
            q.accounted += 1;
            false
        }
    }

    /// Queues a line of our own (empty: only the notice of dropped lines), retrying
    /// while the queue is full until `deadline`; true if it got in. The lock is taken
    /// without waiting, so a panic hook running on a thread that holds it cannot hang.
    fn send_own(&self, bytes: &[u8], deadline: Instant) -> bool {
        loop {
            if let Some(mut q) = self.shared.try_lock() {
                if self.tell_dropped(&mut q) {
                    if bytes.is_empty() || q.try_send(&self.shared.dropped, bytes) {
                        return true;
                    }
                    q.accounted += 1;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(RETRY);
        }
    }

    /// Waits until every line queued so far has been written (or failed), or `deadline`.
    /// Two flushes at once (a panic while exiting) may each take the other's mark for
    /// its own; the lines then still reach stderr, only perhaps after the exit.
    fn flush(&self, deadline: Instant) -> bool {
        let flushed = &self.shared.flushed;
        let before = *flushed.count();
        if !self.send_own(FLUSH_MARK, deadline) {
            return false;
        }
        let count = flushed.count();
        let wait = deadline.saturating_duration_since(Instant::now());
        let (count, _) = flushed
            .changed
            .wait_timeout_while(count, wait, |reached| *reached == before)
            .unwrap_or_else(|e| e.into_inner());
        *count != before
    }

    /// The notice of `n` dropped lines, in the log's format, so that a program reading
    /// JSON lines sees one more JSON line.
    fn notice(&self, n: usize) -> String {
        let lines = if n == 1 { "line" } else { "lines" };
        let message = format!("{n} log {lines} dropped: stderr was not being read");
        let at = humantime::format_rfc3339_micros(SystemTime::now());
        if self.shared.json {
            let v = serde_json::json!({
                "timestamp": at.to_string(),
                "level": "WARN",
                "fields": { "message": message, "dropped_lines": n },
            });
            format!("{v}\n")
        } else {
            format!("{at}  WARN {message}\n")
        }
    }

    /// The default hook writes the panic message straight to stderr, and would block on a
    /// stuck one with the supervisor half-unwound; this one queues it and waits a bounded
    /// time for it to be written.
    fn install_panic_hook(&self) {
        let log = self.clone();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("<unnamed>");
            let mut message = format!("s3lead: thread '{name}' {info}\n");
            let trace = std::backtrace::Backtrace::capture();
            if trace.status() == std::backtrace::BacktraceStatus::Captured {
                message.push_str(&format!("{trace}\n"));
            }
            log.finish(Some(&message));
        }));
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, Queue>> {
        match self.queue.try_lock() {
            Ok(q) => Some(q),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

impl<'a> MakeWriter<'a> for Log {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> LogLine<'a> {
        LogLine(self)
    }
}

/// tracing-subscriber writes each event with one `write_all`: one call, one line.
pub struct LogLine<'a>(&'a Log);

impl Write for LogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_log_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The worker's writer: stderr, with errors swallowed and flush marks counted.
struct Sink<W> {
    out: W,
    flushed: Arc<Flushed>,
}

impl<W: Write + AsFd> Write for Sink<W> {
    /// The crate's worker hands over each queued line with one `write_all`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf == FLUSH_MARK {
            *self.flushed.count() += 1;
            self.flushed.changed.notify_all();
        } else {
            write_line(&mut self.out, buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes all of `line`, however long stderr takes; gives up on an error, since nobody
/// can read the line then (a closed pipe, a revoked terminal). A closed fd 2 is no error:
/// std's stderr discards writes to it.
fn write_line<W: Write + AsFd>(out: &mut W, mut line: &[u8]) {
    while !line.is_empty() {
        match out.write(line) {
            Ok(0) => return,
            Ok(n) => line = &line[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Someone else made stderr non-blocking: wait here, off the runtime
                // thread, as a blocking stderr would. The timeout only bounds a poll that
                // misses a wake-up.
                let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLOUT)];
                if poll(&mut fds, PollTimeout::from(1000u16)).is_err() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::OwnedFd;

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
        (File::from(r), File::from(w))
    }

    fn set_nonblocking(f: File, on: bool) -> File {
        let fd = OwnedFd::from(f);
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL).expect("F_GETFL"));
        let flags = if on {
            flags | OFlag::O_NONBLOCK
        } else {
            flags - OFlag::O_NONBLOCK
        };
        fcntl(&fd, FcntlArg::F_SETFL(flags)).expect("F_SETFL");
        File::from(fd)
    }

    /// Fills the pipe until the kernel refuses more; returns how many bytes it took.
    fn fill(w: File, leave_nonblocking: bool) -> (File, usize) {
        let mut w = set_nonblocking(w, true);
        let mut n = 0;
        while let Ok(k) = w.write(b".") {
            n += k;
        }
        (set_nonblocking(w, leave_nonblocking), n)
    }

    fn line(log: &Log, text: &str) {
        let mut w = log.make_writer();
        w.write_all(format!("{text}\n").as_bytes())
            .expect("never fails");
    }

    /// What the pipe holds now. The worker keeps the write end for good, so there is no
    /// end-of-file to read to; a completed flush says everything is in the pipe.
    fn available(r: File) -> (File, String) {
        let mut r = set_nonblocking(r, true);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        (
            set_nonblocking(r, false),
            String::from_utf8_lossy(&all).into_owned(),
        )
    }

    /// Flushes, retrying: the worker may need a moment to be scheduled on a busy machine.
    fn flushed(log: &Log) {
        for _ in 0..30 {
            if log.finish(None) {
                return;
            }
        }
        panic!("the log never flushed");
    }

    #[test]
    fn lines_reach_stderr_in_order_and_a_flush_waits_for_them() {
        let (r, w) = pipe();
        let log = Log::start(w, false, 16).expect("worker");
        for i in 0..10 {
            line(&log, &format!("line {i}"));
        }
        assert!(log.send_own(b"s3lead: the end\n", Instant::now() + EXIT_WAIT));
        flushed(&log);
        let (_, out) = available(r);
        let want: String = (0..10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out, format!("{want}s3lead: the end\n"));
    }

    #[test]
    fn a_stuck_stderr_drops_and_counts_lines_and_says_so_once() {
        let (r, w) = pipe();
        let (w, prefill) = fill(w, false);
        let log = Log::start(w, false, 4).expect("worker");
        for i in 0..20 {
            line(&log, &format!("stuck {i}"));
        }
        // Four queued, one being written: the rest dropped, and none of it waited.
        assert!(log.shared.dropped.dropped_lines() >= 15);
        assert!(!log.finish(None), "no flush while stuck");

        let mut r = r;
        let mut prefilled = vec![0u8; prefill];
        r.read_exact(&mut prefilled).expect("the prefill");
        flushed(&log);
        line(&log, "after");
        flushed(&log);
        let (_, out) = available(r);

        let lines: Vec<&str> = out.lines().collect();
        let delivered = lines.iter().filter(|l| l.starts_with("stuck ")).count();
        let notices: Vec<&&str> = lines.iter().filter(|l| l.contains("dropped")).collect();
        assert_eq!(notices.len(), 1, "one notice: {out}");
        let told = format!(
            " WARN {} log lines dropped: stderr was not being read",
            20 - delivered
        );
        assert!(
            notices[0].ends_with(&told),
            "counts only the lost log lines, not the notices that did not fit: {out}"
        );
        assert_eq!(lines.last(), Some(&"after"), "{out}");
        assert!(
            lines.iter().position(|l| l.contains("dropped"))
                < lines.iter().position(|l| *l == "after"),
            "{out}"
        );
    }

    #[test]
    fn the_notice_is_a_json_line_in_json_mode() {
        let (r, w) = pipe();
        let (w, prefill) = fill(w, false);
        let log = Log::start(w, true, 1).expect("worker");
        for _ in 0..5 {
            line(&log, "{}");
        }
        let mut r = r;
        let mut prefilled = vec![0u8; prefill];
        r.read_exact(&mut prefilled).expect("the prefill");
        flushed(&log);
        let (_, out) = available(r);
        // The drops may be reported in more than one notice (one before each line that
        // gets through): together they count every line lost.
        let notices: Vec<serde_json::Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "WARN")
            .collect();
        assert!(!notices.is_empty(), "no notice: {out}");
        let mut total = 0;
        for notice in &notices {
            let n = notice["fields"]["dropped_lines"].as_u64().expect("a count");
            assert_eq!(
                notice["fields"]["message"],
                format!("{n} log lines dropped: stderr was not being read")
            );
            total += n;
        }
        assert!(total >= 3, "{out}");
    }

    #[test]
    fn a_closed_stderr_is_no_error() {
        let (r, w) = pipe();
        drop(r);
        let log = Log::start(w, false, 16).expect("worker");
        for i in 0..100 {
            line(&log, &format!("line {i}"));
        }
        flushed(&log);
    }

    #[test]
    fn a_nonblocking_stderr_is_waited_for_in_the_worker() {
        let (r, w) = pipe();
        let (w, prefill) = fill(w, true);
        let log = Log::start(w, false, 16).expect("worker");
        line(&log, "waited for");
        assert!(!log.finish(None), "no flush while full");
        let mut r = r;
        let mut prefilled = vec![0u8; prefill];
        r.read_exact(&mut prefilled).expect("the prefill");
        flushed(&log);
        let (_, out) = available(r);
        assert_eq!(out, "waited for\n");
    }
}
