//! The optional report URL: every health change is POSTed as the status JSON document,
//! from a task on the daemon's runtime so the loop never waits on the network. Only the
//! newest document is kept: an older one not yet sent is replaced, never sent late.
//!
//! Authenticated (`[health]`): an `Authorization` value from a root-only file and an
//! optional client certificate (mTLS), over the same transport rules as the bundle
//! source (https, or http to loopback; the CA files and the redirect policy of the one
//! client). Each document carries `sequence`, strictly increasing for this VM, also
//! across restarts (the larger of the last one sent plus one, kept in the state
//! directory, and the current Unix time in milliseconds), and `reporter` (hostname and
//! the token's identity), so a receiver can drop replays and tell VMs apart. A report
//! that cannot be authenticated as configured is never sent without it.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::net::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use crate::net::retry::{self, Backoff};
use crate::net::{self, Client, Request};
use crate::root::Root;
use crate::status::StatusFile;

/// Attempts per document (with 1 s, 2 s, 4 s... backoff, jittered).
const ATTEMPTS: u32 = 5;

/// One POST may take this long in all (a report is small).
const DEADLINE: Duration = Duration::from_secs(10);

/// The last sequence number sent, in the state directory.
const SEQUENCE_FILE: &str = "report-sequence";

/// Sends status documents to a URL in the background. Dropping it ends the task.
pub struct Reporter {
    tx: watch::Sender<Option<Vec<u8>>>,
    /// Where the last sequence number is kept (`None`: nowhere, e.g. no state dir).
    seq_file: Option<PathBuf>,
    last: Cell<u64>,
}

/// What a sender needs: the client and the secret headers.
struct Channel {
    client: Client,
    headers: HeaderMap,
}

impl Reporter {
    /// The reporter for `cfg`'s health.report_url (none without one), using the
    /// process's one client: its CA files (package.ca_file, `[source] ca_file`) are
    /// trusted for the report URL too. Must be called on the daemon's runtime.
    pub fn for_config(cfg: &Config, root: &Root) -> Option<Reporter> {
        let url = cfg.health.report_url.clone()?;
        let seq_file =
            Some(root.state_dir().join(SEQUENCE_FILE)).and_then(|p| root.resolve(&p).ok());
        Some(Reporter::new(url, channel(cfg, root), seq_file))
    }

    /// Starts the sender task for `url` (`Err`: why it cannot send; logged, and nothing
    /// is ever sent).
    fn new(url: String, channel: Result<Channel, String>, seq_file: Option<PathBuf>) -> Self {
        let (tx, rx) = watch::channel(None);
        match channel {
            Ok(c) => {
                tokio::spawn(sender(c, url, rx));
            }
            Err(e) => tracing::error!(error = %e, "report URL: no report is sent"),
        }
        let last = seq_file.as_deref().map_or(0, read_sequence);
        Reporter {
            tx,
            seq_file,
            last: Cell::new(last),
        }
    }

    /// Queues `doc` (never blocks), URL secrets masked like the status file's, with the
    /// next sequence number and the reporter's identity.
    pub fn send(&self, doc: &StatusFile) {
        let mut doc = doc.clone();
        doc.redact();
        let Ok(mut v) = serde_json::to_value(&doc) else {
            return;
        };
        let seq = next_sequence(self.last.get(), crate::timefmt::now_millis());
        self.last.set(seq);
        if let Some(f) = &self.seq_file {
            if let Err(e) = crate::fsx::write_atomic(f, seq.to_string().as_bytes(), 0o600, None)
                .and_then(|()| crate::fsx::sync_dir(f.parent().unwrap_or(Path::new("/"))))
            {
                tracing::warn!(error = %e, "cannot keep the report sequence number");
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.insert("sequence".into(), seq.into());
            o.insert(
                "reporter".into(),
                serde_json::json!({
                    "hostname": hostname(),
                    "identity": doc.token.as_ref().and_then(|t| t.subject.clone()),
                }),
            );
        }
        if let Ok(body) = serde_json::to_vec(&v) {
            self.tx.send_replace(Some(body));
        }
    }
}

/// The next sequence number: above the last one, and at least the current time in
/// milliseconds, so a lost or reset counter file still yields increasing numbers.
pub fn next_sequence(last: u64, now_ms: u64) -> u64 {
    last.saturating_add(1).max(now_ms)
}

/// The last number sent, from the (untrusted) state file; 0 when unreadable.
fn read_sequence(p: &Path) -> u64 {
    crate::fsx::read_file(p, 64)
        .ok()
        .flatten()
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// This machine's hostname (the kernel's).
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The client (with the client certificate, if configured) and the Authorization
/// header, from files that must be root's and private.
fn channel(cfg: &Config, root: &Root) -> Result<Channel, String> {
    let h = &cfg.health;
    let resolve = |key: &str, p: &Path| {
        root.resolve(p)
            .map_err(|e| format!("health.{key} '{}': {e}", p.display()))
    };
    let mut settings = cfg.net_settings(root, None).map_err(|e| e.to_string())?;
    settings.identity = match (&h.report_client_cert, &h.report_client_key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let key = resolve("report_client_key", k)?;
            private(&key, "report_client_key")?;
            Some((resolve("report_client_cert", c)?, key))
        }
        _ => {
            return Err("health.report_client_cert and health.report_client_key go together: set both (PEM files) or neither".into())
        }
    };
    let mut headers = HeaderMap::new();
    if let Some(f) = &h.report_authorization_file {
        let host = resolve("report_authorization_file", f)?;
        private(&host, "report_authorization_file")?;
        let data = crate::fsx::read_file(&host, 16 << 10)
            .map_err(|e| format!("health.report_authorization_file {}: {e}", host.display()))?
            .ok_or_else(|| {
                format!(
                    "health.report_authorization_file {}: no such file",
                    host.display()
                )
            })?;
        let text = String::from_utf8(data).unwrap_or_default();
        let mut value = HeaderValue::from_str(text.trim()).map_err(|_| {
            format!(
                "health.report_authorization_file {}: not a valid header value (one line, e.g. `Bearer TOKEN`)",
                host.display()
            )
        })?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let client = Client::shared(&settings).map_err(|e| e.to_string())?;
    Ok(Channel { client, headers })
}

/// A secret file must be root's and unreadable by others.
fn private(host: &Path, key: &str) -> Result<(), String> {
    match crate::fsx::meta(host) {
        Ok(Some(m)) => match crate::fsx::secret_verdict(m.uid, m.mode) {
            crate::fsx::Verdict::Good => Ok(()),
            crate::fsx::Verdict::NotRoot(uid) => Err(format!(
                "health.{key} {} is owned by uid {uid}, not root: chown root:root {}",
                host.display(),
                host.display()
            )),
            crate::fsx::Verdict::Open(mode) => Err(format!(
                "health.{key} {} has mode {mode:04o}, which lets other users read it: chmod 600 {}",
                host.display(),
                host.display()
            )),
        },
        Ok(None) => Err(format!("health.{key} {}: no such file", host.display())),
        Err(e) => Err(format!("health.{key} {}: {e}", host.display())),
    }
}

/// Sends the newest document, retrying with backoff; a newer one replaces it at once.
async fn sender(channel: Channel, url: String, mut rx: watch::Receiver<Option<Vec<u8>>>) {
    let Channel { client, headers } = channel;
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
            let req = Request::post_json(&url, body.clone())
                .secret_headers(headers.clone())
                .deadline(DEADLINE);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_only_grow() {
        assert_eq!(next_sequence(0, 1_700_000_000_000), 1_700_000_000_000);
        assert_eq!(
            next_sequence(1_700_000_000_000, 1_700_000_000_000),
            1_700_000_000_001
        );
        // A clock stepped back: still above the last one.
        assert_eq!(
            next_sequence(1_800_000_000_000, 1_700_000_000_000),
            1_800_000_000_001
        );
        assert_eq!(next_sequence(u64::MAX, 0), u64::MAX);
    }
}
