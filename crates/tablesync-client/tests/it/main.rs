//! End-to-end tests of the client SDK against real servers (one test binary, see
//! ARCHITECTURE.md): our in-process `tablesync-server` and the official Node server.

mod common;
mod faults;
mod local;
mod official;
mod ours;
mod scenario;
