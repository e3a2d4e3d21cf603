//! Where lock objects live. [`LockStore`] is the one interface the election uses: read
//! (optionally conditional on an ETag), create-if-absent and replace-if-match. There is
//! no unconditional write and no delete of a lock object anywhere (DESIGN §3).
//!
//! Each store maps its own answers onto [`StoreError`], whose variants tell apart what
//! the protocol must tell apart: a condition that failed (someone else wrote), a write
//! that certainly had no effect, a write that may or may not have landed (ambiguous),
//! and failures no retry will fix (fatal).
//!
//! `s3.rs` speaks to S3 and compatible stores, `file.rs` keeps a lock in one local file
//! (one host), `memory.rs` serves tests and the simulation.

pub mod file;
pub mod memory;
pub mod s3;

use std::fmt;
use std::future::Future;

pub use crate::record::MAX_RECORD_BYTES;

/// An entity tag as the store returned it. Equality ignores quoting and a weak `W/`
/// prefix, because providers and clients differ in both; the raw form is what is sent
/// back in `If-Match` (some stores accept only the form they returned).
#[derive(Clone, Debug, Eq)]
pub struct Etag {
    raw: String,
}

impl Etag {
    pub fn new(raw: impl Into<String>) -> Etag {
        Etag { raw: raw.into() }
    }

    /// Exactly as the store returned it.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Without `W/` and surrounding quotes: the form used for comparison.
    pub fn normalized(&self) -> &str {
        let s = self.raw.trim();
        let s = s.strip_prefix("W/").unwrap_or(s);
        s.strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(s)
    }

    /// With surrounding quotes, as HTTP defines an entity tag.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.normalized())
    }
}

impl PartialEq for Etag {
    fn eq(&self, other: &Etag) -> bool {
        self.normalized() == other.normalized()
    }
}

impl std::hash::Hash for Etag {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.normalized().hash(state)
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.normalized())
    }
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadReply {
    Found { etag: Etag, body: Vec<u8> },
    /// A conditional read whose ETag is still current (HTTP 304).
    NotModified,
    Missing,
}

/// Failures no retry will fix: the run stops with a clear message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatalKind {
    /// Access denied, unknown key, bad signature, unreadable file.
    Permission,
    /// The bucket (or the file's directory) does not exist.
    NoSuchBucket,
    /// The object is larger than a lock record can be.
    TooLarge,
    /// The store does not implement what the protocol needs (HTTP 501, …).
    Unsupported,
    /// Anything else that a retry will not fix: bad endpoint URL, bad config, I/O error.
    Other,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The write's condition failed (HTTP 412): another write happened first.
    #[error("precondition failed (the lock object changed)")]
    PreconditionFailed,
    /// `If-Match` on an object that does not exist (HTTP 404).
    #[error("the lock object does not exist")]
    Missing,
    /// A concurrent conditional write conflicted (HTTP 409): nothing was written.
    #[error("conflicting concurrent write")]
    Conflict,
    /// The request certainly had no effect (refused before it was sent, throttled).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request was sent and no definite answer came (timeout, 5xx, broken
    /// connection): a write may have taken effect.
    #[error("no definite answer: {0}")]
    Ambiguous(String),
    #[error("{1}")]
    Fatal(FatalKind, String),
}

impl StoreError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, StoreError::Fatal(..))
    }
}

/// One lock object in one store.
///
/// Futures are `Send` so the lease can be renewed from a spawned task.
pub trait LockStore: Send + Sync + 'static {
    /// Reads the object. With `known`, answers [`ReadReply::NotModified`] while the
    /// object's ETag is still `known` (a conditional GET, cheap on S3).
    fn read(&self, known: Option<&Etag>) -> impl Future<Output = Result<ReadReply, StoreError>> + Send;

    /// Writes `body` only if the object does not exist (`If-None-Match: *`).
    fn create(&self, body: Vec<u8>) -> impl Future<Output = Result<Etag, StoreError>> + Send;

    /// Writes `body` only if the object's current ETag is `etag` (`If-Match`).
    fn replace(&self, etag: &Etag, body: Vec<u8>) -> impl Future<Output = Result<Etag, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_with_quotes_normalised() {
        assert_eq!(Etag::new("\"abc\""), Etag::new("abc"));
        assert_eq!(Etag::new("W/\"abc\""), Etag::new("abc"));
        assert_ne!(Etag::new("\"abc\""), Etag::new("\"abd\""));
        assert_eq!(Etag::new("abc").quoted(), "\"abc\"");
        assert_eq!(Etag::new("\"abc\"").raw(), "\"abc\"");
    }
}
