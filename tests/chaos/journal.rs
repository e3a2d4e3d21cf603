//! Reading the workers' journal (format in `worker.rs`) while the test runs, and judging
//! it afterwards: overlaps of children, terms, and the downstream's fencing.
//!
//! All instants are `CLOCK_BOOTTIME` nanoseconds, written by the workers themselves and
//! by the test around the faults it injects; one host, one clock, so they compare.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// One child's life as the journal tells it; a child is named by `(term, pid)`.
#[derive(Clone, Debug)]
pub struct Life {
    pub term: u64,
    pub pid: u32,
    pub holder: String,
    pub start_ns: u64,
    /// The latest line of any kind: the end, or the lower bound of the end of a child
    /// killed without a chance to write one.
    pub last_ns: u64,
    pub ended: bool,
    pub accepted_writes: usize,
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
            "term {} (pid {}, {}) {}..{} ns{}",
            self.term,
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
    /// Lines that do not parse, or that belong to no started child.
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
            self.lives.insert(
                (term, pid),
                Life {
                    term,
                    pid,
                    holder: f.get(4).copied().unwrap_or("?").to_owned(),
                    start_ns: ns,
                    last_ns: ns,
                    ended: false,
                    accepted_writes: 0,
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
}

/// A SIGSTOP of a leader's supervisor longer than its lease: the one case where DESIGN
/// §1 lets two children run at once, with fencing as the answer.
#[derive(Clone, Debug)]
pub struct LongPause {
    /// The child whose supervisor was paused.
    pub child: (u64, u32),
    pub stopped_ns: u64,
    pub resumed_ns: u64,
}

#[derive(Debug, Default)]
pub struct Verdict {
    /// Two children running at once, not explained by a long pause.
    pub overlaps: Vec<String>,
    /// Overlaps of a long-paused leader's child with its successor.
    pub explained: Vec<String>,
    /// Writes by a term older than one the downstream had already accepted.
    pub stale_accepted: Vec<String>,
    pub stale_rejected: usize,
    /// A term held by two children, or terms not growing in start order.
    pub term_errors: Vec<String>,
    /// A long-paused leader's child still running too long after its supervisor resumed.
    pub slow_stops: Vec<String>,
    /// What became of each long-paused leader's child, for the log.
    pub pauses: Vec<String>,
}

/// Judges a finished journal. `resume_bound_ns`: how long after SIGCONT a long-paused
/// supervisor may take to stop its (stale) child.
pub fn judge(j: &Journal, pauses: &[LongPause], resume_bound_ns: u64) -> Verdict {
    let mut v = Verdict::default();
    let mut lives: Vec<&Life> = j.lives.values().collect();
    lives.sort_by_key(|l| (l.start_ns, l.term));

    // Terms: one child per term, growing with every new child.
    let mut by_term: BTreeMap<u64, Vec<&Life>> = BTreeMap::new();
    for l in &lives {
        by_term.entry(l.term).or_default().push(l);
    }
    for (term, ls) in &by_term {
        if ls.len() > 1 {
            let who: Vec<String> = ls.iter().map(|l| l.to_string()).collect();
            v.term_errors
                .push(format!("term {term} reused: {}", who.join("; ")));
        }
    }
    for w in lives.windows(2) {
        if w[1].term <= w[0].term {
            v.term_errors.push(format!(
                "term did not grow: {} started after {}",
                w[1], w[0]
            ));
        }
    }

    // Overlaps: [start, last line] of every pair.
    for (i, a) in lives.iter().enumerate() {
        for b in &lives[i + 1..] {
            if b.start_ns >= a.last_ns {
                continue;
            }
            let what = format!(
                "{a} overlaps {b} by {} ms",
                (a.last_ns.min(b.last_ns) - b.start_ns) / 1_000_000
            );
            let paused = pauses
                .iter()
                .find(|p| p.child == a.key() && a.term < b.term && b.start_ns >= p.stopped_ns);
            match paused {
                Some(_) => v.explained.push(what),
                None => v.overlaps.push(what),
            }
        }
    }

    for p in pauses {
        let Some(a) = j.life(p.child) else { continue };
        // Only a child that had a successor must stop: a leader whose lease survived
        // the pause (nobody took over) may go on.
        let succeeded = lives
            .iter()
            .any(|b| b.term > a.term && b.start_ns < a.last_ns);
        let rejected = j
            .writes
            .iter()
            .filter(|w| (w.term, w.pid) == p.child && !w.accepted)
            .count();
        v.pauses.push(format!(
            "{a}: supervisor stopped at {} ns, resumed at {} ns; last sign of life {} ms after \
             SIGCONT; {rejected} of its writes rejected; {}",
            p.stopped_ns,
            p.resumed_ns,
            ms_signed(a.last_ns, p.resumed_ns),
            if succeeded {
                "a successor started while it ran"
            } else {
                "no successor while it ran"
            }
        ));
        if succeeded && a.last_ns > p.resumed_ns + resume_bound_ns {
            v.slow_stops.push(format!(
                "{a}: still running {} ms after its supervisor resumed (SIGCONT at {} ns)",
                (a.last_ns - p.resumed_ns) / 1_000_000,
                p.resumed_ns
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
