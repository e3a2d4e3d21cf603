//! Helpers for end-to-end tests of the built `s3lead` binary: the one way to build its
//! command line ([`s3lead`], [`Lock::s3lead`], [`Lock::run`]), a lock on either store (a
//! temporary file, or a fresh key on the test S3 server) and the one way to read it
//! behind s3lead's back ([`Lock::stored`]), polling helpers with bounded waits
//! ([`poll_until`], [`wait_for`]), running as `nobody` ([`unprivileged`]), and
//! fault-injecting proxies.
//!
//! Waits are bounded and poll for what a user would look for (a line in a file, a pid
//! gone); nothing asserts how long anything took.

#![allow(dead_code)] // each test binary uses only part of this module

pub mod fake_s3;
pub mod http_fault;
pub mod proxy;

/// Runs the scenario `$name(lock)` on both stores, as tests `$name::on_file` and
/// `$name::on_s3` (the `on_s3` name is what CI's RGW pass selects).
#[allow(unused_macros)] // not every test binary runs scenarios on both stores
macro_rules! on_both_stores {
    ($name:ident) => {
        mod $name {
            #[test]
            fn on_file() {
                super::$name(crate::e2e::Lock::file());
            }

            #[test]
            fn on_s3() {
                super::$name(crate::e2e::Lock::s3(stringify!($name)));
            }
        }
    };
}

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The built binary under test.
pub const S3LEAD: &str = env!("CARGO_BIN_EXE_s3lead");

/// `s3lead` with nothing but stdin set (to /dev/null, so no test waits on a terminal):
/// the base of every s3lead a test runs. A command that talks to a store also needs that
/// store's environment: [`Lock::s3lead`] adds it, [`crate::support::s3_env`] is it.
///
/// Its cache of store proofs (`S3LEAD_CACHE_DIR`) is one directory per test process
/// ([`test_cache_dir`]), never the user's; a test about the cache sets its own.
pub fn s3lead() -> Command {
    let mut c = Command::new(S3LEAD);
    c.stdin(Stdio::null());
    c.env("S3LEAD_CACHE_DIR", test_cache_dir());
    c
}

/// The cache directory [`s3lead`] gives every run of this test process: under the build's
/// temporary directory, so no run reads or writes the user's cache.
pub fn test_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("s3lead-cache")
        .join(std::process::id().to_string())
}

/// Whether the tests run as root, whom file modes do not stop (CI runs as root).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program` run as `nobody` (uid and gid 65534, no groups, by util-linux's `setpriv`)
/// when the tests run as root, else as it is: for tests of what file modes refuse, which
/// root would pass without meeting a refusal.
pub fn unprivileged(program: impl AsRef<OsStr>) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Short timings that keep the promise (`Timing::new` accepts them) and keep tests quick:
/// renew 1 s + retry 500 ms + kill-after 1 s + margin 1 s ≤ lease 4 s.
pub const FAST: &[&str] = &[
    "--lease-duration",
    "4s",
    "--renew-every",
    "1s",
    "--retry-period",
    "500ms",
    "--kill-after",
    "1s",
    "--request-timeout",
    "900ms",
];

/// [`FAST`] with another `--lease-duration` (a longer one keeps a leader cut off from the
/// store alive for a while after the cut).
pub fn fast_with_lease(lease: &'static str) -> Vec<&'static str> {
    let mut t = FAST.to_vec();
    if let Some(i) = t.iter().position(|a| *a == "--lease-duration") {
        t[i + 1] = lease;
    }
    t
}

/// A port on 127.0.0.1 that was free a moment ago (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Timings under which nothing happens for minutes unless something wakes a candidate:
/// a follower's polls, and the holder's renewals, are ten minutes apart.
pub const SLOW: &[&str] = &[
    "--lease-duration",
    "1h",
    "--renew-every",
    "10m",
    "--retry-period",
    "10m",
    "--kill-after",
    "1s",
    "--follow-every",
    "10m",
    "--request-timeout",
    "5s",
];

/// A lock to campaign for, and a scratch directory for the test's files.
pub struct Lock {
    pub url: String,
    pub env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    /// For the file store: the lock file.
    pub file: Option<PathBuf>,
    /// For S3: bucket and key.
    pub s3: Option<(String, String)>,
}

impl Lock {
    pub fn file() -> Lock {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("test.lock");
        Lock {
            url: path.to_string_lossy().into_owned(),
            env: Vec::new(),
            dir,
            file: Some(path),
            s3: None,
        }
    }

    pub fn s3(name: &str) -> Lock {
        let server = crate::support::s3_server();
        let key = crate::support::unique_key(name);
        Lock {
            url: format!("s3://{}/{}", server.bucket, key),
            env: crate::support::s3_env(),
            dir: tempfile::tempdir().expect("temp dir"),
            file: None,
            s3: Some((server.bucket.clone(), key)),
        }
    }

    /// [`s3lead`] with this lock's store environment (credentials and endpoint for S3;
    /// none for a file); the caller adds the subcommand, its options and [`Lock::url`].
    pub fn s3lead(&self) -> Command {
        let mut c = s3lead();
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// `s3lead run <FAST timings> <extra> <lock>`; the caller adds `-- cmd` or `-c`.
    pub fn run(&self, extra: &[&str]) -> Command {
        self.run_timed(FAST, extra)
    }

    /// `s3lead run <extra> <lock>` refused as a usage error (64) before any request to
    /// the store; its output, for the caller to check the one line.
    pub fn refused_run(&self, extra: &[&str]) -> Finished {
        let f = finish(self.run(extra), Duration::from_secs(60));
        assert_eq!(f.code, Some(s3lead::exit::USAGE), "{}", f.stderr);
        assert!(self.bytes().is_none(), "no request was made");
        f
    }

    /// `s3lead run <timings> <extra> <lock>`.
    pub fn run_timed(&self, timings: &[&str], extra: &[&str]) -> Command {
        let mut c = self.s3lead();
        c.arg("run").args(timings).args(extra).arg(&self.url);
        c.env("S3LEAD_LOG_FORMAT", "json");
        c
    }

    /// Starts `s3lead run <extra> <lock>` (the caller's `extra` ends with `-c CMD`), its
    /// log discarded.
    pub fn start(&self, extra: &[&str]) -> Child {
        self.run(extra)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn s3lead")
    }

    /// Starts a run (with `extra` options) whose command holds the lock for 30 s, and
    /// waits until that command runs.
    pub fn hold(&self, extra: &[&str]) -> Child {
        let ready = self.path("holding");
        let cmd = format!("touch {}; sleep 30", ready.display());
        let mut args = extra.to_vec();
        args.extend(["-c", &cmd]);
        let child = self.start(&args);
        wait_for(
            "the holder to start its command",
            Duration::from_secs(60),
            || ready.exists(),
        );
        child
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The lock object's bytes as stored now, `Ok(None)` while there is none; `Err` for
    /// any other failure to read it. The one reader behind [`Lock::bytes`],
    /// [`Lock::record`] and [`Lock::try_record`].
    pub fn stored(&self) -> Result<Option<Vec<u8>>, String> {
        match (&self.file, &self.s3) {
            (Some(p), _) => match std::fs::read(p) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("reading {}: {e}", p.display())),
            },
            (None, Some((bucket, key))) => block_on(async {
                let c = crate::support::s3_client().await;
                match c.get_object().bucket(bucket).key(key).send().await {
                    Ok(o) => match o.body.collect().await {
                        Ok(body) => Ok(Some(body.into_bytes().to_vec())),
                        Err(e) => Err(format!("reading the lock object's body: {e:?}")),
                    },
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
                    Err(e) => Err(format!("reading the lock object: {e:?}")),
                }
            }),
            (None, None) => unreachable!(),
        }
    }

    /// The lock object's bytes as stored now, `None` if there is none; panics if it
    /// cannot be read.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        self.stored().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The lock object's JSON as stored now; panics if there is none.
    pub fn record(&self) -> serde_json::Value {
        let bytes = self.bytes().expect("the lock object exists");
        serde_json::from_slice(&bytes).expect("lock object is JSON")
    }

    /// Writes `json` as the lock object behind s3lead's back (unconditionally), as an
    /// operator or a broken peer would.
    pub fn overwrite(&self, json: &serde_json::Value) {
        let bytes = serde_json::to_vec(json).expect("json");
        match (&self.file, &self.s3) {
            (Some(p), _) => {
                let tmp = p.with_extension("overwrite.tmp");
                std::fs::write(&tmp, &bytes).expect("write");
                std::fs::rename(&tmp, p).expect("rename");
            }
            (None, Some((bucket, key))) => block_on(async {
                let c = crate::support::s3_client().await;
                c.put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(bytes.into())
                    .send()
                    .await
                    .expect("overwrite lock object");
            }),
            (None, None) => unreachable!(),
        }
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Polls `f` every 20 ms for up to `limit`; whether it came to hold.
pub fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`poll_until`] that must succeed: panics with `what` if `f` never holds.
pub fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    if !poll_until(limit, f) {
        panic!("gave up after {limit:?} waiting for: {what}");
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits for a child process with a bound; kills it and panics if it does not exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("s3lead did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Output of a finished run, with its stderr split into parsed JSON log lines.
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The lines that end a run, `s3lead: LOCK: …` (plain, whatever the log format).
    pub fn final_lines(&self) -> Vec<String> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("s3lead: "))
            .map(str::to_owned)
            .collect()
    }

    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.stderr
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The first log line whose message contains `needle`.
    pub fn log(&self, needle: &str) -> Option<serde_json::Value> {
        self.logs().into_iter().find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle))
        })
    }
}

/// Runs to completion with a bound.
pub fn finish(mut cmd: impl std::borrow::BorrowMut<Command>, limit: Duration) -> Finished {
    let mut child = cmd
        .borrow_mut()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn s3lead");
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = out_pipe {
            let _ = std::io::Read::read_to_string(&mut p, &mut s);
        }
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = err_pipe {
            let _ = std::io::Read::read_to_string(&mut p, &mut s);
        }
        s
    });
    let status = wait_exit(&mut child, limit);
    Finished {
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Is a process with this pid alive (and not a zombie)?
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

pub fn send_signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

impl Lock {
    /// The lock object's JSON as stored now, or `None` while there is none (deleted
    /// behind s3lead's back, or not yet created), cannot be read, or is not JSON.
    pub fn try_record(&self) -> Option<serde_json::Value> {
        let bytes = self.stored().ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Deletes the lock object behind s3lead's back (unconditionally), as an operator,
    /// a lifecycle rule or a broken peer would.
    pub fn delete_object(&self) {
        match (&self.file, &self.s3) {
            (Some(p), _) => std::fs::remove_file(p).expect("delete lock file"),
            (None, Some((bucket, key))) => block_on(async {
                let c = crate::support::s3_client().await;
                c.delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .expect("delete lock object");
            }),
            (None, None) => unreachable!(),
        }
    }
}

/// Every live descendant of `pid` (not `pid` itself), parents before children, found by
/// parentage in `/proc`: a test's own view, independent of s3lead's.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // The fields after the parenthesised command name: state, ppid, …
        let mut rest = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let (Some(state), Some(ppid)) = (rest.next(), rest.next().and_then(|s| s.parse().ok()))
        else {
            continue;
        };
        if state != "Z" && state != "X" {
            children.entry(ppid).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for k in children.remove(&p).unwrap_or_default() {
            next.push(k);
            out.push(k);
        }
    }
    out
}
