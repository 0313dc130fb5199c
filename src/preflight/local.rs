//! This machine's side: the ports the proxy will bind are free (or already istio's),
//! and the address pilot-agent will advertise is one of this VM's. Sockets and
//! addresses belong to the running kernel, also under `--root`.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::config::CheckName;
use crate::root::Root;
use crate::sockets::{Listener, Proto};

use super::{CheckResult, Failure};

/// The ports the proxy listens on, named as in istio/istio
/// pilot/cmd/pilot-agent/status/server.go `istioReservedPorts` (15008, the HBONE tunnel
/// of ambient/waypoints, is left out: a VM sidecar does not bind it).
pub const PORTS: [(Proto, u16, &str); 9] = [
    (Proto::Tcp, 15000, "Envoy admin"),
    (Proto::Tcp, 15001, "outbound capture"),
    (Proto::Tcp, 15004, "pilot debug"),
    (Proto::Tcp, 15006, "inbound capture"),
    (Proto::Tcp, 15020, "pilot-agent status"),
    (Proto::Tcp, 15021, "Envoy health"),
    (Proto::Tcp, 15053, "DNS proxy"),
    (Proto::Udp, 15053, "DNS proxy"),
    (Proto::Tcp, 15090, "Envoy metrics"),
];

/// Program names of the proxy (`/proc/PID/comm`).
const ISTIO_COMMS: [&str; 2] = ["pilot-agent", "envoy"];

/// Whether a listener belongs to istio itself: held by pilot-agent/envoy, or by the
/// istio-proxy account (`proxy_uid`); with no readable holder, its owning uid decides.
pub fn is_istio(l: &Listener, proxy_uid: Option<u32>) -> bool {
    if l.owners.is_empty() {
        return proxy_uid == Some(l.uid);
    }
    l.owners
        .iter()
        .all(|o| ISTIO_COMMS.contains(&o.comm.as_str()) || proxy_uid == Some(o.uid))
}

/// The proxy's ports held by something else, as `TCP 15021 (Envoy health) by nginx
/// (pid 12, uid 0)` (pure).
pub fn busy(listeners: &[Listener], proxy_uid: Option<u32>) -> Vec<String> {
    let mut out = Vec::new();
    for (proto, port, what) in PORTS {
        let holders: Vec<String> = listeners
            .iter()
            .filter(|l| l.proto == proto && l.addr.port() == port && !is_istio(l, proxy_uid))
            .map(|l| match l.owners.first() {
                Some(o) => format!("{} (pid {}, uid {})", o.comm, o.pid, o.uid),
                None => format!("uid {}", l.uid),
            })
            .collect();
        if !holders.is_empty() {
            let mut h = holders;
            h.dedup();
            out.push(format!(
                "{} {port} ({what}) by {}",
                proto.name().to_uppercase(),
                h.join(", ")
            ));
        }
    }
    out
}

/// The ports check.
pub fn ports(root: &Root) -> CheckResult {
    let n = CheckName::Ports;
    let listeners = match crate::sockets::listeners(Path::new("/proc")) {
        Ok(l) => l,
        Err(e) => return CheckResult::skipped(n, format!("cannot read /proc/net: {e}")),
    };
    let uid = root.account("istio-proxy").ok().flatten().map(|(u, _)| u);
    let b = busy(&listeners, uid);
    if b.is_empty() {
        return CheckResult::ok(n, "15000, 15001, 15004, 15006, 15020, 15021, 15053 (TCP, UDP), 15090 are free or held by istio");
    }
    CheckResult::failed(
        n,
        Failure::PortsBusy,
        format!(
            "ports the proxy needs are taken: {}: stop or move those programs (the proxy cannot start while they hold them), then run again",
            b.join("; ")
        ),
    )
}

/// The verdict on the advertised address (pure). `svc_ip`: ISTIO_SVC_IP from
/// cluster.env; `addrs`: `hostname --all-ip-addresses`, in its order (istio-start.sh
/// takes the first when ISTIO_SVC_IP is unset: istio/istio
/// tools/packaging/common/istio-start.sh).
pub fn judge_address(svc_ip: Option<&str>, addrs: &[IpAddr]) -> Result<String, String> {
    let list = addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    match svc_ip.filter(|s| !s.is_empty()) {
        Some(s) => match s.parse::<IpAddr>() {
            Ok(ip) if addrs.contains(&ip) => Ok(format!("ISTIO_SVC_IP {ip} is an address of this VM")),
            _ => Err(format!(
                "ISTIO_SVC_IP={s} (cluster.env) is not an address of this VM (it has: {}): the mesh would send this VM's traffic elsewhere: make the bundle again with `istioctl x workload entry configure --internalIP <one of them>`, or give this VM that address",
                if list.is_empty() { "none but loopback".to_string() } else { list }
            )),
        },
        None => match addrs {
            [] => Err("this VM has no address but loopback, so pilot-agent would advertise none (istio-start.sh takes the first of `hostname --all-ip-addresses`): bring up the VM's network, or set ISTIO_SVC_IP with `istioctl x workload entry configure --internalIP`".into()),
            [one] => Ok(format!("pilot-agent will advertise {one}, this VM's only address")),
            [first, ..] => Ok(format!(
                "this VM has several addresses ({list}); pilot-agent will advertise {first}, the first of `hostname --all-ip-addresses`: if the mesh reaches this VM on another, set ISTIO_SVC_IP (istioctl --internalIP)"
            )),
        },
    }
}

/// Parses `hostname --all-ip-addresses` output.
pub fn parse_addrs(s: &str) -> Vec<IpAddr> {
    s.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The address check.
pub fn address(svc_ip: Option<&str>) -> CheckResult {
    let n = CheckName::Address;
    let mut c = crate::cmd::command("hostname");
    c.arg("--all-ip-addresses");
    let addrs = match crate::cmd::run(&mut c, Duration::from_secs(2)) {
        Ok(o) if o.status.success() => parse_addrs(&String::from_utf8_lossy(&o.stdout)),
        Ok(o) => {
            return CheckResult::skipped(
                n,
                format!("`hostname --all-ip-addresses` failed ({})", o.status_text()),
            )
        }
        Err(e) => {
            return CheckResult::skipped(n, format!("{e} (the hostname package provides it)"))
        }
    };
    match judge_address(svc_ip, &addrs) {
        Ok(d) => CheckResult::ok(n, d),
        Err(m) => CheckResult::failed(n, Failure::Address, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::Owner;

    fn l(proto: Proto, port: u16, comm: &str, uid: u32) -> Listener {
        Listener {
            proto,
            addr: format!("0.0.0.0:{port}").parse().unwrap(),
            inode: 1,
            uid,
            owners: vec![Owner {
                pid: 7,
                comm: comm.into(),
                uid,
            }],
        }
    }

    #[test]
    fn istio_holders_are_fine_others_are_named() {
        let ls = vec![
            l(Proto::Tcp, 15021, "envoy", 998),
            l(Proto::Tcp, 15020, "pilot-agent", 998),
            l(Proto::Tcp, 15090, "nginx", 0),
            l(Proto::Udp, 15053, "dnsmasq", 0),
            l(Proto::Tcp, 22, "sshd", 0),
            l(Proto::Tcp, 15000, "whatever", 998),
        ];
        let b = busy(&ls, Some(998));
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(
            b[0].starts_with("UDP 15053 (DNS proxy) by dnsmasq (pid 7, uid 0)"),
            "{b:?}"
        );
        assert!(b[1].starts_with("TCP 15090"), "{b:?}");
        let mut anon = l(Proto::Tcp, 15001, "", 998);
        anon.owners.clear();
        assert!(is_istio(&anon, Some(998)));
        assert!(!is_istio(&anon, None));
    }

    #[test]
    fn advertised_address() {
        let a: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "192.168.1.5".parse().unwrap()];
        assert!(judge_address(Some("10.0.0.5"), &a).is_ok());
        let e = judge_address(Some("10.9.9.9"), &a).unwrap_err();
        assert!(
            e.contains("not an address of this VM") && e.contains("--internalIP"),
            "{e}"
        );
        let several = judge_address(None, &a).unwrap();
        assert!(several.contains("will advertise 10.0.0.5"), "{several}");
        assert!(judge_address(None, &a[..1])
            .unwrap()
            .contains("only address"));
        assert!(judge_address(None, &[]).is_err());
        assert_eq!(
            parse_addrs("10.0.0.5 fd00::1 \n"),
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
    }
}
