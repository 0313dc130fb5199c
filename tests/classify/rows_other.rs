//! Rows of the classify table: iptables (the unit's journal), unknown errors, and
//! look-alikes that must classify to nothing.

use super::*;

pub fn add(t: &mut Table) {
    use Failure::*;
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
        "error in converting the wasm config to local: could not fetch Wasm binary: unexpected EOF. applying deny RBAC filter",
        "",
        f(UnknownError),
    );
    // pilot/cmd/pilot-agent/main.go logs the command's error.
    t.agent(
        OPTIONS,
        lv("error", ""),
        "failed to get proxy config: open /etc/istio/config/mesh: no such file or directory",
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
}
