//! Live mode's decisions, pure: when to pull which query of a table, where to subscribe from,
//! and how long to wait before reconnecting.
//!
//! A table's feed reports every committed change past a position; each of the table's queries
//! has its own delta token. [`TablePlan`] keeps, per query, the position up to which that query
//! is known to hold every row (`checked`): its token after a pull, or further, the newest event
//! that had arrived when that pull started (a pull started after an event's commit sees the
//! row, so a query whose filter leaves the row out is still done with it). A query is due when
//! an event lies beyond its `checked`, or when a pull is forced (the first sync, an overflowed
//! or resumed-from-nowhere feed). Events arriving while a pull runs only move `seen`, so a
//! burst costs one pull, plus at most one more for the events that came during it.

use std::cmp::Ordering;

/// A feed or pull position: (`updatedAt` in wire form, `id`), ordered as the pull orders rows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub(crate) updated_at: String,
    pub(crate) id: String,
}

impl Position {
    /// The wire form of a position (`docs/extensions.md` section 5): `<updatedAt>|<id>`.
    pub(crate) fn wire(&self) -> String {
        format!("{}|{}", self.updated_at, self.id)
    }
}

/// The later of two optional positions (`None` is before everything).
fn later(a: Option<Position>, b: Option<Position>) -> Option<Position> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A round of pulls: which queries (indexes) and what they will have covered once done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Round {
    pub(crate) queries: Vec<usize>,
    /// The newest event seen when the round started.
    pub(crate) through: Option<Position>,
    forced: bool,
}

/// What one table's live loop knows about its queries (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct TablePlan {
    checked: Vec<Option<Position>>,
    seen: Option<Position>,
    forced: bool,
}

impl TablePlan {
    /// A plan from the queries' saved tokens; the first round is forced (the sync that makes the
    /// store current before the feed takes over).
    pub(crate) fn new(tokens: Vec<Option<Position>>) -> Self {
        TablePlan {
            checked: tokens,
            seen: None,
            forced: true,
        }
    }

    /// The feed reported a committed change at `p`.
    pub(crate) fn saw(&mut self, p: Position) {
        self.seen = later(self.seen.take(), Some(p));
    }

    /// Every query must pull (the feed overflowed, or was subscribed from its current end).
    pub(crate) fn force(&mut self) {
        self.forced = true;
    }

    /// Whether a query is due (forced, or an event beyond what it checked).
    fn is_due(&self, i: usize) -> bool {
        self.forced
            || match (&self.seen, &self.checked[i]) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(s), Some(c)) => s.cmp(c) == Ordering::Greater,
            }
    }

    /// Whether any query is due.
    pub(crate) fn has_due(&self) -> bool {
        (0..self.checked.len()).any(|i| self.is_due(i))
    }

    /// Starts a round of the due queries (empty when none is due).
    pub(crate) fn begin(&mut self) -> Round {
        let queries = (0..self.checked.len())
            .filter(|&i| self.is_due(i))
            .collect();
        let round = Round {
            queries,
            through: self.seen.clone(),
            forced: self.forced,
        };
        self.forced = false;
        round
    }

    /// Query `i` of `round` pulled; its token is now `token`.
    pub(crate) fn pulled(&mut self, round: &Round, i: usize, token: Option<Position>) {
        self.checked[i] = later(token, round.through.clone());
    }

    /// Query `i` of `round` failed: it stays due (a forced round is forced again).
    pub(crate) fn failed(&mut self, round: &Round) {
        if round.forced {
            self.forced = true;
        }
    }

    /// Where to subscribe from: the earliest query's position, or `None` (the feed's current
    /// end) when some query knows no position at all; the caller then forces a catch-up pull
    /// once subscribed, for rows committed between its last pull and the subscription.
    pub(crate) fn position(&self) -> Option<Position> {
        let mut min: Option<&Position> = None;
        for c in &self.checked {
            let c = c.as_ref()?;
            min = Some(match min {
                Some(m) if m <= c => m,
                _ => c,
            });
        }
        min.cloned()
    }
}

/// Exponential reconnect delays between a minimum and a maximum, in milliseconds, each drawn
/// from the upper half of its step ("equal jitter"), so clients dropped together by a server
/// restart do not all come back in the same millisecond.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min_ms: u64,
    max_ms: u64,
    step_ms: u64,
}

impl Backoff {
    pub(crate) fn new(min_ms: u64, max_ms: u64) -> Self {
        Backoff {
            min_ms,
            max_ms,
            step_ms: min_ms,
        }
    }

    /// The next delay, doubling the step up to the maximum: `jitter` in 0..=1 picks it between
    /// half the step (0) and the whole step (1), never below the minimum.
    pub(crate) fn next_ms(&mut self, jitter: f64) -> u64 {
        let step = self.step_ms;
        self.step_ms = step.saturating_mul(2).min(self.max_ms);
        let half = step / 2;
        let extra = (half as f64 * jitter.clamp(0.0, 1.0)).round() as u64;
        (step - half + extra).max(self.min_ms.min(step))
    }

    /// A connection worked: the next failure waits the minimum again.
    pub(crate) fn reset(&mut self) {
        self.step_ms = self.min_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: u32, id: &str) -> Position {
        Position {
            updated_at: format!("2026-01-01T00:00:00.{t:03}Z"),
            id: id.into(),
        }
    }

    #[test]
    fn the_first_round_pulls_every_query_then_nothing_is_due() {
        let mut plan = TablePlan::new(vec![Some(p(1, "a")), None]);
        assert!(plan.has_due());
        let round = plan.begin();
        assert_eq!(round.queries, vec![0, 1]);
        assert!(!plan.has_due());
        plan.pulled(&round, 0, Some(p(5, "e")));
        plan.pulled(&round, 1, None);
        assert!(!plan.has_due());
        // A query without any position subscribes from the feed's end.
        assert_eq!(plan.position(), None);
    }

    #[test]
    fn a_burst_of_events_is_one_round_and_old_events_are_ignored() {
        let mut plan = TablePlan::new(vec![Some(p(5, "e"))]);
        let first = plan.begin();
        plan.pulled(&first, 0, Some(p(5, "e")));
        plan.saw(p(3, "c")); // already pulled
        plan.saw(p(5, "e"));
        assert!(
            !plan.has_due(),
            "events at or before the token need no pull"
        );
        for i in 6..20 {
            plan.saw(p(i, "x"));
        }
        let round = plan.begin();
        assert_eq!(round.queries, vec![0]);
        assert_eq!(round.through, Some(p(19, "x")));
        // Events during the round make one more round, not one per event.
        plan.saw(p(20, "y"));
        plan.saw(p(21, "z"));
        plan.pulled(&round, 0, Some(p(19, "x")));
        assert!(plan.has_due());
        let again = plan.begin();
        plan.pulled(&again, 0, Some(p(21, "z")));
        assert!(!plan.has_due());
        assert_eq!(plan.position(), Some(p(21, "z")));
    }

    #[test]
    fn a_filtered_query_is_done_with_rows_it_does_not_match() {
        // The pull found nothing new for this query (its token stays), but it started after
        // the event: the query has checked through the event and is not pulled again.
        let mut plan = TablePlan::new(vec![Some(p(1, "a")), Some(p(9, "i"))]);
        let first = plan.begin();
        plan.pulled(&first, 0, Some(p(1, "a")));
        plan.pulled(&first, 1, Some(p(9, "i")));
        plan.saw(p(4, "d"));
        let round = plan.begin();
        assert_eq!(round.queries, vec![0], "only the query behind the event");
        plan.pulled(&round, 0, Some(p(1, "a")));
        assert!(!plan.has_due());
        assert_eq!(
            plan.position(),
            Some(p(4, "d")),
            "the earliest query's position"
        );
    }

    #[test]
    fn failures_and_overflows_keep_queries_due() {
        let mut plan = TablePlan::new(vec![None]);
        let first = plan.begin();
        plan.failed(&first);
        assert!(plan.has_due(), "a failed forced round is forced again");
        let retry = plan.begin();
        plan.pulled(&retry, 0, Some(p(2, "b")));
        plan.saw(p(3, "c"));
        let round = plan.begin();
        plan.failed(&round);
        assert!(plan.has_due(), "the event is still beyond the query");
        let round = plan.begin();
        plan.pulled(&round, 0, Some(p(3, "c")));
        plan.force();
        assert_eq!(plan.begin().queries, vec![0]);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(100, 1000);
        let steps: Vec<u64> = (0..6).map(|_| b.next_ms(1.0)).collect();
        // With the largest jitter each delay is its whole step.
        assert_eq!(steps, vec![100, 200, 400, 800, 1000, 1000]);
        let mut b = Backoff::new(100, 1000);
        let low: Vec<u64> = (0..5).map(|_| b.next_ms(0.0)).collect();
        assert_eq!(
            low,
            vec![100, 100, 200, 400, 500],
            "at least half of each step"
        );
        b.reset();
        assert_eq!(b.next_ms(1.0), 100);
        for r in 0..=50 {
            let mut b = Backoff::new(100, 1000);
            for _ in 0..10 {
                let d = b.next_ms(f64::from(r) / 50.0);
                assert!((100..=1000).contains(&d), "{d}");
            }
        }
    }

    #[test]
    fn positions_print_as_the_feed_expects() {
        assert_eq!(p(7, "a|b").wire(), "2026-01-01T00:00:00.007Z|a|b");
    }
}
