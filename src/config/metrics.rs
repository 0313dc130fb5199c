//! `[metrics]`: the daemon's Prometheus metrics (see `crate::metrics`), written for
//! node_exporter's textfile collector and/or served on a local address. Both are off
//! unless configured.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[metrics]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// node_exporter's textfile-collector directory (a path inside the root, e.g.
    /// /var/lib/prometheus/node-exporter): `vmagent.prom` is written there after every
    /// change. Unset: no file.
    pub textfile_dir: Option<PathBuf>,
    /// Address to serve `/metrics` on (`127.0.0.1:9105`). Unset: no server.
    pub listen: Option<String>,
    /// Allow `listen` on an address other than loopback. Off: a root daemon's HTTP
    /// port is reachable only from the VM itself unless the admin opens it on purpose.
    #[serde(default)]
    pub allow_non_loopback: bool,
}

impl MetricsConfig {
    /// The address to serve on, once validated (`None`: no server).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|l| l.parse().ok())
    }

    /// Shapes of the keys that are set (one line naming the key and the fix).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = &self.textfile_dir {
            let ok = p.is_absolute()
                && p.components().all(|c| {
                    matches!(
                        c,
                        std::path::Component::RootDir | std::path::Component::Normal(_)
                    )
                });
            if !ok {
                return Err(format!(
                    "metrics.textfile_dir must be an absolute path without '.' or '..' (got '{}'), e.g. /var/lib/prometheus/node-exporter",
                    p.display()
                ));
            }
        }
        if let Some(l) = &self.listen {
            let addr: SocketAddr = l.parse().map_err(|_| {
                format!("metrics.listen = '{l}' is not an IP address and port, e.g. 127.0.0.1:9105 or [::1]:9105")
            })?;
            if !addr.ip().is_loopback() && !self.allow_non_loopback {
                return Err(format!(
                    "metrics.listen = '{l}' is not a loopback address: use 127.0.0.1 or [::1] (scrape through node_exporter or a local agent), or set metrics.allow_non_loopback = true to expose it"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MetricsConfig;

    #[test]
    fn listen_must_be_loopback_unless_allowed_and_the_dir_absolute() {
        let c = |listen: &str, allow: bool| MetricsConfig {
            listen: Some(listen.into()),
            allow_non_loopback: allow,
            ..Default::default()
        };
        assert!(c("127.0.0.1:9105", false).validate().is_ok());
        assert!(c("[::1]:0", false).validate().is_ok());
        assert!(c("0.0.0.0:9105", false)
            .validate()
            .unwrap_err()
            .contains("allow_non_loopback"));
        assert!(c("0.0.0.0:9105", true).validate().is_ok());
        assert!(c("localhost:9105", false)
            .validate()
            .unwrap_err()
            .contains("not an IP address"));
        let d = |p: &str| MetricsConfig {
            textfile_dir: Some(p.into()),
            ..Default::default()
        };
        assert!(d("/var/lib/prometheus/node-exporter").validate().is_ok());
        assert!(d("relative/dir").validate().is_err());
        assert!(d("/var/lib/../etc").validate().is_err());
    }
}
