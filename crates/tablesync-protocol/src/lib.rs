//! The wire contract of tablesync: the Azure Mobile Apps table protocol (ZUMO-API-VERSION 2.0.0).
//!
//! This crate is shared by the server (`tablesync-server`) and the client SDK
//! (`tablesync-client`) so that both sides agree byte for byte on what goes over the wire and on
//! what a query means. It performs no IO and has no runtime: everything here is a pure function
//! from values to values, which is what lets the server and the client's offline store lower the
//! same `$filter` to the same SQL.
//!
//! Layout:
//! * [`system`]: the five system properties and the id / identifier rules.
//! * [`time`]: millisecond UTC [`time::Timestamp`] and its wire form.
//! * [`headers`]: `ZUMO-API-VERSION`, ETag <-> version, `__includeDeleted`.
//! * [`error`]: the one table of error codes, HTTP statuses and the error body.
//! * [`odata`]: the OData v3 query subset: AST, lexer, parser, printer, query-string handling and
//!   SQL lowering for SQLite and PostgreSQL.

pub mod error;
pub mod headers;
pub mod odata;
pub mod system;
pub mod time;
