//! The store contract (`LockStore`), run against every store: the memory store, the file
//! store and the S3 store against the test S3 server. Tests that need the S3 server have
//! `on_s3` in their name (CI re-runs `-- on_s3` against Ceph RGW).
//!
//! The conditional-write contract is asserted by the library's own probe, the one that
//! `s3lead check` runs (`store::contract`), on scratch keys next to the lock; what the
//! probe does not look at (the exact answers, the read side, ETags in other quoting) is
//! asserted here on the lock object itself.
//!
//! The S3 store's handling of answers that the test servers do not give on demand
//! (304 without an error code, 5xx, throttling, RGW's refusal of quoted ETags, bodies
//! without a length, a server that never answers) is checked against the scripted fake
//! S3 server of `e2e::fake_s3` at the end of this file.

mod e2e;
mod support;

use e2e::fake_s3;
use s3lead::store::contract::{Finding, Outcome, Probe, ScratchStore, Verdict};
use s3lead::store::file::FileStore;
use s3lead::store::memory::MemoryStore;
use s3lead::store::s3::{S3Options, S3Store};
use s3lead::store::{
    AnyStore, Etag, FatalKind, LockStore, MAX_RECORD_BYTES, ReadReply, StoreError,
};
use std::time::Duration;

/// Every write of s3lead changes the bytes (`seq`), so every body here differs too.
fn body(seq: u32) -> Vec<u8> {
    format!(r#"{{"v":1,"term":1,"lease_id":"contract","seq":{seq}}}"#).into_bytes()
}

/// An ETag no store will have given out.
fn foreign_etag() -> Etag {
    Etag::new("\"0123456789abcdef0123456789abcdef\"")
}

fn fatal_kind(e: &StoreError) -> Option<FatalKind> {
    match e {
        StoreError::Fatal(kind, _) => Some(*kind),
        _ => None,
    }
}

async fn found<S: LockStore>(store: &S, known: Option<&Etag>) -> (Etag, Vec<u8>) {
    match store.read(known).await {
        Ok(ReadReply::Found { etag, body }) => (etag, body),
        other => panic!("expected Found, got {other:?}"),
    }
}

/// The contract every store keeps, next to a lock object that does not exist yet: the
/// probe of `s3lead check` finds nothing wrong, leaves the lock object alone, and then
/// the lock object answers as [`answers`] wants. Returns the probe's findings.
async fn contract<S: ScratchStore>(store: &S) -> Vec<Finding> {
    let mut findings = Vec::new();
    let verdict = Probe::new(store, 3, 4).run(&mut |f| findings.push(f)).await;
    assert!(
        matches!(verdict, Verdict::Kept),
        "{verdict:?}\n{findings:#?}"
    );
    assert!(
        findings.iter().all(|f| f.outcome != Outcome::Fail),
        "{findings:#?}"
    );
    // The clock, checks 1 to 7 one at a time, then the two kinds of race.
    assert_eq!(findings.len(), 10, "{findings:#?}");
    assert_eq!(
        store.read(None).await,
        Ok(ReadReply::Missing),
        "the probe never touches the lock object"
    );
    answers(store).await;
    findings
}

/// What the probe does not look at, on a lock object that does not exist yet: the exact
/// answer to each refused write (the probe also takes a 409), the reads (conditional on
/// a missing object, on an old ETag, on the ETag in other quoting), and ETags that never
/// repeat over two replaces. That a refused write leaves the content alone and that a
/// replace gives a new ETag, the probe has asserted already.
async fn answers<S: LockStore>(store: &S) {
    assert_eq!(store.read(None).await, Ok(ReadReply::Missing));
    assert_eq!(
        store.read(Some(&foreign_etag())).await,
        Ok(ReadReply::Missing),
        "a conditional read of a missing object"
    );

    let e1 = store.create(body(1)).await.expect("create");
    assert_eq!(
        store.create(body(2)).await,
        Err(StoreError::PreconditionFailed),
        "a second create"
    );
    let (etag, got) = found(store, None).await;
    assert_eq!(etag, e1, "read gives the ETag that create returned");
    assert_eq!(got, body(1), "the first create's body, not the second's");

    assert_eq!(store.read(Some(&e1)).await, Ok(ReadReply::NotModified));
    // The same ETag in another quoting is the same ETag.
    assert_eq!(
        store.read(Some(&Etag::new(e1.normalized()))).await,
        Ok(ReadReply::NotModified),
        "a conditional read with the ETag unquoted"
    );
    let (etag, got) = found(store, Some(&foreign_etag())).await;
    assert_eq!((etag, got), (e1.clone(), body(1)));

    assert_eq!(
        store.replace(&foreign_etag(), body(2)).await,
        Err(StoreError::PreconditionFailed),
        "a replace with a wrong ETag"
    );

    let e2 = store
        .replace(&e1, body(2))
        .await
        .expect("replace with the current ETag");
    assert_eq!(found(store, None).await, (e2.clone(), body(2)));
    assert_eq!(
        found(store, Some(&e1)).await,
        (e2.clone(), body(2)),
        "a conditional read with an old ETag"
    );
    assert_eq!(store.read(Some(&e2)).await, Ok(ReadReply::NotModified));

    assert_eq!(
        store.replace(&e1, body(3)).await,
        Err(StoreError::PreconditionFailed),
        "a replace with the old ETag"
    );

    let e3 = store.replace(&e2, body(3)).await.expect("a second replace");
    assert!(
        e3 != e2 && e3 != e1,
        "ETags never repeat here: {e1} {e2} {e3}"
    );
    assert_eq!(found(store, None).await, (e3.clone(), body(3)));
    assert_eq!(
        store.create(body(4)).await,
        Err(StoreError::PreconditionFailed),
        "create over an existing object"
    );
    assert_eq!(found(store, None).await, (e3, body(3)));
}

/// After `write_raw` put `MAX_RECORD_BYTES` bytes behind the store's back, reads work;
/// after one byte more, every read is `Fatal(TooLarge)`.
async fn size_limit_contract<S, W, F>(store: &S, write_raw: W)
where
    S: LockStore,
    W: Fn(Vec<u8>) -> F,
    F: Future<Output = ()>,
{
    let limit = usize::try_from(MAX_RECORD_BYTES).expect("the limit fits in memory");
    write_raw(vec![b' '; limit]).await;
    let (etag, got) = found(store, None).await;
    assert_eq!(
        got.len(),
        limit,
        "an object of exactly the limit is readable"
    );

    write_raw(vec![b'x'; limit + 1]).await;
    for known in [None, Some(&etag), Some(&foreign_etag())] {
        match store.read(known).await {
            Err(e) => assert_eq!(fatal_kind(&e), Some(FatalKind::TooLarge), "{e}"),
            Ok(reply) => panic!("read an oversized object (known: {known:?}): {reply:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Memory and file stores.

#[tokio::test(flavor = "current_thread")]
async fn memory_store_keeps_the_contract() {
    let store = MemoryStore::new();
    let findings = contract(&store).await;
    assert!(
        findings.iter().all(|f| f.outcome == Outcome::Ok),
        "the reference store keeps every check without a warning: {findings:#?}"
    );
    assert_eq!(
        store.scratch_keys(),
        Vec::<String>::new(),
        "scratch keys left"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn file_store_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lock.json");
    let findings = contract(&AnyStore::File(FileStore::open(&path).expect("open"))).await;
    assert!(
        findings.iter().all(|f| f.outcome == Outcome::Ok),
        "{findings:#?}"
    );
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list the lock's directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["lock.json", "lock.json.flock"], "scratch files left");
}

#[tokio::test(flavor = "current_thread")]
async fn file_store_refuses_an_oversized_lock_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lock.json");
    let store = FileStore::open(&path).expect("open");
    store.create(body(1)).await.expect("create");
    size_limit_contract(&store, |bytes| {
        let path = path.clone();
        async move { std::fs::write(&path, bytes).expect("write behind the store's back") }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The S3 store against the test S3 server.

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn s3_options(endpoint: &str) -> S3Options {
    S3Options {
        endpoint_url: Some(endpoint.to_owned()),
        region: Some(support::s3_server().region.clone()),
        profile: None,
        path_style: true,
        request_timeout: REQUEST_TIMEOUT,
    }
}

fn s3_credentials(secret_key: &str) -> aws_sdk_s3::config::Credentials {
    let server = support::s3_server();
    aws_sdk_s3::config::Credentials::new(&server.access_key, secret_key, None, None, "s3lead-test")
}

/// A store on `bucket` of the test server, with a fresh key.
async fn s3_store_in(bucket: &str, name: &str) -> S3Store {
    let server = support::s3_server();
    S3Store::connect_with_credentials(
        bucket,
        &support::unique_key(name),
        &s3_options(&server.endpoint),
        s3_credentials(&server.secret_key),
    )
    .await
    .expect("connect")
}

async fn s3_store(name: &str) -> S3Store {
    s3_store_in(&support::s3_server().bucket, name).await
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_keeps_the_contract_on_s3() {
    let store = s3_store("contract").await;
    contract(&AnyStore::S3(store)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_refuses_an_oversized_lock_object_on_s3() {
    let store = s3_store("too-large").await;
    store.create(body(1)).await.expect("create");
    let client = support::s3_client().await;
    size_limit_contract(&store, |bytes| {
        let put = client
            .put_object()
            .bucket(store.bucket())
            .key(store.key())
            .body(bytes.into());
        async move {
            put.send().await.expect("write behind the store's back");
        }
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_reports_a_missing_bucket_on_s3() {
    let bucket = "s3lead-no-such-bucket-7f3a9c";
    let store = s3_store_in(bucket, "no-bucket").await;
    for result in [
        store.read(None).await.map(|_| ()),
        store.create(body(1)).await.map(|_| ()),
        store.replace(&foreign_etag(), body(2)).await.map(|_| ()),
    ] {
        let e = result.expect_err("no such bucket");
        assert_eq!(fatal_kind(&e), Some(FatalKind::NoSuchBucket), "{e}");
        assert!(
            e.to_string().contains(bucket),
            "the message names the bucket: {e}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_reports_a_wrong_secret_key_on_s3() {
    let server = support::s3_server();
    // moto and LocalStack (without ENFORCE_IAM) accept any signature.
    let kind = server.kind.to_ascii_lowercase();
    if kind.contains("moto") || kind.contains("localstack") {
        eprintln!("skipped: {} does not check request signatures", server.kind);
        return;
    }
    let store = S3Store::connect_with_credentials(
        &server.bucket,
        &support::unique_key("wrong-secret"),
        &s3_options(&server.endpoint),
        s3_credentials("not-the-secret-key"),
    )
    .await
    .expect("connect");
    for result in [
        store.read(None).await.map(|_| ()),
        store.create(body(1)).await.map(|_| ()),
    ] {
        let e = result.expect_err("wrong secret key");
        assert_eq!(fatal_kind(&e), Some(FatalKind::Permission), "{e}");
        // The caller names the lock, once: the store's words leave the key out.
        assert!(
            !e.to_string().contains(store.key()),
            "the message leaves the key to the caller: {e}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_replace_on_a_missing_key_on_s3() {
    let store = s3_store("replace-missing").await;
    // AWS, MinIO and moto answer 404 NoSuchKey; Ceph RGW answers 412.
    let outcome = store.replace(&foreign_etag(), body(1)).await;
    assert!(
        matches!(
            outcome,
            Err(StoreError::Missing | StoreError::PreconditionFailed)
        ),
        "{outcome:?}"
    );
    assert_eq!(
        store.read(None).await,
        Ok(ReadReply::Missing),
        "nothing was written"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_sends_if_match_in_the_form_the_store_accepts_on_s3() {
    // Several replaces with ETags as the store returned them: on Ceph RGW the first
    // one switches the store to unquoted If-Match, the later ones must keep working.
    let store = s3_store("if-match-form").await;
    let mut etag = store.create(body(0)).await.expect("create");
    for seq in 1..=3 {
        etag = store.replace(&etag, body(seq)).await.expect("replace");
        assert_eq!(found(&store, None).await, (etag.clone(), body(seq)));
    }
    // A clone shares what the store learned.
    let clone = store.clone();
    etag = clone
        .replace(&etag, body(4))
        .await
        .expect("replace by a clone");
    assert_eq!(
        store.replace(&foreign_etag(), body(5)).await,
        Err(StoreError::PreconditionFailed)
    );
    assert_eq!(found(&store, None).await, (etag, body(4)));
}

// ---------------------------------------------------------------------------------------
// The S3 store where nothing, or something scripted, answers.

/// A bound on operations that must end by the request timeout. Generous: it catches a
/// hang, it does not measure anything.
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(REQUEST_TIMEOUT * 6, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within the request timeout"))
}

async fn store_at(endpoint: &str, request_timeout: Duration) -> S3Store {
    let opts = S3Options {
        endpoint_url: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        profile: None,
        path_style: true,
        request_timeout,
    };
    let credentials = aws_sdk_s3::config::Credentials::new("AKIDTEST", "secret", None, None, "t");
    S3Store::connect_with_credentials("lease", "locks/x", &opts, credentials)
        .await
        .expect("connect")
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_with_nothing_listening_is_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let store = store_at(&format!("http://127.0.0.1:{port}"), REQUEST_TIMEOUT).await;
    let read = bounded("read", store.read(None)).await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    let create = bounded("create", store.create(body(1))).await;
    assert!(
        matches!(
            create,
            Err(StoreError::Unavailable(_) | StoreError::Ambiguous(_))
        ),
        "{create:?}"
    );
    let replace = bounded("replace", store.replace(&foreign_etag(), body(1))).await;
    assert!(
        matches!(
            replace,
            Err(StoreError::Unavailable(_) | StoreError::Ambiguous(_))
        ),
        "{replace:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_times_out_on_a_silent_server() {
    let server = fake_s3::serve(|_| fake_s3::Reply::Silent);
    let timeout = Duration::from_millis(500);
    let store = store_at(&server.endpoint, timeout).await;
    let read = bounded("read", store.read(None)).await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    // The request was sent: the write may have landed.
    let create = bounded("create", store.create(body(1))).await;
    assert!(
        matches!(create, Err(StoreError::Ambiguous(_))),
        "{create:?}"
    );
    let replace = bounded("replace", store.replace(&foreign_etag(), body(1))).await;
    assert!(
        matches!(replace, Err(StoreError::Ambiguous(_))),
        "{replace:?}"
    );
    assert_eq!(server.requests().len(), 3, "no SDK retries");
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_maps_answers_from_the_raw_status_and_code() {
    use fake_s3::Reply;
    let cases: Vec<(Reply, &str)> = vec![
        (Reply::error(500, "UnknownError"), "ambiguous"),
        (Reply::error(502, ""), "ambiguous"),
        (Reply::error(503, "SlowDown"), "unavailable"),
        (Reply::error(429, ""), "unavailable"),
        (Reply::error(409, "ConditionalRequestConflict"), "conflict"),
        (Reply::error(412, "PreconditionFailed"), "precondition"),
        (Reply::error(404, "NoSuchKey"), "missing"),
        (Reply::error(404, "NoSuchBucket"), "fatal NoSuchBucket"),
        (Reply::error(403, "AccessDenied"), "fatal Permission"),
        (
            Reply::error(403, "SignatureDoesNotMatch"),
            "fatal Permission",
        ),
        (Reply::error(301, "PermanentRedirect"), "fatal Other"),
        (Reply::error(501, "NotImplemented"), "fatal Unsupported"),
    ];
    for (reply, expected) in cases {
        let server = fake_s3::serve(move |_| reply.clone());
        let store = store_at(&server.endpoint, REQUEST_TIMEOUT).await;
        // create (no condition to retry on), so the scripted reply is the whole story.
        let outcome = bounded("create", store.create(body(1))).await;
        let got = match &outcome {
            Err(StoreError::Ambiguous(_)) => "ambiguous".to_owned(),
            Err(StoreError::Unavailable(_)) => "unavailable".to_owned(),
            Err(StoreError::Conflict) => "conflict".to_owned(),
            Err(StoreError::PreconditionFailed) => "precondition".to_owned(),
            Err(StoreError::Missing) => "missing".to_owned(),
            Err(StoreError::Fatal(kind, _)) => format!("fatal {kind:?}"),
            Ok(_) => "ok".to_owned(),
        };
        assert_eq!(got, expected, "{outcome:?}");
        if let Err(e @ StoreError::Fatal(..)) = &outcome {
            // The caller names the lock, once: the store's words leave it out.
            assert!(!e.to_string().contains("locks/x"), "{e}");
        }
        if expected == "fatal Other" {
            assert!(outcome.unwrap_err().to_string().contains("--region"));
        }
        assert_eq!(server.requests().len(), 1, "no SDK retries");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_reads_304_as_not_modified_and_5xx_as_unavailable() {
    use fake_s3::Reply;
    let server = fake_s3::serve(|req| match req.header("if-none-match") {
        Some(_) => Reply::status(304),
        None => Reply::error(500, "InternalError"),
    });
    let store = store_at(&server.endpoint, REQUEST_TIMEOUT).await;
    let etag = Etag::new("\"abc\"");
    assert_eq!(store.read(Some(&etag)).await, Ok(ReadReply::NotModified));
    let request = &server.requests()[0];
    assert_eq!(
        request.header("if-none-match"),
        Some("\"abc\""),
        "If-None-Match carries the ETag as the store gave it"
    );
    assert!(
        request.path.starts_with("/lease/locks/x"),
        "path-style addressing: {}",
        request.path
    );
    let read = store.read(None).await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_reads_an_unchanged_etag_as_not_modified_when_the_store_ignores_if_none_match() {
    let server = fake_s3::serve(|_| fake_s3::Reply::object("\"abc\"", b"{}".to_vec()));
    let store = store_at(&server.endpoint, REQUEST_TIMEOUT).await;
    assert_eq!(
        store.read(Some(&Etag::new("abc"))).await,
        Ok(ReadReply::NotModified)
    );
    assert_eq!(
        store.read(None).await,
        Ok(ReadReply::Found {
            etag: Etag::new("\"abc\""),
            body: b"{}".to_vec()
        })
    );
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_refuses_a_large_content_length_without_reading_the_body() {
    // The server announces 10 MB and sends nothing: reading would wait for the timeout.
    let server = fake_s3::serve(|_| {
        fake_s3::Reply::Headers(
            "HTTP/1.1 200 OK\r\nETag: \"big\"\r\nContent-Length: 10000000\r\n\r\n".into(),
        )
    });
    let store = store_at(&server.endpoint, Duration::from_secs(30)).await;
    let read = tokio::time::timeout(Duration::from_secs(10), store.read(None))
        .await
        .expect("refused from the length, without waiting for the body");
    let e = read.expect_err("too large");
    assert_eq!(fatal_kind(&e), Some(FatalKind::TooLarge), "{e}");
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_stops_reading_a_body_that_grows_past_the_limit() {
    let server = fake_s3::serve(|_| fake_s3::Reply::Chunked {
        etag: "\"endless\"".into(),
        chunk: 4096,
        total: 4 * 1024 * 1024,
    });
    let store = store_at(&server.endpoint, REQUEST_TIMEOUT).await;
    let e = bounded("read", store.read(None))
        .await
        .expect_err("too large");
    assert_eq!(fatal_kind(&e), Some(FatalKind::TooLarge), "{e}");
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_refuses_an_object_without_an_etag() {
    let server = fake_s3::serve(|_| fake_s3::Reply::status(200));
    let store = store_at(&server.endpoint, REQUEST_TIMEOUT).await;
    let e = store.read(None).await.expect_err("no ETag");
    assert_eq!(fatal_kind(&e), Some(FatalKind::Unsupported), "{e}");
}

/// A store that behaves as Ceph RGW 16.2: `If-Match` matches only the unquoted ETag,
/// and `If-Match` on a missing key is answered 412.
fn rgw_like(initial: Option<&str>) -> fake_s3::Server {
    use fake_s3::Reply;
    use std::sync::Mutex;
    let state = Mutex::new((initial.map(str::to_owned), 0u32));
    fake_s3::serve(move |req| {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        let (current, writes) = &mut *state;
        match req.method.as_str() {
            "HEAD" | "GET" => match current {
                Some(tag) => Reply::object(&format!("\"{tag}\""), b"{}".to_vec()),
                None if req.method == "HEAD" => Reply::status(404),
                None => Reply::error(404, "NoSuchKey"),
            },
            "PUT" => {
                let if_match = req.header("if-match").map(str::to_owned);
                match (if_match, current.as_deref()) {
                    (Some(sent), Some(tag)) if sent == tag => {
                        *writes += 1;
                        let tag = format!("etag{writes}");
                        *current = Some(tag.clone());
                        Reply::written(&format!("\"{tag}\""))
                    }
                    _ => Reply::error(412, "PreconditionFailed"),
                }
            }
            _ => Reply::status(405),
        }
    })
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_retries_unquoted_when_the_store_refuses_its_own_quoted_etag() {
    let server = rgw_like(Some("etag0"));
    let store = store_at(&server.endpoint, REQUEST_TIMEOUT).await;
    let e1 = store
        .replace(&Etag::new("\"etag0\""), body(1))
        .await
        .expect("retried unquoted");
    assert_eq!(e1, Etag::new("etag1"));
    let log: Vec<String> = server.requests().iter().map(|r| r.summary()).collect();
    assert_eq!(
        log,
        ["PUT If-Match \"etag0\"", "HEAD", "PUT If-Match etag0"]
    );

    // From now on the store sends unquoted at once.
    let e2 = store.replace(&e1, body(2)).await.expect("replace");
    assert_eq!(e2, Etag::new("etag2"));
    assert_eq!(server.requests()[3].summary(), "PUT If-Match etag1");
    assert_eq!(server.requests().len(), 4);

    // A stale ETag stays a plain precondition failure, with no re-read.
    assert_eq!(
        store.replace(&e1, body(3)).await,
        Err(StoreError::PreconditionFailed)
    );
    assert_eq!(server.requests().len(), 5);
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_does_not_switch_to_unquoted_on_a_real_conflict() {
    let server = rgw_like(Some("etag0"));
    let store = store_at(&server.endpoint, REQUEST_TIMEOUT).await;
    assert_eq!(
        store.replace(&Etag::new("\"other\""), body(1)).await,
        Err(StoreError::PreconditionFailed)
    );
    let log: Vec<String> = server.requests().iter().map(|r| r.summary()).collect();
    assert_eq!(log, ["PUT If-Match \"other\"", "HEAD"]);
    // Still quoted: nothing was learned from a genuine 412.
    let _ = store.replace(&Etag::new("\"etag0\""), body(1)).await;
    assert_eq!(server.requests()[2].summary(), "PUT If-Match \"etag0\"");
}

#[tokio::test(flavor = "current_thread")]
async fn s3_store_reports_missing_when_the_store_answers_412_for_a_missing_key() {
    let server = rgw_like(None);
    let store = store_at(&server.endpoint, REQUEST_TIMEOUT).await;
    assert_eq!(
        store.replace(&Etag::new("\"etag0\""), body(1)).await,
        Err(StoreError::Missing)
    );
}

/// File modes refuse the file store's reads and writes with the permission-denied kind
/// (exit 77 for the user), not as a store that is merely unavailable. Root ignores file
/// modes (and CI runs as root), so as root this test runs itself again as `nobody`, where
/// they apply, and requires that run to pass.
#[tokio::test]
async fn the_file_store_reports_file_modes_as_permission_denied() {
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;
    if e2e::is_root() {
        let exe = std::env::current_exe().expect("the test binary");
        let out = e2e::unprivileged(&exe)
            .args([
                "--exact",
                "the_file_store_reports_file_modes_as_permission_denied",
                "--nocapture",
            ])
            .output()
            .expect("setpriv (util-linux) runs the test as nobody");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "as nobody: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lock");
    let store = FileStore::open(&path).expect("open");
    let etag = store.create(b"x".to_vec()).await.expect("create");
    let fatal = |r: Result<_, StoreError>| match r {
        Err(StoreError::Fatal(kind, msg)) => (kind, msg),
        other => panic!("expected a fatal error, got {other:?}"),
    };

    fs::set_permissions(&path, Permissions::from_mode(0o000)).expect("chmod");
    let (kind, msg) = fatal(store.read(None).await.map(|_| ()));
    assert_eq!(kind, FatalKind::Permission);
    assert!(msg.starts_with("permission denied (cannot open: "), "{msg}");
    fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");

    fs::set_permissions(dir.path(), Permissions::from_mode(0o555)).expect("chmod");
    let (kind, _) = fatal(store.replace(&etag, b"y".to_vec()).await.map(|_| ()));
    fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(kind, FatalKind::Permission);
    assert_eq!(fs::read(&path).expect("read"), b"x");
}
