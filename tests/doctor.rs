//! `vmagent doctor` end to end: a root applied from the example bundle (DNS capture on),
//! and the real binary run in a network namespace of its own beside a real dnsmasq on
//! 127.0.0.1:15053 standing in for pilot-agent's DNS proxy (tests/common/netns.rs):
//! both names resolve (ok, exit 0), the mesh name fails (the mesh side is named, exit
//! 40), the external name fails (the upstream side and resolv.conf's nameservers are
//! named), nothing listens (the proxy is down). Also: capture off skips the queries,
//! no secret reaches the report, and with the fake systemd the service and iptables
//! sections read the (stand-in) running system.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::process::Output;

use common::{netns, Spec, TestRoot};

const BIN: &str = env!("CARGO_BIN_EXE_vmagent");

/// The configured external name (not the default, so the key is proven used) and a
/// secret header that must never be shown.
const CONFIG: &str = "[doctor]\nexternal_name = \"external.example.org\"\n\n[source]\nbundle = \"https://bundles.example.invalid/vm.tar\"\nheaders = { Authorization = \"Bearer hunter2-secret\" }\n";

/// A root with the example bundle applied (files only), a config and a resolv.conf.
fn applied(spec: Spec) -> TestRoot {
    let root = TestRoot::new();
    let work = tempfile::tempdir().unwrap();
    root.apply(&spec.write_tar(work.path()), &[]).success();
    fs::create_dir_all(root.at("/etc/vmagent")).unwrap();
    fs::write(root.at("/etc/vmagent/config.toml"), CONFIG).unwrap();
    fs::write(
        root.at("/etc/resolv.conf"),
        "# dhcp\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n",
    )
    .unwrap();
    root
}

/// `vmagent doctor --root ROOT --output FORMAT` in a namespace with dnsmasq `dns`.
fn doctor(root: &TestRoot, dns: Option<&[&str]>, format: &str) -> Output {
    netns::run(
        dns,
        OsStr::new(BIN),
        [
            OsStr::new("doctor"),
            OsStr::new("--root"),
            root.path().as_os_str(),
            OsStr::new("--output"),
            OsStr::new(format),
        ],
        &[],
    )
}

/// The JSON report and the DNS section of it.
fn json(o: &Output) -> (serde_json::Value, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let dns = v["sections"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["kind"] == "dns-capture"))
        .cloned()
        .unwrap_or_else(|| panic!("no dns-capture section: {v:#}"));
    (v, dns)
}

const MESH_OK: &str = "--address=/istiod.istio-system.svc/10.1.2.3";
const EXTERNAL_OK: &str = "--address=/external.example.org/192.0.2.80";

#[test]
fn both_names_resolve() {
    let root = applied(Spec::example());
    let o = doctor(&root, Some(&[MESH_OK, EXTERNAL_OK]), "json");
    let (v, dns) = json(&o);
    assert_eq!(dns["verdict"], "ok", "{v:#}");
    let details = dns["details"].to_string();
    assert!(
        details.contains("istiod.istio-system.svc: resolves to 10.1.2.3"),
        "{details}"
    );
    assert!(
        details.contains("external.example.org: resolves to 192.0.2.80"),
        "{details}"
    );
    // Nothing else fails on a root that is not the running system: exit 0.
    assert_eq!(o.status.code(), Some(0), "{v:#}");
    assert_eq!(v["exit_code"], 0);
}

#[test]
fn mesh_name_failing_names_the_mesh_side() {
    let root = applied(Spec::example());
    // An empty --address answers NXDOMAIN, as an upstream does for a name the proxy's
    // table lacks.
    let o = doctor(
        &root,
        Some(&["--address=/istiod.istio-system.svc/", EXTERNAL_OK]),
        "text",
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(40), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("dns-capture:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("[FAIL]"), "{text}");
    assert!(
        line.contains("mesh side") && line.contains("not connected to istiod"),
        "{text}"
    );
    assert!(text.contains("answered NXDOMAIN"), "{text}");
    assert!(text.contains("failed: dns-capture (exit 40)"), "{text}");
}

#[test]
fn external_name_failing_names_the_upstreams() {
    let root = applied(Spec::example());
    // dnsmasq without any upstream refuses the external name.
    let o = doctor(&root, Some(&[MESH_OK]), "json");
    let (v, dns) = json(&o);
    assert_eq!(o.status.code(), Some(40), "{v:#}");
    assert_eq!(dns["verdict"], "fail");
    let summary = dns["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("upstream side: external.example.org"),
        "{summary}"
    );
    assert!(summary.contains("10.0.0.2, 10.0.0.3"), "{summary}");
}

#[test]
fn nothing_listening_on_15053() {
    let root = applied(Spec::example());
    let o = doctor(&root, None, "json");
    let (v, dns) = json(&o);
    assert_eq!(o.status.code(), Some(40), "{v:#}");
    let summary = dns["summary"].as_str().unwrap();
    assert!(
        summary.contains("nothing answers on 127.0.0.1:15053"),
        "{summary}"
    );
    assert!(
        dns["hint"]
            .as_str()
            .unwrap()
            .contains("systemctl start istio"),
        "{dns:#}"
    );
}

#[test]
fn capture_off_asks_nothing() {
    let env = String::from_utf8(common::example_member("cluster.env")).unwrap();
    let mesh = String::from_utf8(common::example_member("mesh.yaml")).unwrap();
    let spec = Spec::example()
        .set(
            "cluster.env",
            env.replace(
                "ISTIO_META_DNS_CAPTURE='true'",
                "ISTIO_META_DNS_CAPTURE='false'",
            ),
        )
        .set(
            "mesh.yaml",
            mesh.replace(
                "ISTIO_META_DNS_CAPTURE: \"true\"",
                "ISTIO_META_DNS_CAPTURE: \"false\"",
            ),
        );
    let root = applied(spec);
    // Nothing listens: with capture off that is no failure.
    let o = doctor(&root, None, "json");
    let (v, dns) = json(&o);
    assert_eq!(dns["verdict"], "ok", "{v:#}");
    assert!(
        dns["summary"].as_str().unwrap().starts_with("off"),
        "{dns:#}"
    );
    assert_eq!(o.status.code(), Some(0), "{v:#}");
}

#[test]
fn no_secrets_in_either_output() {
    let root = applied(Spec::example());
    let token = String::from_utf8(common::example_member("istio-token")).unwrap();
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    for format in ["text", "json"] {
        let o = doctor(&root, Some(&[MESH_OK, EXTERNAL_OK]), format);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(all.contains("identity"), "{all}");
        for secret in [token, parts[1], parts[2], "hunter2-secret"] {
            assert!(
                !all.contains(secret),
                "{format} output shows a secret: {all}"
            );
        }
    }
}

#[test]
fn a_bad_external_name_is_refused_in_the_config() {
    let root = applied(Spec::example());
    fs::write(
        root.at("/etc/vmagent/config.toml"),
        "[doctor]\nexternal_name = \"bad name;\"\n",
    )
    .unwrap();
    // The report still comes (defaults used) and names the config problem.
    let o = doctor(
        &root,
        Some(&[MESH_OK, "--address=/example.com/192.0.2.81"]),
        "text",
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("doctor.external_name") && text.contains("defaults used"),
        "{text}"
    );
    assert!(
        text.contains("example.com: resolves to 192.0.2.81"),
        "{text}"
    );
}

/// The fake systemd's environment, for a command run through [`netns::run`].
fn fake_env(
    fake: &common::fake_systemd::FakeSystemd,
    root: &TestRoot,
) -> Vec<(&'static str, std::ffi::OsString)> {
    vec![
        ("VMAGENT_TEST_SYSTEMCTL", fake.program().into()),
        ("VMAGENT_TEST_JOURNALCTL", fake.journalctl().into()),
        ("FAKE_SYSTEMD_STATE", fake.state().into()),
        ("FAKE_SYSTEMD_ROOT", root.path().into()),
        ("FAKE_SYSTEMD_OWNER", std::process::id().to_string().into()),
    ]
}

/// With the (stand-in) running system: istio.service installed but stopped, Istio's
/// chains made in the namespace by real iptables: the service fails, the chains are
/// "left over"; without chains, the iptables section is fine.
#[test]
fn stopped_service_and_left_over_chains() {
    let root = applied(Spec::example());
    let unit = root.at("/lib/systemd/system/istio.service");
    fs::create_dir_all(unit.parent().unwrap()).unwrap();
    fs::write(
        &unit,
        "[Service]\nExecStart=/usr/local/bin/istio-start.sh\n\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let fake = common::fake_systemd::FakeSystemd::new(root.path());
    let env = fake_env(&fake, &root);
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let run = |chains: &str| {
        let script = format!("{chains} exec \"$0\" doctor --root \"$1\" --output json");
        netns::run(
            Some(&[MESH_OK, EXTERNAL_OK]),
            OsStr::new("sh"),
            [
                OsStr::new("-c"),
                OsStr::new(&script),
                OsStr::new(BIN),
                root.path().as_os_str(),
            ],
            &env,
        )
    };
    let section = |v: &serde_json::Value, kind: &str| {
        v["sections"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["kind"] == kind))
            .cloned()
            .unwrap_or_else(|| panic!("no {kind}: {v:#}"))
    };

    let o = run("iptables -t nat -N ISTIO_OUTPUT && iptables -t mangle -N ISTIO_DIVERT &&");
    let (v, _) = json(&o);
    assert_eq!(o.status.code(), Some(40), "{v:#}");
    let svc = section(&v, "service");
    assert_eq!(svc["verdict"], "fail", "{v:#}");
    assert!(
        svc["summary"].as_str().unwrap().contains("inactive/dead"),
        "{svc:#}"
    );
    let ipt = section(&v, "iptables");
    assert_eq!(ipt["verdict"], "fail", "{v:#}");
    assert!(
        ipt["summary"].as_str().unwrap().contains("left over"),
        "{ipt:#}"
    );
    let details = ipt["details"].to_string();
    assert!(
        details.contains("nat: ISTIO_OUTPUT") && details.contains("mangle: ISTIO_DIVERT"),
        "{details}"
    );

    let o = run("");
    let (v, _) = json(&o);
    let ipt = section(&v, "iptables");
    assert_eq!(ipt["verdict"], "ok", "{v:#}");
    assert!(
        ipt["summary"].as_str().unwrap().contains("no Istio chains"),
        "{ipt:#}"
    );
}

/// `DNS_PROXY_ADDR` in cluster.env moves the DNS proxy (pilot-agent options.go): doctor
/// asks it there.
#[test]
fn dns_proxy_addr_is_followed() {
    let env = String::from_utf8(common::example_member("cluster.env")).unwrap();
    let root = applied(Spec::example().set(
        "cluster.env",
        format!("{env}DNS_PROXY_ADDR='127.0.0.1:5353'\n"),
    ));
    // dnsmasq on 5353 only: 15053 is silent.
    let o = netns::run(
        Some(&[MESH_OK, EXTERNAL_OK]),
        OsStr::new(BIN),
        [
            OsStr::new("doctor"),
            OsStr::new("--root"),
            root.path().as_os_str(),
            OsStr::new("--output"),
            OsStr::new("json"),
        ],
        &[("DNSMASQ_PORT", OsStr::new("5353"))],
    );
    let (v, dns) = json(&o);
    assert_eq!(dns["verdict"], "ok", "{v:#}");
    let o = doctor(&root, None, "json");
    let (_, dns) = json(&o);
    assert!(
        dns["summary"]
            .as_str()
            .unwrap()
            .contains("nothing answers on 127.0.0.1:5353"),
        "{dns:#}"
    );
}

/// The `online` section: apply's preflight checks against what is installed (off under
/// `--root` unless `[preflight] enabled = true`). In the namespace, istiod's address
/// from the installed hosts block (192.0.2.10) has no route: the section fails and says
/// so, naming the check; without the opt-in it is not run.
#[test]
fn the_online_section_runs_the_preflight_on_the_installed_files() {
    let root = applied(Spec::example());
    let online = |o: &Output| {
        let (v, _) = json(o);
        v["sections"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["kind"] == "online"))
            .cloned()
            .unwrap_or_else(|| panic!("no online section: {v:#}"))
    };
    let s = online(&doctor(&root, None, "json"));
    assert_eq!(s["verdict"], "unknown", "{s:#}");
    assert!(
        s["summary"]
            .as_str()
            .unwrap()
            .contains("[preflight] enabled = true"),
        "{s:#}"
    );

    let mut cfg = fs::read_to_string(root.at("/etc/vmagent/config.toml")).unwrap();
    cfg.push_str("\n[preflight]\nenabled = true\nskip = [\"ports\", \"address\", \"clock\"]\ntimeout_ms = 1000\n");
    fs::write(root.at("/etc/vmagent/config.toml"), cfg).unwrap();
    let o = doctor(&root, None, "json");
    let s = online(&o);
    assert_eq!(s["verdict"], "fail", "{s:#}");
    assert_eq!(o.status.code(), Some(40));
    let details = s["details"].to_string();
    assert!(details.contains("192.0.2.10"), "{s:#}");
    assert!(details.contains("istiod"), "{s:#}");
}
