//! A lock object in memory: the reference store for unit tests and the deterministic
//! simulation. It is exactly atomic (one mutex) and its ETags never repeat, so any
//! misbehaviour seen over it is the protocol's, not the store's. The synchronous
//! methods let the single-threaded simulation apply a request at the simulated instant
//! it reaches the store.

use super::{Etag, LockStore, ReadReply, StoreError};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Slot>>,
}

#[derive(Debug, Default)]
struct Slot {
    object: Option<(Etag, Vec<u8>)>,
    writes: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding this lock can only come from a test's own assertion.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read_now(&self, known: Option<&Etag>) -> ReadReply {
        match &self.slot().object {
            None => ReadReply::Missing,
            Some((etag, _)) if Some(etag) == known => ReadReply::NotModified,
            Some((etag, body)) => ReadReply::Found {
                etag: etag.clone(),
                body: body.clone(),
            },
        }
    }

    pub fn create_now(&self, body: Vec<u8>) -> Result<Etag, StoreError> {
        let mut slot = self.slot();
        if slot.object.is_some() {
            return Err(StoreError::PreconditionFailed);
        }
        Ok(slot.put(body))
    }

    pub fn replace_now(&self, etag: &Etag, body: Vec<u8>) -> Result<Etag, StoreError> {
        let mut slot = self.slot();
        match &slot.object {
            None => Err(StoreError::Missing),
            Some((current, _)) if current != etag => Err(StoreError::PreconditionFailed),
            Some(_) => Ok(slot.put(body)),
        }
    }

    /// Writes behind the protocol's back, as an operator or a broken peer would.
    pub fn overwrite(&self, body: Vec<u8>) -> Etag {
        self.slot().put(body)
    }

    /// The current body, if any.
    pub fn body(&self) -> Option<Vec<u8>> {
        self.slot().object.as_ref().map(|(_, b)| b.clone())
    }
}

impl Slot {
    fn put(&mut self, body: Vec<u8>) -> Etag {
        self.writes += 1;
        let etag = Etag::new(format!("\"m{}\"", self.writes));
        self.object = Some((etag.clone(), body));
        etag
    }
}

impl LockStore for MemoryStore {
    async fn read(&self, known: Option<&Etag>) -> Result<ReadReply, StoreError> {
        Ok(self.read_now(known))
    }

    async fn create(&self, body: Vec<u8>) -> Result<Etag, StoreError> {
        self.create_now(body)
    }

    async fn replace(&self, etag: &Etag, body: Vec<u8>) -> Result<Etag, StoreError> {
        self.replace_now(etag, body)
    }
}
