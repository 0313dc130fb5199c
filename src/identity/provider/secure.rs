//! Files that decide which token is installed (the config, the credential, the token
//! file, the command) must be root's: anyone else who can read or change them could
//! take the workload's identity. The verdicts are pure; the checks lstat.

use std::path::Path;

use super::ProviderError;

pub use crate::fsx::{program_verdict, secret_verdict, Verdict};

fn refuse(host: &Path, v: Verdict, chmod: &str) -> Result<(), ProviderError> {
    let path = host.display().to_string();
    let (problem, fix) = match v {
        Verdict::Good => return Ok(()),
        Verdict::NotRoot(uid) => (
            format!("owned by uid {uid}, not root"),
            format!("chown root:root {path}"),
        ),
        Verdict::Open(mode) => (
            format!("mode {mode:04o} lets other users at it"),
            format!("chmod {chmod} {path}"),
        ),
    };
    Err(ProviderError::Insecure { path, problem, fix })
}

/// Checks a secret file; `required`: a missing one is an error too.
pub fn private_file(host: &Path, required: bool) -> Result<(), ProviderError> {
    let io = |source| ProviderError::Install {
        path: host.display().to_string(),
        source,
    };
    match crate::fsx::meta(host).map_err(io)? {
        None if required => Err(ProviderError::NotReady(format!(
            "{}: no such file; create it (root-owned, mode 0600)",
            host.display()
        ))),
        None => Ok(()),
        Some(m) => refuse(host, secret_verdict(m.uid, m.mode), "600"),
    }
}

/// Checks the command's program.
pub fn program(host: &Path) -> Result<(), ProviderError> {
    match crate::fsx::meta(host) {
        Ok(Some(m)) => refuse(host, program_verdict(m.uid, m.mode), "go-w"),
        Ok(None) => Err(ProviderError::NotReady(format!(
            "{}: no such program (token.command)",
            host.display()
        ))),
        Err(source) => Err(ProviderError::Install {
            path: host.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(secret_verdict(0, 0o600), Verdict::Good);
        assert_eq!(secret_verdict(0, 0o400), Verdict::Good);
        assert_eq!(secret_verdict(0, 0o640), Verdict::Open(0o640));
        assert_eq!(secret_verdict(0, 0o604), Verdict::Open(0o604));
        assert_eq!(secret_verdict(1000, 0o600), Verdict::NotRoot(1000));
        assert_eq!(program_verdict(0, 0o755), Verdict::Good);
        assert_eq!(program_verdict(0, 0o775), Verdict::Open(0o775));
        assert_eq!(program_verdict(5, 0o755), Verdict::NotRoot(5));
    }

    #[test]
    fn refusal_names_the_file_and_the_fix() {
        let e = refuse(Path::new("/etc/vmagent/cred"), Verdict::Open(0o644), "600").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/vmagent/cred: mode 0644 lets other users at it; fix: chmod 600 /etc/vmagent/cred"
        );
    }
}
