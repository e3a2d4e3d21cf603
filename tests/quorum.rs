//! End-to-end tests of `s3lead run --quorum N` and of the followers `s3lead status`
//! lists: the built binary, leaders and followers in peer mode on 127.0.0.1. The leader
//! runs its command only while N candidates are live (itself and the followers it hears
//! long-polling its endpoint), stops it as on a lost lease when fewer are, keeps its
//! lease and term meanwhile, and starts it again once N are back.

#[macro_use]
mod e2e;
mod support;

use e2e::{Lock, free_port, send_signal, wait_exit, wait_for};
use std::process::{Child, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// The lines of the scratch file `name` (empty while it does not exist).
fn lines(lock: &Lock, name: &str) -> Vec<String> {
    e2e::read(&lock.path(name))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A leader in peer mode with `--quorum need`: its command appends `start TERM` to
/// `runs` when it starts and `stop` when TERM ends it.
fn quorum_leader(lock: &Lock, port: u16, need: &str, extra: &[&str]) -> Child {
    let listen = format!("127.0.0.1:{port}");
    let advertise = format!("http://{listen}");
    let runs = lock.path("runs");
    let cmd = format!(
        "echo \"start $S3LEAD_TERM\" >> {runs}; trap 'echo stop >> {runs}; exit 0' TERM; \
         while :; do sleep 0.1; done",
        runs = runs.display()
    );
    let mut args = vec![
        "--id",
        "leader",
        "--quorum",
        need,
        "--peer-listen",
        &listen,
        "--advertise",
        &advertise,
        "--no-verify-store",
    ];
    args.extend(extra);
    args.extend(["-c", &cmd]);
    lock.run(&args)
        .stderr(std::fs::File::create(lock.path("leader.log")).expect("log file"))
        .spawn()
        .expect("spawn the leader")
}

/// A follower named `id`, whose command (should it ever lead) touches `ID-ran`.
fn follower(lock: &Lock, id: &str, extra: &[&str]) -> Child {
    let cmd = format!("touch {}", lock.path(&format!("{id}-ran")).display());
    let mut args = vec!["--id", id, "--no-verify-store"];
    args.extend(extra);
    args.extend(["-c", &cmd]);
    lock.run(&args)
        .stderr(std::fs::File::create(lock.path(&format!("{id}.log"))).expect("log file"))
        .spawn()
        .expect("spawn a follower")
}

/// `s3lead status --json` of the lock, parsed.
fn status_json(lock: &Lock, extra: &[&str]) -> serde_json::Value {
    let out = lock
        .s3lead()
        .arg("status")
        .arg("--json")
        .args(extra)
        .arg(&lock.url)
        .stderr(Stdio::inherit())
        .output()
        .expect("run status");
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

/// The ids `status --json` lists as following.
fn followers_listed(lock: &Lock, extra: &[&str]) -> Vec<String> {
    let v = status_json(lock, extra);
    v["followers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn quorum_loss_stops_the_command_and_quorum_regained_starts_it_again(lock: Lock) {
    let port = free_port();
    let mut leader = quorum_leader(&lock, port, "2", &[]);
    let log = || e2e::read(&lock.path("leader.log"));
    wait_for("the leader to wait for its quorum", LIMIT, || {
        log().contains("waiting for a quorum")
    });
    let record = lock.record();
    assert_eq!(record["holder"], "leader", "{record}");
    assert!(
        lines(&lock, "runs").is_empty(),
        "the command must not start with 1 of 2 candidates live: {}",
        log()
    );

    let mut one = follower(&lock, "one", &[]);
    wait_for(
        "the command to start once a follower is heard",
        LIMIT,
        || lines(&lock, "runs").len() == 1,
    );
    assert_eq!(lines(&lock, "runs"), ["start 1"]);
    wait_for("status to list the follower", LIMIT, || {
        followers_listed(&lock, &[]) == ["one"]
    });

    // The follower dies: its long-polls stop, and with them the quorum.
    send_signal(one.id(), "KILL");
    let _ = wait_exit(&mut one, LIMIT);
    wait_for(
        "the command to be stopped for the lost quorum",
        LIMIT,
        || lines(&lock, "runs").len() == 2,
    );
    assert_eq!(lines(&lock, "runs"), ["start 1", "stop"]);
    let record = lock.record();
    assert_eq!(record["holder"], "leader", "the lease is kept: {record}");
    assert_eq!(record["term"], 1, "{record}");
    assert_eq!(record["released"], false, "{record}");
    assert!(leader.try_wait().expect("try_wait").is_none(), "{}", log());
    let seq = record["seq"].as_u64().expect("seq");
    wait_for(
        "the leader to go on renewing without its command",
        LIMIT,
        || lock.record()["seq"].as_u64().is_some_and(|s| s >= seq + 2),
    );
    assert_eq!(lines(&lock, "runs").len(), 2, "{}", log());

    // A new follower brings the quorum back: the same leader runs it again, same term.
    let mut two = follower(&lock, "two", &[]);
    wait_for("the command to start again", LIMIT, || {
        lines(&lock, "runs").len() == 3
    });
    assert_eq!(lines(&lock, "runs"), ["start 1", "stop", "start 1"]);

    send_signal(leader.id(), "TERM");
    let st = wait_exit(&mut leader, LIMIT);
    assert_eq!(st.code(), Some(0), "the command's own status: {}", log());
    wait_for("the follower to take over the released lock", LIMIT, || {
        lock.path("two-ran").exists()
    });
    let st = wait_exit(&mut two, LIMIT);
    assert_eq!(st.code(), Some(0), "{}", e2e::read(&lock.path("two.log")));
    assert_eq!(lines(&lock, "runs"), ["start 1", "stop", "start 1", "stop"]);
    assert!(!lock.path("one-ran").exists());
    assert_eq!(lock.record()["term"], 2);
    let log = log();
    assert!(log.contains("the quorum was lost"), "{log}");
    assert!(log.contains("quorum reached"), "{log}");
}

#[test]
fn quorum_loss_stops_the_command_and_quorum_regained_starts_it_again_on_file() {
    quorum_loss_stops_the_command_and_quorum_regained_starts_it_again(Lock::file());
}

#[test]
fn quorum_loss_stops_the_command_and_quorum_regained_starts_it_again_on_s3() {
    quorum_loss_stops_the_command_and_quorum_regained_starts_it_again(Lock::s3("quorum"));
}

/// A stop request while the leader waits for its quorum releases the lease at once;
/// the command never ran.
#[test]
fn sigterm_while_waiting_for_a_quorum_releases_without_running() {
    let lock = Lock::file();
    let mut leader = quorum_leader(&lock, free_port(), "3", &[]);
    let log = || e2e::read(&lock.path("leader.log"));
    wait_for("the leader to wait for its quorum", LIMIT, || {
        log().contains("waiting for a quorum")
    });
    send_signal(leader.id(), "TERM");
    let st = wait_exit(&mut leader, LIMIT);
    assert_eq!(st.code(), Some(128 + 15), "{}", log());
    assert_eq!(lock.record()["released"], true);
    assert!(lines(&lock, "runs").is_empty());
}

/// `status` lists the followers the leader's endpoint hears; with `--peer-token-file`
/// the endpoint asks for the token, and `status` says why it cannot list them without.
#[test]
fn status_lists_the_followers_and_needs_the_token_when_the_leader_does() {
    let lock = Lock::file();
    let token = lock.path("token");
    std::fs::write(&token, "s3cr3t-quorum\n").expect("token file");
    let token = token.to_string_lossy().into_owned();
    let with_token = ["--peer-token-file", token.as_str()];
    let mut leader = quorum_leader(&lock, free_port(), "2", &with_token);
    // The leader first: started together, the follower could win the lock instead.
    wait_for("the leader to wait for its quorum", LIMIT, || {
        e2e::read(&lock.path("leader.log")).contains("waiting for a quorum")
    });
    let mut one = follower(&lock, "one", &with_token);
    wait_for("the command to start", LIMIT, || {
        lines(&lock, "runs").len() == 1
    });
    wait_for("status to list the follower", LIMIT, || {
        followers_listed(&lock, &with_token) == ["one"]
    });
    let v = status_json(&lock, &[]);
    assert!(v["followers"].is_null(), "{v}");
    let why = v["followers_error"].as_str().unwrap_or_default();
    assert!(why.contains("401"), "{v}");

    let out = lock
        .s3lead()
        .args(["status", "--peer-token-file", &token, &lock.url])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("followers  1 heard on its endpoint: one (heard "),
        "{text}"
    );
    assert!(!text.contains("s3cr3t"), "{text}");
    for child in [&mut one, &mut leader] {
        send_signal(child.id(), "TERM");
        let _ = wait_exit(child, LIMIT);
    }
    let log = e2e::read(&lock.path("leader.log")) + &e2e::read(&lock.path("one.log"));
    assert!(!log.contains("s3cr3t"), "{log}");
}

/// `--quorum` without an endpoint to hear followers on is refused before any request.
#[test]
fn a_quorum_without_peer_listen_and_advertise_is_refused() {
    let lock = Lock::file();
    let f = lock.refused_run(&["--quorum", "2", "-c", "true"]);
    assert!(f.stderr.contains("--peer-listen"), "{}", f.stderr);
}
