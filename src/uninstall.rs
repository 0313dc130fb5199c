//! `vmagent uninstall`: stop and disable istio, remove the sidecar package, the managed
//! hosts block (adopted lines back in place) and the installed files vmagent committed a
//! write to (what was there before, a file or a link, is put back as it was), and
//! vmagent's bookkeeping; `--purge` also removes the status file and the state and cache
//! directories vmagent made (see [`crate::pristine`]). Idempotent: a second run finds
//! nothing to do.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::apply::lock;
use crate::etc_hosts::{self, Restore};
use crate::fsx::{self, Kind};
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

/// A directory where vmagent restores or removes a file is something in the way only
/// the admin can sort out: exit 4 (README, "Exit codes"), not an I/O failure (exit 1).
fn in_the_way(sys: &str, m: Option<fsx::Meta>) -> Result<(), RunError> {
    match m {
        Some(m) if m.kind == Kind::Dir => Err(RunError::Unsupported(format!(
            "{sys} is a directory where vmagent expects a file: move it away, then run `vmagent uninstall` again"
        ))),
        _ => Ok(()),
    }
}

/// An I/O failure is exit 1 (`RunError::Io`); only something in the way (see
/// [`crate::plan::in_the_way`]) is exit 4.
fn io_err(what: &str, source: std::io::Error) -> RunError {
    if crate::plan::in_the_way(&source) {
        return RunError::Unsupported(format!(
            "{what}: {source}: something is in the way; move it, then run `vmagent uninstall` again"
        ));
    }
    RunError::Io {
        path: what.to_string(),
        source,
    }
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

/// Step 3: vmagent's block out of /etc/hosts, the lines apply adopted into it back where
/// they were, the final newline (or its absence) as it was; a file vmagent created goes
/// again when nothing else is in it.
fn hosts_step(
    root: &Root,
    record: &pristine::Record,
    dry_run: bool,
    steps: &mut Vec<String>,
) -> Result<(), RunError> {
    let sys = layout::HOSTS;
    let host = root.resolve_parent(Path::new(sys))?;
    in_the_way(sys, fsx::meta(&host).map_err(|e| io_err(sys, e))?)?;
    // apply's own limit: a file apply accepted is never refused on the way out.
    let Some(data) = fsx::read_file(&host, crate::plan::READ_LIMIT).map_err(|e| io_err(sys, e))?
    else {
        return Ok(());
    };
    let original = record.hosts_original();
    // Something on disk in the way that only an admin can sort out: exit 4.
    let restored = etc_hosts::restore(&data, &original).map_err(|e| {
        RunError::Unsupported(format!(
            "{sys}: damaged managed block: {e}; fix or remove the vmagent-managed block by hand, then re-run"
        ))
    })?;
    let adopted: usize = original.adopted.iter().map(Vec::len).sum();
    let back = match adopted {
        0 => String::new(),
        n => format!(", {n} adopted line(s) put back where they were"),
    };
    let new = match restored {
        None => return Ok(()),
        Some(Restore::Remove) => {
            steps.push(format!(
                "remove {sys} (vmagent created it and nothing else is in it)"
            ));
            if !dry_run {
                fsx::remove_if_exists(&host).map_err(|e| io_err(sys, e))?;
            }
            return Ok(());
        }
        Some(Restore::Write(new)) => {
            steps.push(format!("remove vmagent's block from {sys}{back}"));
            new
        }
        Some(Restore::Keep(new)) => {
            steps.push(format!("remove vmagent's block from {sys}{back}; the file stays: vmagent created it, but lines were added to it since"));
            new
        }
    };
    if !dry_run {
        let m = fsx::meta(&host).map_err(|e| io_err(sys, e))?;
        let (mode, owner) = m.map_or((0o644, None), |m| (m.mode, Some((m.uid, m.gid))));
        fsx::write_atomic(&host, &new, mode, owner).map_err(|e| io_err(sys, e))?;
    }
    Ok(())
}

/// Step 4 for one installed file vmagent committed a write to: the original back (a
/// link as a link; content, mode and owner), or the file removed if vmagent created it.
fn file_step(
    root: &Root,
    sys: &str,
    o: &pristine::Original,
    dry_run: bool,
    steps: &mut Vec<String>,
) -> Result<(), RunError> {
    // The final component is never followed: a link is restored or removed itself.
    let host = root.resolve_parent(Path::new(sys))?;
    let now = fsx::meta(&host).map_err(|e| io_err(sys, e))?;
    in_the_way(sys, now)?;
    if !o.existed {
        if now.is_some() {
            steps.push(format!("remove {sys}"));
            if !dry_run {
                fsx::remove_if_exists(&host).map_err(|e| io_err(sys, e))?;
            }
        }
        return Ok(());
    }
    if let Some(target) = &o.link {
        let same = now.is_some_and(|m| m.kind == Kind::Symlink)
            && std::fs::read_link(&host).is_ok_and(|t| t.as_os_str().as_bytes() == &target[..]);
        if !same {
            steps.push(format!("restore {sys} (the symlink it was before vmagent)"));
            if !dry_run {
                pristine::restore_link(&host, target).map_err(|e| io_err(sys, e))?;
            }
        }
        return Ok(());
    }
    let copy = pristine::copy_path(root, sys).map_err(|e| io_err(sys, e))?;
    let Some(data) = fsx::read_file(&copy, crate::plan::READ_LIMIT).map_err(|e| io_err(sys, e))?
    else {
        return Ok(());
    };
    let same_meta = now
        .is_some_and(|m| m.kind == Kind::File && (m.mode, m.uid, m.gid) == (o.mode, o.uid, o.gid));
    let cur = fsx::read_file(&host, crate::plan::READ_LIMIT)
        .ok()
        .flatten();
    if !same_meta || cur.as_deref() != Some(&data[..]) {
        steps.push(format!("restore {sys} (as it was before vmagent)"));
        if !dry_run {
            fsx::write_atomic(&host, &data, o.mode, Some((o.uid, o.gid)))
                .map_err(|e| io_err(sys, e))?;
        }
    }
    Ok(())
}

/// An entry vmagent keeps in its state directory (or its atomic-write temp name).
fn state_entry(name: &str) -> bool {
    [
        "lock",
        crate::daemon::LOCK,
        "txn",
        pristine::DIR,
        crate::applied::FILE,
        service::inputs::FILE,
        layout::TOKEN_STORE.path,
        crate::daemon::store::DIR,
    ]
    .iter()
    .any(|n| name == *n || name == format!(".{n}.vmagent-tmp"))
}

/// A package vmagent downloaded into its cache (`<sha256>.deb`), or a partial one.
fn cache_entry(name: &str) -> bool {
    match name.strip_prefix(".partial-") {
        Some(sha) => crate::config::is_sha256(sha),
        None => name.rsplit_once('.').is_some_and(|(sha, ext)| {
            crate::config::is_sha256(sha) && ["deb", "rpm"].contains(&ext)
        }),
    }
}

/// `--purge` of vmagent's own directories, by the record of what vmagent made: a state
/// or cache directory vmagent created (or the default, named for vmagent) goes whole;
/// one it did not (configured to an existing directory) keeps everything but vmagent's
/// own entries; parents vmagent made go when nothing else is left in them.
fn purge_own_dirs(
    root: &Root,
    record: &pristine::Record,
    dry_run: bool,
    steps: &mut Vec<String>,
) -> Result<(), RunError> {
    type Ours = fn(&str) -> bool;
    let own: [(PathBuf, &str, Ours); 3] = [
        (
            root.cache_dir().to_path_buf(),
            layout::CACHE_DIR,
            cache_entry,
        ),
        (
            PathBuf::from(crate::status::DIR),
            crate::status::DIR,
            |_| true,
        ),
        (
            root.state_dir().to_path_buf(),
            layout::STATE_DIR,
            state_entry,
        ),
    ];
    // Host paths removed (or, dry run, to be): a parent holding only these is empty.
    let mut gone: Vec<PathBuf> = Vec::new();
    for (sys, default, ours) in &own {
        let name = sys.display().to_string();
        let host = root.resolve(sys)?;
        if !fsx::meta(&host)
            .map_err(|e| io_err(&name, e))?
            .is_some_and(|m| m.kind == Kind::Dir)
        {
            continue;
        }
        let whole =
            (sys == Path::new(default) || record.dirs.contains(&name)) && !layout::system_dir(sys);
        if whole {
            steps.push(format!("remove {name} (purge)"));
            if !dry_run {
                std::fs::remove_dir_all(&host).map_err(|e| io_err(&name, e))?;
            }
            gone.push(host);
            continue;
        }
        let entries: Vec<PathBuf> = std::fs::read_dir(&host)
            .map_err(|e| io_err(&name, e))?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(ours))
            .map(|e| e.path())
            .collect();
        if entries.is_empty() {
            continue;
        }
        steps.push(format!(
            "remove vmagent's files from {name} (purge; the directory itself was not made by vmagent and stays)"
        ));
        if !dry_run {
            for e in &entries {
                let r = match fsx::meta(e) {
                    Ok(Some(m)) if m.kind == Kind::Dir => std::fs::remove_dir_all(e),
                    _ => fsx::remove_if_exists(e),
                };
                r.map_err(|err| io_err(&name, err))?;
            }
        }
    }
    // Deepest first, so a parent is looked at after its children went.
    let mut parents: Vec<&String> = record
        .dirs
        .iter()
        .filter(|d| own.iter().all(|(sys, _, _)| Path::new(d.as_str()) != sys))
        .collect();
    parents.sort_by_key(|d| std::cmp::Reverse(Path::new(d.as_str()).components().count()));
    for d in parents {
        let host = root.resolve(Path::new(d.as_str()))?;
        let Ok(rd) = std::fs::read_dir(&host) else {
            continue;
        };
        let empty = rd.filter_map(Result::ok).all(|e| gone.contains(&e.path()));
        if empty {
            steps.push(format!(
                "remove {d} (purge: vmagent made it, nothing else is in it)"
            ));
            if !dry_run {
                std::fs::remove_dir(&host).map_err(|e| io_err(d, e))?;
            }
            gone.push(host);
        }
    }
    Ok(())
}

/// Runs the uninstall; returns the steps done (or, dry run, to do), one line each.
pub fn uninstall(opts: &Options) -> Result<Vec<String>, RunError> {
    let (root, bad_config) = crate::config::Config::locate_lenient(Root::new(&opts.root)?);
    let mut steps = Vec::new();
    if let Some(e) = bad_config {
        // Shown with the steps: the terminal's log level hides warnings, and a refused
        // `[paths]` means vmagent's records were looked for in the default places.
        let w = format!(
            "warning: {e}; went by the default directories {} and {} instead",
            root.state_dir().display(),
            root.cache_dir().display()
        );
        tracing::warn!("{w}");
        steps.push(w);
    }
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
    // What vmagent wrote and what was there before, read before anything goes.
    let record = pristine::Record::load(&root);
    // 3. The hosts block: out, with the lines it adopted back in place.
    hosts_step(&root, &record, opts.dry_run, &mut steps)?;
    // 4. Installed files: put back what was there, remove what vmagent created. Only a
    // path an apply committed a write to is vmagent's: the proxy's own certificates, a
    // file copied in after a rolled-back apply, anything without a record stays.
    for sys in layout::recorded_files() {
        let Some(o) = record.files.get(sys).filter(|o| o.committed) else {
            continue;
        };
        file_step(&root, sys, o, opts.dry_run, &mut steps)?;
    }
    // 5. vmagent's own records of what it applied (the next apply starts afresh).
    // The boot copy of the token too: a credential, never left behind.
    for name in [
        crate::applied::FILE,
        service::inputs::FILE,
        layout::TOKEN_STORE.path,
    ] {
        let p = state.join(name);
        if p.exists() {
            steps.push(format!("remove {}/{name}", root.state_dir().display()));
            if !opts.dry_run {
                fsx::remove_if_exists(&p).map_err(|e| io_err(name, e))?;
            }
        }
    }
    // The pristine record last: everything it describes has been put back, and the
    // next apply records the machine afresh (adopted lines would be restored twice).
    if !record.files.is_empty() || record.hosts.is_some() {
        steps.push(format!(
            "forget the originals in {}/{} (all put back)",
            root.state_dir().display(),
            pristine::DIR
        ));
        if !opts.dry_run {
            pristine::forget(&root, &record).map_err(|e| io_err(pristine::DIR, e))?;
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
        purge_own_dirs(&root, &record, opts.dry_run, &mut steps)?;
    }
    Ok(steps)
}

fn service_file(root: &Root) -> bool {
    service::unit_file_exists(root, service::UNIT)
}
