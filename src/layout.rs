//! The single table of where the bundle's files and the proxy's directories go, with mode
//! and owner. Other modules name only paths that are not destinations of an apply:
//! vmagent's own config (`config`), the target's passwd/group (`root`), and pilot-agent's
//! default certificate directory as cluster.env's grammar defines it
//! (`bundle::cluster_env`, equal to this table's `/etc/certs`).
//!
//! Ownership follows the documented `chown -R istio-proxy /var/lib/istio /etc/certs
//! /etc/istio/proxy /etc/istio/config /var/run/secrets`, with one deliberate exception:
//! `/var/lib/istio`, `/var/lib/istio/envoy` and `cluster.env` stay root-owned. The
//! sidecar's start script *sources cluster.env as root*, and pilot-agent never writes
//! into /var/lib/istio/envoy (it only reads envoy_bootstrap_tmpl.json there; it writes
//! its bootstrap to /etc/istio/proxy and certificates to /etc/certs). A proxy-owned
//! envoy directory would let the proxy user plant shell code for root. The package's
//! postinst chowns that directory to istio-proxy, so vmagent re-asserts it after every
//! install. Evidence: README.md, "Design notes".

use std::path::{Path, PathBuf};

use crate::bundle::Member;

/// Who owns a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// root:root
    Root,
    /// istio-proxy:istio-proxy (created by the sidecar package).
    Proxy,
}

/// The account the sidecar package creates and the proxy runs as.
pub const PROXY_USER: &str = "istio-proxy";

/// A file installed from a bundle member.
#[derive(Debug, Clone, Copy)]
pub struct FileSpec {
    /// Source member.
    pub member: Member,
    /// Destination system path.
    pub path: &'static str,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub owner: Owner,
}

/// A directory vmagent creates when missing and keeps at this mode and owner.
#[derive(Debug, Clone, Copy)]
pub struct DirSpec {
    /// System path.
    pub path: &'static str,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub owner: Owner,
}

/// Installed files. istioctl writes every member 0744: never kept.
pub const FILES: &[FileSpec] = &[
    FileSpec {
        member: Member::RootCert,
        path: "/etc/certs/root-cert.pem",
        mode: 0o644,
        owner: Owner::Proxy,
    },
    FileSpec {
        member: Member::CertChain,
        path: "/etc/certs/cert-chain.pem",
        mode: 0o644,
        owner: Owner::Proxy,
    },
    FileSpec {
        member: Member::Key,
        path: "/etc/certs/key.pem",
        mode: 0o600,
        owner: Owner::Proxy,
    },
    FileSpec {
        member: Member::Token,
        path: "/var/run/secrets/tokens/istio-token",
        mode: 0o600,
        owner: Owner::Proxy,
    },
    FileSpec {
        member: Member::ClusterEnv,
        path: "/var/lib/istio/envoy/cluster.env",
        mode: 0o644,
        owner: Owner::Root,
    },
    FileSpec {
        member: Member::Mesh,
        path: "/etc/istio/config/mesh",
        mode: 0o644,
        owner: Owner::Proxy,
    },
    // Installed only where dnsmasq is (see [`DNSMASQ_DIR`]), as setupIstioVM.sh did.
    FileSpec {
        member: Member::KubeDns,
        path: "/etc/dnsmasq.d/kubedns",
        mode: 0o644,
        owner: Owner::Root,
    },
];

/// dnsmasq's drop-in directory: the dnsmasq package makes it, so its presence is how
/// Istio 1.0's setupIstioVM.sh told that dnsmasq is installed.
pub const DNSMASQ_DIR: &str = "/etc/dnsmasq.d";

/// Managed directories, parents first. `/etc/istio` is not here: it is the package's
/// symlink to /var/lib/istio (see [`ETC_ISTIO`]), so `/etc/istio/config` normally is
/// `/var/lib/istio/config`; an admin-made real `/etc/istio` is respected.
pub const DIRS: &[DirSpec] = &[
    DirSpec {
        path: "/etc/certs",
        mode: 0o755,
        owner: Owner::Proxy,
    },
    DirSpec {
        path: "/var/run/secrets",
        mode: 0o755,
        owner: Owner::Proxy,
    },
    DirSpec {
        path: "/var/run/secrets/tokens",
        mode: 0o755,
        owner: Owner::Proxy,
    },
    DirSpec {
        path: "/var/lib/istio",
        mode: 0o755,
        owner: Owner::Root,
    },
    DirSpec {
        path: "/var/lib/istio/envoy",
        mode: 0o755,
        owner: Owner::Root,
    },
    // Envoy's profile path and the Wasm cache (pkg/config/constants `IstioDataDir`):
    // /var/lib/istio stays root-owned, so istio-proxy cannot make it itself.
    DirSpec {
        path: "/var/lib/istio/data",
        mode: 0o755,
        owner: Owner::Proxy,
    },
    DirSpec {
        path: "/etc/istio/config",
        mode: 0o755,
        owner: Owner::Proxy,
    },
    DirSpec {
        path: "/etc/istio/proxy",
        mode: 0o755,
        owner: Owner::Proxy,
    },
];

/// `/etc/istio`, and the target of the symlink the package's postinst makes when it is absent.
pub const ETC_ISTIO: (&str, &str) = ("/etc/istio", "/var/lib/istio");

/// Certificates the agent writes for the current identity; stale after an identity change.
pub const PROXY_CERTS: &[&str] = &["/etc/certs/cert-chain.pem", "/etc/certs/key.pem"];

/// Directories the sidecar package's postinst (and vmagent) make and the package's
/// removal leaves behind, deepest first: `uninstall --purge` removes them when empty.
pub const LEFTOVER_DIRS: &[&str] = &[
    "/var/run/secrets/tokens",
    "/var/run/secrets",
    "/etc/certs",
    "/var/lib/istio/config",
    "/var/lib/istio/envoy",
    "/var/lib/istio/proxy",
    "/var/lib/istio/data",
    "/var/lib/istio",
    "/var/log/istio",
];

/// The hosts file that receives the managed block.
pub const HOSTS: &str = "/etc/hosts";

/// The agent's log (istio-start.sh appends pilot-agent's output).
pub const ISTIO_LOG: &str = "/var/log/istio/istio.log";

/// Envoy's log (istio-start.sh appends its stderr).
pub const ISTIO_ERR_LOG: &str = "/var/log/istio/istio.err.log";

/// vmagent's own state: journal, backups, lock, last applied identity.
pub const STATE_DIR: &str = "/var/lib/vmagent";

/// A file vmagent generates (not a bundle member): where, mode and owner.
#[derive(Debug, Clone, Copy)]
pub struct GeneratedSpec {
    /// System path (for [`TOKEN_STORE`], a name inside the state directory).
    pub path: &'static str,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub owner: Owner,
}

/// vmagent's copy of the token in force, in its state directory (0700, root's): the
/// source the boot rule copies from. Refreshed by every apply that installs a token.
/// Root-only: the token is a credential, and only systemd-tmpfiles (root) reads it.
pub const TOKEN_STORE: GeneratedSpec = GeneratedSpec {
    path: "istio-token",
    mode: 0o600,
    owner: Owner::Root,
};

/// The systemd-tmpfiles rule that puts the token back on the /run tmpfs at every boot
/// (`C`: copied from [`TOKEN_STORE`] if absent, then given the token's mode and owner),
/// so a VM onboarded by `vmagent apply` alone boots back into the mesh without the
/// daemon. It names paths only, never the token itself, hence world-readable like
/// every tmpfiles.d file.
pub const TMPFILES_RULE: GeneratedSpec = GeneratedSpec {
    path: "/etc/tmpfiles.d/vmagent-istio-token.conf",
    mode: 0o644,
    owner: Owner::Root,
};

/// logrotate's drop-in directory: present where logrotate is installed.
pub const LOGROTATE_DIR: &str = "/etc/logrotate.d";

/// The logrotate rule for the sidecar's logs ([`ISTIO_LOG`], [`ISTIO_ERR_LOG`]): the
/// istio-sidecar package installs none, so istio.log grows forever on a long-lived VM.
/// Paths and sizes only, root's and world-readable like every logrotate.d file.
pub const LOGROTATE_RULE: GeneratedSpec = GeneratedSpec {
    path: "/etc/logrotate.d/vmagent-istio",
    mode: 0o644,
    owner: Owner::Root,
};

/// System path of [`TOKEN_STORE`] under a state directory.
pub fn token_store(state_dir: &Path) -> String {
    state_dir.join(TOKEN_STORE.path).display().to_string()
}

/// The destinations whose originals vmagent records before writing them and puts
/// back on uninstall (see `pristine`): the installed files, the proxy's certificates,
/// the boot rule and the logrotate rule.
pub fn recorded_files() -> Vec<&'static str> {
    let mut files: Vec<&str> = FILES.iter().map(|f| f.path).collect();
    files.extend(PROXY_CERTS);
    files.push(TMPFILES_RULE.path);
    files.push(LOGROTATE_RULE.path);
    files.sort_unstable();
    files.dedup();
    files
}

/// Downloaded packages, by sha256.
pub const CACHE_DIR: &str = "/var/cache/vmagent";

/// Mode of a certificate directory cluster.env names (OUTPUT_CERTS, PROV_CERT) that
/// vmagent creates for istio-proxy, like the package's /etc/certs.
pub const CERT_DIR_MODE: u32 = 0o755;

/// Mode of directories vmagent creates as plain parents (e.g. /var/lib).
pub const PARENT_MODE: u32 = 0o755;

/// Mode of the state directory: it holds backups of secrets.
pub const STATE_MODE: u32 = 0o700;

/// Whether a directory is vmagent's to chown: one of [`DIRS`], or inside the package's
/// home /var/lib/istio (where the package's `/etc/istio` link points).
pub fn is_managed_dir(sys: &str) -> bool {
    let (_, home) = ETC_ISTIO;
    DIRS.iter().any(|d| d.path == sys)
        || sys
            .strip_prefix(home)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The layout entry of a member.
pub fn file_for(member: Member) -> Option<&'static FileSpec> {
    FILES.iter().find(|f| f.member == member)
}

/// True for `/`, the top-level directories, users' homes, the shared system directories
/// under them (/var/lib, /var/cache, /usr/local, ...) and anything under /proc, /sys, /dev:
/// places other software keeps files in, never vmagent's own `[paths]`.
pub fn system_dir(p: &Path) -> bool {
    // Shared directories below the top level (those are all refused).
    const SHARED: &str = "\
        /etc/vmagent /etc/systemd /run/lock /run/user /run/systemd /usr/bin \
        /usr/include /usr/lib /usr/lib32 /usr/lib64 /usr/libexec /usr/local \
        /usr/local/bin /usr/local/lib /usr/local/sbin /usr/local/share /usr/sbin \
        /usr/share /usr/src /var/backups /var/cache /var/lib /var/local /var/lock \
        /var/log /var/mail /var/opt /var/run /var/spool /var/tmp /var/lib/dpkg \
        /var/lib/rpm /var/lib/istio /var/lib/systemd /var/cache/apt /var/cache/dnf \
        /var/cache/yum";
    // Relative, without the root and any `.`: `var/lib`.
    let plain: PathBuf = p
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    let top = plain
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy());
    let top = top.as_deref().unwrap_or("");
    match plain.components().count() {
        0 | 1 => true,
        2 if top == "home" => true,
        _ => {
            ["proc", "sys", "dev"].contains(&top)
                || SHARED
                    .split_ascii_whitespace()
                    .any(|s| Path::new(s.trim_start_matches('/')) == plain)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_system_directories_are_recognised() {
        let bad =
            "/ /var/lib /var/cache/ /var /tmp /etc /home /root /run /usr/local /var/lib/dpkg \
            /proc/self /home/admin /var/./lib";
        for bad in bad.split_ascii_whitespace() {
            assert!(system_dir(Path::new(bad)), "{bad}");
        }
        for good in "/var/lib/vmagent /srv/vmagent/state /opt/vmagent/cache".split(' ') {
            assert!(!system_dir(Path::new(good)), "{good}");
        }
    }

    #[test]
    fn every_member_has_one_destination() {
        for m in Member::ALL {
            if m != Member::Hosts {
                assert_eq!(FILES.iter().filter(|f| f.member == m).count(), 1, "{m:?}");
            }
        }
    }

    #[test]
    fn secrets_are_private() {
        for f in FILES.iter().filter(|f| f.member.secret()) {
            assert_eq!(f.mode & 0o077, 0, "{}", f.path);
        }
    }
}
