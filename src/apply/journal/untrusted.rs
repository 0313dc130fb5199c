//! Checking a journal before it is rolled back: it is input vmagent did not just make.
//!
//! The rules (README, "Transactions and recovery"):
//! - a path is relative, made of plain names only (no `/` at the start, no `.` or `..`),
//!   and is resolved inside the root by the one root resolver;
//! - it must be one of the layout table's paths (installed files, the proxy's
//!   certificates, /etc/hosts, the managed directories, the /etc/istio link) or
//!   vmagent's state record. Any other path may only be a directory vmagent created (a
//!   certificate directory cluster.env names, or a parent): undo removes it when empty,
//!   and refuses when something other than a directory stands there;
//! - a backup name is the decimal index vmagent gives it, never a path;
//! - modes are permission bits only (0o777 and below): vmagent never records, so never
//!   restores, setuid, setgid or sticky bits;
//! - a symlink read back from disk is recreated only when its target, resolved inside
//!   the root, is missing or not a private file (one others may not read, like
//!   /etc/shadow): a restored link must not become a path to a secret. The journal an
//!   apply just wrote (still in memory) is trusted with its own links.
//!
//! The syntax rules are a pure function ([`entry_syntax`]); the rest needs the root.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::{io_err, Entry, Journal, JournalError, Prior, TxnDir, BACKUP_LIMIT};
use crate::fsx::{self, Kind};
use crate::layout;
use crate::root::Root;

/// More entries than any plan makes.
const MAX_ENTRIES: usize = 4096;

/// Longest path or link target accepted (PATH_MAX).
const MAX_PATH: usize = 4096;

/// Why one entry's text is not what vmagent writes, or `None` when it is.
pub fn entry_syntax(e: &Entry) -> Option<String> {
    if let Some(r) = rel_path(&e.path) {
        return Some(r);
    }
    match &e.prior {
        Prior::Absent => None,
        Prior::File { backup, mode, .. } => {
            let digits = !backup.is_empty()
                && backup.len() <= 6
                && backup.bytes().all(|b| b.is_ascii_digit());
            if !digits {
                Some(format!(
                    "names backup {backup:?}, not a backup name vmagent gives (a decimal number)"
                ))
            } else {
                mode_bits(*mode)
            }
        }
        Prior::Meta { mode, .. } => mode_bits(*mode),
        Prior::Symlink { target, .. } => {
            let t = target.as_os_str().as_encoded_bytes();
            if t.is_empty() || t.len() > MAX_PATH || t.contains(&0) {
                Some("has an empty, overlong or NUL-containing symlink target".into())
            } else {
                None
            }
        }
    }
}

fn rel_path(p: &Path) -> Option<String> {
    let bytes = p.as_os_str().as_encoded_bytes();
    if bytes.is_empty() || bytes.len() > MAX_PATH || bytes.contains(&0) {
        return Some("has an empty or overlong path".into());
    }
    if !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Some("is not a plain relative path (absolute, or with `.` or `..`)".into());
    }
    None
}

fn mode_bits(mode: u32) -> Option<String> {
    (mode > 0o777).then(|| {
        format!(
            "has mode {mode:o}: vmagent records permission bits only (no setuid, setgid or sticky)"
        )
    })
}

/// The layout's paths under `root`, as relative host paths the way a plan resolves
/// them: files and the /etc/istio link without following their last component,
/// directories through it, and `/etc/istio/...` also as `/var/lib/istio/...` (the
/// apply that creates that link plans its contents there).
fn layout_paths(root: &Root) -> BTreeSet<PathBuf> {
    let state = root.state_dir().join(crate::applied::FILE);
    let state = state.to_string_lossy().into_owned();
    let store = layout::token_store(root.state_dir());
    let mut files = layout::recorded_files();
    files.extend([
        layout::HOSTS,
        layout::ETC_ISTIO.0,
        state.as_str(),
        store.as_str(),
    ]);
    let dirs = layout::DIRS.iter().map(|d| d.path);
    let (link, target) = layout::ETC_ISTIO;
    let mut out = BTreeSet::new();
    let all = files
        .iter()
        .map(|f| (*f, false))
        .chain(dirs.map(|d| (d, true)));
    for (sys, follow) in all {
        let mapped = sys
            .strip_prefix(link)
            .filter(|r| r.starts_with('/'))
            .map(|r| format!("{target}{r}"));
        for s in std::iter::once(sys.to_string()).chain(mapped) {
            let host = if follow {
                root.resolve(Path::new(&s))
            } else {
                root.resolve_parent(Path::new(&s))
            };
            if let Some(rel) = host
                .ok()
                .and_then(|h| h.strip_prefix(root.base()).ok().map(Path::to_path_buf))
            {
                out.insert(rel);
            }
        }
    }
    out
}

/// Checks every entry of `journal`; returns them with their host paths, in journal
/// order. Nothing is changed.
pub(super) fn check<'j>(
    txn: &TxnDir,
    journal: &'j Journal,
    from_disk: bool,
) -> Result<Vec<(&'j Entry, PathBuf)>, JournalError> {
    let root = txn.root();
    let refuse = |index: usize, e: &Entry, reason: String| JournalError::Refused {
        path: txn.journal(),
        index,
        entry: e.path.display().to_string(),
        reason,
    };
    if journal.entries.len() > MAX_ENTRIES {
        return Err(JournalError::Damaged {
            path: txn.journal(),
            reason: format!("{} entries", journal.entries.len()),
        });
    }
    let allowed = layout_paths(root);
    let backups = txn.checked_backups()?;
    let mut out = Vec::with_capacity(journal.entries.len());
    for (i, e) in journal.entries.iter().enumerate() {
        if let Some(reason) = entry_syntax(e) {
            return Err(refuse(i, e, reason));
        }
        let sys = Path::new("/").join(&e.path);
        let host = root
            .resolve_parent(&sys)
            .map_err(|err| refuse(i, e, format!("cannot be resolved inside the root: {err}")))?;
        let rel = host.strip_prefix(root.base()).unwrap_or(&host);
        let now = fsx::meta(&host).map_err(io_err("inspecting", &host))?;
        if !allowed.contains(rel) {
            let plain_dir =
                matches!(e.prior, Prior::Absent) && now.is_none_or(|m| m.kind == Kind::Dir);
            if !plain_dir {
                return Err(refuse(
                    i,
                    e,
                    "is not a path vmagent installs or manages (only a directory it created may be outside its layout table)".into(),
                ));
            }
        }
        match &e.prior {
            Prior::File { backup, .. } => {
                let there = backups
                    .as_ref()
                    .map(|b| fsx::meta(&b.join(backup)))
                    .transpose()
                    .map_err(io_err("inspecting", &txn.backups()))?
                    .flatten();
                if there.map(|m| m.kind) != Some(Kind::File) {
                    return Err(JournalError::MissingBackup {
                        path: txn.journal(),
                        backups: txn.backups(),
                        backup: backup.clone(),
                        dest: sys.display().to_string(),
                    });
                }
            }
            Prior::Symlink { target, .. } if from_disk => {
                if let Some(reason) = private_target(root, &sys, target) {
                    return Err(refuse(i, e, reason));
                }
            }
            _ => {}
        }
        out.push((e, host));
    }
    Ok(out)
}

/// Why a link at `sys` to `target` must not be recreated, if it must not.
fn private_target(root: &Root, sys: &Path, target: &Path) -> Option<String> {
    let full = sys.parent().unwrap_or(Path::new("/")).join(target);
    let shown = target.display();
    match root.resolve(&full) {
        Err(e) => Some(format!("is a symlink to {shown}, which cannot be resolved inside the root: {e}")),
        Ok(h) => match fsx::meta(&h) {
            Ok(Some(m)) if m.kind != Kind::Dir && m.mode & 0o004 == 0 => Some(format!(
                "is a symlink to {shown}, a file others may not read (mode {:o}); vmagent does not recreate links to private files",
                m.mode
            )),
            Ok(_) => None,
            Err(e) => Some(format!("is a symlink to {shown}, which cannot be inspected: {e}")),
        },
    }
}

/// Puts one checked entry back; `Ok(false)` when there was nothing to do.
pub(super) fn restore(txn: &TxnDir, e: &Entry, host: &Path) -> Result<bool, JournalError> {
    let err = |what| io_err(what, host);
    // Looked at first: unlink fails on a read-only file system even when nothing is
    // there, and an entry that needs no undo must not be reported as left.
    let tmp = fsx::tmp_path(host);
    if fsx::meta(&tmp)
        .map_err(err("inspecting temp file of"))?
        .is_some()
    {
        fsx::remove_if_exists(&tmp).map_err(err("removing temp file of"))?;
    }
    let now = fsx::meta(host).map_err(err("inspecting"))?;
    match &e.prior {
        Prior::Absent => match now.map(|m| m.kind) {
            None => return Ok(false),
            Some(Kind::Dir) => match fs::remove_dir(host) {
                Ok(()) => {}
                Err(x) if x.kind() == io::ErrorKind::DirectoryNotEmpty => return Ok(false),
                Err(x) => return Err(err("removing")(x)),
            },
            Some(_) => fs::remove_file(host).map_err(err("removing"))?,
        },
        Prior::File {
            backup,
            mode,
            uid,
            gid,
        } => {
            let path = txn.backups().join(backup);
            let data = fsx::read_file(&path, BACKUP_LIMIT)
                .map_err(io_err("reading backup", &path))?
                .ok_or_else(|| JournalError::MissingBackup {
                    path: txn.journal(),
                    backups: txn.backups(),
                    backup: backup.clone(),
                    dest: Path::new("/").join(&e.path).display().to_string(),
                })?;
            // Only what changed is rewritten: a file the apply never reached needs no
            // space and no write, so it cannot fail to be put back.
            let same_content = now.is_some_and(|m| m.kind == Kind::File)
                && fsx::read_file(host, BACKUP_LIMIT).ok().flatten().as_ref() == Some(&data);
            if same_content {
                let same_meta =
                    now.is_some_and(|m| m.mode == *mode && (m.uid, m.gid) == (*uid, *gid));
                if same_meta {
                    return Ok(false);
                }
                fsx::set_meta(host, *mode, Some((*uid, *gid)))
                    .map_err(err("restoring owner and mode of"))?;
                return Ok(true);
            }
            if now.map(|m| m.kind) == Some(Kind::Dir) {
                fs::remove_dir(host).map_err(err("removing"))?;
            }
            fsx::write_atomic(host, &data, *mode, Some((*uid, *gid))).map_err(err("restoring"))?;
        }
        Prior::Symlink { target, uid, gid } => {
            let tmp = fsx::tmp_path(host);
            std::os::unix::fs::symlink(target, &tmp).map_err(err("restoring link"))?;
            std::os::unix::fs::lchown(&tmp, Some(*uid), Some(*gid))
                .and_then(|()| fs::rename(&tmp, host))
                .map_err(|x| {
                    let _ = fs::remove_file(&tmp);
                    err("restoring link")(x)
                })?;
        }
        Prior::Meta { mode, uid, gid } => {
            let same = now.is_some_and(|m| m.mode == *mode && (m.uid, m.gid) == (*uid, *gid));
            if now.is_none() || same {
                return Ok(false);
            }
            fsx::set_meta(host, *mode, Some((*uid, *gid)))
                .map_err(err("restoring owner and mode of"))?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, prior: Prior) -> Entry {
        Entry {
            path: path.into(),
            prior,
        }
    }

    fn file(backup: &str, mode: u32) -> Prior {
        Prior::File {
            backup: backup.into(),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn what_vmagent_writes_passes() {
        for e in [
            entry("etc/hosts", file("3", 0o644)),
            entry("var/lib/istio", Prior::Absent),
            entry(
                "etc/certs",
                Prior::Meta {
                    mode: 0o755,
                    uid: 998,
                    gid: 998,
                },
            ),
            entry(
                "etc/istio",
                Prior::Symlink {
                    target: "/var/lib/istio".into(),
                    uid: 0,
                    gid: 0,
                },
            ),
        ] {
            assert_eq!(entry_syntax(&e), None, "{e:?}");
        }
    }

    #[test]
    fn outside_the_layout_only_a_directory_may_be_undone() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        fs::create_dir_all(t.path().join("srv/certs")).unwrap();
        fs::write(t.path().join("srv/file"), "x").unwrap();
        let txn = TxnDir::of(&root).unwrap();
        let journal = |path: &str| Journal {
            version: 1,
            entries: vec![entry(path, Prior::Absent)],
        };
        // A certificate directory cluster.env named, made by the apply; or not made yet.
        for ok in [
            "srv/certs",
            "srv/missing",
            "etc/hosts",
            "var/lib/istio/config/mesh",
        ] {
            assert!(check(&txn, &journal(ok), true).is_ok(), "{ok}");
        }
        let forged = journal("srv/file");
        let refused = check(&txn, &forged, true);
        assert!(
            matches!(refused, Err(JournalError::Refused { .. })),
            "{refused:?}"
        );
        let j = Journal {
            version: 1,
            entries: vec![entry("etc/hosts", file("0", 0o644))],
        };
        let missing = check(&txn, &j, true);
        assert!(
            matches!(missing, Err(JournalError::MissingBackup { .. })),
            "{missing:?}"
        );
    }

    #[test]
    fn forged_entries_are_refused() {
        for e in [
            entry("/etc/passwd", Prior::Absent),
            entry("../../etc/passwd", Prior::Absent),
            entry("etc/../../x", Prior::Absent),
            entry("./etc/hosts", Prior::Absent),
            entry("", Prior::Absent),
            entry("etc/hosts", file("../../../etc/shadow", 0o644)),
            entry("etc/hosts", file("/etc/shadow", 0o644)),
            entry("etc/hosts", file("a/1", 0o644)),
            entry("etc/hosts", file("", 0o644)),
            entry("etc/hosts", file("1", 0o4755)),
            entry(
                "etc/certs",
                Prior::Meta {
                    mode: 0o2755,
                    uid: 0,
                    gid: 0,
                },
            ),
            entry(
                "etc/hosts",
                Prior::Symlink {
                    target: "".into(),
                    uid: 0,
                    gid: 0,
                },
            ),
        ] {
            assert!(entry_syntax(&e).is_some(), "{e:?}");
        }
    }
}
