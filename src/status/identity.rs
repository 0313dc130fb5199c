//! status.json's `identity`: when the VM's mesh identity lapses and why
//! ([`crate::identity::timeline`]), and the exit code of `vmagent status` it implies.

use serde::{Deserialize, Serialize};

use super::StatusFile;
use crate::identity::observe;
use crate::identity::timeline::{self, CertRoute, Reason, Timeline};
use crate::root::Root;

/// The identity timeline as recorded. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityView {
    /// The token's `exp` (none: no token, or no `exp`).
    pub token_expires_at: Option<i64>,
    /// The workload certificate's notAfter in `{OUTPUT_CERTS}/cert-chain.pem`.
    pub certificate_expires_at: Option<i64>,
    /// Whether pilot-agent can renew with its saved certificate, without the token.
    pub renews_without_token: bool,
    /// When the identity lapses without a renewal (none: nothing lapses).
    pub lapses_at: Option<i64>,
    /// Whether it has lapsed.
    #[serde(default)]
    pub lapsed: bool,
    /// Why it lapses then (kebab-case, see [`Reason`]).
    pub reason: Reason,
    /// The OUTPUT_CERTS directory (system path).
    #[serde(default)]
    pub certificate_dir: Option<String>,
    /// Whether the saved certificate can renew (kebab-case, see [`CertRoute`]).
    pub certificate_route: CertRoute,
    /// What to change so that it can, when it cannot.
    #[serde(default)]
    pub fix: Option<String>,
}

impl IdentityView {
    /// The view of what is on `root` at `now`; `None` on a machine never onboarded (no
    /// cluster.env, token or certificate: nothing to lapse) or when a file could not be
    /// read (not root: the status names it under `unreadable`). `provider_keeps_token`: a
    /// token provider keeps the token fresh (none exists yet: `false`).
    pub fn read(
        root: &Root,
        now: i64,
        provider_keeps_token: bool,
    ) -> Option<(IdentityView, Timeline)> {
        let mut o = observe::observe(root, now);
        if o.is_empty() || !o.unreadable.is_empty() {
            return None;
        }
        o.inputs.provider_keeps_token = provider_keeps_token;
        let t = timeline::timeline(&o.inputs);
        let route = o.inputs.route;
        let view = IdentityView {
            token_expires_at: o.inputs.token.and_then(|v| v.until),
            certificate_expires_at: o.inputs.cert.and_then(|v| v.until),
            renews_without_token: t.renews_without_token,
            lapses_at: t.lapses_at,
            lapsed: t.lapsed(now),
            reason: t.reason,
            fix: route.fix(o.cert_dir.as_deref()),
            certificate_dir: o.cert_dir,
            certificate_route: route,
        };
        Some((view, t))
    }

    /// A warning when the certificate cannot renew (route known and broken), with the
    /// fix: shown by `vmagent status` and the daemon until it is fixed.
    pub fn route_warning(&self) -> Option<String> {
        if matches!(
            self.certificate_route,
            CertRoute::Renewable | CertRoute::Unknown | CertRoute::Other
        ) {
            return None;
        }
        Some(format!(
            "the workload certificate cannot renew without the token ({}): {}",
            self.certificate_route_name(),
            self.fix.as_deref().unwrap_or("")
        ))
    }

    fn certificate_route_name(&self) -> String {
        serde_json::to_value(self.certificate_route)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl StatusFile {
    /// The exit code of `vmagent status`: [`crate::exit::IDENTITY_LAPSED`] once the
    /// identity has lapsed (re-derived from the times, never the stored flag), else the
    /// health's ([`super::HealthView::exit_code`]).
    pub fn exit_code(&self, now: i64) -> u8 {
        let lapsed = self
            .identity
            .as_ref()
            .and_then(|i| i.lapses_at)
            .is_some_and(|t| t <= now);
        if lapsed {
            crate::exit::IDENTITY_LAPSED
        } else {
            self.health.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_files_load_without_it_and_unknown_values_load() {
        let mut doc = serde_json::to_value(StatusFile::new(Default::default())).unwrap();
        doc.as_object_mut().unwrap().remove("identity");
        let old: StatusFile = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(old.identity, None);
        doc["identity"] = serde_json::json!({
            "token_expires_at": 10, "certificate_expires_at": null,
            "renews_without_token": false, "lapses_at": 10,
            "reason": "a-future-reason", "certificate_route": "a-future-route"
        });
        let new: StatusFile = serde_json::from_value(doc).unwrap();
        let i = new.identity.as_ref().unwrap();
        assert_eq!(
            (i.reason, i.certificate_route),
            (Reason::Other, CertRoute::Other)
        );
        // The exit code follows the times, not the stored `lapsed` flag.
        assert_eq!(new.exit_code(10), crate::exit::IDENTITY_LAPSED);
        assert_ne!(new.exit_code(9), crate::exit::IDENTITY_LAPSED);
    }
}
