//! `provider = "kubernetes"`: a TokenRequest, as `istioctl x workload entry configure`
//! makes the bundle's token (`CreateToken` on `serviceaccounts/token`, audience
//! `istio-ca`): `POST {server}/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token` with
//! an `authentication.k8s.io/v1` TokenRequest, authenticated by a bearer credential,
//! over the process's one HTTP client (the API server's CA from `token.ca_file`). The
//! answer's `status.token` is the JWT.

use std::path::PathBuf;
use std::time::Duration;

use super::{FetchError, Identity, MAX_TOKEN_BYTES};
use crate::net::{self, header, Client, Request};

/// The deadline of one TokenRequest: the API server answers in milliseconds.
const DEADLINE: Duration = Duration::from_secs(60);

/// The API server and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct KubeProvider {
    /// `https://HOST[:PORT]`.
    pub server: String,
    /// The credential file, resolved inside the root.
    pub credential: PathBuf,
    /// The credential file as configured, for messages.
    pub credential_sys: String,
    /// `expirationSeconds`.
    pub duration_secs: u64,
    /// The client's settings (the CA file included).
    pub net: net::Settings,
}

/// The TokenRequest URL for `who`.
pub fn url(server: &str, who: &Identity) -> String {
    format!(
        "{}/api/v1/namespaces/{}/serviceaccounts/{}/token",
        server.trim_end_matches('/'),
        who.namespace,
        who.service_account
    )
}

/// The TokenRequest body.
pub fn body(duration_secs: u64) -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [super::validate::AUDIENCE],
            "expirationSeconds": duration_secs,
        }
    })
    .to_string()
    .into_bytes()
}

/// `status.token` of a TokenRequest answer, or what is missing (serde_json's own
/// messages quote the input, which holds the token: never used).
pub fn token_of(answer: &[u8]) -> Result<Vec<u8>, &'static str> {
    let v: serde_json::Value = serde_json::from_slice(answer).map_err(|_| "not JSON")?;
    if v.get("kind").and_then(|k| k.as_str()) != Some("TokenRequest") {
        return Err("kind is not TokenRequest");
    }
    match v.pointer("/status/token") {
        Some(serde_json::Value::String(t)) if !t.is_empty() => Ok(t.clone().into_bytes()),
        _ => Err("no status.token"),
    }
}

/// What to do about an error status.
pub fn hint(status: u16, who: &Identity, credential: &str) -> String {
    match status {
        401 => format!("; the API server did not accept the credential in {credential}: put a valid token there"),
        403 => format!("; the credential in {credential} may not create serviceaccounts/token for service account {} in namespace {}: bind a Role allowing it (see README, token providers)", who.service_account, who.namespace),
        404 => format!("; no service account {} in namespace {} (or token.server is not the API server)", who.service_account, who.namespace),
        429 | 500..=599 => "; the API server is busy or failing: try again later".into(),
        _ => String::new(),
    }
}

impl KubeProvider {
    /// Asks the API server for a token for `who`.
    pub async fn request(&self, who: &Identity) -> Result<Vec<u8>, FetchError> {
        let cred_err = |source| FetchError::Credential {
            path: self.credential_sys.clone(),
            source,
        };
        let cred = match crate::fsx::read_file(&self.credential, MAX_TOKEN_BYTES) {
            Ok(Some(c)) => c,
            Ok(None) => return Err(cred_err(std::io::ErrorKind::NotFound.into())),
            Err(e) => return Err(cred_err(e)),
        };
        let cred = String::from_utf8(cred.trim_ascii().to_vec())
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| cred_err(std::io::Error::other("empty or not text")))?;
        let mut auth = header::HeaderValue::from_str(&format!("Bearer {cred}"))
            .map_err(|_| cred_err(std::io::Error::other("not a valid bearer token")))?;
        auth.set_sensitive(true);
        let url = url(&self.server, who);
        let http = |source: net::Error| {
            let hint = match &source {
                net::Error::Status {
                    status,
                    retry_after,
                    ..
                } => {
                    let mut h = hint(*status, who, &self.credential_sys);
                    if let Some(d) = retry_after {
                        h.push_str(&format!(" (it asks to wait {} s)", d.as_secs()));
                    }
                    h
                }
                _ => String::new(),
            };
            FetchError::Http { source, hint }
        };
        let client = Client::shared(&self.net).map_err(http)?;
        let req = Request::post_json(&url, body(self.duration_secs))
            .header(header::AUTHORIZATION, auth)
            .header(
                header::ACCEPT,
                header::HeaderValue::from_static("application/json"),
            )
            .deadline(DEADLINE);
        let resp = client.send(req).await.map_err(http)?;
        let resp = resp.error_for_status().map_err(http)?;
        let shown = resp.shown().to_string();
        let malformed = |what| FetchError::Malformed {
            url: shown.clone(),
            what,
        };
        let answer = resp
            .bytes_limited(MAX_TOKEN_BYTES as usize)
            .await
            .map_err(http)?
            .ok_or_else(|| malformed("larger than 64 KiB"))?;
        token_of(&answer).map_err(malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Identity {
        Identity {
            namespace: "vm-ns".into(),
            service_account: "vm-sa".into(),
        }
    }

    #[test]
    fn request_shape() {
        assert_eq!(
            url("https://k8s:6443/", &who()),
            "https://k8s:6443/api/v1/namespaces/vm-ns/serviceaccounts/vm-sa/token"
        );
        let b: serde_json::Value = serde_json::from_slice(&body(3600)).unwrap();
        assert_eq!(b["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(b["kind"], "TokenRequest");
        assert_eq!(b["spec"]["audiences"], serde_json::json!(["istio-ca"]));
        assert_eq!(b["spec"]["expirationSeconds"], 3600);
    }

    #[test]
    fn answer_parsing() {
        let ok = br#"{"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1","status":{"token":"a.b.c","expirationTimestamp":"2026-12-03T18:00:00Z"}}"#;
        assert_eq!(token_of(ok).unwrap(), b"a.b.c");
        assert_eq!(token_of(b"{nope"), Err("not JSON"));
        assert_eq!(
            token_of(br#"{"kind":"Status"}"#),
            Err("kind is not TokenRequest")
        );
        assert_eq!(
            token_of(br#"{"kind":"TokenRequest","status":{}}"#),
            Err("no status.token")
        );
    }

    #[test]
    fn hints_name_what_to_fix() {
        assert!(hint(403, &who(), "/etc/vmagent/k8s").contains("bind a Role"));
        assert!(hint(401, &who(), "/etc/vmagent/k8s").contains("/etc/vmagent/k8s"));
        assert!(hint(404, &who(), "c").contains("vm-sa"));
        assert_eq!(hint(418, &who(), "c"), "");
    }
}
