//! Where the daemon's bundles come from: none, a local path (file or directory) watched
//! with inotify ([`Watch`]: `changed()` says whether something happened to it since the
//! last call), or an https URL polled by [`super::remote`].

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use super::remote::{Polled, Remote};
use super::Daemon;
use super::Stopped;

/// Where bundles come from.
pub(super) enum Source {
    /// None configured: only health is watched.
    None,
    /// A local path (inside the root), watched with inotify when possible.
    Path(String, Option<Watch>),
    /// An https URL, polled.
    Url(Box<Remote>),
    /// Configured but unusable (the reason).
    Invalid(String),
}

/// A watch on one bundle path (or on a few files: [`Watch::files`]).
pub struct Watch {
    inotify: Inotify,
    /// Per watched directory, the file name to look for in its events (`None`: the
    /// path is a directory watched itself, every event counts).
    targets: Vec<(WatchDescriptor, Option<OsString>)>,
}

/// What changes a watched file, seen from its directory.
const MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::MODIFY);

impl Watch {
    /// Watches `host` (a host path): a directory bundle itself, a file through its
    /// parent directory (editors and `cp`/`mv` replace files, which a watch on the file's
    /// inode would miss).
    pub fn new(host: &Path) -> io::Result<Self> {
        if host.is_dir() {
            let inotify = Inotify::init()?;
            let wd = inotify.watches().add(host, MASK)?;
            return Ok(Watch {
                inotify,
                targets: vec![(wd, None)],
            });
        }
        Watch::files(&[host.to_path_buf()])
    }

    /// Watches files (host paths), each through its parent directory, on one
    /// descriptor: a file and the target of a symlink to it, say.
    pub fn files(hosts: &[PathBuf]) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        let mut targets = Vec::new();
        for host in hosts {
            let parent = host.parent().unwrap_or(Path::new("/"));
            let wd = inotify.watches().add(parent, MASK)?;
            targets.push((wd, host.file_name().map(|n| n.to_os_string())));
        }
        Ok(Watch { inotify, targets })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Drains pending events; true when one concerns the bundle.
    pub fn changed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let mut hit = false;
        while let Ok(events) = self.inotify.read_events(&mut buf) {
            let mut n = 0;
            for e in events {
                n += 1;
                // A queue overflow lost events: count it as a change.
                hit |= e.mask.contains(EventMask::Q_OVERFLOW)
                    || self.targets.iter().any(|(wd, name)| {
                        *wd == e.wd
                            && match (name, e.name) {
                                (None, _) => true,
                                (Some(want), Some(got)) => want.as_os_str() == got,
                                (Some(_), None) => false,
                            }
                    });
            }
            if n == 0 {
                break;
            }
        }
        hit
    }
}

impl Daemon {
    /// Makes the source from the configuration.
    pub(super) fn watch_source(&mut self) {
        self.source = match self.cfg.source.bundle.clone() {
            None => {
                tracing::warn!(
                    "no bundle source configured ([source] bundle in /etc/vmagent/config.toml or config.d/): only health is watched"
                );
                Source::None
            }
            Some(b) if b.contains("://") => {
                let dir = self.store.dir().to_path_buf();
                match Remote::new(&b, &self.cfg, &self.root, &dir) {
                    Ok(r) => Source::Url(Box::new(r)),
                    Err(e) => {
                        tracing::error!("{e}");
                        Source::Invalid(e)
                    }
                }
            }
            Some(b) => match self.root.resolve(Path::new(&b)) {
                Ok(host) => match Watch::new(&host) {
                    Ok(w) => Source::Path(b, Some(w)),
                    Err(e) => {
                        tracing::warn!(bundle = %b, error = %e, "cannot watch the bundle; drift checks still pick up changes");
                        Source::Path(b, None)
                    }
                },
                Err(e) => {
                    tracing::error!(bundle = %b, error = %e, "bundle path");
                    Source::Invalid(format!("bundle path '{b}': {e}"))
                }
            },
        };
    }

    /// Polls a URL source when due; a new body schedules a reconcile.
    pub(super) async fn poll_source(&mut self) -> Result<(), Stopped> {
        let Source::Url(r) = &mut self.source else {
            return Ok(());
        };
        if Instant::now() < r.due() {
            return Ok(());
        }
        // Awaited beside SIGTERM and the watchdog: a trickling server holds nothing up.
        let polled = self.intr.run(r.poll()).await?;
        let url = r.shown().to_string();
        let retry = r.due().saturating_duration_since(Instant::now()).as_secs();
        match polled {
            Polled::New => {
                tracing::info!(url = %url, "fetched a new bundle");
                self.pending = Some((Instant::now(), "bundle fetched"));
            }
            Polled::NotModified => tracing::debug!(url = %url, "bundle not modified"),
            Polled::Failed(e) => {
                tracing::warn!(error = %e, next_poll_secs = retry, "polling the bundle URL failed; backing off");
                self.poll_error = Some(format!("polling the bundle URL failed: {e}"));
                self.publish();
                return Ok(());
            }
        }
        if self.poll_error.take().is_some() {
            self.publish();
        }
        Ok(())
    }

    pub(super) fn source_path(&self) -> Result<Option<PathBuf>, String> {
        match &self.source {
            Source::None => Ok(None),
            Source::Path(b, _) => self
                .root
                .resolve(Path::new(b))
                .map(Some)
                .map_err(|e| format!("bundle path '{b}': {e}")),
            Source::Url(r) => Ok(r.file()),
            Source::Invalid(e) => Err(e.clone()),
        }
    }
}
