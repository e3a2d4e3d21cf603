//! The promise of docs/design.md §1, checked on what a run did in simulated real time: the
//! interval during which each supervised command ran (from its start until its last
//! process died), the term it was given, and the deadlines its supervisor handed to the
//! watchdog. These functions know nothing of the protocol or of the stop policy; they
//! judge only their effects, against the faults of the environment that docs/design.md §1
//! names as its exception (a whole host paused past its lease) or its limit (a lock
//! object deleted behind the protocol's back takes its terms with it).

use super::scenario::{At, Nanos};

/// One supervised command's life.
#[derive(Clone, Debug)]
pub struct ChildRun {
    pub cand: usize,
    pub incarnation: u32,
    pub term: u64,
    /// When the write that acquired its lease landed in the store.
    pub acquired: Nanos,
    pub start: Nanos,
    /// When its last process died; `None`: still running when the run ended.
    pub end: Option<Nanos>,
    /// Each deadline handed to the watchdog, in order: the real instant it was handed
    /// over, and the real instant at which the host's boot clock reaches it.
    pub watchdog: Vec<(Nanos, Nanos)>,
}

impl ChildRun {
    fn end_or(&self, end_of_run: Nanos) -> Nanos {
        self.end.unwrap_or(end_of_run)
    }

    /// When the watchdog fires: at the first deadline reached before another replaced
    /// it (a deadline handed over when it has already passed fires at once).
    pub fn watchdog_fires_at(&self) -> Option<Nanos> {
        let mut deadlines = self.watchdog.iter().peekable();
        while let Some(&(handed, due)) = deadlines.next() {
            let fires = handed.max(due);
            match deadlines.peek() {
                Some(&&(next, _)) if next <= fires => {}
                _ => return Some(fires),
            }
        }
        None
    }
}

/// What a broken promise looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Two children ran at once.
    Overlap,
    /// A child late because its host was paused overlapped one whose term is not higher.
    Unfenced,
    /// A leader's term is not above its predecessor's.
    TermOrder,
    /// A child ran on past its watchdog's deadline plus the kill latency.
    OutlivedWatchdog,
    /// A calm stretch without a leader, longer than the bound.
    Liveness,
    /// Something no correct protocol or world does (found by the world itself).
    Model,
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub at: Nanos,
    pub kind: Kind,
    pub what: String,
}

/// What the run's environment did that excuses or limits the promise.
pub struct Environment<'a> {
    /// Per candidate: the real intervals during which its whole host was paused.
    pub host_pauses: &'a [Vec<(Nanos, Nanos)>],
    /// When the lock object was deleted behind the protocol's back.
    pub deletions: &'a [Nanos],
    /// How long after SIGKILL a process may still run.
    pub kill_latency: Nanos,
    pub end_of_run: Nanos,
}

/// What the safety checks found.
#[derive(Default, Debug)]
pub struct Safety {
    pub violations: Vec<Violation>,
    /// Children that outlived their watchdog because their whole host was paused.
    pub late_children: u64,
    /// Overlaps such a late child caused, each checked to be fenced.
    pub fenced_overlaps: u64,
    /// Leaders whose term did not grow because the object was deleted in between.
    pub term_restarts: u64,
}

/// Mutual exclusion (§1.1), the watchdog (§4) and fencing (§1.2). Intervals are
/// half-open: a child that ends at the very instant another starts does not overlap it.
///
/// A child must be dead by its watchdog's deadline plus the kill latency, whatever its
/// supervisor was doing: the watchdog is a process of its own. Only a whole host paused
/// in between excuses it (docs/design.md §1's exception); such a late child may overlap a child
/// that started after its deadline, but only one with a higher term.
///
/// Terms grow from each leader to the next in the order their acquisitions landed (the
/// runs of one lease, started again after a pause for the quorum, are one leader's),
/// except across a deletion of the object: a candidate that finds the object gone can
/// only count on from the terms it saw, and one that saw none starts again from the
/// first.
pub fn safety(children: &[ChildRun], env: &Environment<'_>) -> Safety {
    let mut found = Safety::default();
    let mut order: Vec<&ChildRun> = children.iter().collect();
    order.sort_by_key(|c| c.acquired);
    for pair in order.windows(2) {
        let (x, y) = (pair[0], pair[1]);
        // Two runs of one lease (the command started again after a pause for its
        // quorum) are one leader's: its term need not grow.
        let one_lease = (x.cand, x.incarnation, x.term, x.acquired)
            == (y.cand, y.incarnation, y.term, y.acquired);
        if y.term > x.term || one_lease {
            continue;
        }
        if env
            .deletions
            .iter()
            .any(|&d| x.acquired < d && d <= y.acquired)
        {
            found.term_restarts += 1;
            continue;
        }
        found.violations.push(Violation {
            at: y.start,
            kind: Kind::TermOrder,
            what: format!(
                "term did not grow: c{}.{} started with term {} after c{}.{} had term {}",
                y.cand, y.incarnation, y.term, x.cand, x.incarnation, x.term
            ),
        });
    }
    order.sort_by_key(|c| c.start);
    // The instant since which each child is late, if its host's pause excuses it.
    let mut late_since: Vec<Option<Nanos>> = vec![None; order.len()];
    for (i, x) in order.iter().enumerate() {
        let Some(fires) = x.watchdog_fires_at() else {
            continue;
        };
        let due = fires + env.kill_latency;
        let end = x.end_or(env.end_of_run);
        if end <= due {
            continue;
        }
        let paused = env.host_pauses[x.cand]
            .iter()
            .any(|&(from, to)| from <= due && to >= fires);
        if paused {
            found.late_children += 1;
            late_since[i] = Some(fires);
        } else {
            found.violations.push(Violation {
                at: due,
                kind: Kind::OutlivedWatchdog,
                what: format!(
                    "c{}.{} (term {}) ran until {}, past its watchdog's deadline {} and the kill latency",
                    x.cand,
                    x.incarnation,
                    x.term,
                    At(end),
                    At(fires)
                ),
            });
        }
    }
    for (i, x) in order.iter().enumerate() {
        let x_end = x.end_or(env.end_of_run);
        // Sorted by start: once one starts after x ended, all later ones do.
        for y in order[i + 1..].iter().take_while(|y| y.start < x_end) {
            match late_since[i] {
                Some(due) if y.start >= due => {
                    found.fenced_overlaps += 1;
                    if x.term >= y.term {
                        found.violations.push(Violation {
                            at: y.start,
                            kind: Kind::Unfenced,
                            what: format!(
                                "unfenced: c{}.{} (term {}) ran on after its lease while its host was \
                                 paused, and c{}.{} started with term {}, not higher",
                                x.cand, x.incarnation, x.term, y.cand, y.incarnation, y.term
                            ),
                        });
                    }
                }
                _ => found.violations.push(Violation {
                    at: y.start,
                    kind: Kind::Overlap,
                    what: format!(
                        "two children at once: c{}.{} (term {}, {} to {}) and c{}.{} (term {}, from {})",
                        x.cand,
                        x.incarnation,
                        x.term,
                        At(x.start),
                        At(x_end),
                        y.cand,
                        y.incarnation,
                        y.term,
                        At(y.start)
                    ),
                }),
            }
        }
    }
    found
}

/// What the liveness check found.
#[derive(Default, Debug)]
pub struct Liveness {
    pub violations: Vec<Violation>,
    /// The longest stretch without a running child.
    pub longest_gap: Nanos,
}

/// Liveness (§1.3): within `[from, to]`, no stretch longer than `bound` without a
/// running child.
pub fn liveness(children: &[ChildRun], from: Nanos, to: Nanos, bound: Nanos) -> Liveness {
    let mut found = Liveness::default();
    let mut order: Vec<&ChildRun> = children.iter().collect();
    order.sort_by_key(|c| c.start);
    let mut covered_until = from;
    let gap = |start: Nanos, end: Nanos, found: &mut Liveness| {
        found.longest_gap = found.longest_gap.max(end.saturating_sub(start));
        if end.saturating_sub(start) > bound {
            found.violations.push(Violation {
                at: start,
                kind: Kind::Liveness,
                what: format!(
                    "no leader from {} to {} ({} > bound {}) in the calm phase",
                    At(start),
                    At(end),
                    At(end - start),
                    At(bound)
                ),
            });
        }
    };
    for c in order {
        let end = c.end_or(to);
        if end <= covered_until {
            continue;
        }
        if c.start > covered_until {
            gap(covered_until, c.start.min(to), &mut found);
        }
        covered_until = end;
        if covered_until >= to {
            return found;
        }
    }
    gap(covered_until, to, &mut found);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child whose watchdog holds a deadline far away.
    fn child(cand: usize, term: u64, start: Nanos, end: Nanos) -> ChildRun {
        ChildRun {
            cand,
            incarnation: 1,
            term,
            acquired: start,
            start,
            end: Some(end),
            watchdog: vec![(start, 1_000)],
        }
    }

    fn env<'a>(host_pauses: &'a [Vec<(Nanos, Nanos)>], deletions: &'a [Nanos]) -> Environment<'a> {
        Environment {
            host_pauses,
            deletions,
            kill_latency: 2,
            end_of_run: 100,
        }
    }

    const NO_PAUSES: &[Vec<(Nanos, Nanos)>] = &[Vec::new(), Vec::new()];

    #[test]
    fn touching_children_are_fine_and_overlapping_ones_are_not() {
        let ok = [child(0, 1, 0, 10), child(1, 2, 10, 20)];
        assert!(safety(&ok, &env(NO_PAUSES, &[])).violations.is_empty());
        let bad = [child(0, 1, 0, 11), child(1, 2, 10, 20)];
        let found = safety(&bad, &env(NO_PAUSES, &[]));
        assert_eq!(found.violations.len(), 1);
        assert_eq!(found.violations[0].kind, Kind::Overlap);
        let open = [
            ChildRun {
                end: None,
                ..child(0, 1, 0, 0)
            },
            child(1, 2, 50, 60),
        ];
        assert_eq!(safety(&open, &env(NO_PAUSES, &[])).violations.len(), 1);
    }

    #[test]
    fn terms_must_grow_in_acquisition_order_except_across_a_deletion() {
        let repeated = [child(0, 3, 0, 10), child(1, 3, 20, 30)];
        assert_eq!(safety(&repeated, &env(NO_PAUSES, &[])).violations.len(), 1);
        let down = [child(0, 3, 0, 10), child(1, 2, 20, 30)];
        assert_eq!(safety(&down, &env(NO_PAUSES, &[])).violations.len(), 1);
        let after_deletion = safety(&down, &env(NO_PAUSES, &[15]));
        assert!(after_deletion.violations.is_empty());
        assert_eq!(after_deletion.term_restarts, 1);
        assert_eq!(
            safety(&down, &env(NO_PAUSES, &[25])).violations.len(),
            1,
            "deleted after the second leader's acquisition"
        );
        // The first started after the deletion, but its acquisition landed before it.
        let late_answer = [
            ChildRun {
                acquired: 12,
                ..child(0, 3, 16, 20)
            },
            child(1, 3, 30, 40),
        ];
        let found = safety(&late_answer, &env(NO_PAUSES, &[14]));
        assert!(found.violations.is_empty());
        assert_eq!(found.term_restarts, 1);
        // The second started after the deletion, but acquired before it.
        let same_lineage = [
            child(0, 3, 0, 10),
            ChildRun {
                acquired: 12,
                ..child(1, 3, 16, 20)
            },
        ];
        assert_eq!(
            safety(&same_lineage, &env(NO_PAUSES, &[14]))
                .violations
                .len(),
            1
        );
    }

    #[test]
    fn the_watchdog_fires_at_the_first_deadline_not_replaced_in_time() {
        let mut c = child(0, 1, 0, 10);
        c.watchdog = vec![(0, 5), (4, 8), (9, 12)];
        assert_eq!(
            c.watchdog_fires_at(),
            Some(8),
            "replaced after 8 had passed"
        );
        c.watchdog = vec![(0, 5), (4, 8), (8, 12)];
        assert_eq!(c.watchdog_fires_at(), Some(12));
        c.watchdog = vec![(0, 5), (6, 3)];
        assert_eq!(c.watchdog_fires_at(), Some(5));
        c.watchdog = vec![(0, 5), (4, 3)];
        assert_eq!(
            c.watchdog_fires_at(),
            Some(4),
            "a past deadline fires at once"
        );
    }

    #[test]
    fn a_child_alive_past_its_watchdog_and_the_kill_latency_is_caught_without_an_overlap() {
        let mut c = child(0, 1, 0, 8);
        c.watchdog = vec![(0, 5)];
        let runs = [c.clone()];
        let found = safety(&runs, &env(NO_PAUSES, &[]));
        assert_eq!(found.violations.len(), 1);
        assert_eq!(found.violations[0].kind, Kind::OutlivedWatchdog);
        c.end = Some(7);
        let runs = [c];
        assert!(
            safety(&runs, &env(NO_PAUSES, &[])).violations.is_empty(),
            "within the kill latency"
        );
    }

    #[test]
    fn a_late_child_is_excused_only_by_a_host_pause_after_its_deadline_and_only_if_fenced() {
        let mut late = child(0, 1, 0, 30);
        late.watchdog = vec![(0, 10)];
        let paused: &[Vec<(Nanos, Nanos)>] = &[vec![(8, 25)], Vec::new()];
        let fenced = safety(&[late.clone(), child(1, 2, 15, 40)], &env(paused, &[]));
        assert!(fenced.violations.is_empty(), "{:?}", fenced.violations);
        assert_eq!((fenced.late_children, fenced.fenced_overlaps), (1, 1));
        let early = safety(&[late.clone(), child(1, 2, 5, 40)], &env(paused, &[]));
        assert_eq!(
            early.violations.iter().map(|v| v.kind).collect::<Vec<_>>(),
            [Kind::Overlap],
            "started before the late child was due to die"
        );
        let unfenced = safety(&[late.clone(), child(1, 1, 15, 40)], &env(paused, &[]));
        assert!(unfenced.violations.iter().any(|v| v.kind == Kind::Unfenced));
        let not_paused = safety(&[late, child(1, 2, 15, 40)], &env(NO_PAUSES, &[]));
        assert!(
            not_paused
                .violations
                .iter()
                .any(|v| v.kind == Kind::OutlivedWatchdog)
        );
    }

    #[test]
    fn gaps_longer_than_the_bound_are_found() {
        let runs = [child(0, 1, 0, 10), child(1, 2, 25, 30)];
        let found = liveness(&runs, 0, 40, 15);
        assert!(found.violations.is_empty());
        assert_eq!(found.longest_gap, 15);
        assert_eq!(liveness(&runs, 0, 40, 14).violations.len(), 1);
        let trailing = liveness(&runs, 0, 60, 15);
        assert_eq!(trailing.violations.len(), 1, "the trailing gap");
        assert_eq!(trailing.longest_gap, 30);
        assert_eq!(liveness(&[], 0, 60, 15).violations.len(), 1);
    }
}
