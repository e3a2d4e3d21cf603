//! Smoke test of the test harness (tests/support): the S3 server starts, has the bucket,
//! and honours the conditional writes s3lead is built on. If this fails, every other
//! `on_s3` test would fail for the same reason; this one says so first and plainly.

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
