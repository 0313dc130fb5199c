//! `vmagent daemon`: keeps the VM in the mesh. One thread, one poll(2) loop over:
//! signals (TERM/INT: finish the step, exit 0; HUP: reload the config), the bundle
//! source (inotify on a local path; an https URL polled by [`remote`]), the proxy's logs
//! (the health follower), and timers (drift check, readiness probe, URL poll, trial
//! deadline, systemd watchdog).
//!
//! Every reconcile stages the source's bundle in the [`store`] (validated, named by its
//! sha256) and runs the same `run::apply` a user runs on it (idempotent: it writes only
//! what drifted), without blocking on readiness: health is followed continuously here. At
//! start it first recovers an interrupted apply and restores what a reboot wiped (the
//! token lives on a tmpfs) from the bundle in force, and READY=1 is sent after that, so
//! istio.service (ordered after vmagent.service by a drop-in) starts with its token in
//! place.
//!
//! Last-known-good: a bundle whose proxy became ready is the good one; a new bundle is on
//! trial until its proxy is ready, and is rolled back (the good one applied again, the
//! bad one not retried until the source changes) when it fails for good or is not ready
//! within `health.wait_secs`.

mod remote;
pub mod report;
mod source;
pub mod store;

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::apply::lock;
use crate::config::Config;
use crate::exit;
use crate::health::monitor::{Event, Monitor};
use crate::health::{Health, State};
use crate::layout;
use crate::root::Root;
use crate::run::{self, ApplyOptions, Status as RunStatus};
use crate::service;
use crate::status::{BundleView, HealthView, LastApply, Status};
use crate::timefmt;
use remote::{Polled, Remote};
use store::{Rejected, Store, Trial};

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
                crate::text::err_line(&format!("error: {msg}"));
            }
            code
        }
    }
}

/// The file a running daemon holds locked (one daemon per root).
pub const LOCK: &str = "daemon.lock";

/// Where bundles come from.
enum Source {
    /// None configured: only health is watched.
    None,
    /// A local path (inside the root), watched with inotify when possible.
    Path(String, Option<source::Watch>),
    /// An https URL, polled.
    Url(Box<Remote>),
    /// Configured but unusable (the reason).
    Invalid(String),
}

struct Daemon {
    root: Root,
    cfg: Config,
    _lock: lock::Lock,
    term: UnixStream,
    hup: UnixStream,
    source: Source,
    store: Store,
    /// Why the source could not be used last time (bundle invalid, unreachable URL).
    source_error: Option<String>,
    /// Why the last poll of a URL source failed (cleared by the next good poll).
    poll_error: Option<String>,
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
        let root = cfg.locate(root);
        let state_dir =
            crate::apply::state_dir(&root).map_err(|e| (exit::FAILED, e.to_string()))?;
        let lock = lock::acquire(&state_dir.join(LOCK), Duration::ZERO, || {}).map_err(|e| match e {
            lock::LockError::Timeout { .. } => (
                exit::BUSY,
                format!(
                    "another vmagent daemon is already running for {} (it holds {}/{LOCK}); stop it first (`systemctl stop vmagent`)",
                    root.base().display(),
                    root.state_dir().display()
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
        let store = Store::open(&root).map_err(|e| (exit::FAILED, e))?;
        let now = Instant::now();
        let mut d = Daemon {
            source: Source::None,
            store,
            source_error: None,
            poll_error: None,
            reporter: report::Reporter::for_config(&cfg, &root),
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
                Ok(host) => match source::Watch::new(&host) {
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
    fn poll_source(&mut self) {
        let Source::Url(r) = &mut self.source else {
            return;
        };
        if Instant::now() < r.due() {
            return;
        }
        let polled = with_watchdog(self.watchdog, || r.poll());
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
                return;
            }
        }
        if self.poll_error.take().is_some() {
            self.publish();
        }
    }

    /// The host path of the source's current bundle (`Ok(None)`: none yet).
    fn source_path(&self) -> Result<Option<PathBuf>, String> {
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

    fn reload(&mut self) {
        match Config::load(&self.root) {
            Ok(mut c) => {
                if c.paths != self.cfg.paths {
                    tracing::warn!("[paths] changed: it takes effect when vmagent restarts (`systemctl restart vmagent`)");
                    c.paths = self.cfg.paths.clone();
                }
                self.reporter = report::Reporter::for_config(&c, &self.root);
                self.monitor = new_monitor(&self.root, &c);
                self.cfg = c;
                tracing::info!("configuration reloaded (SIGHUP)");
                // Path, URL, CA or headers may have changed: the source is made anew (a
                // URL's validators are on disk, so nothing is downloaded again).
                self.watch_source();
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
        // The restore at start re-applies the bundle in force, without the source (a
        // URL may not be reachable yet at boot); otherwise the source's bundle is staged.
        let staged = if !full && self.store.state.current.is_some() {
            None
        } else {
            match self.source_path() {
                Ok(None) => None,
                Ok(Some(p)) => match self.store.stage(&p) {
                    Ok(d) => {
                        self.source_error = None;
                        Some(d)
                    }
                    Err(e) => {
                        self.source_error = Some(e.to_string());
                        None
                    }
                },
                Err(e) => {
                    self.source_error = Some(e);
                    None
                }
            }
        };
        let Some(digest) = self.choose(staged, full) else {
            if let Some(e) = self.source_error.clone() {
                self.source_failed(why, &e, &b);
            }
            self.publish();
            return;
        };
        let bundle = self.store.path(&digest);
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
                if let Some(t) = &mut self.store.state.trial {
                    if t.digest == digest && t.deadline.is_none() && full {
                        let wait = self.cfg.health.wait_secs;
                        t.deadline = Some(timefmt::now() + wait as i64);
                        tracing::info!(
                            bundle = %store::short(&digest),
                            wait_secs = wait,
                            "new bundle applied; it becomes the last-known-good once the proxy is ready, else it is rolled back"
                        );
                        self.save_store();
                    }
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
                    bundle: crate::redact::url(&b),
                });
                // A refused source is the news, even though the bundle in force was
                // re-applied (its drift repaired).
                if let Some(e) = self.source_error.clone() {
                    self.source_failed(why, &e, &b);
                }
            }
            Err(e) => self.failed(why, &e.to_string(), e.exit_code(), &b),
        }
        self.next_probe = Instant::now();
        self.publish();
    }

    /// A reconcile that failed: logged, recorded, retried within a minute (a network or
    /// a mirror may be back by then) but never in a tight loop.
    fn failed(&mut self, why: &str, error: &str, code: u8, bundle: &str) {
        // Logged and recorded: a URL in it (the source's, a package's) is shown masked.
        let error = &crate::redact::text(error);
        let retry = Duration::from_secs(self.cfg.daemon.drift_interval_secs.min(60));
        self.next_drift = Instant::now() + retry;
        tracing::error!(reason = why, error = %error, exit_code = code, retry_secs = retry.as_secs(), "reconcile failed; retrying");
        self.last_apply = Some(LastApply {
            at: timefmt::rfc3339(timefmt::now()),
            result: format!("error: {}", crate::bundle::printable(error, 300)),
            exit_code: code,
            bundle: crate::redact::url(bundle),
        });
    }

    /// The source's bundle could not be used (invalid, missing, not fetched).
    fn source_failed(&mut self, why: &str, error: &str, bundle: &str) {
        self.failed(why, error, exit::INVALID, bundle);
    }

    /// Which bundle to apply: the source's (`staged`), unless it is the one rolled back;
    /// else the one in force. A new bundle goes on trial when there is a good one to
    /// fall back to.
    fn choose(&mut self, staged: Option<String>, full: bool) -> Option<String> {
        let Some(d) = staged else {
            return self.store.state.current.clone();
        };
        let st = &mut self.store.state;
        if let Some(r) = &st.rejected {
            if r.digest == d {
                tracing::debug!(bundle = %store::short(&d), "the source still holds the rolled-back bundle");
                return st.current.clone();
            }
            tracing::info!(rejected = %store::short(&r.digest), "the source changed since the rollback: trying its bundle");
            st.rejected = None;
        }
        if st.current.as_deref() != Some(d.as_str()) {
            st.trial = (full && st.good.as_ref().is_some_and(|g| *g != d)).then(|| Trial {
                digest: d.clone(),
                deadline: None,
            });
            tracing::info!(bundle = %store::short(&d), previous = %st.current.as_deref().map(store::short).unwrap_or_default(), "new bundle from the source");
            st.current = Some(d.clone());
        }
        self.save_store();
        Some(d)
    }

    fn save_store(&self) {
        if let Err(e) = self.store.save() {
            tracing::warn!(error = %e, "cannot record the bundle store's state ({}/{})", self.root.state_dir().display(), store::DIR);
        }
    }

    /// When the bundle on trial must be ready.
    fn trial_deadline(&self) -> Option<Instant> {
        let dl = self.store.state.trial.as_ref()?.deadline?;
        let left = (dl - timefmt::now()).max(0) as u64;
        Some(Instant::now() + Duration::from_secs(left))
    }

    /// Last-known-good: a ready proxy makes the bundle in force the good one; a bundle on
    /// trial that failed for good, or is not ready by its deadline, is rolled back.
    fn check_trial(&mut self) {
        let h = self.monitor.health().clone();
        let st = &mut self.store.state;
        match st.trial.clone() {
            Some(Trial {
                digest,
                deadline: Some(dl),
            }) => {
                if h.state == State::Ready {
                    tracing::info!(bundle = %store::short(&digest), "the new bundle's proxy is ready: it is the last-known-good bundle now");
                    st.good = Some(digest);
                    st.trial = None;
                    self.save_store();
                    self.publish();
                } else if h.state == State::Failed || timefmt::now() >= dl {
                    let reason = if h.state == State::Failed {
                        h.line()
                    } else {
                        format!(
                            "not ready within {} s ({})",
                            self.cfg.health.wait_secs,
                            h.line()
                        )
                    };
                    self.rollback(digest, reason);
                }
            }
            Some(_) => {}
            None => {
                if h.state == State::Ready && st.current.is_some() && st.good != st.current {
                    st.good = st.current.clone();
                    self.save_store();
                    self.publish();
                }
            }
        }
    }

    /// Puts the last-known-good bundle back in force and records the bad one, which is
    /// not tried again until the source changes.
    fn rollback(&mut self, bad: String, reason: String) {
        let st = &mut self.store.state;
        st.trial = None;
        let Some(good) = st.good.clone() else {
            self.save_store();
            return;
        };
        tracing::error!(
            bundle = %store::short(&bad),
            last_known_good = %store::short(&good),
            reason = %reason,
            "rolling back: the new bundle's proxy did not become ready; the last-known-good bundle is applied again and the new one is not retried until the source changes"
        );
        st.rejected = Some(Rejected {
            digest: bad,
            reason,
            at: timefmt::rfc3339(timefmt::now()),
        });
        st.current = Some(good);
        self.save_store();
        self.reconcile("rollback");
        if let Some(l) = &mut self.last_apply {
            if l.exit_code == exit::OK {
                l.result = "rolled-back".into();
            }
        }
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
        doc.warnings.extend(
            [&self.poll_error, &self.source_error]
                .into_iter()
                .flatten()
                .map(|e| match &self.store.state.current {
                    Some(c) => format!(
                        "bundle source: {e}; the bundle in force ({}) is kept",
                        store::short(c)
                    ),
                    None => format!("bundle source: {e}"),
                }),
        );
        let st = &self.store.state;
        if let (Some(r), Some(c)) = (&st.rejected, &st.current) {
            doc.warnings.push(format!(
                "the bundle {} was rolled back at {} ({}); the last-known-good bundle {} is in force; fix the bundle at the source: a changed bundle is tried again",
                store::short(&r.digest),
                r.at,
                r.reason,
                store::short(c)
            ));
        }
        doc.bundle = Some(BundleView {
            current: st.current.clone(),
            last_known_good: st.good.clone(),
            trial: st.trial.as_ref().map(|t| match t.deadline {
                Some(d) => format!("{} (ready by {})", t.digest, timefmt::rfc3339(d)),
                None => t.digest.clone(),
            }),
            rejected: st.rejected.clone(),
        });
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
                    tracing::info!(state = h.state.name(), "health: {line}")
                }
                _ => tracing::warn!(
                    state = h.state.name(),
                    reason = h.failure.map(|f| f.name()),
                    hint = h.failure.map(|f| f.hint()),
                    "health: {line}"
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
    // The daemon's one client, shared with the URL poll, the report and the package.
    let client = cfg
        .net_settings(root, None)
        .map_err(|e| e.to_string())
        .and_then(|s| crate::net::Client::shared(&s).map_err(|e| e.to_string()));
    let (m, problem) = crate::health::monitor::for_root(root, &cfg.health.ready_url, client);
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
