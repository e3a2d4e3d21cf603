//! What s3lead's log shows an operator at each level, the built binary on the test S3
//! server: `-q` is one line on an error and nothing on success; the AWS SDK's own lines
//! appear only with `-vv`; and with `-vv` no secret appears (the secret key, the session
//! token, an `Authorization` header, a signature, a bearer token).

#[macro_use]
mod e2e;
mod support;

use e2e::{Finished, Lock, finish};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A line of the SDK's own: its operation spans name the RPC.
const SDK_MARK: &str = "rpc.method";

/// `s3lead <flags> run <lock> -- true` with the lock's store environment, plus `env`.
fn run_true(lock: &Lock, flags: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut c = lock.s3lead();
    c.args(flags).arg("run").arg(&lock.url).args(["--", "true"]);
    c.envs(env.iter().copied());
    finish(c, LIMIT)
}

#[test]
fn quiet_prints_one_line_on_missing_credentials_and_nothing_on_success() {
    let lock = Lock::s3("quiet");
    // No credentials anywhere: none in the environment, no config files, and the
    // instance metadata service pointed at a closed port on loopback (the SDK asks it
    // last, and dumps its error in a WARN line of its own).
    let home = tempfile::tempdir().expect("temp dir");
    let mut c = e2e::s3lead();
    c.args(["-q", "run", &lock.url, "--", "true"])
        .envs(lock.env.iter().map(|(k, v)| (k, v)))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", home.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.path().join("credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "false")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1");
    let f = finish(c, LIMIT);
    assert_eq!(f.code, Some(77), "{}", f.stderr);
    let lines: Vec<&str> = f.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one line, not {}:\n{}",
        lines.len(),
        f.stderr
    );
    assert!(
        lines[0].contains(&lock.url) && lines[0].contains("credentials"),
        "{}",
        lines[0]
    );

    let f = run_true(&lock, &["-q"], &[]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(f.stderr, "", "-q printed something on success");
}

#[test]
fn sdk_lines_only_with_vv_and_never_a_secret() {
    let lock = Lock::s3("secrets");
    // Values that appear nowhere else, so any occurrence in the log is a leak. The test
    // servers do not check the secret (LocalStack) or are not used by this test (RGW).
    let secret = "Sekr1tKeyValue-7f3a9c2e41";
    let token = "SessionTokenValue-b5d08e6f19";
    let env = [
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_SESSION_TOKEN", token),
    ];

    for flags in [&[][..], &["-v"][..]] {
        let f = run_true(&lock, flags, &env);
        assert_eq!(f.code, Some(0), "{}", f.stderr);
        assert!(
            !f.stderr.contains(SDK_MARK),
            "the SDK's lines appeared with {flags:?}:\n{}",
            f.stderr
        );
    }

    let f = run_true(&lock, &["-vv"], &env);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(
        f.stderr.contains(SDK_MARK),
        "-vv shows the SDK's lines:\n{}",
        f.stderr
    );
    let lower = f.stderr.to_lowercase();
    for leak in [secret, token] {
        assert!(!f.stderr.contains(leak), "{leak} appeared under -vv");
    }
    for leak in [
        "authorization",
        "x-amz-signature",
        "x-amz-security-token",
        "bearer",
    ] {
        assert!(
            !lower.contains(leak),
            "{leak} appeared under -vv:\n{}",
            f.stderr
                .lines()
                .filter(|l| l.to_lowercase().contains(leak))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// A follower says who holds the lock once, not at every renewal it sees: over several
/// renewals its log holds one "held by" line (and, at `-v`, a debug line per renewal,
/// which shows that it did see them).
fn a_follower_logs_the_holder_once(lock: Lock) {
    let mut holder = lock.hold(&["--id", "steady"]);
    // FAST timings renew every second; six seconds of following see several renewals.
    let mut c = lock.run(&["-v", "-w", "6s"]);
    c.args(["--", "true"]);
    let f = finish(c, LIMIT);
    e2e::send_signal(holder.id(), "TERM");
    let _ = holder.wait();
    assert_eq!(f.code, Some(75), "{}", f.stderr);
    let messages: Vec<String> = f
        .logs()
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str().map(str::to_owned))
        .collect();
    let said = messages
        .iter()
        .filter(|m| m.starts_with("held by steady"))
        .count();
    let renewals_seen = messages
        .iter()
        .filter(|m| m.starts_with("still held by steady"))
        .count();
    assert_eq!(said, 1, "one line for the holder: {messages:#?}");
    assert!(
        renewals_seen >= 2,
        "the follower saw renewals (at debug level): {messages:#?}"
    );
}

#[test]
fn a_follower_logs_the_holder_once_on_the_file_store() {
    a_follower_logs_the_holder_once(Lock::file());
}

#[test]
fn a_follower_logs_the_holder_once_on_s3() {
    a_follower_logs_the_holder_once(Lock::s3("follower-log"));
}
