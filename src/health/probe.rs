//! The readiness probe: `GET http://127.0.0.1:15021/healthz/ready`, 200 = ready. Istio
//! logs "Envoy proxy is ready" only when something calls this endpoint; on a VM nothing
//! does, so vmagent does.

use std::time::Duration;

/// Default readiness URL (Envoy's health port, served on all interfaces).
pub const DEFAULT_URL: &str = "http://127.0.0.1:15021/healthz/ready";

/// One probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// HTTP 200.
    Ready,
    /// Answered, but not 200 (Envoy up, not configured yet).
    NotReady(u16),
    /// Nothing answered (proxy not running, or port not open yet).
    Down(String),
}

impl Probe {
    /// The answer as an evidence line.
    pub fn describe(&self, url: &str) -> String {
        match self {
            Probe::Ready => format!("{url} answered HTTP 200"),
            Probe::NotReady(code) => format!("{url} answered HTTP {code}"),
            Probe::Down(e) => format!("{url}: {e}"),
        }
    }
}

/// Probes one URL.
pub struct Prober {
    url: String,
    client: Option<reqwest::blocking::Client>,
}

impl Prober {
    /// A prober for `url`; requests time out after a second (a local endpoint that takes
    /// longer is not ready).
    pub fn new(url: &str) -> Self {
        crate::package::fetch::install_crypto_provider();
        let client = reqwest::blocking::Client::builder()
            // Loopback must never go through an HTTP(S)_PROXY from the environment.
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(1))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok();
        Prober {
            url: url.to_string(),
            client,
        }
    }

    /// The URL probed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Probes once.
    pub fn probe(&self) -> Probe {
        let Some(c) = &self.client else {
            return Probe::Down("no HTTP client".into());
        };
        match c.get(&self.url).send() {
            Ok(r) if r.status().as_u16() == 200 => Probe::Ready,
            Ok(r) => Probe::NotReady(r.status().as_u16()),
            Err(e) => Probe::Down(crate::package::fetch::error_chain(&e)),
        }
    }
}
