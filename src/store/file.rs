//! The embedded single-host store (`file:///abs/path`, or a plain path): one lock object
//! kept in one local file, for a lock whose candidates all run on one host (cron jobs on
//! one machine, tests, trying s3lead out without a bucket). The file's content is the
//! record's bytes, so `cat` shows the lease.
//!
//! **Atomic check-and-write.** Every write takes an exclusive `flock(2)` on a sidecar
//! file `<path>.flock` (not on the data file: that one is replaced by a rename, and a
//! lock on a replaced inode excludes nobody), reads the current content, compares it with
//! the condition (`If-None-Match: *` or `If-Match: <etag>`), writes the new bytes to a
//! uniquely named temporary file in the same directory, fsyncs it, renames it over
//! `path`, fsyncs the directory and only then releases the lock. Two writers, in any
//! processes, therefore never both pass the same condition.
//!
//! **Crash safety.** The data file is never written in place. A crash before the rename
//! leaves the old record (and a stray temporary file, which nothing reads); after the
//! rename, the new one. Because the temporary file is fsynced before the rename and the
//! directory after it, even a power loss leaves the old or the new record, never a torn
//! one. A write that fails removes its own temporary file. Temporary files are only
//! created while holding the exclusive lock, so any found later belong to a writer that
//! crashed; they are harmless and may be deleted by hand.
//!
//! **ETags** are derived from the content, as S3's are from the body: the hex of the
//! first 16 bytes of the SHA-256 of the bytes, quoted (`"…"`). They change whenever the
//! bytes change, and s3lead changes the bytes on every write (`seq`, docs/design.md §2).
//!
//! **Reads take no lock**: they rely on the rename's atomicity. `open(2)` resolves the
//! path to exactly one inode, the old one or the new one, and an inode is never written
//! after it has been renamed into place, so one read sees one whole record. Not locking
//! also means a reader (`s3lead status`) needs no write access to the directory (the
//! sidecar may not exist yet) and never waits behind a writer, even one that was
//! stopped (`kill -STOP`) while holding the lock.
//!
//! **Blocking I/O** runs in `tokio::task::spawn_blocking`, so a slow disk or a held lock
//! never stalls the async runtime (the binary uses a current-thread runtime). A writer
//! waits for the lock by polling a non-blocking `flock`, so when the caller gives up
//! (drops the future, e.g. on its request timeout) the pending write gives up too
//! instead of landing later, and no thread stays parked on a lock held by a stopped
//! process.
//!
//! **Waking followers.** A follower need not wait for its next poll to learn that the
//! lock changed: [`LockStore::changed`] watches the file's directory with inotify (the
//! data file is replaced by a rename, so a watch on the file itself would follow the
//! old inode) and resolves on any event that names the file. A release is then taken
//! over within milliseconds, as with `flock`. The watch is a hint: if it cannot be set
//! up (the inotify limits), the follower polls as on S3.
//!
//! **Scratch files.** `s3lead check` probes the store on files next to the lock
//! (`<path>.s3lead-check-<random>`) and removes them, with their sidecars, through
//! [`FileStore::delete_scratch`], which refuses any other path.
//!
//! **Limit: one host.** `flock` excludes processes of one kernel. On a network file
//! system (NFS, SMB, some FUSE file systems) `flock` may be emulated, local-only or
//! silently ineffective, and rename and fsync semantics differ, so this store does not
//! trust them: use it only on a local file system, and use S3 for candidates on several
//! hosts.

use super::content_etag as etag_of;
use super::counters::{Outcome, RequestCounters};
use super::{Etag, FatalKind, LockStore, MAX_RECORD_BYTES, ReadReply, StoreError, is_scratch_name};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// The suffix of the sidecar file that writers lock.
const SIDECAR_SUFFIX: &str = ".flock";

/// Polling of a held lock: starts short (a write holds it for about two fsyncs), backs
/// off to this ceiling.
const LOCK_POLL_MIN: Duration = Duration::from_micros(50);
const LOCK_POLL_MAX: Duration = Duration::from_millis(5);

/// Numbers this process's temporary files (with its pid, their names are unique).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A lock object in a local file.
#[derive(Clone, Debug)]
pub struct FileStore {
    inner: Arc<Paths>,
    counters: RequestCounters,
    /// The inotify watch on the directory, set up by the first [`LockStore::changed`];
    /// `None` inside if it could not be.
    watch: Arc<OnceLock<Option<AsyncFd<Watch>>>>,
}

#[derive(Debug)]
struct Paths {
    /// Absolute path of the data file.
    path: PathBuf,
    /// Its directory.
    dir: PathBuf,
    /// `<path>.flock`.
    sidecar: PathBuf,
    /// `<file name>.tmp.`: temporary files are this plus `<pid>.<n>`.
    tmp_prefix: OsString,
}

/// The condition of a write.
enum Expect {
    Absent,
    Etag(Etag),
}

impl FileStore {
    /// The store for the lock at `path` (made absolute against the current directory).
    /// No I/O beyond resolving the path: a missing directory is reported by the first
    /// request.
    pub fn open(path: &Path) -> Result<FileStore, StoreError> {
        let bad = |why: &str| {
            StoreError::Fatal(
                FatalKind::Other,
                format!("not a usable lock file path ({why})"),
            )
        };
        if path.as_os_str().is_empty() {
            return Err(bad("empty path"));
        }
        let path = std::path::absolute(path).map_err(|e| bad(&e.to_string()))?;
        let (Some(name), Some(dir)) = (path.file_name(), path.parent()) else {
            return Err(bad("it names no file"));
        };
        if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
            return Err(bad("it names a directory"));
        }
        if name.as_encoded_bytes().ends_with(SIDECAR_SUFFIX.as_bytes()) {
            return Err(bad(
                "names ending in .flock are reserved for lock sidecar files",
            ));
        }
        let mut sidecar = path.clone().into_os_string();
        sidecar.push(SIDECAR_SUFFIX);
        let mut tmp_prefix = name.to_os_string();
        tmp_prefix.push(".tmp.");
        Ok(FileStore {
            inner: Arc::new(Paths {
                dir: dir.to_path_buf(),
                sidecar: PathBuf::from(sidecar),
                tmp_prefix,
                path,
            }),
            counters: RequestCounters::default(),
            watch: Arc::default(),
        })
    }

    /// The store for a `file://` URL: `file:///abs/path` or `file://localhost/abs/path`,
    /// with `%XX` escapes decoded. Other hosts are refused: this store is local.
    pub fn from_url(url: &str) -> Result<FileStore, StoreError> {
        let bad = |why: &str| {
            StoreError::Fatal(
                FatalKind::Other,
                format!("not a usable file:// lock URL ({why})"),
            )
        };
        let rest = url
            .strip_prefix("file://")
            .ok_or_else(|| bad("it does not start with file://"))?;
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        if !rest.starts_with('/') {
            return Err(bad(
                "expected file:///absolute/path; the file store is local to one host",
            ));
        }
        let decoded = percent_decode(rest).ok_or_else(|| bad("bad %-escape"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("escapes are not UTF-8"))?;
        FileStore::open(Path::new(&decoded))
    }

    /// The absolute path of the data file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Removes the file and its sidecar, for the scratch files of `s3lead check` only:
    /// any other path is refused before touching anything. Files already gone are fine.
    pub async fn delete_scratch(&self) -> Result<(), StoreError> {
        if !is_scratch_name(&self.inner.path.to_string_lossy()) {
            return Err(StoreError::Fatal(
                FatalKind::Other,
                "refusing to delete a file that is not a scratch file of s3lead check".into(),
            ));
        }
        self.blocking(|p, _| p.remove_scratch(), StoreError::Unavailable)
            .await
    }

    /// Runs `op` on the blocking pool. `abandoned` is set when the caller stops waiting
    /// (the future is dropped), so a write still waiting for the lock gives up.
    async fn blocking<T, F>(&self, op: F, lost: fn(String) -> StoreError) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Paths, &AtomicBool) -> Result<T, StoreError> + Send + 'static,
    {
        struct AbandonOnDrop(Arc<AtomicBool>);
        impl Drop for AbandonOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let inner = Arc::clone(&self.inner);
        let abandoned = Arc::new(AtomicBool::new(false));
        let _guard = AbandonOnDrop(Arc::clone(&abandoned));
        match tokio::task::spawn_blocking(move || op(&inner, &abandoned)).await {
            Ok(result) => result,
            Err(e) => Err(lost(format!("file store task failed: {e}"))),
        }
    }
}

impl LockStore for FileStore {
    async fn read(&self, known: Option<&Etag>) -> Result<ReadReply, StoreError> {
        let known = known.cloned();
        let r = self
            .blocking(move |p, _| p.read(known.as_ref()), StoreError::Unavailable)
            .await;
        self.counters.count(Outcome::of_read(&r));
        r
    }

    async fn create(&self, body: Vec<u8>) -> Result<Etag, StoreError> {
        // A task that failed after starting a write may have landed it.
        let r = self
            .blocking(
                move |p, abandoned| p.write(Expect::Absent, &body, abandoned),
                StoreError::Ambiguous,
            )
            .await;
        self.counters.count(Outcome::of_write(&r));
        r
    }

    async fn replace(&self, etag: &Etag, body: Vec<u8>) -> Result<Etag, StoreError> {
        let etag = etag.clone();
        let r = self
            .blocking(
                move |p, abandoned| p.write(Expect::Etag(etag), &body, abandoned),
                StoreError::Ambiguous,
            )
            .await;
        self.counters.count(Outcome::of_write(&r));
        r
    }

    /// Resolves on the first inotify event since the last call that names the lock file
    /// (replaced by a rename, written, created, deleted, moved away), or an overflow of
    /// the event queue. Events queue in the kernel between calls, so a change that
    /// happens while the follower reads is not lost.
    async fn changed(&self) {
        let Some(watch) = self.watch.get_or_init(|| self.start_watch()).as_ref() else {
            return std::future::pending().await;
        };
        let name = self.inner.path.file_name();
        loop {
            let Ok(mut ready) = watch.readable().await else {
                return std::future::pending().await;
            };
            match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from)) {
                Ok(Ok(events)) => {
                    let ours = events.iter().any(|e| {
                        e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) || e.name.as_deref() == name
                    });
                    if ours {
                        return;
                    }
                }
                // Readiness was stale; `try_io` cleared it.
                Err(_would_block) => {}
                Ok(Err(e)) => {
                    tracing::debug!(path = %self.inner.path.display(), "the lock file's watch failed ({e}); polling instead");
                    return std::future::pending().await;
                }
            }
        }
    }

    fn counters(&self) -> Option<&RequestCounters> {
        Some(&self.counters)
    }

    /// Its conditions are checked by this process under `flock` on the sidecar file.
    fn keeps_contract_by_construction(&self) -> bool {
        true
    }
}

/// An inotify instance, as tokio's `AsyncFd` wants it.
#[derive(Debug)]
struct Watch(Inotify);

impl std::os::fd::AsRawFd for Watch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl FileStore {
    /// An inotify watch on the lock file's directory, or `None` (logged) if the kernel
    /// refuses one: the follower then polls.
    fn start_watch(&self) -> Option<AsyncFd<Watch>> {
        let dir = &self.inner.dir;
        let watch = || -> Result<AsyncFd<Watch>, io::Error> {
            let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
            inotify.add_watch(
                dir.as_path(),
                AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_DELETE_SELF
                    | AddWatchFlags::IN_MOVE_SELF,
            )?;
            // SAFETY: `Watch` owns the inotify descriptor and hands out that one
            // descriptor for as long as it lives, which is as long as the `AsyncFd`.
            unsafe {
                AsyncFd::register_with_interest(Watch(inotify), tokio::io::Interest::READABLE)
            }
            .map_err(io::Error::from)
        };
        match watch() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::debug!(dir = %dir.display(), "cannot watch the lock file's directory ({e}); polling instead");
                None
            }
        }
    }
}

impl Paths {
    /// No lock: the data file is only ever replaced whole by a rename, so whichever
    /// inode `open` finds is a complete record (see the module doc).
    fn read(&self, known: Option<&Etag>) -> Result<ReadReply, StoreError> {
        let Some((file, meta)) = self.open_current()? else {
            return Ok(ReadReply::Missing);
        };
        let body = self.read_body(file, &meta)?;
        let etag = etag_of(&body);
        if known == Some(&etag) {
            Ok(ReadReply::NotModified)
        } else {
            Ok(ReadReply::Found { etag, body })
        }
    }

    fn write(
        &self,
        expect: Expect,
        body: &[u8],
        abandoned: &AtomicBool,
    ) -> Result<Etag, StoreError> {
        if body.len() as u64 > MAX_RECORD_BYTES {
            return Err(StoreError::Fatal(
                FatalKind::TooLarge,
                format!(
                    "refusing to write {} bytes, more than the {MAX_RECORD_BYTES}-byte limit of a lock record",
                    body.len()
                ),
            ));
        }
        // Held until the new content is durable; dropping it unlocks.
        let _lock = self.lock_exclusive(abandoned)?;
        let current = self.open_current()?;
        let permissions = match (expect, current) {
            (Expect::Absent, Some(_)) => return Err(StoreError::PreconditionFailed),
            (Expect::Absent, None) => None,
            (Expect::Etag(_), None) => return Err(StoreError::Missing),
            (Expect::Etag(etag), Some((file, meta))) => {
                if etag_of(&self.read_body(file, &meta)?) != etag {
                    return Err(StoreError::PreconditionFailed);
                }
                Some(meta.permissions())
            }
        };
        self.commit(body, permissions, abandoned)?;
        Ok(etag_of(body))
    }

    /// The data file, opened, with its metadata; `None` if it does not exist (and its
    /// directory does).
    fn open_current(&self) -> Result<Option<(File, fs::Metadata)>, StoreError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check_dir(&e)?;
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                self.check_dir(&e)?;
                return Err(self.io_error("cannot open", &e));
            }
            Err(e) => return Err(self.io_error("cannot open", &e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| self.io_error("cannot inspect", &e))?;
        if !meta.is_file() {
            return Err(StoreError::Fatal(
                FatalKind::Other,
                "not a regular file".into(),
            ));
        }
        Ok(Some((file, meta)))
    }

    /// The whole content, refused from the metadata alone if it is larger than a record
    /// can be, and bounded again while reading.
    fn read_body(&self, file: File, meta: &fs::Metadata) -> Result<Vec<u8>, StoreError> {
        if meta.len() > MAX_RECORD_BYTES {
            return Err(self.too_large(meta.len()));
        }
        let mut body = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.io_error("cannot read", &e))?;
        if body.len() as u64 > MAX_RECORD_BYTES {
            // Grew while read: someone writes it in place, behind s3lead's back.
            return Err(self.too_large(body.len() as u64));
        }
        Ok(body)
    }

    fn too_large(&self, size: u64) -> StoreError {
        StoreError::Fatal(
            FatalKind::TooLarge,
            format!(
                "the lock object is {size} bytes, larger than the {MAX_RECORD_BYTES}-byte limit of a lock record"
            ),
        )
    }

    /// Takes the exclusive lock on the sidecar, polling so that an abandoned request
    /// stops waiting.
    fn lock_exclusive(&self, abandoned: &AtomicBool) -> Result<Flock<File>, StoreError> {
        let mut file = self.open_sidecar()?;
        let mut pause = LOCK_POLL_MIN;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => return Ok(locked),
                Err((f, Errno::EINTR)) => file = f,
                Err((f, errno)) if errno == Errno::EWOULDBLOCK => {
                    if abandoned.load(Ordering::Acquire) {
                        return Err(StoreError::Unavailable(format!(
                            "gave up waiting for the lock on {}",
                            self.sidecar.display()
                        )));
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(LOCK_POLL_MAX);
                    file = f;
                }
                Err((_, errno)) => {
                    return Err(StoreError::Fatal(
                        FatalKind::Other,
                        format!(
                            "cannot lock {}: {} (flock is needed: use a local file system)",
                            self.sidecar.display(),
                            errno.desc()
                        ),
                    ));
                }
            }
        }
    }

    fn open_sidecar(&self) -> Result<File, StoreError> {
        let err = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.sidecar)
        {
            Ok(f) => return Ok(f),
            Err(e) => e,
        };
        match err.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                self.check_dir(&err)?;
                Err(self.io_error(&format!("cannot create {}", self.sidecar.display()), &err))
            }
            // Someone else's sidecar, readable but not writable: flock needs no write.
            // If that fails too, the first error is the one that explains.
            io::ErrorKind::PermissionDenied => File::open(&self.sidecar).map_err(|_| {
                self.io_error(&format!("cannot open {}", self.sidecar.display()), &err)
            }),
            _ => Err(self.io_error(&format!("cannot open {}", self.sidecar.display()), &err)),
        }
    }

    /// Writes `body` to a temporary file, makes it durable and renames it over the data
    /// file. Called with the exclusive lock held.
    fn commit(
        &self,
        body: &[u8],
        permissions: Option<Permissions>,
        abandoned: &AtomicBool,
    ) -> Result<(), StoreError> {
        let (tmp_path, mut tmp) = self.create_temp()?;
        let written = (|| {
            tmp.write_all(body)?;
            if let Some(p) = permissions {
                // Keep a mode the operator set on the lock file.
                tmp.set_permissions(p)?;
            }
            tmp.sync_all()
        })();
        drop(tmp);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp_path);
            return Err(self.io_error(&format!("cannot write {}", tmp_path.display()), &e));
        }
        if abandoned.load(Ordering::Acquire) {
            // Nobody waits for the answer: not writing is the better outcome.
            let _ = fs::remove_file(&tmp_path);
            return Err(StoreError::Unavailable(
                "write abandoned by its caller".into(),
            ));
        }
        if let Err(e) = fs::rename(&tmp_path, &self.path) {
            let _ = fs::remove_file(&tmp_path);
            return Err(self.io_error(
                &format!("cannot rename {} into place", tmp_path.display()),
                &e,
            ));
        }
        // The new record is visible; only its durability across a power loss is in
        // doubt if this fails, so the answer is "may have landed", not "failed".
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| {
                StoreError::Ambiguous(format!(
                    "written, but syncing directory {} failed: {e}",
                    self.dir.display()
                ))
            })
    }

    /// A new temporary file next to the data file, with a name no other writer uses.
    fn create_temp(&self) -> Result<(PathBuf, File), StoreError> {
        let pid = std::process::id();
        let mut attempt = 0;
        loop {
            let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut name = self.tmp_prefix.clone();
            name.push(format!("{pid}.{n}"));
            let tmp_path = self.dir.join(name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_path)
            {
                Ok(f) => return Ok((tmp_path, f)),
                // Left by a crashed writer that had our pid: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => {
                    return Err(self.io_error(
                        &format!("cannot create temporary file {}", tmp_path.display()),
                        &e,
                    ));
                }
            }
        }
    }

    /// The data file and the sidecar, unlocked: only for scratch files, which no other
    /// writer uses once the check is done with them.
    fn remove_scratch(&self) -> Result<(), StoreError> {
        for path in [&self.path, &self.sidecar] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(self.io_error(&format!("cannot remove {}", path.display()), &e));
                }
            }
        }
        Ok(())
    }

    /// After a "not found": Ok if the directory exists, else the user-facing error.
    fn check_dir(&self, cause: &io::Error) -> Result<(), StoreError> {
        let missing = || {
            StoreError::Fatal(
                FatalKind::NoSuchBucket,
                format!(
                    "directory {} does not exist (create it)",
                    self.dir.display()
                ),
            )
        };
        match fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StoreError::Fatal(
                FatalKind::NoSuchBucket,
                format!("{} is not a directory", self.dir.display()),
            )),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Err(missing())
            }
            Err(e) => Err(self.io_error(
                &format!(
                    "cannot inspect directory {} after: {cause}",
                    self.dir.display()
                ),
                &e,
            )),
        }
    }

    /// `what` failed with `e`. The lock file is left unnamed, as in every error of this
    /// store: the caller names the lock once, as the user spelt it.
    fn io_error(&self, what: &str, e: &io::Error) -> StoreError {
        match e.kind() {
            io::ErrorKind::PermissionDenied => StoreError::Fatal(
                FatalKind::Permission,
                format!("permission denied ({what}: {e})"),
            ),
            io::ErrorKind::ReadOnlyFilesystem => StoreError::Fatal(
                FatalKind::Permission,
                format!("read-only file system ({what}: {e})"),
            ),
            _ => StoreError::Fatal(FatalKind::Other, format!("{what}: {e}")),
        }
    }
}

/// Decodes `%XX` escapes; `None` on a malformed one.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The directory's entries, sorted.
    fn file_names(dir: &tempfile::TempDir) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn store_in(dir: &tempfile::TempDir) -> FileStore {
        FileStore::open(&dir.path().join("lock")).unwrap()
    }

    fn fatal_kind(r: Result<impl std::fmt::Debug, StoreError>) -> (FatalKind, String) {
        match r {
            Err(StoreError::Fatal(kind, msg)) => (kind, msg),
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn missing_create_read_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        assert_eq!(store.read(None).await, Ok(ReadReply::Missing));
        assert_eq!(
            store.replace(&Etag::new("\"x\""), b"a".to_vec()).await,
            Err(StoreError::Missing)
        );

        let e1 = store.create(b"one".to_vec()).await.unwrap();
        assert_eq!(e1, etag_of(b"one"));
        assert!(e1.raw().starts_with('"') && e1.raw().ends_with('"'));
        assert_eq!(e1.normalized().len(), 32);
        assert_eq!(
            store.read(None).await,
            Ok(ReadReply::Found {
                etag: e1.clone(),
                body: b"one".to_vec()
            })
        );
        assert_eq!(fs::read(store.path()).unwrap(), b"one");
        assert_eq!(
            store.create(b"two".to_vec()).await,
            Err(StoreError::PreconditionFailed)
        );

        let e2 = store.replace(&e1, b"two".to_vec()).await.unwrap();
        assert_ne!(e1, e2);
        // Unquoted ETags are accepted too (comparison normalises quotes).
        let e3 = store
            .replace(&Etag::new(e2.normalized()), b"three".to_vec())
            .await
            .unwrap();
        assert_eq!(
            store.read(None).await,
            Ok(ReadReply::Found {
                etag: e3,
                body: b"three".to_vec()
            })
        );
        // No temporary file is left behind by successful writes.
        assert_eq!(file_names(&dir), ["lock", "lock.flock"]);
    }

    #[tokio::test]
    async fn stale_etag_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        let e1 = store.create(b"one".to_vec()).await.unwrap();
        let _e2 = store.replace(&e1, b"two".to_vec()).await.unwrap();
        assert_eq!(
            store.replace(&e1, b"three".to_vec()).await,
            Err(StoreError::PreconditionFailed)
        );
        assert_eq!(fs::read(store.path()).unwrap(), b"two");
    }

    #[tokio::test]
    async fn oversize_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        let limit = MAX_RECORD_BYTES as usize;

        let (kind, msg) = fatal_kind(store.create(vec![b'x'; limit + 1]).await);
        assert_eq!(kind, FatalKind::TooLarge);
        assert!(msg.contains("refusing to write"), "{msg}");
        assert_eq!(store.read(None).await, Ok(ReadReply::Missing));

        // Exactly the limit is fine.
        let e = store.create(vec![b'x'; limit]).await.unwrap();
        assert!(
            matches!(store.read(None).await, Ok(ReadReply::Found { body, .. }) if body.len() == limit)
        );

        // A larger file written behind s3lead's back is refused, by reads and writes.
        fs::write(store.path(), vec![b'y'; 10 * limit]).unwrap();
        let (kind, msg) = fatal_kind(store.read(None).await);
        assert_eq!(kind, FatalKind::TooLarge);
        // The caller names the lock; the store's words leave it unnamed.
        assert!(!msg.contains(&store.path().display().to_string()), "{msg}");
        assert!(msg.contains(&format!("{} bytes", 10 * limit)), "{msg}");
        let (kind, _) = fatal_kind(store.replace(&e, b"small".to_vec()).await);
        assert_eq!(kind, FatalKind::TooLarge);
    }

    #[tokio::test]
    async fn missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let nodir = dir.path().join("no").join("such");
        let path = nodir.join("lock");
        // Opening does no I/O.
        let store = FileStore::open(&path).unwrap();
        let expected = format!("directory {} does not exist (create it)", nodir.display());
        assert_eq!(
            store.read(None).await,
            Err(StoreError::Fatal(FatalKind::NoSuchBucket, expected.clone()))
        );
        assert_eq!(
            store.create(b"x".to_vec()).await,
            Err(StoreError::Fatal(FatalKind::NoSuchBucket, expected.clone()))
        );
        assert_eq!(
            store.replace(&Etag::new("x"), b"x".to_vec()).await,
            Err(StoreError::Fatal(FatalKind::NoSuchBucket, expected))
        );
        assert!(!nodir.exists());
    }

    #[tokio::test]
    async fn not_modified_while_the_etag_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        let e1 = store.create(b"one".to_vec()).await.unwrap();
        assert_eq!(store.read(Some(&e1)).await, Ok(ReadReply::NotModified));
        assert_eq!(
            store.read(Some(&Etag::new(e1.normalized()))).await,
            Ok(ReadReply::NotModified)
        );
        let e2 = store.replace(&e1, b"two".to_vec()).await.unwrap();
        assert_eq!(
            store.read(Some(&e1)).await,
            Ok(ReadReply::Found {
                etag: e2.clone(),
                body: b"two".to_vec()
            })
        );
        assert_eq!(store.read(Some(&e2)).await, Ok(ReadReply::NotModified));
    }

    #[tokio::test]
    async fn a_crashed_writers_temp_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        let e1 = store
            .create(b"{\"v\":1,\"complete\":true}".to_vec())
            .await
            .unwrap();
        // A writer killed mid-write leaves a torn temporary file, here even one with the
        // name this process would pick next.
        for n in 0..3u64 {
            let stray = dir.path().join(format!(
                "lock.tmp.{}.{}",
                std::process::id(),
                TMP_COUNTER.load(Ordering::Relaxed) + n
            ));
            fs::write(&stray, b"{\"v\":1,\"comp").unwrap();
        }
        fs::write(dir.path().join("lock.tmp.999999.0"), b"{\"v\":1,\"comp").unwrap();
        assert_eq!(
            store.read(None).await,
            Ok(ReadReply::Found {
                etag: e1.clone(),
                body: b"{\"v\":1,\"complete\":true}".to_vec()
            })
        );
        let e2 = store.replace(&e1, b"next".to_vec()).await.unwrap();
        assert_eq!(
            store.read(None).await,
            Ok(ReadReply::Found {
                etag: e2,
                body: b"next".to_vec()
            })
        );
        assert_eq!(
            fs::read(dir.path().join("lock.tmp.999999.0")).unwrap(),
            b"{\"v\":1,\"comp"
        );
    }

    #[tokio::test]
    async fn etag_follows_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = store_in(&dir);
        let e1 = a.create(b"same".to_vec()).await.unwrap();
        // A second handle (as another process would have) agrees on the ETag.
        let b = FileStore::open(a.path()).unwrap();
        assert_eq!(b.read(Some(&e1)).await, Ok(ReadReply::NotModified));
        // Identical bytes share an ETag, as on S3: s3lead never rewrites identical bytes.
        let e2 = b.replace(&e1, b"same".to_vec()).await.unwrap();
        assert_eq!(e1, e2);
        let e3 = b.replace(&e2, b"samf".to_vec()).await.unwrap();
        assert_ne!(e2, e3);
    }

    #[tokio::test]
    async fn a_directory_in_place_of_the_file_is_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        fs::create_dir(store.path()).unwrap();
        let (kind, msg) = fatal_kind(store.read(None).await);
        assert_eq!(kind, FatalKind::Other);
        assert!(msg.contains("not a regular file"), "{msg}");
        let (kind, _) = fatal_kind(store.create(b"x".to_vec()).await);
        assert_eq!(kind, FatalKind::Other);
    }

    #[tokio::test]
    async fn a_held_lock_does_not_block_reads_and_an_abandoned_write_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir);
        let e1 = store.create(b"one".to_vec()).await.unwrap();
        // Another process holding the lock (here: another open file description).
        let held = Flock::lock(
            File::open(&store.inner.sidecar).unwrap(),
            FlockArg::LockExclusive,
        )
        .map_err(|(_, e)| e)
        .unwrap();
        assert_eq!(store.read(Some(&e1)).await, Ok(ReadReply::NotModified));
        let waited = tokio::time::timeout(
            Duration::from_millis(50),
            store.replace(&e1, b"two".to_vec()),
        )
        .await;
        assert!(waited.is_err(), "the write could not have taken the lock");
        drop(held);
        // The abandoned write gave up rather than landing once the lock was free.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.read(Some(&e1)).await, Ok(ReadReply::NotModified));
        store.replace(&e1, b"two".to_vec()).await.unwrap();
    }

    #[tokio::test]
    async fn only_scratch_files_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let lock = store_in(&dir);
        lock.create(b"one".to_vec()).await.unwrap();
        let (kind, _) = fatal_kind(lock.delete_scratch().await);
        assert_eq!(kind, FatalKind::Other);
        assert_eq!(fs::read(lock.path()).unwrap(), b"one");

        let scratch = FileStore::open(&dir.path().join("lock.s3lead-check-0a1b")).unwrap();
        scratch.create(b"two".to_vec()).await.unwrap();
        scratch.delete_scratch().await.unwrap();
        scratch.delete_scratch().await.unwrap();
        assert_eq!(file_names(&dir), ["lock", "lock.flock"]);
    }

    #[test]
    fn paths_and_urls() {
        let s = FileStore::open(Path::new("/var/lib/s3lead/nightly")).unwrap();
        assert_eq!(s.path(), Path::new("/var/lib/s3lead/nightly"));
        assert_eq!(s.inner.sidecar, Path::new("/var/lib/s3lead/nightly.flock"));
        let rel = FileStore::open(Path::new("nightly")).unwrap();
        assert!(rel.path().is_absolute());
        assert!(FileStore::open(Path::new("")).is_err());
        assert!(FileStore::open(Path::new("/")).is_err());
        assert!(FileStore::open(Path::new("/tmp/")).is_err());
        assert!(FileStore::open(Path::new("/tmp/x.flock")).is_err());

        let u = FileStore::from_url("file:///tmp/my%20lock").unwrap();
        assert_eq!(u.path(), Path::new("/tmp/my lock"));
        let u = FileStore::from_url("file://localhost/tmp/l").unwrap();
        assert_eq!(u.path(), Path::new("/tmp/l"));
        assert!(FileStore::from_url("file://otherhost/tmp/l").is_err());
        assert!(FileStore::from_url("file://relative").is_err());
        assert!(FileStore::from_url("file:///tmp/%zz").is_err());
        assert!(FileStore::from_url("s3://b/k").is_err());
    }
}
