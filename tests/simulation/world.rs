//! The simulated world: candidates running the real [`Election`] state machine, one
//! [`MemoryStore`] holding the lock object, a network between them, and supervised
//! children, all in one thread under one seeded discrete-event scheduler.
//!
//! Time is simulated real time ([`Nanos`]); each host reads it through its own
//! [`LocalClock`]. The queue orders events by real instant; events due at the same
//! instant are ordered by a random draw, so ties are explored, yet replayed exactly.
//!
//! What a supervisor is, here: the driver of `lease.rs` (poll, perform the request,
//! hand back the answer with the local time of its arrival) joined to the child timer of
//! `cli/run.rs` (kill the child when the local clock reaches the last `valid_until` the
//! lease reported), and a process that exits once its child is gone and is restarted
//! with no memory.

use super::check::{ChildRun, Violation};
use super::rng::Rng;
use super::scenario::{At, ChildPolicy, LocalClock, Nanos, Scenario, nanos};
use s3lead::clock::Instant;
use s3lead::election::{Election, Event, Reply, Request, Step};
use s3lead::record::LockRecord;
use s3lead::store::memory::MemoryStore;
use s3lead::store::{ReadReply, StoreError};
use s3lead::timing::Timing;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Beyond this many events a run is stuck in a loop that simulated time cannot end.
const MAX_EVENTS: u64 = 5_000_000;

/// What the run did, for the checks and for the trace.
pub struct Outcome {
    pub children: Vec<ChildRun>,
    /// Found while running: things no correct protocol or model does (an election event
    /// that cannot happen, a machine that will not settle, …).
    pub violations: Vec<Violation>,
    /// When the calm phase had drained every consequence of the fault phase.
    pub drained_at: Nanos,
    pub end_at: Nanos,
    pub trace: Vec<TraceLine>,
}

pub struct TraceLine {
    pub at: Nanos,
    pub who: String,
    pub what: String,
}

/// Plays `sc` out; with `tracing`, records what happened, line by line.
pub fn run(sc: &Scenario, tracing: bool) -> Outcome {
    let mut w = World {
        sc,
        // A different stream from the scenario's: the scenario is fixed before the run.
        rng: Rng::new(sc.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xD1CE),
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        store: MemoryStore::new(),
        cands: sc
            .candidates
            .iter()
            .map(|c| Cand {
                clock: c.clock,
                timing: c.timing,
                incarnation: 0,
                process: None,
                frozen: false,
                deferred: Vec::new(),
                freezes: Vec::new(),
                cut_off_until: 0,
                congested_until: 0,
            })
            .collect(),
        children: Vec::new(),
        violations: Vec::new(),
        trace: Vec::new(),
        tracing,
        calm: false,
        horizon: 0,
        drained_at: 0,
        end_at: Nanos::MAX,
        next_request: 0,
    };
    for (c, cand) in sc.candidates.iter().enumerate() {
        w.schedule(cand.start_at, Ev::Start { c });
    }
    for &t in &sc.crashes {
        w.schedule(t, Ev::Crash);
    }
    for &t in &sc.freezes {
        w.schedule(t, Ev::Freeze);
    }
    for &t in &sc.partitions {
        w.schedule(t, Ev::Partition);
    }
    for &t in &sc.congestions {
        w.schedule(t, Ev::Congestion);
    }
    w.schedule(sc.fault_phase, Ev::Calm);
    let mut events = 0u64;
    while let Some(s) = w.queue.pop() {
        if s.at > w.end_at {
            break;
        }
        events += 1;
        if events > MAX_EVENTS {
            w.violation(format!(
                "more than {MAX_EVENTS} events: the run does not settle"
            ));
            break;
        }
        w.now = s.at;
        w.dispatch(s.ev);
    }
    Outcome {
        children: w.children,
        violations: w.violations,
        drained_at: w.drained_at,
        end_at: w.end_at,
        trace: w.trace,
    }
}

/// What happens to a request on its way, chosen when it is sent.
#[derive(Clone, Debug)]
enum Fate {
    Deliver,
    /// Never reaches the store.
    LoseRequest,
    /// Applied; the answer never comes back.
    LoseAnswer,
    /// The store answers this error and writes nothing.
    Refuse(StoreError),
    /// The write lands, then the store answers this error.
    FailAfterWrite(StoreError),
}

#[derive(Debug)]
enum Ev {
    /// A supervisor (re)starts, with no memory of any earlier life.
    Start {
        c: usize,
    },
    /// The wake-up a `Step::Wait` asked for.
    Wake {
        c: usize,
        inc: u32,
        round: u64,
    },
    /// A request reaches the store.
    AtStore {
        c: usize,
        inc: u32,
        id: u64,
        req: Request,
        fate: Fate,
        back: Nanos,
    },
    /// An answer from the store (`via_network`) or the sender's own timeout reaches
    /// the candidate.
    Answer {
        c: usize,
        inc: u32,
        id: u64,
        reply: Reply,
        via_network: bool,
    },
    /// The supervisor's child timer: the local clock reached the child's deadline.
    ChildDue {
        c: usize,
        inc: u32,
        round: u64,
    },
    /// The leader's child exits by itself (its job is done, or an operator stopped it):
    /// a process of its own, it exits even while its supervisor is paused.
    ChildExits {
        c: usize,
        inc: u32,
    },
    /// The supervisor reaps the exited child and releases the lease.
    Release {
        c: usize,
        inc: u32,
    },
    Crash,
    Freeze,
    /// Some host loses its network for a while.
    Partition,
    /// Some host's network becomes very slow for a while.
    Congestion,
    Thaw {
        c: usize,
    },
    Calm,
}

impl Ev {
    /// The candidate whose supervisor must act on this event (and cannot while paused).
    fn candidate(&self) -> Option<usize> {
        match self {
            Ev::Wake { c, .. }
            | Ev::Answer { c, .. }
            | Ev::ChildDue { c, .. }
            | Ev::Release { c, .. } => Some(*c),
            _ => None,
        }
    }
}

struct Scheduled {
    at: Nanos,
    tie: u64,
    seq: u64,
    ev: Ev,
}

impl Scheduled {
    fn key(&self) -> (Nanos, u64, u64) {
        (self.at, self.tie, self.seq)
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: `BinaryHeap` pops the greatest, the world wants the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// One host: its clock and its current supervisor process, if any.
struct Cand {
    clock: LocalClock,
    timing: Timing,
    incarnation: u32,
    process: Option<Process>,
    frozen: bool,
    /// Events for this supervisor that arrived while it was paused, in arrival order.
    deferred: Vec<Ev>,
    /// Real intervals during which it was paused.
    freezes: Vec<(Nanos, Nanos)>,
    /// Until then, the host's requests and the answers to it are lost.
    cut_off_until: Nanos,
    /// Until then, the host's requests and their answers are slow (up to a lease).
    congested_until: Nanos,
}

/// One life of a supervisor (an `s3lead run` process).
struct Process {
    election: Election,
    /// The request in flight (the machine allows one).
    awaiting: Option<u64>,
    /// Only the latest wake-up counts.
    wake_gen: u64,
    child: Option<Child>,
    /// The machine said `Done`.
    done: bool,
}

struct Child {
    /// Index into `World::children`.
    run: usize,
    /// Local instant by which the child must be dead.
    deadline: Instant,
    /// Only the latest child timer counts.
    round: u64,
    /// The stop began (at risk, lost): later renewals no longer extend the deadline.
    fixed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndCause {
    Deadline,
    Lost,
    ExitedOnItsOwn,
    Crashed,
}

struct World<'a> {
    sc: &'a Scenario,
    rng: Rng,
    now: Nanos,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    store: MemoryStore,
    cands: Vec<Cand>,
    children: Vec<ChildRun>,
    violations: Vec<Violation>,
    trace: Vec<TraceLine>,
    tracing: bool,
    calm: bool,
    /// The latest instant at which a consequence of the fault phase is due: an answer,
    /// a landing write, a timeout, a thaw, a restart.
    horizon: Nanos,
    drained_at: Nanos,
    end_at: Nanos,
    next_request: u64,
}

/// Records a trace line, formatting it only when tracing.
macro_rules! note {
    ($w:expr, $who:expr, $($fmt:tt)*) => {
        if $w.tracing {
            let line = TraceLine { at: $w.now, who: $who, what: format!($($fmt)*) };
            $w.trace.push(line);
        }
    };
}

impl World<'_> {
    fn schedule(&mut self, at: Nanos, ev: Ev) {
        let tie = self.rng.next_u64();
        self.schedule_with_tie(at, tie, ev);
    }

    fn schedule_with_tie(&mut self, at: Nanos, tie: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            tie,
            seq: self.seq,
            ev,
        });
    }

    /// A consequence of the fault phase is due at `at`: the calm phase is judged only
    /// once it has happened.
    fn fault_consequence(&mut self, at: Nanos) {
        if !self.calm {
            self.horizon = self.horizon.max(at);
        }
    }

    fn violation(&mut self, what: String) {
        self.violations.push(Violation { at: self.now, what });
    }

    fn who(&self, c: usize) -> String {
        format!("c{c}.{}", self.cands[c].incarnation)
    }

    fn local(&self, c: usize) -> Instant {
        self.cands[c].clock.at(self.now)
    }

    fn real_at(&self, c: usize, t: Instant) -> Nanos {
        self.cands[c].clock.real_at(t)
    }

    fn process(&mut self, c: usize, inc: u32) -> Option<&mut Process> {
        let cand = &mut self.cands[c];
        if cand.incarnation != inc {
            return None;
        }
        cand.process.as_mut()
    }

    fn dispatch(&mut self, ev: Ev) {
        if let Ev::Answer {
            c,
            via_network: true,
            ..
        } = ev
        {
            if self.now < self.cands[c].cut_off_until {
                note!(self, self.who(c), "an answer is lost: the host is cut off");
                return;
            }
        }
        if let Some(c) = ev.candidate() {
            if self.cands[c].frozen {
                self.cands[c].deferred.push(ev);
                return;
            }
        }
        match ev {
            Ev::Start { c } => self.start(c),
            Ev::Wake { c, inc, round } => {
                if let Some(p) = self.process(c, inc) {
                    if p.wake_gen == round && p.awaiting.is_none() {
                        self.drive(c);
                    }
                }
            }
            Ev::AtStore {
                c,
                inc,
                id,
                req,
                fate,
                back,
            } => self.at_store(c, inc, id, req, fate, back),
            Ev::Answer {
                c,
                inc,
                id,
                reply,
                via_network,
            } => self.answer(c, inc, id, reply, via_network),
            Ev::Partition => self.partition(),
            Ev::Congestion => self.congestion(),
            Ev::ChildDue { c, inc, round } => self.child_due(c, inc, round),
            Ev::ChildExits { c, inc } => self.child_exits(c, inc),
            Ev::Release { c, inc } => self.release(c, inc),
            Ev::Crash => self.crash(),
            Ev::Freeze => self.freeze(),
            Ev::Thaw { c } => self.thaw(c),
            Ev::Calm => {
                self.calm = true;
                self.drained_at = self.now.max(self.horizon);
                self.end_at = self.drained_at + self.sc.liveness_bound() + 3 * self.sc.max_lease();
                note!(
                    self,
                    "world".into(),
                    "calm phase begins: no new faults; the fault phase has drained by {}; run ends at {}",
                    At(self.drained_at),
                    At(self.end_at)
                );
            }
        }
    }

    fn start(&mut self, c: usize) {
        let cand = &mut self.cands[c];
        if cand.process.is_some() {
            return;
        }
        cand.incarnation += 1;
        let holder = format!("c{c}.{}", cand.incarnation);
        cand.process = Some(Process {
            election: Election::new(cand.timing, holder),
            awaiting: None,
            wake_gen: 0,
            child: None,
            done: false,
        });
        note!(self, self.who(c), "supervisor starts, campaigns");
        self.drive(c);
    }

    /// Polls the machine until it sends a request, waits or is done.
    fn drive(&mut self, c: usize) {
        for _ in 0..1_000 {
            let local = self.local(c);
            let step = {
                let Some(p) = self.cands[c].process.as_mut() else {
                    return;
                };
                if p.awaiting.is_some() || p.done {
                    return;
                }
                p.election.poll(local)
            };
            match step {
                Step::Send(req) => return self.send(c, req),
                Step::Event(e) => self.on_event(c, e),
                Step::Wait(t) if t <= local => {}
                Step::Wait(t) => {
                    let at = self.real_at(c, t);
                    let inc = self.cands[c].incarnation;
                    let Some(p) = self.cands[c].process.as_mut() else {
                        return;
                    };
                    p.wake_gen += 1;
                    let round = p.wake_gen;
                    self.schedule(at, Ev::Wake { c, inc, round });
                    return;
                }
                Step::Done => {
                    let Some(p) = self.cands[c].process.as_mut() else {
                        return;
                    };
                    p.done = true;
                    let child_runs = p.child.is_some();
                    if !child_runs {
                        self.exit(c, "the election is over");
                    } else if self.sc.variant.child_policy == ChildPolicy::KilledWhenMachineSaysLost
                    {
                        self.end_child(c, EndCause::Lost);
                        self.exit(c, "the election is over");
                    } else {
                        note!(
                            self,
                            self.who(c),
                            "election over; the child runs until its deadline"
                        );
                    }
                    return;
                }
            }
        }
        self.violation(format!(
            "c{c}: the state machine did not settle at one instant"
        ));
    }

    fn on_event(&mut self, c: usize, e: Event) {
        let policy = self.sc.variant.child_policy;
        match e {
            Event::Observed {
                holder,
                term,
                released,
            } => {
                let how = if released { "released by" } else { "held by" };
                note!(self, self.who(c), "observes: {how} {holder}, term {term}");
            }
            Event::Elected { term, .. } => self.start_child(c, term.get()),
            Event::Recovered => note!(self, self.who(c), "renewed after trouble"),
            Event::AtRisk { valid_until } => {
                note!(
                    self,
                    self.who(c),
                    "AT RISK: stop point passed; the child must be dead by {}",
                    At(self.real_at(c, valid_until))
                );
                if policy == ChildPolicy::KilledAtValidUntil {
                    self.fix_deadline(c, Some(valid_until));
                }
            }
            Event::Lost(reason) => {
                note!(self, self.who(c), "LOST: {reason}");
                match policy {
                    ChildPolicy::KilledAtValidUntil => self.fix_deadline(c, None),
                    ChildPolicy::KilledWhenMachineSaysLost => {
                        if self.has_child(c) {
                            self.end_child(c, EndCause::Lost);
                            self.exit(c, "its lease is lost");
                        }
                    }
                }
            }
            Event::Released => note!(self, self.who(c), "released"),
            Event::Abandoned => note!(self, self.who(c), "abandoned"),
            Event::Fatal(e) => self.violation(format!("c{c}: fatal error from the election: {e}")),
        }
    }

    fn has_child(&self, c: usize) -> bool {
        self.cands[c]
            .process
            .as_ref()
            .is_some_and(|p| p.child.is_some())
    }

    fn start_child(&mut self, c: usize, term: u64) {
        let inc = self.cands[c].incarnation;
        let Some(p) = self.cands[c].process.as_mut() else {
            return;
        };
        if p.child.is_some() {
            return self.violation(format!("c{c}: elected again while its child runs"));
        }
        let Some(deadline) = p.election.valid_until() else {
            return self.violation(format!("c{c}: elected without a valid_until"));
        };
        let run = self.children.len();
        p.child = Some(Child {
            run,
            deadline,
            round: 0,
            fixed: false,
        });
        self.children.push(ChildRun {
            cand: c,
            incarnation: inc,
            term,
            start: self.now,
            end: None,
            late_since: None,
        });
        let due = self.real_at(c, deadline);
        note!(
            self,
            self.who(c),
            "ELECTED, term {term}: child starts; must be dead by {}",
            At(due)
        );
        if self.sc.variant.child_policy == ChildPolicy::KilledAtValidUntil {
            self.schedule(due.max(self.now), Ev::ChildDue { c, inc, round: 0 });
        }
        self.maybe_cut_off_leader(c);
        if !self.calm && self.rng.chance(self.sc.faults.resign) {
            let at = self.now + self.rng.upto(2 * nanos(self.cands[c].timing.lease()));
            self.schedule(at, Ev::ChildExits { c, inc });
        }
    }

    /// After each answer, as `lease.rs` publishes it: the child may run until the
    /// machine's current `valid_until`.
    fn follow_valid_until(&mut self, c: usize) {
        if self.sc.variant.child_policy != ChildPolicy::KilledAtValidUntil {
            return;
        }
        let inc = self.cands[c].incarnation;
        let Some(p) = self.cands[c].process.as_mut() else {
            return;
        };
        let Some(v) = p.election.valid_until() else {
            return;
        };
        let Some(child) = p.child.as_mut().filter(|ch| !ch.fixed) else {
            return;
        };
        if v != child.deadline {
            // Later after a renewal. Earlier would be news (the machine learnt that its
            // lease counts from an earlier send): the supervisor obeys at once, and if
            // that instant has passed already, `end_child` reports the child as late.
            let extended = v > child.deadline;
            child.deadline = v;
            child.round += 1;
            let round = child.round;
            let due = self.real_at(c, v);
            note!(
                self,
                self.who(c),
                "valid_until moved: child may run until {}",
                At(due)
            );
            self.schedule(due.max(self.now), Ev::ChildDue { c, inc, round });
            if extended {
                self.maybe_cut_off_leader(c);
            }
        }
    }

    /// The worst moment for a leader to lose its network is right after a write that
    /// extended its lease: its child then runs to `valid_until` with the least room
    /// anyone has. Random partitions rarely hit that instant; this one aims for it.
    fn maybe_cut_off_leader(&mut self, c: usize) {
        if !self.calm && self.rng.chance(self.sc.faults.cut_after_renewal) {
            let lease = nanos(self.cands[c].timing.lease());
            let len = self.rng.upto(2 * lease);
            self.cut_off(c, len);
        }
    }

    /// The stop has begun (at risk, lost): the child dies by `valid_until` (or the last
    /// deadline known), whatever later answers say.
    fn fix_deadline(&mut self, c: usize, valid_until: Option<Instant>) {
        let inc = self.cands[c].incarnation;
        let Some(child) = self.cands[c]
            .process
            .as_mut()
            .and_then(|p| p.child.as_mut())
        else {
            return;
        };
        child.fixed = true;
        if let Some(v) = valid_until.filter(|v| *v < child.deadline) {
            child.deadline = v;
            child.round += 1;
            let round = child.round;
            let due = self.real_at(c, v);
            self.schedule(due.max(self.now), Ev::ChildDue { c, inc, round });
        }
    }

    fn child_due(&mut self, c: usize, inc: u32, round: u64) {
        let local = self.local(c);
        let Some(child) = self.process(c, inc).and_then(|p| p.child.as_ref()) else {
            return;
        };
        if child.round != round {
            return;
        }
        let deadline = child.deadline;
        if local < deadline {
            let due = self.real_at(c, deadline);
            self.schedule(due, Ev::ChildDue { c, inc, round });
            return;
        }
        self.end_child(c, EndCause::Deadline);
        self.exit(c, "it stopped its child at the end of the lease");
    }

    fn end_child(&mut self, c: usize, cause: EndCause) {
        let Some(child) = self.cands[c].process.as_mut().and_then(|p| p.child.take()) else {
            return;
        };
        let mut late_since = None;
        // However it ends (killed at last, exited on its own, killed with its
        // supervisor), a child still running after its deadline ran late.
        if self.sc.variant.child_policy == ChildPolicy::KilledAtValidUntil {
            let due = self.real_at(c, child.deadline);
            if due < self.now {
                let paused = self.cands[c]
                    .freezes
                    .iter()
                    .any(|&(from, to)| from <= due && due <= to);
                if paused {
                    late_since = Some(due);
                } else {
                    self.violation(format!(
                        "c{c}: child outlived its deadline {} without a pause",
                        At(due)
                    ));
                }
            }
        }
        let run = &mut self.children[child.run];
        run.end = Some(self.now);
        run.late_since = late_since;
        let term = run.term;
        note!(
            self,
            self.who(c),
            "child (term {term}) ends: {cause:?}{}",
            match late_since {
                Some(due) => format!(
                    ", LATE: its supervisor was paused when it was due at {}",
                    At(due)
                ),
                None => String::new(),
            }
        );
    }

    /// The supervisor process ends (its requests in flight may still land); it is
    /// restarted later with no memory.
    fn exit(&mut self, c: usize, why: &str) {
        note!(self, self.who(c), "supervisor exits: {why}");
        self.cands[c].process = None;
        let delay = if self.calm {
            0
        } else {
            self.rng.upto(self.sc.faults.restart_within)
        };
        let at = self.now + delay;
        self.fault_consequence(at);
        self.schedule(at, Ev::Start { c });
    }

    fn send(&mut self, c: usize, req: Request) {
        let id = self.next_request;
        self.next_request += 1;
        let inc = self.cands[c].incarnation;
        if let Some(p) = self.cands[c].process.as_mut() {
            p.awaiting = Some(id);
        }
        let is_write = !matches!(req, Request::Read { .. });
        let timeout_at = self
            .real_at(c, self.local(c) + self.sc.timeout(c))
            .max(self.now);
        let (mut fate, out, back) = self.choose_fate(c, is_write);
        let cut_off = self.now < self.cands[c].cut_off_until;
        if cut_off {
            fate = Fate::LoseRequest;
        }
        note!(
            self,
            self.who(c),
            "sends {}{}",
            describe_request(&req),
            if cut_off {
                " (LOST: the host is cut off)"
            } else {
                ""
            }
        );
        let timed_out = if is_write {
            Reply::Write(Err(StoreError::Ambiguous("write timed out".into())))
        } else {
            Reply::Read(Err(StoreError::Unavailable("read timed out".into())))
        };
        self.schedule(
            timeout_at,
            Ev::Answer {
                c,
                inc,
                id,
                reply: timed_out,
                via_network: false,
            },
        );
        self.fault_consequence(timeout_at.max(self.now + out + back));
        if !matches!(fate, Fate::LoseRequest) {
            let at = self.now + out;
            self.schedule(
                at,
                Ev::AtStore {
                    c,
                    inc,
                    id,
                    req,
                    fate,
                    back,
                },
            );
        }
    }

    fn choose_fate(&mut self, c: usize, is_write: bool) -> (Fate, Nanos, Nanos) {
        if self.calm {
            let d = self.sc.calm_delay;
            return (Fate::Deliver, self.rng.upto(d), self.rng.upto(d));
        }
        let f = &self.sc.faults;
        let (out, back) = (self.delay(c), self.delay(c));
        let x = self.rng.unit();
        let mut threshold = 0.0;
        let mut hit = |p: f64| {
            threshold += p;
            x < threshold
        };
        let fate = if hit(f.lose_request) {
            Fate::LoseRequest
        } else if hit(f.lose_answer) {
            Fate::LoseAnswer
        } else if is_write && hit(f.conflict) {
            Fate::Refuse(StoreError::Conflict)
        } else if hit(f.unavailable) {
            Fate::Refuse(StoreError::Unavailable("503 slow down".into()))
        } else if hit(f.fail_before) {
            Fate::Refuse(StoreError::Ambiguous("500 before writing".into()))
        } else if is_write && hit(f.fail_after) {
            Fate::FailAfterWrite(if self.rng.chance(0.25) {
                StoreError::PreconditionFailed
            } else {
                StoreError::Ambiguous("500 after writing".into())
            })
        } else {
            Fate::Deliver
        };
        (fate, out, back)
    }

    fn delay(&mut self, c: usize) -> Nanos {
        let f = &self.sc.faults;
        let congested = self.now < self.cands[c].congested_until;
        if congested || self.rng.chance(f.slow) {
            self.rng.upto(self.sc.max_lease())
        } else {
            self.rng.upto(f.fast_delay)
        }
    }

    fn at_store(&mut self, c: usize, inc: u32, id: u64, req: Request, fate: Fate, back: Nanos) {
        let applied = !matches!(fate, Fate::Refuse(_));
        let result = applied.then(|| self.apply(&req));
        note!(
            self,
            "store".into(),
            "{} from c{c}.{inc}: {}; {}",
            describe_request(&req),
            match &result {
                Some(r) => format!("applied → {}", describe_reply(r)),
                None => "not applied".into(),
            },
            match &fate {
                Fate::Deliver => "answer on its way".to_string(),
                Fate::LoseAnswer => "ANSWER LOST".into(),
                Fate::Refuse(e) => format!("answers {e}"),
                Fate::FailAfterWrite(e) => format!("then answers {e}"),
                Fate::LoseRequest => unreachable!("a lost request never arrives"),
            }
        );
        let error = |e: StoreError| match req {
            Request::Read { .. } => Reply::Read(Err(e)),
            _ => Reply::Write(Err(e)),
        };
        let reply = match fate {
            Fate::Deliver => result,
            Fate::LoseAnswer | Fate::LoseRequest => None,
            Fate::Refuse(e) => Some(error(e)),
            Fate::FailAfterWrite(e) => Some(error(e)),
        };
        if let Some(reply) = reply {
            let at = self.now + back;
            self.schedule(
                at,
                Ev::Answer {
                    c,
                    inc,
                    id,
                    reply,
                    via_network: true,
                },
            );
        }
    }

    fn apply(&self, req: &Request) -> Reply {
        match req {
            Request::Read { known } => Reply::Read(Ok(self.store.read_now(known.as_ref()))),
            Request::Create { body } => Reply::Write(self.store.create_now(body.clone())),
            Request::Replace { etag, body } => {
                Reply::Write(self.store.replace_now(etag, body.clone()))
            }
        }
    }

    fn answer(&mut self, c: usize, inc: u32, id: u64, reply: Reply, via_network: bool) {
        let local = self.local(c);
        let Some(p) = self.process(c, inc).filter(|p| p.awaiting == Some(id)) else {
            // A timer of a request already answered is no news; a late answer is.
            if !via_network {
                return;
            }
            note!(
                self,
                format!("c{c}.{inc}"),
                "(gone or no longer waiting) drops {}",
                describe_reply(&reply)
            );
            return;
        };
        p.awaiting = None;
        note!(self, self.who(c), "gets {}", describe_reply(&reply));
        let Some(p) = self.process(c, inc) else {
            return;
        };
        p.election.handle(reply, local);
        self.follow_valid_until(c);
        self.drive(c);
    }

    fn child_exits(&mut self, c: usize, inc: u32) {
        if self.calm {
            return;
        }
        let Some(p) = self.process(c, inc) else {
            return;
        };
        if p.child.as_ref().is_none_or(|ch| ch.fixed) {
            return;
        }
        self.end_child(c, EndCause::ExitedOnItsOwn);
        // First among whatever else is due now, or first after a pause.
        self.schedule_with_tie(self.now, 0, Ev::Release { c, inc });
    }

    /// Only after the child has exited (DESIGN §3 "Release").
    fn release(&mut self, c: usize, inc: u32) {
        let Some(p) = self.process(c, inc) else {
            return;
        };
        p.election.resign();
        if p.awaiting.is_none() {
            p.wake_gen += 1;
            self.drive(c);
        }
    }

    /// A live, unpaused supervisor: the leader's half of the time.
    fn pick_victim(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.cands.len())
            .filter(|&c| self.cands[c].process.is_some() && !self.cands[c].frozen)
            .collect();
        let leader = live.iter().copied().find(|&c| self.has_child(c));
        match leader {
            Some(c) if self.rng.chance(0.5) => Some(c),
            _ if live.is_empty() => None,
            _ => Some(self.rng.pick(&live)),
        }
    }

    fn crash(&mut self) {
        let Some(c) = self.pick_victim() else { return };
        note!(
            self,
            self.who(c),
            "CRASH (kill -9): the child dies with its supervisor"
        );
        self.end_child(c, EndCause::Crashed);
        self.exit(c, "crashed");
    }

    fn freeze(&mut self) {
        let Some(c) = self.pick_victim() else { return };
        let timing = self.cands[c].timing;
        let len = if self.rng.chance(0.5) {
            self.rng.upto(nanos(timing.margin()))
        } else {
            self.rng.upto(2 * nanos(timing.lease()))
        };
        let until = self.now + len;
        note!(
            self,
            self.who(c),
            "PAUSED until {} (its child keeps running)",
            At(until)
        );
        self.cands[c].frozen = true;
        self.cands[c].freezes.push((self.now, until));
        self.fault_consequence(until);
        self.schedule(until, Ev::Thaw { c });
    }

    /// The host keeps running, its child too, but nothing it sends arrives and nothing
    /// comes back: a leader on the wrong side of a partition stops renewing while its
    /// child runs on to `valid_until`. This is where the margin is tested.
    fn partition(&mut self) {
        let Some(c) = self.pick_victim() else { return };
        let lease = nanos(self.cands[c].timing.lease());
        let len = self.rng.upto(2 * lease);
        self.cut_off(c, len);
    }

    fn cut_off(&mut self, c: usize, len: Nanos) {
        let until = self.now + len;
        note!(
            self,
            self.who(c),
            "CUT OFF from the network until {}",
            At(until)
        );
        let cand = &mut self.cands[c];
        cand.cut_off_until = cand.cut_off_until.max(until);
        self.fault_consequence(until);
    }

    /// For a while every request of the host and every answer to it takes up to a
    /// lease: retries overtake earlier attempts, ambiguous writes land long after the
    /// sender gave up on them, reads report the past.
    fn congestion(&mut self) {
        let Some(c) = self.pick_victim() else { return };
        let lease = nanos(self.cands[c].timing.lease());
        let until = self.now + self.rng.upto(2 * lease);
        note!(self, self.who(c), "CONGESTED network until {}", At(until));
        let cand = &mut self.cands[c];
        cand.congested_until = cand.congested_until.max(until);
        self.fault_consequence(until);
    }

    fn thaw(&mut self, c: usize) {
        note!(self, self.who(c), "resumes");
        self.cands[c].frozen = false;
        // What piled up while paused is handled now, first, in the order it arrived.
        for ev in std::mem::take(&mut self.cands[c].deferred) {
            self.schedule_with_tie(self.now, 0, ev);
        }
    }
}

fn describe_record(body: &[u8]) -> String {
    match LockRecord::decode(body) {
        Ok(r) => format!(
            "term {} seq {} by {}{}",
            r.term,
            r.seq,
            r.holder,
            if r.released { ", RELEASED" } else { "" }
        ),
        Err(e) => format!("unreadable record: {e}"),
    }
}

fn describe_request(req: &Request) -> String {
    match req {
        Request::Read { known: None } => "read".into(),
        Request::Read { known: Some(e) } => format!("read (if changed from {e})"),
        Request::Create { body } => format!("create [{}]", describe_record(body)),
        Request::Replace { etag, body } => {
            format!("replace {etag} with [{}]", describe_record(body))
        }
    }
}

fn describe_reply(reply: &Reply) -> String {
    match reply {
        Reply::Read(Ok(ReadReply::Found { etag, body })) => {
            format!("found {etag} [{}]", describe_record(body))
        }
        Reply::Read(Ok(ReadReply::NotModified)) => "not modified".into(),
        Reply::Read(Ok(ReadReply::Missing)) => "missing".into(),
        Reply::Write(Ok(etag)) => format!("written → {etag}"),
        Reply::Read(Err(e)) | Reply::Write(Err(e)) => format!("error: {e}"),
    }
}
