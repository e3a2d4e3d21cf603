//! End-to-end tests of cron use: `--min-hold` and `--once-per`, the built binary driven
//! as a fleet of cron hosts would drive it, on the file store and on the test S3 server.
//! Hosts whose wall clocks differ run under `faketime` (Debian package `faketime`) with
//! `DONT_FAKE_MONOTONIC=1`: only their wall clock moves, which is all `--once-per` reads.
//!
//! What a user checks: how many times the job ran (each run appends its term to a file),
//! what each host exited with, what the record and `s3lead status` say.

#[macro_use]
mod e2e;
mod support;

use e2e::{FAST, Finished, Lock, S3LEAD, finish, read, send_signal, wait_exit, wait_for};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

const LIMIT: Duration = Duration::from_secs(60);

/// A 0.2 s job that appends its term to the lock's `runs` file.
fn job(lock: &Lock) -> String {
    format!(
        "echo \"$S3LEAD_TERM\" >> {}; sleep 0.2",
        lock.path("runs").display()
    )
}

/// The terms the job ran under, in order.
fn runs(lock: &Lock) -> Vec<u64> {
    read(&lock.path("runs"))
        .lines()
        .map(|l| l.trim().parse().expect("a term"))
        .collect()
}

/// Runs `make(i)` for i in 0..n, each started `gap` after the one before (cron on n
/// hosts firing a little apart), and waits for all of them.
fn fleet(n: usize, gap: Duration, make: impl Fn(usize) -> Command) -> Vec<Finished> {
    let mut handles = Vec::new();
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(gap);
        }
        let cmd = make(i);
        handles.push(std::thread::spawn(move || finish(cmd, LIMIT)));
    }
    handles
        .into_iter()
        .map(|h| h.join().expect("candidate thread"))
        .collect()
}

/// The exit statuses, sorted.
fn codes(done: &[Finished]) -> Vec<Option<i32>> {
    let mut c: Vec<_> = done.iter().map(|f| f.code).collect();
    c.sort();
    c
}

fn all_stderr(done: &[Finished]) -> String {
    done.iter()
        .map(|f| f.stderr.as_str())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// `s3lead run <FAST> <extra> <lock>` on a host whose wall clock is off by `offset`
/// (libfaketime's syntax: `-2`, `+60`, `-1h`). Fails, saying what to install, when
/// `faketime` is missing.
fn run_faked(lock: &Lock, offset: &str, extra: &[&str]) -> Command {
    let found = Command::new("faketime")
        .args(["-f", "+0", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "these tests need faketime: apt-get install faketime (Debian package faketime)"
    );
    let mut c = Command::new("faketime");
    c.args(["-f", offset])
        .arg(S3LEAD)
        .arg("run")
        .args(FAST)
        .args(extra)
        .arg(&lock.url)
        .stdin(Stdio::null())
        .env("DONT_FAKE_MONOTONIC", "1")
        .env("S3LEAD_LOG_FORMAT", "json")
        .envs(lock.env.iter().map(|(k, v)| (k, v)));
    c
}

/// Seconds since the epoch, by this host's (real) clock.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A `--once-per-offset` that puts the start of the current `window`-second window
/// `into` seconds ago, so that a test fires well inside one window without waiting for
/// the clock.
fn offset_starting(window: u64, into: u64) -> String {
    format!("{}s", (now_secs() + window - into) % window)
}

fn status_json(lock: &Lock) -> serde_json::Value {
    let mut c = lock.s3lead();
    c.args(["status", "--json", &lock.url]);
    let f = finish(c, LIMIT);
    // 0: the lock appears live; 1: absent, released or stale. Both are answers.
    assert!(matches!(f.code, Some(0 | 1)), "{:?}: {}", f.code, f.stderr);
    serde_json::from_str(f.stdout.trim()).expect("one JSON object")
}

fn status_text(lock: &Lock) -> String {
    let mut c = lock.s3lead();
    c.args(["status", &lock.url]);
    let f = finish(c, LIMIT);
    assert!(matches!(f.code, Some(0 | 1)), "{:?}: {}", f.code, f.stderr);
    f.stdout
}

// ---- --min-hold ------------------------------------------------------------------------

fn min_hold_runs_a_short_job_once(lock: Lock) {
    let cmd = job(&lock);
    let done = fleet(3, Duration::from_millis(500), |i| {
        let id = format!("host-{i}");
        let mut c = lock.run(&["-n", "--min-hold", "5s", "--id", &id, "-c", &cmd]);
        c.stdin(Stdio::null());
        c
    });
    let stderr = all_stderr(&done);
    assert_eq!(runs(&lock).len(), 1, "the job ran once: {stderr}");
    assert_eq!(
        codes(&done),
        [Some(0), Some(75), Some(75)],
        "one ran, two were refused with the conflict status: {stderr}"
    );
    let skipped: Vec<_> = done.iter().filter(|f| f.code == Some(75)).collect();
    for f in skipped {
        assert!(f.log("held by host-").is_some(), "{}", f.stderr);
    }
    // The hold ended by releasing: the next fire runs at once.
    let rec = lock.record();
    assert_eq!(rec["released"], true, "{rec}");
    let f = finish(lock.run(&["-n", "--min-hold", "1s", "-c", &cmd]), LIMIT);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(runs(&lock), [1, 2]);
}

on_both_stores!(min_hold_runs_a_short_job_once);

#[test]
fn sigterm_ends_the_min_hold_at_once_and_releases() {
    let lock = Lock::file();
    let ready = lock.path("ready");
    let cmd = format!("touch {}", ready.display());
    let mut held = lock
        .run(&["--min-hold", "1h", "-c", &cmd])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn s3lead");
    wait_for("the command to run", LIMIT, || ready.exists());
    // The command is done; s3lead holds on, renewing.
    wait_for("a renewal during the hold", LIMIT, || {
        lock.record()["seq"].as_u64().is_some_and(|s| s >= 3)
    });
    assert_eq!(lock.record()["released"], false);
    send_signal(held.id(), "TERM");
    let st = wait_exit(&mut held, LIMIT);
    assert_eq!(st.code(), Some(0), "the command's own status");
    assert_eq!(lock.record()["released"], true);
}

// ---- --once-per ------------------------------------------------------------------------

fn once_per_runs_once_per_window_across_skewed_clocks(lock: Lock) {
    let cmd = job(&lock);
    // The window began 5 s ago: hosts at -2 s, 0 and +2 s all fire well inside it.
    let offset = offset_starting(60, 5);
    let round = |clocks: [&'static str; 3]| {
        fleet(3, Duration::from_millis(500), |i| {
            let id = format!("host{}", clocks[i]);
            run_faked(
                &lock,
                clocks[i],
                &[
                    "-n",
                    "--once-per",
                    "1m",
                    "--once-per-offset",
                    &offset,
                    "--id",
                    &id,
                    "-c",
                    &cmd,
                ],
            )
        })
    };
    let first = round(["-2", "+0", "+2"]);
    let stderr = all_stderr(&first);
    assert_eq!(runs(&lock).len(), 1, "once in the window: {stderr}");
    assert_eq!(codes(&first), [Some(0), Some(75), Some(75)], "{stderr}");
    let rec = lock.record();
    let run = &rec["last_run"];
    assert_eq!(run["window_s"], 60, "{rec}");
    assert_eq!(run["exit_status"], 0, "{rec}");
    assert_eq!(run["term"], runs(&lock)[0], "{rec}");
    // The next window, for the same fleet: its clocks a minute on.
    let second = round(["+58", "+60", "+62"]);
    let stderr = all_stderr(&second);
    assert_eq!(
        runs(&lock).len(),
        2,
        "once more in the next window: {stderr}"
    );
    assert_eq!(codes(&second), [Some(0), Some(75), Some(75)], "{stderr}");
}

on_both_stores!(once_per_runs_once_per_window_across_skewed_clocks);

fn a_run_in_the_window_survives_a_leader_change_and_a_release(lock: Lock) {
    let cmd = job(&lock);
    let offset = offset_starting(3600, 600);
    let once = ["--once-per", "1h", "--once-per-offset", offset.as_str()];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = once.to_vec();
        a.extend_from_slice(extra);
        lock.run(&a)
    };
    let f = finish(with(&["--id", "first-runner", "-c", &cmd]), LIMIT);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    // Another leader, which knows nothing of --once-per, takes the lock and releases it.
    let f = finish(lock.run(&["--id", "plain", "-c", "true"]), LIMIT);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let rec = lock.record();
    assert_eq!(rec["holder"], "plain");
    assert_eq!(rec["term"], 2);
    assert_eq!(rec["last_run"]["holder"], "first-runner", "{rec}");
    assert_eq!(rec["last_run"]["term"], 1, "{rec}");

    // A cron host firing later in the window: no run, one line saying who ran it.
    let f = finish(with(&["--id", "late", "-c", &cmd]), LIMIT);
    assert_eq!(f.code, Some(75), "{}", f.stderr);
    let line = f.log("already ran in this window").expect(&f.stderr);
    let msg = line["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("first-runner") && msg.contains("term 1"),
        "{msg}"
    );
    assert!(msg.contains("status 0"), "{msg}");
    assert_eq!(runs(&lock), [1]);
    assert_eq!(lock.record()["term"], 2, "a skipped host writes nothing");

    // What an operator sees.
    let v = status_json(&lock);
    assert_eq!(v["record"]["last_run"]["holder"], "first-runner", "{v}");
    assert!(
        v["last_run_age_s"].as_u64().is_some_and(|a| a < 3600),
        "{v}"
    );
    let text = status_text(&lock);
    assert!(text.contains("last run"), "{text}");
    assert!(text.contains("by first-runner (term 1)"), "{text}");
    assert!(text.contains("ago by this host's clock"), "{text}");
    assert!(text.contains("exit status 0"), "{text}");
}

on_both_stores!(a_run_in_the_window_survives_a_leader_change_and_a_release);

fn an_older_record_without_last_run_is_read_and_rewritten(lock: Lock) {
    // As today's s3lead, without last_run, writes it on release.
    lock.overwrite(&serde_json::json!({
        "v": 1, "term": 7, "holder": "old-binary", "lease_id": "0123456789abcdef",
        "seq": 4, "lease_ms": 4000, "acquired_at": "2026-11-25T21:00:00Z",
        "renewed_at": "2026-11-25T21:00:10Z", "released": true
    }));
    let offset = offset_starting(3600, 600);
    let f = finish(
        lock.run(&[
            "--once-per",
            "1h",
            "--once-per-offset",
            &offset,
            "-c",
            &job(&lock),
        ]),
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(runs(&lock), [8], "the term follows the old record's");
    let rec = lock.record();
    assert_eq!(rec["v"], 1);
    assert_eq!(rec["term"], 8);
    assert_eq!(rec["released"], true);
    assert!(rec["seq"].as_u64().is_some_and(|s| s >= 2), "{rec}");
    assert_eq!(rec["last_run"]["term"], 8, "{rec}");
    assert_eq!(rec["last_run"]["exit_status"], 0, "{rec}");
    assert!(rec["last_run"]["finished_at"].is_string(), "{rec}");
    // A run without --once-per leaves such a record as it was: no last_run appears.
    let plain = Lock::file();
    let f = finish(plain.run(&["-c", "true"]), LIMIT);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(plain.record().get("last_run").is_none());
}

on_both_stores!(an_older_record_without_last_run_is_read_and_rewritten);

#[test]
fn a_failed_run_spends_the_window_unless_retry_failed() {
    let lock = Lock::file();
    let offset = offset_starting(3600, 600);
    let once = ["--once-per", "1h", "--once-per-offset", offset.as_str()];
    let run = |extra: &[&str], cmd: &str| {
        let mut a: Vec<&str> = once.to_vec();
        a.extend_from_slice(extra);
        a.extend(["-c", cmd]);
        finish(lock.run(&a), LIMIT)
    };
    let fail = format!("{}; exit 3", job(&lock));
    let f = run(&[], &fail);
    assert_eq!(f.code, Some(3), "{}", f.stderr);
    assert_eq!(lock.record()["last_run"]["exit_status"], 3);
    let f = run(&[], &job(&lock));
    assert_eq!(
        f.code,
        Some(75),
        "a failure spends the window: {}",
        f.stderr
    );
    let f = run(&["--retry-failed"], &job(&lock));
    assert_eq!(f.code, Some(0), "--retry-failed runs again: {}", f.stderr);
    let f = run(&["--retry-failed"], &job(&lock));
    assert_eq!(f.code, Some(75), "a success spends it: {}", f.stderr);
    // A skipped host writes nothing, so the retry takes the next term.
    assert_eq!(runs(&lock), [1, 2]);
}

#[test]
fn a_run_in_progress_spends_the_window() {
    let lock = Lock::file();
    let offset = offset_starting(3600, 600);
    let once = ["--once-per", "1h", "--once-per-offset", offset.as_str()];
    let mut holder = lock.hold(&once);
    // Without -n too: there is no point waiting for a run of this window to end.
    let mut a: Vec<&str> = once.to_vec();
    a.extend(["-c", "touch never"]);
    let f = finish(lock.run(&a), LIMIT);
    assert_eq!(f.code, Some(75), "{}", f.stderr);
    assert!(f.log("not finished").is_some(), "{}", f.stderr);
    send_signal(holder.id(), "TERM");
    wait_exit(&mut holder, LIMIT);
}

#[test]
fn cron_runs_are_silent_with_q() {
    let lock = Lock::file();
    let cmd = job(&lock);
    // One offset for both runs: a second computed later names another window.
    let offset = offset_starting(86400, 3600);
    for expect in [0, 75] {
        let mut c = lock.s3lead();
        c.args(["run", "-q", "-n", "--once-per", "1d", "--once-per-offset"])
            .arg(&offset)
            .arg(&lock.url)
            .args(["-c", &cmd]);
        let f = finish(c, LIMIT);
        assert_eq!(f.code, Some(expect), "{}", f.stderr);
        assert_eq!(f.stderr, "", "cron mails every line");
        assert_eq!(f.stdout, "");
    }
}

#[test]
fn once_per_flags_are_checked() {
    let lock = Lock::file();
    for bad in [
        vec!["--once-per", "1500ms"],
        vec!["--once-per", "1m", "--once-per-offset", "1.5s"],
        vec!["--once-per-offset", "1h"],
        vec!["--retry-failed"],
        vec!["--min-hold", "0s"],
    ] {
        let mut a = bad.clone();
        a.extend(["-c", "true"]);
        let f = finish(lock.run(&a), LIMIT);
        assert_eq!(f.code, Some(64), "{bad:?}: {}", f.stderr);
    }
    assert!(lock.bytes().is_none(), "no request before validation");
}

/// libfaketime, even with `DONT_FAKE_MONOTONIC=1`, shifts the absolute deadlines of
/// boot-clock timerfds: a leader under `faketime -f -1h` used to stop renewing, and its
/// command outlived its lease. s3lead arms its timers by raw system call now.
#[test]
fn a_leader_under_faketime_keeps_renewing() {
    let lock = Lock::file();
    let f = finish(run_faked(&lock, "-1h", &["-c", "sleep 3"]), LIMIT);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let rec = lock.record();
    // Renewals every second through a 3 s command, then the release.
    assert!(rec["seq"].as_u64().is_some_and(|s| s >= 3), "{rec}");
    assert!(f.log("lease at risk").is_none(), "{}", f.stderr);
}

// ---- the examples, as written ----------------------------------------------------------

/// `examples/<name>`, with the example's lock and job replaced by the test's.
fn example_line(lock: &Lock, name: &str, pick: impl Fn(&str) -> Option<&str>) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("the example file");
    let line = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(&pick)
        .unwrap_or_else(|| panic!("no s3lead line in {}", path.display()));
    let script = lock.path("nightly-report");
    std::fs::write(&script, format!("#!/bin/sh\n{}\n", job(lock))).expect("write the job");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod the job");
    assert!(line.contains("s3://ops-locks/nightly-report"), "{line}");
    let line = line
        .replace("s3://ops-locks/nightly-report", &lock.url)
        .replace("/usr/local/bin/nightly-report", &script.to_string_lossy());
    let line = line.strip_prefix("/usr/local/bin/").unwrap_or(&line);
    let line = line
        .strip_prefix("s3lead ")
        .expect("the line starts with s3lead");
    format!("{S3LEAD} {line}")
}

#[test]
fn the_crontab_example_runs_once_and_quietly() {
    let lock = Lock::file();
    let line = example_line(&lock, "crontab", |l| {
        // Five schedule fields, then the command.
        let mut rest = l.trim();
        for _ in 0..5 {
            rest = rest.split_once(char::is_whitespace)?.1.trim_start();
        }
        rest.contains("s3lead run").then_some(rest)
    });
    for _ in 0..2 {
        let mut sh = Command::new("/bin/sh");
        sh.args(["-c", &line]).stdin(Stdio::null());
        let f = finish(sh, LIMIT);
        assert_eq!(
            f.code,
            Some(0),
            "a skipped host is no failure to cron: {}",
            f.stderr
        );
        assert_eq!(
            (f.stdout.as_str(), f.stderr.as_str()),
            ("", ""),
            "cron mails output"
        );
    }
    assert_eq!(runs(&lock), [1], "once");
}

#[test]
fn the_systemd_example_runs_once_and_counts_a_skip_as_success() {
    let lock = Lock::file();
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nightly-report.service"),
    )
    .expect("the unit");
    let success: Vec<i32> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("SuccessExitStatus="))
        .flat_map(|v| v.split_whitespace().map(|c| c.parse().expect("a status")))
        .collect();
    let line = example_line(&lock, "nightly-report.service", |l| {
        l.strip_prefix("ExecStart=")
    });
    let argv: Vec<&str> = line.split_whitespace().collect();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]).stdin(Stdio::null());
        let f = finish(c, LIMIT);
        assert_eq!(
            (f.stdout.as_str(), f.stderr.as_str()),
            ("", ""),
            "a quiet journal"
        );
        seen.push(f.code.expect("an exit status"));
    }
    assert_eq!(seen[0], 0);
    assert_eq!(seen[1], 75, "the second host is skipped");
    assert!(
        success.contains(&75),
        "SuccessExitStatus=75 in the unit: {success:?}"
    );
    assert_eq!(runs(&lock), [1], "once");
}
