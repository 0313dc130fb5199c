//! The rule table: which literals in an istio.log / istio.err.log / journal line mean
//! what. Every rule names the istio/istio source file its text comes from (or Envoy's /
//! iptables' own message, as istio-iptables or the agent passes it on), so a change in
//! Istio's wording can be traced back. Matching is by literal substrings (the classifier
//! applies them): both the text and the `--log_as_json` forms classify alike.

use serde::Serialize;

use super::Failure;

/// Progress of a starting proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// pilot-agent started.
    AgentStarted,
    /// Envoy is being started.
    EnvoyStarting,
    /// The workload certificate was issued by istiod.
    CertificateReceived,
    /// The xDS stream to istiod is up.
    XdsConnected,
}

impl Stage {
    /// What the stage means, for humans.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::AgentStarted => "agent started",
            Stage::EnvoyStarting => "envoy starting",
            Stage::CertificateReceived => "workload certificate received from the CA",
            Stage::XdsConnected => "connected to istiod (xDS)",
        }
    }
}

/// What a line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The proxy is ready.
    Ready,
    /// A step towards ready.
    Progress(Stage),
    /// A failure of a known kind (or an unknown error line).
    Failure(Failure),
    /// A known harmless line that would otherwise look like a failure (an error-level
    /// line, a missing file): it says nothing about health.
    Benign,
}

/// One row of the table: the line matches when it contains one of `any`, one of `with`
/// (when not empty), and none of `not`. Rows are tried in order; the first match wins.
#[derive(Debug)]
pub struct Rule {
    /// What a match means.
    pub class: Class,
    /// Anchors: one must occur.
    pub any: &'static [&'static str],
    /// Context: one must also occur (empty: no condition).
    pub with: &'static [&'static str],
    /// Look-alikes: none may occur.
    pub not: &'static [&'static str],
}

const fn rule(class: Class, any: &'static [&'static str]) -> Rule {
    Rule {
        class,
        any,
        with: &[],
        not: &[],
    }
}

use Class::{Failure as F, Progress as P};

/// Network errors as Go's net package and gRPC's transport word them.
const NET_ERRORS: &[&str] = &[
    "connection refused",
    "i/o timeout",
    "no such host",
    "context deadline exceeded",
    "connection reset by peer",
    "no route to host",
    "network is unreachable",
];

/// Context that makes a network error one of istiod's (the CA or the xDS stream), on
/// whatever port: `CA_ADDR` can be a NodePort (`10.0.0.5:31012`), so the port is no
/// clue. An application's health check (`healthcheck`, `Probe failed`) or the DNS
/// proxy's `upstream failure` must not match, so none of these is generic.
const ISTIOD_CONTEXT: &[&str] = &[
    ":15012",
    "istiod",
    "XDS server",
    "ca request failed",
    // security/pkg/nodeagent/sds/sdsservice.go: `failed to warm certificate: %v`.
    "failed to warm certificate",
    // security/pkg/nodeagent/caclient/providers/citadel/client.go: `create certificate: %v`,
    // `Failed to connect to endpoint %s`.
    "create certificate",
    "Failed to connect to endpoint",
    // security/pkg/nodeagent/cache/secretcache.go: `%s failed to sign: %v` (and the
    // older `CSR failed with error`).
    "failed to sign",
    "CSR failed",
    // pkg/istio-agent/xds_proxy.go: `failed to connect to upstream %s`, `upstream
    // terminated with unexpected error %v`.
    "failed to connect to upstream",
    "upstream terminated",
    // Envoy's ADS cluster in the bootstrap (pkg/bootstrap, envoy_bootstrap.json).
    "xds-grpc",
];

/// The table. Order matters: the first matching rule wins, so specific causes come
/// before the generic families they also contain (e.g. "failed to warm certificate ...
/// x509" is a CA problem, "... i/o timeout" a network one; "failed to fetch token ...
/// permission denied" a token one; a listener NACK for a bound port a port conflict).
pub const RULES: &[Rule] = &[
    // pilot/cmd/pilot-agent/status/server.go: `Envoy proxy is ready` (logged only when
    // something probes /healthz/ready).
    rule(Class::Ready, &["Envoy proxy is ready"]),
    // Benign: at start the agent looks for a certificate of an earlier run in
    // OUTPUT_CERTS and falls back to the token when there is none.
    // security/pkg/nodeagent/caclient/providers/citadel/client.go (Istio 1.8-1.12):
    // `cannot load key pair, using token instead: open etc/certs/cert-chain.pem: no such
    // file or directory`; other releases word it `Failed to load key pair`.
    Rule {
        class: Class::Benign,
        any: &["load key pair"],
        with: &["no such file"],
        not: &[],
    },
    // security/pkg/credentialfetcher/plugin/token.go: `failed to fetch token from file:
    // open /var/run/secrets/tokens/istio-token: no such file or directory`.
    rule(
        F(Failure::TokenMissing),
        &["failed to fetch token from file"],
    ),
    // The same read, as other releases' callers word it (`failed to read token: open
    // .../istio-token: ...`).
    rule(
        F(Failure::TokenMissing),
        &[
            "istio-token: no such file",
            "istio-token: permission denied",
        ],
    ),
    // pilot/pkg/autoregistration/controller.go: `auto-registration WorkloadEntry of %v
    // failed: cannot find WorkloadGroup %s/%s` (FailedPrecondition), seen by the agent
    // as pkg/istio-agent/xds_proxy.go's `upstream terminated with unexpected error`.
    rule(
        F(Failure::WorkloadGroupMissing),
        &["cannot find WorkloadGroup"],
    ),
    // pilot/pkg/xds/auth.go: `no identities (%v) matched %v/%v` (PermissionDenied,
    // `authorization failed: ...`): certificates of another identity (#35249).
    Rule {
        class: F(Failure::StaleIdentity),
        any: &["no identities"],
        with: &["PermissionDenied", "authorization failed"],
        not: &[],
    },
    // security/pkg/server/ca/server.go: `request authenticate failure`
    // (Unauthenticated); pkg/security/authentication.go: `authentication failure`.
    rule(
        F(Failure::TokenRejected),
        &[
            "request authenticate failure",
            "code = Unauthenticated",
            "authentication failure",
        ],
    ),
    // Go's crypto/x509 HostnameError as the agent's TLS dial to istiod reports it
    // (pilot/pkg/grpc/tls.go sets ServerName from the discovery address): `x509:
    // certificate is valid for istiod-canary.istio-system.svc, not
    // istiod.istio-system.svc`. Before the CA rule: both say x509.
    rule(
        F(Failure::SanMismatch),
        &[
            "x509: certificate is valid for",
            "x509: certificate is not valid for any names",
        ],
    ),
    // Go's crypto/x509 UnknownAuthorityError through the same dial
    // (pilot/pkg/grpc/tls.go, security/pkg/nodeagent/caclient/providers/citadel/client.go).
    rule(
        F(Failure::CaMismatch),
        &["certificate signed by unknown authority"],
    ),
    // tools/istio-iptables/pkg/dependencies/implementation_linux.go passes on
    // iptables' `iptables: Chain already exists.` (#52835).
    rule(F(Failure::IptablesLeftovers), &["Chain already exists"]),
    // tools/istio-iptables/pkg/dependencies/implementation_linux.go: `iptables binary %s
    // has no loaded kernel support and cannot be used`, and iptables' own `can't
    // initialize iptables table `nat': Table does not exist (do you need to insmod?)`,
    // `iptables-restore: unable to initialize table 'nat'` in its `Command error`.
    rule(
        F(Failure::KernelModules),
        &[
            "unable to initialize table",
            "can't initialize iptables table",
            "can't initialize ip6tables table",
            "do you need to insmod?",
            "has no loaded kernel support",
        ],
    ),
    // A port someone else holds: Envoy's `cannot bind '0.0.0.0:15090': Address already
    // in use` (a static listener at start, or an app port in a listener NACK), Go's
    // `bind: address already in use` (pkg/istio-agent/agent.go's DNS proxy, the status
    // server in pilot/cmd/pilot-agent/status/server.go). Before the xDS rejection rule.
    rule(
        F(Failure::PortConflict),
        &["Address already in use", "address already in use"],
    ),
    // Envoy rejected istiod's configuration (a NACK): Envoy's `gRPC config for
    // type.googleapis.com/... rejected: ...` and `delta config for ... rejected`, which
    // the agent sums up in pilot/cmd/pilot-agent/status/ready/probe.go as `config
    // received from XDS server, but was rejected`.
    rule(F(Failure::XdsRejected), &["but was rejected"]),
    Rule {
        class: F(Failure::XdsRejected),
        any: &[" rejected: "],
        with: &["config for "],
        not: &[],
    },
    // pilot/cmd/pilot-agent/status/ready/probe.go: `config not received from XDS server
    // (is Istiod running?)`; Istio <= 1.5 said `config not received from Pilot (is Pilot
    // running?)`.
    rule(
        F(Failure::IstiodUnreachable),
        &[
            "config not received from XDS server",
            "config not received from Pilot",
        ],
    ),
    // A stream to istiod that the network (a gateway, a load balancer) closes: gRPC's
    // `code = Unavailable desc = connection closed` (also `... last connection error:
    // connection closed before server preface received`) in pkg/istio-agent/xds_proxy.go's `upstream terminated with unexpected
    // error` or security/pkg/nodeagent/sds/sdsservice.go's `failed to warm certificate`.
    rule(
        F(Failure::IstiodUnreachable),
        &[
            "desc = connection closed",
            "connection closed before server preface",
        ],
    ),
    // Network errors towards istiod (see ISTIOD_CONTEXT for the sources).
    Rule {
        class: F(Failure::IstiodUnreachable),
        any: NET_ERRORS,
        with: ISTIOD_CONTEXT,
        not: &[],
    },
    // A file the proxy cannot open: `open /etc/certs/key.pem: permission denied`, or the
    // agent's certificate output (security/pkg/nodeagent/cache/secretcache.go `error
    // when output the resource`, via pkg/file/file.go's temp file: `open
    // etc/certs/key.pem.tmp.3487128755: permission denied`, relative to OUTPUT_CERTS).
    // The gRPC code `PermissionDenied` is a different thing (identity) and capitalised.
    Rule {
        class: F(Failure::PermissionDenied),
        any: &[": permission denied"],
        with: &[" /", " etc/", " ./", "failed to write data to file"],
        not: &[],
    },
    // pkg/envoy/agent.go: `Envoy exited with error: %v`, `Envoy may have been out of
    // memory killed. Check memory usage and limits.`
    rule(
        F(Failure::EnvoyExited),
        &[
            "Envoy exited with error",
            "may have been out of memory killed",
        ],
    ),
    // Istio <= 1.9 pkg/envoy/agent.go: `Epoch %d exited with error: %v`.
    Rule {
        class: F(Failure::EnvoyExited),
        any: &["exited with error"],
        with: &["Epoch "],
        not: &[],
    },
    // Progress. pkg/envoy/agent.go: `Starting proxy agent`.
    rule(P(Stage::AgentStarted), &["Starting proxy agent"]),
    // pkg/envoy/proxy.go: `Envoy command: %v`.
    rule(P(Stage::EnvoyStarting), &["Envoy command: "]),
    // security/pkg/nodeagent/cache/secretcache.go: `generated new workload certificate`.
    // The legacy (Istio 1.0) istio-auth-node-agent.service, security/pkg/nodeagent/vm
    // (nodeagent.go): `CSR is approved successfully. Will renew cert in %s`.
    rule(
        P(Stage::CertificateReceived),
        &[
            "generated new workload certificate",
            "CSR is approved successfully",
        ],
    ),
    // pkg/istio-agent/xds_proxy.go `connected to upstream XDS server: %s`;
    // pkg/istio-agent/xds_proxy_delta.go (Istio >= 1.22 mostly uses delta xDS)
    // `connected to delta upstream XDS server: %s`.
    rule(
        P(Stage::XdsConnected),
        &[
            "connected to upstream XDS server",
            "connected to delta upstream XDS server",
        ],
    ),
    // Any other error-level line: reported verbatim. Agent text and JSON logs
    // (pkg/log), Envoy's istio.err.log (`<ts>\terror\tenvoy ...` with the log format
    // pkg/envoy/proxy.go passes, `[ts][pid][critical][main] ...` in Envoy's default).
    rule(
        F(Failure::UnknownError),
        &[
            "\terror\t",
            "\tfatal\t",
            "\tcritical\t",
            "\"level\":\"error\"",
            "\"level\":\"fatal\"",
            "][error][",
            "][critical][",
        ],
    ),
];
