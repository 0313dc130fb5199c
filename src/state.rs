//! vmagent's record of what it last applied (under the state dir), used to detect an
//! identity change. Written inside the apply transaction like any other file.

use serde::{Deserialize, Serialize};

/// The applied state as recorded in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Schema version.
    pub version: u32,
    /// The token `sub` last applied (the workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sub: Option<String>,
}

/// File name of the state record inside the state dir.
pub const FILE: &str = "state.json";

impl State {
    /// The state after applying a bundle whose token has `sub`.
    pub fn for_identity(sub: Option<&str>) -> Self {
        State {
            version: 1,
            token_sub: sub.map(str::to_string),
        }
    }

    /// Parses a state file; a damaged one reads as empty (it only drives cleanups).
    pub fn parse(data: &[u8]) -> Option<Self> {
        serde_json::from_slice(data).ok()
    }

    /// The bytes written to disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}
