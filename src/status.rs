//! The status file `/run/vmagent/status.json` (world-readable, no secrets; rewritten
//! atomically on every health change) and `vmagent status`, which combines it with what
//! can be read right now: the readiness probe, systemd, token and certificate expiry,
//! the package version. It works as a normal user and says what it could not read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::health::probe::{self, Probe};
use crate::health::{Failure, Health, State};
use crate::layout;
use crate::root::Root;
use crate::timefmt::{now, rfc3339};

mod apply_result;
mod identity;

pub use apply_result::ApplyResult;
pub use identity::IdentityView;

/// Directory of the status file.
pub const DIR: &str = "/run/vmagent";

/// The status file.
pub const FILE: &str = "/run/vmagent/status.json";

/// The status file cannot be read or written.
#[derive(Debug, Error)]
pub enum StatusError {
    /// It is there but is not a status document (damaged, or not vmagent's).
    #[error(
        "{path}: damaged ({source}); it is rewritten on the next health change (or remove it)"
    )]
    Damaged {
        /// Host path.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// The document could not be rendered as JSON.
    #[error("cannot render the status document as JSON: {0}")]
    Encode(serde_json::Error),
    /// Reading or writing it failed.
    #[error("{path}: {source}")]
    Io {
        /// Host path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Health as stored and shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    /// `ready`, `starting`, `degraded`, `failed` or `unknown` (a name this version does
    /// not know reads as `unknown`).
    pub state: State,
    /// Failure kind (`token-rejected`, ...), when not ready.
    pub reason: Option<String>,
    /// The kind's one-line summary.
    pub summary: Option<String>,
    /// What to do.
    pub hint: Option<String>,
    /// Exit code of the failure kind (README, "Exit codes").
    pub exit_code: Option<u8>,
    /// Latest progress stage.
    pub stage: Option<String>,
    /// Evidence lines, verbatim.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// systemd's ActiveState/SubState.
    pub service: Option<String>,
    /// Automatic restarts seen.
    #[serde(default)]
    pub restarts: u32,
    /// When this state began, RFC 3339.
    pub since: Option<String>,
    /// The same, Unix seconds.
    pub since_unix: Option<i64>,
}

impl HealthView {
    /// The view of a health that has been in its state since `since`.
    pub fn of(h: &Health, since: i64) -> Self {
        HealthView {
            state: h.state,
            reason: h.failure.map(|f| f.name().into()),
            summary: h.failure.map(|f| f.summary().into()),
            hint: h.failure.map(|f| f.hint().into()),
            exit_code: h.failure.map(Failure::exit_code),
            stage: h.stage.map(|s| s.describe().into()),
            evidence: h.evidence.clone(),
            service: h.service.clone(),
            restarts: h.restarts,
            since: Some(rfc3339(since)),
            since_unix: Some(since),
        }
    }

    /// The exit code of `vmagent status` for this health: 0 when ready, else the failure
    /// kind's code (10 when none is known). Derived from the state and the kind's name,
    /// never from the stored `exit_code`: a forged or stale file must not turn a failed
    /// proxy into exit 0.
    pub fn exit_code(&self) -> u8 {
        match self.state {
            State::Ready => crate::exit::OK,
            _ => self
                .reason
                .as_deref()
                .and_then(Failure::from_name)
                .unwrap_or(Failure::NotReady)
                .exit_code(),
        }
    }

    /// The one-line verdict (worded by [`State::line`], like [`Health::line`]).
    pub fn line(&self) -> String {
        let failure = match (&self.reason, &self.summary) {
            (Some(r), Some(s)) => Some((r.as_str(), s.as_str())),
            _ => None,
        };
        self.state.line(failure, self.stage.as_deref())
    }
}

/// The last apply, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastApply {
    /// When it ended, RFC 3339.
    pub at: String,
    /// How it ended.
    pub result: ApplyResult,
    /// Its exit code.
    pub exit_code: u8,
    /// The bundle it applied.
    pub bundle: String,
}

/// The daemon's bundles (digests are sha256 of the canonical tar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleView {
    /// The bundle in force.
    pub current: Option<String>,
    /// The last bundle whose proxy was ready (what a rollback goes back to).
    pub last_known_good: Option<String>,
    /// A new bundle on probation, and its deadline (RFC 3339).
    pub trial: Option<String>,
    /// The bundle last rolled back (not retried until the source changes).
    pub rejected: Option<crate::lkg::Rejected>,
}

/// An expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    /// Whose (identity or certificate subject).
    pub subject: Option<String>,
    /// When, RFC 3339.
    pub expires_at: Option<String>,
    /// Seconds from now (negative: expired).
    pub expires_in_seconds: Option<i64>,
}

impl Expiry {
    fn at(subject: Option<String>, t: Option<i64>) -> Self {
        Expiry {
            subject,
            expires_at: t.map(rfc3339),
            expires_in_seconds: t.map(|t| t.saturating_sub(now())),
        }
    }
}

/// The status document (file and `vmagent status --output json`). Fields are only ever
/// added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFile {
    /// vmagent version that wrote it.
    pub vmagent: String,
    /// When it was written, RFC 3339.
    pub updated: String,
    /// The proxy's health.
    pub health: HealthView,
    /// The token (identity and expiry; never the token).
    pub token: Option<Expiry>,
    /// The mesh root certificate.
    pub root_cert: Option<Expiry>,
    /// The workload certificate the agent got from istiod.
    pub workload_cert: Option<Expiry>,
    /// Installed istio-sidecar version.
    pub package_version: Option<String>,
    /// Whether the istio service is enabled at boot.
    pub enabled: Option<String>,
    /// The last apply.
    pub last_apply: Option<LastApply>,
    /// Things that could not be read (e.g. not running as root).
    #[serde(default)]
    pub unreadable: Vec<String>,
    /// Things to act on soon (e.g. the token expires).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The daemon's bundles (absent when no daemon wrote this).
    #[serde(default)]
    pub bundle: Option<BundleView>,
    /// When the mesh identity lapses and why (absent in files from older versions).
    #[serde(default)]
    pub identity: Option<IdentityView>,
}

impl StatusFile {
    /// An empty status with `health`.
    pub fn new(health: HealthView) -> Self {
        StatusFile {
            vmagent: env!("CARGO_PKG_VERSION").into(),
            updated: rfc3339(now()),
            health,
            token: None,
            root_cert: None,
            workload_cert: None,
            package_version: None,
            enabled: None,
            last_apply: None,
            unreadable: Vec::new(),
            warnings: Vec::new(),
            bundle: None,
            identity: None,
        }
    }

    /// Host path of the status file.
    pub fn path(root: &Root) -> Option<PathBuf> {
        root.resolve(Path::new(FILE)).ok()
    }

    /// Reads the status file: `Ok(None)` when there is none.
    pub fn load(root: &Root) -> Result<Option<StatusFile>, StatusError> {
        let Some(p) = StatusFile::path(root) else {
            return Ok(None);
        };
        match std::fs::read(&p) {
            Ok(d) => serde_json::from_slice(&d)
                .map(Some)
                .map_err(|source| StatusError::Damaged { path: p, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StatusError::Io { path: p, source }),
        }
    }

    /// Masks URL secrets (userinfo, signed queries) in every free-text field: the file
    /// is world-readable, and the report URL and `vmagent status` show the same
    /// document. Errors quote the bundle or package URL they concern.
    pub fn redact(&mut self) {
        let h = &mut self.health;
        let texts = h
            .evidence
            .iter_mut()
            .chain(
                [
                    &mut h.reason,
                    &mut h.summary,
                    &mut h.hint,
                    &mut h.stage,
                    &mut h.service,
                ]
                .into_iter()
                .flatten(),
            )
            .chain(self.unreadable.iter_mut())
            .chain(self.warnings.iter_mut())
            .chain(self.last_apply.iter_mut().flat_map(|a| {
                let LastApply { result, bundle, .. } = a;
                [result.text_mut(), Some(bundle)].into_iter().flatten()
            }))
            .chain(
                self.bundle
                    .iter_mut()
                    .filter_map(|b| b.rejected.as_mut())
                    .map(|r| &mut r.reason),
            );
        for t in texts {
            *t = crate::redact::text(t);
        }
    }

    /// Writes the status file atomically (0644: health is no secret; URL secrets are
    /// masked first, see [`StatusFile::redact`]).
    pub fn store(&mut self, root: &Root) -> Result<(), StatusError> {
        self.updated = rfc3339(now());
        self.redact();
        let dir = crate::apply::ensure_dir(root, Path::new(DIR), 0o755)
            .map_err(|(path, source)| StatusError::Io { path, source })?;
        let p = dir.join("status.json");
        crate::fsx::write_json(&p, self, 0o644)
            .map_err(|source| StatusError::Io { path: p, source })
    }

    /// Fills in the facts read from the root (token, certificates, package).
    pub fn read_facts(&mut self, root: &Root) {
        let file = |sys: &str| -> Result<Option<Vec<u8>>, String> {
            let p = root.resolve(Path::new(sys)).map_err(|e| e.to_string())?;
            match std::fs::read(&p) {
                Ok(d) => Ok(Some(d)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    Err(format!("{sys}: permission denied (run as root to see it)"))
                }
                Err(e) => Err(format!("{sys}: {e}")),
            }
        };
        let path_of = |m| layout::file_for(m).map(|f| f.path).unwrap_or("");
        let t = now();
        match file(path_of(crate::bundle::Member::Token)) {
            Ok(Some(d)) => {
                if let Ok((tok, _)) = crate::bundle::token::parse(&d, t, true) {
                    self.token = Some(Expiry::at(tok.sub, tok.exp));
                }
            }
            Ok(None) => self.unreadable.push(format!(
                "{}: missing (apply puts it back at boot through {}; without that rule, apply the bundle again or run `vmagent daemon`)",
                path_of(crate::bundle::Member::Token),
                layout::TMPFILES_RULE.path
            )),
            Err(e) => self.unreadable.push(e),
        }
        for (member, slot) in [
            (crate::bundle::Member::RootCert, &mut self.root_cert),
            (crate::bundle::Member::CertChain, &mut self.workload_cert),
        ] {
            match file(path_of(member)) {
                Ok(Some(d)) => {
                    if let Ok(certs) = crate::bundle::pem::certificates(&d, member.name()) {
                        let first = certs.iter().min_by_key(|c| c.not_after);
                        *slot =
                            first.map(|c| Expiry::at(Some(c.subject.clone()), Some(c.not_after)));
                    }
                }
                Ok(None) => {}
                Err(e) => self.unreadable.push(e),
            }
        }
        // A configured `[token]` provider renews the token before it lapses (the daemon
        // refreshes it at `refresh_at` of its lifetime), so nothing lapses by time alone.
        let kept = crate::config::Config::load(root)
            .is_ok_and(|c| c.token.provider != crate::config::token::ProviderKind::Bundle);
        self.identity = IdentityView::read(root, t, kept).map(|(identity, _)| {
            self.warnings.extend(identity.route_warning());
            identity
        });
        if let Ok(fmt) = crate::package::os::format(root) {
            if let Ok(v) = crate::package::install::installed(root, fmt) {
                self.package_version = v;
            }
        }
    }
}

/// `vmagent status`: the stored status refreshed with what can be seen now.
pub fn current(root: &Root, ready_url: &str) -> StatusFile {
    let mut unreadable = Vec::new();
    let stored = StatusFile::load(root).unwrap_or_else(|e| {
        unreadable.push(e.to_string());
        None
    });
    let (sc, mode) = crate::service::Systemctl::for_root(root);
    let unit = match mode {
        crate::service::Mode::Live => sc.show().ok(),
        crate::service::Mode::Offline(_) => None,
    };
    let enabled = sc.enablement().ok().filter(|s| !s.is_empty());
    let probe = match mode {
        crate::service::Mode::Live => Some(
            crate::net::Client::shared(&crate::net::Settings::default()).map_or_else(
                |e| Probe::Down(e.to_string()),
                |c| probe::probe(&c, ready_url),
            ),
        ),
        crate::service::Mode::Offline(_) => None,
    };
    let mut health = stored
        .as_ref()
        .map(|s| s.health.clone())
        .unwrap_or_default();
    let t = now();
    let since_if = |h: &HealthView, state: State| {
        if h.state == state {
            h.since_unix.unwrap_or(t)
        } else {
            t
        }
    };
    match (&probe, &unit) {
        (Some(Probe::Ready), u) => {
            let since = since_if(&health, State::Ready);
            let mut h = Health::unknown();
            h.state = State::Ready;
            h.service = u.as_ref().map(|u| u.describe());
            health = HealthView::of(&h, since);
        }
        (_, Some(u)) if !u.is_up() => {
            let since = since_if(&health, State::Failed);
            let mut h = Health::unknown();
            h.state = State::Failed;
            h.failure = Some(if u.load == "not-found" {
                Failure::NotInstalled
            } else {
                Failure::ServiceFailed
            });
            h.service = Some(u.describe());
            h.evidence = vec![format!(
                "systemd: {} is {}",
                crate::service::UNIT,
                u.describe()
            )];
            health = HealthView::of(&h, since);
        }
        (Some(p), u) => {
            // Up but not ready: the stored reason (from the log) stands, unless it
            // claimed ready.
            if matches!(health.state, State::Ready | State::Unknown) {
                let mut h = Health::unknown();
                h.state = State::Degraded;
                h.failure = Some(Failure::NotReady);
                h.evidence = vec![p.describe(ready_url)];
                h.service = u.as_ref().map(|u| u.describe());
                health = HealthView::of(&h, t);
            } else if let Some(u) = u {
                health.service = Some(u.describe());
            }
        }
        (None, _) => {}
    }
    // The stored number is not trusted: it follows from the kind, as when written.
    health.exit_code = health
        .reason
        .as_deref()
        .and_then(Failure::from_name)
        .map(Failure::exit_code);
    let mut s = StatusFile::new(health);
    s.unreadable = unreadable;
    s.enabled = enabled;
    s.last_apply = stored.and_then(|s| s.last_apply);
    s.read_facts(root);
    s.redact();
    s
}

#[cfg(test)]
mod tests;
