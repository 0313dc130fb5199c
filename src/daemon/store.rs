//! The daemon's bundle store, `/var/lib/vmagent/bundles/`: what the daemon applies and
//! what it may fall back to.
//!
//! Every bundle the daemon applies is first staged here as a canonical tar named by its
//! sha256 (`<sha256>.tar`, see [`crate::bundle::archive::write_canonical_tar`]), after it
//! passed the same validation as `vmagent check`. That gives:
//! - one identity for a bundle whatever its form (directory, tar, tar.gz, a download);
//! - the bundle that is in force survives a source that turns invalid or disappears (the
//!   daemon keeps repairing drift from it) and a reboot without network;
//! - the last-known-good bundle (the last one whose proxy became ready) to roll back to.
//!
//! `state.json` records the [`crate::lkg`] state: which digest is current, which is good,
//! which was rejected (rolled back, not retried until the source changes) and the trial
//! of a new bundle.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::bundle::{archive, BundleError};
use crate::fsx;
use crate::layout;
use crate::lkg::{Digest, Lkg, Record};
use crate::root::Root;

/// The store's directory under the state dir.
pub const DIR: &str = "bundles";

/// The store of one root.
pub struct Store {
    dir: PathBuf,
    /// What is recorded.
    pub state: Lkg,
    /// The source's stat fingerprint when it was last staged, and the digest it gave.
    seen: Option<(Vec<Stamp>, Digest)>,
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
        let shown = || format!("{}/{DIR}/state.json", root.state_dir().display());
        let record = match fs::read(dir.join("state.json")) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "{} is unreadable; starting afresh", shown());
                Record::default()
            }),
            Err(_) => Record::default(),
        };
        // A digest whose file is gone is forgotten rather than applied from nothing.
        let (state, warnings) =
            Lkg::from_record(record, |d| dir.join(format!("{d}.tar")).is_file());
        for w in warnings {
            tracing::warn!("{w} ({})", shown());
        }
        Ok(Store {
            dir,
            state,
            seen: None,
        })
    }

    /// The store's directory (host path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Host path of a staged bundle.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{digest}.tar"))
    }

    /// Stages the bundle at `src` (host path): reads it with the bundle reader's limits,
    /// writes its canonical tar, validates it like `vmagent check` and keeps it as
    /// `<sha256>.tar`. Returns the digest. When the source's files have not changed
    /// since the last call (same inode, size, mtime and ctime, none of them touched in the
    /// last two seconds), the digest is returned without reading it again.
    pub fn stage(&mut self, src: &Path) -> Result<Digest, BundleError> {
        let shown = src.display().to_string();
        let stamp = stamps(src).map_err(|e| BundleError::source(&shown, e.to_string()))?;
        if let Some((s, d)) = &self.seen {
            if *s == stamp && self.path(d).is_file() {
                return Ok(d.clone());
            }
        }
        let raw = archive::open(src, archive::Limits::default())?;
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
            archive::write_canonical_tar(&raw, &mut w).map_err(io_err)?;
            let HashingWriter { inner, hash } = w;
            inner.into_inner().map_err(|e| io_err(e.into_error()))?;
            let hex = crate::text::hex(&hash.finalize());
            Digest::parse(&hex).map_err(|e| BundleError::source(&shown, e.to_string()))?
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
        fsx::write_json(&self.dir.join("state.json"), &self.state.to_record(), 0o600)?;
        let keep: Vec<String> = (self.state.referenced().into_iter())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A state.json as the previous version wrote it is read; a digest that is not one
    /// (here a path out of the store) is ignored, never used as a file name.
    #[test]
    fn state_json_is_read_and_garbage_digests_are_ignored() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        let good = "a".repeat(64);
        let dir = Store::open(&root).unwrap().dir().to_path_buf();
        fs::write(dir.join(format!("{good}.tar")), b"").unwrap();
        let json =
            format!(r#"{{"current":"{good}","good":"{good}","rejected":null,"trial":null}}"#);
        fs::write(dir.join("state.json"), json).unwrap();
        let s = Store::open(&root).unwrap();
        assert_eq!(
            s.state,
            Lkg::Good {
                current: Digest::parse(&good).unwrap()
            }
        );

        let json = format!(r#"{{"current":"../../../../etc/shadow","good":"{good}"}}"#);
        fs::write(dir.join("state.json"), json).unwrap();
        let s = Store::open(&root).unwrap();
        assert_eq!(s.state.current(), None);
        assert_eq!(s.state.good().map(Digest::as_str), Some(good.as_str()));
        // Saved back in the same shape, the garbage gone.
        s.save().unwrap();
        let r: Record = serde_json::from_slice(&fs::read(dir.join("state.json")).unwrap()).unwrap();
        assert_eq!(r.current, None);
        assert_eq!(r.good, Some(good));
    }
}
