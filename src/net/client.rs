//! The client: built once per process ([`Client::shared`]) and cloned (an `Arc` inside).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, LOCATION, RETRY_AFTER};
use reqwest::{Method, Proxy, StatusCode, Url};
use tokio::time::{timeout_at, Instant};

use super::error::{Error, Timeout};
use super::redirect;
use crate::redact;

/// How a client connects. Equal settings share one client per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Extra trusted CAs (PEM files, host paths) on top of the system roots.
    pub ca_files: Vec<PathBuf>,
    /// TCP + TLS connect timeout.
    pub connect: Duration,
    /// A request fails when no byte arrives for this long.
    pub idle: Duration,
    /// Default total deadline per request (headers and body); see
    /// [`Request::deadline`].
    pub deadline: Duration,
    /// A client certificate and its key (PEM files, host paths) for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ca_files: Vec::new(),
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            deadline: Duration::from_secs(3600),
            identity: None,
        }
    }
}

/// The process's HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
    settings: Arc<Settings>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Client {
    /// Builds a client: rustls with the system roots plus `settings.ca_files`, proxies
    /// from HTTP(S)_PROXY / ALL_PROXY / NO_PROXY except for loopback addresses, the
    /// timeouts, and no automatic redirects (see [`redirect`]).
    pub fn new(settings: Settings) -> Result<Client, Error> {
        super::install_crypto_provider();
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("vmagent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect)
            .read_timeout(settings.idle)
            .redirect(reqwest::redirect::Policy::none())
            // reqwest's system proxy matcher sends loopback through HTTP_PROXY too (only
            // NO_PROXY exempts anything): the proxies are set up here instead.
            .no_proxy();
        for p in env_proxies()? {
            b = b.proxy(p);
        }
        for ca in &settings.ca_files {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::Setup(format!("CA file '{}': {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Setup(format!(
                    "CA file '{}': not PEM certificates: {e}",
                    ca.display()
                ))
            })?;
            b = b.tls_certs_merge(certs);
        }
        if let Some((cert, key)) = &settings.identity {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| {
                    Error::Setup(format!("client certificate file '{}': {e}", p.display()))
                })
            };
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                Error::Setup(format!(
                    "client certificate '{}' with key '{}': not a PEM certificate and private key: {}",
                    cert.display(),
                    key.display(),
                    crate::text::error_chain(&e)
                ))
            })?;
            b = b.identity(id);
        }
        let inner = b
            .build()
            .map_err(|e| Error::Setup(crate::text::error_chain(&e)))?;
        Ok(Client {
            inner,
            settings: Arc::new(settings),
        })
    }

    /// The process's client for `settings`: built on first use and shared after that
    /// (a new one only for other settings, e.g. a reloaded config with another CA; the
    /// last few are kept, so alternating users do not rebuild).
    pub fn shared(settings: &Settings) -> Result<Client, Error> {
        const KEEP: usize = 4;
        static SHARED: Mutex<Vec<Client>> = Mutex::new(Vec::new());
        let mut kept = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = kept.iter().find(|c| *c.settings == *settings) {
            return Ok(c.clone());
        }
        let c = Client::new(settings.clone())?;
        if kept.len() == KEEP {
            kept.remove(0);
        }
        kept.push(c.clone());
        Ok(c)
    }

    /// What this client was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Sends `req`, following redirects by the one [`redirect`] policy (GET and HEAD
    /// only; other methods get the redirect back as their response). The deadline
    /// starts now and also bounds reading the body through the [`Response`].
    pub async fn send(&self, req: Request) -> Result<Response, Error> {
        let total = req.deadline.unwrap_or(self.settings.deadline);
        let deadline = Instant::now() + total;
        let original = Url::parse(&req.url).map_err(|e| Error::Invalid {
            url: redact::url(&req.url),
            detail: format!("not a valid URL: {e}"),
        })?;
        let follow = req.method == Method::GET || req.method == Method::HEAD;
        let mut url = original.clone();
        let mut secrets = true;
        for _ in 0..=redirect::MAX_HOPS {
            let shown = redact::url(url.as_str());
            let mut rb = self
                .inner
                .request(req.method.clone(), url.clone())
                .headers(req.headers.clone());
            if secrets {
                rb = rb.headers(req.secrets.clone());
            }
            if let Some(body) = &req.body {
                rb = rb.body(body.clone());
            }
            let resp = match timeout_at(deadline, rb.send()).await {
                Err(_) => return Err(total_timeout(&shown, total)),
                Ok(Err(e)) => return Err(Error::from_reqwest(&shown, &e, self.settings.idle)),
                Ok(Ok(r)) => r,
            };
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match (follow && resp.status().is_redirection(), location) {
                (true, Some(loc)) if resp.status() != StatusCode::NOT_MODIFIED => {
                    let hop =
                        redirect::next(&original, &url, &loc).map_err(|why| Error::Redirect {
                            from: shown.clone(),
                            to: redact::url(&loc),
                            why: why.describe().into(),
                        })?;
                    url = hop.url;
                    secrets = hop.secrets;
                }
                _ => {
                    return Ok(Response {
                        inner: resp,
                        shown,
                        deadline,
                        total,
                        idle: self.settings.idle,
                    })
                }
            }
        }
        Err(Error::Redirect {
            from: redact::url(&req.url),
            to: redact::url(url.as_str()),
            why: format!("more than {} redirects", redirect::MAX_HOPS),
        })
    }
}

fn total_timeout(shown: &str, total: Duration) -> Error {
    Error::Timeout {
        url: shown.to_string(),
        which: Timeout::Total(total),
    }
}

/// A proxy constructor for one scheme.
type ProxyKind = fn(String) -> reqwest::Result<Proxy>;

/// Proxies from the environment, none of them for loopback (the readiness probe, a
/// local bundle server): NO_PROXY plus 127.0.0.0/8, ::1 and localhost.
fn env_proxies() -> Result<Vec<Proxy>, Error> {
    let var = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    let no_proxy = format!(
        "{},127.0.0.0/8,::1,localhost",
        var(["NO_PROXY", "no_proxy"]).unwrap_or_default()
    );
    let kinds: [(ProxyKind, [&str; 2]); 3] = [
        (Proxy::http, ["HTTP_PROXY", "http_proxy"]),
        (Proxy::https, ["HTTPS_PROXY", "https_proxy"]),
        (Proxy::all, ["ALL_PROXY", "all_proxy"]),
    ];
    let mut out = Vec::new();
    for (make, names) in kinds {
        if let Some(u) = var(names) {
            let p = make(u).map_err(|e| {
                Error::Setup(format!(
                    "${}: not a proxy URL: {}",
                    names[0],
                    crate::text::error_chain(&e)
                ))
            })?;
            out.push(p.no_proxy(reqwest::NoProxy::from_string(&no_proxy)));
        }
    }
    Ok(out)
}

/// One request to make.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: HeaderMap,
    secrets: HeaderMap,
    body: Option<Vec<u8>>,
    deadline: Option<Duration>,
}

impl Request {
    /// `GET url`.
    pub fn get(url: &str) -> Request {
        Request {
            method: Method::GET,
            url: url.to_string(),
            headers: HeaderMap::new(),
            secrets: HeaderMap::new(),
            body: None,
            deadline: None,
        }
    }

    /// `POST url` with a JSON body.
    pub fn post_json(url: &str, body: Vec<u8>) -> Request {
        let mut r = Request::get(url);
        r.method = Method::POST;
        r.body = Some(body);
        r.header(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
    }

    /// Adds a header sent on every hop (Range, If-None-Match). An Authorization header
    /// is treated as a secret (see [`Request::secret_headers`]).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Request {
        if name == AUTHORIZATION {
            self.secrets.insert(name, value);
        } else {
            self.headers.insert(name, value);
        }
        self
    }

    /// Configured headers (tokens, API keys): sent only to the origin of the request's
    /// URL, never to another origin a redirect points at.
    pub fn secret_headers(mut self, h: HeaderMap) -> Request {
        for (k, mut v) in h {
            if let Some(k) = k {
                v.set_sensitive(true);
                self.secrets.insert(k, v);
            }
        }
        self
    }

    /// This request's total deadline instead of the client's.
    pub fn deadline(mut self, d: Duration) -> Request {
        self.deadline = Some(d);
        self
    }
}

/// A response whose body reads are bounded by the request's deadline.
#[derive(Debug)]
pub struct Response {
    inner: reqwest::Response,
    shown: String,
    deadline: Instant,
    total: Duration,
    idle: Duration,
}

impl Response {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// Content-Length, when known.
    pub fn content_length(&self) -> Option<u64> {
        self.inner.content_length()
    }

    /// The URL answered, as it may be shown (after redirects, secrets masked).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The next piece of the body (`None` at its end).
    pub async fn chunk(&mut self) -> Result<Option<impl std::ops::Deref<Target = [u8]>>, Error> {
        match timeout_at(self.deadline, self.inner.chunk()).await {
            Err(_) => Err(total_timeout(&self.shown, self.total)),
            Ok(Err(e)) => Err(Error::from_reqwest(&self.shown, &e, self.idle)),
            Ok(Ok(c)) => Ok(c),
        }
    }

    /// The whole body, at most `limit` bytes (`Ok(None)` when it is longer).
    pub async fn bytes_limited(mut self, limit: usize) -> Result<Option<Vec<u8>>, Error> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await? {
            if out.len() + c.len() > limit {
                return Ok(None);
            }
            out.extend_from_slice(&c);
        }
        Ok(Some(out))
    }

    /// The response as an [`Error::Status`] (with its Retry-After) unless it is a
    /// success.
    pub fn error_for_status(self) -> Result<Response, Error> {
        if self.status().is_success() {
            Ok(self)
        } else {
            Err(self.status_error())
        }
    }

    /// This response's status as an error.
    pub fn status_error(&self) -> Error {
        let retry_after = self
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| super::retry::parse_retry_after(v, std::time::SystemTime::now()));
        Error::Status {
            url: self.shown.clone(),
            status: self.status().as_u16(),
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One client per process: equal settings give the same client (same `Arc`), so a
    /// monitor made anew on every reload builds nothing.
    #[test]
    fn shared_client_is_built_once_per_settings() {
        let s = Settings {
            deadline: Duration::from_secs(7),
            ..Settings::default()
        };
        let (a, b) = (Client::shared(&s).unwrap(), Client::shared(&s).unwrap());
        assert!(Arc::ptr_eq(&a.settings, &b.settings));
    }

    #[test]
    fn authorization_is_always_a_secret() {
        let r = Request::get("https://a.example/")
            .header(AUTHORIZATION, HeaderValue::from_static("Bearer x"))
            .header(reqwest::header::RANGE, HeaderValue::from_static("bytes=1-"));
        assert!(r.secrets.contains_key(AUTHORIZATION));
        assert!(!r.headers.contains_key(AUTHORIZATION));
        assert!(r.headers.contains_key(reqwest::header::RANGE));
    }
}
