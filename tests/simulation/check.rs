//! The promise of DESIGN §1, checked on what a run did in simulated real time: the
//! intervals during which each supervised child ran, and the term each was given.
//! These functions know nothing of the protocol; they judge only its effects.

use super::scenario::{At, Nanos};

/// One child's life.
#[derive(Clone, Debug)]
pub struct ChildRun {
    pub cand: usize,
    pub incarnation: u32,
    pub term: u64,
    pub start: Nanos,
    /// `None`: still running when the run ended.
    pub end: Option<Nanos>,
    /// Set when the child ended late because its supervisor was paused at the instant
    /// it should have killed it: that instant. DESIGN §1 allows this one exception
    /// ("a supervisor paused for longer than its safety margin"); the fencing term is
    /// the answer to it, so such a child must hold a smaller term than any child that
    /// started after that instant.
    pub late_since: Option<Nanos>,
}

impl ChildRun {
    fn end_or(&self, end_of_run: Nanos) -> Nanos {
        self.end.unwrap_or(end_of_run)
    }
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub at: Nanos,
    pub what: String,
}

/// What the safety checks found.
#[derive(Default, Debug)]
pub struct Safety {
    pub violations: Vec<Violation>,
    /// Overlaps excused by a paused supervisor, each checked to be fenced.
    pub fenced_overlaps: u64,
}

/// Mutual exclusion (§1.1) and fencing (§1.2). Intervals are half-open: a child that
/// ends at the very instant another starts does not overlap it.
pub fn safety(children: &[ChildRun], end_of_run: Nanos) -> Safety {
    let mut found = Safety::default();
    let mut order: Vec<&ChildRun> = children.iter().collect();
    order.sort_by_key(|c| c.start);
    for pair in order.windows(2) {
        let (x, y) = (pair[0], pair[1]);
        if y.term <= x.term {
            found.violations.push(Violation {
                at: y.start,
                what: format!(
                    "term did not grow: c{}.{} started with term {} after c{}.{} had term {}",
                    y.cand, y.incarnation, y.term, x.cand, x.incarnation, x.term
                ),
            });
        }
    }
    for (i, x) in order.iter().enumerate() {
        let x_end = x.end_or(end_of_run);
        // Sorted by start: once one starts after x ended, all later ones do.
        for y in order[i + 1..].iter().take_while(|y| y.start < x_end) {
            match x.late_since {
                Some(due) if y.start >= due => {
                    found.fenced_overlaps += 1;
                    if x.term >= y.term {
                        found.violations.push(Violation {
                            at: y.start,
                            what: format!(
                                "unfenced: c{}.{} (term {}) ran on after its lease while paused, \
                                 and c{}.{} started with term {}, not higher",
                                x.cand, x.incarnation, x.term, y.cand, y.incarnation, y.term
                            ),
                        });
                    }
                }
                _ => found.violations.push(Violation {
                    at: y.start,
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

    fn child(cand: usize, term: u64, start: Nanos, end: Nanos) -> ChildRun {
        ChildRun {
            cand,
            incarnation: 1,
            term,
            start,
            end: Some(end),
            late_since: None,
        }
    }

    #[test]
    fn touching_children_are_fine_and_overlapping_ones_are_not() {
        let ok = [child(0, 1, 0, 10), child(1, 2, 10, 20)];
        assert!(safety(&ok, 100).violations.is_empty());
        let bad = [child(0, 1, 0, 11), child(1, 2, 10, 20)];
        assert_eq!(safety(&bad, 100).violations.len(), 1);
        let open = [
            ChildRun {
                end: None,
                ..child(0, 1, 0, 0)
            },
            child(1, 2, 50, 60),
        ];
        assert_eq!(safety(&open, 100).violations.len(), 1);
    }

    #[test]
    fn terms_must_grow_in_start_order() {
        let repeated = [child(0, 3, 0, 10), child(1, 3, 20, 30)];
        assert_eq!(safety(&repeated, 100).violations.len(), 1);
        let down = [child(0, 3, 0, 10), child(1, 2, 20, 30)];
        assert_eq!(safety(&down, 100).violations.len(), 1);
    }

    #[test]
    fn a_late_child_is_excused_only_after_its_due_instant_and_only_if_fenced() {
        let late = ChildRun {
            late_since: Some(10),
            ..child(0, 1, 0, 30)
        };
        let fenced = safety(&[late.clone(), child(1, 2, 15, 40)], 100);
        assert!(fenced.violations.is_empty());
        assert_eq!(fenced.fenced_overlaps, 1);
        assert_eq!(
            safety(&[late.clone(), child(1, 2, 5, 40)], 100)
                .violations
                .len(),
            1,
            "started before the late child was due to die"
        );
        assert!(
            !safety(&[late, child(1, 1, 15, 40)], 100)
                .violations
                .is_empty()
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
