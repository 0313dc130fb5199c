//! `health::classify`: a table of real istio.log / istio.err.log lines (agent text and
//! `--log_as_json` forms, Envoy's two formats) with what each must classify to, look-alikes
//! that must not match (or must match another kind), and the invariants of the rule table
//! and of `Failure`.

use std::collections::{BTreeSet, HashSet};

use vmagent::health::classify::{anchors, Class, Classifier, Stage, RULES};
use vmagent::health::Failure;

const TS: &str = "2024-08-15T09:51:42.705907Z";

/// One row: the line, what it must classify to, and where it comes from (for messages).
struct Row {
    line: String,
    want: Option<Class>,
    form: &'static str,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    /// An agent line in both forms: text (`<ts>\t<level>\t[<scope>\t]<msg>[\t<k=v ...>]`)
    /// and JSON (`--log_as_json`: keys level, time, scope, msg, then the k=v fields).
    fn agent(&mut self, level: &str, scope: &str, msg: &str, kv: &str, want: Option<Class>) {
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
        });
    }

    /// A line as it is (Envoy's istio.err.log, istio-iptables output).
    fn raw(&mut self, line: &str, want: Option<Class>) {
        self.rows.push(Row {
            line: line.to_string(),
            want,
            form: "raw",
        });
    }
}

fn f(k: Failure) -> Option<Class> {
    Some(Class::Failure(k))
}

fn p(s: Stage) -> Option<Class> {
    Some(Class::Progress(s))
}

const READY: Option<Class> = Some(Class::Ready);

/// Envoy in istio.err.log, Istio's format: `<ts>\t<level>\tenvoy <logger> <file:line>\t<msg>\tthread=N`.
fn envoy(level: &str, logger: &str, msg: &str) -> String {
    format!("{TS}\t{level}\tenvoy {logger} external/envoy/source/common/config/grpc_stream.h:152\t{msg}\tthread=14")
}

/// Envoy's own default format: `[<date> <time>][<pid>][<level>][<logger>] <msg>`.
fn envoy_default(level: &str, logger: &str, msg: &str) -> String {
    format!("[2024-08-15 09:51:42.705][12][{level}][{logger}] [source/server/server.cc:131] {msg}")
}

fn table() -> Table {
    use Failure::*;
    let mut t = Table::default();

    // --- Ready and progress (the healthy sequence) -----------------------------------
    t.agent("info", "", "Envoy proxy is ready", "", READY);
    t.agent(
        "info",
        "",
        "Starting proxy agent",
        "",
        p(Stage::AgentStarted),
    );
    // The real command line carries Envoy's log format, tabs included.
    t.agent(
        "info",
        "",
        "Envoy command: [-c etc/istio/proxy/envoy-rev.json --drain-time-s 45 --drain-strategy immediate --local-address-ip-version v4 --file-flush-interval-msec 1000 --disable-hot-restart --allow-unknown-static-fields --log-format %Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t -l warning --component-log-level misc:error]",
        "",
        p(Stage::EnvoyStarting),
    );
    t.agent(
        "info",
        "cache",
        "generated new workload certificate",
        "resourceName=default latency=97.791613ms ttl=23h59m59.202218004s",
        p(Stage::CertificateReceived),
    );
    t.agent(
        "info",
        "cache",
        "generated new workload certificate",
        "latency=145.0547ms ttl=23h59m59.8988344s",
        p(Stage::CertificateReceived),
    );
    // Mentions istiod and :15012 but is progress, not a failure.
    t.agent(
        "info",
        "xdsproxy",
        "connected to upstream XDS server: istiod.istio-system.svc:15012",
        "",
        p(Stage::XdsConnected),
    );
    t.agent(
        "info",
        "xdsproxy",
        "connected to upstream XDS server[1]: istiod.istio-system.svc:15012",
        "",
        p(Stage::XdsConnected),
    );

    // --- TokenRejected ----------------------------------------------------------------
    t.agent(
        "warn",
        "sds",
        "failed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unauthenticated desc = request authenticate failure",
        "",
        f(TokenRejected),
    );
    t.agent(
        "error",
        "cache",
        "resource:default request:4c3e1a2b-6f0d-4c55-9a7e-1d2f3a4b5c6d CSR failed with error: rpc error: code = Unauthenticated desc = request authenticate failure, retry in 800 millisec",
        "",
        f(TokenRejected),
    );
    t.agent(
        "warn",
        "xdsproxy",
        "upstream [1] terminated with unexpected error rpc error: code = Unauthenticated desc = authentication failure",
        "",
        f(TokenRejected),
    );
    t.raw(
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed since 41s ago: 16, request authenticate failure",
        ),
        f(TokenRejected),
    );

    // --- TokenMissing -----------------------------------------------------------------
    t.agent(
        "warn",
        "",
        "failed to fetch token from file: open /var/run/secrets/tokens/istio-token: no such file or directory",
        "",
        f(TokenMissing),
    );
    // Look-alike: "permission denied" on the token is a token problem, not ownership.
    t.agent(
        "warn",
        "",
        "failed to fetch token from file: open /var/run/secrets/tokens/istio-token: permission denied",
        "",
        f(TokenMissing),
    );
    // Another token path (JWT_POLICY / a Kubernetes-style path): still the token.
    t.agent(
        "warn",
        "",
        "failed to fetch token from file: open /var/run/secrets/kubernetes.io/serviceaccount/token: no such file or directory",
        "",
        f(TokenMissing),
    );
    t.agent(
        "error",
        "sds",
        "failed to read token: open /var/run/secrets/tokens/istio-token: no such file or directory",
        "",
        f(TokenMissing),
    );
    t.agent(
        "error",
        "sds",
        "failed to read token: open /var/run/secrets/tokens/istio-token: permission denied",
        "",
        f(TokenMissing),
    );

    // --- StaleIdentity (#35249) -------------------------------------------------------
    // Look-alike: the gRPC code PermissionDenied is an identity problem, not ownership.
    t.agent(
        "warn",
        "xdsproxy",
        "upstream [1] terminated with unexpected error rpc error: code = PermissionDenied desc = authorization failed: no identities ([spiffe://cluster.local/ns/old-ns/sa/old-sa]) matched vm-ns/vm-sa",
        "",
        f(StaleIdentity),
    );
    t.raw(
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed since 12s ago: 7, authorization failed: no identities ([spiffe://cluster.local/ns/old-ns/sa/old-sa]) matched vm-ns/vm-sa",
        ),
        f(StaleIdentity),
    );

    // --- CaMismatch -------------------------------------------------------------------
    // Look-alike: a failed certificate warm-up whose cause is the CA, not the network,
    // though the line names istiod.
    t.agent(
        "warn",
        "sds",
        "failed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority (possibly because of \\\"crypto/rsa: verification error\\\" while trying to verify candidate authority certificate \\\"cluster.local\\\")\"",
        "",
        f(CaMismatch),
    );
    t.agent(
        "error",
        "cache",
        "resource:default request:77a0 CSR failed with error: rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: x509: certificate signed by unknown authority\" (istiod.istio-system.svc:15012), retry in 1600 millisec",
        "",
        f(CaMismatch),
    );
    t.raw(
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed since 30s ago: 14, connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\"",
        ),
        f(CaMismatch),
    );
    // The xDS proxy's dial gives up with a timeout and names istiod, but the cause is the CA.
    t.agent(
        "error",
        "xdsproxy",
        "failed to connect to upstream istiod.istio-system.svc:15012: context deadline exceeded: connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\"",
        "",
        f(CaMismatch),
    );

    // --- IstiodUnreachable ------------------------------------------------------------
    t.agent(
        "warn",
        "sds",
        "failed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:15012: i/o timeout\"",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        "error",
        "cache",
        "resource:default request:9d1 CSR failed with error: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:15012: connect: connection refused\", retry in 3200 millisec",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        "warn",
        "sds",
        "failed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp: lookup istiod.istio-system.svc on 10.0.0.2:53: no such host\"",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        "warn",
        "",
        "Envoy proxy is NOT ready: config not received from XDS server (is Istiod running?): cds updates: 0 successful, 0 rejected; lds updates: 0 successful, 0 rejected",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        "info",
        "",
        "Envoy proxy is NOT ready: config not received from XDS server",
        "",
        f(IstiodUnreachable),
    );
    t.agent(
        "error",
        "xdsproxy",
        "failed to connect to upstream istiod.istio-system.svc:15012: context deadline exceeded",
        "",
        f(IstiodUnreachable),
    );
    t.raw(
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed since 64s ago: 14, connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:15012: i/o timeout\"",
        ),
        f(IstiodUnreachable),
    );

    // --- PermissionDenied -------------------------------------------------------------
    t.agent(
        "error",
        "cache",
        "failed to load key pair: open /etc/certs/key.pem: permission denied",
        "",
        f(PermissionDenied),
    );
    t.agent(
        "error",
        "",
        "failed to write bootstrap: open /etc/istio/proxy/envoy-rev.json: permission denied",
        "",
        f(PermissionDenied),
    );
    t.agent(
        "warn",
        "",
        "open /etc/certs/key.pem: permission denied",
        "",
        f(PermissionDenied),
    );

    // Look-alike: a permission error without a file path (a port bind) is not ownership.
    t.agent(
        "error",
        "",
        "failed to start status server: listen tcp 0.0.0.0:15021: bind: permission denied",
        "",
        f(UnknownError),
    );
    t.agent(
        "warn",
        "",
        "listen tcp 0.0.0.0:15021: bind: permission denied",
        "",
        None,
    );

    // --- EnvoyExited ------------------------------------------------------------------
    t.agent(
        "error",
        "",
        "Envoy exited with error: signal: killed",
        "",
        f(EnvoyExited),
    );
    t.agent(
        "error",
        "",
        "Epoch 0 exited with error: signal: killed",
        "",
        f(EnvoyExited),
    );
    t.agent(
        "error",
        "",
        "Epoch 3 exited with error: exit status 1",
        "",
        f(EnvoyExited),
    );
    t.agent(
        "warn",
        "",
        "Envoy may have been out of memory killed. Check memory usage and limits.",
        "",
        f(EnvoyExited),
    );
    // Look-alikes: something else exited, not Envoy.
    t.agent(
        "error",
        "",
        "dns proxy exited with error: listen udp 127.0.0.1:15053: bind: address already in use",
        "",
        f(UnknownError),
    );
    t.agent(
        "warn",
        "",
        "health checker exited with error: context canceled",
        "",
        None,
    );

    // --- iptables (istio-start.sh / istio-iptables) -----------------------------------
    t.raw("iptables: Chain already exists.", f(IptablesLeftovers));
    t.agent(
        "error",
        "",
        "Command error output: iptables: Chain already exists.",
        "",
        f(IptablesLeftovers),
    );
    t.raw(
        "iptables v1.8.7 (legacy): can't initialize iptables table `nat': Table does not exist (do you need to insmod?)",
        f(KernelModules),
    );
    t.raw(
        "ip6tables v1.8.7 (legacy): can't initialize ip6tables table `nat': Table does not exist (do you need to insmod?)",
        f(KernelModules),
    );
    t.raw(
        "iptables-restore: unable to initialize table 'nat'",
        f(KernelModules),
    );
    t.agent(
        "error",
        "",
        "Command error output: iptables v1.8.4 (legacy): can't initialize iptables table `filter': Table does not exist (do you need to insmod?)",
        "",
        f(KernelModules),
    );

    // --- UnknownError: error-level lines no rule knows --------------------------------
    t.agent(
        "error",
        "klog",
        "k8s.io/client-go: Failed to watch *v1.ConfigMap: unknown (get configmaps)",
        "",
        f(UnknownError),
    );
    t.agent(
        "error",
        "wasm",
        "failed to fetch Wasm module: unexpected EOF",
        "",
        f(UnknownError),
    );
    t.agent(
        "fatal",
        "",
        "failed to start the proxy agent: invalid proxy config",
        "",
        f(UnknownError),
    );
    t.raw(
        &envoy(
            "error",
            "config",
            "gRPC config for type.googleapis.com/envoy.config.listener.v3.Listener rejected: Error adding/updating listener(s) virtualInbound: duplicate listener",
        ),
        f(UnknownError),
    );
    t.raw(
        &envoy(
            "critical",
            "main",
            "error initializing configuration '/etc/istio/proxy/envoy-rev.json': Unable to parse JSON",
        ),
        f(UnknownError),
    );
    t.raw(
        &envoy_default(
            "critical",
            "main",
            "error initializing configuration '/etc/istio/proxy/envoy-rev.json': Unable to parse JSON",
        ),
        f(UnknownError),
    );
    t.raw(
        &envoy_default(
            "error",
            "config",
            "gRPC config stream closed: 13, internal error",
        ),
        f(UnknownError),
    );

    // --- Look-alikes that must classify to nothing ------------------------------------
    t.agent(
        "warn",
        "",
        "Envoy proxy is NOT ready: server is not live, current state is: PRE_INITIALIZING",
        "",
        None,
    );
    // An app health check, not istiod.
    t.agent(
        "info",
        "healthcheck",
        "failure threshold hit, marking as unhealthy: Get \"http://127.0.0.1:8000/healthz\": dial tcp 127.0.0.6:0->127.0.0.1:8000: connect: connection refused",
        "",
        None,
    );
    t.agent(
        "warn",
        "",
        "Probe failed: Get \"http://10.0.0.8:8080/ready\": dial tcp 10.0.0.8:8080: i/o timeout",
        "",
        None,
    );
    // The DNS proxy failing to resolve an application's hostname.
    t.agent(
        "info",
        "dns",
        "upstream failure: lookup orders.example.com on 10.0.0.2:53: no such host",
        "",
        None,
    );
    // Info lines with "error" in the message.
    t.agent(
        "info",
        "ads",
        "Push debounce stable[12] 1 for config ServiceEntry/vm-ns/orders: 100.5ms since last change, 100.6ms since last push, full=true",
        "errors=0",
        None,
    );
    t.agent(
        "info",
        "",
        "no error occurred while reloading; error count 0",
        "",
        None,
    );
    t.agent("info", "", "Epoch 0 exited normally", "", None);
    t.agent("info", "", "Epoch 0 starting", "", None);
    t.agent(
        "info",
        "",
        "CA Endpoint istiod.istio-system.svc:15012, provider Citadel",
        "",
        None,
    );
    t.agent(
        "info",
        "",
        "Proxy role",
        "ips=[10.0.0.8] type=sidecar id=vm1.vm-ns domain=vm-ns.svc.cluster.local",
        None,
    );
    t.agent(
        "info",
        "",
        "Workload SDS socket not found. Starting Istio SDS Server",
        "",
        None,
    );
    t.agent(
        "info",
        "cache",
        "returned workload certificate from cache",
        "ttl=23h59m59.920759559s",
        None,
    );
    // Warn lines with no rule.
    t.agent(
        "warn",
        "",
        "Envoy proxy is NOT ready: config received from XDS server, but was rejected: cds updates: 1 successful, 1 rejected; lds updates: 1 successful, 0 rejected",
        "",
        None,
    );
    t.agent(
        "warn",
        "sds",
        "certificate is about to expire, rotating",
        "",
        None,
    );
    t.agent("warn", "", "Epoch 0 aborted abnormally", "", None);
    t.agent(
        "info",
        "",
        "identity check: no identities configured for this proxy",
        "",
        None,
    );
    t.raw(
        &envoy(
            "warning",
            "main",
            "there is no configured limit to the number of allowed active downstream connections. Configure a limit in `envoy.resource_monitors.downstream_connections` resource monitor.",
        ),
        None,
    );
    t.raw(
        &envoy(
            "warning",
            "config",
            "StreamAggregatedResources gRPC config stream to xds-grpc closed: 14, connection error: desc = \"transport: Error while dialing: dial unix ./etc/istio/proxy/XDS: connect: no such file or directory\"",
        ),
        None,
    );
    t.raw(
        &envoy_default(
            "warning",
            "main",
            "initial fetch timed out for type.googleapis.com/envoy.config.cluster.v3.Cluster",
        ),
        None,
    );
    t.raw(
        "Perhaps iptables or your kernel needs to be upgraded.",
        None,
    );
    t.raw("", None);
    t.raw("\t\t\t", None);
    t
}

fn show_class(c: Option<Class>) -> String {
    match c {
        None => "None".into(),
        Some(c) => format!("{c:?}"),
    }
}

#[test]
fn table_of_real_lines() {
    let c = Classifier::new();
    let t = table();
    let mut bad = Vec::new();
    for (i, r) in t.rows.iter().enumerate() {
        let got = c.classify(r.line.as_bytes());
        if got != r.want {
            bad.push(format!(
                "row {i} ({}): want {}, got {}\n    line: {:?}",
                r.form,
                show_class(r.want),
                show_class(got),
                r.line
            ));
        }
        // The fast path agrees: a line that classifies is a candidate.
        if got.is_some() {
            assert!(
                c.is_candidate(r.line.as_bytes()),
                "row {i}: classified but not a candidate: {:?}",
                r.line
            );
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} rows misclassified:\n{}",
        bad.len(),
        t.rows.len(),
        bad.join("\n")
    );
}

#[test]
fn default_classifier_is_the_same_table() {
    let a = Classifier::new();
    let b = Classifier::default();
    for r in table().rows {
        assert_eq!(
            a.classify(r.line.as_bytes()),
            b.classify(r.line.as_bytes()),
            "{:?}",
            r.line
        );
    }
}

/// Every kind a log line can show has a row; the three that come from systemd or the
/// wait's timeout have none and no rule either.
#[test]
fn table_covers_every_log_failure_stage_and_ready() {
    let from_elsewhere = [
        Failure::NotReady,
        Failure::CrashLoop,
        Failure::ServiceFailed,
        Failure::NotInstalled,
    ];
    let t = table();
    let wanted: Vec<Class> = t.rows.iter().filter_map(|r| r.want).collect();
    for k in Failure::ALL {
        if from_elsewhere.contains(&k) {
            assert!(
                !RULES.iter().any(|r| r.class == Class::Failure(k)),
                "{k:?} comes from systemd / the timeout, yet a log rule yields it"
            );
            continue;
        }
        assert!(
            wanted.contains(&Class::Failure(k)),
            "no table row expects {k:?}"
        );
        assert!(
            RULES.iter().any(|r| r.class == Class::Failure(k)),
            "no rule yields {k:?}"
        );
    }
    for s in [
        Stage::AgentStarted,
        Stage::EnvoyStarting,
        Stage::CertificateReceived,
        Stage::XdsConnected,
    ] {
        assert!(
            wanted.contains(&Class::Progress(s)),
            "no table row expects {s:?}"
        );
        assert!(!s.describe().is_empty());
    }
    assert!(wanted.contains(&Class::Ready));
    // Every class a rule can yield is exercised by the table.
    for r in RULES {
        assert!(
            wanted.contains(&r.class),
            "rule {:?} yields {:?}, which no row expects",
            r.any,
            r.class
        );
    }
}

#[test]
fn failure_kinds_have_unique_names_codes_and_text() {
    let mut names = HashSet::new();
    let mut codes = HashSet::new();
    let mut kinds = HashSet::new();
    for k in Failure::ALL {
        assert!(kinds.insert(k), "{k:?} twice in ALL");
        assert!(!k.summary().trim().is_empty(), "{k:?}: empty summary");
        assert!(!k.hint().trim().is_empty(), "{k:?}: empty hint");
        let code = k.exit_code();
        assert!((10..=23).contains(&code), "{k:?}: exit code {code}");
        assert!(codes.insert(code), "{k:?}: exit code {code} used twice");
        let name = k.name();
        assert!(names.insert(name), "{k:?}: name {name} used twice");
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "{k:?}: name {name:?} is not kebab-case"
        );
        // The JSON form (status file, --json) is the same name.
        assert_eq!(
            serde_json::to_value(k).unwrap(),
            serde_json::Value::String(name.into()),
            "{k:?}"
        );
    }
    assert_eq!(codes.len(), 14);
    assert_eq!(
        codes,
        (10..=23).collect::<HashSet<u8>>(),
        "exit codes are 10..=23, each once"
    );
}

#[test]
fn anchors_are_the_rules_literals_without_duplicates() {
    let a = anchors();
    let set: BTreeSet<&str> = a.iter().copied().collect();
    assert_eq!(set.len(), a.len(), "duplicate anchors: {a:?}");
    let from_rules: BTreeSet<&str> = RULES.iter().flat_map(|r| r.any.iter().copied()).collect();
    assert_eq!(set, from_rules);
    for r in RULES {
        assert!(!r.any.is_empty(), "rule for {:?} has no anchor", r.class);
        for s in r.any.iter().chain(r.with).chain(r.not) {
            assert!(!s.is_empty(), "empty literal in rule for {:?}", r.class);
        }
    }
}

/// Every anchor classifies something: a line of just the anchor does, unless the rule
/// has a `with` condition, in which case the anchor plus that context does. And it yields
/// its own rule's class (no anchor is shadowed by an earlier rule).
#[test]
fn every_anchor_classifies_something() {
    let c = Classifier::new();
    let mut bad = Vec::new();
    for a in anchors() {
        let alone = c.classify(a.as_bytes());
        let rules: Vec<_> = RULES.iter().filter(|r| r.any.contains(&a)).collect();
        assert!(!rules.is_empty(), "anchor {a:?} belongs to no rule");
        if alone.is_none() {
            // Rejected only by a `with` condition: some rule with this anchor has one.
            if !rules.iter().any(|r| !r.with.is_empty()) {
                bad.push(format!(
                    "anchor {a:?} alone classifies to None, and its rules have no `with`"
                ));
            }
        }
        for r in rules {
            let line = match r.with.first() {
                None => a.to_string(),
                Some(w) => format!("{a} {w}"),
            };
            let got = c.classify(line.as_bytes());
            if got != Some(r.class) {
                bad.push(format!(
                    "anchor {a:?} (line {line:?}): want {:?}, got {}",
                    r.class,
                    show_class(got)
                ));
            }
            assert!(c.is_candidate(line.as_bytes()));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Each `with` literal alone is not enough: it must come with an anchor.
#[test]
fn with_context_alone_classifies_nothing_and_is_needed() {
    let c = Classifier::new();
    for r in RULES {
        for w in r.with {
            // Unless the context literal is itself some rule's anchor.
            if anchors().contains(w) {
                continue;
            }
            assert_eq!(
                c.classify(format!("{TS}\tinfo\t{w}").as_bytes()),
                None,
                "context {w:?} alone"
            );
        }
        if !r.with.is_empty() {
            for a in r.any {
                // The anchor alone at info level: the rule does not fire.
                let line = format!("{TS}\tinfo\t{a}");
                assert_ne!(
                    c.classify(line.as_bytes()),
                    Some(r.class),
                    "anchor {a:?} fired without any of {:?}",
                    r.with
                );
            }
        }
    }
}

#[test]
fn lines_without_anchor_are_not_candidates() {
    let c = Classifier::new();
    for l in [
        "",
        "2024-08-15T09:51:42.705907Z\tinfo\tads\tADS: new connection for node:sidecar~10.0.0.8~vm1.vm-ns~vm-ns.svc.cluster.local-1",
        "2024-08-15T09:51:42.705907Z\twarn\tProbe failure",
        "{\"level\":\"info\",\"msg\":\"ok\"}",
    ] {
        assert!(!c.is_candidate(l.as_bytes()), "{l:?}");
        assert_eq!(c.classify(l.as_bytes()), None, "{l:?}");
    }
}

#[test]
fn non_utf8_and_huge_lines_do_not_panic() {
    let c = Classifier::new();
    let mut l = b"\xff\xfe 2024\terror\t".to_vec();
    l.extend_from_slice(&[0x80; 1000]);
    assert_eq!(c.classify(&l), Some(Class::Failure(Failure::UnknownError)));
    let mut big = vec![b'x'; 1 << 20];
    big.extend_from_slice(b" open /etc/certs/key.pem: permission denied");
    assert_eq!(
        c.classify(&big),
        Some(Class::Failure(Failure::PermissionDenied))
    );
}

// ---------------------------------------------------------------------------------------
// Bugs found (src/health/classify.rs); the tests stay, ignored until fixed.

/// Since Istio 1.22 delta xDS is the default, and the agent then logs
/// `connected to delta upstream XDS server[N]: <addr>` (pkg/istio-agent/xds_proxy_delta.go)
/// instead of `connected to upstream XDS server: <addr>`; the rule's literal does not
/// occur in it, so the XdsConnected stage is never seen on current Istio.
#[test]
fn delta_xds_connected_line_is_progress() {
    let c = Classifier::new();
    let mut t = Table::default();
    t.agent(
        "info",
        "xdsproxy",
        "connected to delta upstream XDS server[1]: istiod.istio-system.svc:15012",
        "id=1",
        p(Stage::XdsConnected),
    );
    t.agent(
        "info",
        "xdsproxy",
        "connected to delta upstream XDS server: istiod.istio-system.svc:15012",
        "",
        p(Stage::XdsConnected),
    );
    for r in t.rows {
        assert_eq!(
            c.classify(r.line.as_bytes()),
            r.want,
            "({}) {:?}",
            r.form,
            r.line
        );
    }
}
