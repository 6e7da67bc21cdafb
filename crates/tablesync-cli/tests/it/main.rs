//! Integration tests of the `tablesync` binary: real processes over real sockets.
//!
//! `util` holds the process helpers every test module here shares: start our server or the
//! official one as a `tablesync_server::testing::ServerProcess` (waits for its listening line,
//! kills it on drop), check the interop npm packages, run Node scripts.

mod auth_cli;
mod batch_processes;
mod client_cli;
mod client_ux;
mod crash;
mod feed_processes;
mod group_commit_crash;
mod interop_js;
mod ops_cli;
mod torture;
mod util;
