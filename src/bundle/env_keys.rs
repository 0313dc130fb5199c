//! What cluster.env's keys mean to Istio: which keys are known (no warning), and the
//! values that would break the proxy although bash accepts them.
//!
//! Every list names the istio/istio source it was read from, so it can be re-checked
//! when Istio changes.

use serde_json::Value;

/// Keys istioctl writes itself (istioctl/pkg/workload/workload.go: `createClusterEnv`
/// overrides and the proxyMetadata entries of `createMeshConfig`).
const ISTIOCTL: &[&str] = &[
    "CANONICAL_SERVICE",
    "CANONICAL_REVISION",
    "POD_NAMESPACE",
    "SERVICE_ACCOUNT",
    "TRUST_DOMAIN",
    "ISTIO_INBOUND_PORTS",
    "ISTIO_LOCAL_EXCLUDE_PORTS",
    "ISTIO_NAMESPACE",
    "ISTIO_SERVICE",
    "ISTIO_SERVICE_CIDR",
    "CA_ADDR",
    "ISTIO_SVC_IP",
    // Written with --externalIP.
    "REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION",
];

/// Keys the package documents in sidecar.env and istio-start.sh reads
/// (tools/packaging/common/sidecar.env, tools/packaging/common/istio-start.sh), plus the
/// legacy mesh-expansion `ISTIO_CP_AUTH`.
const PACKAGE: &[&str] = &[
    "ISTIO_INBOUND_INTERCEPTION_MODE",
    "ISTIO_INBOUND_TPROXY_MARK",
    "ISTIO_INBOUND_TPROXY_ROUTE_TABLE",
    "ISTIO_INBOUND_EXCLUDE_PORTS",
    "ISTIO_PILOT_PORT",
    "ISTIO_CP_AUTH",
    "ENVOY_PORT",
    "ENVOY_USER",
    "ISTIO_AGENT_FLAGS",
    "ISTIO_LOG_DIR",
    "ISTIO_BIN_BASE",
    "ISTIO_CFG",
    "ISTIO_CUSTOM_IP_TABLES",
    "PROV_CERT",
    "OUTPUT_CERTS",
    "ISTIO_SYSTEM_NAMESPACE",
    "PILOT_ADDRESS",
    "EXEC_USER",
    "POD_NAME",
    "PROXY_CONFIG",
];

/// Environment pilot-agent and its `istio-iptables` read (env.Register calls under
/// pilot/cmd/pilot-agent, pkg/istio-agent, security/pkg, pkg/bootstrap, pkg/dns,
/// pkg/envoy; tools/istio-iptables/pkg/cmd and tools/common/config).
const AGENT: &[&str] = &[
    "CA_PROVIDER",
    "CA_ROOT_CA",
    "CLOUD_PLATFORM",
    "CREDENTIAL_FETCHER_TYPE",
    "CREDENTIAL_IDENTITY_PROVIDER",
    "DISABLE_ENVOY",
    "DNS_FORWARD_PARALLEL",
    "DNS_FORWARD_TIMEOUT",
    "DNS_PROXY_ADDR",
    "ECC_CURVE",
    "ECC_SIGNATURE_ALGORITHM",
    "ENABLE_PROBE_KEEPALIVE_CONNECTIONS",
    "ENVOY_PROMETHEUS_PORT",
    "ENVOY_STATUS_PORT",
    "EXIT_ON_ZERO_ACTIVE_CONNECTIONS",
    "FILE_DEBOUNCE_DURATION",
    "FILE_MOUNTED_CERTS",
    "GRPC_XDS_BOOTSTRAP",
    "INSTANCE_IP",
    "ISTIOD_SAN",
    "ISTIO_BOOTSTRAP",
    "ISTIO_BOOTSTRAP_OVERRIDE",
    "ISTIO_ENABLE_HTTP2_PROBING",
    "ISTIO_ENVOY_ENABLE_CORE_DUMP",
    "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
    "ISTIO_OUTBOUND_OWNER_GROUPS",
    "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",
    "ISTIO_OUTBOUND_PORTS",
    "ISTIO_SERVICE_EXCLUDE_CIDR",
    "ISTIO_EXCLUDE_INTERFACES",
    "ISTIO_DUAL_STACK",
    "ISTIO_PROMETHEUS_ANNOTATIONS",
    "JWT_POLICY",
    "MINIMUM_DRAIN_DURATION",
    "PEER_METADATA_DISCOVERY",
    "PILOT_CERT_PROVIDER",
    "PKCS8_KEY",
    "PROXY_CONFIG_XDS_AGENT",
    "SECRET_GRACE_PERIOD_RATIO",
    "SECRET_GRACE_PERIOD_RATIO_JITTER",
    "SECRET_TTL",
    "TOKEN_AUDIENCES",
    "WASM_HTTP_REQUEST_MAX_RETRIES",
    "WASM_HTTP_REQUEST_TIMEOUT",
    "WASM_INSECURE_REGISTRIES",
    "WASM_MODULE_EXPIRY",
    "WASM_PURGE_INTERVAL",
    "WORKLOAD_RSA_KEY_SIZE",
    "XDS_AUTH_PLAINTEXT",
    "XDS_AUTH_PROVIDER",
    "XDS_ROOT_CA",
];

/// Prefixes pilot-agent passes through as node metadata (pkg/bootstrap/config.go:
/// `IstioMetaPrefix`, `IstioMetaJSONPrefix`): any such key is meaningful.
const PREFIXES: &[&str] = &["ISTIO_META_", "ISTIO_METAJSON_"];

/// Whether Istio reads `key` (istioctl, the package's start script, pilot-agent).
pub fn is_known(key: &str) -> bool {
    ISTIOCTL.contains(&key)
        || PACKAGE.contains(&key)
        || AGENT.contains(&key)
        || PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Node metadata pilot-agent decodes as a boolean string (pkg/model/proxy.go:
/// `StringBool` fields, parsed with Go's strconv.ParseBool): any other value fails the
/// bootstrap.
const META_BOOLS: &[&str] = &[
    "ISTIO_META_DNS_CAPTURE",
    "ISTIO_META_DNS_AUTO_ALLOCATE",
    "ISTIO_META_ENABLE_HBONE",
    "ISTIO_META_DISABLE_HBONE_SEND",
    "ISTIO_META_EXIT_ON_ZERO_ACTIVE_CONNECTIONS",
    "ISTIO_META_ENABLE_SELF_DISCOVERY",
];

/// Go's strconv.ParseBool accepts exactly these.
const GO_BOOLS: &[&str] = &[
    "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False",
];

/// Checks a value that bash accepts but pilot-agent would choke on; the error says how
/// to fix it. Keys not listed here take any literal value.
pub fn check_value(key: &str, value: &str) -> Result<(), String> {
    match key {
        "ISTIO_META_POD_PORTS" => check_pod_ports(value),
        "ISTIO_METAJSON_LABELS" => check_labels(value),
        k if k.starts_with("ISTIO_METAJSON_") => match serde_json::from_str::<Value>(value) {
            Ok(Value::Object(_)) => Ok(()),
            _ => Err(format!(
                "{k} must be a JSON object (pilot-agent merges it into the node metadata and drops anything else)"
            )),
        },
        k if META_BOOLS.contains(&k) => {
            if value.is_empty() || GO_BOOLS.contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "{k}='{value}' is not a boolean pilot-agent reads (true or false); its bootstrap would fail"
                ))
            }
        }
        "OUTPUT_CERTS" | "PROV_CERT" => check_cert_dir(key, value),
        _ => Ok(()),
    }
}

/// `ISTIO_META_POD_PORTS`: a JSON list of `{"name": .., "containerPort": N}` as
/// istioctl's `marshalWorkloadEntryPodPorts` writes it. pilot-agent reads it through
/// `PodPortList.UnmarshalJSON` (pkg/model/proxy.go); a list encoded twice (a JSON
/// string holding the list) or an object (istioctl 1.8 marshalled the ports map) makes
/// the bootstrap fail.
fn check_pod_ports(value: &str) -> Result<(), String> {
    let wrong = |why: &str, fixed: Option<String>| {
        let fix = match fixed {
            Some(f) => format!("; write ISTIO_META_POD_PORTS={}", shell_quote(&f)),
            None => "; write a list like '[{\"name\":\"http\",\"containerPort\":8080}]'".into(),
        };
        Err(format!(
            "ISTIO_META_POD_PORTS {why}: pilot-agent cannot build its bootstrap from it{fix}"
        ))
    };
    if value.is_empty() {
        return Ok(());
    }
    let parsed: Value = match serde_json::from_str(value) {
        Ok(v) => v,
        Err(_) => return wrong("is not JSON", None),
    };
    match parsed {
        Value::Null => Ok(()),
        Value::Array(items) => match items.iter().position(|i| !is_pod_port(i)) {
            None => Ok(()),
            Some(n) => wrong(
                &format!(
                    "item {} is not {{\"name\": string, \"containerPort\": 1-65535}}",
                    n + 1
                ),
                None,
            ),
        },
        Value::String(inner) => {
            let fixed = match serde_json::from_str::<Value>(&inner) {
                Ok(Value::Array(items)) if items.iter().all(is_pod_port) => Some(inner),
                _ => None,
            };
            wrong("is JSON-encoded twice (a string holding the list)", fixed)
        }
        Value::Object(map) => {
            let list: Option<Vec<Value>> = map
                .iter()
                .map(|(name, port)| {
                    let p = port.as_u64().filter(|p| (1..=65535).contains(p))?;
                    Some(serde_json::json!({"name": name, "containerPort": p}))
                })
                .collect();
            let fixed = list.and_then(|l| serde_json::to_string(&l).ok());
            wrong(
                "is a JSON object (the form istioctl 1.8 wrote), not a list",
                fixed,
            )
        }
        _ => wrong("is not a JSON list", None),
    }
}

fn is_pod_port(v: &Value) -> bool {
    let Value::Object(m) = v else { return false };
    let port_ok = m
        .get("containerPort")
        .and_then(Value::as_u64)
        .is_some_and(|p| (1..=65535).contains(&p));
    let strings_ok = ["name", "protocol"]
        .iter()
        .all(|k| m.get(*k).is_none_or(Value::is_string));
    port_ok && strings_ok
}

/// `ISTIO_METAJSON_LABELS`: pilot-agent decodes it into a string map
/// (pkg/bootstrap/config.go `jsonStringToMap`); anything else is dropped with a warning
/// in istio.log and the workload loses its labels (and so its policies).
fn check_labels(value: &str) -> Result<(), String> {
    match serde_json::from_str::<Value>(value) {
        Ok(Value::Object(m)) if m.values().all(Value::is_string) => Ok(()),
        Ok(Value::Object(_)) => Err(
            "ISTIO_METAJSON_LABELS values must all be strings (e.g. '{\"app\":\"web\",\"version\":\"v1\"}'); pilot-agent drops the labels otherwise".into(),
        ),
        _ => Err(
            "ISTIO_METAJSON_LABELS must be a JSON object of labels (e.g. '{\"app\":\"web\"}'); pilot-agent drops it otherwise and the workload has no labels".into(),
        ),
    }
}

/// Directories a certificate directory must never be: vmagent creates it and checks
/// that istio-proxy can write it.
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/var/lib",
    "/var/run",
    "/var/tmp",
    "/usr/local",
    "/usr/local/bin",
    "/usr/bin",
    "/usr/lib",
    "/etc/ssl",
    "/etc/ssl/certs",
    "/etc/istio",
    "/var/lib/istio",
    "/var/lib/istio/envoy",
    "/var/log",
];

fn check_cert_dir(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(()); // no directory: a warning elsewhere says what that means
    }
    let bad = |why: &str| {
        Err(format!(
            "{key}='{value}' {why}; use a directory of its own such as /etc/certs (the default)"
        ))
    };
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c))
    {
        return bad("is not a plain path");
    }
    match cert_dir_path(value) {
        None => bad("climbs out with '..'"),
        Some(p) if SYSTEM_DIRS.contains(&p.as_str()) => {
            bad("is a system directory the proxy must not own")
        }
        Some(_) => Ok(()),
    }
}

/// The absolute directory a PROV_CERT/OUTPUT_CERTS value names. istio-start.sh runs
/// in `/` (systemd's default working directory), so `./etc/certs` (its default) and
/// `etc/certs` mean `/etc/certs`. `None` for a path with `..`.
pub fn cert_dir_path(value: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in value.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// A value quoted as istioctl quotes it (pkg/util/shellescape): single quotes, with
/// `'"'"'` for a quote inside.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_cover_istio_sources() {
        for k in [
            "REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION",
            "SECRET_TTL",
            "ISTIO_META_DNS_AUTO_ALLOCATE",
            "ISTIO_CUSTOM_IP_TABLES",
            "OUTPUT_CERTS",
            "ISTIO_AGENT_FLAGS",
            "ISTIO_META_ANYTHING",
        ] {
            assert!(is_known(k), "{k}");
        }
        assert!(!is_known("MY_APP_SETTING"));
    }

    #[test]
    fn pod_ports() {
        let good =
            r#"[{"name":"http","containerPort":8080},{"containerPort":9090,"protocol":"TCP"}]"#;
        assert!(check_value("ISTIO_META_POD_PORTS", good).is_ok());
        assert!(check_value("ISTIO_META_POD_PORTS", "null").is_ok());
        let twice = serde_json::to_string(r#"[{"name":"http","containerPort":8080}]"#).unwrap();
        let e = check_value("ISTIO_META_POD_PORTS", &twice).unwrap_err();
        assert!(
            e.contains("twice")
                && e.contains(r#"ISTIO_META_POD_PORTS='[{"name":"http","containerPort":8080}]'"#),
            "{e}"
        );
        let e = check_value("ISTIO_META_POD_PORTS", r#"{"http":8080}"#).unwrap_err();
        assert!(
            e.contains(r#"'[{"containerPort":8080,"name":"http"}]'"#),
            "{e}"
        );
        for bad in [
            "[1]",
            r#"[{"name":"x"}]"#,
            "not json",
            r#"[{"containerPort":70000}]"#,
        ] {
            assert!(check_value("ISTIO_META_POD_PORTS", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_and_bools() {
        assert!(check_value("ISTIO_METAJSON_LABELS", r#"{"app":"a"}"#).is_ok());
        assert!(check_value("ISTIO_METAJSON_LABELS", r#"{"n":1}"#).is_err());
        assert!(check_value("ISTIO_METAJSON_LABELS", "app=a").is_err());
        assert!(check_value("ISTIO_METAJSON_ANNOTATIONS", "[]").is_err());
        assert!(check_value("ISTIO_META_DNS_CAPTURE", "true").is_ok());
        assert!(check_value("ISTIO_META_DNS_CAPTURE", "yes").is_err());
    }

    #[test]
    fn cert_dirs() {
        assert_eq!(cert_dir_path("./etc/certs").as_deref(), Some("/etc/certs"));
        assert_eq!(cert_dir_path("etc/certs/").as_deref(), Some("/etc/certs"));
        assert_eq!(cert_dir_path("/a/../b"), None);
        assert!(check_value("OUTPUT_CERTS", "/var/run/secrets/istio").is_ok());
        assert!(check_value("OUTPUT_CERTS", "").is_ok());
        for bad in ["/etc", "./", "/x/../etc", "/a b", "/var/lib/istio/envoy"] {
            assert!(check_value("OUTPUT_CERTS", bad).is_err(), "{bad}");
        }
    }
}
