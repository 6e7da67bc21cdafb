//! The tutorial scenario against the official Node server (azure-mobile-apps 4.0.2, sqlite).
//! Fails (never skips) when its npm packages are missing: run `bash scripts/ensure-npm`.

use crate::common::OfficialServer;

#[tokio::test]
async fn tutorial_against_official_node_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = OfficialServer::start(&dir.path().join("official.sqlite")).await;
    crate::scenario::tutorial(&server.url).await;
}
