//! The bundle: what `istioctl x workload entry configure` produced, read safely and
//! parsed into typed, validated values.

pub mod cluster_env;
pub mod hosts;
pub mod mesh;
pub mod pem;
pub mod root_cert;
pub mod source;
pub mod token;

use std::collections::BTreeMap;
use std::path::Path;

use thiserror::Error;

pub use source::{Limits, PackageFile};

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
}

impl Member {
    /// Every member, required ones first.
    pub const ALL: [Member; 7] = [
        Member::ClusterEnv,
        Member::Token,
        Member::Mesh,
        Member::RootCert,
        Member::Hosts,
        Member::CertChain,
        Member::Key,
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
        }
    }

    /// The member with this file name.
    pub fn from_name(name: &str) -> Option<Member> {
        Member::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether istioctl always writes it.
    pub fn required(self) -> bool {
        !matches!(self, Member::CertChain | Member::Key)
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
        Self::from_raw(source::open(path, Limits::default())?, opts)
    }

    /// Validates members already read.
    pub fn from_raw(raw: source::RawBundle, opts: ReadOptions) -> Result<Bundle, BundleError> {
        let mut files = BTreeMap::new();
        for (name, data) in raw.files {
            if let Some(m) = Member::from_name(&name) {
                files.insert(m, data);
            }
        }
        for m in Member::ALL {
            if m.required() && !files.contains_key(&m) {
                return Err(BundleError::member(
                    m.name(),
                    "missing; the bundle must hold the five files `istioctl x workload entry configure` writes (cluster.env, istio-token, mesh.yaml, root-cert.pem, hosts)".into(),
                ));
            }
        }
        let get = |m: Member| files.get(&m).map(Vec::as_slice).unwrap_or_default();
        let mut warnings: Vec<String> = raw
            .ignored
            .iter()
            .map(|n| format!("bundle member '{n}' is not a file vmagent knows; ignored"))
            .collect();
        let mesh = mesh::parse(get(Member::Mesh)).map_err(|e| e.into_bundle(Member::Mesh))?;
        let (cluster_env, w) =
            cluster_env::parse(get(Member::ClusterEnv), &mesh.proxy_metadata_keys)
                .map_err(|e| e.into_bundle(Member::ClusterEnv))?;
        warnings.extend(w);
        let (token, w) = token::parse(get(Member::Token), opts.now, opts.allow_expired_token)
            .map_err(|e| e.into_bundle(Member::Token))?;
        warnings.extend(w);
        let (root_cert, w) = root_cert::parse(get(Member::RootCert), opts.now)
            .map_err(|e| e.into_bundle(Member::RootCert))?;
        warnings.extend(w);
        let hosts = hosts::parse(get(Member::Hosts)).map_err(|e| e.into_bundle(Member::Hosts))?;
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
