//! The optional report URL: every health change is POSTed as the status JSON document,
//! from a task on the daemon's runtime so the loop never waits on the network. Only the
//! newest document is kept: an older one not yet sent is replaced, never sent late.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::net::retry::{self, Backoff};
use crate::net::{self, Client, Request};
use crate::root::Root;
use crate::status::StatusFile;

/// Attempts per document (with 1 s, 2 s, 4 s... backoff, jittered).
const ATTEMPTS: u32 = 5;

/// One POST may take this long in all (a report is small).
const DEADLINE: Duration = Duration::from_secs(10);

/// Sends status documents to a URL in the background. Dropping it ends the task.
pub struct Reporter {
    tx: watch::Sender<Option<Vec<u8>>>,
}

impl Reporter {
    /// The reporter for `cfg`'s health.report_url (none without one), using the
    /// process's one client: its CA files (package.ca_file, `[source] ca_file`) are
    /// trusted for the report URL too. Must be called on the daemon's runtime.
    pub fn for_config(cfg: &Config, root: &Root) -> Option<Reporter> {
        let url = cfg.health.report_url.clone()?;
        let client = cfg
            .net_settings(root, None)
            .map_err(|e| e.to_string())
            .and_then(|s| Client::shared(&s).map_err(|e| e.to_string()));
        Some(Reporter::new(url, client))
    }

    /// Starts the sender task for `url` with `client` (`Err`: why there is none; logged).
    pub fn new(url: String, client: Result<Client, String>) -> Self {
        let (tx, rx) = watch::channel(None);
        match client {
            Ok(client) => {
                tokio::spawn(sender(client, url, rx));
            }
            Err(e) => tracing::warn!(error = %e, "report URL: no HTTP client"),
        }
        Reporter { tx }
    }

    /// Queues `doc` (never blocks), URL secrets masked like the status file's.
    pub fn send(&self, doc: &StatusFile) {
        let mut doc = doc.clone();
        doc.redact();
        if let Ok(body) = serde_json::to_vec(&doc) {
            self.tx.send_replace(Some(body));
        }
    }
}

/// Sends the newest document, retrying with backoff; a newer one replaces it at once.
async fn sender(client: Client, url: String, mut rx: watch::Receiver<Option<Vec<u8>>>) {
    let policy = Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(30),
        Duration::from_secs(60),
    );
    // Ends when the Reporter is dropped (config reload, daemon exit).
    'docs: while rx.changed().await.is_ok() {
        let Some(body) = rx.borrow_and_update().clone() else {
            continue;
        };
        let mut failures = 0;
        for attempt in 1..=ATTEMPTS {
            let req = Request::post_json(&url, body.clone()).deadline(DEADLINE);
            let retry_after = match client.send(req).await.and_then(|r| r.error_for_status()) {
                Ok(_) => continue 'docs,
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
            // A newer document replaces this one: the outer loop picks it up now.
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                r = rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    rx.mark_changed();
                    continue 'docs;
                }
            }
        }
    }
}
