//! End-to-end tests of `s3lead check`, the built binary as an operator runs it: it passes
//! on the file store and on the test S3 server (tests named `on_s3`; CI runs them again
//! against Ceph RGW, whose losers of an `If-Match` race get 500), it leaves the lock
//! object byte for byte as it was and no scratch key behind, and it refuses, with exit 78
//! and an UNSAFE verdict, two fake S3 servers run here on 127.0.0.1: one that ignores
//! conditional headers (Garage 2.5 ignores `If-None-Match`), and one that checks them
//! without atomicity, so that racing writers all pass the check (s3s-fs, moto now and
//! then).

#[macro_use]
mod e2e;
mod support;

use e2e::{Finished, Lock, finish};
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn check(url: &str, env: &[(String, String)], extra: &[&str]) -> Finished {
    let mut c = Command::new(env!("CARGO_BIN_EXE_s3lead"));
    c.arg("check").args(extra).arg(url);
    c.envs(env.iter().map(|(k, v)| (k, v)));
    finish(c, LIMIT)
}

/// The lock object's bytes as stored now, `None` if there is none.
fn raw_record(lock: &Lock) -> Option<Vec<u8>> {
    match (&lock.file, &lock.s3) {
        (Some(path), _) => std::fs::read(path).ok(),
        (None, Some((bucket, key))) => e2e::block_on(async {
            let client = support::s3_client().await;
            match client.get_object().bucket(bucket).key(key).send().await {
                Ok(o) => Some(o.body.collect().await.expect("body").into_bytes().to_vec()),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
                Err(e) => panic!("reading the lock object: {e:?}"),
            }
        }),
        (None, None) => unreachable!(),
    }
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
    assert_eq!(raw_record(&lock), None, "the check created the lock object");
    assert_eq!(keys_next_to_the_lock(&lock), Vec::<String>::new());

    // A lock that exists (released, term 1): the check leaves it byte for byte.
    let mut run = lock.run(&[]);
    run.args(["--", "true"]);
    let ran = finish(run, LIMIT);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let before = raw_record(&lock).expect("s3lead run wrote the lock object");
    let f = check(&lock.url, &lock.env, &["--json"]);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let v: serde_json::Value = serde_json::from_str(f.stdout.trim()).expect("one JSON object");
    assert_eq!(v["safe"], true, "{v}");
    assert_eq!(v["lock"], lock.url.as_str());
    let checks = v["checks"].as_array().expect("checks");
    assert!(checks.iter().all(|c| c["result"] != "fail"), "{checks:#?}");
    assert_eq!(
        raw_record(&lock),
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

fn fake_env(server: &fake::Server) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", server.endpoint.as_str()),
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
    let server = fake::serve(fake::Mode::IgnoresConditions);
    let url = "s3://lease/locks/nightly";
    let f = check(url, &fake_env(&server), &[]);
    let verdict = assert_unsafe(&f, url);
    assert!(
        verdict.contains("create (If-None-Match: *) on an existing key"),
        "the first failure is named: {verdict}"
    );
    assert!(verdict.contains("ignores If-None-Match"), "{verdict}");
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
    let requests = server.requests();
    assert!(requests.iter().any(|r| r.method == "DELETE"));
    assert_eq!(server.keys(), Vec::<String>::new(), "scratch keys left");
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.key.starts_with("locks/nightly.s3lead-check-"))
    );

    let f = check(url, &fake_env(&server), &["--json"]);
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
}

#[test]
fn check_refuses_a_store_whose_conditional_writes_race() {
    let server = fake::serve(fake::Mode::ChecksWithoutAtomicity);
    let url = "s3://lease/locks/racy";
    let f = check(url, &fake_env(&server), &[]);
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
    assert_eq!(sequential.len(), 7, "{}", f.stdout);
    assert!(
        sequential.iter().all(|l| l.starts_with("ok")),
        "{}",
        f.stdout
    );
    assert_eq!(server.keys(), Vec::<String>::new(), "scratch keys left");
}

/// A scripted S3 server with a bucket `lease`: path-style, one request per connection,
/// objects in memory. It honours nothing but the basics (no signatures checked).
mod fake {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Mode {
        /// Every PUT succeeds with a fresh ETag; `If-None-Match` on GET is ignored too.
        IgnoresConditions,
        /// Conditions are checked, then the write happens a little later without a lock,
        /// so that concurrent writers all pass the same check.
        ChecksWithoutAtomicity,
    }

    #[derive(Clone, Debug)]
    pub struct Request {
        pub method: String,
        /// Without the bucket and the query.
        pub key: String,
    }

    #[derive(Default)]
    struct State {
        objects: HashMap<String, (String, Vec<u8>)>,
        writes: u64,
        log: Vec<Request>,
    }

    pub struct Server {
        pub endpoint: String,
        state: Arc<Mutex<State>>,
    }

    impl Server {
        pub fn keys(&self) -> Vec<String> {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut keys: Vec<String> = state.objects.keys().cloned().collect();
            keys.sort();
            keys
        }

        pub fn requests(&self) -> Vec<Request> {
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .log
                .clone()
        }
    }

    pub fn serve(mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = answer(stream, mode, &state);
                });
            }
        });
        Server { endpoint, state }
    }

    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn status(status: u16) -> Reply {
            Reply {
                status,
                headers: vec![],
                body: vec![],
            }
        }

        fn error(status: u16, code: &str) -> Reply {
            Reply {
                status,
                headers: vec![("Content-Type", "application/xml".into())],
                body: format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
                     <Message>fake</Message><RequestId>1</RequestId></Error>"
                )
                .into_bytes(),
            }
        }

        fn with_etag(status: u16, etag: &str, body: Vec<u8>) -> Reply {
            Reply {
                status,
                headers: vec![("ETag", etag.to_owned())],
                body,
            }
        }
    }

    fn unquoted(etag: &str) -> &str {
        etag.trim_matches('"')
    }

    fn handle(
        mode: Mode,
        state: &Mutex<State>,
        method: &str,
        key: &str,
        headers: &HashMap<String, String>,
        body: Vec<u8>,
    ) -> Reply {
        let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
        let current = lock().objects.get(key).cloned();
        match method {
            "GET" | "HEAD" => match current {
                None => Reply::error(404, "NoSuchKey"),
                Some((etag, _))
                    if mode == Mode::ChecksWithoutAtomicity
                        && headers
                            .get("if-none-match")
                            .is_some_and(|v| unquoted(v) == unquoted(&etag)) =>
                {
                    Reply::status(304)
                }
                Some((etag, data)) => Reply::with_etag(200, &etag, data),
            },
            "PUT" => {
                if mode == Mode::ChecksWithoutAtomicity {
                    let refused = match (
                        headers.get("if-none-match"),
                        headers.get("if-match"),
                        &current,
                    ) {
                        (Some(_), _, Some(_)) => Some(Reply::error(412, "PreconditionFailed")),
                        (_, Some(_), None) => Some(Reply::error(404, "NoSuchKey")),
                        (_, Some(sent), Some((etag, _))) if unquoted(sent) != unquoted(etag) => {
                            Some(Reply::error(412, "PreconditionFailed"))
                        }
                        _ => None,
                    };
                    if let Some(reply) = refused {
                        return reply;
                    }
                    // The flaw: the check above and the write below are not one step.
                    std::thread::sleep(Duration::from_millis(30));
                }
                let mut state = lock();
                state.writes += 1;
                let etag = format!("\"fake{}\"", state.writes);
                state.objects.insert(key.to_owned(), (etag.clone(), body));
                Reply::with_etag(200, &etag, vec![])
            }
            "DELETE" => {
                lock().objects.remove(key);
                Reply::status(204)
            }
            _ => Reply::status(405),
        }
    }

    fn answer(stream: TcpStream, mode: Mode, state: &Mutex<State>) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default();
        let path = target.split('?').next().unwrap_or_default();
        let key = path.strip_prefix("/lease/").unwrap_or(path).to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log
            .push(Request {
                method: method.clone(),
                key: key.clone(),
            });
        let reply = handle(mode, state, &method, &key, &headers, body);
        let mut head = format!("HTTP/1.1 {} Fake\r\nConnection: close\r\n", reply.status);
        for (name, value) in &reply.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = if reply.status == 304 || method == "HEAD" {
            vec![]
        } else {
            reply.body
        };
        if reply.status != 304 {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = stream;
        out.write_all(head.as_bytes())?;
        out.write_all(&body)?;
        out.flush()
    }
}
