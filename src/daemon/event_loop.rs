//! The daemon's loop: one thread, poll(2) over the signal pipes, the bundle source's
//! inotify descriptor and the proxy's log, with timers (pending reconcile, drift check,
//! readiness probe, URL poll, trial deadline, systemd watchdog) as the timeout. Every
//! decision is elsewhere: this only finds out what is due and calls it.

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use super::source::Source;
use super::Daemon;
use crate::layout;
use crate::run::{self, exit};
use crate::timefmt;

impl Daemon {
    pub(super) fn main_loop(&mut self) -> u8 {
        // Start: recover, restore (token after reboot), repair: the first reconcile.
        match run::recover(self.root.base(), Duration::from_secs(60), || {}) {
            Ok(Some(p)) => tracing::warn!(paths = p.len(), "rolled back an interrupted apply"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "recovering an interrupted apply failed"),
        }
        // READY must not wait for the service step: at boot istio.service is ordered
        // after vmagent.service, so a `systemctl start istio` before READY would wait for
        // us while we wait for it. First the files alone (the token back on the tmpfs),
        // then READY (istio's queued start proceeds), then the full reconcile.
        // On a VM not onboarded yet the package (and its istio-proxy user) comes with the
        // full reconcile: there is nothing to restore before it.
        if matches!(self.root.account(layout::PROXY_USER), Ok(Some(_))) {
            self.reconcile_phase("start: restore files", false);
        }
        let _ = sd_notify::notify(
            false,
            &[NotifyState::Ready, NotifyState::Status(&self.status_line)],
        );
        tracing::info!(status = %self.status_line, "vmagent daemon ready");
        self.poll_source();
        self.reconcile("start");
        self.step_health(true);
        self.check_trial();
        loop {
            let now = Instant::now();
            if self.watchdog.is_some() && now >= self.next_watchdog {
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                self.next_watchdog = now + self.watchdog.unwrap_or(Duration::from_secs(30));
            }
            if let Some((at, why)) = self.pending {
                if now >= at {
                    self.pending = None;
                    self.reconcile(why);
                }
            }
            if now >= self.next_drift {
                self.reconcile("drift check");
            }
            self.poll_source();
            let probe = now >= self.next_probe;
            self.step_health(probe);
            self.check_trial();
            // Wait for the next thing to do.
            let mut wake = self.next_drift.min(self.next_probe);
            if let Some((at, _)) = self.pending {
                wake = wake.min(at);
            }
            if let Source::Url(r) = &self.source {
                wake = wake.min(r.due());
            }
            if let Some(t) = self.trial_deadline() {
                wake = wake.min(t);
            }
            if self.watchdog.is_some() {
                wake = wake.min(self.next_watchdog);
            }
            let mut fds: Vec<RawFd> = vec![self.term.as_raw_fd(), self.hup.as_raw_fd()];
            let src = match &self.source {
                Source::Path(_, Some(w)) => Some(w.raw_fd()),
                _ => None,
            };
            let logs = self.monitor.raw_fd();
            fds.extend(src);
            fds.extend(logs);
            let timeout = wake.saturating_duration_since(Instant::now());
            let ready = poll_fds(&fds, timeout);
            if ready.first() == Some(&true) && drain(&mut self.term) {
                tracing::info!("stopping (signal)");
                let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
                return exit::OK;
            }
            if ready.get(1) == Some(&true) && drain(&mut self.hup) {
                self.reload();
            }
            if let (Some(true), Source::Path(_, Some(w))) = (
                ready.get(2).copied().filter(|_| src.is_some()),
                &mut self.source,
            ) {
                if w.changed() {
                    // Debounced: an editor or `cp` makes several events.
                    self.pending = Some((
                        Instant::now() + Duration::from_millis(300),
                        "bundle changed",
                    ));
                }
            }
        }
    }

    /// When the bundle on trial must be ready, on the monotonic clock.
    fn trial_deadline(&self) -> Option<Instant> {
        let dl = self.store.state.deadline()?;
        let left = u64::try_from(dl.saturating_sub(timefmt::now())).unwrap_or(0);
        Some(Instant::now() + Duration::from_secs(left))
    }
}

/// A non-blocking socket that turns readable when one of `signals` arrives.
pub(super) fn signal_pipe(signals: &[libc::c_int]) -> std::io::Result<UnixStream> {
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    for s in signals {
        signal_hook::low_level::pipe::register(*s, write.try_clone()?)?;
    }
    Ok(read)
}

fn drain(s: &mut UnixStream) -> bool {
    let mut buf = [0u8; 64];
    let mut any = false;
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        any = true;
    }
    any
}

/// Longest a reconcile may keep the watchdog quiet about a hang (a download or dpkg run
/// that never ends): after this, pings stop and systemd restarts vmagent.
const RECONCILE_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Runs `f` (a reconcile, which may download and install for minutes) while a helper
/// thread keeps the systemd watchdog fed, up to [`RECONCILE_LIMIT`].
pub(super) fn with_watchdog<T>(every: Option<Duration>, f: impl FnOnce() -> T) -> T {
    let Some(every) = every else {
        return f();
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let start = Instant::now();
            while start.elapsed() < RECONCILE_LIMIT {
                match done_rx.recv_timeout(every) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                    }
                    _ => return,
                }
            }
        });
        let r = f();
        let _ = done_tx.send(());
        r
    })
}

/// poll(2) for readability on several descriptors.
fn poll_fds(fds: &[RawFd], timeout: Duration) -> Vec<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: *fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `p` is a valid array of pollfd for the duration of the call.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if r <= 0 {
        return vec![false; fds.len()];
    }
    p.iter().map(|x| x.revents != 0).collect()
}
