//! Where lock objects live. [`LockStore`] is the one interface the election uses: read
//! (optionally conditional on an ETag), create-if-absent and replace-if-match. There is
//! no unconditional write and no delete of a lock object anywhere (docs/design.md §3).
//!
//! Each store maps its own answers onto [`StoreError`], whose variants tell apart what
//! the protocol and the user must tell apart: a condition that failed (someone else
//! wrote), a conflict, a refusal to serve, a write that may or may not have landed
//! (ambiguous), and failures no retry will fix (fatal). For a conditional write, only
//! the first (412, or 404 on `If-Match`) is a definite refusal to the protocol: after any
//! other answer it re-reads, since what a store or a proxy claims about a write it
//! answered with an error cannot be checked.
//!
//! `s3.rs` speaks to S3 and compatible stores, `file.rs` keeps a lock in one local file
//! (one host), `memory.rs` serves tests and the simulation. `proof.rs` is the proof a
//! candidate asks of a store at acquisition, before its command starts, that the store
//! honours both conditions.
//!
//! The store-contract probe (`contract.rs`, run by `s3lead check` and the contract tests)
//! needs more than the protocol does: objects of its own next to the lock (scratch keys,
//! [`SCRATCH_MARKER`] in their names), and a way to remove them. That delete belongs to
//! [`ScratchStore`], not to [`LockStore`], and it refuses any key that is not a scratch
//! key: the protocol itself can never delete.

pub mod contract;
pub mod counters;
pub mod file;
mod http_client;
pub mod memory;
pub mod proof;
pub mod s3;

use contract::{Quirk, ScratchStore};
pub use counters::RequestCounters;
use std::fmt;
use std::future::Future;

pub use crate::record::MAX_RECORD_BYTES;

/// What names a scratch key of `s3lead check`: `<lock key>.s3lead-check-<random>`. Only
/// keys containing it can be deleted.
pub const SCRATCH_MARKER: &str = ".s3lead-check-";

/// Whether `name` (an object key or a file path) names a scratch key.
pub fn is_scratch_name(name: &str) -> bool {
    name.rsplit('/')
        .next()
        .and_then(|last| last.split_once(SCRATCH_MARKER))
        .is_some_and(|(lock, tag)| !lock.is_empty() && !tag.is_empty())
}

/// An entity tag as the store returned it. Equality ignores quoting and a weak `W/`
/// prefix, because providers and clients differ in both; the raw form is what is sent
/// back in `If-Match` (some stores accept only the form they returned).
#[derive(Clone, Debug, Eq)]
pub struct Etag {
    raw: String,
}

impl Etag {
    /// An ETag exactly as the store returned it, quotes and `W/` included.
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

/// The ETag of a content: hex of the first 16 bytes of its SHA-256, quoted. The file and
/// memory stores derive their ETags from the body, as AWS, MinIO and moto do (an MD5
/// there), so that two writes of the same bytes share an ETag here too, and a protocol
/// that relied on every write getting a fresh ETag would be caught by the tests.
pub(crate) fn content_etag(bytes: &[u8]) -> Etag {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(34);
    s.push('"');
    for b in &digest[..16] {
        s.push_str(&format!("{b:02x}"));
    }
    s.push('"');
    Etag::new(s)
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadReply {
    /// The object exists.
    Found {
        /// Its current ETag.
        etag: Etag,
        /// Its bytes, at most [`MAX_RECORD_BYTES`].
        body: Vec<u8>,
    },
    /// A conditional read whose ETag is still current (HTTP 304).
    NotModified,
    /// There is no object.
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

/// Why a store request failed. For a conditional write, only
/// [`StoreError::PreconditionFailed`] and [`StoreError::Missing`] are a definite refusal:
/// after any other error the write may have landed, and the election re-reads.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The write's condition failed (HTTP 412): another write happened first.
    #[error("precondition failed (the lock object changed)")]
    PreconditionFailed,
    /// `If-Match` on an object that does not exist (HTTP 404).
    #[error("the lock object does not exist")]
    Missing,
    /// A concurrent conditional write conflicted (HTTP 409). The store says nothing was
    /// written; the protocol still re-reads before trusting that.
    #[error("conflicting concurrent write")]
    Conflict,
    /// The store refused to serve the request (throttled, refused before it was sent).
    /// On a write, the protocol still re-reads before trusting that it had no effect.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request was sent and no definite answer came (timeout, 5xx, broken
    /// connection): a write may have taken effect.
    #[error("no definite answer: {0}")]
    Ambiguous(String),
    /// A retry will not help. On a write, the protocol still re-reads once: the error
    /// may have come after the write took effect (an SDK that could not parse the answer).
    #[error("{1}")]
    Fatal(FatalKind, String),
}

impl StoreError {
    /// Whether no retry can help ([`StoreError::Fatal`]).
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
    fn read(
        &self,
        known: Option<&Etag>,
    ) -> impl Future<Output = Result<ReadReply, StoreError>> + Send;

    /// Writes `body` only if the object does not exist (`If-None-Match: *`).
    fn create(&self, body: Vec<u8>) -> impl Future<Output = Result<Etag, StoreError>> + Send;

    /// Writes `body` only if the object's current ETag is `etag` (`If-Match`).
    fn replace(
        &self,
        etag: &Etag,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Etag, StoreError>> + Send;

    /// Resolves when the object may have changed since the last call (or since the
    /// first one, which starts watching), so that a follower reads at once instead of at
    /// its next poll. A hint only: it may resolve without a change, and a change it
    /// misses is found by the next poll. The default, for stores that cannot tell (S3),
    /// never resolves.
    fn changed(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// The requests this store has made so far, by kind and outcome.
    fn counters(&self) -> Option<&RequestCounters> {
        None
    }

    /// Whether the store keeps the conditional-write contract by construction (the file
    /// and memory stores: the conditions are checked in this process, under a lock), so
    /// that no proof is asked of it at acquisition ([`proof`]). The default, for any
    /// store behind a server, is no: its server must show it.
    fn keeps_contract_by_construction(&self) -> bool {
        false
    }
}

/// A shared store is a store: `s3lead run` campaigns again over the same client after
/// releasing a lease it could not use.
impl<S: LockStore> LockStore for std::sync::Arc<S> {
    fn read(
        &self,
        known: Option<&Etag>,
    ) -> impl Future<Output = Result<ReadReply, StoreError>> + Send {
        (**self).read(known)
    }

    fn create(&self, body: Vec<u8>) -> impl Future<Output = Result<Etag, StoreError>> + Send {
        (**self).create(body)
    }

    fn replace(
        &self,
        etag: &Etag,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Etag, StoreError>> + Send {
        (**self).replace(etag, body)
    }

    fn changed(&self) -> impl Future<Output = ()> + Send {
        (**self).changed()
    }

    fn counters(&self) -> Option<&RequestCounters> {
        (**self).counters()
    }

    fn keeps_contract_by_construction(&self) -> bool {
        (**self).keeps_contract_by_construction()
    }
}

/// Where a lock lives, as the user names it: `s3://bucket/key`, `file:///abs/path`, or
/// a plain path (the file store). It keeps the user's spelling ([`LockUrl::as_str`],
/// also its `Display`), which is the one name every message and log line gives the lock:
/// the stores' own errors carry no location, and the caller adds this name once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockUrl {
    spelling: String,
    place: LockPlace,
}

/// Which store a [`LockUrl`] names, and where in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockPlace {
    /// One object in an S3 (or S3-compatible) bucket.
    S3 {
        /// The bucket's name.
        bucket: String,
        /// The object's key in the bucket.
        key: String,
    },
    /// A path or a `file://` URL, as written.
    File(String),
}

impl LockUrl {
    /// Parses the lock argument. The message names the lock and the expected forms.
    pub fn parse(s: &str) -> Result<LockUrl, String> {
        let place = if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
                return Err(format!(
                    "{s}: an S3 lock is s3://BUCKET/KEY, with a key naming one object (e.g. s3://my-bucket/locks/nightly)"
                ));
            }
            LockPlace::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            }
        } else if s.contains("://") && !s.starts_with("file://") {
            return Err(format!(
                "{s}: unknown lock scheme; use s3://BUCKET/KEY, file:///ABS/PATH or a local path"
            ));
        } else if s.is_empty() || s.ends_with('/') {
            return Err(format!(
                "{s:?}: a lock path must name a file, not a directory"
            ));
        } else {
            LockPlace::File(s.to_owned())
        };
        Ok(LockUrl {
            spelling: s.to_owned(),
            place,
        })
    }

    /// The lock as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.spelling
    }

    /// Which store, and where in it.
    pub fn place(&self) -> &LockPlace {
        &self.place
    }

    /// Opens the store. No request is sent: the first request reports what is wrong.
    pub async fn open(&self, s3: &s3::S3Options) -> Result<AnyStore, StoreError> {
        Ok(match &self.place {
            LockPlace::S3 { bucket, key } => {
                AnyStore::S3(s3::S3Store::connect(bucket, key, s3).await?)
            }
            LockPlace::File(p) if p.starts_with("file://") => {
                AnyStore::File(file::FileStore::from_url(p)?)
            }
            LockPlace::File(p) => AnyStore::File(file::FileStore::open(std::path::Path::new(p))?),
        })
    }
}

impl fmt::Display for LockUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spelling)
    }
}

/// The store a lock URL names. Clones share the connection (S3) and what was learned
/// about the store.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// An object in S3 or an S3-compatible store.
    S3(s3::S3Store),
    /// A file on this host.
    File(file::FileStore),
}

impl AnyStore {
    /// Where the object is: `s3://bucket/key`, or the file's absolute path.
    pub fn location(&self) -> String {
        match self {
            AnyStore::S3(s) => format!("s3://{}/{}", s.bucket(), s.key()),
            AnyStore::File(f) => f.path().display().to_string(),
        }
    }
}

/// The scratch keys of `s3lead check`, next to the lock: in the same bucket, or in the
/// same directory.
impl ScratchStore for AnyStore {
    fn location(&self) -> String {
        AnyStore::location(self)
    }

    fn scratch(&self, tag: &str) -> Result<AnyStore, StoreError> {
        Ok(match self {
            AnyStore::S3(s) => {
                AnyStore::S3(s.sibling(&format!("{}{SCRATCH_MARKER}{tag}", s.key())))
            }
            AnyStore::File(f) => {
                let mut path = f.path().as_os_str().to_owned();
                path.push(SCRATCH_MARKER);
                path.push(tag);
                AnyStore::File(file::FileStore::open(std::path::Path::new(&path))?)
            }
        })
    }

    /// Unconditional: LocalStack answers a conditional DeleteObject with 501, and Ceph
    /// RGW ignores the condition.
    async fn delete_scratch(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::S3(s) => s.delete_object_unconditionally().await,
            AnyStore::File(f) => f.delete_scratch().await,
        }
    }

    async fn answers_not_modified(&self, etag: &Etag) -> Result<bool, StoreError> {
        match self {
            AnyStore::S3(s) => s.answers_not_modified(etag).await,
            AnyStore::File(f) => Ok(f.read(Some(etag)).await? == ReadReply::NotModified),
        }
    }

    async fn server_clock(&self) -> Result<Option<contract::ClockSample>, StoreError> {
        match self {
            AnyStore::S3(s) => s.server_clock().await,
            AnyStore::File(_) => Ok(None),
        }
    }

    fn quirks(&self) -> Vec<Quirk> {
        match self {
            AnyStore::S3(s) if s.wants_unquoted_if_match() => vec![Quirk::UnquotedIfMatch],
            AnyStore::S3(_) | AnyStore::File(_) => Vec::new(),
        }
    }
}

impl LockStore for AnyStore {
    async fn read(&self, known: Option<&Etag>) -> Result<ReadReply, StoreError> {
        match self {
            AnyStore::S3(s) => s.read(known).await,
            AnyStore::File(s) => s.read(known).await,
        }
    }

    async fn create(&self, body: Vec<u8>) -> Result<Etag, StoreError> {
        match self {
            AnyStore::S3(s) => s.create(body).await,
            AnyStore::File(s) => s.create(body).await,
        }
    }

    async fn replace(&self, etag: &Etag, body: Vec<u8>) -> Result<Etag, StoreError> {
        match self {
            AnyStore::S3(s) => s.replace(etag, body).await,
            AnyStore::File(s) => s.replace(etag, body).await,
        }
    }

    async fn changed(&self) {
        match self {
            AnyStore::S3(s) => s.changed().await,
            AnyStore::File(s) => s.changed().await,
        }
    }

    fn counters(&self) -> Option<&RequestCounters> {
        match self {
            AnyStore::S3(s) => s.counters(),
            AnyStore::File(s) => s.counters(),
        }
    }

    fn keeps_contract_by_construction(&self) -> bool {
        match self {
            AnyStore::S3(s) => s.keeps_contract_by_construction(),
            AnyStore::File(s) => s.keeps_contract_by_construction(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lock_urls() {
        let place = |s: &str| LockUrl::parse(s).map(|u| u.place().clone());
        assert_eq!(
            place("s3://b/locks/nightly"),
            Ok(LockPlace::S3 {
                bucket: "b".into(),
                key: "locks/nightly".into()
            })
        );
        assert!(LockUrl::parse("s3://b").is_err());
        assert!(LockUrl::parse("s3://b/").is_err());
        assert!(LockUrl::parse("s3:///k").is_err());
        assert!(
            LockUrl::parse("gs://b/k")
                .unwrap_err()
                .contains("unknown lock scheme")
        );
        assert_eq!(
            place("./demo.lock"),
            Ok(LockPlace::File("./demo.lock".into()))
        );
        assert_eq!(
            place("file:///tmp/x.lock"),
            Ok(LockPlace::File("file:///tmp/x.lock".into()))
        );
        assert!(LockUrl::parse("dir/").is_err());
    }

    #[test]
    fn a_lock_url_keeps_the_user_s_spelling() {
        for s in [
            "s3://b/locks/nightly",
            "./demo.lock",
            "file:///tmp/x.lock",
            "x",
        ] {
            let url = LockUrl::parse(s).unwrap();
            assert_eq!((url.as_str(), url.to_string().as_str()), (s, s));
        }
    }

    #[test]
    fn scratch_names() {
        assert!(is_scratch_name("locks/nightly.s3lead-check-0a1b"));
        assert!(is_scratch_name("/var/lib/x.lock.s3lead-check-0a1b"));
        assert!(!is_scratch_name("locks/nightly"));
        assert!(!is_scratch_name("locks/nightly.s3lead-check-"));
        assert!(!is_scratch_name("locks/.s3lead-check-0a1b"));
        assert!(!is_scratch_name("locks.s3lead-check-0a1b/nightly"));
    }

    #[test]
    fn etags_compare_with_quotes_normalised() {
        assert_eq!(Etag::new("\"abc\""), Etag::new("abc"));
        assert_eq!(Etag::new("W/\"abc\""), Etag::new("abc"));
        assert_ne!(Etag::new("\"abc\""), Etag::new("\"abd\""));
        assert_eq!(Etag::new("abc").quoted(), "\"abc\"");
        assert_eq!(Etag::new("\"abc\"").raw(), "\"abc\"");
    }
}
