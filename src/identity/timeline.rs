//! When the VM's mesh identity lapses: a pure function of the token's and the workload
//! certificate's validity, of whether pilot-agent can renew with its saved certificate,
//! and of whether a token provider keeps the token fresh.
//!
//! How pilot-agent behaves (istio/istio): it asks istiod for a workload certificate with
//! the token read afresh from its file for every request
//! (security/pkg/credentialfetcher/plugin/token.go, security/pkg/nodeagent/caclient/
//! credentials.go), and presents the certificate in PROV_CERT over mTLS unless it is
//! missing or expired (pilot/pkg/grpc/tls.go, pkg/istio-agent/agent.go
//! `GetKeyCertsForCA`). It saves each certificate to OUTPUT_CERTS
//! (security/pkg/nodeagent/cache/secretcache.go, security/pkg/nodeagent/util/util.go
//! `OutputKeyCertToDir`: nothing when empty, a logged error when it cannot write).
//! istio-start.sh sets both to `./etc/certs`. So the identity lasts while either a valid
//! token or a valid certificate in a directory that is both PROV_CERT and a writable
//! OUTPUT_CERTS is there, and lapses when the later of the two ends without a renewal.

use serde::{Deserialize, Serialize};

/// Whether the certificate pilot-agent saves can authenticate its next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertRoute {
    /// OUTPUT_CERTS is a directory istio-proxy can write, PROV_CERT names the same one,
    /// and the CA is reached over TLS: the certificate renews itself.
    Renewable,
    /// OUTPUT_CERTS is set empty: the certificate is kept in memory only.
    NotPersisted,
    /// The OUTPUT_CERTS directory is missing or istio-proxy cannot write it.
    NotWritable,
    /// PROV_CERT is empty or another directory: the saved certificate is never presented.
    NotPresented,
    /// CA_ADDR uses port 15010 (plain text): no client certificate is ever sent
    /// (pkg/istio-agent/plugins.go).
    PlaintextCa,
    /// cluster.env is not installed or not readable: nothing is known.
    Unknown,
    /// A value this version does not know (a status file from another version).
    #[serde(other)]
    Other,
}

impl CertRoute {
    /// What to do about it, for a route that does not renew (`None` for `Renewable`).
    pub fn fix(self, dir: Option<&str>) -> Option<String> {
        let dir = dir.unwrap_or("/etc/certs");
        match self {
            CertRoute::Renewable => None,
            CertRoute::NotPersisted => Some(
                "remove OUTPUT_CERTS='' from cluster.env (istio-start.sh then uses /etc/certs) or set it to a directory istio-proxy can write".into(),
            ),
            CertRoute::NotWritable => Some(format!(
                "run `chown istio-proxy:istio-proxy {dir}` and `chmod 0755 {dir}`, or point OUTPUT_CERTS in cluster.env at a directory of istio-proxy's own"
            )),
            CertRoute::NotPresented => Some(format!(
                "set PROV_CERT='{dir}' in cluster.env (the same directory as OUTPUT_CERTS), or remove both to use /etc/certs"
            )),
            CertRoute::PlaintextCa => Some(
                "point CA_ADDR in cluster.env at istiod's TLS port (15012), or remove it".into(),
            ),
            CertRoute::Unknown | CertRoute::Other => Some(
                "apply the bundle (`vmagent apply`) so that cluster.env is installed, and run `vmagent status` as root".into(),
            ),
        }
    }
}

/// A credential's validity, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// From (`iat` for the token, notBefore for the certificate), when known.
    pub from: Option<i64>,
    /// Until (`exp`, notAfter); `None`: a token without `exp`.
    pub until: Option<i64>,
}

/// Everything the timeline depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// The token in place (`None`: no token file).
    pub token: Option<Validity>,
    /// The workload certificate in OUTPUT_CERTS (`None`: none there).
    pub cert: Option<Validity>,
    /// Whether a saved certificate can authenticate a renewal.
    pub route: CertRoute,
    /// Whether a token provider keeps the token fresh (set by `identity::provider`).
    pub provider_keeps_token: bool,
    /// Now, Unix seconds.
    pub now: i64,
}

/// Why (and so when) the identity lapses: one variant per way out of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// A token provider keeps the token fresh: nothing lapses.
    TokenKeptFresh,
    /// The token has no `exp` and no certificate route says otherwise: nothing lapses.
    TokenDoesNotExpire,
    /// The certificate renews itself; the token is expired or expires first, so the
    /// identity lapses when the certificate expires without a renewal (the VM off, or
    /// istiod out of reach, until then).
    CertificateExpiresTokenExpired,
    /// The certificate renews itself and there is no token (e.g. after a reboot: the
    /// token lives on a tmpfs): it lapses with the certificate.
    CertificateExpiresNoToken,
    /// The certificate renews itself but the token outlives it: the token's expiry is
    /// the last moment a renewal can start.
    TokenExpiresCertificateEarlier,
    /// The route renews, but there is no valid certificate yet: the token must get one.
    TokenExpiresNoCertificate,
    /// OUTPUT_CERTS is empty: it lapses with the token.
    CertificateNotPersisted,
    /// The certificate directory cannot be written: it lapses with the token.
    CertificateDirNotWritable,
    /// PROV_CERT is not OUTPUT_CERTS: it lapses with the token.
    CertificateNotPresented,
    /// The CA is reached without TLS: it lapses with the token.
    CaWithoutTls,
    /// The certificate route is unknown: assumed to lapse with the token.
    CertificatePathUnknown,
    /// Neither a token nor a valid renewable certificate is there.
    NoCredential,
    /// A value this version does not know (a status file from another version).
    #[serde(other)]
    Other,
}

impl Reason {
    /// The kebab-case name (as in status.json).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "other".into())
    }

    /// One sentence saying why, in the words a user acts on.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::TokenKeptFresh => "a token provider keeps the token fresh",
            Reason::TokenDoesNotExpire => "the token has no expiry",
            Reason::CertificateExpiresTokenExpired => {
                "the token is expired (or expires first): the identity lasts while pilot-agent renews its certificate, so the VM must be running and reach istiod before the certificate expires"
            }
            Reason::CertificateExpiresNoToken => {
                "there is no token: the identity lasts while pilot-agent renews its certificate, so the VM must be running and reach istiod before the certificate expires"
            }
            Reason::TokenExpiresCertificateEarlier => {
                "the certificate renews itself; the token is the later credential"
            }
            Reason::TokenExpiresNoCertificate => {
                "pilot-agent has no valid certificate yet: it needs the token to get one"
            }
            Reason::CertificateNotPersisted => {
                "OUTPUT_CERTS is empty, so the certificate is never saved: the identity ends with the token"
            }
            Reason::CertificateDirNotWritable => {
                "istio-proxy cannot write the certificate directory, so the certificate is never saved: the identity ends with the token"
            }
            Reason::CertificateNotPresented => {
                "PROV_CERT is not the OUTPUT_CERTS directory, so the saved certificate is never presented: the identity ends with the token"
            }
            Reason::CaWithoutTls => {
                "CA_ADDR uses the plain-text port 15010, so no certificate is presented: the identity ends with the token"
            }
            Reason::CertificatePathUnknown => {
                "the certificate directory is unknown (cluster.env not installed): the identity is assumed to end with the token"
            }
            Reason::NoCredential => "there is neither a token nor a renewable certificate",
            Reason::Other => "(a reason this version does not know)",
        }
    }
}

/// The outcome: when the identity lapses, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// When it lapses without a renewal, Unix seconds; `None`: nothing lapses.
    pub lapses_at: Option<i64>,
    /// Why.
    pub reason: Reason,
    /// Whether pilot-agent can renew without the token now (renewable route and a
    /// certificate valid now).
    pub renews_without_token: bool,
    /// The longest useful warning lead: a third of the certificate's lifetime when the
    /// certificate is what lasts. pilot-agent renews at half its lifetime
    /// (SECRET_GRACE_PERIOD_RATIO 0.5), so a warning inside that lead means a renewal
    /// is overdue, not merely that the (24 h) certificate is short-lived.
    pub lead_cap: Option<i64>,
}

impl Timeline {
    /// Whether the identity has lapsed at `now`.
    pub fn lapsed(&self, now: i64) -> bool {
        self.lapses_at.is_some_and(|t| t <= now)
    }
}

/// The timeline for `i` (pure).
pub fn timeline(i: &Inputs) -> Timeline {
    let cert_valid = i.cert.and_then(|c| c.until).filter(|&u| u > i.now);
    let renews = i.route == CertRoute::Renewable && cert_valid.is_some();
    let out = |lapses_at, reason| Timeline {
        lapses_at,
        reason,
        renews_without_token: renews,
        lead_cap: None,
    };
    if i.provider_keeps_token {
        return out(None, Reason::TokenKeptFresh);
    }
    let token_exp = i.token.and_then(|t| t.until);
    if i.token.is_some() && token_exp.is_none() {
        return out(None, Reason::TokenDoesNotExpire);
    }
    if let Some(c) = cert_valid.filter(|_| renews) {
        return match token_exp {
            Some(t) if t > c => out(Some(t), Reason::TokenExpiresCertificateEarlier),
            _ => Timeline {
                lead_cap: i.cert.and_then(|v| v.from).map(|f| (c - f).max(0) / 3),
                ..out(
                    Some(c),
                    if i.token.is_some() {
                        Reason::CertificateExpiresTokenExpired
                    } else {
                        Reason::CertificateExpiresNoToken
                    },
                )
            },
        };
    }
    let Some(t) = token_exp else {
        return out(Some(i.now), Reason::NoCredential);
    };
    let reason = match i.route {
        CertRoute::Renewable => Reason::TokenExpiresNoCertificate,
        CertRoute::NotPersisted => Reason::CertificateNotPersisted,
        CertRoute::NotWritable => Reason::CertificateDirNotWritable,
        CertRoute::NotPresented => Reason::CertificateNotPresented,
        CertRoute::PlaintextCa => Reason::CaWithoutTls,
        CertRoute::Unknown | CertRoute::Other => Reason::CertificatePathUnknown,
    };
    out(Some(t), reason)
}

/// How urgent the daemon's identity warning is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// Nothing to say.
    Quiet,
    /// Inside a lead time (seconds before the lapse); a smaller lead is more urgent.
    Within(std::cmp::Reverse<u64>),
    /// Lapsed.
    Lapsed,
}

/// Which warning applies at `now` (pure): `Lapsed` once lapsed, else the smallest of
/// `leads` (seconds) that the time left is within, capped by the timeline's
/// [`Timeline::lead_cap`]. The daemon logs each change to a more urgent value once.
pub fn urgency(t: &Timeline, now: i64, leads: &[u64]) -> Urgency {
    let Some(at) = t.lapses_at else {
        return Urgency::Quiet;
    };
    if at <= now {
        return Urgency::Lapsed;
    }
    let left = at - now;
    leads
        .iter()
        .copied()
        .filter(|&l| {
            let l = i64::try_from(l).unwrap_or(i64::MAX);
            left <= t.lead_cap.map_or(l, |c| l.min(c))
        })
        .min()
        .map_or(Urgency::Quiet, |l| Urgency::Within(std::cmp::Reverse(l)))
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
