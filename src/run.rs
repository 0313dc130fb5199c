//! One `apply` or `check` run from start to finish: read the bundle, lock, recover,
//! plan, apply. The CLI and (later) the daemon call these.

use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::apply::{self, lock, ApplyError};
use crate::bundle::{Bundle, BundleError, Member};
use crate::config::{Config, ConfigError};
use crate::health::monitor::Event;
use crate::health::{Health, State};
use crate::identity::provider::ProviderError;
use crate::package::{self, PackageError};
use crate::plan::{self, Plan, PlanError, PlanOptions};
use crate::root::{Root, RootError};
use crate::service::{self, ServiceError};

mod check;
mod watch;
use check::passed;
pub use check::{check, check_online, check_trust};
use watch::watch;

/// Everything that can stop a run, each mapped to an exit code.
#[derive(Debug, Error)]
pub enum RunError {
    /// The bundle is invalid (exit 2).
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The target root is unusable (exit 1).
    #[error(transparent)]
    Root(#[from] RootError),
    /// No plan could be made (exit 4: a prerequisite is missing or in the way).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The apply failed (exit 1; rolled back).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Another apply held the lock too long (exit 3).
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// A step this version cannot do, or something on disk in the way that only an
    /// admin can resolve (exit 4).
    #[error("{0}")]
    Unsupported(String),
    /// A file could not be read or changed (exit 1): an I/O failure, not a missing
    /// prerequisite.
    #[error("{path}: {source}; fix the cause (permissions, an immutable attribute, a read-only or full file system), then run the command again")]
    Io {
        /// The path (system view) it concerns.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The record of what the destinations held before vmagent (for `vmagent
    /// uninstall`) could not be written; no file of the bundle was written (exit 1).
    #[error("cannot record the original files for `vmagent uninstall` in {dir}: {source}; no file of the bundle was written. To fix: make {dir} writable (free space, permissions), then apply again")]
    Record {
        /// The record's directory.
        dir: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is invalid (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The package step failed (exit 2, 4, 5 or 6; see [`PackageError::exit_code`]).
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The service step failed (exit 7).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The `[token]` provider gave no usable token, or its files are unsafe (exit 2, 4
    /// or 8; see [`ProviderError::exit_code`]).
    #[error(transparent)]
    Token(#[from] ProviderError),
    /// The bundle's signature was refused, or could not be checked (`[trust]`; exit 2
    /// or 4, see [`crate::trust::TrustError::exit_code`]).
    #[error(transparent)]
    Trust(Box<crate::trust::TrustError>),
    /// A failure after the package was installed (the package stays).
    #[error(
        "{cause} (the istio-sidecar package was installed by `{command}` and stays installed: apply again once the cause is fixed, or remove it with `vmagent uninstall`)"
    )]
    AfterPackage {
        /// The failure.
        cause: Box<RunError>,
        /// The installer command that ran.
        command: String,
    },
    /// The online preflight failed (exit 30-37, the first failed check's class);
    /// nothing was written. `lines`: one per failed check, cause and fix.
    #[error("the online preflight failed ({} of {} checks); nothing was changed: fix the causes below and run again (or skip: --no-preflight, [preflight] skip)", lines.len(), report.checks.len())]
    Preflight {
        /// Every check's result.
        report: Box<crate::preflight::Report>,
        /// The failed checks, one line each.
        lines: Vec<String>,
    },
}

impl From<crate::trust::TrustError> for RunError {
    /// Boxed: its messages carry several names, and every `Result<_, RunError>` would
    /// otherwise grow by them.
    fn from(e: crate::trust::TrustError) -> Self {
        RunError::Trust(Box::new(e))
    }
}

/// Process exit codes (moved to [`crate::exit`]; re-exported for the CLI).
pub use crate::exit;

impl RunError {
    /// Lines worth showing under the one-line error (an installer's output tail).
    pub fn detail_lines(&self) -> &[String] {
        match self {
            RunError::Package(PackageError::Install { tail, .. }) => tail,
            RunError::AfterPackage { cause, .. } => cause.detail_lines(),
            RunError::Preflight { lines, .. } => lines,
            _ => &[],
        }
    }

    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Bundle(_) => exit::INVALID,
            RunError::Root(_)
            | RunError::Apply(_)
            | RunError::Io { .. }
            | RunError::Record { .. } => exit::FAILED,
            RunError::Lock(
                lock::LockError::Timeout { .. } | lock::LockError::DaemonRunning { .. },
            ) => exit::BUSY,
            RunError::Lock(_) => exit::FAILED,
            RunError::Plan(PlanError::Io { .. }) => exit::FAILED,
            RunError::Plan(_) | RunError::Unsupported(_) => exit::PREREQUISITE,
            RunError::Config(_) => exit::INVALID,
            RunError::Package(e) => e.exit_code(),
            RunError::Token(e) => e.exit_code(),
            RunError::Trust(e) => e.exit_code(),
            RunError::Service(
                ServiceError::Spawn { .. } | ServiceError::NoUnit | ServiceError::Masked,
            ) => exit::PREREQUISITE,
            RunError::Service(_) => exit::SERVICE,
            RunError::AfterPackage { cause, .. } => cause.exit_code(),
            RunError::Preflight { report, .. } => report.exit_code(),
        }
    }
}

/// Options of `vmagent apply`.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Bundle path (tar, tar.gz or directory).
    pub bundle: PathBuf,
    /// Target root.
    pub root: PathBuf,
    /// Plan only.
    pub dry_run: bool,
    /// Leave ownership unmanaged.
    pub skip_owner: bool,
    /// Accept an expired token.
    pub allow_expired_token: bool,
    /// How long to wait for another apply.
    pub lock_timeout: Duration,
    /// The package step (`None`: --no-package).
    pub package: Option<package::Request>,
    /// Enable/start the istio service and watch its health (false: --no-start).
    pub start: bool,
    /// How long to wait for ready (`None`: the config's `health.wait_secs`; zero: do
    /// not wait).
    pub wait: Option<Duration>,
    /// The configuration to use (`None`: read it from the root). The daemon passes the
    /// one it loaded, so an edit takes effect on SIGHUP, not half-way.
    pub config: Option<Config>,
    /// Write the status file (the CLI); the daemon writes its own.
    pub status_file: bool,
    /// The SSH lock-out guard (false: --no-lockout-guard); also needs the config's
    /// `[overrides] lockout_guard` (see [`crate::overrides`]).
    pub lockout_guard: bool,
    /// Run the online preflight first (false: --no-preflight, and the daemon), when
    /// `[preflight]` enables it for this root.
    pub preflight: bool,
}

/// How the wait for ready ended.
#[derive(Debug, Clone)]
pub struct HealthOutcome {
    /// The health when the wait ended (ready or failed; starting when not waited for).
    pub health: Health,
    /// How long it waited.
    pub waited: Duration,
    /// The limit.
    pub limit: Duration,
}

impl HealthOutcome {
    /// The exit code: 0 when ready or not waited for, else the failure kind's.
    pub fn exit_code(&self) -> u8 {
        match (self.health.state, self.health.failure) {
            (State::Ready | State::Starting, _) => exit::OK,
            (_, Some(f)) => f.exit_code(),
            (_, None) => crate::health::Failure::NotReady.exit_code(),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyStatus {
    /// Changes were made.
    Applied,
    /// Nothing differed; nothing was written.
    UpToDate,
    /// Dry run: the plan was computed, nothing written.
    Planned,
}

/// The outcome of a successful run.
#[derive(Debug)]
pub struct Outcome {
    /// What happened.
    pub status: ApplyStatus,
    /// The plan (empty when up to date).
    pub plan: Plan,
    /// The package step's decision (`None`: --no-package).
    pub package: Option<package::Decision>,
    /// The installer command that ran, if the package was installed.
    pub installed_with: Option<String>,
    /// The bundle that was applied.
    pub bundle: Bundle,
    /// Warnings from bundle and plan.
    pub warnings: Vec<String>,
    /// Paths rolled back from an interrupted earlier apply.
    pub recovered: Option<Vec<PathBuf>>,
    /// The service step (`None`: --no-start or dry run).
    pub service: Option<service::Outcome>,
    /// The wait for ready (`None`: not started here, or offline).
    pub health: Option<HealthOutcome>,
    /// Who signed the bundle (`[trust]`), when it was signed and checked.
    pub signed_by: Option<crate::trust::Signer>,
    /// The online preflight's results (`None`: not run).
    pub preflight: Option<crate::preflight::Report>,
}

impl Outcome {
    /// The process exit code of this (successful) apply: the health's.
    pub fn exit_code(&self) -> u8 {
        self.health
            .as_ref()
            .map_or(exit::OK, HealthOutcome::exit_code)
    }
}

/// The logrotate rule's values, when `[logs] rotate` is on.
fn rotation(cfg: &Config) -> Option<plan::Rotation> {
    cfg.logs.rotate.then_some(plan::Rotation {
        size_mib: cfg.logs.rotate_size_mib,
        count: cfg.logs.rotate_count,
    })
}

/// `vmagent apply`: validate, decide the package step, lock, recover, install the
/// package, plan the files, apply them. `waiting` is told when the lock is busy.
///
/// Order: the package goes first because its postinst creates the istio-proxy user and
/// the /etc/istio link the files rely on. If it fails, no bundle file has been written;
/// if the file transaction fails after it, the files are rolled back and the package
/// stays installed (the error says so).
///
/// Then the service: enabled, started or restarted as needed (see [`service::step`]),
/// and, live, watched until ready, failed or `wait` runs out; `on_health` sees progress
/// as it happens. The lock is released before the wait.
pub fn apply(
    opts: &ApplyOptions,
    waiting: impl FnOnce(),
    on_health: &mut dyn FnMut(Event<'_>),
) -> Result<Outcome, RunError> {
    // Root and config first, their errors after the bundle's (as before): with a token
    // provider the bundle's own token may have expired, it is replaced anyway.
    let located = Root::new(&opts.root)
        .map_err(RunError::from)
        .and_then(|root| {
            let cfg = match &opts.config {
                Some(c) => c.clone(),
                None => Config::load(&root)?,
            };
            Ok((cfg.locate(root), cfg))
        });
    let replaced =
        matches!(&located, Ok((_, c)) if c.token.provider != crate::config::ProviderKind::Bundle);
    // The signature first: a bundle that is not trusted is not even parsed.
    let signed_by = match &located {
        Ok((root, cfg)) => match crate::trust::verify(root, &cfg.trust, &opts.bundle)? {
            crate::trust::Verdict::Signed(s) => Some(s),
            _ => None,
        },
        Err(_) => None,
    };
    let mut bundle = check(&opts.bundle, opts.allow_expired_token || replaced)?;
    let (root, cfg) = located?;
    // First of all, before the token provider, the package, the lock or any write.
    let preflight = match opts.preflight && cfg.preflight.runs(root.is_live()) {
        true => Some(passed(crate::preflight::online(&bundle, &root, &cfg))?),
        false => None,
    };
    let fresh = provider_token(&root, &cfg, &mut bundle)?;
    // Local overrides and the lock-out guard join the desired state before any plan.
    let local = crate::overrides::prepare(&root, &cfg.overrides, opts.lockout_guard, &mut bundle)?;
    let step = match &opts.package {
        Some(req) => Some(package::Step::new(&root, &bundle, req, &cfg)?),
        None => None,
    };
    let decision = step.as_ref().map(|s| s.decide()).transpose()?;
    let installs = decision.as_ref().is_some_and(|d| !d.is_noop());
    // An unlocked first plan catches every refusal before anything (even the lock
    // file) is written; the executed plan is made again under the lock.
    let mut first = plan::plan(
        &root,
        &bundle,
        PlanOptions {
            skip_owner: opts.skip_owner,
            defer_owner: installs,
            rotate: rotation(&cfg),
        },
    )?;
    first.notes.extend(local.notes.iter().cloned());
    let mut warnings = bundle.warnings.clone();
    warnings.extend(local.warnings.iter().cloned());
    if let Some(d) = &decision {
        warnings.extend(d.warnings().iter().cloned());
    }
    if opts.dry_run {
        warnings.extend(first.warnings.iter().cloned());
        match apply::txn_dir(&root)?.pending() {
            Ok(Some(_)) => warnings.push(
                "an interrupted apply left a journal; the next apply rolls it back first".into(),
            ),
            Ok(None) => {}
            Err(e) => warnings.push(format!("the next apply will stop here: {e}")),
        }
        return Ok(Outcome {
            status: ApplyStatus::Planned,
            plan: first,
            package: decision,
            installed_with: None,
            bundle,
            warnings,
            recovered: None,
            service: None,
            health: None,
            signed_by,
            preflight,
        });
    }
    if opts.start {
        service::preflight(&root)?;
    }
    // The logs are followed from where they are now: lines of earlier runs never count.
    let monitor = match opts.start {
        false => None,
        true => {
            // The process's one client (the package download shares it).
            let extra_ca = opts.package.as_ref().and_then(|p| p.ca_file.as_deref());
            let client = crate::net::Client::shared(&cfg.net_settings(&root, extra_ca)?)
                .map_err(|e| RunError::Package(PackageError::Config(e.to_string())))?;
            let client = Ok(client);
            let (m, problem) =
                crate::health::monitor::for_root(&root, &cfg.health.ready_url, client);
            warnings.extend(problem);
            Some(m)
        }
    };
    let mut monitor = monitor;
    // Which of vmagent's own directories it makes (purge removes only those whole).
    let missing = crate::pristine::missing_dirs(&root, &[root.state_dir(), root.cache_dir()]);
    let state_dir = apply::state_dir(&root)?;
    let lock = lock::acquire(&state_dir.join("lock"), opts.lock_timeout, waiting)?;
    let recovered = apply::recover(&root)?;
    note_dirs(&root, &missing)?;
    if let Some(f) = &fresh {
        // Under the lock (fixed temp names). Not fatal: the next run asks again.
        if let Err(e) = crate::identity::provider::remember(&root, f) {
            tracing::warn!(error = %e, "cannot cache the provider's token");
        }
    }
    // What the destinations held before vmagent touched anything, for uninstall: taken
    // before the package step, whose postinst may create some of them (an empty mesh).
    if installs {
        capture_originals(&root, &first, true)?;
    }
    let installed_with = match (&step, &decision) {
        (Some(s), Some(d)) => s.execute(d)?,
        _ => None,
    };
    note_dirs(&root, &missing).map_err(|e| after_package(e, &installed_with))?;
    let mut plan = plan::plan(
        &root,
        &bundle,
        PlanOptions {
            skip_owner: opts.skip_owner,
            defer_owner: false,
            rotate: rotation(&cfg),
        },
    )
    .map_err(|e| after_package(e.into(), &installed_with))?;
    plan.notes.extend(local.notes);
    warnings.extend(plan.warnings.iter().cloned());
    let status = if plan.is_empty() && installed_with.is_none() {
        ApplyStatus::UpToDate
    } else {
        ApplyStatus::Applied
    };
    if let Some(cmd) = &installed_with {
        tracing::info!(command = %cmd, "istio-sidecar package installed");
    }
    if !plan.is_empty() {
        // Retaken only if no package step ran since the first capture.
        capture_originals(&root, &plan, !installs)
            .map_err(|e| after_package(e, &installed_with))?;
        apply::execute(&root, &plan).map_err(|e| after_package(e.into(), &installed_with))?;
        // Only now are the written paths vmagent's (a rolled-back write never was). The
        // apply stands if this fails: uninstall then leaves these files (never loses one).
        if let Err(e) = crate::pristine::commit(&root, &plan) {
            tracing::warn!(error = %e, "cannot record the committed writes in {}/{}; `vmagent uninstall` will leave this apply's files in place", root.state_dir().display(), crate::pristine::DIR);
        }
        tracing::info!(actions = plan.steps.len(), root = %root.base().display(), "bundle applied");
    }
    let dns_changed = plan.steps.iter().any(|s| {
        matches!(
            &s.action,
            plan::Action::WriteFile {
                what: plan::What::Member(Member::KubeDns),
                ..
            }
        )
    });
    let service = match &mut monitor {
        Some(m) => Some(
            service::step(&root, dns_changed, &mut || m.mark())
                .map_err(|e| after_package(e.into(), &installed_with))?,
        ),
        None => None,
    };
    if let Some(s) = &service {
        tracing::info!(
            actions = %s.actions.join(","),
            restart_reason = s.restart_reason.as_deref().unwrap_or(""),
            offline = s.offline.as_deref().unwrap_or(""),
            "service step done"
        );
    }
    drop(lock);
    let mut o = Outcome {
        status,
        plan,
        package: decision,
        installed_with,
        bundle,
        warnings,
        recovered,
        service,
        health: None,
        signed_by,
        preflight,
    };
    if let (Some(s), Some(m)) = (&o.service, monitor) {
        if s.running && s.offline.is_none() {
            let limit = opts
                .wait
                .unwrap_or(Duration::from_secs(cfg.health.wait_secs));
            o.health = Some(watch(
                &root,
                &o,
                &opts.bundle,
                m,
                limit,
                opts.status_file,
                on_health,
            ));
        }
    }
    Ok(o)
}

/// With a `[token]` provider, its token in place of the bundle's (see
/// [`crate::identity::provider::for_apply`]).
fn provider_token(
    root: &Root,
    cfg: &Config,
    bundle: &mut Bundle,
) -> Result<Option<crate::identity::provider::Fresh>, RunError> {
    use crate::identity::provider::{for_apply, Provider};
    let Some(p) = Provider::configured(cfg, root)? else {
        return Ok(None);
    };
    let fresh = for_apply(&p, root, cfg, bundle)?;
    fresh.substitute(bundle);
    Ok(Some(fresh))
}

/// Records (once per path) what the destinations of `plan` hold now, so `vmagent
/// uninstall` can put it back; `refresh` retakes entries never committed.
fn capture_originals(root: &Root, plan: &Plan, refresh: bool) -> Result<(), RunError> {
    crate::pristine::capture(root, plan, refresh).map_err(|e| pristine_err(root, e))
}

/// Records which of `missing` vmagent has made by now.
fn note_dirs(root: &Root, missing: &[String]) -> Result<(), RunError> {
    crate::pristine::note_dirs(root, missing).map_err(|e| pristine_err(root, e))
}

fn pristine_err(root: &Root, source: std::io::Error) -> RunError {
    // Not the undo journal, and (after the package step) not "nothing was changed".
    RunError::Record {
        dir: format!("{}/{}", root.state_dir().display(), crate::pristine::DIR),
        source,
    }
}

/// A failure after the package was installed says so: the package is not rolled back.
fn after_package(e: RunError, installed_with: &Option<String>) -> RunError {
    match installed_with {
        Some(cmd) => RunError::AfterPackage {
            cause: Box::new(e),
            command: cmd.clone(),
        },
        None => e,
    }
}

/// `vmagent recover`: roll back an interrupted apply under the lock.
pub fn recover(
    root: &Path,
    lock_timeout: Duration,
    waiting: impl FnOnce(),
) -> Result<Option<Vec<PathBuf>>, RunError> {
    let (root, _) = Config::locate_lenient(Root::new(root)?);
    let Some(dir) = root.own_dir(root.state_dir())? else {
        return Ok(None);
    };
    let _lock = lock::acquire(&dir.join("lock"), lock_timeout, waiting)?;
    Ok(apply::recover(&root)?)
}

/// `vmagent recover --discard-journal`: under the lock, move a pending journal and its
/// backups aside without rolling anything back (after the admin inspected them).
/// Returns the directory they went to, or `None` when there was no journal.
pub fn discard_journal(
    root: &Path,
    lock_timeout: Duration,
    waiting: impl FnOnce(),
) -> Result<Option<PathBuf>, RunError> {
    let (root, _) = Config::locate_lenient(Root::new(root)?);
    let Some(dir) = root.own_dir(root.state_dir())? else {
        return Ok(None);
    };
    let _lock = lock::acquire(&dir.join("lock"), lock_timeout, waiting)?;
    Ok(apply::discard(&root)?)
}

#[cfg(test)]
mod tests;
