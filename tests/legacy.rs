//! Legacy mesh-expansion bundles (Istio <= 1.4; the 1.0 shape): root-cert.pem,
//! cert-chain.pem, key.pem, a small cluster.env with ISTIO_CP_AUTH and a dnsmasq
//! `kubedns` file, no istio-token and no mesh.yaml.
//!
//! Sources, istio/istio at tag 1.0.0: install/tools/setupMeshEx.sh (`istioDnsmasq`
//! writes kubedns, `istioClusterEnv` writes ISTIO_SERVICE_CIDR, ISTIO_SYSTEM_NAMESPACE
//! and ISTIO_CP_AUTH, the certs come from the service account's istio secret);
//! install/tools/setupIstioVM.sh (dnsmasq is there when /etc/dnsmasq.d is; kubedns goes
//! to /etc/dnsmasq.d and dnsmasq is restarted; the certs go to /etc/certs;
//! istio-auth-node-agent is started before istio).
//!
//! The service side runs against a logging stand-in for systemctl (systemd cannot run
//! here); it answers `show` and `is-enabled` as systemd does for loaded units.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::fake_systemd::ReadyServer;
use common::*;

const KUBEDNS: &str = "server=/svc.cluster.local/10.150.0.7\naddress=/istio-policy/10.150.0.8\naddress=/istio-pilot/10.150.0.9\naddress=/istio-citadel/10.150.0.10\naddress=/istio-pilot.istio-system/10.150.0.9\n";

/// A workload certificate and its key, as the istio.default secret held them.
fn workload_cert() -> (String, String) {
    use rcgen::{CertificateParams, KeyPair};
    let params =
        CertificateParams::new(vec!["spiffe://cluster.local/ns/default/sa/default".into()])
            .unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn legacy_spec() -> Spec {
    let (chain, key) = workload_cert();
    Spec::default()
        .set("root-cert.pem", example_member("root-cert.pem"))
        .set("cert-chain.pem", chain)
        .set("key.pem", key)
        .set(
            "cluster.env",
            "ISTIO_SERVICE_CIDR=10.0.0.0/20\nISTIO_SYSTEM_NAMESPACE=istio-system\nISTIO_CP_AUTH=MUTUAL_TLS\n",
        )
        .set("kubedns", KUBEDNS)
}

fn mode_owner(root: &TestRoot, sys: &str) -> (u32, u32) {
    let m = fs::metadata(root.at(sys)).unwrap();
    (m.mode() & 0o7777, m.uid())
}

#[test]
fn legacy_bundle_installs_certs_and_kubedns() {
    let work = tempfile::tempdir().unwrap();
    let bundle = legacy_spec().write_tar(work.path());
    let root = TestRoot::new();
    fs::create_dir_all(root.at("/etc/dnsmasq.d")).unwrap();
    let hosts_before = fs::read(root.at("/etc/hosts")).unwrap();
    let out = root.apply(&bundle, &[]).get_output().clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("legacy bundle"), "{stdout}");
    assert!(stderr.contains("legacy mesh-expansion bundle"), "{stderr}");
    assert!(!stderr.contains("is not one Istio reads"), "{stderr}");
    assert_eq!(mode_owner(&root, "/etc/certs/key.pem"), (0o600, PROXY_ID));
    assert_eq!(
        mode_owner(&root, "/etc/certs/cert-chain.pem"),
        (0o644, PROXY_ID)
    );
    assert_eq!(mode_owner(&root, "/etc/dnsmasq.d/kubedns"), (0o644, 0));
    assert_eq!(
        fs::read_to_string(root.at("/etc/dnsmasq.d/kubedns")).unwrap(),
        KUBEDNS
    );
    assert!(!root.at("/var/run/secrets/tokens/istio-token").exists());
    // No token, so nothing to put back at boot (issue 14 part 0).
    assert!(!root.at("/etc/tmpfiles.d/vmagent-istio-token.conf").exists());
    assert!(!root.at("/var/lib/vmagent/istio-token").exists());
    // No hosts member and no block yet: /etc/hosts is not touched.
    assert_eq!(fs::read(root.at("/etc/hosts")).unwrap(), hosts_before);
    // Re-running is harmless.
    let again = root.apply(&bundle, &[]).get_output().clone();
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));
}

#[test]
fn kubedns_without_dnsmasq_is_a_warning_with_the_install_command() {
    let work = tempfile::tempdir().unwrap();
    let bundle = legacy_spec().write_tar(work.path());
    let root = TestRoot::new();
    let out = root.apply(&bundle, &[]).get_output().clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("dnsmasq is not installed") && stderr.contains("apt-get install dnsmasq"),
        "{stderr}"
    );
    assert!(!root.at("/etc/dnsmasq.d").exists());
}

#[test]
fn kubedns_that_runs_programs_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let spec = legacy_spec().set("kubedns", "dhcp-script=/tmp/evil.sh\n");
    let bundle = spec.write_tar(work.path());
    let root = TestRoot::new();
    fs::create_dir_all(root.at("/etc/dnsmasq.d")).unwrap();
    let before = root.snapshot();
    let out = root.apply(&bundle, &[]).get_output().clone();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bundle member 'kubedns' line 1: 'dhcp-script' is not allowed"),
        "{stderr}"
    );
    assert_same(&before, &root.snapshot(), "hostile kubedns");
}

#[test]
fn a_token_bundle_still_needs_its_five_files() {
    // Only cert-chain.pem + key.pem without a token make a bundle legacy.
    let work = tempfile::tempdir().unwrap();
    let bundle = Spec::example().without("mesh.yaml").write_tar(work.path());
    let out = vmagent().arg("check").arg(&bundle).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bundle member 'mesh.yaml': missing"));
}

/// A systemctl that logs its calls and answers like systemd for loaded units that start
/// when asked.
const SYSTEMCTL: &str = r#"#!/bin/sh
echo "$*" >> "$STUB_LOG"
case "$1" in
show)
    echo "LoadState=loaded"
    if grep -Eqx "(re)?start $2|enable --now --no-reload $2" "$STUB_LOG"; then
        echo "ActiveState=active"; echo "SubState=running"
    else
        echo "ActiveState=inactive"; echo "SubState=dead"
    fi
    echo "NRestarts=0"; echo "NeedDaemonReload=no"
    if grep -Eqx "enable (--now )?--no-reload $2" "$STUB_LOG"; then
        echo "UnitFileState=enabled"
    else
        echo "UnitFileState=disabled"
    fi ;;
is-enabled)
    if grep -Eqx "enable (--now )?--no-reload $2" "$STUB_LOG"; then echo enabled; else echo disabled; exit 1; fi ;;
esac
exit 0
"#;

fn apply_started(root: &TestRoot, bundle: &Path, stub: &Path) -> Vec<String> {
    let log = root.path().join("systemctl.log");
    let out = vmagent()
        .env("VMAGENT_TEST_SYSTEMCTL", stub)
        .env("STUB_LOG", &log)
        .args(["apply"])
        .arg(bundle)
        .arg("--root")
        .arg(root.path())
        .args(["--no-package", "--wait", "60"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = fs::read_to_string(&log).unwrap_or_default();
    // Only this run's calls: the log is kept so `is-enabled` remembers earlier enables.
    let seen = fs::read_to_string(root.path().join("systemctl.seen"))
        .map(|s| s.parse::<usize>().unwrap_or(0))
        .unwrap_or(0);
    fs::write(
        root.path().join("systemctl.seen"),
        calls.lines().count().to_string(),
    )
    .unwrap();
    calls
        .lines()
        .skip(seen)
        .filter(|l| !l.starts_with("show") && !l.starts_with("is-enabled"))
        .map(String::from)
        .collect()
}

#[test]
fn node_agent_starts_before_istio_and_dnsmasq_reloads_kubedns() {
    let work = tempfile::tempdir().unwrap();
    let stub = work.path().join("systemctl");
    fs::write(&stub, SYSTEMCTL).unwrap();
    fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    let bundle = legacy_spec().write_tar(work.path());
    let root = TestRoot::new();
    // The proxy answers ready, so each apply ends at once with exit 0.
    let ready = ReadyServer::fixed(200);
    let cfg = root.at("/etc/vmagent/config.toml");
    fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    fs::write(&cfg, format!("[health]\nready_url = \"{}\"\n", ready.url())).unwrap();
    fs::create_dir_all(root.at("/etc/dnsmasq.d")).unwrap();
    fs::create_dir_all(root.at("/lib/systemd/system")).unwrap();
    for unit in ["istio.service", "istio-auth-node-agent.service"] {
        fs::write(
            root.at(&format!("/lib/systemd/system/{unit}")),
            "[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
    }
    let calls = apply_started(&root, &bundle, &stub);
    assert_eq!(
        calls,
        [
            "restart dnsmasq.service",
            "enable --no-reload istio-auth-node-agent.service",
            "start istio-auth-node-agent.service",
            "enable --now --no-reload istio.service",
        ]
    );
    // Nothing changed: nothing restarted.
    let calls = apply_started(&root, &bundle, &stub);
    assert!(calls.is_empty(), "{calls:?}");
}
