use std::path::Path;

use super::*;
use crate::bundle::ReadOptions;

fn example() -> Bundle {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bundle");
    Bundle::open(
        &dir,
        ReadOptions {
            allow_expired_token: true,
            now: 0,
        },
    )
    .unwrap()
}

fn cfg(toml_text: &str) -> OverridesConfig {
    toml::from_str(toml_text).unwrap()
}

fn installed(b: &Bundle) -> String {
    String::from_utf8(b.files[&Member::ClusterEnv].clone()).unwrap()
}

#[test]
fn nothing_to_merge_keeps_the_bundle_byte_for_byte() {
    let mut b = example();
    let before = b.files[&Member::ClusterEnv].clone();
    let local = validate(&OverridesConfig::default()).unwrap();
    let g = GuardInput {
        on: true,
        sshd: vec![22],
        marked: vec![],
    };
    let m = merge(&mut b, &local, &g).unwrap();
    assert_eq!(b.files[&Member::ClusterEnv], before);
    assert!(m.notes.is_empty() && m.warnings.is_empty(), "{m:?}");
}

#[test]
fn set_replaces_in_place_adds_and_unset_removes() {
    let mut b = example();
    let c = cfg(r#"
set = { ISTIO_LOCAL_EXCLUDE_PORTS = "22,15090,15021,15020,8443", ISTIO_AGENT_FLAGS = "--log_output_level=dns:debug" }
unset = ["ISTIO_META_DNS_AUTO_ALLOCATE"]
hosts = ["10.1.2.3 name.example other.example"]
"#);
    let local = validate(&c).unwrap();
    let m = merge(&mut b, &local, &GuardInput::default()).unwrap();
    let text = installed(&b);
    let lines: Vec<&str> = text.lines().collect();
    let pos = |p: &str| lines.iter().position(|l| l.starts_with(p)).unwrap();
    assert!(
        pos("ISTIO_LOCAL_EXCLUDE_PORTS=") < pos("ISTIO_METAJSON_LABELS="),
        "in place:\n{text}"
    );
    assert!(
        text.contains("ISTIO_LOCAL_EXCLUDE_PORTS='22,15090,15021,15020,8443' # (local override)\n"),
        "{text}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("ISTIO_AGENT_FLAGS='--log_output_level=dns:debug' # (local override)"),
        "{text}"
    );
    assert!(!text.contains("ISTIO_META_DNS_AUTO_ALLOCATE"), "{text}");
    assert!(text.contains("CANONICAL_SERVICE='vm-app'\n"), "{text}");
    assert_eq!(
        b.cluster_env.get("ISTIO_AGENT_FLAGS"),
        Some("--log_output_level=dns:debug")
    );
    assert_eq!(b.hosts.len(), 2);
    assert_eq!(b.hosts[1].line(), "10.1.2.3 name.example other.example");
    assert_eq!(m.notes.len(), 4, "{m:?}");
    // Merging again (the daemon re-applies the stored bundle) gives the same text.
    let (raw, _) = crate::bundle::cluster_env::parse(text.as_bytes(), &Default::default()).unwrap();
    assert_eq!(raw.get("ISTIO_NAMESPACE"), Some("vm-ns"));
}

#[test]
fn invalid_overrides_are_refused_by_the_bundle_rules_naming_the_item() {
    for (t, want) in [
        (r#"set = { PATH = "/tmp" }"#, "set.PATH: key PATH"),
        (r#"set = { LD_PRELOAD = "/x.so" }"#, "not allowed"),
        (r#"set = { lower = "1" }"#, "upper-case"),
        (r#"set = { ISTIO_SVC_IP = "1.2.3.4;id" }"#, "IPv4"),
        (r#"set = { ISTIO_AGENT_FLAGS = "--x;reboot" }"#, "flags"),
        (r#"set = { ISTIO_META_DNS_CAPTURE = "yes" }"#, "boolean"),
        (r#"set = { A = "x\ny" }"#, "line break"),
        (
            r#"set = { A = "1" }
unset = ["A"]"#,
            "both set and unset",
        ),
        (r#"unset = ["BASH_ENV"]"#, "unset: key BASH_ENV"),
        (
            r#"hosts = ["10.1.2.3 bad_name"]"#,
            "hosts: item 1: 'bad_name'",
        ),
        (
            r#"hosts = ["10.0.0.1 a.example", "1.2.3.4 localhost"]"#,
            "item 2",
        ),
        (r#"hosts = ["999.1.1.1 x"]"#, "not an IPv4"),
    ] {
        let e = validate(&cfg(t)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(want) && msg.contains("[overrides]") && msg.contains(crate::config::PATH),
            "{t}: {msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn guard_adds_captured_sshd_ports_and_marks_them() {
    let mut b = example();
    let g = GuardInput {
        on: true,
        sshd: vec![22, 2222],
        marked: vec![2200],
    };
    let m = merge(&mut b, &Local::default(), &g).unwrap();
    let text = installed(&b);
    assert!(text.contains("ISTIO_LOCAL_EXCLUDE_PORTS='22,15090,15021,15020,2200,2222' # (lock-out guard: 2200,2222)\n"), "{text}");
    assert!(
        m.notes[0].contains("lock-out guard: sshd listens on port 2200,2222"),
        "{m:?}"
    );
    assert_eq!(capture::marked_ports(&text), [2200, 2222]);
}

#[test]
fn guard_off_warns_and_changes_nothing() {
    let mut b = example();
    let before = b.files[&Member::ClusterEnv].clone();
    let g = GuardInput {
        on: false,
        sshd: vec![2222],
        marked: vec![2200],
    };
    let m = merge(&mut b, &Local::default(), &g).unwrap();
    assert_eq!(b.files[&Member::ClusterEnv], before);
    assert!(
        m.warnings[0].contains("sshd listens on port 2222, which ISTIO_INBOUND_PORTS='*' captures"),
        "{m:?}"
    );
}

#[test]
fn guard_respects_an_override_that_already_excludes_the_port() {
    let mut b = example();
    let local = validate(&cfg(r#"set = { ISTIO_LOCAL_EXCLUDE_PORTS = "22,2222" }"#)).unwrap();
    let g = GuardInput {
        on: true,
        sshd: vec![2222],
        marked: vec![],
    };
    let m = merge(&mut b, &local, &g).unwrap();
    assert!(installed(&b).contains("ISTIO_LOCAL_EXCLUDE_PORTS='22,2222' # (local override)\n"));
    assert!(
        m.warnings[0].contains("drops 15090,15021,15020"),
        "the override drops the bundle's exclusions: {m:?}"
    );
}

#[test]
fn describe_marks_every_override() {
    let c = cfg(r#"
set = { ISTIO_AGENT_FLAGS = "--x" }
unset = ["CA_ADDR"]
hosts = ["10.1.2.3 name.example"]
lockout_guard = false
"#);
    let d = describe(&c, &validate(&c).unwrap());
    for want in [
        "ISTIO_AGENT_FLAGS='--x' (local override)",
        "CA_ADDR unset (local override)",
        "/etc/hosts 10.1.2.3 name.example (local override)",
        "lock-out guard: off",
    ] {
        assert!(d.contains(want), "{want}: {d}");
    }
}
