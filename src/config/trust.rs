//! `[trust]`: which bundles vmagent accepts. A bundle may come with a detached OpenSSH
//! signature beside it (`BUNDLE.sig`, `URL.sig`), made with
//! `ssh-keygen -Y sign -n vmagent-bundle -f KEY bundle.tar`; see `crate::trust`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[trust]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// OpenSSH allowed_signers file (a path inside the root): who may sign bundles.
    pub allowed_signers: Option<PathBuf>,
    /// Refuse a bundle without a good signature from an allowed signer.
    #[serde(default)]
    pub require_signature: bool,
    /// Keys no longer trusted (a path inside the root): public keys one per line, or an
    /// OpenSSH KRL, as `ssh-keygen -Y verify -r` takes them.
    pub revoked_keys: Option<PathBuf>,
}

impl TrustConfig {
    /// Shapes of the keys that are set (one line naming the key).
    pub fn validate(&self) -> Result<(), String> {
        for (key, p) in [
            ("trust.allowed_signers", &self.allowed_signers),
            ("trust.revoked_keys", &self.revoked_keys),
        ] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return Err(format!(
                        "{key} must be an absolute path (got '{}')",
                        p.display()
                    ));
                }
            }
        }
        Ok(())
    }
}
