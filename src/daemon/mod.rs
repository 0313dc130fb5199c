//! `vmagent daemon`: keeps the VM in the mesh. One thread, one poll(2) loop over:
//! signals (TERM/INT: finish the step, exit 0; HUP: reload the config), the bundle
//! source (inotify on a local path), the proxy's logs (the health follower), and timers
//! (drift check, readiness probe, systemd watchdog).
//!
//! Every reconcile is the same `run::apply` a user runs (idempotent: it writes only what
//! drifted), without blocking on readiness: health is followed continuously here. At
//! start it first recovers an interrupted apply and restores what a reboot wiped (the
//! token lives on a tmpfs): that is just the first reconcile, and READY=1 is sent after
//! it, so istio.service (ordered after vmagent.service by a drop-in) starts with its
//! token in place.

pub mod report;
mod source;

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::apply::lock;
use crate::config::Config;
use crate::health::monitor::{Event, Monitor};
use crate::health::{Health, State};
use crate::layout;
use crate::root::Root;
use crate::run::{self, exit, ApplyOptions, Status as RunStatus};
use crate::service;
use crate::status::{HealthView, LastApply, Status};
use crate::timefmt;

/// What the daemon was told to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Target root.
    pub root: PathBuf,
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub fn run(opts: &Options) -> u8 {
    match Daemon::start(opts) {
        Ok(mut d) => d.main_loop(),
        Err((code, msg)) => {
            if crate::logging::stderr_is_journal() {
                tracing::error!("{msg}");
            } else {
                crate::report::err_line(&format!("error: {msg}"));
            }
            code
        }
    }
}

/// The file a running daemon holds locked (one daemon per root).
pub const LOCK: &str = "daemon.lock";

struct Daemon {
    root: Root,
    cfg: Config,
    _lock: lock::Lock,
    term: UnixStream,
    hup: UnixStream,
    source: Option<source::Watch>,
    monitor: Monitor,
    next_drift: Instant,
    next_probe: Instant,
    watchdog: Option<Duration>,
    next_watchdog: Instant,
    pending: Option<(Instant, &'static str)>,
    last_apply: Option<LastApply>,
    reporter: Option<report::Reporter>,
    token_note: Option<String>,
    status_line: String,
    /// What the report URL was last sent (health and warnings).
    reported: Option<(HealthView, Vec<String>)>,
}

fn signal_pipe(signals: &[libc::c_int]) -> std::io::Result<UnixStream> {
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

impl Daemon {
    fn start(opts: &Options) -> Result<Self, (u8, String)> {
        let root = Root::new(&opts.root).map_err(|e| (exit::FAILED, e.to_string()))?;
        let cfg = Config::load(&root).map_err(|e| (exit::INVALID, e.to_string()))?;
        let state_dir =
            crate::apply::state_dir(&root).map_err(|e| (exit::FAILED, e.to_string()))?;
        let lock = lock::acquire(&state_dir.join(LOCK), Duration::ZERO, || {}).map_err(|e| match e {
            lock::LockError::Timeout { .. } => (
                exit::BUSY,
                format!(
                    "another vmagent daemon is already running for {} (it holds {}/{LOCK}); stop it first (`systemctl stop vmagent`)",
                    root.base().display(),
                    layout::STATE_DIR
                ),
            ),
            e => (exit::FAILED, e.to_string()),
        })?;
        let term = signal_pipe(&[signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
            .map_err(|e| (exit::FAILED, format!("cannot set up signal handling: {e}")))?;
        let hup = signal_pipe(&[signal_hook::consts::SIGHUP])
            .map_err(|e| (exit::FAILED, format!("cannot set up signal handling: {e}")))?;
        let mut usec = 0u64;
        let watchdog =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec) / 2);
        let monitor = new_monitor(&root, &cfg);
        let now = Instant::now();
        let mut d = Daemon {
            source: None,
            reporter: cfg.health.report_url.clone().map(report::Reporter::new),
            root,
            cfg,
            _lock: lock,
            term,
            hup,
            monitor,
            next_drift: now,
            next_probe: now,
            watchdog,
            next_watchdog: now,
            pending: None,
            last_apply: None,
            token_note: None,
            status_line: String::new(),
            reported: None,
        };
        d.watch_source();
        Ok(d)
    }

    fn watch_source(&mut self) {
        self.source = None;
        match &self.cfg.source.bundle {
            None => tracing::warn!(
                "no bundle source configured ([source] bundle in /etc/vmagent/config.toml or config.d/): only health is watched"
            ),
            Some(b) if b.starts_with("https://") || b.starts_with("http://") => tracing::error!(
                bundle = %b,
                "URL bundle sources are not supported by this vmagent version; use a local path"
            ),
            Some(b) => match self.root.resolve(Path::new(b)) {
                Ok(host) => match source::Watch::new(&host) {
                    Ok(w) => self.source = Some(w),
                    Err(e) => tracing::warn!(bundle = %b, error = %e, "cannot watch the bundle; drift checks still pick up changes"),
                },
                Err(e) => tracing::error!(bundle = %b, error = %e, "bundle path"),
            },
        }
    }

    fn main_loop(&mut self) -> u8 {
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
        self.reconcile("start");
        self.step_health(true);
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
            let probe = now >= self.next_probe;
            self.step_health(probe);
            // Wait for the next thing to do.
            let mut wake = self.next_drift.min(self.next_probe);
            if let Some((at, _)) = self.pending {
                wake = wake.min(at);
            }
            if self.watchdog.is_some() {
                wake = wake.min(self.next_watchdog);
            }
            let mut fds: Vec<RawFd> = vec![self.term.as_raw_fd(), self.hup.as_raw_fd()];
            let src = self.source.as_ref().map(|s| s.raw_fd());
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
            if let (Some(true), Some(w)) = (
                ready.get(2).copied().filter(|_| src.is_some()),
                self.source.as_mut(),
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

    fn reload(&mut self) {
        match Config::load(&self.root) {
            Ok(c) => {
                let source_changed = c.source.bundle != self.cfg.source.bundle;
                self.reporter = c.health.report_url.clone().map(report::Reporter::new);
                self.monitor = new_monitor(&self.root, &c);
                self.cfg = c;
                tracing::info!("configuration reloaded (SIGHUP)");
                if source_changed {
                    self.watch_source();
                }
                self.pending = Some((Instant::now(), "configuration reloaded"));
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the old one")
            }
        }
    }

    /// One reconcile: apply the source bundle (repairs whatever drifted).
    fn reconcile(&mut self, why: &'static str) {
        self.reconcile_phase(why, true);
    }

    /// A reconcile; `full: false` writes the files only (no package, no service).
    fn reconcile_phase(&mut self, why: &'static str, full: bool) {
        self.next_drift = Instant::now() + Duration::from_secs(self.cfg.daemon.drift_interval_secs);
        let Some(b) = self.cfg.source.bundle.clone() else {
            return;
        };
        if b.starts_with("http://") || b.starts_with("https://") {
            return;
        }
        let bundle = match self.root.resolve(Path::new(&b)) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(bundle = %b, error = %e, "bundle path");
                return;
            }
        };
        let package = (full
            && (self.cfg.package.version.is_some() || self.cfg.package.url.is_some()))
        .then(crate::package::Request::default);
        let opts = ApplyOptions {
            bundle: bundle.clone(),
            root: self.root.base().to_path_buf(),
            dry_run: false,
            skip_owner: false,
            // Restoring an expired token is still right (the workload certificate may be
            // valid); the status says it expired.
            allow_expired_token: true,
            lock_timeout: Duration::from_secs(60),
            package,
            start: full,
            wait: Some(Duration::ZERO),
            config: Some(self.cfg.clone()),
            status_file: false,
        };
        let started = Instant::now();
        let r = with_watchdog(self.watchdog, || {
            run::apply(
                &opts,
                || tracing::info!("waiting for another vmagent (apply lock)"),
                &mut |_| {},
            )
        });
        let at = timefmt::rfc3339(timefmt::now());
        match r {
            Ok(o) => {
                let changed: Vec<String> = o
                    .plan
                    .steps
                    .iter()
                    .map(|s| {
                        let v = s.action.view(false);
                        format!("{} {}", v.action, v.path)
                    })
                    .chain(o.installed_with.iter().map(|c| format!("package ({c})")))
                    .collect();
                let svc = o
                    .service
                    .as_ref()
                    .map(|s| s.actions.clone())
                    .unwrap_or_default();
                if o.status == RunStatus::Applied || !svc.is_empty() {
                    tracing::warn!(
                        reason = why,
                        changes = %changed.join("; "),
                        service = %svc.join(","),
                        ms = started.elapsed().as_millis() as u64,
                        "repaired: {} change(s) applied",
                        changed.len() + svc.len()
                    );
                } else {
                    tracing::debug!(reason = why, "up to date");
                }
                if svc.iter().any(|a| a == "start" || a == "restart") {
                    self.monitor.mark();
                }
                self.last_apply = Some(LastApply {
                    at,
                    result: if o.status == RunStatus::Applied {
                        "applied"
                    } else {
                        "up-to-date"
                    }
                    .into(),
                    exit_code: exit::OK,
                    bundle: b,
                });
            }
            Err(e) => {
                // Retry sooner than a long drift interval (a network or a mirror may be
                // back in a minute), but never in a tight loop.
                let retry = Duration::from_secs(self.cfg.daemon.drift_interval_secs.min(60));
                self.next_drift = Instant::now() + retry;
                tracing::error!(reason = why, error = %e, exit_code = e.exit_code(), retry_secs = retry.as_secs(), "reconcile failed; retrying");
                self.last_apply = Some(LastApply {
                    at,
                    result: format!("error: {}", crate::bundle::printable(&e.to_string(), 300)),
                    exit_code: e.exit_code(),
                    bundle: b,
                });
            }
        }
        self.next_probe = Instant::now();
        self.publish();
    }

    /// Reads new log lines (and probes when due); publishes when the health changed.
    fn step_health(&mut self, probe: bool) {
        if probe {
            self.next_probe =
                Instant::now() + Duration::from_secs(self.cfg.daemon.probe_interval_secs);
        }
        let mut changed = false;
        self.monitor.step(probe, probe, &mut |ev| match ev {
            Event::Changed(_) => changed = true,
            Event::Line { class, text } => tracing::info!(class = ?class, line = text, "istio log"),
            Event::Waiting { .. } => {}
        });
        let token = self.token_check();
        if changed || token != self.token_note {
            self.token_note = token;
            self.publish();
        }
    }

    /// Token expiry: a warning from `token_warn_percent` of its lifetime, an error after.
    fn token_check(&self) -> Option<String> {
        let file = layout::file_for(crate::bundle::Member::Token)?.path;
        let data = std::fs::read(self.root.resolve(Path::new(file)).ok()?).ok()?;
        let now = timefmt::now();
        let (tok, _) = crate::bundle::token::parse(&data, now, true).ok()?;
        let exp = tok.exp?;
        if exp <= now {
            return Some(format!(
                "the token expired at {}: provide a fresh bundle (istioctl x workload entry configure) at the configured source",
                timefmt::rfc3339(exp)
            ));
        }
        let life = tok.iat.map(|i| exp - i).filter(|l| *l > 0).unwrap_or(3600);
        let warn_at = exp - life * (100 - i64::from(self.cfg.daemon.token_warn_percent)) / 100;
        (now >= warn_at).then(|| {
            format!(
                "the token expires at {} (in {}): provide a fresh bundle at the configured source before then",
                timefmt::rfc3339(exp),
                timefmt::human_duration(exp - now)
            )
        })
    }

    /// Status file, sd_notify STATUS, log, report URL.
    fn publish(&mut self) {
        let h: Health = self.monitor.health().clone();
        let mut doc = Status::new(HealthView::of(&h, self.monitor.since()));
        if let Ok(Some(old)) = Status::load(&self.root) {
            if old.health.state == doc.health.state {
                doc.health.since = old.health.since;
                doc.health.since_unix = old.health.since_unix;
            }
        }
        doc.read_facts(&self.root);
        let (sc, _) = service::Systemctl::for_root(&self.root);
        doc.enabled = sc.enablement().ok().filter(|e| !e.is_empty());
        doc.last_apply = self.last_apply.clone();
        doc.warnings.extend(self.token_note.clone());
        if let Err(e) = doc.store(&self.root) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
        let mut line = h.line();
        if let Some(t) = &self.token_note {
            line = format!("{line}; {t}");
        }
        if line != self.status_line {
            match h.state {
                State::Ready | State::Starting | State::Unknown => {
                    tracing::info!(state = h.state.name(), "{line}")
                }
                _ => tracing::warn!(
                    state = h.state.name(),
                    reason = h.failure.map(|f| f.name()),
                    hint = h.failure.map(|f| f.hint()),
                    "{line}"
                ),
            }
            self.status_line = line;
            let _ = sd_notify::notify(false, &[NotifyState::Status(&self.status_line)]);
        }
        // The report URL hears of changes (health, warnings), not of every reconcile.
        let key = (doc.health.clone(), doc.warnings.clone());
        if let Some(r) = &self.reporter {
            if self.reported.as_ref() != Some(&key) {
                r.send(&doc);
                self.reported = Some(key);
            }
        }
    }
}

/// Longest a reconcile may keep the watchdog quiet about a hang (a download or dpkg run
/// that never ends): after this, pings stop and systemd restarts vmagent.
const RECONCILE_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Runs `f` (a reconcile, which may download and install for minutes) while a helper
/// thread keeps the systemd watchdog fed, up to [`RECONCILE_LIMIT`].
fn with_watchdog<T>(every: Option<Duration>, f: impl FnOnce() -> T) -> T {
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

fn new_monitor(root: &Root, cfg: &Config) -> Monitor {
    let (m, problem) = crate::health::monitor::for_root(root, &cfg.health.ready_url);
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
    m
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
