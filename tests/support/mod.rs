//! Test harness for integration tests that need a real S3-compatible server.
//!
//! Use it from any file in `tests/` with `mod support;`. Every test that needs the server
//! has `on_s3` in its name (test.sh runs exactly those against every server kind), and
//! gets the server from [`s3_server`], keys from [`unique_key`], an SDK client from
//! [`s3_client`] and the environment for a spawned `s3lead` from [`s3_env`].
//!
//! Where the server comes from:
//! - `S3LEAD_TEST_ENDPOINT` set (test.sh starts one server and exports it with the other
//!   `S3LEAD_TEST_*` variables, so every test binary shares it): that server is used.
//! - Otherwise the first call runs `scripts/start-s3-server.sh <kind> --watch-stdin`
//!   (kind from `S3LEAD_TEST_SERVER`, default `localstack`) and keeps the write end of its
//!   stdin pipe open in a static for the life of the test process. When the process ends,
//!   however it ends, the kernel closes the pipe and the script's wrapper stops the server:
//!   a plain `cargo test` never leaves a server behind.
//!
//! A server that is not installed is a panic that says what to install, never a skip: a
//! test that silently did not run is worse than a red one.

#![allow(dead_code)] // each test binary uses only part of this module

use std::collections::HashMap;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};

/// How to reach the test server.
#[derive(Clone, Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:PORT`: path-style requests only.
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// A bucket that exists (`lease`).
    pub bucket: String,
    /// `localstack`, `rgw`, `moto`, or `external` for an exported server of unknown kind.
    /// Tests may branch on it for documented provider quirks (see the README's notes).
    pub kind: String,
    /// The server's temp dir (`S3LEAD_TEST_SERVER_LOGS`), when known: RGW's `ceph.conf`
    /// is `<logs>/data/ceph.conf`, for `radosgw-admin`.
    pub logs: Option<String>,
}

/// The result is kept, failure included, so that a server that cannot start fails every
/// test at once with the same message instead of being retried by each one.
static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();

/// The write end of the started server's stdin watch. Never written and never dropped
/// (statics are not dropped at exit): it only has to stay open until the process ends.
static SERVER_STDIN: OnceLock<ChildStdin> = OnceLock::new();

/// The S3-compatible server for this test binary: started once (lazily, thread-safe) and
/// shared by all its tests. The first call can take a while (LocalStack ~2-8 s, RGW ~17 s).
pub fn s3_server() -> &'static S3Server {
    match SERVER.get_or_init(init_server) {
        Ok(server) => server,
        Err(message) => panic!("{message}"),
    }
}

/// A key unique to this call (test name + counter + pid + time), e.g.
/// `locks/<name>-<n>-<pid>-<nanos>`, so tests sharing one bucket (and reruns against a
/// server that outlives them) never meet each other's objects.
pub fn unique_key(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("locks/{name}-{n}-{}-{nanos}", std::process::id())
}

/// An `aws_sdk_s3::Client` for the server (path style, static keys, region, endpoint,
/// checksum calculation and validation "when required"), for tests that poke the store
/// behind s3lead's back. "When required" because the checksums the SDK adds by default
/// (trailing CRC32 in aws-chunked bodies) are not understood by every S3-compatible server.
pub async fn s3_client() -> aws_sdk_s3::Client {
    client_of(s3_server())
}

/// [`s3_client`] for a given server, as its administrator.
pub fn client_of(server: &S3Server) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&server.endpoint)
        .region(Region::new(server.region.clone()))
        .credentials_provider(Credentials::new(
            &server.access_key,
            &server.secret_key,
            None,
            None,
            "s3lead-tests",
        ))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Environment variables a spawned `s3lead` binary needs to reach the server. The
/// metadata service is disabled so that a missing setting fails fast instead of the SDK
/// probing 169.254.169.254 for a second.
pub fn s3_env() -> Vec<(String, String)> {
    let server = s3_server();
    [
        ("AWS_ENDPOINT_URL", server.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", server.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", server.secret_key.as_str()),
        ("AWS_REGION", server.region.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn init_server() -> Result<S3Server, String> {
    match non_empty_env("S3LEAD_TEST_ENDPOINT") {
        Some(endpoint) => exported_server(endpoint),
        None => start_server(),
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The server test.sh (or a developer) started and exported.
fn exported_server(endpoint: String) -> Result<S3Server, String> {
    let required = |name: &str| {
        non_empty_env(name).ok_or_else(|| {
            format!(
                "S3LEAD_TEST_ENDPOINT is set but {name} is not: export every variable \
                 that scripts/start-s3-server.sh prints, or unset S3LEAD_TEST_ENDPOINT \
                 to let the tests start their own server"
            )
        })
    };
    Ok(S3Server {
        endpoint,
        access_key: required("S3LEAD_TEST_ACCESS_KEY")?,
        secret_key: required("S3LEAD_TEST_SECRET_KEY")?,
        region: non_empty_env("S3LEAD_TEST_REGION").unwrap_or_else(|| "us-east-1".into()),
        bucket: non_empty_env("S3LEAD_TEST_BUCKET").unwrap_or_else(|| "lease".into()),
        kind: non_empty_env("S3LEAD_TEST_SERVER").unwrap_or_else(|| "external".into()),
        logs: non_empty_env("S3LEAD_TEST_SERVER_LOGS"),
    })
}

/// A Ceph RGW server whatever `S3LEAD_TEST_SERVER` says, for tests of what only RGW
/// shows here (it enforces bucket policies; LocalStack and moto do not): the exported
/// server if it is RGW and names its logs dir, else one started for this test binary.
/// Never a skip: RGW not installed is a panic saying what to install.
pub fn rgw_server() -> &'static S3Server {
    static RGW: OnceLock<Result<S3Server, String>> = OnceLock::new();
    static RGW_STDIN: OnceLock<ChildStdin> = OnceLock::new();
    let server = RGW.get_or_init(|| {
        if non_empty_env("S3LEAD_TEST_ENDPOINT").is_some()
            && non_empty_env("S3LEAD_TEST_SERVER").as_deref() == Some("rgw")
            && non_empty_env("S3LEAD_TEST_SERVER_LOGS").is_some()
        {
            return init_server();
        }
        start_server_of("rgw", &RGW_STDIN)
    });
    match server {
        Ok(server) => server,
        Err(message) => panic!("{message}"),
    }
}

/// Starts a server of our own with start-s3-server.sh and parses the line it prints.
fn start_server() -> Result<S3Server, String> {
    let kind = non_empty_env("S3LEAD_TEST_SERVER").unwrap_or_else(|| "localstack".into());
    start_server_of(&kind, &SERVER_STDIN)
}

/// Starts a server of `kind`, keeping its stdin watch in `stdin` (see [`SERVER_STDIN`]).
fn start_server_of(kind: &str, stdin_keeper: &OnceLock<ChildStdin>) -> Result<S3Server, String> {
    let kind = kind.to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/start-s3-server.sh");
    let mut child = Command::new(script)
        .arg(&kind)
        .arg("--watch-stdin")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    // Keep the stdin pipe before waiting: wait_with_output() would close it, and with it
    // the server. Rust creates the pipe close-on-exec, so the s3lead processes a test
    // spawns do not inherit it and cannot keep a server alive after the tests.
    let stdin = child.stdin.take().expect("stdin was piped");
    // Only ever set once: init_server runs inside SERVER.get_or_init.
    let _ = stdin_keeper.set(stdin);
    // The script exits once the server is ready; the server itself holds neither pipe,
    // so this returns then with the one line on stdout.
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {script}: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(3) {
        let install = match kind.as_str() {
            "rgw" => "S3LEAD_TEST_SERVER=rgw scripts/install-test-servers.sh",
            "moto" => "scripts/install-test-servers.sh --moto",
            _ => "scripts/install-test-servers.sh",
        };
        return Err(format!(
            "the '{kind}' S3 test server is not installed. Run `{install}` in {} \
             (or `./test.sh`, which installs everything and runs the whole suite).\n{stderr}",
            env!("CARGO_MANIFEST_DIR")
        ));
    }
    if !output.status.success() {
        return Err(format!(
            "scripts/start-s3-server.sh {kind} failed ({}):\n{stderr}",
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let vars: HashMap<&str, &str> = stdout
        .split_whitespace()
        .filter_map(|assignment| assignment.split_once('='))
        .collect();
    let get = |name: &str| {
        vars.get(name)
            .map(|v| v.to_string())
            .ok_or_else(|| format!("start-s3-server.sh printed no {name}: {stdout:?}"))
    };
    Ok(S3Server {
        endpoint: get("S3LEAD_TEST_ENDPOINT")?,
        region: get("S3LEAD_TEST_REGION")?,
        access_key: get("S3LEAD_TEST_ACCESS_KEY")?,
        secret_key: get("S3LEAD_TEST_SECRET_KEY")?,
        bucket: get("S3LEAD_TEST_BUCKET")?,
        logs: vars.get("S3LEAD_TEST_SERVER_LOGS").map(|v| v.to_string()),
        kind,
    })
}
