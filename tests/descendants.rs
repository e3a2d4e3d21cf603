//! End-to-end tests of the promise for *every* process a command starts, not only its
//! process group: descendants that call `setsid`, `setpgid` (as job-control shells and
//! sudo with `use_pty` do) or run under GNU `timeout` (which moves itself to a group of
//! its own), checked with the children's own timestamped journal, the way a user would
//! check "did two copies ever run at once?".
//!
//! Each leader's command starts three such escapees beside its main process; all four
//! append `TERM BOOT_TIME TAG PID` lines to one journal every 50 ms. Whatever happens to
//! the leader (`kill -9`, SIGSTOP past its lease, a takeover, SIGTERM, its guard killed),
//! the journal must show no two terms at once, and the escapees' pids must be gone.

#[macro_use]
mod e2e;
mod support;

use e2e::{Lock, alive, read, send_signal, wait_exit, wait_for};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const ESCAPEES: [&str; 3] = ["setsid", "setpgid", "timeout"];

/// One journaling process: `beat.sh TAG JOURNAL [exit-on-term|ignore-term]`.
const BEAT: &str = r#"#!/bin/sh
case "$3" in
  exit-on-term) trap 'exit 0' TERM ;;
  ignore-term) trap '' TERM ;;
esac
while :; do
  echo "$S3LEAD_TERM $(cut -d' ' -f1 /proc/uptime) $1 $$" >> "$2"
  sleep 0.05
done
"#;

/// A journal line.
#[derive(Clone, Debug)]
struct Beat {
    term: u64,
    /// Boot clock, hundredths of a second (`/proc/uptime`).
    at: u64,
    tag: String,
    pid: i32,
}

struct Journal {
    path: std::path::PathBuf,
    beat: std::path::PathBuf,
}

impl Journal {
    fn new(lock: &Lock) -> Journal {
        let beat = lock.path("beat.sh");
        std::fs::write(&beat, BEAT).expect("beat.sh");
        Journal {
            path: lock.path("journal"),
            beat,
        }
    }

    /// The leader's command: three escapees and the main process, all journaling.
    /// `escapees` and `main` say how each treats SIGTERM.
    fn command(&self, escapees: &str, main: &str) -> String {
        let (b, j) = (self.beat.display(), self.path.display());
        format!(
            "setsid sh {b} setsid {j} {escapees} & \
             perl -e 'setpgrp(0, 0); exec @ARGV or die' sh {b} setpgid {j} {escapees} & \
             timeout 300 sh {b} timeout {j} {escapees} & \
             exec sh {b} main {j} {main}"
        )
    }

    fn beats(&self) -> Vec<Beat> {
        read(&self.path)
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let term = w.next()?.parse().ok()?;
                let at = w.next()?.replace('.', "").parse().ok()?;
                let tag = w.next()?.to_owned();
                let pid = w.next()?.parse().ok()?;
                Some(Beat { term, at, tag, pid })
            })
            .collect()
    }

    /// Waits until every process of `term` (main and escapees) has journaled.
    fn wait_all_running(&self, term: u64) {
        wait_for(
            &format!("all four processes of term {term} to journal"),
            LIMIT,
            || {
                let beats = self.beats();
                ["main"]
                    .iter()
                    .chain(ESCAPEES.iter())
                    .all(|tag| beats.iter().any(|b| b.term == term && b.tag == *tag))
            },
        );
    }

    /// The pids that journaled under `term`.
    fn pids(&self, term: u64) -> Vec<i32> {
        let mut p: Vec<i32> = self
            .beats()
            .iter()
            .filter(|b| b.term == term)
            .map(|b| b.pid)
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// No two terms at once: each term's journal interval ends before the next begins.
    fn assert_no_overlap(&self) {
        let mut spans: BTreeMap<u64, (u64, u64, Vec<String>)> = BTreeMap::new();
        for b in self.beats() {
            let s = spans.entry(b.term).or_insert((b.at, b.at, Vec::new()));
            s.0 = s.0.min(b.at);
            s.1 = s.1.max(b.at);
            if !s.2.contains(&b.tag) {
                s.2.push(b.tag.clone());
            }
        }
        let spans: Vec<_> = spans.into_iter().collect();
        for w in spans.windows(2) {
            let ((t1, (_, end1, tags1)), (t2, (start2, _, _))) = (&w[0], &w[1]);
            assert!(
                end1 < start2,
                "two copies at once: term {t1} ({tags1:?}) journaled until {end1}, \
                 term {t2} from {start2} (hundredths of a second since boot)\n{}",
                read(&self.path)
            );
        }
    }
}

fn wait_gone(pids: &[i32]) {
    wait_for("every process of the old term to be gone", LIMIT, || {
        pids.iter().all(|&p| !alive(p))
    });
}

/// A second candidate whose command journals as the main process of its term.
fn follower(lock: &Lock, j: &Journal, log: &Path) -> Child {
    let cmd = format!("exec sh {} main {}", j.beat.display(), j.path.display());
    lock.run(&["-c", &cmd])
        .stderr(std::fs::File::create(log).expect("follower log"))
        .spawn()
        .expect("spawn follower")
}

fn leader(lock: &Lock, j: &Journal, escapees: &str, main: &str) -> Child {
    let c = lock
        .run(&["-c", &j.command(escapees, main)])
        .stderr(std::fs::File::create(lock.path("leader.log")).expect("leader log"))
        .spawn()
        .expect("spawn leader");
    j.wait_all_running(1);
    c
}

/// Stops a run the test started, by its pid, and reaps it.
fn stop(mut c: Child) {
    send_signal(c.id(), "CONT");
    send_signal(c.id(), "KILL");
    let _ = c.wait();
}

// ---- kill -9 of s3lead ----------------------------------------------------------------

fn kill_9_takes_every_descendant(lock: Lock) {
    let j = Journal::new(&lock);
    let mut lead = leader(&lock, &j, "", "");
    let old = j.pids(1);
    let next = follower(&lock, &j, &lock.path("follower.log"));
    lead.kill().expect("kill -9");
    let _ = lead.wait();
    wait_gone(&old);
    wait_for("the follower's command to journal", LIMIT, || {
        j.beats().iter().any(|b| b.term == 2)
    });
    j.assert_no_overlap();
    stop(next);
}
on_both_stores!(kill_9_takes_every_descendant);

// ---- SIGSTOP of s3lead: the watchdog --------------------------------------------------

fn a_stopped_supervisor_s_watchdog_kills_every_descendant_in_time(lock: Lock) {
    let j = Journal::new(&lock);
    let mut lead = leader(&lock, &j, "", "");
    let old = j.pids(1);
    let next = follower(&lock, &j, &lock.path("follower.log"));
    // s3lead cannot renew, signal or kill while stopped; its guard still kills at the
    // lease's end, before the follower can take over.
    send_signal(lead.id(), "STOP");
    wait_gone(&old);
    wait_for("the follower's command to journal", LIMIT, || {
        j.beats().iter().any(|b| b.term == 2)
    });
    j.assert_no_overlap();
    send_signal(lead.id(), "CONT");
    let st = wait_exit(&mut lead, LIMIT);
    assert_eq!(
        st.code(),
        Some(76),
        "the stopped leader lost its lease: {}",
        read(&lock.path("leader.log"))
    );
    stop(next);
}
on_both_stores!(a_stopped_supervisor_s_watchdog_kills_every_descendant_in_time);

// ---- a takeover ----------------------------------------------------------------------

#[test]
fn a_takeover_kills_every_descendant_on_file() {
    let lock = Lock::file();
    let j = Journal::new(&lock);
    // Escapees that ignore SIGTERM: with no grace, they must not even be asked.
    let mut lead = leader(&lock, &j, "ignore-term", "");
    let old = j.pids(1);
    let mut thief = lock.record();
    thief["lease_id"] = "someone-else".into();
    thief["holder"] = "thief".into();
    thief["term"] = (thief["term"].as_u64().unwrap() + 1).into();
    lock.overwrite(&thief);
    wait_gone(&old);
    let st = wait_exit(&mut lead, LIMIT);
    assert_eq!(st.code(), Some(76), "{}", read(&lock.path("leader.log")));
    assert_eq!(
        lock.record()["holder"],
        "thief",
        "someone else's record is left alone"
    );
}

// ---- SIGTERM when the command's group empties first ------------------------------------

#[test]
fn sigterm_releases_only_after_every_descendant_is_gone_on_file() {
    let lock = Lock::file();
    let j = Journal::new(&lock);
    // The main process exits on TERM at once; the escapees ignore it and must be killed
    // after the grace, before the lease is released to the follower.
    let mut lead = leader(&lock, &j, "ignore-term", "exit-on-term");
    let old = j.pids(1);
    let next = follower(&lock, &j, &lock.path("follower.log"));
    wait_for("the follower to wait", LIMIT, || {
        read(&lock.path("follower.log")).contains("waiting")
    });
    send_signal(lead.id(), "TERM");
    let st = wait_exit(&mut lead, LIMIT);
    assert_eq!(
        st.code(),
        Some(0),
        "the command's own status: {}",
        read(&lock.path("leader.log"))
    );
    assert!(
        old.iter().all(|&p| !alive(p)),
        "released with processes left"
    );
    // The follower wakes on the release (the file store's watch) and may have taken over
    // already: the release is in the leader's log, and the record is released or the
    // follower's.
    assert!(
        read(&lock.path("leader.log"))
            .lines()
            .any(|l| l.contains(r#""message":"released""#)),
        "the leader released: {}",
        read(&lock.path("leader.log"))
    );
    let record = lock.record();
    assert!(
        record["released"] == true || record["term"] == 2,
        "released, or taken over by the follower: {record}"
    );
    wait_for("the follower's command to journal", LIMIT, || {
        j.beats().iter().any(|b| b.term == 2)
    });
    j.assert_no_overlap();
    stop(next);
}

// ---- the guard dies ------------------------------------------------------------------

#[test]
fn a_killed_guard_is_noticed_and_the_command_stopped_on_file() {
    let lock = Lock::file();
    let j = Journal::new(&lock);
    let mut lead = leader(&lock, &j, "", "");
    let old = j.pids(1);
    // The guard: `s3lead-guard` in `ps -o comm`, the command's parent, below s3lead.
    let guard: Vec<u32> = e2e::descendants(lead.id())
        .into_iter()
        .filter(|p| read(Path::new(&format!("/proc/{p}/comm"))).trim() == "s3lead-guard")
        .collect();
    assert_eq!(guard.len(), 1, "one guard: {guard:?}");
    send_signal(guard[0], "KILL");
    let st = wait_exit(&mut lead, LIMIT);
    let log = read(&lock.path("leader.log"));
    assert_eq!(st.code(), Some(70), "{log}");
    assert!(log.contains("the guard process killed by SIGKILL"), "{log}");
    assert!(old.iter().all(|&p| !alive(p)), "left running: {log}");
    assert_eq!(lock.record()["released"], true, "nothing runs: released");
}

/// The guard of `run`, forked when it starts: the one descendant named `s3lead-guard`.
fn guard_of(run: &Child) -> u32 {
    let mut guard = Vec::new();
    wait_for("the run's guard", LIMIT, || {
        guard = e2e::descendants(run.id())
            .into_iter()
            .filter(|p| read(Path::new(&format!("/proc/{p}/comm"))).trim() == "s3lead-guard")
            .collect();
        guard.len() == 1
    });
    guard[0]
}

#[test]
fn a_guard_killed_while_its_run_waits_fails_that_run_in_one_line_and_releases_on_file() {
    let lock = Lock::file();
    let j = Journal::new(&lock);
    let mut lead = leader(&lock, &j, "", "");
    let log = lock.path("follower.log");
    let mut next = follower(&lock, &j, &log);
    let guard = guard_of(&next);
    send_signal(guard, "KILL");
    send_signal(lead.id(), "TERM");
    wait_exit(&mut lead, LIMIT);
    let st = wait_exit(&mut next, LIMIT);
    let text = read(&log);
    assert_eq!(st.code(), Some(71), "the OS-error exit: {text}");
    let line = text
        .lines()
        .find(|l| l.contains("the guard process is gone (killed by SIGKILL)"))
        .unwrap_or_else(|| panic!("one line naming the cause: {text}"));
    assert!(line.contains(lock.url.as_str()), "names the lock: {line}");
    assert!(j.pids(2).is_empty(), "the command never ran: {text}");
    assert_eq!(lock.record()["released"], true, "released: {text}");
}

#[test]
fn a_run_that_never_leads_takes_its_guard_with_it_on_file() {
    let lock = Lock::file();
    let j = Journal::new(&lock);
    let mut lead = leader(&lock, &j, "", "");
    let mut next = follower(&lock, &j, &lock.path("follower.log"));
    let guard = guard_of(&next);
    send_signal(next.id(), "TERM");
    wait_exit(&mut next, LIMIT);
    wait_for("the waiting run's guard to exit", LIMIT, || {
        !alive(guard as i32)
    });
    send_signal(lead.id(), "TERM");
    wait_exit(&mut lead, LIMIT);
}

// ---- the stop signal reaches every process ----------------------------------------------

#[test]
fn the_stop_signal_reaches_every_process_outside_the_group_too_on_file() {
    // The group is signalled as a group, and the processes outside it one by one, each
    // once (two TERMs microseconds apart would coalesce in the kernel anyway, so this
    // test cannot tell one from two; it checks that nobody is missed, or seen twice).
    let lock = Lock::file();
    let out = lock.path("terms-seen");
    let o = out.display();
    let cmd = format!(
        "trap 'echo main >> {o}' TERM; \
         setsid sh -c \"trap 'echo setsid >> {o}' TERM; echo up >> {o}; while :; do sleep 0.05; done\" & \
         sh -c \"trap 'echo group >> {o}' TERM; while :; do sleep 0.05; done\" & \
         echo up >> {o}; while :; do sleep 0.05; done"
    );
    let mut s = lock
        .run(&["-c", &cmd])
        .stderr(std::fs::File::create(lock.path("log")).expect("log"))
        .spawn()
        .expect("spawn");
    wait_for("both to start", LIMIT, || {
        read(&out).matches("up").count() == 2
    });
    send_signal(s.id(), "TERM");
    // They all ignore it: SIGKILL ends them after the grace.
    let st = wait_exit(&mut s, LIMIT);
    assert_eq!(st.code(), Some(137), "{}", read(&lock.path("log")));
    let seen = read(&out);
    for who in ["main", "group", "setsid"] {
        assert_eq!(
            seen.lines().filter(|l| *l == who).count(),
            1,
            "{who} got TERM once: {seen:?}"
        );
    }
}
