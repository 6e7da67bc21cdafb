//! Purge: remove local rows (nothing is sent) and reset delta tokens.
//!
//! Differences from the reference (protocol.md 6.10 and 8.5), on purpose:
//! * a *forced* purge may carry a filter (the reference refuses, net-client #357); it then drops
//!   only the queued operations (and their errors) of the rows it removes. Operations of rows that
//!   are no longer in the local table (queued deletes) are not matched by a filter and stay;
//! * a purge that removes rows resets **every** delta token of the table, not only the one of
//!   its query id: any query's token may cover the removed rows, and a kept token would keep
//!   them away from every later incremental pull of that query (the pitfall of 8.5). The next
//!   pulls re-download from the start, which keyset paging makes cheap. A purge that removes
//!   nothing resets only its query id's token.

use tablesync_protocol::odata::sql::{lower_filter, Dialect};

use super::pull::parse_query;
use super::{sql_params, LocalSchema};
use crate::error::{Error, Result};
use crate::store::{queue as q, Store};

/// Purges `table`; returns the number of local rows removed. The caller holds the sync lock.
pub(crate) async fn purge(
    store: &Store,
    table: &str,
    query_id: Option<&str>,
    query: &str,
    force: bool,
) -> Result<u64> {
    let def = store.table(table)?;
    let query_id = super::pull::check_query_id(query_id)?.map(str::to_string);
    let parsed = parse_query(query)?;
    let (where_sql, params) = match &parsed.filter {
        Some(f) => {
            let frag = lower_filter(f, &LocalSchema(def), Dialect::Sqlite, 1)
                .map_err(|e| Error::InvalidQuery(e.message))?;
            (Some(frag.sql), sql_params(frag.params))
        }
        None => (None, Vec::new()),
    };
    let (s, t) = (store.clone(), table.to_string());
    store
        .run(move |c, _| {
            q::purge(
                c,
                s.table(&t)?,
                query_id.as_deref(),
                where_sql.as_deref(),
                &params,
                force,
            )
        })
        .await
}
