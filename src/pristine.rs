//! What bundle destinations held before vmagent first wrote them, so `vmagent
//! uninstall` can put the machine back: a copy (content, mode, owner) of every file that
//! existed, the target of every symlink, a note of every file vmagent created, what
//! /etc/hosts was (absent or not, its final newline, the lines adopted into the block),
//! and the directories vmagent made for its own state and cache.
//!
//! An entry is taken before the apply that writes the path and marked committed only
//! once that apply committed: a path whose only write was rolled back was never
//! vmagent's, so uninstall leaves whatever is there now, and the next apply takes the
//! original afresh. A committed entry is never retaken.
//!
//! The record is read back as untrusted input: only the layout's file destinations with
//! plain permission bits are kept, only plain non-system directories count as made by
//! vmagent, and the directory it lives in (like every directory of vmagent's own) must
//! be a real, root-owned directory: a symlink there is refused, so no copy is ever
//! written or read outside the root.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::etc_hosts;
use crate::fsx;
use crate::layout;
use crate::plan::{Action, Plan, What, READ_LIMIT};
use crate::root::Root;

/// Directory (in the state dir) of the record and its copies.
pub const DIR: &str = "pristine";

fn yes() -> bool {
    true
}

/// One path's original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    /// The file (or symlink) existed before vmagent wrote it.
    pub existed: bool,
    /// Its mode, uid and gid then.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// It was a symlink to this target (bytes: a target need not be UTF-8); no copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Vec<u8>>,
    /// An apply that wrote the path committed. Records from before this field existed
    /// were only kept by committed applies' standards, so they count as committed.
    #[serde(default = "yes")]
    pub committed: bool,
}

/// /etc/hosts before vmagent's block, and whether an apply committed a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsRecord {
    /// What the file was, and the lines adopted since.
    pub original: etc_hosts::Original,
    /// An apply that wrote the block committed.
    pub committed: bool,
}

/// The record: system path -> original.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// By system path.
    pub files: BTreeMap<String, Original>,
    /// /etc/hosts (none: vmagent never planned a block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<HostsRecord>,
    /// System paths of the directories vmagent created for its state and cache (and
    /// their parents): the only ones `uninstall --purge` removes whole.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub dirs: BTreeSet<String>,
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

/// The record's directory, when it exists (checked to be vmagent's own).
fn dir(root: &Root) -> io::Result<Option<PathBuf>> {
    root.own_dir(&root.state_dir().join(DIR)).map_err(other)
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

/// Whether an entry is one vmagent records: a layout file destination (the boot rule
/// included), mode bits only.
fn plausible(sys: &str, o: &Original) -> bool {
    let known = layout::recorded_files().contains(&sys);
    known && o.mode <= 0o777
}

/// Whether a recorded directory may be one vmagent made: a plain absolute path that is
/// not a system directory (`uninstall --purge` removes these whole).
fn plausible_dir(sys: &str) -> bool {
    rel(sys).is_ok() && !layout::system_dir(Path::new(sys))
}

impl Record {
    /// Reads the record (none or unreadable: empty). Entries vmagent never records (a
    /// path outside the layout, setuid bits, a system directory) are dropped with a
    /// warning.
    pub fn load(root: &Root) -> Record {
        let data = dir(root).and_then(|d| match d {
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
        rec.dirs.retain(|sys| {
            let keep = plausible_dir(sys);
            if !keep {
                tracing::warn!(path = %sys, "ignoring a directory vmagent would never make in its record of the original files");
            }
            keep
        });
        rec
    }

    fn store(&self, root: &Root) -> io::Result<()> {
        let d = root
            .ensure_own_dir(&root.state_dir().join(DIR), 0o700)
            .map_err(other)?;
        fsx::write_json(&d.join("record.json"), self, 0o600)
    }

    /// The /etc/hosts original uninstall goes by: a committed record's, else the
    /// default (the file was there; only the block comes out).
    pub fn hosts_original(&self) -> etc_hosts::Original {
        self.hosts
            .as_ref()
            .filter(|h| h.committed)
            .map(|h| h.original.clone())
            .unwrap_or_default()
    }
}

/// The member files `plan` writes (system paths), and, if it writes /etc/hosts, the
/// file's current content (`Some(None)`: absent).
fn writes(plan: &Plan) -> (Vec<&str>, Option<Option<&[u8]>>) {
    let mut files = Vec::new();
    let mut hosts = None;
    for s in &plan.steps {
        match &s.action {
            Action::WriteFile {
                path,
                what: What::Member(_) | What::TmpfilesRule | What::LogrotateRule,
                ..
            } => files.push(path.as_str()),
            Action::WriteFile {
                what: What::Hosts { .. },
                old,
                ..
            } => hosts = Some(old.as_deref()),
            _ => {}
        }
    }
    (files, hosts)
}

/// Records the originals of what `plan` writes that have no record yet. With
/// `refresh`, entries whose write never committed are taken again (what is there now
/// is what the admin has; call it so only before anything of this run changed a
/// destination: the package's postinst creates some). A file that exists while
/// vmagent's state record does too, without any pristine record, was written by an
/// earlier vmagent (before this record existed): it counts as created.
pub fn capture(root: &Root, plan: &Plan, refresh: bool) -> std::io::Result<()> {
    let mut rec = Record::load(root);
    let known_before = root
        .resolve(&root.state_dir().join(crate::applied::FILE))
        .map(|p| p.exists())
        .unwrap_or(false)
        && rec.files.is_empty();
    let keep = |committed: bool| committed || !refresh;
    let (files, hosts_old) = writes(plan);
    let mut changed = false;
    for sys in files {
        if rec.files.get(sys).is_some_and(|o| keep(o.committed)) {
            continue;
        }
        let host = root.resolve_parent(Path::new(sys)).map_err(other)?;
        let m = fsx::meta(&host)?.filter(|_| !known_before);
        let orig = match m {
            Some(m) if m.kind == fsx::Kind::File => {
                let data = fsx::read_file(&host, READ_LIMIT)?.unwrap_or_default();
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
                    link: None,
                    committed: false,
                }
            }
            // A link comes back as a link: its target, never a copy of what it points to.
            Some(m) if m.kind == fsx::Kind::Symlink => Original {
                existed: true,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                link: Some(std::fs::read_link(&host)?.into_os_string().into_vec()),
                committed: false,
            },
            _ => Original {
                existed: false,
                mode: 0,
                uid: 0,
                gid: 0,
                link: None,
                committed: false,
            },
        };
        rec.files.insert(sys.to_string(), orig);
        changed = true;
    }
    if let Some(old) = hosts_old {
        if !rec.hosts.as_ref().is_some_and(|h| keep(h.committed)) {
            rec.hosts = Some(HostsRecord {
                original: etc_hosts::Original::of(old),
                committed: false,
            });
            changed = true;
        }
    }
    if changed {
        rec.store(root)?;
    }
    Ok(())
}

/// After `plan` committed: its writes are vmagent's now, and the hosts lines it adopted
/// are recorded so uninstall can put them back.
pub fn commit(root: &Root, plan: &Plan) -> std::io::Result<()> {
    let mut rec = Record::load(root);
    let (files, hosts_old) = writes(plan);
    let mut changed = false;
    for sys in files {
        if let Some(o) = rec.files.get_mut(sys).filter(|o| !o.committed) {
            o.committed = true;
            changed = true;
        }
    }
    if let Some(old) = hosts_old {
        let h = rec.hosts.get_or_insert_with(|| HostsRecord {
            original: etc_hosts::Original::of(old),
            committed: false,
        });
        changed |= !h.committed;
        h.committed = true;
        for s in &plan.steps {
            if let Action::WriteFile {
                what: What::Hosts { adopted },
                ..
            } = &s.action
            {
                if !adopted.is_empty() {
                    h.original.adopted.push(adopted.clone());
                    changed = true;
                }
            }
        }
    }
    if changed {
        rec.store(root)?;
    }
    Ok(())
}

/// The system paths among `dirs` and their parents that do not exist yet: taken before
/// vmagent makes its state and cache directories, handed to [`note_dirs`] after.
pub fn missing_dirs(root: &Root, dirs: &[&Path]) -> Vec<String> {
    let mut out = Vec::new();
    for d in dirs {
        for a in d.ancestors().filter(|a| a.parent().is_some()) {
            let gone = root
                .resolve(a)
                .is_ok_and(|h| matches!(fsx::meta(&h), Ok(None)));
            let s = a.display().to_string();
            if gone && !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// Records which of `missing` (from [`missing_dirs`]) exist now: vmagent made them.
/// Call it under the apply lock, once the state directory exists.
pub fn note_dirs(root: &Root, missing: &[String]) -> std::io::Result<()> {
    // A system directory (/var/lib on a bare root) is never recorded: purge must not
    // remove it whole, whoever made it.
    let made: Vec<&String> = missing
        .iter()
        .filter(|s| plausible_dir(s))
        .filter(|s| {
            root.resolve(Path::new(s.as_str()))
                .is_ok_and(|h| matches!(fsx::meta(&h), Ok(Some(m)) if m.kind == fsx::Kind::Dir))
        })
        .collect();
    let mut rec = Record::load(root);
    let before = rec.dirs.len();
    rec.dirs.extend(made.into_iter().cloned());
    if rec.dirs.len() != before {
        rec.store(root)?;
    }
    Ok(())
}

/// Puts the symlink `target` at `host` (replacing what is there) atomically: a link
/// at the fixed temp name, renamed over.
pub fn restore_link(host: &Path, target: &[u8]) -> std::io::Result<()> {
    let tmp = fsx::tmp_path(host);
    fsx::remove_if_exists(&tmp)?;
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &tmp)?;
    std::fs::rename(&tmp, host).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Forgets what uninstall has put back (the originals and their copies): the next
/// apply records the machine afresh. The directories vmagent made stay recorded for a
/// later `uninstall --purge`.
pub fn forget(root: &Root, rec: &Record) -> std::io::Result<()> {
    let Some(d) = dir(root)? else {
        return Ok(());
    };
    let gone = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    gone(std::fs::remove_dir_all(d.join("files")))?;
    if rec.dirs.is_empty() {
        return gone(std::fs::remove_dir_all(&d));
    }
    Record {
        dirs: rec.dirs.clone(),
        ..Record::default()
    }
    .store(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_records_read_as_committed() {
        let r: Record = serde_json::from_str(
            r#"{"files":{"/etc/certs/root-cert.pem":{"existed":true,"mode":420,"uid":0,"gid":0}}}"#,
        )
        .unwrap();
        let o = &r.files["/etc/certs/root-cert.pem"];
        assert!(o.committed && o.link.is_none());
        assert!(r.hosts.is_none() && r.dirs.is_empty());
        assert_eq!(r.hosts_original(), etc_hosts::Original::default());
    }

    #[test]
    fn only_layout_files_with_plain_modes_and_plain_dirs_are_kept() {
        let o = |mode| Original {
            existed: true,
            mode,
            uid: 0,
            gid: 0,
            link: None,
            committed: true,
        };
        assert!(plausible("/etc/certs/root-cert.pem", &o(0o644)));
        assert!(!plausible("/etc/certs/root-cert.pem", &o(0o4755)));
        assert!(!plausible("/etc/shadow", &o(0o600)));
        assert!(rel("/etc/../shadow").is_err() && rel("etc/x").is_err());
        assert!(plausible_dir("/srv/vmagent-state"));
        for bad in ["/", "/var/lib", "/var/cache", "/etc", "relative", "/a/../b"] {
            assert!(!plausible_dir(bad), "{bad}");
        }
    }

    #[test]
    fn an_uncommitted_hosts_record_is_not_used() {
        let r = Record {
            hosts: Some(HostsRecord {
                original: etc_hosts::Original::of(None),
                committed: false,
            }),
            ..Record::default()
        };
        assert_eq!(r.hosts_original(), etc_hosts::Original::default());
    }
}
