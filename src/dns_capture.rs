//! Istio's DNS capture on the VM (`ISTIO_META_DNS_CAPTURE='true'` in cluster.env): the
//! facts and the decisions, as pure functions.
//!
//! What pilot-agent does (istio/istio):
//! - pilot/cmd/pilot-agent/options/options.go registers `ISTIO_META_DNS_CAPTURE` as a
//!   bool (pkg/env/var.go parses it with Go's `strconv.ParseBool`) and `DNS_PROXY_ADDR`
//!   (default `localhost:15053`, pkg/config/constants/constants.go).
//! - pkg/dns/client/dns.go `NewLocalDNSServer` reads /etc/resolv.conf once, when the
//!   agent starts (`dns.ClientConfigFromFile`), and keeps its `nameserver` entries as the
//!   upstreams of every name it does not know itself (`queryUpstream` tries them in
//!   order, the next one only after an error). A changed resolv.conf is never read again:
//!   the proxy must be restarted ([`decide`]).
//! - Names in the name table istiod sends (the mesh's services, with the
//!   `name.namespace.svc` variants of generateAltHosts) are answered by the agent itself;
//!   until a table has arrived every query is answered SERVFAIL (`ServeDNS`, `lp == nil`
//!   without respondBeforeSync, which is only set for an address on :53).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use crate::bundle::Member;
use crate::root::Root;

/// The resolver configuration pilot-agent reads.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The cluster.env key that turns DNS capture on.
pub const CAPTURE_KEY: &str = "ISTIO_META_DNS_CAPTURE";

/// The upstream nameservers a resolv.conf gives pilot-agent: the second field of every
/// `nameserver` line, as text (a set: see [`decide`] for why order does not count).
/// Lines starting with `#` or `;` are comments, as in the resolver; anything else
/// (search, options, garbage, invalid UTF-8) is ignored.
pub fn nameservers(text: &[u8]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.split(|b| *b == b'\n') {
        if matches!(line.first(), Some(b'#' | b';')) {
            continue;
        }
        let line = String::from_utf8_lossy(line);
        let mut f = line.split_whitespace();
        if let (Some("nameserver"), Some(ns)) = (f.next(), f.next()) {
            // A bound on hostile input: a nameserver is an address, never this long.
            if ns.len() <= 64 && out.len() < 64 {
                out.insert(ns.to_string());
            }
        }
    }
    out
}

/// Whether a cluster.env value turns capture on, as Go's `strconv.ParseBool` reads it
/// (anything it refuses leaves the default, false).
pub fn capture_on(value: Option<&str>) -> bool {
    matches!(value, Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// The value a key has after istio-start.sh sources cluster.env with bash: the last
/// assignment wins; `export`, and one level of single or double quotes (istioctl writes
/// `KEY='value'`) are taken off. A hand-edited file is read the same tolerant way rather
/// than refused: this only informs a restart decision and doctor.
pub fn env_value(text: &[u8], key: &str) -> Option<String> {
    let mut value = None;
    for line in String::from_utf8_lossy(text).lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        if let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
            let v = v.trim();
            let unq = ['\'', '"']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
                .unwrap_or(v);
            value = Some(unq.to_string());
        }
    }
    value
}

/// Whether an installed cluster.env turns capture on.
pub fn capture_in_cluster_env(text: &[u8]) -> bool {
    capture_on(env_value(text, CAPTURE_KEY).as_deref())
}

/// The cluster.env installed under `root`, if there is one to read.
fn installed_env(root: &Root) -> Option<Vec<u8>> {
    let spec = crate::layout::file_for(Member::ClusterEnv)?;
    let p = root.resolve(Path::new(spec.path)).ok()?;
    crate::fsx::read_file(&p, 1 << 20).ok().flatten()
}

/// Whether DNS capture is on in the cluster.env installed under `root` (the desired
/// state in force); false when there is none.
pub fn installed(root: &Root) -> bool {
    installed_env(root).is_some_and(|d| capture_in_cluster_env(&d))
}

/// The key that moves the DNS proxy (pilot/cmd/pilot-agent/options/options.go).
pub const ADDR_KEY: &str = "DNS_PROXY_ADDR";

/// Where the DNS proxy listens for a `DNS_PROXY_ADDR` value (default
/// `localhost:15053`); `localhost` is asked on 127.0.0.1, which the agent binds when
/// resolv.conf has an IPv4 nameserver (dns.go). `None`: not a `host:port` it can use.
pub fn proxy_addr(value: Option<&str>) -> Option<SocketAddr> {
    let v = value.filter(|v| !v.is_empty()).unwrap_or("localhost:15053");
    let (host, port) = v.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "localhost" | "" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h.parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

/// The DNS proxy's address per the installed cluster.env: `Err` with the value when it
/// cannot be used.
pub fn installed_proxy_addr(root: &Root) -> Result<SocketAddr, String> {
    let v = installed_env(root).and_then(|d| env_value(&d, ADDR_KEY));
    proxy_addr(v.as_deref()).ok_or_else(|| {
        format!(
            "{ADDR_KEY}='{}' in cluster.env is not an address:port",
            crate::bundle::printable(v.as_deref().unwrap_or(""), 80)
        )
    })
}

/// The nameservers in the root's resolv.conf now, or why they cannot be read (missing,
/// unreadable, a link leaving the root or owned by another user).
pub fn current(root: &Root) -> Result<BTreeSet<String>, String> {
    let p = root
        .resolve(Path::new(RESOLV_CONF))
        .map_err(|e| e.to_string())?;
    match crate::fsx::read_file(&p, 1 << 20) {
        Ok(Some(d)) => Ok(nameservers(&d)),
        Ok(None) => Err(format!("{} does not exist", p.display())),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// What to do about a changed resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Restart istio: the running agent forwards to other nameservers than these.
    Restart {
        /// Nameservers the running agent does not know.
        added: Vec<String>,
        /// Nameservers the running agent still forwards to.
        removed: Vec<String>,
    },
    /// Nothing to do.
    Nothing,
    /// Capture is on but resolv.conf lists no nameserver now: a restart would leave the
    /// agent without upstreams, so it keeps the ones it has until some come back.
    NoNameservers,
}

/// Restart when DNS capture is on and the set of nameservers differs from the one in
/// force when istio last started. A reordering alone does not restart: the agent still
/// reaches every server it lists (the next after an error), and a restart drops every
/// connection through the proxy, so it is kept for a real change of upstreams.
pub fn decide(in_force: &BTreeSet<String>, now: &BTreeSet<String>, capture: bool) -> Decision {
    if !capture || in_force == now {
        return Decision::Nothing;
    }
    if now.is_empty() {
        return Decision::NoNameservers;
    }
    Decision::Restart {
        added: now.difference(in_force).cloned().collect(),
        removed: in_force.difference(now).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nameserver_lines_only() {
        let t = b"# generated by dhclient\n; old\nsearch example.internal\noptions ndots:2 timeout:1\nnameserver 10.0.0.2\nnameserver\tfd00::53 # trailing\n  nameserver 10.0.0.3\n#nameserver 9.9.9.9\nnameservers 1.1.1.1\n";
        assert_eq!(nameservers(t), set(&["10.0.0.2", "fd00::53", "10.0.0.3"]));
    }

    #[test]
    fn hostile_input_never_panics() {
        assert!(nameservers(b"").is_empty());
        assert!(nameservers(b"nameserver").is_empty());
        assert_eq!(
            nameservers(b"nameserver \xff\xfe\r\n"),
            set(&["\u{fffd}\u{fffd}"])
        );
        let long = format!("nameserver {}\n", "1".repeat(100_000));
        assert!(nameservers(long.as_bytes()).is_empty());
        let many: String = (0..1000)
            .map(|i| format!("nameserver 10.0.{}.{}\n", i / 256, i % 256))
            .collect();
        assert_eq!(nameservers(many.as_bytes()).len(), 64);
        let _ = nameservers(&[0u8; 4096]);
    }

    #[test]
    fn capture_parses_like_go() {
        for v in ["1", "t", "T", "true", "TRUE", "True"] {
            assert!(capture_on(Some(v)), "{v}");
        }
        for v in ["0", "false", "yes", "on", " true", ""] {
            assert!(!capture_on(Some(v)), "{v}");
        }
        assert!(!capture_on(None));
    }

    #[test]
    fn capture_in_installed_files() {
        assert!(capture_in_cluster_env(
            b"CANONICAL_SERVICE='x'\nISTIO_META_DNS_CAPTURE='true'\n"
        ));
        assert!(capture_in_cluster_env(
            b"export ISTIO_META_DNS_CAPTURE=\"1\"\n"
        ));
        assert!(!capture_in_cluster_env(
            b"ISTIO_META_DNS_CAPTURE='true'\nISTIO_META_DNS_CAPTURE='false'\n"
        ));
        assert!(!capture_in_cluster_env(
            b"ISTIO_META_DNS_CAPTURE_X='true'\n"
        ));
        assert!(!capture_in_cluster_env(b"\xff\n'"));
    }

    #[test]
    fn proxy_addresses() {
        let a = |v: Option<&str>| proxy_addr(v).map(|a| a.to_string());
        assert_eq!(a(None).as_deref(), Some("127.0.0.1:15053"));
        assert_eq!(a(Some("")).as_deref(), Some("127.0.0.1:15053"));
        assert_eq!(a(Some("localhost:5353")).as_deref(), Some("127.0.0.1:5353"));
        assert_eq!(a(Some("127.0.0.2:53")).as_deref(), Some("127.0.0.2:53"));
        assert_eq!(a(Some("[::1]:15053")).as_deref(), Some("[::1]:15053"));
        for bad in ["15053", "host.example:53", "localhost:x", "localhost:99999"] {
            assert_eq!(a(Some(bad)), None, "{bad}");
        }
        assert_eq!(
            env_value(
                b"DNS_PROXY_ADDR='localhost:53'\nDNS_PROXY_ADDR_X=1\n",
                ADDR_KEY
            )
            .as_deref(),
            Some("localhost:53")
        );
    }

    #[test]
    fn decisions() {
        let a = set(&["10.0.0.2", "10.0.0.3"]);
        let b = set(&["10.0.0.3", "10.0.0.9"]);
        assert_eq!(
            decide(&a, &b, true),
            Decision::Restart {
                added: vec!["10.0.0.9".into()],
                removed: vec!["10.0.0.2".into()]
            }
        );
        assert_eq!(decide(&a, &b, false), Decision::Nothing);
        assert_eq!(decide(&a, &a.clone(), true), Decision::Nothing);
        // Reordered, comments, options: the same set.
        let t1 = nameservers(b"nameserver 10.0.0.2\nnameserver 10.0.0.3\n");
        let t2 = nameservers(b"# new\noptions rotate\nnameserver 10.0.0.3\nnameserver 10.0.0.2\n");
        assert_eq!(decide(&t1, &t2, true), Decision::Nothing);
        // All gone: no restart into no upstreams at all.
        assert_eq!(decide(&a, &set(&[]), true), Decision::NoNameservers);
        assert_eq!(decide(&a, &set(&[]), false), Decision::Nothing);
    }
}
