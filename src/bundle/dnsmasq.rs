//! `kubedns`: the dnsmasq file of Istio 1.0 mesh expansion (install/tools/setupMeshEx.sh
//! at tag 1.0.0, `istioDnsmasq`): `server=/svc.cluster.local/<kube-dns IP>` and
//! `address=/<istio service>/<IP>` lines, installed to /etc/dnsmasq.d/ by
//! setupIstioVM.sh. dnsmasq runs as root and its configuration can run scripts
//! (`dhcp-script=`) or pull in other files (`conf-file=`), so only those two directives
//! are accepted.

use std::net::IpAddr;

use super::hosts::is_hostname;
use super::MemberError;

/// Validates the file; the bytes are installed as they are.
pub fn parse(data: &[u8]) -> Result<(), MemberError> {
    let text = std::str::from_utf8(data).map_err(|_| MemberError::new("not UTF-8 text".into()))?;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (directive, rest) = line.split_once('=').unwrap_or((line, ""));
        if directive != "server" && directive != "address" {
            return Err(MemberError::at(
                n,
                format!("'{directive}' is not allowed: a kubedns file holds only server=/DOMAIN/IP and address=/NAME/IP lines"),
            ));
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let ok = match parts.as_slice() {
            ["", domain, target] => {
                is_hostname(domain) && {
                    // server= may name a port: IP#PORT.
                    let (ip, port) = target.split_once('#').unwrap_or((target, "53"));
                    ip.parse::<IpAddr>().is_ok()
                        && (directive == "server" || port == "53")
                        && port.parse::<u16>().is_ok_and(|p| p > 0)
                }
            }
            _ => false,
        };
        if !ok {
            return Err(MemberError::at(
                n,
                format!(
                    "expected {directive}=/DOMAIN/IP (as setupMeshEx.sh writes), found '{}'",
                    super::printable(line, 80)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_expansion_file_is_accepted() {
        parse(b"server=/svc.cluster.local/10.150.0.7\naddress=/istio-policy/10.150.0.8\naddress=/istio-pilot.istio-system/10.150.0.9\n# c\n").unwrap();
        parse(b"server=/svc.cluster.local/10.150.0.7#5353\n").unwrap();
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            &b"dhcp-script=/tmp/x\n"[..],
            b"conf-file=/etc/shadow\n",
            b"server=/svc.cluster.local/notanip\n",
            b"address=/a b/10.0.0.1\n",
            b"server=10.0.0.1\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
