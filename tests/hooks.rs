//! End-to-end tests of the hooks of `s3lead run` (`--on-elected`, `--on-lost`,
//! `--on-released`): the built binary, as an operator would check them: what each hook
//! saw in its environment, that a failing hook changes nothing about the run, and that a
//! hanging one is killed.

#[macro_use]
mod e2e;
mod support;

use e2e::proxy::{Mode, Proxy, endpoint_addr};
use e2e::{Lock, alive, finish, read, wait_exit, wait_for};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A hook that appends `EVENT TERM` to `out`.
fn journal(out: &std::path::Path) -> String {
    format!(
        "echo \"$S3LEAD_EVENT $S3LEAD_TERM $S3LEAD_LOCK\" >> {}",
        out.display()
    )
}

fn hooks_run_with_the_lease_term(lock: Lock) {
    let out = lock.path("hooks");
    let hook = journal(&out);
    for _ in 0..2 {
        let f = finish(
            lock.run(&[
                "--on-elected",
                &hook,
                "--on-released",
                &hook,
                "--on-lost",
                &hook,
                "-c",
                "true",
            ]),
            LIMIT,
        );
        assert_eq!(f.code, Some(0), "{}", f.stderr);
    }
    let mut lines: Vec<String> = read(&out).lines().map(str::to_owned).collect();
    lines.sort();
    let url = &lock.url;
    assert_eq!(
        lines,
        [
            format!("elected 1 {url}"),
            format!("elected 2 {url}"),
            format!("released 1 {url}"),
            format!("released 2 {url}"),
        ],
        "each run's hooks see its term; no lease was lost"
    );
}

on_both_stores!(hooks_run_with_the_lease_term);

#[test]
fn a_failing_hook_changes_nothing() {
    let lock = Lock::file();
    let out = lock.path("ran");
    let f = finish(
        lock.run(&[
            "--on-elected",
            "echo oops >&2; exit 3",
            "--on-released",
            "exit 4",
            "-c",
            &format!("echo ran > {}; exit 7", out.display()),
        ]),
        LIMIT,
    );
    assert_eq!(f.code, Some(7), "the command's status: {}", f.stderr);
    assert_eq!(read(&out), "ran\n");
    assert_eq!(lock.record()["released"], true, "released as usual");
    let failed = f
        .log("the --on-elected hook failed")
        .unwrap_or_else(|| panic!("a line for the failing hook: {}", f.stderr));
    assert_eq!(failed["level"], "WARN");
    assert!(
        f.log("the --on-released hook failed").is_some(),
        "{}",
        f.stderr
    );
}

#[test]
fn a_hanging_hook_is_killed_after_its_timeout() {
    let lock = Lock::file();
    let pid_file = lock.path("hook.pid");
    let hook = format!("echo $$ > {}; exec sleep 1000", pid_file.display());
    let mut child = lock
        .run(&[
            "--on-elected",
            &hook,
            "--hook-timeout",
            "2s",
            "-c",
            "sleep 0.2",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn s3lead");
    wait_for("the hook to start", LIMIT, || {
        read(&pid_file).trim().parse::<i32>().is_ok()
    });
    let pid: i32 = read(&pid_file).trim().parse().expect("pid");
    let status = wait_exit(&mut child, LIMIT);
    assert_eq!(status.code(), Some(0), "the command's status");
    assert!(!alive(pid), "the hanging hook {pid} was killed");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(
        stderr.contains("the --on-elected hook still ran after --hook-timeout (2s); killed it"),
        "{stderr}"
    );
    assert_eq!(
        lock.record()["released"],
        true,
        "the hook did not hold the release"
    );
}

#[test]
fn the_lost_hook_sees_the_term_and_why() {
    let lock = Lock::file();
    let out = lock.path("hooks");
    let started = lock.path("started");
    let mut child = lock
        .run(&[
            "--on-lost",
            &format!(
                "echo \"$S3LEAD_EVENT $S3LEAD_TERM $S3LEAD_LOST_REASON\" >> {}",
                out.display()
            ),
            "-c",
            &format!("touch {}; sleep 30", started.display()),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn s3lead");
    wait_for("the command to start", LIMIT, || started.exists());
    let mut rec = lock.record();
    rec["term"] = 9.into();
    rec["lease_id"] = "someone-else".into();
    rec["holder"] = "intruder".into();
    lock.overwrite(&rec);
    let status = wait_exit(&mut child, LIMIT);
    assert_eq!(status.code(), Some(s3lead::exit::LOST));
    let lines = read(&out);
    assert!(
        lines.starts_with("lost 1 ") && lines.contains("intruder"),
        "the hook saw the lost lease's term and why: {lines}"
    );
}

// ---- hooks start after the stop path, never before it ------------------------------

/// A hook command whose first act appends the wall-clock time in nanoseconds to `out`.
///
/// Why the wall clock: the order to check is "the hook started after s3lead sent the
/// signal", and s3lead's log line for a signal is made right after the send, its
/// `timestamp` (wall clock, microseconds) taken as the line is made, on the thread that
/// sent it and that later starts the hooks. A hook's one boot-clock reading in a shell,
/// `/proc/uptime`, has 10 ms steps: too coarse to tell a hook spawned just before the
/// signal from one spawned just after.
fn stamp(out: &std::path::Path) -> String {
    format!("date +%s%N >> {}", out.display())
}

/// The first (and only) time `stamp` wrote to `out`.
fn stamped(out: &std::path::Path) -> std::time::SystemTime {
    let text = read(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "the hook ran once: {text:?}");
    let ns: u64 = lines[0].trim().parse().expect("nanoseconds");
    std::time::UNIX_EPOCH + Duration::from_nanos(ns)
}

/// The `timestamp` of the first log line that contains `needle`.
fn logged_at(f: &e2e::Finished, needle: &str) -> std::time::SystemTime {
    let line = f
        .log(needle)
        .unwrap_or_else(|| panic!("a line {needle:?} in the log: {}", f.stderr));
    humantime::parse_rfc3339(line["timestamp"].as_str().expect("a timestamp")).expect("RFC 3339")
}

/// `s3lead run` with `extra` (ending in `-c CMD`) and `env` in a thread, its stderr kept.
fn run_in_thread(
    lock: &Lock,
    env: &[(&str, String)],
    extra: &[&str],
) -> std::thread::JoinHandle<e2e::Finished> {
    let mut cmd = lock.run(extra);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    std::thread::spawn(move || finish(cmd, LIMIT))
}

/// The lease is lost while the command runs (`lose` takes it away); the `--on-lost`
/// hook must start after s3lead sent the command the stop signal the loss called for
/// (`sent`: the start of that log line), so that spawning it cannot delay the stop.
fn the_lost_hook_starts_after_the_stop_signal(
    lock: &Lock,
    env: &[(&str, String)],
    lose: impl FnOnce(),
    sent: &str,
) {
    let hook_out = lock.path("hook-started");
    let event = lock.path("hook-event");
    let started = lock.path("started");
    let hook = format!(
        "{}; echo \"$S3LEAD_EVENT $S3LEAD_TERM\" > {}",
        stamp(&hook_out),
        event.display()
    );
    let cmd = format!("touch {}; exec sleep 600", started.display());
    let run = run_in_thread(lock, env, &["--on-lost", &hook, "-c", &cmd]);
    wait_for("the command to start", LIMIT, || started.exists());
    lose();
    let f = run.join().expect("the run's thread");
    assert_eq!(f.code, Some(s3lead::exit::LOST), "{}", f.stderr);
    assert_eq!(read(&event), "lost 1\n", "{}", f.stderr);
    let signalled = logged_at(&f, sent);
    let hook_started = stamped(&hook_out);
    assert!(
        hook_started > signalled,
        "the --on-lost hook started at {} before the stop signal was sent (logged at {}): {}",
        humantime::format_rfc3339_micros(hook_started),
        humantime::format_rfc3339_micros(signalled),
        f.stderr
    );
}

/// Taken over behind its back: no grace, SIGKILL at once; the hook comes after it.
#[test]
fn the_lost_hook_starts_after_the_kill_of_a_taken_over_lease() {
    let lock = Lock::file();
    the_lost_hook_starts_after_the_stop_signal(
        &lock,
        &[],
        || {
            let mut rec = lock.record();
            rec["term"] = 9.into();
            rec["lease_id"] = "someone-else".into();
            rec["holder"] = "intruder".into();
            lock.overwrite(&rec);
        },
        "sent SIGKILL to every process of the command",
    );
}

/// The store stops answering (a partition: the proxy blackholes every byte): at the
/// stop point s3lead sends SIGTERM; the hook comes after it.
#[test]
fn the_lost_hook_starts_after_the_stop_signal_when_the_store_is_cut_off_on_s3() {
    let lock = Lock::s3("hook_after_stop");
    let proxy = Proxy::start(endpoint_addr(&support::s3_server().endpoint));
    the_lost_hook_starts_after_the_stop_signal(
        &lock,
        &[("AWS_ENDPOINT_URL", proxy.endpoint())],
        || proxy.set(Mode::Blackhole),
        "sent SIGTERM to the command",
    );
}

/// SIGTERM to s3lead: it forwards it, waits for the command to go, releases, and only
/// then starts `--on-released`, which finds the command gone and the record released
/// (it asks `s3lead status`, as an operator's script would).
fn the_released_hook_starts_after_the_command_is_gone_and_the_release(lock: Lock) {
    let pid_file = lock.path("pid");
    let hook_out = lock.path("hook-started");
    let seen = lock.path("hook-saw");
    let status = lock.path("status.json");
    let hook = format!(
        "{}; if kill -0 \"$(cat {pid})\" 2>/dev/null; then echo alive; else echo gone; fi > {seen}; \
         {s3lead} status --json {url} > {status}",
        stamp(&hook_out),
        pid = pid_file.display(),
        seen = seen.display(),
        s3lead = e2e::S3LEAD,
        url = lock.url,
        status = status.display(),
    );
    let log = lock.path("log");
    let cmd = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let mut child = lock
        .run(&["--on-released", &hook, "-c", &cmd])
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn s3lead");
    wait_for("the command to start", LIMIT, || {
        read(&pid_file).trim().parse::<i32>().is_ok()
    });
    e2e::send_signal(child.id(), "TERM");
    let st = wait_exit(&mut child, LIMIT);
    let f = e2e::Finished {
        code: st.code(),
        stdout: String::new(),
        stderr: read(&log),
    };
    assert_eq!(f.code, Some(143), "{}", f.stderr);
    assert_eq!(read(&seen), "gone\n", "the command was gone: {}", f.stderr);
    let v: serde_json::Value = serde_json::from_str(read(&status).trim())
        .unwrap_or_else(|e| panic!("status --json from the hook ({e}): {:?}", read(&status)));
    assert_eq!(v["state"], "released", "the release had landed: {v}");
    assert_eq!(v["record"]["term"], 1, "{v}");
    let gone = logged_at(&f, "command killed by SIGTERM");
    let hook_started = stamped(&hook_out);
    assert!(
        hook_started > gone,
        "the --on-released hook started at {} before s3lead saw the command exit (logged at {}): {}",
        humantime::format_rfc3339_micros(hook_started),
        humantime::format_rfc3339_micros(gone),
        f.stderr
    );
}

on_both_stores!(the_released_hook_starts_after_the_command_is_gone_and_the_release);
