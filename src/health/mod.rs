//! Is the proxy in the mesh, and if not, why? Readiness comes from the proxy's own
//! endpoint ([`probe`]); reasons come from its logs ([`follow`]) and the unit's journal
//! ([`journal`]), classified by the table in [`rules`] ([`classify`]), and from systemd's
//! view of the service; [`verdict`] decides which reasons are final; [`monitor`]
//! combines them into one [`Health`].

pub mod classify;
pub mod follow;
pub mod journal;
pub mod monitor;
pub mod probe;
pub mod rules;
pub mod verdict;

use serde::{Deserialize, Serialize};

/// Why the proxy is not ready: each kind has an exit code, a summary and a remedy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// Not ready when the wait ended, and nothing known went wrong.
    NotReady,
    /// istiod rejected the token (expired, wrong audience, other cluster).
    TokenRejected,
    /// The agent cannot read its token file.
    TokenMissing,
    /// Certificates of another identity in /etc/certs (#35249).
    StaleIdentity,
    /// istiod's certificate does not chain to the bundle's root-cert.pem.
    CaMismatch,
    /// istiod cannot be reached on the discovery address.
    IstiodUnreachable,
    /// The proxy cannot open a file (ownership).
    PermissionDenied,
    /// Envoy exited.
    EnvoyExited,
    /// systemd keeps restarting the service.
    CrashLoop,
    /// iptables rules left by an earlier run.
    IptablesLeftovers,
    /// iptables cannot initialise its tables (kernel modules, nft vs legacy).
    KernelModules,
    /// An error line no rule knows; reported verbatim.
    UnknownError,
    /// systemd reports the service failed (or it could not be started).
    ServiceFailed,
    /// There is no istio.service at all: the istio-sidecar package is not installed.
    NotInstalled,
    /// istiod's certificate does not name the discovery address: the gateway routes
    /// 15012 to something that is not this istiod, or the address names the wrong host.
    SanMismatch,
    /// Envoy rejected the configuration istiod sent (an xDS NACK).
    XdsRejected,
    /// istiod cannot auto-register the VM: its WorkloadGroup does not exist.
    WorkloadGroupMissing,
    /// A port the proxy needs is held by another process.
    PortConflict,
}

impl Failure {
    /// Every kind (documentation and tests).
    pub const ALL: [Failure; 18] = [
        Failure::NotReady,
        Failure::TokenRejected,
        Failure::TokenMissing,
        Failure::StaleIdentity,
        Failure::CaMismatch,
        Failure::IstiodUnreachable,
        Failure::PermissionDenied,
        Failure::EnvoyExited,
        Failure::CrashLoop,
        Failure::IptablesLeftovers,
        Failure::KernelModules,
        Failure::UnknownError,
        Failure::ServiceFailed,
        Failure::NotInstalled,
        Failure::SanMismatch,
        Failure::XdsRejected,
        Failure::WorkloadGroupMissing,
        Failure::PortConflict,
    ];

    /// The kebab-case name used in output and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Failure::NotReady => "not-ready",
            Failure::TokenRejected => "token-rejected",
            Failure::TokenMissing => "token-missing",
            Failure::StaleIdentity => "stale-identity",
            Failure::CaMismatch => "ca-mismatch",
            Failure::IstiodUnreachable => "istiod-unreachable",
            Failure::PermissionDenied => "permission-denied",
            Failure::EnvoyExited => "envoy-exited",
            Failure::CrashLoop => "crash-loop",
            Failure::IptablesLeftovers => "iptables-leftovers",
            Failure::KernelModules => "kernel-modules",
            Failure::UnknownError => "unknown-error",
            Failure::ServiceFailed => "service-failed",
            Failure::NotInstalled => "not-installed",
            Failure::SanMismatch => "san-mismatch",
            Failure::XdsRejected => "xds-rejected",
            Failure::WorkloadGroupMissing => "workload-group-missing",
            Failure::PortConflict => "port-conflict",
        }
    }

    /// The kind named `name` (its kebab-case name, as in status.json), if any.
    pub fn from_name(name: &str) -> Option<Failure> {
        Failure::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The process exit code of `apply --wait` ending with this failure (README).
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::NotReady => 10,
            Failure::TokenRejected => 11,
            Failure::TokenMissing => 12,
            Failure::StaleIdentity => 13,
            Failure::CaMismatch => 14,
            Failure::IstiodUnreachable => 15,
            Failure::PermissionDenied => 16,
            Failure::EnvoyExited => 17,
            Failure::CrashLoop => 18,
            Failure::IptablesLeftovers => 19,
            Failure::KernelModules => 20,
            Failure::UnknownError => 21,
            Failure::ServiceFailed => 22,
            Failure::NotInstalled => 23,
            Failure::SanMismatch => 24,
            Failure::XdsRejected => 25,
            Failure::WorkloadGroupMissing => 26,
            Failure::PortConflict => 27,
        }
    }

    /// What went wrong, in one phrase.
    pub fn summary(self) -> &'static str {
        match self {
            Failure::NotReady => "the proxy did not become ready in time",
            Failure::TokenRejected => {
                "istiod rejected the bundle's token (expired, wrong audience or another cluster)"
            }
            Failure::TokenMissing => {
                "the agent cannot read its token (/var/run/secrets/tokens/istio-token)"
            }
            Failure::StaleIdentity => {
                "istiod refused the certificate request: /etc/certs holds certificates of another identity"
            }
            Failure::CaMismatch => {
                "istiod's certificate is not signed by the bundle's root-cert.pem"
            }
            Failure::IstiodUnreachable => {
                "istiod is unreachable at the discovery address or CA_ADDR (port 15012 or a NodePort)"
            }
            Failure::PermissionDenied => "the proxy cannot open one of its files (ownership)",
            Failure::EnvoyExited => "Envoy exited",
            Failure::CrashLoop => "the istio service keeps restarting",
            Failure::IptablesLeftovers => {
                "iptables rules from an earlier run are in the way (Chain already exists)"
            }
            Failure::KernelModules => {
                "iptables cannot initialise its tables (kernel modules missing, or nft vs legacy)"
            }
            Failure::UnknownError => "the proxy logged an error",
            Failure::ServiceFailed => "the istio service failed",
            Failure::NotInstalled => "there is no istio service: the istio-sidecar package is not installed",
            Failure::SanMismatch => {
                "the server at the discovery address is not this mesh's istiod (its certificate names another host)"
            }
            Failure::XdsRejected => "Envoy rejected configuration istiod sent (xDS NACK)",
            Failure::WorkloadGroupMissing => {
                "istiod cannot auto-register this VM: its WorkloadGroup does not exist"
            }
            Failure::PortConflict => "a port the proxy needs is already in use by another process",
        }
    }

    /// What to do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Failure::NotReady => {
                "read /var/log/istio/istio.log; `vmagent status` shows the current state; a slow first start may need a longer --wait"
            }
            Failure::TokenRejected => {
                "generate a fresh bundle for this VM (`istioctl x workload entry configure`) and apply it"
            }
            Failure::TokenMissing => {
                "apply the bundle again (the token lives on a tmpfs and is gone after a reboot; `vmagent daemon` puts it back)"
            }
            Failure::StaleIdentity => {
                "remove /etc/certs/cert-chain.pem and /etc/certs/key.pem, then `systemctl restart istio` (vmagent removes them when the bundle's identity changes)"
            }
            Failure::CaMismatch => {
                "the bundle is from another cluster or the mesh CA changed: generate a fresh bundle from the cluster this VM joins"
            }
            Failure::IstiodUnreachable => {
                "check the istiod line of vmagent's block in /etc/hosts points at the east-west gateway, that the gateway exposes istiod on port 15012 (or CA_ADDR's port, e.g. a NodePort), and that this VM can reach it (`nc -vz <gateway-ip> <port>`)"
            }
            Failure::PermissionDenied => {
                "the path in the evidence must belong to istio-proxy: apply again (vmagent restores owners) or `chown istio-proxy:istio-proxy` it"
            }
            Failure::EnvoyExited => {
                "read /var/log/istio/istio.err.log for Envoy's reason; 'out of memory killed' means the VM needs more memory"
            }
            Failure::CrashLoop => {
                "read `journalctl -u istio` and /var/log/istio/istio.err.log for why it exits"
            }
            Failure::IptablesLeftovers => {
                "run `/usr/local/bin/istio-start.sh clean`, then `systemctl restart istio`"
            }
            Failure::KernelModules => {
                "load the modules (`modprobe ip_tables iptable_nat iptable_filter iptable_mangle`, persist them in /etc/modules-load.d/) or switch the iptables backend (`update-alternatives --config iptables`)"
            }
            Failure::UnknownError => "read the evidence lines and /var/log/istio/istio.log",
            Failure::ServiceFailed => "read `systemctl status istio` and `journalctl -u istio`",
            Failure::NotInstalled => {
                "give vmagent a package source ([package] version or url in the config, `apply --package`, or a .deb/.rpm in the bundle); `vmagent status` shows the last apply's error"
            }
            Failure::SanMismatch => {
                "the name in the evidence ('valid for ...') is what the server at the address really is: make the east-west gateway route port 15012 to this revision's istiod, or generate the bundle for the revision/istiod the gateway serves (discoveryAddress in mesh.yaml, CA_ADDR in cluster.env)"
            }
            Failure::XdsRejected => {
                "read the `rejected:` line in /var/log/istio/istio.err.log; fix the mesh resource it names (Sidecar, EnvoyFilter, WorkloadGroup ports); `istioctl proxy-status` shows the NACK"
            }
            Failure::WorkloadGroupMissing => {
                "create the WorkloadGroup named in the evidence (`kubectl apply -f wg.yaml` in the VM's namespace), or drop ISTIO_META_AUTO_REGISTER_GROUP by generating the bundle without --autoregister"
            }
            Failure::PortConflict => {
                "find the process holding the port in the evidence (`ss -lntup | grep <port>`) and stop it, or move the application off Istio's ports (15000-15090)"
            }
        }
    }

    /// Whether the kind is final by itself: waiting longer will not fix it (the agent
    /// retries forever with the same inputs). Others may clear up (a network coming up,
    /// systemd restarting Envoy, a NACK of one listener while the rest works, a port
    /// freed by the previous proxy's drain) and end the wait only when it runs out.
    /// Some kinds depend on the line and the machine: see [`verdict::is_final`].
    pub fn definitive(self) -> bool {
        !matches!(
            self,
            Failure::NotReady
                | Failure::IstiodUnreachable
                | Failure::EnvoyExited
                | Failure::UnknownError
                | Failure::XdsRejected
                | Failure::PortConflict
        )
    }
}

/// The overall state, as shown by `vmagent status` and the status file, where it is
/// the kebab-case name (`"ready"`, ...). Read back from a status file (untrusted, maybe
/// written by another version), a name this version does not know is [`State::Unknown`]:
/// never an error that would hide the rest of the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The service was started; not ready yet; nothing wrong seen.
    Starting,
    /// Ready.
    Ready,
    /// Not ready and something went wrong that may clear up.
    Degraded,
    /// Not ready for a known, final reason.
    Failed,
    /// Not known (nothing started, or nothing could be read). Last: serde's fallback
    /// for unknown names must be.
    #[default]
    #[serde(other)]
    Unknown,
}

impl State {
    /// Every state (the metrics enumerate them: one series each).
    pub const ALL: [State; 5] = [
        State::Starting,
        State::Ready,
        State::Degraded,
        State::Failed,
        State::Unknown,
    ];

    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Starting => "starting",
            State::Ready => "ready",
            State::Degraded => "degraded",
            State::Failed => "failed",
        }
    }

    /// The one-line verdict: the only wording of a state, used by [`Health::line`], the
    /// status file's `status::HealthView::line` and so by every report, log
    /// line and sd_notify status. `failure` is the kind's name and summary, `stage` the
    /// latest progress stage (shown while starting).
    pub fn line(self, failure: Option<(&str, &str)>, stage: Option<&str>) -> String {
        match (self, failure, stage) {
            (State::Ready, _, _) => "ready: the proxy is in the mesh".into(),
            (s, Some((name, summary)), _) => format!("{}: {name}: {summary}", s.name()),
            (State::Starting, None, Some(st)) => format!("starting: {st}"),
            (State::Unknown, None, _) => {
                "unknown: no health observed yet (a live `vmagent apply` or `vmagent daemon` records it)".into()
            }
            (s, None, _) => s.name().into(),
        }
    }
}

/// How many evidence lines are kept.
pub const EVIDENCE: usize = 5;

/// Longest evidence line kept (characters).
pub const EVIDENCE_LINE: usize = 600;

/// Current health with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The state.
    pub state: State,
    /// Why it is not ready.
    pub failure: Option<Failure>,
    /// Latest progress stage seen.
    pub stage: Option<classify::Stage>,
    /// The last lines that show the failure, verbatim (tabs kept, cut to a bound).
    pub evidence: Vec<String>,
    /// systemd's ActiveState/SubState, when known.
    pub service: Option<String>,
    /// Automatic restarts seen during the wait.
    pub restarts: u32,
}

impl Health {
    /// Health before anything is known.
    pub fn unknown() -> Self {
        Health {
            state: State::Unknown,
            failure: None,
            stage: None,
            evidence: Vec::new(),
            service: None,
            restarts: 0,
        }
    }

    /// The one-line verdict (worded by [`State::line`]).
    pub fn line(&self) -> String {
        self.state.line(
            self.failure.map(|f| (f.name(), f.summary())),
            self.stage.map(|s| s.describe()),
        )
    }
}

/// Keeps an evidence line: the last [`EVIDENCE`] lines, each bounded.
pub fn push_evidence(v: &mut Vec<String>, line: &str) {
    let mut l: String = line.chars().take(EVIDENCE_LINE).collect();
    if l.len() < line.len() {
        l.push_str(" ...");
    }
    if v.last() == Some(&l) {
        return;
    }
    if v.len() == EVIDENCE {
        v.remove(0);
    }
    v.push(l);
}
