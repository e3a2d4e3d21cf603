//! The store contract that mutual exclusion rests on (docs/design.md §3), probed on a live store:
//! [`Probe`] runs the checks, hands each [`Finding`] to the caller as soon as it is known,
//! and ends with a [`Verdict`]. `s3lead check` prints the findings; the contract tests run
//! the same probe over every store, the in-memory reference store included. A store that
//! ignores `If-None-Match` (Garage 2.5) or lets racing conditional writes both succeed
//! (s3s-fs; moto now and then) would let two leaders run at once while every run looks
//! fine: this is where that shows.
//!
//! Everything happens on scratch keys next to the lock (`<key>.s3lead-check-<random>`),
//! which a [`ScratchStore`] makes and deletes; each is used once and deleted afterwards,
//! unconditionally (the only delete s3lead ever sends, and the stores refuse it for any
//! other key). The lock object itself is never read or written, so a probe can run beside
//! a live leader.
//!
//! First the conditional writes one at a time, with the answers the protocol relies on:
//! a create wins only on a missing key, a replace only with the current ETag, a failed
//! condition leaves the content alone, every write gives a new ETag, a conditional read
//! of the current ETag is "not modified" (a store that ignores that is only a warning: it
//! costs a download per poll). Then races: `writers` concurrent creates on a fresh key,
//! then as many concurrent replaces with its one ETag, `rounds` times. Only an HTTP 200
//! counts as a win; a 5xx or a timeout is an ambiguous loser (Ceph RGW answers most
//! losers of an `If-Match` race with 500), and after every round the object must hold
//! the winner's body, which also catches an ambiguous loser whose write landed.
//!
//! What a store has learned about itself (it wants `If-Match` unquoted) it reports as a
//! [`Quirk`]; the probe never looks inside a concrete store.
//!
//! Every finding carries the round-trip time of the request it judges (for a race, the
//! median of its requests), and the probe begins with the offset between this host's wall
//! clock and the store's `Date` header, which is what `--once-per` windows are judged by
//! (each host by its own clock). Two answers a store gives instead of keeping the contract
//! are named ([`Anomaly`]): HTTP 501 NotImplemented (Backblaze B2), and HTTP 200 to a write
//! whose precondition did not hold (GCS's XML API, Garage).

use super::{Etag, FatalKind, LockStore, ReadReply, StoreError};
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;

/// An answer, instead of the contract's, that the probe names wherever it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Anomaly {
    /// HTTP 501 NotImplemented to a conditional request (Backblaze B2 answers conditional
    /// PUTs so): the store cannot hold a lock at all.
    NotImplemented,
    /// HTTP 200 to a write whose precondition did not hold (GCS's S3 API, Garage 2.5):
    /// the store ignores the condition, and every writer wins.
    IgnoredPrecondition,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Anomaly::NotImplemented => "NotImplemented (HTTP 501)",
            Anomaly::IgnoredPrecondition => "200 despite a failed precondition",
        })
    }
}

/// One reading of the store's clock: this host's wall clock just before a request was
/// sent and just after its answer arrived, and the time the answer's `Date` header gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// This host's wall clock when the request was sent.
    pub sent: SystemTime,
    /// This host's wall clock when the answer arrived.
    pub received: SystemTime,
    /// The store's `Date` header (whole seconds, truncated).
    pub server: SystemTime,
}

impl ClockSample {
    /// How far the store's clock is ahead of this host's (negative: behind), in seconds,
    /// and how far off that estimate may be. The store stamped its answer somewhere
    /// between `sent` and `received`, in the second that `Date` names: the estimate takes
    /// the middle of both, and its bound is half of each span.
    pub fn offset_secs(&self) -> (f64, f64) {
        let secs = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        let (sent, received) = (secs(self.sent), secs(self.received));
        let round_trip = (received - sent).max(0.0);
        let offset = secs(self.server) + 0.5 - (sent + round_trip / 2.0);
        (offset, 0.5 + round_trip / 2.0)
    }
}

/// Something a store has found out about the server behind it and works around, reported
/// beside the check where it showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Quirk {
    /// The server accepts `If-Match` only with the ETag unquoted (Ceph RGW); the store
    /// sends it unquoted from then on.
    UnquotedIfMatch,
}

impl fmt::Display for Quirk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quirk::UnquotedIfMatch => f.write_str(
                "the store accepts If-Match only unquoted (as Ceph RGW does): s3lead adapts",
            ),
        }
    }
}

/// A lock store that can also make, and remove, objects of its own next to the lock: the
/// scratch keys the probe works on. Clones share the connection and what was learned
/// about the store.
pub trait ScratchStore: LockStore + Clone {
    /// Where this object is, for a message: `s3://bucket/key`, a file's path, ….
    fn location(&self) -> String;

    /// The same store for the scratch key `<this key><SCRATCH_MARKER><tag>`, next to it
    /// (same bucket, same directory). No I/O.
    ///
    /// [`SCRATCH_MARKER`]: super::SCRATCH_MARKER
    fn scratch(&self, tag: &str) -> Result<Self, StoreError>;

    /// Removes this scratch object, unconditionally. An object that is already gone is
    /// not an error. Refuses any key that is not a scratch key.
    fn delete_scratch(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether the store itself answers a read conditional on `etag`, the object's
    /// current ETag, with "not modified" rather than the whole object. [`LockStore::read`]
    /// answers [`ReadReply::NotModified`] either way (it compares the ETag it got); this
    /// tells whether a follower's poll is the cheap request it is meant to be.
    fn answers_not_modified(
        &self,
        etag: &Etag,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// What the store has learned about its server so far and works around.
    fn quirks(&self) -> Vec<Quirk> {
        Vec::new()
    }

    /// The server's clock, read from the `Date` header of one request on this (scratch)
    /// key, which must not exist; `None` for a store with no clock of its own (a file on
    /// this host).
    fn server_clock(&self) -> impl Future<Output = Result<Option<ClockSample>, StoreError>> + Send {
        async { Ok(None) }
    }
}

/// A store's clock more than this far from the host's is a warning: `--once-per` judges
/// windows by each host's clock, and a host this far off is probably not synchronised.
const CLOCK_WARN_SECS: f64 = 5.0;

/// How one check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The store answered as the contract wants.
    Ok,
    /// s3lead still works, at a cost (or something is left for the operator to do).
    Warn,
    /// The contract is broken: s3lead cannot guarantee mutual exclusion on this store.
    Fail,
}

/// One check: what the contract wants, and what the store did. Serialised as
/// `{"check", "result", "expected", "got"}`, with `"rtt_ms"` (the round-trip time of the
/// request judged; for a race the median of its requests), `"anomaly"` (an answer named
/// by [`Anomaly`]) and `"clock_offset_ms"` / `"clock_uncertainty_ms"` (the clock check)
/// when they apply.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// What was tried, e.g. `create (If-None-Match: *) on an existing key`.
    pub check: String,
    /// How it went.
    #[serde(rename = "result")]
    pub outcome: Outcome,
    /// What the contract wants.
    pub expected: String,
    /// What the store did.
    pub got: String,
    /// The round-trip time of the request judged, in milliseconds (for a race, the
    /// median of its requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// An answer of the store's, named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<Anomaly>,
    /// For the clock check: how far the store's `Date` is ahead of this host's clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<f64>,
    /// For the clock check: how far off [`Finding::clock_offset_ms`] may be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_uncertainty_ms: Option<f64>,
}

impl Finding {
    fn new(outcome: Outcome, check: &str, expected: &str, got: impl Into<String>) -> Finding {
        Finding {
            check: check.to_owned(),
            outcome,
            expected: expected.to_owned(),
            got: got.into(),
            rtt_ms: None,
            anomaly: None,
            clock_offset_ms: None,
            clock_uncertainty_ms: None,
        }
    }

    fn timed(mut self, rtt: Duration) -> Finding {
        self.rtt_ms = Some(millis(rtt));
        self
    }

    /// Names the store's answer: the outcome of the write judged, or `ignored` when the
    /// write succeeded though its precondition did not hold.
    fn naming(mut self, outcome: &Result<Etag, StoreError>, ignored: bool) -> Finding {
        self.anomaly = match outcome {
            Err(StoreError::Fatal(FatalKind::Unsupported, _)) => Some(Anomaly::NotImplemented),
            Ok(_) if ignored => Some(Anomaly::IgnoredPrecondition),
            _ => None,
        };
        self
    }

    fn ok(check: &str, expected: &str, got: impl Into<String>) -> Finding {
        Finding::new(Outcome::Ok, check, expected, got)
    }

    fn warn(check: &str, expected: &str, got: impl Into<String>) -> Finding {
        Finding::new(Outcome::Warn, check, expected, got)
    }

    fn fail(check: &str, expected: &str, got: impl Into<String>) -> Finding {
        Finding::new(Outcome::Fail, check, expected, got)
    }
}

/// How a probe ended.
#[derive(Debug)]
pub enum Verdict {
    /// Every check passed: the store keeps the contract (some findings may be warnings).
    Kept,
    /// The contract is broken; the first failed check. Do not trust a lock to this store.
    Broken(Finding),
    /// No definite answer where one was needed (timeouts, 5xx): nothing is proven either
    /// way, and the probe is worth running again.
    Inconclusive(String),
    /// The store refused in a way no check can get past (credentials, no bucket, …).
    Fatal(StoreError),
}

/// Where the probe sends each finding, as soon as it is known.
pub type Sink<'a> = dyn FnMut(Finding) + Send + 'a;

/// A probe of the store contract on scratch keys next to one lock.
///
/// [`Probe::run`] deletes every scratch key before it returns. If its future is dropped
/// before that (the caller was interrupted), call [`Probe::clean_up`], which deletes what
/// is left.
pub struct Probe<S: ScratchStore> {
    store: S,
    scratch: Scratch<S>,
    writers: usize,
    rounds: u32,
    /// Makes this probe's bodies unlike any other probe's.
    nonce: String,
}

impl<S: ScratchStore> Probe<S> {
    /// A probe next to the lock `store`: `rounds` race rounds (at least 1), each with
    /// `writers` concurrent writers (at least 2). No I/O.
    pub fn new(store: &S, rounds: u32, writers: usize) -> Probe<S> {
        Probe {
            store: store.clone(),
            scratch: Scratch { left: Vec::new() },
            writers: writers.max(2),
            rounds: rounds.max(1),
            nonce: random_hex(8),
        }
    }

    /// Runs every check, handing each finding to `sink`, then deletes the scratch keys
    /// (a key that cannot be deleted is a warning finding too).
    pub async fn run(&mut self, sink: &mut Sink<'_>) -> Verdict {
        let mut session = Session {
            store: &self.store,
            scratch: &mut self.scratch,
            sink: &mut *sink,
            writers: self.writers,
            rounds: self.rounds,
            nonce: &self.nonce,
            failure: None,
        };
        let outcome = session.run().await;
        let failure = session.failure.take();
        self.clean_up(sink).await;
        match (outcome, failure) {
            (Err(Stop::Fatal(e)), _) => Verdict::Fatal(e),
            (Err(Stop::Inconclusive(why)), _) => Verdict::Inconclusive(why),
            (Ok(()), Some(failure)) => Verdict::Broken(failure),
            (Ok(()), None) => Verdict::Kept,
        }
    }

    /// Deletes the scratch keys that may be left; each that cannot be deleted is a
    /// warning finding, naming it for the operator to delete by hand.
    pub async fn clean_up(&mut self, sink: &mut Sink<'_>) {
        for (location, e) in self.scratch.clean_up().await {
            sink(Finding::warn(
                "cleanup",
                "every scratch key deleted",
                format!("{location} could not be deleted ({e}); delete it by hand"),
            ));
        }
    }
}

/// Why a probe ended before its verdict.
enum Stop {
    /// No check can get past this (credentials, no bucket …).
    Fatal(StoreError),
    /// No definite answer where one was needed.
    Inconclusive(String),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Fatal(e)
    }
}

/// The scratch keys that may exist: each is registered before its first write, and
/// forgotten once deleted.
struct Scratch<S> {
    left: Vec<S>,
}

impl<S: ScratchStore> Scratch<S> {
    fn new_key(&mut self, lock: &S) -> Result<S, StoreError> {
        let key = lock.scratch(&random_hex(8))?;
        self.left.push(key.clone());
        Ok(key)
    }

    /// After the first write to `key`: a write refused with a fatal error (credentials,
    /// no bucket, 501) created nothing, so there is nothing to delete or warn about.
    fn first_write(&mut self, key: &S, outcome: &Result<Etag, StoreError>) {
        if let Err(StoreError::Fatal(..)) = outcome {
            self.forget(key);
        }
    }

    fn forget(&mut self, key: &S) {
        let location = key.location();
        self.left.retain(|k| k.location() != location);
    }

    /// Deletes one now; a failure is retried by [`Scratch::clean_up`].
    async fn delete(&mut self, key: &S) {
        if key.delete_scratch().await.is_ok() {
            self.forget(key);
        }
    }

    /// Deletes what is left; returns what could not be deleted.
    async fn clean_up(&mut self) -> Vec<(String, StoreError)> {
        let mut failed = Vec::new();
        for key in std::mem::take(&mut self.left) {
            if let Err(e) = key.delete_scratch().await {
                failed.push((key.location(), e));
            }
        }
        failed
    }
}

const CLOCK: &str = "clock offset (the store's Date header)";
const CREATE_NEW: &str = "create (If-None-Match: *) on a new key";
const CREATE_EXISTING: &str = "create (If-None-Match: *) on an existing key";
const REPLACE_WRONG: &str = "replace (If-Match) with a wrong ETag";
const REPLACE_CURRENT: &str = "replace (If-Match) with the current ETag";
const REPLACE_STALE: &str = "replace (If-Match) with the replaced ETag";
const READ_CURRENT: &str = "read (If-None-Match) with the current ETag";
const REPLACE_MISSING: &str = "replace (If-Match) on a missing key";
const RACE_CREATE: &str = "racing creates (If-None-Match: *)";
const RACE_REPLACE: &str = "racing replaces (If-Match, one ETag)";

const REFUSED_UNCHANGED: &str = "refused (412), content unchanged";
const ONE_WINNER: &str =
    "exactly one winner (HTTP 200) in every round, and the object holding its body";

/// An object's ETag and body as a read showed them.
type Content = (Etag, Vec<u8>);

/// One run of the checks: the probe's settings, where the findings go, and the first
/// failure seen.
struct Session<'a, S: ScratchStore> {
    store: &'a S,
    scratch: &'a mut Scratch<S>,
    sink: &'a mut Sink<'a>,
    writers: usize,
    rounds: u32,
    nonce: &'a str,
    failure: Option<Finding>,
}

impl<S: ScratchStore> Session<'_, S> {
    fn report(&mut self, finding: Finding) {
        if finding.outcome == Outcome::Fail && self.failure.is_none() {
            self.failure = Some(finding.clone());
        }
        (self.sink)(finding);
    }

    async fn run(&mut self) -> Result<(), Stop> {
        let key = self.scratch.new_key(self.store)?;
        self.clock(&key).await?;
        let outcome = self.one_at_a_time(&key).await;
        self.scratch.delete(&key).await;
        outcome?;
        let key = self.scratch.new_key(self.store)?;
        let outcome = self.replace_missing(&key).await;
        self.scratch.delete(&key).await;
        outcome?;
        self.races().await
    }

    /// A body that no other write of any check has: every write changes the bytes, as
    /// s3lead's own writes do (`seq`), so ETags derived from the body differ too.
    fn body(&self, what: &str) -> Vec<u8> {
        serde_json::json!({ "s3lead_check": self.nonce, "write": what })
            .to_string()
            .into_bytes()
    }

    /// The offset between this host's clock and the store's `Date`, read with a request
    /// on `key` before anything is written to it.
    async fn clock(&mut self, key: &S) -> Result<(), Stop> {
        let started = Instant::now();
        let sample = readable(key.server_clock().await)?;
        let rtt = started.elapsed();
        let expected = "the store's Date within 5 s of this host's clock";
        let finding = match sample {
            None => Finding::ok(
                CLOCK,
                expected,
                "no offset: the store has no clock of its own (a file on this host)",
            ),
            Some(sample) => {
                let (offset, within) = sample.offset_secs();
                let said = format!(
                    "the store's Date is {:.1} s {} this host's clock (within {:.1} s: Date has whole seconds)",
                    offset.abs(),
                    if offset < 0.0 { "behind" } else { "ahead of" },
                    within
                );
                let mut finding = if offset.abs() > CLOCK_WARN_SECS + within {
                    Finding::warn(
                        CLOCK,
                        expected,
                        format!(
                            "{said}: is this host's clock synchronised? --once-per judges its windows by each host's clock"
                        ),
                    )
                } else {
                    Finding::ok(CLOCK, expected, said)
                };
                finding.clock_offset_ms = Some(offset * 1000.0);
                finding.clock_uncertainty_ms = Some(within * 1000.0);
                finding
            }
        };
        self.report(finding.timed(rtt));
        Ok(())
    }

    /// Checks 1 to 6 of the contract, on one key that does not exist yet. Returns early
    /// once a failure leaves nothing meaningful to check.
    async fn one_at_a_time(&mut self, key: &S) -> Result<(), Stop> {
        // 1. A create on a missing key wins.
        let Some(current) = self.create_new(key).await? else {
            return Ok(());
        };

        // 2. A second create is refused and changes nothing.
        let (attempt, rtt) = timed(key.create(self.body("second create"))).await;
        let attempt = judgeable(attempt)?;
        let Some(current) = self
            .refused_unchanged(
                key,
                CREATE_EXISTING,
                (attempt, rtt),
                &current,
                "If-None-Match: *",
            )
            .await?
        else {
            return Ok(());
        };

        // 3. A replace with an ETag the object never had is refused.
        let wrong = Etag::new(format!("\"{}\"", random_hex(16)));
        let (attempt, rtt) = timed(key.replace(&wrong, self.body("wrong ETag"))).await;
        let attempt = judgeable(attempt)?;
        let Some(current) = self
            .refused_unchanged(key, REPLACE_WRONG, (attempt, rtt), &current, "If-Match")
            .await?
        else {
            return Ok(());
        };

        // 4. A replace with the current ETag wins, with a new ETag.
        let Some(replaced) = self.replace_current(key, &current).await? else {
            return Ok(());
        };

        // 5. The ETag just replaced is stale: refused.
        let (attempt, rtt) = timed(key.replace(&current.0, self.body("stale ETag"))).await;
        let attempt = judgeable(attempt)?;
        let Some((now, _)) = self
            .refused_unchanged(key, REPLACE_STALE, (attempt, rtt), &replaced, "If-Match")
            .await?
        else {
            return Ok(());
        };

        // 6. A conditional read of the current ETag: not modified.
        self.read_current(key, &now).await
    }

    /// Check 1: a create on a missing key wins. Returns the content it wrote, `None`
    /// after a failure.
    async fn create_new(&mut self, key: &S) -> Result<Option<Content>, Stop> {
        let b1 = self.body("first create");
        let (created, rtt) = timed(key.create(b1.clone())).await;
        self.scratch.first_write(key, &created);
        let created = judgeable(created)?;
        let after = content(key).await?;
        let named =
            |f: Finding, outcome: &Result<Etag, StoreError>| f.timed(rtt).naming(outcome, false);
        Ok(match (&created, after) {
            (Ok(e1), Some(current)) if current.1 == b1 => {
                let got = format!("written (ETag {e1})");
                self.report(named(Finding::ok(CREATE_NEW, "written", got), &created));
                Some(current)
            }
            (Ok(e1), after) => {
                let got = format!("written (ETag {e1}), yet a read shows {}", shown(&after));
                self.report(named(Finding::fail(CREATE_NEW, "written", got), &created));
                None
            }
            (Err(e), _) => {
                let got = said(e);
                self.report(named(Finding::fail(CREATE_NEW, "written", got), &created));
                None
            }
        })
    }

    /// Check 4: a replace with the current ETag (as a read showed it, as a follower taking
    /// over sends it) wins, and the object gets a new ETag. Returns the new content,
    /// `None` after a failure.
    async fn replace_current(
        &mut self,
        key: &S,
        current: &Content,
    ) -> Result<Option<Content>, Stop> {
        let b4 = self.body("replace");
        let (replaced, rtt) = timed(key.replace(&current.0, b4.clone())).await;
        let replaced = judgeable(replaced)?;
        let after = content(key).await?;
        let expected = "written, with a new ETag";
        let anomaly = Finding::ok("", "", "").naming(&replaced, false).anomaly;
        let mut report = |f: Finding| {
            let mut f = f.timed(rtt);
            f.anomaly = anomaly;
            self.report(f);
        };
        Ok(match (replaced, after) {
            (Ok(e4), Some(after)) if after.1 == b4 && e4 != current.0 => {
                let mut got = format!("written (ETag {} -> {e4})", current.0);
                for quirk in key.quirks() {
                    got.push_str(&format!("; {quirk}"));
                }
                report(Finding::ok(REPLACE_CURRENT, expected, got));
                Some((e4, after.1))
            }
            (Ok(e4), Some(after)) if after.1 == b4 => {
                let got = format!(
                    "written, but the ETag is still {e4}: followers could not see a renewal"
                );
                report(Finding::fail(REPLACE_CURRENT, expected, got));
                None
            }
            (Ok(e4), after) => {
                let got = format!("written (ETag {e4}), yet a read shows {}", shown(&after));
                report(Finding::fail(REPLACE_CURRENT, expected, got));
                None
            }
            (Err(e), _) => {
                report(Finding::fail(REPLACE_CURRENT, expected, said(&e)));
                None
            }
        })
    }

    /// Check 6: a conditional read of the current ETag is "not modified". Only a warning
    /// when the store sends the object anyway: s3lead compares the ETag itself.
    async fn read_current(&mut self, key: &S, now: &Etag) -> Result<(), Stop> {
        let expected = "not modified (304)";
        let (read, rtt) = timed(key.read(Some(now))).await;
        let finding = match readable(read)? {
            ReadReply::NotModified if readable(key.answers_not_modified(now).await)? => {
                Finding::ok(READ_CURRENT, expected, "not modified (304)")
            }
            ReadReply::NotModified => Finding::warn(
                READ_CURRENT,
                expected,
                "the whole object (200): the store ignores If-None-Match on GET; \
                 s3lead still works, but every poll downloads the record",
            ),
            ReadReply::Found { etag, .. } => {
                let got = format!(
                    "the whole object, with ETag {etag}, though nothing was written since a read \
                     showed {now}"
                );
                Finding::fail(READ_CURRENT, expected, got)
            }
            ReadReply::Missing => {
                let got = "no such key: the object written just before is gone";
                Finding::fail(READ_CURRENT, expected, got)
            }
        };
        self.report(finding.timed(rtt));
        Ok(())
    }

    /// A write that must be refused (`header`: the condition it carried), and the
    /// content after it. Returns that content (`None`: the object is gone), so that the
    /// next checks build on what is there even after a failure.
    async fn refused_unchanged(
        &mut self,
        key: &S,
        check: &str,
        (attempt, rtt): (Result<Etag, StoreError>, Duration),
        before: &Content,
        header: &str,
    ) -> Result<Option<Content>, Stop> {
        let after = content(key).await?;
        let unchanged = after.as_ref().is_some_and(|(_, body)| *body == before.1);
        let said = said_write(&attempt);
        let finding = match &attempt {
            Err(StoreError::PreconditionFailed | StoreError::Conflict) if unchanged => Finding::ok(
                check,
                REFUSED_UNCHANGED,
                format!("{said}, content unchanged"),
            ),
            Err(StoreError::PreconditionFailed | StoreError::Conflict) => Finding::fail(
                check,
                REFUSED_UNCHANGED,
                format!("{said}, yet a read shows {}", shown(&after)),
            ),
            Ok(_) => Finding::fail(
                check,
                REFUSED_UNCHANGED,
                format!("{said}: the store ignores {header} on PUT"),
            ),
            Err(StoreError::Missing) => Finding::fail(
                check,
                REFUSED_UNCHANGED,
                format!("{said}, though the object exists"),
            ),
            Err(_) => Finding::fail(check, REFUSED_UNCHANGED, said),
        };
        self.report(finding.timed(rtt).naming(&attempt, true));
        Ok(after)
    }

    /// 7. A replace on a missing key is refused and creates nothing.
    async fn replace_missing(&mut self, key: &S) -> Result<(), Stop> {
        let etag = Etag::new(format!("\"{}\"", random_hex(16)));
        let (attempt, rtt) = timed(key.replace(&etag, self.body("replace missing"))).await;
        self.scratch.first_write(key, &attempt);
        let attempt = judgeable(attempt)?;
        let after = content(key).await?;
        let expected = "refused (404, or 412 as Ceph RGW answers), nothing created";
        let said = said_write(&attempt);
        let finding =
            match &attempt {
                Err(
                    StoreError::Missing | StoreError::PreconditionFailed | StoreError::Conflict,
                ) if after.is_none() => Finding::ok(
                    REPLACE_MISSING,
                    expected,
                    format!("{said}, nothing created"),
                ),
                Err(
                    StoreError::Missing | StoreError::PreconditionFailed | StoreError::Conflict,
                ) => Finding::fail(
                    REPLACE_MISSING,
                    expected,
                    format!("{said}, yet the object now exists"),
                ),
                Ok(_) => Finding::fail(
                    REPLACE_MISSING,
                    expected,
                    format!("{said}: the store ignores If-Match on a missing key"),
                ),
                Err(_) => Finding::fail(REPLACE_MISSING, expected, said),
            };
        self.report(finding.timed(rtt).naming(&attempt, true));
        Ok(())
    }

    /// The races, round after round, each on a fresh key; they stop at the first round
    /// that breaks the contract.
    async fn races(&mut self) -> Result<(), Stop> {
        let mut creates = Tally::default();
        let mut replaces = Tally::default();
        for round in 1..=self.rounds {
            let key = self.scratch.new_key(self.store)?;
            let outcome = self
                .race_round(&key, round, &mut creates, &mut replaces)
                .await;
            self.scratch.delete(&key).await;
            outcome?;
            if creates.failure.is_some() || replaces.failure.is_some() {
                break;
            }
        }
        let broken = creates.failure.is_some() || replaces.failure.is_some();
        for (check, mut tally) in [(RACE_CREATE, creates), (RACE_REPLACE, replaces)] {
            let round_trips = tally.round_trips();
            let not_implemented = tally.not_implemented;
            let finding = match tally.failure {
                Some(failure) => Finding::fail(check, ONE_WINNER, failure),
                None if tally.rounds() == 0 => continue,
                None if tally.unsure == 0 => Finding::ok(
                    check,
                    ONE_WINNER,
                    format!(
                        "one winner in each of {} rounds of {} writers",
                        tally.won, self.writers
                    ),
                ),
                None if tally.won == 0 && !broken => {
                    return Err(Stop::Inconclusive(format!(
                        "{check}: no round had a definite winner (every answer was a timeout or a 5xx)"
                    )));
                }
                None => Finding::warn(
                    check,
                    ONE_WINNER,
                    format!(
                        "one winner in each of {} rounds of {} writers; {} rounds had no definite answer (timeouts or 5xx)",
                        tally.won, self.writers, tally.unsure
                    ),
                ),
            };
            let mut finding = match round_trips {
                Some((median, said)) => {
                    let mut f = finding.timed(median);
                    // A failure's words are the verdict's: kept to the failure.
                    if f.outcome != Outcome::Fail {
                        f.got = format!("{}; {said}", f.got);
                    }
                    f
                }
                None => finding,
            };
            if not_implemented {
                finding.anomaly = Some(Anomaly::NotImplemented);
            }
            self.report(finding);
        }
        Ok(())
    }

    async fn race_round(
        &mut self,
        key: &S,
        round: u32,
        creates: &mut Tally,
        replaces: &mut Tally,
    ) -> Result<(), Stop> {
        let bodies: Vec<Vec<u8>> = (0..self.writers)
            .map(|i| self.body(&format!("round {round} create by writer {i}")))
            .collect();
        let answers = race(key, None, &bodies, &mut creates.rtts).await?;
        let after = content(key).await?;
        creates.count(round, &answers, judge(&answers, &bodies, after.as_ref()));
        if creates.failure.is_some() {
            return Ok(());
        }
        let Some((etag, _)) = after else {
            // Every create was ambiguous and none landed: no ETag to race on.
            replaces.unsure += 1;
            return Ok(());
        };
        let bodies: Vec<Vec<u8>> = (0..self.writers)
            .map(|i| self.body(&format!("round {round} replace by writer {i}")))
            .collect();
        let answers = race(key, Some(&etag), &bodies, &mut replaces.rtts).await?;
        let after = content(key).await?;
        replaces.count(round, &answers, judge(&answers, &bodies, after.as_ref()));
        Ok(())
    }
}

/// Rounds of one kind of race.
#[derive(Default)]
struct Tally {
    /// Rounds with exactly one winner, holding the object.
    won: u32,
    /// Rounds with no HTTP 200 at all, only ambiguous answers.
    unsure: u32,
    failure: Option<String>,
    /// Whether a writer was answered 501 NotImplemented.
    not_implemented: bool,
    /// The round-trip time of every racing request.
    rtts: Vec<Duration>,
}

impl Tally {
    fn rounds(&self) -> u32 {
        self.won + self.unsure + u32::from(self.failure.is_some())
    }

    /// The median and the slowest round trip, in a few words; `None` before any request.
    fn round_trips(&mut self) -> Option<(Duration, String)> {
        self.rtts.sort();
        let median = *self.rtts.get(self.rtts.len() / 2)?;
        let slowest = *self.rtts.last()?;
        Some((
            median,
            format!(
                "round trips: median {:.1} ms, slowest {:.1} ms, of {} requests",
                millis(median),
                millis(slowest),
                self.rtts.len()
            ),
        ))
    }

    fn count(&mut self, round: u32, answers: &[Answer], judged: Judged) {
        self.not_implemented |= answers.iter().any(|a| matches!(a, Answer::Unsupported(_)));
        match judged {
            Judged::OneWinner => self.won += 1,
            Judged::Unsure => self.unsure += 1,
            Judged::Broken(why) => self.failure = Some(format!("round {round}: {why}")),
        }
    }
}

/// What one racing writer was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    /// HTTP 200: the only answer that counts as a win.
    Won,
    /// A definite refusal: 412, 409, 404.
    Refused,
    /// No definite answer (5xx, timeout): the write may or may not have landed.
    Unsure,
    /// The store does not implement the conditional write (HTTP 501).
    Unsupported(String),
}

/// Sends one conditional write per body at once, each from its own task over a clone of
/// the store (S3 requests overlap in flight; the file store's run on blocking threads):
/// creates when `etag` is `None`, replaces with `etag` otherwise.
async fn race<S: ScratchStore>(
    key: &S,
    etag: Option<&Etag>,
    bodies: &[Vec<u8>],
    rtts: &mut Vec<Duration>,
) -> Result<Vec<Answer>, Stop> {
    let mut tasks = JoinSet::new();
    for (i, body) in bodies.iter().enumerate() {
        let (key, etag, body) = (key.clone(), etag.cloned(), body.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let outcome = match etag {
                None => key.create(body).await,
                Some(etag) => key.replace(&etag, body).await,
            };
            (i, outcome, started.elapsed())
        });
    }
    let mut answers = vec![Answer::Unsure; bodies.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, outcome, rtt) = joined
            .map_err(|e| Stop::Inconclusive(format!("a racing writer's task failed: {e}")))?;
        rtts.push(rtt);
        answers[i] = match outcome {
            Ok(_) => Answer::Won,
            Err(StoreError::PreconditionFailed | StoreError::Conflict | StoreError::Missing) => {
                Answer::Refused
            }
            Err(StoreError::Unavailable(_) | StoreError::Ambiguous(_)) => Answer::Unsure,
            Err(StoreError::Fatal(FatalKind::Unsupported, msg)) => Answer::Unsupported(msg),
            Err(e @ StoreError::Fatal(..)) => return Err(Stop::Fatal(e)),
        };
    }
    Ok(answers)
}

/// One race round, judged.
#[derive(Debug, PartialEq, Eq)]
enum Judged {
    OneWinner,
    /// No 200, and nothing definite to blame: a round that proves nothing.
    Unsure,
    Broken(String),
}

/// Judges one round from the answers and the content read after it.
fn judge(answers: &[Answer], bodies: &[Vec<u8>], after: Option<&Content>) -> Judged {
    if let Some(Answer::Unsupported(msg)) =
        answers.iter().find(|a| matches!(a, Answer::Unsupported(_)))
    {
        return Judged::Broken(msg.clone());
    }
    let winners: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i] == Answer::Won)
        .collect();
    if winners.len() > 1 {
        return Judged::Broken(format!(
            "{} of {} writers won (HTTP 200): two writers both won a conditional PUT: \
             mutual exclusion is impossible on this store",
            winners.len(),
            answers.len()
        ));
    }
    let holder = after.and_then(|(_, body)| bodies.iter().position(|b| b == body));
    let shown = || match after {
        None => "no object at all".to_owned(),
        Some(_) => "bytes none of the writers sent".to_owned(),
    };
    match (winners.first(), holder) {
        (Some(&w), Some(h)) if h == w => Judged::OneWinner,
        (Some(&w), Some(h)) => Judged::Broken(format!(
            "writer {w} alone won (HTTP 200), yet the object holds writer {h}'s body: {}",
            if answers[h] == Answer::Unsure {
                "a write answered with an error landed too, so two writers both won a conditional PUT"
            } else {
                "a refused write landed"
            }
        )),
        (Some(&w), None) => Judged::Broken(format!(
            "writer {w} alone won (HTTP 200), yet a read shows {}",
            shown()
        )),
        (None, Some(h)) if answers[h] == Answer::Unsure => Judged::Unsure,
        (None, Some(h)) => Judged::Broken(format!(
            "no writer won, yet the object holds the body of writer {h}, which was refused"
        )),
        (None, None) if answers.contains(&Answer::Unsure) => Judged::Unsure,
        (None, None) => Judged::Broken(format!(
            "all {} writers were refused, though the condition held for each of them",
            answers.len()
        )),
    }
}

/// The object's ETag and body, `None` if it does not exist.
async fn content<S: ScratchStore>(key: &S) -> Result<Option<Content>, Stop> {
    match readable(key.read(None).await)? {
        ReadReply::Found { etag, body } => Ok(Some((etag, body))),
        ReadReply::Missing | ReadReply::NotModified => Ok(None),
    }
}

/// A write's outcome that can be judged (a definite answer, or "not implemented"); any
/// other answer stops the probe.
fn judgeable(outcome: Result<Etag, StoreError>) -> Result<Result<Etag, StoreError>, Stop> {
    match outcome {
        Err(StoreError::Fatal(FatalKind::Unsupported, _)) => Ok(outcome),
        Err(e @ StoreError::Fatal(..)) => Err(Stop::Fatal(e)),
        Err(e @ (StoreError::Unavailable(_) | StoreError::Ambiguous(_))) => {
            Err(Stop::Inconclusive(e.to_string()))
        }
        _ => Ok(outcome),
    }
}

/// A read's answer, or why the probe cannot go on.
fn readable<T>(outcome: Result<T, StoreError>) -> Result<T, Stop> {
    outcome.map_err(|e| match e {
        StoreError::Fatal(..) => Stop::Fatal(e),
        other => Stop::Inconclusive(other.to_string()),
    })
}

/// A write's outcome, in the words of the findings.
fn said_write(outcome: &Result<Etag, StoreError>) -> String {
    match outcome {
        Ok(etag) => format!("written (ETag {etag})"),
        Err(e) => said(e),
    }
}

fn said(e: &StoreError) -> String {
    match e {
        StoreError::PreconditionFailed => "refused (412 precondition failed)".to_owned(),
        StoreError::Missing => "refused (404 no such key)".to_owned(),
        StoreError::Conflict => "refused (409 conflict)".to_owned(),
        other => other.to_string(),
    }
}

fn shown(after: &Option<Content>) -> String {
    match after {
        None => "no object".to_owned(),
        Some((etag, body)) => format!(
            "other content (ETag {etag}, {:?})",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        ),
    }
}

/// `what`, awaited, and how long it took.
async fn timed<T>(what: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let outcome = what.await;
    (outcome, started.elapsed())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `n` random bytes from the OS, hex encoded.
fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source at all: the pid and the time still keep keys apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ (u128::from(std::process::id()) << 64);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8;
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AnyStore;
    use crate::store::memory::MemoryStore;

    fn bodies(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("b{i}").into_bytes()).collect()
    }

    fn holding(body: &[u8]) -> Option<Content> {
        Some((Etag::new("\"x\""), body.to_vec()))
    }

    #[test]
    fn one_winner_holding_the_object_passes() {
        use Answer::*;
        let b = bodies(3);
        assert_eq!(
            judge(&[Refused, Won, Unsure], &b, holding(&b[1]).as_ref()),
            Judged::OneWinner
        );
    }

    #[test]
    fn two_winners_fail() {
        use Answer::*;
        let b = bodies(3);
        let Judged::Broken(why) = judge(&[Won, Won, Refused], &b, holding(&b[1]).as_ref()) else {
            panic!()
        };
        assert!(
            why.contains("two writers both won a conditional PUT"),
            "{why}"
        );
    }

    #[test]
    fn an_ambiguous_loser_whose_write_landed_fails() {
        use Answer::*;
        let b = bodies(3);
        let Judged::Broken(why) = judge(&[Won, Unsure, Refused], &b, holding(&b[1]).as_ref())
        else {
            panic!()
        };
        assert!(why.contains("two writers both won"), "{why}");
        let Judged::Broken(why) = judge(&[Won, Unsure, Refused], &b, holding(&b[2]).as_ref())
        else {
            panic!()
        };
        assert!(why.contains("a refused write landed"), "{why}");
    }

    #[test]
    fn rounds_without_a_definite_answer_prove_nothing() {
        use Answer::*;
        let b = bodies(3);
        assert_eq!(
            judge(&[Unsure, Refused, Unsure], &b, holding(&b[2]).as_ref()),
            Judged::Unsure
        );
        assert_eq!(judge(&[Unsure, Refused, Unsure], &b, None), Judged::Unsure);
        assert!(matches!(
            judge(&[Refused, Refused, Refused], &b, None),
            Judged::Broken(_)
        ));
        assert!(matches!(
            judge(
                &[Unsupported("501".into()), Refused, Won],
                &b,
                holding(&b[2]).as_ref()
            ),
            Judged::Broken(_)
        ));
    }

    /// Runs a probe of 3 rounds x 4 writers; returns its verdict and findings.
    async fn probe<S: ScratchStore>(store: &S) -> (Verdict, Vec<Finding>) {
        let mut findings = Vec::new();
        let verdict = Probe::new(store, 3, 4).run(&mut |f| findings.push(f)).await;
        (verdict, findings)
    }

    #[test]
    fn the_clock_offset_is_the_date_against_the_middle_of_the_round_trip() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms);
        // Sent at 100.0, answered at 100.2; the store said 160 (so 160.0 to 161.0).
        let sample = ClockSample {
            sent: at(100, 0),
            received: at(100, 200),
            server: at(160, 0),
        };
        let (offset, within) = sample.offset_secs();
        assert!((offset - 60.4).abs() < 1e-9, "{offset}");
        assert!((within - 0.6).abs() < 1e-9, "{within}");
        let behind = ClockSample {
            server: at(40, 0),
            ..sample
        };
        assert!(behind.offset_secs().0 < -59.0);
    }

    #[tokio::test]
    async fn the_file_store_keeps_the_contract_and_no_scratch_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let lock = AnyStore::File(
            crate::store::file::FileStore::open(&dir.path().join("test.lock")).unwrap(),
        );
        let (verdict, findings) = probe(&lock).await;
        assert!(matches!(verdict, Verdict::Kept), "{verdict:?}");
        for finding in &findings {
            assert_eq!(finding.outcome, Outcome::Ok, "{finding:?}");
        }
        assert_eq!(findings.len(), 10, "{findings:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn the_memory_store_keeps_the_contract_and_no_scratch_key_is_left() {
        let lock = MemoryStore::new();
        let (verdict, findings) = probe(&lock).await;
        assert!(matches!(verdict, Verdict::Kept), "{verdict:?}");
        assert!(findings.iter().all(|f| f.outcome == Outcome::Ok));
        assert_eq!(findings.len(), 10, "{findings:?}");
        assert_eq!(lock.scratch_keys(), Vec::<String>::new());
        assert_eq!(lock.body(), None, "the lock object was never written");
    }

    /// A store that ignores every condition, as Garage 2.5 ignores `If-None-Match`.
    #[derive(Clone)]
    struct Careless(MemoryStore);

    impl LockStore for Careless {
        async fn read(&self, known: Option<&Etag>) -> Result<ReadReply, StoreError> {
            self.0.read(known).await
        }

        async fn create(&self, body: Vec<u8>) -> Result<Etag, StoreError> {
            Ok(self.0.overwrite(body))
        }

        async fn replace(&self, _: &Etag, body: Vec<u8>) -> Result<Etag, StoreError> {
            Ok(self.0.overwrite(body))
        }
    }

    impl ScratchStore for Careless {
        fn location(&self) -> String {
            self.0.location()
        }

        fn scratch(&self, tag: &str) -> Result<Careless, StoreError> {
            Ok(Careless(self.0.scratch(tag)?))
        }

        async fn delete_scratch(&self) -> Result<(), StoreError> {
            self.0.delete_scratch().await
        }

        async fn answers_not_modified(&self, etag: &Etag) -> Result<bool, StoreError> {
            self.0.answers_not_modified(etag).await
        }
    }

    #[tokio::test]
    async fn a_store_that_ignores_conditions_breaks_the_contract() {
        let lock = Careless(MemoryStore::new());
        let (verdict, findings) = probe(&lock).await;
        let Verdict::Broken(first) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(first.check, CREATE_EXISTING);
        assert!(
            first
                .got
                .ends_with("the store ignores If-None-Match: * on PUT"),
            "{first:?}"
        );
        assert_eq!(findings.first().map(|f| f.outcome), Some(Outcome::Ok));
        assert_eq!(
            findings
                .iter()
                .find(|f| f.check == CREATE_EXISTING)
                .and_then(|f| f.anomaly),
            Some(Anomaly::IgnoredPrecondition)
        );
        assert!(
            findings.iter().any(|f| f.check == RACE_CREATE
                && f.outcome == Outcome::Fail
                && f.got.contains("two writers both won a conditional PUT")),
            "{findings:#?}"
        );
        assert_eq!(lock.0.scratch_keys(), Vec::<String>::new());
    }
}
