//! End-to-end tests of `s3lead status`: what an operator sees before, during and after a
//! lease, on the file store and on the test S3 server.

#[macro_use]
mod e2e;
mod support;

use e2e::{Lock, finish, send_signal, wait_exit};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn status(lock: &Lock, json: bool) -> serde_json::Value {
    let mut c = lock.s3lead();
    c.arg("status");
    if json {
        c.arg("--json");
    }
    c.arg(&lock.url);
    let f = finish(c, LIMIT);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    if json {
        serde_json::from_str(f.stdout.trim()).expect("one JSON object")
    } else {
        serde_json::Value::String(f.stdout)
    }
}

fn status_follows_the_lease(lock: Lock) {
    assert_eq!(status(&lock, true)["state"], "absent");
    let mut holder = lock.hold(&["--id", "op-visible"]);
    let v = status(&lock, true);
    assert_eq!(v["state"], "held");
    assert_eq!(v["record"]["holder"], "op-visible");
    assert_eq!(v["record"]["term"], 1);
    let text = status(&lock, false);
    let text = text.as_str().unwrap();
    assert!(text.contains("held by op-visible"), "{text}");
    assert!(text.contains("term       1"), "{text}");
    send_signal(holder.id(), "TERM");
    wait_exit(&mut holder, LIMIT);
    assert_eq!(status(&lock, true)["state"], "released");
    let text = status(&lock, false);
    assert!(
        text.as_str().unwrap().contains("next holder gets term 2"),
        "{text}"
    );
}

on_both_stores!(status_follows_the_lease);
