//! End-to-end tests of the endpoint of `s3lead run --peer-listen`: the built binary,
//! asked over HTTP on 127.0.0.1 as a monitoring system would ask it. `/metrics` must
//! parse as Prometheus text and show one leader among the candidates; `/v1/lease` shows
//! the lease; a bearer token, when asked for, is required and never logged.

#[macro_use]
mod e2e;
mod support;

use e2e::proxy::{Mode, Proxy, endpoint_addr};
use e2e::{Lock, free_port, send_signal, wait_exit, wait_for};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// `GET path` on `port`, with `Authorization: Bearer token` if given: the status and
/// the body, or `None` while nothing answers.
fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Parses the Prometheus text format strictly enough to catch what a scraper refuses:
/// every sample's family has its `# TYPE` line first, every sample is `name{labels}
/// value` with a number for value. Returns the samples by `name{labels}`.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut typed = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let name = it.next().expect("a family name");
            let kind = it.next().expect("a type");
            assert!(
                ["gauge", "counter"].contains(&kind),
                "unknown type in {line:?}"
            );
            typed.push(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let name = series.split('{').next().expect("a name");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        assert!(
            typed.iter().any(|t| t == name),
            "{name} has no # TYPE line before it"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels in {line:?}"
                );
            }
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line:?}"));
        samples.insert(series.to_owned(), v);
    }
    samples
}

/// The sum of the samples of `name`.
fn sum(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}

fn candidate(lock: &Lock, port: u16, extra: &[&str], stderr: Stdio) -> Child {
    let listen = format!("127.0.0.1:{port}");
    let cmd = format!("touch {}; sleep 30", lock.path("leading").display());
    let mut args = vec!["--peer-listen", &listen];
    args.extend(extra);
    args.extend(["-c", &cmd]);
    lock.run(&args)
        .stderr(stderr)
        .spawn()
        .expect("spawn s3lead")
}

fn stop(mut child: Child) {
    send_signal(child.id(), "TERM");
    wait_exit(&mut child, LIMIT);
}

fn metrics_show_exactly_one_leader(lock: Lock) {
    let ports = [free_port(), free_port()];
    let children: Vec<Child> = ports
        .iter()
        .map(|&p| candidate(&lock, p, &[], Stdio::null()))
        .collect();
    wait_for("a leader's command to start", LIMIT, || {
        lock.path("leading").exists()
    });
    let mut last = String::new();
    let settled = e2e::poll_until(LIMIT, || {
        let mut leaders = 0.0;
        let mut terms = Vec::new();
        for &p in &ports {
            let Some((200, body)) = get(p, "/metrics", None) else {
                return false;
            };
            let samples = parse_prometheus(&body);
            leaders += sum(&samples, "s3lead_is_leader");
            terms.push(sum(&samples, "s3lead_term"));
            last = body;
        }
        // The follower has read the leader's record once it shows its term.
        leaders == 1.0 && terms == [1.0, 1.0]
    });
    assert!(
        settled,
        "s3lead_is_leader sums to 1 across the candidates: {last}"
    );
    let leases: Vec<serde_json::Value> = ports
        .iter()
        .map(|&p| {
            let (code, body) = get(p, "/v1/lease", None).expect("an answer");
            assert_eq!(code, 200, "{body}");
            serde_json::from_str(&body).expect("JSON")
        })
        .collect();
    let states: Vec<&str> = leases
        .iter()
        .map(|l| l["state"].as_str().unwrap_or(""))
        .collect();
    assert!(
        states.contains(&"leading") && states.contains(&"following"),
        "{leases:?}"
    );
    assert!(leases.iter().all(|l| l["term"] == 1), "{leases:?}");
    for child in children {
        stop(child);
    }
}

on_both_stores!(metrics_show_exactly_one_leader);

#[test]
fn store_requests_are_counted_in_the_metrics_on_s3() {
    let lock = Lock::s3("peer_store_requests");
    let port = free_port();
    let child = candidate(&lock, port, &[], Stdio::null());
    wait_for("the command to start", LIMIT, || {
        lock.path("leading").exists()
    });
    let (code, body) = get(port, "/metrics", None).expect("an answer");
    assert_eq!(code, 200);
    let samples = parse_prometheus(&body);
    assert!(
        sum(&samples, "s3lead_store_requests_total") >= 1.0,
        "the acquisition's requests: {body}"
    );
    stop(child);
}

#[test]
fn the_endpoint_asks_for_the_token_and_never_logs_it() {
    let lock = Lock::file();
    let token = "s3cr3t-t0ken-4f9a1c";
    let token_file = lock.path("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write token");
    let port = free_port();
    let log = lock.path("stderr");
    let child = candidate(
        &lock,
        port,
        &[
            "-vv",
            "--peer-token-file",
            token_file.to_str().expect("utf-8"),
        ],
        Stdio::from(std::fs::File::create(&log).expect("log file")),
    );
    wait_for("the endpoint to answer", LIMIT, || {
        get(port, "/healthz", None).is_some()
    });
    assert_eq!(
        get(port, "/healthz", None).map(|a| a.0),
        Some(200),
        "probes need no token"
    );
    for path in ["/metrics", "/v1/lease"] {
        assert_eq!(
            get(port, path, None).map(|a| a.0),
            Some(401),
            "{path} without a token"
        );
        assert_eq!(
            get(port, path, Some("wrong")).map(|a| a.0),
            Some(401),
            "{path} with a wrong token"
        );
        assert_eq!(
            get(port, path, Some(token)).map(|a| a.0),
            Some(200),
            "{path}"
        );
    }
    stop(child);
    let stderr = e2e::read(&log);
    assert!(stderr.contains("peer endpoint listening"), "{stderr}");
    assert!(!stderr.contains(token), "the token was logged: {stderr}");
}

#[test]
fn an_empty_token_file_is_refused_before_any_request() {
    let lock = Lock::file();
    let token_file = lock.path("token");
    std::fs::write(&token_file, "\n").expect("write token");
    let f = lock.refused_run(&[
        "--peer-listen",
        "127.0.0.1:0",
        "--peer-token-file",
        token_file.to_str().expect("utf-8"),
        "-c",
        "true",
    ]);
    assert!(
        f.stderr.contains("--peer-token-file") && f.stderr.contains(&lock.url),
        "{}",
        f.stderr
    );
}

// ---- Peer mode: a follower long-polls the leader's advertised endpoint -------------

/// A leader in peer mode: it serves its endpoint on `port` and advertises `advertise`
/// (its own endpoint unless a test points followers elsewhere). Its command touches
/// `leading` and sleeps.
fn peer_leader(lock: &Lock, timings: &[&str], port: u16, advertise: &str, log: &str) -> Child {
    let listen = format!("127.0.0.1:{port}");
    let cmd = format!("touch {}; exec sleep 600", lock.path("leading").display());
    lock.run_timed(
        timings,
        &[
            "--id",
            "leader",
            "--peer-listen",
            &listen,
            "--advertise",
            advertise,
            "-c",
            &cmd,
        ],
    )
    .stderr(std::fs::File::create(lock.path(log)).expect("log file"))
    .spawn()
    .expect("spawn the leader")
}

/// A follower (no endpoint of its own) whose command touches `took-over`; `--stats`
/// reports its requests to the store at exit.
fn peer_follower(lock: &Lock, timings: &[&str], extra: &[&str], log: &str) -> Child {
    let cmd = format!("touch {}", lock.path("took-over").display());
    let mut args = vec!["--id", "follower", "--stats", "--no-verify-store"];
    args.extend(extra);
    args.extend(["-c", &cmd]);
    lock.run_timed(timings, &args)
        .stderr(std::fs::File::create(lock.path(log)).expect("log file"))
        .spawn()
        .expect("spawn the follower")
}

/// The `--stats` line's counters, from a JSON log.
fn stats(log: &str) -> serde_json::Value {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("requests:"))
        })
        .unwrap_or_else(|| panic!("one --stats line: {log}"))["fields"]
        .clone()
}

/// Reads of the store in a `--stats` line: GETs answered with the object, 304s and 404s.
fn reads(stats: &serde_json::Value) -> u64 {
    ["get", "not_modified", "missing"]
        .iter()
        .map(|k| stats[k].as_u64().expect("a count"))
        .sum()
}

/// Seconds from RFC 3339 `a` to `b`.
fn seconds_between(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    let t = |v: &serde_json::Value| {
        humantime::parse_rfc3339(v.as_str().expect("a time")).expect("RFC 3339")
    };
    t(b).duration_since(t(a))
        .map(|d| d.as_secs_f64())
        .unwrap_or_else(|e| -e.duration().as_secs_f64())
}

/// While the leader renews (every second, a 4 s lease), a follower in peer mode learns
/// each renewal from the leader's endpoint and reads the store once, to find the record
/// and its advertised URL; without peer mode it would read it every second.
#[test]
fn a_peer_mode_follower_makes_no_store_read_while_the_leader_lives_on_s3() {
    let lock = Lock::s3("peer_no_reads");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let leader = peer_leader(&lock, e2e::FAST, port, &url, "leader.log");
    wait_for("the leader's command", LIMIT, || {
        lock.path("leading").exists()
    });
    let seq0 = lock.record()["seq"].as_u64().expect("seq");
    let mut follower = peer_follower(&lock, e2e::FAST, &["-w", "10s"], "follower.log");
    let st = wait_exit(&mut follower, LIMIT);
    let log = e2e::read(&lock.path("follower.log"));
    assert_eq!(st.code(), Some(s3lead::exit::CONFLICT), "{log}");
    let seq1 = lock.record()["seq"].as_u64().expect("seq");
    assert!(
        seq1 >= seq0 + 5,
        "the leader renewed meanwhile ({seq0} → {seq1})"
    );
    assert!(
        log.contains(&format!(
            "following the holder through its peer endpoint {url}"
        )),
        "{log}"
    );
    let s = stats(&log);
    // The first read finds the record; one poll may come before the peer's first answer.
    assert!(reads(&s) <= 2, "store reads while the leader lived: {s}");
    assert_eq!(s["put"], 0, "{s}");
    assert!(!lock.path("took-over").exists());
    assert_eq!(lock.record()["term"], 1);
    stop(leader);
}

/// With an hour's lease and ten minutes between the follower's polls, only the
/// leader's endpoint can tell the follower of a release in time: its long-poll answers
/// when the leader stops leading, and the follower reads the store and takes over at
/// once (two reads in all: the first, and the one after the release).
#[test]
fn a_graceful_stop_in_peer_mode_hands_over_without_waiting_a_poll_on_s3() {
    let lock = Lock::s3("peer_handoff");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut leader = peer_leader(&lock, e2e::SLOW, port, &url, "leader.log");
    wait_for("the leader's command", LIMIT, || {
        lock.path("leading").exists()
    });
    let mut follower = peer_follower(&lock, e2e::SLOW, &[], "follower.log");
    wait_for("the follower to follow through the peer", LIMIT, || {
        e2e::read(&lock.path("follower.log"))
            .contains("following the holder through its peer endpoint")
    });
    send_signal(leader.id(), "TERM");
    let st = wait_exit(&mut leader, LIMIT);
    assert_eq!(
        st.code(),
        Some(143),
        "{}",
        e2e::read(&lock.path("leader.log"))
    );
    wait_for("the follower to take over the release", LIMIT, || {
        lock.path("took-over").exists()
    });
    let st = wait_exit(&mut follower, LIMIT);
    let log = e2e::read(&lock.path("follower.log"));
    assert_eq!(st.code(), Some(0), "{log}");
    let record = lock.record();
    assert_eq!(record["term"], 2, "{record}");
    assert_eq!(record["holder"], "follower", "{record}");
    let s = stats(&log);
    // On a store that refuses a quoted If-Match (Ceph RGW), the takeover's first PUT is
    // answered 412 and one more read tells the quirk: that read is not a poll.
    let quirk = s["precondition_failed"].as_u64().unwrap_or(0);
    assert_eq!(
        reads(&s),
        2 + quirk,
        "the first read and the one after the release: {s}"
    );
}

/// `kill -9` of a leader in peer mode: its endpoint goes with it, the follower falls
/// back to the store at once, and still takes over only once the leader's last write
/// has gone unrenewed for a whole lease (by the record's own wall-clock times, on this
/// one host: a lower bound, which a slow machine can only lengthen).
#[test]
fn takeover_after_kill_9_of_a_peer_mode_leader_still_waits_the_lease_on_s3() {
    let lock = Lock::s3("peer_kill9");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut leader = peer_leader(&lock, e2e::FAST, port, &url, "leader.log");
    wait_for("the leader's command", LIMIT, || {
        lock.path("leading").exists()
    });
    let mut follower = peer_follower(&lock, e2e::FAST, &[], "follower.log");
    wait_for("the follower to follow through the peer", LIMIT, || {
        e2e::read(&lock.path("follower.log"))
            .contains("following the holder through its peer endpoint")
    });
    send_signal(leader.id(), "KILL");
    let _ = wait_exit(&mut leader, LIMIT);
    let last = lock.record();
    assert_eq!(
        last["term"], 1,
        "not taken over while the leader's lease ran: {last}"
    );
    wait_for("the follower to take over", LIMIT, || {
        lock.path("took-over").exists()
    });
    let st = wait_exit(&mut follower, LIMIT);
    let log = e2e::read(&lock.path("follower.log"));
    assert_eq!(st.code(), Some(0), "{log}");
    let record = lock.record();
    assert_eq!(record["term"], 2, "{record}");
    let waited = seconds_between(&last["renewed_at"], &record["acquired_at"]);
    assert!(
        waited >= 4.0,
        "took over {waited} s after the last renewal (lease 4 s)"
    );
    let fell_back = log.find("does not answer as leader; reading the store");
    let elected = log.find("\"elected\"").or_else(|| log.find("elected"));
    assert!(fell_back.is_some() && fell_back < elected, "{log}");
}

/// A stand-in for a peer endpoint that lies: it answers every long-poll at once, as
/// leader, with whatever ETag the test put in `etag`.
struct LyingPeer {
    port: u16,
    etag: std::sync::Arc<std::sync::Mutex<String>>,
}

impl LyingPeer {
    fn start(etag: &str) -> LyingPeer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let etag = std::sync::Arc::new(std::sync::Mutex::new(etag.to_owned()));
        let shared = etag.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let etag = shared.lock().expect("etag").clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let body = serde_json::json!({
                        "state": "leading", "is_leader": true, "term": 1, "etag": etag,
                    })
                    .to_string();
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        LyingPeer { port, etag }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn answer(&self, etag: &str) {
        *self.etag.lock().expect("etag") = etag.to_owned();
    }
}

/// The lock object's ETag now, as the store gives it.
fn current_etag(lock: &Lock) -> String {
    let (bucket, key) = lock.s3.clone().expect("an S3 lock");
    e2e::block_on(async {
        let c = support::s3_client().await;
        let head = c
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("head");
        head.e_tag().expect("an ETag").trim_matches('"').to_owned()
    })
}

/// The leader's record advertises a peer that lies (`first` is what it answers while the
/// leader lives; once the leader is killed, it answers `then`, or the leader's last
/// ETag: "alive", as a leader whose writes are blackholed would). The follower must not
/// take over while the real leader renews (it keeps its lease and its term), and must
/// take over once the leader is dead, after its lease.
fn a_lying_peer_cannot_hasten_or_stop_a_takeover(
    lock: Lock,
    first: Option<&str>,
    then: Option<&str>,
) {
    let port = free_port();
    let stale = "0123456789abcdef0123456789abcdef";
    let liar = LyingPeer::start(stale);
    let mut leader = peer_leader(&lock, e2e::FAST, port, &liar.url(), "leader.log");
    wait_for("the leader's command", LIMIT, || {
        lock.path("leading").exists()
    });
    // Stale: the first record's ETag, out of date at the leader's next renewal.
    let first = first.map_or_else(|| current_etag(&lock), str::to_owned);
    liar.answer(&first);
    let seq0 = lock.record()["seq"].as_u64().expect("seq");
    let mut follower = peer_follower(&lock, e2e::FAST, &[], "follower.log");
    // Three leases of the leader's renewals (one a second, a 4 s lease).
    wait_for("the leader to renew for three leases", LIMIT, || {
        lock.record()["seq"]
            .as_u64()
            .is_some_and(|s| s >= seq0 + 12)
    });
    let record = lock.record();
    assert_eq!(record["term"], 1, "the leader keeps its term: {record}");
    assert_eq!(record["holder"], "leader", "{record}");
    assert!(
        !lock.path("took-over").exists(),
        "{}",
        e2e::read(&lock.path("follower.log"))
    );
    send_signal(leader.id(), "KILL");
    let _ = wait_exit(&mut leader, LIMIT);
    let last = lock.record();
    liar.answer(&then.map_or_else(|| current_etag(&lock), str::to_owned));
    wait_for(
        "the follower to take over from the dead leader",
        LIMIT,
        || lock.path("took-over").exists(),
    );
    let st = wait_exit(&mut follower, LIMIT);
    let log = e2e::read(&lock.path("follower.log"));
    assert_eq!(st.code(), Some(0), "{log}");
    let record = lock.record();
    assert_eq!(record["term"], 2, "{record}");
    let waited = seconds_between(&last["renewed_at"], &record["acquired_at"]);
    assert!(
        waited >= 4.0,
        "took over {waited} s after the last renewal (lease 4 s)"
    );
    drop(leader);
}

#[test]
fn a_peer_answering_a_stale_etag_cannot_hasten_or_stop_a_takeover_on_s3() {
    a_lying_peer_cannot_hasten_or_stop_a_takeover(
        Lock::s3("peer_stale"),
        None,
        Some("0123456789abcdef0123456789abcdef"),
    );
}

#[test]
fn a_peer_answering_a_foreign_etag_cannot_hasten_or_stop_a_takeover_on_s3() {
    a_lying_peer_cannot_hasten_or_stop_a_takeover(
        Lock::s3("peer_foreign"),
        Some("ffffffffffffffffffffffffffffffff"),
        Some("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"),
    );
}

/// After the leader is killed, the liar keeps saying it is alive with the leader's last
/// ETag, as the endpoint of a leader cut off from the store would: the takeover comes
/// after the lease, not later.
#[test]
fn a_peer_alive_but_not_renewing_cannot_stop_a_takeover_on_s3() {
    a_lying_peer_cannot_hasten_or_stop_a_takeover(Lock::s3("peer_frozen"), None, None);
}

/// `--advertise` must be an http:// URL: one line, the usage code, no request made.
#[test]
fn a_bad_advertise_url_is_refused() {
    let lock = Lock::file();
    let f = lock.refused_run(&[
        "--peer-listen",
        "127.0.0.1:0",
        "--advertise",
        "https://peer:9464",
        "-c",
        "true",
    ]);
    assert!(
        f.stderr.contains("--advertise") && f.stderr.contains(&lock.url),
        "{}",
        f.stderr
    );
}

/// The case peer mode must not make worse (S3lect's split brain): a leader alive, its
/// endpoint up and answering, but its store traffic blackholed. It cannot renew, so it
/// must stop its command and exit with the lost status; the follower, which talks to the
/// store directly, takes over, but only a whole lease after the leader's last renewal,
/// and only once the leader's command is gone.
#[test]
fn a_peer_mode_leader_cut_off_from_s3_is_taken_over_after_its_lease_on_s3() {
    let lock = Lock::s3("peer_cut_off");
    // A lease long enough that the leader lives on for seconds after the cut (its stop
    // point is two renewals' worth of retries away): renew 1 s + retry 500 ms +
    // kill-after 1 s + margin 1 s ≤ lease 8 s.
    let cut_off = e2e::fast_with_lease("8s");
    let proxy = Proxy::start(endpoint_addr(&support::s3_server().endpoint));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let leader_pid = lock.path("leader.pid");
    let mut leader = lock
        .run_timed(
            &cut_off,
            &[
                "--id",
                "leader",
                "--peer-listen",
                &listen,
                "--advertise",
                &url,
                "-c",
                &format!("echo $$ > {}; exec sleep 600", leader_pid.display()),
            ],
        )
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .stderr(std::fs::File::create(lock.path("leader.log")).expect("log file"))
        .spawn()
        .expect("spawn the leader");
    wait_for("the leader's command", LIMIT, || {
        e2e::read(&leader_pid).trim().parse::<i32>().is_ok()
    });
    // The follower's command asks whether the leader's command still runs as it starts.
    let saw = lock.path("follower-saw");
    let mut follower = lock
        .run_timed(
            &cut_off,
            &[
                "--id",
                "follower",
                "--no-verify-store",
                "-c",
                &format!(
                    "if kill -0 \"$(cat {})\" 2>/dev/null; then echo alive; else echo gone; fi > {}",
                    leader_pid.display(),
                    saw.display()
                ),
            ],
        )
        .stderr(std::fs::File::create(lock.path("follower.log")).expect("log file"))
        .spawn()
        .expect("spawn the follower");
    wait_for("the follower to follow through the peer", LIMIT, || {
        e2e::read(&lock.path("follower.log"))
            .contains("following the holder through its peer endpoint")
    });
    proxy.set(Mode::Blackhole);
    let (code, body) = get(port, "/v1/lease", None).expect("the cut-off leader's endpoint answers");
    assert_eq!(code, 200, "{body}");
    let st = wait_exit(&mut leader, LIMIT);
    let leader_log = e2e::read(&lock.path("leader.log"));
    assert_eq!(st.code(), Some(s3lead::exit::LOST), "{leader_log}");
    assert!(
        leader_log.contains("sent SIGTERM to the command"),
        "the leader stopped its command: {leader_log}"
    );
    // Its writes since the cut were dropped: this is its last renewal.
    let last = lock.record();
    assert_eq!(
        (&last["term"], &last["holder"]),
        (&1.into(), &"leader".into()),
        "not taken over while the leader's lease ran: {last}"
    );
    let st = wait_exit(&mut follower, LIMIT);
    let log = e2e::read(&lock.path("follower.log"));
    assert_eq!(st.code(), Some(0), "{log}");
    assert_eq!(
        e2e::read(&saw),
        "gone\n",
        "the leader's command was gone when the follower's started"
    );
    let record = lock.record();
    assert_eq!(
        (&record["term"], &record["holder"]),
        (&2.into(), &"follower".into()),
        "{record}"
    );
    let waited = seconds_between(&last["renewed_at"], &record["acquired_at"]);
    assert!(
        waited >= 8.0,
        "took over {waited} s after the leader's last renewal (lease 8 s): {log}"
    );
}
