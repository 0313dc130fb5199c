//! The one redirect policy, as a pure function: https never goes to http, and when the
//! origin (scheme, host, port) differs from the one the request was made to, the
//! configured secret headers (and Authorization) are not sent. reqwest's own policy
//! cannot strip custom headers, so [`super::Client`] follows redirects itself with this.

use reqwest::Url;

/// Most redirects followed for one request.
pub const MAX_HOPS: usize = 10;

/// Where to go next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The absolute URL to request next.
    pub url: Url,
    /// Whether secret headers may be sent to it (same origin as the original request).
    pub secrets: bool,
}

/// Why a redirect is not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `Location` is not a URL.
    BadLocation,
    /// https to http: the response (and anything sent) would travel in clear text.
    Downgrade,
    /// Neither http nor https.
    Scheme,
}

impl Refused {
    /// What the refusal means, for an error message.
    pub fn describe(&self) -> &'static str {
        match self {
            Refused::BadLocation => "the Location header is not a valid URL",
            Refused::Downgrade => "an https request is never redirected to plain http",
            Refused::Scheme => "only http and https redirects are followed",
        }
    }
}

/// The next hop of a redirect from `current` (whose response carried `location`) for a
/// request first made to `original`.
pub fn next(original: &Url, current: &Url, location: &str) -> Result<Hop, Refused> {
    let url = current.join(location).map_err(|_| Refused::BadLocation)?;
    match (current.scheme(), url.scheme()) {
        (_, "http" | "https") => {}
        _ => return Err(Refused::Scheme),
    }
    // Refused against both the original and the hop before: once a request is on
    // https it stays there.
    if url.scheme() == "http" && (current.scheme() == "https" || original.scheme() == "https") {
        return Err(Refused::Downgrade);
    }
    let secrets = same_origin(original, &url);
    Ok(Hop { url, secrets })
}

/// Same scheme, host and (effective) port.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn hop(orig: &str, cur: &str, loc: &str) -> Result<Hop, Refused> {
        next(&u(orig), &u(cur), loc)
    }

    #[test]
    fn relative_and_same_origin_keep_secrets() {
        let h = hop("https://a.example/x", "https://a.example/x", "/y?z=1").unwrap();
        assert_eq!(h.url.as_str(), "https://a.example/y?z=1");
        assert!(h.secrets);
        // An explicit default port is the same origin.
        let h = hop(
            "https://a.example/x",
            "https://a.example/x",
            "https://a.example:443/y",
        );
        assert!(h.unwrap().secrets);
    }

    #[test]
    fn another_origin_drops_secrets() {
        for loc in [
            "https://b.example/y",
            "https://a.example:8443/y",
            "http://a.example:8080/y",
            "https://a.example/y",
        ] {
            let h = hop("http://a.example/x", "http://a.example/x", loc).unwrap();
            assert!(!h.secrets, "{loc}");
        }
        // Back at the original origin after a detour: that origin is the one the
        // secrets were configured for.
        let h = hop(
            "https://a.example/x",
            "https://b.example/y",
            "https://a.example/z",
        );
        assert!(h.unwrap().secrets);
    }

    #[test]
    fn https_never_goes_to_http() {
        assert_eq!(
            hop(
                "https://a.example/x",
                "https://a.example/x",
                "http://a.example/x"
            ),
            Err(Refused::Downgrade)
        );
        // Not even after an http hop that the original was not.
        assert_eq!(
            hop(
                "https://a.example/x",
                "https://b.example/x",
                "http://c.example/"
            ),
            Err(Refused::Downgrade)
        );
        // http to https is an upgrade, fine (another origin: no secrets).
        let h = hop(
            "http://a.example/x",
            "http://a.example/x",
            "https://a.example/x",
        );
        assert!(!h.unwrap().secrets);
    }

    #[test]
    fn odd_locations_are_refused() {
        assert_eq!(
            hop(
                "https://a.example/",
                "https://a.example/",
                "file:///etc/passwd"
            ),
            Err(Refused::Scheme)
        );
        assert_eq!(
            hop("https://a.example/", "https://a.example/", "http://[::1"),
            Err(Refused::BadLocation)
        );
    }
}
