//! [`FaultProxy`]: a loopback TCP proxy between an HTTP/1.1 client and a server that, under a
//! seed, breaks exchanges the ways a real network does.
//!
//! The proxy reads each request whole (head and `Content-Length` or chunked body) before it
//! decides what to do with it, so every fault happens at a known point of the exchange:
//!
//! | [`Fault`] | what the client sees | has the server applied the request? |
//! |---|---|---|
//! | `Pass` | the response | yes |
//! | `Reset` | a TCP reset, no response | no: it was never forwarded |
//! | `Cut` | the first part of the response, then the connection closes | yes |
//! | `DropResponse` | the connection closes (FIN) with no response | yes: the proxy read the whole response and threw it away |
//! | `Delay(ms)` | the response, `ms` milliseconds late | yes |
//!
//! **Deterministic given the seed**: the proxy numbers requests in the order they arrive
//! (0, 1, 2, … over all connections) and the fault for request *n* is a pure function of the
//! seed, *n* and the current [`FaultPlan`] ([`FaultPlan::decide`]). A client that sends its
//! requests one after another therefore meets the same faults on every run; [`FaultProxy::log`]
//! lists what each request met, for failure messages.
//!
//! The upstream address can change while the proxy runs ([`FaultProxy::set_upstream`]), so a
//! test can restart its server on a new port behind the same proxy URL; while no server listens
//! a request finds its connection closed. [`FaultProxy::set_plan`] with [`FaultPlan::none`]
//! stops the faults (for a final, clean sync).
//!
//! Std threads and blocking sockets only (one thread per connection), so it works from sync and
//! async tests alike. Not a general proxy: no `CONNECT`, no upgrades, no `Expect: 100-continue`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The largest request or response head the proxy reads, in bytes; a longer one closes the
/// connection (the proxy is for our own clients and servers, whose heads are small).
pub const HEAD_BYTES_MAX: usize = 64 * 1024;

/// How long the proxy waits for an upstream connection before giving up on a request, in
/// milliseconds (the server is local: this only bounds a stuck connect).
pub const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 2_000;

/// What the proxy does to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Forward the request and the response untouched.
    Pass,
    /// Reset the client's connection (RST) without forwarding the request.
    Reset,
    /// Forward the request, then send only the first part of the response and close.
    Cut,
    /// Forward the request, read the whole response, close without sending any of it.
    DropResponse,
    /// Forward the request and send the response this many milliseconds late.
    Delay(u64),
}

/// How often each fault happens, in requests per thousand (the rest pass), and how long a delay
/// may be. The shares must add up to at most 1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// Requests per thousand that meet [`Fault::Reset`].
    pub reset_per_mille: u32,
    /// Requests per thousand that meet [`Fault::Cut`].
    pub cut_per_mille: u32,
    /// Requests per thousand that meet [`Fault::DropResponse`].
    pub drop_response_per_mille: u32,
    /// Requests per thousand that meet [`Fault::Delay`].
    pub delay_per_mille: u32,
    /// The longest delay, in milliseconds (each delay is 1..=this).
    pub delay_ms_max: u64,
}

impl FaultPlan {
    /// No faults: every request passes.
    pub const fn none() -> FaultPlan {
        FaultPlan {
            reset_per_mille: 0,
            cut_per_mille: 0,
            drop_response_per_mille: 0,
            delay_per_mille: 0,
            delay_ms_max: 0,
        }
    }

    /// Every kind of fault, each on about one request in ten (60 % pass), delays up to 50 ms.
    pub const fn mixed() -> FaultPlan {
        FaultPlan {
            reset_per_mille: 100,
            cut_per_mille: 100,
            drop_response_per_mille: 100,
            delay_per_mille: 100,
            delay_ms_max: 50,
        }
    }

    /// Every request meets `fault` (for tests of one fault).
    pub const fn always(fault: Fault) -> FaultPlan {
        let mut plan = FaultPlan::none();
        match fault {
            Fault::Pass => {}
            Fault::Reset => plan.reset_per_mille = 1000,
            Fault::Cut => plan.cut_per_mille = 1000,
            Fault::DropResponse => plan.drop_response_per_mille = 1000,
            Fault::Delay(ms) => {
                plan.delay_per_mille = 1000;
                plan.delay_ms_max = ms;
            }
        }
        plan
    }

    /// The fault request number `n` meets under `seed`: a pure function of the three.
    pub fn decide(&self, seed: u64, n: u64) -> Fault {
        let r = mix(seed, n);
        let roll = (r % 1000) as u32;
        let second = r >> 32;
        let mut edge = self.reset_per_mille;
        if roll < edge {
            return Fault::Reset;
        }
        edge += self.cut_per_mille;
        if roll < edge {
            return Fault::Cut;
        }
        edge += self.drop_response_per_mille;
        if roll < edge {
            return Fault::DropResponse;
        }
        edge += self.delay_per_mille;
        if roll < edge && self.delay_ms_max > 0 {
            return Fault::Delay(1 + second % self.delay_ms_max);
        }
        Fault::Pass
    }
}

/// SplitMix64 of the seed and request number: well spread, no dependency, same on every
/// platform.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed
        .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How many requests met each fault so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Requests the proxy read whole.
    pub requests: u64,
    /// Passed untouched.
    pub passed: u64,
    /// Reset before forwarding.
    pub resets: u64,
    /// Response cut midway.
    pub cuts: u64,
    /// Response read and dropped.
    pub dropped_responses: u64,
    /// Response delayed.
    pub delays: u64,
    /// Requests that could not be forwarded or answered because the server was not there
    /// (restarting) or closed the connection; the client saw its connection close.
    pub upstream_failures: u64,
}

/// One entry of [`FaultProxy::log`]: request number, its request line, the fault it met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultEvent {
    /// The request's number (arrival order).
    pub n: u64,
    /// `METHOD target` of the request.
    pub request_line: String,
    /// What the proxy did.
    pub fault: Fault,
}

/// How many log entries are kept (the newest); a long soak must not grow memory without bound.
const LOG_KEEP: usize = 10_000;

struct Shared {
    seed: u64,
    plan: Mutex<FaultPlan>,
    upstream: Mutex<SocketAddr>,
    next_request: AtomicU64,
    stats: Mutex<FaultStats>,
    log: Mutex<Vec<FaultEvent>>,
    stopping: AtomicBool,
    /// Open sockets by connection number, shut down when the proxy stops so that no
    /// connection thread outlives it.
    open: Mutex<HashMap<u64, Vec<TcpStream>>>,
}

/// Locks a mutex even when a connection thread panicked while holding it (the data are counters
/// and lists, still usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running fault-injecting proxy on `127.0.0.1:<port>`; stops (closing every connection) when
/// dropped.
///
/// ```
/// use tablesync_server::testing::proxy::{Fault, FaultPlan, FaultProxy};
/// // Nothing listens upstream here: the request finds its connection closed.
/// let upstream: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
/// let proxy = FaultProxy::start(upstream, 42, FaultPlan::mixed()).unwrap();
/// assert!(proxy.url().starts_with("http://127.0.0.1:"));
/// // The faults are a function of the seed and the request number.
/// assert_eq!(FaultPlan::mixed().decide(42, 7), FaultPlan::mixed().decide(42, 7));
/// assert_eq!(FaultPlan::none().decide(42, 7), Fault::Pass);
/// ```
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("seed", &self.shared.seed)
            .field("upstream", &*lock(&self.shared.upstream))
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` under `seed` and `plan`.
    pub fn start(upstream: SocketAddr, seed: u64, plan: FaultPlan) -> io::Result<FaultProxy> {
        let total = plan.reset_per_mille
            + plan.cut_per_mille
            + plan.drop_response_per_mille
            + plan.delay_per_mille;
        if total > 1000 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fault shares add up to {total} per mille, more than 1000"),
            ));
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            seed,
            plan: Mutex::new(plan),
            upstream: Mutex::new(upstream),
            next_request: AtomicU64::new(0),
            stats: Mutex::new(FaultStats::default()),
            log: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))?;
        Ok(FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: give this to the client instead of the server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The seed the faults come from.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// Forward new connections to `upstream` from now on (a restarted server's new port).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
    }

    /// Use `plan` for the requests that arrive from now on.
    pub fn set_plan(&self, plan: FaultPlan) {
        *lock(&self.shared.plan) = plan;
    }

    /// Counts so far.
    pub fn stats(&self) -> FaultStats {
        *lock(&self.shared.stats)
    }

    /// What the newest requests (up to 10,000) met, oldest first.
    pub fn log(&self) -> Vec<FaultEvent> {
        lock(&self.shared.log).clone()
    }

    /// Closes every open connection (client and upstream sides) at once, as a network outage
    /// would; the proxy keeps accepting new ones.
    pub fn close_connections(&self) {
        for (_, sockets) in lock(&self.shared.open).drain() {
            for s in sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.close_connections();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_connection = 0u64;
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = stream else {
            // Out of descriptors or the like: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let id = next_connection;
        next_connection += 1;
        if let Ok(clone) = client.try_clone() {
            lock(&shared.open).insert(id, vec![clone]);
        }
        let conn_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("fault-proxy-{id}"))
            .spawn(move || {
                serve_connection(&conn_shared, id, client);
                lock(&conn_shared.open).remove(&id);
            });
        if spawned.is_err() {
            lock(&shared.open).remove(&id);
        }
    }
}

/// Relays one client connection, request by request, until either side closes or a fault ends
/// it.
fn serve_connection(shared: &Shared, id: u64, mut client: TcpStream) {
    let _ = client.set_nodelay(true);
    let mut client_buf = Vec::new();
    let mut upstream: Option<(TcpStream, Vec<u8>)> = None;
    loop {
        let request = match read_message(&mut client, &mut client_buf, Kind::Request) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => return,
        };
        let n = shared.next_request.fetch_add(1, Ordering::SeqCst);
        let plan = *lock(&shared.plan);
        let fault = plan.decide(shared.seed, n);
        let event = FaultEvent {
            n,
            request_line: request.request_line(),
            fault,
        };
        {
            let mut log = lock(&shared.log);
            if log.len() >= LOG_KEEP {
                log.drain(..LOG_KEEP / 2);
            }
            log.push(event);
        }
        lock(&shared.stats).requests += 1;

        if fault == Fault::Reset {
            lock(&shared.stats).resets += 1;
            reset(&client);
            return;
        }

        if upstream.is_none() {
            let addr = *lock(&shared.upstream);
            let timeout = Duration::from_millis(UPSTREAM_CONNECT_TIMEOUT_MS);
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    if let Ok(clone) = s.try_clone() {
                        lock(&shared.open).entry(id).or_default().push(clone);
                    }
                    upstream = Some((s, Vec::new()));
                }
                Err(_) => {
                    lock(&shared.stats).upstream_failures += 1;
                    return;
                }
            }
        }
        let Some((up, up_buf)) = upstream.as_mut() else {
            return;
        };
        if up.write_all(&request.bytes).is_err() {
            lock(&shared.stats).upstream_failures += 1;
            return;
        }
        let response = match read_message(
            up,
            up_buf,
            Kind::Response {
                head_request: request.is_head(),
            },
        ) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => {
                lock(&shared.stats).upstream_failures += 1;
                return;
            }
        };
        match fault {
            Fault::Pass | Fault::Reset => lock(&shared.stats).passed += 1,
            Fault::Delay(ms) => {
                lock(&shared.stats).delays += 1;
                thread::sleep(Duration::from_millis(ms));
            }
            Fault::DropResponse => {
                lock(&shared.stats).dropped_responses += 1;
                return;
            }
            Fault::Cut => {
                lock(&shared.stats).cuts += 1;
                // Somewhere strictly inside the response, chosen by the seed too.
                let len = response.bytes.len();
                let cut = if len > 1 {
                    1 + (mix(shared.seed ^ 0xC0FF_EE00, n) as usize) % (len - 1)
                } else {
                    0
                };
                let _ = client.write_all(&response.bytes[..cut]);
                let _ = client.flush();
                return;
            }
        }
        if client.write_all(&response.bytes).is_err() {
            return;
        }
        if request.closes || response.closes {
            return;
        }
    }
}

/// Closes `stream` with a TCP reset (SO_LINGER 0) rather than a FIN.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    let _ = stream.shutdown(Shutdown::Read);
}

#[derive(Clone, Copy)]
enum Kind {
    Request,
    /// `head_request`: the request was `HEAD`, so the response has no body whatever it says.
    Response {
        head_request: bool,
    },
}

/// One whole HTTP/1.1 message as it came on the wire.
struct Message {
    bytes: Vec<u8>,
    /// Its first line, without the line end.
    first_line: String,
    /// `Connection: close` was in its head.
    closes: bool,
}

impl Message {
    fn request_line(&self) -> String {
        // "GET /tables/x?… HTTP/1.1" → "GET /tables/x?…"
        match self.first_line.rsplit_once(' ') {
            Some((head, _version)) => head.to_owned(),
            None => self.first_line.clone(),
        }
    }

    fn is_head(&self) -> bool {
        self.first_line.starts_with("HEAD ")
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads more bytes from `stream` into `buf`; `Ok(false)` at end of stream.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    let read = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..read]);
    Ok(read > 0)
}

/// Reads one message from `stream`, starting with what `buf` already holds; bytes past the
/// message stay in `buf` (a pipelined next request). `Ok(None)` when the stream ended cleanly
/// before a message started.
fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    kind: Kind,
) -> io::Result<Option<Message>> {
    let mut out = Vec::new();
    let (first_line, closes) = loop {
        let head_end = loop {
            if let Some(at) = find(buf, b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > HEAD_BYTES_MAX {
                return Err(invalid("head too long"));
            }
            if !fill(stream, buf)? {
                return if buf.is_empty() && out.is_empty() {
                    Ok(None)
                } else {
                    Err(invalid("stream ended inside a head"))
                };
            }
        };
        let head: Vec<u8> = buf.drain(..head_end).collect();
        let text = String::from_utf8_lossy(&head).into_owned();
        out.extend_from_slice(&head);
        let mut lines = text.split("\r\n");
        let first_line = lines.next().unwrap_or_default().to_owned();
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut closes = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => {
                    content_length = Some(value.parse().map_err(|_| invalid("bad Content-Length"))?)
                }
                "transfer-encoding" => {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                }
                "connection" => closes = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let status: Option<u16> = match kind {
            Kind::Request => None,
            Kind::Response { .. } => first_line.split(' ').nth(1).and_then(|s| s.parse().ok()),
        };
        // An interim (1xx, not 101) response is followed by the real one: relay both as one.
        if matches!(status, Some(s) if (100..200).contains(&s) && s != 101) {
            continue;
        }
        let no_body = match kind {
            Kind::Request => false,
            Kind::Response { head_request } => {
                head_request || matches!(status, Some(204) | Some(304))
            }
        };
        if no_body {
        } else if chunked {
            read_chunked(stream, buf, &mut out)?;
        } else if let Some(len) = content_length {
            read_exact_into(stream, buf, &mut out, len)?;
        } else if matches!(kind, Kind::Response { .. }) {
            // Delimited by the close.
            out.append(buf);
            while fill(stream, buf)? {
                out.append(buf);
            }
            closes = true;
        }
        break (first_line, closes);
    };
    Ok(Some(Message {
        bytes: out,
        first_line,
        closes,
    }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Moves exactly `len` bytes from `buf` (refilled from `stream`) to `out`.
fn read_exact_into(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    len: usize,
) -> io::Result<()> {
    while buf.len() < len {
        if !fill(stream, buf)? {
            return Err(invalid("stream ended inside a body"));
        }
    }
    out.extend(buf.drain(..len));
    Ok(())
}

/// Moves one line (through its `\r\n`) from `buf` to `out` and returns it without the line end.
fn read_line_into(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> io::Result<String> {
    loop {
        if let Some(at) = find(buf, b"\r\n") {
            let line: Vec<u8> = buf.drain(..at + 2).collect();
            out.extend_from_slice(&line);
            return Ok(String::from_utf8_lossy(&line[..at]).into_owned());
        }
        if buf.len() > HEAD_BYTES_MAX {
            return Err(invalid("chunk line too long"));
        }
        if !fill(stream, buf)? {
            return Err(invalid("stream ended inside a chunked body"));
        }
    }
}

/// Moves a chunked body (chunks, last chunk, trailers) from `buf`/`stream` to `out`.
fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
    loop {
        let line = read_line_into(stream, buf, out)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size line"))?;
        if size == 0 {
            // Trailers up to an empty line.
            loop {
                if read_line_into(stream, buf, out)?.is_empty() {
                    return Ok(());
                }
            }
        }
        read_exact_into(stream, buf, out, size + 2)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A tiny HTTP server: answers every request with `200` and a body naming how many
    /// requests it has received so far; `counter` counts them.
    fn upstream(counter: Arc<AtomicUsize>, chunked: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let counter = Arc::clone(&counter);
                thread::spawn(move || {
                    let mut buf = Vec::new();
                    while let Ok(Some(_)) = read_message(&mut s, &mut buf, Kind::Request) {
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = format!("{{\"seen\":{n},\"pad\":\"{}\"}}", "x".repeat(200));
                        let response = if chunked {
                            let (a, b) = body.split_at(10);
                            format!(
                                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
                                a.len(),
                                b.len()
                            )
                        } else {
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        };
                        if s.write_all(response.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Sends one POST with a body over a new connection and reads until the proxy closes or
    /// a whole response arrived: (bytes received, whether the read ended in an error).
    fn exchange(proxy: &FaultProxy) -> (Vec<u8>, bool) {
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"POST /tables/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap();
        let mut buf = Vec::new();
        match read_message(
            &mut s,
            &mut buf,
            Kind::Response {
                head_request: false,
            },
        ) {
            Ok(Some(m)) => (m.bytes, false),
            Ok(None) => (Vec::new(), false),
            Err(_) => {
                // A cut response: what arrived is in `buf` (the head) or was consumed; read
                // the raw bytes again on a fresh exchange is not possible, report the error.
                (buf, true)
            }
        }
    }

    #[test]
    fn decisions_depend_on_seed_and_number_only_and_follow_the_shares() {
        let plan = FaultPlan::mixed();
        let a: Vec<Fault> = (0..2000).map(|n| plan.decide(7, n)).collect();
        let b: Vec<Fault> = (0..2000).map(|n| plan.decide(7, n)).collect();
        let c: Vec<Fault> = (0..2000).map(|n| plan.decide(8, n)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let count = |f: fn(&Fault) -> bool| a.iter().filter(|x| f(x)).count();
        // 100 ‰ each over 2000 draws: about 200; a broken split would be far off.
        for (name, n) in [
            ("reset", count(|f| *f == Fault::Reset)),
            ("cut", count(|f| *f == Fault::Cut)),
            ("drop", count(|f| *f == Fault::DropResponse)),
            ("delay", count(|f| matches!(f, Fault::Delay(1..=50)))),
        ] {
            assert!((120..=280).contains(&n), "{name}: {n} of 2000");
        }
        assert!((0..2000).all(|n| FaultPlan::none().decide(7, n) == Fault::Pass));
    }

    #[test]
    fn shares_over_a_thousand_are_refused() {
        let mut plan = FaultPlan::mixed();
        plan.reset_per_mille = 800;
        let e = FaultProxy::start("127.0.0.1:9".parse().unwrap(), 1, plan).unwrap_err();
        assert!(e.to_string().contains("1100 per mille"), "{e}");
    }

    #[test]
    fn pass_relays_whole_responses_over_one_connection() {
        for chunked in [false, true] {
            let seen = Arc::new(AtomicUsize::new(0));
            let proxy =
                FaultProxy::start(upstream(Arc::clone(&seen), chunked), 1, FaultPlan::none())
                    .unwrap();
            let mut s = TcpStream::connect(proxy.addr()).unwrap();
            let mut buf = Vec::new();
            for i in 1..=3 {
                s.write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
                let m = read_message(
                    &mut s,
                    &mut buf,
                    Kind::Response {
                        head_request: false,
                    },
                )
                .unwrap()
                .unwrap();
                let text = String::from_utf8_lossy(&m.bytes);
                assert!(text.contains(&format!("\"seen\":{i}")), "{text}");
            }
            assert_eq!(seen.load(Ordering::SeqCst), 3);
            let stats = proxy.stats();
            assert_eq!((stats.requests, stats.passed), (3, 3), "{stats:?}");
            assert_eq!(proxy.log()[0].request_line, "GET /a");
        }
    }

    #[test]
    fn reset_never_reaches_the_server() {
        let seen = Arc::new(AtomicUsize::new(0));
        let proxy = FaultProxy::start(
            upstream(Arc::clone(&seen), false),
            1,
            FaultPlan::always(Fault::Reset),
        )
        .unwrap();
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        s.write_all(b"POST /t HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
            .unwrap();
        let mut byte = [0u8; 1];
        let read = s.read(&mut byte);
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 0);
        assert_eq!(proxy.stats().resets, 1);
    }

    #[test]
    fn drop_response_is_applied_but_nothing_comes_back() {
        let seen = Arc::new(AtomicUsize::new(0));
        let proxy = FaultProxy::start(
            upstream(Arc::clone(&seen), true),
            1,
            FaultPlan::always(Fault::DropResponse),
        )
        .unwrap();
        let (bytes, errored) = exchange(&proxy);
        assert!(bytes.is_empty() && !errored, "{bytes:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert_eq!(proxy.stats().dropped_responses, 1);
    }

    #[test]
    fn cut_sends_part_of_the_response() {
        let seen = Arc::new(AtomicUsize::new(0));
        let proxy = FaultProxy::start(
            upstream(Arc::clone(&seen), false),
            3,
            FaultPlan::always(Fault::Cut),
        )
        .unwrap();
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\n\r\n").unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert!(!got.is_empty() && got.starts_with(b"HTTP/1.1"[..got.len().min(8)].as_ref()));
        // The whole response is head (38 bytes) plus a 220-byte body.
        assert!(got.len() < 250, "{} bytes: not cut", got.len());
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert_eq!(proxy.stats().cuts, 1);
    }

    #[test]
    fn upstream_can_move_and_faults_can_stop() {
        let seen_a = Arc::new(AtomicUsize::new(0));
        let seen_b = Arc::new(AtomicUsize::new(0));
        let proxy = FaultProxy::start(
            upstream(Arc::clone(&seen_a), false),
            5,
            FaultPlan::always(Fault::Delay(5)),
        )
        .unwrap();
        let (bytes, _) = exchange(&proxy);
        assert!(String::from_utf8_lossy(&bytes).contains("\"seen\":1"));
        proxy.set_upstream(upstream(Arc::clone(&seen_b), false));
        proxy.set_plan(FaultPlan::none());
        let (bytes, _) = exchange(&proxy);
        assert!(String::from_utf8_lossy(&bytes).contains("\"seen\":1"));
        assert_eq!(
            (seen_a.load(Ordering::SeqCst), seen_b.load(Ordering::SeqCst)),
            (1, 1)
        );
        let stats = proxy.stats();
        assert_eq!((stats.delays, stats.passed), (1, 1), "{stats:?}");
    }

    #[test]
    fn a_missing_server_closes_the_connection() {
        // Bind and drop: a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = FaultProxy::start(port, 1, FaultPlan::none()).unwrap();
        let (bytes, _) = exchange(&proxy);
        assert!(bytes.is_empty());
        assert_eq!(proxy.stats().upstream_failures, 1);
    }
}
