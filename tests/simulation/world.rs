//! The simulated world: on each host a supervisor running the real [`Election`] state
//! machine and the real [`StopPolicy`], a guard holding the watchdog's deadline, and the
//! processes of the supervised command; one [`MemoryStore`] holding the lock object and
//! a network between them; all in one thread under one seeded discrete-event scheduler.
//!
//! Time is simulated real time ([`Nanos`]); each host reads it through its own
//! [`LocalClock`]. The queue orders events by real instant; events due at the same
//! instant are ordered by a random draw, so ties are explored, yet replayed exactly.
//!
//! Three kinds of process per host, each with its own events, as on a real host:
//! - **The supervisor** (`s3lead run`): the driver of `lease.rs` (poll the election,
//!   perform the request, hand back the answer at the local time of its arrival, publish
//!   the lease after every answer and on `AtRisk`, `Lost` and `Released`) joined to the
//!   loop of `cli/run.rs`, which feeds the stop policy the lease, the command's exit, the
//!   end of its last process and the operator's signals, performs the actions the policy
//!   returns and sleeps until the instant it names. Paused (SIGSTOP, a stall), it handles
//!   nothing until it resumes; killed, it is restarted with no memory. Under a
//!   `--quorum` that is lost, its policy stops the command and pauses; the supervisor
//!   keeps the lease and starts the command again under it once the quorum is back, with
//!   runway, or campaigns again if the lease ended meanwhile (`supervisor.rs`).
//! - **The guard** (`supervise/guard.rs`): holds the last deadline the policy handed
//!   it and SIGKILLs the command when the host's clock reaches it, and at once when its
//!   supervisor dies. It pauses only with its whole host.
//! - **The command's processes**: the command and, sometimes, a descendant that outlives
//!   it. Each ignores the stop signal or exits a while after it, dies a random while
//!   (up to [`KILL_LATENCY`]) after SIGKILL, and may finish its job on its own.
//!
//! The checks see only what matters outside: when the command's last process died, its
//! term, when its acquisition landed, and the deadlines the watchdog held.
//!
//! Not simulated: the guard itself dying (the policy's `on_guard_lost`), a process the
//! kernel cannot kill, descendants forking while they are killed, a full control pipe
//! that drops a deadline, and the coalescing of the lease's watch channel (the world
//! hands every status change to the policy at once, one of the orders the real loop
//! may see).

use super::check::{ChildRun, Kind, Violation};
use super::rng::Rng;
use super::scenario::{At, Flaw, KILL_LATENCY, LocalClock, Nanos, Scenario, nanos};
use nix::sys::signal::Signal;
use s3lead::clock::Instant;
use s3lead::election::{Election, Event, FatalError, Reply, Request, Step};
use s3lead::lease::{LeaseState, LeaseStatus};
use s3lead::record::LockRecord;
use s3lead::stop::ChildExit;
use s3lead::stop::{Action, StopConfig, StopPolicy};
use s3lead::store::memory::MemoryStore;
use s3lead::store::{FatalKind, ReadReply, StoreError};
use s3lead::timing::Timing;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// Beyond this many events a run is stuck in a loop that simulated time cannot end.
const MAX_EVENTS: u64 = 5_000_000;

/// What the run did, for the checks and for the trace.
pub struct Outcome {
    pub children: Vec<ChildRun>,
    /// Found while running: things no correct protocol or model does (an election event
    /// that cannot happen, a machine that will not settle, …).
    pub violations: Vec<Violation>,
    /// Per candidate: when its whole host was paused.
    pub host_pauses: Vec<Vec<(Nanos, Nanos)>>,
    /// When the lock object was deleted.
    pub deletions: Vec<Nanos>,
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
        // And one for the quorum's losses, so that a run without them plays as before.
        quorum_rng: Rng::new(sc.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x0909),
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
                paused: false,
                host_paused: false,
                deferred: Vec::new(),
                host_pauses: Vec::new(),
                cut_off_until: 0,
                congested_until: 0,
            })
            .collect(),
        trees: Vec::new(),
        children: Vec::new(),
        violations: Vec::new(),
        deletions: Vec::new(),
        acquired: HashMap::new(),
        no_fresh_start_until: 0,
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
    for &t in &sc.signals {
        w.schedule(t, Ev::OperatorSignal);
    }
    for &t in &sc.deletions {
        w.schedule(t, Ev::Delete { tries: 0 });
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
        host_pauses: w.cands.iter().map(|c| c.host_pauses.clone()).collect(),
        deletions: w.deletions,
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
    /// The write lands, then the sender is told this error.
    FailAfterWrite(StoreError),
}

/// A request on its way to the store (boxed: the queue moves its events often).
#[derive(Debug)]
struct Delivery {
    c: usize,
    inc: u32,
    id: u64,
    req: Request,
    fate: Fate,
    /// The delay of its answer.
    back: Nanos,
}

/// A line from a guard to its supervisor.
#[derive(Clone, Copy, Debug)]
enum Report {
    /// The command itself exited.
    Exited(ChildExit),
    /// No process of the command is left.
    Gone,
}

#[derive(Debug)]
enum Ev {
    /// A supervisor (re)starts, with no memory of any earlier life.
    Start {
        c: usize,
    },
    /// The wake-up of the renewal task (`Step::Wait`).
    Wake {
        c: usize,
        inc: u32,
        round: u64,
    },
    /// The wake-up of `cli/run.rs`'s loop (`Action::Wait`).
    PolicyWake {
        c: usize,
        inc: u32,
        round: u64,
    },
    /// A request reaches the store.
    AtStore(Box<Delivery>),
    /// An answer from the store (`via_network`) or the sender's own timeout reaches
    /// the candidate.
    Answer {
        c: usize,
        inc: u32,
        id: u64,
        reply: Box<Reply>,
        via_network: bool,
    },
    /// The guard's report reaches its supervisor.
    Report {
        c: usize,
        inc: u32,
        report: Report,
    },
    /// A signal from the operator reaches a supervisor.
    Signal {
        c: usize,
        inc: u32,
        sig: Signal,
    },
    /// The guard's timer: the host's clock may have reached the watchdog's deadline.
    GuardDue {
        tree: usize,
        round: u64,
    },
    /// A process of the command ends, as last decided.
    ProcEnds {
        tree: usize,
        proc: usize,
        round: u64,
    },
    Crash,
    Freeze,
    /// Some host loses its network for a while.
    Partition,
    /// Some host's network becomes very slow for a while.
    Congestion,
    /// The operator signals some supervisor.
    OperatorSignal,
    /// The lock object is deleted behind the protocol's back.
    Delete {
        tries: u32,
    },
    Thaw {
        c: usize,
    },
    /// Fewer candidates than `--quorum` are live around the leader whose command is
    /// `tree`.
    QuorumLost {
        c: usize,
        tree: usize,
    },
    /// Enough candidates are live again around leader `c`, paused for its quorum.
    QuorumBack {
        c: usize,
        inc: u32,
    },
    Calm,
}

/// Who must act on an event, and so cannot while paused.
enum Actor {
    Supervisor(usize),
    /// A guard or a process of a command (only a whole-host pause stops them).
    Host(usize),
    World,
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
    /// The supervisor is paused (SIGSTOP, a stall): its events wait.
    paused: bool,
    /// The whole host is paused (with `paused`): its guard's and its command's events
    /// wait too.
    host_paused: bool,
    /// Events that arrived while paused, in arrival order.
    deferred: Vec<Ev>,
    /// Real intervals during which the whole host was paused.
    host_pauses: Vec<(Nanos, Nanos)>,
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
    /// Only the latest wake-up of the renewal task counts.
    wake_gen: u64,
    /// The machine said `Done`: the renewal task has ended.
    election_done: bool,
    /// The last answer this life had about the object showed a record (a read found
    /// one, or a write of it landed), not its absence.
    sees_a_record: bool,
    /// Once elected: the command under its guard, and the stop policy.
    run: Option<Supervision>,
}

/// `cli/run.rs`'s half of a supervisor, from the command's spawn to the exit.
struct Supervision {
    /// Index into `World::trees` and `World::children`.
    tree: usize,
    /// The lease as `lease.rs` publishes it.
    lease: LeaseStatus,
    policy: StopPolicy,
    /// Only the latest wake-up of the loop counts.
    policy_gen: u64,
    /// The release was asked for while a request was in flight: `lease.rs` resigns at
    /// its next wait.
    resign_at_next_wait: bool,
    /// The policy asked for the release; it is complete when the renewal task ends.
    releasing: bool,
    /// The policy paused for a lost quorum: the command is gone, the lease kept, and
    /// `supervisor.rs` waits for the quorum to start the command again.
    paused: bool,
}

/// The guard of one command and the command's processes.
struct Tree {
    cand: usize,
    /// The supervisor's incarnation, which the guard reports to.
    inc: u32,
    procs: Vec<Proc>,
    /// The watchdog's deadline on the host's clock.
    deadline: Instant,
    /// Only the latest arming of the guard's timer counts.
    guard_gen: u64,
    /// The guard is killing everything (its deadline passed, or its supervisor died).
    killing: bool,
    gone: bool,
}

/// One process of a supervised command.
struct Proc {
    alive: bool,
    /// When it ends and what its parent sees, as decided so far (the earliest cause).
    ends: Option<(Nanos, ChildExit)>,
    /// Only the latest decision counts.
    round: u64,
    ignores_stop: bool,
    /// How long after the stop signal it exits, unless it ignores it.
    exits_after_stop: Nanos,
    stopped: bool,
    killed: bool,
}

struct World<'a> {
    sc: &'a Scenario,
    rng: Rng,
    quorum_rng: Rng,
    now: Nanos,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    store: MemoryStore,
    cands: Vec<Cand>,
    /// Every command ever started, by the index of its `ChildRun`.
    trees: Vec<Tree>,
    children: Vec<ChildRun>,
    violations: Vec<Violation>,
    deletions: Vec<Nanos>,
    /// When each lease's acquisition landed, by lease id.
    acquired: HashMap<String, Nanos>,
    /// After a deletion, no supervisor starts before this: nothing could tell it that a
    /// lease still runs (see `delete`).
    no_fresh_start_until: Nanos,
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
        self.violations.push(Violation {
            at: self.now,
            kind: Kind::Model,
            what,
        });
    }

    fn who(&self, c: usize) -> String {
        format!("c{c}.{}", self.cands[c].incarnation)
    }

    fn guard_of(&self, tree: usize) -> String {
        let t = &self.trees[tree];
        format!("c{}.{} guard", t.cand, t.inc)
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

    fn supervision(&mut self, c: usize) -> Option<&mut Supervision> {
        self.cands[c].process.as_mut()?.run.as_mut()
    }

    fn actor(&self, ev: &Ev) -> Actor {
        match ev {
            Ev::Wake { c, .. }
            | Ev::PolicyWake { c, .. }
            | Ev::Answer { c, .. }
            | Ev::Report { c, .. }
            | Ev::Signal { c, .. }
            | Ev::QuorumLost { c, .. }
            | Ev::QuorumBack { c, .. } => Actor::Supervisor(*c),
            Ev::GuardDue { tree, .. } | Ev::ProcEnds { tree, .. } => {
                Actor::Host(self.trees[*tree].cand)
            }
            _ => Actor::World,
        }
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
        let waits = match self.actor(&ev) {
            Actor::Supervisor(c) => self.cands[c].paused.then_some(c),
            Actor::Host(c) => self.cands[c].host_paused.then_some(c),
            Actor::World => None,
        };
        if let Some(c) = waits {
            self.cands[c].deferred.push(ev);
            return;
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
            Ev::PolicyWake { c, inc, round } => {
                if self.process(c, inc).is_some()
                    && self.supervision(c).is_some_and(|s| s.policy_gen == round)
                {
                    self.drive(c);
                }
            }
            Ev::AtStore(d) => self.at_store(*d),
            Ev::Answer {
                c,
                inc,
                id,
                reply,
                via_network,
            } => self.answer(c, inc, id, *reply, via_network),
            Ev::Report { c, inc, report } => self.report(c, inc, report),
            Ev::Signal { c, inc, sig } => self.signal(c, inc, sig),
            Ev::GuardDue { tree, round } => self.guard_due(tree, round),
            Ev::ProcEnds { tree, proc, round } => self.proc_ends(tree, proc, round),
            Ev::Partition => self.partition(),
            Ev::Congestion => self.congestion(),
            Ev::Crash => self.crash(),
            Ev::Freeze => self.freeze(),
            Ev::OperatorSignal => self.operator_signal(),
            Ev::Delete { tries } => self.delete(tries),
            Ev::Thaw { c } => self.thaw(c),
            Ev::QuorumLost { c, tree } => self.quorum_lost(c, tree),
            Ev::QuorumBack { c, inc } => self.quorum_back(c, inc),
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
        if self.cands[c].process.is_some() {
            return;
        }
        if self.now < self.no_fresh_start_until {
            let at = self.no_fresh_start_until;
            self.schedule(at, Ev::Start { c });
            return;
        }
        let jitter_seed = self.rng.next_u64();
        let cand = &mut self.cands[c];
        cand.incarnation += 1;
        let holder = format!("c{c}.{}", cand.incarnation);
        let mut election = Election::new(cand.timing, holder);
        // The followers' random shortening of their waits, replayed with the seed.
        election.seed_jitter(jitter_seed);
        cand.process = Some(Process {
            election,
            awaiting: None,
            wake_gen: 0,
            election_done: false,
            sees_a_record: false,
            run: None,
        });
        note!(self, self.who(c), "supervisor starts, campaigns");
        self.drive(c);
    }

    /// Runs the supervisor's two loops, the renewal task's and `cli/run.rs`'s, until
    /// both wait: the policy may ask for the release, which the election must act on.
    fn drive(&mut self, c: usize) {
        for _ in 0..16 {
            self.drive_election(c);
            if !self.drive_policy(c) {
                return;
            }
        }
        self.violation(format!(
            "c{c}: the election and the stop policy do not settle at one instant"
        ));
    }

    /// Polls the machine until it sends a request, waits or is done: the driver loop of
    /// `lease.rs` (`Driver::next`) as a discrete event, since here a request is not
    /// awaited but sent into the simulated network, and its answer is a later event.
    fn drive_election(&mut self, c: usize) {
        for _ in 0..1_000 {
            let local = self.local(c);
            let step = {
                let Some(p) = self.cands[c].process.as_mut() else {
                    return;
                };
                if p.awaiting.is_some() || p.election_done {
                    return;
                }
                p.election.poll(local)
            };
            match step {
                Step::Send(req) => return self.send(c, req),
                Step::Event(e) => self.on_event(c, e),
                Step::Wait(t) => {
                    let inc = self.cands[c].incarnation;
                    let Some(p) = self.cands[c].process.as_mut() else {
                        return;
                    };
                    // A release asked for while a request was in flight: the renewal
                    // task notices it in its next wait.
                    if let Some(s) = p.run.as_mut().filter(|s| s.resign_at_next_wait) {
                        s.resign_at_next_wait = false;
                        p.election.resign();
                        continue;
                    }
                    if t <= local {
                        continue;
                    }
                    p.wake_gen += 1;
                    let round = p.wake_gen;
                    let at = self.real_at(c, t);
                    self.schedule(at, Ev::Wake { c, inc, round });
                    return;
                }
                Step::Done => return self.election_ended(c),
            }
        }
        self.violation(format!(
            "c{c}: the state machine did not settle at one instant"
        ));
    }

    fn election_ended(&mut self, c: usize) {
        let Some(p) = self.cands[c].process.as_mut() else {
            return;
        };
        p.election_done = true;
        if p.run.is_none() {
            return self.exit(c, "the campaign ended");
        }
        // `lease.rs`: a machine that ended without saying how leaves the lease lost.
        self.publish(c, LeaseStatus::close);
        if self.supervision(c).is_some_and(|s| s.paused) {
            // No command to wait for: released on a stop request, or lost.
            return self.exit(c, "the lease ended while it waited for its quorum");
        }
        if let Some(s) = self.supervision(c).filter(|s| s.releasing) {
            s.policy.on_released();
        }
    }

    fn on_event(&mut self, c: usize, e: Event) {
        match e {
            Event::Observed {
                holder,
                term,
                released,
            } => {
                let how = if released { "released by" } else { "held by" };
                note!(self, self.who(c), "observes: {how} {holder}, term {term}");
            }
            Event::Elected { term, lease_id } => {
                let acquired = self.acquired.get(lease_id.as_str()).copied();
                self.spawn(c, term.get(), acquired.unwrap_or(self.now));
            }
            Event::Recovered => note!(self, self.who(c), "renewed after trouble"),
            Event::RenewalOverdue(overdue) => {
                let pace = if overdue { "fast" } else { "slow" };
                note!(
                    self,
                    self.who(c),
                    "the holder's renewal overdue: {overdue}; {pace} reads"
                );
            }
            Event::AtRisk { valid_until } => {
                note!(
                    self,
                    self.who(c),
                    "AT RISK: stop point passed; the child must be dead by {}",
                    At(self.real_at(c, valid_until))
                );
                self.publish(c, |st| {
                    st.state = LeaseState::AtRisk;
                    true
                });
            }
            Event::Lost(reason) => {
                note!(self, self.who(c), "LOST: {reason}");
                self.publish(c, |st| {
                    st.state = LeaseState::Lost(reason);
                    true
                });
            }
            Event::Released => {
                note!(self, self.who(c), "released");
                self.publish(c, |st| {
                    st.state = LeaseState::Released;
                    true
                });
            }
            Event::Abandoned => note!(self, self.who(c), "abandoned"),
            Event::Fatal(e) => {
                let leading = self.supervision(c).is_some();
                // The store errors are the injected answers that hide a landed write; a
                // record the machine cannot read, or a fatal error while leading, is no
                // answer this world gives.
                if leading || matches!(e, FatalError::Record(_)) {
                    self.violation(format!("c{c}: fatal error from the election: {e}"));
                }
                if !leading {
                    self.exit(c, &format!("the campaign failed: {e}"));
                }
            }
        }
    }

    /// Changes the lease as `lease.rs` does; the policy hears of it if `change` says so.
    fn publish(&mut self, c: usize, change: impl FnOnce(&mut LeaseStatus) -> bool) {
        let Some(s) = self.supervision(c) else {
            return;
        };
        if change(&mut s.lease) {
            s.policy.on_lease(s.lease.clone());
        }
        if s.paused && !s.releasing && s.lease.state != LeaseState::Held {
            // `wait_for_quorum`: a lease at risk or lost sends it back to campaigning.
            self.exit(c, "the lease ended while it waited for its quorum");
        }
    }

    /// After each answer, as `lease.rs` publishes it: the machine's current
    /// `valid_until` and stop point, news to the policy when `valid_until` moved.
    fn publish_valid_until(&mut self, c: usize) {
        let Some(p) = self.cands[c].process.as_mut() else {
            return;
        };
        let Some(s) = p.run.as_mut() else {
            return;
        };
        let before = s.lease.valid_until;
        if !s.lease.track(&p.election) {
            return;
        }
        let v = s.lease.valid_until;
        s.policy.on_lease(s.lease.clone());
        note!(
            self,
            self.who(c),
            "valid_until moves to {}",
            At(self.real_at(c, v))
        );
        if v > before {
            self.maybe_cut_off_leader(c);
        }
    }

    /// Elected: the command starts under its guard, whose watchdog holds the lease's
    /// `valid_until` before the command exists (`Supervised::spawn`), and the stop policy
    /// takes over (`supervisor.rs`).
    fn spawn(&mut self, c: usize, term: u64, acquired: Nanos) {
        let config = self.stop_config(c);
        let Some(p) = self.cands[c].process.as_mut() else {
            return;
        };
        if p.run.is_some() {
            return self.violation(format!("c{c}: elected again while its child runs"));
        }
        let Some(lease) = LeaseStatus::elected(&p.election) else {
            return self.violation(format!("c{c}: elected without a valid_until"));
        };
        p.run = Some(Supervision {
            tree: usize::MAX,
            policy: StopPolicy::new(config, lease.clone()),
            lease,
            policy_gen: 0,
            resign_at_next_wait: false,
            releasing: false,
            paused: false,
        });
        self.start_command(c, term, acquired, "ELECTED");
    }

    fn stop_config(&self, c: usize) -> StopConfig {
        StopConfig {
            stop_signal: Signal::SIGTERM,
            kill_after: self.cands[c].timing.kill_after(),
            lost_exit_code: s3lead::exit::LOST,
        }
    }

    /// The command starts under the supervision's lease, with a policy of its own: at
    /// the election, and again after a pause for the quorum.
    fn start_command(&mut self, c: usize, term: u64, acquired: Nanos, why: &str) {
        let inc = self.cands[c].incarnation;
        let timing = self.cands[c].timing;
        let tree = self.trees.len();
        let config = self.stop_config(c);
        let Some(s) = self.supervision(c) else {
            return;
        };
        s.tree = tree;
        s.paused = false;
        s.policy = StopPolicy::new(config, s.lease.clone());
        let valid_until = s.lease.valid_until;
        let due = self.real_at(c, valid_until);
        let mut procs = vec![self.new_proc(c)];
        if self.rng.chance(self.sc.command.leftover) {
            procs.push(self.new_proc(c));
        }
        self.trees.push(Tree {
            cand: c,
            inc,
            procs,
            deadline: valid_until,
            guard_gen: 0,
            killing: false,
            gone: false,
        });
        self.children.push(ChildRun {
            cand: c,
            incarnation: inc,
            term,
            acquired,
            start: self.now,
            end: None,
            watchdog: vec![(self.now, due)],
        });
        note!(
            self,
            self.who(c),
            "{why}, term {term}: the command starts ({} process{}); the watchdog holds {}",
            self.trees[tree].procs.len(),
            if self.trees[tree].procs.len() > 1 {
                "es"
            } else {
                ""
            },
            At(due)
        );
        self.arm_guard(tree);
        // Each process may finish its job during the fault phase.
        let lease = nanos(timing.lease());
        for i in 0..self.trees[tree].procs.len() {
            if self.rng.chance(self.sc.command.exits_on_its_own) {
                let at = self.now + self.rng.upto(2 * lease);
                if at < self.sc.fault_phase {
                    let code = self.rng.pick(&[0, 0, 1, 3]);
                    self.end_proc_at(tree, i, at, ChildExit::Code(code));
                }
            }
        }
        let q = self.sc.faults.quorum_loss;
        if q > 0.0 && self.quorum_rng.chance(q) {
            let at = self.now + self.quorum_rng.upto(2 * lease);
            if at < self.sc.fault_phase {
                self.schedule(at, Ev::QuorumLost { c, tree });
            }
        }
        self.maybe_cut_off_leader(c);
    }

    /// `supervisor.rs`: the quorum is lost while the command runs.
    fn quorum_lost(&mut self, c: usize, tree: usize) {
        let local = self.local(c);
        let Some(s) = self.supervision(c) else {
            return;
        };
        if s.tree != tree || s.paused {
            return;
        }
        s.policy.on_quorum_lost(local);
        note!(self, self.who(c), "the quorum is lost");
        self.drive(c);
    }

    /// `supervisor.rs`, `wait_for_quorum`: the quorum is back. The command starts again
    /// under the same lease if it is held with runway; a lease no longer held sends the
    /// supervisor back to campaigning (here: it starts again, with no memory).
    fn quorum_back(&mut self, c: usize, inc: u32) {
        let local = self.local(c);
        let min_runway = self.cands[c].timing.min_runway();
        let retry = nanos(self.cands[c].timing.retry_period());
        if self.process(c, inc).is_none() {
            return;
        }
        let Some(s) = self.supervision(c) else {
            return;
        };
        if !s.paused || s.releasing {
            return;
        }
        if s.lease.state != LeaseState::Held {
            return self.exit(c, "the lease ended while it waited for its quorum");
        }
        if s.lease.stop_at.saturating_since(local) < min_runway {
            note!(self, self.who(c), "the quorum is back; waits for runway");
            let at = self.now + retry;
            self.fault_consequence(at);
            return self.schedule(at, Ev::QuorumBack { c, inc });
        }
        let last = s.tree;
        let (term, acquired) = (self.children[last].term, self.children[last].acquired);
        self.start_command(c, term, acquired, "the quorum is back");
        self.drive(c);
    }

    fn new_proc(&mut self, c: usize) -> Proc {
        let kill_after = nanos(self.cands[c].timing.kill_after());
        Proc {
            alive: true,
            ends: None,
            round: 0,
            ignores_stop: self.rng.chance(self.sc.command.ignore_stop),
            exits_after_stop: self.rng.upto(2 * kill_after),
            stopped: false,
            killed: false,
        }
    }

    /// Polls the stop policy and performs its actions until it waits (`cli/run.rs`).
    /// True if it asked the election to resign, which the election must now act on.
    fn drive_policy(&mut self, c: usize) -> bool {
        let timers = self.sc.variant.flaw != Flaw::NoTimers;
        for _ in 0..1_000 {
            let local = self.local(c);
            let Some(s) = self.supervision(c) else {
                return false;
            };
            let tree = s.tree;
            match s.policy.poll(local) {
                Action::Wait(t) => {
                    if !timers {
                        return false;
                    }
                    s.policy_gen += 1;
                    let round = s.policy_gen;
                    if let Some(t) = t {
                        let at = self.real_at(c, t).max(self.now);
                        let inc = self.cands[c].incarnation;
                        self.schedule(at, Ev::PolicyWake { c, inc, round });
                    }
                    return false;
                }
                Action::Exit(code) => {
                    self.exit(c, &format!("the run is over, exit status {code}"));
                    return false;
                }
                Action::Pause => {
                    note!(
                        self,
                        self.who(c),
                        "nothing of the command is left: keeps the lease, waits for the quorum"
                    );
                    let inc = self.cands[c].incarnation;
                    let lease = nanos(self.cands[c].timing.lease());
                    if let Some(s) = self.supervision(c) {
                        s.paused = true;
                    }
                    // In the calm phase every candidate is live again.
                    let at = if self.calm {
                        self.now
                    } else {
                        self.now + self.quorum_rng.upto(lease)
                    };
                    self.fault_consequence(at);
                    self.schedule(at, Ev::QuorumBack { c, inc });
                    return false;
                }
                Action::Watchdog(t) => {
                    let due = self.real_at(c, t);
                    self.children[tree].watchdog.push((self.now, due));
                    self.trees[tree].deadline = t;
                    self.arm_guard(tree);
                }
                Action::Forward(sig) => {
                    note!(
                        self,
                        self.who(c),
                        "forwards {sig} to the command (which ignores it)"
                    );
                }
                Action::Stop { sig, why } => {
                    note!(self, self.who(c), "sends {sig} to the command ({why:?})");
                    self.stop_tree(tree, sig);
                }
                Action::Kill(why) => {
                    note!(self, self.who(c), "sends SIGKILL to the command ({why:?})");
                    self.kill_tree(tree);
                }
                Action::Release => {
                    note!(
                        self,
                        self.who(c),
                        "nothing of the command is left: releases the lease"
                    );
                    let Some(p) = self.cands[c].process.as_mut() else {
                        return false;
                    };
                    let Some(s) = p.run.as_mut() else {
                        return false;
                    };
                    s.releasing = true;
                    if p.election_done {
                        s.policy.on_released();
                    } else if p.awaiting.is_some() {
                        s.resign_at_next_wait = true;
                    } else {
                        p.election.resign();
                        return true;
                    }
                }
            }
        }
        self.violation(format!(
            "c{c}: the stop policy did not settle at one instant"
        ));
        false
    }

    /// A process of the command ends at `at` with `exit`, unless something ends it
    /// sooner.
    fn end_proc_at(&mut self, tree: usize, i: usize, at: Nanos, exit: ChildExit) {
        let p = &mut self.trees[tree].procs[i];
        if !p.alive || p.ends.is_some_and(|(t, _)| t <= at) {
            return;
        }
        p.ends = Some((at, exit));
        p.round += 1;
        let round = p.round;
        self.schedule(
            at,
            Ev::ProcEnds {
                tree,
                proc: i,
                round,
            },
        );
    }

    /// The stop signal to every process: each exits a while later, or ignores it.
    fn stop_tree(&mut self, tree: usize, sig: Signal) {
        for i in 0..self.trees[tree].procs.len() {
            let p = &mut self.trees[tree].procs[i];
            if !p.alive || p.stopped {
                continue;
            }
            p.stopped = true;
            if !p.ignores_stop {
                let at = self.now + p.exits_after_stop;
                let exit = if self.rng.chance(0.5) {
                    ChildExit::Code(0)
                } else {
                    ChildExit::Signaled(sig)
                };
                self.end_proc_at(tree, i, at, exit);
            }
        }
    }

    /// SIGKILL to every process: each dies within the kill latency.
    fn kill_tree(&mut self, tree: usize) {
        for i in 0..self.trees[tree].procs.len() {
            let p = &mut self.trees[tree].procs[i];
            if !p.alive || p.killed {
                continue;
            }
            p.killed = true;
            let at = self.now + self.rng.upto(nanos(KILL_LATENCY));
            self.end_proc_at(tree, i, at, ChildExit::Signaled(Signal::SIGKILL));
        }
    }

    fn proc_ends(&mut self, tree: usize, i: usize, round: u64) {
        let t = &mut self.trees[tree];
        let p = &mut t.procs[i];
        if !p.alive || p.round != round {
            return;
        }
        p.alive = false;
        let exit = p.ends.map_or(ChildExit::Code(0), |(_, e)| e);
        let (c, inc) = (t.cand, t.inc);
        let gone = t.procs.iter().all(|p| !p.alive);
        let whose = if i == 0 {
            "the command"
        } else {
            "its descendant"
        };
        note!(self, self.guard_of(tree), "{whose} ends: {exit:?}");
        // The guard reaps it and reports, in this order.
        if i == 0 {
            let report = Report::Exited(exit);
            self.schedule_with_tie(self.now, 0, Ev::Report { c, inc, report });
        }
        if gone {
            self.trees[tree].gone = true;
            self.children[tree].end = Some(self.now);
            let term = self.children[tree].term;
            note!(
                self,
                self.guard_of(tree),
                "no process of the command (term {term}) is left"
            );
            let report = Report::Gone;
            self.schedule_with_tie(self.now, 0, Ev::Report { c, inc, report });
        }
    }

    /// (Re)arms the guard's timer at its deadline.
    fn arm_guard(&mut self, tree: usize) {
        let t = &mut self.trees[tree];
        if t.gone {
            return;
        }
        t.guard_gen += 1;
        let (c, deadline, round) = (t.cand, t.deadline, t.guard_gen);
        let at = self.real_at(c, deadline).max(self.now);
        self.schedule(at, Ev::GuardDue { tree, round });
    }

    fn guard_due(&mut self, tree: usize, round: u64) {
        let t = &self.trees[tree];
        if t.gone || t.guard_gen != round || t.killing {
            return;
        }
        let c = t.cand;
        if self.local(c) < t.deadline {
            // Scheduled before a host pause, or by a clock read rounded down.
            let at = self.real_at(c, t.deadline).max(self.now);
            self.schedule(at, Ev::GuardDue { tree, round });
            return;
        }
        if matches!(self.sc.variant.flaw, Flaw::NoWatchdog | Flaw::NoTimers) {
            return;
        }
        note!(
            self,
            self.guard_of(tree),
            "WATCHDOG: the deadline passed; SIGKILL to every process of the command"
        );
        self.trees[tree].killing = true;
        self.kill_tree(tree);
    }

    /// The guard sees end-of-file on its control pipe: its supervisor is gone.
    fn guard_sees_eof(&mut self, tree: usize) {
        let t = &mut self.trees[tree];
        if t.gone || t.killing {
            return;
        }
        t.killing = true;
        note!(
            self,
            self.guard_of(tree),
            "its supervisor is gone: SIGKILL to every process of the command"
        );
        self.kill_tree(tree);
    }

    fn report(&mut self, c: usize, inc: u32, report: Report) {
        let local = self.local(c);
        if self.process(c, inc).is_none() {
            return;
        }
        let Some(s) = self.supervision(c) else {
            return;
        };
        match report {
            Report::Exited(e) => s.policy.on_child_exit(e, local),
            Report::Gone => s.policy.on_tree_gone(local),
        }
        self.drive(c);
    }

    fn signal(&mut self, c: usize, inc: u32, sig: Signal) {
        let local = self.local(c);
        if self.process(c, inc).is_none() {
            return;
        }
        note!(self, self.who(c), "gets {sig} from the operator");
        let ends_wait = matches!(
            sig,
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT
        );
        match self.supervision(c) {
            // `supervisor.rs`, `wait_for_quorum`: a stop request releases the lease.
            Some(s) if s.paused => {
                if !ends_wait || s.releasing {
                    return;
                }
                s.releasing = true;
                let Some(p) = self.cands[c].process.as_mut() else {
                    return;
                };
                if p.election_done {
                    return self.exit(c, "stopped while waiting for its quorum");
                }
                if p.awaiting.is_some() {
                    if let Some(s) = p.run.as_mut() {
                        s.resign_at_next_wait = true;
                    }
                } else {
                    p.election.resign();
                    self.drive(c);
                }
            }
            Some(s) => {
                s.policy.on_signal(sig, local);
                self.drive(c);
            }
            // `cli/run.rs`: a stop request while waiting for the lock ends the wait.
            None => {
                if ends_wait {
                    self.exit(c, "stopped while waiting for the lock");
                }
            }
        }
    }

    /// The supervisor process ends (its requests in flight may still land; its guard
    /// kills whatever is left of the command); it is restarted later with no memory.
    fn exit(&mut self, c: usize, why: &str) {
        note!(self, self.who(c), "supervisor exits: {why}");
        let Some(p) = self.cands[c].process.take() else {
            return;
        };
        if let Some(s) = p.run {
            self.guard_sees_eof(s.tree);
        }
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
            // A wake-up asked for before this request is no longer the latest.
            p.wake_gen += 1;
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
                reply: Box::new(timed_out),
                via_network: false,
            },
        );
        self.fault_consequence(timeout_at.max(self.now + out + back));
        if !matches!(fate, Fate::LoseRequest) {
            let at = self.now + out;
            let d = Delivery {
                c,
                inc,
                id,
                req,
                fate,
                back,
            };
            self.schedule(at, Ev::AtStore(Box::new(d)));
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
        } else if is_write && hit(f.fatal_after_write) {
            Fate::FailAfterWrite(StoreError::Fatal(
                FatalKind::Other,
                if self.rng.chance(0.5) {
                    "200 OK without an ETag".into()
                } else {
                    "cannot parse the answer".into()
                },
            ))
        } else if is_write && hit(f.unavailable_after_write) {
            Fate::FailAfterWrite(StoreError::Unavailable(
                "408 request timeout (the body was stored)".into(),
            ))
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

    fn at_store(&mut self, d: Delivery) {
        let Delivery {
            c,
            inc,
            id,
            req,
            fate,
            back,
        } = d;
        let applied = !matches!(fate, Fate::Refuse(_));
        let result = applied.then(|| req.apply_to(&self.store));
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
        if let (
            Request::Create { body } | Request::Replace { body, .. },
            Some(Reply::Write(Ok(_))),
        ) = (&req, &result)
        {
            if let Ok(r) = LockRecord::decode(body) {
                if r.seq == 1 {
                    self.acquired
                        .entry(r.lease_id.as_str().to_owned())
                        .or_insert(self.now);
                }
            }
        }
        let renewal_landed = matches!(req, Request::Replace { .. })
            && matches!(result, Some(Reply::Write(Ok(_))))
            && self.cands[c].incarnation == inc
            && self.supervision(c).is_some();
        if renewal_landed && !self.calm && self.rng.chance(self.sc.faults.delete_after_renewal) {
            let at = self.now + self.rng.upto(self.sc.max_retry());
            self.fault_consequence(at);
            self.schedule(at, Ev::Delete { tries: 0 });
        }
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
                    reply: Box::new(reply),
                    via_network: true,
                },
            );
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
        match reply {
            Reply::Read(Ok(ReadReply::Found { .. })) | Reply::Write(Ok(_)) => {
                p.sees_a_record = true;
            }
            Reply::Read(Ok(ReadReply::Missing)) => p.sees_a_record = false,
            _ => {}
        }
        note!(self, self.who(c), "gets {}", describe_reply(&reply));
        let Some(p) = self.process(c, inc) else {
            return;
        };
        p.election.handle(reply, local);
        self.publish_valid_until(c);
        self.drive(c);
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

    fn has_child(&self, c: usize) -> bool {
        self.cands[c]
            .process
            .as_ref()
            .and_then(|p| p.run.as_ref())
            .is_some_and(|s| !self.trees[s.tree].gone)
    }

    /// A live, unpaused supervisor: the leader's half of the time.
    fn pick_victim(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.cands.len())
            .filter(|&c| self.cands[c].process.is_some() && !self.cands[c].paused)
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
        note!(self, self.who(c), "CRASH (kill -9)");
        self.exit(c, "crashed");
    }

    /// The operator stops a supervisor (`systemctl stop`, Ctrl-C), now and then twice,
    /// or sends it a signal for the command.
    fn operator_signal(&mut self) {
        let Some(c) = self.pick_victim() else { return };
        let inc = self.cands[c].incarnation;
        let sig = match self.rng.below(10) {
            0..7 => Signal::SIGTERM,
            7..9 => Signal::SIGINT,
            _ => Signal::SIGHUP,
        };
        self.schedule(self.now, Ev::Signal { c, inc, sig });
        if self.rng.chance(0.3) {
            let kill_after = nanos(self.cands[c].timing.kill_after());
            let at = self.now + self.rng.upto(kill_after);
            self.fault_consequence(at);
            let sig = Signal::SIGTERM;
            self.schedule(at, Ev::Signal { c, inc, sig });
        }
    }

    /// The lock object disappears behind the protocol's back (an operator, a lifecycle
    /// rule). docs/design.md §3: a follower that has seen a record waits out its lease before it
    /// creates another. One whose last look found the object absent cannot know that a
    /// record came and went since (nor can a supervisor that has seen nothing yet), so
    /// the deletion strikes only when every live supervisor's last look showed a
    /// record, and no supervisor starts afresh until any lease of the deleted object
    /// has ended.
    fn delete(&mut self, tries: u32) {
        if self.calm {
            return;
        }
        if self.store.body().is_none() {
            return note!(self, "world".into(), "(deletion skipped: no object)");
        }
        let forgets = self.sc.variant.flaw == Flaw::ForgetsDeletedRecord;
        let unaware = self
            .cands
            .iter()
            .any(|c| c.process.as_ref().is_some_and(|p| !p.sees_a_record));
        if unaware && !forgets {
            if tries < 8 {
                let at = self.now + self.rng.upto(self.sc.max_lease() / 4);
                self.fault_consequence(at);
                self.schedule(at, Ev::Delete { tries: tries + 1 });
            }
            return;
        }
        self.store.delete();
        self.deletions.push(self.now);
        note!(self, "world".into(), "THE LOCK OBJECT IS DELETED");
        if forgets {
            for c in 0..self.cands.len() {
                let follower = self.cands[c]
                    .process
                    .as_ref()
                    .is_some_and(|p| p.run.is_none());
                if follower && !self.cands[c].paused {
                    note!(self, self.who(c), "forgets the record it saw");
                    self.cands[c].process = None;
                    self.start(c);
                }
            }
            return;
        }
        // The longest any lease of the deleted object can run on, measured by the
        // slowest clock, and its child's kill latency.
        let until = self.now + self.sc.max_lease() * 102 / 100 + nanos(KILL_LATENCY) + 1;
        self.no_fresh_start_until = self.no_fresh_start_until.max(until);
        self.fault_consequence(until);
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
        let host = self.rng.chance(self.sc.faults.host_pause);
        note!(
            self,
            self.who(c),
            "PAUSED until {}{}",
            At(until),
            if host {
                " with its whole host: its guard and its command too"
            } else {
                " (its guard and its command keep running)"
            }
        );
        let cand = &mut self.cands[c];
        cand.paused = true;
        if host {
            cand.host_paused = true;
            cand.host_pauses.push((self.now, until));
        }
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
        self.cands[c].paused = false;
        self.cands[c].host_paused = false;
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
