//! Masking secrets in URLs before they are shown anywhere: `config show`, the status
//! file (world-readable), the report URL's document, log lines and error messages. A
//! bundle or package URL may carry credentials (`https://user:password@host/...`) or a
//! signed query (`?access_token=...`, `X-Amz-Signature=...`); what is shown keeps the
//! scheme, host, path and harmless parameters, so a message still says where.
//!
//! Leaf module (layer 1): imports nothing of vmagent's, so config, status, daemon and
//! package code all use this one function instead of each masking its own way.
//!
//! The URL is split by hand rather than parsed and re-serialised with the `url` crate:
//! a parser's serialisation normalises what it shows (`{version}` in a package URL
//! template becomes `%7Bversion%7D`), and error text (reqwest's `for url (...)`) needs
//! URLs found inside free text. The split follows the WHATWG rules the `url` crate (and
//! so reqwest) uses to find the secrets: the authority ends at the first `/`, `?`, `#`
//! or `\`, the userinfo at its last `@`; the unit tests check the two agree.

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Query parameter names (lower-case, after percent-decoding) whose values are secrets.
const EXACT: &[&str] = &[
    "sig", "key", "auth", "code", "pwd", "passwd", "apikey", "api_key", "api-key", "sas", "jwt",
];

/// A parameter whose lower-cased name contains one of these carries a secret
/// (`access_token`, `X-Amz-Security-Token`, `client_secret`, `X-Goog-Signature`,
/// `X-Amz-Credential`, ...).
const CONTAINS: &[&str] = &[
    "token",
    "secret",
    "password",
    "signature",
    "credential",
    "session",
];

/// Whether a query (or fragment) parameter named `name` carries a secret. `name` is
/// taken as it appears in the URL: percent-encoding is decoded first, so
/// `access%5Ftoken` counts as `access_token`.
pub fn is_sensitive_param(name: &str) -> bool {
    let n = percent_decode(name).trim().to_ascii_lowercase();
    EXACT.contains(&n.as_str()) || CONTAINS.iter().any(|c| n.contains(c))
}

/// `s` (one URL) with its secrets masked: the userinfo becomes `***` (user name too:
/// it is often a token itself) and the value of every sensitive query or fragment
/// parameter becomes `***`. Everything else is kept byte for byte. A string without
/// `://` is not a URL and comes back unchanged.
pub fn url(s: &str) -> String {
    let Some(i) = s.find("://") else {
        return s.to_string();
    };
    let (scheme, after) = s.split_at(i + 3);
    let auth_end = after.find(['/', '?', '#', '\\']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(auth_end);
    let mut out = String::with_capacity(s.len());
    out.push_str(scheme);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(MASK);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (tail, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            out.push_str(&params(query));
        }
        None => out.push_str(before_fragment),
    }
    // OAuth's implicit flow puts tokens in the fragment (`#access_token=...`).
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(&params(f));
    }
    out
}

/// Free text (an error message, a log line) with every `scheme://...` URL in it
/// masked as [`url`] does. A URL ends at whitespace, a quote, `<`, `>` or a control
/// character; closing punctuation right after it (`)` of reqwest's `for url (...)`, a
/// final `.` or `:`) stays outside, so the message reads as before.
pub fn text(s: &str) -> String {
    if !s.contains("://") {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let head = &rest[..i];
        // Scheme characters are ASCII, so the byte after a non-scheme byte starts a char.
        let start = head
            .bytes()
            .rposition(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
            .map_or(0, |j| j + 1);
        let body = &rest[i + 3..];
        let len = body
            .find(|c: char| {
                c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '`')
            })
            .unwrap_or(body.len());
        let span = body[..len].trim_end_matches([')', ']', '.', ',', ';', ':', '!']);
        let end = i + 3 + span.len();
        if start == i {
            // `://` without a scheme in front: not a URL.
            out.push_str(&rest[..end]);
        } else {
            out.push_str(&rest[..start]);
            out.push_str(&url(&rest[start..end]));
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `a=1&access_token=x` -> `a=1&access_token=***`.
fn params(q: &str) -> String {
    q.split('&')
        .map(|p| match p.split_once('=') {
            Some((name, value)) if !value.is_empty() && is_sensitive_param(name) => {
                format!("{name}={MASK}")
            }
            _ => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `%XX` decoded and `+` as a space (form encoding), invalid escapes kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |k: usize| b.get(k).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked_whole() {
        assert_eq!(
            url("https://vmuser:pa55word@bundles.example:8443/vm.tar"),
            "https://***@bundles.example:8443/vm.tar"
        );
        assert_eq!(url("https://tok3n@h/x"), "https://***@h/x");
        // The last '@' of the authority ends the userinfo (WHATWG), so an '@' in the
        // password is masked too; an '@' in the path is not userinfo.
        assert_eq!(url("https://u:p@ss@h/x"), "https://***@h/x");
        assert_eq!(url("https://h/a@b"), "https://h/a@b");
    }

    #[test]
    fn sensitive_query_values_are_masked_others_kept() {
        assert_eq!(
            url("https://h/b.tar?access_token=S3cr3tTok&x=1"),
            "https://h/b.tar?access_token=***&x=1"
        );
        assert_eq!(
            url("https://s3.example/p.deb?X-Amz-Algorithm=AWS4&X-Amz-Credential=AK%2F1&X-Amz-Signature=abc&X-Amz-Security-Token=t"),
            "https://s3.example/p.deb?X-Amz-Algorithm=AWS4&X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***"
        );
        assert_eq!(
            url("https://h/x?sig=1&se=2026&sv=3#access_token=f&state=s"),
            "https://h/x?sig=***&se=2026&sv=3#access_token=***&state=s"
        );
        assert_eq!(url("https://h/x?token=&a"), "https://h/x?token=&a");
    }

    #[test]
    fn sensitive_names() {
        for n in [
            "access_token",
            "TOKEN",
            "sig",
            "Signature",
            "X-Amz-Signature",
            "X-Amz-Credential",
            "X-Goog-Signature",
            "X-Goog-Credential",
            "password",
            "secret",
            "client_secret",
            "key",
            "apikey",
            "api_key",
            "auth",
            "code",
            "access%5Ftoken",
            "my+password",
        ] {
            assert!(is_sensitive_param(n), "{n}");
        }
        for n in [
            "x",
            "version",
            "arch",
            "se",
            "X-Amz-Date",
            "keyword",
            "codec",
        ] {
            assert!(!is_sensitive_param(n), "{n}");
        }
    }

    #[test]
    fn templates_and_non_urls_are_unchanged() {
        let t = "https://blob.istio.io/istio-release/releases/{version}/{format}/istio-sidecar{arch_suffix}.{format}";
        assert_eq!(url(t), t);
        assert_eq!(url("/etc/vmagent/bundle.tar"), "/etc/vmagent/bundle.tar");
        assert_eq!(text("no url here: a=b?token=x"), "no url here: a=b?token=x");
    }

    #[test]
    fn urls_inside_text_are_masked() {
        let e = "https://u:pw@127.0.0.1:9/b.tar?access_token=T0k&x=1: error sending request for url (https://127.0.0.1:9/b.tar?access_token=T0k&x=1): connection refused";
        assert_eq!(
            text(e),
            "https://***@127.0.0.1:9/b.tar?access_token=***&x=1: error sending request for url (https://127.0.0.1:9/b.tar?access_token=***&x=1): connection refused"
        );
        assert_eq!(
            text("bundle URL 'http://a:b@h/x': only https"),
            "bundle URL 'http://***@h/x': only https"
        );
        assert_eq!(text("odd :// here é://x"), "odd :// here é://x");
        assert_eq!(text("é\"https://a:b@h\""), "é\"https://***@h\"");
    }

    #[test]
    fn idempotent() {
        let s = "see https://u:p@h/x?token=t&k=v#code=c.";
        assert_eq!(text(&text(s)), text(s));
    }

    /// The secrets the real URL parser (the `url` crate, through reqwest) finds are the
    /// ones masked.
    #[test]
    fn agrees_with_the_url_crate() {
        for s in [
            "https://vmuser:pa55word@h:1/b?access_token=S3cr3tTok&x=1",
            "https://u%40x:p%3Aw@h/b?X-Goog-Signature=s1g&X-Goog-Credential=cr3d",
            "https://u:p@ss@h/b?a=1&Token=v#x",
            "http://onlyuser@h\\b?sig=zz",
        ] {
            let shown = url(s);
            let parsed = reqwest::Url::parse(s).unwrap();
            let mut secrets = vec![parsed.username().to_string()];
            secrets.extend(parsed.password().map(str::to_string));
            for (k, v) in parsed.query_pairs() {
                if is_sensitive_param(&k) {
                    secrets.push(v.into_owned());
                }
            }
            for secret in secrets.iter().filter(|s| !s.is_empty()) {
                assert!(!shown.contains(secret.as_str()), "{secret} in {shown}");
            }
            let again = reqwest::Url::parse(&shown).unwrap();
            assert_eq!(again.host_str(), parsed.host_str(), "{shown}");
            assert_eq!(again.path(), parsed.path(), "{shown}");
        }
    }
}
