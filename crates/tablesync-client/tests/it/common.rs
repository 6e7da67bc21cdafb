//! Test harness: servers on 127.0.0.1:0, contexts over temp stores, a fault-injecting transport.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tablesync_client::{
    BoxFuture, Client, ClientOptions, ColumnType, HttpRequest, HttpResponse, HttpTransport,
    LocalStore, Method, SyncContext, SyncHandler, TableDefinition, Transport, TransportError,
};
use tokio::io::AsyncBufReadExt;

/// A URL nothing listens on (port 1 refuses connections).
pub const UNREACHABLE: &str = "http://127.0.0.1:1/";

/// The tutorial's item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TodoItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub text: String,
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl TodoItem {
    pub fn new(id: &str, text: &str) -> Self {
        TodoItem {
            id: Some(id.into()),
            text: text.into(),
            complete: false,
            version: None,
        }
    }
}

pub fn todo_store(path: &Path) -> LocalStore {
    let mut store = LocalStore::new(path);
    store
        .define_table(
            TableDefinition::new("TodoItem")
                .column("text", ColumnType::String)
                .column("complete", ColumnType::Boolean),
        )
        .unwrap();
    store
}

/// A context on the store file `path` talking to `url` (plain HTTP transport).
pub async fn context(url: &str, path: &Path, handler: Option<Arc<dyn SyncHandler>>) -> SyncContext {
    let client = Client::with_options(
        url,
        ClientOptions::default().with_request_timeout_ms(20_000),
    )
    .unwrap();
    initialize(client, path, handler).await
}

/// A context whose requests go through `transport`.
pub async fn context_via(
    url: &str,
    path: &Path,
    transport: Arc<dyn Transport>,
    handler: Option<Arc<dyn SyncHandler>>,
) -> SyncContext {
    let client = Client::with_transport(url, transport).unwrap();
    initialize(client, path, handler).await
}

/// A context on `<dir>/a.db` whose requests all go to `faulty` (its URL is never dialled).
pub async fn faulty_context(dir: &Path, faulty: &Arc<Faulty>) -> SyncContext {
    context_via(
        "http://127.0.0.1:9/",
        &dir.join("a.db"),
        faulty.clone(),
        None,
    )
    .await
}

/// A context of `client` on the todo store file `path`, with `handler` if given.
async fn initialize(
    client: Client,
    path: &Path,
    handler: Option<Arc<dyn SyncHandler>>,
) -> SyncContext {
    match handler {
        Some(h) => SyncContext::initialize_with_handler(client, todo_store(path), h)
            .await
            .unwrap(),
        None => SyncContext::initialize(client, todo_store(path))
            .await
            .unwrap(),
    }
}

pub use tablesync_server::testing::{StoreKind, TestDatabase};

/// A fresh database of `kind`; PostgreSQL not reachable fails the test (never skips).
pub async fn fresh_database(kind: StoreKind) -> TestDatabase {
    TestDatabase::create(kind)
        .await
        .unwrap_or_else(|e| panic!("cannot create a {} test database: {e}", kind.name()))
}

/// Our server, in-process, on 127.0.0.1:0.
pub struct OurServer {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tablesync_server::ServerError>>>,
    /// The database the server owns (dropped, i.e. removed, after the server stopped).
    db: Option<TestDatabase>,
}

impl OurServer {
    /// Our server on a fresh database of `kind`, removed when the server is stopped or dropped.
    pub async fn start(kind: StoreKind) -> Self {
        let db = fresh_database(kind).await;
        let mut server = Self::start_on(&db).await;
        server.db = Some(db);
        server
    }

    /// Our server on a fresh database of `kind` whose largest page is `page_size_max` rows.
    pub async fn start_with_page_size_max(kind: StoreKind, page_size_max: u64) -> Self {
        let db = fresh_database(kind).await;
        let mut config = tablesync_server::Config::default_todo().with_database(db.url());
        config.limits.page_size_max = page_size_max;
        for table in &mut config.tables {
            table.page_size = table.page_size.min(page_size_max);
        }
        let mut server = Self::start_with(config).await;
        server.db = Some(db);
        server
    }

    /// Our server on an existing test database (which outlives it).
    pub async fn start_on(db: &TestDatabase) -> Self {
        Self::start_with(tablesync_server::Config::default_todo().with_database(db.url())).await
    }

    /// Our server with this configuration (its database set); the database outlives it.
    pub async fn start_with(config: tablesync_server::Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tablesync_server::Server::open(config).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        OurServer {
            url,
            stop: Some(stop),
            task: Some(task),
            db: None,
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        drop(self.db.take());
    }
}

/// The official Node server (azure-mobile-apps 4.0.2, sqlite provider) as a child process.
pub struct OfficialServer {
    pub url: String,
    _child: tokio::process::Child,
}

impl OfficialServer {
    pub async fn start(db: &Path) -> Self {
        let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop");
        let modules = interop.join("node_modules/azure-mobile-apps");
        assert!(
            modules.is_dir(),
            "the official Node server's npm packages are missing ({}): run `bash scripts/ensure-npm` \
             in the repository root first",
            modules.display()
        );
        let mut child = tokio::process::Command::new("node")
            .arg(interop.join("official-server.js"))
            .env("PORT", "0")
            .env("DB_FILE", db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run `node`: install Node.js and run `bash scripts/ensure-npm`");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("official server exited before listening");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the official server: {line:?}"))
            .trim()
            .to_string();
        OfficialServer {
            url: format!("{url}/"),
            _child: child,
        }
    }
}

/// Whether a request is the discovery of the server's extensions (`GET {base}/$capabilities`),
/// which a context sends once before its first push (`docs/extensions.md` section 1).
pub fn is_discovery(method: Method, url: &str) -> bool {
    method == Method::Get && url.ends_with("/$capabilities")
}

/// Wraps the HTTP transport: records requests, and can inject faults.
///
/// `methods()` and `get_urls()` leave out the discovery request (tests of table traffic do not
/// count it; `discovery_requests()` does); `log` and `requests` hold everything.
pub struct Faulty {
    inner: HttpTransport,
    /// Every request sent: (method, url).
    pub log: Mutex<Vec<(Method, String)>>,
    /// Every request sent, whole (headers and body).
    pub requests: Mutex<Vec<HttpRequest>>,
    /// Drop the connection on every GET after this many GETs.
    pub drop_gets_after: Option<usize>,
    gets: AtomicUsize,
    /// Forward POSTs, then report the connection as dropped (a lost response).
    pub lose_post_responses: AtomicBool,
    /// Forward requests with these methods, then report the connection as dropped.
    pub lose_responses_to: Mutex<Vec<Method>>,
    /// Answer everything with this status and body instead of forwarding.
    pub canned: Mutex<Option<(u16, Vec<u8>)>>,
}

impl Faulty {
    pub fn new() -> Arc<Self> {
        Self::with_drop_gets_after(None)
    }

    pub fn with_drop_gets_after(n: Option<usize>) -> Arc<Self> {
        Arc::new(Faulty {
            inner: HttpTransport::new(20_000, 16 * 1024 * 1024).unwrap(),
            log: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            drop_gets_after: n,
            gets: AtomicUsize::new(0),
            lose_post_responses: AtomicBool::new(false),
            lose_responses_to: Mutex::new(Vec::new()),
            canned: Mutex::new(None),
        })
    }

    pub fn answer_with(&self, status: u16, body: &str) {
        *self.canned.lock().unwrap() = Some((status, body.as_bytes().to_vec()));
    }

    /// Loses the answers to requests with `methods` (empty: loses none).
    pub fn lose_responses_to(&self, methods: &[Method]) {
        *self.lose_responses_to.lock().unwrap() = methods.to_vec();
    }

    /// GET URLs sent, discovery left out.
    pub fn get_urls(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, u)| *m == Method::Get && !is_discovery(*m, u))
            .map(|(_, u)| u.clone())
            .collect()
    }

    /// Methods of the requests sent, discovery left out.
    pub fn methods(&self) -> Vec<Method> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, u)| !is_discovery(*m, u))
            .map(|(m, _)| *m)
            .collect()
    }

    /// How many discovery requests were sent.
    pub fn discovery_requests(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, u)| is_discovery(*m, u))
            .count()
    }

    /// The write requests sent (POST, PATCH, DELETE), whole.
    pub fn writes(&self) -> Vec<HttpRequest> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method != Method::Get)
            .cloned()
            .collect()
    }
}

impl Transport for Faulty {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            self.log
                .lock()
                .unwrap()
                .push((request.method, request.url.clone()));
            self.requests.lock().unwrap().push(request.clone());
            let canned = self.canned.lock().unwrap().clone();
            if let Some((status, body)) = canned {
                return Ok(HttpResponse::new(status, body));
            }
            if request.method == Method::Get {
                let n = self.gets.fetch_add(1, Ordering::SeqCst);
                if self.drop_gets_after.is_some_and(|k| n >= k) {
                    return Err(TransportError::Connection("dropped by the test".into()));
                }
            }
            let lose = (request.method == Method::Post
                && self.lose_post_responses.load(Ordering::SeqCst))
                || self
                    .lose_responses_to
                    .lock()
                    .unwrap()
                    .contains(&request.method);
            let resp = self.inner.send(request).await;
            if lose {
                return Err(TransportError::Connection(
                    "response lost by the test".into(),
                ));
            }
            resp
        })
    }
}

/// Percent-decodes a URL for assertions on its query.
pub fn decoded(url: &str) -> String {
    percent_encoding::percent_decode_str(url)
        .decode_utf8_lossy()
        .into_owned()
}

/// What [`Capping`] does with the server's `Link` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Pass our server's bare form through (`http://…; rel=next`, as the official Node server).
    Bare,
    /// Rewrite it to the RFC 8288 form the .NET server sends (`<http://…>; rel="next"`).
    Bracketed,
    /// Remove it: a server that caps pages silently.
    Strip,
}

/// A server that serves at most `cap` rows per page whatever `$top` asks (like the official
/// .NET server, which caps at 50): GETs have their `$top` lowered to `cap` before they reach our
/// server, which then answers a full page of `cap` rows with its `Link` header.
pub struct Capping {
    inner: HttpTransport,
    cap: u32,
    mode: LinkMode,
    /// GET URLs as sent to the server (after the rewrite), in order.
    pub gets: Mutex<Vec<String>>,
}

impl Capping {
    pub fn new(cap: u32, mode: LinkMode) -> Arc<Self> {
        Arc::new(Capping {
            inner: HttpTransport::new(20_000, 16 * 1024 * 1024).unwrap(),
            cap,
            mode,
            gets: Mutex::new(Vec::new()),
        })
    }
}

impl Transport for Capping {
    fn send(
        &self,
        mut request: HttpRequest,
    ) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            if request.method == Method::Get {
                let (base, query) = request.url.split_once('?').unwrap_or((&request.url, ""));
                let query: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.strip_prefix("$top=") {
                        Some(n) if n.parse::<u32>().unwrap() > self.cap => {
                            format!("$top={}", self.cap)
                        }
                        _ => kv.to_string(),
                    })
                    .collect();
                request.url = format!("{base}?{}", query.join("&"));
                self.gets.lock().unwrap().push(request.url.clone());
            }
            let mut resp = self.inner.send(request).await?;
            match self.mode {
                LinkMode::Bare => {}
                LinkMode::Bracketed => {
                    for (k, v) in resp.headers.iter_mut() {
                        if k == "link" {
                            let url = v.split(';').next().unwrap().trim().to_string();
                            *v = format!("<{url}>; rel=\"next\"");
                        }
                    }
                }
                LinkMode::Strip => resp.headers.retain(|(k, _)| k != "link"),
            }
            Ok(resp)
        })
    }
}
