//! Before the first write of an apply (before even the journal): can every destination
//! be replaced, and can its undo be recorded? A rollback that has to rewrite a file on a
//! full disk, or over an immutable file, fails half-way; refusing up front leaves the
//! root untouched instead. Checked: free space on each file system for the new files
//! (written beside the old ones until the rename) and for the backups and journal in the
//! state dir; and that each existing destination and each directory written into can
//! be written (an immutable or append-only file fails with EPERM, a read-only file
//! system with EROFS). The decisions are the pure functions [`footprint`],
//! [`shortfall`] and [`remedy`]; the rest gathers numbers.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::fsx::{self, Kind};
use crate::plan::{Action, Plan};

/// Allocation unit assumed per file (the common block and page size).
const BLOCK: u64 = 4096;

/// Why an apply was refused before anything was written.
#[derive(Debug, Error)]
pub enum Blocked {
    /// A file system lacks the space for the new files or the backups.
    #[error("not enough space to write {path}: the file system holding {fs} has {free} bytes free, and this apply needs about {need} there (new files beside the old ones until each rename, backups and the undo journal); nothing was changed. To fix: free space on that file system, then apply again")]
    NoSpace {
        /// The first destination (or the state dir) needing space there (system path).
        path: String,
        /// An existing directory on that file system (host path).
        fs: PathBuf,
        /// Bytes free.
        free: u64,
        /// Bytes needed.
        need: u64,
    },
    /// A destination or a directory written into cannot be written.
    #[error("{path} cannot be replaced: {source}; nothing was changed. To fix: {remedy}, then apply again")]
    NotWritable {
        /// System path.
        path: String,
        /// Cause (EPERM, EROFS, ...).
        source: io::Error,
        /// What to do, from [`remedy`].
        remedy: &'static str,
    },
    /// A destination could not be inspected.
    #[error("cannot inspect {path} before applying: {source}; nothing was changed")]
    Io {
        /// Host path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

/// Bytes a file of `len` bytes takes at most: whole blocks, plus one block for the
/// file system's own bookkeeping (tmpfs charges a page even for an empty file).
pub fn footprint(len: u64) -> u64 {
    len.div_ceil(BLOCK).saturating_add(1).saturating_mul(BLOCK)
}

/// Bytes an in-place rewrite to `len` bytes needs beyond the `allocated` bytes the file
/// already holds (whole blocks; nothing when it shrinks or stays within them).
pub fn in_place_need(len: u64, allocated: u64) -> u64 {
    len.div_ceil(BLOCK)
        .saturating_mul(BLOCK)
        .saturating_sub(allocated)
}

/// Sums `demands` per file system and returns the first that does not fit in `free`,
/// as (file system, bytes needed, bytes free). A file system missing from `free` is
/// taken to have no space.
pub fn shortfall<K: Ord + Clone>(
    demands: &[(K, u64)],
    free: &BTreeMap<K, u64>,
) -> Option<(K, u64, u64)> {
    let mut need: BTreeMap<K, u64> = BTreeMap::new();
    for (k, n) in demands {
        let e = need.entry(k.clone()).or_default();
        *e = e.saturating_add(*n);
    }
    need.into_iter().find_map(|(k, n)| {
        let f = free.get(&k).copied().unwrap_or(0);
        (n > f).then_some((k, n, f))
    })
}

/// What to do about a write that failed with `errno`, for the error message.
pub fn remedy(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "free space on its file system",
        Some(libc::EPERM) => {
            "remove the immutable or append-only flag (`lsattr PATH`, then `chattr -i -a PATH`)"
        }
        Some(libc::EROFS) => "remount its file system read-write",
        Some(libc::EBUSY) => "unmount what is mounted over it",
        Some(libc::EACCES) => "check its permissions and any security module (SELinux, AppArmor)",
        _ => "fix the cause named above",
    }
}

/// The nearest existing ancestor of `p` (itself included), followed through links:
/// the directory whose file system a new file at `p` lands on.
fn existing(p: &Path) -> Result<(PathBuf, fs::Metadata), Blocked> {
    let mut cur = p;
    loop {
        match fs::metadata(cur) {
            Ok(m) => return Ok((cur.to_path_buf(), m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match cur.parent() {
                Some(parent) => cur = parent,
                None => {
                    return Err(Blocked::Io {
                        path: p.into(),
                        source: e,
                    })
                }
            },
            Err(source) => {
                return Err(Blocked::Io {
                    path: cur.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn not_writable(sys: &str, source: io::Error) -> Blocked {
    Blocked::NotWritable {
        path: sys.to_string(),
        remedy: remedy(source.raw_os_error()),
        source,
    }
}

/// Checks `plan` against the file systems under the root; `txn` is the host path of the
/// transaction directory (journal and backups), which may not exist yet.
pub fn check(plan: &Plan, txn: &Path, state_sys: &Path) -> Result<(), Blocked> {
    // Per file system (device id): its demands, a directory on it, the first path.
    let mut demands: Vec<(u64, u64)> = Vec::new();
    let mut where_: BTreeMap<u64, (PathBuf, String)> = BTreeMap::new();
    let mut add = |on: &Path, sys: &str, bytes: u64| -> Result<(), Blocked> {
        let (dir, m) = existing(on)?;
        where_.entry(m.dev()).or_insert((dir, sys.to_string()));
        demands.push((m.dev(), bytes));
        Ok(())
    };
    let state_shown = state_sys.display().to_string();
    add(
        txn,
        &state_shown,
        footprint(4096 + 512 * plan.steps.len() as u64),
    )?;
    for step in &plan.steps {
        let sys = step.action.path();
        let host = &step.host;
        let now = fsx::meta(host).map_err(|source| Blocked::Io {
            path: host.clone(),
            source,
        })?;
        let parent = host.parent().unwrap_or(host);
        match now.map(|m| m.kind) {
            Some(Kind::File) => {
                // Backed up before the first change; then it must take a write.
                let len = fs::symlink_metadata(host).map(|x| x.len()).unwrap_or(0);
                add(txn, &state_shown, footprint(len))?;
                fsx::check_writable(host, false).map_err(|e| not_writable(sys, e))?;
            }
            Some(Kind::Dir) if matches!(step.action, Action::SetMeta { .. }) => {
                fsx::check_writable(host, true).map_err(|e| not_writable(sys, e))?;
            }
            _ => {}
        }
        let bytes = match &step.action {
            Action::WriteFile { content, .. } => footprint(content.len() as u64),
            Action::CreateDir { .. } | Action::CreateSymlink { .. } => footprint(0),
            Action::SetMeta { .. } | Action::Remove { .. } => 0,
        };
        if bytes > 0 {
            add(parent, sys, bytes)?;
            // A file mounted over the destination (bind-mounted /etc/hosts) lives on
            // another file system, where its content is then replaced in place.
            if let Action::WriteFile { content, .. } = &step.action {
                let (_, there) = existing(host)?;
                let (_, dir) = existing(parent)?;
                if there.is_file() && there.dev() != dir.dev() {
                    let more = in_place_need(content.len() as u64, there.blocks() * 512);
                    add(host, sys, more)?;
                }
            }
        }
        // A rename into (or an unlink from) the directory needs it writable.
        if !matches!(step.action, Action::SetMeta { .. }) {
            if let Ok((dir, _)) = existing(parent) {
                if dir == parent {
                    fsx::check_writable(&dir, true).map_err(|e| not_writable(sys, e))?;
                }
            }
        }
    }
    let mut free = BTreeMap::new();
    for (dev, (dir, _)) in &where_ {
        let f = fsx::free_bytes(dir).map_err(|source| Blocked::Io {
            path: dir.clone(),
            source,
        })?;
        free.insert(*dev, f);
    }
    match shortfall(&demands, &free) {
        None => Ok(()),
        Some((dev, need, free)) => {
            let (fs, path) = where_.get(&dev).cloned().unwrap_or_default();
            Err(Blocked::NoSpace {
                path,
                fs,
                free,
                need,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprint_is_whole_blocks_plus_one() {
        assert_eq!(footprint(0), 4096);
        assert_eq!(footprint(1), 8192);
        assert_eq!(footprint(4096), 8192);
        assert_eq!(footprint(4097), 12288);
        // Saturates: never wraps to a small need.
        assert_eq!(footprint(u64::MAX), u64::MAX);
    }

    #[test]
    fn in_place_needs_only_the_blocks_it_grows_by() {
        assert_eq!(in_place_need(100, 4096), 0);
        assert_eq!(in_place_need(4096, 4096), 0);
        assert_eq!(in_place_need(4097, 4096), 4096);
        assert_eq!(in_place_need(10, 0), 4096);
        assert_eq!(in_place_need(0, 0), 0);
    }

    #[test]
    fn shortfall_sums_per_file_system() {
        let free = BTreeMap::from([(1u64, 10_000u64), (2, 5_000)]);
        assert_eq!(shortfall(&[(1, 6_000), (2, 5_000)], &free), None);
        // Each fits alone; together they do not.
        assert_eq!(
            shortfall(&[(1, 6_000), (1, 6_000)], &free),
            Some((1, 12_000, 10_000))
        );
        assert_eq!(shortfall(&[(2, 5_001)], &free), Some((2, 5_001, 5_000)));
        // An unknown file system has no space.
        assert_eq!(shortfall(&[(3, 1)], &free), Some((3, 1, 0)));
        assert_eq!(shortfall::<u64>(&[], &BTreeMap::new()), None);
    }

    #[test]
    fn remedy_names_the_fix() {
        assert!(remedy(Some(libc::ENOSPC)).contains("free space"));
        assert!(remedy(Some(libc::EPERM)).contains("chattr -i"));
        assert!(remedy(Some(libc::EROFS)).contains("read-write"));
        assert!(remedy(Some(libc::EBUSY)).contains("unmount"));
        assert!(remedy(None).contains("cause"));
    }
}
