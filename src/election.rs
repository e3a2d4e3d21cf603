//! The protocol of docs/design.md §3 as a state machine that performs no I/O, in the manner of
//! quinn-proto: the driver asks [`Election::poll`] what to do at "now", performs the
//! request it is given, and hands the answer back with [`Election::handle`]. Time only
//! comes in as an argument, so the same code runs under the real boot-time clock
//! (`lease.rs`) and under the deterministic simulation's manual clocks.
//!
//! The safety argument, in one place:
//! - A follower takes over only after it has seen the *same* ETag for the record's
//!   `lease_ms`, measured on its own clock from `first_seen`, the instant *after* the
//!   read that showed it arrived; and only with `If-Match` on that ETag, so any write
//!   in between makes the takeover fail.
//! - A leader counts its lease from the instant its last successful write was *sent*
//!   (which precedes any follower's `first_seen` of that write) and treats it as valid
//!   until `sent + lease_ms − margin`; the margin absorbs clock-rate differences.
//! - Only 412, and 404 on `If-Match`, refuse a write for certain. After any other answer
//!   (a timeout, 5xx, 409, 503, even a fatal one such as 403 or an SDK parse error) the
//!   write may have landed or may still land: the lease then counts from the earliest
//!   send of that write, and a re-read recognises it by `lease_id` and `seq`. A fatal
//!   answer to a follower's write ends the campaign only once a re-read shows that the
//!   write did not land.
//! - An object that vanishes behind the protocol's back (an operator, a lifecycle rule)
//!   is a change like any other: a follower that had seen a record waits out the longest
//!   lease it saw from the read that found the object gone before it creates, with a
//!   term above every term it saw. A leader that finds its record gone or replaced
//!   reports a loss that [`LossReason::is_superseded`]: its child must die at once.
//! - A term is never handed out twice: a record at [`Term::LAST`] is refused.
//! - No decision compares a timestamp written by another host with the local clock.

use crate::clock::Instant;
use crate::record::{LeaseId, LockRecord, OncePer, RecordError, RunEnd, Term};
use crate::store::memory::MemoryStore;
use crate::store::{Etag, FatalKind, ReadReply, StoreError};
use crate::timing::Timing;
use std::collections::VecDeque;
use std::time::Duration;

/// A request for the driver to perform, against the one lock object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read the object; with `known`, a conditional read answered "not modified" while
    /// the ETag is still `known`.
    Read {
        /// The ETag last seen, or `None` for a plain read.
        known: Option<Etag>,
    },
    /// Write `body` only if the object is absent.
    Create {
        /// The encoded [`LockRecord`] to write.
        body: Vec<u8>,
    },
    /// Write `body` only if the object's ETag is `etag`.
    Replace {
        /// The ETag the object must still have (`If-Match`).
        etag: Etag,
        /// The encoded [`LockRecord`] to write.
        body: Vec<u8>,
    },
}

impl Request {
    /// Performs this request on the in-memory reference store at once and returns its
    /// answer: the conditional-write contract as every store must keep it (see
    /// [`MemoryStore`]), with no fault, delay or quirk. The unit tests and the
    /// deterministic simulation both apply requests through this one function, at the
    /// instant they choose for the request to reach the store.
    pub fn apply_to(&self, store: &MemoryStore) -> Reply {
        match self {
            Request::Read { known } => Reply::Read(Ok(store.read_now(known.as_ref()))),
            Request::Create { body } => Reply::Write(store.create_now(body.clone())),
            Request::Replace { etag, body } => Reply::Write(store.replace_now(etag, body.clone())),
        }
    }
}

/// The store's answer to the last request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// The answer to a [`Request::Read`].
    Read(Result<ReadReply, StoreError>),
    /// The answer to a [`Request::Create`] or [`Request::Replace`]: the new ETag, or the
    /// error exactly as the store gave it (the election judges whether it may have landed).
    Write(Result<Etag, StoreError>),
}

/// What the driver should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Perform this request now, then call [`Election::handle`] with its answer.
    Send(Request),
    /// Something happened; poll again.
    Event(Event),
    /// Nothing to do before this instant (unless the driver calls `resign`).
    Wait(Instant),
    /// The election is over; see the last event.
    Done,
}

/// A long-poll of the holder's peer endpoint (the record's `advertise`), which the driver
/// may run while the election waits ([`Election::watch`]): "answer when the lock's ETag
/// is no longer `after`, or after `hold`". Its answer goes to [`Election::peer_answered`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// The endpoint's base URL, as the holder advertised it.
    pub url: String,
    /// The newest ETag this follower knows of.
    pub after: Etag,
    /// How long the endpoint may hold the request before answering "unchanged".
    pub hold: Duration,
}

/// What a holder's peer endpoint answered to a [`Watch`]. Nothing in it is trusted for a
/// takeover: an ETag is only ever a reason to read the store later, a change of leader
/// only a reason to read it now (docs/design.md §3 "Peer mode").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAnswer {
    /// The ETag of the lock object as the endpoint's candidate last wrote it.
    pub etag: Option<Etag>,
    /// Whether that candidate says it leads.
    pub leading: bool,
}

/// A change worth telling the holder (and the log) about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Another holder's record was seen (a new write of it).
    Observed {
        /// The holder's name in the record, for people.
        holder: String,
        /// The record's term.
        term: Term,
        /// The record is released: it may be taken over at once.
        released: bool,
    },
    /// We lead. The child may run until [`Election::stop_at`], which is at least
    /// [`Timing::min_runway`] away.
    Elected {
        /// Our fencing term, larger than every earlier leader's: hand it to whatever the
        /// child writes, so that writers can refuse smaller ones.
        term: Term,
        /// Our lease's id, as written in the record.
        lease_id: LeaseId,
    },
    /// A renewal landed after one or more failed attempts.
    Recovered,
    /// While following: the holder's renewal became overdue (`true`: the observed ETag is
    /// older than a renewal interval plus one fast poll, so the lease may run out soon,
    /// and the follower reads at the fast period), or a renewal was seen again (`false`:
    /// back to the slow period).
    RenewalOverdue(bool),
    /// The stop point passed without a renewal: stop the child now; it must be dead by
    /// `valid_until`.
    AtRisk {
        /// The instant the child must be dead by (boot-time clock).
        valid_until: Instant,
    },
    /// The lease is gone; the child must already be stopped.
    Lost(LossReason),
    /// Our release write landed.
    Released,
    /// We stopped campaigning (resign while following).
    Abandoned,
    /// The store or the record cannot be used; nothing will fix it by retrying.
    Fatal(FatalError),
}

/// Why a lease was lost. Every reason but [`LossReason::Expired`] means another leader
/// may already run, and the child must be killed at once ([`LossReason::is_superseded`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The local clock passed `valid_until` without a renewal.
    Expired,
    /// The record now belongs to another lease.
    TakenOver {
        /// The new holder's name, for people.
        holder: String,
        /// The new lease's term.
        term: Term,
    },
    /// The object disappeared.
    Deleted,
    /// The object is no longer a record we can read.
    Unreadable(String),
}

impl LossReason {
    /// Someone else changed the object (took it over, deleted or overwrote it), rather
    /// than the lease running out: another holder may already run, or start at any
    /// moment (a candidate that never saw our record creates a deleted object at once),
    /// so the child must be killed now, not at `valid_until`.
    pub fn is_superseded(&self) -> bool {
        !matches!(self, LossReason::Expired)
    }
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LossReason::Expired => write!(f, "the lease expired before a renewal succeeded"),
            LossReason::TakenOver { holder, term } => {
                write!(f, "the lock was taken over by {holder} (term {term})")
            }
            LossReason::Deleted => write!(f, "the lock object was deleted"),
            LossReason::Unreadable(e) => write!(f, "the lock object was overwritten: {e}"),
        }
    }
}

/// A failure of the election that no retry will fix; it ends the election.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FatalError {
    /// The store refused for good (permission, no such bucket, …): the kind and the
    /// store's message.
    #[error("{1}")]
    Store(FatalKind, String),
    /// The lock object cannot be used (not a record this version reads, or its term is
    /// [`Term::LAST`]): the message. It is never overwritten.
    #[error("{0}")]
    Record(String),
}

impl From<RecordError> for FatalError {
    fn from(e: RecordError) -> Self {
        FatalError::Record(e.to_string())
    }
}

impl FatalError {
    /// The lock object's term is [`Term::LAST`]: the next leader would need a larger
    /// one, and handing out the same term twice would break fencing.
    fn terms_exhausted() -> FatalError {
        FatalError::Record(format!(
            "the lock's term is at its maximum ({}) and can never be reused: use a new lock key",
            Term::LAST
        ))
    }
}

/// The condition a write was sent under: it can only ever land while that condition
/// holds, which is how a follower knows when an unanswered write can be forgotten.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Condition {
    Absent,
    Matches(Etag),
}

/// A write whose outcome matters after it was sent: an acquisition, a renewal or the
/// release. Retries resend the same bytes (same `lease_id` and `seq`).
#[derive(Clone, Debug)]
struct Write {
    record: LockRecord,
    condition: Condition,
    /// Send instant of the earliest attempt that could have landed.
    first_sent: Instant,
    /// Send instant of the attempt now in flight.
    sent: Instant,
    /// Some attempt got no definite answer: it may land, or have landed.
    maybe_landed: bool,
}

impl Write {
    fn new(record: LockRecord, condition: Condition, now: Instant) -> Write {
        Write {
            record,
            condition,
            first_sent: now,
            sent: now,
            maybe_landed: false,
        }
    }

    fn request(&self) -> Request {
        let body = self.record.encode();
        match &self.condition {
            Condition::Absent => Request::Create { body },
            Condition::Matches(etag) => Request::Replace {
                etag: etag.clone(),
                body,
            },
        }
    }

    /// Marks a new attempt sent at `now`. If no earlier attempt could have landed, the
    /// lease counts from this one.
    fn resend(&mut self, now: Instant) {
        if !self.maybe_landed {
            self.first_sent = now;
        }
        self.sent = now;
    }
}

#[derive(Clone, Debug)]
struct Observed {
    etag: Etag,
    /// Local instant after the read that first showed `etag` arrived.
    first_seen: Instant,
    record: LockRecord,
}

/// A newer ETag a peer told of, not yet seen in the store.
#[derive(Clone, Debug)]
struct Sighting {
    etag: Etag,
    /// Local instant after the peer's answer arrived.
    at: Instant,
}

/// The follower's long-poll of the holder's endpoint.
#[derive(Debug, Default)]
struct PeerWatch {
    /// The peer's last answer was a good one: its news stands in for the store's reads,
    /// which wait until a takeover could be due.
    answering: bool,
    /// The peer is not asked again before this instant.
    retry_at: Instant,
    /// The newest ETag it told of, until a read of the store answers.
    sighting: Option<Sighting>,
}

impl PeerWatch {
    /// The newest ETag known: the peer's last sighting, else the store's last read.
    fn newest_etag<'a>(&'a self, read: &'a Observed) -> &'a Etag {
        self.sighting.as_ref().map_or(&read.etag, |s| &s.etag)
    }

    /// How long the next long-poll may be held: not at all while the peer has not yet
    /// answered (or after it failed), so that the follower knows at once whether it
    /// answers; then a renewal interval, at most [`MAX_PEER_HOLD`].
    fn hold(&self, timing: &Timing) -> Duration {
        if self.answering {
            timing.renew_every().min(MAX_PEER_HOLD)
        } else {
            Duration::ZERO
        }
    }
}

/// The longest a follower asks a peer to hold a long-poll.
const MAX_PEER_HOLD: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InFlight {
    None,
    Read,
    Write,
}

#[derive(Debug)]
struct Follower {
    observed: Option<Observed>,
    /// The last read found no object.
    absent: bool,
    /// The highest term seen on this object, so a re-created object keeps growing.
    max_term: Option<Term>,
    /// The longest `lease_ms` of the records seen on this object.
    longest_lease: Option<Duration>,
    /// Local instant after the first read that found the object gone, having seen a
    /// record before. The object can vanish behind the protocol's back (an operator, a
    /// lifecycle rule); its holder may still be running its child, so the disappearance
    /// is waited out like a change of the record: see [`Follower::may_create_at`].
    gone_since: Option<Instant>,
    attempt: Option<Write>,
    /// Before any other request, re-read to learn whether `attempt` landed.
    reconcile: bool,
    /// `attempt` was answered with this error: unless the re-read shows that it landed,
    /// the campaign ends with it.
    fatal_unless_landed: Option<FatalError>,
    next_at: Instant,
    /// The observed record's renewal is overdue: read at the fast period.
    overdue: bool,
    /// The holder's peer endpoint, when its record advertises one.
    peer: PeerWatch,
}

impl Follower {
    /// Knowing nothing of the object yet but the highest term and the longest lease seen
    /// on it so far.
    fn new(max_term: Option<Term>, longest_lease: Option<Duration>) -> Follower {
        Follower {
            observed: None,
            absent: false,
            max_term,
            longest_lease,
            gone_since: None,
            attempt: None,
            reconcile: false,
            fatal_unless_landed: None,
            next_at: Instant::default(),
            overdue: false,
            peer: PeerWatch::default(),
        }
    }

    /// When a creation may be sent, the object being gone.
    ///
    /// A follower that never saw a record may create at once. One that did waits out
    /// the longest lease it saw, counted from the first read that found the object gone
    /// (on its own clock, after that read arrived), not from when it first saw the last
    /// record: between its last read of the record and the deletion, a renewal or a
    /// takeover it never saw may have landed, and that lease can only have been sent
    /// before the read that found the object gone. So the old holder's child is dead by
    /// then, as after any takeover. (A creation by someone who never saw the record, or a
    /// record of a longer lease that this follower never saw, is beyond its knowledge.)
    fn may_create_at(&self) -> Option<Instant> {
        Some(self.gone_since? + self.longest_lease?)
    }

    /// A read, answered at `now`, found no object.
    fn found_missing(&mut self, now: Instant, retry: Instant) -> FollowerNext {
        if let Some(e) = self.fatal_unless_landed.take() {
            return FollowerNext::Fatal(e);
        }
        self.reconcile = false;
        self.observed = None;
        self.absent = true;
        if self.longest_lease.is_some() && self.gone_since.is_none() {
            self.gone_since = Some(now);
        }
        // An attempt under another condition can no longer land.
        if matches!(&self.attempt, Some(a) if a.condition != Condition::Absent) {
            self.attempt = None;
        }
        // Resending a creation whose answer was lost waits a retry period, so a store
        // that times out writes is not hammered.
        self.next_at = match (&self.attempt, self.may_create_at()) {
            (Some(a), _) if a.maybe_landed => retry,
            (_, Some(t)) if now < t => retry.min(t),
            _ => now,
        };
        FollowerNext::Follow
    }

    /// A conditional read, answered at `now`, found the object unchanged.
    fn not_modified(&mut self, now: Instant, pace: &Pace) -> FollowerNext {
        if let Some(e) = self.fatal_unless_landed.take() {
            return FollowerNext::Fatal(e);
        }
        self.reconcile = false;
        let observed = self.observed.take();
        self.next_at = match &observed {
            Some(o) => self.next_read(o, now, pace),
            None => now,
        };
        self.observed = observed;
        FollowerNext::Follow
    }

    /// When to read again a record held by someone else, last read at `now` (docs/design.md
    /// §3 "Follow"): at the slow period while its ETag is younger than a renewal interval
    /// plus one fast poll, at the fast period once it is older (the renewal is overdue, so
    /// the lease may run out soon), and never later than the instant it may be taken over.
    ///
    /// The record does not say how often its holder renews: this follower expects it as
    /// often as it would itself (`--renew-every`, at most the holder's lease). A wrong
    /// guess costs reads, never safety: takeover still waits out the whole lease.
    fn next_read(&mut self, o: &Observed, now: Instant, pace: &Pace) -> Instant {
        if self.peer.answering {
            // The peer tells of every renewal: the store is read again only when a
            // takeover could be due.
            self.overdue = false;
            return self.takeover_due(o);
        }
        let renew = pace.renew_every.min(o.record.lease());
        self.overdue = now >= o.first_seen + renew + pace.fast_period;
        let next = if self.overdue { pace.fast } else { pace.slow };
        next.min(o.first_seen + o.record.lease())
    }

    /// When the store must next be read (or a takeover sent) while the peer answers: a
    /// lease after the newest ETag seen, in the store or told by the peer.
    fn takeover_due(&self, o: &Observed) -> Instant {
        let lease = self
            .longest_lease
            .map_or(o.record.lease(), |l| l.max(o.record.lease()));
        let basis = self.peer.sighting.as_ref().map_or(o.first_seen, |s| s.at);
        basis + lease
    }

    /// A read, answered at `now`, found a record; a new one is told as an event.
    /// `sighted` is what the peer told of before the read.
    fn found(
        &mut self,
        etag: Etag,
        body: &[u8],
        now: Instant,
        pace: &Pace,
        events: &mut VecDeque<Event>,
        sighted: Option<Sighting>,
    ) -> FollowerNext {
        let retry = pace.fast;
        self.reconcile = false;
        self.absent = false;
        let record = match LockRecord::decode(body) {
            Ok(r) => r,
            Err(e) => return FollowerNext::Fatal(FatalError::from(e)),
        };
        self.max_term = Some(self.max_term.map_or(record.term, |t| t.max(record.term)));
        self.longest_lease = Some(
            self.longest_lease
                .map_or(record.lease(), |l| l.max(record.lease())),
        );
        self.gone_since = None;
        if let Some(a) = &self.attempt {
            if a.record.lease_id == record.lease_id && !record.released {
                // Our acquisition landed, though we never heard so.
                let (attempt, valid_from) = (Box::new(a.clone()), a.first_sent);
                return FollowerNext::Lead {
                    attempt,
                    etag,
                    record: Box::new(record),
                    valid_from,
                };
            }
            let still_possible = matches!(&a.condition, Condition::Matches(e) if *e == etag);
            if !still_possible {
                self.attempt = None;
            }
        }
        if let Some(e) = self.fatal_unless_landed.take() {
            return FollowerNext::Fatal(e);
        }
        // No one can ever take this record over; better to say so now than to wait out
        // its lease first.
        if record.term == Term::LAST {
            return FollowerNext::Fatal(FatalError::terms_exhausted());
        }
        let changed = self.observed.as_ref().is_none_or(|o| o.etag != etag);
        if changed {
            events.push_back(Event::Observed {
                holder: record.holder.clone(),
                term: record.term,
                released: record.released,
            });
            // An ETag a peer told of before this read counts from that answer's arrival:
            // the peer could only tell of it once it was in the store (it learns an ETag
            // from the answer to the write), so the write was sent before then, and the
            // holder's lease counts from that send, as after a read (docs/design.md §3
            // "Peer mode"). A stale, foreign or invented ETag never matches.
            let first_seen = sighted.filter(|s| s.etag == etag).map_or(now, |s| s.at);
            self.observed = Some(Observed {
                etag,
                first_seen,
                record,
            });
        }
        let maybe_landed = matches!(&self.attempt, Some(a) if a.maybe_landed);
        let observed = self.observed.take();
        self.next_at = match &observed {
            _ if maybe_landed => retry,
            Some(o) if o.record.released => now,
            Some(o) => self.next_read(o, now, pace),
            None => now,
        };
        self.observed = observed;
        FollowerNext::Follow
    }

    /// A write of ours, answered at `now`, failed with `e`.
    fn write_failed(&mut self, e: StoreError, now: Instant) {
        if is_refusal(&e) {
            // Someone else wrote (or the object went away): follow again. An earlier
            // attempt whose answer was lost may still be ours.
            if matches!(&self.attempt, Some(a) if !a.maybe_landed) {
                self.attempt = None;
            }
            self.reconcile = self.attempt.is_some();
            self.observed = None;
            self.absent = false;
            self.next_at = now;
            return;
        }
        if let Some(a) = self.attempt.as_mut() {
            a.maybe_landed = true;
        }
        // Even a fatal answer (a 403 from a proxy, an SDK that could not parse the
        // response) may hide a write that landed: a lease of ours must not be left
        // running unknown to us, so read first. If the read does not show our write, the
        // error ends the campaign as it would have.
        if let StoreError::Fatal(kind, msg) = e {
            self.fatal_unless_landed = Some(FatalError::Store(kind, msg));
        }
        self.reconcile = true;
        self.next_at = now;
    }
}

/// What a follower's answer leads to.
enum FollowerNext {
    /// Go on following.
    Follow,
    /// The campaign ends with this error.
    Fatal(FatalError),
    /// Our `attempt` is in the store as `record` with `etag`; the lease counts from
    /// `valid_from`.
    Lead {
        attempt: Box<Write>,
        etag: Etag,
        record: Box<LockRecord>,
        valid_from: Instant,
    },
}

#[derive(Debug)]
struct Leader {
    term: Term,
    lease_id: LeaseId,
    /// The last record known to be in the store, and its ETag.
    record: LockRecord,
    etag: Etag,
    /// Send instant of the write that produced `etag` (earliest possible attempt).
    valid_from: Instant,
    pending: Option<Write>,
    reconcile: bool,
    releasing: bool,
    next_renew: Instant,
    next_at: Instant,
    announced: bool,
    at_risk: bool,
    failures: u32,
}

#[derive(Debug)]
enum Phase {
    Following(Follower),
    Leading(Leader),
    Ended,
}

/// One candidate's view of one lock: follower, then leader, then ended.
#[derive(Debug)]
pub struct Election {
    timing: Timing,
    holder: String,
    phase: Phase,
    in_flight: InFlight,
    events: VecDeque<Event>,
    resign: bool,
    /// `--once-per`: acquisitions claim the current window unless it is spent.
    once_per: Option<OncePer>,
    /// How this lease's run ended, written with every later write of the lease.
    run_end: Option<RunEnd>,
    /// `--advertise`: our peer endpoint, written into our records.
    advertise: Option<String>,
    jitter: Jitter,
}

/// The instants a follower may read again at, drawn for one answer.
struct Pace {
    /// One fast period from now, shortened at random.
    fast: Instant,
    /// One slow period from now, shortened at random.
    slow: Instant,
    /// The fast period itself: the slack on the holder's renewal interval.
    fast_period: Duration,
    /// How often the holder is expected to renew.
    renew_every: Duration,
}

/// Shortens each follower wait by up to 1/[`JITTER_DIVISOR`] of it, at random, so that
/// followers started together drift apart instead of reading in step. Only ever
/// shortens: the slow period stays the longest a follower waits, which is what the
/// failover bound `lease + follow_every` counts on.
#[derive(Debug)]
struct Jitter(u64);

/// A wait is shortened by up to 1/20 (5 %) of it.
const JITTER_DIVISOR: u32 = 20;

impl Jitter {
    fn random() -> Jitter {
        let mut b = [0u8; 8];
        // Without the OS's randomness, the boot clock still tells processes apart.
        let seed = match getrandom::fill(&mut b) {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => crate::clock::boot_now().since_origin().as_nanos() as u64,
        };
        Jitter(seed | 1)
    }

    /// xorshift64*: plenty for spreading polls.
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn shorten(&mut self, period: Duration) -> Duration {
        if self.0 == 0 {
            return period;
        }
        let max_cut = period / JITTER_DIVISOR;
        let fraction = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        period - max_cut.mul_f64(fraction)
    }
}

impl Election {
    /// A candidate for the lock, holding nothing yet. `holder` is the name shown to
    /// operators; ownership is a random lease id per acquisition.
    pub fn new(timing: Timing, holder: impl Into<String>) -> Election {
        Election {
            timing,
            holder: holder.into(),
            phase: Phase::Following(Follower::new(None, None)),
            in_flight: InFlight::None,
            events: VecDeque::new(),
            resign: false,
            once_per: None,
            run_end: None,
            advertise: None,
            jitter: Jitter::random(),
        }
    }

    /// Seeds the random shortening of follower waits, for a simulation that must replay
    /// exactly; by default it is seeded from the OS.
    ///
    /// Seed 0 turns the shortening off, for tests that name exact instants.
    pub fn seed_jitter(&mut self, seed: u64) {
        self.jitter = Jitter(seed);
    }

    /// The store says the lock object may have changed (the file store watches its
    /// file): a follower reads it now instead of at its next poll. A leader, or a
    /// candidate with a request in flight, ignores it. Reading early is always safe: a
    /// takeover still waits out the lease from the first sight of an ETag.
    pub fn wake(&mut self, now: Instant) {
        if self.in_flight != InFlight::None {
            return;
        }
        if let Phase::Following(f) = &mut self.phase {
            f.next_at = f.next_at.min(now);
        }
    }

    /// Whether the candidate is following (not leading, not ended): the phase in which
    /// [`Election::wake`] matters.
    pub fn is_following(&self) -> bool {
        matches!(self.phase, Phase::Following(_))
    }

    /// Under `--once-per`: every acquisition claims the current window in its own write,
    /// unless the record it replaces shows the window spent; otherwise it carries the last
    /// run on. Without it, acquisitions carry the last run on unchanged.
    pub fn with_once_per(mut self, once_per: Option<OncePer>) -> Election {
        self.once_per = once_per;
        self
    }

    /// Writes `url` into every record of our leases (`--advertise`): followers then
    /// long-poll it for our renewals instead of reading the store.
    pub fn with_advertise(mut self, url: Option<String>) -> Election {
        self.advertise = url;
        self
    }

    /// The long-poll of the holder's peer endpoint the driver may run during the
    /// current wait: `None` unless following a live record that advertises one, with no
    /// write of ours to settle, and the peer not in its retry pause.
    pub fn watch(&self, now: Instant) -> Option<Watch> {
        let Phase::Following(f) = &self.phase else {
            return None;
        };
        if self.in_flight != InFlight::None
            || f.reconcile
            || f.attempt.is_some()
            || now < f.peer.retry_at
        {
            return None;
        }
        let o = f.observed.as_ref()?;
        if o.record.released {
            return None;
        }
        let url = o.record.advertise.clone()?;
        let after = f.peer.newest_etag(o).clone();
        Some(Watch {
            url,
            after,
            hold: f.peer.hold(&self.timing),
        })
    }

    /// The answer to the [`Watch`] sent at `sent`, arrived at `now` (`Err`: none, or
    /// not one we understand). A new ETag defers the store's next read to a lease after
    /// `now`; a peer that no longer leads, or cannot be asked, sends the follower back
    /// to reading the store at once, and at its usual pace until the peer answers again.
    /// No answer ever brings a takeover closer.
    pub fn peer_answered(
        &mut self,
        answer: Result<PeerAnswer, String>,
        sent: Instant,
        now: Instant,
    ) {
        let timing = self.timing;
        let Phase::Following(f) = &mut self.phase else {
            return;
        };
        let Some(o) = f.observed.take() else {
            return;
        };
        let after = f.peer.newest_etag(&o).clone();
        match answer {
            Ok(PeerAnswer {
                etag: Some(etag),
                leading: true,
            }) => {
                let hold = f.peer.hold(&timing);
                f.peer.answering = true;
                if etag != after {
                    f.peer.sighting = (etag != o.etag).then_some(Sighting { etag, at: now });
                    f.peer.retry_at = now;
                } else {
                    // An endpoint holds an unchanged answer for `hold`; one that answers
                    // "unchanged" at once is not asked again in a tight loop.
                    f.peer.retry_at = sent + hold / 2;
                }
                f.next_at = f.takeover_due(&o);
                if f.overdue {
                    f.overdue = false;
                    self.events.push_back(Event::RenewalOverdue(false));
                }
            }
            other => {
                // Not the leader any more (released, lost, or never was), no answer, or
                // garbage: the store is the authority, so ask it now if the peer had
                // stood in for it.
                if f.peer.answering {
                    f.next_at = f.next_at.min(now);
                }
                f.peer.answering = false;
                f.peer.retry_at = now + timing.fast_poll();
                if matches!(other, Ok(PeerAnswer { leading: false, .. })) {
                    f.next_at = f.next_at.min(now);
                }
            }
        }
        f.observed = Some(o);
    }

    /// Whether the follower is taking the holder's renewals from its peer endpoint.
    pub fn peer_answering(&self) -> bool {
        matches!(&self.phase, Phase::Following(f) if f.peer.answering)
    }

    /// The record of our lease as last known in the store, while leading.
    pub fn record(&self) -> Option<&LockRecord> {
        match &self.phase {
            Phase::Leading(l) => Some(&l.record),
            _ => None,
        }
    }

    /// The ETag under which [`Election::record`] is in the store, while leading.
    pub fn etag(&self) -> Option<&Etag> {
        match &self.phase {
            Phase::Leading(l) => Some(&l.etag),
            _ => None,
        }
    }

    /// The command of this lease's run ended: every later write of the lease (the next
    /// one soon, and the release) records `end` in the run this lease claimed. Nothing
    /// changes unless we lead and the record's last run is ours.
    pub fn finish_run(&mut self, end: RunEnd) {
        let Phase::Leading(l) = &mut self.phase else {
            return;
        };
        if !l.record.runs_under_this_lease() || self.run_end.is_some() {
            return;
        }
        if l.pending.is_none() && !l.releasing {
            // Renew now rather than at the next interval: `status` should not show a
            // finished run as running for long. An earlier renewal is always safe.
            l.next_renew = l.valid_from;
            l.next_at = l.next_at.min(l.next_renew);
        }
        self.run_end = Some(end);
    }

    /// The timing this election runs with.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The holder name written into our records, for people; not ownership.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Stop campaigning, or release the lease once held. A leader releases at its next
    /// poll (the caller must have stopped its child first); a follower ends.
    pub fn resign(&mut self) {
        self.resign = true;
    }

    /// Whether we lead and have said so with [`Event::Elected`] (a lease recognised late
    /// is announced only once a renewal gives it runway).
    pub fn is_leader(&self) -> bool {
        matches!(&self.phase, Phase::Leading(l) if l.announced)
    }

    /// Whether the election is over (lost, released, abandoned or failed): [`Step::Done`].
    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    /// The term and lease id we hold, once elected.
    pub fn lease(&self) -> Option<(Term, &LeaseId)> {
        match &self.phase {
            Phase::Leading(l) if l.announced => Some((l.term, &l.lease_id)),
            _ => None,
        }
    }

    /// The instant at which no follower can yet have taken over, minus the margin
    /// ([`Timing::valid_until`] of the last confirmed write's send): the child must be
    /// dead by then. `None` unless leading.
    pub fn valid_until(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Leading(l) => Some(self.timing.valid_until(l.valid_from)),
            _ => None,
        }
    }

    /// When the stop signal goes to the child if no renewal has landed:
    /// [`Timing::stop_at`] of [`valid_until`](Election::valid_until), that is
    /// `valid_until − kill_after`. `None` unless leading.
    pub fn stop_at(&self) -> Option<Instant> {
        self.valid_until().map(|v| self.timing.stop_at(v))
    }

    /// The record of the current holder as last seen, while following.
    pub fn observed(&self) -> Option<&LockRecord> {
        match &self.phase {
            Phase::Following(f) => f.observed.as_ref().map(|o| &o.record),
            _ => None,
        }
    }

    /// What to do at `now`. Must not be called while a request is in flight.
    pub fn poll(&mut self, now: Instant) -> Step {
        if let Some(e) = self.events.pop_front() {
            return Step::Event(e);
        }
        debug_assert_eq!(
            self.in_flight,
            InFlight::None,
            "poll while a request is in flight"
        );
        let step = match &mut self.phase {
            Phase::Ended => return Step::Done,
            Phase::Following(_) => self.poll_follower(now),
            Phase::Leading(_) => self.poll_leader(now),
        };
        match &step {
            Step::Send(Request::Read { .. }) => self.in_flight = InFlight::Read,
            Step::Send(_) => self.in_flight = InFlight::Write,
            _ => {}
        }
        // A transition made while deciding (poll_* never both sends and emits one) is
        // reported before anything else.
        match self.events.pop_front() {
            Some(e) => Step::Event(e),
            None => step,
        }
    }

    fn poll_follower(&mut self, now: Instant) -> Step {
        let Phase::Following(f) = &mut self.phase else {
            return Step::Done;
        };
        if self.resign {
            self.phase = Phase::Ended;
            self.events.push_back(Event::Abandoned);
            return Step::Done;
        }
        if now < f.next_at {
            return Step::Wait(f.next_at);
        }
        if f.reconcile || f.observed.is_none() && !f.absent {
            return Step::Send(Request::Read { known: None });
        }
        let Some(obs) = &f.observed else {
            // Absent when last read: (re)send the creation, once a disappearance has
            // been waited out; until then, keep watching for a new record.
            if f.may_create_at().is_some_and(|t| now < t) {
                return Step::Send(Request::Read { known: None });
            }
            if matches!(&f.attempt, Some(a) if a.condition != Condition::Absent) {
                f.attempt = None;
            }
            let attempt = match f.attempt.take() {
                Some(a) => a,
                None => {
                    let Some(term) = f.max_term.map_or(Some(Term::FIRST), Term::next) else {
                        self.fatal(FatalError::terms_exhausted());
                        return Step::Done;
                    };
                    let lease_id = LeaseId::random();
                    let mut record =
                        LockRecord::acquired(term, &self.holder, lease_id, self.timing.lease())
                            .with_last_run(None, self.once_per.as_ref());
                    record.advertise.clone_from(&self.advertise);
                    Write::new(record, Condition::Absent, now)
                }
            };
            let a = f.attempt.insert(attempt);
            a.resend(now);
            return Step::Send(a.request());
        };
        if f.peer.sighting.is_some() {
            // The peer told of a newer write: learn it from the store (its body, its
            // term) before any takeover. A takeover only ever follows the store's answer.
            return Step::Send(Request::Read {
                known: Some(obs.etag.clone()),
            });
        }
        let expires = obs.first_seen + obs.record.lease();
        if obs.record.released || now >= expires {
            let condition = Condition::Matches(obs.etag.clone());
            let reuse = matches!(&f.attempt, Some(a) if a.condition == condition);
            if !reuse {
                let highest = obs.record.term.max(f.max_term.unwrap_or(obs.record.term));
                let Some(term) = highest.next() else {
                    self.fatal(FatalError::terms_exhausted());
                    return Step::Done;
                };
                let mut record = LockRecord::acquired(
                    term,
                    &self.holder,
                    LeaseId::random(),
                    self.timing.lease(),
                )
                .with_last_run(obs.record.last_run.as_ref(), self.once_per.as_ref());
                record.advertise.clone_from(&self.advertise);
                f.attempt = Some(Write::new(record, condition, now));
            }
            if let Some(a) = f.attempt.as_mut() {
                a.resend(now);
                return Step::Send(a.request());
            }
        }
        Step::Send(Request::Read {
            known: Some(obs.etag.clone()),
        })
    }

    fn poll_leader(&mut self, now: Instant) -> Step {
        let timing = self.timing;
        let Phase::Leading(l) = &mut self.phase else {
            return Step::Done;
        };
        let valid_until = timing.valid_until(l.valid_from);
        let stop_at = timing.stop_at(valid_until);
        if now >= valid_until {
            self.lose(LossReason::Expired);
            return Step::Wait(now);
        }
        if l.announced && !l.at_risk && now >= stop_at {
            l.at_risk = true;
            self.events.push_back(Event::AtRisk { valid_until });
            return Step::Wait(now);
        }
        if self.resign && !l.releasing && l.pending.is_none() {
            l.releasing = true;
            l.pending = Some(Write::new(
                l.record.released().with_run_end(self.run_end.as_ref()),
                Condition::Matches(l.etag.clone()),
                now,
            ));
            l.next_at = now;
        }
        if now < l.next_at {
            return Step::Wait(wake_at(l, now, stop_at, valid_until));
        }
        if l.reconcile {
            return Step::Send(Request::Read { known: None });
        }
        if l.pending.is_none() && (now >= l.next_renew || !l.announced) {
            l.pending = Some(Write::new(
                l.record.renewed().with_run_end(self.run_end.as_ref()),
                Condition::Matches(l.etag.clone()),
                now,
            ));
        }
        match l.pending.as_mut() {
            Some(w) => {
                w.resend(now);
                Step::Send(w.request())
            }
            None => {
                l.next_at = l.next_renew;
                Step::Wait(wake_at(l, now, stop_at, valid_until))
            }
        }
    }

    /// The answer to the request from the last `poll`, received at `now`.
    pub fn handle(&mut self, reply: Reply, now: Instant) {
        self.in_flight = InFlight::None;
        match &self.phase {
            Phase::Ended => {}
            Phase::Following(_) => self.handle_follower(reply, now),
            Phase::Leading(_) => self.handle_leader(reply, now),
        }
    }

    fn handle_follower(&mut self, reply: Reply, now: Instant) {
        let pace = Pace {
            fast: now + self.jitter.shorten(self.timing.fast_poll()),
            slow: now + self.jitter.shorten(self.timing.follow_every()),
            fast_period: self.timing.fast_poll(),
            renew_every: self.timing.renew_every(),
        };
        let retry = pace.fast;
        let Phase::Following(f) = &mut self.phase else {
            return;
        };
        let was_overdue = f.overdue;
        // The store's answer supersedes what the peer told before it.
        let sighted = match &reply {
            Reply::Read(Ok(_)) => f.peer.sighting.take(),
            _ => None,
        };
        let next = match reply {
            Reply::Read(Ok(ReadReply::Missing)) => f.found_missing(now, retry),
            Reply::Read(Ok(ReadReply::NotModified)) => f.not_modified(now, &pace),
            Reply::Read(Ok(ReadReply::Found { etag, body })) => {
                f.found(etag, &body, now, &pace, &mut self.events, sighted)
            }
            Reply::Read(Err(e)) => {
                if let StoreError::Fatal(kind, msg) = e {
                    FollowerNext::Fatal(FatalError::Store(kind, msg))
                } else {
                    f.next_at = retry;
                    FollowerNext::Follow
                }
            }
            Reply::Write(Ok(etag)) => match f.attempt.take() {
                Some(a) => {
                    let record = Box::new(a.record.clone());
                    // This attempt landed, so none before it did: count from its send.
                    let valid_from = a.sent;
                    FollowerNext::Lead {
                        attempt: Box::new(a),
                        etag,
                        record,
                        valid_from,
                    }
                }
                None => FollowerNext::Follow,
            },
            Reply::Write(Err(e)) => {
                f.write_failed(e, now);
                FollowerNext::Follow
            }
        };
        if f.overdue != was_overdue {
            self.events.push_back(Event::RenewalOverdue(f.overdue));
        }
        match next {
            FollowerNext::Follow => {}
            FollowerNext::Fatal(e) => self.fatal(e),
            FollowerNext::Lead {
                attempt,
                etag,
                record,
                valid_from,
            } => self.become_leader(*attempt, etag, *record, valid_from, now),
        }
    }

    fn become_leader(
        &mut self,
        w: Write,
        etag: Etag,
        record: LockRecord,
        valid_from: Instant,
        now: Instant,
    ) {
        let timing = self.timing;
        let mut l = Leader {
            term: record.term,
            lease_id: record.lease_id.clone(),
            record,
            etag,
            valid_from,
            pending: None,
            reconcile: false,
            releasing: false,
            next_renew: valid_from + timing.renew_every(),
            next_at: now,
            announced: false,
            at_risk: false,
            failures: 0,
        };
        debug_assert_eq!(w.record.lease_id, l.lease_id);
        // A lease recognised late (after ambiguous answers) may have too little time
        // left to run a child: renew it first and announce only after that lands.
        if timing.has_runway(timing.valid_until(valid_from), now) {
            l.announced = true;
            self.events.push_back(Event::Elected {
                term: l.term,
                lease_id: l.lease_id.clone(),
            });
        }
        self.phase = Phase::Leading(l);
    }

    fn handle_leader(&mut self, reply: Reply, now: Instant) {
        let timing = self.timing;
        let retry = now + timing.retry_period();
        let Phase::Leading(l) = &mut self.phase else {
            return;
        };
        match reply {
            Reply::Write(Ok(etag)) => {
                let Some(w) = l.pending.take() else { return };
                // This attempt landed, so none before it did: count from its send.
                let sent = w.sent;
                self.confirm(w, etag, sent, now);
            }
            Reply::Write(Err(e)) => {
                l.failures += 1;
                // A refusal: did an earlier attempt land, or did someone take over? Any
                // other answer, a fatal one included, may hide this attempt landing: the
                // lease then counts from the earliest attempt that could have. Either
                // way, ask; and keep trying until the stop point, so that a revoked
                // credential or a store outage ends the lease by expiry, never by
                // guessing.
                if !is_refusal(&e) {
                    if let Some(w) = l.pending.as_mut() {
                        w.maybe_landed = true;
                    }
                }
                l.reconcile = true;
                l.next_at = now;
            }
            Reply::Read(Ok(ReadReply::Found { etag, body })) => {
                let record = match LockRecord::decode(&body) {
                    Ok(r) => r,
                    Err(e) => return self.lose(LossReason::Unreadable(e.to_string())),
                };
                if record.lease_id != l.lease_id {
                    return self.lose(LossReason::TakenOver {
                        holder: record.holder,
                        term: record.term,
                    });
                }
                l.reconcile = false;
                let confirmed_seq = l.record.seq;
                match l.pending.take() {
                    Some(w) if w.record.seq == record.seq => {
                        let first = w.first_sent;
                        self.confirm(w, etag, first, now);
                    }
                    Some(w) if record.seq == l.record.seq => {
                        // Not landed (yet). Retry the same bytes under the ETag just
                        // read: if the earlier attempt lands first, the retry fails
                        // and the next re-read recognises it.
                        l.etag = etag.clone();
                        let mut w = w;
                        w.condition = Condition::Matches(etag);
                        l.next_at = if w.maybe_landed { retry } else { now };
                        l.pending = Some(w);
                    }
                    _ if record.seq == l.record.seq => {
                        l.etag = etag;
                        l.next_at = now;
                    }
                    _ => {
                        self.lose(LossReason::Unreadable(format!(
                            "our lease with an unexpected seq {} (expected {confirmed_seq})",
                            record.seq
                        )));
                    }
                }
            }
            Reply::Read(Ok(ReadReply::Missing)) => self.lose(LossReason::Deleted),
            Reply::Read(Ok(ReadReply::NotModified)) | Reply::Read(Err(_)) => {
                l.next_at = retry;
            }
        }
    }

    /// A leader's write is known to be in the store, sent no earlier than `sent`.
    fn confirm(&mut self, w: Write, etag: Etag, sent: Instant, now: Instant) {
        let timing = self.timing;
        let Phase::Leading(l) = &mut self.phase else {
            return;
        };
        let was_failing = l.failures > 0;
        l.failures = 0;
        l.etag = etag;
        l.record = w.record;
        l.valid_from = sent;
        l.reconcile = false;
        l.next_renew = sent + timing.renew_every();
        l.next_at = l.next_renew;
        if l.record.released {
            self.phase = Phase::Ended;
            self.events.push_back(Event::Released);
            return;
        }
        if !l.announced {
            if timing.has_runway(timing.valid_until(sent), now) {
                l.announced = true;
                self.events.push_back(Event::Elected {
                    term: l.term,
                    lease_id: l.lease_id.clone(),
                });
            } else {
                l.next_at = now;
            }
        } else if was_failing {
            self.events.push_back(Event::Recovered);
        }
    }

    /// The lease is gone. Once announced, that ends the election (the holder must stop
    /// its child and campaign anew); a lease recognised too late to announce was never
    /// used, so the candidate simply follows again.
    fn lose(&mut self, reason: LossReason) {
        match &self.phase {
            Phase::Leading(l) if !l.announced => {
                let (term, lease) = (l.term, l.record.lease());
                self.phase = Phase::Following(Follower::new(Some(term), Some(lease)));
            }
            _ => {
                self.phase = Phase::Ended;
                self.events.push_back(Event::Lost(reason));
            }
        }
    }

    fn fatal(&mut self, e: FatalError) {
        self.phase = Phase::Ended;
        self.events.push_back(Event::Fatal(e));
    }
}

/// A definite refusal of a conditional write: 412, or 404 on `If-Match`. The write did
/// not land and never will. Every other answer may hide a write that landed.
fn is_refusal(e: &StoreError) -> bool {
    matches!(e, StoreError::PreconditionFailed | StoreError::Missing)
}

/// The next instant a leader must look at the world: its next planned request, its
/// stop point, or the end of its lease.
fn wake_at(l: &Leader, now: Instant, stop_at: Instant, valid_until: Instant) -> Instant {
    let mut t = l.next_at.min(valid_until);
    if l.announced && !l.at_risk && stop_at > now {
        t = t.min(stop_at);
    }
    t
}

#[cfg(test)]
mod tests;
