//! Directories the proxy needs beyond the layout table's: the certificate directories
//! cluster.env names, and whether dnsmasq (for a legacy `kubedns`) is there.

use super::{blocked, PlanError, Planner};
use crate::bundle::Bundle;
use crate::fsx::Kind;
use crate::layout::{self, Owner};

impl Planner<'_> {
    /// The logrotate rule, where logrotate is installed (its /etc/logrotate.d exists):
    /// elsewhere the rule would do nothing and its directory would be left behind.
    pub(super) fn logrotate(&mut self, r: super::Rotation) -> Result<(), PlanError> {
        let s = layout::LOGROTATE_RULE;
        let (_, dir) = self.lstat(layout::LOGROTATE_DIR, true)?;
        if !dir.is_some_and(|m| m.kind == Kind::Dir) {
            self.plan.warnings.push(format!(
                "logrotate is not installed ({} is missing), so {} grows without bound: install it (`apt-get install logrotate` or `dnf install logrotate`) and apply again, or set [logs] rotate = false",
                layout::LOGROTATE_DIR,
                layout::ISTIO_LOG
            ));
            return Ok(());
        }
        self.file(
            s.path,
            super::What::LogrotateRule,
            super::logrotate_rule(r).into_bytes(),
            s.mode,
            self.owner(s.owner),
        )
    }

    pub(super) fn dnsmasq_installed(&self) -> Result<bool, PlanError> {
        let (_, meta) = self.lstat(layout::DNSMASQ_DIR, true)?;
        Ok(meta.is_some_and(|m| m.kind == Kind::Dir))
    }

    /// The directories cluster.env names for the agent's certificates (OUTPUT_CERTS,
    /// PROV_CERT). The agent writes them with a temp file and a rename and never makes
    /// the directory, so one it cannot write means the certificate is never saved and the
    /// VM drops out of the mesh when the token expires. vmagent creates a missing one for
    /// istio-proxy; an existing one is never chowned (it may be shared), only checked.
    pub(super) fn cert_dirs(&mut self, bundle: &Bundle) -> Result<(), PlanError> {
        for dir in bundle.cluster_env.cert_dirs() {
            if layout::DIRS.iter().any(|d| d.path == dir) {
                continue;
            }
            let (host, meta) = self.lstat(&dir, true)?;
            match meta {
                None => self.dir(&dir, Some((layout::CERT_DIR_MODE, Owner::Proxy)))?,
                Some(m) if m.kind != Kind::Dir => {
                    return Err(blocked(
                        &dir,
                        "is named by OUTPUT_CERTS/PROV_CERT in cluster.env but is not a directory; move it away or point the key at a directory".into(),
                    ))
                }
                Some(m) => match self.proxy.filter(|p| p.uid != u32::MAX) {
                    Some(p) if !m.writable_by(p.uid, p.gid) && !self.created.contains(&host) => {
                        return Err(blocked(
                            &dir,
                            format!("is named by OUTPUT_CERTS/PROV_CERT in cluster.env but istio-proxy cannot write it (owner {}:{}, mode {:o}), so the agent could never save its certificate; run `chown istio-proxy:istio-proxy {dir}`, or point OUTPUT_CERTS at a directory of its own", m.uid, m.gid, m.mode)
                        ))
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }
}
