//! `[preflight]`: the online checks `apply` runs before it touches anything (and
//! `vmagent check --online` runs alone): whether they run, which are skipped, how long
//! each network step may take.

use serde::{Deserialize, Serialize};

/// One online check, by the name used in `skip`, in `--output json` and in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckName {
    /// discoveryAddress (mesh.yaml): resolve, connect, TLS handshake against the root.
    Istiod,
    /// CA_ADDR (cluster.env), when it is set and differs from discoveryAddress.
    Ca,
    /// Multi-network bundles: the east-west gateway's 15443.
    Gateway,
    /// The local clock against the token and istiod's certificate; NTP state.
    Clock,
    /// The proxy's ports on this machine are free or held by istio itself.
    Ports,
    /// The address pilot-agent will advertise (ISTIO_SVC_IP).
    Address,
}

impl CheckName {
    /// Every check, in the order they are reported.
    pub const ALL: [CheckName; 6] = [
        CheckName::Istiod,
        CheckName::Ca,
        CheckName::Gateway,
        CheckName::Clock,
        CheckName::Ports,
        CheckName::Address,
    ];

    /// The name as written in config and output.
    pub fn name(self) -> &'static str {
        match self {
            CheckName::Istiod => "istiod",
            CheckName::Ca => "ca",
            CheckName::Gateway => "gateway",
            CheckName::Clock => "clock",
            CheckName::Ports => "ports",
            CheckName::Address => "address",
        }
    }
}

/// The `[preflight]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PreflightConfig {
    /// Run the online checks in `apply`. Unset: on when the root is `/` (this machine
    /// is the VM), off under `--root DIR` (an image or test tree: the machine running
    /// vmagent is not the one that will join the mesh).
    pub enabled: Option<bool>,
    /// Checks not to run (names as in [`CheckName`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<CheckName>,
    /// Limit of each network step (resolve, connect, handshake), in milliseconds.
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// How far the local clock may be behind the token's `iat`/`nbf` before the clock
    /// check fails, in seconds.
    #[serde(default = "d_skew")]
    pub clock_skew_secs: u64,
}

fn d_timeout() -> u64 {
    2000
}
fn d_skew() -> u64 {
    60
}

impl Default for PreflightConfig {
    fn default() -> Self {
        PreflightConfig {
            enabled: None,
            skip: vec![],
            timeout_ms: d_timeout(),
            clock_skew_secs: d_skew(),
        }
    }
}

impl PreflightConfig {
    /// Ranges serde cannot express (the caller adds the file).
    pub fn validate(&self) -> Result<(), String> {
        for (key, v, range) in [
            ("preflight.timeout_ms", self.timeout_ms, 100..=60_000),
            (
                "preflight.clock_skew_secs",
                self.clock_skew_secs,
                0..=86_400,
            ),
        ] {
            if !range.contains(&v) {
                return Err(format!(
                    "{key} = {v} is out of range: allowed {} to {}",
                    range.start(),
                    range.end()
                ));
            }
        }
        Ok(())
    }

    /// Whether `apply` runs the checks on a root (`live`: the root is `/`).
    pub fn runs(&self, live: bool) -> bool {
        self.enabled.unwrap_or(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_for_the_live_root_only_unless_configured() {
        let mut c = PreflightConfig::default();
        assert!(c.runs(true));
        assert!(!c.runs(false));
        c.enabled = Some(true);
        assert!(c.runs(false));
        c.enabled = Some(false);
        assert!(!c.runs(true));
    }

    #[test]
    fn names_and_ranges() {
        let c: PreflightConfig = toml::from_str("skip = [\"clock\", \"ports\"]").unwrap();
        assert_eq!(c.skip, vec![CheckName::Clock, CheckName::Ports]);
        assert!(toml::from_str::<PreflightConfig>("skip = [\"clocks\"]").is_err());
        let names: Vec<&str> = CheckName::ALL.iter().map(|n| n.name()).collect();
        assert_eq!(
            names,
            ["istiod", "ca", "gateway", "clock", "ports", "address"]
        );
        let mut c = PreflightConfig::default();
        assert!(c.validate().is_ok());
        c.timeout_ms = 10;
        assert!(c
            .validate()
            .unwrap_err()
            .contains("preflight.timeout_ms = 10"));
    }
}
