//! The bundle's `hosts` member: `IP name [name...]` lines pointing istiod's name at the
//! east-west gateway.

use std::net::IpAddr;

use super::MemberError;

/// One hosts entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The address.
    pub ip: IpAddr,
    /// The names, in order.
    pub names: Vec<String>,
}

impl Entry {
    /// The canonical line vmagent writes: `IP name name`.
    pub fn line(&self) -> String {
        format!("{} {}", self.ip, self.names.join(" "))
    }
}

/// Names a bundle must never remap: the machine would lose its loopback names.
const LOCAL_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "localhost4",
    "localhost6",
    "ip6-localhost",
    "ip6-loopback",
];

/// Parses the bundle's hosts file into the entries for the managed block, plus
/// warnings. istioctl writes an EMPTY file when it cannot detect the gateway address
/// (istioctl/pkg/workload/workload.go `createHosts` only logs a warning, e.g. for a
/// load balancer with a DNS name): that is accepted with a warning, and the block stays
/// empty. A line mapping loopback names to a loopback address (`127.0.0.1 localhost`)
/// changes nothing and is left out of the block.
pub fn parse(data: &[u8]) -> Result<(Vec<Entry>, Vec<String>), MemberError> {
    let text = std::str::from_utf8(data).map_err(|_| MemberError::new("not UTF-8 text".into()))?;
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        let ip_s = words.next().unwrap_or("");
        let ip: IpAddr = ip_s
            .parse()
            .map_err(|_| MemberError::at(n, format!("'{ip_s}' is not an IPv4 or IPv6 address")))?;
        let mut names: Vec<String> = Vec::new();
        for name in words {
            if !is_hostname(name) {
                return Err(MemberError::at(
                    n,
                    format!("'{name}' is not a valid host name"),
                ));
            }
            if LOCAL_NAMES.contains(&name.to_ascii_lowercase().as_str()) {
                if ip.is_loopback() {
                    continue; // what every /etc/hosts already says
                }
                return Err(MemberError::at(
                    n,
                    format!("remaps '{name}' to {ip}; a bundle must not change the loopback names"),
                ));
            }
            names.push(name.to_string());
        }
        if line.split_ascii_whitespace().count() == 1 {
            return Err(MemberError::at(n, format!("address {ip} has no host name")));
        }
        if !names.is_empty() {
            out.push(Entry { ip, names });
        }
    }
    if out.is_empty() {
        warnings.push(
            "bundle member 'hosts' has no entries (istioctl could not detect the east-west gateway address): vmagent's block in /etc/hosts stays empty, so the discovery address must resolve through DNS; to pin it, regenerate the bundle with `istioctl x workload entry configure --ingressIP <gateway IP> ...`".into(),
        );
    }
    Ok((out, warnings))
}

/// RFC 1123 host name: dot-separated labels of letters, digits and '-', at most 253 chars.
pub fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istioctl_hosts() {
        let (e, w) =
            parse(b"192.0.2.10 istiod.istio-system.svc\n# c\n\n2001:db8::1 a b\n").unwrap();
        assert_eq!(e.len(), 2);
        assert!(w.is_empty());
        assert_eq!(e[0].line(), "192.0.2.10 istiod.istio-system.svc");
    }

    #[test]
    fn empty_and_loopback_lines_are_accepted() {
        for empty in [
            &b""[..],
            b"# only a comment\n",
            b"127.0.0.1 localhost\n::1 localhost ip6-localhost\n",
        ] {
            let (e, w) = parse(empty).unwrap();
            assert!(e.is_empty());
            assert!(w[0].contains("--ingressIP"), "{w:?}");
        }
        let (e, _) = parse(b"127.0.0.1 localhost\n10.0.0.1 istiod.istio-system.svc\n").unwrap();
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn rejects_bad_lines() {
        for (bad, want) in [
            (&b"300.1.1.1 x\n"[..], "not an IPv4"),
            (b"1.2.3.4\n", "no host name"),
            (b"1.2.3.4 bad_name\n", "not a valid host name"),
            (b"1.2.3.4 localhost\n", "loopback"),
            (b"1.2.3.4 a;b\n", "not a valid"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.reason.contains(want), "{e:?}");
        }
    }
}
