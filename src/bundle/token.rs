//! istio-token: a Kubernetes service-account JWT. Claims are decoded to report identity
//! and expiry; the signature is istiod's business. The token itself is never printed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use thiserror::Error;

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
    /// `nbf` (not before) as Unix seconds, when the issuer set it.
    pub nbf: Option<i64>,
}

/// Why the token cannot be used. Never carries a claim's value: the token is a
/// credential, and a message goes to logs and the world-readable status file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// Not UTF-8 text.
    #[error("not a JWT (not text)")]
    NotText,
    /// Not three non-empty dot-separated parts.
    #[error("not a JWT (expected three base64url parts separated by '.')")]
    Parts,
    /// A part has characters outside base64url (1-based part number).
    #[error("not a JWT (part {0} is not base64url)")]
    NotBase64(usize),
    /// A part does not decode (1-based part number).
    #[error("not a JWT (part {0} does not decode)")]
    Undecodable(usize),
    /// The header is not a JSON object.
    #[error("not a JWT (header is not a JSON object)")]
    Header,
    /// The claims are not a JSON object.
    #[error("not a JWT (claims are not a JSON object)")]
    Claims,
    /// A claim has the wrong type: named, its value withheld.
    #[error("not a JWT (claim '{claim}' must be {expected})")]
    Claim {
        /// The claim's name.
        claim: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// Expired and not allowed to be.
    #[error("token expired at {} ({} ago); get a fresh bundle with `istioctl x workload entry configure --tokenDuration 86400 ...` (or pass --allow-expired-token if the workload certificate is still valid)", crate::timefmt::rfc3339(*exp), crate::timefmt::human_duration(now.saturating_sub(*exp)))]
    Expired {
        /// `exp`, Unix seconds.
        exp: i64,
        /// The time it was checked at.
        now: i64,
    },
}

impl From<TokenError> for MemberError {
    fn from(e: TokenError) -> Self {
        MemberError::new(e.to_string())
    }
}

/// A string claim (absent or null: `None`).
fn string_claim(
    claims: &serde_json::Map<String, Value>,
    claim: &'static str,
) -> Result<Option<String>, TokenError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::Claim {
            claim,
            expected: "a string",
        }),
    }
}

/// A time claim in Unix seconds (absent or null: `None`; fractions cut).
fn time_claim(
    claims: &serde_json::Map<String, Value>,
    claim: &'static str,
) -> Result<Option<i64>, TokenError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) => Ok(Some(f as i64)),
            (None, None) => Err(TokenError::Claim {
                claim,
                expected: "a number (Unix seconds)",
            }),
        },
        Some(_) => Err(TokenError::Claim {
            claim,
            expected: "a number (Unix seconds)",
        }),
    }
}

/// `aud`: one string or a list of strings.
fn audience(claims: &serde_json::Map<String, Value>) -> Result<Vec<String>, TokenError> {
    let bad = TokenError::Claim {
        claim: "aud",
        expected: "a string or a list of strings",
    };
    match claims.get("aud") {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or(bad.clone()))
            .collect(),
        Some(_) => Err(bad),
    }
}

/// Decodes the token. `now` is Unix seconds; an expired token is an error unless
/// `allow_expired`.
pub fn parse(
    data: &[u8],
    now: i64,
    allow_expired: bool,
) -> Result<(Token, Vec<String>), MemberError> {
    let token = claims(data)?;
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
            return Err(TokenError::Expired { exp, now }.into());
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

/// The token's claims, checked for shape (signature not verified: istiod's business).
pub fn claims(data: &[u8]) -> Result<Token, TokenError> {
    let text = std::str::from_utf8(data)
        .map_err(|_| TokenError::NotText)?
        .trim_end_matches(['\n', '\r', ' ']);
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(TokenError::Parts);
    }
    for (i, p) in parts.iter().enumerate() {
        let p = p.trim_end_matches('=');
        if !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TokenError::NotBase64(i + 1));
        }
    }
    let decode = |i: usize| {
        URL_SAFE_NO_PAD
            .decode(parts[i].trim_end_matches('='))
            .map_err(|_| TokenError::Undecodable(i + 1))
    };
    // serde_json's own errors quote the offending value: only our messages are used.
    let header: Value = serde_json::from_slice(&decode(0)?).map_err(|_| TokenError::Header)?;
    if !header.is_object() {
        return Err(TokenError::Header);
    }
    let claims: Value = serde_json::from_slice(&decode(1)?).map_err(|_| TokenError::Claims)?;
    let Value::Object(claims) = claims else {
        return Err(TokenError::Claims);
    };
    Ok(Token {
        sub: string_claim(&claims, "sub")?,
        aud: audience(&claims)?,
        exp: time_claim(&claims, "exp")?,
        iat: time_claim(&claims, "iat")?,
        nbf: time_claim(&claims, "nbf")?,
    })
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

    #[test]
    fn malformed_claims_are_named_never_echoed() {
        for (claims, claim) in [
            (r#"{"sub":"s","aud":"istio-ca","exp":"M4rkerExp"}"#, "'exp'"),
            (
                r#"{"sub":"s","aud":"istio-ca","exp":1,"iat":"M4rkerIat"}"#,
                "'iat'",
            ),
            (
                r#"{"sub":{"x":"M4rkerSub"},"aud":"istio-ca","exp":1}"#,
                "'sub'",
            ),
            (r#"{"sub":"s","aud":[1,"M4rkerAud"],"exp":1}"#, "'aud'"),
            (r#"{"sub":"s","aud":{"M4rkerAud":1},"exp":1}"#, "'aud'"),
        ] {
            let e = parse(&jwt(claims), 0, true).unwrap_err();
            assert!(e.reason.contains(claim), "{claims}: {}", e.reason);
            assert!(!e.reason.contains("M4rker"), "{claims}: {}", e.reason);
        }
        // Not JSON, or JSON that is not an object: no excerpt of it either.
        for claims in [r#"{"sub":M4rker}"#, r#""M4rker""#, r#"["M4rker"]"#] {
            let e = parse(&jwt(claims), 0, true).unwrap_err();
            assert_eq!(e.reason, TokenError::Claims.to_string(), "{claims}");
        }
    }

    #[test]
    fn null_and_fractional_claims_are_accepted() {
        let (t, _) = parse(
            &jwt(r#"{"sub":null,"aud":null,"exp":4000000000.5,"iat":null}"#),
            0,
            false,
        )
        .unwrap();
        assert_eq!(
            t,
            Token {
                exp: Some(4_000_000_000),
                ..Token::default()
            }
        );
    }
}
