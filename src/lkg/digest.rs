//! The identity of a bundle.

use std::fmt;

/// sha256 of a bundle's canonical tar: 64 lowercase hex digits. It also names a file in
/// the store (`<digest>.tar`), which is why nothing else is ever accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

/// A string that is not a [`Digest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown:?} is not a sha256 digest (64 lowercase hex digits)")]
pub struct BadDigest {
    /// The start of the string, for the message.
    shown: String,
}

impl Digest {
    /// Checks `s` is 64 lowercase hex digits.
    pub fn parse(s: &str) -> Result<Digest, BadDigest> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Digest(s.to_string()))
        } else {
            // Untrusted text (a state file): bounded in the message.
            Err(BadDigest {
                shown: s.chars().take(72).collect(),
            })
        }
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Short form for messages: `sha256:` and the first 12 digits.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.0[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
