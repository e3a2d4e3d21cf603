//! Reading the workers' journal (format in `worker.rs`) while the test runs, and judging
//! it afterwards: overlaps of terms, terms themselves, and the downstream's fencing.
//!
//! All instants are `CLOCK_BOOTTIME` nanoseconds, written by the workers themselves and
//! by the test around the faults it injects; one host, one clock, so they compare.
//!
//! A *life* is one process that journals: the supervised child, or a descendant it
//! started that left its process group or session (an escapee). docs/design.md §1 is about
//! every process the command started, so the judge counts an escapee's life exactly like
//! its child's: no instant may see lives of two terms.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// What a journaling process is to the command s3lead started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The command itself.
    Child,
    /// A descendant that called `setsid`: a new session and process group.
    Setsid,
    /// A descendant that called `setpgid`: a new process group in the same session.
    Setpgid,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Child => "child",
            Role::Setsid => "setsid",
            Role::Setpgid => "setpgid",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Child, Role::Setsid, Role::Setpgid]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

/// One process's life as the journal tells it; a life is named by `(term, pid)`.
#[derive(Clone, Debug)]
pub struct Life {
    pub term: u64,
    pub pid: u32,
    pub holder: String,
    pub role: Role,
    /// The pid that started it: s3lead's guard for the child, the child for an escapee.
    pub parent: u32,
    pub start_ns: u64,
    /// The latest line of any kind: the end, or the lower bound of the end of a process
    /// killed without a chance to write one.
    pub last_ns: u64,
    pub ended: bool,
    pub accepted_writes: usize,
    pub writes: usize,
}

impl Life {
    pub fn key(&self) -> (u64, u32) {
        (self.term, self.pid)
    }
}

impl fmt::Display for Life {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "term {} {} (pid {}, {}) {}..{} ns{}",
            self.term,
            self.role.name(),
            self.pid,
            self.holder,
            self.start_ns,
            self.last_ns,
            if self.ended { "" } else { " (no end line)" }
        )
    }
}

#[derive(Clone, Copy, Debug)]
pub struct DownstreamWrite {
    pub term: u64,
    pub pid: u32,
    pub ns: u64,
    pub accepted: bool,
}

/// The journal, read incrementally.
pub struct Journal {
    path: PathBuf,
    offset: u64,
    partial: String,
    pub lives: BTreeMap<(u64, u32), Life>,
    /// In journal order, which is the downstream's order (lines written under its lock).
    pub writes: Vec<DownstreamWrite>,
    /// Lines that do not parse, or that belong to no started process.
    pub garbage: Vec<String>,
}

impl Journal {
    pub fn new(path: PathBuf) -> Journal {
        Journal {
            path,
            offset: 0,
            partial: String::new(),
            lives: BTreeMap::new(),
            writes: Vec::new(),
            garbage: Vec::new(),
        }
    }

    /// Reads the lines appended since the last call.
    pub fn refresh(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.take(line.trim_end());
        }
    }

    fn take(&mut self, line: &str) {
        let f: Vec<&str> = line.split(' ').collect();
        let parsed = (f.len() >= 4)
            .then(|| {
                Some((
                    f[0],
                    f[1].parse::<u64>().ok()?,
                    f[2].parse::<u32>().ok()?,
                    f[3].parse::<u64>().ok()?,
                ))
            })
            .flatten();
        let Some((kind, term, pid, ns)) = parsed else {
            self.garbage.push(line.to_owned());
            return;
        };
        if kind == "start" {
            let (Some(holder), Some(role), Some(parent)) = (
                f.get(4),
                f.get(5).and_then(|r| Role::parse(r)),
                f.get(6).and_then(|p| p.parse().ok()),
            ) else {
                self.garbage.push(line.to_owned());
                return;
            };
            self.lives.insert(
                (term, pid),
                Life {
                    term,
                    pid,
                    holder: (*holder).to_owned(),
                    role,
                    parent,
                    start_ns: ns,
                    last_ns: ns,
                    ended: false,
                    accepted_writes: 0,
                    writes: 0,
                },
            );
            return;
        }
        let Some(life) = self.lives.get_mut(&(term, pid)) else {
            self.garbage.push(line.to_owned());
            return;
        };
        life.last_ns = life.last_ns.max(ns);
        match (kind, f.get(4).copied()) {
            ("hb", _) => {}
            ("end", _) => life.ended = true,
            ("write", Some(verdict @ ("accepted" | "rejected"))) => {
                let accepted = verdict == "accepted";
                life.accepted_writes += usize::from(accepted);
                life.writes += 1;
                self.writes.push(DownstreamWrite {
                    term,
                    pid,
                    ns,
                    accepted,
                });
            }
            _ => self.garbage.push(line.to_owned()),
        }
    }

    pub fn max_term(&self) -> u64 {
        self.lives.keys().map(|k| k.0).max().unwrap_or(0)
    }

    pub fn life(&self, key: (u64, u32)) -> Option<&Life> {
        self.lives.get(&key)
    }

    /// The supervised child of `term` (the first, should a term have two).
    pub fn child_of(&self, term: u64) -> Option<&Life> {
        self.lives
            .range((term, 0)..=(term, u32::MAX))
            .map(|(_, l)| l)
            .find(|l| l.role == Role::Child)
    }

    /// The escapees a child started.
    pub fn escapees_of(&self, child: &Life) -> Vec<&Life> {
        self.lives
            .range((child.term, 0)..=(child.term, u32::MAX))
            .map(|(_, l)| l)
            .filter(|l| l.role != Role::Child && l.parent == child.pid)
            .collect()
    }
}

/// The whole process tree of a leader (s3lead, its guard, the child and its escapees)
/// frozen for longer than the lease, as a paused host or VM would be: the one case where
/// docs/design.md §1 lets two terms run at once, with fencing as the answer.
#[derive(Clone, Debug)]
pub struct HostPause {
    /// The lives that were frozen.
    pub lives: Vec<(u64, u32)>,
    pub stopped_ns: u64,
    /// When the frozen lives were let go again (before their guard and s3lead).
    pub resumed_ns: u64,
}

#[derive(Debug, Default)]
pub struct Verdict {
    /// Lives of two terms at once, not explained by a host pause, each with the key of
    /// the older life.
    pub overlaps: Vec<((u64, u32), String)>,
    /// Overlaps of a host-paused leader's lives with their successors.
    pub explained: Vec<String>,
    /// Writes by a term older than one the downstream had already accepted.
    pub stale_accepted: Vec<String>,
    pub stale_rejected: usize,
    /// A term held by two children, terms not growing in start order, an escapee of a
    /// term that is not its child's.
    pub term_errors: Vec<String>,
    /// What became of each host-paused leader's lives, for the log.
    pub pauses: Vec<String>,
}

/// Judges a finished journal.
pub fn judge(j: &Journal, pauses: &[HostPause]) -> Verdict {
    let mut v = Verdict::default();
    let mut lives: Vec<&Life> = j.lives.values().collect();
    lives.sort_by_key(|l| (l.start_ns, l.term));

    // Terms: one child per term, growing with every new child; an escapee runs under the
    // term of the child that started it.
    let mut children: Vec<&Life> = lives
        .iter()
        .copied()
        .filter(|l| l.role == Role::Child)
        .collect();
    children.sort_by_key(|l| (l.start_ns, l.term));
    let mut by_term: BTreeMap<u64, Vec<&Life>> = BTreeMap::new();
    for l in &children {
        by_term.entry(l.term).or_default().push(l);
    }
    for (term, ls) in &by_term {
        if ls.len() > 1 {
            let who: Vec<String> = ls.iter().map(|l| l.to_string()).collect();
            v.term_errors
                .push(format!("term {term} reused: {}", who.join("; ")));
        }
    }
    for w in children.windows(2) {
        if w[1].term <= w[0].term {
            v.term_errors.push(format!(
                "term did not grow: {} started after {}",
                w[1], w[0]
            ));
        }
    }
    for l in lives.iter().filter(|l| l.role != Role::Child) {
        let parent_ok = by_term
            .get(&l.term)
            .is_some_and(|cs| cs.iter().any(|c| c.pid == l.parent));
        if !parent_ok {
            v.term_errors.push(format!(
                "{l} names parent pid {}, which is not the child of its term",
                l.parent
            ));
        }
    }

    // Overlaps: [start, last line] of every pair of lives of different terms.
    for (i, a) in lives.iter().enumerate() {
        for b in &lives[i + 1..] {
            if a.term == b.term || b.start_ns >= a.last_ns {
                continue;
            }
            let (old, new) = if a.term < b.term { (a, b) } else { (b, a) };
            let what = format!(
                "{a} overlaps {b} by {} ms",
                (a.last_ns.min(b.last_ns) - b.start_ns) / 1_000_000
            );
            let paused = pauses
                .iter()
                .any(|p| p.lives.contains(&old.key()) && new.start_ns >= p.stopped_ns);
            if paused {
                v.explained.push(what);
            } else {
                v.overlaps.push((old.key(), what));
            }
        }
    }

    for p in pauses {
        for &key in &p.lives {
            let Some(a) = j.life(key) else { continue };
            let rejected = j
                .writes
                .iter()
                .filter(|w| (w.term, w.pid) == key && !w.accepted && w.ns >= p.resumed_ns)
                .count();
            v.pauses.push(format!(
                "{a}: frozen at {} ns, let go at {} ns; last sign of life {} ms after; \
                 {rejected} writes rejected after it",
                p.stopped_ns,
                p.resumed_ns,
                ms_signed(a.last_ns, p.resumed_ns),
            ));
        }
    }

    // Fencing: once the downstream accepted term t, every write of an older term is
    // stale and must be rejected.
    let mut highest_accepted = 0u64;
    for w in &j.writes {
        if w.term < highest_accepted {
            if w.accepted {
                v.stale_accepted.push(format!(
                    "term {} (pid {}) accepted at {} ns after term {highest_accepted} was",
                    w.term, w.pid, w.ns
                ));
            } else {
                v.stale_rejected += 1;
            }
        }
        if w.accepted {
            highest_accepted = highest_accepted.max(w.term);
        }
    }
    v
}

/// `a − b` in milliseconds, negative if `a` came first.
fn ms_signed(a: u64, b: u64) -> i64 {
    (a as i64 - b as i64) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(lines: &str) -> Journal {
        let mut j = Journal::new(PathBuf::new());
        for l in lines.lines() {
            j.take(l.trim());
        }
        j
    }

    /// The judge has teeth: an escapee of term 1 that outlives the start of term 2 is an
    /// overlap, though its child ended in time.
    #[test]
    fn an_escapee_that_outlives_its_term_overlaps() {
        let j = journal(
            "start 1 10 100 c1 child 5
             start 1 11 150 c1 setsid 10
             end 1 10 200
             hb 1 11 350
             start 2 20 300 c2 child 6
             write 2 20 310 accepted",
        );
        assert!(j.garbage.is_empty(), "{:?}", j.garbage);
        let v = judge(&j, &[]);
        assert_eq!(v.overlaps.len(), 1, "{v:?}");
        assert!(v.term_errors.is_empty(), "{v:?}");
        let pause = HostPause {
            lives: vec![(1, 10), (1, 11)],
            stopped_ns: 250,
            resumed_ns: 340,
        };
        let v = judge(&j, &[pause]);
        assert_eq!((v.overlaps.len(), v.explained.len()), (0, 1), "{v:?}");
    }

    #[test]
    fn terms_must_grow_and_escapees_belong_to_their_child() {
        let j = journal(
            "start 2 10 100 c1 child 5
             end 2 10 200
             start 2 20 300 c2 child 6
             start 3 21 310 c2 setpgid 99",
        );
        let v = judge(&j, &[]);
        assert_eq!(v.term_errors.len(), 3, "{v:?}");
    }

    #[test]
    fn stale_writes_are_counted() {
        let j = journal(
            "start 1 10 100 c1 child 5
             start 2 20 150 c2 child 6
             write 2 20 160 accepted
             write 1 10 170 rejected
             write 1 10 180 accepted",
        );
        let v = judge(&j, &[]);
        assert_eq!((v.stale_rejected, v.stale_accepted.len()), (1, 1), "{v:?}");
    }
}
