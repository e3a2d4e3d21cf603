//! Interactive use, on a pseudo-terminal that `script` (util-linux) gives a shell: when
//! s3lead runs in the terminal's foreground, the command's process group becomes the
//! terminal's foreground group, as a shell makes a job's; when it exits, the terminal is
//! handed back; and Ctrl-Z stops the job (the shell prints its prompt) and `fg` resumes
//! it to its end.

#[macro_use]
mod e2e;
mod support;

use e2e::{Lock, S3LEAD, wait_exit, wait_for};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// `script` running `line` under `sh` on a new pseudo-terminal, its typescript discarded.
fn script(line: &str) -> Command {
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", line, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("TERM", "dumb");
    c
}

/// (pgrp, tpgid) from a `/proc/PID/stat` line: the process's group and the group in the
/// foreground of its terminal.
fn groups(stat: &str) -> (i64, i64) {
    let (_, rest) = stat.rsplit_once(')').expect("a /proc/PID/stat line");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // state ppid pgrp session tty_nr tpgid
    (f[2].parse().expect("pgrp"), f[5].parse().expect("tpgid"))
}

#[test]
fn on_a_terminal_the_command_is_the_foreground_group_and_the_terminal_is_handed_back() {
    let lock = Lock::file();
    let inside = lock.path("inside.stat");
    let after = lock.path("after.stat");
    let line = format!(
        "{S3LEAD} run {} -- sh -c 'cat /proc/self/stat > {}'; cat /proc/self/stat > {}",
        lock.url,
        inside.display(),
        after.display()
    );
    let out = script(&line)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run script ({e}): apt-get install bsdutils"));
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (command_group, foreground) = groups(&e2e::read(&inside));
    let (shell_group, foreground_after) = groups(&e2e::read(&after));
    assert_eq!(
        command_group, foreground,
        "the command's group is the terminal's foreground group"
    );
    assert_ne!(
        command_group, shell_group,
        "the command has a group of its own"
    );
    assert_eq!(
        foreground_after, shell_group,
        "after s3lead, the terminal is back with the group that ran it"
    );
}

#[test]
fn ctrl_z_stops_the_job_and_fg_resumes_it() {
    let lock = Lock::file();
    let typescript = lock.path("typescript");
    let go = lock.path("go");
    let done = lock.path("done");
    // An interactive shell with job control on the pseudo-terminal; what is typed goes
    // to script's stdin. The command waits for the file `go`, which the test creates
    // only after the job was stopped and resumed.
    let mut shell = Command::new("script")
        .args(["-q", "-f", "-c", "sh -i", &typescript.to_string_lossy()])
        .env("SHELL", "/bin/sh")
        .env("TERM", "dumb")
        .env("PS1", "prompt$ ")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run script ({e}): apt-get install bsdutils"));
    let mut keys = shell.stdin.take().expect("stdin");
    let mut type_in = |text: &str| {
        keys.write_all(text.as_bytes()).expect("type");
        keys.flush().expect("flush");
    };
    let seen = || e2e::read(&typescript);
    wait_for("the shell's prompt", LIMIT, || seen().contains("prompt$ "));
    type_in(&format!(
        "{S3LEAD} run {} -- sh -c 'echo job-started; while [ ! -e {} ]; do sleep 0.1; done; echo job-finished; touch {}'\n",
        lock.url,
        go.display(),
        done.display()
    ));
    wait_for("the job to start", LIMIT, || seen().contains("job-started"));
    let prompts = seen().matches("prompt$ ").count();
    type_in("\x1a");
    wait_for(
        "the shell to get the terminal back (a new prompt)",
        LIMIT,
        || seen().matches("prompt$ ").count() > prompts,
    );
    assert!(!done.exists());
    type_in("fg\n");
    std::fs::write(&go, "").expect("go");
    wait_for("the resumed job to finish", LIMIT, || done.exists());
    wait_for("the job's last line", LIMIT, || {
        seen().contains("job-finished")
    });
    type_in("exit\n");
    drop(keys);
    wait_exit(&mut shell, LIMIT);
    let record = lock.record();
    assert_eq!(
        record["released"], true,
        "s3lead released the lock: {record}"
    );
    assert_eq!(record["term"], 1, "one lease, never lost: {record}");
}
