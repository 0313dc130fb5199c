//! Executes a plan as one transaction: exclusive lock, undo journal with backups,
//! atomic writes, directory fsyncs, and rollback on any failure. An interrupted run is
//! rolled back by the next one ([`recover`]).

pub mod journal;
pub mod lock;
pub mod preflight;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::fsx;
use crate::layout;
use crate::plan::{Action, Plan, Step};
use crate::root::{Root, RootError};
use journal::{JournalError, TxnDir};

/// Why an apply failed. The root has been rolled back unless `RollbackFailed`, which
/// names every path left in the new state.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// A step failed; every change was undone.
    #[error("{step} failed: {source}; all changes were rolled back")]
    Step {
        /// What was being done (e.g. `write /etc/hosts`).
        step: String,
        /// Cause.
        source: io::Error,
    },
    /// A step failed and so did the undo: the journal is kept for the next run.
    #[error("{step} failed: {source}; rolling back also failed ({rollback}); the journal in {journal} will be replayed by the next `vmagent apply` or `vmagent recover`")]
    RollbackFailed {
        /// What was being done.
        step: String,
        /// Cause.
        source: io::Error,
        /// Why undo failed.
        rollback: Box<JournalError>,
        /// Journal path.
        journal: String,
    },
    /// The journal could not be written; nothing was changed.
    #[error("cannot record the undo journal in {dir}: {source}; nothing was changed")]
    Journal {
        /// Transaction dir.
        dir: String,
        /// Cause.
        source: io::Error,
    },
    /// The journal and backups could not be recorded; nothing was changed.
    #[error("cannot record the undo journal in {dir}: {source}; nothing was changed")]
    Record {
        /// Transaction dir.
        dir: String,
        /// Cause.
        source: JournalError,
    },
    /// A destination cannot be replaced (no space, immutable, read-only): refused
    /// before the journal was written, so nothing was changed.
    #[error(transparent)]
    Blocked(#[from] preflight::Blocked),
    /// A journal left by an earlier run could not be rolled back (damaged, forged, a
    /// backup missing, or an I/O error part-way: the message says which and what to do).
    #[error(transparent)]
    Pending(#[from] JournalError),
    /// Path resolution failed.
    #[error(transparent)]
    Root(#[from] RootError),
}

/// The transaction directory of a root (checked: a symlink there is refused).
pub fn txn_dir(root: &Root) -> Result<TxnDir, RootError> {
    TxnDir::of(root)
}

/// Creates the state directory (0700, root's: it holds backups of secrets) if missing,
/// repairs its mode if wrong, and returns its host path. It is vmagent's own
/// bookkeeping, not part of any plan.
pub fn state_dir(root: &Root) -> Result<PathBuf, ApplyError> {
    Ok(root.ensure_own_dir(root.state_dir(), layout::STATE_MODE)?)
}

/// Creates (or re-checks and repairs) a directory of vmagent's own under the root, see
/// [`Root::ensure_own_dir`]; returns its host path, or the path that failed with the
/// error.
pub fn ensure_dir(root: &Root, sys: &Path, mode: u32) -> Result<PathBuf, (PathBuf, io::Error)> {
    root.ensure_own_dir(sys, mode).map_err(|e| {
        let path = match &e {
            RootError::OwnDir { path, .. } | RootError::Io { path, .. } => path.clone(),
            _ => sys.to_path_buf(),
        };
        (path, io::Error::other(e))
    })
}

/// Rolls back an interrupted apply, if one left a journal. Returns the paths restored
/// (relative to the root), or `None` when there was nothing to recover. A journal that
/// fails its checks is refused with nothing touched ([`ApplyError::Pending`]).
pub fn recover(root: &Root) -> Result<Option<Vec<PathBuf>>, ApplyError> {
    let txn = txn_dir(root)?;
    match txn.pending()? {
        None => Ok(None),
        Some(j) => Ok(Some(txn.rollback(&j, true)?)),
    }
}

/// `vmagent recover --discard-journal`: moves a pending journal and its backups aside
/// (into `discarded-<time>` in the state dir) without rolling anything back. Returns
/// where they went, or `None` when there was nothing.
pub fn discard(root: &Root) -> Result<Option<PathBuf>, ApplyError> {
    Ok(txn_dir(root)?.discard(crate::timefmt::now())?)
}

/// Test hook: `VMAGENT_FAULT=fail:N` fails, `abort:N` kills the process, after N
/// actions. Compiled only into debug builds, which is what the test suite runs.
fn fault_after(done: usize) -> io::Result<()> {
    #[cfg(debug_assertions)]
    if let Ok(spec) = std::env::var("VMAGENT_FAULT") {
        let (kind, n) = spec.split_once(':').unwrap_or((&spec, "0"));
        if n.parse::<usize>().ok() == Some(done) {
            match kind {
                "abort" => std::process::abort(),
                "fail" => {
                    return Err(io::Error::other(format!(
                        "injected fault after {done} actions"
                    )))
                }
                _ => {}
            }
        }
    }
    let _ = done;
    Ok(())
}

/// Executes `plan` under `root`. The caller holds the lock.
pub fn execute(root: &Root, plan: &Plan) -> Result<(), ApplyError> {
    let txn = txn_dir(root)?;
    // Refused here, before the journal, every destination stays as it was: a rollback
    // never has to rewrite a file on a full disk or over an immutable one.
    preflight::check(plan, &txn.dir, &root.state_dir().join("txn"))?;
    let hosts: Vec<PathBuf> = plan.steps.iter().map(|s| s.host.clone()).collect();
    let journal = txn.begin(&hosts).map_err(|source| ApplyError::Record {
        dir: txn.dir.display().to_string(),
        source,
    })?;
    let mut dirs = BTreeSet::new();
    let mut step = String::from("starting the transaction");
    let result = (|| {
        fault_after(0)?;
        for (i, Step { action, host }) in plan.steps.iter().enumerate() {
            step = format!("{} {}", verb(action), action.path());
            run(action, host)?;
            if let Some(p) = host.parent() {
                dirs.insert(p.to_path_buf());
            }
            fault_after(i + 1)?;
        }
        step = "syncing directories".into();
        for d in &dirs {
            fsx::sync_dir(d)?;
        }
        step = "committing".into();
        txn.commit().map_err(io::Error::other)
    })();
    match result {
        Ok(()) => Ok(()),
        // The journal this process just wrote: its own links are trusted.
        Err(source) => match txn.rollback(&journal, false) {
            Ok(_) => Err(ApplyError::Step { step, source }),
            Err(rollback) => Err(ApplyError::RollbackFailed {
                step,
                source,
                rollback: Box::new(rollback),
                journal: txn.journal().display().to_string(),
            }),
        },
    }
}

fn verb(a: &Action) -> &'static str {
    match a {
        Action::CreateDir { .. } => "create directory",
        Action::CreateSymlink { .. } => "create symlink",
        Action::WriteFile { .. } => "write",
        Action::SetMeta { .. } => "set owner/mode of",
        Action::Remove { .. } => "remove",
    }
}

fn ids(o: Option<crate::plan::Ids>) -> Option<(u32, u32)> {
    o.map(|i| (i.uid, i.gid))
}

fn run(a: &Action, host: &Path) -> io::Result<()> {
    match a {
        Action::CreateDir { mode, owner, .. } => fsx::create_dir(host, *mode, ids(*owner)),
        Action::CreateSymlink { target, .. } => std::os::unix::fs::symlink(target, host),
        Action::WriteFile {
            content,
            mode,
            owner,
            ..
        } => fsx::write_atomic(host, content, *mode, ids(*owner)),
        Action::SetMeta { mode, owner, .. } => fsx::set_meta(host, *mode, ids(*owner)),
        Action::Remove { .. } => fsx::remove_if_exists(host),
    }
}
