//! Integration tests of tablesync-protocol's public API (one test binary: see ARCHITECTURE.md).

mod fuzz_equivalents;
mod lower;
mod query;
