//! Rows of the classify table: istiod unreachable, xDS rejections, port conflicts,
//! permissions, Envoy exits.

use super::*;

pub fn add(t: &mut Table) {
    use Failure::*;
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
        "pkg/istio-agent/agent.go (pkg/bootstrap/instance.go's CreateFile; pilot/cmd/pilot-agent/main.go logs it)",
        lv("error", ""),
        "failed to generate bootstrap config: open etc/istio/proxy/envoy-rev.json: permission denied",
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
}
