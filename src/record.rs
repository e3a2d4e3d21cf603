//! The lock object (docs/design.md §2): one small JSON record per lock, its encoding, decoding
//! and validation. The store moves its bytes; the election decides what they mean.
//!
//! Reads are bounded at [`MAX_RECORD_BYTES`] by the stores, which refuse a larger object
//! without buffering it. A record with a format version this binary does not know is
//! refused rather than misread; unknown extra fields of a known version are ignored, so
//! a later minor addition to the format stays readable.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime};

/// The format version this binary writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The largest lock object s3lead reads. Real records are a few hundred bytes.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// The longest lease a record may carry, and `--lease-duration` may ask for: one day.
/// Followers wait out the `lease_ms` written in the record, so a record with a huge one
/// (written by hand, or by a bug) would make every candidate wait years; it is refused as
/// a bad record instead.
pub const MAX_LEASE: Duration = Duration::from_millis(MAX_LEASE_MS);

/// [`MAX_LEASE`] in milliseconds, the unit of `lease_ms`.
pub const MAX_LEASE_MS: u64 = 86_400_000;

/// The fencing term: it grows by one with every acquisition and never goes down, a
/// release included (docs/design.md §1). A leader must pass its term to whatever it
/// writes, so that writers can refuse terms smaller than the largest they have seen: this
/// keeps data safe even where the lease alone cannot (a host paused past its lease).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Term(u64);

impl Term {
    /// The term of the first leader of a lock object.
    pub const FIRST: Term = Term(1);

    /// The term as a number, as it appears in the record and in `S3LEAD_TERM`.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The highest term: a record that holds it can never be taken over, since its
    /// successor would need a larger one.
    pub const LAST: Term = Term(u64::MAX);

    /// The term of the next leader, or `None` after [`Term::LAST`]. Real locks never get
    /// there by counting (2^64 acquisitions); a hand-written record can. A saturating
    /// `next` would hand the same term to two leaders, so the caller must refuse instead.
    pub fn next(self) -> Option<Term> {
        self.0.checked_add(1).map(Term)
    }

    #[cfg(test)]
    pub(crate) const fn new_for_test(t: u64) -> Term {
        Term(t)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Random per acquisition. Ownership of a lease is its `lease_id`, never the holder's
/// configured name, so two candidates started with the same `--id` cannot steal from
/// each other.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(String);

impl LeaseId {
    /// 128 random bits from the OS, hex encoded.
    pub fn random() -> LeaseId {
        let mut b = [0u8; 16];
        // getrandom only fails when the OS has no entropy source at all; a time-and-pid
        // mix is then still unique per process and acquisition, which is what matters.
        if getrandom::fill(&mut b).is_err() {
            let n = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
                ^ (u128::from(std::process::id()) << 64);
            b = n.to_le_bytes();
        }
        LeaseId(b.iter().map(|x| format!("{x:02x}")).collect())
    }

    /// The id as written in the record's `lease_id` (and in `S3LEAD_LEASE_ID`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn from_str_for_test(s: &str) -> LeaseId {
        LeaseId(s.to_owned())
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The lock object, format version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The format version: [`FORMAT_VERSION`].
    pub v: u32,
    /// The fencing term of this lease.
    pub term: Term,
    /// Who holds the lease (`--id`), for people; not ownership.
    pub holder: String,
    /// The lease's ownership: random per acquisition.
    pub lease_id: LeaseId,
    /// Grows with every write within a lease: a candidate recognises its own write after
    /// an ambiguous outcome, and every write's bytes (hence its ETag) differ.
    pub seq: u64,
    /// The holder's lease duration: followers wait out this, not their own setting.
    pub lease_ms: u64,
    /// When the lease was acquired, RFC 3339 wall-clock time: for people and cron
    /// windows; no safety decision uses it.
    pub acquired_at: String,
    /// When the lease was last written, wall-clock time; for people too (and for `-n`
    /// to judge whether to wait), never for safety.
    pub renewed_at: String,
    /// The holder released the lease: the next candidate takes over at once, with
    /// `term + 1`.
    pub released: bool,
    /// The last run of the command recorded under `--once-per`, carried from record to
    /// record across renewals, releases and takeovers. Absent from records written
    /// without it (and by older binaries, which ignore it): nothing about the lease
    /// depends on it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_last_run"
    )]
    pub last_run: Option<LastRun>,
    /// The holder's peer endpoint (`--advertise`), which followers long-poll for each
    /// renewal's ETag instead of reading the store (docs/design.md §3 "Peer mode"). Absent
    /// from records written without it, whose bytes stay as before; it is a hint for
    /// saving reads, and no takeover is decided on what that endpoint says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
}

/// A `last_run` this binary cannot read (written by hand, or by a later format's
/// addition) is dropped rather than making the whole record unreadable: it decides no
/// lease, and losing it costs at most one extra run of a cron window.
fn lenient_last_run<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<LastRun>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// A run of the command, as `--once-per` records it (docs/design.md §2). Its times are the
/// runner's wall clock, RFC 3339 UTC; they decide only whether a cron fire runs, never
/// who holds the lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// The start of the window the run claimed.
    pub window: String,
    /// The window's length in seconds (`--once-per`).
    pub window_s: u64,
    /// When the lease that claimed the window was acquired.
    pub started_at: String,
    /// When the command's last process was gone; absent while it runs (or if its
    /// runner never got to say: lost its lease, crashed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The run's exit status as s3lead exited with it (the command's, 128+N for signal
    /// N); absent with `finished_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// Who ran it (`--id`).
    pub holder: String,
    /// The term of the lease it ran under.
    pub term: Term,
}

/// `--once-per`: windows of wall-clock time, aligned on UTC multiples of `every` shifted
/// by `offset`, in each of which the command runs at most once across every candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OncePer {
    /// The window's length, whole seconds, at least one.
    pub every: Duration,
    /// Shifts the windows' edges (`--once-per-offset`), so that they fall far from the
    /// fire time.
    pub offset: Duration,
    /// A run that finished with a non-zero status leaves the window open to the next
    /// candidate (`--retry-failed`).
    pub retry_failed: bool,
    /// A window claimed under this term by this very process, whose command never
    /// started (elected too late, the lease released to campaign again): not a run.
    pub unused_claim: Option<Term>,
}

impl OncePer {
    /// The window containing wall-clock time `t`: its start, seconds since the Unix epoch.
    pub fn window_start(&self, t: SystemTime) -> i128 {
        let every = i128::from(self.every.as_secs().max(1));
        let offset = i128::from(self.offset.as_secs()) % every;
        let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i128::from(d.as_secs()),
            Err(e) => -i128::from(e.duration().as_secs()) - 1,
        };
        (secs - offset).div_euclid(every) * every + offset
    }

    /// Whether `run` spends the window that holds `now`: it claimed a window starting
    /// within it, and did not fail while `retry_failed` lets a failure be retried. A run
    /// in progress, or one whose runner never recorded its end (lease lost, crash), spends
    /// the window: it may have done its work.
    pub fn spent_by(&self, run: &LastRun, now: SystemTime) -> bool {
        if self.unused_claim == Some(run.term) && run.finished_at.is_none() {
            return false;
        }
        if self.retry_failed && run.exit_status.is_some_and(|s| s != 0) {
            return false;
        }
        let Some(start) = parse_epoch_secs(&run.window) else {
            return false;
        };
        let current = self.window_start(now);
        let every = i128::from(self.every.as_secs().max(1));
        (current..current + every).contains(&start)
    }

    /// The record of a run claiming the window that holds `now`.
    fn claim(&self, term: Term, holder: &str, now: SystemTime) -> LastRun {
        let start = self.window_start(now);
        let window = u64::try_from(start)
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        LastRun {
            window: humantime::format_rfc3339_seconds(window).to_string(),
            window_s: self.every.as_secs().max(1),
            started_at: humantime::format_rfc3339_seconds(now).to_string(),
            finished_at: None,
            exit_status: None,
            holder: holder.to_owned(),
            term,
        }
    }
}

/// An RFC 3339 time as seconds since the Unix epoch.
fn parse_epoch_secs(t: &str) -> Option<i128> {
    let t = humantime::parse_rfc3339(t).ok()?;
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(i128::from(d.as_secs()))
}

/// How a run ended, as its runner records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunEnd {
    /// When the command's last process was gone, RFC 3339 by this host's wall clock.
    pub finished_at: String,
    /// The exit status s3lead exits with.
    pub exit_status: i32,
}

impl RunEnd {
    /// A run that ended now with `exit_status`.
    pub fn now(exit_status: i32) -> RunEnd {
        RunEnd {
            finished_at: wall_clock_now(),
            exit_status,
        }
    }
}

/// Why the bytes of a lock object are not a record this binary can use.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The object is larger than [`MAX_RECORD_BYTES`].
    #[error(
        "the lock object is {size} bytes, larger than the {MAX_RECORD_BYTES}-byte limit of a lock record"
    )]
    TooLarge {
        /// Its size in bytes.
        size: u64,
    },
    /// Not JSON, or not the fields of a record: the parser's message.
    #[error("the lock object is not a valid s3lead record ({0})")]
    Malformed(String),
    /// A format version other than [`FORMAT_VERSION`]: refused, not guessed at.
    #[error(
        "the lock object has format version {found}; this s3lead reads version {FORMAT_VERSION} only (upgrade s3lead)"
    )]
    UnsupportedVersion {
        /// The version the object has.
        found: u64,
    },
    /// A field breaks a rule of the format (a missing or non-numeric version, term 0,
    /// `lease_ms` 0, an empty `lease_id`): which one.
    #[error("the lock object is not a valid s3lead record: {0}")]
    Invalid(&'static str),
    /// `lease_ms` is above [`MAX_LEASE_MS`].
    #[error(
        "the lock object is not a valid s3lead record: lease_ms is {lease_ms}, above the maximum of {MAX_LEASE_MS} (one day)"
    )]
    LeaseTooLong {
        /// The `lease_ms` found.
        lease_ms: u64,
    },
}

impl LockRecord {
    /// A fresh acquisition's record: seq 1, not released.
    pub fn acquired(term: Term, holder: &str, lease_id: LeaseId, lease: Duration) -> LockRecord {
        let now = wall_clock_now();
        LockRecord {
            v: FORMAT_VERSION,
            term,
            holder: holder.to_owned(),
            lease_id,
            seq: 1,
            lease_ms: duration_ms(lease),
            acquired_at: now.clone(),
            renewed_at: now,
            released: false,
            last_run: None,
            advertise: None,
        }
    }

    /// A fresh acquisition that took over from a record whose last run was `previous`:
    /// it carries that run on, unless `once_per` finds the current window unspent, in
    /// which case this acquisition claims it (the run starts with the lease, in one
    /// write, so no crash can leave a run unrecorded).
    pub fn with_last_run(
        mut self,
        previous: Option<&LastRun>,
        once_per: Option<&OncePer>,
    ) -> LockRecord {
        let now = SystemTime::now();
        self.last_run = match once_per {
            Some(o) if !previous.is_some_and(|r| o.spent_by(r, now)) => {
                Some(o.claim(self.term, &self.holder, now))
            }
            _ => previous.cloned(),
        };
        self
    }

    /// Whether the record's last run is the one this lease claimed.
    pub fn runs_under_this_lease(&self) -> bool {
        self.last_run.as_ref().is_some_and(|r| r.term == self.term)
    }

    /// The record with its lease's run marked finished with `exit_status` at
    /// `finished_at`; unchanged if the last run is not this lease's.
    pub fn with_run_end(mut self, end: Option<&RunEnd>) -> LockRecord {
        let ours = self.runs_under_this_lease();
        if let (Some(end), Some(run), true) = (end, self.last_run.as_mut(), ours) {
            run.finished_at = Some(end.finished_at.clone());
            run.exit_status = Some(end.exit_status);
        }
        self
    }

    /// The next write within the same lease: seq + 1, fresh `renewed_at`.
    pub fn renewed(&self) -> LockRecord {
        LockRecord {
            seq: self.seq.saturating_add(1),
            renewed_at: wall_clock_now(),
            ..self.clone()
        }
    }

    /// The release write: keeps the term so the next leader takes term + 1.
    pub fn released(&self) -> LockRecord {
        LockRecord {
            released: true,
            ..self.renewed()
        }
    }

    /// The holder's lease, `lease_ms`: what followers wait out.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// The record as the JSON bytes written to the store.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and validates a lock object: refuses one larger than [`MAX_RECORD_BYTES`],
    /// of another format version, or breaking a rule of the format. Unknown fields are
    /// ignored.
    pub fn decode(bytes: &[u8]) -> Result<LockRecord, RecordError> {
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge {
                size: bytes.len() as u64,
            });
        }
        #[derive(Deserialize)]
        struct Version {
            v: Option<serde_json::Value>,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
        match version.v {
            None => return Err(RecordError::Invalid("no format version field \"v\"")),
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(FORMAT_VERSION)) => {
            }
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(found) => return Err(RecordError::UnsupportedVersion { found }),
                None => {
                    return Err(RecordError::Invalid(
                        "format version \"v\" is not a whole number",
                    ));
                }
            },
            Some(_) => return Err(RecordError::Invalid("format version \"v\" is not a number")),
        }
        let record: LockRecord =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if record.term.0 == 0 {
            return Err(RecordError::Invalid("term is 0; terms start at 1"));
        }
        if record.lease_ms == 0 {
            return Err(RecordError::Invalid("lease_ms is 0"));
        }
        if record.lease_ms > MAX_LEASE_MS {
            return Err(RecordError::LeaseTooLong {
                lease_ms: record.lease_ms,
            });
        }
        if record.lease_id.0.is_empty() {
            return Err(RecordError::Invalid("lease_id is empty"));
        }
        Ok(record)
    }
}

/// Milliseconds, rounded up so a sub-millisecond lease never becomes 0.
pub fn duration_ms(d: Duration) -> u64 {
    let ms = d.as_millis();
    let ms = if Duration::from_millis(ms as u64) < d {
        ms + 1
    } else {
        ms
    };
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn wall_clock_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LockRecord {
        LockRecord::acquired(
            Term(42),
            "web-3 (pid 8123)",
            LeaseId::random(),
            Duration::from_secs(30),
        )
    }

    #[test]
    fn round_trips() {
        let r = sample();
        assert_eq!(LockRecord::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn decodes_the_design_example() {
        let json = br#"{"v":1,"term":42,"holder":"web-3 (pid 8123)","lease_id":"9f1c","seq":17,
 "lease_ms":30000,"acquired_at":"2026-11-25T21:00:00Z","renewed_at":"2026-11-25T21:02:50Z",
 "released":false}"#;
        let r = LockRecord::decode(json).unwrap();
        assert_eq!(r.term.get(), 42);
        assert_eq!(r.seq, 17);
        assert_eq!(r.lease(), Duration::from_secs(30));
    }

    #[test]
    fn every_write_changes_the_bytes() {
        let r = sample();
        let r2 = r.renewed();
        let r3 = r2.released();
        assert_eq!(r2.seq, r.seq + 1);
        assert_eq!(r3.seq, r2.seq + 1);
        assert_ne!(r.encode(), r2.encode());
        assert_ne!(r2.encode(), r3.encode());
        assert!(r3.released);
        assert_eq!(r3.term, r.term, "release keeps the term");
    }

    #[test]
    fn ignores_unknown_fields() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        v["last_run"] = serde_json::json!("2026-11-25T00:00:00Z");
        let r = LockRecord::decode(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(r.term.get(), 42);
    }

    #[test]
    fn refuses_a_newer_format_version() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        v["v"] = serde_json::json!(2);
        let err = LockRecord::decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(err, RecordError::UnsupportedVersion { found: 2 }),
            "{err}"
        );
        assert!(err.to_string().contains("version 2"));
    }

    #[test]
    fn refuses_malformed_and_oversized_objects() {
        assert!(matches!(
            LockRecord::decode(b"not json"),
            Err(RecordError::Malformed(_))
        ));
        assert!(matches!(
            LockRecord::decode(b"{}"),
            Err(RecordError::Invalid(_))
        ));
        assert!(matches!(
            LockRecord::decode(br#"{"v":1,"term":0}"#),
            Err(RecordError::Malformed(_))
        ));
        let big = vec![b' '; MAX_RECORD_BYTES as usize + 1];
        assert!(matches!(
            LockRecord::decode(&big),
            Err(RecordError::TooLarge { .. })
        ));
    }

    #[test]
    fn refuses_term_zero() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        v["term"] = serde_json::json!(0);
        assert!(matches!(
            LockRecord::decode(&serde_json::to_vec(&v).unwrap()),
            Err(RecordError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_a_lease_of_zero_or_above_one_day() {
        let with_lease = |ms: u64| {
            let mut v: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
            v["lease_ms"] = serde_json::json!(ms);
            LockRecord::decode(&serde_json::to_vec(&v).unwrap())
        };
        assert_eq!(with_lease(MAX_LEASE_MS).unwrap().lease(), MAX_LEASE);
        let err = with_lease(MAX_LEASE_MS + 1).unwrap_err();
        assert!(
            matches!(err, RecordError::LeaseTooLong { lease_ms } if lease_ms == MAX_LEASE_MS + 1),
            "{err}"
        );
        assert!(err.to_string().contains("one day"), "{err}");
        assert!(matches!(
            with_lease(u64::MAX),
            Err(RecordError::LeaseTooLong { .. })
        ));
        assert!(matches!(with_lease(0), Err(RecordError::Invalid(_))));
    }

    fn once_per(every: u64, offset: u64) -> OncePer {
        OncePer {
            every: Duration::from_secs(every),
            offset: Duration::from_secs(offset),
            retry_failed: false,
            unused_claim: None,
        }
    }

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn windows_are_utc_multiples_shifted_by_the_offset() {
        let day = once_per(86_400, 14 * 3600);
        let start = |t| {
            let s = day.window_start(at(t));
            humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + Duration::from_secs(s as u64),
            )
            .to_string()
        };
        assert_eq!(start("2026-12-02T02:00:00Z"), "2026-12-01T14:00:00Z");
        assert_eq!(start("2026-12-02T13:59:59Z"), "2026-12-01T14:00:00Z");
        assert_eq!(start("2026-12-02T14:00:00Z"), "2026-12-02T14:00:00Z");
        let hour = once_per(3600, 0);
        assert_eq!(
            hour.window_start(at("2026-12-02T02:59:59Z")),
            hour.window_start(at("2026-12-02T02:00:00Z"))
        );
        // An offset of a whole window or more wraps around.
        assert_eq!(
            once_per(3600, 3600 + 60).window_start(at("2026-12-02T02:30:00Z")),
            once_per(3600, 60).window_start(at("2026-12-02T02:30:00Z"))
        );
    }

    #[test]
    fn a_claim_is_made_unless_the_window_is_spent_and_carried_otherwise() {
        let o = once_per(3600, 0);
        let fresh = |term| {
            LockRecord::acquired(Term(term), "h", LeaseId::random(), Duration::from_secs(30))
        };
        let first = fresh(1).with_last_run(None, Some(&o));
        let run = first.last_run.clone().unwrap();
        assert!(first.runs_under_this_lease());
        assert_eq!((run.term, run.window_s), (Term(1), 3600));
        assert!(o.spent_by(&run, SystemTime::now()));
        let second = fresh(2).with_last_run(Some(&run), Some(&o));
        assert_eq!(
            second.last_run.as_ref(),
            Some(&run),
            "carried, not reclaimed"
        );
        assert!(!second.runs_under_this_lease());
        let plain = fresh(3).with_last_run(Some(&run), None);
        assert_eq!(
            plain.last_run.as_ref(),
            Some(&run),
            "carried without --once-per"
        );
        // An hour later, the next window.
        assert!(!o.spent_by(&run, SystemTime::now() + Duration::from_secs(3600)));
    }

    #[test]
    fn failed_unfinished_and_unused_runs() {
        let o = once_per(3600, 0);
        let now = SystemTime::now();
        let rec = LockRecord::acquired(Term(5), "h", LeaseId::random(), Duration::from_secs(30))
            .with_last_run(None, Some(&o));
        let running = rec.last_run.clone().unwrap();
        assert!(
            o.spent_by(&running, now),
            "a run in progress spends the window"
        );
        let failed = rec
            .clone()
            .with_run_end(Some(&RunEnd::now(3)))
            .last_run
            .unwrap();
        assert_eq!(failed.exit_status, Some(3));
        assert!(failed.finished_at.is_some());
        assert!(o.spent_by(&failed, now));
        let retry = OncePer {
            retry_failed: true,
            ..o
        };
        assert!(!retry.spent_by(&failed, now));
        let ok = rec.with_run_end(Some(&RunEnd::now(0))).last_run.unwrap();
        assert!(retry.spent_by(&ok, now));
        let unused = OncePer {
            unused_claim: Some(Term(5)),
            ..o
        };
        assert!(!unused.spent_by(&running, now));
        assert!(unused.spent_by(&ok, now), "a finished run was used");
    }

    #[test]
    fn records_without_a_run_are_unchanged_and_runs_round_trip() {
        let r = sample();
        assert!(!String::from_utf8(r.encode()).unwrap().contains("last_run"));
        let with = r.with_last_run(None, Some(&once_per(60, 0)));
        assert_eq!(LockRecord::decode(&with.encode()).unwrap(), with);
        // Someone else's run is not ours to finish.
        let other = LockRecord {
            term: Term(43),
            ..with.clone()
        };
        assert_eq!(
            other.clone().with_run_end(Some(&RunEnd::now(0))),
            other,
            "a run of another term is left alone"
        );
    }

    #[test]
    fn lease_ids_are_random() {
        assert_ne!(LeaseId::random(), LeaseId::random());
        assert_eq!(LeaseId::random().as_str().len(), 32);
    }

    #[test]
    fn terms_only_go_up() {
        assert_eq!(Term::FIRST.next(), Some(Term(2)));
        assert_eq!(Term(u64::MAX - 1).next(), Some(Term::LAST));
        assert_eq!(Term::LAST.next(), None, "the last term is never repeated");
    }
}
