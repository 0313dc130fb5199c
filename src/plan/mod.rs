//! Desired state (bundle + layout) versus actual state (the target root) as a list of
//! actions. An empty plan means "up to date": nothing is written.

mod boot;
mod hosts_block;
mod logs;
mod proxy_dirs;
pub mod render;

pub use logs::{logrotate_rule, Rotation};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::applied::{self, AppliedIdentity};
use crate::bundle::{Bundle, Member};
use crate::fsx::{self, Kind, Meta};
use crate::layout::{self, Owner};
use crate::root::{Root, RootError};

/// Largest existing file vmagent reads to compare (installed files are small). Uninstall
/// and the pristine record use the same limit, so a file apply accepted is never refused
/// on the way out.
pub const READ_LIMIT: u64 = 16 << 20;

/// Why no plan could be made. Nothing has been written when this is returned.
#[derive(Debug, Error)]
pub enum PlanError {
    /// Path resolution inside the root failed.
    #[error(transparent)]
    Root(#[from] RootError),
    /// Something on disk is in the way.
    #[error("'{path}': {reason}")]
    Blocked {
        /// System path.
        path: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The OS failed reading or inspecting a path (an I/O error, a permission): nothing
    /// is in the way, so this is exit 1, not exit 4 like [`PlanError::Blocked`].
    #[error("'{path}': cannot {action}: {source}; fix the cause (permissions, disk, file system), then re-run")]
    Io {
        /// System path.
        path: String,
        /// What was being done (`read`, `inspect`).
        action: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The proxy user is missing and ownership cannot be deferred.
    #[error("user '{user}' does not exist in {passwd}; it is created by the istio-sidecar package. Install the package first, or pass --skip-owner to leave ownership unmanaged")]
    NoProxyUser {
        /// The user name.
        user: &'static str,
        /// Host path of the passwd file read.
        passwd: String,
    },
}

/// How to plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Do not manage owners (the proxy user may not exist).
    pub skip_owner: bool,
    /// The package step runs first and creates the proxy user: a missing user is not an
    /// error, its owners are shown as deferred. Such a plan is for display only; the
    /// executed plan is made after the package step.
    pub defer_owner: bool,
    /// Rotation of the sidecar's logs (`[logs]`); `None`: no rule is installed.
    pub rotate: Option<Rotation>,
}

/// An owner as numbers plus the name shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// uid
    pub uid: u32,
    /// gid
    pub gid: u32,
    /// `istio-proxy:istio-proxy` or `root:root`
    pub label: &'static str,
}

/// One change to the target root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create a directory.
    CreateDir {
        /// System path.
        path: String,
        /// Mode.
        mode: u32,
        /// Owner (None: leave as created).
        owner: Option<Ids>,
    },
    /// Create the package's `/etc/istio -> /var/lib/istio` symlink.
    CreateSymlink {
        /// System path of the link.
        path: String,
        /// Link target.
        target: String,
    },
    /// Write a file atomically (create or replace).
    WriteFile {
        /// System path.
        path: String,
        /// What the file is.
        what: What,
        /// New content.
        content: Vec<u8>,
        /// Current content (None: the file does not exist or is not a regular file).
        old: Option<Vec<u8>>,
        /// Mode.
        mode: u32,
        /// Owner.
        owner: Option<Ids>,
    },
    /// Change mode and/or owner of a file or directory whose content is right.
    SetMeta {
        /// System path.
        path: String,
        /// Current mode and owner.
        from: Meta,
        /// New mode.
        mode: u32,
        /// New owner.
        owner: Option<Ids>,
    },
    /// Remove a file.
    Remove {
        /// System path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// What a written file is, for display and redaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A bundle member.
    Member(Member),
    /// /etc/hosts with the managed block.
    Hosts {
        /// Lines adopted from outside the block.
        adopted: Vec<crate::etc_hosts::Adopted>,
    },
    /// vmagent's state record.
    State,
    /// The systemd-tmpfiles rule that restores the token at boot.
    TmpfilesRule,
    /// The logrotate rule for the sidecar's logs.
    LogrotateRule,
    /// vmagent's boot copy of the token in force (a secret).
    TokenStore,
}

impl Action {
    /// The system path the action touches.
    pub fn path(&self) -> &str {
        match self {
            Action::CreateDir { path, .. }
            | Action::CreateSymlink { path, .. }
            | Action::WriteFile { path, .. }
            | Action::SetMeta { path, .. }
            | Action::Remove { path, .. } => path,
        }
    }
}

/// One planned action and the host path it acts on, resolved once at plan time so the
/// apply touches exactly what was planned (and shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The action.
    pub action: Action,
    /// Host path (inside the root). For files the final component is never a followed
    /// symlink: a link planted where a file belongs is replaced, not written through.
    pub host: PathBuf,
}

/// The plan: steps in execution order, plus findings worth telling the user.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Steps, in order (parents before children).
    pub steps: Vec<Step>,
    /// Warnings found while planning (e.g. conflicting hosts lines).
    pub warnings: Vec<String>,
    /// Informational notes (e.g. lines adopted into the hosts block).
    pub notes: Vec<String>,
}

impl Plan {
    /// True when nothing differs.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

struct Planner<'a> {
    root: &'a Root,
    proxy: Option<Ids>,
    skip_owner: bool,
    plan: Plan,
    /// Host paths of directories this plan creates (or that exist before it runs).
    created: BTreeSet<PathBuf>,
    /// True when this plan creates the /etc/istio symlink.
    etc_istio_link: bool,
}

const ROOT_IDS: Ids = Ids {
    uid: 0,
    gid: 0,
    label: "root:root",
};

/// Computes what must change under `root` for `bundle` to be installed.
pub fn plan(root: &Root, bundle: &Bundle, opts: PlanOptions) -> Result<Plan, PlanError> {
    let proxy = if opts.skip_owner {
        None
    } else {
        match root.account(layout::PROXY_USER)? {
            Some((uid, gid)) => Some(Ids {
                uid,
                gid,
                label: "istio-proxy:istio-proxy",
            }),
            None if opts.defer_owner => Some(Ids {
                uid: u32::MAX,
                gid: u32::MAX,
                label: "istio-proxy:istio-proxy (once the package creates it)",
            }),
            None => {
                return Err(PlanError::NoProxyUser {
                    user: layout::PROXY_USER,
                    passwd: root
                        .resolve(Path::new("/etc/passwd"))?
                        .display()
                        .to_string(),
                })
            }
        }
    };
    let mut p = Planner {
        root,
        proxy,
        skip_owner: opts.skip_owner,
        plan: Plan::default(),
        created: BTreeSet::new(),
        etc_istio_link: false,
    };
    p.state_dir()?;
    p.etc_istio()?;
    for d in layout::DIRS {
        p.dir(d.path, Some((d.mode, d.owner)))?;
    }
    p.cert_dirs(bundle)?;
    let previous = p.previous_state()?;
    for f in layout::FILES {
        if f.member == Member::KubeDns && !p.dnsmasq_installed()? {
            if bundle.files.contains_key(&f.member) {
                p.plan.warnings.push(format!(
                    "bundle member 'kubedns' is a dnsmasq file but dnsmasq is not installed ({} is missing), so the mesh names it maps do not resolve: install it (`apt-get install dnsmasq` or `dnf install dnsmasq`) and apply again",
                    layout::DNSMASQ_DIR
                ));
            }
            continue;
        }
        if let Some(content) = bundle.files.get(&f.member) {
            p.file(
                f.path,
                What::Member(f.member),
                content.clone(),
                f.mode,
                p.owner(f.owner),
            )?;
        }
    }
    p.boot(bundle)?;
    if let Some(r) = opts.rotate {
        p.logrotate(r)?;
    }
    p.stale_certs(bundle, previous.as_ref())?;
    p.hosts(bundle)?;
    let state = AppliedIdentity::for_identity(bundle.token.sub.as_deref());
    if previous.as_ref() != Some(&state) {
        let path = format!("{}/{}", p.root.state_dir().display(), applied::FILE);
        p.file(
            &path,
            What::State,
            state.to_bytes(),
            0o600,
            Some(ROOT_IDS).filter(|_| !p.skip_owner),
        )?;
    }
    Ok(p.plan)
}

impl Planner<'_> {
    fn owner(&self, o: Owner) -> Option<Ids> {
        match o {
            _ if self.skip_owner => None,
            Owner::Root => Some(ROOT_IDS),
            Owner::Proxy => self.proxy,
        }
    }

    fn push(&mut self, action: Action, host: PathBuf) {
        self.plan.steps.push(Step { action, host });
    }

    /// Host path of a system path as it will be once earlier steps ran. `follow` decides
    /// whether a symlink in the final component is followed (directories: yes, like
    /// /var/run -> /run; files: no).
    fn host(&self, sys: &str, follow: bool) -> Result<PathBuf, PlanError> {
        let (link, target) = layout::ETC_ISTIO;
        let mapped;
        let mut sys = sys;
        if self.etc_istio_link {
            if let Some(rest) = sys
                .strip_prefix(link)
                .filter(|r| r.is_empty() || r.starts_with('/'))
            {
                mapped = format!("{target}{rest}");
                sys = &mapped;
            }
        }
        let path = Path::new(sys);
        Ok(if follow {
            self.root.resolve(path)?
        } else {
            self.root.resolve_parent(path)?
        })
    }

    fn lstat(&self, sys: &str, follow: bool) -> Result<(PathBuf, Option<Meta>), PlanError> {
        let host = self.host(sys, follow)?;
        let meta = fsx::meta(&host).map_err(|e| io_failed(sys, "inspect", e))?;
        Ok((host, meta))
    }

    /// vmagent's own state directory (and missing parents) is made together with the
    /// lock, before the transaction it journals: count it as present so a dry run and
    /// the real run list the same steps, and say so.
    fn state_dir(&mut self) -> Result<(), PlanError> {
        let mut missing = false;
        let state_dir = self.root.state_dir().display().to_string();
        for sys in ancestors(&state_dir) {
            let (host, meta) = self.lstat(&sys, true)?;
            if meta.is_none() {
                missing = true;
                self.created.insert(host);
            }
        }
        if missing {
            self.plan.notes.push(format!(
                "vmagent's own state directory {state_dir} (and missing parents) is created first; it is kept even if the apply is rolled back"
            ));
        }
        Ok(())
    }

    /// `/etc/istio` must be the package's symlink unless the admin made it something else.
    fn etc_istio(&mut self) -> Result<(), PlanError> {
        let (link, target) = layout::ETC_ISTIO;
        let host = self.root.resolve_parent(Path::new(link))?;
        if fsx::meta(&host)
            .map_err(|e| io_failed(link, "inspect", e))?
            .is_none()
        {
            self.dir("/etc", None)?;
            self.dir(target, None)?;
            self.push(
                Action::CreateSymlink {
                    path: link.into(),
                    target: target.into(),
                },
                host,
            );
            self.etc_istio_link = true;
        }
        Ok(())
    }

    /// Ensures a directory (and its parents) exist; `spec` also manages mode and owner.
    fn dir(&mut self, sys: &str, spec: Option<(u32, Owner)>) -> Result<(), PlanError> {
        let (host, meta) = self.lstat(sys, true)?;
        if self.created.contains(&host) {
            return Ok(());
        }
        if spec.is_some() {
            self.through_link(sys, &host)?;
        }
        let want_mode = spec.map(|s| s.0).unwrap_or(layout::PARENT_MODE);
        let want_owner = match spec {
            Some((_, o)) => self.owner(o),
            None => Some(ROOT_IDS).filter(|_| !self.skip_owner),
        };
        match meta {
            None => {
                if let Some(parent) = Path::new(sys).parent().and_then(Path::to_str) {
                    if parent != "/" {
                        self.dir(parent, None)?;
                    }
                }
                self.created.insert(host.clone());
                self.push(
                    Action::CreateDir {
                        path: sys.into(),
                        mode: want_mode,
                        owner: want_owner,
                    },
                    host,
                );
            }
            Some(m) if m.kind == Kind::Dir => {
                if spec.is_some() {
                    self.meta(sys, host, m, want_mode, want_owner);
                }
            }
            Some(_) => {
                return Err(blocked(
                    sys,
                    "exists but is not a directory; move it away and re-run".into(),
                ))
            }
        }
        Ok(())
    }

    /// A managed directory that is a symlink gets its owner and mode set on (or is
    /// created as) the link's target, so that target must be one of vmagent's own paths: `/etc/certs ->
    /// /etc/ssl/certs` would otherwise hand the system's CA directory to istio-proxy.
    /// The plan says where the change lands.
    fn through_link(&mut self, sys: &str, followed: &Path) -> Result<(), PlanError> {
        let (_, meta) = self.lstat(sys, false)?;
        if meta.map(|m| m.kind) != Some(Kind::Symlink) {
            return Ok(());
        }
        let target = followed
            .strip_prefix(self.root.base())
            .map(|rel| format!("/{}", rel.display()))
            .unwrap_or_else(|_| followed.display().to_string());
        if !layout::is_managed_dir(&target) {
            return Err(blocked(
                sys,
                format!("is a symlink to {target}, which is not one of vmagent's directories; vmagent does not change owners or modes through it. Replace the link with a directory (or point it into /var/lib/istio), then re-run"),
            ));
        }
        if target != sys {
            self.plan.notes.push(format!(
                "{sys} is a symlink to {target}: its owner and mode are set on {target}"
            ));
        }
        Ok(())
    }

    fn meta(&mut self, sys: &str, host: PathBuf, m: Meta, mode: u32, owner: Option<Ids>) {
        let owner_ok = owner.is_none_or(|o| o.uid == m.uid && o.gid == m.gid);
        if m.mode != mode || !owner_ok {
            self.push(
                Action::SetMeta {
                    path: sys.into(),
                    from: m,
                    mode,
                    owner,
                },
                host,
            );
        }
    }

    fn file(
        &mut self,
        sys: &str,
        what: What,
        content: Vec<u8>,
        mode: u32,
        owner: Option<Ids>,
    ) -> Result<(), PlanError> {
        if let Some(parent) = Path::new(sys).parent().and_then(Path::to_str) {
            self.dir(parent, None)?;
        }
        let (host, meta) = self.lstat(sys, false)?;
        let old = match meta.map(|m| m.kind) {
            None | Some(Kind::Symlink) => None,
            Some(Kind::File) => {
                fsx::read_file(&host, READ_LIMIT).map_err(|e| io_failed(sys, "read", e))?
            }
            Some(Kind::Dir) | Some(Kind::Other) => {
                return Err(blocked(
                    sys,
                    "exists but is not a regular file; move it away and re-run".into(),
                ))
            }
        };
        if meta.map(|m| m.kind) == Some(Kind::Symlink) {
            self.plan.notes.push(format!(
                "{sys} is a symlink; it is replaced by a regular file, its target is not touched"
            ));
        }
        match (&old, meta) {
            (Some(cur), Some(m)) if *cur == content => self.meta(sys, host, m, mode, owner),
            _ => self.push(
                Action::WriteFile {
                    path: sys.into(),
                    what,
                    content,
                    old,
                    mode,
                    owner,
                },
                host,
            ),
        }
        Ok(())
    }
}

/// `/var/lib/vmagent` -> `["/var", "/var/lib", "/var/lib/vmagent"]`.
fn ancestors(sys: &str) -> Vec<String> {
    let mut out: Vec<String> = Path::new(sys)
        .ancestors()
        .filter(|a| *a != Path::new("/"))
        .map(|a| a.display().to_string())
        .collect();
    out.reverse();
    out
}

/// Whether an I/O error means something on disk is in the way that the admin must move
/// (exit 4): a file where a directory belongs on the path, a link or a directory where
/// a file belongs, or one of vmagent's own refusals (not a regular file, too large).
/// Any other OS error is the operation failing (exit 1). Decided on the errno, never
/// on the message.
pub(crate) fn in_the_way(e: &std::io::Error) -> bool {
    match e.raw_os_error() {
        Some(code) => matches!(code, libc::ENOTDIR | libc::ELOOP | libc::EISDIR),
        None => true,
    }
}

/// A failed read or inspection of `path`: [`PlanError::Blocked`] when something is in
/// the way, else [`PlanError::Io`].
pub(crate) fn io_failed(path: &str, action: &'static str, e: std::io::Error) -> PlanError {
    if in_the_way(&e) {
        blocked(path, format!("cannot {action}: {e}"))
    } else {
        PlanError::Io {
            path: path.to_string(),
            action,
            source: e,
        }
    }
}

fn blocked(path: &str, reason: String) -> PlanError {
    PlanError::Blocked {
        path: path.to_string(),
        reason,
    }
}
