//! The optional report URL: every health change is POSTed as the status JSON document,
//! from a worker thread so the daemon's loop never waits on the network. Only the
//! newest document is kept: an older one still queued is replaced, never sent late.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::status::Status;

/// Attempts per document (with 1 s, 2 s, 4 s... backoff).
const ATTEMPTS: u32 = 5;

/// Sends status documents to a URL in the background.
pub struct Reporter {
    tx: Sender<Vec<u8>>,
}

impl Reporter {
    /// Starts the worker for `url`.
    pub fn new(url: String) -> Self {
        let (tx, rx) = channel::<Vec<u8>>();
        std::thread::Builder::new()
            .name("vmagent-report".into())
            .spawn(move || worker(&url, &rx))
            .map_err(|e| tracing::warn!(error = %e, "cannot start the report thread"))
            .ok();
        Reporter { tx }
    }

    /// Queues `doc` (never blocks), URL secrets masked like the status file's.
    pub fn send(&self, doc: &Status) {
        let mut doc = doc.clone();
        doc.redact();
        if let Ok(body) = serde_json::to_vec(&doc) {
            let _ = self.tx.send(body);
        }
    }
}

fn worker(url: &str, rx: &Receiver<Vec<u8>>) {
    // The report URL may carry credentials too: logs show it masked.
    let shown = crate::redact::url(url);
    crate::package::fetch::install_crypto_provider();
    let client = match reqwest::blocking::Client::builder()
        .user_agent(concat!("vmagent/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "report URL: no HTTP client");
            return;
        }
    };
    let newest = |mut body: Vec<u8>| {
        while let Ok(b) = rx.try_recv() {
            body = b;
        }
        body
    };
    while let Ok(first) = rx.recv() {
        let mut body = newest(first);
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send();
            match r {
                Ok(resp) if resp.status().is_success() => break,
                Ok(resp) => tracing::warn!(
                    url = %shown,
                    status = resp.status().as_u16(),
                    attempt,
                    "report URL refused the health document"
                ),
                Err(e) => {
                    tracing::warn!(url = %shown, error = %crate::package::fetch::error_chain(&e), attempt, "report URL unreachable")
                }
            }
            if attempt == ATTEMPTS {
                break;
            }
            // A newer document replaces this one; otherwise retry after the backoff.
            match rx.recv_timeout(delay) {
                Ok(b) => {
                    body = newest(b);
                    delay = Duration::from_secs(1);
                }
                Err(RecvTimeoutError::Timeout) => delay *= 2,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}
