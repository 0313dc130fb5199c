//! Whether a failure line ends `apply --wait` at once (final) or is only shown as the
//! current reason while waiting. The decision is per line and per machine: pilot-agent
//! goes on without a token while a valid workload certificate sits in OUTPUT_CERTS
//! (pilot/pkg/grpc/tls.go authenticates with the certificate and falls back to the token
//! only when it has expired), and a certificate it cannot *save* (the temp file of
//! pkg/file/file.go in OUTPUT_CERTS) still serves Envoy from memory, so the proxy becomes
//! ready anyway. [`is_final`] is pure; [`CertDir`] reads the machine.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::Failure;
use crate::bundle::cluster_env::{CertKey, DEFAULT_CERT_DIR};
use crate::root::Root;

/// What the machine says, besides the line, when a failure is judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context {
    /// OUTPUT_CERTS holds a workload certificate that is valid now.
    pub valid_cert: bool,
}

/// Whether `kind`, seen in `line`, is final given `ctx`.
pub fn is_final(kind: Failure, line: &str, ctx: &Context) -> bool {
    match kind {
        // The agent authenticates with its certificate while it is valid; the token is
        // needed again only when it lapses (REFERENCE 2, pilot/pkg/grpc/tls.go).
        Failure::TokenMissing => !ctx.valid_cert,
        // A certificate the agent cannot write out is still used from memory.
        Failure::PermissionDenied => !is_cert_output(line),
        k => k.definitive(),
    }
}

/// Whether the line is about the agent writing its certificate files to OUTPUT_CERTS:
/// security/pkg/nodeagent/cache/secretcache.go `error when output the resource`,
/// security/pkg/nodeagent/util `failed to write data to file %v`, or pkg/file/file.go's
/// temp file `<name>.tmp.<random>`.
pub fn is_cert_output(line: &str) -> bool {
    [
        "error when output the resource",
        "failed to write data to file",
        ".pem.tmp.",
    ]
    .iter()
    .any(|s| line.contains(s))
}

/// The certificate file the agent writes in OUTPUT_CERTS.
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// Whether `pem` (a cert-chain.pem) starts with a certificate valid at `now` (Unix
/// seconds). Anything unreadable is not valid: the agent could not use it either.
pub fn cert_valid_at(pem: &[u8], now: i64) -> bool {
    match crate::bundle::pem::certificates(pem, "the workload certificate") {
        Ok(certs) => certs
            .first()
            .is_some_and(|c| c.not_before <= now && now < c.not_after),
        Err(_) => false,
    }
}

/// The agent's certificate directory in a root, for the token decision.
#[derive(Debug, Clone)]
pub struct CertDir {
    /// The host path of OUTPUT_CERTS, when it resolves inside the root.
    dir: Option<PathBuf>,
}

impl CertDir {
    /// OUTPUT_CERTS from the installed cluster.env, read as istio-start.sh reads it (the
    /// default when the file is missing or unreadable; none when set empty: the agent
    /// then keeps its certificate in memory only).
    pub fn for_root(root: &Root) -> CertDir {
        let installed = crate::layout::file_for(crate::bundle::Member::ClusterEnv)
            .and_then(|spec| root.resolve(Path::new(spec.path)).ok())
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|data| {
                crate::bundle::cluster_env::parse(&data, &BTreeSet::new())
                    .map_err(|e| tracing::debug!(reason = %e.reason, "installed cluster.env: OUTPUT_CERTS taken as the default"))
                    .ok()
            });
        let dir = match installed {
            Some((env, _)) => env.cert_dir(CertKey::OutputCerts),
            None => Some(DEFAULT_CERT_DIR.to_string()),
        };
        CertDir {
            dir: dir.and_then(|d| root.resolve(Path::new(&d)).ok()),
        }
    }

    /// A given host directory (tests).
    pub fn at(dir: &Path) -> CertDir {
        CertDir {
            dir: Some(dir.to_path_buf()),
        }
    }

    /// What the directory says now.
    pub fn context(&self) -> Context {
        let valid_cert = self
            .dir
            .as_ref()
            .and_then(|d| std::fs::read(d.join(CERT_CHAIN)).ok())
            .is_some_and(|pem| cert_valid_at(&pem, crate::timefmt::now()));
        Context { valid_cert }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_CERT: Context = Context { valid_cert: false };
    const CERT: Context = Context { valid_cert: true };

    #[test]
    fn token_missing_is_final_only_without_a_valid_certificate() {
        let l = "warn\tfailed to fetch token from file: open /var/run/secrets/tokens/istio-token: no such file or directory";
        assert!(is_final(Failure::TokenMissing, l, &NO_CERT));
        assert!(!is_final(Failure::TokenMissing, l, &CERT));
    }

    #[test]
    fn a_denied_certificate_write_is_not_final_other_denials_are() {
        let tmp = "error\tcache\terror when output the resource: failed to write data to file key.pem: open etc/certs/key.pem.tmp.3487128755: permission denied";
        assert!(!is_final(Failure::PermissionDenied, tmp, &NO_CERT));
        let bare = "open /etc/certs/key.pem.tmp.12: permission denied";
        assert!(!is_final(Failure::PermissionDenied, bare, &NO_CERT));
        let boot =
            "failed to write bootstrap: open /etc/istio/proxy/envoy-rev.json: permission denied";
        assert!(is_final(Failure::PermissionDenied, boot, &NO_CERT));
        assert!(is_final(Failure::PermissionDenied, boot, &CERT));
    }

    #[test]
    fn other_kinds_follow_definitive() {
        for k in Failure::ALL {
            if matches!(k, Failure::TokenMissing | Failure::PermissionDenied) {
                continue;
            }
            assert_eq!(is_final(k, "x", &NO_CERT), k.definitive(), "{k:?}");
            assert_eq!(is_final(k, "x", &CERT), k.definitive(), "{k:?}");
        }
        assert!(is_final(Failure::SanMismatch, "x", &CERT));
        assert!(is_final(Failure::WorkloadGroupMissing, "x", &CERT));
        assert!(!is_final(Failure::XdsRejected, "x", &CERT));
        assert!(!is_final(Failure::PortConflict, "x", &CERT));
    }

    fn cert_pem(days_from: i64, days_to: i64) -> String {
        let mut p = rcgen::CertificateParams::new(vec!["vm".into()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::days(days_from);
        p.not_after = now + time::Duration::days(days_to);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn certificate_validity() {
        let now = crate::timefmt::now();
        assert!(cert_valid_at(cert_pem(-1, 1).as_bytes(), now));
        assert!(!cert_valid_at(cert_pem(-2, -1).as_bytes(), now));
        assert!(!cert_valid_at(cert_pem(1, 2).as_bytes(), now));
        assert!(!cert_valid_at(b"not a pem", now));
        assert!(!cert_valid_at(b"", now));
    }

    #[test]
    fn cert_dir_reads_cert_chain() {
        let t = tempfile::tempdir().unwrap();
        let d = CertDir::at(t.path());
        assert!(!d.context().valid_cert);
        std::fs::write(t.path().join(CERT_CHAIN), cert_pem(-1, 1)).unwrap();
        assert!(d.context().valid_cert);
        std::fs::write(t.path().join(CERT_CHAIN), cert_pem(-3, -1)).unwrap();
        assert!(!d.context().valid_cert);
    }
}
