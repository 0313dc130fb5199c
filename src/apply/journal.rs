//! The undo journal. Before the first change, every path an apply will touch is
//! recorded with its prior state (content backed up, mode, owner), and the journal is
//! made durable. Removing the journal is the commit point: while it exists, the next
//! vmagent rolls the root back to the prior state, so an interrupted apply leaves the
//! files either all old or all new.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsx::{self, Kind};

/// Largest file vmagent backs up before replacing (hosts files and bundle files are tiny).
const BACKUP_LIMIT: u64 = 64 << 20;

/// What stood at a path before the apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Prior {
    /// Nothing: undo removes what the apply created (a file, link or empty directory).
    Absent,
    /// A regular file, backed up.
    File {
        /// Backup file name inside the backup dir.
        backup: String,
        /// Mode.
        mode: u32,
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
    },
    /// A symlink.
    Symlink {
        /// Its target.
        target: PathBuf,
    },
    /// A file or directory whose content is untouched; only metadata changes.
    Meta {
        /// Mode.
        mode: u32,
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
    },
}

/// One journal entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Host path relative to the target root.
    pub path: PathBuf,
    /// Prior state.
    pub prior: Prior,
}

/// The journal document.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Journal {
    /// Schema version.
    pub version: u32,
    /// Entries in the order the changes are made; undo runs them in reverse.
    pub entries: Vec<Entry>,
}

/// Where a transaction keeps its journal and backups.
#[derive(Debug, Clone)]
pub struct TxnDir {
    /// `<state dir>/txn`.
    pub dir: PathBuf,
}

impl TxnDir {
    /// The journal file.
    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal.json")
    }
    /// The backups directory.
    pub fn backups(&self) -> PathBuf {
        self.dir.join("backups")
    }

    /// Reads a pending journal, if any.
    pub fn pending(&self) -> io::Result<Option<Journal>> {
        match fsx::read_file(&self.journal(), 64 << 20)? {
            None => Ok(None),
            Some(d) => serde_json::from_slice(&d).map(Some).map_err(|e| {
                io::Error::other(format!(
                    "journal {} is damaged: {e}",
                    self.journal().display()
                ))
            }),
        }
    }

    /// Records `entries`: backs up prior files, then writes the journal durably.
    /// `base` is the target root on the host.
    pub fn begin(&self, base: &Path, paths: &[PathBuf]) -> io::Result<Journal> {
        self.clear()?;
        fs::create_dir_all(self.backups())?;
        let mut journal = Journal {
            version: 1,
            entries: Vec::new(),
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, host) in paths.iter().enumerate() {
            if !seen.insert(host.clone()) {
                continue; // the first record holds the true prior state
            }
            let rel = host.strip_prefix(base).unwrap_or(host).to_path_buf();
            let prior = match fsx::meta(host)? {
                None => Prior::Absent,
                Some(m) if m.kind == Kind::Symlink => Prior::Symlink {
                    target: fs::read_link(host)?,
                },
                Some(m) if m.kind == Kind::File => {
                    let backup = format!("{i}");
                    let data = fsx::read_file(host, BACKUP_LIMIT)?.unwrap_or_default();
                    fsx::write_atomic(&self.backups().join(&backup), &data, 0o600, None)?;
                    Prior::File {
                        backup,
                        mode: m.mode,
                        uid: m.uid,
                        gid: m.gid,
                    }
                }
                Some(m) => Prior::Meta {
                    mode: m.mode,
                    uid: m.uid,
                    gid: m.gid,
                },
            };
            journal.entries.push(Entry { path: rel, prior });
        }
        fsx::sync_dir(&self.backups())?;
        let bytes = serde_json::to_vec(&journal).map_err(io::Error::other)?;
        fsx::write_atomic(&self.journal(), &bytes, 0o600, None)?;
        fsx::sync_dir(&self.dir)?;
        Ok(journal)
    }

    /// Commit: the journal goes away (durably), then the backups.
    pub fn commit(&self) -> io::Result<()> {
        fsx::remove_if_exists(&self.journal())?;
        fsx::sync_dir(&self.dir)?;
        self.clear()
    }

    /// Removes the journal and backups without undoing anything.
    pub fn clear(&self) -> io::Result<()> {
        fsx::remove_if_exists(&self.journal())?;
        match fs::remove_dir_all(self.backups()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Restores every entry's prior state (idempotent: safe to repeat after a crash),
    /// then removes the journal. Returns the paths restored.
    pub fn rollback(&self, base: &Path, journal: &Journal) -> io::Result<Vec<PathBuf>> {
        let mut dirs = std::collections::BTreeSet::new();
        let mut restored = Vec::new();
        for e in journal.entries.iter().rev() {
            let host = base.join(&e.path);
            fsx::remove_if_exists(&fsx::tmp_path(&host))?;
            let now = fsx::meta(&host)?;
            match &e.prior {
                Prior::Absent => match now.map(|m| m.kind) {
                    None => continue,
                    Some(Kind::Dir) => match fs::remove_dir(&host) {
                        Ok(()) => {}
                        Err(err) if err.kind() == io::ErrorKind::DirectoryNotEmpty => continue,
                        Err(err) => return Err(err),
                    },
                    Some(_) => fs::remove_file(&host)?,
                },
                Prior::File {
                    backup,
                    mode,
                    uid,
                    gid,
                } => {
                    let data = fs::read(self.backups().join(backup))?;
                    if now.map(|m| m.kind) == Some(Kind::Dir) {
                        fs::remove_dir(&host)?;
                    }
                    fsx::write_atomic(&host, &data, *mode, Some((*uid, *gid)))?;
                }
                Prior::Symlink { target } => {
                    let tmp = fsx::tmp_path(&host);
                    std::os::unix::fs::symlink(target, &tmp)?;
                    fs::rename(&tmp, &host)?;
                }
                Prior::Meta { mode, uid, gid } => {
                    if now.is_some() {
                        fsx::set_meta(&host, *mode, Some((*uid, *gid)))?;
                    }
                }
            }
            if let Some(p) = host.parent() {
                dirs.insert(p.to_path_buf());
            }
            restored.push(e.path.clone());
        }
        for d in dirs {
            if d.is_dir() {
                fsx::sync_dir(&d)?;
            }
        }
        self.commit()?;
        Ok(restored)
    }
}
