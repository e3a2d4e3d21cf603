//! The S3 store: one lock object in an S3 bucket, or in any store that keeps S3's
//! conditional-write contract (MinIO, R2, Ceph RGW, LocalStack, moto …).
//!
//! This room turns the SDK's answers into the few outcomes the protocol tells apart
//! ([`StoreError`]), and absorbs what differs between providers:
//!
//! - **No SDK retries.** The protocol retries and reconciles ambiguous writes itself; a
//!   hidden retry of a conditional PUT could turn our own landed write into a 412.
//! - **Classification from the raw status and the S3 error code**, never from display
//!   text. A conditional GET answered 304 comes back from aws-sdk-s3 as a service error
//!   with no code at all.
//! - **A 5xx or a timeout on a write is ambiguous**: the write may have landed (Ceph RGW
//!   answers most losers of an `If-Match` race with 500). Only refusals that certainly
//!   had no effect (throttling, a refused connection) are reported as unavailable.
//! - **Missing credentials are fatal until the store has answered once.** Before that
//!   they are a setup mistake that deserves one clear line; after it, a failure to
//!   refresh them (an instance metadata hiccup) is retried like an outage, since a
//!   leader must not give up its lease over it.
//! - **Ceph RGW (and reportedly Hetzner) accept `If-Match` only with the ETag unquoted**,
//!   and answer the quoted ETag they themselves returned with 412. On a 412 we re-read
//!   the ETag; if it is the one we sent, we switch to unquoted `If-Match` for the life of
//!   the store and retry once. RGW also answers `If-Match` on a missing key with 412
//!   instead of 404; the re-read tells that case apart too.
//! - **Checksums only when required.** Recent SDKs send flexible checksums by default,
//!   and some S3-compatible stores reject them.
//! - **Custom endpoints** (`--endpoint-url`, `AWS_ENDPOINT_URL[_S3]`, a profile's
//!   `endpoint_url`) get path-style addressing, and default to `us-east-1` when no region
//!   is configured, so a machine with static keys never waits on the instance metadata
//!   service just to learn a region that a MinIO or RGW endpoint ignores.
//! - **Scratch keys.** `s3lead check` works on sibling keys of the lock
//!   ([`S3Store::sibling`]) and removes them with an *unconditional* DeleteObject
//!   ([`S3Store::delete_object_unconditionally`], refused for any other key): LocalStack
//!   answers a DeleteObject with `If-Match` with 501, and Ceph RGW ignores the condition.
//! - **Bounded reads.** A lock object larger than [`MAX_RECORD_BYTES`] is refused from its
//!   `Content-Length` without reading the body, and a body that grows past the limit is
//!   abandoned as soon as it does.

use super::counters::{Outcome, RequestCounters};
use super::{Etag, FatalKind, LockStore, MAX_RECORD_BYTES, ReadReply, StoreError, is_scratch_name};
use aws_config::BehaviorVersion;
use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::imds::region::ImdsRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The region used with a custom endpoint when none is configured. S3-compatible
/// stores accept any region in the signature, or expect this one.
const FALLBACK_REGION: &str = "us-east-1";

/// How to reach the store. Explicit options override the environment and profile.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// A custom endpoint (MinIO, RGW, R2 …). `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`
    /// are honoured when this is `None`.
    pub endpoint_url: Option<String>,
    /// The region, instead of the environment's and the profile's; with a custom
    /// endpoint and none configured, `us-east-1`.
    pub region: Option<String>,
    /// A profile of the shared config files, instead of `AWS_PROFILE` / `default`.
    pub profile: Option<String>,
    /// Path-style addressing. Always on when a custom endpoint is configured.
    pub path_style: bool,
    /// The bound on each request, from the first byte sent to the last byte read.
    pub request_timeout: Duration,
}

/// One lock object in one bucket.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    key: String,
    /// `s3://bucket/key`, for debug logs. Errors do not carry it: the caller names the
    /// lock once, as the user spelt it.
    location: String,
    /// The endpoint's address (or, for AWS, the region's), for the messages about
    /// reaching it: a user who mistyped it must see what was tried.
    endpoint: String,
    request_timeout: Duration,
    /// Set once the store has shown that it wants `If-Match` unquoted (Ceph RGW).
    /// Shared between clones: it is a property of the store, not of one handle.
    unquoted_if_match: Arc<AtomicBool>,
    /// Set once the store has answered a request, so the credentials worked at least
    /// once: a later failure to load them is a refresh hiccup, not a missing setup.
    answered: Arc<AtomicBool>,
    /// Every request sent, by HTTP outcome; shared between clones.
    counters: RequestCounters,
}

impl S3Store {
    /// Builds the client (no request is sent). `bucket`/`key` name the lock object.
    ///
    /// Reads the standard AWS configuration (environment, shared config and credentials
    /// files, SSO, instance metadata). Credentials are resolved lazily, at the first
    /// request; a failure to find them is reported then, as [`FatalKind::Permission`].
    pub async fn connect(bucket: &str, key: &str, opts: &S3Options) -> Result<S3Store, StoreError> {
        S3Store::connect_inner(bucket, key, opts, None).await
    }

    /// As [`S3Store::connect`], with these credentials instead of the credential chain:
    /// for programs that embed the election and hold their own keys, and for tests,
    /// which must not change the process environment.
    pub async fn connect_with_credentials(
        bucket: &str,
        key: &str,
        opts: &S3Options,
        credentials: Credentials,
    ) -> Result<S3Store, StoreError> {
        S3Store::connect_inner(bucket, key, opts, Some(credentials)).await
    }

    async fn connect_inner(
        bucket: &str,
        key: &str,
        opts: &S3Options,
        credentials: Option<Credentials>,
    ) -> Result<S3Store, StoreError> {
        check_options(bucket, key, opts)?;
        let (sdk_config, region, custom_endpoint) = load_config(opts, credentials).await?;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(opts.request_timeout)
            .operation_attempt_timeout(opts.request_timeout)
            .operation_timeout(opts.request_timeout)
            .build();
        let conf = aws_sdk_s3::config::Builder::from(&sdk_config)
            .region(region)
            .force_path_style(opts.path_style || custom_endpoint)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Lock objects are tiny; the protection only adds failure modes.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .build();
        let endpoint = sdk_config
            .endpoint_url()
            .map(str::to_owned)
            .or_else(|| opts.endpoint_url.clone())
            .unwrap_or_else(|| {
                let region = conf.region().map(|r| r.as_ref()).unwrap_or(FALLBACK_REGION);
                format!("AWS S3 in {region}")
            });
        Ok(S3Store::from_conf(
            bucket,
            key,
            conf,
            opts.request_timeout,
            endpoint,
        ))
    }

    /// A store over an already built client configuration.
    fn from_conf(
        bucket: &str,
        key: &str,
        conf: aws_sdk_s3::Config,
        request_timeout: Duration,
        endpoint: String,
    ) -> S3Store {
        S3Store {
            client: Client::from_conf(conf),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            location: format!("s3://{bucket}/{key}"),
            endpoint,
            request_timeout,
            unquoted_if_match: Arc::new(AtomicBool::new(false)),
            answered: Arc::new(AtomicBool::new(false)),
            counters: RequestCounters::default(),
        }
    }

    /// The bucket that holds the lock object.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The lock object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The endpoint's address as configured (or `AWS S3 in <region>`): with the bucket,
    /// what names the store in messages and in the cache of proofs at acquisition.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether the store has shown that it accepts `If-Match` only unquoted (Ceph RGW).
    pub fn wants_unquoted_if_match(&self) -> bool {
        self.unquoted_if_match.load(Ordering::SeqCst)
    }

    /// The object `key` in the same bucket, over the same client. What was learned
    /// about the store (it wants `If-Match` unquoted, it has answered) is shared.
    pub fn sibling(&self, key: &str) -> S3Store {
        S3Store {
            key: key.to_owned(),
            location: format!("s3://{}/{key}", self.bucket),
            ..self.clone()
        }
    }

    /// Deletes the object with a plain DeleteObject, for the scratch keys of `s3lead
    /// check` only: a key that is not one is refused before any request. The protocol
    /// never deletes a lock object (docs/design.md §3). A missing object (or bucket) counts as
    /// deleted.
    pub async fn delete_object_unconditionally(&self) -> Result<(), StoreError> {
        if !is_scratch_name(&self.key) {
            return Err(StoreError::Fatal(
                FatalKind::Other,
                "refusing to delete an object that is not a scratch key of s3lead check".into(),
            ));
        }
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
        {
            Ok(_) => {
                self.mark_answered();
                Ok(())
            }
            Err(err) => match self.classify(Op::Delete, &err) {
                // No bucket holds no object either.
                StoreError::Missing | StoreError::Fatal(FatalKind::NoSuchBucket, _) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// The store's clock as its `Date` header shows it, with this host's wall clock just
    /// before the request was sent and just after the answer came: a HeadObject on this
    /// key, which the caller makes sure does not exist (a fresh scratch key), so that the
    /// answer is a 404 whose headers the SDK hands back. Any HTTP answer will do (a 403
    /// has a `Date` too); `None` when it carries no readable `Date`.
    pub async fn server_clock(&self) -> Result<Option<super::contract::ClockSample>, StoreError> {
        let sent = std::time::SystemTime::now();
        let reply = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await;
        let received = std::time::SystemTime::now();
        let date = match &reply {
            Ok(_) => None,
            Err(err) => match err.raw_response() {
                Some(raw) => {
                    self.mark_answered();
                    raw.headers().get("date").map(str::to_owned)
                }
                None => return Err(self.classify(Op::Read, err)),
            },
        };
        Ok(date
            .and_then(|d| httpdate::parse_http_date(&d).ok())
            .map(|server| super::contract::ClockSample {
                sent,
                received,
                server,
            }))
    }

    /// Whether the store answers a GET with `If-None-Match: <etag>` (the object's current
    /// ETag) with 304, as a follower's cheap poll expects, rather than with the object.
    pub async fn answers_not_modified(&self, etag: &Etag) -> Result<bool, StoreError> {
        let reply = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .if_none_match(etag.raw())
            .send()
            .await;
        match reply {
            // Dropping the reply abandons the body unread.
            Ok(_) => {
                self.mark_answered();
                Ok(false)
            }
            Err(SdkError::ServiceError(service))
                if is_not_modified(service.raw().status().as_u16(), true) =>
            {
                self.mark_answered();
                Ok(true)
            }
            Err(err) => Err(self.classify(Op::Read, &err)),
        }
    }

    fn classify<E>(&self, op: Op, err: &SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        if err.raw_response().is_some() {
            self.mark_answered();
        }
        let failure = Failure::from_sdk(err, self.answered.load(Ordering::Relaxed));
        if let Some(outcome) = failure.outcome() {
            self.counters.count(outcome);
        }
        tracing::debug!(location = %self.location, ?op, ?failure, "S3 request failed");
        classify(&self.bucket, &self.endpoint, op, failure)
    }

    fn mark_answered(&self) {
        self.answered.store(true, Ordering::Relaxed);
    }

    /// A request answered with success (`outcome`: a GET or HEAD with the object, a PUT
    /// that landed, a 304).
    fn succeeded(&self, outcome: Outcome) {
        self.mark_answered();
        self.counters.count(outcome);
    }

    /// `If-Match` with the ETag in the form this store accepts.
    async fn put_if_match(&self, if_match: &str, body: Vec<u8>) -> Result<Etag, StoreError> {
        let reply = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .if_match(if_match)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.classify(Op::Write, &e))?;
        self.succeeded(Outcome::Put);
        self.etag_of(reply.e_tag())
    }

    /// The ETag header of a reply; the protocol cannot work without one.
    fn etag_of(&self, etag: Option<&str>) -> Result<Etag, StoreError> {
        match etag {
            Some(e) if !e.trim().is_empty() => Ok(Etag::new(e)),
            _ => Err(self.no_etag()),
        }
    }

    fn no_etag(&self) -> StoreError {
        StoreError::Fatal(
            FatalKind::Unsupported,
            "the store returned no ETag, which conditional writes need".into(),
        )
    }

    /// The object's current ETag (`None`: it does not exist), by HeadObject.
    async fn current_etag(&self) -> Result<Option<Etag>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
        {
            Ok(head) => {
                self.succeeded(Outcome::Get);
                self.etag_of(head.e_tag()).map(Some)
            }
            Err(err) => match self.classify(Op::Read, &err) {
                StoreError::Missing => Ok(None),
                other => Err(other),
            },
        }
    }

    /// A replace was answered 412 with the ETag as the store returned it. Either someone
    /// else wrote, or the object is missing (RGW answers 412 there), or the store wants
    /// the ETag unquoted (RGW): a re-read tells which.
    async fn after_quoted_412(&self, etag: &Etag, body: Vec<u8>) -> Result<Etag, StoreError> {
        let current = match self.current_etag().await {
            Ok(Some(current)) => current,
            Ok(None) => return Err(StoreError::Missing),
            Err(err) if err.is_fatal() => return Err(err),
            // The 412 itself was definite: the write did not land, so a retry is safe.
            Err(err) => {
                return Err(StoreError::Unavailable(format!(
                    "the store refused If-Match and re-reading the ETag failed ({err})"
                )));
            }
        };
        if current != *etag {
            return Err(StoreError::PreconditionFailed);
        }
        if !self.unquoted_if_match.swap(true, Ordering::SeqCst) {
            tracing::info!(
                location = %self.location,
                "the store refuses its own quoted ETag in If-Match (Ceph RGW does); sending it unquoted from now on"
            );
        }
        self.put_if_match(etag.normalized(), body).await
    }
}

impl LockStore for S3Store {
    async fn read(&self, known: Option<&Etag>) -> Result<ReadReply, StoreError> {
        let deadline = Instant::now() + self.request_timeout;
        let mut request = self.client.get_object().bucket(&self.bucket).key(&self.key);
        if let Some(known) = known {
            request = request.if_none_match(known.raw());
        }
        let reply = match request.send().await {
            Ok(reply) => reply,
            Err(err) => {
                if let SdkError::ServiceError(service) = &err {
                    if is_not_modified(service.raw().status().as_u16(), known.is_some()) {
                        self.succeeded(Outcome::NotModified);
                        return Ok(ReadReply::NotModified);
                    }
                }
                return match self.classify(Op::Read, &err) {
                    StoreError::Missing => Ok(ReadReply::Missing),
                    other => Err(other),
                };
            }
        };
        self.succeeded(Outcome::Get);
        let etag = self.etag_of(reply.e_tag())?;
        // Some stores ignore If-None-Match on GET (s3s-fs): the ETag still tells.
        if known == Some(&etag) {
            return Ok(ReadReply::NotModified);
        }
        if let Some(len) = reply.content_length().and_then(|n| u64::try_from(n).ok()) {
            if len > MAX_RECORD_BYTES {
                // Dropping the reply abandons the body unread.
                return Err(self.too_large(Some(len)));
            }
        }
        // The SDK's operation timeout ends when the headers arrive; the body is ours.
        let body = tokio::time::timeout_at(deadline, self.read_bounded(reply.body))
            .await
            .map_err(|_| StoreError::Unavailable("timed out reading the lock object".into()))??;
        Ok(ReadReply::Found { etag, body })
    }

    async fn create(&self, body: Vec<u8>) -> Result<Etag, StoreError> {
        let reply = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.classify(Op::Write, &e))?;
        self.succeeded(Outcome::Put);
        self.etag_of(reply.e_tag())
    }

    fn counters(&self) -> Option<&RequestCounters> {
        Some(&self.counters)
    }

    async fn replace(&self, etag: &Etag, body: Vec<u8>) -> Result<Etag, StoreError> {
        let unquoted = self.unquoted_if_match.load(Ordering::SeqCst);
        let sent = if_match_value(etag, unquoted);
        // Kept for the one unquoted retry; a record is at most 64 KiB.
        let retry_body = body.clone();
        match self.put_if_match(&sent, body).await {
            Err(StoreError::PreconditionFailed) if sent != etag.normalized() => {
                self.after_quoted_412(etag, retry_body).await
            }
            outcome => outcome,
        }
    }
}

impl S3Store {
    /// Reads a body of unknown length, giving up as soon as it passes the limit.
    async fn read_bounded(&self, mut body: ByteStream) -> Result<Vec<u8>, StoreError> {
        let mut buf = Vec::new();
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    if (buf.len() + chunk.len()) as u64 > MAX_RECORD_BYTES {
                        return Err(self.too_large(None));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(buf),
                Err(err) => {
                    return Err(StoreError::Unavailable(format!(
                        "reading the lock object failed: {}",
                        error_chain(&err)
                    )));
                }
            }
        }
    }

    /// `size`: from `Content-Length`, when the store sent it.
    fn too_large(&self, size: Option<u64>) -> StoreError {
        let size = match size {
            Some(n) => format!("{n} bytes, "),
            None => String::new(),
        };
        StoreError::Fatal(
            FatalKind::TooLarge,
            format!(
                "the object is {size}larger than a lock record can be ({MAX_RECORD_BYTES} bytes at most); is this the right key?"
            ),
        )
    }
}

/// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, as the SDK would read them.
fn endpoint_from_env() -> Option<String> {
    let ignore = std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .map(|v| v.eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    if ignore {
        return None;
    }
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|v| !v.trim().is_empty())
}

/// The region from the environment or the profile: the default chain without its last
/// link, the instance metadata service, which can take seconds to time out off EC2.
async fn static_region(profile: Option<&str>) -> Option<Region> {
    let mut from_profile = ProfileFileRegionProvider::builder();
    if let Some(profile) = profile {
        from_profile = from_profile.profile_name(profile);
    }
    RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(from_profile.build())
        .region()
        .await
}

fn config_loader(
    opts: &S3Options,
    region: Option<Region>,
    credentials: Option<Credentials>,
) -> aws_config::ConfigLoader {
    // Always give a region provider: without one the loader runs the default chain,
    // instance metadata included.
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .http_client(super::http_client::lazy_tls());
    if let Some(profile) = &opts.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &opts.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    loader
}

/// The `If-Match` value to send: as the store returned it, or unquoted for stores that
/// refuse the quoted form.
fn if_match_value(etag: &Etag, unquoted: bool) -> String {
    if unquoted {
        etag.normalized().to_owned()
    } else {
        etag.raw().to_owned()
    }
}

/// A conditional GET whose ETag is still current: 304 (HTTP's answer to a matching
/// `If-None-Match` on GET), or 412 from stores that answer it as for a write.
fn is_not_modified(status: u16, conditional: bool) -> bool {
    conditional && (status == 304 || status == 412)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    /// An unconditional delete (scratch keys only): nothing to be ambiguous about, since
    /// deleting twice is deleting once.
    Delete,
}

/// A failed request, reduced to what its classification depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    /// The store answered with an error status.
    Http {
        status: u16,
        code: Option<String>,
        message: Option<String>,
        /// `x-amz-bucket-region`, sent with wrong-region answers.
        bucket_region: Option<String>,
        /// The answer's `Content-Type`: an error without an S3 code in a body that is
        /// not XML came from something that is not S3 (a web server, a proxy's page).
        content_type: Option<String>,
    },
    /// The credential providers gave no credentials, so nothing was sent.
    /// `worked_before`: the store has answered this process before.
    NoCredentials { detail: String, worked_before: bool },
    /// No answer within the request timeout.
    Timeout(String),
    /// The connection was refused: nothing was sent.
    Refused(String),
    /// The endpoint's host name did not resolve: nothing was sent.
    Dns(String),
    /// The endpoint's TLS certificate is not trusted: nothing was sent, and no retry
    /// will change the certificate or the trust store.
    UntrustedTls(String),
    /// The request may have been sent, and no (readable) answer came.
    Transport(String),
    /// The request could not be built.
    Construction(String),
}

impl Failure {
    /// How the request counters count this failure; `None` when nothing was sent.
    fn outcome(&self) -> Option<Outcome> {
        Some(match self {
            Failure::Http { status: 404, .. } => Outcome::Missing,
            Failure::Http { status: 412, .. } => Outcome::PreconditionFailed,
            Failure::Http { status: 409, .. } => Outcome::Conflict,
            Failure::Http { status: 429, .. } => Outcome::ServerError,
            Failure::Http { status, .. } if *status >= 500 => Outcome::ServerError,
            Failure::Http { .. } => Outcome::Other,
            Failure::Timeout(_) => Outcome::Timeout,
            Failure::Refused(_)
            | Failure::Dns(_)
            | Failure::UntrustedTls(_)
            | Failure::Transport(_) => Outcome::Other,
            Failure::NoCredentials { .. } | Failure::Construction(_) => return None,
        })
    }

    fn from_sdk<E>(err: &SdkError<E, HttpResponse>, worked_before: bool) -> Failure
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        let chain = || error_chain(err);
        match err {
            SdkError::ServiceError(service) => {
                let raw = service.raw();
                Failure::Http {
                    status: raw.status().as_u16(),
                    code: service.err().code().map(str::to_owned),
                    message: service.err().message().map(str::to_owned),
                    bucket_region: raw.headers().get("x-amz-bucket-region").map(str::to_owned),
                    content_type: raw.headers().get("content-type").map(str::to_owned),
                }
            }
            _ if has_credentials_error(err) => Failure::NoCredentials {
                detail: chain(),
                worked_before,
            },
            // Before the timeouts: a handshake that failed on the certificate is no
            // outage, whatever else the chain says.
            SdkError::DispatchFailure(_) if is_untrusted_certificate(&chain()) => {
                Failure::UntrustedTls(chain())
            }
            SdkError::TimeoutError(_) => Failure::Timeout(chain()),
            SdkError::DispatchFailure(dispatch) if dispatch.is_timeout() => {
                Failure::Timeout(chain())
            }
            SdkError::DispatchFailure(_) if was_refused(err) => Failure::Refused(chain()),
            SdkError::DispatchFailure(_) if is_dns_failure(&chain()) => Failure::Dns(chain()),
            SdkError::ConstructionFailure(_) => Failure::Construction(chain()),
            _ => Failure::Transport(chain()),
        }
    }
}

/// Maps a failure to what the protocol needs to know, in words that leave the object
/// unnamed: the caller names the lock once, as the user spelt it.
///
/// Longer than a function should be, on purpose: it is one table from S3's answers to
/// the protocol's kinds of failure, and read top to bottom it shows which answer wins
/// when several could match (a 412 before any code, NoSuchBucket before other 404s).
fn classify(bucket: &str, endpoint: &str, op: Op, failure: Failure) -> StoreError {
    let fatal = |kind, msg: &str| StoreError::Fatal(kind, msg.to_owned());
    // No answer, or an answer that says nothing definite: a write may have landed.
    let unsure = |what: String| match op {
        Op::Read | Op::Delete => StoreError::Unavailable(what),
        Op::Write => StoreError::Ambiguous(what),
    };
    let (status, code, message, bucket_region, content_type) = match failure {
        Failure::Http {
            status,
            code,
            message,
            bucket_region,
            content_type,
        } => (status, code, message, bucket_region, content_type),
        // Refreshing credentials failed (an instance metadata hiccup, STS throttled):
        // nothing was sent, and the protocol retries until its stop point.
        Failure::NoCredentials {
            detail,
            worked_before: true,
        } => {
            return StoreError::Unavailable(format!(
                "could not refresh the AWS credentials ({detail})"
            ));
        }
        Failure::NoCredentials {
            detail,
            worked_before: false,
        } => {
            return fatal(
                FatalKind::Permission,
                &format!(
                    "no usable AWS credentials ({detail}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                     pick a profile with --profile or AWS_PROFILE, or run `aws sso login`"
                ),
            );
        }
        // The words of these transport failures name the endpoint and stay the same from
        // one attempt to the next: the lease says each cause once (`lease.rs`, `Trouble`).
        Failure::Timeout(_) => {
            return unsure(format!(
                "no answer from {endpoint} within the request timeout"
            ));
        }
        Failure::Refused(_) => {
            return StoreError::Unavailable(format!(
                "cannot connect to {endpoint}: connection refused (is the store running at this address and port?)"
            ));
        }
        Failure::Dns(_) => {
            return StoreError::Unavailable(format!(
                "cannot resolve the host name of {endpoint} (a typo in the endpoint URL, or DNS not ready yet)"
            ));
        }
        Failure::UntrustedTls(detail) => {
            return fatal(
                FatalKind::Other,
                &format!(
                    "the TLS certificate of {endpoint} is not trusted ({}); add the CA that signed it \
                     to the system trust store, or set SSL_CERT_FILE to a PEM file of CA certificates that includes it",
                    certificate_problem(&detail)
                ),
            );
        }
        Failure::Transport(detail) => {
            return unsure(format!("no answer from {endpoint} ({detail})"));
        }
        Failure::Construction(detail) => {
            return fatal(
                FatalKind::Other,
                &format!("cannot build the request ({detail})"),
            );
        }
    };
    let code = code.as_deref().unwrap_or("");
    let said = || {
        let mut s = format!("HTTP {status}");
        if !code.is_empty() {
            s.push_str(&format!(" {code}"));
        }
        if let Some(m) = message.as_deref().filter(|m| !m.is_empty()) {
            s.push_str(&format!(": {m}"));
        }
        s
    };
    // S3 sends its errors as XML with a code (HEAD answers, which have no body, aside):
    // an error in another format came from something else, and retrying will not turn
    // it into S3. Checked before the 412: a web server's 412 is no refusal by S3 either.
    if code.is_empty() && status >= 300 {
        if let Some(ct) = content_type.as_deref().filter(|ct| !is_xml(ct)) {
            return fatal(
                FatalKind::Unsupported,
                &format!(
                    "{endpoint} answered HTTP {status} with {ct}, not an S3 error: \
                     is the endpoint URL the address of the S3 API?"
                ),
            );
        }
    }
    match (status, code) {
        (412, _) => StoreError::PreconditionFailed,
        (404, "NoSuchBucket") => fatal(
            FatalKind::NoSuchBucket,
            &format!("the bucket {bucket:?} does not exist"),
        ),
        (404, _) => StoreError::Missing,
        (409, _) => match op {
            Op::Write => StoreError::Conflict,
            Op::Read | Op::Delete => StoreError::Unavailable(said()),
        },
        (_, "RequestTimeTooSkewed") => fatal(
            FatalKind::Other,
            "the local clock is too far from the store's (fix the system clock)",
        ),
        (_, "ExpiredToken" | "TokenRefreshRequired" | "InvalidToken") => fatal(
            FatalKind::Permission,
            "the session credentials have expired or are invalid (renew them)",
        ),
        (_, "InvalidAccessKeyId") => fatal(
            FatalKind::Permission,
            "the store does not know this access key (check the credentials)",
        ),
        (_, "SignatureDoesNotMatch") => fatal(
            FatalKind::Permission,
            "the request signature does not match (check the secret key)",
        ),
        (403, _) | (_, "AccessDenied") => fatal(
            FatalKind::Permission,
            "access denied (check the credentials and the bucket policy)",
        ),
        (301 | 307, _)
        | (_, "PermanentRedirect" | "TemporaryRedirect" | "AuthorizationHeaderMalformed")
        | (_, "IllegalLocationConstraintException") => {
            let hint = match bucket_region.as_deref().filter(|r| !r.is_empty()) {
                Some(region) => format!("pass --region {region}"),
                None => "pass --region".to_owned(),
            };
            fatal(
                FatalKind::Other,
                &format!("the bucket is in another region ({hint})"),
            )
        }
        // The store gave up waiting for the request: nothing was written.
        (400, "RequestTimeout") | (408, _) => StoreError::Unavailable(said()),
        (501, _) => fatal(
            FatalKind::Unsupported,
            match op {
                Op::Write => "the store does not support conditional writes",
                Op::Read => "the store does not support conditional reads",
                Op::Delete => "the store does not support deleting objects",
            },
        ),
        // Throttled: refused before anything was done.
        (429, _) | (503, "SlowDown") => StoreError::Unavailable(format!("throttled ({})", said())),
        (500..=599, _) => unsure(said()),
        (400..=499, _) => fatal(
            FatalKind::Other,
            &format!("the store refused the request ({})", said()),
        ),
        _ => unsure(format!("unexpected answer ({})", said())),
    }
}

/// Whether a `Content-Type` is one S3 sends its errors in.
fn is_xml(content_type: &str) -> bool {
    content_type.to_ascii_lowercase().contains("xml")
}

/// Whether a transport failure is a TLS certificate that the client does not trust.
///
/// Judged from the words of the error chain, since the SDK wraps the TLS library's
/// typed error in an `io::Error` whose `source` skips it: "invalid peer certificate" is
/// how rustls (the SDK's TLS library) says every certificate verification failure.
fn is_untrusted_certificate(chain: &str) -> bool {
    chain.contains("invalid peer certificate")
}

/// The certificate problem in a rustls message, without the wrappers around it.
fn certificate_problem(chain: &str) -> &str {
    chain
        .rsplit_once("invalid peer certificate: ")
        .map_or(chain, |(_, problem)| problem)
}

/// Whether a transport failure is a host name that did not resolve, in the words of
/// hyper's connector ("dns error"), the SDK's HTTP client, which gives it no type.
fn is_dns_failure(chain: &str) -> bool {
    chain.contains("dns error")
}

/// What `connect` refuses before loading anything: an empty bucket or key, a zero
/// timeout, an endpoint URL that is not one.
fn check_options(bucket: &str, key: &str, opts: &S3Options) -> Result<(), StoreError> {
    let fatal = |msg: String| StoreError::Fatal(FatalKind::Other, msg);
    if bucket.is_empty() {
        return Err(fatal("no bucket name".into()));
    }
    if key.is_empty() {
        return Err(fatal(
            "no object key (the lock needs a key inside the bucket)".into(),
        ));
    }
    if opts.request_timeout.is_zero() {
        return Err(fatal("the request timeout must be positive".into()));
    }
    if let Some(url) = &opts.endpoint_url {
        // Checked here because the SDK reports a bad endpoint only per request, as a
        // dispatch failure that looks like a network error.
        check_endpoint_url(url).map_err(fatal)?;
    }
    Ok(())
}

/// The SDK's configuration and the region, asking the instance metadata service only
/// when nothing else names one; `true` when a custom endpoint is configured.
async fn load_config(
    opts: &S3Options,
    credentials: Option<Credentials>,
) -> Result<(aws_config::SdkConfig, Region, bool), StoreError> {
    let endpoint_known_early = opts.endpoint_url.is_some() || endpoint_from_env().is_some();
    let mut region = match &opts.region {
        Some(r) => Some(Region::new(r.clone())),
        None => static_region(opts.profile.as_deref()).await,
    };
    if region.is_none() && endpoint_known_early {
        region = Some(Region::new(FALLBACK_REGION));
    }
    let mut sdk_config = config_loader(opts, region.clone(), credentials.clone())
        .load()
        .await;
    // A profile's `endpoint_url` is only known once the profile has been loaded.
    let custom_endpoint = endpoint_known_early || sdk_config.endpoint_url().is_some();
    if region.is_none() {
        region = if custom_endpoint {
            Some(Region::new(FALLBACK_REGION))
        } else {
            // Only now, with no endpoint and no configured region, is it worth asking
            // the instance metadata service (this is how EC2 hosts learn it).
            ImdsRegionProvider::builder().build().region().await
        };
        if region.is_some() {
            // Reload so that credential providers that need a region (STS, SSO) see it.
            sdk_config = config_loader(opts, region.clone(), credentials.clone())
                .load()
                .await;
        }
    }
    let Some(region) = region else {
        return Err(StoreError::Fatal(
            FatalKind::Other,
            "no AWS region configured (pass --region, or set AWS_REGION)".into(),
        ));
    };
    Ok((sdk_config, region, custom_endpoint))
}

/// An endpoint URL the client can use: http or https, a host, an optional numeric port.
fn check_endpoint_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("the endpoint URL {url:?} is not valid: {why}"));
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return bad("it must start with http:// or https://");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        // An IPv6 literal: [::1]:9000
        Some(v6) => match v6.split_once(']') {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => return bad("an IPv6 address needs its closing ]"),
        },
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return bad("it names no host");
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("the host contains white space");
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return bad("the port must be a number from 1 to 65535");
        }
    }
    Ok(())
}

/// Whether a credential provider's failure is somewhere in the chain.
///
/// The SDK reports it as a dispatch failure (identity resolution runs just before
/// sending), indistinguishable from a network error except by the error's type.
fn has_credentials_error(err: &(dyn StdError + 'static)) -> bool {
    sources(err).any(|e| e.is::<aws_credential_types::provider::error::CredentialsError>())
}

/// Whether the connection was refused, so that nothing was sent.
fn was_refused(err: &(dyn StdError + 'static)) -> bool {
    sources(err).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

fn sources<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |e: &&'a (dyn StdError + 'static)| (*e).source())
}

/// The messages of an error and its sources, joined, for a one-line explanation.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in sources(err) {
        // One line: the SDK's own messages may span several (its credential chain lists
        // one provider per line); each break, with the indentation after it, is a space.
        let msg = e
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !msg.is_empty() && !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
    }
    let mut line = parts.join(": ");
    if line.len() > 300 {
        let mut cut = 300;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's words leave the object unnamed: the caller names the lock once.
    fn unnamed(e: &StoreError) -> bool {
        !e.to_string().contains("s3://") && !e.to_string().contains("locks/nightly")
    }

    fn http(status: u16, code: Option<&str>) -> Failure {
        Failure::Http {
            status,
            code: code.map(str::to_owned),
            message: None,
            bucket_region: None,
            content_type: None,
        }
    }

    fn typed(mut failure: Failure, ct: &str) -> Failure {
        if let Failure::Http { content_type, .. } = &mut failure {
            *content_type = Some(ct.to_owned());
        }
        failure
    }

    const ENDPOINT: &str = "http://store.example:9000";

    fn write(failure: Failure) -> StoreError {
        classify("lease", ENDPOINT, Op::Write, failure)
    }

    fn read(failure: Failure) -> StoreError {
        classify("lease", ENDPOINT, Op::Read, failure)
    }

    fn fatal_kind(e: &StoreError) -> Option<FatalKind> {
        match e {
            StoreError::Fatal(kind, _) => Some(*kind),
            _ => None,
        }
    }

    #[test]
    fn conditions_and_missing_objects() {
        assert_eq!(
            write(http(412, Some("PreconditionFailed"))),
            StoreError::PreconditionFailed
        );
        assert_eq!(write(http(404, Some("NoSuchKey"))), StoreError::Missing);
        assert_eq!(read(http(404, Some("NoSuchKey"))), StoreError::Missing);
        // HeadObject errors have no body, hence no code.
        assert_eq!(read(http(404, None)), StoreError::Missing);
        assert_eq!(
            write(http(409, Some("ConditionalRequestConflict"))),
            StoreError::Conflict
        );
        assert!(matches!(
            read(http(409, Some("OperationAborted"))),
            StoreError::Unavailable(_)
        ));
    }

    #[test]
    fn not_modified_only_for_conditional_reads() {
        assert!(is_not_modified(304, true));
        assert!(is_not_modified(412, true));
        assert!(!is_not_modified(304, false));
        assert!(!is_not_modified(200, true));
        assert!(!is_not_modified(404, true));
    }

    #[test]
    fn missing_bucket_names_the_bucket() {
        let e = write(http(404, Some("NoSuchBucket")));
        assert_eq!(fatal_kind(&e), Some(FatalKind::NoSuchBucket));
        assert!(e.to_string().contains("\"lease\""), "{e}");
        assert!(unnamed(&e), "{e}");
    }

    #[test]
    fn permission_failures() {
        for (status, code) in [
            (403, Some("AccessDenied")),
            (403, None),
            (403, Some("InvalidAccessKeyId")),
            (403, Some("SignatureDoesNotMatch")),
            (400, Some("ExpiredToken")),
        ] {
            for e in [read(http(status, code)), write(http(status, code))] {
                assert_eq!(
                    fatal_kind(&e),
                    Some(FatalKind::Permission),
                    "{status} {code:?}: {e}"
                );
                assert!(unnamed(&e), "{e}");
            }
        }
        let e = read(http(403, Some("AccessDenied")));
        assert_eq!(
            e.to_string(),
            "access denied (check the credentials and the bucket policy)"
        );
        let e = read(http(403, Some("RequestTimeTooSkewed")));
        assert_eq!(fatal_kind(&e), Some(FatalKind::Other));
        assert!(e.to_string().contains("clock"), "{e}");
    }

    #[test]
    fn no_credentials_is_a_permission_failure() {
        let e = write(Failure::NoCredentials {
            detail: "no providers in chain provided credentials".into(),
            worked_before: false,
        });
        assert_eq!(fatal_kind(&e), Some(FatalKind::Permission));
        assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");
        // Once the store has answered, the credentials existed: a failed refresh is
        // transient, and certainly sent nothing.
        let e = write(Failure::NoCredentials {
            detail: "credentials provider timed out".into(),
            worked_before: true,
        });
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    }

    #[test]
    fn wrong_region_says_to_pass_region() {
        for (status, code) in [
            (301, Some("PermanentRedirect")),
            (301, None),
            (400, Some("AuthorizationHeaderMalformed")),
        ] {
            let e = read(http(status, code));
            assert_eq!(fatal_kind(&e), Some(FatalKind::Other), "{e}");
            assert!(e.to_string().contains("--region"), "{e}");
        }
        let e = read(Failure::Http {
            status: 301,
            code: Some("PermanentRedirect".into()),
            message: None,
            bucket_region: Some("eu-west-3".into()),
            content_type: None,
        });
        assert!(e.to_string().contains("--region eu-west-3"), "{e}");
    }

    #[test]
    fn not_implemented_is_unsupported() {
        let e = write(http(501, Some("NotImplemented")));
        assert_eq!(fatal_kind(&e), Some(FatalKind::Unsupported));
        assert!(
            e.to_string()
                .contains("does not support conditional writes"),
            "{e}"
        );
        assert_eq!(
            fatal_kind(&read(http(501, None))),
            Some(FatalKind::Unsupported)
        );
    }

    #[test]
    fn throttling_is_unavailable_for_reads_and_writes() {
        for f in [http(429, None), http(503, Some("SlowDown"))] {
            assert!(matches!(read(f.clone()), StoreError::Unavailable(_)));
            assert!(matches!(write(f), StoreError::Unavailable(_)));
        }
        assert!(matches!(
            write(http(400, Some("RequestTimeout"))),
            StoreError::Unavailable(_)
        ));
    }

    #[test]
    fn server_errors_are_ambiguous_for_writes_only() {
        // Ceph RGW answers most losers of an If-Match race with 500: it may have landed.
        for f in [
            http(500, Some("UnknownError")),
            http(500, Some("InternalError")),
            http(502, None),
            http(503, Some("ServiceUnavailable")),
            http(504, None),
        ] {
            assert!(
                matches!(write(f.clone()), StoreError::Ambiguous(_)),
                "{f:?}"
            );
            assert!(
                matches!(read(f.clone()), StoreError::Unavailable(_)),
                "{f:?}"
            );
        }
    }

    #[test]
    fn transport_failures() {
        let timeout = Failure::Timeout("timeout".into());
        assert!(matches!(write(timeout.clone()), StoreError::Ambiguous(_)));
        assert!(matches!(read(timeout), StoreError::Unavailable(_)));
        let lost = Failure::Transport("connection reset".into());
        assert!(matches!(write(lost.clone()), StoreError::Ambiguous(_)));
        assert!(matches!(read(lost), StoreError::Unavailable(_)));
        // A refused connection sent nothing: even a write certainly had no effect.
        let refused = Failure::Refused("connection refused".into());
        assert!(matches!(write(refused.clone()), StoreError::Unavailable(_)));
        assert!(matches!(read(refused), StoreError::Unavailable(_)));
        let built = Failure::Construction("bad input".into());
        assert_eq!(fatal_kind(&write(built)), Some(FatalKind::Other));
    }

    #[test]
    fn unreachable_endpoints_are_named_and_retried() {
        for f in [
            Failure::Refused("tcp connect error: Connection refused (os error 111)".into()),
            Failure::Dns("dns error: failed to lookup address information".into()),
            Failure::Timeout("timeout".into()),
        ] {
            for e in [read(f.clone()), write(f.clone())] {
                assert!(!e.is_fatal(), "{f:?}: {e}");
                assert!(e.to_string().contains(ENDPOINT), "{e}");
            }
        }
        assert!(
            read(Failure::Dns(String::new()))
                .to_string()
                .contains("resolve")
        );
        // The detail of the chain stays out of the words, so every attempt reads alike.
        assert_eq!(
            read(Failure::Refused("a".into())),
            read(Failure::Refused("b".into()))
        );
    }

    #[test]
    fn an_untrusted_certificate_is_fatal_and_names_the_fix() {
        let chain = "dispatch failure: io error: client error (Connect): TLS handshake failed: \
                     invalid peer certificate: UnknownIssuer";
        assert!(is_untrusted_certificate(chain));
        assert!(!is_untrusted_certificate(
            "tcp connect error: Connection refused"
        ));
        let e = read(Failure::UntrustedTls(chain.into()));
        assert_eq!(fatal_kind(&e), Some(FatalKind::Other));
        let line = e.to_string();
        assert!(line.contains("(UnknownIssuer)"), "{line}");
        assert!(line.contains("SSL_CERT_FILE"), "{line}");
        assert!(line.contains(ENDPOINT), "{line}");
    }

    #[test]
    fn an_answer_that_is_not_s3_is_fatal_and_says_what_came_back() {
        for status in [404, 501, 405, 403, 412, 500] {
            let e = read(typed(http(status, None), "text/html; charset=utf-8"));
            assert_eq!(
                fatal_kind(&e),
                Some(FatalKind::Unsupported),
                "{status}: {e}"
            );
            let line = e.to_string();
            assert!(
                line.contains(&format!("HTTP {status} with text/html")),
                "{line}"
            );
        }
        // S3's own errors, and bodiless answers (HEAD), keep their meaning.
        let xml = typed(http(404, None), "application/xml");
        assert_eq!(read(xml), StoreError::Missing);
        assert_eq!(read(http(404, None)), StoreError::Missing);
        let coded = typed(http(404, Some("NoSuchKey")), "text/html");
        assert_eq!(read(coded), StoreError::Missing);
    }

    #[test]
    fn endpoint_urls_are_checked_before_any_request() {
        for ok in [
            "http://127.0.0.1:9000",
            "https://s3.example.com",
            "http://[::1]:9000/",
            "https://minio.local/path",
        ] {
            assert_eq!(check_endpoint_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "localhost:9000",
            "http://",
            "http://:9000",
            "http://host:port",
            "http://host:0",
            "http://host:99999",
            "http://ho st:9000",
            "http://[::1:9000",
        ] {
            let e = check_endpoint_url(bad).expect_err(bad);
            assert!(e.contains("is not valid"), "{e}");
        }
    }

    #[test]
    fn other_client_errors_are_fatal_with_the_store_s_words() {
        let e = write(Failure::Http {
            status: 400,
            code: Some("InvalidArgument".into()),
            message: Some("bad header".into()),
            bucket_region: None,
            content_type: Some("application/xml".into()),
        });
        assert_eq!(fatal_kind(&e), Some(FatalKind::Other));
        assert!(
            e.to_string()
                .contains("HTTP 400 InvalidArgument: bad header"),
            "{e}"
        );
    }

    #[test]
    fn if_match_quoting() {
        let quoted = Etag::new("\"9b2cf535f27731c974343645a3985328\"");
        assert_eq!(
            if_match_value(&quoted, false),
            "\"9b2cf535f27731c974343645a3985328\""
        );
        assert_eq!(
            if_match_value(&quoted, true),
            "9b2cf535f27731c974343645a3985328"
        );
        let bare = Etag::new("9b2c");
        assert_eq!(if_match_value(&bare, false), "9b2c");
        assert_eq!(if_match_value(&bare, true), "9b2c");
        // A bare ETag has no quoted form to retry without: replace() retries only when
        // what it sent differs from the normalised form.
        assert_eq!(if_match_value(&bare, false), bare.normalized());
        assert_ne!(if_match_value(&quoted, false), quoted.normalized());
    }

    #[test]
    fn error_chain_is_one_short_line() {
        /// An error with a source, as the SDK's wrappers are.
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dispatch failure")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = Wrapper(refused);
        let line = error_chain(&e);
        assert!(line.starts_with("dispatch failure: "), "{line}");
        assert!(was_refused(&e));
        assert!(!was_refused(&Wrapper(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        let listed = std::io::Error::other(
            "no credentials. Attempted:\n  Environment: unset\n  Profile: none",
        );
        assert_eq!(
            error_chain(&listed),
            "no credentials. Attempted: Environment: unset Profile: none"
        );
        let long = std::io::Error::other("x".repeat(1000));
        assert!(error_chain(&long).chars().count() <= 301);
    }

    fn store_with(conf: aws_sdk_s3::config::Builder) -> S3Store {
        let conf = conf
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .force_path_style(true)
            .retry_config(RetryConfig::disabled())
            .build();
        S3Store::from_conf(
            "lease",
            "locks/nightly",
            conf,
            Duration::from_secs(2),
            "http://127.0.0.1:9".into(),
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn missing_credentials_are_a_permission_failure() {
        use aws_config::profile::ProfileFileCredentialsProvider;
        // A provider that certainly finds nothing, without touching the environment: a
        // profile that no config file defines.
        let provider = ProfileFileCredentialsProvider::builder()
            .profile_name("s3lead-test-profile-that-does-not-exist")
            .build();
        // Nothing listens on port 9 (discard); the request must fail before sending.
        let store = store_with(
            aws_sdk_s3::config::Builder::new()
                .endpoint_url("http://127.0.0.1:9")
                .credentials_provider(provider),
        );
        for result in [
            store.read(None).await.map(|_| ()),
            store.create(b"{}".to_vec()).await.map(|_| ()),
            store
                .replace(&Etag::new("\"x\""), b"{}".to_vec())
                .await
                .map(|_| ()),
        ] {
            let e = result.expect_err("no credentials");
            assert_eq!(fatal_kind(&e), Some(FatalKind::Permission), "{e}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connect_refuses_bad_options_before_any_request() {
        let opts = S3Options {
            endpoint_url: Some("localhost:9000".into()),
            region: None,
            profile: None,
            path_style: false,
            request_timeout: Duration::from_secs(1),
        };
        let e = S3Store::connect("lease", "k", &opts)
            .await
            .expect_err("bad URL");
        assert_eq!(fatal_kind(&e), Some(FatalKind::Other));
        let opts = S3Options {
            endpoint_url: Some("http://127.0.0.1:9".into()),
            ..opts
        };
        let e = S3Store::connect("lease", "", &opts)
            .await
            .expect_err("no key");
        assert_eq!(fatal_kind(&e), Some(FatalKind::Other));
        // No region anywhere (unless the environment has one): a custom endpoint
        // falls back to us-east-1 rather than asking the instance metadata service.
        let store = S3Store::connect("lease", "locks/a", &opts)
            .await
            .expect("connect");
        assert_eq!(store.bucket(), "lease");
        assert_eq!(store.key(), "locks/a");
        assert!(store.client.config().region().is_some());
    }
}
