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
