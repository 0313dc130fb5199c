//! Downloading the package: streamed into `.partial-<sha256>` in the cache directory
//! while the sha256 is computed (one pass), resumed with HTTP Range after a dropped
//! connection, retried with exponential backoff and jitter on connection errors,
//! timeouts, 5xx and 429 (Retry-After honoured), and renamed into place only when the
//! checksum matches. A mismatch deletes the partial file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, CONTENT_RANGE, RANGE, RETRY_AFTER};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::PackageError;
use crate::config::DownloadConfig;
use crate::fsx;
use crate::redact;
use crate::report::err_line;

/// Longest Retry-After vmagent honours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Builds the HTTP client: rustls with the system roots plus `ca_files`, proxies from
/// the environment, connect timeout, and a per-read (idle) timeout.
pub fn client(cfg: &DownloadConfig, ca_files: &[PathBuf]) -> Result<Client, PackageError> {
    install_crypto_provider();
    let mut b = Client::builder()
        .user_agent(concat!("vmagent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
        .timeout(Duration::from_secs(cfg.idle_timeout_secs));
    for ca in ca_files {
        let pem = fs::read(ca)
            .map_err(|e| PackageError::Config(format!("CA file '{}': {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            PackageError::Config(format!(
                "CA file '{}': not PEM certificates: {e}",
                ca.display()
            ))
        })?;
        b = b.tls_certs_merge(certs);
    }
    b.build()
        .map_err(|e| PackageError::Config(format!("cannot set up HTTPS: {e}")))
}

/// Why one attempt failed, and whether another may succeed.
enum Attempt {
    Retry(String, Option<Duration>),
    Fatal(PackageError),
}

/// Fetches a small text resource (a `.sha256` file); `Ok(None)` on 404.
pub fn text(
    client: &Client,
    url: &str,
    cfg: &DownloadConfig,
) -> Result<Option<String>, PackageError> {
    // Messages show the URL without its secrets (a signed query, userinfo).
    let shown = &redact::url(url);
    retrying(shown, cfg, |_| {
        let resp = client.get(url).send().map_err(|e| transient(shown, &e))?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let mut body = String::new();
                resp.take(4096)
                    .read_to_string(&mut body)
                    .map_err(|e| Attempt::Retry(format!("{shown}: {e}"), None))?;
                Ok(Some(body))
            }
            s => Err(status_error(shown, s, resp.headers())),
        }
    })
}

/// Downloads `url` into `cache_dir/<sha256>.<ext>` and returns that path. A resumed
/// download that does not match (stale bytes in a partial file, or a mirror that changed
/// underneath) is retried once from the start.
pub fn download(
    client: &Client,
    url: &str,
    sha256: &str,
    ext: &str,
    cache_dir: &Path,
    cfg: &DownloadConfig,
) -> Result<PathBuf, PackageError> {
    let mut resumed = false;
    match download_once(client, url, sha256, ext, cache_dir, cfg, &mut resumed) {
        Err(PackageError::Mismatch { .. }) if resumed => {
            err_line(&format!(
                "{}: the resumed download does not match its sha256; downloading it again from the start",
                redact::url(url)
            ));
            download_once(client, url, sha256, ext, cache_dir, cfg, &mut false)
        }
        r => r,
    }
}

fn download_once(
    client: &Client,
    url: &str,
    sha256: &str,
    ext: &str,
    cache_dir: &Path,
    cfg: &DownloadConfig,
    resumed: &mut bool,
) -> Result<PathBuf, PackageError> {
    let final_path = cache_dir.join(format!("{sha256}.{ext}"));
    let partial = cache_dir.join(format!(".partial-{sha256}"));
    let io_err = |what: &str, e: io::Error| {
        PackageError::Cache(format!("{what} {}: {e}", partial.display()))
    };
    // A partial file left by an interrupted run is resumed: hash what is there first.
    let mut hasher = Sha256::new();
    let mut have = match File::open(&partial) {
        Ok(mut f) => hash_into(&mut f, &mut hasher).map_err(|e| io_err("reading", e))?,
        Err(_) => 0,
    };
    *resumed = have > 0;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .map_err(|e| io_err("creating", e))?;
    let shown = &redact::url(url);
    let mut progress = Progress::new(shown);
    let result = retrying(shown, cfg, |_| {
        let mut req = client.get(url);
        if have > 0 {
            req = req.header(RANGE, format!("bytes={have}-"));
        }
        let mut resp = req.send().map_err(|e| transient(shown, &e))?;
        let status = resp.status();
        if status == StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
            return Ok(()); // we already have every byte; the checksum decides
        }
        if status == StatusCode::PARTIAL_CONTENT {
            if !range_starts_at(resp.headers(), have) {
                return Err(Attempt::Retry(
                    format!("{shown}: server answered a different range"),
                    None,
                ));
            }
            *resumed = true;
        }
        if status == StatusCode::OK && have > 0 {
            // No range support: start over.
            file.set_len(0)
                .map_err(|e| Attempt::Fatal(io_err("truncating", e)))?;
            hasher = Sha256::new();
            have = 0;
        }
        if !status.is_success() {
            return Err(status_error(shown, status, resp.headers()));
        }
        let total = resp.content_length().map(|n| n + have);
        progress.start(have, total);
        copy_body(&mut resp, &mut file, &mut hasher, &mut have, &mut progress).map_err(|e| {
            Attempt::Retry(
                format!(
                    "{shown}: {} after {have} bytes",
                    read_error(&e, cfg.idle_timeout_secs)
                ),
                None,
            )
        })
    });
    progress.finish();
    let cleanup = || {
        let _ = fs::remove_file(&partial);
    };
    if let Err(e) = result {
        // A transient failure keeps the bytes received, so the next run resumes instead
        // of starting over; an empty partial is worth nothing.
        let keep = matches!(
            e,
            PackageError::Download {
                retryable: true,
                ..
            }
        ) && have > 0;
        if !keep {
            cleanup();
        }
        return Err(e);
    }
    let got = hex(&hasher.finalize());
    if got != sha256 {
        cleanup();
        return Err(PackageError::Mismatch {
            downloaded: true,
            what: shown.to_string(),
            expected: sha256.to_string(),
            got,
        });
    }
    file.sync_all().map_err(|e| io_err("syncing", e))?;
    fs::rename(&partial, &final_path).map_err(|e| io_err("renaming", e))?;
    fsx::sync_dir(cache_dir)
        .map_err(|e| PackageError::Cache(format!("syncing {}: {e}", cache_dir.display())))?;
    Ok(final_path)
}

fn copy_body(
    resp: &mut Response,
    file: &mut File,
    hasher: &mut Sha256,
    have: &mut u64,
    progress: &mut Progress,
) -> io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = resp.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        file.write_all(&buf[..n])?;
        hasher.update(&buf[..n]);
        *have += n as u64;
        progress.update(*have);
    }
}

/// Names an idle timeout as such (reqwest reports it as a body decoding error).
fn read_error(e: &io::Error, idle_secs: u64) -> String {
    let mut timed_out = e.kind() == io::ErrorKind::TimedOut;
    let mut src: Option<&(dyn std::error::Error + 'static)> =
        e.get_ref().map(|r| r as &(dyn std::error::Error + 'static));
    while let Some(s) = src {
        timed_out |= s
            .downcast_ref::<reqwest::Error>()
            .is_some_and(|r| r.is_timeout())
            || s.downcast_ref::<io::Error>()
                .is_some_and(|i| i.kind() == io::ErrorKind::TimedOut)
            || s.to_string().contains("timed out");
        src = s.source();
    }
    if timed_out {
        format!("timed out: no data for {idle_secs} s (download.idle_timeout_secs)")
    } else {
        error_chain(e)
    }
}

fn range_starts_at(h: &HeaderMap, offset: u64) -> bool {
    h.get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse::<u64>().ok())
        == Some(offset)
}

/// `shown`: the URL as messages show it ([`redact::url`]).
fn transient(shown: &str, e: &reqwest::Error) -> Attempt {
    // A TLS verification failure will not go away by retrying.
    let chain = error_chain(e);
    if chain.contains("certificate")
        || chain.contains("UnknownIssuer")
        || chain.contains("invalid peer")
    {
        return Attempt::Fatal(PackageError::Download {
            url: shown.to_string(),
            reason: format!("TLS error: {chain}; for a private mirror pass --ca-file (or package.ca_file in the config)"),
            retryable: false,
        });
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    Attempt::Retry(format!("{shown}: {kind}: {chain}"), None)
}

/// reqwest is built without a bundled crypto provider; ring is ours. Installing twice
/// (a second client in one process) is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error with its sources, without repeating what a source's text already says, and
/// without the secrets of a URL in it (reqwest's errors quote the request URL).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    redact::text(&s)
}

/// `shown`: the URL as messages show it ([`redact::url`]).
fn status_error(shown: &str, s: StatusCode, h: &HeaderMap) -> Attempt {
    if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() {
        let after = h
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        return Attempt::Retry(format!("{shown}: HTTP {s}"), after);
    }
    let hint = if s == StatusCode::NOT_FOUND {
        "; check the Istio version and the package URL (template)"
    } else {
        ""
    };
    Attempt::Fatal(PackageError::Download {
        url: shown.to_string(),
        reason: format!("HTTP {s} (not retried){hint}"),
        retryable: false,
    })
}

/// Runs `f` up to `cfg.attempts` times with exponential backoff and jitter. `shown`:
/// the URL as messages show it.
fn retrying<T>(
    shown: &str,
    cfg: &DownloadConfig,
    mut f: impl FnMut(u32) -> Result<T, Attempt>,
) -> Result<T, PackageError> {
    let mut delay = Duration::from_millis(cfg.backoff_ms);
    for attempt in 1..=cfg.attempts {
        match f(attempt) {
            Ok(v) => return Ok(v),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(reason, after)) => {
                if attempt == cfg.attempts {
                    return Err(PackageError::Download {
                        url: shown.to_string(),
                        reason: format!("gave up after {attempt} attempts; last error: {reason}"),
                        retryable: true,
                    });
                }
                let wait = after.unwrap_or_else(|| jitter(delay));
                err_line(&format!(
                    "download attempt {attempt}/{} failed ({reason}); retrying in {:.1}s",
                    cfg.attempts,
                    wait.as_secs_f64()
                ));
                std::thread::sleep(wait);
                delay = delay.saturating_mul(2).min(Duration::from_secs(30));
            }
        }
    }
    unreachable!("attempts >= 1 is checked when the config is loaded")
}

/// 50-100 % of `d`, so a fleet of VMs does not retry in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * unit_random())
}

/// A number in [0, 1) that differs between machines and calls: enough to spread a
/// fleet's retries and polls (not for anything secret).
pub fn unit_random() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let mix = u64::from(nanos) ^ (u64::from(std::process::id()) << 20);
    (mix.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64 / (1u64 << 53) as f64
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut h = Sha256::new();
    hash_into(&mut File::open(path)?, &mut h)?;
    Ok(hex(&h.finalize()))
}

/// Feeds a reader into a hasher; returns the byte count.
fn hash_into(r: &mut impl Read, h: &mut Sha256) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(n),
            k => {
                h.update(&buf[..k]);
                n += k as u64;
            }
        }
    }
}

/// A bar on a terminal; on anything else (cloud-init logs) a line every few seconds.
struct Progress {
    url: String,
    bar: Option<indicatif::ProgressBar>,
    last: Instant,
    total: Option<u64>,
}

impl Progress {
    fn new(url: &str) -> Self {
        Progress {
            url: url.to_string(),
            bar: None,
            last: Instant::now(),
            total: None,
        }
    }

    fn start(&mut self, have: u64, total: Option<u64>) {
        self.total = total;
        if self.bar.is_none() && io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::with_draw_target(
                total,
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message("downloading istio-sidecar");
            self.bar = Some(bar);
        }
        if let Some(b) = &self.bar {
            b.set_position(have);
        } else {
            err_line(&format!("downloading {} ({})", self.url, mib(total)));
        }
        self.last = Instant::now();
    }

    fn update(&mut self, have: u64) {
        if let Some(b) = &self.bar {
            b.set_position(have);
        } else if self.last.elapsed() >= Duration::from_secs(5) {
            self.last = Instant::now();
            err_line(&format!(
                "downloading {}: {} of {}",
                self.url,
                mib(Some(have)),
                mib(self.total)
            ));
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

fn mib(n: Option<u64>) -> String {
    match n {
        Some(n) => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
        None => "size unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed download's messages (the error, its reqwest chain) name the URL without
    /// its userinfo or signed query.
    #[test]
    fn errors_do_not_show_url_secrets() {
        let cfg = DownloadConfig {
            attempts: 1,
            ..DownloadConfig::default()
        };
        let Ok(client) = client(&cfg, &[]) else {
            panic!("client")
        };
        let url = "http://vmuser:pa55word@127.0.0.1:9/p.deb?X-Amz-Signature=S1gVal&x=1";
        let dir = tempfile::tempdir().unwrap();
        let errors = [
            text(&client, url, &cfg).map(|_| ()).unwrap_err(),
            download(&client, url, &"0".repeat(64), "deb", dir.path(), &cfg)
                .map(|_| ())
                .unwrap_err(),
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(msg.contains("127.0.0.1:9/p.deb"), "{msg}");
            for secret in ["vmuser", "pa55word", "S1gVal"] {
                assert!(!msg.contains(secret), "{secret}: {msg}");
            }
        }
    }
}
