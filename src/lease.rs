//! The election driven for real: [`Candidate`] runs the state machine of `election.rs`
//! over a [`LockStore`] and the boot-time clock until it is elected, then hands the
//! lease to a background task behind a [`Leadership`] handle that keeps renewing it and
//! tells its holder, through a watch channel, when to stop the child and when the lease
//! is gone. This is the API `s3lead run` uses; it touches no process.
//!
//! Every request is bounded by the timing's request timeout (the store's own timeout
//! should fire first; this one is the backstop): an unanswered write is reported to the
//! protocol as ambiguous, never retried here.

use crate::clock::{Instant, boot_now, sleep_until};
use crate::election::{Election, Event, FatalError, LossReason, Reply, Request, Step};
use crate::record::{LeaseId, Term};
use crate::store::{LockStore, StoreError};
use crate::timing::Timing;
use std::sync::Arc;
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

#[derive(Clone, Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("held by {holder} (term {term})")]
    Busy { holder: String, term: Term },
    #[error("still held by {holder} (term {term}) when the wait timed out")]
    TimedOut { holder: String, term: Term },
    #[error("the store did not answer before the wait timed out")]
    TimedOutUnreachable,
    #[error("{0}")]
    Fatal(#[from] FatalError),
}

/// A candidate for one lock.
pub struct Candidate<S: LockStore> {
    store: Arc<S>,
    election: Election,
    lock: String,
}

impl<S: LockStore> Candidate<S> {
    /// `lock` is the lock's name as the user wrote it, for logs and messages.
    pub fn new(
        store: S,
        timing: Timing,
        holder: impl Into<String>,
        lock: impl Into<String>,
    ) -> Self {
        Candidate {
            store: Arc::new(store),
            election: Election::new(timing, holder),
            lock: lock.into(),
        }
    }

    /// Campaigns until elected, busy (`nonblock`), timed out or failed.
    pub async fn campaign(mut self, opts: CampaignOptions) -> Result<Leadership, CampaignError> {
        let timing = *self.election.timing();
        let mut holder: Option<(String, Term)> = None;
        // `-n` waiting out a record that looks abandoned: any further change means a
        // live writer, and the lock is busy after all.
        let mut waiting_out = false;
        loop {
            let now = boot_now();
            if let Some(deadline) = opts.give_up_at {
                if now >= deadline {
                    return Err(match holder {
                        Some((holder, term)) => CampaignError::TimedOut { holder, term },
                        None => CampaignError::TimedOutUnreachable,
                    });
                }
            }
            match self.election.poll(now) {
                Step::Send(req) => {
                    let reply = perform(&*self.store, req, timing).await;
                    if let Reply::Read(Err(e)) | Reply::Write(Err(e)) = &reply {
                        if !e.is_fatal() {
                            debug!(lock = %self.lock, "request failed: {e}");
                        }
                    }
                    self.election.handle(reply, boot_now());
                }
                Step::Event(Event::Observed {
                    holder: h,
                    term,
                    released,
                }) => {
                    if released {
                        debug!(lock = %self.lock, %term, "released by {h}");
                    } else {
                        if opts.nonblock {
                            let abandoned = self.election.observed().is_some_and(looks_abandoned);
                            if waiting_out || !abandoned {
                                return Err(CampaignError::Busy { holder: h, term });
                            }
                            waiting_out = true;
                            info!(
                                lock = %self.lock,
                                %term,
                                "held by {h}, but not renewed for long by the wall clock; waiting out its lease"
                            );
                        } else {
                            info!(lock = %self.lock, %term, "held by {h}; waiting");
                        }
                    }
                    holder = Some((h, term));
                }
                Step::Event(Event::Elected { term, lease_id }) => {
                    info!(lock = %self.lock, %term, "elected");
                    return Ok(Leadership::start(self, term, lease_id));
                }
                Step::Event(Event::Fatal(e)) => return Err(CampaignError::Fatal(e)),
                Step::Event(other) => debug!(lock = %self.lock, "campaign event {other:?}"),
                Step::Wait(t) => {
                    let t = opts.give_up_at.map_or(t, |g| t.min(g));
                    sleep_until(t).await;
                }
                Step::Done => {
                    return Err(CampaignError::Fatal(FatalError::Record(
                        "the campaign ended without an election".into(),
                    )));
                }
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

/// Performs one request, bounded by the request timeout.
async fn perform<S: LockStore>(store: &S, req: Request, timing: Timing) -> Reply {
    // The store's own timeout is the request timeout; this backstop only catches a store
    // that ignores it (a stuck file lock, a wedged connection pool).
    let limit = timing.request_timeout() + Duration::from_secs(1);
    match req {
        Request::Read { known } => Reply::Read(
            tokio::time::timeout(limit, store.read(known.as_ref()))
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("read timed out".into()))),
        ),
        Request::Create { body } => Reply::Write(
            tokio::time::timeout(limit, store.create(body))
                .await
                .unwrap_or_else(|_| Err(StoreError::Ambiguous("write timed out".into()))),
        ),
        Request::Replace { etag, body } => Reply::Write(
            tokio::time::timeout(limit, store.replace(&etag, body))
                .await
                .unwrap_or_else(|_| Err(StoreError::Ambiguous("write timed out".into()))),
        ),
    }
}

/// Where a held lease stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    Held,
    /// Renewals failed up to the stop point: stop the child now.
    AtRisk,
    Lost(LossReason),
    Released,
}

/// The lease as its holder must act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    pub state: LeaseState,
    /// The child must be dead by this instant (boot-time clock).
    pub valid_until: Instant,
    /// The stop signal goes to the child at this instant unless a renewal lands.
    pub stop_at: Instant,
}

/// A held lease, renewed in the background until released or lost.
pub struct Leadership {
    term: Term,
    lease_id: LeaseId,
    status: watch::Receiver<LeaseStatus>,
    resign: Arc<Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Leadership {
    fn start<S: LockStore>(candidate: Candidate<S>, term: Term, lease_id: LeaseId) -> Leadership {
        let Candidate {
            store,
            mut election,
            lock,
        } = candidate;
        // An elected candidate always has both; `now` would only stop the child at once.
        let valid_until = election.valid_until().unwrap_or_else(boot_now);
        let stop_at = election.stop_at().unwrap_or(valid_until);
        let (tx, rx) = watch::channel(LeaseStatus {
            state: LeaseState::Held,
            valid_until,
            stop_at,
        });
        let resign = Arc::new(Notify::new());
        let resign_rx = resign.clone();
        let task = tokio::spawn(async move {
            let timing = *election.timing();
            let mut failures = 0u32;
            loop {
                match election.poll(boot_now()) {
                    Step::Send(req) => {
                        let reply = perform(&*store, req, timing).await;
                        if let Reply::Read(Err(e)) | Reply::Write(Err(e)) = &reply {
                            failures += 1;
                            if failures == 1 {
                                warn!(lock = %lock, %term, "renewal failed, retrying: {e}");
                            } else {
                                debug!(lock = %lock, %term, "renewal failed again: {e}");
                            }
                        }
                        election.handle(reply, boot_now());
                        if let (Some(v), Some(s)) = (election.valid_until(), election.stop_at()) {
                            tx.send_if_modified(|st| {
                                let changed = st.valid_until != v;
                                st.valid_until = v;
                                st.stop_at = s;
                                changed
                            });
                        }
                    }
                    Step::Event(Event::Recovered) => {
                        failures = 0;
                        // Boot-clock instants, as for "at risk": the lease now counts from
                        // the earliest attempt that could have landed.
                        info!(
                            lock = %lock,
                            %term,
                            valid_until_ms = election.valid_until().map(|v| v.since_origin().as_millis() as u64),
                            now_ms = boot_now().since_origin().as_millis() as u64,
                            "renewed after trouble"
                        );
                    }
                    Step::Event(Event::AtRisk { valid_until }) => {
                        // Boot-clock instants in the log let an operator (and the tests)
                        // check that the stop came before the lease ended.
                        warn!(
                            lock = %lock,
                            %term,
                            valid_until_ms = valid_until.since_origin().as_millis() as u64,
                            now_ms = boot_now().since_origin().as_millis() as u64,
                            "lease at risk: renewals failed up to the stop point"
                        );
                        tx.send_modify(|st| st.state = LeaseState::AtRisk);
                    }
                    Step::Event(Event::Lost(reason)) => {
                        error!(lock = %lock, %term, "lease lost: {reason}");
                        tx.send_modify(|st| st.state = LeaseState::Lost(reason));
                    }
                    Step::Event(Event::Released) => {
                        info!(lock = %lock, %term, "released");
                        tx.send_modify(|st| st.state = LeaseState::Released);
                    }
                    Step::Event(other) => debug!(lock = %lock, "lease event {other:?}"),
                    Step::Wait(t) => {
                        tokio::select! {
                            _ = sleep_until(t) => {}
                            _ = resign_rx.notified() => election.resign(),
                        }
                    }
                    Step::Done => break,
                }
            }
            // The machine ended without saying how (it always does; belt and braces).
            tx.send_if_modified(|st| {
                if st.state == LeaseState::Held || st.state == LeaseState::AtRisk {
                    st.state = LeaseState::Lost(LossReason::Expired);
                    true
                } else {
                    false
                }
            });
        });
        Leadership {
            term,
            lease_id,
            status: rx,
            resign,
            task: Some(task),
        }
    }

    pub fn term(&self) -> Term {
        self.term
    }

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

    /// Releases the lease (the child must be gone) and waits for the outcome: Released,
    /// or Lost if it was lost first. A failed release is harmless: the lease expires.
    pub async fn release(mut self) -> LeaseState {
        self.resign.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.status.borrow().state.clone()
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
