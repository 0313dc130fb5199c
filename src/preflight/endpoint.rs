//! Reaching istiod as pilot-agent will: discoveryAddress (mesh.yaml; Istio's default
//! `istiod.istio-system.svc:15012`, istio/istio pkg/config/mesh/mesh.go), CA_ADDR
//! (cluster.env; defaults to discoveryAddress, pilot/cmd/pilot-agent/options/security.go)
//! and, for multi-network bundles, the east-west gateway's 15443.
//!
//! Name resolution as after apply: the bundle's hosts lines first (apply puts them in
//! /etc/hosts), then the VM's resolver. The TLS ServerName is the host of the address,
//! `istiod.istio-system.svc` for a host containing "localhost", and ISTIOD_SAN when set
//! for the discovery address (istio/istio pilot/pkg/grpc/tls.go `getTLSDialOption`,
//! pkg/istio-agent/xds_proxy.go).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::bundle::Bundle;
use crate::config::CheckName;
use crate::net::probe::{self, ConnectFailure, DnsFailure, TlsFailure};

use super::{CheckResult, Failure};

/// Istio's default discovery address (pkg/config/mesh/mesh.go).
pub const DEFAULT_DISCOVERY: &str = "istiod.istio-system.svc:15012";

/// The seed step that makes 15012 reachable from outside the cluster.
const EXPOSE_ISTIOD: &str = "expose istiod through the east-west gateway (istio/istio samples/multicluster/expose-istiod.yaml)";

/// One address to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Which check.
    pub check: CheckName,
    /// Where the address comes from (for messages), e.g. `discoveryAddress (mesh.yaml)`.
    pub origin: &'static str,
    /// Host (name or IP literal).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS server name to verify; `None`: TCP only.
    pub server_name: Option<String>,
}

/// The targets of a bundle: istiod, the CA (or why it is not probed separately), the
/// east-west gateway (or why not).
#[derive(Debug, Clone)]
pub struct Targets {
    /// discoveryAddress.
    pub istiod: Target,
    /// CA_ADDR, or why it is skipped.
    pub ca: Result<Target, String>,
    /// The gateway's 15443, or why it is skipped.
    pub gateway: Result<Target, String>,
}

/// Splits `host:port` (`[v6]:port` too); a missing port is 15012.
pub fn split(addr: &str) -> (String, u16) {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (h.to_string(), p.parse().unwrap_or(15012));
        }
        return (rest.trim_end_matches(']').to_string(), 15012);
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(15012)),
        _ => (addr.to_string(), 15012),
    }
}

/// The name pilot-agent verifies for `host` (tls.go: "localhost" means a port-forward
/// to istiod; an explicit SAN wins).
pub fn server_name(host: &str, san: Option<&str>) -> String {
    match san.filter(|s| !s.is_empty()) {
        Some(s) => s.to_string(),
        None if host.contains("localhost") => "istiod.istio-system.svc".into(),
        None => host.to_string(),
    }
}

/// What to probe for `bundle` (pure).
pub fn targets(bundle: &Bundle) -> Targets {
    let env = &bundle.cluster_env;
    let discovery = bundle
        .mesh
        .discovery_address
        .clone()
        .unwrap_or_else(|| DEFAULT_DISCOVERY.to_string());
    let (host, port) = split(&discovery);
    let istiod = Target {
        check: CheckName::Istiod,
        origin: "discoveryAddress (mesh.yaml)",
        server_name: Some(server_name(&host, env.get("ISTIOD_SAN"))),
        host: host.clone(),
        port,
    };
    let ca = match env.get("CA_ADDR").filter(|a| !a.is_empty()) {
        None => Err("CA_ADDR is not set: the CA is istiod at discoveryAddress".to_string()),
        Some(a) if a == discovery => {
            Err("CA_ADDR is discoveryAddress (checked as istiod)".to_string())
        }
        Some(a) => {
            let (h, p) = split(a);
            Ok(Target {
                check: CheckName::Ca,
                origin: "CA_ADDR (cluster.env)",
                server_name: Some(server_name(&h, None)),
                host: h,
                port: p,
            })
        }
    };
    let gateway = match env.get("ISTIO_META_NETWORK").filter(|n| !n.is_empty()) {
        None => Err("single-network bundle (no ISTIO_META_NETWORK)".to_string()),
        Some(_) => Ok(Target {
            check: CheckName::Gateway,
            origin: "the east-west gateway (ISTIO_META_NETWORK is set)",
            host,
            port: 15443,
            server_name: None,
        }),
    };
    Targets {
        istiod,
        ca,
        gateway,
    }
}

/// The addresses of `host` from the bundle's hosts lines, if it has any.
pub fn from_hosts(bundle: &Bundle, host: &str) -> Vec<IpAddr> {
    bundle
        .hosts
        .iter()
        .filter(|e| e.names.iter().any(|n| n.eq_ignore_ascii_case(host)))
        .map(|e| e.ip)
        .collect()
}

/// Resolves, connects and (for TLS targets) handshakes; the result says what failed
/// and what to do.
pub fn check(t: &Target, bundle: &Bundle, timeout: Duration) -> CheckResult {
    let listed = from_hosts(bundle, &t.host);
    let (ips, via) = if !listed.is_empty() {
        (listed, "the bundle's hosts")
    } else {
        match probe::resolve(&t.host, timeout) {
            Ok(ips) => (ips, "this VM's resolver"),
            Err(e) => return CheckResult::failed(t.check, Failure::Dns, dns_message(t, &e)),
        }
    };
    // pilot-agent's gRPC dial takes the first address; so does the check.
    let Some(&ip) = ips.first() else {
        return CheckResult::failed(
            t.check,
            Failure::Dns,
            dns_message(t, &DnsFailure::NotFound("no address".into())),
        );
    };
    let addr = SocketAddr::new(ip, t.port);
    let stream = match probe::connect(addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            return CheckResult::failed(
                t.check,
                Failure::Unreachable,
                connect_message(t, addr, via, &e, timeout),
            )
        }
    };
    let Some(name) = &t.server_name else {
        return CheckResult::ok(
            t.check,
            format!(
                "{}:{} ({addr}, from {via}) accepts TCP connections",
                t.host, t.port
            ),
        );
    };
    match probe::handshake(stream, name, &root_ders(bundle), timeout) {
        Ok(peer) => CheckResult::ok(
            t.check,
            format!(
                "{}:{} ({addr}, from {via}): TLS ({}) verified for {name} against the bundle's root-cert.pem",
                t.host, t.port, peer.version
            ),
        ),
        Err(e) => {
            let (class, msg) = tls_message(t, addr, name, &e);
            CheckResult::failed(t.check, class, msg)
        }
    }
}

/// The bundle's root certificates as DER.
fn root_ders(bundle: &Bundle) -> Vec<Vec<u8>> {
    let data = bundle
        .files
        .get(&crate::bundle::Member::RootCert)
        .map(Vec::as_slice)
        .unwrap_or_default();
    crate::bundle::pem::blocks(data)
        .map(|bs| {
            bs.into_iter()
                .filter(|b| b.label == "CERTIFICATE")
                .map(|b| b.der)
                .collect()
        })
        .unwrap_or_default()
}

/// DNS failure: cause and fix.
pub fn dns_message(t: &Target, e: &DnsFailure) -> String {
    let why = match e {
        DnsFailure::NotFound(r) => format!("does not resolve ({r})"),
        DnsFailure::Timeout => "got no answer from this VM's resolver in time".to_string(),
    };
    format!(
        "{} {} {why}, and the bundle's hosts file has no line for it: add `<east-west gateway IP> {}` to the bundle's hosts (istioctl leaves it empty when it cannot find the gateway IP) or make the name resolve in DNS",
        t.origin, t.host, t.host
    )
}

/// TCP failure: cause (refused / timeout / no route, told apart) and fix.
pub fn connect_message(
    t: &Target,
    addr: SocketAddr,
    via: &str,
    e: &ConnectFailure,
    timeout: Duration,
) -> String {
    let what = format!("{} {}:{} ({addr}, from {via})", t.origin, t.host, t.port);
    let expose = if t.port == 15443 {
        "expose services through the east-west gateway (istio/istio samples/multicluster/expose-services.yaml)"
    } else {
        EXPOSE_ISTIOD
    };
    match e {
        ConnectFailure::Refused => format!(
            "connection to {what} refused: nothing listens on port {} there: check the gateway IP, and do the seed step: {expose}",
            t.port
        ),
        ConnectFailure::Timeout => format!(
            "no answer from {what} within {} ms (packets dropped): check the gateway IP, and that firewalls and security groups let this VM reach TCP port {} on it",
            timeout.as_millis(),
            t.port
        ),
        ConnectFailure::NoRoute => format!(
            "no route from this VM to {what}: check the gateway IP and this VM's routes (`ip route get {}`)",
            addr.ip()
        ),
        ConnectFailure::Other(r) => format!(
            "cannot connect to {what}: {r}: check the gateway IP and this VM's network"
        ),
    }
}

/// TLS failure: its class, cause and fix.
pub fn tls_message(t: &Target, addr: SocketAddr, name: &str, e: &TlsFailure) -> (Failure, String) {
    let at = format!("{}:{} ({addr})", t.host, t.port);
    let time = |s: Option<u64>| {
        s.and_then(|v| i64::try_from(v).ok())
            .map_or_else(|| "?".to_string(), crate::timefmt::rfc3339)
    };
    match e {
        TlsFailure::UnknownIssuer => (
            Failure::CaMismatch,
            format!("CA mismatch: the certificate served at {at} is not signed by the bundle's root-cert.pem: this bundle's root certificate is not this mesh's: make the bundle again from the cluster whose gateway this is (istioctl x workload entry configure), or fix the gateway IP"),
        ),
        TlsFailure::WrongName(sans) => {
            let names = if sans.is_empty() { String::new() } else { format!(" (it is for {})", sans.join(", ")) };
            (
                Failure::ServerName,
                format!("the certificate served at {at} is signed by this mesh but not valid for {name}{names}: the address reaches another service than istiod: check the gateway IP in the bundle's hosts and discoveryAddress in mesh.yaml"),
            )
        }
        TlsFailure::Expired { now, not_after } => (
            Failure::Clock,
            format!("the certificate served at {at} expired at {} but this VM's clock says {}: if this VM's clock is ahead, set it (timedatectl set-ntp true); else istiod's serving certificate has lapsed", time(*not_after), time(*now)),
        ),
        TlsFailure::NotYetValid { now, not_before } => (
            Failure::Clock,
            format!("the certificate served at {at} is valid only from {} but this VM's clock says {}: this VM's clock is behind: set it (timedatectl set-ntp true)", time(*not_before), time(*now)),
        ),
        TlsFailure::Closed | TlsFailure::NotTls | TlsFailure::Timeout | TlsFailure::Alert(_) => {
            let how = match e {
                TlsFailure::Closed => "closed the connection during the TLS handshake".to_string(),
                TlsFailure::NotTls => "answered the TLS handshake with something that is not TLS".to_string(),
                TlsFailure::Timeout => "accepted the connection but never answered the TLS handshake".to_string(),
                TlsFailure::Alert(a) => format!("refused the TLS handshake ({a})"),
                _ => String::new(),
            };
            (
                Failure::NotRouted,
                format!("{at} {how}: the gateway does not route port {} to istiod: do the seed step: {EXPOSE_ISTIOD}", t.port),
            )
        }
        TlsFailure::Other(r) => (
            Failure::NotRouted,
            format!("TLS handshake with {at} failed: {r}: check that the gateway routes port {} to istiod ({EXPOSE_ISTIOD})", t.port),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_like_go_net_split_host_port() {
        assert_eq!(
            split("istiod.istio-system.svc:15012"),
            ("istiod.istio-system.svc".into(), 15012)
        );
        assert_eq!(split("10.0.0.1:443"), ("10.0.0.1".into(), 443));
        assert_eq!(split("[fd00::1]:15012"), ("fd00::1".into(), 15012));
        assert_eq!(split("istiod"), ("istiod".into(), 15012));
    }

    #[test]
    fn server_name_follows_pilot_agent() {
        assert_eq!(
            server_name("istiod-1-24.istio-system.svc", None),
            "istiod-1-24.istio-system.svc"
        );
        assert_eq!(server_name("localhost", None), "istiod.istio-system.svc");
        assert_eq!(
            server_name("x.example", Some("istiod.istio-system.svc")),
            "istiod.istio-system.svc"
        );
        assert_eq!(server_name("x.example", Some("")), "x.example");
    }

    fn target(port: u16) -> Target {
        Target {
            check: CheckName::Istiod,
            origin: "discoveryAddress (mesh.yaml)",
            host: "istiod.istio-system.svc".into(),
            port,
            server_name: Some("istiod.istio-system.svc".into()),
        }
    }

    #[test]
    fn connect_failures_name_cause_and_fix() {
        let a: SocketAddr = "192.0.2.10:15012".parse().unwrap();
        let t = target(15012);
        let d = Duration::from_millis(2000);
        let m = |e| connect_message(&t, a, "the bundle's hosts", &e, d);
        assert!(m(ConnectFailure::Refused).contains("refused"));
        assert!(m(ConnectFailure::Refused).contains("expose-istiod.yaml"));
        assert!(m(ConnectFailure::Timeout).contains("within 2000 ms"));
        assert!(m(ConnectFailure::NoRoute).contains("no route"));
        let g = connect_message(&target(15443), a, "x", &ConnectFailure::Refused, d);
        assert!(g.contains("expose-services.yaml"), "{g}");
    }

    #[test]
    fn tls_failures_map_to_classes() {
        let a: SocketAddr = "192.0.2.10:15012".parse().unwrap();
        let t = target(15012);
        let c = |e| tls_message(&t, a, "istiod.istio-system.svc", &e).0;
        assert_eq!(c(TlsFailure::UnknownIssuer), Failure::CaMismatch);
        assert_eq!(
            c(TlsFailure::WrongName(vec!["x".into()])),
            Failure::ServerName
        );
        assert_eq!(
            c(TlsFailure::Expired {
                now: None,
                not_after: None
            }),
            Failure::Clock
        );
        assert_eq!(
            c(TlsFailure::NotYetValid {
                now: None,
                not_before: None
            }),
            Failure::Clock
        );
        assert_eq!(c(TlsFailure::Closed), Failure::NotRouted);
        assert_eq!(c(TlsFailure::NotTls), Failure::NotRouted);
        let (_, m) = tls_message(&t, a, "istiod.istio-system.svc", &TlsFailure::UnknownIssuer);
        assert!(
            m.contains("this bundle's root certificate is not this mesh's"),
            "{m}"
        );
        let (_, m) = tls_message(&t, a, "istiod.istio-system.svc", &TlsFailure::Closed);
        assert!(m.contains("does not route port 15012 to istiod"), "{m}");
        assert!(
            m.contains("expose istiod through the east-west gateway"),
            "{m}"
        );
    }
}
