//! A lock object in memory: the reference store for unit tests and the deterministic
//! simulation. It is exactly atomic (one mutex), so any misbehaviour seen over it is the
//! protocol's, not the store's. Its ETags are derived from the body, as on AWS, MinIO and
//! moto: a write that repeats its bytes gets the same ETag, which a counter would hide.
//! The synchronous methods let the single-threaded simulation apply a request at the
//! simulated instant it reaches the store (the protocol's requests are applied through
//! [`Request::apply_to`](crate::election::Request::apply_to), the one place where the
//! unit tests and the simulation turn a request into this store's answer);
//! [`MemoryStore::overwrite`] and
//! [`MemoryStore::delete`] act behind the protocol's back, as an operator, a broken peer
//! or a lifecycle rule would. It offers scratch keys too, so that the store-contract probe
//! can be run over the reference store.

use super::contract::ScratchStore;
use super::{Etag, FatalKind, LockStore, ReadReply, SCRATCH_MARKER, StoreError, content_etag};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One lock object in memory. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Slot>>,
    /// The scratch objects made next to this one, by name: shared by clones and by the
    /// scratch stores themselves, so that a test can see what is left.
    scratch: Arc<Mutex<BTreeMap<String, Arc<Mutex<Slot>>>>>,
    /// A scratch object's name; `None` for the lock object itself.
    name: Option<String>,
}

#[derive(Debug, Default)]
struct Slot {
    object: Option<(Etag, Vec<u8>)>,
}

impl MemoryStore {
    /// An empty store: the lock object is absent.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding this lock can only come from a test's own assertion.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the object at once: absent, unchanged while its ETag is still `known`, or
    /// its ETag and body.
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

    /// Writes `body` only if no object exists (`If-None-Match: *`); otherwise refuses
    /// with [`StoreError::PreconditionFailed`].
    pub fn create_now(&self, body: Vec<u8>) -> Result<Etag, StoreError> {
        let mut slot = self.slot();
        if slot.object.is_some() {
            return Err(StoreError::PreconditionFailed);
        }
        Ok(slot.put(body))
    }

    /// Writes `body` only if the object's ETag is `etag` (`If-Match`); refuses with
    /// [`StoreError::Missing`] if there is no object and
    /// [`StoreError::PreconditionFailed`] if it has another ETag.
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

    /// Removes the object behind the protocol's back, as an operator or a lifecycle rule
    /// would (s3lead itself never deletes a lock object). Removing an absent object is
    /// not an error.
    pub fn delete(&self) {
        self.slot().object = None;
    }

    /// The current body, if any.
    pub fn body(&self) -> Option<Vec<u8>> {
        self.slot().object.as_ref().map(|(_, b)| b.clone())
    }
}

impl MemoryStore {
    /// The names of the scratch objects that exist now (written, not yet deleted).
    pub fn scratch_keys(&self) -> Vec<String> {
        let scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        scratch
            .iter()
            .filter(|(_, slot)| {
                let slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                slot.object.is_some()
            })
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl ScratchStore for MemoryStore {
    fn location(&self) -> String {
        self.name.clone().unwrap_or_else(|| "memory".to_owned())
    }

    fn scratch(&self, tag: &str) -> Result<MemoryStore, StoreError> {
        let name = format!("{}{SCRATCH_MARKER}{tag}", self.location());
        let slot = Arc::new(Mutex::new(Slot::default()));
        self.scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), slot.clone());
        Ok(MemoryStore {
            inner: slot,
            scratch: self.scratch.clone(),
            name: Some(name),
        })
    }

    async fn delete_scratch(&self) -> Result<(), StoreError> {
        let Some(name) = &self.name else {
            return Err(StoreError::Fatal(
                FatalKind::Other,
                "refusing to delete the lock object: it is not a scratch key of s3lead check"
                    .to_owned(),
            ));
        };
        self.delete();
        self.scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    async fn answers_not_modified(&self, etag: &Etag) -> Result<bool, StoreError> {
        Ok(self.read_now(Some(etag)) == ReadReply::NotModified)
    }
}

impl Slot {
    fn put(&mut self, body: Vec<u8>) -> Etag {
        let etag = content_etag(&body);
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

    /// Its conditions are checked under its own mutex.
    fn keeps_contract_by_construction(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etag_follows_the_bytes_as_on_s3() {
        let s = MemoryStore::new();
        let a = s.create_now(b"one".to_vec()).unwrap();
        let b = s.replace_now(&a, b"two".to_vec()).unwrap();
        assert_ne!(a, b);
        // The same bytes again: the same ETag, so a stale `If-Match` on it succeeds.
        let again = s.replace_now(&b, b"one".to_vec()).unwrap();
        assert_eq!(again, a);
        assert_eq!(s.overwrite(b"two".to_vec()), b);
        assert_eq!(s.replace_now(&b, b"three".to_vec()).map(|_| ()), Ok(()));
    }

    #[test]
    fn delete_removes_the_object() {
        let s = MemoryStore::new();
        let a = s.create_now(b"one".to_vec()).unwrap();
        s.delete();
        assert_eq!(s.read_now(None), ReadReply::Missing);
        assert_eq!(s.read_now(Some(&a)), ReadReply::Missing);
        assert_eq!(s.replace_now(&a, b"two".to_vec()), Err(StoreError::Missing));
        s.delete();
        assert!(s.create_now(b"one".to_vec()).is_ok(), "created anew");
    }

    #[tokio::test]
    async fn scratch_keys_are_listed_until_deleted_and_the_lock_is_never_deleted() {
        let lock = MemoryStore::new();
        let scratch = lock.scratch("0a1b").unwrap();
        assert_eq!(
            lock.scratch_keys(),
            Vec::<String>::new(),
            "nothing written yet"
        );
        scratch.create(b"one".to_vec()).await.unwrap();
        assert_eq!(lock.scratch_keys(), ["memory.s3lead-check-0a1b"]);
        assert_eq!(
            lock.read_now(None),
            ReadReply::Missing,
            "apart from the lock"
        );
        scratch.delete_scratch().await.unwrap();
        scratch.delete_scratch().await.unwrap();
        assert_eq!(lock.scratch_keys(), Vec::<String>::new());
        lock.create(b"lock".to_vec()).await.unwrap();
        assert!(lock.delete_scratch().await.is_err());
        assert_eq!(lock.body(), Some(b"lock".to_vec()));
    }
}
