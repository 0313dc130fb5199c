//! `[doctor]`: what `vmagent doctor` checks beyond the installed state.

use serde::Deserialize;

/// `[doctor]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DoctorConfig {
    /// A name outside the mesh that the DNS proxy forwards to the upstream nameservers
    /// (from resolv.conf); it must resolve from this VM.
    #[serde(default = "d_external_name")]
    pub external_name: String,
}

fn d_external_name() -> String {
    "example.com".into()
}

impl Default for DoctorConfig {
    fn default() -> Self {
        DoctorConfig {
            external_name: d_external_name(),
        }
    }
}

impl DoctorConfig {
    /// The name is a DNS name (letters, digits, `-`, `_`, dots; at most 253 bytes).
    pub fn check(&self) -> Result<(), String> {
        let n = self.external_name.trim_end_matches('.');
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if n.is_empty() || n.len() > 253 || !n.split('.').all(label_ok) {
            return Err(format!(
                "doctor.external_name = '{}' is not a DNS name: use a name like example.com",
                crate::bundle::printable(&self.external_name, 80)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["example.com", "a.b-c.d_e", "example.com."] {
            let c = DoctorConfig {
                external_name: ok.into(),
            };
            assert!(c.check().is_ok(), "{ok}");
        }
        for bad in ["", ".", "a..b", "a b", "x;rm", &"a".repeat(64), "é.com"] {
            let c = DoctorConfig {
                external_name: bad.into(),
            };
            assert!(c.check().is_err(), "{bad}");
        }
    }
}
