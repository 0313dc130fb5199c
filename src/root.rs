//! The target root: the one place that turns a system path (`/etc/hosts`) into the
//! path vmagent really touches (`/tmp/img/etc/hosts` under `--root /tmp/img`).
//!
//! Symlinks met on the way are resolved *inside* the root, never on the host: an
//! absolute link target such as `/var/lib/istio` (the package's `/etc/istio` link) is
//! re-anchored at the root, and `..` never climbs above it. Links not owned by root are
//! refused, because whoever owns them (e.g. the `istio-proxy` user, which owns several
//! of the directories we write into) could otherwise point a root-owned write anywhere.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// How many symlinks one resolution may follow before it is treated as a loop.
const MAX_LINK_HOPS: usize = 40;

/// Errors from resolving paths and accounts inside the target root.
#[derive(Debug, Error)]
pub enum RootError {
    /// The root directory itself is unusable.
    #[error("target root '{path}': {source}")]
    Root {
        /// The root given by the user.
        path: PathBuf,
        /// Why it is unusable.
        source: io::Error,
    },
    /// A system path is not absolute; this is a bug in the caller, not user input.
    #[error("internal error: system path '{0}' is not absolute")]
    NotAbsolute(PathBuf),
    /// Too many symlinks in one path.
    #[error("'{0}': too many levels of symbolic links inside the target root")]
    Loop(PathBuf),
    /// A symlink on the way is not owned by root.
    #[error("'{path}' is a symlink owned by uid {uid}; refusing to follow it as root (remove it or make it a real directory)")]
    UntrustedLink {
        /// The symlink (host path).
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// An I/O error while resolving.
    #[error("'{path}': {source}")]
    Io {
        /// Host path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// One of vmagent's own directories (state, cache, status, or one beneath them) is
    /// not a real directory owned by root, so it cannot be trusted with backups of secrets.
    #[error("'{path}' {reason}; vmagent's own directories must be real directories owned by root: check what it is, move it away and run again")]
    OwnDir {
        /// Host path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An account file of the target could not be read.
    #[error("cannot read '{path}': {source}")]
    Accounts {
        /// Host path of passwd or group.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// The filesystem tree vmagent manages: `/` on a live VM, any directory for images and tests.
#[derive(Debug, Clone)]
pub struct Root {
    base: PathBuf,
    /// vmagent's state directory (a system path): `[paths] state_dir`.
    state: PathBuf,
    /// vmagent's download cache (a system path): `[paths] cache_dir`.
    cache: PathBuf,
}

impl Root {
    /// Opens the target root. It must exist and be a directory.
    pub fn new(path: &Path) -> Result<Self, RootError> {
        let base = fs::canonicalize(path).map_err(|source| RootError::Root {
            path: path.to_path_buf(),
            source,
        })?;
        if !base.is_dir() {
            return Err(RootError::Root {
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Ok(Root {
            base,
            state: PathBuf::from(crate::layout::STATE_DIR),
            cache: PathBuf::from(crate::layout::CACHE_DIR),
        })
    }

    /// The same root with vmagent's own directories moved (`[paths]` in the config;
    /// `None` keeps the default).
    pub fn with_dirs(mut self, state: Option<&Path>, cache: Option<&Path>) -> Self {
        if let Some(s) = state {
            self.state = s.to_path_buf();
        }
        if let Some(c) = cache {
            self.cache = c.to_path_buf();
        }
        self
    }

    /// vmagent's state directory (journal, backups, lock, records, bundle store): a
    /// system path, [`crate::layout::STATE_DIR`] unless configured.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// vmagent's download cache: a system path, [`crate::layout::CACHE_DIR`] unless
    /// configured.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// The root directory on the host.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// True when the root is the running system's `/`.
    pub fn is_live(&self) -> bool {
        self.base == Path::new("/")
    }

    /// Host path of a system path, with every symlink resolved inside the root.
    ///
    /// Components that do not exist yet are appended as they are, so the result is
    /// where the path *would* be created.
    pub fn resolve(&self, sys: &Path) -> Result<PathBuf, RootError> {
        if !sys.is_absolute() {
            return Err(RootError::NotAbsolute(sys.to_path_buf()));
        }
        // Work on a queue of pending components so a link target can be spliced in.
        let mut pending: Vec<std::ffi::OsString> = components_rev(sys);
        let mut cur = self.base.clone();
        let mut depth = 0usize; // components of `cur` below base
        let mut hops = 0;
        let mut missing = false;
        while let Some(comp) = pending.pop() {
            if comp == ".." {
                if depth > 0 {
                    depth -= 1;
                    cur.pop();
                }
                continue;
            }
            cur.push(&comp);
            depth += 1;
            if missing {
                continue;
            }
            let meta = match fs::symlink_metadata(&cur) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing = true;
                    continue;
                }
                Err(source) => return Err(RootError::Io { path: cur, source }),
            };
            if !meta.file_type().is_symlink() {
                continue;
            }
            if meta.uid() != 0 {
                return Err(RootError::UntrustedLink {
                    path: cur,
                    uid: meta.uid(),
                });
            }
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return Err(RootError::Loop(sys.to_path_buf()));
            }
            let target = fs::read_link(&cur).map_err(|source| RootError::Io {
                path: cur.clone(),
                source,
            })?;
            cur.pop();
            depth -= 1;
            if target.is_absolute() {
                cur = self.base.clone();
                depth = 0;
            }
            pending.extend(components_rev(&target));
        }
        Ok(cur)
    }

    /// Host path of a system path without resolving its last component (for lstat).
    pub fn resolve_parent(&self, sys: &Path) -> Result<PathBuf, RootError> {
        let name = sys
            .file_name()
            .ok_or_else(|| RootError::NotAbsolute(sys.to_path_buf()))?;
        let parent = sys.parent().unwrap_or(Path::new("/"));
        Ok(self.resolve(parent)?.join(name))
    }

    /// Host path of vmagent's own directory `sys` (the state or cache directory, or one
    /// beneath them), checked like [`Root::ensure_own_dir`] but neither created nor
    /// repaired: `Ok(None)` when it does not exist.
    pub fn own_dir(&self, sys: &Path) -> Result<Option<PathBuf>, RootError> {
        self.own_dirs(sys, None)
    }

    /// Creates (or re-checks) vmagent's own directory `sys` and returns its host path.
    ///
    /// The directories from the state or cache directory down to `sys` (or `sys` alone
    /// when it is under neither, like the status directory) are vmagent's: each must be
    /// a real directory (a symlink there is refused, never followed: it could send
    /// backups of secrets out of the root) owned by root. A missing one is created with
    /// its mode set on the descriptor, so the umask never loosens it; an existing one
    /// with the wrong mode is repaired. `sys` gets `mode`, the state or cache directory
    /// above it [`crate::layout::STATE_MODE`], directories in between
    /// [`crate::layout::PARENT_MODE`]. Parents above the state or cache directory (e.g.
    /// /var/lib) are resolved as usual and created at `PARENT_MODE` when missing.
    pub fn ensure_own_dir(&self, sys: &Path, mode: u32) -> Result<PathBuf, RootError> {
        self.own_dirs(sys, Some(mode))?
            .ok_or_else(|| RootError::NotAbsolute(sys.to_path_buf()))
    }

    fn own_dirs(&self, sys: &Path, create: Option<u32>) -> Result<Option<PathBuf>, RootError> {
        use crate::layout::{PARENT_MODE, STATE_MODE};
        let top = [self.state.as_path(), self.cache.as_path()]
            .into_iter()
            .find(|t| sys.starts_with(t))
            .unwrap_or(sys);
        let parent = top.parent().filter(|_| top.is_absolute());
        let Some(parent) = parent else {
            return Err(RootError::NotAbsolute(sys.to_path_buf()));
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source: io::Error| RootError::Io { path, source }
        };
        // Above the top: ordinary system directories, resolved inside the root.
        let mut host = self.base.clone();
        for a in parent
            .ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .skip(1)
        {
            host = self.resolve(a)?;
            if create.is_some() && crate::fsx::meta(&host).map_err(io(&host))?.is_none() {
                match crate::fsx::create_dir(&host, PARENT_MODE, None) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    r => r.map_err(io(&host))?,
                }
            }
        }
        let below = sys.strip_prefix(parent).unwrap_or(sys);
        let mut cur_sys = parent.to_path_buf();
        for name in below.components() {
            let Component::Normal(name) = name else {
                return Err(RootError::NotAbsolute(sys.to_path_buf()));
            };
            host.push(name);
            cur_sys.push(name);
            let want = match create {
                Some(m) if cur_sys == sys => m,
                _ if cur_sys == top => STATE_MODE,
                _ => PARENT_MODE,
            };
            let exact = cur_sys == sys || cur_sys == top;
            let mut meta = crate::fsx::meta(&host).map_err(io(&host))?;
            if meta.is_none() {
                if create.is_none() {
                    return Ok(None);
                }
                match crate::fsx::create_dir(&host, want, None) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    r => r.map_err(io(&host))?,
                }
                meta = crate::fsx::meta(&host).map_err(io(&host))?;
            }
            let Some(m) = meta else {
                return Err(RootError::Io {
                    path: host,
                    source: io::ErrorKind::NotFound.into(),
                });
            };
            match own_dir_verdict(&m, want, exact) {
                OwnDirVerdict::Good => {}
                OwnDirVerdict::Repair(_) if create.is_none() => {}
                OwnDirVerdict::Repair(mode) => {
                    crate::fsx::set_meta(&host, mode, None).map_err(io(&host))?
                }
                OwnDirVerdict::Refuse(reason) => {
                    return Err(RootError::OwnDir { path: host, reason })
                }
            }
        }
        Ok(Some(host))
    }

    /// Looks up a user and its group by name in the target's `etc/passwd` and `etc/group`.
    ///
    /// Returns `None` when the user does not exist (yet). The group is taken from
    /// `etc/group` by the same name when present, else the user's primary gid.
    pub fn account(&self, name: &str) -> Result<Option<(u32, u32)>, RootError> {
        let users = self.read_db("/etc/passwd", 2, 3)?;
        let Some(&(uid, primary_gid)) = users.get(name) else {
            return Ok(None);
        };
        let groups = self.read_db("/etc/group", 2, 2)?;
        let gid = groups.get(name).map(|g| g.0).unwrap_or(primary_gid);
        Ok(Some((uid, gid)))
    }

    fn read_db(
        &self,
        sys: &str,
        id_field: usize,
        second: usize,
    ) -> Result<HashMap<String, (u32, u32)>, RootError> {
        let path = self.resolve(Path::new(sys))?;
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(source) => return Err(RootError::Accounts { path, source }),
        };
        let mut out = HashMap::new();
        for line in String::from_utf8_lossy(&text).lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() <= id_field.max(second) || line.starts_with('#') {
                continue;
            }
            if let (Ok(a), Ok(b)) = (f[id_field].parse(), f[second].parse()) {
                out.entry(f[0].to_string()).or_insert((a, b));
            }
        }
        Ok(out)
    }
}

/// What to do with an existing directory of vmagent's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnDirVerdict {
    /// As it should be.
    Good,
    /// Root's, but with the wrong mode: set this one.
    Repair(u32),
    /// Not to be trusted (a link, not a directory, someone else's): why.
    Refuse(String),
}

/// Decides about an existing directory of vmagent's own: it must be a real directory
/// owned by root; its mode must be `want` when `exact` (the directory asked for, or the
/// state or cache directory), else at least not writable by group or others.
pub fn own_dir_verdict(m: &crate::fsx::Meta, want: u32, exact: bool) -> OwnDirVerdict {
    use crate::fsx::Kind;
    match m.kind {
        Kind::Dir => {}
        Kind::Symlink => return OwnDirVerdict::Refuse("is a symlink".into()),
        _ => return OwnDirVerdict::Refuse("is not a directory".into()),
    }
    if m.uid != 0 {
        return OwnDirVerdict::Refuse(format!("is owned by uid {}, not root", m.uid));
    }
    if exact && m.mode != want {
        OwnDirVerdict::Repair(want)
    } else if !exact && m.mode & 0o7022 != 0 {
        OwnDirVerdict::Repair(m.mode & 0o755)
    } else {
        OwnDirVerdict::Good
    }
}

fn components_rev(p: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_links_stay_inside_root() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::new(t.path()).unwrap();
        fs::create_dir_all(t.path().join("var/lib/istio")).unwrap();
        fs::create_dir_all(t.path().join("etc")).unwrap();
        symlink("/var/lib/istio", t.path().join("etc/istio")).unwrap();
        let got = r.resolve(Path::new("/etc/istio/config/mesh")).unwrap();
        assert_eq!(got, r.base().join("var/lib/istio/config/mesh"));
    }

    #[test]
    fn dotdot_never_escapes() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::new(t.path()).unwrap();
        fs::create_dir_all(t.path().join("etc")).unwrap();
        symlink("../../../../etc", t.path().join("etc/up")).unwrap();
        let got = r.resolve(Path::new("/etc/up/passwd")).unwrap();
        assert_eq!(got, r.base().join("etc/passwd"));
    }

    #[test]
    fn loops_are_detected() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::new(t.path()).unwrap();
        symlink("/b", t.path().join("a")).unwrap();
        symlink("/a", t.path().join("b")).unwrap();
        assert!(matches!(
            r.resolve(Path::new("/a/x")),
            Err(RootError::Loop(_))
        ));
    }

    fn meta(kind: crate::fsx::Kind, mode: u32, uid: u32) -> crate::fsx::Meta {
        crate::fsx::Meta {
            kind,
            mode,
            uid,
            gid: 0,
        }
    }

    #[test]
    fn own_dirs_are_repaired_or_refused() {
        use crate::fsx::Kind;
        let v = |m, exact| own_dir_verdict(&m, 0o700, exact);
        assert_eq!(v(meta(Kind::Dir, 0o700, 0), true), OwnDirVerdict::Good);
        assert_eq!(
            v(meta(Kind::Dir, 0o755, 0), true),
            OwnDirVerdict::Repair(0o700)
        );
        assert_eq!(
            v(meta(Kind::Dir, 0o777, 0), false),
            OwnDirVerdict::Repair(0o755)
        );
        assert_eq!(v(meta(Kind::Dir, 0o755, 0), false), OwnDirVerdict::Good);
        assert!(matches!(
            v(meta(Kind::Dir, 0o700, 1000), true),
            OwnDirVerdict::Refuse(_)
        ));
        assert!(matches!(
            v(meta(Kind::Symlink, 0o777, 0), true),
            OwnDirVerdict::Refuse(_)
        ));
        assert!(matches!(
            v(meta(Kind::File, 0o700, 0), true),
            OwnDirVerdict::Refuse(_)
        ));
    }

    #[test]
    fn own_dirs_are_made_whatever_the_umask_and_links_refused() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::new(t.path()).unwrap();
        let state = Path::new(crate::layout::STATE_DIR);
        let txn = r.ensure_own_dir(&state.join("txn"), 0o700).unwrap();
        assert_eq!(crate::fsx::meta(&txn).unwrap().unwrap().mode, 0o700);
        let dir = r.resolve(state).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        r.ensure_own_dir(state, 0o700).unwrap();
        assert_eq!(crate::fsx::meta(&dir).unwrap().unwrap().mode, 0o700);
        let away = tempfile::tempdir().unwrap();
        fs::remove_dir(&txn).unwrap();
        symlink(away.path(), &txn).unwrap();
        for got in [
            r.ensure_own_dir(&state.join("txn/backups"), 0o700)
                .map(Some),
            r.own_dir(&state.join("txn")),
        ] {
            assert!(matches!(got, Err(RootError::OwnDir { .. })), "{got:?}");
        }
        assert_eq!(fs::read_dir(away.path()).unwrap().count(), 0);
    }

    #[test]
    fn accounts_come_from_the_target() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::new(t.path()).unwrap();
        fs::create_dir_all(t.path().join("etc")).unwrap();
        assert_eq!(r.account("istio-proxy").unwrap(), None);
        fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nistio-proxy:x:998:997::/var/lib/istio:/bin/sh\n",
        )
        .unwrap();
        fs::write(t.path().join("etc/group"), "istio-proxy:x:996:\n").unwrap();
        assert_eq!(r.account("istio-proxy").unwrap(), Some((998, 996)));
    }
}
