//! The online preflight (issue 15, part 1), end to end through the binary: real TLS
//! servers on 127.0.0.x, network namespaces made here (lo only: no route; a veth pair:
//! refused; an nft drop rule: timeout), each failure with its message and exit code,
//! and the target root byte-for-byte unchanged after a refused apply.

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::mesh_net::{loopback, preflight_config, serve, MeshPki, Mode, Netns, ISTIOD};
use common::output::{json, show};
use common::{assert_same, example_member, jwt, vmagent, Spec, TestRoot};

/// Skip the machine-local checks in loopback tests: the host's own ports and
/// addresses are not the test's business (they have their own netns tests below).
const NETWORK_ONLY: &str = "enabled = true\nskip = [\"ports\", \"address\"]";

/// The example bundle pointed at `addr` (hosts line + discoveryAddress port), with
/// `pem` as root-cert.pem and `env` replacing cluster.env lines by key.
fn bundle(dir: &Path, addr: SocketAddr, pem: &str, env: &[(&str, Option<&str>)]) -> PathBuf {
    let mesh = String::from_utf8(example_member("mesh.yaml"))
        .unwrap()
        .replace(
            &format!("{ISTIOD}:15012"),
            &format!("{ISTIOD}:{}", addr.port()),
        );
    let mut cluster = String::from_utf8(example_member("cluster.env")).unwrap();
    for (key, value) in env {
        let mut lines: Vec<String> = cluster
            .lines()
            .filter(|l| !l.starts_with(&format!("{key}=")))
            .map(String::from)
            .collect();
        if let Some(v) = value {
            lines.push(format!("{key}='{v}'"));
        }
        lines.sort();
        cluster = lines.join("\n") + "\n";
    }
    Spec::example()
        .set("hosts", format!("{} {ISTIOD}\n", addr.ip()))
        .set("mesh.yaml", mesh)
        .set("root-cert.pem", pem.as_bytes().to_vec())
        .set("cluster.env", cluster)
        .write_tar(dir)
}

fn apply(root: &Path, bundle: &Path, extra: &[&str]) -> Output {
    vmagent()
        .arg("apply")
        .arg(bundle)
        .arg("--root")
        .arg(root)
        .args(["--no-package", "--no-start", "--output", "json"])
        .args(extra)
        .output()
        .expect("run vmagent")
}

/// The check named `name` in a JSON document.
fn check<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["preflight"]["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {doc}"))
}

/// Applies `bundle` into a fresh root with `config`; asserts exit `code`, that check
/// `name` failed as `failure` with a detail containing each of `says`, and that the
/// root is exactly as before.
fn refused(bundle: &Path, config: &str, code: i32, name: &str, failure: &str, says: &[&str]) {
    let root = TestRoot::new();
    preflight_config(root.path(), config);
    let before = root.snapshot();
    let o = apply(root.path(), bundle, &[]);
    assert_eq!(o.status.code(), Some(code), "{}", show(&o));
    let doc = json(&o);
    let c = check(&doc, name);
    assert_eq!(c["status"], "failed", "{doc}");
    assert_eq!(c["failure"], failure, "{doc}");
    let detail = c["detail"].as_str().unwrap_or_default();
    for s in says {
        assert!(detail.contains(s), "{name}: want '{s}' in: {detail}");
    }
    assert_eq!(doc["exit_code"], code, "{doc}");
    assert_same(
        &before,
        &root.snapshot(),
        "a refused preflight writes nothing",
    );
}

#[test]
fn good_istiod_passes_and_apply_goes_on() {
    let pki = MeshPki::new();
    let addr = serve(loopback(), Mode::Tls(pki.server(&[ISTIOD], false)));
    let t = tempfile::tempdir().unwrap();
    let b = bundle(t.path(), addr, &pki.pem, &[]);
    let root = TestRoot::new();
    preflight_config(root.path(), NETWORK_ONLY);
    let o = apply(root.path(), &b, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let doc = json(&o);
    assert_eq!(check(&doc, "istiod")["status"], "ok", "{doc}");
    assert_eq!(check(&doc, "ports")["status"], "skipped", "{doc}");
    assert_eq!(doc["result"], "applied", "{doc}");
    let note = doc["notes"].to_string();
    assert!(note.contains("online preflight passed in"), "{doc}");
    assert!(root.at("/etc/certs/root-cert.pem").exists());
    // check --online says the same without touching anything.
    let o = vmagent()
        .args(["check", "--online", "--output", "json", "--root"])
        .arg(root.path())
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(check(&json(&o), "istiod")["status"], "ok");
}

#[test]
fn another_meshs_root_is_a_ca_mismatch() {
    let (served, other) = (MeshPki::new(), MeshPki::new());
    let addr = serve(loopback(), Mode::Tls(served.server(&[ISTIOD], false)));
    let t = tempfile::tempdir().unwrap();
    let b = bundle(t.path(), addr, &other.pem, &[]);
    refused(
        &b,
        NETWORK_ONLY,
        32,
        "istiod",
        "ca-mismatch",
        &[
            "CA mismatch",
            "this bundle's root certificate is not this mesh's",
        ],
    );
}

#[test]
fn a_certificate_for_another_name_is_a_san_failure() {
    let pki = MeshPki::new();
    let addr = serve(
        loopback(),
        Mode::Tls(pki.server(&["ingress.example.com"], false)),
    );
    let t = tempfile::tempdir().unwrap();
    let b = bundle(t.path(), addr, &pki.pem, &[]);
    refused(
        &b,
        NETWORK_ONLY,
        34,
        "istiod",
        "server-name",
        &[
            "not valid for istiod.istio-system.svc",
            "check the gateway IP",
        ],
    );
}

#[test]
fn an_expired_serving_certificate_is_a_clock_failure() {
    let pki = MeshPki::new();
    let addr = serve(loopback(), Mode::Tls(pki.server(&[ISTIOD], true)));
    let t = tempfile::tempdir().unwrap();
    let b = bundle(t.path(), addr, &pki.pem, &[]);
    refused(
        &b,
        NETWORK_ONLY,
        35,
        "istiod",
        "clock",
        &["expired at 2020-12-31", "timedatectl set-ntp true"],
    );
}

#[test]
fn tcp_without_istiod_behind_is_the_gateway_not_routing_15012() {
    let pki = MeshPki::new();
    let addr = serve(loopback(), Mode::Close);
    let t = tempfile::tempdir().unwrap();
    let b = bundle(t.path(), addr, &pki.pem, &[]);
    refused(
        &b,
        NETWORK_ONLY,
        33,
        "istiod",
        "not-routed",
        &[
            "the gateway does not route port",
            "expose istiod through the east-west gateway",
        ],
    );
}

#[test]
fn a_token_issued_an_hour_ahead_fails_the_clock_check_with_the_fix() {
    let pki = MeshPki::new();
    let addr = serve(loopback(), Mode::Tls(pki.server(&[ISTIOD], false)));
    let t = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = jwt(&format!(
        r#"{{"aud":["istio-ca"],"exp":{},"iat":{},"sub":"system:serviceaccount:vm-ns:vm-sa"}}"#,
        now + 7200,
        now + 3600
    ));
    let b = bundle(t.path(), addr, &pki.pem, &[]);
    let b2 = t.path().join("future.tar");
    std::fs::rename(&b, &b2).unwrap();
    let spec_dir = tempfile::tempdir().unwrap();
    let b = {
        // Same bundle, the token replaced.
        let mut s = Spec::default();
        let mut ar = tar::Archive::new(std::fs::File::open(&b2).unwrap());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            s = s.set(&name, data);
        }
        s.set("istio-token", token).write_tar(spec_dir.path())
    };
    refused(
        &b,
        NETWORK_ONLY,
        35,
        "clock",
        "clock",
        &["behind", "timedatectl set-ntp true"],
    );
}

#[test]
fn multi_network_bundles_need_the_gateways_15443() {
    let pki = MeshPki::new();
    let addr = serve(loopback(), Mode::Tls(pki.server(&[ISTIOD], false)));
    let t = tempfile::tempdir().unwrap();
    let b = bundle(
        t.path(),
        addr,
        &pki.pem,
        &[("ISTIO_META_NETWORK", Some("vm-net"))],
    );
    refused(
        &b,
        NETWORK_ONLY,
        31,
        "gateway",
        "unreachable",
        &[":15443", "refused", "expose-services.yaml"],
    );
}

#[test]
fn no_preflight_flag_and_roots_other_than_slash_skip_it() {
    let (served, other) = (MeshPki::new(), MeshPki::new());
    let addr = serve(loopback(), Mode::Tls(served.server(&[ISTIOD], false)));
    let t = tempfile::tempdir().unwrap();
    let b = bundle(t.path(), addr, &other.pem, &[]);
    // Enabled in config, skipped by the flag.
    let root = TestRoot::new();
    preflight_config(root.path(), NETWORK_ONLY);
    let o = apply(root.path(), &b, &["--no-preflight"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(json(&o)["preflight"].is_null());
    // No config: off under --root DIR (an image or test tree, not this machine).
    let root = TestRoot::new();
    let o = apply(root.path(), &b, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(json(&o)["preflight"].is_null());
}

#[test]
fn the_text_output_has_one_line_per_failed_check() {
    let (served, other) = (MeshPki::new(), MeshPki::new());
    let addr = serve(loopback(), Mode::Tls(served.server(&[ISTIOD], false)));
    let t = tempfile::tempdir().unwrap();
    let b = bundle(
        t.path(),
        addr,
        &other.pem,
        &[("ISTIO_META_NETWORK", Some("vm-net"))],
    );
    let root = TestRoot::new();
    preflight_config(root.path(), NETWORK_ONLY);
    let o = vmagent()
        .arg("apply")
        .arg(&b)
        .arg("--root")
        .arg(root.path())
        .args(["--no-package", "--no-start"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(32), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the online preflight failed (2 of 6 checks); nothing was changed"),
        "{err}"
    );
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("  | istiod: CA mismatch"))
            .count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("  | gateway: connection to"))
            .count(),
        1,
        "{err}"
    );
}

#[test]
fn bad_skip_names_are_refused_with_the_file() {
    let root = TestRoot::new();
    preflight_config(root.path(), "skip = [\"clocks\"]");
    let o = vmagent()
        .args(["config", "show", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("config.toml") && err.contains("clocks"),
        "{err}"
    );
}

// ---- in network namespaces made here ----

/// A port nobody listens on at `ip` (bound, then released).
fn closed_port(ip: IpAddr) -> SocketAddr {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Applies in `ns` with `config`; returns the output, the elapsed time, and asserts the
/// root unchanged.
fn apply_in(ns: &Netns, bundle: &Path, config: &str) -> (Output, Duration) {
    let root = TestRoot::new();
    preflight_config(root.path(), config);
    let before = root.snapshot();
    let r = root.path().to_str().unwrap();
    let b = bundle.to_str().unwrap();
    let start = Instant::now();
    let o = ns.vmagent(&[
        "apply",
        b,
        "--root",
        r,
        "--no-package",
        "--no-start",
        "--output",
        "json",
    ]);
    let took = start.elapsed();
    assert_same(
        &before,
        &root.snapshot(),
        "a refused preflight writes nothing",
    );
    (o, took)
}

const REMOTE_ONLY: &str = "enabled = true\nskip = [\"ports\", \"address\", \"clock\"]";

#[test]
fn refused_in_a_namespace() {
    let Some(ns) = Netns::new(true) else { return };
    let pki = MeshPki::new();
    let t = tempfile::tempdir().unwrap();
    let b = bundle(t.path(), closed_port(ns.host_ip.unwrap()), &pki.pem, &[]);
    let (o, _) = apply_in(&ns, &b, REMOTE_ONLY);
    assert_eq!(o.status.code(), Some(31), "{}", show(&o));
    let d = json(&o);
    let detail = check(&d, "istiod")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("refused") && detail.contains("expose-istiod.yaml"),
        "{detail}"
    );
}

#[test]
fn dropped_packets_time_out_within_seconds() {
    let Some(ns) = Netns::new(true) else { return };
    let pki = MeshPki::new();
    let addr = closed_port(ns.host_ip.unwrap());
    let port = addr.port().to_string();
    ns.exec_ok(&["nft", "add", "table", "inet", "vmagent_pf"]);
    ns.exec_ok(&[
        "nft",
        "add",
        "chain",
        "inet",
        "vmagent_pf",
        "in",
        "{ type filter hook input priority 0 ; policy accept ; }",
    ]);
    ns.exec_ok(&[
        "nft",
        "add",
        "rule",
        "inet",
        "vmagent_pf",
        "in",
        "tcp",
        "sport",
        &port,
        "drop",
    ]);
    let t = tempfile::tempdir().unwrap();
    let b = bundle(t.path(), addr, &pki.pem, &[]);
    let (o, took) = apply_in(&ns, &b, REMOTE_ONLY);
    assert_eq!(o.status.code(), Some(31), "{}", show(&o));
    let d = json(&o);
    let detail = check(&d, "istiod")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("no answer") && detail.contains("within 2000 ms"),
        "{detail}"
    );
    // One 2 s timeout, not the 180 s wait for a proxy (generous bound for a loaded box).
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn no_route_in_an_isolated_namespace() {
    let Some(ns) = Netns::new(false) else { return };
    let pki = MeshPki::new();
    let t = tempfile::tempdir().unwrap();
    let b = bundle(t.path(), "10.99.99.1:15012".parse().unwrap(), &pki.pem, &[]);
    let (o, _) = apply_in(&ns, &b, REMOTE_ONLY);
    assert_eq!(o.status.code(), Some(31), "{}", show(&o));
    let d = json(&o);
    let detail = check(&d, "istiod")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("no route") && detail.contains("ip route get 10.99.99.1"),
        "{detail}"
    );
}

#[test]
fn a_name_in_neither_hosts_nor_dns_is_a_dns_failure() {
    let Some(ns) = Netns::new(false) else { return };
    let pki = MeshPki::new();
    let t = tempfile::tempdir().unwrap();
    let mesh = String::from_utf8(example_member("mesh.yaml"))
        .unwrap()
        .replace(&format!("{ISTIOD}:15012"), "istiod.nowhere.invalid:15012");
    let b = Spec::example()
        .set("mesh.yaml", mesh)
        .set("root-cert.pem", pki.pem.as_bytes().to_vec())
        .write_tar(t.path());
    let (o, _) = apply_in(&ns, &b, REMOTE_ONLY);
    assert_eq!(o.status.code(), Some(30), "{}", show(&o));
    let d = json(&o);
    let detail = check(&d, "istiod")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("istiod.nowhere.invalid") && detail.contains("hosts"),
        "{detail}"
    );
}

/// A child process this test started, killed (by its pid) and reaped on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_port_held_by_another_program_fails_the_ports_check() {
    let Some(ns) = Netns::new(false) else { return };
    // nsenter execs (no fork), so the child is nc itself and killing it ends it.
    let nc = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .args(["busybox", "nc", "-l", "-p", "15021"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nsenter busybox nc");
    let nc = KillOnDrop(nc);
    let listening = |table: &str| {
        std::fs::read_to_string(format!("/proc/{}/net/{table}", nc.0.id()))
            .map(|t| {
                t.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[1].ends_with(&format!(":{:04X}", 15021)) && f[3] == "0A"
                })
            })
            .unwrap_or(false)
    };
    common::wait::wait_for("nc listening on 15021", common::wait::PATIENCE, || {
        listening("tcp") || listening("tcp6")
    });
    let pki = MeshPki::new();
    let t = tempfile::tempdir().unwrap();
    let b = bundle(t.path(), "10.99.99.1:15012".parse().unwrap(), &pki.pem, &[]);
    let (o, _) = apply_in(
        &ns,
        &b,
        "enabled = true\nskip = [\"istiod\", \"address\", \"clock\"]",
    );
    drop(nc);
    assert_eq!(o.status.code(), Some(36), "{}", show(&o));
    let d = json(&o);
    let detail = check(&d, "ports")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("TCP 15021 (Envoy health) by") && detail.contains("uid 0"),
        "{detail}"
    );
}

#[test]
fn the_advertised_address_must_be_this_vms() {
    let Some(ns) = Netns::new(true) else { return };
    let pki = MeshPki::new();
    let t = tempfile::tempdir().unwrap();
    let target: SocketAddr = "10.99.99.1:15012".parse().unwrap();
    let config = "enabled = true\nskip = [\"istiod\", \"ports\", \"clock\"]";
    // The example's ISTIO_SVC_IP (192.0.2.20) is not the namespace's address.
    let b = bundle(t.path(), target, &pki.pem, &[]);
    let (o, _) = apply_in(&ns, &b, config);
    assert_eq!(o.status.code(), Some(37), "{}", show(&o));
    let d = json(&o);
    let detail = check(&d, "address")["detail"].as_str().unwrap().to_string();
    let mine = ns.ns_ip.unwrap().to_string();
    assert!(
        detail.contains("ISTIO_SVC_IP=192.0.2.20") && detail.contains(&mine),
        "{detail}"
    );
    // Unset: the namespace's one address is what pilot-agent will advertise.
    let t2 = tempfile::tempdir().unwrap();
    let b = bundle(t2.path(), target, &pki.pem, &[("ISTIO_SVC_IP", None)]);
    let r = TestRoot::new();
    preflight_config(r.path(), config);
    let o = ns.vmagent(&[
        "check",
        "--online",
        "--output",
        "json",
        "--root",
        r.path().to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let d = json(&o);
    let detail = check(&d, "address")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains(&format!("will advertise {mine}")),
        "{detail}"
    );
}
