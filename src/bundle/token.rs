//! istio-token: a Kubernetes service-account JWT. Claims are decoded to report identity
//! and expiry; the signature is istiod's business. The token itself is never printed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::MemberError;

/// The token's claims that matter to onboarding (all empty for a bundle without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Token {
    /// `sub`, e.g. `system:serviceaccount:NS:SA`: the workload identity.
    pub sub: Option<String>,
    /// `aud` values.
    pub aud: Vec<String>,
    /// `exp` as Unix seconds.
    pub exp: Option<i64>,
    /// `iat` (issued at) as Unix seconds: with `exp`, the token's lifetime.
    pub iat: Option<i64>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    aud: Aud,
    exp: Option<f64>,
    iat: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Aud {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

/// Decodes the token. `now` is Unix seconds; an expired token is an error unless
/// `allow_expired`.
pub fn parse(
    data: &[u8],
    now: i64,
    allow_expired: bool,
) -> Result<(Token, Vec<String>), MemberError> {
    let text = std::str::from_utf8(data)
        .map_err(|_| MemberError::new("not a JWT (not text)".into()))?
        .trim_end_matches(['\n', '\r', ' ']);
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(MemberError::new(
            "not a JWT (expected three base64url parts separated by '.')".into(),
        ));
    }
    for (i, p) in parts.iter().enumerate() {
        let p = p.trim_end_matches('=');
        if !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(MemberError::new(format!(
                "not a JWT (part {} is not base64url)",
                i + 1
            )));
        }
    }
    let decode = |i: usize| {
        URL_SAFE_NO_PAD
            .decode(parts[i].trim_end_matches('='))
            .map_err(|_| MemberError::new(format!("not a JWT (part {} does not decode)", i + 1)))
    };
    let header: serde_json::Value = serde_json::from_slice(&decode(0)?)
        .map_err(|_| MemberError::new("not a JWT (header is not JSON)".into()))?;
    if !header.is_object() {
        return Err(MemberError::new(
            "not a JWT (header is not a JSON object)".into(),
        ));
    }
    let claims: Claims = serde_json::from_slice(&decode(1)?)
        .map_err(|e| MemberError::new(format!("not a JWT (claims: {e})")))?;
    let token = Token {
        sub: claims.sub,
        aud: match claims.aud {
            Aud::None => vec![],
            Aud::One(a) => vec![a],
            Aud::Many(v) => v,
        },
        exp: claims.exp.map(|e| e as i64),
        iat: claims.iat.map(|e| e as i64),
    };
    let mut warnings = Vec::new();
    if !token.aud.iter().any(|a| a == "istio-ca") {
        warnings.push(format!(
            "bundle member 'istio-token': audience is [{}], not istio-ca; istiod will likely reject it (regenerate the bundle with istioctl x workload entry configure)",
            token.aud.join(", ")
        ));
    }
    if token.sub.is_none() {
        warnings.push("bundle member 'istio-token': token has no 'sub' claim".into());
    }
    match token.exp {
        None => warnings.push("bundle member 'istio-token': token has no 'exp' claim".into()),
        Some(exp) if exp <= now && !allow_expired => {
            return Err(MemberError::new(format!(
                "token expired at {} ({} ago); get a fresh bundle with `istioctl x workload entry configure --tokenDuration 86400 ...` (or pass --allow-expired-token if the workload certificate is still valid)",
                crate::timefmt::rfc3339(exp),
                crate::timefmt::human_duration(now.saturating_sub(exp))
            )));
        }
        Some(exp) if exp <= now => warnings.push(format!(
            "bundle member 'istio-token': token expired at {}; kept because of --allow-expired-token",
            crate::timefmt::rfc3339(exp)
        )),
        Some(exp) if exp.saturating_sub(now) < 600 => warnings.push(format!(
            "bundle member 'istio-token': token expires in {}; the proxy must get its first certificate before then",
            crate::timefmt::human_duration(exp.saturating_sub(now))
        )),
        Some(_) => {}
    }
    Ok((token, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> Vec<u8> {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
        .into_bytes()
    }

    #[test]
    fn decodes_claims() {
        let (t, w) = parse(
            &jwt(r#"{"sub":"system:serviceaccount:a:b","aud":["istio-ca"],"exp":4000000000}"#),
            1000,
            false,
        )
        .unwrap();
        assert_eq!(t.sub.as_deref(), Some("system:serviceaccount:a:b"));
        assert_eq!(t.exp, Some(4_000_000_000));
        assert!(w.is_empty());
    }

    #[test]
    fn expired_is_refused_unless_allowed() {
        let j = jwt(r#"{"sub":"s","aud":"istio-ca","exp":100}"#);
        let e = parse(&j, 1000, false).unwrap_err();
        assert!(
            e.reason.contains("expired at 1970-01-01T00:01:40Z"),
            "{}",
            e.reason
        );
        assert!(parse(&j, 1000, true).is_ok());
    }

    #[test]
    fn garbage_is_not_a_jwt() {
        for g in [
            &b"abc"[..],
            b"a.b",
            b"a.b.c.d",
            b"!!.x.y",
            b"\xff\xfe",
            b"e30.bm90anNvbg.x",
        ] {
            assert!(parse(g, 0, false).is_err());
        }
    }

    #[test]
    fn wrong_audience_warns() {
        let (_, w) = parse(
            &jwt(r#"{"sub":"s","aud":"api","exp":4000000000}"#),
            0,
            false,
        )
        .unwrap();
        assert!(w[0].contains("not istio-ca"));
    }
}
