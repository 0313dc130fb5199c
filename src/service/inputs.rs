//! What the istio service read when vmagent last (re)started it: a digest per input, kept
//! in the state dir. The service is restarted only when one differs, and the restart
//! says which. Comparing against the record (not against "did this apply write a file")
//! also catches an earlier apply that changed files and was interrupted before its
//! restart.
//!
//! Inputs: the bundle files the agent reads at start (cluster.env, mesh, root-cert.pem,
//! the token's identity: see [`token_identity`]), the package's sidecar.env and unit, and the package's programs (by inode,
//! size and mtime: an upgrade replaces them; hashing a 100 MB Envoy on every apply would
//! not be cheap). cert-chain.pem and key.pem are left out: the agent itself rewrites
//! them on every renewal.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ServiceError, UNIT};
use crate::bundle::Member;
use crate::layout;
use crate::root::Root;

/// File name of the record in the state dir.
pub const FILE: &str = "service-inputs.json";

/// The package's files istio-start.sh and the agent read.
const PACKAGE_FILES: &[&str] = &[
    "/var/lib/istio/envoy/sidecar.env",
    "/var/lib/istio/envoy/envoy_bootstrap_tmpl.json",
];

/// The package's programs, identified by inode, size and mtime.
const PROGRAMS: &[&str] = &[
    "/usr/local/bin/pilot-agent",
    "/usr/local/bin/envoy",
    "/usr/local/bin/istio-start.sh",
];

/// Digests of the service's inputs, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Schema version.
    pub version: u32,
    /// Input name -> digest (`absent` when missing).
    pub inputs: BTreeMap<String, String>,
}

impl Record {
    /// Host path of the record.
    pub fn path(root: &Root) -> Result<PathBuf, ServiceError> {
        root.resolve(&root.state_dir().join(FILE))
            .map_err(|e| ServiceError::Record {
                path: root.state_dir().display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Reads the record, as untrusted input; a missing or damaged one (not JSON,
    /// another schema version, more or longer entries than vmagent writes) reads as none
    /// (the service is then restarted once, which is safe).
    pub fn load(path: &Path) -> Option<Record> {
        let data = crate::fsx::read_file(path, 64 * 1024).ok()??;
        let r: Record = serde_json::from_slice(&data).ok()?;
        let sane = r.version == 1
            && r.inputs.len() <= 64
            && r.inputs
                .iter()
                .all(|(k, v)| k.len() <= 256 && v.len() <= 256);
        sane.then_some(r)
    }

    /// Writes the record atomically (root only: it is vmagent's bookkeeping).
    pub fn store(&self, path: &Path) -> Result<(), ServiceError> {
        crate::fsx::write_json(path, self, 0o600).map_err(|e| ServiceError::Record {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// The current digests of the inputs under `root`.
pub fn digest(root: &Root) -> Record {
    let mut inputs = BTreeMap::new();
    for f in layout::FILES {
        // kubedns is dnsmasq's input, not the proxy's (dnsmasq is restarted for it).
        if matches!(f.member, Member::CertChain | Member::Key | Member::KubeDns) {
            continue;
        }
        let digest = match f.member {
            Member::Token => token_identity(root, f.path),
            _ => content(root, f.path),
        };
        inputs.insert(f.member.name().to_string(), digest);
    }
    for p in PACKAGE_FILES {
        inputs.insert(p.to_string(), content(root, p));
    }
    let unit = super::unit_file(root, UNIT);
    inputs.insert(
        UNIT.to_string(),
        unit.map_or_else(|| "absent".to_string(), |p| content(root, &p)),
    );
    for p in PROGRAMS {
        let id = root
            .resolve(Path::new(p))
            .ok()
            .and_then(|h| std::fs::metadata(h).ok())
            .map_or_else(
                || "absent".to_string(),
                |m| {
                    format!(
                        "ino {} size {} mtime {}.{}",
                        m.ino(),
                        m.size(),
                        m.mtime(),
                        m.mtime_nsec()
                    )
                },
            );
        inputs.insert(p.to_string(), id);
    }
    Record { version: 1, inputs }
}

/// The token counts by the identity it carries, not by its bytes: pilot-agent reads the
/// token file afresh for every CA request (README, "How pilot-agent renews":
/// `security/pkg/credentialfetcher/plugin/token.go`), so a renewed token for the same
/// `sub` (a token provider's refresh, a new bundle's token) needs no restart, while a new
/// identity does (the running agent holds the old identity's certificate). A token
/// without a readable `sub` counts by its bytes.
fn token_identity(root: &Root, sys: &str) -> String {
    let sub = root
        .resolve(Path::new(sys))
        .ok()
        .and_then(|h| crate::fsx::read_file(&h, 64 * 1024).ok().flatten())
        .and_then(|d| crate::bundle::token::claims(&d).ok())
        .and_then(|t| t.sub);
    match sub {
        Some(sub) => format!(
            "identity {}",
            crate::text::hex(&Sha256::digest(sub.as_bytes()))
        ),
        None => content(root, sys),
    }
}

fn content(root: &Root, sys: &str) -> String {
    let data = root
        .resolve(Path::new(sys))
        .ok()
        .and_then(|h| std::fs::read(h).ok());
    match data {
        Some(d) => crate::text::hex(&Sha256::digest(&d)),
        None => "absent".into(),
    }
}

/// Names of the inputs that differ from the record (all, when there is none).
pub fn changed(before: Option<&Record>, now: &Record) -> Vec<String> {
    let Some(b) = before else {
        return vec!["no record of what the running service started with".into()];
    };
    now.inputs
        .iter()
        .filter(|(k, v)| b.inputs.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_record_vmagent_writes_is_read() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(FILE);
        let good = Record {
            version: 1,
            inputs: BTreeMap::from([("mesh".to_string(), "absent".to_string())]),
        };
        good.store(&p).unwrap();
        assert_eq!(Record::load(&p), Some(good));
        for bad in [
            "nonsense",
            r#"{"version":2,"inputs":{}}"#,
            &format!(
                r#"{{"version":1,"inputs":{{"mesh":"{}"}}}}"#,
                "a".repeat(300)
            ),
        ] {
            std::fs::write(&p, bad).unwrap();
            assert_eq!(Record::load(&p), None, "{bad}");
        }
    }
}
