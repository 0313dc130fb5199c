//! Strict PEM reading: blocks with matching BEGIN/END labels, base64 bodies, nothing
//! but blank lines between them. Shared by root-cert.pem and the legacy cert/key files.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::MemberError;

/// One decoded PEM block.
pub struct Block {
    /// The label, e.g. `CERTIFICATE`.
    pub label: String,
    /// The DER bytes.
    pub der: Vec<u8>,
    /// 1-based line of the BEGIN line.
    pub line: usize,
}

/// Splits a PEM file into blocks. Any text outside the blocks is an error.
pub fn blocks(data: &[u8]) -> Result<Vec<Block>, MemberError> {
    let text = std::str::from_utf8(data)
        .map_err(|_| MemberError::new("not PEM text (binary data; DER is not accepted)".into()))?;
    let mut out = Vec::new();
    let mut open: Option<(String, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end();
        match &mut open {
            None => {
                if line.is_empty() {
                    continue;
                }
                let label = line
                    .strip_prefix("-----BEGIN ")
                    .and_then(|l| l.strip_suffix("-----"))
                    .ok_or_else(|| MemberError::at(n, "text outside a PEM block".into()))?;
                open = Some((label.to_string(), n, String::new()));
            }
            Some((label, start, body)) => {
                if let Some(end) = line
                    .strip_prefix("-----END ")
                    .and_then(|l| l.strip_suffix("-----"))
                {
                    if end != label {
                        return Err(MemberError::at(
                            n,
                            format!("END {end} does not match BEGIN {label}"),
                        ));
                    }
                    let der = STANDARD.decode(body.as_bytes()).map_err(|_| {
                        MemberError::at(*start, format!("{label} block is not valid base64"))
                    })?;
                    out.push(Block {
                        label: label.clone(),
                        der,
                        line: *start,
                    });
                    open = None;
                } else {
                    body.push_str(line.trim_start());
                }
            }
        }
    }
    if let Some((label, start, _)) = open {
        return Err(MemberError::at(
            start,
            format!("{label} block has no END line"),
        ));
    }
    if out.is_empty() {
        return Err(MemberError::new("contains no PEM block".into()));
    }
    Ok(out)
}

/// Validity and subject of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// basicConstraints CA flag.
    pub is_ca: bool,
}

/// Parses every block as an X.509 certificate; any other block is refused.
pub fn certificates(data: &[u8], what: &str) -> Result<Vec<CertInfo>, MemberError> {
    let mut certs = Vec::new();
    for b in blocks(data)? {
        if b.label.contains("PRIVATE KEY") {
            return Err(MemberError::at(b.line, format!(
                "contains a private key ({}); it must hold only {what}, and the key must not be shared",
                b.label
            )));
        }
        if b.label != "CERTIFICATE" {
            return Err(MemberError::at(
                b.line,
                format!(
                    "{} block found; only CERTIFICATE blocks are allowed",
                    b.label
                ),
            ));
        }
        let (rest, cert) = X509Certificate::from_der(&b.der).map_err(|_| {
            MemberError::at(
                b.line,
                "CERTIFICATE block is not a valid X.509 certificate".into(),
            )
        })?;
        if !rest.is_empty() {
            return Err(MemberError::at(
                b.line,
                "CERTIFICATE block has trailing data".into(),
            ));
        }
        certs.push(CertInfo {
            subject: cert.subject().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca: cert.is_ca(),
        });
    }
    Ok(certs)
}
