//! The faults the chaos test injects, each at the current leader, and how each one is
//! over: a fault that ends the leader's lease is over as soon as a successor has settled
//! (then whatever was cut or stopped is let go), one the leader may survive as soon as
//! the store shows it renewed. No fault lasts a fixed time longer than it must, which is
//! what makes a hundred of them fit in a few minutes.
//!
//! Every fault that ends a lease runs every other time with *escapees*: before the
//! fault, the leader's child starts two descendants that leave its process group (one by
//! `setsid`, ignoring the stop signal; one by `setpgid`) and journal under its term; the
//! judge then holds them to the same rule as the child.

use crate::cluster::{Cluster, settle};
use crate::e2e::proxy::Mode;
use crate::e2e::{descendants, poll_until};
use crate::journal::{HostPause, Journal, Life};
use crate::worker::boot_ns;
use crate::{LEASE, RENEW_EVERY, WAIT};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fmt;
use std::time::Duration;

/// Shorter than the safety margin: the leader may go on. It need not: a pause that
/// holds back a renewal longer than the retry period (250 ms) can take the leader past
/// its stop point, and then it must stop.
pub const SHORT_PAUSE: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `kill -9` of s3lead: its guard must kill everything it started.
    Kill9,
    /// SIGSTOP of s3lead shorter than the margin: it goes on, or stops in time.
    ShortPause,
    /// SIGSTOP of s3lead until a successor has settled: the guard's watchdog kills on
    /// time while s3lead cannot.
    StopPastLease,
    /// The store refuses s3lead's connections until a successor has settled.
    Refuse,
    /// The store swallows s3lead's requests until a successor has settled.
    Blackhole,
    /// The leader's whole process tree frozen until a successor has settled, as a host
    /// or VM paused past its lease: the child may run on after the successor starts
    /// (docs/design.md §1's exception), so its writes must be rejected downstream. Its
    /// processes resume first and get one write in before the guard resumes.
    HostPause,
    /// s3lead's stderr is full and not drained, and s3lead is given something to log
    /// (a forwarded SIGUSR2): it must keep renewing, for longer than a lease.
    StderrBlocked,
    /// s3lead's stderr is full, then the store refuses it: s3lead wedges on its first
    /// complaint, and the guard's watchdog must still kill on time.
    StderrBlockedCut,
    /// The lock object deleted behind everyone's back while the leader runs.
    Delete,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Kill9,
        Kind::ShortPause,
        Kind::StopPastLease,
        Kind::Refuse,
        Kind::Blackhole,
        Kind::HostPause,
        Kind::StderrBlocked,
        Kind::StderrBlockedCut,
        Kind::Delete,
    ];

    /// The name `S3LEAD_CHAOS_KINDS` takes.
    pub fn slug(self) -> &'static str {
        match self {
            Kind::Kill9 => "kill9",
            Kind::ShortPause => "short-pause",
            Kind::StopPastLease => "stop",
            Kind::Refuse => "refuse",
            Kind::Blackhole => "blackhole",
            Kind::HostPause => "host-pause",
            Kind::StderrBlocked => "stderr",
            Kind::StderrBlockedCut => "stderr-cut",
            Kind::Delete => "delete",
        }
    }

    pub fn from_slug(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.slug() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill9 => "kill -9",
            Kind::ShortPause => "SIGSTOP 300ms",
            Kind::StopPastLease => "SIGSTOP past the lease",
            Kind::Refuse => "store refused",
            Kind::Blackhole => "store blackholed",
            Kind::HostPause => "host paused past the lease",
            Kind::StderrBlocked => "stderr full",
            Kind::StderrBlockedCut => "stderr full, store refused",
            Kind::Delete => "lock object deleted",
        }
    }

    /// Does the fault end the leader's lease?
    pub fn ends_lease(self) -> bool {
        !matches!(self, Kind::ShortPause | Kind::StderrBlocked)
    }

    /// Does it stop or wedge s3lead itself (see `Supervisor::stalled`)?
    fn stalls(self) -> bool {
        matches!(
            self,
            Kind::StopPastLease | Kind::HostPause | Kind::StderrBlockedCut
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: Kind,
    pub escapees: bool,
    /// How long after the leader has settled the fault begins: faults hit at every
    /// phase of the renewal cycle (during a renewal, just before one, just after), not
    /// always just after the acquisition. Below one renewal interval it costs nothing:
    /// the lease still ends one lease after the acquisition.
    pub phase: Duration,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        if self.escapees {
            f.write_str(" (with escapees)")?;
        }
        Ok(())
    }
}

/// xorshift64: enough to vary plans between runs, and replayable from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// `n` faults of `kinds`, every kind about as often, every other one of a kind that ends
/// the lease with escapees, in an order and at phases drawn from `seed`.
pub fn plan(seed: u64, n: usize, kinds: &[Kind]) -> Vec<Fault> {
    let mut seen = std::collections::HashMap::new();
    let mut plan: Vec<Fault> = kinds
        .iter()
        .copied()
        .cycle()
        .take(n)
        .map(|kind| {
            let k = seen.entry(kind).or_insert(0usize);
            *k += 1;
            Fault {
                kind,
                escapees: kind.ends_lease() && *k % 2 == 0,
                phase: Duration::ZERO,
            }
        })
        .collect();
    let mut rng = Rng(seed | 1);
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.next(i as u64 + 1) as usize);
    }
    for f in &mut plan {
        f.phase = Duration::from_millis(rng.next(RENEW_EVERY.as_millis() as u64));
    }
    plan
}

/// How a fault ended.
pub enum Outcome {
    /// A successor settled (for a fault that ends the lease, the only acceptable end).
    NewLeader(Life),
    /// The leader went on, shown by renewals the store holds.
    GoesOn(String),
    /// A leader that had to go on lost its lease: a finding, not a test failure mode of
    /// the harness.
    Stalled(String),
}

/// The lease id and seq of the record now, if it is `term`'s.
fn lease_of(c: &Cluster, term: u64) -> Option<(String, u64)> {
    let r = c.lock.try_record()?;
    if r["term"].as_u64() != Some(term) {
        return None;
    }
    Some((r["lease_id"].as_str()?.to_owned(), r["seq"].as_u64()?))
}

/// Injects `fault` at `leader` and waits until it is over.
pub fn inject(
    c: &mut Cluster,
    j: &mut Journal,
    fault: Fault,
    leader: &Life,
    pauses: &mut Vec<HostPause>,
) -> Outcome {
    let id = leader.holder.clone();
    let after = format!("after {fault} of {id} (term {})", leader.term);
    let next_term = leader.term + 1;
    {
        let s = c.sup(&id);
        s.hits.push(fault.kind.name());
        s.stalled |= fault.kind.stalls();
    }
    if fault.escapees {
        start_escapees(c, j, leader);
    }
    match fault.kind {
        Kind::Kill9 => {
            c.sup(&id).kill9();
            // Everything it started goes with it (the guard sees its control pipe close).
            let ours: Vec<Life> = j
                .lives
                .values()
                .filter(|l| l.term == leader.term)
                .cloned()
                .collect();
            if !poll_until(WAIT, || ours.iter().all(|l| !c.alive(l))) {
                panic!("processes of a kill -9'd s3lead are still running: {ours:?}");
            }
            Outcome::NewLeader(settle(c, j, next_term, &after))
        }
        Kind::ShortPause => {
            let s = c.sup(&id);
            s.signal(Signal::SIGSTOP);
            std::thread::sleep(SHORT_PAUSE);
            s.signal(Signal::SIGCONT);
            goes_on(c, j, leader, lease_of(c, leader.term), 1, false, &after)
        }
        Kind::StopPastLease => {
            c.sup(&id).signal(Signal::SIGSTOP);
            let next = settle(c, j, next_term, &after);
            c.sup(&id).signal(Signal::SIGCONT);
            Outcome::NewLeader(next)
        }
        Kind::Refuse | Kind::Blackhole => {
            let mode = if fault.kind == Kind::Refuse {
                Mode::Refuse
            } else {
                Mode::Blackhole
            };
            c.sup(&id).proxy.set(mode);
            let next = settle(c, j, next_term, &after);
            c.sup(&id).proxy.set(Mode::Pass);
            Outcome::NewLeader(next)
        }
        Kind::HostPause => host_pause(c, j, leader, pauses, &after),
        Kind::StderrBlocked => {
            let before = lease_of(c, leader.term);
            let s = c.sup(&id);
            s.block_stderr();
            // Forwarding a signal is logged, after it is sent.
            s.signal(Signal::SIGUSR2);
            // A lease's worth of renewals while the pipe stays full: without them the
            // lease would have run out.
            let renewals = (LEASE.as_millis() / RENEW_EVERY.as_millis()) as u64 + 1;
            let outcome = goes_on(c, j, leader, before, renewals, true, &after);
            c.sup(&id).unblock_stderr();
            outcome
        }
        Kind::StderrBlockedCut => {
            let s = c.sup(&id);
            s.block_stderr();
            s.proxy.set(Mode::Refuse);
            let next = settle(c, j, next_term, &after);
            let s = c.sup(&id);
            s.proxy.set(Mode::Pass);
            s.unblock_stderr();
            Outcome::NewLeader(next)
        }
        Kind::Delete => {
            // Only a candidate that has seen the record can know its term: one that
            // starts while the object is gone would create term 1. So no supervisor is
            // started until a successor leads, and the object is deleted only once every
            // follower has logged the leader's term.
            c.hold_spawns = true;
            let ok = poll_until(WAIT, || {
                let mut followers = 0;
                let mut all = true;
                for s in c.sups.iter_mut().filter(|s| s.id != id) {
                    if !s.poll_exit() {
                        followers += 1;
                        all &= s.saw(&id, leader.term);
                    }
                }
                followers > 0 && all
            });
            assert!(
                ok,
                "the followers never all logged term {} of {id}",
                leader.term
            );
            c.lock.delete_object();
            let next = settle(c, j, next_term, &after);
            c.hold_spawns = false;
            Outcome::NewLeader(next)
        }
    }
}

/// Sends the leader's child SIGUSR1 and waits until both escapees journal accepted
/// writes under its term.
fn start_escapees(c: &mut Cluster, j: &mut Journal, leader: &Life) {
    assert!(c.alive(leader), "the leader's child is gone: {leader}");
    let _ = kill(Pid::from_raw(leader.pid as i32), Signal::SIGUSR1);
    let ok = poll_until(WAIT, || {
        c.observe(j);
        let e = j.escapees_of(leader);
        e.len() == 2 && e.iter().all(|l| l.accepted_writes >= 1)
    });
    assert!(
        ok,
        "the escapees of {leader} did not start: {:?}",
        j.escapees_of(leader)
    );
}

/// Waits until the store shows `renewals` more writes of the leader's lease than
/// `before` while its child runs (it goes on), or a successor settles (it stalled, if it
/// `must` go on).
fn goes_on(
    c: &mut Cluster,
    j: &mut Journal,
    leader: &Life,
    before: Option<(String, u64)>,
    renewals: u64,
    must: bool,
    after: &str,
) -> Outcome {
    let mut shown = None;
    let ok = poll_until(WAIT, || {
        c.replace_exited();
        c.observe(j);
        if j.max_term() > leader.term {
            return true;
        }
        if let (Some((id, seq0)), Some((id_now, seq))) = (&before, lease_of(c, leader.term)) {
            if *id == id_now && seq >= seq0 + renewals && c.alive(leader) {
                shown = Some(seq - seq0);
                return true;
            }
        }
        false
    });
    assert!(
        ok,
        "neither renewals nor a new leader within {WAIT:?} {after}"
    );
    match (shown, before) {
        (Some(n), _) => Outcome::GoesOn(format!(
            "{} goes on with term {}, {n} renewals",
            leader.holder, leader.term
        )),
        (None, _) if !must => Outcome::NewLeader(settle(c, j, leader.term + 1, after)),
        (None, before) => {
            // Its own stop lines after this are the stall's consequence, not a finding.
            c.sup(&leader.holder).stalled = true;
            let next = settle(c, j, leader.term + 1, after);
            Outcome::Stalled(format!(
                "{} (term {}) lost its lease {after}: new leader {} with term {}{}",
                leader.holder,
                leader.term,
                next.holder,
                next.term,
                if before.is_none() {
                    " (its lease was already gone when the fault began)"
                } else {
                    ""
                }
            ))
        }
    }
}

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Does `pid` hold a lock on the file with inode `ino` (`/proc/locks`)?
fn holds_lock(pid: u32, ino: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().filter(|l| !l.contains("->")).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(4).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
            && f.get(5)
                .and_then(|dev_ino| dev_ino.rsplit(':').next())
                .and_then(|i| i.parse::<u64>().ok())
                == Some(ino)
    })
}

/// SIGSTOPs `pid`, but never inside the downstream's critical section: a frozen holder
/// of its lock would stall every successor's writes, and with them the test (a real
/// downstream would time such a lock out). Caught holding it, the process gets a moment
/// to leave and is stopped again.
fn freeze_outside_downstream(pid: u32, downstream: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(downstream).map_or(0, |m| m.ino());
    let p = Pid::from_raw(pid as i32);
    for _ in 0..1000 {
        let _ = kill(p, Signal::SIGSTOP);
        let stopped = poll_until(WAIT, || matches!(state(pid), Some('T') | Some('t') | None));
        assert!(stopped, "process {pid} did not stop");
        if !holds_lock(pid, ino) {
            return;
        }
        let _ = kill(p, Signal::SIGCONT);
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("process {pid} never left the downstream's critical section");
}

fn host_pause(
    c: &mut Cluster,
    j: &mut Journal,
    leader: &Life,
    pauses: &mut Vec<HostPause>,
    after: &str,
) -> Outcome {
    let s3lead = c.sup(&leader.holder).pid().as_raw() as u32;
    let tree = descendants(s3lead);
    // s3lead's own children are its guard; everything below is the command's.
    let guards: Vec<u32> = tree
        .iter()
        .copied()
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|pp| pp.parse::<u32>().ok())
                    == Some(s3lead)
            })
        })
        .collect();
    let command: Vec<u32> = tree
        .iter()
        .copied()
        .filter(|p| !guards.contains(p))
        .collect();
    let lives: Vec<(u64, u32)> = j
        .lives
        .values()
        .filter(|l| l.term == leader.term && command.contains(&l.pid) && c.alive(l))
        .map(|l| l.key())
        .collect();
    assert!(
        lives.contains(&leader.key()),
        "the leader's child {leader} is not below its s3lead {s3lead}: {tree:?}"
    );
    let stopped_ns = boot_ns();
    c.sup(&leader.holder).signal(Signal::SIGSTOP);
    for &g in &guards {
        let _ = kill(Pid::from_raw(g as i32), Signal::SIGSTOP);
    }
    for &p in &command {
        freeze_outside_downstream(p, &c.downstream);
    }
    c.excused.extend(lives.iter().copied());

    let next = settle(c, j, leader.term + 1, after);

    // The command's processes resume first and make one downstream write, as if the
    // kernel had not got round to the guard: the fencing term must refuse it.
    let resumed_ns = boot_ns();
    for &p in &command {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGCONT);
    }
    let wrote = poll_until(Duration::from_secs(2), || {
        j.refresh();
        j.writes
            .iter()
            .rev()
            .take_while(|w| w.ns >= resumed_ns)
            .any(|w| lives.contains(&(w.term, w.pid)))
    });
    if !wrote {
        eprintln!(
            "chaos: the frozen lives of term {} made no write after resuming",
            leader.term
        );
    }
    for &g in &guards {
        let _ = kill(Pid::from_raw(g as i32), Signal::SIGCONT);
    }
    c.sup(&leader.holder).signal(Signal::SIGCONT);
    let gone = poll_until(WAIT, || {
        c.observe(j);
        lives.iter().all(|k| j.life(*k).is_none_or(|l| !c.alive(l)))
    });
    assert!(
        gone,
        "processes of a host-paused leader still run {WAIT:?} after their guard resumed: {lives:?}"
    );
    pauses.push(HostPause {
        lives,
        stopped_ns,
        resumed_ns,
    });
    Outcome::NewLeader(next)
}
