//! End-to-end tests of the hooks of `s3lead run` (`--on-elected`, `--on-lost`,
//! `--on-released`): the built binary, as an operator would check them: what each hook
//! saw in its environment, that a failing hook changes nothing about the run, and that a
//! hanging one is killed.

#[macro_use]
mod e2e;
mod support;

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
