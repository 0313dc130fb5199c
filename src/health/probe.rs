//! The readiness probe: `GET http://127.0.0.1:15021/healthz/ready`, 200 = ready. Istio
//! logs "Envoy proxy is ready" only when something calls this endpoint; on a VM nothing
//! does, so vmagent does.

use std::time::Duration;

use crate::net::{self, Client, Request};

/// Default readiness URL (see [`net::READY_URL`]).
pub const DEFAULT_URL: &str = net::READY_URL;

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

/// Probes `url` once with the process's shared client. A local endpoint that takes more
/// than a second is not ready; the client never sends loopback through a proxy.
/// Blocking: for the CLI's wait loop; an async task uses [`probe_async`].
pub fn probe(client: &Client, url: &str) -> Probe {
    net::block_on(probe_async(client, url))
}

/// [`probe`] for async callers (the daemon's loop).
pub async fn probe_async(client: &Client, url: &str) -> Probe {
    let req = Request::get(url).deadline(Duration::from_secs(1));
    match client.send(req).await {
        Ok(r) if r.status().as_u16() == 200 => Probe::Ready,
        Ok(r) => Probe::NotReady(r.status().as_u16()),
        Err(e) => Probe::Down(e.to_string()),
    }
}

/// One URL to probe, with the client to probe it with.
pub struct Prober {
    url: String,
    /// `Err`: why there is no client (every probe then reports it).
    client: Result<Client, String>,
}

impl Prober {
    /// A prober for `url` using `client` (the process's shared one).
    pub fn new(url: &str, client: Client) -> Self {
        Prober::with(url, Ok(client))
    }

    /// A prober for `url`, or one that reports why there is no client.
    pub fn with(url: &str, client: Result<Client, String>) -> Self {
        Prober {
            url: url.to_string(),
            client,
        }
    }

    /// The URL probed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Probes once (blocking; see [`probe`]).
    pub fn probe(&self) -> Probe {
        net::block_on(self.probe_async())
    }

    /// Probes once, for async callers.
    pub async fn probe_async(&self) -> Probe {
        match &self.client {
            Ok(c) => probe_async(c, &self.url).await,
            Err(e) => Probe::Down(format!("no HTTP client: {e}")),
        }
    }
}
