//! Integration tests of the `tablesync` binary: real processes over real sockets.
//!
//! `util` holds the process helpers (start a server, wait for its listening line, kill on drop)
//! that every test module here shares.

mod client_cli;
mod interop_js;
mod torture;
mod util;
