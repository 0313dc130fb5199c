//! Token providers: the istio-token from somewhere fresher than the bundle. `file`
//! (another agent keeps a file fresh), `exec` (a command prints a JWT) or `kubernetes`
//! (a TokenRequest to the API server, as istioctl makes the bundle's token). Each token
//! is checked ([`validate`]) before it is installed at the layout's token path, and the
//! last one is cached root-only in the state directory, so a reconcile asks the provider
//! only when the token reaches its refresh point ([`schedule`]).
//!
//! Secrets: neither a token nor a credential is ever printed, logged or put in an error;
//! URLs are shown through [`crate::redact`].

pub mod exec;
pub mod file;
pub mod install;
pub mod kubernetes;
pub mod schedule;
pub mod secure;
pub mod validate;

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::apply::lock::LockError;
use crate::config::{Config, ConfigError, ProviderKind};
use crate::exit;
use crate::root::{Root, RootError};

pub use install::{for_apply, next_due, refresh, refresh_with, remember, Fresh, Refreshed};
pub use validate::{Identity, Rejected};

/// Largest token (or credential) read from anywhere: a service-account JWT is a few KiB.
pub const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// A configured provider, its paths resolved inside the root.
#[derive(Debug, Clone)]
pub enum Provider {
    /// `provider = "file"`.
    File(file::FileProvider),
    /// `provider = "exec"`.
    Exec(exec::ExecProvider),
    /// `provider = "kubernetes"`.
    Kubernetes(kubernetes::KubeProvider),
}

/// Why a provider gave no token.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The token file could not be read.
    #[error("token file {path}: {source}; the agent that keeps it fresh must write it there")]
    File {
        /// System path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The command did not start.
    #[error("token command {program} could not be run: {source}; check token.command")]
    Spawn {
        /// The program.
        program: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The command ran out of time.
    #[error("token command {program} did not finish within {secs} s (token.timeout_secs) and was stopped")]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        secs: u64,
    },
    /// The command failed.
    #[error("token command {program} exited with status {status}{}", tail_text(.tail))]
    Exit {
        /// The program.
        program: String,
        /// Its exit status as text.
        status: String,
        /// The last lines of its stderr (JWT-like words masked).
        tail: Vec<String>,
    },
    /// The command printed too much.
    #[error(
        "token command {program} printed more than {MAX_TOKEN_BYTES} bytes; it must print one JWT"
    )]
    TooLong {
        /// The program.
        program: String,
    },
    /// The credential could not be read.
    #[error("credential file {path}: {source}; put a bearer token allowed to create serviceaccounts/token there (token.credential_file)")]
    Credential {
        /// System path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TokenRequest failed.
    #[error("TokenRequest failed: {source}{hint}")]
    Http {
        /// The HTTP failure (URL redacted).
        source: crate::net::Error,
        /// What to do, for the status answered.
        hint: String,
    },
    /// The answer was not a TokenRequest with a token.
    #[error("TokenRequest to {url}: the answer is not a TokenRequest with status.token ({what})")]
    Malformed {
        /// The URL, redacted.
        url: String,
        /// What is missing.
        what: &'static str,
    },
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {}", tail.join(" | "))
    }
}

impl FetchError {
    /// What the server asked for with a 429 or 503 (for the backoff).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Http { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}

/// Why a refresh failed, each kind with its exit code.
#[derive(Debug, Error)]
pub enum ProviderError {
    /// The `[token]` section is incomplete (exit 2).
    #[error("config [token]: {0}")]
    Config(String),
    /// A config file could not be read (exit 2).
    #[error(transparent)]
    ConfigFile(#[from] ConfigError),
    /// A file that decides the token is open to other users (exit 4).
    #[error("{path}: {problem}; fix: {fix}")]
    Insecure {
        /// Host path.
        path: String,
        /// What is wrong.
        problem: String,
        /// The command that fixes it.
        fix: String,
    },
    /// The machine is not onboarded yet (exit 4).
    #[error("{0}")]
    NotReady(String),
    /// The provider gave no token (exit 9).
    #[error("{provider} token provider: {source}")]
    Fetch {
        /// Which provider.
        provider: &'static str,
        /// Why.
        source: FetchError,
    },
    /// The provider's token was refused (exit 9).
    #[error("{provider} token provider: {source}")]
    Rejected {
        /// Which provider.
        provider: &'static str,
        /// Why.
        source: Rejected,
    },
    /// Installing or caching failed (exit 1).
    #[error("cannot write {path}: {source}; fix the cause (permissions, a full or read-only file system) and run `vmagent token refresh` again")]
    Install {
        /// System path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The root is unusable (exit 1).
    #[error(transparent)]
    Root(#[from] RootError),
    /// Another vmagent holds the lock (exit 3).
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl ProviderError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            ProviderError::Config(_) | ProviderError::ConfigFile(_) => exit::INVALID,
            ProviderError::Insecure { .. } | ProviderError::NotReady(_) => exit::PREREQUISITE,
            ProviderError::Fetch { .. } | ProviderError::Rejected { .. } => exit::TOKEN,
            ProviderError::Install { .. } | ProviderError::Root(_) => exit::FAILED,
            ProviderError::Lock(LockError::Timeout { .. } | LockError::DaemonRunning { .. }) => {
                exit::BUSY
            }
            ProviderError::Lock(_) => exit::FAILED,
        }
    }

    /// Whether trying again later may help (for the daemon's backoff).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::Fetch { .. } | ProviderError::Rejected { .. }
        )
    }

    /// The Retry-After the provider's server asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Fetch { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}

impl Provider {
    /// The provider `cfg` configures (`None` for `bundle`), its files checked: every
    /// config file, the credential and the token file root-owned and private, the
    /// command root-owned and not writable by others.
    pub fn configured(cfg: &Config, root: &Root) -> Result<Option<Provider>, ProviderError> {
        let t = &cfg.token;
        let need = |key: &str, v: Option<&PathBuf>| {
            v.cloned().ok_or_else(|| {
                ProviderError::Config(format!(
                    "provider = \"{}\" needs token.{key}",
                    kind_name(t.provider)
                ))
            })
        };
        let provider = match t.provider {
            ProviderKind::Bundle => return Ok(None),
            ProviderKind::File => {
                let sys = need("path", t.path.as_ref())?;
                let host = root.resolve(&sys)?;
                secure::private_file(&host, true)?;
                Provider::File(file::FileProvider { sys, host })
            }
            ProviderKind::Exec => {
                let Some(program) = t.command.first() else {
                    return Err(ProviderError::Config(
                        "provider = \"exec\" needs token.command = [\"/path/to/program\", ...]"
                            .into(),
                    ));
                };
                let host = root.resolve(std::path::Path::new(program))?;
                secure::program(&host)?;
                Provider::Exec(exec::ExecProvider {
                    program: host,
                    args: t.command[1..].to_vec(),
                    shown: program.clone(),
                    timeout: Duration::from_secs(t.timeout_secs),
                })
            }
            ProviderKind::Kubernetes => {
                let server = t.server.clone().ok_or_else(|| {
                    ProviderError::Config(
                        "provider = \"kubernetes\" needs token.server = \"https://API-SERVER:6443\""
                            .into(),
                    )
                })?;
                let cred_sys = need("credential_file", t.credential_file.as_ref())?;
                let credential = root.resolve(&cred_sys)?;
                secure::private_file(&credential, true)?;
                let ca_file = t.ca_file.as_ref().map(|c| root.resolve(c)).transpose()?;
                let net = cfg.net_settings(root, ca_file.as_deref())?;
                Provider::Kubernetes(kubernetes::KubeProvider {
                    server,
                    credential,
                    credential_sys: cred_sys.display().to_string(),
                    duration_secs: t.duration_secs,
                    net,
                })
            }
        };
        // The config names what runs as root and where its credential is: it must be
        // as private as the credential.
        for f in Config::files(root)? {
            secure::private_file(&f, false)?;
        }
        Ok(Some(provider))
    }

    /// The provider's name as configured.
    pub fn name(&self) -> &'static str {
        match self {
            Provider::File(_) => "file",
            Provider::Exec(_) => "exec",
            Provider::Kubernetes(_) => "kubernetes",
        }
    }

    /// One token from the provider, unchecked. Synchronous: call it from a blocking
    /// thread (the daemon's `spawn_blocking`), never from an async task.
    pub fn fetch(&self, who: &Identity) -> Result<Vec<u8>, ProviderError> {
        let r = match self {
            Provider::File(f) => f.read(),
            Provider::Exec(e) => e.run(),
            Provider::Kubernetes(k) => crate::net::block_on(k.request(who)),
        };
        r.map_err(|source| ProviderError::Fetch {
            provider: self.name(),
            source,
        })
    }
}

fn kind_name(k: ProviderKind) -> &'static str {
    match k {
        ProviderKind::Bundle => "bundle",
        ProviderKind::File => "file",
        ProviderKind::Exec => "exec",
        ProviderKind::Kubernetes => "kubernetes",
    }
}
