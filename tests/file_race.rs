//! The file store raced by several OS processes: in every round, exactly one of them
//! wins a `create` of a fresh lock (`If-None-Match: *`) or a `replace` of a fresh lock
//! with the same initial ETag (`If-Match`), the others get `PreconditionFailed`, and the
//! file ends up holding the winner's bytes.
//!
//! The test re-executes its own binary as long-lived workers (the `race_worker` test,
//! which does nothing unless `S3LEAD_FILE_RACE_WORKER` is set). Rounds are driven over
//! the workers' stdin and stdout: the coordinator hands every worker the round's
//! operation, waits until all have answered "ready", then writes "go" to all pipes at
//! once, so the writes start together. No wall-clock assertion anywhere.

use s3lead::store::file::FileStore;
use s3lead::store::{Etag, LockStore, ReadReply, StoreError};
use std::io::{BufRead, BufReader, Lines, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

const WORKER_ENV: &str = "S3LEAD_FILE_RACE_WORKER";
const WORKER_TEST: &str = "race_worker";
const PROCESSES: usize = 6;
/// Rounds of each kind (create, replace), interleaved.
const ROUNDS: usize = 200;
/// Marks the protocol's lines among whatever the test harness prints.
const TAG: &str = "RACE\t";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
}

/// One worker process: reads `<round>\tcreate\t<path>` or
/// `<round>\treplace\t<path>\t<etag>`, answers ready, waits for `go`, writes, answers
/// `ok\t<round>\t<etag>\t<body>`, `lost\t<round>` or `err\t<round>\t<error>`.
#[test]
fn race_worker() {
    let Ok(id) = std::env::var(WORKER_ENV) else {
        return;
    };
    let rt = runtime();
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{TAG}{line}").expect("write to coordinator");
        out.flush().expect("flush to coordinator");
    };
    let mut lines = std::io::stdin().lock().lines();
    while let Some(line) = lines.next() {
        let line = line.expect("read from coordinator");
        let fields: Vec<&str> = line.split('\t').collect();
        let (round, op, path) = (fields[0], fields[1], Path::new(fields[2]));
        let store = FileStore::open(path).expect("open store");
        let body =
            format!("worker {id} pid {} round {round} {op}", std::process::id()).into_bytes();
        say(format!("ready\t{round}"));
        match lines.next() {
            Some(Ok(go)) if go == "go" => {}
            other => panic!("worker {id}: expected go, got {other:?}"),
        }
        let result = match op {
            "create" => rt.block_on(store.create(body.clone())),
            "replace" => rt.block_on(store.replace(&Etag::new(fields[3]), body.clone())),
            _ => panic!("worker {id}: unknown operation {op}"),
        };
        say(match result {
            Ok(etag) => format!(
                "ok\t{round}\t{}\t{}",
                etag.raw(),
                String::from_utf8_lossy(&body)
            ),
            Err(StoreError::PreconditionFailed) => format!("lost\t{round}"),
            Err(e) => format!("err\t{round}\t{e:?}"),
        });
    }
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn spawn(id: usize) -> Worker {
        let exe = std::env::current_exe().expect("current test binary");
        let mut child = Command::new(exe)
            .args([WORKER_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(WORKER_ENV, id.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("worker stdout")).lines();
        Worker {
            child,
            stdin,
            stdout,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("worker stdin");
        writeln!(stdin, "{line}").expect("write to worker");
        stdin.flush().expect("flush to worker");
    }

    /// The next protocol line, split on tabs (the harness may prefix it on one line).
    fn recv(&mut self) -> Vec<String> {
        loop {
            let line = self
                .stdout
                .next()
                .expect("worker exited early (see its stderr above)")
                .expect("read from worker");
            if let Some(at) = line.find(TAG) {
                return line[at + TAG.len()..]
                    .split('\t')
                    .map(String::from)
                    .collect();
            }
        }
    }
}

/// Kills workers still running when the coordinator panics.
struct Workers(Vec<Worker>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            w.stdin.take();
            if !matches!(w.child.try_wait(), Ok(Some(_))) {
                let _ = w.child.kill();
                let _ = w.child.wait();
            }
        }
    }
}

enum Op {
    Create,
    Replace(Etag),
}

/// Runs one round on a fresh lock at `path`; returns the winner's index.
fn round(
    workers: &mut Workers,
    rt: &tokio::runtime::Runtime,
    n: usize,
    path: &Path,
    op: Op,
) -> usize {
    let store = FileStore::open(path).expect("open store");
    let cmd = match &op {
        Op::Create => format!("{n}\tcreate\t{}", path.display()),
        Op::Replace(etag) => format!("{n}\treplace\t{}\t{}", path.display(), etag.raw()),
    };
    for w in &mut workers.0 {
        w.send(&cmd);
    }
    for w in &mut workers.0 {
        assert_eq!(w.recv(), ["ready", &n.to_string()]);
    }
    // Start each round's writes in a different order, so no worker is always first.
    let count = workers.0.len();
    for k in 0..count {
        workers.0[(n + k) % count].send("go");
    }
    let mut winners = Vec::new();
    for (i, w) in workers.0.iter_mut().enumerate() {
        let reply = w.recv();
        assert_eq!(
            reply.get(1).map(String::as_str),
            Some(&*n.to_string()),
            "{reply:?}"
        );
        match reply[0].as_str() {
            "ok" => winners.push((i, Etag::new(&reply[2]), reply[3].clone())),
            "lost" => {}
            _ => panic!("round {n} ({cmd}): worker {i} failed: {reply:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "round {n} ({cmd}): expected exactly one winner, got {winners:?}"
    );
    let (winner, etag, body) = winners.remove(0);
    if let Op::Replace(initial) = &op {
        assert_ne!(&etag, initial, "round {n}: the ETag did not change");
    }
    assert_eq!(
        std::fs::read(path).expect("read lock file"),
        body.as_bytes(),
        "round {n} ({cmd}): the file does not hold the winner's body"
    );
    assert_eq!(
        rt.block_on(store.read(None)),
        Ok(ReadReply::Found {
            etag,
            body: body.into_bytes()
        }),
        "round {n} ({cmd})"
    );
    winner
}

#[test]
fn processes_race_one_winner_per_round() {
    if std::env::var_os(WORKER_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = runtime();
    let mut workers = Workers((0..PROCESSES).map(Worker::spawn).collect());
    let mut wins = [0usize; PROCESSES];

    for n in 0..ROUNDS {
        let winner = round(
            &mut workers,
            &rt,
            n,
            &dir.path().join(format!("create-{n}")),
            Op::Create,
        );
        wins[winner] += 1;

        let path = dir.path().join(format!("replace-{n}"));
        let store = FileStore::open(&path).expect("open store");
        let initial = rt
            .block_on(store.create(format!("initial {n}").into_bytes()))
            .expect("create the lock to replace");
        let winner = round(&mut workers, &rt, n, &path, Op::Replace(initial));
        wins[winner] += 1;
    }

    // Let the workers finish: EOF on stdin ends their loop and their test passes.
    for w in &mut workers.0 {
        w.stdin.take();
        let status = w.child.wait().expect("wait for worker");
        assert!(status.success(), "worker failed: {status}");
    }
    // Only lock files and their sidecars remain: no temporary file was left behind.
    for entry in std::fs::read_dir(dir.path()).expect("list dir") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            !name.contains(".tmp."),
            "temporary file left behind: {name}"
        );
    }
    println!(
        "file race: {ROUNDS} create + {ROUNDS} replace rounds x {PROCESSES} processes, 1 winner in every round (wins per process: {wins:?})"
    );
}
