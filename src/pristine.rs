//! What bundle destinations held before vmagent first wrote them, so `vmagent
//! uninstall` can put the machine back: a copy (content, mode, owner) of every file that
//! existed, and a note of every file vmagent created. Recorded once per path, before the
//! first apply that writes it; later applies never touch the record.
//!
//! The record is read back as untrusted input: only the layout's file destinations with
//! plain permission bits are kept, and the directory it lives in (like every directory
//! of vmagent's own) must be a real, root-owned directory: a symlink there is refused,
//! so no copy is ever written or read outside the root.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsx;
use crate::layout;
use crate::root::Root;

/// Directory (in the state dir) of the record and its copies.
pub const DIR: &str = "pristine";

/// One path's original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    /// The file existed before vmagent wrote it (a symlink there counts as not: it is
    /// replaced, and its target was never vmagent's to copy).
    pub existed: bool,
    /// Its mode, uid and gid then.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

/// The record: system path -> original.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// By system path.
    pub files: BTreeMap<String, Original>,
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

/// `sys` below the pristine `files` directory, if it is a plain absolute path.
fn rel(sys: &str) -> io::Result<&Path> {
    let p = Path::new(sys);
    let ok = p.is_absolute()
        && p.components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)));
    match p.strip_prefix("/") {
        Ok(r) if ok && r.parent().is_some() => Ok(r),
        _ => Err(io::Error::other(format!(
            "'{sys}' is not a plain absolute path"
        ))),
    }
}

/// Host path of the copy of `sys` (its directories checked to be vmagent's own).
pub fn copy_path(root: &Root, sys: &str) -> io::Result<PathBuf> {
    let r = rel(sys)?;
    let parent = root
        .state_dir()
        .join(DIR)
        .join("files")
        .join(r.parent().unwrap_or(Path::new("")));
    let name = r.file_name().unwrap_or_default();
    match root.own_dir(&parent).map_err(other)? {
        Some(d) => Ok(d.join(name)),
        None => Ok(root.resolve(&parent.join(name)).map_err(other)?),
    }
}

/// Whether an entry is one vmagent records: a layout file destination, mode bits only.
fn plausible(sys: &str, o: &Original) -> bool {
    let known = layout::FILES.iter().any(|f| f.path == sys) || layout::PROXY_CERTS.contains(&sys);
    known && o.mode <= 0o777
}

impl Record {
    /// Reads the record (none or unreadable: empty). Entries vmagent never records (a
    /// path outside the layout, setuid bits) are dropped with a warning.
    pub fn load(root: &Root) -> Record {
        let data = root
            .own_dir(&root.state_dir().join(DIR))
            .map_err(other)
            .and_then(|d| match d {
                Some(d) => fsx::read_file(&d.join("record.json"), 1 << 20),
                None => Ok(None),
            });
        let mut rec: Record = match data {
            Ok(Some(d)) => serde_json::from_slice(&d).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "vmagent's record of the original files is damaged; ignored");
                Record::default()
            }),
            Ok(None) => Record::default(),
            Err(e) => {
                tracing::warn!(error = %e, "vmagent's record of the original files is unreadable; ignored");
                Record::default()
            }
        };
        rec.files.retain(|sys, o| {
            let keep = plausible(sys, o);
            if !keep {
                tracing::warn!(path = %sys, mode = o.mode, "ignoring an entry vmagent never records in its record of the original files");
            }
            keep
        });
        rec
    }

    fn store(&self, root: &Root) -> io::Result<()> {
        let d = root
            .ensure_own_dir(&root.state_dir().join(DIR), 0o700)
            .map_err(other)?;
        let mut data = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        data.push(b'\n');
        fsx::write_atomic(&d.join("record.json"), &data, 0o600, None)?;
        fsx::sync_dir(&d)
    }
}

/// Records the originals of `paths` (system paths of files about to be written) that
/// have no record yet. A file that exists while vmagent's state record does too was
/// written by an earlier vmagent (before this record existed): it counts as created.
/// The last component is never followed: a symlink there (even one root does not own,
/// which the apply replaces) is recorded as no file.
pub fn capture(root: &Root, paths: &[&str]) -> io::Result<()> {
    let mut rec = Record::load(root);
    let known_before = root
        .resolve(&root.state_dir().join(crate::state::FILE))
        .map(|p| p.exists())
        .unwrap_or(false)
        && rec.files.is_empty();
    let mut changed = false;
    for sys in paths {
        if rec.files.contains_key(*sys) {
            continue;
        }
        let host = root.resolve_parent(Path::new(sys)).map_err(other)?;
        let orig = match fsx::meta(&host)? {
            Some(m) if m.kind == fsx::Kind::File && !known_before => {
                let data = fsx::read_file(&host, 1 << 20)?.unwrap_or_default();
                let r = rel(sys)?;
                let sub = Path::new(DIR)
                    .join("files")
                    .join(r.parent().unwrap_or(Path::new("")));
                let dir = root
                    .ensure_own_dir(&root.state_dir().join(sub), 0o700)
                    .map_err(other)?;
                fsx::write_atomic(
                    &dir.join(r.file_name().unwrap_or_default()),
                    &data,
                    0o600,
                    None,
                )?;
                Original {
                    existed: true,
                    mode: m.mode & 0o777,
                    uid: m.uid,
                    gid: m.gid,
                }
            }
            _ => Original {
                existed: false,
                mode: 0,
                uid: 0,
                gid: 0,
            },
        };
        rec.files.insert(sys.to_string(), orig);
        changed = true;
    }
    if changed {
        rec.store(root)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_layout_files_with_plain_modes_are_kept() {
        let o = |mode| Original {
            existed: true,
            mode,
            uid: 0,
            gid: 0,
        };
        assert!(plausible("/etc/certs/root-cert.pem", &o(0o644)));
        assert!(!plausible("/etc/certs/root-cert.pem", &o(0o4755)));
        assert!(!plausible("/etc/shadow", &o(0o600)));
        assert!(rel("/etc/../shadow").is_err() && rel("etc/x").is_err());
    }
}
