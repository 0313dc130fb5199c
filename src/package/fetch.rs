//! Downloading the package: streamed into `.partial-<sha256>` in the cache directory
//! while the sha256 is computed (one pass), resumed with HTTP Range after a dropped
//! connection, retried with exponential backoff and jitter on connection errors,
//! timeouts, 5xx and 429 (Retry-After honoured), and renamed into place only when the
//! checksum matches. A mismatch deletes the partial file. HTTP, timeouts, redirects and
//! the retry policy are [`crate::net`]'s.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::progress::Progress;
use super::PackageError;
use crate::config::DownloadConfig;
use crate::fsx;
use crate::net::header::{HeaderMap, HeaderValue, CONTENT_RANGE, RANGE};
use crate::net::retry::{self, Backoff};
use crate::net::{self, Client, Request, StatusCode};
use crate::redact;
use crate::text::{err_line, hex};

/// Longest Retry-After vmagent honours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why one attempt failed, and whether another may succeed.
enum Attempt {
    /// Worth another try (after the policy's wait, at least `Retry-After`).
    Retry(String, Option<Duration>),
    Fatal(PackageError),
}

impl From<net::Error> for Attempt {
    fn from(e: net::Error) -> Attempt {
        if e.is_retryable() {
            return Attempt::Retry(e.to_string(), e.retry_after());
        }
        let reason = match &e {
            net::Error::Status { status: 404, .. } => format!(
                "HTTP {} (not retried); check the Istio version and the package URL (template)",
                StatusCode::NOT_FOUND
            ),
            net::Error::Status { status, .. } => format!(
                "HTTP {} (not retried)",
                StatusCode::from_u16(*status).map_or(status.to_string(), |s| s.to_string())
            ),
            _ => e.to_string(),
        };
        let url = match &e {
            net::Error::Status { url, .. }
            | net::Error::Tls { url, .. }
            | net::Error::Invalid { url, .. } => url.clone(),
            net::Error::Redirect { from, .. } => from.clone(),
            _ => String::new(),
        };
        Attempt::Fatal(PackageError::Download {
            url,
            reason,
            retryable: false,
        })
    }
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
        net::block_on(async {
            let resp = client.send(Request::get(url)).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let resp = resp.error_for_status()?;
            match resp.bytes_limited(4096).await? {
                Some(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
                None => Err(Attempt::Fatal(PackageError::Download {
                    url: shown.to_string(),
                    reason: "larger than 4 KiB: not a checksum file".into(),
                    retryable: false,
                })),
            }
        })
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
        net::block_on(async {
            let mut req = Request::get(url);
            if have > 0 {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes={have}-")) {
                    req = req.header(RANGE, v);
                }
            }
            let mut resp = client.send(req).await?;
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
                return Err(resp.status_error().into());
            }
            let total = resp.content_length().map(|n| n + have);
            progress.start(have, total);
            // One pass: each piece goes to the file and the hash as it arrives.
            loop {
                let piece = match resp.chunk().await {
                    Ok(Some(p)) => p,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(Attempt::Retry(format!("{e} after {have} bytes"), None)),
                };
                file.write_all(&piece)
                    .map_err(|e| Attempt::Fatal(io_err("writing", e)))?;
                hasher.update(&piece[..]);
                have += piece.len() as u64;
                progress.update(have);
            }
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

fn range_starts_at(h: &HeaderMap, offset: u64) -> bool {
    h.get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse::<u64>().ok())
        == Some(offset)
}

/// Runs `f` up to `cfg.attempts` times, waiting by the one [`retry`] policy between
/// attempts. `shown`: the URL as messages show it.
fn retrying<T>(
    shown: &str,
    cfg: &DownloadConfig,
    mut f: impl FnMut(u32) -> Result<T, Attempt>,
) -> Result<T, PackageError> {
    let policy = Backoff::new(
        Duration::from_millis(cfg.backoff_ms),
        Duration::from_secs(30),
        MAX_RETRY_AFTER,
    );
    for attempt in 1..=cfg.attempts {
        match f(attempt) {
            Ok(v) => return Ok(v),
            Err(Attempt::Fatal(PackageError::Download {
                url,
                reason,
                retryable,
            })) if url.is_empty() => {
                return Err(PackageError::Download {
                    url: shown.to_string(),
                    reason,
                    retryable,
                })
            }
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(reason, after)) => {
                if attempt == cfg.attempts {
                    return Err(PackageError::Download {
                        url: shown.to_string(),
                        reason: format!("gave up after {attempt} attempts; last error: {reason}"),
                        retryable: true,
                    });
                }
                let wait = policy.delay(attempt, after, retry::unit_random());
                err_line(&format!(
                    "download attempt {attempt}/{} failed ({reason}); retrying in {:.1}s",
                    cfg.attempts,
                    wait.as_secs_f64()
                ));
                std::thread::sleep(wait);
            }
        }
    }
    unreachable!("attempts >= 1 is checked when the config is loaded")
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
        let Ok(client) = Client::new(net::Settings::default()) else {
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
