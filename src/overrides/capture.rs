//! Which inbound TCP ports istio-iptables captures, from cluster.env, and what the
//! lock-out guard does about sshd's: pure functions.
//!
//! Istio's behaviour (istio/istio):
//! - tools/packaging/common/istio-start.sh sources cluster.env with `set -a` and runs
//!   `pilot-agent istio-iptables` without flags (skipped when
//!   `ISTIO_CUSTOM_IP_TABLES=true`), so the settings come from the environment.
//! - tools/istio-iptables/pkg/cmd/root.go binds `ISTIO_INBOUND_PORTS` (flag `-b`) and
//!   `ISTIO_LOCAL_EXCLUDE_PORTS` (flag `-d`) through pkg/flag `BindEnv`; neither has a
//!   default (tools/common/config/config.go).
//! - tools/istio-iptables/pkg/capture/run.go `handleInboundPortsInclude`: an empty
//!   ISTIO_INBOUND_PORTS captures nothing; `*` captures every TCP port except the
//!   ISTIO_LOCAL_EXCLUDE_PORTS ones (`--dport P -j RETURN` each); any other value
//!   captures exactly the listed ports, and the exclusions do not apply. Both lists are
//!   split on commas with empty items dropped (tools/common/config/types.go `Split`).
//!   Port 22 is NOT excluded by istio-iptables itself: it is istioctl that writes
//!   `ISTIO_LOCAL_EXCLUDE_PORTS='22,15090,15021,15020'` (istioctl/pkg/workload/
//!   workload.go `createClusterEnv`), so an edited or hand-made cluster.env can capture
//!   ssh on port 22 too.

/// The inbound capture cluster.env asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// No inbound capture.
    Off,
    /// Every TCP port except these (`ISTIO_INBOUND_PORTS='*'`).
    All {
        /// ISTIO_LOCAL_EXCLUDE_PORTS, as port ranges.
        exclude: Vec<(u16, u16)>,
    },
    /// Only these ports (an explicit ISTIO_INBOUND_PORTS list).
    Only(Vec<(u16, u16)>),
}

impl Inbound {
    /// From the values of ISTIO_INBOUND_PORTS, ISTIO_LOCAL_EXCLUDE_PORTS and
    /// ISTIO_CUSTOM_IP_TABLES (`None`: unset).
    pub fn of(inbound: Option<&str>, exclude: Option<&str>, custom: Option<&str>) -> Inbound {
        if custom == Some("true") {
            return Inbound::Off; // istio-start.sh runs no istio-iptables at all
        }
        match inbound.unwrap_or("") {
            "" => Inbound::Off,
            "*" => Inbound::All {
                exclude: ranges(exclude.unwrap_or("")),
            },
            list => Inbound::Only(ranges(list)),
        }
    }

    /// Whether inbound TCP traffic to `port` goes to Envoy.
    pub fn captures(&self, port: u16) -> bool {
        match self {
            Inbound::Off => false,
            Inbound::All { exclude } => !within(exclude, port),
            Inbound::Only(list) => within(list, port),
        }
    }
}

/// What the lock-out guard finds for sshd's ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Captured by `*`: excluding them (ISTIO_LOCAL_EXCLUDE_PORTS) keeps ssh working.
    pub exclude: Vec<u16>,
    /// Captured because ISTIO_INBOUND_PORTS lists them: an exclusion does not apply to
    /// a listed port, so the guard can only warn.
    pub listed: Vec<u16>,
}

/// The guard's decision for the ports sshd listens on (sorted, each once).
pub fn guard(inbound: &Inbound, sshd_ports: &[u16]) -> Guard {
    let mut ports = sshd_ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    let mut g = Guard::default();
    for p in ports.into_iter().filter(|&p| inbound.captures(p)) {
        match inbound {
            Inbound::All { .. } => g.exclude.push(p),
            _ => g.listed.push(p),
        }
    }
    g
}

/// `value` with `ports` appended, comma-separated, as istioctl writes the list.
pub fn with_ports(value: Option<&str>, ports: &[u16]) -> String {
    let mut parts: Vec<String> = value
        .unwrap_or("")
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    parts.extend(ports.iter().map(u16::to_string));
    parts.join(",")
}

/// The ports a `(lock-out guard: 2222,2200)` marker in an installed cluster.env names:
/// the guard keeps excluding them while sshd restarts (no listener for a moment), so a
/// drift repair at that moment does not capture ssh.
pub fn marked_ports(installed: &str) -> Vec<u16> {
    installed
        .lines()
        .filter(|l| l.starts_with("ISTIO_LOCAL_EXCLUDE_PORTS="))
        .filter_map(|l| l.split_once(MARK).map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(')').map(|(ports, _)| ports))
        .flat_map(|ports| ports.split(',').filter_map(|p| p.trim().parse().ok()))
        .collect()
}

/// The marker's start; the ports and `)` follow.
pub const MARK: &str = "(lock-out guard: ";

/// `22,1000:2000` as ranges; items iptables would refuse are skipped (that
/// istio-iptables run fails, and then nothing is captured).
fn ranges(list: &str) -> Vec<(u16, u16)> {
    list.split(',')
        .filter_map(|item| {
            let item = item.trim();
            match item.split_once(':') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => item.parse().ok().map(|p| (p, p)),
            }
        })
        .collect()
}

fn within(ranges: &[(u16, u16)], port: u16) -> bool {
    ranges.iter().any(|&(a, b)| (a..=b).contains(&port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_captures_all_but_the_exclusions() {
        let i = Inbound::of(Some("*"), Some("22,15090,15021,15020"), None);
        assert!(!i.captures(22));
        assert!(i.captures(2222));
        assert!(i.captures(8080));
        let i = Inbound::of(Some("*"), None, None);
        assert!(i.captures(22), "istio-iptables itself does not exclude 22");
        let i = Inbound::of(Some("*"), Some("2000:2300,,"), None);
        assert!(!i.captures(2222) && i.captures(1999));
    }

    #[test]
    fn explicit_list_captures_only_its_ports_and_ignores_exclusions() {
        let i = Inbound::of(Some("8080,2222"), Some("2222"), None);
        assert!(i.captures(2222) && i.captures(8080));
        assert!(!i.captures(22));
    }

    #[test]
    fn unset_empty_or_custom_iptables_capture_nothing() {
        for i in [
            Inbound::of(None, None, None),
            Inbound::of(Some(""), Some("22"), None),
            Inbound::of(Some("*"), None, Some("true")),
        ] {
            assert_eq!(i, Inbound::Off);
            assert!(!i.captures(22));
        }
    }

    #[test]
    fn guard_excludes_captured_sshd_ports_only() {
        let star = Inbound::of(Some("*"), Some("22,15090"), None);
        assert_eq!(
            guard(&star, &[2222, 22, 2222]),
            Guard {
                exclude: vec![2222],
                listed: vec![]
            }
        );
        let only = Inbound::of(Some("2222,80"), None, None);
        assert_eq!(
            guard(&only, &[2222, 22]),
            Guard {
                exclude: vec![],
                listed: vec![2222]
            }
        );
        assert_eq!(guard(&Inbound::Off, &[22]), Guard::default());
    }

    #[test]
    fn ports_are_appended_and_markers_read_back() {
        assert_eq!(with_ports(Some("22,15090"), &[2222]), "22,15090,2222");
        assert_eq!(with_ports(None, &[2222, 2200]), "2222,2200");
        assert_eq!(with_ports(Some(""), &[1]), "1");
        let installed = "A='1'\nISTIO_LOCAL_EXCLUDE_PORTS='22,2222,2200' # (local override) (lock-out guard: 2222,2200)\n";
        assert_eq!(marked_ports(installed), [2222, 2200]);
        assert!(marked_ports("ISTIO_LOCAL_EXCLUDE_PORTS='22'\n").is_empty());
        assert!(marked_ports("X='(lock-out guard: 5)'\n").is_empty());
    }
}
