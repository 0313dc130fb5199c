//! Which package this machine takes: the format from the target's os-release, the
//! architecture from the machine, named the way Istio names its files.

use std::fmt;
use std::path::Path;

use super::PackageError;
use crate::fsx;
use crate::root::Root;

/// Package format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Debian package.
    Deb,
    /// RPM package.
    Rpm,
}

impl Format {
    /// `deb` or `rpm` (also the file extension and Istio's directory name).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Deb => "deb",
            Format::Rpm => "rpm",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Machine architecture, in Debian's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64
    Amd64,
    /// aarch64
    Arm64,
}

impl Arch {
    /// The architecture vmagent runs on.
    pub fn host() -> Result<Arch, PackageError> {
        match std::env::consts::ARCH {
            "x86_64" => Ok(Arch::Amd64),
            "aarch64" => Ok(Arch::Arm64),
            other => Err(PackageError::Unsupported(format!(
                "Istio publishes istio-sidecar packages for x86_64 and aarch64 only; this machine is {other}"
            ))),
        }
    }
    /// `amd64` / `arm64`.
    pub fn deb_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
    /// `x86_64` / `aarch64`.
    pub fn rpm_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }
    /// Istio's file-name suffix: `istio-sidecar.deb`, `istio-sidecar-arm64.deb`.
    pub fn suffix(self) -> &'static str {
        match self {
            Arch::Amd64 => "",
            Arch::Arm64 => "-arm64",
        }
    }
    /// Whether a package architecture field (deb or rpm naming) runs here.
    pub fn accepts(self, pkg_arch: &str) -> bool {
        matches!(pkg_arch, "all" | "noarch")
            || pkg_arch == self.deb_name()
            || pkg_arch == self.rpm_name()
    }
}

const DEB_IDS: &[&str] = &["debian", "ubuntu"];
const RPM_IDS: &[&str] = &[
    "rhel",
    "centos",
    "fedora",
    "rocky",
    "almalinux",
    "ol",
    "amzn",
    "suse",
    "sles",
    "opensuse",
];

/// The package format of the target root, from its os-release `ID` and `ID_LIKE`.
pub fn format(root: &Root) -> Result<Format, PackageError> {
    let mut text = None;
    for sys in ["/etc/os-release", "/usr/lib/os-release"] {
        let host = root.resolve(Path::new(sys))?;
        if let Ok(Some(t)) = fsx::read_file(&host, 64 << 10) {
            text = Some(String::from_utf8_lossy(&t).into_owned());
            break;
        }
    }
    let Some(text) = text else {
        return Err(PackageError::Unsupported(format!(
            "cannot tell the OS of {}: no etc/os-release or usr/lib/os-release; pass --package with a .deb or .rpm",
            root.base().display()
        )));
    };
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches(['"', '\'']).to_ascii_lowercase())
            .unwrap_or_default()
    };
    let id = field("ID");
    let like = field("ID_LIKE");
    for word in std::iter::once(id.as_str()).chain(like.split_whitespace()) {
        if DEB_IDS.contains(&word) {
            return Ok(Format::Deb);
        }
        if RPM_IDS.contains(&word) || word.starts_with("opensuse") {
            return Ok(Format::Rpm);
        }
    }
    Err(PackageError::Unsupported(format!(
        "no istio-sidecar package for this OS (os-release ID={}{}); Istio publishes .deb (Debian, Ubuntu) and .rpm (RHEL family, SUSE) packages",
        if id.is_empty() { "(none)" } else { &id },
        if like.is_empty() { String::new() } else { format!(", ID_LIKE={like}") }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt_of(os_release: &str) -> Result<Format, PackageError> {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/os-release"), os_release).unwrap();
        format(&Root::new(t.path()).unwrap())
    }

    #[test]
    fn families() {
        assert_eq!(fmt_of("ID=debian\n").unwrap(), Format::Deb);
        assert_eq!(fmt_of("ID=ubuntu\nID_LIKE=debian\n").unwrap(), Format::Deb);
        assert_eq!(
            fmt_of("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n").unwrap(),
            Format::Rpm
        );
        assert_eq!(
            fmt_of("ID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"\n").unwrap(),
            Format::Rpm
        );
        assert_eq!(
            fmt_of("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n").unwrap(),
            Format::Deb
        );
        let e = fmt_of("ID=alpine\n").unwrap_err().to_string();
        assert!(e.contains("ID=alpine"), "{e}");
    }
}
