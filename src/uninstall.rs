//! `vmagent uninstall`: stop and disable istio, remove the sidecar package, the managed
//! hosts block and the installed files (files that existed before vmagent first wrote
//! them are put back as they were), and vmagent's bookkeeping; `--purge` also removes
//! the state and cache directories and the status file. Idempotent: a second run finds
//! nothing to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::apply::lock;
use crate::fsx;
use crate::layout;
use crate::package;
use crate::pristine;
use crate::root::Root;
use crate::run::RunError;
use crate::service::{self, Mode, Systemctl};

/// What to remove.
#[derive(Debug, Clone)]
pub struct Options {
    /// Target root.
    pub root: PathBuf,
    /// Also remove vmagent's state, cache and status.
    pub purge: bool,
    /// List the steps, change nothing.
    pub dry_run: bool,
    /// How long to wait for a running apply.
    pub lock_timeout: Duration,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> RunError {
    RunError::Unsupported(format!("{what}: {e}"))
}

fn purge_leftovers(root: &Root, dry_run: bool, steps: &mut Vec<String>) -> Result<(), RunError> {
    for log in [layout::ISTIO_LOG, layout::ISTIO_ERR_LOG] {
        let host = root.resolve(Path::new(log))?;
        if fsx::meta(&host).map_err(|e| io_err(log, e))?.is_some() {
            steps.push(format!("remove {log} (purge)"));
            if !dry_run {
                fsx::remove_if_exists(&host).map_err(|e| io_err(log, e))?;
            }
        }
    }
    let (link, target) = layout::ETC_ISTIO;
    for sys in layout::LEFTOVER_DIRS {
        let host = root.resolve(Path::new(sys))?;
        let empty = std::fs::read_dir(&host).is_ok_and(|mut d| d.next().is_none());
        if host.is_dir() && (empty || dry_run) {
            steps.push(format!("remove {sys} (purge, if empty)"));
            if !dry_run {
                // Not empty after all (a race, or the dry run's guess): kept.
                let _ = std::fs::remove_dir(&host);
            }
        }
    }
    let host = root.resolve_parent(Path::new(link))?;
    let ours = std::fs::read_link(&host).is_ok_and(|t| t == Path::new(target));
    let gone = !root.resolve(Path::new(target))?.exists();
    if ours && (gone || dry_run) {
        steps.push(format!("remove {link} -> {target} (purge)"));
        if !dry_run {
            fsx::remove_if_exists(&host).map_err(|e| io_err(link, e))?;
        }
    }
    Ok(())
}

/// Runs the uninstall; returns the steps done (or, dry run, to do), one line each.
pub fn uninstall(opts: &Options) -> Result<Vec<String>, RunError> {
    let (root, bad_config) = crate::config::Config::locate_lenient(Root::new(&opts.root)?);
    if let Some(e) = bad_config {
        tracing::warn!("{e}; using the default state and cache directories");
    }
    let mut steps = Vec::new();
    let state = root.resolve(root.state_dir())?;
    // Uninstalling under a running daemon would be undone by its next reconcile.
    let daemon_lock = state.join(crate::daemon::LOCK);
    let _daemon = if daemon_lock.exists() {
        match lock::acquire(&daemon_lock, Duration::ZERO, || {}) {
            Ok(l) => Some(l),
            Err(lock::LockError::Timeout { .. }) => {
                return Err(lock::LockError::DaemonRunning { path: daemon_lock }.into())
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let _lock = if state.is_dir() && !opts.dry_run {
        Some(lock::acquire(
            &state.join("lock"),
            opts.lock_timeout,
            || {},
        )?)
    } else {
        None
    };
    if !opts.dry_run {
        crate::apply::recover(&root)?;
    }
    // 1. The service: stopped (the package's removal does not) and disabled.
    let (sc, mode) = Systemctl::for_root(&root);
    let unit_there = match &mode {
        Mode::Live => sc.show().map(|u| u.load != "not-found").unwrap_or(false),
        Mode::Offline(_) => service_file(&root),
    };
    if unit_there {
        if mode == Mode::Live && sc.show().map(|u| u.is_up()).unwrap_or(false) {
            steps.push(format!("stop {}", service::UNIT));
            if !opts.dry_run {
                sc.verb("stop")?;
            }
        }
        if matches!(sc.enablement()?.as_str(), "enabled" | "enabled-runtime") {
            steps.push(format!("disable {}", service::UNIT));
            if !opts.dry_run {
                sc.verb("disable")?;
            }
        }
    }
    // 2. The package.
    if let Ok(fmt) = package::os::format(&root) {
        if let Some(v) = package::install::installed(&root, fmt)? {
            let how = if opts.purge { "purge" } else { "remove" };
            steps.push(format!("{how} package {} {v}", package::install::NAME));
            if !opts.dry_run {
                package::install::remove(&root, fmt, opts.purge)?;
            }
        }
    }
    // 3. The hosts block.
    let hosts = root.resolve(Path::new(layout::HOSTS))?;
    if let Some(data) = fsx::read_file(&hosts, 1 << 20).map_err(|e| io_err(layout::HOSTS, e))? {
        let stripped = crate::hosts::without_block(&data)
            .map_err(|e| io_err(&format!("{}: damaged managed block", layout::HOSTS), e))?;
        if let Some(new) = stripped {
            steps.push(format!("remove vmagent's block from {}", layout::HOSTS));
            if !opts.dry_run {
                let m = fsx::meta(&hosts).map_err(|e| io_err(layout::HOSTS, e))?;
                let (mode, owner) = m.map_or((0o644, None), |m| (m.mode, Some((m.uid, m.gid))));
                fsx::write_atomic(&hosts, &new, mode, owner)
                    .map_err(|e| io_err(layout::HOSTS, e))?;
            }
        }
    }
    // 4. Installed files: put back what was there, remove what vmagent created.
    let record = pristine::Record::load(&root);
    // Without a record, a file is vmagent's only if vmagent's state says it applied
    // here (an apply from before the record existed); otherwise it is not ours to touch.
    let applied_here = state.join(crate::state::FILE).exists();
    let mut files: Vec<&str> = layout::FILES.iter().map(|f| f.path).collect();
    files.extend(layout::PROXY_CERTS);
    files.sort_unstable();
    files.dedup();
    for sys in files {
        let host = root.resolve(Path::new(sys))?;
        match record.files.get(sys) {
            Some(o) if o.existed => {
                let copy = pristine::copy_path(&root, sys).map_err(|e| io_err(sys, e))?;
                let Some(data) = fsx::read_file(&copy, 1 << 20).map_err(|e| io_err(sys, e))? else {
                    continue;
                };
                let now = fsx::read_file(&host, 1 << 20).ok().flatten();
                if now.as_deref() != Some(&data[..]) {
                    steps.push(format!("restore {sys} (as it was before vmagent)"));
                    if !opts.dry_run {
                        fsx::write_atomic(&host, &data, o.mode, Some((o.uid, o.gid)))
                            .map_err(|e| io_err(sys, e))?;
                    }
                }
            }
            Some(_) | None => {
                if !record.files.contains_key(sys) && !applied_here {
                    continue;
                }
                if fsx::meta(&host).map_err(|e| io_err(sys, e))?.is_some() {
                    steps.push(format!("remove {sys}"));
                    if !opts.dry_run {
                        fsx::remove_if_exists(&host).map_err(|e| io_err(sys, e))?;
                    }
                }
            }
        }
    }
    // 5. vmagent's own records of what it applied (the next apply starts afresh).
    for name in [crate::state::FILE, service::inputs::FILE] {
        let p = state.join(name);
        if p.exists() {
            steps.push(format!("remove {}/{name}", root.state_dir().display()));
            if !opts.dry_run {
                fsx::remove_if_exists(&p).map_err(|e| io_err(name, e))?;
            }
        }
    }
    // 6. --purge: what the package's postinst made and its removal leaves (directories,
    // the /etc/istio link, the proxy's logs): removed when nothing else is in them.
    if opts.purge {
        purge_leftovers(&root, opts.dry_run, &mut steps)?;
    }
    // The daemon's bundle store holds copies of the token: it goes with the rest.
    let store = state.join(crate::daemon::store::DIR);
    if store.is_dir() {
        steps.push(format!(
            "remove {}/{}",
            root.state_dir().display(),
            crate::daemon::store::DIR
        ));
        if !opts.dry_run {
            std::fs::remove_dir_all(&store).map_err(|e| io_err("bundle store", e))?;
        }
    }
    if opts.purge {
        let (cache, state) = (
            root.cache_dir().to_path_buf(),
            root.state_dir().to_path_buf(),
        );
        for sys in [
            cache.as_path(),
            Path::new(crate::status::DIR),
            state.as_path(),
        ] {
            let sys = sys.display().to_string();
            let p = root.resolve(Path::new(&sys))?;
            if p.exists() {
                steps.push(format!("remove {sys} (purge)"));
                if !opts.dry_run {
                    std::fs::remove_dir_all(&p).map_err(|e| io_err(&sys, e))?;
                }
            }
        }
    }
    Ok(steps)
}

fn service_file(root: &Root) -> bool {
    service::UNIT_DIRS.iter().any(|d| {
        root.resolve(&Path::new(d).join(service::UNIT))
            .map(|p| p.exists())
            .unwrap_or(false)
    })
}
