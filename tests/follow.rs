//! End-to-end tests of what a follower costs and how soon it hands over: the built
//! binary, each follower behind its own request-logging proxy (tests/e2e/http_fault.rs)
//! on S3, so that the test sees every request it sends, as a bill or an access log
//! would. Nothing here asserts how long anything took: the tests compare orders and
//! counts, with bounded waits only as limits.

#[macro_use]
mod e2e;
mod support;

use e2e::http_fault::HttpFaultProxy;
use e2e::proxy::endpoint_addr;
use e2e::{Lock, read, send_signal, wait_exit, wait_for};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// One request as the proxy logged it.
#[derive(Clone, Debug)]
struct Logged {
    /// CLOCK_MONOTONIC seconds.
    at: f64,
    method: String,
    status: String,
}

fn requests(log: &Path) -> Vec<Logged> {
    read(log)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some(Logged {
                at: f.first()?.parse().ok()?,
                method: (*f.get(1)?).to_owned(),
                status: (*f.get(2)?).to_owned(),
            })
        })
        .collect()
}

fn gets(log: &Path) -> Vec<f64> {
    requests(log)
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.at)
        .collect()
}

fn monotonic_now() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

/// A candidate of `lock` whose S3 requests go through a proxy of its own that logs them
/// to `<name>.requests`; its JSON log goes to `<name>.log`.
struct Proxied {
    proxy: HttpFaultProxy,
    log: PathBuf,
    stderr: PathBuf,
}

impl Proxied {
    fn new(lock: &Lock, name: &str) -> Proxied {
        let server = support::s3_server();
        let proxy = HttpFaultProxy::start(endpoint_addr(&server.endpoint));
        let log = lock.path(&format!("{name}.requests"));
        proxy.log_to(&log);
        Proxied {
            proxy,
            log,
            stderr: lock.path(&format!("{name}.log")),
        }
    }

    fn start(&self, lock: &Lock, timings: &[&str], extra: &[&str]) -> Child {
        let mut c = lock.run_timed(timings, extra);
        c.env("AWS_ENDPOINT_URL", self.proxy.endpoint())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.stderr).expect("log file"));
        c.spawn().expect("spawn s3lead")
    }

    fn logged(&self, needle: &str) -> bool {
        read(&self.stderr).contains(needle)
    }
}

fn stop(mut child: Child) {
    send_signal(child.id(), "KILL");
    let _ = wait_exit(&mut child, LIMIT);
}

/// Three followers started at the same instant: every wait of theirs is shortened at
/// random, so the offsets between their reads drift apart instead of staying put.
#[test]
fn followers_started_together_do_not_read_in_step_on_s3() {
    let lock = Lock::s3("in_step");
    let leader = lock.hold(&[]);
    let timings = [e2e::FAST, &["--follow-every", "2s"]].concat();
    let followers: Vec<Proxied> = (0..3)
        .map(|i| Proxied::new(&lock, &format!("f{i}")))
        .collect();
    let children: Vec<Child> = followers
        .iter()
        .map(|f| f.start(&lock, &timings, &["-c", "true"]))
        .collect();
    wait_for("each follower to read 12 times", LIMIT, || {
        followers.iter().all(|f| gets(&f.log).len() >= 12)
    });
    for c in children {
        stop(c);
    }
    stop(leader);
    let reads: Vec<Vec<f64>> = followers.iter().map(|f| gets(&f.log)).collect();
    for a in 0..reads.len() {
        for b in a + 1..reads.len() {
            // Skip the first reads (start-up); from then on each is one poll.
            let offsets: Vec<f64> = (2..12).map(|k| reads[a][k] - reads[b][k]).collect();
            let lo = offsets.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = offsets.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            // Each wait is shortened by up to 5 %: over ten of them the offset wanders by
            // several per cent of the period, whichever period the followers were in (the
            // slow one, or the fast one when a loaded store made renewals look late). In
            // step, it would stay put but for a millisecond or two of noise.
            let period = (reads[a][11] - reads[a][2]) / 9.0;
            let least = (0.01 * period).max(0.005);
            assert!(
                hi - lo >= least,
                "followers {a} and {b} read in step: offsets {offsets:?} wander by less than {least:.3} s (period {period:.3} s)"
            );
        }
    }
}

/// Renewals stop (the leader is stopped with SIGSTOP): the follower says so and reads at
/// the fast period; they resume (SIGCONT): it says so and reads at the slow one. The
/// proxy's log shows more reads in the overdue stretch than in as long a stretch after.
#[test]
fn a_follower_reads_fast_while_renewals_are_overdue_and_slow_once_they_resume_on_s3() {
    let lock = Lock::s3("two_speed");
    let timings = [
        "--lease-duration",
        "20s",
        "--renew-every",
        "2s",
        "--retry-period",
        "500ms",
        "--kill-after",
        "1s",
        "--request-timeout",
        "1s",
        "--follow-every",
        "3s",
    ];
    let holding = lock.path("holding");
    let cmd = format!("touch {}; sleep 120", holding.display());
    let mut leader = lock
        .run_timed(&timings, &["-c", &cmd])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn leader");
    wait_for("the leader's command", LIMIT, || holding.exists());
    let f = Proxied::new(&lock, "follower");
    let follower = f.start(&lock, &timings, &["-c", "true"]);
    wait_for("the follower to see the holder", LIMIT, || {
        f.logged("waiting")
    });
    wait_for("a few slow reads", LIMIT, || gets(&f.log).len() >= 3);
    assert!(!f.logged("renewal is overdue"), "{}", read(&f.stderr));

    send_signal(leader.id(), "STOP");
    wait_for("the follower to see the renewal overdue", LIMIT, || {
        f.logged("renewal is overdue")
    });
    let fast_from = monotonic_now();
    let before = gets(&f.log).len();
    wait_for("fast reads", LIMIT, || gets(&f.log).len() >= before + 4);
    send_signal(leader.id(), "CONT");
    wait_for("the follower to see renewals again", LIMIT, || {
        f.logged("renews again")
    });
    let slow_from = monotonic_now();
    let window = slow_from - fast_from;
    wait_for("a stretch as long after", LIMIT, || {
        monotonic_now() > slow_from + window + 0.1
    });
    stop(follower);
    assert!(holding.exists());
    send_signal(leader.id(), "TERM");
    let _ = wait_exit(&mut leader, LIMIT);

    let reads = gets(&f.log);
    let fast = reads
        .iter()
        .filter(|&&t| t >= fast_from && t < slow_from)
        .count();
    let slow = reads
        .iter()
        .filter(|&&t| t >= slow_from && t < slow_from + window)
        .count();
    assert!(fast >= 4, "reads while overdue: {fast}");
    assert!(
        fast > slow,
        "more reads while the renewal was overdue ({fast}) than in as long after ({slow})"
    );
    let log = read(&f.stderr);
    let overdue = log.find("renewal is overdue").expect("overdue line");
    let again = log.find("renews again").expect("renews again line");
    assert!(overdue < again, "{log}");
}

/// On the file store a follower whose next poll is ten minutes away takes over a
/// release at once: the lock file's change wakes it, not a poll.
#[test]
fn a_file_store_follower_is_woken_by_a_release_without_polling() {
    let lock = Lock::file();
    let holding = lock.path("holding");
    let cmd = format!("touch {}; exec sleep 600", holding.display());
    let mut leader = lock
        .run_timed(e2e::SLOW, &["-c", &cmd])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn leader");
    wait_for("the leader's command", LIMIT, || holding.exists());
    let took_over = lock.path("took-over");
    let stderr = lock.path("follower.log");
    let mut follower = lock
        .run_timed(
            e2e::SLOW,
            &["--stats", "-c", &format!("touch {}", took_over.display())],
        )
        .stderr(std::fs::File::create(&stderr).expect("log"))
        .spawn()
        .expect("spawn follower");
    wait_for("the follower to see the holder", LIMIT, || {
        read(&stderr).contains("waiting")
    });
    send_signal(leader.id(), "TERM");
    let _ = wait_exit(&mut leader, LIMIT);
    // (The record may already be the follower's: the release is taken over at once.)
    // The follower's next scheduled read is 10 minutes away; the limit is far shorter.
    wait_for("the follower to take over the release", LIMIT, || {
        took_over.exists()
    });
    let st = wait_exit(&mut follower, LIMIT);
    assert_eq!(st.code(), Some(0), "{}", read(&stderr));
    assert_eq!(lock.record()["term"], 2);
}

/// `--stats` prints what the store layer counted; a counting proxy in front of each
/// candidate saw the same requests, kind by kind: a leader, and two followers that race
/// for its release (a refused takeover, 412, may be among them).
#[test]
fn request_counters_match_what_a_counting_proxy_saw_on_s3() {
    let lock = Lock::s3("counters");
    let candidates: Vec<Proxied> = ["leader", "f1", "f2"]
        .iter()
        .map(|n| Proxied::new(&lock, n))
        .collect();
    let holding = lock.path("holding");
    let cmd = format!("touch {}; sleep 3", holding.display());
    let mut leader = candidates[0].start(&lock, e2e::FAST, &["--stats", "-c", &cmd]);
    wait_for("the leader's command", LIMIT, || holding.exists());
    let mut followers: Vec<Child> = candidates[1..]
        .iter()
        .map(|c| c.start(&lock, e2e::FAST, &["--stats", "-c", "sleep 1"]))
        .collect();
    let st = wait_exit(&mut leader, LIMIT);
    assert_eq!(st.code(), Some(0), "{}", read(&candidates[0].stderr));
    for f in followers.iter_mut() {
        let st = wait_exit(f, LIMIT);
        assert_eq!(st.code(), Some(0));
    }
    for c in &candidates {
        let log = read(&c.stderr);
        let stats: serde_json::Value = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("requests:"))
            })
            .unwrap_or_else(|| panic!("one --stats line: {log}"));
        let field = |k: &str| stats["fields"][k].as_u64().unwrap_or(u64::MAX);
        let mut seen: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in requests(&c.log) {
            *seen.entry((r.method, r.status)).or_default() += 1;
        }
        let n = |m: &str, s: &str| seen.get(&(m.into(), s.into())).copied().unwrap_or(0);
        let proxy_total: u64 = seen.values().sum();
        assert_eq!(
            field("get"),
            n("GET", "200") + n("HEAD", "200"),
            "{stats} vs {seen:?}"
        );
        assert_eq!(
            field("not_modified"),
            n("GET", "304"),
            "{stats} vs {seen:?}"
        );
        assert_eq!(
            field("missing"),
            n("GET", "404") + n("HEAD", "404"),
            "{stats} vs {seen:?}"
        );
        assert_eq!(field("put"), n("PUT", "200"), "{stats} vs {seen:?}");
        assert_eq!(
            field("precondition_failed"),
            n("PUT", "412"),
            "{stats} vs {seen:?}"
        );
        assert_eq!(field("conflict"), n("PUT", "409"), "{stats} vs {seen:?}");
        assert_eq!(field("total"), proxy_total, "{stats} vs {seen:?}");
    }
}
