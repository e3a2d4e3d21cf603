//! End-to-end tests of `s3lead run`, the built binary driven as a user would, on the file
//! store and on the test S3 server (tests named `on_s3`). Each checks what an operator
//! would check: what the command saw, the exit status, the lock object, which processes
//! are left.

#[macro_use]
mod e2e;
mod support;

use e2e::proxy::{Mode, Proxy, endpoint_addr};
use e2e::{FAST, Lock, alive, finish, read, send_signal, wait_exit, wait_for};
use std::process::Stdio;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A shell command that runs `traps`, writes `started` to `out`, then loops until a
/// signal ends it; `{o}` in `traps` stands for `out`.
fn looping(out: &std::path::Path, traps: &str) -> String {
    let o = out.display();
    format!(
        "{} echo started >> {o}; while :; do sleep 0.1; done",
        traps.replace("{o}", &o.to_string())
    )
}

fn wait_started(out: &std::path::Path) {
    wait_for("the command to start", LIMIT, || {
        read(out).contains("started")
    });
}

/// A command that appends its term to `out`.
fn log_term(lock: &Lock) -> String {
    format!("echo \"$S3LEAD_TERM\" >> {}", lock.path("terms").display())
}

// ---- the term ------------------------------------------------------------------------

fn term_grows_by_one_per_acquisition(lock: Lock) {
    for _ in 0..3 {
        let mut cmd = lock.run(&["-c", &log_term(&lock)]);
        cmd.env("S3LEAD_TERM", "999");
        let f = finish(cmd, LIMIT);
        assert_eq!(f.code, Some(0), "{}", f.stderr);
    }
    let terms: Vec<u64> = read(&lock.path("terms"))
        .lines()
        .map(|l| l.parse().expect("a number"))
        .collect();
    assert_eq!(
        terms,
        vec![1, 2, 3],
        "inherited S3LEAD_TERM=999 must not reach the child"
    );
    let rec = lock.record();
    assert_eq!(rec["term"], 3);
    assert_eq!(rec["released"], true);
}

on_both_stores!(term_grows_by_one_per_acquisition);

#[test]
fn the_child_sees_its_lease_in_the_environment() {
    let lock = Lock::file();
    let env_file = lock.path("env");
    let f = finish(
        lock.run(&[
            "--id",
            "worker-7",
            "-c",
            &format!("env | grep ^S3LEAD_ | sort > {}", env_file.display()),
        ]),
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let env = read(&env_file);
    assert!(env.contains("S3LEAD_TERM=1\n"), "{env}");
    assert!(
        env.contains(&format!("S3LEAD_LOCK={}\n", lock.url)),
        "{env}"
    );
    assert!(env.contains("S3LEAD_HOLDER=worker-7\n"), "{env}");
    assert!(env.contains("S3LEAD_LEASE_ID="), "{env}");
    assert_eq!(
        env.lines().count(),
        4,
        "no other S3LEAD_ variable leaks to the child: {env}"
    );
}

// ---- busy: -n, -E, -w ------------------------------------------------------------------

fn busy_lock_is_refused(lock: Lock) {
    let mut holder = lock.hold(&[]);

    let ran = lock.path("ran");
    let touch = format!("touch {}", ran.display());
    let f = finish(lock.run(&["-n", "-c", &touch]), LIMIT);
    assert_eq!(f.code, Some(75), "-n on a held lock: {}", f.stderr);
    let f = finish(lock.run(&["-n", "-E", "0", "-c", &touch]), LIMIT);
    assert_eq!(f.code, Some(0), "-n -E 0: {}", f.stderr);
    let f = finish(lock.run(&["-w", "1s", "-c", &touch]), LIMIT);
    assert_eq!(f.code, Some(75), "-w 1s: {}", f.stderr);
    assert!(!ran.exists(), "a refused run must not run its command");

    send_signal(holder.id(), "TERM");
    let st = wait_exit(&mut holder, LIMIT);
    assert_eq!(
        st.code(),
        Some(143),
        "sleep killed by the forwarded SIGTERM"
    );
}

on_both_stores!(busy_lock_is_refused);

// ---- exit status ------------------------------------------------------------------------

#[test]
fn exit_status_passes_through() {
    let lock = Lock::file();
    for (cmd, want) in [("exit 0", 0), ("exit 3", 3), ("kill -KILL $$", 137)] {
        let f = finish(lock.run(&["-c", cmd]), LIMIT);
        assert_eq!(f.code, Some(want), "{cmd}: {}", f.stderr);
    }
    let f = finish(lock.run(&[]).args(["--", "/nonexistent/command"]), LIMIT);
    assert_eq!(f.code, Some(127), "{}", f.stderr);
    assert!(
        f.stderr.contains("/nonexistent/command: command not found"),
        "{}",
        f.stderr
    );
    let not_exec = lock.path("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let f = finish(lock.run(&[]).arg("--").arg(&not_exec), LIMIT);
    assert_eq!(f.code, Some(126), "{}", f.stderr);
    // A failed spawn still releases: the next run gets the lock at once.
    let f = finish(lock.run(&["-n", "-c", "true"]), LIMIT);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
}

// ---- SIGTERM: forward, wait, release -------------------------------------------------

fn sigterm_is_forwarded_and_the_lock_released(lock: Lock) {
    let out = lock.path("out");
    let script = looping(&out, "trap 'echo got-TERM >> {o}; exit 7' TERM;");
    let mut s = lock.start(&["-c", &script]);
    wait_started(&out);
    send_signal(s.id(), "TERM");
    let st = wait_exit(&mut s, LIMIT);
    assert!(read(&out).contains("got-TERM"), "the child saw SIGTERM");
    assert_eq!(st.code(), Some(7), "s3lead exits with the child's status");
    let rec = lock.record();
    assert_eq!(rec["released"], true);
    assert_eq!(rec["term"], 1);
    // Released, so the next run starts at once (-n would refuse a live holder).
    let f = finish(lock.run(&["-n", "-c", &log_term(&lock)]), LIMIT);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(read(&lock.path("terms")).trim(), "2");
}

on_both_stores!(sigterm_is_forwarded_and_the_lock_released);

#[test]
fn a_child_ignoring_sigterm_is_killed_after_kill_after_on_shutdown() {
    let lock = Lock::file();
    let out = lock.path("out");
    let script = looping(&out, "trap '' TERM;");
    let mut s = lock
        .run(&["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_started(&out);
    send_signal(s.id(), "TERM");
    let st = wait_exit(&mut s, LIMIT);
    assert_eq!(st.code(), Some(137), "killed by SIGKILL after --kill-after");
    assert_eq!(lock.record()["released"], true);
}

#[test]
fn a_second_sigint_kills_at_once() {
    let lock = Lock::file();
    let out = lock.path("out");
    let script = looping(&out, "trap '' INT TERM;");
    // A long kill grace: only the second signal can end this quickly enough to pass.
    let mut s = lock
        .run_timed(
            &["--lease-duration", "120s", "-k", "100s"],
            &["-c", &script],
        )
        .stderr(std::fs::File::create(lock.path("log")).unwrap())
        .spawn()
        .expect("spawn");
    wait_started(&out);
    send_signal(s.id(), "INT");
    // Two signals sent back to back may be delivered as one: wait until the first one
    // has been acted on.
    wait_for("the first SIGINT to be forwarded", LIMIT, || {
        read(&lock.path("log")).contains("sent SIGINT")
    });
    send_signal(s.id(), "INT");
    let st = wait_exit(&mut s, LIMIT);
    assert_eq!(st.code(), Some(137));
}

#[test]
fn hup_and_usr1_are_forwarded() {
    let lock = Lock::file();
    let out = lock.path("out");
    let script = looping(
        &out,
        "trap 'echo HUP >> {o}' HUP; trap 'echo USR1 >> {o}' USR1; trap 'exit 0' TERM;",
    );
    let mut s = lock.start(&["-c", &script]);
    wait_started(&out);
    send_signal(s.id(), "HUP");
    wait_for("HUP to reach the command", LIMIT, || {
        read(&out).contains("HUP")
    });
    send_signal(s.id(), "USR1");
    wait_for("USR1 to reach the command", LIMIT, || {
        read(&out).contains("USR1")
    });
    send_signal(s.id(), "TERM");
    assert_eq!(wait_exit(&mut s, LIMIT).code(), Some(0));
}

#[test]
fn sigterm_while_waiting_for_the_lock_ends_the_wait() {
    let lock = Lock::file();
    let mut holder = lock.hold(&[]);
    let ran = lock.path("ran");
    let log = lock.path("waiter.log");
    let mut waiter = lock
        .run(&["-c", &format!("touch {}", ran.display())])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn waiter");
    wait_for("the waiter to see the holder", LIMIT, || {
        read(&log).contains("waiting")
    });
    send_signal(waiter.id(), "TERM");
    assert_eq!(wait_exit(&mut waiter, LIMIT).code(), Some(143));
    assert!(!ran.exists());
    send_signal(holder.id(), "TERM");
    wait_exit(&mut holder, LIMIT);
}

// ---- lease lost --------------------------------------------------------------------------

/// Someone else's lease id in the record: the lease can no longer be proven ours (another
/// holder may already run), so the command is killed at once, without its grace.
fn a_taken_over_lease_kills_the_child_at_once(lock: Lock) {
    let out = lock.path("out");
    // A child that would take its whole grace: it ignores TERM.
    let script = looping(&out, "trap 'echo got-TERM >> {o}' TERM;");
    let s = lock.run(&["-c", &script]);
    let handle = std::thread::spawn(move || finish(s, LIMIT));
    wait_started(&out);
    let mut thief = lock.record();
    thief["lease_id"] = "someone-else".into();
    thief["holder"] = "thief".into();
    thief["term"] = (thief["term"].as_u64().unwrap() + 1).into();
    lock.overwrite(&thief);
    let f = handle.join().expect("run thread");
    assert_eq!(f.code, Some(76), "the lost code: {}", f.stderr);
    assert!(f.stderr.contains("taken over by thief"), "{}", f.stderr);
    let kill = f.log("SIGKILL").expect("SIGKILL logged");
    assert!(kill.to_string().contains("no grace"), "{kill}");
    assert!(
        !read(&out).contains("got-TERM"),
        "no stop signal, no grace: {}",
        f.stderr
    );
    // The thief's record is left alone: no release over someone else's lease.
    assert_eq!(lock.record()["holder"], "thief");
}

#[test]
fn a_taken_over_lease_kills_the_child_at_once_on_file() {
    a_taken_over_lease_kills_the_child_at_once(Lock::file());
}

#[test]
fn a_taken_over_lease_kills_the_child_at_once_on_s3() {
    a_taken_over_lease_kills_the_child_at_once(Lock::s3("lost"));
}

/// The store goes away after acquisition: the child must be stopped, and the stop logged
/// before the lease's end (both instants are on s3lead's boot clock, in its log).
#[test]
fn failing_renewals_stop_the_child_before_the_lease_ends_on_s3() {
    let lock = Lock::s3("outage");
    let server = support::s3_server();
    let proxy = Proxy::start(endpoint_addr(&server.endpoint));
    let out = lock.path("out");
    let script = looping(&out, "trap 'echo got-TERM >> {o}; exit 0' TERM;");
    let mut cmd = lock.run(&["-c", &script]);
    cmd.env("AWS_ENDPOINT_URL", proxy.endpoint());
    let handle = std::thread::spawn(move || finish(cmd, LIMIT));
    wait_started(&out);
    proxy.set(Mode::Refuse);
    let f = handle.join().expect("run thread");
    assert_eq!(f.code, Some(76), "{}", f.stderr);
    assert!(read(&out).contains("got-TERM"));
    let stop = f
        .log("to the command; SIGKILL")
        .unwrap_or_else(|| panic!("no stop line: {}", f.stderr));
    let now = stop["fields"]["now_ms"].as_u64().expect("now_ms");
    let valid_until = stop["fields"]["valid_until_ms"]
        .as_u64()
        .expect("valid_until_ms");
    assert!(
        now < valid_until,
        "stopped at {now} ms, lease valid until {valid_until} ms"
    );
    assert!(
        f.log("no longer safe to hold").is_some(),
        "the reason is logged: {}",
        f.stderr
    );
    // The renewal task may or may not have reached its own stop point before the
    // supervisor's timer stopped the command; when it did, both saw the same lease end.
    if let Some(risk) = f.log("lease at risk") {
        assert_eq!(risk["fields"]["valid_until_ms"].as_u64(), Some(valid_until));
    }
}

// ---- kill -9 of s3lead ----------------------------------------------------------------------

#[test]
fn kill_9_of_s3lead_takes_the_child_and_grandchild_with_it() {
    let lock = Lock::file();
    let pids = lock.path("pids");
    // The shell forks a grandchild (sleep in the background) and waits.
    let script = format!(
        "sleep 300 & echo $$ $! > {}.tmp && mv {p}.tmp {p}; wait",
        pids.display(),
        p = pids.display()
    );
    let mut s = lock.start(&["-c", &script]);
    wait_for("the pids file", LIMIT, || {
        read(&pids).split_whitespace().count() == 2
    });
    let ids: Vec<i32> = read(&pids)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(ids.iter().all(|&p| alive(p)));
    send_signal(s.id(), "KILL");
    let _ = s.wait();
    wait_for(
        "the child and the grandchild to be gone",
        Duration::from_secs(20),
        || ids.iter().all(|&p| !alive(p)),
    );
}

// ---- refused before any request -----------------------------------------------------------

#[test]
fn unsafe_timing_is_refused_before_any_request() {
    // An endpoint where nothing listens: any request would fail differently.
    let f = finish(
        {
            let mut c = e2e::s3lead();
            c.args([
                "run",
                "--lease-duration",
                "5s",
                "--renew-every",
                "10s",
                "s3://bucket/key",
                "--",
                "true",
            ])
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y");
            c
        },
        LIMIT,
    );
    assert_eq!(f.code, Some(64), "{}", f.stderr);
    assert_eq!(f.stderr.lines().count(), 1, "one line: {}", f.stderr);
    assert!(
        f.stderr.contains("s3://bucket/key"),
        "names the lock: {}",
        f.stderr
    );
    assert!(
        f.stderr.contains("exceeds --lease-duration (5s)"),
        "{}",
        f.stderr
    );
}

#[test]
fn bad_flags_and_lock_names_are_usage_errors() {
    for args in [
        vec!["run", "gs://b/k", "--", "true"],
        vec!["run", "--lease-duration", "soon", "./x.lock", "--", "true"],
        vec!["run", "--signal", "NOPE", "./x.lock", "--", "true"],
        vec!["run", "./x.lock"],
    ] {
        let f = finish(
            {
                let mut c = e2e::s3lead();
                c.args(&args);
                c
            },
            LIMIT,
        );
        assert_eq!(f.code, Some(64), "{args:?}: {}", f.stderr);
    }
}

#[test]
fn a_missing_bucket_is_one_clear_line_on_s3() {
    let server = support::s3_server();
    let lock = format!("s3://no-such-bucket-{}/k", std::process::id());
    let mut c = e2e::s3lead();
    c.arg("run").args(FAST).arg(&lock).args(["--", "true"]);
    c.envs(support::s3_env());
    let f = finish(c, LIMIT);
    assert_eq!(f.code, Some(69), "{}", f.stderr);
    let last = f.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&lock) || last.contains("no-such-bucket"),
        "{last}"
    );
    assert!(last.to_lowercase().contains("bucket"), "{last}");
    let _ = server;
}

#[test]
fn bad_credentials_are_a_permission_error_on_s3() {
    let lock = Lock::s3("creds");
    let mut c = lock.run(&[]);
    c.args(["--", "true"]);
    c.env("AWS_SECRET_ACCESS_KEY", "wrong-secret");
    let f = finish(c, LIMIT);
    if support::s3_server().kind == "localstack" {
        // LocalStack does not check signatures: nothing to refuse.
        assert_eq!(f.code, Some(0), "{}", f.stderr);
    } else {
        assert_eq!(f.code, Some(77), "{}", f.stderr);
    }
}

#[test]
fn a_malformed_lock_object_is_refused_and_left_alone() {
    let lock = Lock::file();
    std::fs::write(lock.file.as_ref().unwrap(), b"{\"v\":2,\"term\":9}").unwrap();
    let f = finish(lock.run(&[]).args(["--", "true"]), LIMIT);
    assert_eq!(f.code, Some(65), "{}", f.stderr);
    assert!(f.stderr.contains("version 2"), "{}", f.stderr);
    assert_eq!(lock.record()["v"], 2, "never overwritten");
}

/// A holder that crashed without releasing: `-n` must not report busy forever. Its record
/// is old by the wall clock, so `-n` waits its lease out (by observed time) and runs.
#[test]
fn nonblock_waits_out_an_abandoned_record() {
    let lock = Lock::file();
    std::fs::write(
        lock.file.as_ref().unwrap(),
        br#"{"v":1,"term":41,"holder":"crashed (pid 1)","lease_id":"dead","seq":9,"lease_ms":2000,
            "acquired_at":"2020-01-01T00:00:00Z","renewed_at":"2020-01-01T00:00:00Z","released":false}"#,
    )
    .unwrap();
    let f = finish(lock.run(&["-n", "-c", &log_term(&lock)]), LIMIT);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(read(&lock.path("terms")).trim(), "42");
}

/// A lock file the user may not touch: exit 77, one line naming the lock. Root ignores
/// file modes, so as root the binary runs as `nobody` (CI runs as root).
#[test]
fn permission_denied_exits_77() {
    let lock = Lock::file();
    std::fs::write(lock.file.as_ref().unwrap(), b"").unwrap();
    let mut c = e2e::unprivileged(e2e::S3LEAD);
    // Private to root; for a non-root user, closed to its owner too.
    use std::os::unix::fs::PermissionsExt;
    let mode = if e2e::is_root() { 0o700 } else { 0o000 };
    std::fs::set_permissions(lock.dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    c.args(["run", &lock.url, "--", "true"]);
    let f = finish(c, LIMIT);
    std::fs::set_permissions(lock.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(f.code, Some(77), "{}", f.stderr);
    let last = f.stderr.lines().last().unwrap_or_default();
    assert!(last.contains(&lock.url), "names the lock: {last}");
}

// ---- a landed write answered with an error ---------------------------------------------

/// A renewal that lands but is answered with an error (here a 200 without an ETag, which
/// s3lead's client cannot use) may have landed: the lease must count from *that* send, not
/// from a retry's, or the leader would run on past the moment a follower, counting from the
/// landed write, may take over. s3lead logs the recovered lease's end on its boot clock; the
/// proxy notes (on the same clock) when the faulted PUT reached it, which is after s3lead
/// sent it.
#[test]
fn a_landed_renewal_answered_with_an_error_counts_from_its_first_send_on_s3() {
    use e2e::http_fault::{Fault, HttpFaultProxy};
    let lock = Lock::s3("landed-error");
    let server = support::s3_server();
    let proxy = HttpFaultProxy::start(endpoint_addr(&server.endpoint));
    let out = lock.path("out");
    let script = looping(&out, "trap 'exit 0' TERM;");
    let mut cmd = lock.run(&["-c", &script]);
    cmd.env("AWS_ENDPOINT_URL", proxy.endpoint());
    let log = lock.path("log");
    let mut s = cmd
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    wait_started(&out);
    proxy.arm(Fault::StripEtag);
    wait_for("a renewal to recover from the fault", LIMIT, || {
        read(&log).contains("renewed after trouble")
    });
    send_signal(s.id(), "TERM");
    assert_eq!(wait_exit(&mut s, LIMIT).code(), Some(0), "{}", read(&log));
    let faulted_ms = proxy.faulted_at()[0] / 1_000_000;
    let line = read(&log)
        .lines()
        .find(|l| l.contains("renewed after trouble"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json log"))
        .expect("recovery line");
    let valid_until = line["fields"]["valid_until_ms"]
        .as_u64()
        .expect("valid_until_ms");
    // FAST: lease 4 s − margin (1 s + 250 ms) = 2.75 s after the send that landed.
    assert!(
        valid_until <= faulted_ms + 2_750,
        "the lease counts from a later send: valid until {valid_until} ms, the landed PUT \
         reached the store's proxy at {faulted_ms} ms\n{}",
        read(&log)
    );
}
