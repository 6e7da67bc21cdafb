//! Live mode: keep the local store current while online, without the app calling pull.
//!
//! [`crate::SyncContext::live`] starts one task per table named in the [`LiveOptions`], plus a
//! pusher. A table's task first pulls its queries (the store is then current), then subscribes
//! to the table's change feed (`docs/extensions.md` section 5) from the store's delta-token
//! position and, on each burst of events, runs the incremental pull of the queries the events
//! lie beyond (one pull per burst: [`plan`] decides). The pulls are the SDK's ordinary
//! incremental pulls, so each page commits with its token, and every committed page is announced
//! on `SyncContext::changes` as [`crate::TableChanges`].
//!
//! * **Reconnects** after a dropped, refused or silent feed wait a backoff between
//!   `reconnect_backoff_min_ms` and `reconnect_backoff_max_ms`, then subscribe again from the
//!   store's position, so nothing committed meanwhile is missed. When the feed is back, queued
//!   writes are pushed at once.
//! * **Overflow** (the server dropped us for falling behind) or a feed subscribed without any
//!   position: every query pulls, then the feed is subscribed again from the new position.
//! * **Local writes** are pushed `push_delay_ms` after the last one (so a burst of writes goes in
//!   one push).
//! * **Servers without a feed** (the official ones: no `changes` in `$capabilities`, or a
//!   transport that cannot stream): each table pulls every `poll_interval_ms` instead.
//! * **Stopping** ([`LiveHandle::stop`], or dropping the handle) ends the tasks at their next
//!   await outside a sync action: a pull or push in flight finishes (its pages or outcomes are
//!   committed), so the store is as after any completed action.
//!
//! This module is the IO shell; the decisions are `plan` (pure) and the wire is `feed`.

pub(crate) mod feed;
pub(crate) mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::capabilities::ChangesCapability;
use crate::error::{Error, Result};
use crate::store::queue as q;

use super::pull::{check_query_id, parse_query, PullOptions};
use super::session::Session;
use feed::{FeedEvent, OpenError};
use plan::{Backoff, Position, Round, TablePlan};

/// What live mode keeps current and how it behaves. Every duration carries its unit.
///
/// ```
/// use tablesync_client::LiveOptions;
/// let options = LiveOptions::new()
///     .query("TodoItem", "allTodoItems", "")
///     .with_poll_interval_ms(2_000);
/// assert_eq!(options.reconnect_backoff_max_ms, 30_000);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LiveOptions {
    queries: Vec<LiveQuery>,
    /// The first wait before reconnecting a dropped or refused feed, in milliseconds (default
    /// 100); each further failure doubles it.
    pub reconnect_backoff_min_ms: u64,
    /// The longest wait before reconnecting, in milliseconds (default 30,000).
    pub reconnect_backoff_max_ms: u64,
    /// How often a table pulls when the server offers no feed, in milliseconds (default 5,000).
    pub poll_interval_ms: u64,
    /// How long after a local write it is pushed, in milliseconds (default 20): later writes
    /// within that time go in the same push.
    pub push_delay_ms: u64,
    /// How long a feed may stay silent before it is taken for dead and reconnected, in
    /// milliseconds. `None` (the default): three of the server's heartbeat intervals.
    pub idle_timeout_ms: Option<u64>,
    /// The largest event accepted on a feed, in bytes (default 65,536); a larger one ends the
    /// connection (a change event is a couple of hundred bytes).
    pub event_bytes_max: usize,
}

/// One incremental pull live mode runs: a table, its query id (delta token) and its query.
#[derive(Debug, Clone)]
struct LiveQuery {
    table: String,
    query_id: String,
    query: String,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            queries: Vec::new(),
            reconnect_backoff_min_ms: 100,
            reconnect_backoff_max_ms: 30_000,
            poll_interval_ms: 5_000,
            push_delay_ms: 20,
            idle_timeout_ms: None,
            event_bytes_max: 64 * 1024,
        }
    }
}

impl LiveOptions {
    /// Options with the defaults and no query yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the incremental pull `query_id` (a non-empty query id, as for
    /// [`crate::SyncTable::pull`]) of `table` with `query` (`$filter` only, `""` for all rows)
    /// current. Several queries may name one table; they share its feed.
    pub fn query(mut self, table: &str, query_id: &str, query: &str) -> Self {
        self.queries.push(LiveQuery {
            table: table.to_string(),
            query_id: query_id.to_string(),
            query: query.to_string(),
        });
        self
    }

    /// Sets [`LiveOptions::reconnect_backoff_min_ms`] and [`LiveOptions::reconnect_backoff_max_ms`].
    pub fn with_reconnect_backoff_ms(mut self, min_ms: u64, max_ms: u64) -> Self {
        self.reconnect_backoff_min_ms = min_ms;
        self.reconnect_backoff_max_ms = max_ms;
        self
    }

    /// Sets [`LiveOptions::poll_interval_ms`].
    pub fn with_poll_interval_ms(mut self, ms: u64) -> Self {
        self.poll_interval_ms = ms;
        self
    }

    /// Sets [`LiveOptions::push_delay_ms`].
    pub fn with_push_delay_ms(mut self, ms: u64) -> Self {
        self.push_delay_ms = ms;
        self
    }

    /// Sets [`LiveOptions::idle_timeout_ms`].
    pub fn with_idle_timeout_ms(mut self, ms: u64) -> Self {
        self.idle_timeout_ms = Some(ms);
        self
    }

    /// Sets [`LiveOptions::event_bytes_max`].
    pub fn with_event_bytes_max(mut self, bytes: usize) -> Self {
        self.event_bytes_max = bytes;
        self
    }

    /// Checks the options against the store's tables (pure apart from the lookup) and groups
    /// the queries by table (their defined names).
    fn tables(&self, session: &Session) -> Result<BTreeMap<String, Vec<LiveQuery>>> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.queries.is_empty() {
            return bad("live mode needs at least one query (LiveOptions::query)".into());
        }
        if self.reconnect_backoff_min_ms == 0
            || self.reconnect_backoff_min_ms > self.reconnect_backoff_max_ms
        {
            return bad(format!(
                "reconnect_backoff_min_ms ({}) must be at least 1 ms and at most \
                 reconnect_backoff_max_ms ({} ms)",
                self.reconnect_backoff_min_ms, self.reconnect_backoff_max_ms
            ));
        }
        if self.poll_interval_ms == 0 {
            return bad("poll_interval_ms must be at least 1 ms".into());
        }
        if self.idle_timeout_ms == Some(0) {
            return bad("idle_timeout_ms must be at least 1 ms".into());
        }
        if self.event_bytes_max == 0 {
            return bad("event_bytes_max must be at least 1 byte".into());
        }
        let mut tables: BTreeMap<String, Vec<LiveQuery>> = BTreeMap::new();
        for query in &self.queries {
            let name = session.store.table(&query.table)?.name().to_string();
            if check_query_id(Some(&query.query_id))?.is_none() {
                return bad(format!(
                    "live mode pulls incrementally: the query of table {name:?} needs a \
                     non-empty query id"
                ));
            }
            parse_query(&query.query)?;
            let list = tables.entry(name.clone()).or_default();
            if list.iter().any(|q| q.query_id == query.query_id) {
                return bad(format!(
                    "query id {:?} is given twice for table {name:?}",
                    query.query_id
                ));
            }
            list.push(LiveQuery {
                table: name,
                ..query.clone()
            });
        }
        Ok(tables)
    }
}

/// What one table's live task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedState {
    /// Pulling or subscribing (the first time, or after an overflow).
    Connecting,
    /// The feed is open: changes arrive as they are committed.
    Streaming,
    /// The server offers no feed: pulling every `poll_interval_ms`.
    Polling,
    /// The feed or a pull failed; waiting the backoff before trying again.
    Reconnecting,
    /// Live mode ended.
    Stopped,
}

/// The state of every table of a live handle; see [`LiveHandle::status`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LiveStatus {
    /// Each table's state, by its defined name.
    pub tables: BTreeMap<String, FeedState>,
}

impl LiveStatus {
    /// Whether every table is in `state`.
    pub fn all(&self, state: FeedState) -> bool {
        !self.tables.is_empty() && self.tables.values().all(|s| *s == state)
    }
}

/// A running live mode (see `SyncContext::live`). Dropping it stops live mode as
/// [`LiveHandle::stop`] does, without waiting.
#[derive(Debug)]
pub struct LiveHandle {
    stop: watch::Sender<bool>,
    status: watch::Receiver<LiveStatus>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LiveHandle {
    /// Each table's state, updated as feeds open, drop and reconnect.
    pub fn status(&self) -> watch::Receiver<LiveStatus> {
        self.status.clone()
    }

    /// Stops live mode and waits until it stopped: a pull or push in flight finishes first (so
    /// the store is as after a completed action), feeds are closed.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LiveHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Starts live mode on `session` (see `SyncContext::live`).
pub(crate) fn start(session: Arc<Session>, options: LiveOptions) -> Result<LiveHandle> {
    let tables = options.tables(&session)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::InvalidConfig("live mode must be started inside a tokio runtime".into())
    })?;
    let (stop, stopped) = watch::channel(false);
    let initial = LiveStatus {
        tables: tables
            .keys()
            .map(|t| (t.clone(), FeedState::Connecting))
            .collect(),
    };
    let (status_tx, status) = watch::channel(initial);
    let live = Live {
        session,
        options: Arc::new(options),
        status: Arc::new(status_tx),
    };
    let task = runtime.spawn(live.run(tables, stopped));
    Ok(LiveHandle {
        stop,
        status,
        task: Some(task),
    })
}

/// What every task of one live mode shares.
#[derive(Clone)]
struct Live {
    session: Arc<Session>,
    options: Arc<LiveOptions>,
    status: Arc<watch::Sender<LiveStatus>>,
}

/// Waits until live mode is asked to stop (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn is_stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Waits `ms`; `true` when stopped meanwhile.
async fn pause(ms: u64, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopped(stop) => true,
        _ = tokio::time::sleep(Duration::from_millis(ms)) => is_stopped(stop),
    }
}

/// A random jitter in 0..=1 for the backoff (no statistical quality needed).
fn random() -> f64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 11) as f64 / (1u64 << 53) as f64
}

/// What one round of pulls did: each query's index and its token afterwards, or the error.
type RoundResult = Vec<(usize, Result<Option<Position>>)>;

impl Live {
    fn set_state(&self, table: &str, state: FeedState) {
        self.status
            .send_if_modified(|s| s.tables.insert(table.to_string(), state) != Some(state));
    }

    async fn run(self, tables: BTreeMap<String, Vec<LiveQuery>>, stop: watch::Receiver<bool>) {
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(self.clone().pusher(stop.clone())));
        for (table, queries) in tables {
            tasks.push(tokio::spawn(self.clone().table(
                table,
                queries,
                stop.clone(),
            )));
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Pushes `push_delay_ms` after local writes (each burst once).
    async fn pusher(self, mut stop: watch::Receiver<bool>) {
        let mut writes = self.session.local_writes();
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                changed = writes.changed() => if changed.is_err() { return },
            }
            if pause(self.options.push_delay_ms, &mut stop).await {
                return;
            }
            writes.borrow_and_update();
            // A failure is in the status; a network failure is retried when the feed is back.
            let _ = self.push_pending().await;
        }
    }

    /// Pushes the queue when it is not empty (one sync action).
    async fn push_pending(&self) -> Result<()> {
        let session = &self.session;
        let _guard = session.sync_lock.lock().await;
        let pending = session.store.run(|c, _| q::pending_count(c, None)).await?;
        if pending == 0 {
            return Ok(());
        }
        session.tracked(true, super::push::push_all(session)).await
    }

    /// The saved token of a query.
    async fn token(&self, query: &LiveQuery) -> Result<Option<Position>> {
        let (t, qid) = (query.table.clone(), query.query_id.clone());
        let token = self
            .session
            .store
            .run(move |c, _| q::load_token(c, &t, &qid))
            .await?;
        Ok(token.map(|t| Position {
            updated_at: t.updated_at,
            id: t.id,
        }))
    }

    /// One incremental pull (one sync action), and its token afterwards.
    async fn pull(&self, query: &LiveQuery) -> Result<Option<Position>> {
        {
            let session = &self.session;
            let _guard = session.sync_lock.lock().await;
            session
                .tracked(
                    true,
                    super::pull::pull(
                        session,
                        &query.table,
                        Some(&query.query_id),
                        &query.query,
                        PullOptions::default(),
                    ),
                )
                .await?;
        }
        self.token(query).await
    }

    /// Pulls the round's queries, one after another.
    async fn round(self, queries: Arc<Vec<LiveQuery>>, round: Round) -> RoundResult {
        let mut results = Vec::new();
        for &i in &round.queries {
            results.push((i, self.pull(&queries[i]).await));
        }
        results
    }

    /// Records a round's results in the plan; `false` when a pull failed.
    fn record(plan: &mut TablePlan, round: &Round, results: RoundResult) -> bool {
        let mut ok = true;
        for (i, result) in results {
            match result {
                Ok(token) => plan.pulled(round, i, token),
                Err(e) => {
                    tracing::debug!(error = %e, "live pull failed");
                    ok = false;
                }
            }
        }
        if !ok {
            plan.failed(round);
        }
        ok
    }

    /// One table's task: feed, or polling when the server offers none.
    async fn table(self, table: String, queries: Vec<LiveQuery>, mut stop: watch::Receiver<bool>) {
        let queries = Arc::new(queries);
        let mut backoff = Backoff::new(
            self.options.reconnect_backoff_min_ms,
            self.options.reconnect_backoff_max_ms,
        );
        // What the server offers, asked until it answers.
        let changes = loop {
            match self.session.known_capabilities().await {
                Ok(caps) => break caps.changes,
                Err(e) => {
                    tracing::debug!(table, error = %e, "live mode cannot reach the server");
                    self.set_state(&table, FeedState::Reconnecting);
                    if pause(backoff.next_ms(random()), &mut stop).await {
                        self.set_state(&table, FeedState::Stopped);
                        return;
                    }
                }
            }
        };
        let mut tokens = Vec::new();
        for query in queries.iter() {
            tokens.push(self.token(query).await.unwrap_or(None));
        }
        let mut plan = TablePlan::new(tokens);
        if let Some(changes) = changes {
            self.feed(&table, &queries, &changes, &mut plan, backoff, &mut stop)
                .await;
        }
        if !is_stopped(&stop) {
            self.poll(&table, &queries, &mut plan, &mut stop).await;
        }
        self.set_state(&table, FeedState::Stopped);
    }

    /// Pulls every query each `poll_interval_ms` until stopped.
    async fn poll(
        &self,
        table: &str,
        queries: &Arc<Vec<LiveQuery>>,
        plan: &mut TablePlan,
        stop: &mut watch::Receiver<bool>,
    ) {
        self.set_state(table, FeedState::Polling);
        loop {
            plan.force();
            let round = plan.begin();
            let results = self.clone().round(queries.clone(), round.clone()).await;
            Self::record(plan, &round, results);
            if pause(self.options.poll_interval_ms, stop).await {
                return;
            }
        }
    }

    /// Runs the table's feed until stopped; returns early (to poll) when the transport cannot
    /// stream.
    async fn feed(
        &self,
        table: &str,
        queries: &Arc<Vec<LiveQuery>>,
        changes: &ChangesCapability,
        plan: &mut TablePlan,
        mut backoff: Backoff,
        stop: &mut watch::Receiver<bool>,
    ) {
        let idle = Duration::from_millis(
            self.options
                .idle_timeout_ms
                .unwrap_or(changes.heartbeat_interval_ms.saturating_mul(3)),
        );
        loop {
            if is_stopped(stop) {
                return;
            }
            // What is due before subscribing: the first sync, and after an overflow.
            if plan.has_due() {
                self.set_state(table, FeedState::Connecting);
                let round = plan.begin();
                let results = self.clone().round(queries.clone(), round.clone()).await;
                if !Self::record(plan, &round, results) {
                    self.set_state(table, FeedState::Reconnecting);
                    if pause(backoff.next_ms(random()), stop).await {
                        return;
                    }
                    continue;
                }
            }
            let position = plan.position();
            let opened = feed::open(
                &self.session.client,
                changes,
                table,
                position.as_ref(),
                idle,
                self.options.event_bytes_max,
            )
            .await;
            let mut feed = match opened {
                Ok(feed) => feed,
                Err(OpenError::Unsupported) => return,
                Err(e) => {
                    tracing::debug!(table, error = %e, "live feed not opened");
                    self.set_state(table, FeedState::Reconnecting);
                    if pause(backoff.next_ms(random()), stop).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            self.set_state(table, FeedState::Streaming);
            if position.is_none() {
                // Subscribed from the feed's end: rows committed since the last pull are
                // caught by one more pull.
                plan.force();
            }
            // The connection is back: send what was written meanwhile.
            let _ = self.push_pending().await;
            let ended = self
                .stream(table, queries, plan, &mut feed, &mut backoff, stop)
                .await;
            match ended {
                Ended::Stopped => return,
                Ended::Overflow => {
                    tracing::debug!(table, "live feed overflowed: pulling, then resubscribing");
                }
                Ended::Dropped(reason) => {
                    tracing::debug!(table, reason, "live feed ended: reconnecting");
                    self.set_state(table, FeedState::Reconnecting);
                    if pause(backoff.next_ms(random()), stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Reads an open feed, running a round of pulls whenever queries are due (at most one round
    /// at a time, started once the events already received are read), until the feed ends or
    /// live mode stops. A round in flight is finished before returning.
    async fn stream(
        &self,
        table: &str,
        queries: &Arc<Vec<LiveQuery>>,
        plan: &mut TablePlan,
        feed: &mut feed::Feed,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        type Running = std::pin::Pin<Box<dyn std::future::Future<Output = RoundResult> + Send>>;
        let mut running: Option<(Round, Running)> = None;
        // After a failed round: when the next may start.
        let mut retry_at: Option<tokio::time::Instant> = None;
        let ended = loop {
            let can_start = running.is_none() && plan.has_due();
            tokio::select! {
                biased;
                _ = stopped(stop) => break Ended::Stopped,
                event = feed.next() => match event {
                    Ok(FeedEvent::Change(p)) => plan.saw(p),
                    Ok(FeedEvent::Other) => {}
                    Ok(FeedEvent::Overflow) => {
                        plan.force();
                        break Ended::Overflow;
                    }
                    Err(reason) => break Ended::Dropped(reason),
                },
                results = async { running.as_mut().map(|(_, f)| f).expect("guarded").await },
                    if running.is_some() =>
                {
                    let (round, _) = running.take().expect("guarded");
                    if !Self::record(plan, &round, results) {
                        let wait = Duration::from_millis(backoff.next_ms(random()));
                        retry_at = Some(tokio::time::Instant::now() + wait);
                    }
                },
                _ = async {
                    if let Some(at) = retry_at {
                        tokio::time::sleep_until(at).await;
                    }
                }, if can_start => {
                    retry_at = None;
                    let round = plan.begin();
                    let future = Box::pin(self.clone().round(queries.clone(), round.clone()));
                    running = Some((round, future));
                },
            }
        };
        if let Some((round, future)) = running.take() {
            let results = future.await;
            Self::record(plan, &round, results);
        }
        let _ = table;
        ended
    }
}

/// Why a feed stopped being read.
enum Ended {
    Stopped,
    Overflow,
    Dropped(String),
}
