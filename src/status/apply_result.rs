//! How the last apply ended, as recorded in status.json's `last_apply.result`.

use serde::{Deserialize, Serialize};

/// How the last apply ended. Stored as one string (`applied`, `up-to-date`,
/// `rolled-back` or `error: MESSAGE`), the form status.json has always had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum ApplyResult {
    /// Files were written or the package installed.
    Applied,
    /// Nothing needed changing.
    UpToDate,
    /// The daemon went back to the last-known-good bundle.
    RolledBack,
    /// The apply failed; the message says why.
    Error(String),
    /// A value this version does not know (a status file written by another version,
    /// or edited): kept and shown verbatim rather than refusing the whole file.
    Other(String),
}

impl ApplyResult {
    /// Every [`ApplyResult::kind`] (the metrics enumerate them: one series each).
    pub const KINDS: [&'static str; 5] = ["applied", "up-to-date", "rolled-back", "error", "other"];

    /// The result without its free text: `applied`, `up-to-date`, `rolled-back`,
    /// `error` or `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApplyResult::Applied => "applied",
            ApplyResult::UpToDate => "up-to-date",
            ApplyResult::RolledBack => "rolled-back",
            ApplyResult::Error(_) => "error",
            ApplyResult::Other(_) => "other",
        }
    }

    /// The free text in it (masked by [`StatusFile::redact`]), if any.
    pub(super) fn text_mut(&mut self) -> Option<&mut String> {
        match self {
            ApplyResult::Error(t) | ApplyResult::Other(t) => Some(t),
            ApplyResult::Applied | ApplyResult::UpToDate | ApplyResult::RolledBack => None,
        }
    }
}

impl std::fmt::Display for ApplyResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyResult::Applied => f.write_str("applied"),
            ApplyResult::UpToDate => f.write_str("up-to-date"),
            ApplyResult::RolledBack => f.write_str("rolled-back"),
            ApplyResult::Error(e) => write!(f, "error: {e}"),
            ApplyResult::Other(t) => f.write_str(t),
        }
    }
}

impl From<ApplyResult> for String {
    fn from(r: ApplyResult) -> String {
        r.to_string()
    }
}

impl From<String> for ApplyResult {
    fn from(s: String) -> ApplyResult {
        match s.as_str() {
            "applied" => ApplyResult::Applied,
            "up-to-date" => ApplyResult::UpToDate,
            "rolled-back" => ApplyResult::RolledBack,
            _ => match s.strip_prefix("error: ") {
                Some(e) => ApplyResult::Error(e.to_string()),
                None => ApplyResult::Other(s),
            },
        }
    }
}
