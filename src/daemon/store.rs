//! The daemon's bundle store, `/var/lib/vmagent/bundles/`: what the daemon applies and
//! what it may fall back to.
//!
//! Every bundle the daemon applies is first staged here as a canonical tar named by its
//! sha256 (`<sha256>.tar`, see [`crate::bundle::source::write_canonical_tar`]), after it
//! passed the same validation as `vmagent check`. That gives:
//! - one identity for a bundle whatever its form (directory, tar, tar.gz, a download);
//! - the bundle that is in force survives a source that turns invalid or disappears (the
//!   daemon keeps repairing drift from it) and a reboot without network;
//! - the last-known-good bundle (the last one whose proxy became ready) to roll back to.
//!
//! `state.json` records which digest is current, which is good, which was rejected (rolled
//! back, not retried until the source changes) and the trial of a new bundle.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bundle::{source, BundleError};
use crate::fsx;
use crate::layout;
use crate::root::Root;

/// The store's directory under the state dir.
pub const DIR: &str = "bundles";

/// A bundle that was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Its digest.
    pub digest: String,
    /// Why (the health when it was given up).
    pub reason: String,
    /// When, RFC 3339.
    pub at: String,
}

/// A new bundle on probation: rolled back unless its proxy is ready by the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// Its digest.
    pub digest: String,
    /// Unix time by which it must be ready; `None` until it was applied.
    pub deadline: Option<i64>,
}

/// What the store remembers (state.json).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The bundle in force.
    pub current: Option<String>,
    /// The last bundle whose proxy was ready.
    pub good: Option<String>,
    /// The last bundle rolled back.
    pub rejected: Option<Rejected>,
    /// The new bundle being tried.
    pub trial: Option<Trial>,
}

/// The store of one root.
pub struct Store {
    dir: PathBuf,
    /// What is recorded.
    pub state: State,
    /// The source's stat fingerprint when it was last staged, and the digest it gave.
    seen: Option<(Vec<Stamp>, String)>,
}

/// What identifies one file's content without reading it.
type Stamp = (String, u64, u64, u64, i64, i64, i64, i64);

impl Store {
    /// Opens (creating) the store; an unreadable state.json starts afresh, with a
    /// warning (the bundles are re-staged from the source).
    pub fn open(root: &Root) -> Result<Store, String> {
        let sys = root.state_dir().join(DIR);
        let dir = crate::apply::ensure_dir(root, &sys, layout::STATE_MODE)
            .map_err(|(d, e)| format!("cannot create {}: {e}", d.display()))?;
        let state = match fs::read(dir.join("state.json")) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "{}/{DIR}/state.json is unreadable; starting afresh", root.state_dir().display());
                State::default()
            }),
            Err(_) => State::default(),
        };
        let mut s = Store {
            dir,
            state,
            seen: None,
        };
        // A digest whose file is gone is forgotten rather than applied from nothing.
        for d in [&mut s.state.current, &mut s.state.good] {
            if d.as_ref()
                .is_some_and(|x| !s.dir.join(format!("{x}.tar")).is_file())
            {
                *d = None;
            }
        }
        Ok(s)
    }

    /// The store's directory (host path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Host path of a staged bundle.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.tar"))
    }

    /// Stages the bundle at `src` (host path): reads it with the bundle reader's limits,
    /// writes its canonical tar, validates it like `vmagent check` and keeps it as
    /// `<sha256>.tar`. Returns the digest. When the source's files have not changed
    /// since the last call (same inode, size, mtime and ctime, none of them touched in the
    /// last two seconds), the digest is returned without reading it again.
    pub fn stage(&mut self, src: &Path) -> Result<String, BundleError> {
        let shown = src.display().to_string();
        let stamp = stamps(src).map_err(|e| BundleError::source(&shown, e.to_string()))?;
        if let Some((s, d)) = &self.seen {
            if *s == stamp && self.path(d).is_file() {
                return Ok(d.clone());
            }
        }
        let raw = source::open(src, source::Limits::default())?;
        let io_err = |e: io::Error| {
            BundleError::source(
                &shown,
                format!("cannot stage it in {}: {e}", self.dir.display()),
            )
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".staging-")
            .tempfile_in(&self.dir)
            .map_err(io_err)?;
        let digest = {
            let mut w = HashingWriter {
                inner: io::BufWriter::new(tmp.as_file_mut()),
                hash: Sha256::new(),
            };
            source::write_canonical_tar(&raw, &mut w).map_err(io_err)?;
            let HashingWriter { inner, hash } = w;
            inner.into_inner().map_err(|e| io_err(e.into_error()))?;
            crate::text::hex(&hash.finalize())
        };
        drop(raw);
        let dest = self.path(&digest);
        if !dest.is_file() {
            // The same checks as `vmagent check` (an expired token is still staged: the
            // daemon restores it and warns; see `token_check`).
            crate::run::check(tmp.path(), true).map_err(|e| match e {
                crate::run::RunError::Bundle(b) => rename_source(b, &shown),
                other => BundleError::source(&shown, other.to_string()),
            })?;
            tmp.as_file().sync_all().map_err(io_err)?;
            tmp.persist(&dest).map_err(|e| io_err(e.error))?;
            fsx::sync_dir(&self.dir).map_err(io_err)?;
        }
        if !recent(&stamp) {
            self.seen = Some((stamp, digest.clone()));
        }
        Ok(digest)
    }

    /// Writes state.json atomically and removes staged bundles no longer referenced.
    pub fn save(&self) -> io::Result<()> {
        fsx::write_json(&self.dir.join("state.json"), &self.state, 0o600)?;
        let keep: Vec<String> = [&self.state.current, &self.state.good]
            .into_iter()
            .flatten()
            .chain(self.state.trial.iter().map(|t| &t.digest))
            .map(|d| format!("{d}.tar"))
            .collect();
        for e in fs::read_dir(&self.dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tar") && !keep.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

/// Short form of a digest for messages.
pub fn short(digest: &str) -> String {
    format!("sha256:{}", &digest[..digest.len().min(12)])
}

/// A bundle error about the staged copy names the source instead.
fn rename_source(e: BundleError, shown: &str) -> BundleError {
    match e {
        BundleError::Source { reason, .. } => BundleError::source(shown, reason),
        m => m,
    }
}

/// Stat fingerprints of a bundle path (a file, or a directory and its entries).
fn stamps(src: &Path) -> io::Result<Vec<Stamp>> {
    let one = |name: String, m: &fs::Metadata| {
        (
            name,
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    };
    let m = fs::metadata(src)?;
    let mut v = vec![one(String::new(), &m)];
    if m.is_dir() {
        for e in fs::read_dir(src)? {
            let e = e?;
            let m = fs::symlink_metadata(e.path())?;
            v.push(one(e.file_name().to_string_lossy().into_owned(), &m));
        }
        v.sort();
    }
    Ok(v)
}

/// Was any of these changed in the last two seconds? Then a write in the same
/// timestamp tick could follow unseen, so the fingerprint is not trusted (git's "racy
/// clean" rule).
fn recent(stamps: &[Stamp]) -> bool {
    let now = crate::timefmt::now();
    stamps.iter().any(|s| now - s.4.max(s.6) < 2)
}

/// Hashes what passes through.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
