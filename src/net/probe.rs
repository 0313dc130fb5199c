//! Raw reachability probes for the online preflight: name resolution with a deadline,
//! a TCP connect that tells refused / timeout / no route apart, and a TLS handshake
//! verified the way pilot-agent verifies istiod (the bundle's root certificate as the
//! only trust anchor, ServerName = the host of the address: istio/istio
//! pilot/pkg/grpc/tls.go `getTLSDialOption`, TLS 1.2 at least, ALPN h2 as gRPC offers).
//!
//! Blocking std sockets with timeouts: each probe runs on its own thread (the caller
//! runs them concurrently), so no runtime is needed. Leaf module: nothing of vmagent's.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore};

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsFailure {
    /// The resolver answered: no such name (or another resolver error, in `.0`).
    NotFound(String),
    /// No answer within the deadline.
    Timeout,
}

/// Resolves `host` with the system resolver (getaddrinfo: /etc/hosts, then DNS), giving
/// up after `timeout` (the lookup thread is left to finish on its own).
pub fn resolve(host: &str, timeout: Duration) -> Result<Vec<IpAddr>, DnsFailure> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    let spawned = std::thread::Builder::new()
        .name("vmagent-dns".into())
        .spawn(move || {
            let r = (name.as_str(), 0u16)
                .to_socket_addrs()
                .map(|a| a.map(|s| s.ip()).collect::<Vec<_>>());
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(DnsFailure::NotFound(format!(
            "cannot start the lookup: {e}"
        )));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(ips)) if !ips.is_empty() => Ok(dedup(ips)),
        Ok(Ok(_)) => Err(DnsFailure::NotFound("no address".into())),
        Ok(Err(e)) => Err(DnsFailure::NotFound(e.to_string())),
        Err(_) => Err(DnsFailure::Timeout),
    }
}

fn dedup(ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(ips.len());
    for ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Why a TCP connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// RST: the host is there, nothing listens on the port (or a firewall rejects).
    Refused,
    /// No answer within the deadline (packets dropped on the way).
    Timeout,
    /// The kernel has no route to the address (or the host/network is unreachable).
    NoRoute,
    /// Any other error, with its text.
    Other(String),
}

/// Classifies a connect error by its kind (never by its text).
pub fn classify_connect(e: &io::Error) -> ConnectFailure {
    match e.kind() {
        ErrorKind::ConnectionRefused => ConnectFailure::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => ConnectFailure::Timeout,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => ConnectFailure::NoRoute,
        _ => ConnectFailure::Other(e.to_string()),
    }
}

/// Connects to `addr` within `timeout`.
pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectFailure> {
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| classify_connect(&e))
}

/// Why a TLS handshake failed, by what it means for a mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's chain does not lead to the given roots (unknown issuer, bad
    /// signature): another mesh's root certificate.
    UnknownIssuer,
    /// The certificate is not valid for the server name (its SANs, in `.0` when known).
    WrongName(Vec<String>),
    /// The certificate expired (`now`, `not_after` as Unix seconds when known).
    Expired {
        /// Local time used.
        now: Option<u64>,
        /// The certificate's notAfter.
        not_after: Option<u64>,
    },
    /// The certificate is not valid yet (`now`, `not_before`).
    NotYetValid {
        /// Local time used.
        now: Option<u64>,
        /// The certificate's notBefore.
        not_before: Option<u64>,
    },
    /// The connection was closed or reset during the handshake: something accepted the
    /// TCP connection but does not speak TLS for this name (a gateway routing nowhere).
    Closed,
    /// The peer sent something that is not TLS (e.g. plain HTTP).
    NotTls,
    /// The peer sent an alert (`.0`: its name).
    Alert(String),
    /// No handshake within the deadline.
    Timeout,
    /// Anything else (text of the error).
    Other(String),
}

/// A successful handshake.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The peer's leaf certificate (DER).
    pub leaf: Vec<u8>,
    /// Negotiated protocol version, e.g. `TLSv1_3`.
    pub version: String,
}

/// Does a TLS handshake over `stream` with SNI and verification name `server_name`,
/// trusting only `roots` (DER). The stream's read/write timeouts are set to `timeout`.
pub fn handshake(
    mut stream: TcpStream,
    server_name: &str,
    roots: &[Vec<u8>],
    timeout: Duration,
) -> Result<TlsPeer, TlsFailure> {
    let mut store = RootCertStore::empty();
    for der in roots {
        // A root the parser refuses is left out: the handshake then reports the issuer.
        let _ = store.add(CertificateDer::from(der.clone()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFailure::Other(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| TlsFailure::Other(format!("'{server_name}' is not a server name: {e}")))?;
    let mut conn = ClientConnection::new(Arc::new(config), name).map_err(|e| classify_tls(&e))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    while conn.is_handshaking() {
        match conn.complete_io(&mut stream) {
            Ok((0, 0)) if conn.is_handshaking() => return Err(TlsFailure::Closed),
            Ok(_) => {}
            Err(e) => return Err(classify_io(&e)),
        }
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut stream);
    Ok(TlsPeer { leaf, version })
}

/// Classifies an I/O error of the handshake: a wrapped rustls error by its variant,
/// else by the error kind.
pub fn classify_io(e: &io::Error) -> TlsFailure {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return classify_tls(inner);
    }
    match e.kind() {
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => TlsFailure::Closed,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => TlsFailure::Timeout,
        _ => TlsFailure::Other(e.to_string()),
    }
}

/// Classifies a rustls error by its enum variant.
pub fn classify_tls(e: &rustls::Error) -> TlsFailure {
    let secs = |t: &UnixTime| Some(t.as_secs());
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                TlsFailure::UnknownIssuer
            }
            CertificateError::NotValidForName => TlsFailure::WrongName(vec![]),
            CertificateError::NotValidForNameContext { presented, .. } => {
                TlsFailure::WrongName(presented.clone())
            }
            CertificateError::Expired => TlsFailure::Expired {
                now: None,
                not_after: None,
            },
            CertificateError::ExpiredContext { time, not_after } => TlsFailure::Expired {
                now: secs(time),
                not_after: secs(not_after),
            },
            CertificateError::NotValidYet => TlsFailure::NotYetValid {
                now: None,
                not_before: None,
            },
            CertificateError::NotValidYetContext { time, not_before } => TlsFailure::NotYetValid {
                now: secs(time),
                not_before: secs(not_before),
            },
            other => TlsFailure::Other(format!("invalid certificate: {other:?}")),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            TlsFailure::NotTls
        }
        rustls::Error::AlertReceived(a) => TlsFailure::Alert(format!("{a:?}")),
        other => TlsFailure::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_are_told_apart_by_kind() {
        let k = |kind| classify_connect(&io::Error::from(kind));
        assert_eq!(k(ErrorKind::ConnectionRefused), ConnectFailure::Refused);
        assert_eq!(k(ErrorKind::TimedOut), ConnectFailure::Timeout);
        assert_eq!(k(ErrorKind::HostUnreachable), ConnectFailure::NoRoute);
        assert_eq!(k(ErrorKind::NetworkUnreachable), ConnectFailure::NoRoute);
        let raw = |n| classify_connect(&io::Error::from_raw_os_error(n));
        assert_eq!(raw(libc::ECONNREFUSED), ConnectFailure::Refused);
        assert_eq!(raw(libc::EHOSTUNREACH), ConnectFailure::NoRoute);
        assert_eq!(raw(libc::ENETUNREACH), ConnectFailure::NoRoute);
        assert!(matches!(raw(libc::EACCES), ConnectFailure::Other(_)));
    }

    #[test]
    fn rustls_errors_map_to_mesh_meanings() {
        let c = |e| classify_tls(&rustls::Error::InvalidCertificate(e));
        assert_eq!(
            c(CertificateError::UnknownIssuer),
            TlsFailure::UnknownIssuer
        );
        assert_eq!(c(CertificateError::BadSignature), TlsFailure::UnknownIssuer);
        assert_eq!(
            c(CertificateError::NotValidForName),
            TlsFailure::WrongName(vec![])
        );
        assert!(matches!(
            c(CertificateError::Expired),
            TlsFailure::Expired { .. }
        ));
        assert!(matches!(
            c(CertificateError::NotValidYet),
            TlsFailure::NotYetValid { .. }
        ));
        let eof = io::Error::from(ErrorKind::UnexpectedEof);
        assert_eq!(classify_io(&eof), TlsFailure::Closed);
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        assert_eq!(classify_io(&reset), TlsFailure::Closed);
        let wrapped = io::Error::new(
            ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(classify_io(&wrapped), TlsFailure::UnknownIssuer);
    }

    #[test]
    fn ip_literals_resolve_to_themselves() {
        assert_eq!(
            resolve("192.0.2.1", Duration::from_secs(1)),
            Ok(vec!["192.0.2.1".parse().unwrap()])
        );
    }
}
