//! `/etc/vmagent/config.toml` plus drop-ins `/etc/vmagent/config.d/*.toml` (merged in
//! name order, later wins, key by key) under the target root: where the bundle and the
//! sidecar package come from, how downloads behave, how health is judged, how the daemon
//! runs. Every key is optional; each file is checked on its own first, so unknown keys
//! and wrong types are refused with the file and the key named.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::fsx;
use crate::root::Root;

pub mod doctor;
pub mod health;
pub mod logs;
pub mod metrics;
pub mod overrides;
pub mod preflight;
pub mod token;
pub mod trust;
pub use doctor::DoctorConfig;
pub use health::HealthConfig;
pub use logs::LogsConfig;
pub use metrics::MetricsConfig;
pub use overrides::OverridesConfig;
pub use preflight::{CheckName, PreflightConfig};
pub use token::{ProviderKind, TokenConfig};
pub use trust::TrustConfig;

/// System path of the config file.
pub const PATH: &str = "/etc/vmagent/config.toml";

/// System path of the drop-in directory.
pub const DROPIN_DIR: &str = "/etc/vmagent/config.d";

/// Istio's current release location (the old storage.googleapis.com base stops serving
/// packages in December 2026).
pub const DEFAULT_URL: &str =
    "https://blob.istio.io/istio-release/releases/{version}/{format}/istio-sidecar{arch_suffix}.{format}";

/// Upper bound of the intervals and waits, in seconds (a day).
const DAY: u64 = 86_400;

/// Upper bound of the download timeouts, in seconds.
const HOUR: u64 = 3_600;

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
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
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
    /// `[source]`
    #[serde(default)]
    pub source: SourceConfig,
    /// `[daemon]`
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// `[paths]`
    #[serde(default)]
    pub paths: PathsConfig,
    /// `[token]`
    #[serde(default)]
    pub token: TokenConfig,
    /// `[trust]`
    #[serde(default)]
    pub trust: TrustConfig,
    /// `[overrides]`
    #[serde(default)]
    pub overrides: OverridesConfig,
    /// `[logs]`
    #[serde(default)]
    pub logs: LogsConfig,
    /// `[doctor]`
    #[serde(default)]
    pub doctor: DoctorConfig,
    /// `[preflight]`
    #[serde(default)]
    pub preflight: PreflightConfig,
    /// `[metrics]`
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[paths]`: where vmagent keeps its own files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// State: the apply journal and backups, the lock, the records uninstall needs and
    /// the daemon's bundle store (default /var/lib/vmagent).
    pub state_dir: Option<PathBuf>,
    /// Downloaded packages by sha256 (default /var/cache/vmagent).
    pub cache_dir: Option<PathBuf>,
}

impl Config {
    /// `root` with this config's `[paths]`.
    pub fn locate(&self, root: Root) -> Root {
        root.with_dirs(
            self.paths.state_dir.as_deref(),
            self.paths.cache_dir.as_deref(),
        )
    }

    /// The root at `path` with the configured `[paths]`, for commands that must work
    /// even when the config is broken (uninstall, recover, status): then the defaults,
    /// and the config error to show as a warning.
    pub fn locate_lenient(root: Root) -> (Root, Option<ConfigError>) {
        match Config::load(&root) {
            Ok(c) => (c.locate(root), None),
            Err(e) => (root, Some(e)),
        }
    }
}

/// `[source]`: where the daemon gets the bundle.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A bundle path (tar, tar.gz or directory) inside the root, or an https URL.
    pub bundle: Option<String>,
    /// Extra CA (PEM, path inside the root) for an https bundle URL.
    pub ca_file: Option<PathBuf>,
    /// HTTP headers sent with bundle requests (e.g. Authorization); redacted when shown.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// How often a URL source is polled (with jitter, ETag, backoff on errors).
    #[serde(default = "d_poll")]
    pub poll_interval_secs: u64,
}

fn d_poll() -> u64 {
    60
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            bundle: None,
            ca_file: None,
            headers: Default::default(),
            poll_interval_secs: d_poll(),
        }
    }
}

/// `[daemon]`: the reconcile loop.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// How often the machine is checked for drift (files, hosts, package, service).
    #[serde(default = "d_drift")]
    pub drift_interval_secs: u64,
    /// How often the proxy's readiness is probed once it was ready.
    #[serde(default = "d_probe")]
    pub probe_interval_secs: u64,
    /// Warn when this share of the token's lifetime is used (percent).
    #[serde(default = "d_token_warn")]
    pub token_warn_percent: u8,
    /// Warn this many seconds before the mesh identity lapses (each one once; and once
    /// more when it lapses): see `identity::timeline::urgency`.
    #[serde(default = "d_identity_warn")]
    pub identity_warn_secs: Vec<u64>,
    /// With DNS capture on, how long /etc/resolv.conf must stay quiet after a change
    /// before istio is restarted for new nameservers (milliseconds).
    #[serde(default = "d_resolv_debounce")]
    pub resolv_debounce_ms: u64,
}

fn d_resolv_debounce() -> u64 {
    2000
}

fn d_drift() -> u64 {
    300
}
fn d_probe() -> u64 {
    10
}
fn d_token_warn() -> u8 {
    80
}
fn d_identity_warn() -> Vec<u64> {
    vec![DAY, HOUR]
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            drift_interval_secs: d_drift(),
            probe_interval_secs: d_probe(),
            token_warn_percent: d_token_warn(),
            identity_warn_secs: d_identity_warn(),
            resolv_debounce_ms: d_resolv_debounce(),
        }
    }
}

/// `[package]`: where the istio-sidecar package comes from.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
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
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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
    /// Total deadline of one request, headers and body (a body trickling in forever
    /// fails here instead of holding the apply).
    #[serde(default = "d_deadline")]
    pub deadline_secs: u64,
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
fn d_deadline() -> u64 {
    3600
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            connect_timeout_secs: d_connect(),
            idle_timeout_secs: d_idle(),
            attempts: d_attempts(),
            backoff_ms: d_backoff(),
            deadline_secs: d_deadline(),
        }
    }
}

impl Config {
    /// The settings of the process's one HTTP client: every configured CA file
    /// (`extra_ca`, a host path from --ca-file; package.ca_file and `[source] ca_file`,
    /// inside `root`) and the `[download]` timeouts.
    pub fn net_settings(
        &self,
        root: &Root,
        extra_ca: Option<&Path>,
    ) -> Result<crate::net::Settings, crate::root::RootError> {
        let mut ca_files: Vec<PathBuf> = extra_ca.into_iter().map(Path::to_path_buf).collect();
        for ca in [&self.package.ca_file, &self.source.ca_file]
            .into_iter()
            .flatten()
        {
            let p = root.resolve(ca)?;
            if !ca_files.contains(&p) {
                ca_files.push(p);
            }
        }
        let d = &self.download;
        Ok(crate::net::Settings {
            ca_files,
            connect: std::time::Duration::from_secs(d.connect_timeout_secs),
            idle: std::time::Duration::from_secs(d.idle_timeout_secs),
            deadline: std::time::Duration::from_secs(d.deadline_secs),
            identity: None,
        })
    }

    /// Reads the root's config and drop-ins; none at all is the defaults.
    pub fn load(root: &Root) -> Result<Config, ConfigError> {
        Ok(Self::load_files(root)?.0)
    }

    /// The files that make up the config, in merge order (host paths).
    pub fn files(root: &Root) -> Result<Vec<PathBuf>, ConfigError> {
        let resolve = |sys: &str| {
            root.resolve(Path::new(sys)).map_err(|e| ConfigError {
                path: sys.into(),
                reason: e.to_string(),
            })
        };
        let mut files = vec![resolve(PATH)?];
        let dir = resolve(DROPIN_DIR)?;
        match std::fs::read_dir(&dir) {
            Ok(rd) => {
                let mut names: Vec<PathBuf> = rd
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                names.sort();
                files.extend(names);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfigError {
                    path: dir.display().to_string(),
                    reason: e.to_string(),
                })
            }
        }
        Ok(files)
    }

    /// Reads and merges every file; returns the config and the files that existed.
    pub fn load_files(root: &Root) -> Result<(Config, Vec<PathBuf>), ConfigError> {
        let mut merged = toml::Table::new();
        let mut used = Vec::new();
        let mut origins = OverridesConfig::default();
        for host in Self::files(root)? {
            let err = |reason: String| ConfigError {
                path: host.display().to_string(),
                reason,
            };
            let Some(data) = fsx::read_file(&host, 1 << 20).map_err(|e| err(e.to_string()))? else {
                continue;
            };
            let text = String::from_utf8(data).map_err(|_| err("not UTF-8 text".into()))?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| err(one_line(&e)))?;
            // Checked alone first, so an unknown key or a wrong type names this file.
            let alone: Config = table.clone().try_into().map_err(|e| err(one_line(&e)))?;
            alone.validate().map_err(err)?;
            origins.note_origins(&alone.overrides, &host);
            merge(&mut merged, table);
            used.push(host);
        }
        let mut cfg: Config = merged.try_into().map_err(|e| ConfigError {
            path: PATH.into(),
            reason: one_line(&e),
        })?;
        cfg.overrides.origins = origins.origins;
        Ok((cfg, used))
    }

    /// Value checks serde cannot express.
    fn validate(&self) -> Result<(), String> {
        self.check_ranges()?;
        self.token.validate()?;
        self.trust.validate()?;
        self.logs.validate()?;
        self.doctor.check()?;
        self.preflight.validate()?;
        self.metrics.validate()?;
        if !self.health.ready_url.starts_with("http://")
            && !self.health.ready_url.starts_with("https://")
        {
            return Err("health.ready_url must be an http:// or https:// URL".into());
        }
        if let Some(s) = &self.package.sha256 {
            if !is_sha256(s) {
                return Err("package.sha256 must be 64 hex characters".into());
            }
        }
        if let Some(u) = &self.health.report_url {
            // The same rule as the bundle source's: a report carries the VM's identity
            // and, with report_authorization_file, a credential.
            let ok = crate::net::Url::parse(u).is_ok_and(|p| crate::net::private_transport(&p));
            if !ok {
                return Err(format!(
                    "health.report_url = '{}' must be an https:// URL (plain http only to a loopback address)",
                    crate::redact::url(u)
                ));
            }
        }

        for (key, p) in [
            ("paths.state_dir", &self.paths.state_dir),
            ("paths.cache_dir", &self.paths.cache_dir),
        ] {
            if let Some(p) = p {
                let ok = p.is_absolute()
                    && p.parent().is_some()
                    && p.components().all(|c| {
                        matches!(
                            c,
                            std::path::Component::RootDir | std::path::Component::Normal(_)
                        )
                    });
                if !ok {
                    return Err(format!(
                        "{key} must be an absolute path below / without '.' or '..' (got '{}')",
                        p.display()
                    ));
                }
                if crate::layout::system_dir(p) {
                    return Err(format!(
                        "{key} = '{}' is a system directory other software keeps files in, and `vmagent uninstall --purge` removes vmagent's directories: use a directory of vmagent's own, such as {}",
                        p.display(),
                        if key.ends_with("cache_dir") { "/var/cache/vmagent" } else { "/var/lib/vmagent" }
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every number within its range: a huge interval would overflow the deadline
    /// arithmetic (`Instant + Duration` panics), zero would spin. One line per error,
    /// naming the key, the value and the range (the caller adds the file).
    fn check_ranges(&self) -> Result<(), String> {
        let numbers: [(&str, u64, std::ops::RangeInclusive<u64>); 11] = [
            (
                "daemon.resolv_debounce_ms",
                self.daemon.resolv_debounce_ms,
                0..=HOUR * 1000,
            ),
            (
                "source.poll_interval_secs",
                self.source.poll_interval_secs,
                1..=DAY,
            ),
            (
                "daemon.drift_interval_secs",
                self.daemon.drift_interval_secs,
                1..=DAY,
            ),
            (
                "daemon.probe_interval_secs",
                self.daemon.probe_interval_secs,
                1..=DAY,
            ),
            (
                "daemon.token_warn_percent",
                self.daemon.token_warn_percent.into(),
                1..=100,
            ),
            ("health.wait_secs", self.health.wait_secs, 0..=DAY),
            (
                "download.connect_timeout_secs",
                self.download.connect_timeout_secs,
                1..=HOUR,
            ),
            (
                "download.idle_timeout_secs",
                self.download.idle_timeout_secs,
                1..=HOUR,
            ),
            ("download.attempts", self.download.attempts.into(), 1..=100),
            (
                "download.deadline_secs",
                self.download.deadline_secs,
                1..=DAY,
            ),
            (
                "download.backoff_ms",
                self.download.backoff_ms,
                0..=HOUR * 1000,
            ),
        ];
        // A handful of lead times, each at most 30 days (the longest a token is made
        // for in practice) and at least a minute (the daemon checks every probe).
        let leads = &self.daemon.identity_warn_secs;
        if leads.len() > 8 {
            return Err(format!(
                "daemon.identity_warn_secs has {} values: allowed at most 8",
                leads.len()
            ));
        }
        let numbers = numbers.into_iter().chain(
            leads
                .iter()
                .map(|&l| ("daemon.identity_warn_secs", l, 60..=30 * DAY)),
        );
        for (key, value, range) in numbers {
            if !range.contains(&value) {
                return Err(format!(
                    "{key} = {value} is out of range: allowed {} to {}",
                    range.start(),
                    range.end()
                ));
            }
        }
        Ok(())
    }

    /// The merged config as TOML with secrets redacted: source.headers values, and the
    /// userinfo and sensitive query values of every URL (`crate::redact::url`).
    pub fn show(&self) -> String {
        let mut c = self.clone();
        for v in c.source.headers.values_mut() {
            *v = "<redacted>".into();
        }
        for u in [
            c.source.bundle.as_mut(),
            c.package.url.as_mut(),
            c.health.report_url.as_mut(),
            c.token.server.as_mut(),
            Some(&mut c.health.ready_url),
        ]
        .into_iter()
        .flatten()
        {
            *u = crate::redact::url(u);
        }
        // Defaults applied where the value is used are shown too (the VM test found
        // empty sections where the README promises the defaults).
        c.package.url.get_or_insert_with(|| DEFAULT_URL.to_string());
        c.paths
            .state_dir
            .get_or_insert_with(|| crate::layout::STATE_DIR.into());
        c.paths
            .cache_dir
            .get_or_insert_with(|| crate::layout::CACHE_DIR.into());
        toml::to_string(&c).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Later wins, key by key inside sections (a drop-in setting one key keeps the others).
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// 64 hex characters.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests;
