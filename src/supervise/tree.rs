//! The processes of a supervised command, found by parentage in `/proc`: every
//! descendant of a root process, whatever it did to its process group or session.
//!
//! Process groups are not enough: GNU `timeout`, shells with job control (`set -m`),
//! sudo with `use_pty` and any `setsid`/`setpgid` move a descendant out of the command's
//! group, where a `killpg` never reaches it. Parentage cannot be escaped that way: the
//! guard is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so a descendant whose parent
//! exits is reparented to the guard, never to init, and stays in the guard's subtree
//! until it has exited and been reaped.
//!
//! A walk is a snapshot: a process may fork after it. Callers that kill walk again until
//! nothing is left (a process being SIGKILLed cannot fork any more, so this ends). A pid
//! seen in the walk could in principle exit and be reused before the signal is sent; the
//! guard reaps its direct children only between walks, so their pids cannot be reused
//! under it, and for deeper descendants the window is one walk long.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashMap;

/// One live process below the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub pid: Pid,
    /// Its process group.
    pub pgid: Pid,
    /// A zombie has exited and waits to be reaped: it counts as gone.
    pub zombie: bool,
}

/// Every descendant of `root` (not `root` itself), parents before children.
pub fn descendants(root: Pid) -> Vec<Member> {
    let mut children: HashMap<i32, Vec<Member>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // exited since the listing
        };
        if let Some((state, ppid, pgid)) = parse_stat(&stat) {
            children.entry(ppid).or_default().push(Member {
                pid: Pid::from_raw(pid),
                pgid: Pid::from_raw(pgid),
                zombie: state == 'Z' || state == 'X',
            });
        }
    }
    let mut out = Vec::new();
    let mut next = vec![root.as_raw()];
    while let Some(p) = next.pop() {
        if let Some(kids) = children.remove(&p) {
            for k in kids {
                next.push(k.pid.as_raw());
                out.push(k);
            }
        }
    }
    out
}

/// `(state, ppid, pgrp)` from a `/proc/PID/stat` line. The command name may hold spaces
/// and parentheses, so the fields are read after its last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// What signalling the tree found.
#[derive(Debug, Default)]
pub struct Signalled {
    /// Live processes signalled.
    pub sent: usize,
    /// Processes this user may not signal (a setuid descendant): they cannot be stopped.
    pub refused: Vec<Pid>,
}

/// Sends `sig` to every live descendant of `root`, except the members of process group
/// `skip_group`, which the caller has signalled as a group already: a process must get a
/// stop signal once, as many treat a second TERM or INT as "quit now".
pub fn signal_all(root: Pid, sig: Signal, skip_group: Option<Pid>) -> Signalled {
    let mut out = Signalled::default();
    for m in descendants(root) {
        if m.zombie || Some(m.pgid) == skip_group {
            continue;
        }
        match kill(m.pid, sig) {
            Ok(()) => out.sent += 1,
            Err(Errno::EPERM) => out.refused.push(m.pid),
            Err(_) => {} // exited in the meantime
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_and_parent_past_a_name_with_parentheses() {
        assert_eq!(
            parse_stat("1234 (we) ird (x)) S 77 1230 1234 0 -1"),
            Some(('S', 77, 1230))
        );
        assert_eq!(parse_stat("9 (sh) Z 1 9 9"), Some(('Z', 1, 9)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn finds_a_grandchild_that_left_the_process_group() {
        // sh starts a `sleep` in a new session: the process group no longer holds it,
        // parentage does.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "setsid sleep 30 & wait"])
            .spawn()
            .expect("sh");
        let root = Pid::from_raw(sh.id() as i32);
        let root_group = nix::unistd::getpgid(Some(root)).ok();
        // Until `setsid` has run, the sleeper is still in the shell's group.
        let mut found = Vec::new();
        for _ in 0..500 {
            found = descendants(root);
            if let [m] = found[..] {
                if Some(m.pgid) != root_group {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_ne!(Some(found[0].pgid), root_group, "{found:?}");
        // Skipping the shell's group still reaches the sleeper in its own session.
        assert_eq!(signal_all(root, Signal::SIGKILL, Some(root)).sent, 1);
        let _ = sh.wait();
    }
}
