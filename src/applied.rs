//! vmagent's record of what it last applied (under the state dir), used to detect an
//! identity change. Written inside the apply transaction like any other file.

use serde::{Deserialize, Serialize};

/// The applied state as recorded in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedIdentity {
    /// Schema version.
    pub version: u32,
    /// The token `sub` last applied (the workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sub: Option<String>,
}

/// File name of the state record inside the state dir.
pub const FILE: &str = "state.json";

impl AppliedIdentity {
    /// The state after applying a bundle whose token has `sub`.
    pub fn for_identity(sub: Option<&str>) -> Self {
        AppliedIdentity {
            version: 1,
            token_sub: sub.map(str::to_string),
        }
    }

    /// Parses a state file, as untrusted input; a damaged one (not JSON, another
    /// schema version, a `sub` no token has) reads as none: it only drives cleanups, and
    /// the next apply rewrites it.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let s: AppliedIdentity = serde_json::from_slice(data).ok()?;
        let sub_ok = s
            .token_sub
            .as_deref()
            .is_none_or(|t| !t.is_empty() && t.len() <= 1024 && !t.chars().any(char::is_control));
        (s.version == 1 && sub_ok).then_some(s)
    }

    /// The bytes written to disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::fsx::json_bytes(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_vmagent_writes_parses() {
        let good = AppliedIdentity::for_identity(Some("spiffe://x/ns/a/sa/b"));
        assert_eq!(AppliedIdentity::parse(&good.to_bytes()), Some(good));
        for bad in [
            &b"not json"[..],
            br#"{"version":2}"#,
            br#"{"version":1,"token_sub":"a\nb"}"#,
            br#"{"version":1,"extra":1}"#,
        ] {
            assert_eq!(
                AppliedIdentity::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
