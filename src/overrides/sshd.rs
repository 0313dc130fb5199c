//! The TCP ports sshd can be reached on, from the machine's listening sockets.
//!
//! Two shapes: a running `sshd` daemon holds its listening sockets itself (comm `sshd`,
//! Debian/RHEL's ssh.service / sshd.service); with socket activation (Ubuntu 22.10 and
//! later enable ssh.socket by default) pid 1 (`systemd`) holds them, among every other
//! socket unit's. For those, the ports come from the ssh.socket (sshd.socket on the RHEL
//! family) unit's `ListenStream=` lines in the target root, and count only when pid 1
//! really listens there.

use std::path::Path;

use crate::root::Root;
use crate::sockets::{Listener, Proto};

/// Socket units that start sshd (Debian/Ubuntu, RHEL family).
const SOCKET_UNITS: &[&str] = &["ssh.socket", "sshd.socket"];

/// Unit directories in systemd's precedence order (the first holding the unit wins;
/// drop-ins from all of them apply, ordered by file name). /run/systemd/generator is
/// where Ubuntu's sshd-socket-generator writes the ports from sshd_config.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// The TCP ports sshd listens on: sockets held by a process named `sshd`, and sockets
/// held by pid 1 on a port of `activated` (the ssh socket units' ports). Sorted, once.
pub fn ports(listeners: &[Listener], activated: &[u16]) -> Vec<u16> {
    let mut out: Vec<u16> = listeners
        .iter()
        .filter(|l| l.proto == Proto::Tcp)
        .filter(|l| {
            l.owners
                .iter()
                .any(|o| o.comm == "sshd" || (o.pid == 1 && activated.contains(&l.addr.port())))
        })
        .map(|l| l.addr.port())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The ports of the ssh socket units under `root` (empty when there are none).
/// Unreadable files are skipped: the guard then relies on the `sshd` listeners.
pub fn activated_ports(root: &Root) -> Vec<u16> {
    let mut out = Vec::new();
    for unit in SOCKET_UNITS {
        let read = |sys: &str| -> Option<String> {
            let host = root.resolve(Path::new(sys)).ok()?;
            let data = crate::fsx::read_file(&host, 1 << 16).ok()??;
            String::from_utf8(data).ok()
        };
        let Some(main) = UNIT_DIRS.iter().find_map(|d| read(&format!("{d}/{unit}"))) else {
            continue;
        };
        let mut texts = vec![main];
        let mut dropins: Vec<(String, String)> = Vec::new();
        for d in UNIT_DIRS {
            let dir = format!("{d}/{unit}.d");
            let Ok(host) = root.resolve(Path::new(&dir)) else {
                continue;
            };
            let Ok(rd) = std::fs::read_dir(host) else {
                continue;
            };
            for e in rd.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".conf") && !dropins.iter().any(|(n, _)| *n == name) {
                    if let Some(t) = read(&format!("{dir}/{name}")) {
                        dropins.push((name, t));
                    }
                }
            }
        }
        dropins.sort();
        texts.extend(dropins.into_iter().map(|(_, t)| t));
        out.extend(listen_ports(&texts));
    }
    out
}

/// The TCP ports of `ListenStream=` lines across a unit and its drop-ins, in order (an
/// empty `ListenStream=` clears the list, as in systemd.socket(5)). Values: `22`,
/// `0.0.0.0:2222`, `[::]:22`; unix socket paths are skipped.
pub fn listen_ports(texts: &[String]) -> Vec<u16> {
    let mut out = Vec::new();
    for text in texts {
        for line in text.lines().map(str::trim) {
            let Some(v) = line.strip_prefix("ListenStream=").map(str::trim) else {
                continue;
            };
            if v.is_empty() {
                out.clear();
            } else if !v.starts_with('/') && !v.starts_with('@') {
                let port = v.rsplit(':').next().unwrap_or(v);
                if let Ok(p) = port.parse::<u16>() {
                    out.push(p);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::Owner;

    fn l(port: u16, comm: &str, pid: u32, proto: Proto) -> Listener {
        Listener {
            proto,
            addr: format!("0.0.0.0:{port}").parse().unwrap(),
            inode: 1,
            uid: 0,
            owners: vec![Owner {
                pid,
                comm: comm.into(),
                uid: 0,
            }],
        }
    }

    #[test]
    fn sshd_and_socket_activated_ports() {
        let ls = [
            l(2222, "sshd", 700, Proto::Tcp),
            l(2222, "sshd", 700, Proto::Tcp),
            l(22, "systemd", 1, Proto::Tcp),
            l(631, "systemd", 1, Proto::Tcp),
            l(8080, "python3", 900, Proto::Tcp),
            l(5353, "sshd", 700, Proto::Udp),
        ];
        assert_eq!(ports(&ls, &[22]), [22, 2222]);
        assert_eq!(ports(&ls, &[]), [2222]);
    }

    /// Ubuntu's layout: the package's unit, and the generator's drop-in with the ports
    /// of sshd_config (an empty ListenStream= first clears the unit's 22).
    #[test]
    fn socket_unit_ports_from_the_target_root() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        assert!(activated_ports(&root).is_empty());
        let unit = t.path().join("lib/systemd/system");
        std::fs::create_dir_all(&unit).unwrap();
        std::fs::write(unit.join("ssh.socket"), "[Socket]\nListenStream=22\n").unwrap();
        assert_eq!(activated_ports(&root), [22]);
        let gen = t.path().join("run/systemd/generator/ssh.socket.d");
        std::fs::create_dir_all(&gen).unwrap();
        std::fs::write(
            gen.join("addresses.conf"),
            "[Socket]\nListenStream=\nListenStream=0.0.0.0:2222\n",
        )
        .unwrap();
        assert_eq!(activated_ports(&root), [2222]);
    }

    #[test]
    fn listen_stream_lines() {
        let unit = "[Socket]\nListenStream=22\nAccept=no\n".to_string();
        let dropin = "[Socket]\nListenStream=\nListenStream=0.0.0.0:2222\nListenStream=[::]:2222\nListenStream=/run/x.sock\n".to_string();
        assert_eq!(listen_ports(std::slice::from_ref(&unit)), [22]);
        assert_eq!(listen_ports(&[unit, dropin]), [2222, 2222]);
    }
}
