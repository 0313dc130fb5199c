//! root-cert.pem: the mesh root CA(s) istiod's certificates chain to.

use super::pem::{certificates, CertInfo};
use super::MemberError;
use crate::timefmt::{human_duration, rfc3339};

/// The validated root certificate file.
#[derive(Debug, Clone)]
pub struct RootCert {
    /// Every certificate in file order.
    pub certs: Vec<CertInfo>,
}

impl RootCert {
    /// The earliest notAfter: when the bundle stops being usable.
    pub fn not_after(&self) -> i64 {
        self.certs.iter().map(|c| c.not_after).min().unwrap_or(0)
    }
    /// Subject of the first certificate.
    pub fn subject(&self) -> &str {
        self.certs.first().map(|c| c.subject.as_str()).unwrap_or("")
    }
}

/// Parses root-cert.pem; an expired certificate is an error.
pub fn parse(data: &[u8], now: i64) -> Result<(RootCert, Vec<String>), MemberError> {
    let certs = certificates(data, "the mesh root CA certificate")?;
    let mut warnings = Vec::new();
    for c in &certs {
        if c.not_after <= now {
            return Err(MemberError::new(format!(
                "CA certificate '{}' expired at {}; the mesh CA was probably rotated: regenerate the bundle with istioctl",
                c.subject,
                rfc3339(c.not_after)
            )));
        }
        if c.not_before > now {
            warnings.push(format!(
                "bundle member 'root-cert.pem': certificate '{}' is not valid until {} (in {}); check this machine's clock",
                c.subject,
                rfc3339(c.not_before),
                human_duration(c.not_before.saturating_sub(now))
            ));
        }
        if !c.is_ca {
            warnings.push(format!(
                "bundle member 'root-cert.pem': certificate '{}' is not a CA certificate; istiod's root CA is expected here",
                c.subject
            ));
        }
    }
    Ok((RootCert { certs }, warnings))
}
