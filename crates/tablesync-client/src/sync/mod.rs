//! Everything that talks to the network: discovery, push, pull, and (local only, but a sync
//! action) purge.
//!
//! Only this module sends requests; it decides from answers with pure functions
//! ([`push::classify`], [`push::plan`], [`push::batch`], [`pull::parse_page`],
//! [`crate::capabilities::parse_capabilities`]) and applies results through the store's
//! transactions. [`session::Session`] is what a context and its tables share; [`monitor`] what an app
//! watches (status, progress, change notifications) and how it cancels a running action; [`live`]
//! keeps tables current from the server's change feed (or by polling).

pub(crate) mod live;
pub(crate) mod monitor;
pub(crate) mod pull;
pub(crate) mod purge;
pub(crate) mod push;
pub(crate) mod session;

use tablesync_protocol::odata::sql::{ColumnType, Schema};

use crate::capabilities::{capabilities_url, parse_capabilities, Capabilities};
use crate::client::Client;
use crate::store::TableDefinition;
use crate::transport::{Method, TransportError};

/// Asks the server which extensions it offers (`GET {base}/$capabilities`). An error when no
/// answer arrived (network failure: unknown, ask again later); any answer, even a 404, is a
/// definite [`Capabilities`].
pub(crate) async fn discover(client: &Client) -> Result<Capabilities, TransportError> {
    let url = capabilities_url(client.base_url());
    let request = client.request(Method::Get, url, None);
    let response = client.transport().send(request).await?;
    Ok(parse_capabilities(client.base_url(), &response))
}

/// A local table as seen by the protocol's SQL lowering: system columns plus declared columns.
pub(crate) struct LocalSchema<'a>(pub(crate) &'a TableDefinition);

impl Schema for LocalSchema<'_> {
    fn column_type(&self, name: &str) -> Option<ColumnType> {
        match name {
            "id" | "version" => Some(ColumnType::String),
            "createdAt" | "updatedAt" => Some(ColumnType::Date),
            "deleted" => Some(ColumnType::Boolean),
            _ => self.0.column_type(name),
        }
    }
}

/// Converts lowered parameters to rusqlite values (timestamps as wire-form text, the local
/// storage of dates).
pub(crate) fn sql_params(
    params: Vec<tablesync_protocol::odata::sql::SqlValue>,
) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    use tablesync_protocol::odata::sql::SqlValue as P;
    params
        .into_iter()
        .map(|p| match p {
            P::Null => V::Null,
            P::Bool(b) => V::Integer(i64::from(b)),
            P::Int(i) => V::Integer(i),
            P::Real(f) => V::Real(f),
            P::Text(s) => V::Text(s),
            P::Timestamp(t) => V::Text(t.to_string()),
            #[allow(unreachable_patterns)]
            _ => V::Null,
        })
        .collect()
}
