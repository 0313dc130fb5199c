//! Directories the proxy needs beyond the layout table's: the certificate directories
//! cluster.env names, and whether dnsmasq (for a legacy `kubedns`) is there; and the
//! proxy's own certificates, stale once the identity changes.

use super::{blocked, Action, PlanError, Planner, READ_LIMIT};
use crate::applied::{self, AppliedIdentity};
use crate::bundle::{Bundle, Member};
use crate::fsx::{self, Kind};
use crate::layout::{self, Owner};

impl Planner<'_> {
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

    pub(super) fn previous_state(&self) -> Result<Option<AppliedIdentity>, PlanError> {
        let sys = format!("{}/{}", self.root.state_dir().display(), applied::FILE);
        let host = self.host(&sys, false)?;
        Ok(fsx::read_file(&host, READ_LIMIT)
            .ok()
            .flatten()
            .and_then(|d| AppliedIdentity::parse(&d)))
    }

    /// The proxy's own certificates belong to the identity they were issued for.
    pub(super) fn stale_certs(
        &mut self,
        bundle: &Bundle,
        previous: Option<&AppliedIdentity>,
    ) -> Result<(), PlanError> {
        if bundle.files.contains_key(&Member::CertChain) {
            return Ok(()); // legacy bundle: the certs come from the bundle itself
        }
        let (Some(old), Some(new)) = (
            previous.and_then(|s| s.token_sub.as_deref()),
            bundle.token.sub.as_deref(),
        ) else {
            return Ok(());
        };
        if old == new {
            return Ok(());
        }
        for sys in layout::PROXY_CERTS {
            let (host, meta) = self.lstat(sys, false)?;
            if meta.is_some() {
                self.push(
                    Action::Remove {
                        path: sys.to_string(),
                        reason: format!(
                            "issued to the previous identity {old}; the proxy gets a new one for {new}"
                        ),
                    },
                    host,
                );
            }
        }
        Ok(())
    }
}
