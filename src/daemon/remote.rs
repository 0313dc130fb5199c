//! A bundle source at an https URL, polled: every `poll_interval_secs` (±20 % jitter, so
//! a fleet started together does not poll in step), with `If-None-Match` /
//! `If-Modified-Since` so an unchanged bundle costs a 304, and exponential backoff on
//! errors (doubling up to an hour; `Retry-After` honoured), so a struggling server is
//! never hammered.
//!
//! A new body is streamed (bounded) into the state dir and renamed over `fetched` only
//! when complete; the daemon then stages it like a local bundle. The validators
//! (ETag, Last-Modified) live beside it in `fetched.json`, so a restarted daemon does not
//! download an unchanged bundle again. An invalid body is kept too: the daemon reports
//! it and does not fetch it again until the server's copy changes.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::net::header::{
    HeaderMap, HeaderName, HeaderValue, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use crate::net::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::fsx;
use crate::net::retry::{self, Backoff};
use crate::net::{self, Client, Request};
use crate::redact;
use crate::root::Root;

/// The longest wait between polls after errors.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Largest bundle body accepted (the bundle reader's own stream bound).
fn max_body() -> u64 {
    crate::bundle::archive::Limits::default().stream
}

/// What the last successful fetch recorded.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Validators {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// What one poll found.
#[derive(Debug)]
pub enum Polled {
    /// The server's copy is the one we have (304).
    NotModified,
    /// A new body is in [`Remote::file`].
    New,
    /// The poll failed; the next one is backed off.
    Failed(String),
}

/// A polled URL source.
pub struct Remote {
    url: String,
    /// `url` as logs, errors and the status file show it (secrets masked).
    shown: String,
    client: Client,
    headers: HeaderMap,
    dir: PathBuf,
    interval: Duration,
    failures: u32,
    next: Instant,
    have: Validators,
}

impl Remote {
    /// A source for `url` (https, or http to a loopback address only: the bundle holds
    /// the token), storing into `dir` (host path).
    pub fn new(url: &str, cfg: &Config, root: &Root, dir: &Path) -> Result<Remote, String> {
        let shown = redact::url(url);
        let parsed = net::Url::parse(url).map_err(|e| format!("bundle URL '{shown}': {e}"))?;
        if !net::private_transport(&parsed) {
            return Err(format!(
                "bundle URL '{shown}': only https is accepted (the bundle carries the istio-token); use https:// with [source] ca_file for a private CA"
            ));
        }
        // The process's one client (its CA files include [source] ca_file).
        let settings = cfg
            .net_settings(root, None)
            .map_err(|e| format!("[source] ca_file / package.ca_file: {e}"))?;
        let client = Client::shared(&settings).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.source.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("[source] headers: '{k}' is not a valid header name"))?;
            let mut value = HeaderValue::from_str(v).map_err(|_| {
                format!("[source] headers: the value of '{k}' is not valid in a header")
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let have = fs::read(dir.join("fetched.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Validators>(&b).ok())
            .filter(|v| v.url == url && dir.join("fetched").is_file())
            .unwrap_or_default();
        Ok(Remote {
            url: url.to_string(),
            shown,
            client,
            headers,
            dir: dir.to_path_buf(),
            interval: Duration::from_secs(cfg.source.poll_interval_secs.max(1)),
            failures: 0,
            next: Instant::now(),
            have,
        })
    }

    /// The URL as it may be shown (userinfo and sensitive query values masked).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The last body fetched from this URL, if any.
    pub fn file(&self) -> Option<PathBuf> {
        let f = self.dir.join("fetched");
        (self.have.url == self.url && f.is_file()).then_some(f)
    }

    /// When the next poll is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// Polls now (bounded by the download timeouts and deadline) and schedules the next.
    /// Cancel-safe: dropped mid-body, nothing is stored and the old validators stand.
    pub async fn poll(&mut self) -> Polled {
        let (result, retry_after) = self.fetch().await;
        let wait = match &result {
            Polled::Failed(_) => {
                self.failures = self.failures.saturating_add(1);
                // The first failure already doubles the interval.
                self.policy()
                    .delay(self.failures + 1, retry_after, retry::unit_random())
            }
            _ => {
                self.failures = 0;
                self.policy().delay(1, None, retry::unit_random())
            }
        };
        self.next = Instant::now() + wait;
        result
    }

    /// The one retry policy, starting at the poll interval, 80-120 % jitter.
    fn policy(&self) -> Backoff {
        Backoff::new(self.interval, MAX_BACKOFF.max(self.interval), MAX_BACKOFF)
            .with_jitter(0.8, 1.2)
    }

    async fn fetch(&mut self) -> (Polled, Option<Duration>) {
        let url = &self.url;
        let shown = &self.shown;
        let mut req = Request::get(url).secret_headers(self.headers.clone());
        if self.file().is_some() {
            if let Some(e) = self
                .have
                .etag
                .as_deref()
                .and_then(|e| HeaderValue::from_str(e).ok())
            {
                req = req.header(IF_NONE_MATCH, e);
            }
            if let Some(m) = self
                .have
                .last_modified
                .as_deref()
                .and_then(|m| HeaderValue::from_str(m).ok())
            {
                req = req.header(IF_MODIFIED_SINCE, m);
            }
        }
        let mut resp = match self.client.send(req).await {
            Ok(r) => r,
            Err(e) => return (Polled::Failed(e.to_string()), None),
        };
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return (Polled::NotModified, None);
        }
        if !status.is_success() {
            let e = resp.status_error();
            return (Polled::Failed(e.to_string()), e.retry_after());
        }
        let header = |h| {
            resp.headers()
                .get(h)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(String::from)
        };
        let got = Validators {
            url: url.clone(),
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
        let body = match self.store(&mut resp).await {
            Ok(t) => t,
            Err(e) => return (Polled::Failed(format!("{shown}: {e}")), None),
        };
        // The detached signature (`URL.sig`) is fetched before either is kept, so the
        // bundle in place never sits beside another bundle's signature.
        let sig = match self.fetch_sig().await {
            Ok(s) => s,
            Err(failed) => return failed,
        };
        if let Err(e) = self.keep(body, sig) {
            return (Polled::Failed(format!("{shown}: {e}")), None);
        }
        if let Err(e) = fsx::write_json(&self.dir.join("fetched.json"), &got, 0o600) {
            tracing::warn!(error = %e, "cannot record the bundle's ETag; it is downloaded again next time");
        }
        self.have = got;
        (Polled::New, None)
    }

    /// `URL.sig`'s body; `None` when the server has none (404: an unsigned bundle,
    /// which `[trust] require_signature` then refuses).
    async fn fetch_sig(&self) -> Result<Option<Vec<u8>>, (Polled, Option<Duration>)> {
        let failed = |e: String| (Polled::Failed(format!("{}.sig: {e}", self.shown)), None);
        let Some(url) = sig_url(&self.url) else {
            return Err(failed("cannot form the signature's URL".into()));
        };
        let req = Request::get(&url).secret_headers(self.headers.clone());
        let resp = self
            .client
            .send(req)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let e = resp.status_error();
            let retry = e.retry_after();
            return Err((Polled::Failed(format!("{}.sig: {e}", self.shown)), retry));
        }
        match resp.bytes_limited(64 << 10).await {
            Ok(Some(b)) => Ok(Some(b)),
            Ok(None) => Err(failed("larger than 64 KiB: not a signature".into())),
            Err(e) => Err(failed(e.to_string())),
        }
    }

    /// Puts the signature (or its absence) and then the bundle in place.
    fn keep(&self, body: tempfile::NamedTempFile, sig: Option<Vec<u8>>) -> io::Result<()> {
        let sig_path = crate::trust::sig_path(&self.dir.join("fetched"));
        match sig {
            Some(s) => fsx::write_atomic(&sig_path, &s, 0o600, None)?,
            None => fsx::remove_if_exists(&sig_path)?,
        }
        body.persist(self.dir.join("fetched"))
            .map_err(|e| e.error)?;
        fsx::sync_dir(&self.dir)
    }

    /// Streams the body into a temporary file beside `fetched` (bounded, fsynced).
    async fn store(&self, body: &mut net::Response) -> io::Result<tempfile::NamedTempFile> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".fetching-")
            .tempfile_in(&self.dir)?;
        let limit = max_body();
        let mut n = 0u64;
        while let Some(piece) = body.chunk().await.map_err(io::Error::other)? {
            n += piece.len() as u64;
            if n > limit {
                return Err(io::Error::other(format!(
                    "the bundle is larger than {} MiB",
                    limit >> 20
                )));
            }
            tmp.as_file_mut().write_all(&piece)?;
        }
        tmp.as_file_mut().flush()?;
        tmp.as_file().sync_all()?;
        Ok(tmp)
    }
}

/// The URL of a bundle's detached signature: `.sig` appended to the path (the query,
/// e.g. a pre-signed URL's, stays).
fn sig_url(url: &str) -> Option<String> {
    let mut u = net::Url::parse(url).ok()?;
    let path = format!("{}.sig", u.path());
    u.set_path(&path);
    Some(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(url: &str, headers: &[(&str, &str)]) -> Result<Remote, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root = Root::new(dir.path()).map_err(|e| e.to_string())?;
        let mut cfg = Config::default();
        for (k, v) in headers {
            cfg.source.headers.insert(k.to_string(), v.to_string());
        }
        Remote::new(url, &cfg, &root, dir.path())
    }

    #[test]
    fn the_signature_sits_beside_the_bundle() {
        assert_eq!(
            sig_url("https://b.example/vm/bundle.tar?X-Amz-Signature=abc").as_deref(),
            Some("https://b.example/vm/bundle.tar.sig?X-Amz-Signature=abc")
        );
        assert_eq!(sig_url("not a url"), None);
    }

    #[test]
    fn only_https_or_loopback_http() {
        assert!(remote("https://bundles.example.com/vm.tar", &[]).is_ok());
        assert!(remote("http://127.0.0.1:8080/vm.tar", &[]).is_ok());
        assert!(remote("http://localhost/vm.tar", &[]).is_ok());
        let e = remote("http://bundles.example.com/vm.tar", &[]).err();
        assert!(e.is_some_and(|e| e.contains("only https")));
        assert!(remote("ftp://bundles.example.com/vm.tar", &[]).is_err());
        assert!(remote("https://", &[]).is_err());
    }

    #[test]
    fn errors_do_not_show_url_secrets() {
        let e = remote(
            "http://u:pa55word@bundles.example/vm.tar?access_token=T0k",
            &[],
        )
        .err();
        assert!(
            e.as_ref().is_some_and(|e| e.contains("only https")
                && !e.contains("pa55word")
                && !e.contains("T0k")),
            "{e:?}"
        );
        let mut r = match remote(
            "http://u:pa55word@127.0.0.1:9/b.tar?access_token=T0k&x=1",
            &[],
        ) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            r.shown(),
            "http://***@127.0.0.1:9/b.tar?access_token=***&x=1"
        );
        match crate::net::block_on(r.poll()) {
            Polled::Failed(e) => assert!(
                e.contains("127.0.0.1:9/b.tar") && !e.contains("pa55word") && !e.contains("T0k"),
                "{e}"
            ),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn bad_headers_are_named() {
        let e = remote("https://b.example/x", &[("Bad Name", "v")]).err();
        assert!(e.is_some_and(|e| e.contains("'Bad Name'")));
        let e = remote("https://b.example/x", &[("X-Token", "a\nb")]).err();
        assert!(e.is_some_and(|e| e.contains("'X-Token'")));
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let mut r = match remote("http://127.0.0.1:9/unreachable", &[]) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        r.interval = Duration::from_secs(10);
        let mut last = Duration::ZERO;
        for i in 1..=20u32 {
            assert!(matches!(crate::net::block_on(r.poll()), Polled::Failed(_)));
            let wait = r.due().saturating_duration_since(Instant::now());
            assert!(
                wait <= MAX_BACKOFF.mul_f64(1.2) + Duration::from_secs(1),
                "{i}: {wait:?}"
            );
            if i <= 5 {
                assert!(wait > last, "{i}: {wait:?} after {last:?}");
            }
            last = wait;
        }
    }
}
