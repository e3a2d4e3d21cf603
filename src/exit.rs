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
//! | 69 | the store is unreachable or unusable (no such bucket, missing directory, store without conditional writes) |
//! | 70 | internal error; also: the guard process died, so the command was stopped |
//! | 71 | the operating system refused to set up supervision |
//! | 75 | lock busy (`-n`), wait timed out (`-w`), or already ran in this window (`--once-per`); change with `-E` |
//! | 76 | the lease was lost and the command was stopped; change with `--lost-exit-code` |
//! | 77 | permission denied (credentials, bucket policy, file permissions) |
//! | 78 | `s3lead check`: the store breaks the conditional-write contract (unsafe for s3lead) |
//! | 128+N | s3lead itself was stopped by signal N while waiting for the lock |

/// A bad flag, a bad lock name or an unsafe timing; nothing was run (EX_USAGE).
pub const USAGE: i32 = 64;
/// The lock object is not a record this s3lead can read (EX_DATAERR).
pub const BAD_RECORD: i32 = 65;
/// The store is unreachable or unusable: no such bucket or directory, no conditional
/// writes (EX_UNAVAILABLE).
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
/// `s3lead check` found that the store does not keep the conditional-write contract
/// (EX_CONFIG: the store is misconfigured for s3lead).
pub const UNSAFE_STORE: i32 = 78;

/// The EXIT STATUS section of the man page, generated from the same table.
pub const EXIT_STATUS_TEXT: &str = "\
The child's exit status, or 128+N if signal N killed it.
126: the command could not be run; 127: it was not found.
64: usage error (bad flag, bad lock name, unsafe timing); nothing was run.
65: the lock object is not a record this s3lead can read.
69: the store is unusable (no such bucket or directory, no conditional writes).
70: internal error, or the guard process died and the command was stopped.
71: the operating system refused to set up supervision.
75: the lock is busy (-n), the wait timed out (-w), or the command already ran
in this window (--once-per); set with -E.
76: the lease was lost and the command was stopped; set with --lost-exit-code.
77: permission denied (credentials, bucket policy, file permissions).
78: s3lead check: the store does not keep the conditional-write contract (unsafe).
128+N: s3lead was stopped by signal N while waiting for the lock.";
