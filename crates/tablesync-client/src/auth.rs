//! Credentials: the token every request carries, and the hook that renews it.
//!
//! [`AuthTransport`] sits between [`Client`](crate::Client) and the app's [`Transport`]: it puts
//! the current token in `X-ZUMO-AUTH` (the header both official clients send) at send time, and
//! when a request is answered 401 and a [`TokenRefresher`] is set, it asks the refresher once for
//! a new token and sends the request again with it. Whatever the retry gets is the answer, so
//! push and pull only ever see the final 401 (push then stops with
//! `CancelledByAuthenticationError` and keeps the queue).
//!
//! Requests answered 401 at the same time refresh once: the first one calls the refresher while
//! holding `refresh_lock`; the others find a newer token when they get the lock and retry with
//! it. The token is never logged (`Debug` shows whether there is one, not what it is).

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::transport::{
    BoxFuture, HttpRequest, HttpResponse, StreamingResponse, Transport, TransportError,
};

/// The header the token is sent in.
pub const AUTH_HEADER: &str = "X-ZUMO-AUTH";

/// Renews the token after a 401: returns the token to retry with, or None to give up (the 401
/// is then the answer). Any `Fn() -> impl Future<Output = Option<String>>` is one.
pub trait TokenRefresher: Send + Sync + 'static {
    /// A new token (log in again, use a refresh token, …).
    fn refresh(&self) -> BoxFuture<'_, Option<String>>;
}

impl<F, Fut> TokenRefresher for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<String>> + Send + 'static,
{
    fn refresh(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(self())
    }
}

/// The current token and how often it was replaced.
#[derive(Default)]
struct TokenState {
    token: Option<String>,
    generation: u64,
}

/// The credentials layer over the app's transport (see the module docs).
pub(crate) struct AuthTransport {
    inner: Arc<dyn Transport>,
    state: RwLock<TokenState>,
    refresher: RwLock<Option<Arc<dyn TokenRefresher>>>,
    /// Held while a refresher runs, so concurrent 401s refresh once. A tokio mutex: it is held
    /// across the refresher's await (no std lock is).
    refresh_lock: tokio::sync::Mutex<()>,
}

impl AuthTransport {
    pub(crate) fn new(inner: Arc<dyn Transport>, token: Option<String>) -> Self {
        AuthTransport {
            inner,
            state: RwLock::new(TokenState {
                token,
                generation: 0,
            }),
            refresher: RwLock::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The token and its generation.
    fn current(&self) -> (Option<String>, u64) {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        (state.token.clone(), state.generation)
    }

    pub(crate) fn token(&self) -> Option<String> {
        self.current().0
    }

    pub(crate) fn set_token(&self, token: Option<String>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.token = token;
        state.generation += 1;
    }

    pub(crate) fn set_refresher(&self, refresher: Option<Arc<dyn TokenRefresher>>) {
        *self
            .refresher
            .write()
            .unwrap_or_else(PoisonError::into_inner) = refresher;
    }

    fn refresher(&self) -> Option<Arc<dyn TokenRefresher>> {
        self.refresher
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends `request` with the current token through `send`; on a 401 (`status` reads it) asks
    /// the refresher once and sends again with the new token. Shared by whole and streamed
    /// requests, so the change feed refreshes exactly like a pull.
    async fn with_refresh<R, F, Fut>(
        &self,
        request: HttpRequest,
        send: F,
        status: fn(&R) -> u16,
    ) -> Result<R, TransportError>
    where
        F: Fn(HttpRequest) -> Fut,
        Fut: Future<Output = Result<R, TransportError>>,
    {
        let (token, generation) = self.current();
        let first = send(with_token(request.clone(), token.as_deref())).await?;
        if status(&first) != 401 {
            return Ok(first);
        }
        let Some(refresher) = self.refresher() else {
            return Ok(first);
        };
        let retry_token = {
            let _refreshing = self.refresh_lock.lock().await;
            let (now, now_generation) = self.current();
            if now_generation != generation {
                // Someone replaced the token since this request was sent: use theirs.
                now
            } else {
                match refresher.refresh().await {
                    Some(fresh) => {
                        self.set_token(Some(fresh.clone()));
                        Some(fresh)
                    }
                    None => {
                        tracing::info!("401 and the token refresher gave no new token");
                        return Ok(first);
                    }
                }
            }
        };
        drop(first);
        send(with_token(request, retry_token.as_deref())).await
    }
}

impl Transport for AuthTransport {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(self.with_refresh(request, |r| self.inner.send(r), |r| r.status))
    }

    fn open_stream(
        &self,
        request: HttpRequest,
    ) -> BoxFuture<'_, Result<StreamingResponse, TransportError>> {
        Box::pin(self.with_refresh(request, |r| self.inner.open_stream(r), |r| r.status))
    }
}

/// `request` with `X-ZUMO-AUTH: token` (any earlier value removed; none without a token).
fn with_token(mut request: HttpRequest, token: Option<&str>) -> HttpRequest {
    request
        .headers
        .retain(|(name, _)| !name.eq_ignore_ascii_case(AUTH_HEADER));
    if let Some(token) = token {
        request
            .headers
            .push((AUTH_HEADER.to_owned(), token.to_owned()));
    }
    request
}

/// The claims of a JWT, decoded **without verifying its signature**: for naming things on the
/// device (the tutorial's `"todoItems" + userId` query id), never for trusting them; the server
/// verifies. None when `token` is not a JWT with a JSON object payload.
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// The `sub` claim of a JWT, decoded without verification (see [`unverified_claims`]).
pub fn token_subject(token: &str) -> Option<String> {
    match unverified_claims(token)?.get("sub")? {
        Value::String(sub) => Some(sub.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::transport::Method;

    /// Answers 200 only to the token `good`, 401 otherwise; records the tokens it saw.
    struct Gate {
        seen: Mutex<Vec<Option<String>>>,
    }

    impl Transport for Gate {
        fn send(&self, r: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
            let token = r.header(AUTH_HEADER).map(str::to_owned);
            let status = if token.as_deref() == Some("good") {
                200
            } else {
                401
            };
            self.seen.lock().unwrap().push(token);
            Box::pin(async move { Ok(HttpResponse::new(status, "{}")) })
        }
    }

    fn gate() -> Arc<Gate> {
        Arc::new(Gate {
            seen: Mutex::new(Vec::new()),
        })
    }

    fn request() -> HttpRequest {
        HttpRequest::new(Method::Get, "http://x/tables/T")
    }

    #[tokio::test]
    async fn a_401_refreshes_once_and_retries_with_the_new_token() {
        let inner = gate();
        let auth = AuthTransport::new(inner.clone(), Some("old".into()));
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        auth.set_refresher(Some(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Some("good".to_owned()) }
        })));
        assert_eq!(auth.send(request()).await.unwrap().status, 200);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(auth.token().as_deref(), Some("good"));
        // The next request uses the new token straight away.
        assert_eq!(auth.send(request()).await.unwrap().status, 200);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let seen = inner.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [Some("old".into()), Some("good".into()), Some("good".into())]
        );
    }

    #[tokio::test]
    async fn a_second_401_is_the_answer() {
        let inner = gate();
        let auth = AuthTransport::new(inner.clone(), None);
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        auth.set_refresher(Some(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Some("still-bad".to_owned()) }
        })));
        assert_eq!(auth.send(request()).await.unwrap().status, 401);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "refreshed once, not in a loop"
        );
        assert_eq!(inner.seen.lock().unwrap().len(), 2);
        // No refresher: the 401 comes back at once; giving up (None) likewise.
        let plain = AuthTransport::new(gate(), Some("x".into()));
        assert_eq!(plain.send(request()).await.unwrap().status, 401);
        let giving_up = AuthTransport::new(gate(), Some("x".into()));
        giving_up.set_refresher(Some(Arc::new(|| async { None })));
        assert_eq!(giving_up.send(request()).await.unwrap().status, 401);
    }

    #[tokio::test]
    async fn concurrent_401s_refresh_once() {
        let auth = Arc::new(AuthTransport::new(gate(), Some("old".into())));
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        auth.set_refresher(Some(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::task::yield_now().await;
                Some("good".to_owned())
            }
        })));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let auth = auth.clone();
            tasks.push(tokio::spawn(async move {
                auth.send(request()).await.unwrap().status
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
        // Every request sent with the old token sees 401, but only the first to take the lock
        // refreshes; the others find the newer token and retry with it.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(auth.token().as_deref(), Some("good"));
    }

    #[test]
    fn subjects_are_read_without_verification() {
        // {"alg":"HS256"} . {"sub":"alice","n":1} . sig
        let t = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsIm4iOjF9.c2ln";
        assert_eq!(token_subject(t).as_deref(), Some("alice"));
        assert_eq!(token_subject("nope"), None);
        assert_eq!(token_subject("a.bm90IGpzb24.c"), None);
    }
}
