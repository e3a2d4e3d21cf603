//! Proofs at acquisition remembered between runs, so that a cron job that runs every
//! minute does not pay the store's proof (`s3lead::store::proof`: two PUTs) every minute.
//! A pass is kept per endpoint and bucket, one small file each under the user's cache
//! directory (`$S3LEAD_CACHE_DIR`, else `$XDG_CACHE_HOME/s3lead`, else
//! `$HOME/.cache/s3lead`, then `proofs/`), and trusted for [`PASS_VALID_FOR`].
//!
//! A file on this host rather than a marker object next to the lock: a marker would cost
//! a read at every start (the very request this saves), could be written by anyone who
//! may write the bucket, and would have to be written by `check`, which not every
//! operator runs. Only passes are written, so the cache can never turn a failure into a
//! pass; a file that cannot be read, does not parse, names another store, is too old or
//! dated in the future is no pass, and one that cannot be written costs the next run a
//! proof. None of this is ever an error.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::debug;

/// How long a remembered pass stands: a day, so that a store changed behind its
/// endpoint (a proxy put in front, a bucket moved to another backend) is proven again
/// within a day, while a job that runs every minute pays one proof a day.
pub const PASS_VALID_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Where one store's pass is remembered. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct ProofCache {
    /// The store, as `<endpoint> <bucket>`: what the pass is about.
    store: String,
    /// `None` when no cache directory can be found: every run proves the store.
    file: Option<PathBuf>,
}

/// The file's contents.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pass {
    store: String,
    /// Seconds since the Unix epoch, by this host's wall clock.
    proven_at: u64,
    by: String,
}

impl ProofCache {
    /// The cache of the store at `endpoint` holding `bucket`, in the user's cache
    /// directory.
    pub fn for_store(endpoint: &str, bucket: &str) -> ProofCache {
        ProofCache::in_dir(cache_dir(), endpoint, bucket)
    }

    fn in_dir(dir: Option<PathBuf>, endpoint: &str, bucket: &str) -> ProofCache {
        let store = format!("{endpoint} {bucket}");
        let digest = Sha256::digest(store.as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        ProofCache {
            file: dir.map(|d| d.join("proofs").join(format!("{name}.json"))),
            store,
        }
    }

    /// Whether a pass for this store was remembered less than [`PASS_VALID_FOR`] ago.
    pub fn has_fresh_pass(&self) -> bool {
        let Some(file) = &self.file else {
            return false;
        };
        let Some(pass) = std::fs::read(file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Pass>(&b).ok())
        else {
            return false;
        };
        let age = now_secs().checked_sub(pass.proven_at);
        let fresh = pass.store == self.store && age.is_some_and(|a| a < PASS_VALID_FOR.as_secs());
        debug!(store = %self.store, fresh, file = %file.display(), "remembered proof");
        fresh
    }

    /// Remembers that the store passed now. Written to a temporary file and renamed, so
    /// that a reader never sees half a file; a failure is only a debug line.
    pub fn remember_pass(&self) {
        let Some(file) = &self.file else { return };
        let pass = Pass {
            store: self.store.clone(),
            proven_at: now_secs(),
            by: concat!("s3lead ", env!("CARGO_PKG_VERSION")).into(),
        };
        if let Err(e) = write_atomically(file, &serde_json::to_vec(&pass).unwrap_or_default()) {
            debug!(store = %self.store, file = %file.display(), "cannot remember the proof: {e}");
        }
    }
}

fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `$S3LEAD_CACHE_DIR`, `$XDG_CACHE_HOME/s3lead`, or `$HOME/.cache/s3lead`; only
/// absolute paths count (XDG's rule), and empty values are unset.
fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    var("S3LEAD_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("s3lead")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("s3lead")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_remembered_per_endpoint_and_bucket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let at = |e: &str, b: &str| ProofCache::in_dir(Some(dir.path().into()), e, b);
        let cache = at("http://s3.local:9000", "locks");
        assert!(!cache.has_fresh_pass());
        cache.remember_pass();
        assert!(cache.has_fresh_pass());
        assert!(!at("http://s3.local:9000", "other").has_fresh_pass());
        assert!(!at("http://s3.other:9000", "locks").has_fresh_pass());
    }

    #[test]
    fn an_old_a_future_or_a_broken_file_is_no_pass() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = ProofCache::in_dir(Some(dir.path().into()), "e", "b");
        let file = cache.file.clone().expect("a file");
        let write = |proven_at: u64| {
            let pass = Pass {
                store: "e b".into(),
                proven_at,
                by: "test".into(),
            };
            write_atomically(&file, &serde_json::to_vec(&pass).expect("json")).expect("write");
        };
        write(now_secs() - PASS_VALID_FOR.as_secs() - 1);
        assert!(!cache.has_fresh_pass(), "too old");
        write(now_secs() + 3600);
        assert!(!cache.has_fresh_pass(), "in the future");
        write(now_secs() - 60);
        assert!(cache.has_fresh_pass());
        std::fs::write(&file, b"{not json").expect("write");
        assert!(!cache.has_fresh_pass(), "does not parse");
    }

    #[test]
    fn without_a_directory_nothing_is_remembered() {
        let cache = ProofCache::in_dir(None, "e", "b");
        cache.remember_pass();
        assert!(!cache.has_fresh_pass());
    }
}
