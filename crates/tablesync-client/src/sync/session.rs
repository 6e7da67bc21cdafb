//! What one [`crate::SyncContext`] and every table of it share: the client, the store, the
//! handler, the one-sync-action-at-a-time lock, and what the server offers.
//!
//! Its own module (below `context` and `table`, which both hold it) so that neither of those
//! needs the other, and so that push and pull can ask for the server's extensions without
//! knowing the context.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::capabilities::{BatchCapability, Capabilities};
use crate::client::Client;
use crate::conflict::SyncHandler;
use crate::error::{Error, PushStatus};
use crate::store::queue as q;
use crate::store::Store;
use crate::transport::TransportError;

use super::monitor::Monitor;

/// The shared state of a sync context.
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) store: Store,
    pub(crate) handler: Arc<dyn SyncHandler>,
    /// Push, pull and purge run one at a time (as in the reference): a pull must not interleave
    /// with a push that is rewriting the same rows. A tokio mutex, because it is held across the
    /// network awaits of the action.
    pub(crate) sync_lock: tokio::sync::Mutex<()>,
    /// What the server offers beyond the protocol, asked once per context
    /// ([`Session::capabilities`]).
    capabilities: tokio::sync::OnceCell<Capabilities>,
    /// Set when the server refused a whole batch (a 4xx other than 401): this context then
    /// pushes one request per operation, which any server takes.
    batch_refused: AtomicBool,
    /// Status, progress and cancellation of the running action (`sync::monitor`).
    pub(crate) monitor: Monitor,
    /// Counts local writes, so live mode's pusher wakes after each (`sync::live`). A watch
    /// channel: every live handle sees every write, and a write while none waits is not lost.
    local_writes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(client: Client, store: Store, handler: Arc<dyn SyncHandler>) -> Self {
        Session {
            client,
            store,
            handler,
            sync_lock: tokio::sync::Mutex::new(()),
            capabilities: tokio::sync::OnceCell::new(),
            batch_refused: AtomicBool::new(false),
            monitor: Monitor::default(),
            local_writes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// What the server offers (`docs/extensions.md` section 1): asked with one
    /// `GET {base}/$capabilities` the first time it is needed and remembered for the life of
    /// the session. A network failure gives the default and is not remembered.
    pub(crate) async fn capabilities(&self) -> Capabilities {
        self.known_capabilities().await.unwrap_or_default()
    }

    /// [`Session::capabilities`], but a network failure is returned (and not remembered), for
    /// callers that should not go on without an answer (a pull choosing its page size).
    pub(crate) async fn known_capabilities(&self) -> Result<Capabilities, TransportError> {
        if let Some(known) = self.capabilities.get() {
            return Ok(known.clone());
        }
        let found = super::discover(&self.client).await?;
        Ok(self
            .capabilities
            .get_or_init(|| async { found })
            .await
            .clone())
    }

    /// What the server offers, if this session has asked already (no request).
    pub(crate) fn capabilities_if_known(&self) -> Option<Capabilities> {
        self.capabilities.get().cloned()
    }

    /// The batch endpoint a push uses, if any: the server must offer one, the client must not
    /// have switched batching off (`ClientOptions::batch_push`), the handler must allow it
    /// ([`SyncHandler::sends_in_batches`]) and the server must not have refused a batch in this
    /// session. Asks the server (once per session) only when all else allows batching.
    pub(crate) async fn batch_for_push(&self) -> Option<BatchCapability> {
        if !self.client.batch_push()
            || !self.handler.sends_in_batches()
            || self.batch_refused.load(Ordering::SeqCst)
        {
            return None;
        }
        self.capabilities().await.batch
    }

    /// Runs a pull or push (the caller holds the sync lock) as the monitor's running action:
    /// syncing while it runs, then its success or error, whether the server answered
    /// (`contacts`: whether success means a request went out), the queue length; and the
    /// server recorded as the store's when it answered a completed walk or pull.
    pub(crate) async fn tracked<T>(
        &self,
        contacts: bool,
        action: impl std::future::Future<Output = crate::error::Result<T>>,
    ) -> crate::error::Result<T> {
        let result = {
            let _running = self.monitor.begin();
            action.await
        };
        let online = match &result {
            Ok(_) => contacts.then_some(true),
            Err(Error::Network(_)) => Some(false),
            Err(Error::PushFailed { status, .. }) => match status {
                PushStatus::CancelledByNetworkError => Some(false),
                PushStatus::CancelledBySyncStoreError => None,
                _ => Some(true),
            },
            Err(Error::Http { .. } | Error::Unauthorized | Error::InvalidResponse(_)) => Some(true),
            Err(_) => None,
        };
        let reached = match &result {
            Ok(_) => contacts,
            Err(Error::PushFailed { status, .. }) => *status == PushStatus::Complete,
            Err(_) => false,
        };
        self.monitor
            .finished(result.as_ref().err().map(ToString::to_string), online);
        if reached {
            self.remember_server().await?;
        }
        self.count_pending().await;
        result
    }

    /// Publishes the queue length (one count) to the status; a failed count is left out, the
    /// action's own result says what went wrong.
    pub(crate) async fn count_pending(&self) {
        if let Ok(n) = self.store.run(|c, _| q::pending_count(c, None)).await {
            self.monitor.pending(n);
        }
    }

    /// After a local write: the queue length changed; counted only while someone watches.
    /// Live mode is told, so it pushes the write.
    pub(crate) async fn local_write_done(&self) {
        self.local_writes.send_modify(|n| *n = n.wrapping_add(1));
        if self.monitor.watched() {
            self.count_pending().await;
        }
    }

    /// A receiver that changes after each local write.
    pub(crate) fn local_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.local_writes.subscribe()
    }

    /// Records this session's server as the one the store last synced with
    /// (`LocalStore::last_server_url`).
    pub(crate) async fn remember_server(&self) -> crate::error::Result<()> {
        let url = self.client.base_url().to_string();
        self.store
            .run(move |c, _| crate::store::meta::record_server_url(c, &url))
            .await
    }

    /// Remembers that the server refused a batch as a whole (see [`Session::batch_for_push`]).
    pub(crate) fn refuse_batches(&self) {
        self.batch_refused.store(true, Ordering::SeqCst);
    }
}
