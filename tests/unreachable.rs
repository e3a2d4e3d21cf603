//! End-to-end tests of a store that cannot be reached or can never work, as a new user
//! meets it with a mistyped or misconfigured endpoint: each cause is said in one line
//! (once, however many retries), what cannot get better ends the run with its exit
//! status, and a store that comes back is used without a restart.

#[macro_use]
mod e2e;
mod support;

use e2e::fake_s3::{self, Reply};
use e2e::proxy::{Proxy, endpoint_addr};
use e2e::{Finished, Lock, finish, read, wait_exit, wait_for};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A lock on an S3 endpoint of the test's choosing, with credentials that need no
/// server (nothing here gets as far as checking them).
fn run_against(endpoint: &str, extra: &[&str]) -> Command {
    let mut c = e2e::s3lead();
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("S3LEAD_LOG_FORMAT", "json")
        .arg("-v")
        .arg("run")
        .args(e2e::FAST)
        .args(["--endpoint-url", endpoint])
        .args(extra)
        .args(["s3://lease/locks/unreachable", "--", "true"]);
    c
}

/// Log lines at `level`.
fn at_level(f: &Finished, level: &str) -> Vec<String> {
    f.logs()
        .into_iter()
        .filter(|l| l["level"] == level)
        .filter_map(|l| l["fields"]["message"].as_str().map(str::to_owned))
        .collect()
}

/// The retries after the first failure, as the debug log counts them.
fn retries(f: &Finished) -> usize {
    at_level(f, "DEBUG")
        .iter()
        .filter(|m| m.contains("request failed again"))
        .count()
}

/// A port on 127.0.0.1 where nothing listens (bound, then let go).
fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], e2e::free_port()))
}

/// A store that does not answer is retried until `-w` ends the wait: one WARN line
/// naming the endpoint and the cause however many retries, then exit 75 with the cause.
fn said_once_then_timed_out(endpoint: &str, cause: &str) {
    let f = finish(run_against(endpoint, &["-w", "3s"]), LIMIT);
    assert_eq!(f.code, Some(75), "{}", f.stderr);
    let warns = at_level(&f, "WARN");
    assert_eq!(warns.len(), 1, "one line, not one per retry: {warns:#?}");
    assert!(warns[0].contains(endpoint), "{}", warns[0]);
    assert!(warns[0].contains(cause), "{}", warns[0]);
    assert!(warns[0].contains("retrying every 500ms"), "{}", warns[0]);
    assert!(
        retries(&f) >= 2,
        "several retry periods passed: {}",
        f.stderr
    );
    let last = f.final_lines();
    assert_eq!(last.len(), 1, "{}", f.stderr);
    assert!(
        last[0].contains("the wait timed out before the store answered"),
        "{}",
        last[0]
    );
    assert!(
        last[0].contains(cause),
        "the cause, not only 'timed out': {}",
        last[0]
    );
    assert!(
        last[0].contains("s3://lease/locks/unreachable"),
        "{}",
        last[0]
    );
}

#[test]
fn a_port_where_nothing_listens_is_said_once_and_retried() {
    let endpoint = format!("http://{}", free_port());
    said_once_then_timed_out(&endpoint, "connection refused");
}

#[test]
fn a_host_name_that_does_not_resolve_is_said_once_and_retried() {
    said_once_then_timed_out(
        "http://no-such-host.invalid:9000",
        "cannot resolve the host name",
    );
}

/// One final line naming the lock and `words`, exit `code`, no WARN, no retry.
fn ends_at_once(f: &Finished, code: i32, words: &[&str]) {
    assert_eq!(f.code, Some(code), "{}", f.stderr);
    assert!(at_level(f, "WARN").is_empty(), "{}", f.stderr);
    assert_eq!(retries(f), 0, "no retry: {}", f.stderr);
    let errors = f.final_lines();
    assert_eq!(errors.len(), 1, "{}", f.stderr);
    assert!(
        errors[0].contains("s3://lease/locks/unreachable"),
        "{}",
        errors[0]
    );
    for w in words {
        assert!(errors[0].contains(w), "{w:?} in {}", errors[0]);
    }
}

#[test]
fn an_http_server_that_is_not_s3_ends_the_run_saying_what_came_back() {
    let server = fake_s3::serve(|_| Reply::Full {
        status: 404,
        headers: vec![("Content-Type".into(), "text/html".into())],
        body: b"<html><body>Not Found</body></html>".to_vec(),
    });
    let f = finish(run_against(&server.endpoint, &[]), LIMIT);
    ends_at_once(
        &f,
        69,
        &[&server.endpoint, "HTTP 404 with text/html", "not an S3"],
    );
    assert!(!f.stderr.contains("conditional writes"), "{}", f.stderr);
}

#[test]
fn an_endpoint_url_that_is_not_valid_ends_the_run_before_any_request() {
    let f = finish(run_against("http://minio:ninethousand", &[]), LIMIT);
    ends_at_once(&f, 69, &["endpoint URL", "not valid", "port"]);
}

/// `openssl`, or a failure saying to install it.
fn openssl(args: &[&str], dir: &std::path::Path) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("this test needs the openssl command (install openssl): {e}"));
    assert!(st.success(), "openssl {args:?}");
}

#[test]
fn a_certificate_the_system_does_not_trust_ends_the_run_naming_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
        ],
        dir.path(),
    );
    let addr = free_port();
    let mut server = Command::new("openssl")
        .args([
            "s_server", "-quiet", "-www", "-cert", "cert.pem", "-key", "key.pem",
        ])
        .args(["-accept", &addr.port().to_string()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("this test needs the openssl command (install openssl)");
    wait_for("the TLS server to listen", LIMIT, || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    let endpoint = format!("https://127.0.0.1:{}", addr.port());
    let f = finish(run_against(&endpoint, &[]), LIMIT);
    let _ = server.kill();
    let _ = server.wait();
    ends_at_once(
        &f,
        69,
        &[&endpoint, "TLS certificate", "not trusted", "SSL_CERT_FILE"],
    );
}

/// A store that refuses connections at first (not started yet) and then comes up is
/// used by the same run: one WARN line, one line saying it answers again, then the
/// command runs.
fn a_store_that_comes_back_is_used_without_a_restart(lock: Lock) {
    let listen = free_port();
    let endpoint = format!("http://{listen}");
    let log = lock.path("log");
    let ran = lock.path("ran");
    let mut c = lock.run(&["--endpoint-url", &endpoint]);
    c.arg("-c")
        .arg(format!("touch {}", ran.display()))
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut child = c.spawn().expect("spawn s3lead");
    wait_for("the WARN line about the refused connection", LIMIT, || {
        read(&log).contains("connection refused")
    });
    let upstream = endpoint_addr(&support::s3_server().endpoint);
    let _store = Proxy::start_on(listen, upstream);
    let st = wait_exit(&mut child, LIMIT);
    assert_eq!(st.code(), Some(0), "{}", read(&log));
    assert!(ran.exists(), "the command ran: {}", read(&log));
    let text = read(&log);
    let f = Finished {
        code: st.code(),
        stdout: String::new(),
        stderr: text.clone(),
    };
    let warns = at_level(&f, "WARN");
    assert_eq!(warns.len(), 1, "{warns:#?}");
    assert!(warns[0].contains(&endpoint), "{}", warns[0]);
    let order: Vec<usize> = ["connection refused", "the store answers again", "elected"]
        .iter()
        .map(|w| {
            text.find(w)
                .unwrap_or_else(|| panic!("{w:?} in the log: {text}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(text.matches("the store answers again").count(), 1, "{text}");
}

#[test]
fn a_store_that_comes_back_is_used_without_a_restart_on_s3() {
    a_store_that_comes_back_is_used_without_a_restart(Lock::s3("comes_back"));
}
