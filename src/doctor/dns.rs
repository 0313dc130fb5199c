//! The DNS capture section: with `ISTIO_META_DNS_CAPTURE` on, a mesh name (the host of
//! the installed mesh config's discoveryAddress) and an external name (`[doctor]
//! external_name`) are both asked of pilot-agent's DNS proxy over UDP, on 127.0.0.1:15053
//! or where cluster.env's `DNS_PROXY_ADDR` puts it, and the failing side is named
//! ([`judge`]).
//!
//! How the proxy answers (istio/istio pkg/dns/client/dns.go, `ServeDNS`): a name in the
//! table istiod sends is answered by the agent itself; any other is forwarded to the
//! nameservers resolv.conf had when the agent started (`queryUpstream`); until istiod
//! has sent a table, every query gets SERVFAIL.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use super::{Kind, Section, Verdict};
use crate::bundle::Member;
use crate::dns_capture;
use crate::root::Root;

/// What one query got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Addresses.
    Resolved(Vec<IpAddr>),
    /// A DNS answer without an address: the response code (`NOERROR` with no record,
    /// `NXDOMAIN`, `SERVFAIL`, ...).
    Failed(String),
    /// Nothing answered (no listener: ICMP port unreachable, or a timeout).
    Silent(String),
}

impl Answer {
    fn describe(&self) -> String {
        match self {
            Answer::Resolved(a) => {
                let v: Vec<String> = a.iter().map(IpAddr::to_string).collect();
                format!("resolves to {}", v.join(", "))
            }
            Answer::Failed(rc) => format!("answered {rc}"),
            Answer::Silent(why) => format!("no answer ({why})"),
        }
    }
}

/// Asks `server` for the A record of `name` over UDP: two tries of `wait` each.
pub fn query(server: SocketAddr, name: &str, wait: Duration) -> Answer {
    let qname = match Name::from_ascii(name) {
        Ok(mut n) => {
            n.set_fqdn(true);
            n
        }
        Err(e) => return Answer::Failed(format!("(not a DNS name: {e})")),
    };
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, RecordType::A));
    let id = msg.metadata.id;
    let bytes = match msg.to_vec() {
        Ok(b) => b,
        Err(e) => return Answer::Silent(format!("cannot encode the query: {e}")),
    };
    let any: IpAddr = if server.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let bind = SocketAddr::new(any, 0);
    let sock = match UdpSocket::bind(bind).and_then(|s| s.connect(server).map(|_| s)) {
        Ok(s) => s,
        Err(e) => return Answer::Silent(e.to_string()),
    };
    if let Err(e) = sock.set_read_timeout(Some(wait)) {
        return Answer::Silent(e.to_string());
    }
    let mut last = String::from("timed out");
    for _ in 0..2 {
        if let Err(e) = sock.send(&bytes) {
            last = e.to_string();
            continue;
        }
        let mut buf = [0u8; 4096];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => match Message::from_vec(&buf[..n]) {
                    // Another query's late answer (the first try's): keep waiting.
                    Ok(m) if m.metadata.id != id => continue,
                    Ok(m) => return answer_of(&m),
                    Err(e) => return Answer::Failed(format!("(an unreadable answer: {e})")),
                },
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Answer::Silent("connection refused: nothing listens there".into())
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    last = format!("no reply within {} ms, twice", wait.as_millis());
                    break;
                }
                Err(e) => {
                    last = e.to_string();
                    break;
                }
            }
        }
    }
    Answer::Silent(last)
}

fn answer_of(m: &Message) -> Answer {
    let ips: Vec<IpAddr> = m.answers.iter().filter_map(|r| r.data.ip_addr()).collect();
    let rc = m.metadata.response_code;
    if rc == ResponseCode::NoError && !ips.is_empty() {
        return Answer::Resolved(ips);
    }
    let what = match rc {
        ResponseCode::NoError => "NOERROR without an address".to_string(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("response code {}", u16::from(other)),
    };
    Answer::Failed(what)
}

/// What the section checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The mesh name and its answer (`None`: no discoveryAddress host to ask).
    pub mesh: Option<(String, Answer)>,
    /// The external name and its answer.
    pub external: (String, Answer),
    /// The nameservers in resolv.conf now.
    pub upstreams: BTreeSet<String>,
    /// Where the DNS proxy was asked.
    pub server: SocketAddr,
}

/// The section from what the queries got: which side fails.
pub fn judge(p: &Probe) -> Section {
    let (ext_name, ext) = &p.external;
    let ups: Vec<&str> = p.upstreams.iter().map(String::as_str).collect();
    let ups = if ups.is_empty() {
        "none in resolv.conf".to_string()
    } else {
        ups.join(", ")
    };
    let mut details = vec![format!("upstream nameservers (resolv.conf now): {ups}")];
    if let Some((n, a)) = &p.mesh {
        details.push(format!("mesh name {n}: {}", a.describe()));
    }
    details.push(format!("external name {ext_name}: {}", ext.describe()));
    let mesh_ok = p
        .mesh
        .as_ref()
        .is_none_or(|(_, a)| matches!(a, Answer::Resolved(_)));
    let ext_ok = matches!(ext, Answer::Resolved(_));
    let silent = matches!(ext, Answer::Silent(_))
        && p.mesh
            .as_ref()
            .is_none_or(|(_, a)| matches!(a, Answer::Silent(_)));
    let mesh_name = p.mesh.as_ref().map(|(n, _)| n.as_str()).unwrap_or("");
    let (verdict, summary, hint) = if silent {
        (
            Verdict::Fail,
            format!("capture is on but nothing answers on {}: the proxy's DNS proxy is not running, so every lookup on this VM fails", p.server),
            Some("start istio (`systemctl start istio`) and see `journalctl -u istio` and /var/log/istio/istio.log for why it is down".to_string()),
        )
    } else if mesh_ok && ext_ok {
        (
            Verdict::Ok,
            "the DNS proxy answers mesh and external names".to_string(),
            None,
        )
    } else if !mesh_ok {
        let both = if ext_ok {
            ""
        } else {
            " (the external name fails too: until istiod sends its name table the proxy answers SERVFAIL to every name)"
        };
        (
            Verdict::Fail,
            format!("mesh side: {mesh_name} does not resolve through the DNS proxy: it has no mesh name table from istiod (not connected to istiod){both}"),
            Some("check the connection to istiod (`vmagent status`, the xdsproxy lines of /var/log/istio/istio.log)".to_string()),
        )
    } else {
        (
            Verdict::Fail,
            format!("upstream side: {ext_name} does not resolve: the DNS proxy forwards it to the upstream nameservers from resolv.conf ({ups}), which do not answer it"),
            Some(format!("check those nameservers (`dig @SERVER {ext_name}`); the proxy uses the ones resolv.conf had when istio started: restart istio after fixing resolv.conf (`vmagent daemon` does it when they change)")),
        )
    };
    Section {
        kind: Kind::DnsCapture,
        verdict,
        summary,
        details,
        hint,
    }
}

/// The host of the installed mesh config's discoveryAddress (`None` when there is no
/// such file or address, or it is an IP address: nothing to resolve).
fn mesh_name(root: &Root) -> Option<String> {
    let spec = crate::layout::file_for(Member::Mesh)?;
    let host = root.resolve(Path::new(spec.path)).ok()?;
    let data = crate::fsx::read_file(&host, 1 << 20).ok()??;
    let (mesh, _) = crate::bundle::mesh::parse(&data).ok()?;
    let addr = mesh.discovery_address?;
    let h = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    (h.parse::<IpAddr>().is_err() && !h.is_empty()).then(|| h.to_string())
}

/// The section for `root`: skipped (ok) when capture is off.
pub fn section(root: &Root, external: &str) -> Section {
    if !dns_capture::installed(root) {
        return Section {
            kind: Kind::DnsCapture,
            verdict: Verdict::Ok,
            summary: format!(
                "off ({} is not true in cluster.env): the VM resolves without the proxy",
                dns_capture::CAPTURE_KEY
            ),
            details: Vec::new(),
            hint: None,
        };
    }
    let server = match dns_capture::installed_proxy_addr(root) {
        Ok(s) => s,
        Err(e) => {
            return Section {
                kind: Kind::DnsCapture,
                verdict: Verdict::Unknown,
                summary: format!("capture is on, but where the DNS proxy listens is unknown: {e}"),
                details: Vec::new(),
                hint: None,
            }
        }
    };
    let wait = Duration::from_millis(1500);
    let probe = Probe {
        mesh: mesh_name(root).map(|n| {
            let a = query(server, &n, wait);
            (n, a)
        }),
        external: (external.to_string(), query(server, external, wait)),
        upstreams: dns_capture::current(root).unwrap_or_default(),
        server,
    };
    judge(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(mesh: Answer, ext: Answer) -> Probe {
        Probe {
            mesh: Some(("istiod.istio-system.svc".into(), mesh)),
            external: ("example.com".into(), ext),
            upstreams: ["10.0.0.2".to_string()].into(),
            server: "127.0.0.1:15053".parse().unwrap(),
        }
    }

    fn ip() -> Answer {
        Answer::Resolved(vec!["10.1.2.3".parse().unwrap()])
    }

    #[test]
    fn names_the_failing_side() {
        let s = judge(&probe(ip(), ip()));
        assert_eq!(s.verdict, Verdict::Ok);
        let s = judge(&probe(Answer::Failed("NXDOMAIN".into()), ip()));
        assert_eq!(s.verdict, Verdict::Fail);
        assert!(s.summary.starts_with("mesh side:"), "{}", s.summary);
        let s = judge(&probe(ip(), Answer::Failed("SERVFAIL".into())));
        assert!(
            s.summary.starts_with("upstream side:") && s.summary.contains("10.0.0.2"),
            "{}",
            s.summary
        );
        let s = judge(&probe(
            Answer::Failed("SERVFAIL".into()),
            Answer::Failed("SERVFAIL".into()),
        ));
        assert!(
            s.summary.starts_with("mesh side:") && s.summary.contains("SERVFAIL to every name"),
            "{}",
            s.summary
        );
        let s = judge(&probe(
            Answer::Silent("refused".into()),
            Answer::Silent("refused".into()),
        ));
        assert!(s.summary.contains("nothing answers"), "{}", s.summary);
    }

    #[test]
    fn no_mesh_name_judges_the_external_side_alone() {
        let mut p = probe(ip(), ip());
        p.mesh = None;
        assert_eq!(judge(&p).verdict, Verdict::Ok);
        p.external.1 = Answer::Silent("refused".into());
        assert!(judge(&p).summary.contains("nothing answers"));
    }

    #[test]
    fn a_silent_port_reads_as_silent() {
        // A port nothing listens on (bound, then closed): ICMP unreachable or a timeout.
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let a = query(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            "example.com",
            Duration::from_millis(200),
        );
        assert!(matches!(a, Answer::Silent(_)), "{a:?}");
    }
}
