//! `[overrides]`: this VM's own changes to the bundle's cluster.env and hosts lines,
//! kept on every apply and by the daemon's drift repair. Only the shape is checked here
//! (serde); the values are checked by the bundle's own rules where they are merged
//! (`crate::overrides`, a layer above), which names the file each one came from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[overrides]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverridesConfig {
    /// cluster.env keys to set: replaces the bundle's value in place, or adds the key.
    /// Drop-ins merge key by key.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// cluster.env keys to remove. A later file's list replaces an earlier one's.
    #[serde(default)]
    pub unset: Vec<String>,
    /// Extra `IP name [name...]` lines for vmagent's block in /etc/hosts. A later file's
    /// list replaces an earlier one's.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Exclude sshd's ports from inbound capture (the lock-out guard); `false` turns it
    /// off for every apply, the daemon's included (`apply --no-lockout-guard`: one run).
    #[serde(default = "d_guard")]
    pub lockout_guard: bool,
    /// Which file set each item (`set.KEY`, `unset`, `hosts`), for error messages.
    #[serde(skip)]
    pub origins: BTreeMap<String, PathBuf>,
}

fn d_guard() -> bool {
    true
}

impl Default for OverridesConfig {
    fn default() -> Self {
        OverridesConfig {
            set: BTreeMap::new(),
            unset: Vec::new(),
            hosts: Vec::new(),
            lockout_guard: d_guard(),
            origins: BTreeMap::new(),
        }
    }
}

impl OverridesConfig {
    /// Notes that `file` (checked alone as `part`) set what `part` holds: later files
    /// win, as in the merge.
    pub(super) fn note_origins(&mut self, part: &OverridesConfig, file: &std::path::Path) {
        for k in part.set.keys() {
            self.origins.insert(format!("set.{k}"), file.to_path_buf());
        }
        if !part.unset.is_empty() {
            self.origins.insert("unset".into(), file.to_path_buf());
        }
        if !part.hosts.is_empty() {
            self.origins.insert("hosts".into(), file.to_path_buf());
        }
    }

    /// The file that set `item` (`set.KEY`, `unset`, `hosts`); the main config file
    /// when unknown.
    pub fn origin(&self, item: &str) -> String {
        self.origins
            .get(item)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| super::PATH.to_string())
    }

    /// True when nothing is overridden (the guard does not count).
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.unset.is_empty() && self.hosts.is_empty()
    }
}
