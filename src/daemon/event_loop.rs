//! The daemon's loop, on a tokio current-thread runtime: one `select!` over the signals
//! (TERM/INT stop, HUP reloads), the bundle source's inotify descriptor, the proxy's log
//! (the health follower) and a timer for the next due thing (pending reconcile, drift
//! check, readiness probe, URL poll, trial deadline, token refresh, systemd watchdog).
//!
//! Work that blocks (the apply transaction, dpkg) runs on `spawn_blocking`, and network
//! work (URL poll, probe) is awaited; both through [`Interrupts::run`], which keeps
//! serving SIGTERM and the watchdog meanwhile. A stop mid-apply abandons the apply like
//! a crash would: its undo journal rolls it back at the next start.

use std::future::Future;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::source::Source;
use super::{Daemon, Stopped};
use crate::exit;
use crate::layout;
use crate::run;
use crate::timefmt;

/// Longest one piece of work may keep the watchdog fed (a download or dpkg run that
/// never ends): after this, pings stop and systemd restarts vmagent.
const WORK_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The signals and the systemd watchdog: what must be served even mid-work.
pub(super) struct Interrupts {
    term: Signal,
    int: Signal,
    hup: Signal,
    /// Half the interval systemd expects WATCHDOG=1 in (`None`: no watchdog).
    watchdog: Option<Duration>,
    next_ping: Instant,
}

impl Interrupts {
    /// Registers the handlers; must run on the runtime.
    pub(super) fn new() -> std::io::Result<Self> {
        let mut usec = 0u64;
        let watchdog =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec) / 2);
        Ok(Interrupts {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            watchdog,
            next_ping: Instant::now(),
        })
    }

    /// When the watchdog must next be pinged.
    fn ping_due(&self) -> Option<Instant> {
        self.watchdog.map(|_| self.next_ping)
    }

    fn ping(&mut self) {
        if let Some(every) = self.watchdog {
            let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
            self.next_ping = Instant::now() + every;
        }
    }

    /// Awaits `work` while serving the watchdog (for up to [`WORK_LIMIT`]) and SIGTERM
    /// or SIGINT, which abandon the work. SIGHUP waits: the loop reloads afterwards.
    pub(super) async fn run<F: Future>(&mut self, work: F) -> Result<F::Output, Stopped> {
        let limit = Instant::now() + WORK_LIMIT;
        tokio::pin!(work);
        loop {
            let ping = self.ping_due().filter(|_| Instant::now() < limit);
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = self.term.recv() => return Err(Stopped),
                _ = self.int.recv() => return Err(Stopped),
                _ = sleep_until(ping) => self.ping(),
            }
        }
    }
}

/// Runs `f` on the blocking pool, serving signals and the watchdog meanwhile.
pub(super) async fn blocking<T: Send + 'static>(
    intr: &mut Interrupts,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Stopped> {
    match intr.run(tokio::task::spawn_blocking(f)).await? {
        Ok(v) => Ok(v),
        // A panic in the work is a bug: it ends the daemon as it would have in-thread.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Stopped),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Resolves when `fd` is readable; never without one. Registered per wait (a few
/// syscalls per wake-up) on a duplicate the registration owns, so an owner replaced by a
/// reload is never left registered.
async fn readable(fd: Option<BorrowedFd<'_>>) {
    let Some(fd) = fd else {
        return std::future::pending().await;
    };
    let registered = fd.try_clone_to_owned().and_then(|owned| {
        // SAFETY: the AsyncFd owns `owned` (a dup) for its whole life, so the descriptor
        // it registers cannot be closed or replaced while registered.
        unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
    });
    match registered {
        Ok(a) => {
            let _ = a.readable().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch a descriptor; the timers still run");
            std::future::pending().await
        }
    }
}

/// What ended a wait.
enum Wake {
    Stop,
    Hup,
    Source,
    Logs,
    TokenFile,
    Resolv,
    Timer,
}

impl Daemon {
    /// Runs until SIGTERM/SIGINT; returns the exit code.
    pub(super) async fn main_loop(&mut self) -> u8 {
        let Err(Stopped) = self.serve().await;
        tracing::info!("stopping (signal)");
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
        exit::OK
    }

    async fn serve(&mut self) -> Result<std::convert::Infallible, Stopped> {
        // Start: recover, restore (token after reboot), repair: the first reconcile.
        let base = self.root.base().to_path_buf();
        let recovered = blocking(&mut self.intr, move || {
            run::recover(&base, Duration::from_secs(60), || {})
        })
        .await?;
        match recovered {
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
            self.reconcile_phase("start: restore files", false).await?;
        }
        let _ = sd_notify::notify(
            false,
            &[NotifyState::Ready, NotifyState::Status(&self.status_line)],
        );
        tracing::info!(status = %self.status_line, "vmagent daemon ready");
        self.poll_source().await?;
        self.reconcile("start").await?;
        self.step_health(true).await?;
        self.check_trial().await?;
        loop {
            let now = Instant::now();
            if self.intr.ping_due().is_some_and(|t| now >= t) {
                self.intr.ping();
            }
            if let Some((at, why)) = self.pending {
                if now >= at {
                    self.pending = None;
                    self.reconcile(why).await?;
                }
            }
            if now >= self.next_drift {
                self.reconcile("drift check").await?;
            }
            self.step_token().await?;
            self.step_resolv().await?;
            self.poll_source().await?;
            self.step_health(now >= self.next_probe).await?;
            self.check_trial().await?;
            match self.wait().await {
                Wake::Stop => return Err(Stopped),
                Wake::Hup => self.reload(),
                Wake::Source => {
                    if let Source::Path(_, Some(w)) = &mut self.source {
                        if w.changed() {
                            // Debounced: an editor or `cp` makes several events.
                            self.pending = Some((
                                Instant::now() + Duration::from_millis(300),
                                "bundle changed",
                            ));
                        }
                    }
                }
                Wake::TokenFile => self.token_file_event(),
                Wake::Resolv => self.resolv_event(),
                Wake::Logs | Wake::Timer => {}
            }
        }
    }

    /// Waits for a signal, a descriptor or the next due time.
    async fn wait(&mut self) -> Wake {
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
        if let Some(t) = self.intr.ping_due() {
            wake = wake.min(t);
        }
        if let Some(t) = self.token_due() {
            wake = wake.min(t);
        }
        if let Some(t) = self.resolv.due() {
            wake = wake.min(t);
        }
        let src = match &self.source {
            Source::Path(_, Some(w)) => Some(w.fd()),
            _ => None,
        };
        let logs = self.monitor.fd();
        let token_file = self.token.fd();
        let resolv = self.resolv.fd();
        tokio::select! {
            _ = self.intr.term.recv() => Wake::Stop,
            _ = self.intr.int.recv() => Wake::Stop,
            _ = self.intr.hup.recv() => Wake::Hup,
            _ = readable(src) => Wake::Source,
            _ = readable(logs) => Wake::Logs,
            _ = readable(token_file) => Wake::TokenFile,
            _ = readable(resolv) => Wake::Resolv,
            _ = tokio::time::sleep_until(wake.into()) => Wake::Timer,
        }
    }

    /// When the bundle on trial must be ready, on the monotonic clock.
    fn trial_deadline(&self) -> Option<Instant> {
        let dl = self.store.state.deadline()?;
        let left = u64::try_from(dl.saturating_sub(timefmt::now())).unwrap_or(0);
        Some(Instant::now() + Duration::from_secs(left))
    }
}
