//! End-to-end tests of the proof at acquisition (`s3lead run` proving, once elected and
//! before its command starts, that the store refuses a create of the existing lock
//! object and a replace with a wrong ETag): the built binary against two fake S3 buckets
//! on 127.0.0.1 (`e2e::fake_s3`), one that ignores `If-None-Match` (as Garage 2.5 does)
//! and one that ignores `If-Match`, where the command never starts and s3lead exits 78
//! with one line naming the store, the condition and `s3lead check`; and against the test
//! S3 server (`on_s3`: LocalStack, RGW in CI), where the proof passes, costs the two
//! refused PUTs the README says, and is remembered so that the next run pays nothing.

mod e2e;
mod support;

use e2e::fake_s3::{self, Mode};
use e2e::{Finished, Lock, finish};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const URL: &str = "s3://lease/locks/nightly";
const KEY: &str = "locks/nightly";

/// `s3lead run` against the fake bucket, its proofs remembered in `cache`; the command
/// touches `started`.
fn run_on_fake(bucket: &fake_s3::Bucket, cache: &Path, started: &Path, extra: &[&str]) -> Command {
    let mut c = e2e::s3lead();
    c.env("AWS_ENDPOINT_URL", &bucket.server.endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIDFAKE")
        .env("AWS_SECRET_ACCESS_KEY", "fake-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("S3LEAD_LOG_FORMAT", "json")
        .env("S3LEAD_CACHE_DIR", cache)
        .arg("run")
        .args(e2e::FAST)
        .args(extra)
        .arg(URL)
        .args(["-c", &format!("touch {}", started.display())]);
    c
}

/// Log lines at ERROR level.
fn errors(f: &Finished) -> Vec<String> {
    f.logs()
        .into_iter()
        .filter(|l| l["level"] == "ERROR")
        .map(|l| l.to_string())
        .collect()
}

/// The files of remembered proofs in `cache`.
fn remembered(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("proofs")).map_or(0, |d| d.flatten().count())
}

/// The run on a store that ignores `condition`: refused with 78 and the one line, the
/// command never started, the lock object left a record s3lead wrote, and no pass
/// remembered, so that the next run is refused again.
fn refused(mode: Mode, condition: &str, accepted: &str) {
    let bucket = fake_s3::serve_bucket(mode);
    let dir = tempfile::tempdir().expect("temp dir");
    let (cache, started) = (dir.path().join("cache"), dir.path().join("started"));
    for attempt in 1..=2 {
        let f = finish(run_on_fake(&bucket, &cache, &started, &[]), LIMIT);
        assert_eq!(f.code, Some(78), "run {attempt}: {}", f.stderr);
        assert!(!started.exists(), "run {attempt}: the command never starts");
        let lines = f.final_lines();
        assert_eq!(lines.len(), 1, "one line: {}", f.stderr);
        let line = &lines[0];
        for words in [
            &format!("s3lead: {URL}: the store at {}", bucket.server.endpoint),
            "(bucket lease)",
            &format!("ignores {condition} ({accepted} was accepted)"),
            "two copies of the command could run at once",
            &format!("s3lead check {URL}"),
        ] {
            assert!(line.contains(words), "{words:?} in {line}");
        }
        assert!(errors(&f).is_empty(), "no other error line: {}", f.stderr);
        let record: serde_json::Value =
            serde_json::from_slice(&bucket.object(KEY).expect("the lock object"))
                .expect("a record");
        assert_eq!(record["v"], 1, "{record}");
        assert!(record["lease_id"].is_string(), "{record}");
        assert_eq!(
            remembered(&cache),
            0,
            "run {attempt}: a failure is never remembered"
        );
    }
}

#[test]
fn run_refuses_a_store_that_ignores_if_none_match() {
    refused(
        Mode::IgnoresIfNoneMatch,
        "If-None-Match: *",
        "a create of the existing lock object",
    );
}

#[test]
fn run_refuses_a_store_that_ignores_if_match() {
    refused(
        Mode::IgnoresIfMatch,
        "If-Match",
        "a replace of the lock object with a wrong ETag",
    );
}

/// The probe's requests, in the order the store saw them: after the create that won, a
/// create of the same bytes; on a store that ignores it, nothing more is tried.
#[test]
fn the_probe_rewrites_only_the_bytes_just_written() {
    let bucket = fake_s3::serve_bucket(Mode::IgnoresIfNoneMatch);
    let dir = tempfile::tempdir().expect("temp dir");
    let (cache, started) = (dir.path().join("cache"), dir.path().join("started"));
    let f = finish(run_on_fake(&bucket, &cache, &started, &[]), LIMIT);
    assert_eq!(f.code, Some(78), "{}", f.stderr);
    let puts: Vec<_> = bucket
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert!(puts.len() >= 2, "{puts:?}");
    assert_eq!(puts[0].summary(), "PUT If-None-Match *");
    assert_eq!(puts[1].summary(), "PUT If-None-Match *", "the probe");
    assert_eq!(puts[1].body, puts[0].body, "the same bytes");
    assert!(
        puts[2..].iter().all(|r| r.header("if-match").is_some()),
        "then only the release: {:?}",
        puts.iter().map(|r| r.summary()).collect::<Vec<_>>()
    );
}

/// `--no-verify-store` gives the proof up, and with it the protection: on a store that
/// ignores `If-None-Match` the command runs.
#[test]
fn no_verify_store_runs_the_command_on_a_store_it_did_not_prove() {
    let bucket = fake_s3::serve_bucket(Mode::IgnoresIfNoneMatch);
    let dir = tempfile::tempdir().expect("temp dir");
    let (cache, started) = (dir.path().join("cache"), dir.path().join("started"));
    let f = finish(
        run_on_fake(&bucket, &cache, &started, &["--no-verify-store"]),
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(started.exists());
    let creates = bucket
        .server
        .requests()
        .iter()
        .filter(|r| r.summary() == "PUT If-None-Match *")
        .count();
    assert_eq!(creates, 1, "no probe");
}

/// The `--stats` line of a finished run, as JSON fields.
fn stats(f: &Finished) -> serde_json::Value {
    f.log("requests:")
        .unwrap_or_else(|| panic!("a --stats line: {}", f.stderr))["fields"]
        .clone()
}

/// On the test server the proof passes and costs two PUTs, both refused (412); the pass
/// is remembered, and the next run on the same endpoint and bucket (another lock) sends
/// no probe at all. Counted by difference, since a store's own quirks cost the same in
/// both runs (on RGW a quoted `If-Match` is refused and retried unquoted).
#[test]
fn the_proof_passes_costs_two_refused_puts_and_is_remembered_on_s3() {
    let first = Lock::s3("proof-first");
    let second = Lock::s3("proof-second");
    let cache = first.path("cache");
    let run = |lock: &Lock| {
        let mut c = lock.run(&["--stats"]);
        c.env("S3LEAD_CACHE_DIR", &cache).args(["-c", "true"]);
        let f = finish(c, LIMIT);
        assert_eq!(f.code, Some(0), "{}", f.stderr);
        assert_eq!(lock.record()["released"], true);
        let s = stats(&f);
        let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
        (n("precondition_failed"), n("put"), n("total"))
    };

    let (refused, put, total) = run(&first);
    assert_eq!(remembered(&cache), 1, "the pass is remembered");
    let (refused_cached, put_cached, total_cached) = run(&second);
    assert_eq!(remembered(&cache), 1);
    assert_eq!(refused - refused_cached, 2, "the probe's two refused PUTs");
    assert_eq!(total - total_cached, 2, "and nothing else");
    assert_eq!(put, put_cached, "nothing written by the probe");
}
