//! What a store's requests cost: every request a store makes, counted by kind and
//! outcome, so that `s3lead run -v` and `--stats` can say what a leader or a follower
//! spent, in the units a bill or a request log counts (a GET answered 304 is still a
//! GET request on S3's bill, but a cheap one).
//!
//! The stores count where they know the outcome: the S3 store where it sees the HTTP
//! status (every request, the `If-Match` re-read of a 412 and `HEAD` included), the file
//! store per read and write of its file. Counters are shared by the clones of a store.

use super::{Etag, ReadReply, StoreError};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One kind and outcome of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A read (GET or HEAD) answered with the object.
    Get,
    /// A conditional read answered "not modified" (304).
    NotModified,
    /// A read that found no object (404).
    Missing,
    /// A write (PUT) that landed.
    Put,
    /// A conditional write refused (412, or 404 on `If-Match`).
    PreconditionFailed,
    /// A conditional write that conflicted with another (409).
    Conflict,
    /// A server error (5xx) or throttling.
    ServerError,
    /// No answer within the request timeout.
    Timeout,
    /// Any other failure (refused connection, permission, parse error …).
    Other,
}

impl Outcome {
    const ALL: [Outcome; 9] = [
        Outcome::Get,
        Outcome::NotModified,
        Outcome::Missing,
        Outcome::Put,
        Outcome::PreconditionFailed,
        Outcome::Conflict,
        Outcome::ServerError,
        Outcome::Timeout,
        Outcome::Other,
    ];

    /// The field name in `--stats` lines.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Get => "get",
            Outcome::NotModified => "not_modified",
            Outcome::Missing => "missing",
            Outcome::Put => "put",
            Outcome::PreconditionFailed => "precondition_failed",
            Outcome::Conflict => "conflict",
            Outcome::ServerError => "server_error",
            Outcome::Timeout => "timeout",
            Outcome::Other => "other",
        }
    }

    /// The outcome of a read as the protocol sees it, for stores without HTTP statuses.
    pub fn of_read(r: &Result<ReadReply, StoreError>) -> Outcome {
        match r {
            Ok(ReadReply::Found { .. }) => Outcome::Get,
            Ok(ReadReply::NotModified) => Outcome::NotModified,
            Ok(ReadReply::Missing) => Outcome::Missing,
            Err(e) => Outcome::of_error(e),
        }
    }

    /// The outcome of a write as the protocol sees it, for stores without HTTP statuses.
    pub fn of_write(r: &Result<Etag, StoreError>) -> Outcome {
        match r {
            Ok(_) => Outcome::Put,
            Err(e) => Outcome::of_error(e),
        }
    }

    fn of_error(e: &StoreError) -> Outcome {
        match e {
            StoreError::PreconditionFailed | StoreError::Missing => Outcome::PreconditionFailed,
            StoreError::Conflict => Outcome::Conflict,
            StoreError::Ambiguous(m) | StoreError::Unavailable(m) if m.contains("timed out") => {
                Outcome::Timeout
            }
            _ => Outcome::Other,
        }
    }
}

/// Request counts by [`Outcome`], shared by the clones of a store.
#[derive(Clone, Debug, Default)]
pub struct RequestCounters {
    counts: Arc<[AtomicU64; 9]>,
}

impl RequestCounters {
    /// Counts one request.
    pub fn count(&self, outcome: Outcome) {
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests ended with `outcome`.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counts[outcome as usize].load(Ordering::Relaxed)
    }

    /// Every outcome with its count, in a fixed order.
    pub fn snapshot(&self) -> Vec<(Outcome, u64)> {
        Outcome::ALL.iter().map(|&o| (o, self.get(o))).collect()
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        Outcome::ALL.iter().map(|&o| self.get(o)).sum()
    }
}

/// `12 GET, 40 304, 0 404, 5 PUT, 0 412, 0 409, 0 5xx, 0 timeouts, 0 other`.
impl fmt::Display for RequestCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = |o: Outcome| match o {
            Outcome::Get => "GET",
            Outcome::NotModified => "304",
            Outcome::Missing => "404",
            Outcome::Put => "PUT",
            Outcome::PreconditionFailed => "412",
            Outcome::Conflict => "409",
            Outcome::ServerError => "5xx",
            Outcome::Timeout => "timeouts",
            Outcome::Other => "other",
        };
        let parts: Vec<String> = self
            .snapshot()
            .into_iter()
            .map(|(o, n)| format!("{n} {}", label(o)))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_shared_by_clones_and_shown_in_order() {
        let c = RequestCounters::default();
        let d = c.clone();
        d.count(Outcome::Get);
        d.count(Outcome::NotModified);
        d.count(Outcome::NotModified);
        c.count(Outcome::PreconditionFailed);
        assert_eq!(c.get(Outcome::NotModified), 2);
        assert_eq!(c.total(), 4);
        assert_eq!(
            c.to_string(),
            "1 GET, 2 304, 0 404, 0 PUT, 1 412, 0 409, 0 5xx, 0 timeouts, 0 other"
        );
    }

    #[test]
    fn protocol_answers_map_to_outcomes() {
        assert_eq!(Outcome::of_read(&Ok(ReadReply::Missing)), Outcome::Missing);
        assert_eq!(
            Outcome::of_write(&Err(StoreError::Missing)),
            Outcome::PreconditionFailed
        );
        assert_eq!(
            Outcome::of_write(&Err(StoreError::Ambiguous("write timed out".into()))),
            Outcome::Timeout
        );
    }
}
