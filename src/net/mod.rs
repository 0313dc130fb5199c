//! The one HTTP layer: a client built once per process (system roots plus optional CA
//! files, proxies from the environment but never for loopback, connect and idle
//! timeouts, a total deadline per request covering headers and body), the one
//! [`redirect`] policy and the one [`retry`] policy, and typed [`Error`]s.
//!
//! reqwest is used through its async API only. Synchronous callers use [`block_on`].
//! Leaf module: imports nothing of vmagent's but [`crate::redact`] and [`crate::text`].

pub mod probe;
pub mod redirect;
pub mod retry;

mod client;
mod error;

pub use client::{Client, Request, Response, Settings};
pub use error::{Error, Timeout};
/// HTTP vocabulary for callers, so nothing above `net` names reqwest.
pub use reqwest::{header, StatusCode, Url};

use std::future::Future;
use std::sync::OnceLock;

/// Whether `url` may carry a secret (a token, a credential, a bundle): https, or plain
/// http to a loopback address only, so nothing secret crosses a network unencrypted.
pub fn private_transport(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    match url.scheme() {
        "https" => true,
        "http" => loopback,
        _ => false,
    }
}

/// Runs `fut` to completion from synchronous code.
///
/// Inside a thread that has a tokio runtime handle (a `spawn_blocking` thread of the
/// daemon's runtime) the future runs on that runtime; elsewhere on one lazily created,
/// process-wide current-thread runtime (so the client's pooled connections live on one
/// runtime). **Never call this from an async task**: blocking a runtime thread on
/// itself panics (tokio refuses) or deadlocks; async code awaits the future instead.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        return handle.block_on(fut);
    }
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("vmagent-net")
            .build()
            // Only fails when the OS refuses an epoll fd or a timer: nothing can work.
            .expect("cannot start the HTTP runtime (out of file descriptors?)")
    })
    .block_on(fut)
}

/// reqwest is built without a bundled crypto provider; ring is ours. Installing twice
/// is harmless (the first wins).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The proxy's default readiness URL (Envoy's health port, served on all interfaces);
/// here so the config's defaults need not import the health layer.
pub const READY_URL: &str = "http://127.0.0.1:15021/healthz/ready";
