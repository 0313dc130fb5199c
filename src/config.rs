//! `/etc/vmagent/config.toml` under the target root: where the sidecar package comes
//! from and how downloads behave. Every key is optional; unknown keys and wrong types are
//! refused with the file and the key named.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::fsx;
use crate::root::Root;

/// System path of the config file.
pub const PATH: &str = "/etc/vmagent/config.toml";

/// Istio's current release location (the old storage.googleapis.com base stops serving
/// packages in December 2026).
pub const DEFAULT_URL: &str =
    "https://blob.istio.io/istio-release/releases/{version}/{format}/istio-sidecar{arch_suffix}.{format}";

/// A config file that cannot be used.
#[derive(Debug, Error)]
#[error("config file '{path}': {reason}")]
pub struct ConfigError {
    /// Host path of the file.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[package]`
    #[serde(default)]
    pub package: PackageConfig,
    /// `[download]`
    #[serde(default)]
    pub download: DownloadConfig,
    /// `[health]`
    #[serde(default)]
    pub health: HealthConfig,
}

/// `[health]`: how readiness is judged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// The proxy's readiness endpoint (200 = ready).
    #[serde(default = "d_ready_url")]
    pub ready_url: String,
    /// How long `apply` waits for ready when --wait is not given.
    #[serde(default = "d_wait")]
    pub wait_secs: u64,
}

fn d_ready_url() -> String {
    crate::health::probe::DEFAULT_URL.into()
}
fn d_wait() -> u64 {
    180
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            ready_url: d_ready_url(),
            wait_secs: d_wait(),
        }
    }
}

/// `[package]`: where the istio-sidecar package comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageConfig {
    /// Istio version, e.g. `1.24.1`.
    pub version: Option<String>,
    /// URL template with `{version}`, `{format}`, `{arch}`, `{arch_suffix}`.
    pub url: Option<String>,
    /// Pinned sha256 of the package.
    pub sha256: Option<String>,
    /// Extra CA certificate (PEM, path inside the root) for a private mirror.
    pub ca_file: Option<PathBuf>,
}

/// `[download]`: robustness knobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadConfig {
    /// TCP/TLS connect timeout.
    #[serde(default = "d_connect")]
    pub connect_timeout_secs: u64,
    /// An attempt fails when no byte arrives for this long.
    #[serde(default = "d_idle")]
    pub idle_timeout_secs: u64,
    /// Total tries for retryable failures.
    #[serde(default = "d_attempts")]
    pub attempts: u32,
    /// First backoff; doubles each retry, with jitter.
    #[serde(default = "d_backoff")]
    pub backoff_ms: u64,
}

fn d_connect() -> u64 {
    10
}
fn d_idle() -> u64 {
    30
}
fn d_attempts() -> u32 {
    5
}
fn d_backoff() -> u64 {
    500
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            connect_timeout_secs: d_connect(),
            idle_timeout_secs: d_idle(),
            attempts: d_attempts(),
            backoff_ms: d_backoff(),
        }
    }
}

impl Config {
    /// Reads the root's config; a missing file is the defaults.
    pub fn load(root: &Root) -> Result<Config, ConfigError> {
        let host = root.resolve(Path::new(PATH)).map_err(|e| ConfigError {
            path: PATH.into(),
            reason: e.to_string(),
        })?;
        let err = |reason: String| ConfigError {
            path: host.display().to_string(),
            reason,
        };
        let Some(data) = fsx::read_file(&host, 1 << 20).map_err(|e| err(e.to_string()))? else {
            return Ok(Config::default());
        };
        let text = String::from_utf8(data).map_err(|_| err("not UTF-8 text".into()))?;
        let cfg: Config = toml::from_str(&text)
            .map_err(|e| err(e.to_string().replace('\n', " ").trim().to_string()))?;
        if cfg.download.attempts == 0 {
            return Err(err("download.attempts must be at least 1".into()));
        }
        if !cfg.health.ready_url.starts_with("http://")
            && !cfg.health.ready_url.starts_with("https://")
        {
            return Err(err(
                "health.ready_url must be an http:// or https:// URL".into()
            ));
        }
        if let Some(s) = &cfg.package.sha256 {
            if !is_sha256(s) {
                return Err(err("package.sha256 must be 64 hex characters".into()));
            }
        }
        Ok(cfg)
    }
}

/// 64 hex characters.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc/vmagent")).unwrap();
        std::fs::write(t.path().join("etc/vmagent/config.toml"), text).unwrap();
        Config::load(&Root::new(t.path()).unwrap())
    }

    #[test]
    fn defaults_and_overrides() {
        let c = load("[package]\nversion = \"1.24.1\"\n[download]\nattempts = 2\n").unwrap();
        assert_eq!(c.package.version.as_deref(), Some("1.24.1"));
        assert_eq!(c.download.attempts, 2);
        assert_eq!(c.download.idle_timeout_secs, 30);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let e = load("[package]\nversoin = \"1\"\n").unwrap_err();
        assert!(e.reason.contains("versoin"), "{e}");
        let e = load("[download]\nattempts = \"many\"\n").unwrap_err();
        assert!(e.to_string().contains("attempts"), "{e}");
        assert!(load("[package]\nsha256 = \"abc\"\n").is_err());
    }
}
