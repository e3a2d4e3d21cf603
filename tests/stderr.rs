//! End-to-end tests of `s3lead run` when its stderr misbehaves, on the file store and on
//! the test S3 server (tests named `on_s3`): a pipe that is full and never read (a stuck
//! log driver, a stalled journal, Ctrl-S), a pipe whose reader has gone
//! (`2>&1 | head -n1`), and a full pipe that someone made non-blocking. Whatever stderr
//! does, the lease must be renewed, the command stopped and the lock released as usual,
//! and s3lead must exit with the command's status.

#[macro_use]
mod e2e;
mod support;

use e2e::{Lock, read, send_signal, wait_exit, wait_for};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// The lease of `e2e::FAST`, in seconds.
const LEASE_S: f64 = 4.0;

// ---- stderr that misbehaves -------------------------------------------------------------

/// A pipe, both ends close-on-exec so that no other process of the test inherits the read
/// end (which would keep a "closed" pipe open). `Command` clears the flag on the copy
/// it installs as the child's stderr.
fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2")
}

fn set_nonblocking(fd: &OwnedFd, on: bool) {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).expect("F_GETFL"));
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags)).expect("F_SETFL");
}

/// A pipe filled until the kernel refuses more: (write end, read end). The write end is
/// left blocking unless `nonblocking`, so the next write by anyone blocks until the test
/// reads, which it never does unless it says so.
fn full_pipe(nonblocking: bool) -> (OwnedFd, OwnedFd) {
    let (r, w) = pipe();
    set_nonblocking(&w, true);
    let mut file = std::fs::File::from(w);
    let chunk = [b'.'; 4096];
    loop {
        match file.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the pipe: {e}"),
        }
    }
    // Single bytes too: a pipe may take less than a chunk when nearly full.
    while file.write(b".").is_ok() {}
    let w = OwnedFd::from(file);
    set_nonblocking(&w, nonblocking);
    (w, r)
}

/// The write end of a pipe whose read end is already closed: every write gets EPIPE.
fn closed_pipe() -> OwnedFd {
    let (r, w) = pipe();
    drop(r);
    w
}

/// A running s3lead that is killed if the test ends early (a failed assertion), so that a
/// leader stuck on its stderr does not outlive the test; its command follows by
/// PDEATHSIG and the guard.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

// ---- the children's record of when they ran --------------------------------------------

/// A shell command for the command named `who`: it appends `who start|tick|stop SECONDS`
/// lines to `out`, the seconds read from /proc/uptime (the boot clock, shared by every
/// process of the host and unaffected by wall-clock steps), and exits with `code` on
/// SIGTERM. Its own stderr goes nowhere: it shares s3lead's, and a shell that reports
/// its `sleep` killed by the SIGTERM ("Terminated", as bash does) would block on a stuck
/// one until s3lead SIGKILLs it.
fn timestamped(who: &str, out: &std::path::Path, code: i32) -> String {
    let o = out.display();
    format!(
        "exec 2>/dev/null; \
         t() {{ cut -d' ' -f1 /proc/uptime; }}; \
         echo \"{who} start $(t)\" >> {o}; \
         trap 'echo \"{who} stop $(t)\" >> {o}; exit {code}' TERM; \
         while :; do echo \"{who} tick $(t)\" >> {o}; sleep 0.2; done"
    )
}

/// One line of the children's record.
#[derive(Debug)]
struct Mark {
    who: String,
    what: String,
    at: f64,
}

/// The record so far. A line cut short (a `cut` killed with the group, a line being
/// written) has no time and is skipped.
fn marks(out: &std::path::Path) -> Vec<Mark> {
    read(out)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (who, what, at) = (f.next()?, f.next()?, f.next()?.parse().ok()?);
            Some(Mark {
                who: who.to_owned(),
                what: what.to_owned(),
                at,
            })
        })
        .collect()
}

fn times_of<'a>(marks: &'a [Mark], who: &'a str) -> impl Iterator<Item = f64> + 'a {
    marks.iter().filter(move |m| m.who == who).map(|m| m.at)
}

/// The span of `who`'s marks: (first, last).
fn span(marks: &[Mark], who: &str) -> Option<(f64, f64)> {
    let first = times_of(marks, who).reduce(f64::min)?;
    let last = times_of(marks, who).reduce(f64::max)?;
    Some((first, last))
}

// ---- 1. a stuck stderr -------------------------------------------------------------------

/// The leader's stderr is a full pipe nobody reads, and it logs at debug level. It must
/// keep renewing (so the follower never leads while its command runs), and a SIGTERM must
/// still be forwarded, the lock released and the command's status returned; then the
/// follower takes over.
fn a_stuck_stderr_does_not_stop_the_leader(lock: Lock) {
    let out = lock.path("runs");
    let (stuck, _unread) = full_pipe(false);
    let mut a = Running(
        lock.run(&["-v", "--id", "A", "-c", &timestamped("A", &out, 7)])
            .stdout(Stdio::null())
            .stderr(stuck)
            .spawn()
            .expect("spawn the leader"),
    );
    wait_for("the leader's command to start", LIMIT, || {
        span(&marks(&out), "A").is_some()
    });

    let b_log = lock.path("follower.log");
    let mut b = Running(
        lock.run(&["-v", "--id", "B", "-c", &timestamped("B", &out, 0)])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&b_log).expect("follower log"))
            .spawn()
            .expect("spawn the follower"),
    );
    wait_for("the follower to see the leader", LIMIT, || {
        read(&b_log).contains("held by A")
    });

    // Several leases of the leader's command, measured on its own record of the boot
    // clock. A leader stuck on its log would stop renewing, and the follower would take
    // over after one lease: stop waiting then, the assertions below say what went wrong.
    let (_, from) = span(&marks(&out), "A").expect("A ran");
    wait_for(
        "the leader's command to run for three more leases",
        Duration::from_secs(120),
        || {
            let m = marks(&out);
            span(&m, "B").is_some()
                || span(&m, "A").is_some_and(|(_, last)| last >= from + 3.0 * LEASE_S)
        },
    );
    let m = marks(&out);
    assert!(
        span(&m, "B").is_none(),
        "the follower's command started while the leader's ran (the leader stopped renewing): {m:?}"
    );

    send_signal(a.0.id(), "TERM");
    let st = wait_exit(&mut a.0, LIMIT);
    assert_eq!(
        st.code(),
        Some(7),
        "the leader exits with its command's status (the command trapped the forwarded SIGTERM): {:?}",
        marks(&out)
    );
    wait_for("the follower's command to start", LIMIT, || {
        span(&marks(&out), "B").is_some()
    });
    let m = marks(&out);
    let (_, a_last) = span(&m, "A").expect("A ran");
    let (b_first, _) = span(&m, "B").expect("B ran");
    assert!(
        m.iter().any(|k| k.who == "A" && k.what == "stop"),
        "the leader's command got the SIGTERM: {m:?}"
    );
    // /proc/uptime has a 10 ms resolution: equal readings are not an overlap.
    assert!(
        a_last <= b_first,
        "the follower's command started at {b_first} s, before the leader's last mark at {a_last} s: {m:?}"
    );
    assert!(
        read(&b_log).contains("released by A"),
        "the follower took over a released lock, not an expired one: {}",
        read(&b_log)
    );

    send_signal(b.0.id(), "TERM");
    assert_eq!(wait_exit(&mut b.0, LIMIT).code(), Some(0));
    let rec = lock.record();
    assert_eq!(rec["holder"], "B");
    assert_eq!(rec["term"], 2);
    assert_eq!(rec["released"], true);
}

on_both_stores!(a_stuck_stderr_does_not_stop_the_leader);

// ---- 2. a closed stderr ------------------------------------------------------------------

/// Runs `sh -c 'echo started; sleep 1; exit 3'` with `stderr` as s3lead's stderr; returns
/// s3lead's exit status and what the command printed.
fn run_with_stderr(lock: &Lock, extra: &[&str], stderr: OwnedFd) -> (Option<i32>, String) {
    let mut s: Child = lock
        .run(extra)
        .args(["--", "sh", "-c", "echo started; sleep 1; exit 3"])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn s3lead");
    let mut pipe = s.stdout.take().expect("stdout piped");
    let printed = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let st = wait_exit(&mut s, LIMIT);
    (st.code(), printed.join().unwrap_or_default())
}

/// `s3lead run … 2>&1 | head -n1`: once the reader is gone every log write fails. s3lead
/// must neither crash nor cut the command short: the command's status, the lock released.
fn a_closed_stderr_changes_nothing(lock: Lock) {
    for extra in [&[][..], &["-v"][..]] {
        let (code, printed) = run_with_stderr(&lock, extra, closed_pipe());
        assert_eq!(
            code,
            Some(3),
            "{extra:?}: the command's status (the command printed {printed:?})"
        );
        assert_eq!(printed, "started\n", "{extra:?}: the command ran");
        let rec = lock.record();
        assert_eq!(rec["released"], true, "{extra:?}: released: {rec}");
    }
    assert_eq!(lock.record()["term"], 2, "two runs, two terms");
}

on_both_stores!(a_closed_stderr_changes_nothing);

/// A full stderr that its owner made non-blocking (the flag belongs to the open file,
/// shared with whoever else holds it): writes fail with EAGAIN instead of blocking.
/// s3lead must neither crash nor spin nor wait for it at exit.
fn a_full_nonblocking_stderr_changes_nothing(lock: Lock) {
    let (stderr, _unread) = full_pipe(true);
    let (code, printed) = run_with_stderr(&lock, &["-v"], stderr);
    assert_eq!(
        code,
        Some(3),
        "the command's status (the command printed {printed:?})"
    );
    assert_eq!(printed, "started\n", "the command ran");
    let rec = lock.record();
    assert_eq!(rec["released"], true, "released: {rec}");
}

on_both_stores!(a_full_nonblocking_stderr_changes_nothing);

/// A stall shorter than the queue: what was logged while stderr was stuck comes out,
/// in order, once it is read again.
#[test]
fn lines_logged_while_stderr_is_stuck_come_out_when_it_is_read() {
    let lock = Lock::file();
    let started = lock.path("started");
    let (stuck, unread) = full_pipe(false);
    let cmd = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.1; done; exit 3",
        started.display(),
        lock.path("go").display()
    );
    let mut s = Running(
        lock.run(&["-v", "-c", &cmd])
            .stdout(Stdio::null())
            .stderr(stuck)
            .spawn()
            .expect("spawn s3lead"),
    );
    wait_for("the command to start", LIMIT, || started.exists());
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = std::fs::File::from(unread).read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    });
    std::fs::write(lock.path("go"), "").expect("go");
    assert_eq!(wait_exit(&mut s.0, LIMIT).code(), Some(3));
    let logged = reader.join().expect("reader");
    let logged = logged.trim_start_matches('.');
    let messages: Vec<String> = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["fields"]["message"].as_str().map(str::to_owned))
        .collect();
    let elected = messages.iter().position(|m| m == "elected");
    let released = messages.iter().position(|m| m == "released");
    assert!(
        elected.is_some() && released.is_some() && elected < released,
        "the lines logged while stderr was stuck, then the rest, in order: {logged}"
    );
    assert!(
        !logged.contains("dropped"),
        "a short stall loses no line: {logged}"
    );
}

// ---- stdout and clap's own output --------------------------------------------------------

/// What a finished process left on its stderr, with stdout a closed pipe.
fn with_stdout_closed(mut cmd: Command) -> (std::process::ExitStatus, String) {
    let mut s = cmd
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn s3lead");
    let mut pipe = s.stderr.take().expect("stderr piped");
    let logged = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let st = wait_exit(&mut s, LIMIT);
    (st, logged.join().unwrap_or_default())
}

/// `s3lead status … | head -c0`: the reader is gone before status prints. It ends as
/// `cat` would, killed by SIGPIPE without a word, not with a panic.
fn status_to_a_closed_stdout_ends_quietly(lock: Lock) {
    let (code, _) = run_with_stderr(&lock, &[], pipe().1);
    assert_eq!(code, Some(3), "a record to show");
    for args in [&["status"][..], &["status", "--json"][..]] {
        let mut c = lock.s3lead();
        c.args(args).arg(&lock.url);
        let (st, logged) = with_stdout_closed(c);
        assert_eq!(
            st.signal(),
            Some(13),
            "{args:?}: SIGPIPE, not {st}: {logged}"
        );
        assert_eq!(logged, "", "{args:?}: nothing on stderr");
    }
}

on_both_stores!(status_to_a_closed_stdout_ends_quietly);

/// clap prints help to stdout and usage errors to stderr; neither may panic when the
/// stream is closed.
#[test]
fn help_and_usage_errors_to_closed_pipes_do_not_panic() {
    let mut c = e2e::s3lead();
    c.arg("--help");
    let (st, logged) = with_stdout_closed(c);
    assert_eq!(st.code(), Some(0), "{logged}");
    assert_eq!(logged, "");

    let st = e2e::s3lead()
        .args(["run", "--lease-duration", "soon", "./x.lock", "--", "true"])
        .stdout(Stdio::null())
        .stderr(closed_pipe())
        .status()
        .expect("run s3lead");
    assert_eq!(st.code(), Some(64), "a usage error, not a panic");
}
