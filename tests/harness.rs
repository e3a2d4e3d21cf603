//! Smoke test of the test harness (tests/support): the S3 server starts, has the bucket,
//! and honours the conditional writes s3lead is built on. If this fails, every other
//! `on_s3` test would fail for the same reason; this one says so first and plainly.
//!
//! Also the home of the benchmark's request counter ([`count_proxy`]), the test kit's
//! HTTP proxy run on its own, and of the test that it counts.

mod e2e;
mod support;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectOutput};
use aws_sdk_s3::primitives::ByteStream;

type PutResult =
    Result<PutObjectOutput, SdkError<PutObjectError, aws_sdk_s3::config::http::HttpResponse>>;

/// The HTTP status of a service error (the server answered), else a panic with the error:
/// a timeout or a connection failure is a broken harness, not a test outcome.
fn status(result: &PutResult) -> u16 {
    match result {
        Ok(_) => 200,
        Err(SdkError::ServiceError(e)) => e.raw().status().as_u16(),
        Err(e) => panic!("no answer from the S3 server: {e:?}"),
    }
}

#[tokio::test]
async fn harness_starts_the_server_on_s3() {
    let server = support::s3_server();
    let client = support::s3_client().await;
    let key = support::unique_key("harness");
    let put = |body: &'static str| {
        client
            .put_object()
            .bucket(&server.bucket)
            .key(&key)
            .body(ByteStream::from_static(body.as_bytes()))
    };

    // Create-if-absent: the first wins, the second is refused with 412.
    let created = put("one").if_none_match("*").send().await;
    assert_eq!(
        status(&created),
        200,
        "{} ({}): first If-None-Match: * PUT: {created:?}",
        server.kind,
        server.endpoint
    );
    let etag = created.unwrap().e_tag.expect("PUT returned an ETag");
    let again = put("two").if_none_match("*").send().await;
    assert_eq!(
        status(&again),
        412,
        "{}: second If-None-Match: * PUT must fail: {again:?}",
        server.kind
    );

    // Replace-if-match with the ETag as returned (quoted). RGW accepts only the bare
    // ETag there, hence the unquoted retry; any other answer is a failure.
    let mut replaced = put("three").if_match(&etag).send().await;
    if status(&replaced) == 412 {
        replaced = put("three").if_match(etag.trim_matches('"')).send().await;
    }
    assert_eq!(
        status(&replaced),
        200,
        "{}: If-Match PUT with the current ETag {etag}: {replaced:?}",
        server.kind
    );

    let got = client
        .get_object()
        .bucket(&server.bucket)
        .key(&key)
        .send()
        .await
        .expect("GET the object");
    let body = got
        .body
        .collect()
        .await
        .expect("read the body")
        .into_bytes();
    assert_eq!(&body[..], b"three");

    // What a spawned s3lead gets points at the same server.
    let env = support::s3_env();
    assert!(
        env.contains(&("AWS_ENDPOINT_URL".into(), server.endpoint.clone())),
        "{env:?}"
    );
}

/// The S3 endpoint (`http://IP:PORT`) the benchmark's counting proxy forwards to.
const COUNT_PROXY_UPSTREAM: &str = "S3LEAD_COUNT_PROXY_UPSTREAM";
/// The file it appends its request lines to.
const COUNT_PROXY_LOG: &str = "S3LEAD_COUNT_PROXY_LOG";

/// The benchmark's request counter: bench/bench.py runs this test binary with
/// `--exact count_proxy --nocapture` and both variables above set. It then starts the
/// test kit's HTTP proxy with its request log, prints `count-proxy-port PORT` once it
/// listens, and serves until killed. Without them it is a no-op test.
#[test]
fn count_proxy() {
    let Ok(upstream) = std::env::var(COUNT_PROXY_UPSTREAM) else {
        return;
    };
    let log = std::env::var(COUNT_PROXY_LOG).expect("S3LEAD_COUNT_PROXY_LOG names the log");
    let proxy = e2e::http_fault::HttpFaultProxy::start(e2e::proxy::endpoint_addr(&upstream));
    proxy.log_to(std::path::Path::new(&log));
    println!("count-proxy-port {}", proxy.addr.port());
    loop {
        std::thread::park();
    }
}

/// The request log the benchmark counts by: a run through the proxy logs each of its
/// requests once answered, as `<monotonic seconds> <METHOD> <STATUS> <PATH>`, with the
/// lock's key in the path; a run that takes the lease and releases it writes at least
/// one PUT that succeeds, and no request goes unanswered.
#[test]
fn the_request_log_names_every_request_on_s3() {
    let lock = e2e::Lock::s3("count");
    let server = support::s3_server();
    let proxy = e2e::http_fault::HttpFaultProxy::start(e2e::proxy::endpoint_addr(&server.endpoint));
    let log = lock.path("requests");
    proxy.log_to(&log);
    let mut c = lock.run(&[]);
    c.args(["--", "true"])
        .env("AWS_ENDPOINT_URL", proxy.endpoint());
    let f = e2e::finish(c, std::time::Duration::from_secs(60));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let lines = e2e::read(&log);
    let key = &lock.s3.as_ref().expect("an S3 lock").1;
    let mut answered = Vec::new();
    for line in lines.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "time, method, status, path: {line}");
        assert!(
            fields[0].parse::<f64>().is_ok(),
            "a time in seconds: {line}"
        );
        assert!(fields[3].contains(key.as_str()), "the lock's key: {line}");
        answered.push((fields[1], fields[2]));
    }
    assert!(answered.contains(&("PUT", "200")), "{lines}");
    assert!(answered.iter().all(|&(_, s)| s != "000"), "{lines}");
}
