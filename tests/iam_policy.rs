//! `examples/iam-policy.json`, the least-privilege policy of the README, tried for real on
//! Ceph RGW, which enforces bucket policies (LocalStack and moto do not). A second RGW
//! user is made with `radosgw-admin`; the policy's statements, with that user as their
//! principal, become the policy of a fresh bucket. That user must then be able to `run`,
//! `status` and `check` on the policy's prefix, and get exit 77 with one line naming the
//! lock on a key outside it.
//!
//! The test starts an RGW of its own (tests/support's `rgw_server`) unless the exported
//! test server is one; RGW not installed fails it with what to install.

#[macro_use]
mod e2e;
mod support;

use e2e::{FAST, block_on, finish, s3lead};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::S3Server;

const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/iam-policy.json");
/// The bucket and prefix the example names; the test puts its own bucket in their place
/// and keeps the prefix.
const EXAMPLE_BUCKET: &str = "ops-locks";
const PREFIX: &str = "locks/";

fn admin_client(server: &S3Server) -> aws_sdk_s3::Client {
    support::client_of(server)
}

/// A user of RGW's own, with keys, made with `radosgw-admin` on the server's config.
struct User {
    uid: String,
    access_key: String,
    secret_key: String,
}

fn create_user(server: &S3Server, tag: &str) -> User {
    let logs = server
        .logs
        .as_deref()
        .expect("the RGW server's logs dir (S3LEAD_TEST_SERVER_LOGS) is known");
    let conf = format!("{logs}/data/ceph.conf");
    let user = User {
        uid: format!("s3lead-limited-{tag}"),
        access_key: format!("LIMITED{:0>13}", tag.to_uppercase())[..20].to_owned(),
        secret_key: format!("limitedsecret{tag:0>27}")[..40].to_owned(),
    };
    let out = Command::new("timeout")
        .args(["60", "radosgw-admin", "-c", &conf, "user", "create"])
        .arg(format!("--uid={}", user.uid))
        .arg(format!("--display-name={}", user.uid))
        .arg(format!("--access-key={}", user.access_key))
        .arg(format!("--secret-key={}", user.secret_key))
        .output()
        .expect("run radosgw-admin (installed with RGW: scripts/install-test-servers.sh)");
    assert!(
        out.status.success(),
        "radosgw-admin user create failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    user
}

/// The example's statements for `bucket`, each granted to `uid`: the same policy,
/// attached to the bucket instead of to the user (RGW's way; on AWS, attach the file as
/// it is to the user or role).
fn bucket_policy(bucket: &str, uid: &str) -> String {
    let text = std::fs::read_to_string(POLICY).expect("read examples/iam-policy.json");
    let text = text.replace(
        &format!("arn:aws:s3:::{EXAMPLE_BUCKET}"),
        &format!("arn:aws:s3:::{bucket}"),
    );
    let mut policy: serde_json::Value = serde_json::from_str(&text).expect("the policy is JSON");
    let statements = policy["Statement"]
        .as_array_mut()
        .expect("the policy has statements");
    for st in statements.iter_mut() {
        let resources = st["Resource"].to_string();
        assert!(
            resources.contains(&format!("arn:aws:s3:::{bucket}/{PREFIX}"))
                || resources.contains(&format!("arn:aws:s3:::{bucket}\"")),
            "every statement is on the lock prefix or the bucket: {st}"
        );
        st["Principal"] = serde_json::json!({"AWS": [format!("arn:aws:iam:::user/{uid}")]});
    }
    policy.to_string()
}

fn limited(user: &User, server: &S3Server, args: &[&str]) -> e2e::Finished {
    let mut c = s3lead();
    c.args(args)
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .env("AWS_ACCESS_KEY_ID", &user.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &user.secret_key)
        .env("AWS_REGION", &server.region)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    finish(c, Duration::from_secs(120))
}

#[test]
fn iam_policy_on_rgw_allows_run_status_and_check_on_the_prefix_and_refuses_other_keys() {
    let server = support::rgw_server();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tag = format!("{}{}", std::process::id(), nanos % 1_000_000_000);
    let bucket = format!("iam-{tag}");
    let user = create_user(server, &tag);
    let policy = bucket_policy(&bucket, &user.uid);
    block_on(async {
        let admin = admin_client(server);
        admin
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create the test bucket");
        admin
            .put_bucket_policy()
            .bucket(&bucket)
            .policy(&policy)
            .send()
            .await
            .expect("attach the policy to the bucket");
    });

    let inside = format!("s3://{bucket}/{PREFIX}worker");
    // run, twice: a create on a missing key, then a takeover of the released record.
    for term in ["1", "2"] {
        let mut args = vec!["run"];
        args.extend(FAST);
        args.extend([inside.as_str(), "--", "sh", "-c", "echo $S3LEAD_TERM"]);
        let run = limited(&user, server, &args);
        assert_eq!(run.code, Some(0), "run on the prefix: {}", run.stderr);
        assert_eq!(run.stdout.trim(), term, "{}", run.stderr);
    }
    let status = limited(&user, server, &["status", &inside]);
    // 1: the lock is released, not held (0 would be a live holder).
    assert_eq!(
        status.code,
        Some(1),
        "status on the prefix: {}",
        status.stderr
    );
    assert!(
        status.stdout.contains("free (released by"),
        "{}",
        status.stdout
    );
    let missing = limited(&user, server, &["status", &format!("{inside}-new")]);
    // 1: absent (a 403 would be 77).
    assert_eq!(
        missing.code,
        Some(1),
        "status of a lock not yet made (404, not 403): {}",
        missing.stderr
    );
    let check = limited(&user, server, &["check", "--rounds", "3", &inside]);
    assert_eq!(
        check.code,
        Some(0),
        "check on the prefix: {}{}",
        check.stdout,
        check.stderr
    );

    // A lock outside the prefix, made by the bucket's owner: the limited user may not
    // even read it. (A key that does not exist reads as absent to anyone with
    // s3:ListBucket, the policy's last statement, and is no test of a refusal.)
    let outside = format!("s3://{bucket}/elsewhere/worker");
    let mut owner = s3lead();
    owner
        .arg("run")
        .args(FAST)
        .args([outside.as_str(), "--", "true"])
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_key)
        .env("AWS_REGION", &server.region)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let made = finish(owner, Duration::from_secs(120));
    assert_eq!(
        made.code,
        Some(0),
        "the owner's run outside the prefix: {}",
        made.stderr
    );
    let mut run_outside = vec!["run"];
    run_outside.extend(FAST);
    run_outside.extend([outside.as_str(), "--", "true"]);
    for args in [
        run_outside,
        vec!["status", &outside],
        vec!["check", "--rounds", "1", &outside],
    ] {
        let out = limited(&user, server, &args);
        assert_eq!(
            out.code,
            Some(77),
            "{args:?} outside the prefix: {}",
            out.stderr
        );
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {}", out.stderr);
        assert!(
            lines[0].contains(&outside) && lines[0].contains("access denied"),
            "{args:?}: the line names the lock and the cause: {}",
            lines[0]
        );
    }
}
