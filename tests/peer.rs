//! End-to-end tests of the endpoint of `s3lead run --peer-listen`: the built binary,
//! asked over HTTP on 127.0.0.1 as a monitoring system would ask it. `/metrics` must
//! parse as Prometheus text and show one leader among the candidates; `/v1/lease` shows
//! the lease; a bearer token, when asked for, is required and never logged.

#[macro_use]
mod e2e;
mod support;

use e2e::{Lock, send_signal, wait_exit, wait_for};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

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
    let f = e2e::finish(
        lock.run(&[
            "--peer-listen",
            "127.0.0.1:0",
            "--peer-token-file",
            token_file.to_str().expect("utf-8"),
            "-c",
            "true",
        ]),
        LIMIT,
    );
    assert_eq!(f.code, Some(s3lead::exit::USAGE), "{}", f.stderr);
    assert!(
        f.stderr.contains("--peer-token-file") && f.stderr.contains(&lock.url),
        "{}",
        f.stderr
    );
    assert!(lock.bytes().is_none(), "no request was made");
}
