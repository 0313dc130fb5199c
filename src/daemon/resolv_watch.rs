//! DNS capture that keeps working: pilot-agent reads the upstream nameservers from
//! /etc/resolv.conf only when it starts (see [`crate::dns_capture`]), so the daemon
//! watches that file and restarts istio, debounced, when its nameservers change while
//! capture is on.
//!
//! The file is watched through the bundle source's [`Watch`] (inotify, one descriptor):
//! the link's directory for its name (a DHCP client renaming a new file over it, a link
//! retargeted) and, when it is a symlink (systemd-resolved's stub-resolv.conf), the
//! target's directory for the target's name (rewritten in place or renamed over). After
//! every event the watch is set up again, so a retargeted link is followed.
//!
//! "In force" is the set of nameservers when the daemon last saw istio (re)started: at
//! the daemon's start (the best it knows) and after every start or restart it made.

use std::collections::BTreeSet;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::event_loop::blocking;
use super::source::Watch;
use super::{Daemon, Stopped};
use crate::dns_capture::{self, Decision, RESOLV_CONF};
use crate::root::Root;
use crate::service::{Mode, Systemctl};

/// The watch's state.
#[derive(Default)]
pub(super) struct ResolvWatch {
    watch: Option<Watch>,
    /// The nameservers istio was (re)started with, as far as the daemon knows.
    in_force: Option<BTreeSet<String>>,
    /// When the last change has been quiet long enough to act on.
    due: Option<Instant>,
}

impl ResolvWatch {
    /// The descriptor to poll, if watching.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.watch.as_ref().map(Watch::fd)
    }

    /// When the debounced change is due.
    pub(super) fn due(&self) -> Option<Instant> {
        self.due
    }
}

/// The watch on the root's resolv.conf: its own directory entry and, through symlinks,
/// the file it resolves to (both inside the root).
fn watch(root: &Root) -> Result<Watch, String> {
    let sys = Path::new(RESOLV_CONF);
    let link = root.resolve_parent(sys).map_err(|e| e.to_string())?;
    let target = root.resolve(sys).map_err(|e| e.to_string())?;
    let mut files = vec![link.clone()];
    // A dangling link's target directory may not exist yet: its link entry is watched.
    if target != link && target.parent().is_some_and(Path::is_dir) {
        files.push(target);
    }
    Watch::files(&files).map_err(|e| format!("{}: {e}", link.display()))
}

impl Daemon {
    /// Starts watching (at start and after a reload); the nameservers now are in force.
    pub(super) fn resolv_setup(&mut self) {
        self.resolv.watch = match watch(&self.root) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch {RESOLV_CONF}; with DNS capture on, restart istio by hand after its nameservers change");
                None
            }
        };
        if self.resolv.in_force.is_none() {
            self.resolv.in_force = dns_capture::current(&self.root).ok();
        }
    }

    /// istio was (re)started: it read resolv.conf as it is now.
    pub(super) fn resolv_started(&mut self) {
        self.resolv.in_force = dns_capture::current(&self.root).ok();
    }

    /// An event on the watch: (re)arm the debounce, follow a retargeted link.
    pub(super) fn resolv_event(&mut self) {
        let hit = self.resolv.watch.as_mut().is_some_and(Watch::changed);
        if hit {
            let quiet = Duration::from_millis(self.cfg.daemon.resolv_debounce_ms);
            self.resolv.due = Some(Instant::now() + quiet);
            if let Ok(w) = watch(&self.root) {
                self.resolv.watch = Some(w);
            }
        }
    }

    /// Acts on a change that has been quiet for the debounce time.
    pub(super) async fn step_resolv(&mut self) -> Result<(), Stopped> {
        if self.resolv.due.is_none_or(|t| Instant::now() < t) {
            return Ok(());
        }
        self.resolv.due = None;
        let now = match dns_capture::current(&self.root) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read {RESOLV_CONF}; istio keeps the nameservers it has");
                return Ok(());
            }
        };
        let capture = dns_capture::installed(&self.root);
        let in_force = self.resolv.in_force.clone().unwrap_or_default();
        let show = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
        match dns_capture::decide(&in_force, &now, capture) {
            Decision::Nothing if capture || in_force == now => {
                tracing::debug!(nameservers = %show(&now), "{RESOLV_CONF} changed, its nameservers did not: no restart");
            }
            Decision::Nothing => {
                tracing::info!(nameservers = %show(&now), "{RESOLV_CONF} nameservers changed; DNS capture is off, so istio does not need a restart");
                self.resolv.in_force = Some(now);
            }
            Decision::NoNameservers => {
                tracing::warn!("{RESOLV_CONF} lists no nameserver now; istio keeps the ones it has until some come back (a restart would leave it with none)");
            }
            Decision::Restart { added, removed } => {
                tracing::warn!(
                    added = %added.join(","),
                    removed = %removed.join(","),
                    "{RESOLV_CONF} nameservers changed and DNS capture is on: restarting istio (pilot-agent reads them only at start)"
                );
                let root = self.root.clone();
                match blocking(&mut self.intr, move || restart_if_up(&root)).await? {
                    Ok(true) => {
                        self.monitor.mark();
                        self.resolv.in_force = Some(now);
                    }
                    Ok(false) => {
                        tracing::info!(
                            "istio is not running: it reads the new nameservers when it starts"
                        );
                        self.resolv.in_force = Some(now);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "restarting istio for the new nameservers failed; run `systemctl restart istio`")
                    }
                }
            }
        }
        Ok(())
    }
}

/// `systemctl restart istio` when it is up (a stopped service is left stopped: it reads
/// the file when it starts). Offline roots are never restarted.
fn restart_if_up(root: &Root) -> Result<bool, crate::service::ServiceError> {
    let (sc, mode) = Systemctl::for_root(root);
    if mode != Mode::Live || !sc.show()?.is_up() {
        return Ok(false);
    }
    sc.verb("restart")?;
    Ok(true)
}
