//! `[health]`: how readiness is judged, and where (and how authenticated) the daemon
//! reports it.

use std::path::PathBuf;

use serde::Deserialize;

/// `[health]`: how readiness is judged.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// The proxy's readiness endpoint (200 = ready).
    #[serde(default = "d_ready_url")]
    pub ready_url: String,
    /// How long `apply` waits for ready when --wait is not given.
    #[serde(default = "d_wait")]
    pub wait_secs: u64,
    /// Where the daemon POSTs a JSON health document on every change (optional).
    pub report_url: Option<String>,
    /// A file holding the report's `Authorization` header value (inside the root;
    /// root-owned, mode 0600), e.g. `Bearer abc...`.
    pub report_authorization_file: Option<PathBuf>,
    /// A client certificate (PEM, inside the root) presented to the report URL (mTLS).
    pub report_client_cert: Option<PathBuf>,
    /// Its private key (PEM, inside the root; root-owned, mode 0600).
    pub report_client_key: Option<PathBuf>,
}

fn d_ready_url() -> String {
    crate::net::READY_URL.into()
}
fn d_wait() -> u64 {
    180
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            ready_url: d_ready_url(),
            wait_secs: d_wait(),
            report_url: None,
            report_authorization_file: None,
            report_client_cert: None,
            report_client_key: None,
        }
    }
}
