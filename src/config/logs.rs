//! `[logs]`: rotation of the sidecar's logs (/var/log/istio/istio.log and istio.err.log),
//! which the istio-sidecar package leaves to grow forever. apply installs a logrotate
//! rule from these values; `rotate = false` installs none.

use serde::{Deserialize, Serialize};

/// The `[logs]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Install the logrotate rule.
    #[serde(default = "d_rotate")]
    pub rotate: bool,
    /// Rotate a log once it is larger than this many MiB.
    #[serde(default = "d_size")]
    pub rotate_size_mib: u64,
    /// Rotated copies kept (compressed but the newest).
    #[serde(default = "d_count")]
    pub rotate_count: u32,
}

fn d_rotate() -> bool {
    true
}
fn d_size() -> u64 {
    100
}
fn d_count() -> u32 {
    5
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            rotate: d_rotate(),
            rotate_size_mib: d_size(),
            rotate_count: d_count(),
        }
    }
}

impl LogsConfig {
    /// Ranges (one line naming the key).
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=102_400).contains(&self.rotate_size_mib) {
            return Err(format!(
                "logs.rotate_size_mib = {} is out of range: allowed 1 to 102400",
                self.rotate_size_mib
            ));
        }
        if !(1..=1000).contains(&self.rotate_count) {
            return Err(format!(
                "logs.rotate_count = {} is out of range: allowed 1 to 1000",
                self.rotate_count
            ));
        }
        Ok(())
    }
}
