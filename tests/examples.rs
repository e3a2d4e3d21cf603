//! The example programs under `examples/`, run as a user runs them, on the file store and
//! on the test S3 server: `examples/embed.rs` embeds the election. Two copies started at
//! once must lead one after the other, the second with the larger term, and each must
//! release what it held.

#[macro_use]
mod e2e;
mod support;

use e2e::Lock;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The built example: cargo puts examples in `examples/` beside the `deps/` directory
/// that holds this test binary. `cargo test --all-targets` builds them only as test
/// harnesses, so `test.sh` runs `cargo build --release --examples` before the tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in <target>/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --release --examples` before the tests \
         (./test.sh does)",
        path.display()
    );
    path
}

/// `embed LOCK STEPS` with the lock's store environment, started now.
fn start_embed(lock: &Lock, steps: u32) -> std::process::Child {
    Command::new(example("embed"))
        .arg(&lock.url)
        .arg(steps.to_string())
        .envs(lock.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start examples/embed")
}

/// The term each `term T: step N` line names, after checking the run ended well.
fn terms_of(out: std::process::Output) -> Vec<u64> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "embed failed ({:?}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.ends_with("released\n"),
        "embed did not release: {stdout}"
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("term "))
        .map(|l| {
            let (term, _) = l.split_once(':').expect("term T: step N");
            term.parse().expect("a term")
        })
        .collect()
}

fn two_embedded_candidates_lead_in_turn(lock: Lock) {
    let first = start_embed(&lock, 3);
    // The second campaigns while the first leads (or before it has even campaigned: then
    // they swap roles, and the check below holds all the same).
    let second = start_embed(&lock, 3);
    let a = terms_of(first.wait_with_output().expect("wait for the first"));
    let b = terms_of(second.wait_with_output().expect("wait for the second"));
    assert_eq!(a.len(), 3, "the first did all its steps: {a:?}");
    assert_eq!(b.len(), 3, "the second did all its steps: {b:?}");
    // Each leads under one term, and the two terms are 1 and 2, in some order.
    assert!(a.iter().all(|t| *t == a[0]) && b.iter().all(|t| *t == b[0]));
    let mut terms = vec![a[0], b[0]];
    terms.sort_unstable();
    assert_eq!(terms, vec![1, 2]);
    let record = lock.record();
    assert_eq!(record["term"], 2, "{record}");
    assert_eq!(record["released"], true, "{record}");
}

#[test]
fn two_embedded_candidates_lead_in_turn_on_the_file_store() {
    two_embedded_candidates_lead_in_turn(Lock::file());
}

#[test]
fn two_embedded_candidates_lead_in_turn_on_s3() {
    two_embedded_candidates_lead_in_turn(Lock::s3("embed"));
}
