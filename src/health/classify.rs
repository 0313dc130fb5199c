//! One table of istio.log / istio.err.log patterns, built from Istio's real log lines
//! (pilot-agent, its sds/xdsproxy/cache scopes, istio-iptables and Envoy), and the
//! classifier that applies it.
//!
//! Lines look like `2024-08-15T09:51:42.705907Z<TAB>warn<TAB>sds<TAB>failed to warm
//! certificate: ...` (or JSON with `--log_as_json`); rules match literals anywhere in the
//! line, so both forms classify alike. Speed: one Aho-Corasick (SIMD) pass per line finds
//! whether any anchor occurs at all; only those lines are checked rule by rule.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use memchr::memmem;
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
            Stage::CertificateReceived => "workload certificate received from istiod",
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

/// The table. Order matters: specific causes come before the generic families they
/// also contain (e.g. "failed to warm certificate ... x509" is a CA problem, "... i/o
/// timeout" a network one; "failed to fetch token ... permission denied" a token one).
pub const RULES: &[Rule] = &[
    // The agent logs this when /healthz/ready succeeds (only when something probes it).
    rule(Class::Ready, &["Envoy proxy is ready"]),
    // Token missing or unreadable: `failed to fetch token from file: open
    // /var/run/secrets/tokens/istio-token: no such file or directory`.
    rule(
        F(Failure::TokenMissing),
        &["failed to fetch token from file"],
    ),
    Rule {
        class: F(Failure::TokenMissing),
        any: &[
            "istio-token: no such file",
            "istio-token: permission denied",
        ],
        with: &[],
        not: &[],
    },
    // istiod stale identity: `PermissionDenied desc = authorization failed: no identities
    // ([...]) matched ...` (#35249).
    Rule {
        class: F(Failure::StaleIdentity),
        any: &["no identities"],
        with: &["PermissionDenied", "authorization failed"],
        not: &[],
    },
    // Token rejected: `failed to warm certificate: ... code = Unauthenticated desc =
    // request authenticate failure`, `upstream terminated with unexpected error rpc
    // error: code = Unauthenticated ...`.
    rule(
        F(Failure::TokenRejected),
        &[
            "request authenticate failure",
            "code = Unauthenticated",
            "authentication failure",
        ],
    ),
    // `x509: certificate signed by unknown authority` (Go), also wrapped as `tls: failed
    // to verify certificate: x509: ...`.
    rule(
        F(Failure::CaMismatch),
        &["certificate signed by unknown authority"],
    ),
    // istio-iptables on restart over leftover rules (#52835).
    rule(F(Failure::IptablesLeftovers), &["Chain already exists"]),
    // `iptables v1.8.7 (legacy): can't initialize iptables table `nat': Table does not
    // exist (do you need to insmod?)`, `unable to initialize table 'nat'`.
    rule(
        F(Failure::KernelModules),
        &[
            "unable to initialize table",
            "can't initialize iptables table",
            "can't initialize ip6tables table",
            "do you need to insmod?",
        ],
    ),
    // istiod unreachable. `dial tcp 10.0.0.5:15012: i/o timeout`, `... connect:
    // connection refused`, `lookup istiod.istio-system.svc on 10.0.0.2:53: no such host`,
    // `Envoy proxy is NOT ready: config not received from XDS server`. Network errors
    // only count when they concern istiod (an app health check's `connection refused`
    // must not).
    rule(
        F(Failure::IstiodUnreachable),
        &["config not received from XDS server"],
    ),
    Rule {
        class: F(Failure::IstiodUnreachable),
        any: &[
            "connection refused",
            "i/o timeout",
            "no such host",
            "context deadline exceeded",
            "connection reset by peer",
            "no route to host",
            "network is unreachable",
        ],
        with: &[":15012", "istiod", "XDS server", "ca request failed"],
        not: &[],
    },
    // A file the proxy cannot open: `open /etc/certs/key.pem: permission denied`. The
    // gRPC code `PermissionDenied` is a different thing (identity) and capitalised.
    Rule {
        class: F(Failure::PermissionDenied),
        any: &[": permission denied"],
        with: &[" /"],
        not: &[],
    },
    rule(
        F(Failure::EnvoyExited),
        &[
            "Envoy exited with error",
            "may have been out of memory killed",
        ],
    ),
    Rule {
        class: F(Failure::EnvoyExited),
        any: &["exited with error"],
        with: &["Epoch "],
        not: &[],
    },
    // Progress (agent scopes: bare message, `cache`, `xdsproxy`).
    rule(P(Stage::AgentStarted), &["Starting proxy agent"]),
    rule(P(Stage::EnvoyStarting), &["Envoy command: "]),
    rule(
        P(Stage::CertificateReceived),
        &["generated new workload certificate"],
    ),
    rule(
        P(Stage::XdsConnected),
        // Istio >= 1.22 mostly uses delta xDS: `connected to delta upstream XDS server`.
        &[
            "connected to upstream XDS server",
            "connected to delta upstream XDS server",
        ],
    ),
    // Any other error-level line: reported verbatim. Agent text and JSON logs, Envoy's
    // istio.err.log (`<ts>\terror\tenvoy ...`, `[ts][pid][critical][main] ...`).
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

/// Applies [`RULES`] to lines.
pub struct Classifier {
    /// Every anchor of every rule: a line without one is not looked at further. `None`
    /// only if the automaton could not be built (it is a static table, so never in
    /// practice); lines are then checked rule by rule, slower but alike.
    anchors: Option<AhoCorasick>,
    /// Per rule: its anchors, withs and nots as prepared finders.
    rules: Vec<Prepared>,
}

struct Prepared {
    class: Class,
    any: Vec<memmem::Finder<'static>>,
    with: Vec<memmem::Finder<'static>>,
    not: Vec<memmem::Finder<'static>>,
}

fn finders(v: &'static [&'static str]) -> Vec<memmem::Finder<'static>> {
    v.iter()
        .map(|s| memmem::Finder::new(s.as_bytes()))
        .collect()
}

/// Every anchor of the table, in table order (the benchmark's grep pattern list).
pub fn anchors() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = RULES.iter().flat_map(|r| r.any.iter().copied()).collect();
    v.dedup();
    v
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classifier {
    /// Builds the classifier from [`RULES`].
    pub fn new() -> Self {
        let anchors = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostFirst)
            .build(anchors())
            .map_err(|e| tracing::error!(error = %e, "log classifier: falling back to rule-by-rule matching"))
            .ok();
        Classifier {
            anchors,
            rules: RULES
                .iter()
                .map(|r| Prepared {
                    class: r.class,
                    any: finders(r.any),
                    with: finders(r.with),
                    not: finders(r.not),
                })
                .collect(),
        }
    }

    /// Whether the line contains any anchor at all (the fast path).
    pub fn is_candidate(&self, line: &[u8]) -> bool {
        match &self.anchors {
            Some(a) => a.is_match(line),
            None => self
                .rules
                .iter()
                .any(|r| r.any.iter().any(|f| f.find(line).is_some())),
        }
    }

    /// What `line` says, if anything.
    pub fn classify(&self, line: &[u8]) -> Option<Class> {
        if !self.is_candidate(line) {
            return None;
        }
        let has = |fs: &[memmem::Finder<'static>]| fs.iter().any(|f| f.find(line).is_some());
        self.rules
            .iter()
            .find(|r| has(&r.any) && (r.with.is_empty() || has(&r.with)) && !has(&r.not))
            .map(|r| r.class)
    }
}
