//! End-to-end chaos (issue 5): several `s3lead run` supervisors of the built binary
//! campaign for one lock on the test S3 server, each through its own fault-injecting
//! proxy, while the test repeatedly hits whoever leads: `kill -9` of its supervisor,
//! SIGSTOP shorter than the safety margin, SIGSTOP longer than the lease, and cutting
//! it off from the store (connections refused, or a blackhole).
//!
//! The supervised children are this test binary re-executed as workers (`worker.rs`):
//! they journal their life on the boot clock and write to a fenced downstream. The
//! journal is then judged (`journal.rs`) against DESIGN §1:
//! - no two children run at once, except a child whose supervisor was paused for longer
//!   than its lease; that one must be stopped as soon as the supervisor resumes, and
//!   every downstream write it makes after its successor's first must be rejected;
//! - every term belongs to one child, and terms grow with every new child;
//! - after every fault a new leader starts (or, after a short pause, the leader goes on)
//!   within a bounded wait.
//!
//! Nothing here asserts how long anything took: waits are bounded polls, and instants
//! are compared only where the promise orders them.
//!
//! Knobs: `S3LEAD_CHAOS_SEED` replays a fault plan, `S3LEAD_CHAOS_FAULTS` sets its length,
//! `S3LEAD_CHAOS_KEEP` keeps the journal and the supervisors' logs (always kept when the
//! test fails; the path is printed).

mod e2e;
mod support;

#[path = "chaos/journal.rs"]
mod journal;
#[path = "chaos/worker.rs"]
mod worker;

use e2e::Lock;
use e2e::proxy::{Mode, Proxy, endpoint_addr};
use journal::{Journal, Life, LongPause, judge};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;
use worker::{DOWNSTREAM_ENV, JOURNAL_ENV, boot_ns};

/// Short timings s3lead accepts, that still keep the promise once the margin grows by
/// its fixed kill-latency part: renew 1 s + retry 250 ms + kill-after 500 ms + margin
/// (max(1 s, 2 % of the lease) + 250 ms) = 3 s ≤ lease 3 s.
const TIMINGS: &[&str] = &[
    "--lease-duration",
    "3s",
    "--renew-every",
    "1s",
    "--retry-period",
    "250ms",
    "--kill-after",
    "500ms",
    "--request-timeout",
    "900ms",
];
const KILL_AFTER: Duration = Duration::from_millis(500);
const SUPERVISORS: usize = 4;
const DEFAULT_FAULTS: usize = 12;

/// Shorter than the safety margin (1 s): the leader may go on.
const SHORT_PAUSE: Duration = Duration::from_millis(300);
/// Longer than the lease (3 s): a follower takes over while the leader's child runs on.
const LONG_PAUSE: Duration = Duration::from_secs(5);
/// Longer than the lease minus the margin: the leader must give up.
const CUT: Duration = Duration::from_secs(4);
/// After a short pause, the leader counts as going on once its child is seen running
/// this long after SIGCONT (longer than its stop point could be).
const GOING_ON: Duration = Duration::from_secs(2);
/// A long-paused supervisor must have stopped its stale child within this of SIGCONT.
const RESUME_BOUND: Duration = KILL_AFTER.saturating_add(Duration::from_secs(2));

/// Bound on every wait: generous, for a loaded 2-core machine; liveness promises
/// `lease + poll + one request`, about 4.2 s here.
const WAIT: Duration = Duration::from_secs(60);

/// The name of the worker-mode test, run by `s3lead` as `<this binary> --exact NAME`.
const WORKER_TEST: &str = "chaos_worker";

/// The supervised child, when `CHAOS_JOURNAL` is set; a no-op test otherwise.
#[test]
fn chaos_worker() {
    worker::main();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill9,
    ShortPause,
    LongPause,
    Refuse,
    Blackhole,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Kill9 => "kill -9",
            Fault::ShortPause => "SIGSTOP 300ms",
            Fault::LongPause => "SIGSTOP 5s",
            Fault::Refuse => "store refused",
            Fault::Blackhole => "store blackholed",
        })
    }
}

/// `n` faults, every kind about as often, in an order drawn from `seed`.
fn plan(seed: u64, n: usize) -> Vec<Fault> {
    const KINDS: [Fault; 5] = [
        Fault::Kill9,
        Fault::ShortPause,
        Fault::LongPause,
        Fault::Refuse,
        Fault::Blackhole,
    ];
    let mut plan: Vec<Fault> = KINDS.iter().copied().cycle().take(n).collect();
    let mut x = seed | 1;
    for i in (1..plan.len()).rev() {
        // xorshift64: enough to vary the order between runs, and replayable.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        plan.swap(i, (x % (i as u64 + 1)) as usize);
    }
    plan
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// One `s3lead run` and its own proxy to the store.
struct Supervisor {
    id: String,
    proc: Child,
    proxy: Proxy,
    log: PathBuf,
    exit: Option<ExitStatus>,
    /// The fault the test injected at it, if any.
    hit_by: Option<Fault>,
}

impl Supervisor {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.proc.id() as i32)
    }

    fn signal(&self, sig: Signal) {
        if self.exit.is_none() {
            let _ = kill(self.pid(), sig);
        }
    }

    /// Has it exited (reaping it if so)?
    fn poll_exit(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.proc.try_wait().expect("try_wait");
        }
        self.exit.is_some()
    }

    fn kill9(&mut self) {
        if self.exit.is_none() {
            let _ = kill(self.pid(), Signal::SIGCONT);
            let _ = self.proc.kill();
            self.exit = Some(self.proc.wait().expect("wait for s3lead"));
        }
    }
}

/// The supervisors campaigning for the lock, and the files they share. Dropping it
/// kills every process the test started (also when a check panics), and keeps the
/// files for a post-mortem if the test is failing.
struct Cluster {
    lock: Lock,
    upstream: SocketAddr,
    journal: PathBuf,
    downstream: PathBuf,
    sups: Vec<Supervisor>,
    next_id: usize,
    scratch: Option<tempfile::TempDir>,
}

impl Cluster {
    fn new(lock: Lock) -> Cluster {
        let upstream = endpoint_addr(&support::s3_server().endpoint);
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
        }
    }

    fn dir(&self) -> &Path {
        self.scratch.as_ref().expect("scratch dir").path()
    }

    fn spawn(&mut self) {
        let id = format!("c{}", self.next_id);
        self.next_id += 1;
        let proxy = Proxy::start(self.upstream);
        let log = self.dir().join(format!("{id}.log"));
        let stderr = std::fs::File::create(&log).expect("supervisor log");
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = self.lock.run_timed(TIMINGS, &["--id", &id]);
        cmd.arg("--")
            .arg(exe)
            .args([
                WORKER_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .env(JOURNAL_ENV, &self.journal)
            .env(DOWNSTREAM_ENV, &self.downstream)
            .stdout(Stdio::null())
            .stderr(stderr);
        let proc = cmd.spawn().expect("spawn s3lead");
        self.sups.push(Supervisor {
            id,
            proc,
            proxy,
            log,
            exit: None,
            hit_by: None,
        });
    }

    /// Replaces every supervisor that has exited, so that SUPERVISORS campaign.
    fn replace_exited(&mut self) {
        let mut running = 0;
        for s in &mut self.sups {
            if !s.poll_exit() {
                running += 1;
            }
        }
        for _ in running..SUPERVISORS {
            self.spawn();
        }
    }

    fn sup(&mut self, id: &str) -> &mut Supervisor {
        self.sups
            .iter_mut()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no supervisor {id}"))
    }

    fn running(&mut self, id: &str) -> bool {
        self.sups.iter_mut().any(|s| s.id == id && !s.poll_exit())
    }

    /// Is `pid` alive and one of this test's workers (not a recycled pid)?
    fn is_worker(&self, pid: u32) -> bool {
        if !e2e::alive(pid as i32) {
            return false;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return false;
        };
        let mine = format!("{JOURNAL_ENV}={}", self.journal.display());
        env.split(|&b| b == 0).any(|v| v == mine.as_bytes())
    }

    /// Kills every supervisor still running, then any worker left (PDEATHSIG and the
    /// guard should have taken them all).
    fn shutdown(&mut self) {
        for s in &mut self.sups {
            s.kill9();
        }
        let mut j = Journal::new(self.journal.clone());
        j.refresh();
        let left: Vec<u32> = j
            .lives
            .values()
            .filter(|l| !l.ended)
            .map(|l| l.pid)
            .collect();
        let gone = poll_until(Duration::from_secs(10), || {
            left.iter().all(|&p| !self.is_worker(p))
        });
        if !gone {
            for &p in &left {
                if self.is_worker(p) {
                    eprintln!("chaos: worker {p} outlived its killed supervisor; killing it");
                    let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
        if std::thread::panicking() || std::env::var_os("S3LEAD_CHAOS_KEEP").is_some() {
            if let Some(dir) = self.scratch.take() {
                eprintln!(
                    "chaos: journal and supervisor logs kept in {}",
                    dir.keep().display()
                );
            }
        }
    }
}

/// Polls `f` every 20 ms for up to `limit`.
fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn living<'a>(c: &Cluster, j: &'a Journal) -> Vec<&'a Life> {
    j.lives
        .values()
        .filter(|l| !l.ended && c.is_worker(l.pid))
        .collect()
}

/// Waits until exactly one child runs, has had writes accepted downstream, and its
/// supervisor runs; replaces exited supervisors meanwhile.
fn settle(c: &mut Cluster, j: &mut Journal) -> Life {
    let mut found = None;
    let ok = poll_until(WAIT, || {
        c.replace_exited();
        j.refresh();
        let live = living(c, j);
        if let [l] = live[..] {
            if l.accepted_writes >= 3 {
                let l = l.clone();
                if c.running(&l.holder) {
                    found = Some(l);
                    return true;
                }
            }
        }
        false
    });
    match found {
        Some(l) if ok => l,
        _ => {
            let live: Vec<String> = living(c, j).iter().map(|l| l.to_string()).collect();
            panic!(
                "no single settled leader within {WAIT:?}; children running: {live:?}; newest: {:?}",
                j.lives
                    .values()
                    .max_by_key(|l| l.start_ns)
                    .map(|l| l.to_string())
            );
        }
    }
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

#[test]
fn leaders_never_overlap_under_chaos_on_s3() {
    let seed = env_number("S3LEAD_CHAOS_SEED")
        .unwrap_or_else(|| boot_ns() ^ u64::from(std::process::id()));
    let faults =
        env_number("S3LEAD_CHAOS_FAULTS").map_or(DEFAULT_FAULTS, |n| n.clamp(1, 100) as usize);
    let plan = plan(seed, faults);
    let server = support::s3_server();
    eprintln!(
        "chaos: {} server, seed {seed} (S3LEAD_CHAOS_SEED={seed} repeats this plan), {SUPERVISORS} supervisors, plan: {}",
        server.kind,
        plan.iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let began = boot_ns();
    let mut c = Cluster::new(Lock::s3("chaos"));
    let mut j = Journal::new(c.journal.clone());
    for _ in 0..SUPERVISORS {
        c.spawn();
    }
    let mut pauses: Vec<LongPause> = Vec::new();
    let mut injected = 0usize;

    for (round, &fault) in plan.iter().enumerate() {
        let leader = settle(&mut c, &mut j);
        let t0 = boot_ns();
        let sup = c.sup(&leader.holder);
        sup.hit_by = Some(fault);
        let mut resumed_ns = 0;
        match fault {
            Fault::Kill9 => {
                sup.kill9();
                // Its child goes with it (PDEATHSIG, and the guard process).
                if !poll_until(WAIT, || !c.is_worker(leader.pid)) {
                    panic!("the child of a kill -9'd s3lead is still running: {leader}");
                }
                c.replace_exited();
            }
            Fault::ShortPause | Fault::LongPause => {
                let pause = if fault == Fault::ShortPause {
                    SHORT_PAUSE
                } else {
                    LONG_PAUSE
                };
                sup.signal(Signal::SIGSTOP);
                let stopped_ns = boot_ns();
                std::thread::sleep(pause);
                sup.signal(Signal::SIGCONT);
                resumed_ns = boot_ns();
                if fault == Fault::LongPause {
                    pauses.push(LongPause {
                        child: leader.key(),
                        stopped_ns,
                        resumed_ns,
                    });
                }
            }
            Fault::Refuse | Fault::Blackhole => {
                sup.proxy.set(if fault == Fault::Refuse {
                    Mode::Refuse
                } else {
                    Mode::Blackhole
                });
                std::thread::sleep(CUT);
                sup.proxy.set(Mode::Pass);
            }
        }
        injected += 1;

        // Liveness: a new term starts, or (short pause only) the leader goes on.
        let going_on_at = resumed_ns + GOING_ON.as_nanos() as u64;
        let mut outcome = String::new();
        let ok = poll_until(WAIT, || {
            c.replace_exited();
            j.refresh();
            if j.max_term() > leader.term {
                let next = j.lives.values().max_by_key(|l| l.term).expect("a child");
                outcome = format!("new leader {} with term {}", next.holder, next.term);
                return true;
            }
            if fault == Fault::ShortPause {
                if let Some(l) = j.life(leader.key()) {
                    if !l.ended && l.last_ns >= going_on_at && c.is_worker(l.pid) {
                        outcome = format!("{} goes on with term {}", l.holder, l.term);
                        return true;
                    }
                }
            }
            false
        });
        assert!(
            ok,
            "no new leader within {WAIT:?} after {fault} of {} (term {})",
            leader.holder, leader.term
        );
        eprintln!(
            "chaos: fault {}/{}: {fault} of {} (term {}): {outcome} ({} ms after the fault began)",
            round + 1,
            plan.len(),
            leader.holder,
            leader.term,
            ms(boot_ns() - t0)
        );
    }
    // The last fault's stale child, if any, must be gone too.
    settle(&mut c, &mut j);

    c.shutdown();
    j.refresh();
    let record = c.lock.record();
    let verdict = judge(&j, &pauses, RESUME_BOUND.as_nanos() as u64);

    // What s3lead itself logged about its stop points (boot clock, ms).
    let mut late_stops = Vec::new();
    let mut exits = Vec::new();
    for s in &c.sups {
        let long_paused = s.hit_by == Some(Fault::LongPause);
        for line in std::fs::read_to_string(&s.log).unwrap_or_default().lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let msg = v["fields"]["message"].as_str().unwrap_or_default();
            let (Some(now), Some(until)) = (
                v["fields"]["now_ms"].as_u64(),
                v["fields"]["valid_until_ms"].as_u64(),
            ) else {
                continue;
            };
            let stop = msg.starts_with("sent ") || msg.starts_with("sending SIGKILL");
            if stop && now > until && !long_paused {
                late_stops.push(format!(
                    "{}: {msg:?} at {now} ms, lease valid until {until} ms",
                    s.id
                ));
            }
        }
        let st = s.exit.expect("all reaped");
        let expected = match (st.code(), s.hit_by) {
            (None, _) => true, // SIGKILL: by the test, a fault or the final shutdown
            (Some(76), Some(_)) => true,
            _ => false,
        };
        if !expected {
            exits.push(format!("{} ({:?}) exited with {st}", s.id, s.hit_by));
        }
    }

    let elapsed_s = (boot_ns() - began) as f64 / 1e9;
    eprintln!(
        "chaos: {} children, terms 1..={}, {} downstream writes, {} overlaps explained by a long pause, lock record term {}, {elapsed_s:.1} s",
        j.lives.len(),
        j.max_term(),
        j.writes.len(),
        verdict.explained.len(),
        record["term"]
    );
    for (what, list) in [
        ("long pause", &verdict.pauses),
        ("explained overlap", &verdict.explained),
        ("OVERLAP", &verdict.overlaps),
        ("STALE WRITE ACCEPTED", &verdict.stale_accepted),
        ("TERM", &verdict.term_errors),
        ("SLOW STOP AFTER RESUME", &verdict.slow_stops),
        ("stop logged after the lease's end", &late_stops),
        ("unexpected exit", &exits),
        ("unparsed journal line", &j.garbage),
    ] {
        for l in list.iter() {
            eprintln!("chaos: {what}: {l}");
        }
    }
    let summary = format!(
        "chaos: {injected} faults, {} overlaps, {} stale writes accepted, {} stale writes rejected",
        verdict.overlaps.len(),
        verdict.stale_accepted.len(),
        verdict.stale_rejected
    );
    eprintln!("{summary}");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir");
    std::fs::write(target.join("chaos-summary.txt"), format!("{summary}\n"))
        .expect("write summary");

    assert_eq!(
        verdict.overlaps.len(),
        0,
        "children overlapped: {:#?}",
        verdict.overlaps
    );
    assert_eq!(
        verdict.stale_accepted.len(),
        0,
        "stale writes accepted: {:#?}",
        verdict.stale_accepted
    );
    assert!(
        verdict.term_errors.is_empty(),
        "terms: {:#?}",
        verdict.term_errors
    );
    assert!(
        j.garbage.is_empty(),
        "unparsed journal lines: {:#?}",
        j.garbage
    );
    assert!(
        record["term"].as_u64() >= Some(j.max_term()),
        "the lock record's term {} is behind the children's {}",
        record["term"],
        j.max_term()
    );
    assert!(
        exits.is_empty(),
        "a supervisor hit by a fault must exit with the lost code (76), others only when killed: {exits:#?}"
    );
    assert!(
        late_stops.is_empty(),
        "stops logged after the lease's end without a long pause: {late_stops:#?}"
    );
    assert!(
        verdict.slow_stops.is_empty(),
        "stale children not stopped within {RESUME_BOUND:?} of their supervisor's SIGCONT: {:#?}",
        verdict.slow_stops
    );
}
