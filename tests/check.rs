//! End-to-end tests of `s3lead check`, the built binary as an operator runs it: it passes
//! on the file store and on the test S3 server (tests named `on_s3`; CI runs them again
//! against Ceph RGW, whose losers of an `If-Match` race get 500), it leaves the lock
//! object byte for byte as it was and no scratch key behind, and it refuses, with exit 78
//! and an UNSAFE verdict, two fake S3 buckets (`e2e::fake_s3`) on 127.0.0.1: one that
//! ignores conditional headers (Garage 2.5 ignores `If-None-Match`), and one that checks
//! them without atomicity, so that racing writers all pass the check (s3s-fs, moto now
//! and then).

#[macro_use]
mod e2e;
mod support;

use e2e::fake_s3::{self, Mode};
use e2e::{Finished, Lock, finish};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// `s3lead check <extra> <url>` with the store's environment `env`, to its end.
fn check(url: &str, env: &[(String, String)], extra: &[&str]) -> Finished {
    let mut c = e2e::s3lead();
    c.arg("check").args(extra).arg(url);
    c.envs(env.iter().map(|(k, v)| (k, v)));
    finish(c, LIMIT)
}

/// Every object whose key starts with the lock's key (the lock, its scratch keys), or
/// every file next to the lock file whose name starts with the lock file's name.
fn keys_next_to_the_lock(lock: &Lock) -> Vec<String> {
    let mut names: Vec<String> = match (&lock.file, &lock.s3) {
        (Some(path), _) => {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::read_dir(path.parent().unwrap())
                .expect("list the lock's directory")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&name))
                .collect()
        }
        (None, Some((bucket, key))) => e2e::block_on(async {
            let client = support::s3_client().await;
            let listed = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(key)
                .send()
                .await
                .expect("list the bucket");
            listed
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect()
        }),
        (None, None) => unreachable!(),
    };
    names.sort();
    names
}

fn assert_safe(lock: &Lock, f: &Finished) {
    assert_eq!(
        f.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        f.stdout,
        f.stderr
    );
    let lines: Vec<&str> = f.stdout.lines().collect();
    let verdict = lines.last().expect("a verdict line");
    assert_eq!(
        *verdict,
        format!(
            "{}: the store keeps the conditional-write contract (20 race rounds x 8 writers: one winner each)",
            lock.url
        )
    );
    assert!(!f.stdout.contains("FAIL"), "{}", f.stdout);
    for check in [
        "create (If-None-Match: *) on an existing key",
        "replace (If-Match) with the replaced ETag",
        "racing creates",
        "racing replaces",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "no ok line for {check}:\n{}",
            f.stdout
        );
    }
}

/// The check passes, never creates or changes the lock object, and leaves no scratch
/// key behind, with or without a lock object present.
fn check_passes_and_touches_nothing(lock: Lock) {
    let f = check(&lock.url, &lock.env, &[]);
    assert_safe(&lock, &f);
    assert_eq!(lock.bytes(), None, "the check created the lock object");
    assert_eq!(keys_next_to_the_lock(&lock), Vec::<String>::new());

    // A lock that exists (released, term 1): the check leaves it byte for byte.
    let mut run = lock.run(&[]);
    run.args(["--", "true"]);
    let ran = finish(run, LIMIT);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let before = lock.bytes().expect("s3lead run wrote the lock object");
    let f = check(&lock.url, &lock.env, &["--json"]);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let v: serde_json::Value = serde_json::from_str(f.stdout.trim()).expect("one JSON object");
    assert_eq!(v["safe"], true, "{v}");
    assert_eq!(v["lock"], lock.url.as_str());
    let checks = v["checks"].as_array().expect("checks");
    assert!(checks.iter().all(|c| c["result"] != "fail"), "{checks:#?}");
    assert_eq!(
        lock.bytes(),
        Some(before),
        "the check changed the lock object"
    );
    let expected: Vec<String> = match (&lock.file, &lock.s3) {
        (Some(_), _) => vec!["test.lock".into(), "test.lock.flock".into()],
        (None, Some((_, key))) => vec![key.clone()],
        (None, None) => unreachable!(),
    };
    assert_eq!(
        keys_next_to_the_lock(&lock),
        expected,
        "a scratch key is left"
    );
}

on_both_stores!(check_passes_and_touches_nothing);

fn fake_env(bucket: &fake_s3::Bucket) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", bucket.server.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIDFAKE"),
        ("AWS_SECRET_ACCESS_KEY", "fake-secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn assert_unsafe(f: &Finished, url: &str) -> String {
    assert_eq!(
        f.code,
        Some(78),
        "stdout:\n{}\nstderr:\n{}",
        f.stdout,
        f.stderr
    );
    let verdict = f.stdout.lines().last().expect("a verdict line").to_owned();
    assert!(
        verdict.starts_with(&format!("{url}: UNSAFE: ")),
        "{verdict}"
    );
    assert!(
        verdict.ends_with("s3lead cannot guarantee mutual exclusion on this store"),
        "{verdict}"
    );
    verdict
}

#[test]
fn check_refuses_a_store_that_ignores_conditional_headers() {
    let bucket = fake_s3::serve_bucket(Mode::IgnoresConditions);
    let url = "s3://lease/locks/nightly";
    let f = check(url, &fake_env(&bucket), &[]);
    let verdict = assert_unsafe(&f, url);
    assert!(
        verdict.contains("create (If-None-Match: *) on an existing key"),
        "the first failure is named: {verdict}"
    );
    assert!(verdict.contains("ignores If-None-Match"), "{verdict}");
    assert!(
        f.stdout.lines().any(|l| l.starts_with(
            "FAIL create (If-None-Match: *) on an existing key: expected refused (412), content unchanged; got 200 despite a failed precondition: written"
        )),
        "the 200 is named: {}",
        f.stdout
    );
    let fail = |check: &str| {
        f.stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains(check))
    };
    assert!(fail("replace (If-Match) with a wrong ETag"), "{}", f.stdout);
    assert!(fail("replace (If-Match) on a missing key"), "{}", f.stdout);
    assert!(
        f.stdout
            .lines()
            .any(|l| l.starts_with("FAIL racing creates")
                && l.contains("two writers both won a conditional PUT")),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout
            .lines()
            .any(|l| l.starts_with("WARN read (If-None-Match)")),
        "a conditional GET answered 200 is a warning: {}",
        f.stdout
    );
    // Each scratch key was written, then deleted: nothing else was ever requested.
    let requests = bucket.server.requests();
    assert!(requests.iter().any(|r| r.method == "DELETE"));
    assert_eq!(bucket.keys(), Vec::<String>::new(), "scratch keys left");
    assert!(
        bucket
            .server
            .requests()
            .iter()
            .all(|r| r.key.starts_with("locks/nightly.s3lead-check-"))
    );

    let f = check(url, &fake_env(&bucket), &["--json"]);
    assert_eq!(f.code, Some(78), "{}", f.stderr);
    let v: serde_json::Value = serde_json::from_str(f.stdout.trim()).expect("one JSON object");
    assert_eq!(v["safe"], false);
    assert!(v["verdict"].as_str().unwrap().contains("UNSAFE"), "{v}");
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["result"] == "fail"),
        "{v}"
    );
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["result"] == "fail" && c["anomaly"] == "ignored-precondition"),
        "{v}"
    );
}

#[test]
fn check_refuses_a_store_whose_conditional_writes_race() {
    let bucket = fake_s3::serve_bucket(Mode::ChecksWithoutAtomicity);
    let url = "s3://lease/locks/racy";
    let f = check(url, &fake_env(&bucket), &[]);
    let verdict = assert_unsafe(&f, url);
    assert!(
        verdict.contains(
            "two writers both won a conditional PUT: mutual exclusion is impossible on this store"
        ),
        "{verdict}"
    );
    // One write at a time, the store keeps the contract: only the race shows the flaw.
    let lines: Vec<&str> = f.stdout.lines().collect();
    let (_verdict, checks) = lines.split_last().expect("lines");
    let sequential: Vec<&&str> = checks.iter().filter(|l| !l.contains("racing")).collect();
    // The clock, then the seven checks of one write at a time.
    assert_eq!(sequential.len(), 8, "{}", f.stdout);
    assert!(
        sequential.iter().all(|l| l.starts_with("ok")),
        "{}",
        f.stdout
    );
    assert_eq!(bucket.keys(), Vec::<String>::new(), "scratch keys left");
}

#[test]
fn check_passes_on_a_store_that_wants_if_match_unquoted_and_says_that_s3lead_adapts() {
    let bucket = fake_s3::serve_bucket(Mode::WantsUnquotedIfMatch);
    let url = "s3://lease/locks/rgw";
    let f = check(url, &fake_env(&bucket), &["--rounds", "3"]);
    assert_eq!(
        f.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        f.stdout,
        f.stderr
    );
    assert!(
        f.stdout.lines().any(|l| l
            .starts_with("ok   replace (If-Match) with the current ETag: written (ETag ")
            && l.contains(
                "; the store accepts If-Match only unquoted (as Ceph RGW does): s3lead adapts"
            )),
        "the quirk is reported beside the replace: {}",
        f.stdout
    );
    assert_eq!(bucket.keys(), Vec::<String>::new(), "scratch keys left");
}

/// The number in the `[rtt N ms]` that ends a line, if it ends with one.
fn rtt_of(line: &str) -> Option<f64> {
    let rest = line.strip_suffix(" ms]")?;
    let (_, number) = rest.rsplit_once(" [rtt ")?;
    number.parse().ok()
}

/// Every check line ends with the round-trip time of its request, and the first one gives
/// the offset between this host's clock and the store's `Date` header: ok when they agree,
/// a warning naming the direction when the store's clock is two minutes off (never a
/// failure: mutual exclusion does not depend on clocks). Durations are printed, never
/// compared here: only the injected skew is.
#[test]
fn check_prints_each_round_trip_and_the_offset_from_the_store_s_clock() {
    for (skew, result, direction) in [(0, "ok  ", None), (-120, "WARN", Some("behind"))] {
        let bucket = fake_s3::serve_bucket_with_clock(Mode::Keeps, skew);
        let url = "s3://lease/locks/clock";
        let f = check(url, &fake_env(&bucket), &["--rounds", "2"]);
        assert_eq!(
            f.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            f.stdout,
            f.stderr
        );
        let lines: Vec<&str> = f.stdout.lines().collect();
        let (_verdict, checks) = lines.split_last().expect("lines");
        let first = checks.first().expect("a clock line");
        assert!(
            first.starts_with(&format!(
                "{result} clock offset (the store's Date header): "
            )),
            "{}",
            f.stdout
        );
        if let Some(direction) = direction {
            assert!(
                first.contains(&format!("s {direction} this host's clock")),
                "{first}"
            );
            assert!(first.contains("--once-per"), "{first}");
        }
        for line in checks {
            let rtt = rtt_of(line).unwrap_or_else(|| panic!("no [rtt N ms] at the end: {line}"));
            assert!(rtt >= 0.0, "{line}");
        }
        assert!(
            checks
                .iter()
                .any(|l| l.starts_with("ok   racing creates") && l.contains("round trips: median ")),
            "{}",
            f.stdout
        );

        let f = check(url, &fake_env(&bucket), &["--rounds", "2", "--json"]);
        assert_eq!(f.code, Some(0), "{}", f.stderr);
        let v: serde_json::Value = serde_json::from_str(f.stdout.trim()).expect("one JSON object");
        let checks = v["checks"].as_array().expect("checks");
        let offset = checks[0]["clock_offset_ms"]
            .as_f64()
            .expect("clock_offset_ms");
        let within = checks[0]["clock_uncertainty_ms"]
            .as_f64()
            .expect("clock_uncertainty_ms");
        // The skew is the test's own: the store's clock is off by it, give or take the
        // estimate's own bound.
        assert!(
            (offset - skew as f64 * 1000.0).abs() <= within + 1000.0,
            "offset {offset} ms, within {within} ms, skew {skew} s"
        );
        assert!(
            checks.iter().all(|c| c["rtt_ms"].as_f64().is_some()),
            "{checks:#?}"
        );
    }
}

/// A store that answers conditional PUTs with 501 NotImplemented (Backblaze B2) is
/// unsafe, and the answer is named: one line per check, not a retry loop.
#[test]
fn check_names_a_not_implemented_answer() {
    let bucket = fake_s3::serve_bucket(Mode::NotImplemented);
    let url = "s3://lease/locks/b2";
    let f = check(url, &fake_env(&bucket), &[]);
    let verdict = assert_unsafe(&f, url);
    assert!(
        verdict.contains("create (If-None-Match: *) on a new key"),
        "{verdict}"
    );
    assert!(
        f.stdout.lines().any(|l| l.starts_with(
            "FAIL create (If-None-Match: *) on a new key: expected written; got NotImplemented (HTTP 501): "
        ) && l.contains("the store does not support conditional writes")),
        "{}",
        f.stdout
    );
    let puts = bucket
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert!(puts < 100, "{puts} PUTs: the probe retried a 501");

    let f = check(url, &fake_env(&bucket), &["--json"]);
    assert_eq!(f.code, Some(78), "{}", f.stderr);
    let v: serde_json::Value = serde_json::from_str(f.stdout.trim()).expect("one JSON object");
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["result"] == "fail" && c["anomaly"] == "not-implemented"),
        "{v}"
    );
    assert_eq!(bucket.keys(), Vec::<String>::new(), "scratch keys left");
}
