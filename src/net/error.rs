//! Typed HTTP failures. Kinds are told apart by reqwest's flags and by walking error
//! sources for typed errors (rustls, io), never by matching message text.

use std::time::Duration;

use thiserror::Error;

/// Which timeout ended a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// No byte arrived for the idle (read) timeout.
    Idle(Duration),
    /// The whole request (headers and body) took longer than its deadline.
    Total(Duration),
}

/// One HTTP request's failure. `url` fields are shown with secrets masked.
#[derive(Debug, Error)]
pub enum Error {
    /// A timeout; retryable.
    #[error("{url}: {}", match .which {
        Timeout::Idle(d) => format!("timed out: no data for {} s (download.idle_timeout_secs)", d.as_secs()),
        Timeout::Total(d) => format!("not finished within the {} s deadline (download.deadline_secs); the server or the network is too slow", d.as_secs()),
    })]
    Timeout {
        /// The request URL.
        url: String,
        /// Which one.
        which: Timeout,
    },
    /// TLS failed (an unknown issuer, a name mismatch, a handshake error); retrying does
    /// not help.
    #[error("{url}: TLS error: {detail}; for a private CA give its PEM file (--ca-file, package.ca_file or [source] ca_file)")]
    Tls {
        /// The request URL.
        url: String,
        /// The error chain.
        detail: String,
    },
    /// No connection (refused, unreachable, DNS, connect timeout); retryable.
    #[error("{url}: cannot connect: {detail}")]
    Connect {
        /// The request URL.
        url: String,
        /// The error chain.
        detail: String,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The request URL.
        url: String,
        /// The status code.
        status: u16,
        /// What the server's Retry-After asked for, if anything.
        retry_after: Option<Duration>,
    },
    /// A redirect this client does not follow.
    #[error("redirect from {from} to {to} refused: {why}")]
    Redirect {
        /// The URL that answered with the redirect.
        from: String,
        /// Where it pointed.
        to: String,
        /// Why it is refused.
        why: String,
    },
    /// The request failed some other way (the connection dropped mid-body, a protocol
    /// error); retryable.
    #[error("{url}: {detail}")]
    Failed {
        /// The request URL.
        url: String,
        /// The error chain.
        detail: String,
    },
    /// The request could not even be made (an invalid URL or header).
    #[error("{url}: {detail}")]
    Invalid {
        /// The request URL.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// The client could not be built (a CA file unreadable or not PEM).
    #[error("cannot set up HTTPS: {0}")]
    Setup(String),
}

impl Error {
    /// Whether trying the same request again may succeed: timeouts, connection
    /// failures, dropped bodies, 408, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Connect { .. } | Error::Failed { .. } => true,
            Error::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Error::Tls { .. }
            | Error::Redirect { .. }
            | Error::Invalid { .. }
            | Error::Setup(_) => false,
        }
    }

    /// The Retry-After the server sent with an error status.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Classifies a reqwest error for `shown` (the URL, secrets masked). `idle`: the
    /// client's idle timeout, named in the message.
    pub(crate) fn from_reqwest(shown: &str, e: &reqwest::Error, idle: Duration) -> Error {
        let url = shown.to_string();
        let detail = crate::text::error_chain(e);
        if is_tls(e) {
            Error::Tls { url, detail }
        } else if e.is_connect() {
            Error::Connect { url, detail }
        } else if e.is_timeout() || has_io_timeout(e) {
            Error::Timeout {
                url,
                which: Timeout::Idle(idle),
            }
        } else if e.is_builder() {
            Error::Invalid { url, detail }
        } else {
            Error::Failed { url, detail }
        }
    }
}

/// Every error in `e`'s chain, including the payloads of `io::Error`s (whose `source()`
/// skips their own payload).
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(e);
    while let Some(c) = next {
        out.push(c);
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            out.push(inner as &(dyn std::error::Error + 'static));
            // An io::Error's source() is its payload's source: continue from the payload.
            next = inner.source();
        } else {
            next = c.source();
        }
        if out.len() > 32 {
            break;
        }
    }
    out
}

/// A rustls error anywhere in the chain (certificate verification, handshake, alert).
fn is_tls(e: &reqwest::Error) -> bool {
    chain(e)
        .iter()
        .any(|c| c.downcast_ref::<rustls::Error>().is_some())
}

/// An `io::ErrorKind::TimedOut` anywhere in the chain (a read timeout inside a body).
fn has_io_timeout(e: &reqwest::Error) -> bool {
    chain(e).iter().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || c.downcast_ref::<reqwest::Error>()
                .is_some_and(|r| r.is_timeout())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_sees_through_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let c = chain(&io);
        assert!(c
            .iter()
            .any(|e| e.downcast_ref::<rustls::Error>().is_some()));
    }

    #[test]
    fn retryable_kinds() {
        let status = |s| Error::Status {
            url: "u".into(),
            status: s,
            retry_after: None,
        };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!Error::Tls {
            url: "u".into(),
            detail: "d".into()
        }
        .is_retryable());
    }
}
