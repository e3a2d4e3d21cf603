//! s3lead's exit statuses, in one place so that the man page's EXIT STATUS section, the
//! code and the tests agree. The values follow sysexits(3) where one fits, so that
//! scripts and systemd's `RestartPreventExitStatus=` can tell them apart.
//!
//! | status | meaning |
//! |---|---|
//! | the child's | the command ran and exited; 128+N if signal N killed it |
//! | 126 / 127 | the command could not be run / was not found |
//! | 64 | usage: a bad flag, a bad lock name, an unsafe timing |
//! | 65 | the lock object is not a record this s3lead can read |
//! | 69 | the store is unusable (no such bucket, missing directory, no conditional writes, an endpoint URL that is not valid, a TLS certificate not trusted, an answer that is not S3) |
//! | 70 | internal error; also: the guard process died, so the command was stopped |
//! | 71 | the operating system refused to set up supervision (or to listen on `--peer-listen`) |
//! | 75 | lock busy (`-n`), wait timed out (`-w`), or already ran in this window (`--once-per`); change with `-E` |
//! | 76 | the lease was lost and the command was stopped; change with `--lost-exit-code` |
//! | 77 | permission denied (credentials, bucket policy, file permissions) |
//! | 78 | the store breaks the conditional-write contract (unsafe for s3lead): `s3lead check` found it, or `s3lead run`'s proof at acquisition did, and the command was not started |
//! | 128+N | s3lead itself was stopped by signal N while waiting for the lock |
//!
//! `s3lead status` has two outcomes of its own, and the error statuses above: 0 when the
//! lock appears live, 1 when it is absent, released or stale.

/// A bad flag, a bad lock name or an unsafe timing; nothing was run (EX_USAGE).
pub const USAGE: i32 = 64;
/// The lock object is not a record this s3lead can read (EX_DATAERR).
pub const BAD_RECORD: i32 = 65;
/// The store is unusable, and retrying will not help: no such bucket or directory, no
/// conditional writes, an endpoint URL that is not valid, a TLS certificate the system
/// does not trust, an answer that is not S3 (EX_UNAVAILABLE). A store that does not
/// answer (connection refused, a name that does not resolve, timeouts, 5xx) is retried
/// instead.
pub const UNAVAILABLE: i32 = 69;
/// An internal error, or the guard process died and the command was stopped (EX_SOFTWARE).
pub const INTERNAL: i32 = 70;
/// The operating system refused to set up supervision (EX_OSERR).
pub const OS_ERROR: i32 = 71;
/// The lock is busy (`-n`), the wait timed out (`-w`), or the command already ran in
/// this window (`--once-per`); the default of `-E` (EX_TEMPFAIL).
pub const CONFLICT: i32 = 75;
/// The lease was lost and the command was stopped; the default of `--lost-exit-code`
/// (EX_PROTOCOL).
pub const LOST: i32 = 76;
/// Permission denied: credentials, bucket policy, file permissions (EX_NOPERM).
pub const PERMISSION: i32 = 77;
/// `s3lead status`: the lock appears live, held and renewed within its lease by this
/// host's reading of `renewed_at` (one read cannot prove a holder alive).
pub const STATUS_LIVE: i32 = 0;
/// `s3lead status`: the lock is absent, released, or stale (not renewed within its lease
/// by this host's clock).
pub const STATUS_NOT_LIVE: i32 = 1;
/// The store does not keep the conditional-write contract (EX_CONFIG: the store is
/// misconfigured for s3lead): `s3lead check` found it, or `s3lead run`'s proof at
/// acquisition did (the store accepted a write whose condition did not hold), and the
/// command was not started.
pub const UNSAFE_STORE: i32 = 78;

/// The EXIT STATUS section of the man page, generated from the same table.
pub const EXIT_STATUS_TEXT: &str = "\
The child's exit status, or 128+N if signal N killed it.
126: the command could not be run; 127: it was not found.
64: usage error (bad flag, bad lock name, unsafe timing); nothing was run.
65: the lock object is not a record this s3lead can read.
69: the store is unusable (no such bucket or directory, no conditional writes, an
endpoint URL that is not valid, a TLS certificate not trusted, an answer that is not S3).
A store that does not answer (connection refused, a host name that does not resolve,
timeouts, 5xx) is said once and retried: for ever, or until -w ends the wait (75).
70: internal error, or the guard process died and the command was stopped.
71: the operating system refused to set up supervision (or to listen on --peer-listen).
75: the lock is busy (-n), the wait timed out (-w), or the command already ran
in this window (--once-per); set with -E.
76: the lease was lost and the command was stopped; set with --lost-exit-code.
77: permission denied (credentials, bucket policy, file permissions).
78: the store does not keep the conditional-write contract (unsafe): found by s3lead
check, or by s3lead run's proof at acquisition, and the command was not started.
128+N: s3lead was stopped by signal N while waiting for the lock.
s3lead status: 0 when the lock appears live (held, and renewed within its lease by this
host's reading of renewed_at; one read cannot prove a holder alive); 1 when it is
absent, released or stale; the error statuses above otherwise.";
