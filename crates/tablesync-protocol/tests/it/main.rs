//! Integration tests of tablesync-protocol's public API (one test binary: see ARCHITECTURE.md).

mod lower;
mod query;
