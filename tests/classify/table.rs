//! The table of real lines for tests/classify.rs: pilot-agent's (text and
//! `--log_as_json`), Envoy's in istio.err.log (Istio's format and Envoy's default),
//! istio-iptables' and iptables' in the unit's journal, and the legacy node agent's.
//! Every row names the istio/istio source file its text comes from (for Envoy's and
//! iptables' own words: the istio/istio file that passes them on, and theirs).

use vmagent::health::classify::{Class, Stage};
use vmagent::health::Failure;

pub const TS: &str = "2024-08-15T09:51:42.705907Z";

/// One row: the line, what it must classify to, its form and its source.
pub struct Row {
    pub line: String,
    pub want: Option<Class>,
    pub form: &'static str,
    pub src: &'static str,
}

#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    /// An agent line in both forms: text (`<ts>\t<level>\t[<scope>\t]<msg>[\t<k=v ...>]`)
    /// and JSON (`--log_as_json`: keys level, time, scope, msg, then the k=v fields).
    pub fn agent(
        &mut self,
        src: &'static str,
        (level, scope): (&str, &str),
        msg: &str,
        kv: &str,
        want: Option<Class>,
    ) {
        let mut text = format!("{TS}\t{level}\t");
        if !scope.is_empty() {
            text.push_str(scope);
            text.push('\t');
        }
        text.push_str(msg);
        if !kv.is_empty() {
            text.push('\t');
            text.push_str(kv);
        }
        self.rows.push(Row {
            line: text,
            want,
            form: "agent text",
            src,
        });

        let mut obj = serde_json::Map::new();
        obj.insert("level".into(), level.into());
        obj.insert("time".into(), TS.into());
        if !scope.is_empty() {
            obj.insert("scope".into(), scope.into());
        }
        obj.insert("msg".into(), msg.into());
        for pair in kv.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("k=v");
            obj.insert(k.into(), v.into());
        }
        self.rows.push(Row {
            line: serde_json::Value::Object(obj).to_string(),
            want,
            form: "agent json",
            src,
        });
    }

    /// A line as it is (Envoy's istio.err.log, the journal's `-o cat` text).
    pub fn raw(&mut self, src: &'static str, line: &str, want: Option<Class>) {
        self.rows.push(Row {
            line: line.to_string(),
            want,
            form: "raw",
            src,
        });
    }

    /// Distinct lines (a text/JSON pair counts once).
    pub fn distinct(&self) -> usize {
        self.rows.iter().filter(|r| r.form != "agent json").count()
    }
}

pub fn f(k: Failure) -> Option<Class> {
    Some(Class::Failure(k))
}

pub fn p(s: Stage) -> Option<Class> {
    Some(Class::Progress(s))
}

pub const READY: Option<Class> = Some(Class::Ready);
pub const BENIGN: Option<Class> = Some(Class::Benign);

/// Envoy in istio.err.log, Istio's format (pkg/envoy/proxy.go's --log-format):
/// `<ts>\t<level>\tenvoy <logger> <file:line>\t<msg>\tthread=N`.
pub fn envoy(level: &str, logger: &str, msg: &str) -> String {
    format!("{TS}\t{level}\tenvoy {logger} external/envoy/source/extensions/config_subscription/grpc/grpc_stream.h:152\t{msg}\tthread=14")
}

/// Envoy's own default format: `[<date> <time>][<pid>][<level>][<logger>] <msg>`.
pub fn envoy_default(level: &str, logger: &str, msg: &str) -> String {
    format!("[2024-08-15 09:51:42.705][12][{level}][{logger}] [source/server/server.cc:131] {msg}")
}

// Sources, named once (istio/istio paths unless said).
const STATUS: &str = "pilot/cmd/pilot-agent/status/server.go";
const READY_PROBE: &str = "pilot/cmd/pilot-agent/status/ready/probe.go";
const ENVOY_AGENT: &str = "pkg/envoy/agent.go";
const ENVOY_PROXY: &str = "pkg/envoy/proxy.go";
const SECRETCACHE: &str = "security/pkg/nodeagent/cache/secretcache.go";
const SDS: &str = "security/pkg/nodeagent/sds/sdsservice.go";
const CITADEL: &str = "security/pkg/nodeagent/caclient/providers/citadel/client.go";
const CA_SERVER: &str = "security/pkg/server/ca/server.go";
const TOKEN: &str = "security/pkg/credentialfetcher/plugin/token.go";
const XDS_PROXY: &str = "pkg/istio-agent/xds_proxy.go";
const XDS_DELTA: &str = "pkg/istio-agent/xds_proxy_delta.go";
const XDS_AUTH: &str = "pilot/pkg/xds/auth.go";
const AUTOREG: &str = "pilot/pkg/autoregistration/controller.go";
const GRPC_TLS: &str = "pilot/pkg/grpc/tls.go";
const FILE: &str = "pkg/file/file.go (via security/pkg/nodeagent/cache/secretcache.go)";
const DNS: &str = "pkg/dns/client/proxy.go";
const NODEAGENT_VM: &str = "security/pkg/nodeagent/vm/nodeagent.go (Istio 1.0)";
const IPT: &str = "tools/istio-iptables/pkg/dependencies/implementation_linux.go";
const IPT_ERR: &str = "tools/istio-iptables/pkg/dependencies/implementation.go";
const IPT_RUN: &str = "tools/istio-iptables/pkg/capture/run.go";
const ENVOY_ADS: &str =
    "pkg/envoy/proxy.go (Envoy's source/extensions/config_subscription/grpc/grpc_stream.h)";
const ENVOY_NACK: &str =
    "pkg/envoy/proxy.go (Envoy's source/extensions/config_subscription/grpc/grpc_mux_impl.cc)";
const ENVOY_MAIN: &str = "pkg/envoy/proxy.go (Envoy's source/server/server.cc)";
const KLOG: &str = "pkg/log/klog.go";
const WASM: &str = "pkg/wasm/cache.go";
const OPTIONS: &str = "pilot/cmd/pilot-agent/app/cmd.go";
const DNS_SERVER: &str = "pkg/dns/client/dns.go";
const OLD_EPOCH: &str = "pkg/envoy/agent.go (Istio <= 1.9)";
const OLD_CACHE: &str = "security/pkg/nodeagent/cache/secretcache.go (Istio <= 1.8)";
const SYNTHETIC: &str = "synthetic look-alike (no Istio source)";
const IPTABLES: &str =
    "tools/istio-iptables/pkg/dependencies/implementation_linux.go (iptables' own stderr)";
const HEALTH: &str = "pkg/istio-agent/health/health_check.go";
const ADS: &str = "pilot/pkg/xds/discovery.go";
const AGENT: &str = "pkg/istio-agent/agent.go";

const fn lv(level: &'static str, scope: &'static str) -> (&'static str, &'static str) {
    (level, scope)
}

pub fn table() -> Table {
    use Failure::*;
    let mut t = Table::default();

    // --- Ready and progress (the healthy sequence) -----------------------------------
    t.agent(STATUS, lv("info", ""), "Envoy proxy is ready", "", READY);
    t.agent(
        ENVOY_AGENT,
        lv("info", ""),
        "Starting proxy agent",
        "",
        p(Stage::AgentStarted),
    );
    // The real command line carries Envoy's log format, tabs included.
    t.agent(
        ENVOY_PROXY,
        lv("info", ""),
        "Envoy command: [-c etc/istio/proxy/envoy-rev.json --drain-time-s 45 --drain-strategy immediate --local-address-ip-version v4 --file-flush-interval-msec 1000 --disable-hot-restart --allow-unknown-static-fields --log-format %Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t -l warning --component-log-level misc:error]",
        "",
        p(Stage::EnvoyStarting),
    );
    t.agent(
        SECRETCACHE,
        lv("info", "cache"),
        "generated new workload certificate",
        "resourceName=default latency=97.791613ms ttl=23h59m59.202218004s",
        p(Stage::CertificateReceived),
    );
    t.agent(
        SECRETCACHE,
        lv("info", "cache"),
        "generated new workload certificate",
        "latency=145.0547ms ttl=23h59m59.8988344s",
        p(Stage::CertificateReceived),
    );
    // Mentions istiod and :15012 but is progress, not a failure.
    t.agent(
        XDS_PROXY,
        lv("info", "xdsproxy"),
        "connected to upstream XDS server: istiod.istio-system.svc:15012",
        "",
        p(Stage::XdsConnected),
    );
    t.agent(
        XDS_PROXY,
        lv("info", "xdsproxy"),
        "connected to upstream XDS server[1]: istiod.istio-system.svc:15012",
        "",
        p(Stage::XdsConnected),
    );
    t.agent(
        XDS_DELTA,
        lv("info", "xdsproxy"),
        "connected to delta upstream XDS server: istiod.istio-system.svc:15012",
        "id=1",
        p(Stage::XdsConnected),
    );
    // The legacy (Istio 1.0) istio-auth-node-agent.service: its log, and glog's form in
    // the journal as istio.io's 1.0 mesh-expansion page shows it.
    t.raw(
        NODEAGENT_VM,
        "2019-12-12T19:44:01.228440Z\tinfo\tCSR is approved successfully. Will renew cert in 1079h59m59.771856842s",
        p(Stage::CertificateReceived),
    );
    t.raw(
        NODEAGENT_VM,
        "I1013 21:32:29.862575    6941 nodeagent.go:128] CSR is approved successfully. Will renew cert in 29m59.137732603s",
        p(Stage::CertificateReceived),
    );

    // --- Benign: the agent looks for an earlier run's certificate at start -----------
    t.agent(
        CITADEL,
        lv("warn", "citadelclient"),
        "cannot load key pair, using token instead: open etc/certs/cert-chain.pem: no such file or directory",
        "",
        BENIGN,
    );
    // The wording (exact text not found in istio/istio; same call site), at
    // error level: it must not become an unknown error.
    t.agent(
        CITADEL,
        lv("error", "citadelclient"),
        "Failed to load key pair open /etc/certs/cert-chain.pem: no such file or directory",
        "",
        BENIGN,
    );
    // Look-alike: the key pair exists but cannot be read: ownership.
    t.agent(
        CITADEL,
        lv("warn", "citadelclient"),
        "cannot load key pair, using token instead: open etc/certs/key.pem: permission denied",
        "",
        f(PermissionDenied),
    );
    t.agent(
        GRPC_TLS,
        lv("warn", ""),
        "cert expired, using token instead",
        "",
        None,
    );
    t.agent(
        GRPC_TLS,
        lv("warn", ""),
        "cannot parse the cert chain, using token instead: open etc/certs/cert-chain.pem: no such file or directory",
        "",
        None,
    );

    // --- TokenRejected ----------------------------------------------------------------
    t.agent(
        SDS,
        lv("warn", "sds"),
        "failed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unauthenticated desc = request authenticate failure",
        "",
        f(TokenRejected),
    );
    t.agent(
        OLD_CACHE,
        lv("error", "cache"),
        "resource:default request:4c3e1a2b-6f0d-4c55-9a7e-1d2f3a4b5c6d CSR failed with error: rpc error: code = Unauthenticated desc = request authenticate failure, retry in 800 millisec",
        "",
        f(TokenRejected),
    );
    t.agent(
        SECRETCACHE,
        lv("error", "cache"),
        "resource:default failed to sign: rpc error: code = Unauthenticated desc = request authenticate failure",
        "",
        f(TokenRejected),
    );
    t.agent(
        CITADEL,
        lv("error", "citadelclient"),
        "failed to sign CSR: rpc error: code = Unauthenticated desc = request authenticate failure",
        "",
        f(TokenRejected),
    );
    t.agent(
        XDS_PROXY,
        lv("warn", "xdsproxy"),
        "upstream terminated with unexpected error rpc error: code = Unauthenticated desc = authentication failure",
        "id=1",
        f(TokenRejected),
    );
    t.raw(
        CA_SERVER,
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed since 41s ago: 16, request authenticate failure",
        ),
        f(TokenRejected),
    );

    // --- TokenMissing -----------------------------------------------------------------
    t.agent(
        TOKEN,
        lv("warn", ""),
        "failed to fetch token from file: open /var/run/secrets/tokens/istio-token: no such file or directory",
        "",
        f(TokenMissing),
    );
    // Look-alike: "permission denied" on the token is a token problem, not ownership.
    t.agent(
        TOKEN,
        lv("warn", ""),
        "failed to fetch token from file: open /var/run/secrets/tokens/istio-token: permission denied",
        "",
        f(TokenMissing),
    );
    t.agent(
        TOKEN,
        lv("warn", ""),
        "failed to fetch token from file: open /var/run/secrets/kubernetes.io/serviceaccount/token: no such file or directory",
        "",
        f(TokenMissing),
    );
    t.agent(
        OLD_CACHE,
        lv("error", "sds"),
        "failed to read token: open /var/run/secrets/tokens/istio-token: no such file or directory",
        "",
        f(TokenMissing),
    );
    t.agent(
        OLD_CACHE,
        lv("error", "sds"),
        "failed to read token: open /var/run/secrets/tokens/istio-token: permission denied",
        "",
        f(TokenMissing),
    );

    // --- WorkloadGroupMissing (auto-registration) -----------------------------------
    t.agent(
        AUTOREG,
        lv("warn", "xdsproxy"),
        "upstream terminated with unexpected error rpc error: code = FailedPrecondition desc = auto-registration WorkloadEntry of vm1.vm-ns failed: cannot find WorkloadGroup vm-ns/vm-wg",
        "id=1",
        f(WorkloadGroupMissing),
    );
    t.raw(
        AUTOREG,
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed since 3s ago: 9, auto-registration WorkloadEntry of vm1.vm-ns failed: cannot find WorkloadGroup vm-ns/vm-wg",
        ),
        f(WorkloadGroupMissing),
    );
    t.raw(
        AUTOREG,
        &envoy(
            "warning",
            "config",
            "DeltaAggregatedResources gRPC config stream to xds-grpc closed since 3s ago: 9, auto-registration WorkloadEntry of vm1.vm-ns failed: cannot find WorkloadGroup vm-ns/vm-wg",
        ),
        f(WorkloadGroupMissing),
    );

    // --- StaleIdentity (#35249) -------------------------------------------------------
    // Look-alike: the gRPC code PermissionDenied is an identity problem, not ownership.
    t.agent(
        XDS_AUTH,
        lv("warn", "xdsproxy"),
        "upstream [1] terminated with unexpected error rpc error: code = PermissionDenied desc = authorization failed: no identities ([spiffe://cluster.local/ns/old-ns/sa/old-sa]) matched vm-ns/vm-sa",
        "",
        f(StaleIdentity),
    );
    t.raw(
        XDS_AUTH,
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed since 12s ago: 7, authorization failed: no identities ([spiffe://cluster.local/ns/old-ns/sa/old-sa]) matched vm-ns/vm-sa",
        ),
        f(StaleIdentity),
    );

    // --- SanMismatch ------------------------------------------------------------------
    t.agent(
        SDS,
        lv("warn", "sds"),
        "failed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate is valid for istiod-canary.istio-system.svc, istiod-canary.istio-system.svc.cluster.local, not istiod.istio-system.svc\"",
        "",
        f(SanMismatch),
    );
    t.agent(
        XDS_PROXY,
        lv("warn", "xdsproxy"),
        "upstream terminated with unexpected error rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate is valid for *.example.com, example.com, not istiod.istio-system.svc\"",
        "id=2",
        f(SanMismatch),
    );
    t.agent(
        XDS_PROXY,
        lv("error", "xdsproxy"),
        "failed to connect to upstream istiod.istio-system.svc:15012: context deadline exceeded: connection error: desc = \"transport: authentication handshake failed: x509: certificate is valid for ingress.local, not istiod.istio-system.svc\"",
        "",
        f(SanMismatch),
    );
    t.raw(
        ENVOY_ADS,
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed since 20s ago: 14, connection error: desc = \"transport: authentication handshake failed: x509: certificate is valid for istiod-1-22.istio-system.svc, not istiod.istio-system.svc\"",
        ),
        f(SanMismatch),
    );
    t.agent(
        CITADEL,
        lv("error", "citadelclient"),
        "failed to sign CSR: rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate is not valid for any names, but wanted to match istiod.istio-system.svc\"",
        "",
        f(SanMismatch),
    );

    // --- CaMismatch -------------------------------------------------------------------
    t.agent(
        SDS,
        lv("warn", "sds"),
        "failed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority (possibly because of \\\"crypto/rsa: verification error\\\" while trying to verify candidate authority certificate \\\"cluster.local\\\")\"",
        "",
        f(CaMismatch),
    );
    t.agent(
        OLD_CACHE,
        lv("error", "cache"),
        "resource:default request:77a0 CSR failed with error: rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: x509: certificate signed by unknown authority\" (istiod.istio-system.svc:15012), retry in 1600 millisec",
        "",
        f(CaMismatch),
    );
    t.raw(
        ENVOY_ADS,
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed since 30s ago: 14, connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\"",
        ),
        f(CaMismatch),
    );
    // The xDS proxy's dial gives up with a timeout and names istiod; the cause is the CA.
    t.agent(
        XDS_PROXY,
        lv("error", "xdsproxy"),
        "failed to connect to upstream istiod.istio-system.svc:15012: context deadline exceeded: connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\"",
        "",
        f(CaMismatch),
    );

    // --- IstiodUnreachable ------------------------------------------------------------
    t.agent(
        SDS,
        lv("warn", "sds"),
        "failed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:15012: i/o timeout\"",
        "",
        f(IstiodUnreachable),
    );
    // CA_ADDR on a NodePort: the port says nothing.
    t.agent(
        SDS,
        lv("warn", "sds"),
        "failed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:31012: i/o timeout\"",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        SECRETCACHE,
        lv("error", "cache"),
        "resource:default failed to sign: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:32018: connect: connection refused\"",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        CITADEL,
        lv("error", "citadelclient"),
        "failed to sign CSR: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:32018: connect: connection refused\"",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        OLD_CACHE,
        lv("error", "cache"),
        "resource:default request:9d1 CSR failed with error: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:15012: connect: connection refused\", retry in 3200 millisec",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        SDS,
        lv("warn", "sds"),
        "failed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp: lookup istiod.istio-system.svc on 10.0.0.2:53: no such host\"",
        "",
        f(IstiodUnreachable),
    );
    // A gateway or load balancer closing the stream.
    t.agent(
        XDS_PROXY,
        lv("warn", "xdsproxy"),
        "upstream terminated with unexpected error rpc error: code = Unavailable desc = connection closed",
        "id=3",
        f(IstiodUnreachable),
    );
    t.agent(
        SDS,
        lv("warn", "sds"),
        "failed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unavailable desc = connection closed before server preface received",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        READY_PROBE,
        lv("warn", ""),
        "Envoy proxy is NOT ready: config not received from XDS server (is Istiod running?): cds updates: 0 successful, 0 rejected; lds updates: 0 successful, 0 rejected",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        READY_PROBE,
        lv("info", ""),
        "Envoy proxy is NOT ready: config not received from XDS server",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        "pilot/cmd/pilot-agent/status/ready/probe.go (Istio <= 1.5)",
        lv("info", ""),
        "Envoy proxy is NOT ready: config not received from Pilot (is Pilot running?): cds updates: 0 successful, 0 rejected; lds updates: 0 successful, 0 rejected",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        XDS_PROXY,
        lv("error", "xdsproxy"),
        "failed to connect to upstream istiod.istio-system.svc:15012: context deadline exceeded",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        XDS_DELTA,
        lv("error", "xdsproxy"),
        "failed to connect to upstream 10.0.0.5:31012: context deadline exceeded",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        XDS_PROXY,
        lv("warn", "xdsproxy"),
        "upstream terminated with unexpected error rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp: lookup istiod.istio-system.svc on 127.0.0.53:53: no such host\"",
        "id=1",
        f(IstiodUnreachable),
    );
    t.raw(
        ENVOY_ADS,
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed since 64s ago: 14, connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:31012: i/o timeout\"",
        ),
        f(IstiodUnreachable),
    );

    // --- XdsRejected (NACK) -----------------------------------------------------------
    t.agent(
        READY_PROBE,
        lv("warn", ""),
        "Envoy proxy is NOT ready: config received from XDS server, but was rejected: cds updates: 1 successful, 1 rejected; lds updates: 1 successful, 0 rejected",
        "",
        f(XdsRejected),
    );
    t.raw(
        ENVOY_NACK,
        &envoy(
            "warning",
            "config",
            "gRPC config for type.googleapis.com/envoy.config.listener.v3.Listener rejected: Error adding/updating listener(s) virtualInbound: duplicate listener",
        ),
        f(XdsRejected),
    );
    t.raw(
        "pkg/envoy/proxy.go (Envoy's source/extensions/config_subscription/grpc/delta_subscription_state.cc)",
        &envoy(
            "warning",
            "config",
            "delta config for type.googleapis.com/envoy.config.cluster.v3.Cluster rejected: Error adding/updating cluster(s) outbound|8080||orders.vm-ns.svc.cluster.local: Proto constraint validation failed",
        ),
        f(XdsRejected),
    );
    t.raw(
        ENVOY_NACK,
        &envoy_default(
            "warning",
            "config",
            "gRPC config for type.googleapis.com/envoy.config.route.v3.RouteConfiguration rejected: Unknown cluster 'outbound|9080||reviews.default.svc.cluster.local'",
        ),
        f(XdsRejected),
    );

    // --- PortConflict -----------------------------------------------------------------
    t.raw(
        ENVOY_NACK,
        &envoy(
            "warning",
            "config",
            "gRPC config for type.googleapis.com/envoy.config.listener.v3.Listener rejected: Error adding/updating listener(s) 10.0.0.8_8080: cannot bind '10.0.0.8:8080': Address already in use",
        ),
        f(PortConflict),
    );
    t.raw(
        ENVOY_MAIN,
        &envoy(
            "critical",
            "main",
            "error initializing configuration '/etc/istio/proxy/envoy-rev.json': cannot bind '0.0.0.0:15090': Address already in use",
        ),
        f(PortConflict),
    );
    t.agent(
        DNS,
        lv("error", "dns"),
        "Failed to listen on udp port localhost:15053: listen udp 127.0.0.1:15053: bind: address already in use",
        "",
        f(PortConflict),
    );
    t.agent(
        STATUS,
        lv("error", ""),
        "Error listening on status port: listen tcp :15020: bind: address already in use",
        "",
        f(PortConflict),
    );

    // --- PermissionDenied -------------------------------------------------------------
    t.agent(
        SECRETCACHE,
        lv("error", "cache"),
        "failed to load key pair: open /etc/certs/key.pem: permission denied",
        "",
        f(PermissionDenied),
    );
    t.agent(
        "pkg/bootstrap/instance.go",
        lv("error", ""),
        "failed to write bootstrap: open /etc/istio/proxy/envoy-rev.json: permission denied",
        "",
        f(PermissionDenied),
    );
    t.agent(
        SECRETCACHE,
        lv("warn", ""),
        "open /etc/certs/key.pem: permission denied",
        "",
        f(PermissionDenied),
    );
    // The agent's certificate output to a relative OUTPUT_CERTS (not final: see verdict).
    t.agent(
        FILE,
        lv("error", "cache"),
        "error when output the resource: failed to write data to file key.pem: open etc/certs/key.pem.tmp.3487128755: permission denied",
        "",
        f(PermissionDenied),
    );
    t.agent(
        FILE,
        lv("error", "cache"),
        "error when output the resource: failed to write data to file cert-chain.pem: open ./etc/certs/cert-chain.pem.tmp.2251799813: permission denied",
        "",
        f(PermissionDenied),
    );
    // Look-alike: a permission error without a file path (a port bind) is not ownership.
    t.agent(
        STATUS,
        lv("error", ""),
        "Error listening on status port: listen tcp :15020: bind: permission denied",
        "",
        f(UnknownError),
    );
    t.agent(
        SYNTHETIC,
        lv("warn", ""),
        "listen tcp 0.0.0.0:15021: bind: permission denied",
        "",
        None,
    );

    // --- EnvoyExited ------------------------------------------------------------------
    t.agent(
        ENVOY_AGENT,
        lv("error", ""),
        "Envoy exited with error: signal: killed",
        "",
        f(EnvoyExited),
    );
    t.agent(
        OLD_EPOCH,
        lv("error", ""),
        "Epoch 0 exited with error: signal: killed",
        "",
        f(EnvoyExited),
    );
    t.agent(
        OLD_EPOCH,
        lv("error", ""),
        "Epoch 3 exited with error: exit status 1",
        "",
        f(EnvoyExited),
    );
    t.agent(
        ENVOY_AGENT,
        lv("warn", ""),
        "Envoy may have been out of memory killed. Check memory usage and limits.",
        "",
        f(EnvoyExited),
    );
    t.agent(
        SYNTHETIC,
        lv("warn", ""),
        "health checker exited with error: context canceled",
        "",
        None,
    );

    // --- iptables (istio-start.sh / istio-iptables, in the unit's journal) -----------
    t.raw(
        IPTABLES,
        "iptables: Chain already exists.",
        f(IptablesLeftovers),
    );
    t.agent(
        IPT_ERR,
        lv("error", ""),
        "Command error: xtables other problem: Chain already exists.",
        "",
        f(IptablesLeftovers),
    );
    t.agent(
        "tools/istio-iptables/pkg/dependencies/implementation.go (Istio <= 1.17)",
        lv("error", ""),
        "Command error output: iptables: Chain already exists.",
        "",
        f(IptablesLeftovers),
    );
    t.raw(
        IPTABLES,
        "iptables v1.8.7 (legacy): can't initialize iptables table `nat': Table does not exist (do you need to insmod?)",
        f(KernelModules),
    );
    t.raw(
        IPTABLES,
        "ip6tables v1.8.7 (legacy): can't initialize ip6tables table `nat': Table does not exist (do you need to insmod?)",
        f(KernelModules),
    );
    t.raw(
        IPTABLES,
        "iptables-restore: unable to initialize table 'nat'",
        f(KernelModules),
    );
    t.raw(
        IPTABLES,
        "iptables-restore v1.8.9 (nf_tables): unable to initialize table 'nat'",
        f(KernelModules),
    );
    t.agent(
        IPT_ERR,
        lv("error", ""),
        "Command error: xtables other problem: can't initialize iptables table `filter': Table does not exist (do you need to insmod?)",
        "",
        f(KernelModules),
    );
    t.agent(
        "tools/istio-iptables/pkg/dependencies/implementation.go (Istio <= 1.17)",
        lv("error", ""),
        "Command error output: iptables v1.8.4 (legacy): can't initialize iptables table `filter': Table does not exist (do you need to insmod?)",
        "",
        f(KernelModules),
    );
    t.agent(
        IPT,
        lv("error", ""),
        "iptables binary /usr/sbin/iptables-legacy has no loaded kernel support and cannot be used, err: exit status 3 out: iptables v1.8.9 (legacy): can't initialize iptables table `filter': Table does not exist (do you need to insmod?)",
        "",
        f(KernelModules),
    );
    t.raw(
        IPTABLES,
        "Perhaps iptables or your kernel needs to be upgraded.",
        None,
    );
    t.raw(IPTABLES, "Error occurred at line: 1", None);
    t.raw(
        IPTABLES,
        "Try `iptables-restore -h' or 'iptables-restore --help' for more information.",
        None,
    );
    t.agent(
        IPT_RUN,
        lv("info", ""),
        "Applying iptables chains and rules",
        "",
        None,
    );
    t.agent(
        IPT_RUN,
        lv("info", ""),
        "Performing cleanup of existing iptables",
        "",
        None,
    );

    // --- UnknownError: error-level lines no rule knows --------------------------------
    t.agent(
        KLOG,
        lv("error", "klog"),
        "k8s.io/client-go: Failed to watch *v1.ConfigMap: unknown (get configmaps)",
        "",
        f(UnknownError),
    );
    t.agent(
        WASM,
        lv("error", "wasm"),
        "failed to fetch Wasm module: unexpected EOF",
        "",
        f(UnknownError),
    );
    t.agent(
        OPTIONS,
        lv("fatal", ""),
        "failed to start the proxy agent: invalid proxy config",
        "",
        f(UnknownError),
    );
    t.raw(
        ENVOY_MAIN,
        &envoy(
            "critical",
            "main",
            "error initializing configuration '/etc/istio/proxy/envoy-rev.json': Unable to parse JSON",
        ),
        f(UnknownError),
    );
    t.raw(
        ENVOY_MAIN,
        &envoy_default(
            "critical",
            "main",
            "error initializing configuration '/etc/istio/proxy/envoy-rev.json': Unable to parse JSON",
        ),
        f(UnknownError),
    );
    t.raw(
        ENVOY_ADS,
        &envoy_default(
            "error",
            "config",
            "gRPC config stream closed: 13, internal error",
        ),
        f(UnknownError),
    );

    // --- Look-alikes that must classify to nothing ------------------------------------
    t.agent(
        READY_PROBE,
        lv("warn", ""),
        "Envoy proxy is NOT ready: server is not live, current state is: PRE_INITIALIZING",
        "",
        None,
    );
    // An app health check, not istiod.
    t.agent(
        HEALTH,
        lv("info", "healthcheck"),
        "failure threshold hit, marking as unhealthy: Get \"http://127.0.0.1:8000/healthz\": dial tcp 127.0.0.6:0->127.0.0.1:8000: connect: connection refused",
        "",
        None,
    );
    t.agent(
        SYNTHETIC,
        lv("warn", ""),
        "Probe failed: Get \"http://10.0.0.8:8080/ready\": dial tcp 10.0.0.8:8080: i/o timeout",
        "",
        None,
    );
    // The DNS proxy failing to resolve an application's hostname.
    t.agent(
        DNS_SERVER,
        lv("info", "dns"),
        "upstream failure: lookup orders.example.com on 10.0.0.2:53: no such host",
        "",
        None,
    );
    // Info lines with "error" in them.
    t.agent(
        ADS,
        lv("info", "ads"),
        "Push debounce stable[12] 1 for config ServiceEntry/vm-ns/orders: 100.5ms since last change, 100.6ms since last push, full=true",
        "errors=0",
        None,
    );
    t.agent(
        SYNTHETIC,
        lv("info", ""),
        "no error occurred while reloading; error count 0",
        "",
        None,
    );
    t.agent(
        OLD_EPOCH,
        lv("info", ""),
        "Epoch 0 exited normally",
        "",
        None,
    );
    t.agent(OLD_EPOCH, lv("info", ""), "Epoch 0 starting", "", None);
    t.agent(
        OLD_EPOCH,
        lv("warn", ""),
        "Epoch 0 aborted normally",
        "",
        None,
    );
    t.agent(
        AGENT,
        lv("info", ""),
        "CA Endpoint istiod.istio-system.svc:15012, provider Citadel",
        "",
        None,
    );
    t.agent(
        OPTIONS,
        lv("info", ""),
        "Proxy role",
        "ips=[10.0.0.8] type=sidecar id=vm1.vm-ns domain=vm-ns.svc.cluster.local",
        None,
    );
    t.agent(
        AGENT,
        lv("info", ""),
        "Starting default Istio SDS Server",
        "",
        None,
    );
    t.agent(
        AGENT,
        lv("info", ""),
        "Pilot SAN: [istiod.istio-system.svc]",
        "",
        None,
    );
    t.agent(
        XDS_PROXY,
        lv("info", "xdsproxy"),
        "Initializing with upstream address \"istiod.istio-system.svc:15012\" and cluster \"Kubernetes\"",
        "",
        None,
    );
    t.agent(
        SECRETCACHE,
        lv("info", "cache"),
        "returned workload certificate from cache",
        "ttl=23h59m59.920759559s",
        None,
    );
    t.agent(
        SYNTHETIC,
        lv("info", ""),
        "identity check: no identities configured for this proxy",
        "",
        None,
    );
    t.raw(
        ENVOY_MAIN,
        &envoy(
            "warning",
            "main",
            "there is no configured limit to the number of allowed active downstream connections. Configure a limit in `envoy.resource_monitors.downstream_connections` resource monitor.",
        ),
        None,
    );
    // Envoy's ADS stream to the agent's own socket before the agent listens.
    t.raw(
        ENVOY_ADS,
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed: 14, connection error: desc = \"transport: Error while dialing: dial unix ./etc/istio/proxy/XDS: connect: no such file or directory\"",
        ),
        None,
    );
    t.raw(
        ENVOY_MAIN,
        &envoy_default(
            "warning",
            "main",
            "initial fetch timed out for type.googleapis.com/envoy.config.cluster.v3.Cluster",
        ),
        None,
    );
    t.raw(SYNTHETIC, "", None);
    t.raw(SYNTHETIC, "\t\t\t", None);
    t
}
