//! The proof at acquisition that a store honours the two conditions the protocol rests
//! on (docs/design.md §3 "Proof at acquisition"). `s3lead check` proves the whole
//! contract on scratch keys, but only for an operator who runs it; a store that ignores
//! conditions (GCS's XML API, Garage 2.5, some proxies) answers every conditional PUT
//! with 200, and every candidate that asks is elected. So a candidate that has just won
//! the lock asks two more questions of the store, on the lock object itself, before its
//! command starts:
//!
//! 1. a create (`If-None-Match: *`) of the bytes it has just written must be refused:
//!    the object exists;
//! 2. a replace (`If-Match`) of those bytes with an ETag that is not the object's must be
//!    refused.
//!
//! Both are refused by a store that keeps the contract, so they change nothing there; a
//! store that ignores a condition rewrites the bytes the lock already holds, which no
//! follower can tell from the leader's own write (a new ETag only restarts their wait).
//! No scratch key is made, so none is left behind by a `kill -9`, and no delete
//! permission is needed. The wrong ETag is sent unquoted, the one form every store
//! accepts (Ceph RGW, Hetzner and DigitalOcean accept `If-Match` only unquoted), so that
//! its refusal costs no re-read. A single writer cannot see what only racing writers
//! show (SeaweedFS and RustFS let concurrent creates all win): that stays `check`'s job.
//!
//! The file and memory stores keep the contract by construction
//! ([`LockStore::keeps_contract_by_construction`]): no proof is asked of them.

use super::{Etag, LockStore, StoreError};
use std::fmt;

/// A condition of the conditional-write contract that a single writer can test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `If-None-Match: *`: a create must be refused when the object exists.
    IfNoneMatch,
    /// `If-Match: <etag>`: a replace must be refused when the ETag is not the object's.
    IfMatch,
}

impl Condition {
    /// What a store that honours it does, in a user's words.
    pub fn expected(self) -> &'static str {
        match self {
            Condition::IfNoneMatch => {
                "a create (If-None-Match: *) of the existing lock object must be refused"
            }
            Condition::IfMatch => {
                "a replace with an ETag that is not the lock object's (If-Match) must be refused"
            }
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Condition::IfNoneMatch => "If-None-Match: *",
            Condition::IfMatch => "If-Match",
        })
    }
}

/// How the proof went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    /// Both writes were refused: the store honours both conditions.
    Honoured,
    /// The store accepted a write whose condition did not hold: it ignores `Condition`,
    /// and mutual exclusion is gone on it.
    Ignored(Condition),
    /// A write got no definite answer (a timeout, a 5xx, an error), so nothing is proven
    /// either way; the message says which and why.
    Inconclusive(String),
}

/// An ETag that is not the object's: 32 hex digits, the shape of an MD5 ETag, so that a
/// store that checks the shape still compares it; unquoted (see the module comment).
fn wrong_etag(current: &Etag) -> Etag {
    let zeros = "0".repeat(32);
    if current.normalized() == zeros {
        Etag::new("f".repeat(32))
    } else {
        Etag::new(zeros)
    }
}

/// Asks the two questions of `store`, whose object now holds `body` under `etag` (the
/// write that has just won the lock): stops at the first condition ignored. Costs two
/// PUT requests on a store that keeps the contract, both answered 412.
pub async fn prove_conditions<S: LockStore>(store: &S, etag: &Etag, body: &[u8]) -> Proof {
    let create = store.create(body.to_vec()).await;
    if let Some(proof) = judge(Condition::IfNoneMatch, create) {
        return proof;
    }
    let replace = store.replace(&wrong_etag(etag), body.to_vec()).await;
    judge(Condition::IfMatch, replace).unwrap_or(Proof::Honoured)
}

/// `None` if the write was refused, as the condition wants.
fn judge(condition: Condition, answer: Result<Etag, StoreError>) -> Option<Proof> {
    match answer {
        Ok(_) => Some(Proof::Ignored(condition)),
        // A 412, a 404 to If-Match, and a 409 (the store says nothing was written) are
        // all refusals: what a store that ignores the condition never answers.
        Err(StoreError::PreconditionFailed | StoreError::Missing | StoreError::Conflict) => None,
        Err(e) => Some(Proof::Inconclusive(format!("{condition}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ReadReply;
    use crate::store::memory::MemoryStore;

    /// The memory store with one condition ignored, or answering every write `err`.
    struct Broken {
        inner: MemoryStore,
        ignores: Option<Condition>,
        err: Option<StoreError>,
    }

    impl LockStore for Broken {
        async fn read(&self, known: Option<&Etag>) -> Result<ReadReply, StoreError> {
            self.inner.read(known).await
        }

        async fn create(&self, body: Vec<u8>) -> Result<Etag, StoreError> {
            if let Some(e) = &self.err {
                return Err(e.clone());
            }
            match self.ignores {
                Some(Condition::IfNoneMatch) => Ok(self.inner.overwrite(body)),
                _ => self.inner.create(body).await,
            }
        }

        async fn replace(&self, etag: &Etag, body: Vec<u8>) -> Result<Etag, StoreError> {
            if let Some(e) = &self.err {
                return Err(e.clone());
            }
            match self.ignores {
                Some(Condition::IfMatch) => Ok(self.inner.overwrite(body)),
                _ => self.inner.replace(etag, body).await,
            }
        }
    }

    async fn prove(ignores: Option<Condition>, err: Option<StoreError>) -> (Proof, Vec<u8>) {
        let inner = MemoryStore::new();
        let body = br#"{"v":1}"#.to_vec();
        let etag = inner.create(body.clone()).await.expect("create");
        let store = Broken {
            inner,
            ignores,
            err,
        };
        let proof = prove_conditions(&store, &etag, &body).await;
        let left = store.inner.body().expect("the lock object is still there");
        (proof, left)
    }

    #[tokio::test]
    async fn a_store_that_keeps_the_contract_refuses_both_and_keeps_the_object() {
        let (proof, left) = prove(None, None).await;
        assert_eq!(proof, Proof::Honoured);
        assert_eq!(left, br#"{"v":1}"#);
    }

    #[tokio::test]
    async fn each_ignored_condition_is_named_and_the_object_keeps_its_bytes() {
        for c in [Condition::IfNoneMatch, Condition::IfMatch] {
            let (proof, left) = prove(Some(c), None).await;
            assert_eq!(proof, Proof::Ignored(c));
            assert_eq!(left, br#"{"v":1}"#, "only the bytes already there");
        }
    }

    #[tokio::test]
    async fn a_write_without_a_definite_answer_proves_nothing() {
        let (proof, _) = prove(None, Some(StoreError::Ambiguous("timed out".into()))).await;
        assert_eq!(
            proof,
            Proof::Inconclusive("If-None-Match: *: no definite answer: timed out".into())
        );
        let (proof, _) = prove(None, Some(StoreError::Conflict)).await;
        assert_eq!(proof, Proof::Honoured, "409 is a refusal");
    }

    #[test]
    fn the_wrong_etag_is_never_the_object_s() {
        let zeros = Etag::new(format!("\"{}\"", "0".repeat(32)));
        assert_ne!(wrong_etag(&zeros), zeros);
        let e = Etag::new("\"abc\"");
        assert_ne!(wrong_etag(&e), e);
        assert_eq!(
            wrong_etag(&e).raw(),
            wrong_etag(&e).normalized(),
            "unquoted"
        );
    }
}
