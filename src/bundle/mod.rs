//! The bundle: what `istioctl x workload entry configure` produced, read safely and
//! parsed into typed, validated values.

pub mod archive;
pub mod cluster_env;
pub mod dnsmasq;
pub mod env_keys;
pub mod hosts;
pub mod mesh;
pub mod pem;
pub mod root_cert;
pub mod token;

use std::collections::BTreeMap;
use std::path::Path;

use thiserror::Error;

pub use archive::{Limits, PackageFile};

/// Why a bundle was refused. Every variant names the bundle or the member.
#[derive(Debug, Error)]
pub enum BundleError {
    /// The bundle as a whole.
    #[error("bundle '{path}': {reason}")]
    Source {
        /// The bundle path as given.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// One member.
    #[error("bundle member '{member}'{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Member {
        /// Member name as found in the bundle.
        member: String,
        /// 1-based line, when the problem is on one line.
        line: Option<usize>,
        /// What is wrong, and what to do.
        reason: String,
    },
}

impl BundleError {
    pub(crate) fn source(path: &str, reason: String) -> Self {
        BundleError::Source {
            path: printable(path, 256),
            reason: printable(&reason, 512),
        }
    }
    pub(crate) fn member(member: &str, reason: String) -> Self {
        BundleError::Member {
            member: printable(member, 128),
            line: None,
            reason: printable(&reason, 512),
        }
    }
}

/// Makes text taken from the bundle safe to print as one terminal line: control
/// characters (newlines, escape sequences) are escaped and the length is bounded, so a
/// member name cannot forge extra output lines or drive the operator's terminal.
pub fn printable(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A parse failure inside one member; the caller adds the member name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberError {
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// The reason.
    pub reason: String,
}

impl MemberError {
    pub(crate) fn new(reason: String) -> Self {
        MemberError { line: None, reason }
    }
    pub(crate) fn at(line: usize, reason: String) -> Self {
        MemberError {
            line: Some(line),
            reason,
        }
    }
    fn into_bundle(self, member: Member) -> BundleError {
        BundleError::Member {
            member: member.name().to_string(),
            line: self.line,
            reason: printable(&self.reason, 512),
        }
    }
}

/// The files a bundle may carry besides packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    /// cluster.env
    ClusterEnv,
    /// istio-token
    Token,
    /// mesh.yaml
    Mesh,
    /// root-cert.pem
    RootCert,
    /// hosts
    Hosts,
    /// Legacy (Istio <= 1.4) cert-chain.pem
    CertChain,
    /// Legacy key.pem
    Key,
    /// Legacy (Istio 1.0 mesh expansion) `kubedns`: a dnsmasq file.
    KubeDns,
}

impl Member {
    /// Every member, required ones first.
    pub const ALL: [Member; 8] = [
        Member::ClusterEnv,
        Member::Token,
        Member::Mesh,
        Member::RootCert,
        Member::Hosts,
        Member::CertChain,
        Member::Key,
        Member::KubeDns,
    ];

    /// The file name in the bundle.
    pub fn name(self) -> &'static str {
        match self {
            Member::ClusterEnv => "cluster.env",
            Member::Token => "istio-token",
            Member::Mesh => "mesh.yaml",
            Member::RootCert => "root-cert.pem",
            Member::Hosts => "hosts",
            Member::CertChain => "cert-chain.pem",
            Member::Key => "key.pem",
            Member::KubeDns => "kubedns",
        }
    }

    /// The member with this file name.
    pub fn from_name(name: &str) -> Option<Member> {
        Member::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether a bundle must hold it. istioctl always writes the first five; a legacy
    /// mesh-expansion bundle (Istio <= 1.4: cert-chain.pem and key.pem instead of a
    /// token) has no token or mesh.yaml, and Istio 1.0's used dnsmasq instead of hosts.
    pub fn required(self, legacy: bool) -> bool {
        match self {
            Member::ClusterEnv | Member::RootCert => true,
            Member::Token | Member::Mesh | Member::Hosts => !legacy,
            Member::CertChain | Member::Key | Member::KubeDns => false,
        }
    }

    /// Whether its content must never be shown.
    pub fn secret(self) -> bool {
        matches!(self, Member::Token | Member::Key)
    }
}

/// Options that change validation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Accept an expired token (e.g. the workload certificate is still valid).
    pub allow_expired_token: bool,
    /// Unix seconds to judge expiry against.
    pub now: i64,
}

/// A validated bundle.
#[derive(Debug)]
pub struct Bundle {
    /// Raw bytes of each present member, installed byte-for-byte.
    pub files: BTreeMap<Member, Vec<u8>>,
    /// cluster.env, parsed.
    pub cluster_env: cluster_env::ClusterEnv,
    /// mesh.yaml, parsed.
    pub mesh: mesh::Mesh,
    /// Token claims.
    pub token: token::Token,
    /// Root certificate(s).
    pub root_cert: root_cert::RootCert,
    /// Hosts entries.
    pub hosts: Vec<hosts::Entry>,
    /// Package members (used by the package step).
    pub packages: Vec<PackageFile>,
    /// Non-fatal findings, one line each.
    pub warnings: Vec<String>,
}

impl Bundle {
    /// Reads and validates the bundle at `path` (tar, tar.gz or directory).
    pub fn open(path: &Path, opts: ReadOptions) -> Result<Bundle, BundleError> {
        Self::from_raw(archive::open(path, Limits::default())?, opts)
    }

    /// Validates members already read.
    pub fn from_raw(raw: archive::RawBundle, opts: ReadOptions) -> Result<Bundle, BundleError> {
        let mut files = BTreeMap::new();
        for (name, data) in raw.files {
            if let Some(m) = Member::from_name(&name) {
                files.insert(m, data);
            }
        }
        let legacy = files.contains_key(&Member::CertChain)
            && files.contains_key(&Member::Key)
            && !files.contains_key(&Member::Token);
        for m in Member::ALL {
            if m.required(legacy) && !files.contains_key(&m) {
                return Err(BundleError::member(
                    m.name(),
                    "missing; the bundle must hold the five files `istioctl x workload entry configure` writes (cluster.env, istio-token, mesh.yaml, root-cert.pem, hosts), or for a legacy mesh-expansion bundle cluster.env, root-cert.pem, cert-chain.pem and key.pem".into(),
                ));
            }
        }
        let get = |m: Member| files.get(&m).map(Vec::as_slice).unwrap_or_default();
        let mut warnings: Vec<String> = raw
            .ignored
            .iter()
            .map(|n| format!("bundle member '{n}' is not a file vmagent knows; ignored"))
            .collect();
        let mesh = match files.get(&Member::Mesh) {
            Some(data) => {
                let (mesh, w) = mesh::parse(data).map_err(|e| e.into_bundle(Member::Mesh))?;
                warnings.extend(w);
                mesh
            }
            None => mesh::Mesh::default(),
        };
        let (cluster_env, w) =
            cluster_env::parse(get(Member::ClusterEnv), &mesh.proxy_metadata_keys)
                .map_err(|e| e.into_bundle(Member::ClusterEnv))?;
        warnings.extend(w);
        let token = match files.get(&Member::Token) {
            Some(data) => {
                let (token, w) = token::parse(data, opts.now, opts.allow_expired_token)
                    .map_err(|e| e.into_bundle(Member::Token))?;
                warnings.extend(w);
                token
            }
            None => token::Token::default(),
        };
        let (root_cert, w) = root_cert::parse(get(Member::RootCert), opts.now)
            .map_err(|e| e.into_bundle(Member::RootCert))?;
        warnings.extend(w);
        let hosts = match files.get(&Member::Hosts) {
            Some(data) => {
                let (hosts, w) = hosts::parse(data).map_err(|e| e.into_bundle(Member::Hosts))?;
                warnings.extend(w);
                hosts
            }
            None => Vec::new(),
        };
        if let Some(data) = files.get(&Member::KubeDns) {
            dnsmasq::parse(data).map_err(|e| e.into_bundle(Member::KubeDns))?;
        }
        if legacy {
            warnings.push("legacy mesh-expansion bundle (cert-chain.pem and key.pem, no istio-token): the workload certificate is installed from the bundle and lasts until its own expiry; a current istiod issues certificates only for a token, so generate a bundle with `istioctl x workload entry configure` when you can".into());
        }
        match (files.get(&Member::CertChain), files.get(&Member::Key)) {
            (None, None) => {}
            (Some(chain), Some(key)) => {
                pem::certificates(chain, "the workload certificate chain")
                    .map_err(|e| e.into_bundle(Member::CertChain))?;
                check_key(key).map_err(|e| e.into_bundle(Member::Key))?;
            }
            (Some(_), None) => {
                return Err(BundleError::member(
                    "key.pem",
                    "missing while cert-chain.pem is present; legacy bundles need both".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(BundleError::member(
                    "cert-chain.pem",
                    "missing while key.pem is present; legacy bundles need both".into(),
                ))
            }
        }
        if raw.packages.len() > 1 {
            let names: Vec<&str> = raw.packages.iter().map(|p| p.name.as_str()).collect();
            warnings.push(format!("bundle holds {} packages ({}); the package step picks the one for this OS and architecture", names.len(), names.join(", ")));
        }
        Ok(Bundle {
            files,
            cluster_env,
            mesh,
            token,
            root_cert,
            hosts,
            packages: raw.packages,
            warnings,
        })
    }
}

/// key.pem: exactly one private key block.
fn check_key(data: &[u8]) -> Result<(), MemberError> {
    let blocks = pem::blocks(data)?;
    match blocks.as_slice() {
        [b] if b.label.ends_with("PRIVATE KEY") && !b.der.is_empty() => Ok(()),
        [b] => Err(MemberError::at(
            b.line,
            format!("{} block found; key.pem must hold one PRIVATE KEY", b.label),
        )),
        _ => Err(MemberError::new(
            "must hold exactly one PRIVATE KEY block".into(),
        )),
    }
}
