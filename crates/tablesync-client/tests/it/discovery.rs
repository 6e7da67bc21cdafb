//! Discovery of the server's extensions (`docs/extensions.md` section 1): one request per
//! context, a definite "nothing" from the official server, and no caching of a network failure.

use tablesync_client::Capabilities;

use crate::common::{context_via, Faulty, OfficialServer, OurServer, StoreKind};

fn capability_requests(faulty: &Faulty) -> usize {
    faulty.discovery_requests()
}

async fn our_server_is_asked_once_per_context(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = context_via(&server.url, &dir.path().join("a.db"), faulty.clone(), None).await;
    let caps = ctx.capabilities().await;
    assert_eq!(caps.page_size_max, Some(1000));
    assert_eq!(
        caps.server.as_deref(),
        Some(tablesync_server::SERVER_VERSION)
    );
    assert_eq!(ctx.capabilities().await, caps);
    assert_eq!(
        ctx.clone().capabilities().await,
        caps,
        "clones share the answer"
    );
    assert_eq!(capability_requests(&faulty), 1);
    server.stop().await;
}

store_tests!(our_server_is_asked_once_per_context);

#[tokio::test]
async fn the_official_server_offers_nothing_and_is_asked_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = OfficialServer::start(&dir.path().join("official.sqlite")).await;
    let faulty = Faulty::new();
    let ctx = context_via(&server.url, &dir.path().join("a.db"), faulty.clone(), None).await;
    assert_eq!(ctx.capabilities().await, Capabilities::default());
    assert_eq!(ctx.capabilities().await, Capabilities::default());
    assert_eq!(capability_requests(&faulty), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_asked_again_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    // Port 9 (discard) is closed here: every request is refused.
    let ctx = context_via(
        "http://127.0.0.1:9/",
        &dir.path().join("a.db"),
        faulty.clone(),
        None,
    )
    .await;
    assert_eq!(ctx.capabilities().await, Capabilities::default());
    assert_eq!(ctx.capabilities().await, Capabilities::default());
    assert_eq!(capability_requests(&faulty), 2);
}
