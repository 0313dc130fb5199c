//! The optional report URL: every health change is POSTed as the status JSON document,
//! from a worker thread so the daemon's loop never waits on the network. Only the
//! newest document is kept: an older one still queued is replaced, never sent late.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::config::Config;
use crate::net::retry::{self, Backoff};
use crate::net::{self, Client, Request};
use crate::root::Root;
use crate::status::Status;

/// Attempts per document (with 1 s, 2 s, 4 s... backoff, jittered).
const ATTEMPTS: u32 = 5;

/// One POST may take this long in all (a report is small).
const DEADLINE: Duration = Duration::from_secs(10);

/// Sends status documents to a URL in the background.
pub struct Reporter {
    tx: Sender<Vec<u8>>,
}

impl Reporter {
    /// The reporter for `cfg`'s health.report_url (none without one), using the
    /// process's one client: its CA files (package.ca_file, [source] ca_file) are
    /// trusted for the report URL too.
    pub fn for_config(cfg: &Config, root: &Root) -> Option<Reporter> {
        let url = cfg.health.report_url.clone()?;
        let client = cfg
            .net_settings(root, None)
            .map_err(|e| e.to_string())
            .and_then(|s| Client::shared(&s).map_err(|e| e.to_string()));
        Some(Reporter::new(url, client))
    }

    /// Starts the worker for `url` with `client` (`Err`: why there is none; logged).
    pub fn new(url: String, client: Result<Client, String>) -> Self {
        let (tx, rx) = channel::<Vec<u8>>();
        match client {
            Ok(client) => {
                std::thread::Builder::new()
                    .name("vmagent-report".into())
                    .spawn(move || worker(&client, &url, &rx))
                    .map_err(|e| tracing::warn!(error = %e, "cannot start the report thread"))
                    .ok();
            }
            Err(e) => tracing::warn!(error = %e, "report URL: no HTTP client"),
        }
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

fn worker(client: &Client, url: &str, rx: &Receiver<Vec<u8>>) {
    let policy = Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(30),
        Duration::from_secs(60),
    );
    let newest = |mut body: Vec<u8>| {
        while let Ok(b) = rx.try_recv() {
            body = b;
        }
        body
    };
    while let Ok(first) = rx.recv() {
        let mut body = newest(first);
        let mut failures = 0;
        for attempt in 1..=ATTEMPTS {
            let req = Request::post_json(url, body.clone()).deadline(DEADLINE);
            // This thread is not a runtime thread: blocking here is the rule's own case.
            let result = net::block_on(async { client.send(req).await?.error_for_status() });
            let retry_after = match result {
                Ok(_) => break,
                Err(e @ net::Error::Status { .. }) => {
                    // The error's text shows the URL with its secrets masked.
                    tracing::warn!(error = %e, attempt, "report URL refused the health document");
                    e.retry_after()
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "report URL unreachable");
                    None
                }
            };
            if attempt == ATTEMPTS {
                break;
            }
            failures += 1;
            let delay = policy.delay(failures, retry_after, retry::unit_random());
            // A newer document replaces this one; otherwise retry after the backoff.
            match rx.recv_timeout(delay) {
                Ok(b) => {
                    body = newest(b);
                    failures = 0;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}
