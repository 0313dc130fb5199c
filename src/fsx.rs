//! Low-level file operations on host paths (already resolved through the root resolver).
//!
//! Every write is atomic: a temp file with a fixed name in the destination directory,
//! owner and mode set on the open descriptor (never create-then-chown by path), fsync,
//! rename. The fixed temp name (`.NAME.vmagent-tmp`) lets crash recovery remove exactly
//! what an interrupted run left, and is safe because all writers hold the apply lock.
//! Final components are opened with `O_NOFOLLOW`, so a symlink planted where a file
//! should be is never written through or read as root.
//!
//! One exception to the rename: a destination that is itself a mount point (a
//! bind-mounted /etc/hosts, as container runtimes make) cannot be renamed over (EBUSY,
//! or EXDEV). Its content is then replaced in place ([`in_place_fallback`]): space is
//! reserved first, so a full disk fails before a byte changes; a crash part-way can
//! tear it, which the caller's undo journal (holding a backup) repairs.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{fchown, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What stands at a path, without following a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// Type, permission bits and owner of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// File type.
    pub kind: Kind,
    /// Permission bits (`0o7777` part of st_mode).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

impl Meta {
    /// Whether the account `uid`:`gid` may create files in a directory with this owner
    /// and mode (write and search permission through owner, group or other bits).
    pub fn writable_by(&self, uid: u32, gid: u32) -> bool {
        (self.uid == uid && self.mode & 0o300 == 0o300)
            || (self.gid == gid && self.mode & 0o030 == 0o030)
            || self.mode & 0o003 == 0o003
    }
}

/// lstat: `Ok(None)` when nothing is there.
pub fn meta(path: &Path) -> io::Result<Option<Meta>> {
    match fs::symlink_metadata(path) {
        Ok(m) => {
            let ft = m.file_type();
            let kind = if ft.is_file() {
                Kind::File
            } else if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink
            } else {
                Kind::Other
            };
            Ok(Some(Meta {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens an existing path for reading without following a final symlink and without
/// blocking on a FIFO.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Reads a regular file of at most `limit` bytes; `Ok(None)` when it does not exist.
pub fn read_file(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let f = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    f.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(Some(buf))
}

/// The fixed temp name used for atomic writes of `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".vmagent-tmp");
    path.with_file_name(name)
}

/// A JSON record's bytes as vmagent writes them: pretty, with a final newline.
pub fn json_bytes<T: serde::Serialize + ?Sized>(value: &T) -> io::Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    v.push(b'\n');
    Ok(v)
}

/// Writes `value` as a JSON record ([`json_bytes`]) to `path` atomically with `mode`,
/// and fsyncs the file and its directory: when this returns, the record is durable.
pub fn write_json<T: serde::Serialize + ?Sized>(
    path: &Path,
    value: &T,
    mode: u32,
) -> io::Result<()> {
    write_atomic(path, &json_bytes(value)?, mode, None)?;
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// Writes `content` to `path` atomically with the given mode and owner.
///
/// The containing directory is *not* fsynced here: callers batch that per directory
/// (see [`sync_dir`]) before they declare the change durable.
pub fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let tmp = tmp_path(path);
    remove_if_exists(&tmp)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(content)?;
        if let Some((uid, gid)) = owner {
            fchown(&f, Some(uid), Some(gid))?;
        }
        // After fchown: chown clears setuid/setgid bits, so the mode goes last.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            if in_place_fallback(&e) {
                replace_in_place(path, content, mode, owner)
            } else {
                Err(e)
            }
        }
    }
}

/// Whether a failed rename of the temp file over the destination means the destination
/// is a mount point (a bind-mounted file), whose content must be replaced in place.
pub fn in_place_fallback(rename_error: &io::Error) -> bool {
    matches!(
        rename_error.raw_os_error(),
        Some(libc::EBUSY) | Some(libc::EXDEV)
    )
}

/// Replaces the content of the existing regular file at `path` through one descriptor
/// opened without following a link: space reserved, content written, length trimmed,
/// owner then mode set, fsync. Used only where a rename cannot be (see the module doc).
fn replace_in_place(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    // Writing in place goes to every name of the inode; a rename never does.
    if m.nlink() > 1 {
        return Err(io::Error::other(
            "mounted over and hard-linked: writing it in place would change its other names too",
        ));
    }
    reserve(&f, content.len())?;
    // Overwrite, then trim: no window in which the file is empty.
    f.write_all(content)?;
    f.set_len(content.len() as u64)?;
    if let Some((uid, gid)) = owner {
        fchown(&f, Some(uid), Some(gid))?;
    }
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()
}

/// Reserves `len` bytes of blocks for `f` without changing its size, so a full file
/// system fails here, before the content changes. A file system without fallocate
/// gives no such guarantee; the free-space check before an apply still stands.
fn reserve(f: &File, len: usize) -> io::Result<()> {
    let Ok(len) = u64::try_from(len) else {
        return Err(io::Error::other("content too large"));
    };
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(f, rustix::fs::FallocateFlags::KEEP_SIZE, 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Free bytes a root process may use on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    // Root may use the blocks reserved for it; others only the available ones.
    let blocks = if rustix::process::geteuid().is_root() {
        st.f_bfree
    } else {
        st.f_bavail
    };
    Ok(blocks.saturating_mul(st.f_frsize))
}

/// Whether `path` (an existing file or directory) may be written, without changing it:
/// a file is opened for writing (no truncation), a directory is asked with access(2).
/// An immutable or append-only file fails with EPERM, a read-only file system EROFS.
pub fn check_writable(path: &Path, dir: bool) -> io::Result<()> {
    if dir {
        return Ok(rustix::fs::access(path, rustix::fs::Access::WRITE_OK)?);
    }
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map(drop)
}

/// Sets mode and (optionally) owner of an existing file or directory, not following a
/// final symlink.
pub fn set_meta(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let f = open_nofollow(path)?;
    if let Some((uid, gid)) = owner {
        fchown(&f, Some(uid), Some(gid))?;
    }
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()
}

/// Creates one directory with mode and owner (parent must exist).
pub fn create_dir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    fs::create_dir(path)?;
    set_meta(path, mode, owner)
}

/// fsyncs a directory so renames and creations inside it are durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Removes a file or symlink; absent is fine.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What is wrong with the owner or mode of a file that decides what root does (a
/// credential, a token, a trusted-keys list, a program run as root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Good,
    /// Owned by someone other than root.
    NotRoot(u32),
    /// Readable or writable by the group or others (`mode` shown).
    Open(u32),
}

/// A secret (credential, token, config): root-owned, no group or other bits.
pub fn secret_verdict(uid: u32, mode: u32) -> Verdict {
    if uid != 0 {
        Verdict::NotRoot(uid)
    } else if mode & 0o077 != 0 {
        Verdict::Open(mode)
    } else {
        Verdict::Good
    }
}

/// A program run as root: root-owned, not writable by the group or others.
pub fn program_verdict(uid: u32, mode: u32) -> Verdict {
    if uid != 0 {
        Verdict::NotRoot(uid)
    } else if mode & 0o022 != 0 {
        Verdict::Open(mode)
    } else {
        Verdict::Good
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        write_atomic(&p, b"hello", 0o640, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(meta(&p).unwrap().unwrap().mode, 0o640);
        assert!(!tmp_path(&p).exists());
    }

    #[test]
    fn only_a_mount_point_rename_error_falls_back_to_in_place() {
        for (errno, fallback) in [
            (libc::EBUSY, true),
            (libc::EXDEV, true),
            (libc::EPERM, false),
            (libc::ENOSPC, false),
            (libc::EROFS, false),
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(in_place_fallback(&e), fallback, "{e}");
        }
        assert!(!in_place_fallback(&io::Error::other("x")));
    }

    #[test]
    fn in_place_replacement_trims_and_sets_mode() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        fs::write(&p, "a much longer old content").unwrap();
        replace_in_place(&p, b"new", 0o640, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(meta(&p).unwrap().unwrap().mode, 0o640);
        fs::write(t.path().join("target"), "keep").unwrap();
        symlink(t.path().join("target"), t.path().join("link")).unwrap();
        assert!(replace_in_place(&t.path().join("link"), b"x", 0o644, None).is_err());
        assert_eq!(fs::read(t.path().join("target")).unwrap(), b"keep");
    }

    #[test]
    fn writability_and_free_space_of_a_plain_dir() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        fs::write(&p, "x").unwrap();
        check_writable(&p, false).unwrap();
        check_writable(t.path(), true).unwrap();
        assert!(check_writable(&t.path().join("missing"), false).is_err());
        assert!(free_bytes(t.path()).unwrap() > 0);
    }

    #[test]
    fn reading_never_follows_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("secret"), "s").unwrap();
        symlink(t.path().join("secret"), t.path().join("link")).unwrap();
        assert!(read_file(&t.path().join("link"), 10).is_err());
        assert_eq!(
            meta(&t.path().join("link")).unwrap().unwrap().kind,
            Kind::Symlink
        );
    }

    #[test]
    fn atomic_write_replaces_a_symlink_not_its_target() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("target"), "keep").unwrap();
        symlink(t.path().join("target"), t.path().join("f")).unwrap();
        write_atomic(&t.path().join("f"), b"new", 0o644, None).unwrap();
        assert_eq!(fs::read(t.path().join("target")).unwrap(), b"keep");
        assert_eq!(meta(&t.path().join("f")).unwrap().unwrap().kind, Kind::File);
    }
}
