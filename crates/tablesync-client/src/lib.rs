//! tablesync-client: the offline sync SDK for Mobile Apps table backends (ZUMO-API-VERSION 2.0.0).
//!
//! An app keeps a local SQLite copy of its tables, reads and writes it offline, and syncs when it
//! can: [`SyncContext::push`] sends the queued local writes, [`SyncTable::pull`] downloads server
//! changes, [`SyncTable::purge`] forgets local rows. It is modelled on the reference .NET client
//! (`MobileServiceClient` → [`Client`], `MobileServiceSQLiteStore` → [`LocalStore`],
//! `SyncContext` → [`SyncContext`], `IMobileServiceSyncTable` → [`SyncTable`] /
//! [`TypedSyncTable`]) with three deliberate differences: a local write and its queued operation
//! commit in one SQLite transaction; pull pages on (`updatedAt`, `id`) so it never re-downloads
//! boundary rows nor loops on rows sharing a timestamp; a forced purge may carry a filter.
//!
//! # Example (the tutorial's `InitLocalStoreAsync` and `SyncAsync`)
//!
//! Run as a doctest against an in-process server on a temporary database (the hidden lines);
//! an app passes its backend's URL and a store path of its own.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tablesync_client::{Client, ColumnType, Error, LocalStore, SyncContext, TableDefinition};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct TodoItem {
//!     #[serde(skip_serializing_if = "Option::is_none")]
//!     id: Option<String>,
//!     text: String,
//!     complete: bool,
//! }
//!
//! # async fn demo(url: &str, local: &std::path::Path) -> Result<(), Error> {
//! // InitLocalStoreAsync: define the local tables, then initialise the sync context.
//! let client = Client::new(url)?; // e.g. "https://myapp.example.com/"
//! let mut store = LocalStore::new(local); // e.g. "localstore.db"
//! store.define_table(
//!     TableDefinition::new("TodoItem")
//!         .column("text", ColumnType::String)
//!         .column("complete", ColumnType::Boolean),
//! )?;
//! let ctx = SyncContext::initialize(client, store).await?;
//! let todos = ctx.typed_table::<TodoItem>("TodoItem")?;
//!
//! // Work offline: writes go to the local store and the operation queue.
//! todos.insert(&TodoItem { id: None, text: "Buy milk".into(), complete: false }).await?;
//!
//! // SyncAsync: push local changes, then pull server changes incrementally.
//! match ctx.push().await {
//!     Ok(()) => {}
//!     Err(Error::PushFailed { status, errors, .. }) => {
//!         // Resolve conflicts: here, simply take the server's copy.
//!         let resolver = ctx.resolver();
//!         for mut e in errors {
//!             if let Some(server) = e.result.clone() {
//!                 resolver.cancel_and_update_item(&mut e, server).await?;
//!             }
//!         }
//!         eprintln!("push ended with {status}");
//!     }
//!     Err(other) => return Err(other),
//! }
//! todos.pull(Some("allTodoItems"), "").await?;
//! let open = todos.read("$filter=complete eq false&$orderby=text").await?;
//! println!("{} open items", open.len());
//! # assert_eq!(open.len(), 1);
//! # assert_eq!(ctx.pending_operations().await?, 0);
//! # Ok(())
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let config = tablesync_server::Config::default_todo()
//! #     .with_database(dir.path().join("server.db").display().to_string());
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let url = format!("http://{}/", listener.local_addr()?);
//! # let server = tablesync_server::Server::open(config).await?;
//! # tokio::spawn(server.run(listener, std::future::pending::<()>()));
//! # demo(&url, &dir.path().join("localstore.db")).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! * `client` — [`Client`]: base URL, protocol headers, request building.
//! * `capabilities` — [`Capabilities`]: what a server offers beyond the protocol (`docs/extensions.md`).
//! * `auth` — the credentials layer: the token (`X-ZUMO-AUTH`), one [`TokenRefresher`] call
//!   and retry on 401; [`token_subject`] for naming things after the user.
//! * `transport` — the [`Transport`] seam (reqwest in production, fault injection in tests).
//! * `store/` — rusqlite: schema and migrations, rows, queue/error/token tables. The only SQL,
//!   reached from async code through one `spawn_blocking` seam.
//! * `queue` — [`Operation`]s and the pure [`internals::collapse`] rules.
//! * `operation_error` — [`OperationError`], plain data.
//! * `table` — [`SyncTable`] / [`TypedSyncTable`]: local CRUD and queries.
//! * `transaction` — [`LocalTransaction`]: several writes that commit (and push) together.
//! * `sync/` — push (batched or one request per operation; [`internals::classify`] and the planner are
//!   pure), pull (keyset paging), purge, the session a context and its tables share, the
//!   monitor ([`SyncStatus`], [`SyncProgress`], cancellation: `SyncContext::status`,
//!   `progress`, `cancel_sync`), [`TableChanges`] notifications (`SyncContext::changes`), and live
//!   mode ([`SyncContext::live`] → [`LiveHandle`]: the change feed, or polling). The only network
//!   code.
//! * `conflict` — [`Resolver`], [`SyncHandler`], [`ClientWins`], [`ServerWins`].
//! * `error` — [`Error`].
//!
//! [`internals`] re-exports the pure functions tests check on their own; it is not a stable API.
//!
//! The modules form no import cycle (ARCHITECTURE.md lists their layers; a test checks it).

mod auth;
mod capabilities;
mod client;
mod conflict;
mod context;
mod error;
mod operation_error;
mod queue;
mod store;
mod sync;
mod table;
mod transaction;
mod transport;

pub use auth::{token_subject, unverified_claims, TokenRefresher, AUTH_HEADER};
pub use capabilities::{BatchCapability, Capabilities, ChangesCapability, IdempotencyCapability};
pub use client::{Client, ClientOptions, ZUMO_API_VERSION};
pub use conflict::{
    ClientWins, DefaultHandler, PushCompletionResult, Resolver, ServerWins, SyncHandler,
};
pub use context::SyncContext;
pub use error::{Error, PushStatus, Result};
pub use operation_error::OperationError;
pub use queue::{OpKind, OpState, Operation};
pub use store::{
    Column, LocalStore, TableDefinition, PAGE_CACHE_BYTES_MAX_DEFAULT, STORE_SCHEMA_VERSION,
};
pub use sync::live::{FeedState, LiveHandle, LiveOptions, LiveStatus};
pub use sync::monitor::{
    SyncProgress, SyncStatus, TableChanges, CHANGES_CHANNEL_NOTIFICATIONS_MAX,
};
pub use sync::pull::{PullOptions, PullSummary, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
pub use sync::push::classify::Outcome;
pub use sync::push::operation::TableOperation;
pub use table::{Misfit, QueryResult, SyncTable, TypedSyncTable};
pub use tablesync_protocol::odata::sql::ColumnType;
pub use transaction::LocalTransaction;
pub use transport::{
    BoxFuture, ByteStream, HttpRequest, HttpResponse, HttpTransport, Method, StreamingResponse,
    Transport, TransportError,
};

pub mod internals {
    //! The pure functions behind the sync engine, public so that tests (ours and an app's) can
    //! check the rules on their own: how a queued operation combines with a new one, how a push
    //! answer is classified, how a pull page and its next link are read, how `$capabilities` is
    //! parsed. An app needs none of them to sync, and they may change in any release (they are
    //! not part of the crate's stable API, unlike everything at the crate root).

    pub use crate::capabilities::parse_capabilities;
    pub use crate::queue::{
        collapse, Decision, MSG_DELETE_QUEUED, MSG_INCONSISTENT, MSG_INSERT_QUEUED,
        MSG_UPDATE_QUEUED,
    };
    pub use crate::sync::pull::{next_link, parse_page};
    pub use crate::sync::push::classify::{classify, parse_item};
}

#[cfg(test)]
mod module_graph {
    //! The crate's modules form no import cycle (the team rule; ARCHITECTURE.md lists the
    //! layers). Read from the sources: every `crate::`, `self::` and `super::` path outside test
    //! modules and comments is an edge to the deepest module it names; a cycle fails the test
    //! and prints it.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Module path (`sync::push::plan`, `` for the root) of a source file under `src/`.
    fn module_of(rel: &Path) -> String {
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
            parts.pop();
        }
        parts.join("::")
    }

    fn sources(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                // Test modules sit at the end of each file, and may use anything.
                let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or_default();
                let code: String = code
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.insert(module_of(path.strip_prefix(root).unwrap()), code);
            }
        }
    }

    /// The path segments following `at` in `code` (`a::b::c`), up to the first non-identifier.
    fn segments(code: &str, at: usize) -> Vec<String> {
        let rest = &code[at..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        rest[..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The deepest known module named by `base` followed by `segs`.
    fn resolve(modules: &BTreeSet<String>, base: &[String], segs: &[String]) -> String {
        let mut best = base.join("::");
        let mut path = base.to_vec();
        for s in segs {
            path.push(s.clone());
            let name = path.join("::");
            if modules.contains(&name) {
                best = name;
            } else {
                break;
            }
        }
        best
    }

    #[test]
    fn the_modules_form_no_cycle() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut code = BTreeMap::new();
        sources(&root, &root, &mut code);
        let modules: BTreeSet<String> = code.keys().cloned().collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, text) in &code {
            let own: Vec<String> = module
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let targets = edges.entry(module.clone()).or_default();
            for (at, _) in text.match_indices("crate::") {
                let to = resolve(&modules, &[], &segments(text, at + "crate::".len()));
                targets.insert(to);
            }
            for (at, _) in text.match_indices("self::") {
                targets.insert(resolve(
                    &modules,
                    &own,
                    &segments(text, at + "self::".len()),
                ));
            }
            for (at, _) in text.match_indices("super::") {
                // `super::super::x` is handled by resolving each `super` against the parent.
                if text[..at].ends_with("super::") {
                    continue;
                }
                let segs = segments(text, at);
                let ups = segs.iter().take_while(|s| *s == "super").count();
                let parent = &own[..own.len().saturating_sub(ups)];
                targets.insert(resolve(&modules, parent, &segs[ups..]));
            }
            targets.remove(module);
        }
        // The root only re-exports; nothing may depend on it (that would close a cycle).
        let root_users: Vec<&String> = edges
            .iter()
            .filter(|(m, t)| !m.is_empty() && t.contains(""))
            .map(|(m, _)| m)
            .collect();
        assert!(
            root_users.is_empty(),
            "modules using the crate root (name the defining module instead): {root_users:?}"
        );
        // Depth-first search for a back edge.
        fn visit(
            m: &str,
            edges: &BTreeMap<String, BTreeSet<String>>,
            state: &mut BTreeMap<String, u8>,
            stack: &mut Vec<String>,
        ) {
            state.insert(m.to_string(), 1);
            stack.push(m.to_string());
            for n in edges.get(m).into_iter().flatten() {
                match state.get(n.as_str()).copied().unwrap_or(0) {
                    0 => visit(n, edges, state, stack),
                    1 => {
                        let from = stack.iter().position(|s| s == n).unwrap_or(0);
                        panic!("import cycle: {} -> {n}", stack[from..].join(" -> "));
                    }
                    _ => {}
                }
            }
            stack.pop();
            state.insert(m.to_string(), 2);
        }
        let mut state = BTreeMap::new();
        for m in edges.keys() {
            if state.get(m).copied().unwrap_or(0) == 0 {
                visit(m, &edges, &mut state, &mut Vec::new());
            }
        }
        // The check sees the edges it must: a sample the architecture relies on.
        for (from, to) in [
            ("conflict", "sync::push::operation"),
            ("sync::push", "conflict"),
            ("error", "operation_error"),
            ("store::queue", "operation_error"),
            ("table", "sync::session"),
            ("context", "table"),
            ("sync::push", "sync::push::plan"),
        ] {
            assert!(
                edges[from].contains(to),
                "{from} -> {to} not seen: {:?}",
                edges[from]
            );
        }
    }
}
