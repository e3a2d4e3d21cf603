//! The election driven for real: [`Candidate`] runs the state machine of `election.rs`
//! over a [`LockStore`] and the boot-time clock until it is elected, then hands the
//! lease to a background task behind a [`Leadership`] handle that keeps renewing it and
//! tells its holder, through a watch channel, when to stop the child and when the lease
//! is gone. This is the API `s3lead run` uses; it touches no process.
//!
//! Both halves run the election through one driver loop (`Driver::next`): it performs
//! the requests the state machine asks for, sleeps through its waits and hands back each
//! event and each answer, so the campaign and the renewal task only decide what those
//! mean to them.
//!
//! Before it hands the lease over, a campaign that has just won asks the store to prove
//! that it honours the two conditions (`store/proof.rs`, docs/design.md §3 "Proof at
//! acquisition"); a store that ignores one ends the campaign with
//! [`CampaignError::UnsafeStore`], the lease released, before any work starts.
//!
//! Every request is bounded by the timing's request timeout (the store's own timeout
//! should fire first; this one is the backstop): an unanswered write is reported to the
//! protocol as ambiguous, never retried here.

use crate::clock::{Instant, boot_now, sleep_until};
use crate::election::{
    Election, Event, FatalError, LossReason, PeerAnswer, Reply, Request, Step, Watch,
};
use crate::record::{LastRun, LeaseId, OncePer, RunEnd, Term};
use crate::store::proof::{self, Condition, Proof};
use crate::store::{Etag, LockStore, StoreError};
use crate::timing::{Dur, Timing};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

/// How long to campaign.
#[derive(Clone, Copy, Debug, Default)]
pub struct CampaignOptions {
    /// Give up as soon as another live holder is seen (`-n`).
    pub nonblock: bool,
    /// Give up at this instant (`-w`).
    pub give_up_at: Option<Instant>,
}

/// Why [`Candidate::campaign`] ended without a lease. None of them leaves a lease held:
/// the work must not start.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CampaignError {
    /// With [`CampaignOptions::nonblock`]: another holder's lease is live.
    #[error("held by {holder} (term {term})")]
    Busy {
        /// The holder's name from its record (`--id`), for people.
        holder: String,
        /// The term of that holder's lease.
        term: Term,
    },
    /// [`CampaignOptions::give_up_at`] passed while another holder still held the lock.
    #[error("still held by {holder} (term {term}) when the wait timed out")]
    TimedOut {
        /// The last holder seen, from its record (`--id`), for people.
        holder: String,
        /// The term of that holder's lease.
        term: Term,
    },
    /// [`CampaignOptions::give_up_at`] passed before any holder's record was seen,
    /// typically because the store did not answer.
    #[error("the wait timed out before the store answered{}", .cause.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    TimedOutUnreachable {
        /// What the last failed request met, if one failed: the cause the user must fix.
        cause: Option<String>,
    },
    /// The store or the lock object cannot be used, and retrying will not help.
    #[error("{0}")]
    Fatal(#[from] FatalError),
    /// With [`Candidate::once_per`]: the record shows a run in the current window
    /// (finished, failed without `retry_failed`, or still running).
    #[error("already ran in this window ({} by {}, term {})", .0.started_at, .0.holder, .0.term)]
    AlreadyRan(Box<LastRun>),
    /// The proof at acquisition ([`Candidate::verify_store`]) showed that the store
    /// accepts a write whose condition does not hold: any number of candidates could
    /// lead at once. The lease won has been released (or left to expire).
    #[error("the store ignores {0}: {expected}, and it was accepted", expected = .0.expected())]
    UnsafeStore(Condition),
}

/// A moment in a lease's life, told to the callback of [`Candidate::on_event`]: what the
/// binary's `--on-elected`, `--on-lost` and `--on-released` hooks run on, and what an
/// embedding program may act on in the manner of the seed libraries' callbacks.
///
/// Events are news, not orders: the holder's duty is still to act on
/// [`Leadership::changed`] (stop the work at `stop_at`, at once when the lease is at risk
/// or lost). Each lease tells `Elected` once, `Renewed` after each renewal that moved its
/// end, then at most one of `Lost` and `Released`; a campaign tells `Observed` for every
/// other holder's record it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// While campaigning: another holder's record was read (a new write of it).
    Observed {
        /// The holder's name from its record (`--id`), for people.
        holder: String,
        /// The term of that holder's lease.
        term: Term,
        /// Whether that record is released.
        released: bool,
    },
    /// The campaign won a lease with this term.
    Elected {
        /// The lease's fencing term.
        term: Term,
        /// The lease's random id.
        lease_id: LeaseId,
        /// The lock object's ETag after the winning write.
        etag: Option<Etag>,
    },
    /// A renewal landed and moved the lease's end.
    Renewed {
        /// The lease's fencing term.
        term: Term,
        /// The lock object's ETag after the renewal.
        etag: Option<Etag>,
    },
    /// The lease can no longer be counted on: renewals failed up to the stop point
    /// ([`LeaseState::AtRisk`]) or it is gone ([`LeaseState::Lost`]); `state` says which.
    Lost {
        /// The lease's fencing term.
        term: Term,
        /// [`LeaseState::AtRisk`] or [`LeaseState::Lost`].
        state: LeaseState,
    },
    /// The lease's release landed: the next leader may take over at once.
    Released {
        /// The released lease's fencing term.
        term: Term,
    },
}

/// How a follower asks the holder's peer endpoint for its renewals (docs/design.md §3
/// "Peer mode"): the binary's is an HTTP client of `GET /v1/lease?after=ETAG`. The
/// driver runs a [`Watch`] while the election waits, and drops it unfinished when the
/// wait ends first; whatever comes back can only delay a takeover, never bring one on.
pub trait PeerLink: Send + Sync + 'static {
    /// Asks `watch.url` for the lock's ETag once it differs from `watch.after`, or after
    /// `watch.hold`; `Err` with the cause when no usable answer came.
    fn watch<'a>(
        &'a self,
        watch: &'a Watch,
    ) -> Pin<Box<dyn Future<Output = Result<PeerAnswer, String>> + Send + 'a>>;
}

/// The callback of [`Candidate::on_event`].
type EventSink = Arc<dyn Fn(LeaseEvent) + Send + Sync>;

/// A candidate for one lock.
pub struct Candidate<S: LockStore> {
    driver: Driver<S>,
    lock: String,
    once_per: Option<OncePer>,
    verify_store: bool,
    on_event: Option<EventSink>,
}

impl<S: LockStore> Candidate<S> {
    /// While following a holder whose record advertises a peer endpoint, long-poll it
    /// through `link` for the holder's renewals instead of reading the store (the store is
    /// read again when the peer stops answering, leads no more, or a takeover is due).
    pub fn peer_link(mut self, link: Arc<dyn PeerLink>) -> Self {
        self.driver.peer = Some(link);
        self
    }

    /// Writes `url` (our peer endpoint, `--advertise`) into the records of the lease this
    /// campaign wins, so that followers long-poll it.
    pub fn advertise(mut self, url: Option<String>) -> Self {
        self.driver.election = self.driver.election.with_advertise(url);
        self
    }

    /// `lock` is the lock's name as the user wrote it, for logs and messages.
    pub fn new(
        store: S,
        timing: Timing,
        holder: impl Into<String>,
        lock: impl Into<String>,
    ) -> Self {
        Candidate {
            driver: Driver {
                store: Arc::new(store),
                election: Election::new(timing, holder),
                peer: None,
            },
            lock: lock.into(),
            once_per: None,
            verify_store: true,
            on_event: None,
        }
    }

    /// Whether to prove, once elected and before the lease is handed over, that the store
    /// honours `If-None-Match` and `If-Match` on the lock object (`store/proof.rs`: two
    /// PUTs that a store keeping the contract refuses). On by default; a store that
    /// keeps the contract by construction (a file) is never asked. Turn it off only for a
    /// store already proven (`s3lead check`, or a proof remembered from an earlier run):
    /// on a store that ignores conditions, every candidate is elected.
    pub fn verify_store(mut self, verify: bool) -> Self {
        self.verify_store = verify;
        self
    }

    /// Calls `f` with every [`LeaseEvent`] of the lease this campaign wins, on the task
    /// that drives the election, before the holder's [`Leadership::changed`] hears of the
    /// same change. `f` must return at once (send the event on a channel, spawn a task):
    /// while it runs, the lease is not renewed.
    pub fn on_event(mut self, f: impl Fn(LeaseEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }

    /// Run at most once per window of wall-clock time (`--once-per`): the campaign ends
    /// with [`CampaignError::AlreadyRan`] as soon as it reads a record whose last run
    /// spends the current window, and the acquisition claims the window in its own write.
    pub fn once_per(mut self, once_per: Option<OncePer>) -> Self {
        self.driver.election = self.driver.election.with_once_per(once_per);
        self.once_per = once_per;
        self
    }

    /// Campaigns until elected, busy (`nonblock`), timed out or failed.
    pub async fn campaign(mut self, opts: CampaignOptions) -> Result<Leadership, CampaignError> {
        let mut seen = Sightings::default();
        let retrying = match opts.give_up_at {
            Some(_) => "until the wait (-w) ends",
            None => "until it answers",
        };
        let mut trouble = Trouble::new(&self.lock, self.driver.election.timing());
        loop {
            match self.driver.next(opts.give_up_at, None).await {
                Progress::Answered(failure) => trouble.answered(failure.as_ref(), retrying),
                Progress::Woken => {}
                Progress::Peer { answering, url } => {
                    if answering {
                        info!(lock = %self.lock, "following the holder through its peer endpoint {url}; reading the store only when a takeover could be due");
                    } else {
                        info!(lock = %self.lock, "the holder's peer endpoint {url} does not answer as leader; reading the store");
                    }
                }
                Progress::Event(Event::Observed {
                    holder,
                    term,
                    released,
                }) => {
                    if let Some(f) = &self.on_event {
                        f(LeaseEvent::Observed {
                            holder: holder.clone(),
                            term,
                            released,
                        });
                    }
                    self.observed(opts, &mut seen, holder, term, released)?
                }
                Progress::Event(Event::Elected { term, lease_id }) => {
                    return self.elected(term, lease_id).await;
                }
                Progress::Event(Event::Fatal(e)) => return Err(CampaignError::Fatal(e)),
                Progress::Event(Event::RenewalOverdue(overdue)) => self.say_pace(overdue),
                Progress::Event(other) => debug!(lock = %self.lock, "campaign event {other:?}"),
                Progress::GaveUp => {
                    return Err(match seen.holder {
                        Some((holder, term)) => CampaignError::TimedOut { holder, term },
                        None => CampaignError::TimedOutUnreachable {
                            cause: trouble.last,
                        },
                    });
                }
                Progress::Done => {
                    return Err(CampaignError::Fatal(FatalError::Record(
                        "the campaign ended without an election".into(),
                    )));
                }
            }
        }
    }

    /// The campaign won `term`: the store is proven (unless not asked for), the event
    /// told, and the lease handed over to its renewal task.
    async fn elected(self, term: Term, lease_id: LeaseId) -> Result<Leadership, CampaignError> {
        info!(lock = %self.lock, %term, "elected");
        let proven = match self.prove_store().await {
            Ok(proven) => proven,
            Err(condition) => {
                let lost = Leadership::start(self, term, lease_id, false);
                lost.release().await;
                return Err(CampaignError::UnsafeStore(condition));
            }
        };
        // Told only once the store is proven: on a store that ignores conditions nobody
        // is elected.
        if let Some(f) = &self.on_event {
            f(LeaseEvent::Elected {
                term,
                lease_id: lease_id.clone(),
                etag: self.driver.election.etag().cloned(),
            });
        }
        Ok(Leadership::start(self, term, lease_id, proven))
    }

    /// One line when the follower changes speed: the holder's renewal is overdue (read
    /// fast) or on time again (read slowly).
    fn say_pace(&self, overdue: bool) {
        let timing = self.driver.election.timing();
        if overdue {
            info!(
                lock = %self.lock,
                period_ms = timing.fast_poll().as_millis() as u64,
                "the holder's renewal is overdue; reading every {}",
                Dur(timing.fast_poll())
            );
        } else {
            info!(
                lock = %self.lock,
                period_ms = timing.follow_every().as_millis() as u64,
                "the holder renews again; reading every {}",
                Dur(timing.follow_every())
            );
        }
    }

    /// Just elected: unless told not to, or the store keeps the contract by construction,
    /// asks the store to refuse the two writes of `store/proof.rs`, with the bytes and
    /// ETag of the write that won. `Ok(true)`: proven; `Ok(false)`: not asked, or nothing
    /// proven either way (said once as a warning; the next run asks again); `Err`: the
    /// condition the store ignored.
    async fn prove_store(&self) -> Result<bool, Condition> {
        let store = &*self.driver.store;
        if !self.verify_store || store.keeps_contract_by_construction() {
            return Ok(false);
        }
        let election = &self.driver.election;
        let (Some(etag), Some(record)) = (election.etag(), election.record()) else {
            return Ok(false);
        };
        let limit = 2 * (election.timing().request_timeout() + Duration::from_secs(1));
        let proof = tokio::time::timeout(
            limit,
            proof::prove_conditions(store, etag, &record.encode()),
        )
        .await
        .unwrap_or_else(|_| Proof::Inconclusive(NO_ANSWER.into()));
        match proof {
            Proof::Honoured => {
                debug!(lock = %self.lock, "the store refused both probe writes: it honours If-None-Match and If-Match");
                Ok(true)
            }
            Proof::Ignored(condition) => {
                // The caller says it, in the one line that ends the run.
                debug!(lock = %self.lock, "the store ignores {condition}; releasing the lease");
                Err(condition)
            }
            Proof::Inconclusive(why) => {
                warn!(
                    lock = %self.lock,
                    "could not prove that the store honours conditional writes ({why}); going on unproven, and asking again next run"
                );
                Ok(false)
            }
        }
    }

    /// Another holder's record was seen: note it, and under `-n` decide whether the lock
    /// is busy.
    fn observed(
        &self,
        opts: CampaignOptions,
        seen: &mut Sightings,
        holder: String,
        term: Term,
        released: bool,
    ) -> Result<(), CampaignError> {
        let spent = self.once_per.as_ref().and_then(|o| {
            let run = self.driver.election.observed()?.last_run.as_ref()?;
            o.spent_by(run, std::time::SystemTime::now())
                .then(|| run.clone())
        });
        if let Some(run) = spent {
            return Err(CampaignError::AlreadyRan(Box::new(run)));
        }
        if released {
            debug!(lock = %self.lock, %term, "released by {holder}");
        } else if opts.nonblock {
            let abandoned = self.driver.election.observed().is_some_and(looks_abandoned);
            if seen.waiting_out || !abandoned {
                return Err(CampaignError::Busy { holder, term });
            }
            seen.waiting_out = true;
            info!(
                lock = %self.lock,
                %term,
                "held by {holder}, but not renewed for long by the wall clock; waiting out its lease"
            );
        } else if seen
            .holder
            .as_ref()
            .is_none_or(|(h, t)| *h != holder || *t != term)
        {
            // Once per holder: a follower sees every renewal, and one line each would
            // fill its journal.
            info!(lock = %self.lock, %term, "held by {holder}; waiting");
        } else {
            debug!(lock = %self.lock, %term, "still held by {holder}");
        }
        seen.holder = Some((holder, term));
        Ok(())
    }
}

/// Says a store's trouble once (docs/design.md §3 "Trouble"): in one episode of
/// trouble, the first failure of each cause is one WARN line with what s3lead will do
/// about it, the first answer after failures is one line saying the store answers
/// again, and everything else is quiet (debug). An episode ends once the store has
/// answered for a whole lease without a failure, so a store that flaps (reads answered,
/// writes failing) is not said on every retry, and an outage hours later is said again.
///
/// A cause is the failure's words, which the stores keep the same from one attempt to
/// the next (no request ids, no timings): a read and a write that met the same cause (a
/// timeout is ambiguous on a write, unavailable on a read) count as one.
struct Trouble {
    lock: String,
    retry_period: Duration,
    /// How long the store must answer without a failure to end an episode.
    calm_after: Duration,
    /// Whether to say that the store answers again: the renewal leaves that to its
    /// "renewed after trouble" (or "lease lost") line.
    say_recovery: bool,
    /// The causes said in this episode.
    said: Vec<String>,
    /// Whether this episode's "answers again" was said.
    recovery_said: bool,
    /// Since when the store has answered without a failure.
    calm_since: Option<Instant>,
    /// The cause of the last failed request, until the store answers again.
    last: Option<String>,
}

impl Trouble {
    fn new(lock: &str, timing: &Timing) -> Trouble {
        Trouble {
            lock: lock.to_owned(),
            retry_period: timing.retry_period(),
            calm_after: timing.lease(),
            say_recovery: true,
            said: Vec::new(),
            recovery_said: false,
            calm_since: None,
            last: None,
        }
    }

    /// After each answer: `failure` is the error the request met, if any; `retrying`
    /// says until when s3lead keeps trying, for the WARN line.
    fn answered(&mut self, failure: Option<&StoreError>, retrying: &str) {
        let now = boot_now();
        let lock = &self.lock;
        let cause = match failure {
            Some(StoreError::Unavailable(c) | StoreError::Ambiguous(c)) => c,
            // A fatal error ends the election, which says it (Event::Fatal), unless the
            // write landed after all.
            Some(e) if e.is_fatal() => return,
            // A refusal or a conflict is an answer: the store works.
            Some(_) | None => {
                if self.last.take().is_some() && self.say_recovery && !self.recovery_said {
                    info!(lock = %lock, "the store answers again");
                    self.recovery_said = true;
                }
                self.calm_since.get_or_insert(now);
                return;
            }
        };
        if self
            .calm_since
            .take()
            .is_some_and(|t| now.saturating_since(t) >= self.calm_after)
        {
            self.said.clear();
            self.recovery_said = false;
        }
        if self.said.iter().any(|c| c == cause) {
            debug!(lock = %lock, "request failed again: {cause}");
        } else {
            warn!(
                lock = %lock,
                "cannot use the store: {cause}; retrying every {} {retrying}",
                crate::timing::Dur(self.retry_period)
            );
            self.said.push(cause.clone());
        }
        self.last = Some(cause.clone());
    }
}

/// What a campaign has seen of other holders.
#[derive(Default)]
struct Sightings {
    /// The last holder seen, for the message when the wait times out.
    holder: Option<(String, Term)>,
    /// `-n` waiting out a record that looks abandoned: any further change means a live
    /// writer, and the lock is busy after all.
    waiting_out: bool,
}

/// The election and the store it runs over. This is the one loop that performs what the
/// sans-I/O [`Election`] asks for, in the manner of quinn's endpoint driver around
/// quinn-proto: the campaign and the renewal task both consume its [`Progress`] and
/// differ only in what they make of it.
struct Driver<S> {
    store: Arc<S>,
    election: Election,
    /// How to long-poll a holder's peer endpoint ([`Candidate::peer_link`]).
    peer: Option<Arc<dyn PeerLink>>,
}

/// What [`Driver::next`] came back with.
enum Progress {
    /// The election has news for its holder.
    Event(Event),
    /// A request was performed and its answer handed to the election; the error it
    /// failed with, if any (the election has already judged it).
    Answered(Option<StoreError>),
    /// The deadline passed first.
    GaveUp,
    /// The holder asked for something during a wait (`wake`): see its mailbox.
    Woken,
    /// The holder's peer endpoint at `url` began (`answering`) or stopped standing in for
    /// the store's reads.
    Peer {
        /// Whether it now answers as the leader.
        answering: bool,
        /// Its URL.
        url: String,
    },
    /// The election is over.
    Done,
}

impl<S: LockStore> Driver<S> {
    /// Polls the election at the boot-time clock's "now", performing its requests and
    /// sleeping through its waits, until there is something to report: an event, an
    /// answer, the `deadline` (checked before every poll), or the end. A notification on
    /// `wake` during a wait comes back as [`Progress::Woken`].
    async fn next(&mut self, deadline: Option<Instant>, wake: Option<&Notify>) -> Progress {
        let timing = *self.election.timing();
        loop {
            let now = boot_now();
            if deadline.is_some_and(|d| now >= d) {
                return Progress::GaveUp;
            }
            match self.election.poll(now) {
                Step::Send(req) => {
                    let reply = perform(&*self.store, req, timing).await;
                    let failure = match &reply {
                        Reply::Read(Err(e)) | Reply::Write(Err(e)) => Some(e.clone()),
                        Reply::Read(Ok(_)) | Reply::Write(Ok(_)) => None,
                    };
                    self.election.handle(reply, boot_now());
                    return Progress::Answered(failure);
                }
                Step::Event(e) => return Progress::Event(e),
                Step::Wait(t) => {
                    let t = deadline.map_or(t, |d| t.min(d));
                    // A follower also wakes when the store says the object changed (the
                    // file store's watch): a release is then taken over at once.
                    let following = self.election.is_following();
                    let store = Arc::clone(&self.store);
                    let changed = async move {
                        if following {
                            store.changed().await
                        } else {
                            std::future::pending().await
                        }
                    };
                    let woken = async {
                        match wake {
                            Some(wake) => wake.notified().await,
                            None => std::future::pending().await,
                        }
                    };
                    // A follower of a holder that advertises a peer endpoint asks it
                    // meanwhile; the wait ending first drops the request.
                    let watch = self.peer.as_ref().and(self.election.watch(now));
                    let peer = self.peer.clone();
                    let asked = async {
                        match (&peer, &watch) {
                            (Some(link), Some(w)) => {
                                let limit = w.hold + timing.request_timeout();
                                tokio::time::timeout(limit, link.watch(w))
                                    .await
                                    .unwrap_or_else(|_| Err(NO_ANSWER.into()))
                            }
                            _ => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = sleep_until(t) => {}
                        _ = woken => return Progress::Woken,
                        _ = changed => self.election.wake(boot_now()),
                        answer = asked => {
                            let was = self.election.peer_answering();
                            if let (Err(cause), Some(w)) = (&answer, &watch) {
                                debug!(url = %w.url, "peer endpoint: {cause}");
                            }
                            self.election.peer_answered(answer, now, boot_now());
                            let answering = self.election.peer_answering();
                            if was != answering {
                                let url = watch.map(|w| w.url).unwrap_or_default();
                                return Progress::Peer { answering, url };
                            }
                        }
                    }
                }
                Step::Done => return Progress::Done,
            }
        }
    }
}

/// Does the record look abandoned (its holder crashed without releasing)? Judged from
/// the holder's wall-clock `renewed_at` with a minute of slack for clock offsets.
///
/// This only decides whether `-n` *waits*; the takeover itself still happens by the
/// observed-time rule, so a wrong clock can cost a wait, never safety. Without it, a
/// holder that crashed would make every later `-n` run busy forever.
fn looks_abandoned(record: &crate::record::LockRecord) -> bool {
    let Ok(renewed) = humantime::parse_rfc3339(&record.renewed_at) else {
        return false;
    };
    let stale_after = record.lease() + Duration::from_secs(60);
    std::time::SystemTime::now()
        .duration_since(renewed)
        .is_ok_and(|age| age > stale_after)
}

/// The backstop's words: the same for reads and writes, so that a store which stops
/// answering is said once.
const NO_ANSWER: &str = "no answer within the request timeout";

/// Performs one request, bounded by the request timeout.
async fn perform<S: LockStore>(store: &S, req: Request, timing: Timing) -> Reply {
    // The store's own timeout is the request timeout; this backstop only catches a store
    // that ignores it (a stuck file lock, a wedged connection pool).
    let limit = timing.request_timeout() + Duration::from_secs(1);
    match req {
        Request::Read { known } => Reply::Read(
            tokio::time::timeout(limit, store.read(known.as_ref()))
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable(NO_ANSWER.into()))),
        ),
        Request::Create { body } => Reply::Write(
            tokio::time::timeout(limit, store.create(body))
                .await
                .unwrap_or_else(|_| Err(StoreError::Ambiguous(NO_ANSWER.into()))),
        ),
        Request::Replace { etag, body } => Reply::Write(
            tokio::time::timeout(limit, store.replace(&etag, body))
                .await
                .unwrap_or_else(|_| Err(StoreError::Ambiguous(NO_ANSWER.into()))),
        ),
    }
}

/// Where a held lease stands. Only [`LeaseState::Held`] lets the work go on, and a
/// state never goes back to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Ours and being renewed: the work may run until [`LeaseStatus::stop_at`].
    Held,
    /// Renewals failed up to the stop point: stop the child now; it must be dead by
    /// [`LeaseStatus::valid_until`], even if a later renewal lands.
    AtRisk,
    /// The lease is gone. If [`LossReason::is_superseded`], another leader may already
    /// run: kill the work at once. (`Expired`: it should be dead already.)
    Lost(LossReason),
    /// Our release landed ([`Leadership::release`], once the work was gone); the next
    /// leader may take over at once, with a larger term.
    Released,
}

/// The lease as its holder must act on it (docs/design.md §3 "Lead", §4). The promise
/// holds only if the holder's work has stopped by `valid_until`: begin stopping it at
/// `stop_at`, and at once on [`LeaseState::AtRisk`] or [`LeaseState::Lost`]. Instants
/// are on this host's boot clock ([`crate::clock::boot_now`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Where the lease stands; anything but [`LeaseState::Held`] means stop now.
    pub state: LeaseState,
    /// The child must be dead by this instant (boot-time clock).
    pub valid_until: Instant,
    /// The stop signal goes to the child at this instant unless a renewal lands:
    /// [`Timing::stop_at`] of `valid_until`.
    pub stop_at: Instant,
}

impl LeaseStatus {
    /// A lease just won: held, with the election's deadlines; `None` while the election
    /// holds no lease.
    pub fn elected(election: &Election) -> Option<LeaseStatus> {
        Some(LeaseStatus {
            state: LeaseState::Held,
            valid_until: election.valid_until()?,
            stop_at: election.stop_at()?,
        })
    }

    /// Takes the election's current deadlines after an answer. Returns whether
    /// `valid_until` moved, which is news to the holder; nothing changes while the
    /// election holds no lease.
    pub fn track(&mut self, election: &Election) -> bool {
        let (Some(valid_until), Some(stop_at)) = (election.valid_until(), election.stop_at())
        else {
            return false;
        };
        let moved = self.valid_until != valid_until;
        self.valid_until = valid_until;
        self.stop_at = stop_at;
        moved
    }

    /// The election ended without saying how the lease did (it always says; belt and
    /// braces): a lease still held or at risk counts as lost by expiry. Returns whether
    /// the state changed.
    pub fn close(&mut self) -> bool {
        let open = matches!(self.state, LeaseState::Held | LeaseState::AtRisk);
        if open {
            self.state = LeaseState::Lost(LossReason::Expired);
        }
        open
    }
}

/// A held lease, renewed in the background until released or lost. Act on every
/// [`LeaseStatus`] from [`Leadership::changed`]. Dropping it stops the renewals, so the
/// lease runs out; it does not stop the work, which must be dead by `valid_until`.
pub struct Leadership {
    term: Term,
    lease_id: LeaseId,
    status: watch::Receiver<LeaseStatus>,
    /// Requests to the renewal task, announced on `wake`.
    mailbox: Arc<Mutex<Mailbox>>,
    wake: Arc<Notify>,
    /// The run the record showed when the lease was won ([`crate::record::LockRecord::last_run`]).
    last_run: Option<LastRun>,
    /// The store refused the probe writes at this acquisition ([`Candidate::verify_store`]).
    store_proven: bool,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What the holder asks of the renewal task. A request waits here until the task next
/// waits; a `Notify` permit makes sure it wakes for it.
#[derive(Debug, Default)]
struct Mailbox {
    resign: bool,
    run_end: Option<RunEnd>,
}

impl Leadership {
    fn start<S: LockStore>(
        candidate: Candidate<S>,
        term: Term,
        lease_id: LeaseId,
        store_proven: bool,
    ) -> Leadership {
        let Candidate {
            driver,
            lock,
            on_event,
            ..
        } = candidate;
        let last_run = driver.election.record().and_then(|r| r.last_run.clone());
        // An elected candidate always has a lease; `now` would only stop the child at once.
        let status = LeaseStatus::elected(&driver.election).unwrap_or_else(|| {
            let now = boot_now();
            LeaseStatus {
                state: LeaseState::Held,
                valid_until: now,
                stop_at: now,
            }
        });
        let (tx, rx) = watch::channel(status);
        let wake = Arc::new(Notify::new());
        let mailbox = Arc::new(Mutex::new(Mailbox::default()));
        let mut trouble = Trouble::new(&lock, driver.election.timing());
        trouble.say_recovery = false;
        let renewal = Renewal {
            driver,
            lock,
            term,
            status: tx,
            trouble,
            mailbox: mailbox.clone(),
            on_event,
            lost_told: false,
        };
        let task = tokio::spawn(renewal.run(wake.clone()));
        Leadership {
            term,
            lease_id,
            status: rx,
            mailbox,
            wake,
            last_run,
            store_proven,
            task: Some(task),
        }
    }

    /// Whether the store was proven at this acquisition to honour `If-None-Match` and
    /// `If-Match` ([`Candidate::verify_store`]); `false` if it was not asked (turned off,
    /// a file) or nothing was proven either way. A pass a caller may remember.
    pub fn store_proven(&self) -> bool {
        self.store_proven
    }

    /// This lease's fencing term, larger than every earlier leader's (`S3LEAD_TERM`).
    /// Pass it to whatever the work writes, so that writers can refuse terms smaller than
    /// the largest they have seen (docs/design.md §1).
    pub fn term(&self) -> Term {
        self.term
    }

    /// This acquisition's random id, the lease's ownership in the record
    /// (`S3LEAD_LEASE_ID`). It does not grow: fence with [`Leadership::term`], not this.
    pub fn lease_id(&self) -> &LeaseId {
        &self.lease_id
    }

    /// The lease now.
    pub fn status(&self) -> LeaseStatus {
        self.status.borrow().clone()
    }

    /// Waits until the lease's status changes (a renewal moved `valid_until`, the stop
    /// point passed, the lease was lost), and returns it; `None` once the renewal task
    /// has ended and nothing will change any more.
    pub async fn changed(&mut self) -> Option<LeaseStatus> {
        self.status.changed().await.ok()?;
        Some(self.status.borrow_and_update().clone())
    }

    /// The last run the record showed when this lease was won: under
    /// [`Candidate::once_per`], the run this lease claimed if its term is ours, else a run
    /// that already spent the window.
    pub fn last_run(&self) -> Option<&LastRun> {
        self.last_run.as_ref()
    }

    /// Whether this lease claimed a run in its acquisition (under [`Candidate::once_per`]).
    pub fn claimed_run(&self) -> bool {
        self.last_run.as_ref().is_some_and(|r| r.term == self.term)
    }

    /// The work this lease claimed a run for has ended with `exit_status`: the next
    /// write of the lease (a renewal soon, or the release) records it in the run. Does
    /// nothing unless [`Leadership::claimed_run`].
    pub fn finish_run(&self, exit_status: i32) {
        if !self.claimed_run() {
            return;
        }
        let mut m = self.mailbox.lock().unwrap_or_else(PoisonError::into_inner);
        m.run_end.get_or_insert_with(|| RunEnd::now(exit_status));
        drop(m);
        self.wake.notify_one();
    }

    /// Releases the lease (the child must be gone) and waits for the outcome: Released,
    /// or Lost if it was lost first. A failed release is harmless: the lease expires.
    pub async fn release(mut self) -> LeaseState {
        self.mailbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .resign = true;
        self.wake.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.status.borrow().state.clone()
    }
}

/// The background task behind a [`Leadership`]: drives the elected election, renewing
/// the lease until it is released or lost, and publishes every change to the holder.
struct Renewal<S> {
    driver: Driver<S>,
    lock: String,
    term: Term,
    status: watch::Sender<LeaseStatus>,
    /// Failed requests since the last one that succeeded: each cause is said once.
    trouble: Trouble,
    mailbox: Arc<Mutex<Mailbox>>,
    /// [`Candidate::on_event`]'s callback.
    on_event: Option<EventSink>,
    /// [`LeaseEvent::Lost`] has been told (once per lease: at risk, then lost, is one).
    lost_told: bool,
}

impl<S: LockStore> Renewal<S> {
    /// Tells the callback first, so that an event is there when the holder hears of the
    /// change it goes with.
    fn tell(&mut self, e: LeaseEvent) {
        if matches!(e, LeaseEvent::Lost { .. }) {
            if self.lost_told {
                return;
            }
            self.lost_told = true;
        }
        if let Some(f) = &self.on_event {
            f(e);
        }
    }

    async fn run(mut self, wake: Arc<Notify>) {
        loop {
            match self.driver.next(None, Some(&wake)).await {
                Progress::Woken => self.read_mail(),
                Progress::Peer { .. } => {}
                Progress::Answered(failure) => self.answered(failure),
                Progress::Event(e) => self.event(e),
                // Only a deadline gives up, and the renewal has none.
                Progress::GaveUp | Progress::Done => break,
            }
        }
        self.status.send_if_modified(LeaseStatus::close);
    }

    /// Hands the holder's requests to the election: a run's end before a release, so
    /// that the release records it.
    fn read_mail(&mut self) {
        let mut m = self.mailbox.lock().unwrap_or_else(PoisonError::into_inner);
        let (run_end, resign) = (m.run_end.take(), m.resign);
        drop(m);
        if let Some(end) = run_end {
            self.driver.election.finish_run(end);
        }
        if resign {
            self.driver.election.resign();
        }
    }

    /// After each answer: log a failure, and publish the lease's deadlines, news to the
    /// holder when `valid_until` moved.
    fn answered(&mut self, failure: Option<StoreError>) {
        self.trouble
            .answered(failure.as_ref(), "until the stop point (term still held)");
        let mut status = self.status.borrow().clone();
        if status.track(&self.driver.election) {
            let term = self.term;
            let etag = self.driver.election.etag().cloned();
            self.tell(LeaseEvent::Renewed { term, etag });
        }
        let election = &self.driver.election;
        self.status.send_if_modified(|st| st.track(election));
    }

    fn event(&mut self, e: Event) {
        let (lock, term) = (self.lock.clone(), self.term);
        match e {
            Event::Recovered => {
                // Boot-clock instants, as for "at risk": the lease now counts from the
                // earliest attempt that could have landed.
                info!(
                    lock = %lock,
                    %term,
                    valid_until_ms = self.driver.election.valid_until().map(|v| v.since_origin().as_millis() as u64),
                    now_ms = boot_now().since_origin().as_millis() as u64,
                    "renewed after trouble"
                );
            }
            Event::AtRisk { valid_until } => {
                // Boot-clock instants in the log let an operator (and the tests) check
                // that the stop came before the lease ended.
                warn!(
                    lock = %lock,
                    %term,
                    valid_until_ms = valid_until.since_origin().as_millis() as u64,
                    now_ms = boot_now().since_origin().as_millis() as u64,
                    "lease at risk: renewals failed up to the stop point"
                );
                self.tell(LeaseEvent::Lost {
                    term,
                    state: LeaseState::AtRisk,
                });
                self.status.send_modify(|st| st.state = LeaseState::AtRisk);
            }
            Event::Lost(reason) => {
                error!(lock = %lock, %term, "lease lost: {reason}");
                self.tell(LeaseEvent::Lost {
                    term,
                    state: LeaseState::Lost(reason.clone()),
                });
                self.status
                    .send_modify(|st| st.state = LeaseState::Lost(reason));
            }
            Event::Released => {
                info!(lock = %lock, %term, "released");
                self.tell(LeaseEvent::Released { term });
                self.status
                    .send_modify(|st| st.state = LeaseState::Released);
            }
            other => debug!(lock = %lock, "lease event {other:?}"),
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Dropped without release (a panic unwinding, an embedding program's early
        // return): stop renewing so the lease expires rather than outliving its holder.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
