//! `vmagent daemon`: keeps the VM in the mesh. One `select!` loop on a tokio
//! current-thread runtime over: signals (TERM/INT: exit 0 at once, even mid-apply; HUP:
//! reload the config), the bundle source (inotify on a local path; an https URL polled by
//! `remote`), the proxy's logs (the health follower), and timers (drift check,
//! readiness probe, URL poll, trial deadline, systemd watchdog). Blocking work runs on
//! the blocking pool, network work is awaited; both beside the signals and the watchdog.
//!
//! Every reconcile stages the source's bundle in the [`store`] (validated, named by its
//! sha256) and runs the same `run::apply` a user runs on it (idempotent: it writes only
//! what drifted), without blocking on readiness: health is followed continuously here. At
//! start it first recovers an interrupted apply and restores what a reboot wiped (the
//! token lives on a tmpfs) from the bundle in force, and READY=1 is sent after that, so
//! istio.service (ordered after vmagent.service by a drop-in) starts with its token in
//! place.
//!
//! Last-known-good ([`crate::lkg`], a pure state machine whose effects `reconcile` carries
//! out): a bundle whose proxy became ready is the good one; a new bundle is on
//! trial until its proxy is ready, and is rolled back (the good one applied again, the
//! bad one not retried until the source changes) when it fails for good or is not ready
//! within `health.wait_secs`.
//!
//! The parts: `event_loop` (signals, descriptors, timers), `source` (where bundles
//! come from), `reconcile` (staging, `run::apply`, last-known-good effects), `publish`
//! (status file, sd_notify, log, report URL, metrics), [`report_url`] (the report sender
//! task), `metrics_out` and `metrics_http` (`[metrics]`: the textfile and `/metrics`),
//! `resolv_watch` (with DNS capture on, istio restarted when resolv.conf's nameservers
//! change).

mod event_loop;
mod metrics_http;
mod metrics_out;
mod publish;
mod reconcile;
mod remote;
pub mod report_url;
mod resolv_watch;
mod source;
pub mod store;
mod token_timer;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::apply::lock;
use crate::config::Config;
use crate::exit;
use crate::health::monitor::Monitor;
use crate::root::Root;
use crate::status::{HealthView, LastApply};
use source::Source;
use store::Store;

/// What the daemon was told to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Target root.
    pub root: PathBuf,
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub fn run(opts: &Options) -> u8 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return refused(exit::FAILED, &format!("cannot start the runtime: {e}")),
    };
    let code = rt.block_on(async {
        match Daemon::start(opts) {
            Ok(mut d) => d.main_loop().await,
            Err((code, msg)) => refused(code, &msg),
        }
    });
    // An apply abandoned by a stop is not waited for: its journal rolls it back at the
    // next start, as after a crash.
    rt.shutdown_background();
    code
}

fn refused(code: u8, msg: &str) -> u8 {
    if crate::logging::stderr_is_journal() {
        tracing::error!("{msg}");
    } else {
        crate::text::err_line(&format!("error: {msg}"));
    }
    code
}

/// SIGTERM or SIGINT arrived: the daemon stops where it is.
#[derive(Debug)]
struct Stopped;

/// The file a running daemon holds locked (one daemon per root).
pub const LOCK: &str = "daemon.lock";

struct Daemon {
    root: Root,
    cfg: Config,
    _lock: lock::Lock,
    /// Signals and the watchdog, served even mid-work.
    intr: event_loop::Interrupts,
    source: Source,
    store: Store,
    /// Why the source could not be used last time (bundle invalid, unreachable URL).
    source_error: Option<String>,
    /// Why the last poll of a URL source failed (cleared by the next good poll).
    poll_error: Option<String>,
    monitor: Monitor,
    next_drift: Instant,
    next_probe: Instant,
    pending: Option<(Instant, &'static str)>,
    /// A reconcile the last-known-good machine asked for (a rollback), run next.
    queued: Option<&'static str>,
    /// Mark the queued reconcile's result as a rollback.
    mark_rolled_back: bool,
    last_apply: Option<LastApply>,
    reporter: Option<report_url::Reporter>,
    token_note: Option<String>,
    /// The identity warning in force (see `publish::identity_note`).
    identity_note: Option<String>,
    /// The most urgent identity warning logged since the lapse time last moved.
    identity_urgency: crate::identity::timeline::Urgency,
    status_line: String,
    /// What the report URL was last sent (health and warnings).
    reported: Option<(HealthView, Vec<String>)>,
    /// The `[token]` provider's refresh timer.
    token: token_timer::TokenTimer,
    /// resolv.conf, watched for DNS capture.
    resolv: resolv_watch::ResolvWatch,
    /// Counters, the textfile and the `/metrics` server (`[metrics]`).
    metrics: metrics_out::Metrics,
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
        let intr = event_loop::Interrupts::new()
            .map_err(|e| (exit::FAILED, format!("cannot set up signal handling: {e}")))?;
        let monitor = new_monitor(&root, &cfg);
        let store = Store::open(&root).map_err(|e| (exit::FAILED, e))?;
        let now = Instant::now();
        let mut d = Daemon {
            source: Source::None,
            store,
            source_error: None,
            poll_error: None,
            reporter: report_url::Reporter::for_config(&cfg, &root),
            root,
            cfg,
            _lock: lock,
            intr,
            monitor,
            next_drift: now,
            next_probe: now,
            pending: None,
            queued: None,
            mark_rolled_back: false,
            last_apply: None,
            token_note: None,
            identity_note: None,
            identity_urgency: crate::identity::timeline::Urgency::Quiet,
            status_line: String::new(),
            reported: None,
            token: Default::default(),
            resolv: Default::default(),
            metrics: Default::default(),
        };
        d.metrics.configure(&d.root, None, &d.cfg.metrics);
        d.watch_source();
        d.resolv_setup();
        Ok(d)
    }

    fn reload(&mut self) {
        match Config::load(&self.root) {
            Ok(mut c) => {
                if c.paths != self.cfg.paths {
                    tracing::warn!("[paths] changed: it takes effect when vmagent restarts (`systemctl restart vmagent`)");
                    c.paths = self.cfg.paths.clone();
                }
                self.reporter = report_url::Reporter::for_config(&c, &self.root);
                self.monitor = new_monitor(&self.root, &c);
                self.metrics
                    .configure(&self.root, Some(&self.cfg.metrics), &c.metrics);
                self.cfg = c;
                self.token_reset();
                tracing::info!("configuration reloaded (SIGHUP)");
                // Path, URL, CA or headers may have changed: the source is made anew (a
                // URL's validators are on disk, so nothing is downloaded again).
                self.watch_source();
                self.resolv_setup();
                self.pending = Some((Instant::now(), "configuration reloaded"));
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the old one")
            }
        }
    }
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
