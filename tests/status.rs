//! End-to-end tests of `s3lead status`: what an operator sees before, during and after a
//! lease, on the file store and on the test S3 server.

#[macro_use]
mod e2e;
mod support;

use e2e::{Lock, finish, send_signal, wait_exit};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// `s3lead status [--json] LOCK`, whose exit status must be `code`: 0 when the lock
/// appears live, 1 when it is absent, released or stale.
fn status_exits(lock: &Lock, json: bool, code: i32) -> serde_json::Value {
    let mut c = lock.s3lead();
    c.arg("status");
    if json {
        c.arg("--json");
    }
    c.arg(&lock.url);
    let f = finish(c, LIMIT);
    assert_eq!(f.code, Some(code), "{}{}", f.stdout, f.stderr);
    if json {
        serde_json::from_str(f.stdout.trim()).expect("one JSON object")
    } else {
        serde_json::Value::String(f.stdout)
    }
}

fn status_follows_the_lease(lock: Lock) {
    let v = status_exits(&lock, true, 1);
    assert_eq!(
        (&v["state"], &v["appears_live"]),
        (&"absent".into(), &false.into())
    );
    status_exits(&lock, false, 1);
    let mut holder = lock.hold(&["--id", "op-visible"]);
    let v = status_exits(&lock, true, 0);
    assert_eq!(v["state"], "held");
    assert_eq!(v["appears_live"], true);
    assert_eq!(v["record"]["holder"], "op-visible");
    assert_eq!(v["record"]["term"], 1);
    let held = lock.record();
    let text = status_exits(&lock, false, 0);
    let text = text.as_str().unwrap();
    assert!(text.contains("held by op-visible"), "{text}");
    assert!(text.contains("term       1"), "{text}");
    assert!(text.contains("appears    live"), "{text}");
    send_signal(holder.id(), "TERM");
    wait_exit(&mut holder, LIMIT);
    let v = status_exits(&lock, true, 1);
    assert_eq!(
        (&v["state"], &v["appears_live"]),
        (&"released".into(), &false.into())
    );
    let text = status_exits(&lock, false, 1);
    assert!(
        text.as_str().unwrap().contains("next holder gets term 2"),
        "{text}"
    );
    // A holder that stopped renewing without releasing (killed, partitioned): its
    // record says held, but was last renewed long ago by this host's clock.
    let mut stale = held;
    stale["renewed_at"] = "2020-01-01T00:00:00Z".into();
    stale["acquired_at"] = "2020-01-01T00:00:00Z".into();
    lock.overwrite(&stale);
    let v = status_exits(&lock, true, 1);
    assert_eq!(
        (&v["state"], &v["appears_live"]),
        (&"held".into(), &false.into())
    );
    let text = status_exits(&lock, false, 1);
    assert!(
        text.as_str().unwrap().contains("appears    stale"),
        "{text}"
    );
}

on_both_stores!(status_follows_the_lease);
