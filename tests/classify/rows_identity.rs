//! Rows of the classify table: ready, progress, benign lines, and the identity
//! failures (token, WorkloadGroup, stale identity, SAN, CA).

use super::*;

pub fn add(t: &mut Table) {
    use Failure::*;
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
}
