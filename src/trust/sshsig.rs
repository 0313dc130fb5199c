//! The facts vmagent reads itself from an OpenSSH signature and the trust files, to say
//! who signed and why a signature is refused (the cryptographic check is
//! `ssh-keygen -Y verify`'s, see `crate::trust`). Formats, from OpenSSH's PROTOCOL.sshsig
//! and sshd(8) "AUTHORIZED_KEYS FILE FORMAT" / ssh-keygen(1) "ALLOWED SIGNERS":
//!
//! - the armored signature: `-----BEGIN SSH SIGNATURE-----`, base64, `-----END SSH
//!   SIGNATURE-----`; the blob is `"SSHSIG"`, uint32 version, then the strings
//!   publickey, namespace, reserved, hash_algorithm, signature (each a uint32 length and
//!   its bytes);
//! - an allowed_signers line: `principals [options] keytype base64-key [comment]`;
//! - a plain revoked-keys list: `keytype base64-key [comment]` per line.
//!
//! Pure functions over untrusted bytes: every length is checked, nothing panics.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

/// What a signature says about itself (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigInfo {
    /// The signer key's type (`ssh-ed25519`, `ecdsa-sha2-nistp256`, ...).
    pub key_type: String,
    /// The signer key's fingerprint as OpenSSH prints it: `SHA256:` + unpadded base64.
    pub fingerprint: String,
    /// The namespace it was made for (`-n`).
    pub namespace: String,
}

const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";

/// Parses an armored SSH signature; `Err` says what is wrong with it.
pub fn parse(armored: &[u8]) -> Result<SigInfo, &'static str> {
    let text = std::str::from_utf8(armored).map_err(|_| "not text")?;
    let body = text
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(b, _)| b)
        .ok_or("not an armored SSH signature (no BEGIN/END SSH SIGNATURE lines)")?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let blob = STANDARD.decode(b64).map_err(|_| "its body is not base64")?;
    let rest = blob
        .strip_prefix(b"SSHSIG")
        .ok_or("not an SSHSIG blob (magic)")?;
    let (version, mut rest) = take_u32(rest).ok_or("truncated")?;
    if version != 1 {
        return Err("an SSHSIG version other than 1");
    }
    let key = take_string(&mut rest).ok_or("truncated public key")?;
    let namespace = take_string(&mut rest).ok_or("truncated namespace")?;
    let mut kb = key;
    let key_type = take_string(&mut kb).ok_or("truncated key type")?;
    Ok(SigInfo {
        key_type: String::from_utf8_lossy(key_type).into_owned(),
        fingerprint: fingerprint(key),
        namespace: String::from_utf8_lossy(namespace).into_owned(),
    })
}

/// `SHA256:...` of a public key blob, as `ssh-keygen -l` prints it.
pub fn fingerprint(key_blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(key_blob))
    )
}

fn take_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (n, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*n), rest))
}

fn take_string<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (n, rest) = take_u32(b)?;
    let n = usize::try_from(n).ok()?;
    if n > rest.len() {
        return None;
    }
    let (s, rest) = rest.split_at(n);
    *b = rest;
    Some(s)
}

/// The principals of an allowed_signers file, in order, without duplicates (what the
/// error names as "expected"): the first field of each line that is not a comment.
pub fn principals(allowed_signers: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in allowed_signers.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or_default();
        for p in first.trim_matches('"').split(',') {
            if !p.is_empty() && !out.iter().any(|o| o == p) {
                out.push(p.to_string());
            }
        }
    }
    out
}

/// The fingerprints of the keys in a plain revoked-keys list (`keytype base64 [comment]`
/// lines; other lines are skipped). A binary KRL yields none here; `ssh-keygen -r` still
/// applies it.
pub fn revoked_fingerprints(list: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(list) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_kind, key) = (f.next()?, f.next()?);
            STANDARD.decode(key).ok().map(|k| fingerprint(&k))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    fn armored(version: u32, key: &[u8], ns: &str) -> Vec<u8> {
        let mut blob = b"SSHSIG".to_vec();
        blob.extend(version.to_be_bytes());
        blob.extend(string(key));
        blob.extend(string(ns.as_bytes()));
        blob.extend(string(b""));
        blob.extend(string(b"sha512"));
        blob.extend(string(b"sig"));
        format!("{BEGIN}\n{}\n{END}\n", STANDARD.encode(blob)).into_bytes()
    }

    #[test]
    fn reads_key_and_namespace() {
        let mut key = string(b"ssh-ed25519");
        key.extend(string(&[7u8; 32]));
        let info = parse(&armored(1, &key, "vmagent-bundle")).unwrap();
        assert_eq!(info.key_type, "ssh-ed25519");
        assert_eq!(info.namespace, "vmagent-bundle");
        assert_eq!(info.fingerprint, fingerprint(&key));
        assert!(info.fingerprint.starts_with("SHA256:") && !info.fingerprint.ends_with('='));
    }

    #[test]
    fn hostile_signatures_are_errors() {
        let key = string(b"ssh-ed25519");
        assert!(parse(b"").is_err());
        assert!(parse(b"\xff\xfe").is_err());
        assert!(parse(format!("{BEGIN}\n!!!\n{END}").as_bytes()).is_err());
        assert!(parse(&armored(2, &key, "x")).is_err());
        let mut blob = b"SSHSIG".to_vec();
        blob.extend(1u32.to_be_bytes());
        blob.extend(u32::MAX.to_be_bytes());
        let a = format!("{BEGIN}\n{}\n{END}", STANDARD.encode(blob));
        assert_eq!(parse(a.as_bytes()), Err("truncated public key"));
    }

    #[test]
    fn principals_and_revoked_keys() {
        let text = "# ops\nops@example.com,ci@example.com namespaces=\"vmagent-bundle\" ssh-ed25519 AAAA\n\n\"release@example.com\" ecdsa-sha2-nistp256 BBBB\nops@example.com ssh-ed25519 CCCC\n";
        assert_eq!(
            principals(text),
            ["ops@example.com", "ci@example.com", "release@example.com"]
        );
        let key = STANDARD.encode(b"blob");
        let list = format!("ssh-ed25519 {key} old laptop\nnot-a-key\n");
        assert_eq!(
            revoked_fingerprints(list.as_bytes()),
            [fingerprint(b"blob")]
        );
        assert!(revoked_fingerprints(b"\x00KRL\xff").is_empty());
    }
}
