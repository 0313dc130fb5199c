//! The machine's listening sockets and the processes holding them, read from procfs
//! (`/proc/net/{tcp,tcp6,udp,udp6}` and each process's `fd/` links), as `ss -lntup`
//! shows them. Two users: the preflight (are the proxy's ports free, or held by istio
//! itself?) and the lock-out guard (which ports does sshd listen on?).
//!
//! Everything read here is untrusted text: unparsable lines are skipped, processes that
//! exit while being read are skipped, and nothing panics. The proc directory is a
//! parameter so tests can hand in a fixture tree; callers pass `/proc` (the host's,
//! also under `--root`: sockets belong to the running kernel, not to the target root).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Transport protocol of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP, in state LISTEN.
    Tcp,
    /// UDP, bound and unconnected.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`, at most 15 bytes, e.g. `sshd`, `envoy`).
    pub comm: String,
    /// Its real user id (the owner of `/proc/PID`).
    pub uid: u32,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// TCP or UDP.
    pub proto: Proto,
    /// Local address and port (0.0.0.0 / :: for every address).
    pub addr: SocketAddr,
    /// The socket's inode (the link target `socket:[INODE]` of its holders' fds).
    pub inode: u64,
    /// The socket's owning user id (from the proc table).
    pub uid: u32,
    /// The processes holding it (empty when none could be read, e.g. not root).
    pub owners: Vec<Owner>,
}

/// TCP state LISTEN in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";
/// UDP state "closed" (7): a bound, unconnected socket, which is what a UDP server is.
const UDP_UNCONNECTED: &str = "07";

/// Every listening TCP socket and bound UDP socket of this network namespace, with the
/// processes holding each. A missing table (no IPv6) counts as empty; an unreadable
/// proc directory is an error.
pub fn listeners(proc_dir: &Path) -> io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    let tables = [
        ("tcp", Proto::Tcp, TCP_LISTEN),
        ("tcp6", Proto::Tcp, TCP_LISTEN),
        ("udp", Proto::Udp, UDP_UNCONNECTED),
        ("udp6", Proto::Udp, UDP_UNCONNECTED),
    ];
    for (file, proto, state) in tables {
        match fs::read_to_string(proc_dir.join("net").join(file)) {
            Ok(text) => out.extend(parse_table(&text, proto, state)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if !out.is_empty() {
        let holders = socket_holders(proc_dir)?;
        for l in &mut out {
            if let Some(o) = holders.get(&l.inode) {
                l.owners = o.clone();
            }
        }
    }
    Ok(out)
}

/// The sockets of one proc table in `state`. Lines that do not parse are skipped.
pub fn parse_table(text: &str, proto: Proto, state: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
            if f.len() < 10 || f[3] != state {
                return None;
            }
            Some(Listener {
                proto,
                addr: parse_addr(f[1])?,
                inode: f[9].parse().ok()?,
                uid: f[7].parse().ok()?,
                owners: Vec::new(),
            })
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6): each 32-bit word is in the
/// kernel's byte order, which is little-endian on every architecture vmagent ships for.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_le_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Socket inode -> the processes with a descriptor on it. Processes that vanish or
/// whose fds cannot be read (not root) are skipped.
fn socket_holders(proc_dir: &Path) -> io::Result<HashMap<u64, Vec<Owner>>> {
    let mut map: HashMap<u64, Vec<Owner>> = HashMap::new();
    for entry in fs::read_dir(proc_dir)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            continue;
        };
        let mut owner: Option<Owner> = None;
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&target.to_string_lossy()) else {
                continue;
            };
            let o = match &owner {
                Some(o) => o.clone(),
                None => {
                    let Ok(meta) = fs::metadata(&dir) else { break };
                    let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
                    let o = Owner {
                        pid,
                        comm: comm.trim_end().to_string(),
                        uid: meta.uid(),
                    };
                    owner = Some(o.clone());
                    o
                }
            };
            let holders = map.entry(inode).or_default();
            if !holders.iter().any(|h| h.pid == pid) {
                holders.push(o);
            }
        }
    }
    Ok(map)
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:3A99 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1337        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   2: 0100007F:C350 0100007F:3A99 01 00000000:00000000 00:00000000 00000000  1337        0 888 1 0000000000000000 100 0 0 10 0
   3: garbage
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn parses_listening_sockets_only() {
        let v = parse_table(TCP, Proto::Tcp, TCP_LISTEN);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].addr, "127.0.0.1:15001".parse().unwrap());
        assert_eq!((v[0].uid, v[0].inode), (1337, 4242));
        assert_eq!(v[1].addr, "0.0.0.0:2222".parse().unwrap());
        let v = parse_table(TCP6, Proto::Tcp, TCP_LISTEN);
        assert_eq!(v[0].addr, "[::1]:22".parse().unwrap());
    }

    #[test]
    fn hostile_lines_are_skipped() {
        for bad in [
            "x\n 0: 0100007F:ZZZZ 0:0 0A a b c 1 0 5",
            "x\n 0: 01007F:0016 0:0 0A a b c 1 0 5",
            "x\n 0: 0100007F:0016 0:0 0A a b c -1 0 5",
            "x\n 0: 0100007F:0016 0:0 0A a b c 1 0 notanumber",
            "x\n 0: 0100007F:0016",
            "",
        ] {
            assert!(parse_table(bad, Proto::Tcp, TCP_LISTEN).is_empty(), "{bad}");
        }
    }

    #[test]
    fn owners_come_from_fd_links() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::create_dir_all(p.join("net")).unwrap();
        fs::write(p.join("net/tcp"), TCP).unwrap();
        for (pid, comm, inode) in [("10", "sshd", 777), ("11", "envoy", 4242)] {
            fs::create_dir_all(p.join(pid).join("fd")).unwrap();
            fs::write(p.join(pid).join("comm"), format!("{comm}\n")).unwrap();
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), p.join(pid).join("fd/3"))
                .unwrap();
            std::os::unix::fs::symlink("/dev/null", p.join(pid).join("fd/0")).unwrap();
        }
        fs::create_dir_all(p.join("self")).unwrap();
        let v = listeners(p).unwrap();
        let ssh = v.iter().find(|l| l.addr.port() == 2222).unwrap();
        assert_eq!(ssh.owners.len(), 1);
        assert_eq!((ssh.owners[0].pid, &*ssh.owners[0].comm), (10, "sshd"));
        let envoy = v.iter().find(|l| l.addr.port() == 15001).unwrap();
        assert_eq!(envoy.owners[0].comm, "envoy");
    }

    #[test]
    fn the_real_proc_has_our_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let v = listeners(Path::new("/proc")).unwrap();
        let me = v
            .iter()
            .find(|x| x.proto == Proto::Tcp && x.addr.port() == port)
            .expect("our listener is listed");
        assert!(me.owners.iter().any(|o| o.pid == std::process::id()));
    }
}
