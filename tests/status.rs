//! End-to-end tests of `s3lead status`: what an operator sees before, during and after a
//! lease, on the file store and on the test S3 server.

#[macro_use]
mod e2e;
mod support;

use e2e::{Lock, finish, send_signal, wait_exit, wait_for};
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

/// The lines a `status --watch --json` has printed so far, parsed.
fn watched(path: &std::path::Path) -> Vec<serde_json::Value> {
    e2e::read(path)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `status --watch` prints one line per change of holder, term or release state: the
/// lock absent, taken (term 1), taken over after its holder was killed (term 2), released;
/// and nothing for the renewals in between (several by each holder). SIGINT ends it with
/// status 0 and nothing on stderr.
fn status_watch_prints_a_line_per_change(lock: Lock) {
    let out_path = lock.path("watch.out");
    let err_path = lock.path("watch.err");
    let mut watcher = lock
        .s3lead()
        .args(["status", "--watch", "--json", "--every", "200ms", &lock.url])
        .stdout(std::fs::File::create(&out_path).expect("watch.out"))
        .stderr(std::fs::File::create(&err_path).expect("watch.err"))
        .spawn()
        .expect("start status --watch");
    let lines_at_least = |n: usize| {
        wait_for(&format!("{n} lines from status --watch"), LIMIT, || {
            watched(&out_path).len() >= n
        })
    };
    lines_at_least(1);
    let seq = |lock: &Lock| lock.record()["seq"].as_u64().expect("seq");

    let mut a = lock.hold(&["--id", "watched-a"]);
    let first_seq = seq(&lock);
    wait_for("three renewals by the first holder", LIMIT, || {
        seq(&lock) >= first_seq + 3
    });

    // The second candidate waits; the first is killed without releasing, and the second
    // takes over once the lease has run out.
    let ready_b = lock.path("ready-b");
    let cmd_b = format!("touch {}; sleep 30", ready_b.display());
    let mut b = lock.start(&["--id", "watched-b", "-c", &cmd_b]);
    send_signal(a.id(), "KILL");
    wait_exit(&mut a, LIMIT);
    wait_for("the second holder to take over", LIMIT, || ready_b.exists());
    let taken_seq = seq(&lock);
    wait_for("two renewals by the second holder", LIMIT, || {
        seq(&lock) >= taken_seq + 2
    });
    send_signal(b.id(), "TERM");
    wait_exit(&mut b, LIMIT);
    lines_at_least(4);

    send_signal(watcher.id(), "INT");
    let status = wait_exit(&mut watcher, LIMIT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(e2e::read(&err_path), "", "status --watch wrote to stderr");
    let lines = watched(&out_path);
    let summary: Vec<(String, String, String)> = lines
        .iter()
        .map(|v| {
            assert_eq!(v["lock"], lock.url.as_str(), "{v}");
            assert!(v["at"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
            (
                v["state"].as_str().unwrap_or("?").to_owned(),
                v["holder"].as_str().unwrap_or("-").to_owned(),
                v["term"].to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("absent", "-", "null"),
        ("held", "watched-a", "1"),
        ("held", "watched-b", "2"),
        ("released", "watched-b", "2"),
    ]
    .iter()
    .map(|(s, h, t)| ((*s).to_owned(), (*h).to_owned(), (*t).to_owned()))
    .collect();
    assert_eq!(summary, expected, "one line per change, none per renewal");
}

on_both_stores!(status_watch_prints_a_line_per_change);

/// The text form: one line per change, each naming the lock, the holder and the term.
#[test]
fn status_watch_prints_text_lines_until_sigterm() {
    let lock = Lock::file();
    let out_path = lock.path("watch.out");
    let mut watcher = lock
        .s3lead()
        .args(["status", "--watch", "--every", "200ms", &lock.url])
        .stdout(std::fs::File::create(&out_path).expect("watch.out"))
        .spawn()
        .expect("start status --watch");
    // Its first read before the holder's first write, so that the first line is "absent".
    wait_for("a line for the absent lock", LIMIT, || {
        e2e::read(&out_path).contains(": absent (no lock object)")
    });
    let mut holder = lock.hold(&["--id", "texty"]);
    wait_for("a line for the holder", LIMIT, || {
        e2e::read(&out_path).contains(": held by texty, term 1")
    });
    send_signal(holder.id(), "TERM");
    wait_exit(&mut holder, LIMIT);
    wait_for("a line for the release", LIMIT, || {
        e2e::read(&out_path).contains(": released by texty, term 1")
    });
    send_signal(watcher.id(), "TERM");
    assert_eq!(wait_exit(&mut watcher, LIMIT).code(), Some(0));
    let text = e2e::read(&out_path);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].ends_with(&format!("{}: absent (no lock object)", lock.url)),
        "{text}"
    );
}
