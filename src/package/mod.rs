//! The istio-sidecar package step: decide where the package comes from (flag, bundle
//! member, configured URL template), verify it by sha256, and install it with dpkg/rpm
//! only when the installed version differs.
//!
//! Order of decisions, cheapest first, so a re-apply of an installed version makes no
//! network request and runs no installer: installed version vs configured version, then
//! the cache by sha256, and only then the network.

pub mod fetch;
pub mod install;
pub mod os;
mod progress;

use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::bundle::Bundle;
use crate::config::{self, Config};
use crate::exit;
use crate::root::{Root, RootError};
use os::{Arch, Format};

/// Why the package step failed. Nothing of the bundle has been written by then.
#[derive(Debug, Error)]
pub enum PackageError {
    /// A bad flag or config value (exit 2).
    #[error("{0}")]
    Input(String),
    /// Config the download needs is unusable (exit 2).
    #[error("{0}")]
    Config(String),
    /// No package for this OS/arch, or no source/checksum (exit 4).
    #[error("{0}")]
    Unsupported(String),
    /// Dependencies missing in the target (exit 4).
    #[error("the istio-sidecar package needs {} which {} not installed in {root}; install {} first (e.g. apt-get install {})", missing.join(", "), if missing.len() == 1 { "is" } else { "are" }, if missing.len() == 1 { "it" } else { "them" }, missing.iter().map(|m| m.split_whitespace().next().unwrap_or(m)).collect::<Vec<_>>().join(" "))]
    MissingDeps {
        /// Target root.
        root: String,
        /// Unsatisfied Depends clauses.
        missing: Vec<String>,
    },
    /// The download failed (exit 5).
    #[error("downloading {} failed: {reason}", crate::redact::url(url))]
    Download {
        /// URL.
        url: String,
        /// Why.
        reason: String,
        /// Whether the failure was transient (the partial file is kept for resumption).
        retryable: bool,
    },
    /// The checksum does not match (exit 5).
    #[error("package {what}: sha256 mismatch: expected {expected}, got {got}; {}nothing was installed", if *downloaded { "the download was deleted and " } else { "" })]
    Mismatch {
        /// URL or path.
        what: String,
        /// Whether it was a download (deleted) or the user's own file (kept).
        downloaded: bool,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        got: String,
    },
    /// The cache directory failed (exit 5).
    #[error("package cache: {0}")]
    Cache(String),
    /// A file is not a package of the expected format (exit 5).
    #[error("'{path}' is not a readable .{format} package{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    NotAPackage {
        /// File.
        path: String,
        /// Expected format.
        format: Format,
        /// Tool output.
        detail: String,
    },
    /// dpkg-deb/dpkg-query/rpm could not be run (exit 6).
    #[error("{0}")]
    Tool(String),
    /// The installer failed (exit 6).
    #[error("installing the package failed: `{command}` exited with status {status}; its last output lines follow")]
    Install {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Last lines of its output.
        tail: Vec<String>,
    },
    /// Path resolution failed.
    #[error(transparent)]
    Root(#[from] RootError),
}

impl PackageError {
    /// Process exit code (see README).
    pub fn exit_code(&self) -> u8 {
        match self {
            PackageError::Input(_) | PackageError::Config(_) => exit::INVALID,
            PackageError::Unsupported(_) | PackageError::MissingDeps { .. } => exit::PREREQUISITE,
            PackageError::Download { .. }
            | PackageError::Mismatch { .. }
            | PackageError::Cache(_)
            | PackageError::NotAPackage { .. } => exit::DOWNLOAD,
            PackageError::Tool(_) | PackageError::Install { .. } => exit::INSTALL,
            PackageError::Root(_) => exit::FAILED,
        }
    }
}

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--package PATH_OR_URL`.
    pub package: Option<String>,
    /// `--package-sha256`.
    pub sha256: Option<String>,
    /// `--istio-version`.
    pub istio_version: Option<String>,
    /// `--ca-file` (host path).
    pub ca_file: Option<PathBuf>,
}

/// Where the package comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file (`--package PATH`).
    Local(PathBuf),
    /// A bundle member (index into `Bundle::packages`).
    Member(usize),
    /// A URL (`--package URL` or the configured template).
    Url(String),
}

/// Where the expected sha256 came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumSource {
    /// `--package-sha256`.
    Flag,
    /// `package.sha256` in the config.
    Config,
    /// `URL.sha256` published next to the package.
    Published,
    /// None (local files only).
    None,
}

/// Whether the package has to be fetched (JSON: `needed`, `cached`, `local`, `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Download {
    /// From its URL.
    Needed,
    /// An intact copy is in the cache.
    Cached,
    /// A local file or a bundle member.
    Local,
    /// Nothing will be installed.
    None,
}

/// What the package step does (JSON: `install`, `upgrade`, `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageAction {
    /// Nothing is installed yet.
    Install,
    /// Another version is installed.
    Upgrade,
    /// The wanted version is installed.
    None,
}

/// What the package step will do, and why: shown in plans and JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Path, URL or `bundle member NAME`.
    pub source: String,
    /// `deb` or `rpm`.
    pub format: &'static str,
    /// `amd64` or `arm64`.
    pub arch: &'static str,
    /// Installed version, if any.
    pub installed_version: Option<String>,
    /// Version to install, when known before downloading.
    pub version: Option<String>,
    /// Expected sha256.
    pub sha256: Option<String>,
    /// Where `sha256` came from.
    pub checksum_source: ChecksumSource,
    /// Whether it has to be fetched.
    pub download: Download,
    /// What is done.
    pub action: PackageAction,
    #[serde(skip)]
    src: Option<Source>,
    #[serde(skip)]
    cached: Option<PathBuf>,
    #[serde(skip)]
    warnings: Vec<String>,
}

impl Decision {
    /// True when the package step changes nothing.
    pub fn is_noop(&self) -> bool {
        self.action == PackageAction::None
    }

    /// Warnings (e.g. a local package without checksum).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// One line for plans: `none -> 1.24.1 from URL; sha256 published; download needed`.
    pub fn detail(&self) -> String {
        format!(
            "{} -> {} from {}; sha256 {}; {}",
            self.installed_version.as_deref().unwrap_or("none"),
            self.version
                .as_deref()
                .unwrap_or("(version known after download)"),
            self.source,
            match self.checksum_source {
                ChecksumSource::Flag => "from --package-sha256",
                ChecksumSource::Config => "from the config",
                ChecksumSource::Published => "published next to the package",
                ChecksumSource::None => "not checked (no checksum given)",
            },
            match self.download {
                Download::Needed => "download needed",
                Download::Cached => "cached",
                Download::Local => "local file",
                Download::None => "nothing to fetch",
            }
        )
    }
}

/// Does an installed version count as `want`? Istio versions (`1.24.1`) match an rpm
/// version-release (`1.24.1-1`) or a Debian revision of them.
fn same_version(installed: &str, want: &str) -> bool {
    installed == want
        || installed
            .strip_prefix(want)
            .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('~'))
}

/// Context shared by deciding and installing.
pub struct Step<'a> {
    root: &'a Root,
    bundle: &'a Bundle,
    req: &'a Request,
    cfg: &'a Config,
    format: Format,
    arch: Arch,
}

impl<'a> Step<'a> {
    /// Detects format and architecture for the root.
    pub fn new(
        root: &'a Root,
        bundle: &'a Bundle,
        req: &'a Request,
        cfg: &'a Config,
    ) -> Result<Self, PackageError> {
        if let Some(s) = &req.sha256 {
            if !config::is_sha256(s) {
                return Err(PackageError::Input(format!(
                    "--package-sha256 '{}' is not 64 hex characters",
                    crate::bundle::printable(s, 80)
                )));
            }
        }
        Ok(Step {
            root,
            bundle,
            req,
            cfg,
            format: match (os::format(root), req.package.as_deref()) {
                (Ok(f), _) => f,
                // No os-release (e.g. a bare image tree): an explicit package decides.
                (Err(_), Some(p)) if p.ends_with(".deb") => Format::Deb,
                (Err(_), Some(p)) if p.ends_with(".rpm") => Format::Rpm,
                (Err(e), _) => return Err(e),
            },
            arch: Arch::host()?,
        })
    }

    fn cache_dir(&self) -> Result<PathBuf, PackageError> {
        Ok(self.root.resolve(self.root.cache_dir())?)
    }

    /// The process's one HTTP client, with --ca-file and every configured CA.
    fn client(&self) -> Result<crate::net::Client, PackageError> {
        let settings = self
            .cfg
            .net_settings(self.root, self.req.ca_file.as_deref())?;
        crate::net::Client::shared(&settings).map_err(|e| PackageError::Config(e.to_string()))
    }

    fn source(&self) -> Result<(Source, bool), PackageError> {
        if let Some(p) = &self.req.package {
            if p.starts_with("http://") || p.starts_with("https://") {
                return Ok((Source::Url(p.clone()), false));
            }
            let path = PathBuf::from(p);
            if !path.is_file() {
                return Err(PackageError::Input(format!(
                    "--package '{}': no such file (give a .deb/.rpm path or an http(s) URL)",
                    path.display()
                )));
            }
            return Ok((Source::Local(path), false));
        }
        let ext = format!(".{}", self.format);
        let members: Vec<usize> = (0..self.bundle.packages.len())
            .filter(|&i| self.bundle.packages[i].name.ends_with(&ext))
            .collect();
        if let [only] = members.as_slice() {
            return Ok((Source::Member(*only), false));
        }
        for &i in &members {
            let info = install::file_info(self.format, self.bundle.packages[i].file.path())?;
            if self.arch.accepts(&info.arch) {
                return Ok((Source::Member(i), false));
            }
        }
        let version = self
            .req
            .istio_version
            .clone()
            .or_else(|| self.cfg.package.version.clone());
        let Some(version) = version else {
            return Err(PackageError::Unsupported(format!(
                "no istio-sidecar package source: pass --package PATH_OR_URL or --istio-version VERSION (or set package.version in {}), add the .{} to the bundle, or pass --no-package",
                config::PATH, self.format
            )));
        };
        let url = self
            .cfg
            .package
            .url
            .as_deref()
            .unwrap_or(config::DEFAULT_URL)
            .replace("{version}", &version)
            .replace("{format}", self.format.as_str())
            .replace("{arch_suffix}", self.arch.suffix())
            .replace("{arch}", self.arch.deb_name());
        Ok((Source::Url(url), true))
    }

    /// Works out what to do without installing anything. May fetch a published
    /// `.sha256` (a read), never the package.
    pub fn decide(&self) -> Result<Decision, PackageError> {
        let installed = install::installed(self.root, self.format)?;
        let (src, templated) = self.source()?;
        let mut d = Decision {
            source: String::new(),
            format: self.format.as_str(),
            arch: self.arch.deb_name(),
            installed_version: installed.clone(),
            version: None,
            sha256: self.req.sha256.clone(),
            checksum_source: if self.req.sha256.is_some() {
                ChecksumSource::Flag
            } else {
                ChecksumSource::None
            },
            download: Download::Local,
            action: PackageAction::Install,
            src: Some(src.clone()),
            cached: None,
            warnings: vec![],
        };
        let local = match &src {
            Source::Local(p) => {
                d.source = p.display().to_string();
                Some(p.clone())
            }
            Source::Member(i) => {
                d.source = format!("bundle member {}", self.bundle.packages[*i].name);
                Some(self.bundle.packages[*i].file.path().to_path_buf())
            }
            Source::Url(u) => {
                // Shown in plans and JSON: without a signed query's secrets.
                d.source = crate::redact::url(u);
                None
            }
        };
        if let Some(path) = local {
            if d.sha256.is_none() {
                d.warnings.push(format!(
                    "package {}: no checksum given (--package-sha256); installing it unverified",
                    d.source
                ));
            }
            let info = self.check_file(&path)?;
            d.version = Some(info.version);
        } else {
            if templated {
                d.version = self
                    .req
                    .istio_version
                    .clone()
                    .or_else(|| self.cfg.package.version.clone());
            }
            if d.sha256.is_none() {
                if let Some(s) = &self.cfg.package.sha256 {
                    d.sha256 = Some(s.to_ascii_lowercase());
                    d.checksum_source = ChecksumSource::Config;
                }
            }
            // Cheapest first: the configured version is already installed.
            if let (Some(have), Some(want)) = (&installed, &d.version) {
                if same_version(have, want) {
                    d.action = PackageAction::None;
                    d.download = Download::None;
                    return Ok(d);
                }
            }
            if d.sha256.is_none() {
                let url = match &src {
                    Source::Url(u) => u.as_str(),
                    Source::Local(_) | Source::Member(_) => "",
                };
                d.sha256 = Some(self.published_sha256(url)?);
                d.checksum_source = ChecksumSource::Published;
            }
            let sha = d.sha256.clone().unwrap_or_default();
            let cached = self.cache_dir()?.join(format!("{sha}.{}", self.format));
            // A cached file is trusted by content, not by name: a damaged one is dropped
            // and downloaded again.
            let intact = cached.is_file()
                && fetch::sha256_file(&cached).ok().as_deref() == Some(sha.as_str());
            if intact {
                let info = self.check_file(&cached)?;
                d.version = Some(info.version);
                d.download = Download::Cached;
                d.cached = Some(cached);
            } else {
                if cached.exists() {
                    d.warnings.push(format!(
                        "cached package {} does not match its sha256; it will be downloaded again",
                        cached.display()
                    ));
                }
                d.download = Download::Needed;
            }
        }
        if let (Some(have), Some(want)) = (&installed, &d.version) {
            d.action = if same_version(have, want) {
                PackageAction::None
            } else {
                PackageAction::Upgrade
            };
        } else if installed.is_some() {
            d.action = PackageAction::Upgrade;
        }
        if d.action == PackageAction::None {
            d.download = Download::None;
            d.warnings.clear(); // nothing will be installed, unverified or not
        }
        Ok(d)
    }

    fn published_sha256(&self, url: &str) -> Result<String, PackageError> {
        let sum_url = format!("{url}.sha256");
        let text = fetch::text(&self.client()?, &sum_url, &self.cfg.download)?;
        let Some(text) = text else {
            return Err(PackageError::Unsupported(format!(
                "no checksum for {}: {} does not exist; pass --package-sha256 HEX (or set package.sha256 in {})",
                crate::redact::url(url),
                crate::redact::url(&sum_url),
                config::PATH
            )));
        };
        let first = text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !config::is_sha256(&first) {
            return Err(PackageError::Download {
                url: sum_url,
                reason: "does not start with a sha256 (64 hex characters)".into(),
                retryable: false,
            });
        }
        Ok(first)
    }

    /// Name and architecture of a package file must fit this machine.
    fn check_file(&self, path: &Path) -> Result<install::FileInfo, PackageError> {
        let info = install::file_info(self.format, path)?;
        if info.name != install::NAME {
            return Err(PackageError::Input(format!(
                "'{}' is package '{}', not {}",
                path.display(),
                info.name,
                install::NAME
            )));
        }
        if !self.arch.accepts(&info.arch) {
            return Err(PackageError::Unsupported(format!(
                "'{}' is built for {}, but this machine is {}; use the {} package (istio-sidecar{}.{})",
                path.display(),
                info.arch,
                self.arch.deb_name(),
                self.arch.deb_name(),
                self.arch.suffix(),
                self.format
            )));
        }
        Ok(info)
    }

    /// Fetches (when needed), verifies and installs per `d`. Returns the installer
    /// command run, or `None` when nothing was installed.
    pub fn execute(&self, d: &Decision) -> Result<Option<String>, PackageError> {
        if d.is_noop() {
            return Ok(None);
        }
        let Some(src) = &d.src else { return Ok(None) };
        let file = match src {
            Source::Local(p) => p.clone(),
            Source::Member(i) => self.bundle.packages[*i].file.path().to_path_buf(),
            Source::Url(url) => {
                let sha = d.sha256.clone().unwrap_or_default();
                let cache = self
                    .root
                    .ensure_own_dir(self.root.cache_dir(), crate::layout::STATE_MODE)
                    .map_err(|e| PackageError::Cache(format!("creating the cache: {e}")))?;
                match &d.cached {
                    Some(c) if fetch::sha256_file(c).ok().as_deref() == Some(sha.as_str()) => {
                        c.clone()
                    }
                    _ => fetch::download(
                        &self.client()?,
                        url,
                        &sha,
                        self.format.as_str(),
                        &cache,
                        &self.cfg.download,
                    )?,
                }
            }
        };
        if let (Some(sha), Source::Local(_) | Source::Member(_)) = (&d.sha256, src) {
            let got = fetch::sha256_file(&file)
                .map_err(|e| PackageError::Cache(format!("reading {}: {e}", file.display())))?;
            if &got != sha {
                return Err(PackageError::Mismatch {
                    downloaded: false,
                    what: d.source.clone(),
                    expected: sha.clone(),
                    got,
                });
            }
        }
        let info = self.check_file(&file)?;
        // Asked again: a URL's version is only known now, and another apply may have
        // installed it since the decision (we hold the lock now).
        let installed = install::installed(self.root, self.format)?;
        if installed
            .as_deref()
            .is_some_and(|have| same_version(have, &info.version))
        {
            return Ok(None);
        }
        install::install(self.root, self.format, &file, &info).map(Some)
    }
}
