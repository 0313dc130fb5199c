//! `[token]`: where the istio-token comes from. `bundle` (the default) installs the
//! bundle's member; `file`, `exec` and `kubernetes` get a fresh token on a schedule (see
//! `crate::identity::provider`). Only shapes and ranges are checked here, each file on
//! its own; which keys a provider needs is checked on the merged config, where a
//! drop-in may supply what the main file left out.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which provider keeps the token fresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The bundle's istio-token, installed as it is.
    #[default]
    Bundle,
    /// A file another agent keeps fresh.
    File,
    /// A command that prints a JWT on stdout.
    Exec,
    /// A Kubernetes TokenRequest (`serviceaccounts/token`), as istioctl makes it.
    Kubernetes,
}

/// The `[token]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Which provider.
    #[serde(default)]
    pub provider: ProviderKind,
    /// `file`: the token file (a path inside the root).
    pub path: Option<PathBuf>,
    /// `exec`: the program (absolute path) and its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `exec`: how long the command may run.
    #[serde(default = "d_timeout")]
    pub timeout_secs: u64,
    /// `kubernetes`: the API server, `https://HOST[:PORT]`.
    pub server: Option<String>,
    /// `kubernetes`: the API server's CA (PEM, a path inside the root).
    pub ca_file: Option<PathBuf>,
    /// `kubernetes`: a file holding a bearer token allowed to `create`
    /// `serviceaccounts/token` for this workload's service account (inside the root).
    pub credential_file: Option<PathBuf>,
    /// `kubernetes`: the lifetime asked for (`expirationSeconds`).
    #[serde(default = "d_duration")]
    pub duration_secs: u64,
    /// The namespace (default: POD_NAMESPACE of cluster.env).
    pub namespace: Option<String>,
    /// The service account (default: SERVICE_ACCOUNT of cluster.env).
    pub service_account: Option<String>,
    /// Refresh when this fraction of the token's lifetime has passed.
    #[serde(default = "d_refresh_at")]
    pub refresh_at: f64,
}

fn d_timeout() -> u64 {
    30
}
/// istioctl's default `--tokenDuration`.
fn d_duration() -> u64 {
    3600
}
fn d_refresh_at() -> f64 {
    0.5
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            provider: ProviderKind::default(),
            path: None,
            command: Vec::new(),
            timeout_secs: d_timeout(),
            server: None,
            ca_file: None,
            credential_file: None,
            duration_secs: d_duration(),
            namespace: None,
            service_account: None,
            refresh_at: d_refresh_at(),
        }
    }
}

impl TokenConfig {
    /// Shapes and ranges of the keys that are set (one line naming the key).
    pub fn validate(&self) -> Result<(), String> {
        if !(0.1..=0.9).contains(&self.refresh_at) {
            return Err(format!(
                "token.refresh_at = {} is out of range: allowed 0.1 to 0.9 (a fraction of the token's lifetime)",
                self.refresh_at
            ));
        }
        if !(1..=3600).contains(&self.timeout_secs) {
            return Err(format!(
                "token.timeout_secs = {} is out of range: allowed 1 to 3600",
                self.timeout_secs
            ));
        }
        // The API server refuses less than 10 minutes; more than a year is a typo.
        if !(600..=31_536_000).contains(&self.duration_secs) {
            return Err(format!(
                "token.duration_secs = {} is out of range: allowed 600 to 31536000",
                self.duration_secs
            ));
        }
        if let Some(s) = &self.server {
            if !s.starts_with("https://") {
                return Err("token.server must be an https:// URL (the credential and the token must not cross the network in clear)".into());
            }
        }
        for (key, p) in [
            ("token.path", &self.path),
            ("token.ca_file", &self.ca_file),
            ("token.credential_file", &self.credential_file),
        ] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return Err(format!(
                        "{key} must be an absolute path (got '{}')",
                        p.display()
                    ));
                }
            }
        }
        if let Some(program) = self.command.first() {
            if !program.starts_with('/') {
                return Err(format!("token.command must start with an absolute program path (got '{program}'): it runs as root with a minimal PATH"));
            }
        }
        Ok(())
    }
}
