//! The undo journal. Before the first change, every path an apply will touch is
//! recorded with its prior state (content backed up, mode, owner), and the journal is
//! made durable. Removing the journal is the commit point: while it exists, the next
//! vmagent rolls the root back to the prior state, so an interrupted apply leaves the
//! files either all old or all new.
//!
//! A journal read back from disk is untrusted input, like a bundle: vmagent runs as
//! root, so a planted journal would otherwise let whoever wrote it delete, replace or
//! chmod any file. Every entry is checked (`untrusted`) before anything is
//! touched; one bad entry refuses the whole journal, and the way out is `vmagent
//! recover --discard-journal`, which moves it aside as evidence.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fsx::{self, Kind};
use crate::root::{Root, RootError};

mod untrusted;

/// Largest file vmagent backs up before replacing (hosts files and bundle files are tiny).
pub(super) const BACKUP_LIMIT: u64 = 64 << 20;

/// Largest journal vmagent reads (a real one lists a few dozen paths).
const JOURNAL_LIMIT: u64 = 4 << 20;

/// The only journal schema this vmagent writes and reads.
pub const VERSION: u32 = 1;

/// What stood at a path before the apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Prior {
    /// Nothing: undo removes what the apply created (a file, link or empty directory;
    /// outside the layout table's paths, only an empty directory).
    Absent,
    /// A regular file, backed up.
    File {
        /// Backup file name inside the backup dir: the decimal index vmagent gave it.
        backup: String,
        /// Permission bits (never above 0o777: setuid, setgid and sticky are not kept).
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
        /// Its owner uid (restored, so a link someone else planted stays untrusted).
        #[serde(default)]
        uid: u32,
        /// Its owner gid.
        #[serde(default)]
        gid: u32,
    },
    /// A file or directory whose content is untouched; only metadata changes.
    Meta {
        /// Permission bits (never above 0o777).
        mode: u32,
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
    },
}

/// One journal entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Host path relative to the target root.
    pub path: PathBuf,
    /// Prior state.
    pub prior: Prior,
}

/// The journal document.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// Schema version.
    pub version: u32,
    /// Entries in the order the changes are made; undo runs them in reverse.
    pub entries: Vec<Entry>,
}

/// Why a journal was not (fully) rolled back.
#[derive(Debug, Error)]
pub enum JournalError {
    /// The journal is not JSON of this schema.
    #[error("the undo journal {path} is damaged ({reason}); nothing was rolled back or changed. Inspect it and the backups beside it, then run `vmagent recover --discard-journal` to move them aside")]
    Damaged {
        /// Journal path.
        path: PathBuf,
        /// Parser's reason.
        reason: String,
    },
    /// An entry is not one vmagent writes.
    #[error("the undo journal {path} is not one vmagent wrote: entry {index} ({entry}) {reason}; nothing was rolled back or changed. Inspect it, then run `vmagent recover --discard-journal` to move it aside")]
    Refused {
        /// Journal path.
        path: PathBuf,
        /// Entry number (from 0).
        index: usize,
        /// The entry's path as written in the journal.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A backup the journal names is gone.
    #[error("the undo journal {path} needs backup '{backup}' of {dest}, but {backups}/{backup} is missing; nothing was rolled back or changed. Put {dest} back by hand if needed, then run `vmagent recover --discard-journal` to move the journal aside")]
    MissingBackup {
        /// Journal path.
        path: PathBuf,
        /// The backups directory.
        backups: PathBuf,
        /// Backup name.
        backup: String,
        /// The destination it was for (system path).
        dest: String,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Host path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Rolling back restored what it could; the paths in `left` are still in the state
    /// the apply gave them. The journal and backups are kept, so the next `vmagent
    /// recover` (or apply) retries exactly these.
    #[error("{}", incomplete_message(journal, restored.len(), left))]
    Incomplete {
        /// Journal path (kept).
        journal: PathBuf,
        /// Paths put back (relative to the root).
        restored: Vec<PathBuf>,
        /// Every path not put back, with why.
        left: Vec<Left>,
    },
    /// The transaction directory is not vmagent's (e.g. a symlink).
    #[error(transparent)]
    Root(#[from] RootError),
}

/// A path a rollback could not put back.
#[derive(Debug)]
pub struct Left {
    /// System path.
    pub path: String,
    /// What failed.
    pub what: &'static str,
    /// Cause.
    pub source: io::Error,
}

/// The message of [`JournalError::Incomplete`]: every path left, why, and what to do.
pub fn incomplete_message(journal: &Path, restored: usize, left: &[Left]) -> String {
    let mut m = format!(
        "rolling back restored {restored} path(s) but left {} in the new state:",
        left.len()
    );
    for l in left {
        let fix = super::preflight::remedy(l.source.raw_os_error());
        m.push_str(&format!(
            "\n  {}: {} failed: {} (to fix: {fix})",
            l.path, l.what, l.source
        ));
    }
    m.push_str(&format!(
        "\nthe undo journal {} and its backups are kept; after fixing the above, run `vmagent recover` (the next `vmagent apply` also retries)",
        journal.display()
    ));
    m
}

pub(super) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |source| JournalError::Io { what, path, source }
}

/// Where a transaction keeps its journal and backups.
#[derive(Debug, Clone)]
pub struct TxnDir {
    /// `<state dir>/txn` on the host.
    pub dir: PathBuf,
    /// The same as a system path.
    sys: PathBuf,
    root: Root,
}

impl TxnDir {
    /// The transaction directory of `root` (checked, not created: a symlink at the
    /// state directory or at `txn` is refused).
    pub fn of(root: &Root) -> Result<TxnDir, RootError> {
        let sys = root.state_dir().join("txn");
        let dir = match root.own_dir(&sys)? {
            Some(d) => d,
            None => root.resolve(&sys)?,
        };
        // Checked here too, so a link there stops an apply before anything is recorded.
        root.own_dir(&sys.join("backups"))?;
        Ok(TxnDir {
            dir,
            sys,
            root: root.clone(),
        })
    }

    /// The journal file.
    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal.json")
    }
    /// The backups directory.
    pub fn backups(&self) -> PathBuf {
        self.dir.join("backups")
    }

    /// The root this transaction directory belongs to.
    pub(super) fn root(&self) -> &Root {
        &self.root
    }

    /// The backups directory, checked: `None` when missing.
    pub(super) fn checked_backups(&self) -> Result<Option<PathBuf>, RootError> {
        self.root.own_dir(&self.sys.join("backups"))
    }

    /// Reads a pending journal, if any; a damaged one is an error (never a guess).
    pub fn pending(&self) -> Result<Option<Journal>, JournalError> {
        if self.root.own_dir(&self.sys)?.is_none() {
            return Ok(None);
        }
        let path = self.journal();
        let Some(data) = fsx::read_file(&path, JOURNAL_LIMIT).map_err(io_err("reading", &path))?
        else {
            return Ok(None);
        };
        let j: Journal = serde_json::from_slice(&data).map_err(|e| JournalError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if j.version != VERSION {
            return Err(JournalError::Damaged {
                path,
                reason: format!(
                    "schema version {} (this vmagent writes {VERSION})",
                    j.version
                ),
            });
        }
        Ok(Some(j))
    }

    /// Records `paths` (host paths under the root): backs up prior files, then writes
    /// the journal durably.
    pub fn begin(&self, paths: &[PathBuf]) -> Result<Journal, JournalError> {
        self.clear()?;
        let backups = self
            .root
            .ensure_own_dir(&self.sys.join("backups"), crate::layout::STATE_MODE)?;
        let base = self.root.base();
        let mut journal = Journal {
            version: VERSION,
            entries: Vec::new(),
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, host) in paths.iter().enumerate() {
            if !seen.insert(host.clone()) {
                continue; // the first record holds the true prior state
            }
            let rel = host.strip_prefix(base).unwrap_or(host).to_path_buf();
            let inspect = io_err("inspecting", host);
            // Setuid, setgid and sticky bits are never recorded, so never restored: a
            // journal that carries them is not one vmagent wrote (see `untrusted`).
            let prior = match fsx::meta(host).map_err(inspect)? {
                None => Prior::Absent,
                Some(m) if m.kind == Kind::Symlink => Prior::Symlink {
                    target: fs::read_link(host).map_err(io_err("reading link", host))?,
                    uid: m.uid,
                    gid: m.gid,
                },
                Some(m) if m.kind == Kind::File => {
                    let backup = format!("{i}");
                    let data = fsx::read_file(host, BACKUP_LIMIT)
                        .map_err(io_err("backing up", host))?
                        .unwrap_or_default();
                    let dest = backups.join(&backup);
                    fsx::write_atomic(&dest, &data, 0o600, None)
                        .map_err(io_err("writing backup", &dest))?;
                    Prior::File {
                        backup,
                        mode: m.mode & 0o777,
                        uid: m.uid,
                        gid: m.gid,
                    }
                }
                Some(m) => Prior::Meta {
                    mode: m.mode & 0o777,
                    uid: m.uid,
                    gid: m.gid,
                },
            };
            journal.entries.push(Entry { path: rel, prior });
        }
        fsx::sync_dir(&backups).map_err(io_err("syncing", &backups))?;
        fsx::write_json(&self.journal(), &journal, 0o600)
            .map_err(io_err("writing", &self.journal()))?;
        Ok(journal)
    }

    /// Commit: the journal goes away (durably), then the backups.
    pub fn commit(&self) -> Result<(), JournalError> {
        if self.root.own_dir(&self.sys)?.is_none() {
            return Ok(());
        }
        fsx::remove_if_exists(&self.journal()).map_err(io_err("removing", &self.journal()))?;
        fsx::sync_dir(&self.dir).map_err(io_err("syncing", &self.dir))?;
        self.clear()
    }

    /// Removes the journal and backups without undoing anything (a symlink at `txn` or
    /// `backups` is refused, never followed).
    pub fn clear(&self) -> Result<(), JournalError> {
        self.root
            .ensure_own_dir(&self.sys, crate::layout::STATE_MODE)?;
        fsx::remove_if_exists(&self.journal()).map_err(io_err("removing", &self.journal()))?;
        if let Some(b) = self.checked_backups()? {
            fs::remove_dir_all(&b).map_err(io_err("removing", &b))?;
        }
        Ok(())
    }

    /// Moves the journal and backups, as they are, into a new `discarded-<time>`
    /// directory in the state dir (evidence is never deleted). Returns that directory,
    /// or `None` when there was nothing to move.
    pub fn discard(&self, now: i64) -> Result<Option<PathBuf>, JournalError> {
        if self.root.own_dir(&self.sys)?.is_none() {
            return Ok(None);
        }
        let journal = fsx::meta(&self.journal()).map_err(io_err("inspecting", &self.journal()))?;
        let backups = fsx::meta(&self.backups()).map_err(io_err("inspecting", &self.backups()))?;
        if journal.is_none() && backups.is_none() {
            return Ok(None);
        }
        let stamp = crate::timefmt::rfc3339(now).replace(':', "");
        let state = self.root.state_dir();
        let mut n = 0;
        let aside = loop {
            let name = match n {
                0 => format!("discarded-{stamp}"),
                _ => format!("discarded-{stamp}-{n}"),
            };
            let sys = state.join(name);
            if self.root.own_dir(&sys)?.is_none() {
                break self.root.ensure_own_dir(&sys, crate::layout::STATE_MODE)?;
            }
            n += 1;
        };
        // rename(2) moves a symlink or anything else as the entry itself, never its target.
        for (from, name, there) in [
            (self.journal(), "journal.json", journal.is_some()),
            (self.backups(), "backups", backups.is_some()),
        ] {
            if there {
                fs::rename(&from, aside.join(name)).map_err(io_err("moving aside", &from))?;
            }
        }
        fsx::sync_dir(&aside).map_err(io_err("syncing", &aside))?;
        fsx::sync_dir(&self.dir).map_err(io_err("syncing", &self.dir))?;
        Ok(Some(aside))
    }

    /// Checks a journal read from disk as the next rollback would, changing nothing:
    /// the number of entries it would undo (`vmagent recover`'s first step, and the
    /// journal fuzz target's).
    pub fn validate(&self, journal: &Journal) -> Result<usize, JournalError> {
        untrusted::check(self, journal, true).map(|undo| undo.len())
    }

    /// Restores every entry's prior state (idempotent: safe to repeat after a crash),
    /// then removes the journal. Returns the paths restored. Only entries that differ
    /// from their prior state are rewritten; an entry that cannot be put back does not
    /// stop the others, and then the journal is kept and [`JournalError::Incomplete`]
    /// names every path left. Every entry is checked
    /// first, and nothing is touched unless all pass; `from_disk` journals (not the one
    /// this process just wrote) also get the symlink policy of `untrusted`.
    pub fn rollback(
        &self,
        journal: &Journal,
        from_disk: bool,
    ) -> Result<Vec<PathBuf>, JournalError> {
        let undo = untrusted::check(self, journal, from_disk)?;
        let mut dirs = std::collections::BTreeSet::new();
        let mut restored = Vec::new();
        let mut left = Vec::new();
        // Every entry is tried, whatever failed before it: one stuck file must not keep
        // the others in the new state (a new token beside the old cluster.env).
        for (e, host) in undo.iter().rev() {
            match untrusted::restore(self, e, host) {
                Ok(true) => {
                    if let Some(p) = host.parent() {
                        dirs.insert(p.to_path_buf());
                    }
                    restored.push(e.path.clone());
                }
                Ok(false) => {}
                Err(x) => left.push(left_of(e, x)),
            }
        }
        for d in dirs {
            if d.is_dir() {
                if let Err(source) = fsx::sync_dir(&d) {
                    left.push(Left {
                        path: d.display().to_string(),
                        what: "syncing",
                        source,
                    });
                }
            }
        }
        if !left.is_empty() {
            return Err(JournalError::Incomplete {
                journal: self.journal(),
                restored,
                left,
            });
        }
        self.commit()?;
        Ok(restored)
    }
}

/// One failed restore as a [`Left`] (whatever the error: the rollback goes on).
fn left_of(e: &Entry, x: JournalError) -> Left {
    let path = Path::new("/").join(&e.path).display().to_string();
    match x {
        JournalError::Io { what, source, .. } => Left { path, what, source },
        other => Left {
            path,
            what: "restoring",
            source: io::Error::other(other.to_string()),
        },
    }
}
