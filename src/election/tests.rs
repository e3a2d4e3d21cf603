//! Unit tests of each transition of the protocol, over the memory store and a manual
//! instant. `Net` performs requests instantly unless a test scripts a fault for the next
//! one, which lets each test say exactly which answer the candidate sees.

use super::*;
use crate::store::memory::MemoryStore;
use crate::timing::TimingSpec;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(n_ms: u64) -> Instant {
    Instant::from_origin(ms(n_ms))
}

/// lease 30 s, renew 10 s, retry 2 s, kill after 5 s, margin 1.25 s.
/// The default timing, but with followers reading every 2 s (the retry period), as
/// these tests were written for; the two-speed schedule has tests of its own.
fn timing() -> Timing {
    Timing::new(&TimingSpec {
        follow_every: Some(Duration::from_secs(2)),
        ..TimingSpec::default()
    })
    .unwrap()
}

/// With [`timing`], a lease counted from send instant `s` is valid until `s + VALID`…
const VALID: u64 = 28_750;
/// …and its stop point is `s + STOP`.
const STOP: u64 = 23_750;

#[derive(Clone, Debug)]
enum Fault {
    /// The write is applied but its answer is lost.
    LandedNoAnswer,
    /// The write is not applied and no answer comes.
    LostNoAnswer,
    /// 409 without applying.
    Conflict,
    /// The store answers 412 without looking (a quirky store).
    Spurious412,
    /// The write is applied, then this error is the answer.
    LandedThen(StoreError),
    /// The write is not applied (yet: it is held back), and this error is the answer.
    HeldThen(StoreError),
}

struct Net {
    store: MemoryStore,
    faults: VecDeque<Option<Fault>>,
    /// Writes held back: applied later by `deliver_held`.
    held: Vec<Request>,
    /// Held writes reach the store just before the next write does.
    deliver_held_before_next_write: bool,
}

impl Net {
    fn new() -> Net {
        Net {
            store: MemoryStore::new(),
            faults: VecDeque::new(),
            held: Vec::new(),
            deliver_held_before_next_write: false,
        }
    }

    fn fault_next_write(&mut self, f: Fault) {
        self.faults.push_back(Some(f));
    }

    fn perform(&mut self, req: Request) -> Reply {
        if matches!(req, Request::Read { .. }) {
            return req.apply_to(&self.store);
        }
        if self.deliver_held_before_next_write {
            self.deliver_held();
        }
        match self.faults.pop_front().flatten() {
            None => req.apply_to(&self.store),
            Some(Fault::LandedNoAnswer) => {
                let _ = req.apply_to(&self.store);
                Reply::Write(Err(StoreError::Ambiguous("timeout".into())))
            }
            Some(Fault::LostNoAnswer) => {
                self.held.push(req);
                Reply::Write(Err(StoreError::Ambiguous("timeout".into())))
            }
            Some(Fault::Conflict) => Reply::Write(Err(StoreError::Conflict)),
            Some(Fault::Spurious412) => Reply::Write(Err(StoreError::PreconditionFailed)),
            Some(Fault::LandedThen(e)) => {
                let _ = req.apply_to(&self.store);
                Reply::Write(Err(e))
            }
            Some(Fault::HeldThen(e)) => {
                self.held.push(req);
                Reply::Write(Err(e))
            }
        }
    }

    /// The writes held back by `LostNoAnswer` land now.
    fn deliver_held(&mut self) {
        for req in std::mem::take(&mut self.held) {
            req.apply_to(&self.store);
        }
    }

    fn current(&self) -> LockRecord {
        LockRecord::decode(&self.store.body().expect("object exists")).unwrap()
    }
}

/// Runs `e` at instant `now` until it has nothing to do; returns its events.
fn run(e: &mut Election, net: &mut Net, now: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..100 {
        match e.poll(now) {
            Step::Send(req) => {
                let reply = net.perform(req);
                e.handle(reply, now);
            }
            Step::Event(ev) => events.push(ev),
            Step::Wait(t) if t <= now => continue,
            Step::Wait(_) | Step::Done => return events,
        }
    }
    panic!("election did not settle at {now:?}: {events:?}");
}

/// Advances from `from` to `to` in `step` increments, collecting events.
fn run_until(e: &mut Election, net: &mut Net, from: u64, to: u64, step: u64) -> Vec<Event> {
    let mut events = Vec::new();
    let mut t = from;
    while t <= to {
        events.extend(run(e, net, at(t)));
        t += step;
    }
    events
}

fn elected(events: &[Event]) -> Option<Term> {
    events.iter().find_map(|e| match e {
        Event::Elected { term, .. } => Some(*term),
        _ => None,
    })
}

/// A candidate whose waits are not shortened at random, so that tests can name instants.
fn candidate(name: &str) -> Election {
    let mut e = Election::new(timing(), name);
    e.seed_jitter(0);
    e
}

/// A follower at the default timing (reads every 10 s, fast 2 s), jitter off.
fn default_follower(name: &str) -> Election {
    let mut e = Election::new(Timing::new(&TimingSpec::default()).unwrap(), name);
    e.seed_jitter(0);
    e
}

#[test]
fn a_follower_reads_slowly_while_the_holder_renews_and_fast_once_a_renewal_is_overdue() {
    let mut net = Net::new();
    net.store.overwrite(foreign_record(3, false).encode());
    let mut b = default_follower("b");
    let ev = run(&mut b, &mut net, at(1_000));
    assert!(matches!(ev.as_slice(), [Event::Observed { .. }]), "{ev:?}");
    assert_eq!(
        b.poll(at(1_000)),
        Step::Wait(at(11_000)),
        "slow: one read per 10 s"
    );
    // 10 s old: younger than a renewal interval (10 s) plus one fast poll (2 s).
    let ev = run(&mut b, &mut net, at(11_000));
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(b.poll(at(11_000)), Step::Wait(at(21_000)));
    // 20 s old: the renewal is overdue, the lease may run out soon.
    let ev = run(&mut b, &mut net, at(21_000));
    assert_eq!(ev, [Event::RenewalOverdue(true)]);
    assert_eq!(
        b.poll(at(21_000)),
        Step::Wait(at(23_000)),
        "fast: every 2 s"
    );
    // The holder renews after all: back to the slow period.
    net.store
        .overwrite(foreign_record(3, false).renewed().encode());
    let ev = run(&mut b, &mut net, at(23_000));
    assert!(
        matches!(
            ev.as_slice(),
            [Event::Observed { .. }, Event::RenewalOverdue(false)]
        ),
        "{ev:?}"
    );
    assert_eq!(b.poll(at(23_000)), Step::Wait(at(33_000)));
}

#[test]
fn a_slow_follower_still_wakes_when_the_lease_may_be_taken_over() {
    let mut net = Net::new();
    net.store.overwrite(foreign_record(3, false).encode());
    let mut b = default_follower("b");
    let ev = run_until(&mut b, &mut net, 1_000, 30_999, 1);
    assert_eq!(elected(&ev), None, "not before the lease ran out: {ev:?}");
    let ev = run(&mut b, &mut net, at(31_000));
    assert_eq!(elected(&ev), Some(Term::new_for_test(4)), "{ev:?}");
}

#[test]
fn follower_waits_are_shortened_at_random_by_at_most_a_twentieth() {
    let mut waits = Vec::new();
    for seed in [1, 2, 3, 4] {
        let mut net = Net::new();
        net.store.overwrite(foreign_record(3, false).encode());
        let mut b = Election::new(Timing::new(&TimingSpec::default()).unwrap(), "b");
        b.seed_jitter(seed);
        run(&mut b, &mut net, at(1_000));
        let Step::Wait(t) = b.poll(at(1_000)) else {
            panic!("a follower waits")
        };
        assert!(t > at(10_500) && t <= at(11_000), "{t:?}");
        waits.push(t);
    }
    waits.dedup();
    assert_eq!(waits.len(), 4, "followers do not read in step: {waits:?}");
}

#[test]
fn an_absent_record_is_created_with_term_1() {
    let mut net = Net::new();
    let mut a = candidate("a");
    let ev = run(&mut a, &mut net, at(0));
    assert_eq!(elected(&ev), Some(Term::FIRST));
    let r = net.current();
    assert_eq!(r.term, Term::FIRST);
    assert_eq!(r.holder, "a");
    assert_eq!(r.seq, 1);
    assert_eq!(r.lease_ms, 30_000);
    assert!(!r.released);
    assert_eq!(a.valid_until(), Some(at(VALID)));
    assert_eq!(a.stop_at(), Some(at(STOP)));
}

#[test]
fn the_leader_renews_every_renew_interval_and_stays_leader() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    let ev = run_until(&mut a, &mut net, 500, 100_000, 500);
    assert!(ev.is_empty(), "{ev:?}");
    assert!(a.is_leader());
    let r = net.current();
    assert_eq!(r.seq, 11, "ten renewals in 100 s");
    assert_eq!(a.valid_until(), Some(at(100_000 + VALID)));
}

#[test]
fn a_follower_waits_the_lease_from_first_seen_then_takes_over_with_term_plus_1() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    // `a` dies silently. `b` first sees its record at t = 5 s.
    let mut b = candidate("b");
    let ev = run(&mut b, &mut net, at(5_000));
    assert!(matches!(ev.as_slice(), [Event::Observed { term, .. }] if *term == Term::FIRST));
    let ev = run_until(&mut b, &mut net, 5_001, 34_999, 1);
    assert_eq!(
        elected(&ev),
        None,
        "took over before lease_ms had passed since first_seen"
    );
    let ev = run(&mut b, &mut net, at(35_000));
    assert_eq!(elected(&ev), Some(Term::new_for_test(2)));
    assert_eq!(net.current().holder, "b");
}

#[test]
fn a_renewal_restarts_the_followers_wait() {
    let mut net = Net::new();
    let mut a = candidate("a");
    let mut b = candidate("b");
    run(&mut a, &mut net, at(0));
    let mut events = Vec::new();
    for t in (1..=120_000).step_by(250) {
        run(&mut a, &mut net, at(t));
        events.extend(run(&mut b, &mut net, at(t)));
    }
    assert_eq!(
        elected(&events),
        None,
        "b took over a live leader: {events:?}"
    );
    assert!(a.is_leader());
}

#[test]
fn followers_honour_the_holders_lease_not_their_own() {
    let mut net = Net::new();
    let long = Timing::new(&TimingSpec {
        lease: Duration::from_secs(120),
        ..TimingSpec::default()
    })
    .unwrap();
    let mut a = Election::new(long, "a");
    run(&mut a, &mut net, at(0));
    assert_eq!(net.current().lease_ms, 120_000);
    let mut b = candidate("b"); // its own lease is 30 s
    run(&mut b, &mut net, at(1_000));
    let ev = run_until(&mut b, &mut net, 1_001, 120_999, 250);
    assert_eq!(elected(&ev), None, "b used its own 30 s lease");
    let ev = run(&mut b, &mut net, at(121_000));
    assert_eq!(elected(&ev), Some(Term::new_for_test(2)));
}

#[test]
fn a_released_record_is_taken_over_at_once_with_term_plus_1() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    a.resign();
    let ev = run(&mut a, &mut net, at(1_000));
    assert_eq!(ev, vec![Event::Released]);
    assert!(a.is_ended());
    let r = net.current();
    assert!(r.released);
    assert_eq!(r.term, Term::FIRST, "release keeps the term");

    let mut b = candidate("b");
    let ev = run(&mut b, &mut net, at(1_001));
    assert_eq!(elected(&ev), Some(Term::new_for_test(2)));
}

#[test]
fn terms_never_decrease_across_release_and_takeover() {
    let mut net = Net::new();
    let mut last = 0;
    let mut t = 0;
    for round in 0..6 {
        let mut c = candidate(&format!("c{round}"));
        let ev = run(&mut c, &mut net, at(t));
        let term = elected(&ev).expect("elected").get();
        assert_eq!(term, last + 1);
        last = term;
        t += 1_000;
        if round % 2 == 0 {
            c.resign();
            run(&mut c, &mut net, at(t));
        } else {
            // Crash: the next candidate waits the lease out.
            let mut next = candidate("waiter");
            run(&mut next, &mut net, at(t));
            t += 30_000;
            let ev = run(&mut next, &mut net, at(t));
            last = elected(&ev).expect("takeover").get();
            assert_eq!(last, term + 1);
            next.resign();
            t += 1_000;
            run(&mut next, &mut net, at(t));
        }
        t += 1_000;
    }
    assert!(last >= 9);
}

#[test]
fn an_ambiguous_renewal_that_landed_is_recognised() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    net.fault_next_write(Fault::LandedNoAnswer);
    let ev = run(&mut a, &mut net, at(10_000));
    assert_eq!(ev, vec![Event::Recovered]);
    assert!(a.is_leader());
    assert_eq!(net.current().seq, 2, "no second write was needed");
    // The lease counts from the send of the write that landed.
    assert_eq!(a.valid_until(), Some(at(10_000 + VALID)));
    // Renewing continues from the adopted ETag.
    run(&mut a, &mut net, at(20_000));
    assert_eq!(net.current().seq, 3);
}

#[test]
fn an_ambiguous_renewal_that_did_not_land_is_retried() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    net.fault_next_write(Fault::LostNoAnswer);
    run(&mut a, &mut net, at(10_000));
    assert_eq!(net.current().seq, 1);
    assert_eq!(
        a.valid_until(),
        Some(at(VALID)),
        "the lease is not extended by a lost write"
    );
    let ev = run(&mut a, &mut net, at(12_000));
    assert_eq!(ev, vec![Event::Recovered]);
    assert_eq!(net.current().seq, 2);
    assert_eq!(a.valid_until(), Some(at(12_000 + VALID)));
}

#[test]
fn a_lost_write_that_lands_late_counts_from_its_first_send() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    net.fault_next_write(Fault::LostNoAnswer);
    run(&mut a, &mut net, at(10_000));
    // The held write lands now, before the retry.
    net.deliver_held();
    assert_eq!(net.current().seq, 2);
    // The retry fails (412: the ETag moved); the re-read shows our seq.
    let ev = run(&mut a, &mut net, at(12_000));
    assert_eq!(ev, vec![Event::Recovered]);
    assert!(a.is_leader());
    assert_eq!(
        a.valid_until(),
        Some(at(10_000 + VALID)),
        "from the earliest send"
    );
}

#[test]
fn a_conflict_then_success_keeps_the_lease() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    net.fault_next_write(Fault::Conflict);
    let ev = run(&mut a, &mut net, at(10_000));
    assert!(ev.is_empty());
    assert_eq!(net.current().seq, 1);
    let ev = run(&mut a, &mut net, at(12_000));
    assert_eq!(ev, vec![Event::Recovered]);
    assert_eq!(net.current().seq, 2);
    assert_eq!(a.valid_until(), Some(at(12_000 + VALID)));
}

#[test]
fn a_spurious_412_with_our_record_still_current_is_not_a_loss() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    net.fault_next_write(Fault::Spurious412);
    let ev = run(&mut a, &mut net, at(10_000));
    assert_eq!(
        ev,
        vec![Event::Recovered],
        "re-read, saw our record, rewrote at once"
    );
    assert!(a.is_leader());
    assert_eq!(net.current().seq, 2);
}

#[test]
fn a_412_with_another_lease_id_is_a_loss() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    let mut thief = net.current();
    thief.lease_id = LeaseId::from_str_for_test("other");
    thief.holder = "thief".into();
    thief.term = Term::new_for_test(2);
    net.store.overwrite(thief.encode());
    let ev = run(&mut a, &mut net, at(10_000));
    assert_eq!(
        ev,
        vec![Event::Lost(LossReason::TakenOver {
            holder: "thief".into(),
            term: Term::new_for_test(2)
        })]
    );
    assert!(a.is_ended());
}

#[test]
fn a_deleted_object_is_a_loss() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    net.store.delete();
    let ev = run(&mut a, &mut net, at(10_000));
    assert_eq!(ev, vec![Event::Lost(LossReason::Deleted)]);
}

#[test]
fn failing_renewals_reach_the_stop_point_then_expire() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    for _ in 0..100 {
        net.fault_next_write(Fault::LostNoAnswer);
    }
    let ev = run_until(&mut a, &mut net, 1, STOP - 1, 1);
    assert!(ev.is_empty(), "{ev:?}");
    let ev = run(&mut a, &mut net, at(STOP));
    assert_eq!(
        ev,
        vec![Event::AtRisk {
            valid_until: at(VALID)
        }]
    );
    let ev = run_until(&mut a, &mut net, STOP + 1, VALID - 1, 1);
    assert!(ev.is_empty(), "{ev:?}");
    let ev = run(&mut a, &mut net, at(VALID));
    assert_eq!(ev, vec![Event::Lost(LossReason::Expired)]);
    assert!(a.is_ended());
}

#[test]
fn the_leader_wakes_for_its_stop_point() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    for _ in 0..100 {
        net.fault_next_write(Fault::LostNoAnswer);
    }
    // Sleep exactly as told: the stop point must be among the wake-ups.
    let mut now = at(0);
    let mut woke = Vec::new();
    for _ in 0..100 {
        match a.poll(now) {
            Step::Wait(t) => {
                woke.push(t);
                now = t.max(now);
            }
            Step::Send(r) => {
                let reply = net.perform(r);
                a.handle(reply, now);
            }
            Step::Event(Event::AtRisk { .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(now, at(STOP), "woke at {woke:?}");
}

#[test]
fn an_ambiguous_takeover_that_landed_is_recognised_by_lease_id() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    a.resign();
    run(&mut a, &mut net, at(100));
    let mut b = candidate("b");
    net.fault_next_write(Fault::LandedNoAnswer);
    let ev = run(&mut b, &mut net, at(200));
    assert_eq!(elected(&ev), Some(Term::new_for_test(2)));
    assert_eq!(b.valid_until(), Some(at(200 + VALID)));
}

#[test]
fn a_create_lost_then_landed_late_is_recognised() {
    let mut net = Net::new();
    let mut a = candidate("a");
    net.fault_next_write(Fault::LostNoAnswer);
    let ev = run(&mut a, &mut net, at(0));
    assert_eq!(elected(&ev), None);
    net.deliver_held();
    let ev = run(&mut a, &mut net, at(2_000));
    assert_eq!(elected(&ev), Some(Term::FIRST));
    assert_eq!(
        a.valid_until(),
        Some(at(VALID)),
        "counted from the lost attempt's send"
    );
}

#[test]
fn a_lease_recognised_too_late_is_renewed_before_it_is_announced() {
    let mut net = Net::new();
    let mut a = candidate("a");
    net.fault_next_write(Fault::LostNoAnswer);
    run(&mut a, &mut net, at(0));
    net.deliver_held();
    // Recognised at 25 s, past the stop point of a lease counted from 0 s.
    let ev = run(&mut a, &mut net, at(25_000));
    assert_eq!(elected(&ev), Some(Term::FIRST));
    assert_eq!(net.current().seq, 2, "renewed before announcing");
    assert_eq!(a.valid_until(), Some(at(25_000 + VALID)));
}

#[test]
fn two_candidates_with_the_same_name_do_not_share_a_lease() {
    let mut net = Net::new();
    let mut a = candidate("web-1");
    let mut b = candidate("web-1");
    run(&mut a, &mut net, at(0));
    let ev = run_until(&mut b, &mut net, 0, 20_000, 500);
    assert_eq!(elected(&ev), None);
    assert!(a.is_leader());
}

#[test]
fn a_follower_that_resigns_ends_without_writing() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    let mut b = candidate("b");
    run(&mut b, &mut net, at(10));
    b.resign();
    let ev = run(&mut b, &mut net, at(20));
    assert_eq!(ev, vec![Event::Abandoned]);
    assert_eq!(net.current().holder, "a");
}

#[test]
fn a_malformed_record_is_fatal_for_a_follower() {
    let mut net = Net::new();
    net.store.overwrite(b"{\"v\":7}".to_vec());
    let mut a = candidate("a");
    let ev = run(&mut a, &mut net, at(0));
    assert!(
        matches!(ev.as_slice(), [Event::Fatal(FatalError::Record(m))] if m.contains("version 7"))
    );
}

#[test]
fn a_fatal_store_error_ends_the_campaign() {
    let mut a = candidate("a");
    assert!(matches!(a.poll(at(0)), Step::Send(Request::Read { .. })));
    a.handle(
        Reply::Read(Err(StoreError::Fatal(
            FatalKind::Permission,
            "access denied".into(),
        ))),
        at(1),
    );
    assert!(matches!(
        a.poll(at(1)),
        Step::Event(Event::Fatal(FatalError::Store(FatalKind::Permission, _)))
    ));
    assert_eq!(a.poll(at(1)), Step::Done);
}

#[test]
fn the_follower_reads_conditionally_once_it_knows_the_etag() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    let mut b = candidate("b");
    run(&mut b, &mut net, at(1));
    match b.poll(at(2_001)) {
        Step::Send(Request::Read { known: Some(_) }) => {}
        other => panic!("expected a conditional read, got {other:?}"),
    }
}

#[test]
fn a_late_lease_that_cannot_be_renewed_goes_back_to_following() {
    let mut net = Net::new();
    let mut a = candidate("a");
    net.fault_next_write(Fault::LostNoAnswer);
    run(&mut a, &mut net, at(0));
    net.deliver_held();
    // Every renewal is lost from now on.
    for _ in 0..100 {
        net.fault_next_write(Fault::LostNoAnswer);
    }
    let ev = run_until(&mut a, &mut net, 25_000, 29_500, 100);
    assert_eq!(elected(&ev), None, "{ev:?}");
    assert!(
        !ev.iter()
            .any(|e| matches!(e, Event::Fatal(_) | Event::Lost(_))),
        "an unannounced lease ends quietly: {ev:?}"
    );
    assert!(!a.is_ended() && !a.is_leader());
    // The store recovers: the old record is waited out like anyone's, then taken over.
    net.faults.clear();
    let ev = run_until(&mut a, &mut net, 30_000, 70_000, 500);
    assert_eq!(elected(&ev), Some(Term::new_for_test(2)));
}

/// A record of another lease with term `term`, written behind the protocol's back.
fn foreign_record(term: u64, released: bool) -> LockRecord {
    let mut r = LockRecord::acquired(
        Term::new_for_test(term),
        "elsewhere",
        LeaseId::from_str_for_test("foreign"),
        ms(30_000),
    );
    r.released = released;
    r
}

#[test]
fn a_record_at_the_last_term_is_refused_not_reused() {
    for released in [false, true] {
        let mut net = Net::new();
        net.store
            .overwrite(foreign_record(Term::LAST.get(), released).encode());
        let before = net.store.body();
        let mut a = candidate("a");
        let ev = run_until(&mut a, &mut net, 0, 40_000, 500);
        assert!(
            matches!(ev.as_slice(), [Event::Fatal(FatalError::Record(m))]
                if m.contains("term is at its maximum") && m.contains("new lock key")),
            "released: {released}: {ev:?}"
        );
        assert!(a.is_ended());
        assert_eq!(net.store.body(), before, "nothing written");
    }
}

#[test]
fn the_term_before_the_last_is_handed_out_once() {
    let mut net = Net::new();
    net.store
        .overwrite(foreign_record(Term::LAST.get() - 1, true).encode());
    let mut a = candidate("a");
    let ev = run(&mut a, &mut net, at(0));
    assert_eq!(elected(&ev), Some(Term::LAST));
    a.resign();
    assert_eq!(run(&mut a, &mut net, at(1_000)), vec![Event::Released]);
    let mut b = candidate("b");
    let ev = run(&mut b, &mut net, at(2_000));
    assert!(
        matches!(ev.as_slice(), [Event::Fatal(FatalError::Record(_))]),
        "{ev:?}"
    );
    assert_eq!(net.current().term, Term::LAST);
    assert!(net.current().released);
}

#[test]
fn a_record_whose_lease_is_over_a_day_is_fatal_not_waited_out() {
    let mut net = Net::new();
    let mut r = foreign_record(3, false);
    r.lease_ms = crate::record::MAX_LEASE_MS + 1;
    net.store.overwrite(r.encode());
    let mut a = candidate("a");
    let ev = run(&mut a, &mut net, at(0));
    assert!(
        matches!(ev.as_slice(), [Event::Fatal(FatalError::Record(m))] if m.contains("lease_ms")),
        "{ev:?}"
    );
}

fn forbidden() -> StoreError {
    StoreError::Fatal(FatalKind::Permission, "403 access denied".into())
}

/// Answers that are not a definite refusal, each of which may hide a landed write.
fn not_refusals() -> [StoreError; 4] {
    [
        forbidden(),
        StoreError::Unavailable("503 slow down".into()),
        StoreError::Conflict,
        StoreError::Ambiguous("timeout".into()),
    ]
}

#[test]
fn a_landed_renewal_answered_with_any_error_counts_from_its_first_send() {
    for e in not_refusals() {
        let mut net = Net::new();
        let mut a = candidate("a");
        run(&mut a, &mut net, at(0));
        net.fault_next_write(Fault::LandedThen(e.clone()));
        let ev = run_until(&mut a, &mut net, 10_000, 14_000, 1_000);
        assert_eq!(ev, vec![Event::Recovered], "{e}");
        assert!(a.is_leader());
        assert_eq!(net.current().seq, 2, "{e}: no second write landed");
        assert_eq!(
            a.valid_until(),
            Some(at(10_000 + VALID)),
            "{e}: the lease counts from the send that landed, not from a retry"
        );
    }
}

#[test]
fn a_renewal_that_lands_just_before_its_retry_counts_from_its_first_send() {
    // Answered at once (409, 503, 403), yet still on its way to the store: it lands
    // just before the retry, which then fails; the re-read shows our seq.
    for e in not_refusals() {
        let mut net = Net::new();
        let mut a = candidate("a");
        run(&mut a, &mut net, at(0));
        net.fault_next_write(Fault::HeldThen(e.clone()));
        net.deliver_held_before_next_write = true;
        let ev = run_until(&mut a, &mut net, 10_000, 14_000, 1_000);
        assert_eq!(ev, vec![Event::Recovered], "{e}");
        assert_eq!(net.current().seq, 2, "{e}");
        assert_eq!(a.valid_until(), Some(at(10_000 + VALID)), "{e}");
    }
}

#[test]
fn renewals_answered_fatal_are_retried_until_the_stop_point() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    for _ in 0..100 {
        net.fault_next_write(Fault::HeldThen(forbidden()));
    }
    let ev = run_until(&mut a, &mut net, 1, STOP - 1, 500);
    assert!(ev.is_empty(), "{ev:?}");
    assert!(net.held.len() > 1, "retried: {}", net.held.len());
    let ev = run_until(&mut a, &mut net, STOP, VALID, 250);
    assert_eq!(
        ev,
        vec![
            Event::AtRisk {
                valid_until: at(VALID)
            },
            Event::Lost(LossReason::Expired)
        ]
    );
}

#[test]
fn a_creation_answered_fatal_that_landed_leads_from_its_send() {
    let mut net = Net::new();
    let mut a = candidate("a");
    net.fault_next_write(Fault::LandedThen(forbidden()));
    let ev = run(&mut a, &mut net, at(0));
    assert_eq!(elected(&ev), Some(Term::FIRST), "{ev:?}");
    assert_eq!(a.valid_until(), Some(at(VALID)));
    assert_eq!(net.current().seq, 1);
}

#[test]
fn a_write_answered_fatal_that_did_not_land_ends_the_campaign() {
    // A creation, and a takeover of a released record.
    for released_first in [false, true] {
        let mut net = Net::new();
        if released_first {
            net.store.overwrite(foreign_record(4, true).encode());
        }
        let mut a = candidate("a");
        net.fault_next_write(Fault::HeldThen(forbidden()));
        let ev = run_until(&mut a, &mut net, 0, 10_000, 500);
        assert!(
            matches!(ev.as_slice(), [.., Event::Fatal(FatalError::Store(FatalKind::Permission, m))] if m.contains("403")),
            "{ev:?}"
        );
        assert_eq!(elected(&ev), None);
        assert!(a.is_ended());
        assert_eq!(net.held.len(), 1, "tried once, no loop");
    }
}

#[test]
fn a_takeover_answered_with_any_error_that_landed_leads_from_its_send() {
    for e in not_refusals() {
        let mut net = Net::new();
        net.store.overwrite(foreign_record(4, true).encode());
        let mut b = candidate("b");
        net.fault_next_write(Fault::LandedThen(e.clone()));
        let ev = run(&mut b, &mut net, at(200));
        assert_eq!(elected(&ev), Some(Term::new_for_test(5)), "{e}: {ev:?}");
        assert_eq!(b.valid_until(), Some(at(200 + VALID)), "{e}");
    }
}

#[test]
fn a_follower_waits_out_a_deleted_record_from_when_it_found_it_gone() {
    let mut net = Net::new();
    net.store.overwrite(foreign_record(7, false).encode());
    let mut b = candidate("b");
    let ev = run(&mut b, &mut net, at(5_000));
    assert!(matches!(ev.as_slice(), [Event::Observed { .. }]), "{ev:?}");
    // Deleted behind the protocol's back (an operator, a lifecycle rule) while its
    // holder may still run: b's next read, at 7 s, finds it gone.
    net.store.delete();
    let ev = run_until(&mut b, &mut net, 5_001, 7_000 + 30_000 - 1, 1);
    assert_eq!(elected(&ev), None, "created while the old lease may run");
    assert!(net.store.body().is_none(), "nothing written");
    let ev = run(&mut b, &mut net, at(37_000));
    assert_eq!(
        elected(&ev),
        Some(Term::new_for_test(8)),
        "above the term seen"
    );
}

#[test]
fn a_record_created_while_a_deletion_is_waited_out_is_followed() {
    let mut net = Net::new();
    net.store.overwrite(foreign_record(3, false).encode());
    let mut b = candidate("b");
    run(&mut b, &mut net, at(0));
    net.store.delete();
    run(&mut b, &mut net, at(2_000));
    // Someone who never saw the old record creates the object anew.
    let mut c = candidate("c");
    let ev = run(&mut c, &mut net, at(3_000));
    assert_eq!(elected(&ev), Some(Term::FIRST));
    // c lives on: b follows it, and neither takes it over nor creates anew.
    let mut events = Vec::new();
    for t in (3_000..=200_000).step_by(500) {
        run(&mut c, &mut net, at(t));
        events.extend(run(&mut b, &mut net, at(t)));
    }
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Event::Observed { holder, .. } if holder == "c")),
        "{events:?}"
    );
    assert_eq!(net.current().holder, "c");
    // Once c is gone, b takes over above every term it has seen.
    let ev = run_until(&mut b, &mut net, 200_500, 240_000, 500);
    assert_eq!(elected(&ev), Some(Term::new_for_test(4)));
}

#[test]
fn a_follower_that_never_saw_a_record_creates_at_once() {
    let mut net = Net::new();
    let mut b = candidate("b");
    let ev = run(&mut b, &mut net, at(0));
    assert_eq!(elected(&ev), Some(Term::FIRST));
}

#[test]
fn a_leader_s_deleted_or_overwritten_record_is_a_loss_to_act_on_at_once() {
    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    net.store.delete();
    let ev = run(&mut a, &mut net, at(10_000));
    let [Event::Lost(reason)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(*reason, LossReason::Deleted);
    assert!(reason.is_superseded(), "the child is killed at once");

    let mut net = Net::new();
    let mut a = candidate("a");
    run(&mut a, &mut net, at(0));
    net.store.overwrite(foreign_record(2, false).encode());
    let ev = run(&mut a, &mut net, at(10_000));
    let [Event::Lost(reason)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert!(matches!(reason, LossReason::TakenOver { .. }), "{reason:?}");
    assert!(reason.is_superseded());

    assert!(
        !LossReason::Expired.is_superseded(),
        "stopped at the stop point"
    );
}

/// Polls `e` at `now` until its first renewal (a `Replace`) is about to be sent;
/// returns whether it was leader by then, and the events seen on the way.
fn until_first_renewal(e: &mut Election, net: &mut Net, now: Instant) -> (bool, Vec<Event>) {
    let mut events = Vec::new();
    for _ in 0..100 {
        match e.poll(now) {
            Step::Send(req) => {
                if matches!(req, Request::Replace { .. }) {
                    let leading = e.is_leader();
                    let reply = net.perform(req);
                    e.handle(reply, now);
                    return (leading, events);
                }
                let reply = net.perform(req);
                e.handle(reply, now);
            }
            Step::Event(ev) => events.push(ev),
            other => panic!("{other:?} before any renewal: {events:?}"),
        }
    }
    panic!("no renewal: {events:?}");
}

/// A candidate whose creation, sent at 0, was lost and has landed since: the lease it
/// finds counts from 0.
fn candidate_with_a_late_lease(net: &mut Net) -> Election {
    let mut a = candidate("a");
    net.fault_next_write(Fault::LostNoAnswer);
    run(&mut a, net, at(0));
    net.deliver_held();
    a
}

#[test]
fn a_lease_recognised_with_less_than_the_runway_left_is_renewed_before_it_is_announced() {
    let mut net = Net::new();
    let mut a = candidate_with_a_late_lease(&mut net);
    // Recognised before the stop point but with less than one retry period (2 s) to it:
    // too little to start a child on.
    let now = STOP - 1_999;
    let (leading, ev) = until_first_renewal(&mut a, &mut net, at(now));
    assert!(!leading, "announced before renewing: {ev:?}");
    assert_eq!(elected(&ev), None);
    let ev = run(&mut a, &mut net, at(now));
    assert_eq!(elected(&ev), Some(Term::FIRST));
    assert_eq!(net.current().seq, 2);
    assert_eq!(a.valid_until(), Some(at(now + VALID)));
}

#[test]
fn a_lease_recognised_with_exactly_the_runway_left_is_announced_at_once() {
    let mut net = Net::new();
    let mut a = candidate_with_a_late_lease(&mut net);
    let (leading, ev) = until_first_renewal(&mut a, &mut net, at(STOP - 2_000));
    assert!(leading, "{ev:?}");
    assert_eq!(elected(&ev), Some(Term::FIRST));
}

// ---- Peer mode ------------------------------------------------------------------------

/// A candidate that advertises a peer endpoint in its records.
fn advertising(name: &str) -> Election {
    candidate(name).with_advertise(Some(format!("http://{name}:9464")))
}

/// Runs `e` at `now` like [`run`], counting the reads it sends.
fn run_counting_reads(
    e: &mut Election,
    net: &mut Net,
    now: Instant,
    reads: &mut u32,
) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..100 {
        match e.poll(now) {
            Step::Send(req) => {
                if matches!(req, Request::Read { .. }) {
                    *reads += 1;
                }
                let reply = net.perform(req);
                e.handle(reply, now);
            }
            Step::Event(ev) => events.push(ev),
            Step::Wait(t) if t <= now => continue,
            Step::Wait(_) | Step::Done => return events,
        }
    }
    panic!("election did not settle at {now:?}: {events:?}");
}

fn leading(etag: Option<&Etag>) -> Result<PeerAnswer, String> {
    Ok(PeerAnswer {
        etag: etag.cloned(),
        leading: true,
    })
}

#[test]
fn the_record_carries_the_advertised_url_and_followers_watch_it() {
    let mut net = Net::new();
    let mut a = advertising("a");
    run(&mut a, &mut net, at(0));
    assert_eq!(net.current().advertise.as_deref(), Some("http://a:9464"));
    let mut b = candidate("b");
    assert_eq!(b.watch(at(0)), None, "nothing read yet");
    run(&mut b, &mut net, at(5_000));
    let w = b.watch(at(5_000)).expect("a watch");
    assert_eq!(w.url, "http://a:9464");
    assert_eq!(Some(&w.after), a.etag());
    // A record without the field keeps its bytes: no "advertise" key at all.
    let mut c = candidate("c");
    let mut other = Net::new();
    run(&mut c, &mut other, at(0));
    let body = String::from_utf8(other.store.body().expect("a body")).expect("utf-8");
    assert!(!body.contains("advertise"), "{body}");
}

#[test]
fn a_follower_told_each_renewal_by_the_peer_reads_nothing_and_counts_from_the_answer() {
    let mut net = Net::new();
    let mut a = advertising("a");
    run(&mut a, &mut net, at(0));
    let mut b = candidate("b");
    let mut reads = 0;
    run_counting_reads(&mut b, &mut net, at(5_000), &mut reads);
    assert_eq!(reads, 1);
    reads = 0;
    // The first long-poll is held (nothing new) and answered.
    b.peer_answered(leading(a.etag()), at(5_000), at(9_000));
    let mut t = 5_250;
    while t <= 60_000 {
        let before = a.etag().cloned();
        run(&mut a, &mut net, at(t));
        if a.etag() != before.as_ref() {
            // The peer's long-poll answers the renewal at once.
            b.peer_answered(leading(a.etag()), at(t - 1), at(t));
        }
        let ev = run_counting_reads(&mut b, &mut net, at(t), &mut reads);
        assert_eq!(elected(&ev), None);
        t += 250;
    }
    assert_eq!(
        reads, 0,
        "no read of the store while the peer told every renewal"
    );
    assert!(b.peer_answering());
    // `a` renewed last at 60 s and dies; its endpoint goes with it.
    let last = net.current();
    b.peer_answered(Err("connection refused".into()), at(61_000), at(61_000));
    let ev = run_counting_reads(&mut b, &mut net, at(61_000), &mut reads);
    assert_eq!(reads, 1, "the store is read at once");
    assert_eq!(elected(&ev), None);
    // The renewal the peer told of at 60 s counts from that answer: 30 s later.
    for t in 61_001..90_000 {
        let ev = run(&mut b, &mut net, at(t));
        assert_eq!(
            elected(&ev),
            None,
            "took over at {t}, before the lease since the sighting"
        );
    }
    let ev = run(&mut b, &mut net, at(90_000));
    assert_eq!(elected(&ev), Some(last.term.next().expect("a next term")));
}

#[test]
fn a_lying_peer_can_delay_a_takeover_but_not_hasten_or_prevent_it() {
    for lie in ["invented", "stale"] {
        let mut net = Net::new();
        let mut a = advertising("a");
        run(&mut a, &mut net, at(0));
        let stale = a.etag().cloned().expect("an etag");
        let told = match lie {
            "stale" => stale,
            _ => Etag::new("0123456789abcdef"),
        };
        let mut b = candidate("b");
        run(&mut b, &mut net, at(5_000));
        let mut t = 5_000;
        // `a` lives and renews until 100 s; the peer answers the lie every second.
        while t <= 100_000 {
            run(&mut a, &mut net, at(t));
            if t % 1_000 == 0 {
                b.peer_answered(leading(Some(&told)), at(t - 500), at(t));
            }
            let ev = run(&mut b, &mut net, at(t));
            assert_eq!(
                elected(&ev),
                None,
                "{lie}: took over from a live leader at {t}"
            );
            t += 250;
        }
        assert_eq!(net.current().holder, "a");
        // `a` dies (its last renewal at 100 s); the liar goes on.
        let mut won = None;
        while t <= 100_000 + 4 * 30_000 {
            if t % 1_000 == 0 {
                b.peer_answered(leading(Some(&told)), at(t - 500), at(t));
            }
            let ev = run(&mut b, &mut net, at(t));
            if elected(&ev).is_some() {
                won = Some(t);
                break;
            }
            t += 250;
        }
        let won = won.unwrap_or_else(|| panic!("{lie}: never took over from a dead leader"));
        assert!(
            won >= 130_000,
            "{lie}: took over at {won}, before the lease ran out"
        );
    }
}

#[test]
fn a_peer_that_stops_leading_sends_the_follower_to_the_store_at_once() {
    let mut net = Net::new();
    let mut a = advertising("a");
    run(&mut a, &mut net, at(0));
    let mut b = default_follower("b");
    run(&mut b, &mut net, at(1_000));
    b.peer_answered(leading(a.etag()), at(1_000), at(1_500));
    a.resign();
    run(&mut a, &mut net, at(2_000));
    assert!(net.current().released);
    // Long before b's next read (a lease away while the peer answers):
    b.peer_answered(
        Ok(PeerAnswer {
            etag: None,
            leading: false,
        }),
        at(1_500),
        at(2_001),
    );
    let ev = run(&mut b, &mut net, at(2_001));
    assert_eq!(elected(&ev), Some(Term::new_for_test(2)));
}
