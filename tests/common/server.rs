//! A small HTTP/1.1 file server (and the same server behind TLS) on 127.0.0.1 for the
//! download tests, with per-path fault scripts and a log of every request.
//!
//! One thread per connection, `Connection: close` on every response. Files live in an
//! in-memory map path -> bytes; a path that is not in the map answers 404 (permanently).
//! Each path has an optional script of [`Fault`]s consumed one per request, in order,
//! followed by normal service, and an optional fault applied to every request
//! ([`Server::always`]). `Range: bytes=N-` / `bytes=N-M` is honoured with 206 +
//! Content-Range (416 past the end), and 200 responses carry `Accept-Ranges: bytes`,
//! unless range support is switched off for the path ([`Server::no_ranges`]) or for one
//! request ([`Fault::IgnoreRange`]). Every body has an `ETag` (a hash of its bytes) and
//! `If-None-Match` with it answers `304 Not Modified`.
//! The server stops (listener closed, stalled connections released) when dropped.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What happens to one request instead of (or on the way to) normal service.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and a short text body.
    Status(u16),
    /// Answer with this status and `Retry-After: secs`.
    RetryAfter(u16, u64),
    /// Send the headers with the full Content-Length and `n` body bytes, then close.
    DropAfter(usize),
    /// Send the headers and `after_bytes` body bytes, then nothing for `secs`, then close.
    Stall {
        /// Body bytes sent before stalling.
        after_bytes: usize,
        /// How long to stay silent (connection open) before closing.
        secs: u64,
    },
    /// Send the body in `chunk`-byte pieces `interval_ms` apart for the first
    /// `slow_bytes` bytes, then the rest at full speed: slow but never idle for long.
    Trickle {
        /// Bytes per piece.
        chunk: usize,
        /// Pause between pieces.
        interval_ms: u64,
        /// How much of the body is sent slowly.
        slow_bytes: usize,
    },
    /// `302 Found` with `Location:` this path on the same server.
    Redirect(String),
    /// Serve this request as if `Range` had not been sent (200, full body), while still
    /// advertising `Accept-Ranges: bytes`: a mirror node that does not do ranges.
    IgnoreRange,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Request target without the query string.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// All headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// When the request head had been read.
    pub at: Instant,
}

impl Request {
    /// The `N` of `Range: bytes=N-...`, if the request had one.
    pub fn range_start(&self) -> Option<u64> {
        let r = self.range.as_deref()?.strip_prefix("bytes=")?;
        r.split('-').next()?.trim().parse().ok()
    }
}

#[derive(Default)]
struct Route {
    body: Option<Vec<u8>>,
    script: VecDeque<Fault>,
    always: Option<Fault>,
    no_ranges: bool,
}

#[derive(Default)]
struct State {
    routes: BTreeMap<String, Route>,
    log: Vec<Request>,
}

/// A running server; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Plain HTTP on 127.0.0.1, an ephemeral port.
    pub fn http() -> Server {
        Server::start(None)
    }

    /// HTTPS on 127.0.0.1 with a certificate from `ca` for `127.0.0.1` and `localhost`.
    pub fn https(ca: &TestCa) -> Server {
        Server::start(Some(ca.server_config.clone()))
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let accept = {
            let (state, stop) = (state.clone(), stop.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = conn else { continue };
                    let (state, stop, tls) = (state.clone(), stop.clone(), tls.clone());
                    thread::spawn(move || serve_connection(tcp, tls, &state, &stop));
                }
            })
        };
        Server {
            addr,
            scheme,
            state,
            stop,
            accept: Some(accept),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// `http(s)://localhost:PORT` + `path`.
    pub fn url_localhost(&self, path: &str) -> String {
        format!("{}://localhost:{}{}", self.scheme, self.addr.port(), path)
    }

    fn route<R>(&self, path: &str, f: impl FnOnce(&mut Route) -> R) -> R {
        let mut st = self.state.lock().unwrap();
        f(st.routes.entry(path.to_string()).or_default())
    }

    /// Serves `body` at `path` (replacing what was there).
    pub fn put(&self, path: &str, body: impl Into<Vec<u8>>) {
        let body = body.into();
        self.route(path, |r| r.body = Some(body));
    }

    /// Stops serving `path` (404 from now on; its faults stay).
    pub fn remove(&self, path: &str) {
        self.route(path, |r| r.body = None);
    }

    /// Appends faults for the next requests to `path`, one per request, in order.
    pub fn script(&self, path: &str, faults: impl IntoIterator<Item = Fault>) {
        self.route(path, |r| r.script.extend(faults));
    }

    /// Applies `fault` to every request to `path` (after the script is used up).
    pub fn always(&self, path: &str, fault: Fault) {
        self.route(path, |r| r.always = Some(fault));
    }

    /// Ignores `Range` on `path`: always 200 with the full body, no Accept-Ranges.
    pub fn no_ranges(&self, path: &str) {
        self.route(path, |r| r.no_ranges = true);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    /// The requests for `path` so far.
    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// How many `GET`s `path` got.
    pub fn gets(&self, path: &str) -> usize {
        self.requests_for(path)
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// A stream the connection handler can close abruptly.
trait Conn: Read + Write {
    fn close(&mut self);
}

impl Conn for TcpStream {
    fn close(&mut self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn close(&mut self) {
        // No close_notify: the peer sees the connection cut, as with a plain drop.
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

fn serve_connection(
    tcp: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: &Mutex<State>,
    stop: &AtomicBool,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(20)));
    let _ = tcp.set_nodelay(true);
    match tls {
        None => {
            let mut s = tcp;
            let _ = serve(&mut s, state, stop);
        }
        Some(cfg) => {
            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                return;
            };
            let mut s = rustls::StreamOwned::new(conn, tcp);
            // A failed handshake (client refusing the certificate) surfaces here.
            let _ = serve(&mut s, state, stop);
        }
    }
}

/// Reads the request head (up to the blank line).
fn read_head(s: &mut dyn Conn) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        304 => "Not Modified",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn head_bytes(code: u16, headers: &[(&str, String)]) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {code} {}\r\n", reason(code));
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("Connection: close\r\n\r\n");
    h.into_bytes()
}

fn simple(s: &mut dyn Conn, code: u16, extra: &[(&str, String)], head_only: bool) {
    let body = format!("{code} {}\n", reason(code));
    let mut headers = vec![
        ("Content-Type", "text/plain".to_string()),
        ("Content-Length", body.len().to_string()),
    ];
    headers.extend(extra.iter().cloned());
    let _ = s.write_all(&head_bytes(code, &headers));
    if !head_only {
        let _ = s.write_all(body.as_bytes());
    }
    let _ = s.flush();
}

/// Sleeps `d` in small steps; false when the server is stopping.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep((end - Instant::now()).min(Duration::from_millis(20)));
    }
    true
}

/// Parses `bytes=N-` / `bytes=N-M` against a body of `len` bytes: Some(Ok(range)) to
/// serve, Some(Err(())) when not satisfiable, None when absent or not understood.
fn parse_range(h: Option<&str>, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = h?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let start: usize = a.trim().parse().ok()?;
    let end: usize = match b.trim() {
        "" => len,
        e => e.parse::<usize>().ok()?.saturating_add(1).min(len),
    };
    if start >= len || start >= end {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

fn serve(s: &mut dyn Conn, state: &Mutex<State>, stop: &AtomicBool) -> io::Result<()> {
    let Some(head) = read_head(s)? else {
        return Ok(());
    };
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let range = headers
        .iter()
        .find(|(k, _)| k == "range")
        .map(|(_, v)| v.clone());
    let if_none_match = headers
        .iter()
        .find(|(k, _)| k == "if-none-match")
        .map(|(_, v)| v.clone());
    let head_only = method == "HEAD";

    // Record, then pick this request's fault and the body under one lock.
    let (fault, body, no_ranges) = {
        let mut st = state.lock().unwrap();
        st.log.push(Request {
            method: method.clone(),
            path: path.clone(),
            range: range.clone(),
            headers,
            at: Instant::now(),
        });
        match st.routes.get_mut(&path) {
            None => (None, None, false),
            Some(r) => {
                let f = r.script.pop_front().or_else(|| r.always.clone());
                (f, r.body.clone(), r.no_ranges)
            }
        }
    };

    match &fault {
        Some(Fault::Status(code)) => {
            simple(s, *code, &[], head_only);
            return Ok(());
        }
        Some(Fault::RetryAfter(code, secs)) => {
            simple(s, *code, &[("Retry-After", secs.to_string())], head_only);
            return Ok(());
        }
        Some(Fault::Redirect(to)) => {
            simple(s, 302, &[("Location", to.clone())], head_only);
            return Ok(());
        }
        _ => {}
    }
    let Some(body) = body else {
        simple(s, 404, &[], head_only);
        return Ok(());
    };
    if method != "GET" && method != "HEAD" {
        simple(s, 400, &[], head_only);
        return Ok(());
    }

    // A strong validator from the content: an unchanged body answers 304.
    let etag = format!("\"{:016x}\"", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        h.finish()
    });
    if if_none_match.as_deref() == Some(etag.as_str()) {
        simple(s, 304, &[("ETag", etag)], true);
        return Ok(());
    }
    let len = body.len();
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("ETag", etag),
    ];
    let ignore = no_ranges || matches!(fault, Some(Fault::IgnoreRange));
    let (code, start, end) = match (ignore, parse_range(range.as_deref(), len)) {
        (true, _) | (false, None) => (200, 0, len),
        (false, Some(Ok((a, b)))) => (206, a, b),
        (false, Some(Err(()))) => {
            simple(
                s,
                416,
                &[
                    ("Content-Range", format!("bytes */{len}")),
                    ("Accept-Ranges", "bytes".into()),
                ],
                head_only,
            );
            return Ok(());
        }
    };
    if !no_ranges {
        headers.push(("Accept-Ranges", "bytes".into()));
    }
    if code == 206 {
        headers.push(("Content-Range", format!("bytes {start}-{}/{len}", end - 1)));
    }
    headers.push(("Content-Length", (end - start).to_string()));
    s.write_all(&head_bytes(code, &headers))?;
    if head_only {
        return s.flush();
    }
    let part = &body[start..end];
    match fault {
        Some(Fault::DropAfter(n)) => {
            s.write_all(&part[..n.min(part.len())])?;
            s.flush()?;
            s.close();
        }
        Some(Fault::Stall { after_bytes, secs }) => {
            s.write_all(&part[..after_bytes.min(part.len())])?;
            s.flush()?;
            nap(Duration::from_secs(secs), stop);
            s.close();
        }
        Some(Fault::Trickle {
            chunk,
            interval_ms,
            slow_bytes,
        }) => {
            let slow = slow_bytes.min(part.len());
            for piece in part[..slow].chunks(chunk.max(1)) {
                s.write_all(piece)?;
                s.flush()?;
                if !nap(Duration::from_millis(interval_ms), stop) {
                    s.close();
                    return Ok(());
                }
            }
            s.write_all(&part[slow..])?;
            s.flush()?;
        }
        _ => {
            s.write_all(part)?;
            s.flush()?;
        }
    }
    Ok(())
}

/// A test CA and a server certificate it signed for `127.0.0.1` and `localhost`.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub pem: String,
    /// The CA certificate, DER.
    pub der: rustls::pki_types::CertificateDer<'static>,
    /// The server certificate and its PKCS#8 key, PEM (for servers outside this process).
    pub leaf_pem: (String, String),
    server_config: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// A fresh CA (rcgen, ECDSA P-256) and server certificate.
    pub fn new() -> TestCa {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "vmagent test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
            .expect("leaf params");
        leaf.distinguished_name
            .push(DnType::CommonName, "vmagent test server");
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");

        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)
            .expect("server config");
        TestCa {
            pem: ca_cert.pem(),
            der: ca_cert.der().clone(),
            leaf_pem: (leaf_cert.pem(), leaf_key.serialize_pem()),
            server_config: Arc::new(cfg),
        }
    }

    /// The TLS configuration of a server with this CA's certificate (for servers other
    /// than [`Server`], such as the TokenRequest endpoint).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config.clone()
    }

    /// Writes the CA certificate to `dir/test-ca.pem` (for `--ca-file`).
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let p = dir.join("test-ca.pem");
        std::fs::write(&p, &self.pem).expect("write CA pem");
        p
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
