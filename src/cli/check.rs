//! `s3lead check`: prove that the lock's store keeps the conditional-write contract that
//! mutual exclusion rests on (DESIGN §3), before trusting a lock to it. A store that
//! ignores `If-None-Match` (Garage 2.5) or lets racing conditional writes both succeed
//! (s3s-fs; moto now and then) would let two leaders run at once while every run looks
//! fine: this is where an operator finds out, with one line per check and one verdict.
//!
//! Everything happens on scratch keys next to the lock (`<key>.s3lead-check-<random>`),
//! each used once and deleted afterwards, unconditionally (the only delete s3lead ever
//! sends, and the stores refuse it for any other key). The lock object itself is never
//! read or written, so a check can run beside a live leader.
//!
//! First the conditional writes one at a time, with the answers the protocol relies on:
//! a create wins only on a missing key, a replace only with the current ETag, a failed
//! condition leaves the content alone, every write gives a new ETag, a conditional read
//! of the current ETag is "not modified" (a store that ignores that is only a warning: it
//! costs a download per poll). Then races: `--writers` concurrent creates on a fresh key,
//! then as many concurrent replaces with its one ETag, `--rounds` times. Only an HTTP 200
//! counts as a win; a 5xx or a timeout is an ambiguous loser (Ceph RGW answers most
//! losers of an `If-Match` race with 500), and after every round the object must hold
//! the winner's body, which also catches an ambiguous loser whose write landed.
//!
//! A broken contract is a FAIL and exit 78 ([`exit::UNSAFE_STORE`]). Bad credentials and a
//! missing bucket exit as they do for `run`. Answers too vague to judge (timeouts, 5xx
//! where a definite answer was due) end the check with 69: nothing is proven either way.

/// A line on stdout that never panics: `s3lead check … | head` must still delete its
/// scratch keys and give its exit status when nobody reads the rest.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use super::store_failure;
use super::{Failure, S3Args};
use crate::exit;
use crate::store::{AnyStore, Etag, FatalKind, LockStore, ReadReply, StoreError};
use clap::Args;
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::task::JoinSet;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The lock: s3://BUCKET/KEY, file:///ABS/PATH, or a local path. The check works on
    /// scratch keys next to it and never touches the lock object itself.
    pub lock: String,

    /// Print one JSON object: {"lock", "safe", "verdict", "rounds", "writers", "checks":
    /// [{"check", "result": "ok"|"warn"|"fail", "expected", "got"}]}.
    #[arg(long)]
    pub json: bool,

    /// Race rounds: each races --writers creates, then as many replaces, on a fresh
    /// scratch key.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rounds: u32,

    /// Concurrent writers in each race.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=256))]
    pub writers: u32,

    #[command(flatten)]
    pub s3: S3Args,
}

/// Runs `s3lead check`; returns the exit status.
pub async fn check(args: CheckArgs) -> Result<i32, Failure> {
    let lock = args.lock.as_str();
    let url = super::lock_url(lock)?;
    let store = super::open_store(lock, &url, &args.s3, super::ONE_SHOT_REQUEST_TIMEOUT).await?;
    let mut report = Report {
        json: args.json,
        lines: Vec::new(),
    };
    let mut scratch = Scratch::default();
    let outcome = {
        let mut probe = Probe {
            store: &store,
            scratch: &mut scratch,
            report: &mut report,
            writers: args.writers as usize,
            rounds: args.rounds,
            nonce: random_hex(8),
        };
        tokio::select! {
            outcome = probe.run() => outcome,
            sig = interrupted() => Err(Stop::Signal(sig)),
        }
    };
    for (location, e) in scratch.clean_up().await {
        report.add(Line::warn(
            "cleanup",
            "every scratch key deleted",
            format!("{location} could not be deleted ({e}); delete it by hand"),
        ));
    }
    match outcome {
        Ok(()) => {}
        Err(Stop::Fatal(e)) => return Err(store_failure(lock, &e)),
        Err(Stop::Inconclusive(why)) => {
            return Err(Failure::new(
                exit::UNAVAILABLE,
                format!(
                    "{lock}: the check could not finish: {why}; nothing is proven either way (run it again)"
                ),
            ));
        }
        Err(Stop::Signal(sig)) => {
            return Err(Failure::new(
                128 + sig as i32,
                format!("{lock}: interrupted by {sig}; the check did not finish"),
            ));
        }
    }
    let failure = report.lines.iter().find(|l| l.result == Outcome::Fail);
    let (safe, verdict) = match failure {
        Some(f) => (
            false,
            format!(
                "{lock}: UNSAFE: {}: {}; s3lead cannot guarantee mutual exclusion on this store",
                f.check, f.got
            ),
        ),
        None => (
            true,
            format!(
                "{lock}: the store keeps the conditional-write contract ({} race rounds x {} writers: one winner each)",
                args.rounds, args.writers
            ),
        ),
    };
    if args.json {
        let v = serde_json::json!({
            "lock": lock,
            "safe": safe,
            "verdict": verdict,
            "rounds": args.rounds,
            "writers": args.writers,
            "checks": report.lines,
        });
        out!("{v}");
    } else {
        out!("{verdict}");
    }
    Ok(if safe { 0 } else { exit::UNSAFE_STORE })
}

/// Why the check ended before its verdict.
enum Stop {
    /// No check can get past this (credentials, no bucket …): exit as `run` would.
    Fatal(StoreError),
    /// No definite answer where one was needed.
    Inconclusive(String),
    Signal(Signal),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Fatal(e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Ok,
    Warn,
    Fail,
}

/// One check: what the contract wants, and what the store did.
#[derive(Debug, Serialize)]
struct Line {
    check: String,
    result: Outcome,
    expected: String,
    got: String,
}

impl Line {
    fn new(result: Outcome, check: &str, expected: &str, got: impl Into<String>) -> Line {
        Line {
            check: check.to_owned(),
            result,
            expected: expected.to_owned(),
            got: got.into(),
        }
    }

    fn ok(check: &str, expected: &str, got: impl Into<String>) -> Line {
        Line::new(Outcome::Ok, check, expected, got)
    }

    fn warn(check: &str, expected: &str, got: impl Into<String>) -> Line {
        Line::new(Outcome::Warn, check, expected, got)
    }

    fn fail(check: &str, expected: &str, got: impl Into<String>) -> Line {
        Line::new(Outcome::Fail, check, expected, got)
    }
}

/// The lines so far. As text, each is printed as soon as it is known (the races take a
/// while); as JSON, all of them at the end, in one object.
struct Report {
    json: bool,
    lines: Vec<Line>,
}

impl Report {
    fn add(&mut self, line: Line) {
        if !self.json {
            match line.result {
                Outcome::Ok => out!("ok   {}: {}", line.check, line.got),
                Outcome::Warn => out!(
                    "WARN {}: expected {}; got {}",
                    line.check,
                    line.expected,
                    line.got
                ),
                Outcome::Fail => out!(
                    "FAIL {}: expected {}; got {}",
                    line.check,
                    line.expected,
                    line.got
                ),
            }
        }
        self.lines.push(line);
    }
}

/// The scratch keys that may exist: each is registered before its first write, and
/// forgotten once deleted.
#[derive(Default)]
struct Scratch {
    left: Vec<AnyStore>,
}

impl Scratch {
    fn new_key(&mut self, lock: &AnyStore) -> Result<AnyStore, StoreError> {
        let key = lock.scratch(&random_hex(8))?;
        self.left.push(key.clone());
        Ok(key)
    }

    /// After the first write to `key`: a write refused with a fatal error (credentials,
    /// no bucket, 501) created nothing, so there is nothing to delete or warn about.
    fn first_write(&mut self, key: &AnyStore, outcome: &Result<Etag, StoreError>) {
        if let Err(StoreError::Fatal(..)) = outcome {
            let location = key.location();
            self.left.retain(|k| k.location() != location);
        }
    }

    /// Deletes one now; a failure is retried by [`Scratch::clean_up`].
    async fn delete(&mut self, key: &AnyStore) {
        if key.delete_scratch().await.is_ok() {
            let location = key.location();
            self.left.retain(|k| k.location() != location);
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

struct Probe<'a> {
    store: &'a AnyStore,
    scratch: &'a mut Scratch,
    report: &'a mut Report,
    writers: usize,
    rounds: u32,
    /// Makes this run's bodies unlike any other run's.
    nonce: String,
}

impl Probe<'_> {
    async fn run(&mut self) -> Result<(), Stop> {
        let key = self.scratch.new_key(self.store)?;
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

    /// Checks 1 to 6 of the contract, on one key that does not exist yet. Returns early
    /// once a failure leaves nothing meaningful to check.
    async fn one_at_a_time(&mut self, key: &AnyStore) -> Result<(), Stop> {
        // 1. A create on a missing key wins.
        let b1 = self.body("first create");
        let created = key.create(b1.clone()).await;
        self.scratch.first_write(key, &created);
        let created = judgeable(created)?;
        let after = content(key).await?;
        let current = match (created, after) {
            (Ok(e1), Some(current)) if current.1 == b1 => {
                self.report.add(Line::ok(
                    CREATE_NEW,
                    "written",
                    format!("written (ETag {e1})"),
                ));
                current
            }
            (Ok(e1), after) => {
                let got = format!("written (ETag {e1}), yet a read shows {}", shown(&after));
                self.report.add(Line::fail(CREATE_NEW, "written", got));
                return Ok(());
            }
            (Err(e), _) => {
                self.report.add(Line::fail(CREATE_NEW, "written", said(&e)));
                return Ok(());
            }
        };

        // 2. A second create is refused and changes nothing.
        let attempt = judgeable(key.create(self.body("second create")).await)?;
        let Some(current) = self
            .refused_unchanged(key, CREATE_EXISTING, attempt, &current, "If-None-Match: *")
            .await?
        else {
            return Ok(());
        };

        // 3. A replace with an ETag the object never had is refused.
        let wrong = Etag::new(format!("\"{}\"", random_hex(16)));
        let attempt = judgeable(key.replace(&wrong, self.body("wrong ETag")).await)?;
        let Some(current) = self
            .refused_unchanged(key, REPLACE_WRONG, attempt, &current, "If-Match")
            .await?
        else {
            return Ok(());
        };

        // 4. A replace with the current ETag (as a read showed it, as a follower taking
        // over sends it) wins, and the object gets a new ETag.
        let b4 = self.body("replace");
        let replaced = judgeable(key.replace(&current.0, b4.clone()).await)?;
        let after = content(key).await?;
        let expected = "written, with a new ETag";
        let replaced_content = match (replaced, after) {
            (Ok(e4), Some(after)) if after.1 == b4 && e4 != current.0 => {
                let mut got = format!("written (ETag {} -> {e4})", current.0);
                if matches!(key, AnyStore::S3(s) if s.wants_unquoted_if_match()) {
                    got.push_str(
                        "; the store accepts If-Match only unquoted (as Ceph RGW does): s3lead adapts",
                    );
                }
                self.report.add(Line::ok(REPLACE_CURRENT, expected, got));
                (e4, after.1)
            }
            (Ok(e4), Some(after)) if after.1 == b4 => {
                let got = format!(
                    "written, but the ETag is still {e4}: followers could not see a renewal"
                );
                self.report.add(Line::fail(REPLACE_CURRENT, expected, got));
                return Ok(());
            }
            (Ok(e4), after) => {
                let got = format!("written (ETag {e4}), yet a read shows {}", shown(&after));
                self.report.add(Line::fail(REPLACE_CURRENT, expected, got));
                return Ok(());
            }
            (Err(e), _) => {
                self.report
                    .add(Line::fail(REPLACE_CURRENT, expected, said(&e)));
                return Ok(());
            }
        };
        // 5. The ETag just replaced is stale: refused.
        let attempt = judgeable(key.replace(&current.0, self.body("stale ETag")).await)?;
        let Some((now, _)) = self
            .refused_unchanged(key, REPLACE_STALE, attempt, &replaced_content, "If-Match")
            .await?
        else {
            return Ok(());
        };

        // 6. A conditional read of the current ETag: not modified. Only a warning when
        // the store sends the object anyway: s3lead compares the ETag itself.
        let expected = "not modified (304)";
        match readable(key.read(Some(&now)).await)? {
            ReadReply::NotModified => {
                if readable(key.answers_not_modified(&now).await)? {
                    self.report
                        .add(Line::ok(READ_CURRENT, expected, "not modified (304)"));
                } else {
                    self.report.add(Line::warn(
                        READ_CURRENT,
                        expected,
                        "the whole object (200): the store ignores If-None-Match on GET; \
                         s3lead still works, but every poll downloads the record",
                    ));
                }
            }
            ReadReply::Found { etag, .. } => {
                let got = format!(
                    "the whole object, with ETag {etag}, though nothing was written since a read \
                     showed {now}"
                );
                self.report.add(Line::fail(READ_CURRENT, expected, got));
            }
            ReadReply::Missing => {
                let got = "no such key: the object written just before is gone";
                self.report.add(Line::fail(READ_CURRENT, expected, got));
            }
        }
        Ok(())
    }

    /// A write that must be refused (`header`: the condition it carried), and the
    /// content after it. Returns that content (`None`: the object is gone), so that the
    /// next checks build on what is there even after a failure.
    async fn refused_unchanged(
        &mut self,
        key: &AnyStore,
        check: &str,
        attempt: Result<Etag, StoreError>,
        before: &(Etag, Vec<u8>),
        header: &str,
    ) -> Result<Option<(Etag, Vec<u8>)>, Stop> {
        let after = content(key).await?;
        let unchanged = after.as_ref().is_some_and(|(_, body)| *body == before.1);
        let line = match &attempt {
            Err(StoreError::PreconditionFailed | StoreError::Conflict) if unchanged => Line::ok(
                check,
                REFUSED_UNCHANGED,
                format!("{}, content unchanged", said_write(&attempt)),
            ),
            Err(StoreError::PreconditionFailed | StoreError::Conflict) => Line::fail(
                check,
                REFUSED_UNCHANGED,
                format!(
                    "{}, yet a read shows {}",
                    said_write(&attempt),
                    shown(&after)
                ),
            ),
            Ok(_) => Line::fail(
                check,
                REFUSED_UNCHANGED,
                format!(
                    "{}: the store ignores {header} on PUT",
                    said_write(&attempt)
                ),
            ),
            Err(StoreError::Missing) => Line::fail(
                check,
                REFUSED_UNCHANGED,
                format!("{}, though the object exists", said_write(&attempt)),
            ),
            Err(_) => Line::fail(check, REFUSED_UNCHANGED, said_write(&attempt)),
        };
        self.report.add(line);
        Ok(after)
    }

    /// 7. A replace on a missing key is refused and creates nothing.
    async fn replace_missing(&mut self, key: &AnyStore) -> Result<(), Stop> {
        let etag = Etag::new(format!("\"{}\"", random_hex(16)));
        let attempt = key.replace(&etag, self.body("replace missing")).await;
        self.scratch.first_write(key, &attempt);
        let attempt = judgeable(attempt)?;
        let after = content(key).await?;
        let expected = "refused (404, or 412 as Ceph RGW answers), nothing created";
        let line =
            match &attempt {
                Err(
                    StoreError::Missing | StoreError::PreconditionFailed | StoreError::Conflict,
                ) if after.is_none() => Line::ok(
                    REPLACE_MISSING,
                    expected,
                    format!("{}, nothing created", said_write(&attempt)),
                ),
                Err(
                    StoreError::Missing | StoreError::PreconditionFailed | StoreError::Conflict,
                ) => Line::fail(
                    REPLACE_MISSING,
                    expected,
                    format!("{}, yet the object now exists", said_write(&attempt)),
                ),
                Ok(_) => Line::fail(
                    REPLACE_MISSING,
                    expected,
                    format!(
                        "{}: the store ignores If-Match on a missing key",
                        said_write(&attempt)
                    ),
                ),
                Err(_) => Line::fail(REPLACE_MISSING, expected, said_write(&attempt)),
            };
        self.report.add(line);
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
        for (check, tally) in [(RACE_CREATE, creates), (RACE_REPLACE, replaces)] {
            let line = match tally.failure {
                Some(failure) => Line::fail(check, ONE_WINNER, failure),
                None if tally.rounds() == 0 => continue,
                None if tally.unsure == 0 => Line::ok(
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
                None => Line::warn(
                    check,
                    ONE_WINNER,
                    format!(
                        "one winner in each of {} rounds of {} writers; {} rounds had no definite answer (timeouts or 5xx)",
                        tally.won, self.writers, tally.unsure
                    ),
                ),
            };
            self.report.add(line);
        }
        Ok(())
    }

    async fn race_round(
        &mut self,
        key: &AnyStore,
        round: u32,
        creates: &mut Tally,
        replaces: &mut Tally,
    ) -> Result<(), Stop> {
        let bodies: Vec<Vec<u8>> = (0..self.writers)
            .map(|i| self.body(&format!("round {round} create by writer {i}")))
            .collect();
        let answers = race(key, None, &bodies).await?;
        let after = content(key).await?;
        creates.count(round, judge(&answers, &bodies, after.as_ref()));
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
        let answers = race(key, Some(&etag), &bodies).await?;
        let after = content(key).await?;
        replaces.count(round, judge(&answers, &bodies, after.as_ref()));
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
}

impl Tally {
    fn rounds(&self) -> u32 {
        self.won + self.unsure + u32::from(self.failure.is_some())
    }

    fn count(&mut self, round: u32, judged: Judged) {
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
async fn race(
    key: &AnyStore,
    etag: Option<&Etag>,
    bodies: &[Vec<u8>],
) -> Result<Vec<Answer>, Stop> {
    let mut tasks = JoinSet::new();
    for (i, body) in bodies.iter().enumerate() {
        let (key, etag, body) = (key.clone(), etag.cloned(), body.clone());
        tasks.spawn(async move {
            let outcome = match etag {
                None => key.create(body).await,
                Some(etag) => key.replace(&etag, body).await,
            };
            (i, outcome)
        });
    }
    let mut answers = vec![Answer::Unsure; bodies.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, outcome) = joined
            .map_err(|e| Stop::Inconclusive(format!("a racing writer's task failed: {e}")))?;
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

#[derive(Debug, PartialEq, Eq)]
enum Judged {
    OneWinner,
    /// No 200, and nothing definite to blame: a round that proves nothing.
    Unsure,
    Broken(String),
}

/// Judges one round from the answers and the content read after it.
fn judge(answers: &[Answer], bodies: &[Vec<u8>], after: Option<&(Etag, Vec<u8>)>) -> Judged {
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
async fn content(key: &AnyStore) -> Result<Option<(Etag, Vec<u8>)>, Stop> {
    match readable(key.read(None).await)? {
        ReadReply::Found { etag, body } => Ok(Some((etag, body))),
        ReadReply::Missing | ReadReply::NotModified => Ok(None),
    }
}

/// A write's outcome that can be judged (a definite answer, or "not implemented"); any
/// other answer stops the check.
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

/// A read's answer, or why the check cannot go on.
fn readable<T>(outcome: Result<T, StoreError>) -> Result<T, Stop> {
    outcome.map_err(|e| match e {
        StoreError::Fatal(..) => Stop::Fatal(e),
        other => Stop::Inconclusive(other.to_string()),
    })
}

/// A write's outcome, in the words of the report.
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

fn shown(after: &Option<(Etag, Vec<u8>)>) -> String {
    match after {
        None => "no object".to_owned(),
        Some((etag, body)) => format!(
            "other content (ETag {etag}, {:?})",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        ),
    }
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

/// Resolves on SIGINT or SIGTERM, so that the scratch keys are deleted before exiting.
async fn interrupted() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Signal::SIGINT,
        _ = term.recv() => Signal::SIGTERM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("b{i}").into_bytes()).collect()
    }

    fn holding(body: &[u8]) -> Option<(Etag, Vec<u8>)> {
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

    #[tokio::test]
    async fn the_file_store_keeps_the_contract_and_no_scratch_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let lock = AnyStore::File(
            crate::store::file::FileStore::open(&dir.path().join("test.lock")).unwrap(),
        );
        let mut report = Report {
            json: true,
            lines: Vec::new(),
        };
        let mut scratch = Scratch::default();
        Probe {
            store: &lock,
            scratch: &mut scratch,
            report: &mut report,
            writers: 4,
            rounds: 3,
            nonce: random_hex(8),
        }
        .run()
        .await
        .unwrap_or_else(|_| panic!("the check stopped"));
        assert!(scratch.clean_up().await.is_empty());
        for line in &report.lines {
            assert_eq!(line.result, Outcome::Ok, "{line:?}");
        }
        assert_eq!(report.lines.len(), 9, "{:?}", report.lines);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
