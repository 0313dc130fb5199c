//! The Kubernetes TokenRequest endpoint on 127.0.0.1 over TLS (a [`TestCa`] certificate),
//! as the API server defines it: `POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token`
//! with `Authorization: Bearer {credential}` and an `authentication.k8s.io/v1`
//! TokenRequest body; `201 Created` with `status.token` and `status.expirationTimestamp`.
//! A wrong method is 405, another path 404, a wrong credential 401, a body that is not a
//! TokenRequest for audience istio-ca with expirationSeconds 400. [`Mode`] injects
//! faults. Tokens are JWT-shaped (`header.claims.signature`, base64url; unsigned: vmagent
//! does not verify signatures), each with a unique `jti`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::server::TestCa;

/// How the next requests are answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// A token for the service account, valid for the requested seconds.
    Issue,
    /// This status with a Kubernetes `Status` body.
    Status(u16),
    /// `429 Too Many Requests` with `Retry-After: secs`.
    TooMany(u64),
    /// `201` with a body that is not JSON.
    Malformed,
    /// A token for another service account of the namespace.
    OtherAccount,
    /// A token that expired a minute ago.
    Expired,
}

/// One request as the server judged it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `POST`, ...
    pub method: String,
    /// The request target.
    pub path: String,
    /// The bearer credential matched.
    pub authorized: bool,
    /// The body was a valid TokenRequest (else why not).
    pub body: Result<(), String>,
    /// `spec.expirationSeconds`.
    pub expiration: Option<u64>,
    /// When the request arrived (backoff and Retry-After spacing).
    pub at: std::time::Instant,
}

struct State {
    mode: Mode,
    seen: Vec<Seen>,
    issued: Vec<String>,
    next_id: u64,
}

/// The server; stops when dropped.
pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A JWT-shaped token for `sub` with the given times (unique by `jti`).
pub fn token(sub: &str, iat: i64, exp: i64, jti: &str) -> String {
    let claims = format!(
        r#"{{"aud":["istio-ca"],"exp":{exp},"iat":{iat},"iss":"https://kubernetes.default.svc.cluster.local","jti":"{jti}","sub":"{sub}"}}"#
    );
    String::from_utf8(super::jwt(&claims)).expect("ascii")
}

impl TokenServer {
    /// Serves tokens for `ns`/`sa` to holders of `credential`.
    pub fn start(ca: &TestCa, credential: &str, ns: &str, sa: &str) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Issue,
            seen: Vec::new(),
            issued: Vec::new(),
            next_id: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let cfg = ca.server_config();
        let want = Want {
            path: format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
            auth: format!("Bearer {credential}"),
            ns: ns.to_string(),
            sa: sa.to_string(),
        };
        let (st, stp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            let want = Arc::new(want);
            for conn in listener.incoming() {
                if stp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let (st, cfg, want) = (st.clone(), cfg.clone(), want.clone());
                std::thread::spawn(move || {
                    let _ = serve(tcp, cfg, &st, &want);
                });
            }
        });
        TokenServer { addr, state, stop }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Answers from now on.
    pub fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Every token handed out (any mode), in order.
    pub fn issued(&self) -> Vec<String> {
        self.state.lock().unwrap().issued.clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

struct Want {
    path: String,
    auth: String,
    ns: String,
    sa: String,
}

fn status_body(code: u16, reason: &str) -> String {
    format!(
        r#"{{"kind":"Status","apiVersion":"v1","status":"Failure","message":"{reason}","code":{code}}}"#
    )
}

/// Checks a TokenRequest body; its expirationSeconds.
fn check_body(body: &[u8]) -> Result<u64, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if v["apiVersion"] != "authentication.k8s.io/v1" || v["kind"] != "TokenRequest" {
        return Err("not an authentication.k8s.io/v1 TokenRequest".into());
    }
    if v["spec"]["audiences"] != serde_json::json!(["istio-ca"]) {
        return Err(format!("audiences {}", v["spec"]["audiences"]));
    }
    v["spec"]["expirationSeconds"]
        .as_u64()
        .ok_or_else(|| "no spec.expirationSeconds".into())
}

fn serve(
    tcp: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    st: &Mutex<State>,
    want: &Want,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let conn = rustls::ServerConnection::new(cfg).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut r = BufReader::new(&mut tls);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut len, mut auth) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let authorized = auth == want.auth;
    let checked = check_body(&body);
    let mut s = st.lock().unwrap();
    s.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorized,
        body: checked.as_ref().map(|_| ()).map_err(Clone::clone),
        expiration: checked.as_ref().ok().copied(),
        at: std::time::Instant::now(),
    });
    let (code, extra, out) = if method != "POST" {
        (405, String::new(), status_body(405, "method not allowed"))
    } else if path != want.path {
        (
            404,
            String::new(),
            status_body(404, "serviceaccounts not found"),
        )
    } else if !authorized {
        (401, String::new(), status_body(401, "Unauthorized"))
    } else {
        match (&checked, s.mode.clone()) {
            (Err(why), _) => (400, String::new(), status_body(400, &why.replace('"', "'"))),
            (_, Mode::Status(c)) => (c, String::new(), status_body(c, "injected")),
            (_, Mode::TooMany(secs)) => {
                let h = format!("Retry-After: {secs}\r\n");
                (429, h, status_body(429, "too many requests"))
            }
            (_, Mode::Malformed) => (201, String::new(), "{\"kind\":\"TokenRequest\",".into()),
            (Ok(secs), mode) => {
                s.next_id += 1;
                let (t0, jti) = (now(), format!("jti-{}", s.next_id));
                let sa = if mode == Mode::OtherAccount {
                    "intruder"
                } else {
                    &want.sa
                };
                let sub = format!("system:serviceaccount:{}:{sa}", want.ns);
                let exp = if mode == Mode::Expired {
                    t0 - 60
                } else {
                    t0 + *secs as i64
                };
                let tok = token(&sub, t0, exp, &jti);
                s.issued.push(tok.clone());
                let out = serde_json::json!({
                    "kind": "TokenRequest",
                    "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"creationTimestamp": null},
                    "spec": {"audiences": ["istio-ca"], "expirationSeconds": secs},
                    "status": {"token": tok, "expirationTimestamp": vmagent::timefmt::rfc3339(exp)},
                });
                (201, String::new(), out.to_string())
            }
        }
    };
    drop(s);
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        out.len()
    );
    tls.write_all(head.as_bytes())?;
    tls.write_all(out.as_bytes())?;
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.flush()
}
