//! Reads the timeline's inputs from a root: the token in place, the installed
//! cluster.env (OUTPUT_CERTS, PROV_CERT, CA_ADDR as istio-start.sh resolves them), the
//! certificate directory's owner and mode, and `{OUTPUT_CERTS}/cert-chain.pem`. I/O only;
//! the decision is [`super::timeline::timeline`].

use std::collections::BTreeSet;
use std::path::Path;

use super::timeline::{CertRoute, Inputs, Validity};
use crate::bundle::cluster_env::{CertKey, ClusterEnv, DEFAULT_CERT_DIR};
use crate::bundle::Member;
use crate::fsx::{self, Kind};
use crate::layout;
use crate::root::Root;

/// What was seen, with the inputs it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The timeline's inputs (`provider_keeps_token` false: the caller sets it).
    pub inputs: Inputs,
    /// The OUTPUT_CERTS directory (system path), when one is configured.
    pub cert_dir: Option<String>,
    /// Files that are there but could not be read (system paths).
    pub unreadable: Vec<String>,
}

impl Observed {
    /// Nothing onboarded: no cluster.env (the route is unknown), token or certificate.
    pub fn is_empty(&self) -> bool {
        let i = &self.inputs;
        i.route == CertRoute::Unknown && i.token.is_none() && i.cert.is_none()
    }
}

/// Reads everything at `now`. Unreadable things count as absent (`Unknown` for the
/// route): `vmagent status` run as a user must still answer.
pub fn observe(root: &Root, now: i64) -> Observed {
    let mut unreadable = Vec::new();
    let env = read(root, path_of(Member::ClusterEnv), &mut unreadable)
        .and_then(|d| crate::bundle::cluster_env::parse(&d, &BTreeSet::new()).ok())
        .map(|(env, _)| env);
    // Without cluster.env, istio-start.sh's default is where a certificate would be.
    let cert_dir = match &env {
        Some(e) => e.cert_dir(CertKey::OutputCerts),
        None => Some(DEFAULT_CERT_DIR.to_string()),
    };
    let route = match &env {
        Some(e) => route(root, e),
        None => CertRoute::Unknown,
    };
    let cert = cert_dir.as_deref().and_then(|dir| {
        let data = read(root, &format!("{dir}/cert-chain.pem"), &mut unreadable)?;
        let certs = crate::bundle::pem::certificates(&data, "cert-chain.pem").ok()?;
        // The chain lasts as long as its shortest-lived member.
        let c = certs.iter().min_by_key(|c| c.not_after)?;
        Some(Validity {
            from: Some(c.not_before),
            until: Some(c.not_after),
        })
    });
    let token = read(root, path_of(Member::Token), &mut unreadable)
        .and_then(|d| crate::bundle::token::parse(&d, now, true).ok())
        .map(|(t, _)| Validity {
            from: t.iat,
            until: t.exp,
        });
    Observed {
        inputs: Inputs {
            token,
            cert,
            route,
            provider_keeps_token: false,
            now,
        },
        cert_dir,
        unreadable,
    }
}

/// The certificate route cluster.env and the directory make (see [`CertRoute`]).
pub fn route(root: &Root, env: &ClusterEnv) -> CertRoute {
    let Some(out) = env.cert_dir(CertKey::OutputCerts) else {
        return CertRoute::NotPersisted;
    };
    if env.cert_dir(CertKey::ProvCert).as_deref() != Some(out.as_str()) {
        return CertRoute::NotPresented;
    }
    // pkg/istio-agent/plugins.go: a CA on :15010 is dialled without TLS.
    if env.get("CA_ADDR").is_some_and(|a| a.ends_with(":15010")) {
        return CertRoute::PlaintextCa;
    }
    let Ok(Some((uid, gid))) = root.account(layout::PROXY_USER) else {
        return CertRoute::Unknown;
    };
    let meta = root
        .resolve(Path::new(&out))
        .ok()
        .and_then(|p| fsx::meta(&p).ok());
    match meta {
        None => CertRoute::Unknown,
        Some(None) => CertRoute::NotWritable,
        Some(Some(m)) if m.kind == Kind::Dir && m.writable_by(uid, gid) => CertRoute::Renewable,
        Some(Some(_)) => CertRoute::NotWritable,
    }
}

fn path_of(m: Member) -> &'static str {
    layout::file_for(m).map_or("", |f| f.path)
}

/// A file's bytes, or `None` when it is missing; a file that is there but cannot be
/// read (not root) goes to `unreadable`, so that no timeline is claimed on half the facts.
fn read(root: &Root, sys: &str, unreadable: &mut Vec<String>) -> Option<Vec<u8>> {
    let p = root.resolve(Path::new(sys)).ok()?;
    match fsx::read_file(&p, 1 << 20) {
        Ok(d) => d,
        Err(_) => {
            unreadable.push(sys.to_string());
            None
        }
    }
}
