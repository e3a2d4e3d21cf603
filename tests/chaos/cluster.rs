//! The supervisors campaigning for the chaos test's lock, and what the test holds of each:
//! the `s3lead run` process, its own proxy to the store, and its stderr, a pipe the test
//! drains into a log file and can stop draining (and fill) to block s3lead's writes.
//!
//! The cluster also watches while the test runs: whenever the journal shows a new term,
//! every process of an older term must already be gone from `/proc` (a *witnessed*
//! overlap otherwise). This does not depend on the last line a killed process managed to
//! journal, which is only a lower bound of its end.
//!
//! Only processes this test started are ended, each by its pid, and a pid counts as one
//! of ours only while its environment names this test's journal and the life's term
//! (pids are recycled: `pid_max` may be as low as 32768).

use crate::e2e::proxy::{Proxy, endpoint_addr};
use crate::e2e::{Lock, poll_until};
use crate::journal::{Journal, Life};
use crate::worker::{ARGS, DOWNSTREAM_ENV, JOURNAL_ENV, boot_ns};
use crate::{TIMINGS, WAIT};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How many `s3lead run` campaign at once.
pub const SUPERVISORS: usize = 4;

/// A supervisor's stderr: a pipe whose read end a thread drains into the log file.
/// [`StderrPipe::block`] stops the draining and fills the pipe, so s3lead's next write
/// to stderr blocks, as behind a stalled log shipper or `| tee` on a full disk.
struct StderrPipe {
    /// A second, non-blocking open file description of the pipe's write end, to fill it
    /// with. (Setting O_NONBLOCK on a dup would make s3lead's own stderr non-blocking.)
    fill: Option<File>,
    paused: Arc<AtomicBool>,
    parked: Arc<AtomicBool>,
    drained: mpsc::Receiver<()>,
}

/// The filler: NUL never occurs in a log line, and the drain drops it.
const FILLER: u8 = 0;

impl StderrPipe {
    /// The pipe, and the write end to hand to s3lead.
    fn new(log: &Path) -> (StderrPipe, OwnedFd) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("stderr pipe");
        let fill = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{}", w.as_raw_fd()))
            .expect("reopen the stderr pipe");
        let mut out = File::create(log).expect("supervisor log");
        let paused = Arc::new(AtomicBool::new(false));
        let parked = Arc::new(AtomicBool::new(false));
        let (done, drained) = mpsc::channel();
        let (p, k) = (paused.clone(), parked.clone());
        std::thread::spawn(move || {
            let mut r = File::from(r);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if p.load(Ordering::SeqCst) {
                    k.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                k.store(false, Ordering::SeqCst);
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let text: Vec<u8> =
                            buf[..n].iter().copied().filter(|&b| b != FILLER).collect();
                        let _ = out.write_all(&text);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = out.flush();
            let _ = done.send(());
        });
        let pipe = StderrPipe {
            fill: Some(fill),
            paused,
            parked,
            drained,
        };
        (pipe, w)
    }

    /// Stops draining, then fills the pipe to the last byte.
    fn block(&self) {
        let fill = self.fill.as_ref().expect("pipe open");
        self.paused.store(true, Ordering::SeqCst);
        // The drain may be waiting in read(2): one byte wakes it, and it parks.
        let _ = (&*fill).write(&[FILLER]);
        assert!(
            poll_until(WAIT, || self.parked.load(Ordering::SeqCst)),
            "the stderr drain did not stop"
        );
        // Page-sized writes until no page is free, then bytes until the last page is
        // full: a write of n ≤ PIPE_BUF bytes either fits whole or fails with EAGAIN.
        for chunk in [4096usize, 1] {
            let bytes = vec![FILLER; chunk];
            loop {
                match (&*fill).write(&bytes) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("filling a stderr pipe: {e}"),
                }
            }
        }
    }

    fn unblock(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Once every process that held the write end is gone: waits for the drain to reach
    /// end-of-file, so the log file is complete.
    fn close(&mut self) {
        self.unblock();
        self.fill = None;
        let _ = self.drained.recv_timeout(Duration::from_secs(10));
    }
}

/// One `s3lead run`, its own proxy to the store, and its stderr.
pub struct Supervisor {
    pub id: String,
    proc: Child,
    pub proxy: Proxy,
    pub log: PathBuf,
    pub exit: Option<ExitStatus>,
    /// The faults the test injected at it, by name.
    pub hits: Vec<&'static str>,
    /// Whether a fault stopped or wedged s3lead itself (SIGSTOP, a frozen host, a full
    /// stderr on its stop path): then its own stop lines may come after the lease's end,
    /// and the guard's watchdog is what kept the promise.
    pub stalled: bool,
    stderr: StderrPipe,
}

impl Supervisor {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.proc.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        if self.exit.is_none() {
            let _ = kill(self.pid(), sig);
        }
    }

    /// Has it exited (reaping it if so)?
    pub fn poll_exit(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.proc.try_wait().expect("try_wait");
        }
        self.exit.is_some()
    }

    pub fn kill9(&mut self) {
        if self.exit.is_none() {
            let _ = kill(self.pid(), Signal::SIGCONT);
            let _ = self.proc.kill();
            self.exit = Some(self.proc.wait().expect("wait for s3lead"));
        }
    }

    pub fn block_stderr(&self) {
        self.stderr.block();
    }

    pub fn unblock_stderr(&self) {
        self.stderr.unblock();
    }

    /// Its log lines as parsed JSON (complete lines only; what the drain has written).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Has it logged that it saw `holder` leading under `term`?
    pub fn saw(&self, holder: &str, term: u64) -> bool {
        let msg = format!("held by {holder}; waiting");
        self.log_lines().iter().any(|v| {
            v["fields"]["message"].as_str() == Some(&msg)
                && v["fields"]["term"].as_str() == Some(&term.to_string())
        })
    }
}

/// The supervisors campaigning for the lock, and the files they share. Dropping it
/// kills every process the test started (also when a check panics), and keeps the
/// files for a post-mortem if the test is failing.
pub struct Cluster {
    pub lock: Lock,
    upstream: SocketAddr,
    pub journal: PathBuf,
    pub downstream: PathBuf,
    pub sups: Vec<Supervisor>,
    next_id: usize,
    scratch: Option<tempfile::TempDir>,
    /// No new supervisor is started while set (see the deletion fault).
    pub hold_spawns: bool,
    /// Lives frozen by a host pause: the one overlap docs/design.md §1 allows.
    pub excused: HashSet<(u64, u32)>,
    /// Processes of an older term seen alive after a newer term started.
    pub witnessed: Vec<((u64, u32), String)>,
    /// Lives known to be over (not to be looked up in `/proc` again).
    dead: HashSet<(u64, u32)>,
}

impl Cluster {
    pub fn new(lock: Lock) -> Cluster {
        let upstream = endpoint_addr(&crate::support::s3_server().endpoint);
        let scratch = tempfile::Builder::new()
            .prefix("chaos-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("scratch dir");
        Cluster {
            lock,
            upstream,
            journal: scratch.path().join("journal"),
            downstream: scratch.path().join("downstream"),
            sups: Vec::new(),
            next_id: 1,
            scratch: Some(scratch),
            hold_spawns: false,
            excused: HashSet::new(),
            witnessed: Vec::new(),
            dead: HashSet::new(),
        }
    }

    fn dir(&self) -> &Path {
        self.scratch.as_ref().expect("scratch dir").path()
    }

    pub fn spawn(&mut self) {
        let id = format!("c{}", self.next_id);
        self.next_id += 1;
        let proxy = Proxy::start(self.upstream);
        let log = self.dir().join(format!("{id}.log"));
        let (stderr, stderr_w) = StderrPipe::new(&log);
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = self.lock.run_timed(TIMINGS, &["--id", &id]);
        cmd.arg("--")
            .arg(exe)
            .args(ARGS)
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .env(JOURNAL_ENV, &self.journal)
            .env(DOWNSTREAM_ENV, &self.downstream)
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr_w));
        let proc = cmd.spawn().expect("spawn s3lead");
        drop(cmd); // closes this process's copy of the stderr pipe's write end
        self.sups.push(Supervisor {
            id,
            proc,
            proxy,
            log,
            exit: None,
            hits: Vec::new(),
            stalled: false,
            stderr,
        });
    }

    /// Replaces every supervisor that has exited, so that SUPERVISORS campaign.
    pub fn replace_exited(&mut self) {
        let mut running = 0;
        for s in &mut self.sups {
            if !s.poll_exit() {
                running += 1;
            }
        }
        if self.hold_spawns {
            return;
        }
        for _ in running..SUPERVISORS {
            self.spawn();
        }
    }

    pub fn sup(&mut self, id: &str) -> &mut Supervisor {
        self.sups
            .iter_mut()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no supervisor {id}"))
    }

    pub fn running(&mut self, id: &str) -> bool {
        self.sups.iter_mut().any(|s| s.id == id && !s.poll_exit())
    }

    /// Is this life's process alive (not a zombie), and still the one that journaled it?
    pub fn alive(&self, l: &Life) -> bool {
        if self.dead.contains(&l.key()) || !crate::e2e::alive(l.pid as i32) {
            return false;
        }
        let Ok(env) = std::fs::read(format!("/proc/{}/environ", l.pid)) else {
            return false;
        };
        let journal = format!("{JOURNAL_ENV}={}", self.journal.display());
        let term = format!("S3LEAD_TERM={}", l.term);
        let has = |want: &str| env.split(|&b| b == 0).any(|v| v == want.as_bytes());
        has(&journal) && has(&term)
    }

    /// Reads the journal's new lines, and checks that no process of an older term is
    /// alive now that a newer one has started.
    pub fn observe(&mut self, j: &mut Journal) {
        j.refresh();
        let top = j.max_term();
        let newest = j.child_of(top).map(|l| l.to_string());
        let mut gone = Vec::new();
        let mut seen = Vec::new();
        for l in j.lives.values() {
            if self.dead.contains(&l.key()) {
                continue;
            }
            if !self.alive(l) {
                gone.push(l.key());
                continue;
            }
            let known = self.witnessed.iter().any(|(k, _)| *k == l.key());
            if l.term < top && !self.excused.contains(&l.key()) && !known {
                seen.push((
                    l.key(),
                    format!(
                        "{l} was alive at {} ns, after term {top} started ({})",
                        boot_ns(),
                        newest.as_deref().unwrap_or("?")
                    ),
                ));
            }
        }
        self.dead.extend(gone);
        self.witnessed.extend(seen);
    }

    /// The lives whose process runs now, except those frozen by a host pause.
    pub fn living(&self, j: &Journal) -> Vec<Life> {
        j.lives
            .values()
            .filter(|l| !l.ended && !self.excused.contains(&l.key()) && self.alive(l))
            .cloned()
            .collect()
    }

    /// Kills every supervisor still running, then any process of ours left (the guard
    /// should have taken them all), and waits for the logs to be complete.
    pub fn shutdown(&mut self) {
        for s in &mut self.sups {
            s.unblock_stderr();
            s.kill9();
        }
        let mut j = Journal::new(self.journal.clone());
        j.refresh();
        let left: Vec<Life> = j.lives.values().filter(|l| !l.ended).cloned().collect();
        let gone = poll_until(Duration::from_secs(10), || {
            left.iter().all(|l| !self.alive(l))
        });
        if !gone {
            for l in &left {
                if self.alive(l) {
                    eprintln!("chaos: {l} outlived its killed supervisor; killing it");
                    let _ = kill(Pid::from_raw(l.pid as i32), Signal::SIGKILL);
                }
            }
        }
        for s in &mut self.sups {
            s.stderr.close();
        }
    }

    /// Keeps the journal and logs (the path is printed), also when the test passes.
    pub fn keep(&mut self) {
        if let Some(dir) = self.scratch.take() {
            eprintln!(
                "chaos: journal and supervisor logs kept in {}",
                dir.keep().display()
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
        if std::thread::panicking() || std::env::var_os("S3LEAD_CHAOS_KEEP").is_some() {
            self.keep();
        }
    }
}

/// Waits until the lives running belong to one term of at least `min_term`, whose child
/// has had writes accepted downstream and whose supervisor runs; replaces exited
/// supervisors meanwhile. Panics after [`WAIT`]: docs/design.md §1.3 promises a new leader
/// within `lease + poll + one request`.
pub fn settle(c: &mut Cluster, j: &mut Journal, min_term: u64, after: &str) -> Life {
    let mut found = None;
    let ok = poll_until(WAIT, || {
        c.replace_exited();
        c.observe(j);
        let live = c.living(j);
        let Some(term) = live.first().map(|l| l.term) else {
            return false;
        };
        if term < min_term || live.iter().any(|l| l.term != term) {
            return false;
        }
        let Some(child) = j.child_of(term).filter(|l| l.accepted_writes >= 3) else {
            return false;
        };
        let child = child.clone();
        if c.alive(&child) && c.running(&child.holder) {
            found = Some(child);
            return true;
        }
        false
    });
    match found {
        Some(l) if ok => l,
        _ => {
            let live: Vec<String> = c.living(j).iter().map(|l| l.to_string()).collect();
            panic!(
                "no single settled leader of term ≥ {min_term} within {WAIT:?} {after}; \
                 processes running: {live:?}; newest child: {:?}",
                j.child_of(j.max_term()).map(|l| l.to_string())
            );
        }
    }
}
