//! The change feed's core (`GET /$changes/{table}`, docs/extensions.md section 5), without axum
//! or SQL: positions, the per-table wake-up hub, the subscriber cap, and the pure decision of how
//! much a subscriber may read.
//!
//! # Why a subscriber is only a position
//!
//! Stamps are strictly increasing in commit order (ARCHITECTURE.md "commit-ordered stamps"), per
//! table and, on a per-user table, per owner. A reader that has seen stamp *t* has therefore seen
//! every row stamped ≤ *t* that will ever exist. So a subscriber keeps no log and no copy of any
//! change: it is a position (`updatedAt`, `id`) and, on a wake-up, it reads the rows past it with
//! the incremental pull's keyset query (owner-scoped in SQL on a per-user table) and emits one
//! event per row. Nothing is sent before it is committed (it is read from the database), and
//! nothing is skipped (the next read starts exactly after the last row sent).
//!
//! # Wake-ups
//!
//! A wake-up only says "table T may have changed"; losing one delays an event, never loses it.
//! * In this process, the write path calls [`FeedHub::changed`] after a write returned (after
//!   its commit); each table has a `tokio::sync::watch` generation counter that subscribers wait
//!   on. A subscriber marks the generation seen *before* it reads, so a commit that lands after
//!   its read started is either in the read or bumps the generation again.
//! * Across processes on PostgreSQL, [`FeedHub::changed`] also queues the table for
//!   announcing: one task per process sends the queued names with `pg_notify` (coalesced: at most
//!   one statement in flight), and one `LISTEN` connection per process turns notifications from
//!   other processes into local wake-ups ([`FeedHub::wake`]); after a lost listening connection
//!   every table is woken, since notifications may have been missed.
//! * Every subscriber also re-reads after `feed_poll_interval_ms` without a wake-up: the safety
//!   net for anything else (a request cancelled by its timeout after it committed, several
//!   processes sharing one SQLite file, which has no notifications).
//!
//! # Bounded work
//!
//! `subscribers_max` subscribers at most ([`FeedHub::admit`]); each has a bounded buffer of
//! `feed_subscriber_buffer_events` events plus one slot kept for the overflow notice
//! ([`read_plan`]); and at most as many subscriber reads run at once as the store has
//! connections ([`FeedHub::reads`]), so a write to a table with a thousand subscribers queues a
//! thousand small reads instead of starting them all.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{json, Value};
use tablesync_protocol::time::{parse_timestamp, Timestamp};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::AbortHandle;

use crate::store::Store;

/// A feed position: the (`updatedAt`, `id`) of the last row a subscriber has, exactly the
/// incremental pull's delta token. On the wire `<updatedAt>|<id>` (`2026-12-01T16:00:00.123Z|abc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The row's `updatedAt`.
    pub updated_at: Timestamp,
    /// The row's id as text (an integer-id table's id in decimal).
    pub id: String,
}

impl Position {
    /// Parse `<updatedAt>|<id>`: the timestamp in any form the protocol's parser accepts (the
    /// wire form is what the server sends), split at the first `|` (timestamps never hold one,
    /// ids may). The id's own rules are the table's and are checked by the caller.
    pub fn parse(text: &str) -> Result<Position, String> {
        let (time, id) = text.split_once('|').ok_or_else(|| {
            format!(
                "the position must be <updatedAt>|<id>; '{}' has no '|'",
                shown(text)
            )
        })?;
        let updated_at = parse_timestamp(time).map_err(|e| {
            format!(
                "the position's updatedAt '{}' is not a timestamp: {e}",
                shown(time)
            )
        })?;
        if id.is_empty() {
            return Err("the position's id is empty".to_owned());
        }
        Ok(Position {
            updated_at,
            id: id.to_owned(),
        })
    }

    /// The wire form, `<updatedAt>|<id>`: an event's `id:` field and what `Last-Event-ID` or
    /// `?after=` send back.
    pub fn to_wire(&self) -> String {
        format!("{}|{}", self.updated_at, self.id)
    }
}

/// At most 100 characters of a refused value, for an error message.
fn shown(text: &str) -> String {
    text.chars().take(100).collect()
}

/// One change event: a row's system fields as they are now.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The table's configured name.
    pub table: Arc<str>,
    /// The row's id as the table's JSON has it (a string, or a number on an integer-id table).
    pub id: Value,
    /// The row's `updatedAt`.
    pub updated_at: Timestamp,
    /// The row's `version`.
    pub version: String,
    /// Whether the row is a tombstone.
    pub deleted: bool,
}

impl Change {
    /// Where a subscriber stands after this event.
    pub fn position(&self) -> Position {
        let id = match &self.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Position {
            updated_at: self.updated_at,
            id,
        }
    }

    /// The event's `data:` JSON (one line: serde_json never writes a raw newline).
    pub fn data(&self) -> String {
        json!({
            "table": &*self.table,
            "id": self.id,
            "updatedAt": self.updated_at.to_string(),
            "version": self.version,
            "deleted": self.deleted,
        })
        .to_string()
    }
}

/// What a subscriber's buffer carries to its stream. Boxed change: an idle subscriber's
/// channel allocates a block of slots up front, so a slot is kept small.
#[derive(Debug)]
pub enum FeedMessage {
    /// A committed change past the subscriber's position.
    Change(Box<Change>),
    /// The subscriber fell behind by more than `feed_subscriber_buffer_events`: the stream
    /// ends after this.
    Overflow,
}

/// The next read of a subscriber whose buffer has `free` free slots (the overflow slot
/// included), with reads capped at `page_max` rows: ask for `limit` rows; if all `limit` come
/// back and `limit == free`, there are more pending changes than fit beside the overflow slot
/// and the subscriber is dropped ([`ReadPlan::outcome`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    /// Rows to ask for.
    pub limit: usize,
    free: usize,
}

/// What to do with the rows one [`ReadPlan`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Send them all; `more` when the page was full, so more rows may be waiting now.
    Send {
        /// Whether to read again at once.
        more: bool,
    },
    /// Send the first `send` rows, then the overflow notice, and end the stream.
    Overflow {
        /// Rows that fit.
        send: usize,
    },
}

/// Plan a read: see [`ReadPlan`]. `free` is at least 1 (the overflow slot is never used for
/// changes); `page_max` at least 1.
pub fn read_plan(free: usize, page_max: usize) -> ReadPlan {
    let free = free.max(1);
    ReadPlan {
        limit: free.min(page_max.max(1)),
        free,
    }
}

impl ReadPlan {
    /// The decision for `rows` rows returned.
    pub fn outcome(self, rows: usize) -> ReadOutcome {
        if rows >= self.free {
            ReadOutcome::Overflow {
                send: self.free - 1,
            }
        } else {
            ReadOutcome::Send {
                more: rows == self.limit,
            }
        }
    }
}

/// The feed's shared state in one process (owned by `App`).
pub struct FeedHub {
    /// Per table (lower-case configured name): a generation counter bumped on every wake-up.
    tables: HashMap<String, watch::Sender<u64>>,
    /// Subscribers now, in subscribers.
    subscribers: AtomicUsize,
    subscribers_max: usize,
    /// Set once at shutdown: every subscriber ends its stream, so a graceful shutdown can finish.
    closing: watch::Sender<bool>,
    /// Tables written here since the announcer last sent (PostgreSQL `pg_notify`).
    to_announce: Mutex<BTreeSet<String>>,
    announce_wake: Notify,
    reads: Semaphore,
}

impl FeedHub {
    /// A hub for these tables (configured names), admitting `subscribers_max` subscribers and
    /// running at most `reads_max` subscriber reads at once.
    pub fn new<'a>(
        tables: impl IntoIterator<Item = &'a str>,
        subscribers_max: usize,
        reads_max: usize,
    ) -> Self {
        FeedHub {
            tables: tables
                .into_iter()
                .map(|t| (t.to_ascii_lowercase(), watch::Sender::new(0)))
                .collect(),
            subscribers: AtomicUsize::new(0),
            subscribers_max,
            closing: watch::Sender::new(false),
            to_announce: Mutex::new(BTreeSet::new()),
            announce_wake: Notify::new(),
            reads: Semaphore::new(reads_max.max(1)),
        }
    }

    /// A write to `table` returned (committed): wake this process's subscribers of the table
    /// and queue the table for the other processes. Any case; unknown names are ignored.
    pub fn changed(&self, table: &str) {
        let key = table.to_ascii_lowercase();
        if let Some(generation) = self.tables.get(&key) {
            generation.send_modify(|g| *g = g.wrapping_add(1));
            self.to_announce
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key);
            self.announce_wake.notify_one();
        }
    }

    /// Wake this process's subscribers of `table` (another process wrote it), or of every
    /// table (`None`: notifications may have been lost). Nothing is announced.
    pub fn wake(&self, table: Option<&str>) {
        match table {
            Some(t) => {
                if let Some(generation) = self.tables.get(&t.to_ascii_lowercase()) {
                    generation.send_modify(|g| *g = g.wrapping_add(1));
                }
            }
            None => {
                for generation in self.tables.values() {
                    generation.send_modify(|g| *g = g.wrapping_add(1));
                }
            }
        }
    }

    /// The tables written since the last call, waiting until there is at least one (the
    /// announcer's loop).
    pub async fn next_announcement(&self) -> Vec<String> {
        loop {
            let taken: Vec<String> = std::mem::take(
                &mut *self
                    .to_announce
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            )
            .into_iter()
            .collect();
            if !taken.is_empty() {
                return taken;
            }
            self.announce_wake.notified().await;
        }
    }

    /// A place for one more subscriber of `table`, or None when `subscribers_max` are
    /// subscribed (or the feed is off, or the table unknown). The place is given back when the
    /// returned [`Subscription`] is dropped.
    pub fn admit(self: &Arc<Self>, table: &str) -> Option<Subscription> {
        let generation = self.tables.get(&table.to_ascii_lowercase())?.subscribe();
        let admitted = self
            .subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.subscribers_max).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| Subscription {
            hub: Arc::clone(self),
            generation,
            closing: self.closing.subscribe(),
        })
    }

    /// Subscribers now, in subscribers.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Acquire)
    }

    /// End every subscriber's stream (server shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The permits for subscriber reads (one per read in flight).
    pub fn reads(&self) -> &Semaphore {
        &self.reads
    }
}

/// One admitted subscriber's wake-ups; dropping it frees its place.
pub struct Subscription {
    hub: Arc<FeedHub>,
    /// The table's generation; `changed()` fires on a wake-up.
    pub generation: watch::Receiver<u64>,
    /// Becomes true at shutdown.
    pub closing: watch::Receiver<bool>,
}

impl Subscription {
    /// The hub (for its read permits).
    pub fn hub(&self) -> &FeedHub {
        &self.hub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Start the tasks that carry wake-ups between processes when the store can
/// ([`Store::notifies`]): the announcer (queued tables → [`Store::announce`], one statement in
/// flight, so a burst of writes costs one notification per table) and the listener
/// ([`Store::listen`] → [`FeedHub::wake`]). Their abort handles; none on SQLite.
pub fn spawn_tasks(store: &Arc<dyn Store>, hub: &Arc<FeedHub>) -> Vec<AbortHandle> {
    if !store.notifies() {
        return Vec::new();
    }
    let announcer = {
        let (store, hub) = (Arc::clone(store), Arc::clone(hub));
        tokio::spawn(async move {
            loop {
                let tables = hub.next_announcement().await;
                if let Err(e) = store.announce(&tables).await {
                    // The others' subscribers find the rows at their next periodic re-read.
                    tracing::warn!("change feed: could not tell other processes of a write: {e}");
                }
            }
        })
    };
    let listener = {
        let (store, hub) = (Arc::clone(store), Arc::clone(hub));
        tokio::spawn(async move { store.listen(Box::new(move |t| hub.wake(t))).await })
    };
    vec![announcer.abort_handle(), listener.abort_handle()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_bad_ones_are_refused() {
        let p = Position::parse("2026-12-01T16:00:00.123Z|a|b").unwrap();
        assert_eq!(p.id, "a|b");
        assert_eq!(p.to_wire(), "2026-12-01T16:00:00.123Z|a|b");
        // Another offset is normalised to the wire form.
        let p = Position::parse("2026-12-01T17:00:00.123+01:00|x").unwrap();
        assert_eq!(p.to_wire(), "2026-12-01T16:00:00.123Z|x");
        for bad in [
            "",
            "no-bar",
            "|x",
            "2026-13-01T00:00:00.000Z|x",
            "2026-12-01T16:00:00.123Z|",
        ] {
            assert!(Position::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_read_never_uses_the_overflow_slot_for_a_change() {
        // Room for 3 changes plus the overflow notice.
        let plan = read_plan(4, 1000);
        assert_eq!(plan.limit, 4);
        assert_eq!(plan.outcome(0), ReadOutcome::Send { more: false });
        assert_eq!(plan.outcome(3), ReadOutcome::Send { more: false });
        assert_eq!(plan.outcome(4), ReadOutcome::Overflow { send: 3 });
        // The page cap below the free room: a full page means "read again", not overflow.
        let plan = read_plan(5000, 100);
        assert_eq!(plan.limit, 100);
        assert_eq!(plan.outcome(100), ReadOutcome::Send { more: true });
        assert_eq!(plan.outcome(99), ReadOutcome::Send { more: false });
        // Only the overflow slot left: one pending change is already one too many.
        assert_eq!(
            read_plan(1, 1000).outcome(1),
            ReadOutcome::Overflow { send: 0 }
        );
        assert_eq!(
            read_plan(1, 1000).outcome(0),
            ReadOutcome::Send { more: false }
        );
    }

    #[tokio::test]
    async fn the_cap_counts_live_subscriptions_and_wakeups_reach_them() {
        let hub = Arc::new(FeedHub::new(["TodoItem"], 2, 1));
        let mut a = hub.admit("todoitem").unwrap();
        let b = hub.admit("TODOITEM").unwrap();
        assert!(hub.admit("TodoItem").is_none(), "over subscribers_max");
        assert!(hub.admit("Nope").is_none(), "unknown table");
        assert_eq!(hub.subscribers(), 2);
        drop(b);
        assert_eq!(hub.subscribers(), 1);
        assert!(hub.admit("TodoItem").is_some());
        assert_eq!(hub.subscribers(), 1, "the place was given back on drop");

        a.generation.borrow_and_update();
        hub.changed("todoITEM");
        assert!(a.generation.has_changed().unwrap());
        assert_eq!(hub.next_announcement().await, vec!["todoitem".to_owned()]);
        a.generation.borrow_and_update();
        hub.wake(None);
        assert!(a.generation.has_changed().unwrap());
        hub.close();
        assert!(*a.closing.borrow());
    }

    #[test]
    fn event_data_is_one_json_line() {
        let c = Change {
            table: Arc::from("TodoItem"),
            id: Value::String("a\nb".into()),
            updated_at: parse_timestamp("2026-12-01T16:00:00.123Z").unwrap(),
            version: "AAAAAAAAB9E=".into(),
            deleted: false,
        };
        assert_eq!(
            c.data(),
            r#"{"table":"TodoItem","id":"a\nb","updatedAt":"2026-12-01T16:00:00.123Z","version":"AAAAAAAAB9E=","deleted":false}"#
        );
        assert_eq!(c.position().to_wire(), "2026-12-01T16:00:00.123Z|a\nb");
    }
}
