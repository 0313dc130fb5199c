//! Every form a real istioctl writes (and the harmless forms people write by hand) is
//! accepted: bundles built here from what istio/istio's own code writes, applied into a
//! temporary root with real files.
//!
//! Sources, istio/istio:
//! - istioctl/pkg/workload/workload.go: `createClusterEnv` (overrides: CA_ADDR for a
//!   revision, ISTIO_SVC_IP, REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION with
//!   --externalIP), `createMeshConfig` (proxyMetadata, ISTIO_META_POD_PORTS from
//!   `marshalWorkloadEntryPodPorts`, ISTIO_META_AUTO_REGISTER_GROUP with --autoregister,
//!   readinessProbe), `createHosts` (an EMPTY hosts file when no gateway IP is found),
//!   `mapToString` + pkg/util/shellescape (quoting, `'"'"'` for a quote);
//! - istioctl/pkg/workload/testdata/vmconfig{/ipv4,/ipv6,-nil-proxy-metadata}: the golden
//!   outputs whose shapes the bundles below reproduce;
//! - istioctl/cmd/workload.go at tag 1.8.0: mesh.yaml was the bare ProxyConfig;
//! - tools/packaging/common/sidecar.env and istio-start.sh: the keys people add by hand.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;

/// cluster.env lines as istioctl writes them: `KEY=<shellescaped>`, sorted.
fn cluster_env(pairs: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

/// pkg/util/shellescape.Quote: `''` for empty, the value bare when it only holds
/// `\w@%+=:,./-` (its regexp, as written, treats `\\w` as backslash and `w`), else
/// single quotes with `'"'"'` inside.
fn quote(v: &str) -> String {
    if v.is_empty() {
        return "''".into();
    }
    if v.chars().all(|c| "\\w@%+=:,./-".contains(c)) {
        return v.into();
    }
    format!("'{}'", v.replace('\'', "'\"'\"'"))
}

/// The proxyMetadata istioctl copies into both files (workload.go createMeshConfig).
fn metadata(ns: &str, extra: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
    let mut md: Vec<(String, String)> = [
        ("CANONICAL_REVISION", "latest"),
        ("CANONICAL_SERVICE", "foo"),
        ("ISTIO_META_CLUSTER_ID", "Kubernetes"),
        ("ISTIO_META_DNS_CAPTURE", "true"),
        ("ISTIO_META_MESH_ID", ""),
        ("ISTIO_META_NETWORK", ""),
        ("ISTIO_META_WORKLOAD_NAME", "foo"),
        (
            "ISTIO_METAJSON_LABELS",
            r#"{"service.istio.io/canonical-name":"foo","service.istio.io/canonical-revision":"latest"}"#,
        ),
        ("SERVICE_ACCOUNT", "vm-serviceaccount"),
        ("TRUST_DOMAIN", ""),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    md.push(("POD_NAMESPACE".into(), ns.into()));
    md
}

fn mesh_yaml(discovery: Option<&str>, md: &[(String, String)]) -> String {
    let mut s = String::from("defaultConfig:\n");
    if let Some(d) = discovery {
        s.push_str(&format!("  discoveryAddress: {d}\n"));
    }
    s.push_str("  proxyMetadata:\n");
    for (k, v) in md {
        s.push_str(&format!("    {k}: {}\n", serde_json::to_string(v).unwrap()));
    }
    s.push_str("  readinessProbe:\n    httpGet:\n      port: 8080\n");
    s
}

/// A whole istioctl output: overrides on top of the metadata, as createClusterEnv does.
fn istioctl_bundle(
    revision: Option<&str>,
    overrides: &[(&str, &str)],
    extra_md: &[(&'static str, &'static str)],
    hosts: &str,
) -> Spec {
    let md = metadata("bar", extra_md);
    let istiod = match revision {
        Some(r) => format!("istiod-{r}.istio-system.svc:15012"),
        None => "istiod.istio-system.svc:15012".into(),
    };
    let mut env: Vec<(&str, &str)> = md.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(&[
        ("ISTIO_INBOUND_PORTS", "*"),
        ("ISTIO_LOCAL_EXCLUDE_PORTS", "22,15090,15021,15020"),
        ("ISTIO_NAMESPACE", "bar"),
        ("ISTIO_SERVICE", "foo.bar"),
        ("ISTIO_SERVICE_CIDR", "*"),
    ]);
    if revision.is_some() {
        env.push(("CA_ADDR", &istiod));
    }
    env.extend_from_slice(overrides);
    Spec::example()
        .set("cluster.env", cluster_env(&env))
        .set(
            "mesh.yaml",
            mesh_yaml(revision.map(|_| istiod.as_str()), &md),
        )
        .set(
            "istio-token",
            token_for("system:serviceaccount:bar:vm-serviceaccount"),
        )
        .set("hosts", hosts)
}

struct Applied {
    root: TestRoot,
    stderr: String,
}

fn apply_ok(name: &str, spec: &Spec) -> Applied {
    let work = tempfile::tempdir().unwrap();
    let bundle = spec.write_tar(work.path());
    let root = TestRoot::new();
    let out = root.apply(&bundle, &[]).get_output().clone();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{name}: a real istioctl form was refused: {stderr}"
    );
    let check = vmagent().arg("check").arg(&bundle).output().unwrap();
    assert!(check.status.success(), "{name}: check refused it");
    Applied { root, stderr }
}

fn no_unknown_key_warning(name: &str, a: &Applied) {
    assert!(
        !a.stderr.contains("is not one Istio reads"),
        "{name}: false warning: {}",
        a.stderr
    );
}

fn managed_block(a: &Applied) -> Vec<String> {
    let hosts = fs::read_to_string(a.root.at("/etc/hosts")).unwrap();
    hosts
        .lines()
        .skip_while(|l| !l.starts_with("# BEGIN vmagent"))
        .skip(1)
        .take_while(|l| !l.starts_with("# END vmagent"))
        .map(String::from)
        .collect()
}

#[test]
fn revisioned_ipv4_golden_shape() {
    // testdata/vmconfig/ipv4: revision rev-1, CA_ADDR, proxy config annotation keys.
    let spec = istioctl_bundle(
        Some("rev-1"),
        &[("ISTIO_SVC_IP", "10.10.10.10")],
        &[
            ("CLUSTER_MESH_CONFIG_VALUE", "foo"),
            ("PROXY_CONFIG_ANNOT_VALUE", "bar"),
        ],
        "10.10.10.11 istiod-rev-1.istio-system.svc\n",
    );
    let a = apply_ok("ipv4", &spec);
    no_unknown_key_warning("ipv4", &a);
    assert_eq!(
        managed_block(&a),
        ["10.10.10.11 istiod-rev-1.istio-system.svc"]
    );
}

#[test]
fn revisioned_ipv6_golden_shape() {
    let spec = istioctl_bundle(
        Some("rev-1"),
        &[("ISTIO_SVC_IP", "fd00:10:96::1")],
        &[],
        "fd00:10:96::2 istiod-rev-1.istio-system.svc\n",
    );
    let a = apply_ok("ipv6", &spec);
    no_unknown_key_warning("ipv6", &a);
    assert_eq!(
        managed_block(&a),
        ["fd00:10:96::2 istiod-rev-1.istio-system.svc"]
    );
}

#[test]
fn empty_hosts_is_accepted_with_a_warning_and_an_empty_block() {
    // testdata/vmconfig-nil-proxy-metadata/hosts.golden is empty: createHosts only
    // warns when it finds no gateway IP.
    let spec = istioctl_bundle(None, &[("ISTIO_SVC_IP", "10.10.10.10")], &[], "");
    let a = apply_ok("empty hosts", &spec);
    assert!(
        a.stderr.contains("bundle member 'hosts' has no entries")
            && a.stderr.contains("resolve through DNS")
            && a.stderr.contains("--ingressIP"),
        "{}",
        a.stderr
    );
    assert!(managed_block(&a).is_empty());
    let hosts = fs::read_to_string(a.root.at("/etc/hosts")).unwrap();
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"));
    // Re-applying the same bundle changes nothing.
    let again = a
        .root
        .apply(&spec.write_tar(a.root.path()), &[])
        .get_output()
        .clone();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("up to date"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn external_ip_autoregister_and_pod_ports() {
    // --externalIP adds REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION; --autoregister the
    // group; WorkloadGroup ports become ISTIO_META_POD_PORTS (a JSON list, sorted by name).
    let spec = istioctl_bundle(
        None,
        &[
            ("ISTIO_SVC_IP", "203.0.113.7"),
            ("REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION", "true"),
        ],
        &[
            ("ISTIO_META_AUTO_REGISTER_GROUP", "foo"),
            (
                "ISTIO_META_POD_PORTS",
                r#"[{"name":"grpc","containerPort":9090,"protocol":""},{"name":"http","containerPort":8080,"protocol":""}]"#,
            ),
        ],
        "192.0.2.10 istiod.istio-system.svc\n",
    );
    let a = apply_ok("externalIP", &spec);
    no_unknown_key_warning("externalIP", &a);
}

#[test]
fn quote_escape_and_empty_values() {
    let spec = istioctl_bundle(
        None,
        &[("ISTIO_META_NOTE", "it's"), ("IDENTITY_PATH_PREFIX", "")],
        &[],
        "192.0.2.10 istiod.istio-system.svc\n",
    );
    let env = spec
        .items
        .iter()
        .find_map(|(n, i)| match i {
            Item::File(d, _) if n == "cluster.env" => Some(String::from_utf8(d.clone()).unwrap()),
            _ => None,
        })
        .unwrap();
    assert!(env.contains(r#"ISTIO_META_NOTE='it'"'"'s'"#), "{env}");
    apply_ok("quote", &spec);
}

#[test]
fn istioctl_1_8_mesh_without_default_config() {
    // istioctl 1.8 wrote the ProxyConfig itself; pilot-agent ignores its top-level keys.
    let spec = Spec::example().set(
        "mesh.yaml",
        "discoveryAddress: istiod.istio-system.svc:15012\nproxyMetadata:\n  ISTIO_META_CLUSTER_ID: Kubernetes\n",
    );
    let a = apply_ok("1.8 mesh", &spec);
    assert!(
        a.stderr.contains("mesh.yaml' has no 'defaultConfig'")
            && a.stderr.contains("discoveryAddress"),
        "{}",
        a.stderr
    );
}

#[test]
fn hand_written_forms_read_as_bash_reads_them() {
    let base = String::from_utf8(example_member("cluster.env")).unwrap();
    let env = format!(
        "{base}export ISTIO_AGENT_FLAGS='--log_output_level=dns:debug' # more logs\nSECRET_TTL=12h\nISTIO_CUSTOM_IP_TABLES=false\nPROV_CERT=./etc/certs\nISTIO_META_DNS_AUTO_ALLOCATE='false'\nPOD_NAMESPACE='vm-ns' # again\n"
    );
    let a = apply_ok("hand-written", &Spec::example().set("cluster.env", env));
    no_unknown_key_warning("hand-written", &a);
    assert!(
        a.stderr
            .contains("key POD_NAMESPACE is set twice (lines 16 and 24)")
            && a.stderr.contains("the last one (line 24) counts"),
        "{}",
        a.stderr
    );
    assert!(
        a.stderr
            .contains("key ISTIO_META_DNS_AUTO_ALLOCATE is set twice"),
        "{}",
        a.stderr
    );
}

#[test]
fn loopback_lines_in_hosts_are_no_ops() {
    let spec = Spec::example().set(
        "hosts",
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n192.0.2.10 istiod.istio-system.svc\n",
    );
    let a = apply_ok("loopback hosts", &spec);
    assert_eq!(managed_block(&a), ["192.0.2.10 istiod.istio-system.svc"]);
}

#[test]
fn output_certs_directory_is_made_for_the_proxy() {
    let base = String::from_utf8(example_member("cluster.env")).unwrap();
    let spec = Spec::example().set(
        "cluster.env",
        format!("{base}OUTPUT_CERTS=/var/run/secrets/istio\n"),
    );
    let a = apply_ok("OUTPUT_CERTS", &spec);
    let m = fs::metadata(a.root.at("/var/run/secrets/istio")).unwrap();
    assert!(m.is_dir());
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (PROXY_ID, PROXY_ID, 0o755)
    );
    // Envoy's data dir (profile, Wasm cache) is the proxy's; the envoy dir stays root's.
    let data = fs::metadata(a.root.at("/var/lib/istio/data")).unwrap();
    assert_eq!((data.uid(), data.mode() & 0o7777), (PROXY_ID, 0o755));
    let envoy = fs::metadata(a.root.at("/var/lib/istio/envoy")).unwrap();
    assert_eq!(envoy.uid(), 0);
}

#[test]
fn output_certs_the_proxy_cannot_write_is_refused_untouched() {
    let base = String::from_utf8(example_member("cluster.env")).unwrap();
    let spec = Spec::example().set(
        "cluster.env",
        format!("{base}OUTPUT_CERTS=./srv/shared-certs\n"),
    );
    let work = tempfile::tempdir().unwrap();
    let bundle = spec.write_tar(work.path());
    let root = TestRoot::new();
    fs::create_dir_all(root.at("/srv/shared-certs")).unwrap();
    let before = root.snapshot();
    let out = root.apply(&bundle, &[]).get_output().clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("'/srv/shared-certs'")
            && stderr.contains("istio-proxy cannot write it")
            && stderr.contains("chown istio-proxy:istio-proxy /srv/shared-certs"),
        "{stderr}"
    );
    assert_same(&before, &root.snapshot(), "refused OUTPUT_CERTS");
}

/// vmagent's reading of cluster.env is bash's: every accepted line, sourced by the real
/// bash the way istio-start.sh does (`set -a; . cluster.env`, in an empty directory with
/// files that globs would match), gives the value vmagent parsed.
#[test]
fn accepted_cluster_env_reads_as_real_bash_reads_it() {
    use std::collections::BTreeSet;
    use vmagent::bundle::cluster_env;
    let lines = [
        "A='x y'",
        "A=plain-1.2/3:4,5@6%7+8=9",
        "A=\"double quoted\"",
        r#"A='it'"'"'s'"#,
        "A=",
        "A=''",
        "export A='exported'",
        "  export\tA=tabbed  # comment",
        "A='v' # trailing comment",
        "A=a#b",
        "A=*",
        "export A=*",
        "A=?file",
        "A=[ab]file",
        "A='{\"app\":\"web\"}'",
        "A=x\nA=last",
        "A='first' # c\nexport A",
    ];
    let dir = tempfile::tempdir().unwrap();
    for f in ["afile", "bfile", "A=x", "A=afile"] {
        fs::write(dir.path().join(f), "").unwrap();
    }
    for text in lines {
        let (env, _) = cluster_env::parse(format!("{text}\n").as_bytes(), &BTreeSet::new())
            .unwrap_or_else(|e| panic!("{text:?} refused: {e:?}"));
        let ours = env.get("A").unwrap().to_string();
        let file = dir.path().join("cluster.env");
        fs::write(&file, format!("{text}\n")).unwrap();
        let out = std::process::Command::new("bash")
            .env_clear()
            .current_dir(dir.path())
            .arg("-c")
            .arg("set -a; . ./cluster.env; printf '%s' \"$A\"")
            .output()
            .unwrap();
        assert!(out.status.success(), "bash failed on {text:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), ours, "{text:?}");
    }
}
