//! Signed bundles (`[trust]`): a bundle may come with a detached OpenSSH signature
//! beside it (`BUNDLE.sig`), made with `ssh-keygen -Y sign -n vmagent-bundle -f KEY
//! bundle.tar`. With `require_signature`, `apply` and the daemon refuse an unsigned or
//! wrongly signed bundle before reading any of its members; `check` says who signed it.
//!
//! The cryptography is OpenSSH's own (`ssh-keygen -Y find-principals` and `-Y verify`,
//! OpenSSH 8.2 or later, run through the one process runner): the allowed_signers
//! format with its options (`namespaces=`, `valid-after=`, `valid-before=`,
//! `cert-authority`) and revocation (`-r`) mean exactly what they mean to OpenSSH. What
//! vmagent reads itself ([`sshsig`]: the signer's key and namespace, the principals,
//! the revoked keys) only makes the refusals precise; which one applies is decided by
//! [`judge`], a pure function.

pub mod sshsig;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::config::TrustConfig;
use crate::root::Root;

/// The namespace bundles are signed for (`ssh-keygen -Y sign -n vmagent-bundle`).
pub const NAMESPACE: &str = "vmagent-bundle";

/// How long one ssh-keygen may take (it reads the bundle once).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The largest signature or trust file read (they are a few hundred bytes).
const MAX_FILE: u64 = 1 << 20;

/// Who signed a bundle, after OpenSSH verified it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signer {
    /// The principal of allowed_signers the key belongs to.
    pub principal: String,
    /// The key's type (`ssh-ed25519`, ...).
    pub key_type: String,
    /// The key's fingerprint (`SHA256:...`).
    pub fingerprint: String,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} key {})",
            self.principal, self.key_type, self.fingerprint
        )
    }
}

/// What the trust check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No `[trust] allowed_signers`: signatures are not looked at.
    NotConfigured,
    /// No signature, and none required.
    Unsigned,
    /// A good signature from an allowed signer.
    Signed(Signer),
}

/// A bundle refused, or the check unable to run.
#[derive(Debug, Error)]
pub enum TrustError {
    /// No signature where one is required.
    #[error("{bundle}: unsigned, and [trust] require_signature is on; nothing was changed. To fix: sign it with `ssh-keygen -Y sign -n {NAMESPACE} -f KEY {bundle}` as one of: {expected} (allowed signers in {signers}), and put {bundle}.sig beside it")]
    Unsigned {
        /// The bundle.
        bundle: String,
        /// The principals allowed to sign.
        expected: String,
        /// The allowed_signers file.
        signers: String,
    },
    /// A signature for something else than a bundle.
    #[error("{sig}: made for namespace '{got}', not '{NAMESPACE}'; nothing was changed. To fix: sign the bundle with `ssh-keygen -Y sign -n {NAMESPACE} ...`")]
    Namespace {
        /// The signature file.
        sig: String,
        /// Its namespace.
        got: String,
    },
    /// Signed by a key allowed_signers does not list (or not for this time/namespace).
    #[error("{sig}: signed by {key_type} key {fingerprint}, which is not an allowed signer for {NAMESPACE} now; expected one of: {expected} (in {signers}); nothing was changed")]
    UnknownSigner {
        /// The signature file.
        sig: String,
        /// The key's type.
        key_type: String,
        /// The key's fingerprint.
        fingerprint: String,
        /// The principals allowed to sign.
        expected: String,
        /// The allowed_signers file.
        signers: String,
    },
    /// Signed by a revoked key.
    #[error("{sig}: signed by {key_type} key {fingerprint}, which is revoked in {revoked}; nothing was changed. To fix: sign the bundle again with a current key (one of: {expected})")]
    Revoked {
        /// The signature file.
        sig: String,
        /// The key's type.
        key_type: String,
        /// The key's fingerprint.
        fingerprint: String,
        /// The revoked-keys file.
        revoked: String,
        /// The principals allowed to sign.
        expected: String,
    },
    /// The signature does not match the bundle's bytes.
    #[error("{bundle}: the signature in {sig} by {principal} does not match the bundle (changed after signing, or signed over another file); nothing was changed. To fix: get the bundle and its .sig again from the signer")]
    Mismatch {
        /// The bundle.
        bundle: String,
        /// The signature file.
        sig: String,
        /// The principal allowed_signers names for the key.
        principal: String,
    },
    /// The signature file is not an SSH signature.
    #[error("{sig}: not a usable SSH signature ({reason}); nothing was changed")]
    Damaged {
        /// The signature file.
        sig: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Signatures are over an archive's bytes; a directory has none.
    #[error("{bundle}: a directory cannot carry a signature; nothing was changed. To fix: sign and pass the bundle as a .tar or .tar.gz")]
    Directory {
        /// The bundle.
        bundle: String,
    },
    /// The trust configuration cannot be used.
    #[error("[trust]: {0}")]
    Config(String),
    /// A trust file or the bundle could not be read.
    #[error("cannot read {path}: {reason}; nothing was changed")]
    Read {
        /// Which file.
        path: String,
        /// Why.
        reason: String,
    },
    /// ssh-keygen could not be run.
    #[error("cannot check the bundle's signature: {0}. To fix: install OpenSSH's client tools (apt-get install openssh-client, or dnf install openssh)")]
    Tool(String),
}

impl TrustError {
    /// The exit code: a refused bundle is invalid input (2); a check that cannot run
    /// is a missing prerequisite (4).
    pub fn exit_code(&self) -> u8 {
        match self {
            TrustError::Config(_) | TrustError::Read { .. } | TrustError::Tool(_) => {
                crate::exit::PREREQUISITE
            }
            _ => crate::exit::INVALID,
        }
    }
}

/// Where a bundle's signature is: the same path with `.sig` appended.
pub fn sig_path(bundle: &Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_os_string();
    s.push(".sig");
    PathBuf::from(s)
}

/// Checks `bundle` (a host path) against `[trust]`; reads the bundle's bytes only
/// through ssh-keygen, never its members.
pub fn verify(root: &Root, cfg: &TrustConfig, bundle: &Path) -> Result<Verdict, TrustError> {
    let Some(signers_sys) = &cfg.allowed_signers else {
        return match cfg.require_signature {
            true => Err(TrustError::Config(
                "require_signature = true needs allowed_signers = \"/etc/vmagent/allowed_signers\" (OpenSSH allowed_signers format)".into(),
            )),
            false => Ok(Verdict::NotConfigured),
        };
    };
    let resolve = |sys: &Path| {
        root.resolve(sys)
            .map_err(|e| TrustError::Config(e.to_string()))
    };
    let signers = resolve(signers_sys)?;
    trusted_file(&signers)?;
    let Some(signers_data) = read(&signers)? else {
        return Err(TrustError::Config(format!(
            "allowed_signers {} does not exist; create it (root-owned, not writable by others) with a line `PRINCIPAL namespaces=\"{NAMESPACE}\" KEYTYPE BASE64KEY` per signer",
            signers.display()
        )));
    };
    let signers_text = String::from_utf8_lossy(&signers_data).into_owned();
    let expected = sshsig::principals(&signers_text);
    if expected.is_empty() {
        return Err(TrustError::Config(format!(
            "{} lists no signer; add a line `PRINCIPAL namespaces=\"{NAMESPACE}\" KEYTYPE BASE64KEY` per signer",
            signers.display()
        )));
    }
    let expected = expected.join(", ");
    let shown = bundle.display().to_string();
    if bundle.is_dir() {
        return match cfg.require_signature {
            true => Err(TrustError::Directory { bundle: shown }),
            false => Ok(Verdict::Unsigned),
        };
    }
    let sig = sig_path(bundle);
    let sig_shown = sig.display().to_string();
    let Some(armored) = read(&sig)? else {
        return match cfg.require_signature {
            true => Err(TrustError::Unsigned {
                bundle: shown,
                expected,
                signers: signers.display().to_string(),
            }),
            false => Ok(Verdict::Unsigned),
        };
    };
    let info = sshsig::parse(&armored).map_err(|reason| TrustError::Damaged {
        sig: sig_shown.clone(),
        reason,
    })?;
    let revoked = cfg.revoked_keys.as_deref().map(resolve).transpose()?;
    let revoked_list = match &revoked {
        Some(r) => {
            trusted_file(r)?;
            let data = read(r)?.ok_or_else(|| {
                TrustError::Config(format!(
                    "revoked_keys {} does not exist (an empty file revokes nothing)",
                    r.display()
                ))
            })?;
            Some(sshsig::revoked_fingerprints(&data))
        }
        None => None,
    };
    let principal = find_principal(&sig, &signers)?;
    let verified = match &principal {
        Some(p) => verify_with(bundle, &sig, &signers, revoked.as_deref(), p)?,
        None => false,
    };
    let facts = Facts {
        namespace_ok: info.namespace == NAMESPACE,
        revoked: revoked_list.is_some_and(|l| l.contains(&info.fingerprint)),
        principal,
        verified,
    };
    judge(facts, info, || Context {
        bundle: shown,
        sig: sig_shown,
        signers: signers.display().to_string(),
        revoked: revoked.map(|r| r.display().to_string()).unwrap_or_default(),
        expected,
    })
}

/// What was found out about one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// It was made for [`NAMESPACE`].
    pub namespace_ok: bool,
    /// Its key is in the revoked list.
    pub revoked: bool,
    /// The allowed_signers principal of its key (`find-principals`), if any.
    pub principal: Option<String>,
    /// `ssh-keygen -Y verify` accepted it for that principal.
    pub verified: bool,
}

/// Names for the messages.
pub struct Context {
    bundle: String,
    sig: String,
    signers: String,
    revoked: String,
    expected: String,
}

/// The verdict from the facts, most specific refusal first: a revoked key, a signature
/// for another namespace, a key nobody allowed, bytes that do not match.
pub fn judge(
    facts: Facts,
    info: sshsig::SigInfo,
    ctx: impl FnOnce() -> Context,
) -> Result<Verdict, TrustError> {
    let c = ctx();
    if facts.revoked {
        return Err(TrustError::Revoked {
            sig: c.sig,
            key_type: info.key_type,
            fingerprint: info.fingerprint,
            revoked: c.revoked,
            expected: c.expected,
        });
    }
    if !facts.namespace_ok {
        return Err(TrustError::Namespace {
            sig: c.sig,
            got: info.namespace,
        });
    }
    let Some(principal) = facts.principal else {
        return Err(TrustError::UnknownSigner {
            sig: c.sig,
            key_type: info.key_type,
            fingerprint: info.fingerprint,
            expected: c.expected,
            signers: c.signers,
        });
    };
    if !facts.verified {
        return Err(TrustError::Mismatch {
            bundle: c.bundle,
            sig: c.sig,
            principal,
        });
    }
    Ok(Verdict::Signed(Signer {
        principal,
        key_type: info.key_type,
        fingerprint: info.fingerprint,
    }))
}

/// Who may sign is decided by these files: anyone who can change them can add a
/// signer (or take a revocation back), so they must be root's and not writable by
/// others. Reading them is harmless (public keys).
fn trusted_file(path: &Path) -> Result<(), TrustError> {
    let meta = crate::fsx::meta(path).map_err(|e| TrustError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let Some(m) = meta else { return Ok(()) };
    let problem = match crate::fsx::program_verdict(m.uid, m.mode) {
        crate::fsx::Verdict::Good => return Ok(()),
        crate::fsx::Verdict::NotRoot(uid) => {
            format!("owned by uid {uid}, not root: chown root:root")
        }
        crate::fsx::Verdict::Open(mode) => {
            format!("mode {mode:04o} lets other users change it: chmod go-w")
        }
    };
    Err(TrustError::Config(format!(
        "{} decides who may sign bundles but is {problem} {}",
        path.display(),
        path.display()
    )))
}

/// A small file's bytes; `None` when it does not exist.
fn read(path: &Path) -> Result<Option<Vec<u8>>, TrustError> {
    crate::fsx::read_file(path, MAX_FILE).map_err(|e| TrustError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn keygen(
    args: &[&std::ffi::OsStr],
    stdin: Option<File>,
) -> Result<crate::cmd::Output, TrustError> {
    let mut c = crate::cmd::command("ssh-keygen");
    c.args(args);
    if let Some(f) = stdin {
        c.stdin(f);
    }
    crate::cmd::run(&mut c, TIMEOUT).map_err(|e| TrustError::Tool(e.to_string()))
}

/// The first principal allowed_signers lists for the signature's key (valid now), if any.
fn find_principal(sig: &Path, signers: &Path) -> Result<Option<String>, TrustError> {
    let o = keygen(
        &[
            "-Y".as_ref(),
            "find-principals".as_ref(),
            "-s".as_ref(),
            sig.as_os_str(),
            "-f".as_ref(),
            signers.as_os_str(),
        ],
        None,
    )?;
    if !o.status.success() {
        return Ok(None);
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(String::from))
}

/// `ssh-keygen -Y verify` of the bundle's bytes (on stdin) for `principal`.
fn verify_with(
    bundle: &Path,
    sig: &Path,
    signers: &Path,
    revoked: Option<&Path>,
    principal: &str,
) -> Result<bool, TrustError> {
    let data = File::open(bundle).map_err(|e| TrustError::Read {
        path: bundle.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "-Y".as_ref(),
        "verify".as_ref(),
        "-f".as_ref(),
        signers.as_os_str(),
        "-I".as_ref(),
        principal.as_ref(),
        "-n".as_ref(),
        NAMESPACE.as_ref(),
        "-s".as_ref(),
        sig.as_os_str(),
    ];
    if let Some(r) = revoked {
        args.extend(["-r".as_ref(), r.as_os_str()]);
    }
    Ok(keygen(&args, Some(data))?.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> sshsig::SigInfo {
        sshsig::SigInfo {
            key_type: "ssh-ed25519".into(),
            fingerprint: "SHA256:abc".into(),
            namespace: NAMESPACE.into(),
        }
    }

    fn ctx() -> Context {
        Context {
            bundle: "b.tar".into(),
            sig: "b.tar.sig".into(),
            signers: "/etc/vmagent/allowed_signers".into(),
            revoked: "/etc/vmagent/revoked_keys".into(),
            expected: "ops@example.com".into(),
        }
    }

    fn facts(ns: bool, revoked: bool, principal: Option<&str>, verified: bool) -> Facts {
        Facts {
            namespace_ok: ns,
            revoked,
            principal: principal.map(String::from),
            verified,
        }
    }

    #[test]
    fn each_refusal_in_order() {
        let j = |f| judge(f, info(), ctx);
        assert!(matches!(
            j(facts(true, false, Some("ops@example.com"), true)),
            Ok(Verdict::Signed(s)) if s.principal == "ops@example.com"
        ));
        assert!(matches!(
            j(facts(false, true, None, false)),
            Err(TrustError::Revoked { .. })
        ));
        assert!(matches!(
            j(facts(false, false, Some("x"), false)),
            Err(TrustError::Namespace { .. })
        ));
        assert!(matches!(
            j(facts(true, false, None, false)),
            Err(TrustError::UnknownSigner { .. })
        ));
        assert!(matches!(
            j(facts(true, false, Some("x"), false)),
            Err(TrustError::Mismatch { .. })
        ));
    }

    #[test]
    fn messages_name_the_expected_signer_and_the_fix() {
        let e = judge(facts(true, false, None, false), info(), ctx).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("expected one of: ops@example.com"), "{m}");
        assert!(m.contains("SHA256:abc"), "{m}");
        assert_eq!(e.exit_code(), crate::exit::INVALID);
        assert_eq!(sig_path(Path::new("/b/x.tar")), Path::new("/b/x.tar.sig"));
    }
}
