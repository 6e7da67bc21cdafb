//! Group commit: concurrent writes share one transaction (and so one fsync on SQLite, one pass
//! through a table's clock row on PostgreSQL). This module is the store-neutral coordination;
//! `sqlite/group.rs` and `postgres/group.rs` run a group in their transaction.
//!
//! A [`GroupQueue`] holds the writes waiting for a commit and a *gate* (an async mutex) that
//! whoever runs a group holds until the group is answered. There is no dedicated writer task:
//!
//! 1. a write puts itself in the queue, then waits for either its answer or the gate;
//! 2. whoever gets the gate while its own write is still queued becomes the leader: it takes up
//!    to `group_commit_writes_max` queued writes (its own among them, oldest first) and hands
//!    them, with the gate, to the store's runner, which runs them in one transaction on a
//!    spawned task and answers each before it lets the gate go;
//! 3. while a group runs, new writes pile up in the queue, so the next group is as large as the
//!    load: one write at a time when idle (no added latency), many when busy.
//!
//! The runner is spawned rather than awaited in the leader's request, so a leader whose
//! request is cancelled (client gone, timeout) does not take the other writes of its group
//! with it; its own write may still commit, exactly as a cancelled single write may today.
//! An answer is sent only after the commit that holds the write has returned, so a request is
//! never acknowledged before its write is durable.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{oneshot, OwnedMutexGuard};

use super::{StoreError, StoreErrorKind, StoreResult};
use crate::observe::metrics::GroupCommits;

/// One write waiting in a [`GroupQueue`]: what to run and where its answer goes.
pub struct Pending<J, R> {
    /// The write (store-specific).
    pub job: J,
    /// Its answer; a dropped receiver (cancelled request) is fine.
    pub answer: oneshot::Sender<StoreResult<R>>,
}

impl<J, R> Pending<J, R> {
    /// Answer this write.
    pub fn answer(self, result: StoreResult<R>) {
        let _ = self.answer.send(result);
    }
}

/// Writes waiting to be committed together, and the gate of whoever commits them.
pub struct GroupQueue<J, R> {
    queue: Mutex<VecDeque<Pending<J, R>>>,
    gate: Arc<tokio::sync::Mutex<()>>,
    writes_max: usize,
    /// Counts the queued writes (`tablesync_group_commit_queued_writes`).
    metrics: GroupCommits,
}

impl<J: Send + 'static, R: Send + 'static> GroupQueue<J, R> {
    /// A queue whose groups carry at most `writes_max` writes (at least 1), committed under
    /// `gate` (SQLite shares the gate with its DDL); `metrics` counts its queued writes.
    pub fn new(
        gate: Arc<tokio::sync::Mutex<()>>,
        writes_max: usize,
        metrics: GroupCommits,
    ) -> Self {
        GroupQueue {
            queue: Mutex::new(VecDeque::new()),
            gate,
            writes_max: writes_max.max(1),
            metrics,
        }
    }

    /// Queue `job` and wait for its answer. `start` is called with the gate and a group (never
    /// empty) each time this caller leads one; it must answer every write of the group and
    /// drop the gate only afterwards (typically on a spawned task).
    pub async fn submit<F>(&self, job: J, start: F) -> StoreResult<R>
    where
        F: Fn(OwnedMutexGuard<()>, Vec<Pending<J, R>>),
    {
        let (tx, mut rx) = oneshot::channel();
        self.lock().push_back(Pending { job, answer: tx });
        self.metrics.queued(1);
        loop {
            let gate = tokio::select! {
                biased;
                answer = &mut rx => return answer.unwrap_or_else(|_| Err(lost())),
                gate = Arc::clone(&self.gate).lock_owned() => gate,
            };
            // A runner answers before it lets the gate go: holding the gate, this write is
            // either answered already or still queued.
            match rx.try_recv() {
                Ok(answer) => return answer,
                Err(oneshot::error::TryRecvError::Closed) => return Err(lost()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let group = self.take();
            if group.is_empty() {
                // Unreachable by the argument above; never spin on it.
                return Err(lost());
            }
            start(gate, group);
        }
    }

    /// The next group (up to `group_commit_writes_max` queued writes, oldest first), for a
    /// runner that holds the gate and has answered its own group: running it before letting
    /// the gate go saves the hand-off to a new leader. Empty when no write waits.
    pub fn take(&self) -> Vec<Pending<J, R>> {
        let group: Vec<Pending<J, R>> = {
            let mut queue = self.lock();
            let n = queue.len().min(self.writes_max);
            queue.drain(..n).collect()
        };
        self.metrics.queued(-(group.len() as i64));
        group
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending<J, R>>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<J, R> Drop for GroupQueue<J, R> {
    /// Writes still queued (their requests were cancelled) leave the gauge with the queue.
    fn drop(&mut self) {
        let left = self.queue.get_mut().map_or(0, |q| q.len());
        self.metrics.queued(-(left as i64));
    }
}

/// A write whose runner went away without answering (it panicked): the outcome is unknown.
fn lost() -> StoreError {
    StoreError::new(
        StoreErrorKind::Internal,
        "the group commit ended without answering this write",
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A runner that records each group's size and answers every write with its job doubled,
    /// after a pause so that writes pile up behind it.
    fn runner(
        sizes: Arc<Mutex<Vec<usize>>>,
    ) -> impl Fn(OwnedMutexGuard<()>, Vec<Pending<u32, u32>>) {
        move |gate, group| {
            let sizes = Arc::clone(&sizes);
            tokio::spawn(async move {
                sizes.lock().unwrap().push(group.len());
                tokio::time::sleep(Duration::from_millis(20)).await;
                for p in group {
                    let v = p.job * 2;
                    p.answer(Ok(v));
                }
                drop(gate);
            });
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_groups_and_each_gets_its_own_answer() {
        let queue = Arc::new(GroupQueue::new(
            Arc::new(tokio::sync::Mutex::new(())),
            8,
            GroupCommits::new(),
        ));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..40u32 {
            let (queue, sizes) = (Arc::clone(&queue), Arc::clone(&sizes));
            tasks.push(tokio::spawn(
                async move { queue.submit(i, runner(sizes)).await },
            ));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), 2 * i as u32);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40, "{sizes:?}");
        assert!(sizes.iter().all(|&n| (1..=8).contains(&n)), "{sizes:?}");
        assert!(
            sizes.iter().any(|&n| n > 1),
            "no group of more than one: {sizes:?}"
        );
    }

    #[tokio::test]
    async fn a_cancelled_leader_does_not_lose_the_others_answers() {
        let queue = Arc::new(GroupQueue::new(
            Arc::new(tokio::sync::Mutex::new(())),
            8,
            GroupCommits::new(),
        ));
        let started = Arc::new(AtomicUsize::new(0));
        let start = {
            let started = Arc::clone(&started);
            move |gate: OwnedMutexGuard<()>, group: Vec<Pending<u32, u32>>| {
                started.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    for p in group {
                        let v = p.job;
                        p.answer(Ok(v));
                    }
                    drop(gate);
                });
            }
        };
        // Hold the gate so both writes queue, then let one of them lead and cancel it.
        let held = Arc::clone(&queue.gate).lock_owned().await;
        let leader = {
            let (queue, start) = (Arc::clone(&queue), start.clone());
            tokio::spawn(async move { queue.submit(1, start).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let follower = {
            let (queue, start) = (Arc::clone(&queue), start.clone());
            tokio::spawn(async move { queue.submit(2, start).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        // The leader takes the gate first (FIFO) and starts the group of both; cancel it.
        while started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        leader.abort();
        assert_eq!(follower.await.unwrap().unwrap(), 2);
        assert_eq!(started.load(Ordering::SeqCst), 1, "one group carried both");
    }
}
