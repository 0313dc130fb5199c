//! Every token a provider hands over is checked before it is installed: JWT shape, the
//! workload's subject, audience `istio-ca`, and an expiry later than the installed
//! token's (a provider must never replace a token with an older one). Pure.

use thiserror::Error;

use crate::bundle::token::{self, Token, TokenError};

/// The audience istiod's CA accepts.
pub const AUDIENCE: &str = "istio-ca";

/// The workload identity a token must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Kubernetes namespace (POD_NAMESPACE).
    pub namespace: String,
    /// Service account (SERVICE_ACCOUNT).
    pub service_account: String,
}

impl Identity {
    /// `system:serviceaccount:NS:SA`, the token's `sub`.
    pub fn subject(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// Why a token was refused. Carries no part of the token but its subject (an identity,
/// shown in status anyway) and times.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejected {
    /// Not a JWT.
    #[error("the provider's output is {0}")]
    Shape(TokenError),
    /// Another workload's token.
    #[error("the token is for '{got}', not '{want}'; the provider must issue tokens for this workload's service account (POD_NAMESPACE and SERVICE_ACCOUNT in cluster.env, or token.namespace / token.service_account)")]
    Subject {
        /// The subject wanted.
        want: String,
        /// The subject found (empty when absent).
        got: String,
    },
    /// Not for istiod's CA.
    #[error("the token's audience does not include 'istio-ca'; istiod would reject it (a TokenRequest must ask for audiences [\"istio-ca\"])")]
    Audience,
    /// No `exp`.
    #[error("the token has no expiry ('exp' claim)")]
    NoExpiry,
    /// Already expired.
    #[error("the token expired at {}", crate::timefmt::rfc3339(*exp))]
    Expired {
        /// `exp`.
        exp: i64,
    },
    /// Not newer than the installed one.
    #[error("the token expires at {} but the installed one lasts until {}: not installed (the provider gave an older or the same token)", crate::timefmt::rfc3339(*exp), crate::timefmt::rfc3339(*installed))]
    NotNewer {
        /// The new token's `exp`.
        exp: i64,
        /// The installed token's `exp`.
        installed: i64,
    },
}

/// Checks `data` for `who` at `now`; `installed_exp` is the installed token's expiry
/// (`None`: none installed, or unreadable). Returns the claims.
pub fn check(
    data: &[u8],
    who: &Identity,
    now: i64,
    installed_exp: Option<i64>,
) -> Result<Token, Rejected> {
    let t = token::claims(data).map_err(Rejected::Shape)?;
    let want = who.subject();
    if t.sub.as_deref() != Some(want.as_str()) {
        return Err(Rejected::Subject {
            want,
            got: t.sub.clone().unwrap_or_default(),
        });
    }
    if !t.aud.iter().any(|a| a == AUDIENCE) {
        return Err(Rejected::Audience);
    }
    let exp = t.exp.ok_or(Rejected::NoExpiry)?;
    if exp <= now {
        return Err(Rejected::Expired { exp });
    }
    if let Some(installed) = installed_exp {
        if exp <= installed {
            return Err(Rejected::NotNewer { exp, installed });
        }
    }
    Ok(t)
}

/// The token as installed: the JWT and one newline, whatever whitespace surrounded it.
pub fn normalise(data: &[u8]) -> Vec<u8> {
    let text = data.trim_ascii();
    let mut v = text.to_vec();
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    const NOW: i64 = 1_800_000_000;

    fn jwt(claims: &str) -> Vec<u8> {
        let e = |s: &str| URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.{}", e(r#"{"alg":"RS256"}"#), e(claims), e("sig")).into_bytes()
    }

    fn who() -> Identity {
        Identity {
            namespace: "ns".into(),
            service_account: "sa".into(),
        }
    }

    fn good(exp: i64) -> Vec<u8> {
        jwt(&format!(
            r#"{{"sub":"system:serviceaccount:ns:sa","aud":["istio-ca"],"exp":{exp}}}"#
        ))
    }

    #[test]
    fn accepts_a_good_token() {
        let t = check(&good(NOW + 3600), &who(), NOW, Some(NOW + 10)).unwrap();
        assert_eq!(t.exp, Some(NOW + 3600));
        assert!(check(&good(NOW + 3600), &who(), NOW, None).is_ok());
    }

    #[test]
    fn refuses_each_kind() {
        let c = |d: &[u8], inst| check(d, &who(), NOW, inst).unwrap_err();
        assert!(matches!(c(b"garbage", None), Rejected::Shape(_)));
        let other =
            jwt(r#"{"sub":"system:serviceaccount:ns:other","aud":"istio-ca","exp":1900000000}"#);
        assert!(
            matches!(c(&other, None), Rejected::Subject { got, .. } if got.ends_with(":other"))
        );
        let aud = jwt(r#"{"sub":"system:serviceaccount:ns:sa","aud":["api"],"exp":1900000000}"#);
        assert_eq!(c(&aud, None), Rejected::Audience);
        let noexp = jwt(r#"{"sub":"system:serviceaccount:ns:sa","aud":["istio-ca"]}"#);
        assert_eq!(c(&noexp, None), Rejected::NoExpiry);
        assert_eq!(c(&good(NOW), None), Rejected::Expired { exp: NOW });
        assert_eq!(
            c(&good(NOW + 60), Some(NOW + 60)),
            Rejected::NotNewer {
                exp: NOW + 60,
                installed: NOW + 60
            }
        );
    }

    #[test]
    fn messages_never_carry_the_token() {
        let data = good(NOW);
        let msg = check(&data, &who(), NOW, None).unwrap_err().to_string();
        let text = String::from_utf8(data).unwrap();
        for part in text.split('.') {
            assert!(!msg.contains(part), "{msg}");
        }
    }

    #[test]
    fn normalised_with_one_newline() {
        assert_eq!(normalise(b"  a.b.c \n\n"), b"a.b.c\n");
    }
}
