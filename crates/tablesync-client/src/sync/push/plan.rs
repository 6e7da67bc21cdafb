//! Which queued operations go into the next batch, and how they are grouped: pure.
//!
//! The operations come in queue order (ascending `sequence`) and keep it: a batch is a prefix
//! of what is left of the queue. Rules, in order:
//!
//! 1. **Atomicity groups are contiguous.** The operations of one local transaction are queued
//!    together, but later edits can merge transactions (see `store::queue::enqueue`), so a
//!    group's operations may be apart. A *run* is the shortest stretch of the queue that starts
//!    at an operation and contains every operation of every group it touches; operations
//!    without a group that lie inside it join it. A run of two or more operations is sent as one
//!    `atomicityGroup`, so the server applies it all or nothing. Joining is only ever more
//!    atomic than asked.
//! 2. **Bounds.** A batch holds at most `operations_max` operations and `body_bytes_max` bytes
//!    (the server's, from discovery), counted exactly ([`super::batch::request_len`]). Runs are
//!    taken whole while they fit.
//! 3. **Too big to be atomic.** When the first run does not fit in one batch (too many
//!    operations, too many bytes, or it continues past what one batch can hold), its operations
//!    are sent without a group, as many as fit: no batch can apply it at once, and the
//!    one-request-per-operation path could not either.
//! 4. **Too big for any batch.** An operation that alone exceeds `body_bytes_max` is sent as its
//!    own request ([`BatchPlan::Single`]).

use super::batch::{request_len, ENVELOPE_BYTES};

/// The server's bounds on one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most operations per batch, in operations.
    pub(crate) operations_max: usize,
    /// Largest batch body, in bytes.
    pub(crate) body_bytes_max: u64,
}

/// What the planner needs to know of one queued operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlanItem {
    /// Its queue position.
    pub(crate) sequence: i64,
    /// For an operation of a group, the largest sequence of the group's queued operations.
    pub(crate) group_end: Option<i64>,
    /// Bytes of its request members ([`super::batch::request_members`]).
    pub(crate) members_bytes: usize,
}

/// The next step of a batched push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BatchPlan {
    /// Send the first operation as its own request (it alone exceeds `body_bytes_max`).
    Single,
    /// Send the first `groups.len()` operations as one batch; `groups[i]` is the atomicity
    /// group number of operation `i` (numbered from 1 in batch order), `None` for none.
    Batch { groups: Vec<Option<u32>> },
}

impl BatchPlan {
    /// How many operations the step sends.
    pub(crate) fn len(&self) -> usize {
        match self {
            BatchPlan::Single => 1,
            BatchPlan::Batch { groups } => groups.len(),
        }
    }
}

/// A stretch of the queue that must be sent together (rule 1), as indexes into the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: usize,
    /// Inclusive.
    end: usize,
    /// The run's groups have operations after the last item given (beyond the window).
    open: bool,
}

fn runs(items: &[PlanItem]) -> Vec<Run> {
    let reach_of = |i: &PlanItem| i.group_end.unwrap_or(i.sequence).max(i.sequence);
    let mut out = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let mut reach = reach_of(&items[start]);
        let mut end = start;
        while end + 1 < items.len() && items[end + 1].sequence <= reach {
            end += 1;
            reach = reach.max(reach_of(&items[end]));
        }
        out.push(Run {
            start,
            end,
            open: reach > items[end].sequence,
        });
        start = end + 1;
    }
    out
}

/// Plans the next batch from the operations at the head of the queue (see the module docs).
/// `items` must not be empty.
pub(crate) fn plan_batch(items: &[PlanItem], limits: Limits) -> BatchPlan {
    let ops_max = limits.operations_max.max(1);
    let bytes_max = usize::try_from(limits.body_bytes_max).unwrap_or(usize::MAX);
    let mut groups: Vec<Option<u32>> = Vec::new();
    let mut bytes = ENVELOPE_BYTES;
    let mut next_group = 1u32;
    // Bytes of operation `i` placed next in the batch, with `group`, its comma included.
    let cost = |i: usize, position: usize, group: Option<u32>| {
        request_len(items[i].members_bytes, position, group) + usize::from(position > 1)
    };
    for run in runs(items) {
        let len = run.end - run.start + 1;
        if !run.open && groups.len() + len <= ops_max {
            let group = (len >= 2).then_some(next_group);
            let run_bytes: usize = (run.start..=run.end)
                .enumerate()
                .map(|(k, i)| cost(i, groups.len() + k + 1, group))
                .sum();
            if bytes + run_bytes <= bytes_max {
                groups.extend(std::iter::repeat_n(group, len));
                bytes += run_bytes;
                if group.is_some() {
                    next_group += 1;
                }
                continue;
            }
        }
        if groups.is_empty() {
            // Rule 3: the first run cannot be atomic in any batch; send what fits, ungrouped.
            for i in run.start..=run.end {
                let b = cost(i, groups.len() + 1, None);
                if groups.len() >= ops_max || bytes + b > bytes_max {
                    break;
                }
                groups.push(None);
                bytes += b;
            }
            if groups.is_empty() {
                return BatchPlan::Single;
            }
        }
        break;
    }
    BatchPlan::Batch { groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operations at sequences 1.. with the given groups (by group number) and member sizes.
    fn items(groups: &[Option<u32>], members_bytes: usize) -> Vec<PlanItem> {
        groups
            .iter()
            .enumerate()
            .map(|(i, g)| PlanItem {
                sequence: i as i64 + 1,
                group_end: g.map(|g| {
                    groups
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| **o == Some(g))
                        .map(|(j, _)| j as i64 + 1)
                        .max()
                        .unwrap_or(0)
                }),
                members_bytes,
            })
            .collect()
    }

    const ROOMY: Limits = Limits {
        operations_max: 1000,
        body_bytes_max: 1 << 20,
    };

    fn batch(groups: &[Option<u32>]) -> BatchPlan {
        BatchPlan::Batch {
            groups: groups.to_vec(),
        }
    }

    /// Exact body size of sending the first `n` of `items` with `groups`.
    fn body_bytes(items: &[PlanItem], groups: &[Option<u32>]) -> usize {
        ENVELOPE_BYTES
            + groups
                .iter()
                .enumerate()
                .map(|(i, g)| request_len(items[i].members_bytes, i + 1, *g) + usize::from(i > 0))
                .sum::<usize>()
    }

    #[test]
    fn ungrouped_operations_fill_the_batch_in_queue_order() {
        let it = items(&[None; 5], 100);
        assert_eq!(plan_batch(&it, ROOMY), batch(&[None; 5]));
        let three = Limits {
            operations_max: 3,
            ..ROOMY
        };
        assert_eq!(plan_batch(&it, three), batch(&[None; 3]));
    }

    #[test]
    fn groups_become_numbered_atomicity_groups_and_singletons_need_none() {
        let it = items(
            &[Some(7), Some(7), None, Some(9), Some(9), Some(9), Some(4)],
            50,
        );
        assert_eq!(
            plan_batch(&it, ROOMY),
            batch(&[Some(1), Some(1), None, Some(2), Some(2), Some(2), None])
        );
    }

    #[test]
    fn a_group_apart_in_the_queue_takes_in_what_lies_between() {
        // Group 1 at 1 and 4 (a later edit merged two transactions), group 2 at 3 and 6.
        let it = items(&[Some(1), None, Some(2), Some(1), None, Some(2), None], 50);
        assert_eq!(
            plan_batch(&it, ROOMY),
            batch(&[Some(1), Some(1), Some(1), Some(1), Some(1), Some(1), None])
        );
    }

    #[test]
    fn a_run_that_does_not_fit_waits_for_the_next_batch() {
        let it = items(&[None, None, Some(1), Some(1), Some(1)], 50);
        let four = Limits {
            operations_max: 4,
            ..ROOMY
        };
        assert_eq!(plan_batch(&it, four), batch(&[None, None]));
        // The next batch starts at the group, which then fits whole.
        assert_eq!(plan_batch(&it[2..], four), batch(&[Some(1); 3]));
    }

    #[test]
    fn a_first_run_too_big_for_any_batch_goes_without_atomicity() {
        let it = items(&[Some(1); 6], 50);
        let four = Limits {
            operations_max: 4,
            ..ROOMY
        };
        assert_eq!(plan_batch(&it, four), batch(&[None; 4]));
        // A group continuing past the operations given (the window) cannot be checked whole.
        let mut open = items(&[None, Some(1), Some(1)], 50);
        open[1].group_end = Some(10);
        open[2].group_end = Some(10);
        assert_eq!(plan_batch(&open, ROOMY), batch(&[None]));
        assert_eq!(plan_batch(&open[1..], ROOMY), batch(&[None, None]));
    }

    #[test]
    fn the_byte_bound_is_exact() {
        let it = items(&[None; 10], 300);
        let five_exactly = body_bytes(&it, &[None; 5]) as u64;
        for (bytes_max, expect) in [
            (five_exactly, 5),
            (five_exactly - 1, 4),
            (five_exactly + 200, 5),
        ] {
            let plan = plan_batch(
                &it,
                Limits {
                    operations_max: 1000,
                    body_bytes_max: bytes_max,
                },
            );
            assert_eq!(plan, batch(&vec![None; expect]), "{bytes_max}");
        }
        // A group that does not fit in the bytes left waits; alone first, it goes ungrouped.
        let grouped = items(&[None, Some(1), Some(1), Some(1)], 300);
        let two = body_bytes(&grouped, &[None, None]) as u64;
        let limits = Limits {
            operations_max: 1000,
            body_bytes_max: two,
        };
        assert_eq!(plan_batch(&grouped, limits), batch(&[None]));
        assert_eq!(plan_batch(&grouped[1..], limits), batch(&[None, None]));
    }

    #[test]
    fn an_operation_bigger_than_any_batch_is_sent_alone() {
        let it = items(&[None, None], 5000);
        let small = Limits {
            operations_max: 1000,
            body_bytes_max: 4000,
        };
        assert_eq!(plan_batch(&it, small), BatchPlan::Single);
        assert_eq!(BatchPlan::Single.len(), 1);
        // After small ones, it waits for the next step.
        let mut mixed = items(&[None, None, None], 100);
        mixed[2].members_bytes = 5000;
        assert_eq!(plan_batch(&mixed, small), batch(&[None, None]));
    }
}
