//! What bundle destinations held before vmagent first wrote them, so `vmagent
//! uninstall` can put the machine back: a copy (content, mode, owner) of every file that
//! existed, and a note of every file vmagent created. Recorded once per path, before the
//! first apply that writes it; later applies never touch the record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsx;
use crate::root::Root;

/// Directory (in the state dir) of the record and its copies.
pub const DIR: &str = "pristine";

/// One path's original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    /// The file existed before vmagent wrote it.
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

fn dir(root: &Root) -> std::io::Result<PathBuf> {
    root.resolve(&root.state_dir().join(DIR))
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Host path of the copy of `sys`.
pub fn copy_path(root: &Root, sys: &str) -> std::io::Result<PathBuf> {
    Ok(dir(root)?.join("files").join(sys.trim_start_matches('/')))
}

impl Record {
    /// Reads the record (none: empty).
    pub fn load(root: &Root) -> Record {
        dir(root)
            .ok()
            .and_then(|d| {
                fsx::read_file(&d.join("record.json"), 1 << 20)
                    .ok()
                    .flatten()
            })
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default()
    }

    fn store(&self, root: &Root) -> std::io::Result<()> {
        let d = dir(root)?;
        let mut data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        data.push(b'\n');
        fsx::write_atomic(&d.join("record.json"), &data, 0o600, None)?;
        fsx::sync_dir(&d)
    }
}

/// Records the originals of `paths` (system paths of files about to be written) that
/// have no record yet. A file that exists while vmagent's state record does too was
/// written by an earlier vmagent (before this record existed): it counts as created.
pub fn capture(root: &Root, paths: &[&str]) -> std::io::Result<()> {
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
        let host = root
            .resolve(Path::new(sys))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let orig = match fsx::meta(&host)? {
            Some(m) if m.kind == fsx::Kind::File && !known_before => {
                let data = fsx::read_file(&host, 1 << 20)?.unwrap_or_default();
                let copy = copy_path(root, sys)?;
                crate::apply::ensure_dir(
                    root,
                    &root.state_dir().join(DIR).join("files").join(
                        Path::new(sys.trim_start_matches('/'))
                            .parent()
                            .unwrap_or(Path::new("")),
                    ),
                    0o700,
                )
                .map_err(|(_, e)| e)?;
                fsx::write_atomic(&copy, &data, 0o600, None)?;
                Original {
                    existed: true,
                    mode: m.mode,
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
        crate::apply::ensure_dir(root, &root.state_dir().join(DIR), 0o700).map_err(|(_, e)| e)?;
        rec.store(root)?;
    }
    Ok(())
}
