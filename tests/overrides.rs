//! Issue 15 parts 2 and 3: local overrides (`[overrides]` in the config) that every
//! apply and the daemon's drift repair keep, and the SSH lock-out guard, against the
//! real binary, real target roots, the real OpenSSH server and the daemon with the
//! fake systemd.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::daemon_vm::DaemonVm;
use common::output::*;
use common::sshd::{NetNs, Sshd};
use common::wait::PATIENCE;
use common::*;

const CLUSTER_ENV: &str = "/var/lib/istio/envoy/cluster.env";

/// A port no sshd listens on by default and no bundle excludes.
const SSH_PORT: u16 = 2222;

const OVERRIDES: &str = r#"[overrides]
set = { ISTIO_AGENT_FLAGS = "--log_output_level=dns:debug", ISTIO_LOCAL_EXCLUDE_PORTS = "22,15090,15021,15020,8443" }
unset = ["ISTIO_META_DNS_AUTO_ALLOCATE"]
hosts = ["10.1.2.3 registry.example"]
"#;

fn write_config(root: &TestRoot, sys: &str, text: &str) {
    let p = root.at(sys);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn installed(root: &TestRoot) -> String {
    fs::read_to_string(inroot(root.path(), CLUSTER_ENV, true)).unwrap_or_default()
}

fn exclude_line(env: &str) -> String {
    env.lines()
        .find(|l| l.starts_with("ISTIO_LOCAL_EXCLUDE_PORTS="))
        .unwrap_or_default()
        .to_string()
}

/// `vmagent apply` (no package, no service) inside `ns`.
fn apply_in(ns: &NetNs, root: &TestRoot, bundle: &Path, extra: &[&str]) -> Output {
    let mut c = ns.command(env!("CARGO_BIN_EXE_vmagent"));
    c.arg("apply")
        .arg(bundle)
        .arg("--root")
        .arg(root.path())
        .args(["--no-package", "--no-start"])
        .args(extra);
    assert_cmd::Command::from_std(c)
        .timeout(PATIENCE)
        .output()
        .expect("run vmagent")
}

#[test]
fn guard_excludes_the_port_a_real_sshd_listens_on() {
    let ns = NetNs::new();
    let sshd = Sshd::start(&ns, SSH_PORT);
    let work = tempfile::tempdir().unwrap();
    let bundle = Spec::example().write_tar(work.path());
    let root = TestRoot::new();

    let o = ok(apply_in(&ns, &root, &bundle, &["--dry-run"]), "dry run");
    let out = stdout(&o);
    assert!(
        out.contains(
            "+ISTIO_LOCAL_EXCLUDE_PORTS='22,15090,15021,15020,2222' # (lock-out guard: 2222)"
        ),
        "the dry run's diff marks the guard's port:\n{}",
        show(&o)
    );

    let o = ok(apply_in(&ns, &root, &bundle, &[]), "apply");
    let env = installed(&root);
    let line = exclude_line(&env);
    assert!(
        line.contains(",2222'") && line.contains("(lock-out guard: 2222)"),
        "{line}\n{}",
        show(&o)
    );
    assert!(
        stdout(&o).contains("note: lock-out guard: sshd listens on port 2222"),
        "apply says so:\n{}",
        show(&o)
    );
    // Re-running is harmless: the same content, nothing written.
    let o = ok(apply_in(&ns, &root, &bundle, &[]), "second apply");
    assert!(stdout(&o).contains("up to date"), "{}", show(&o));
    assert_eq!(installed(&root), env);
    // sshd restarting (no listener for a moment) does not drop the exclusion.
    drop(sshd);
    let o = ok(apply_in(&ns, &root, &bundle, &[]), "apply without sshd");
    assert_eq!(installed(&root), env, "{}", show(&o));
}

#[test]
fn guard_off_warns_and_installs_the_bundle_as_is() {
    let ns = NetNs::new();
    let _sshd = Sshd::start(&ns, SSH_PORT);
    let work = tempfile::tempdir().unwrap();
    let bundle = Spec::example().write_tar(work.path());
    let root = TestRoot::new();
    let o = ok(
        apply_in(&ns, &root, &bundle, &["--no-lockout-guard"]),
        "apply --no-lockout-guard",
    );
    assert!(
        stderr(&o)
            .contains("warning: sshd listens on port 2222, which ISTIO_INBOUND_PORTS='*' captures"),
        "{}",
        show(&o)
    );
    assert_eq!(
        installed(&root).as_bytes(),
        example_member("cluster.env"),
        "port not added"
    );

    // The config key turns it off too (the daemon's runs included).
    let root = TestRoot::new();
    write_config(
        &root,
        "/etc/vmagent/config.toml",
        "[overrides]\nlockout_guard = false\n",
    );
    let o = ok(apply_in(&ns, &root, &bundle, &[]), "lockout_guard = false");
    assert!(
        stderr(&o).contains("sshd listens on port 2222"),
        "{}",
        show(&o)
    );
    assert!(!exclude_line(&installed(&root)).contains("2222"));
}

#[test]
fn overrides_are_applied_and_marked_in_the_plan_and_config_show() {
    let work = tempfile::tempdir().unwrap();
    let bundle = Spec::example().write_tar(work.path());
    let root = TestRoot::new();
    write_config(&root, "/etc/vmagent/config.toml", OVERRIDES);

    let o = root
        .apply(&bundle, &["--dry-run"])
        .success()
        .get_output()
        .clone();
    let out = stdout(&o);
    for want in [
        "+ISTIO_AGENT_FLAGS='--log_output_level=dns:debug' # (local override)",
        "+ISTIO_LOCAL_EXCLUDE_PORTS='22,15090,15021,15020,8443' # (local override)",
        "note: cluster.env ISTIO_META_DNS_AUTO_ALLOCATE: removed (local override)",
        "+10.1.2.3 registry.example",
        "note: /etc/hosts line '10.1.2.3 registry.example' (local override)",
    ] {
        assert!(out.contains(want), "dry run lacks {want:?}:\n{}", show(&o));
    }
    assert!(!root.at(CLUSTER_ENV).exists(), "dry run wrote nothing");

    root.apply(&bundle, &[]).success();
    let env = installed(&root);
    assert!(
        env.contains("ISTIO_AGENT_FLAGS='--log_output_level=dns:debug' # (local override)\n"),
        "{env}"
    );
    assert!(exclude_line(&env).starts_with("ISTIO_LOCAL_EXCLUDE_PORTS='22,15090,15021,15020,8443'"));
    assert!(!env.contains("ISTIO_META_DNS_AUTO_ALLOCATE"), "{env}");
    assert!(env.contains("ISTIO_SVC_IP='192.0.2.20'\n"), "{env}");
    let hosts = fs::read_to_string(root.at("/etc/hosts")).unwrap();
    let block = hosts
        .split("# BEGIN vmagent-managed")
        .nth(1)
        .unwrap_or_default();
    assert!(
        block.contains("192.0.2.10 istiod.istio-system.svc\n10.1.2.3 registry.example\n"),
        "{hosts}"
    );
    // Idempotent.
    let o = root.apply(&bundle, &[]).success().get_output().clone();
    assert!(stdout(&o).contains("up to date"), "{}", show(&o));

    let o = vmagent()
        .args(["config", "show", "--root"])
        .arg(root.path())
        .assert()
        .success()
        .get_output()
        .clone();
    let out = stdout(&o);
    for want in [
        "#   cluster.env ISTIO_AGENT_FLAGS='--log_output_level=dns:debug' (local override), from ",
        "#   cluster.env ISTIO_META_DNS_AUTO_ALLOCATE unset (local override)",
        "#   /etc/hosts 10.1.2.3 registry.example (local override)",
        "# lock-out guard: on",
        "[overrides]",
    ] {
        assert!(out.contains(want), "config show lacks {want:?}:\n{out}");
    }
}

#[test]
fn overrides_survive_a_bundle_change() {
    let work = tempfile::tempdir().unwrap();
    let root = TestRoot::new();
    // One key from the main file, one from a drop-in: both kept.
    write_config(
        &root,
        "/etc/vmagent/config.toml",
        "[overrides]\nset = { ISTIO_AGENT_FLAGS = \"--x\" }\n",
    );
    write_config(
        &root,
        "/etc/vmagent/config.d/50-ports.toml",
        "[overrides]\nset = { ISTIO_LOCAL_EXCLUDE_PORTS = \"22,15090,15021,15020,9000\" }\n",
    );
    let v1 = Spec::example().write_tar(work.path());
    root.apply(&v1, &[]).success();

    let env1 = String::from_utf8(example_member("cluster.env")).unwrap();
    let env2 = env1.replace("ISTIO_SVC_IP='192.0.2.20'", "ISTIO_SVC_IP='192.0.2.21'");
    let dir2 = work.path().join("v2");
    fs::create_dir(&dir2).unwrap();
    let v2 = Spec::example().set("cluster.env", env2).write_tar(&dir2);
    root.apply(&v2, &[]).success();
    let env = installed(&root);
    assert!(
        env.contains("ISTIO_SVC_IP='192.0.2.21'\n"),
        "the bundle's change: {env}"
    );
    assert!(
        env.contains("ISTIO_AGENT_FLAGS='--x' # (local override)\n"),
        "{env}"
    );
    assert!(
        exclude_line(&env).starts_with(
            "ISTIO_LOCAL_EXCLUDE_PORTS='22,15090,15021,15020,9000' # (local override)"
        ),
        "{env}"
    );
}

#[test]
fn invalid_override_is_refused_like_a_bundle_and_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let bundle = Spec::example().write_tar(work.path());
    for (sys, text, want) in [
        (
            "/etc/vmagent/config.toml",
            "[overrides]\nset = { ISTIO_AGENT_FLAGS = \"--x; rm -rf /\" }\n",
            "[overrides] set.ISTIO_AGENT_FLAGS: ISTIO_AGENT_FLAGS must be flags",
        ),
        (
            "/etc/vmagent/config.d/90-bad.toml",
            "[overrides]\nset = { LD_PRELOAD = \"/tmp/x.so\" }\n",
            "[overrides] set.LD_PRELOAD: key LD_PRELOAD changes how the root shell",
        ),
        (
            "/etc/vmagent/config.toml",
            "[overrides]\nhosts = [\"10.1.2.3 localhost\"]\n",
            "[overrides] hosts: item 1: remaps 'localhost'",
        ),
        (
            "/etc/vmagent/config.toml",
            "[overrides]\nunset = [\"PATH\"]\n",
            "[overrides] unset: key PATH",
        ),
    ] {
        let root = TestRoot::new();
        write_config(&root, sys, text);
        let before = root.snapshot();
        let o = root.apply(&bundle, &[]).get_output().clone();
        let o = code(o, 2, text);
        let err = stderr(&o);
        let file = root.at(sys).display().to_string();
        assert!(
            err.contains(&format!("error: config file '{file}': {want}")),
            "{text}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert_same(&before, &root.snapshot(), text);
        // `config show` refuses it the same way.
        let o = vmagent()
            .args(["config", "show", "--root"])
            .arg(root.path())
            .output()
            .unwrap();
        let o = code(o, 2, "config show");
        assert!(stderr(&o).contains(want), "{}", show(&o));
    }
}

#[test]
fn drift_repair_keeps_the_overrides() {
    let mut vm = DaemonVm::new(OVERRIDES);
    vm.start();
    let rendered = vm.wait("cluster.env with the overrides", |vm| {
        vm.read(CLUSTER_ENV)
            .filter(|e| e.contains("ISTIO_AGENT_FLAGS='--log_output_level=dns:debug'"))
    });
    assert!(rendered.contains("# (local override)"), "{rendered}");
    // An admin (or a tool) puts the bundle's own cluster.env back: the daemon repairs
    // it to the bundle *with* the overrides, not to the bundle alone.
    fs::write(vm.at(CLUSTER_ENV), example_member("cluster.env")).unwrap();
    vm.wait("the overrides repaired", |vm| {
        (vm.read(CLUSTER_ENV)? == rendered).then_some(())
    });
    // A hand edit of a key neither the bundle nor the overrides ask for is reverted;
    // the overrides stay.
    let edited = format!("{rendered}ISTIO_META_NETWORK_EXTRA='x'\n");
    fs::write(vm.at(CLUSTER_ENV), edited).unwrap();
    vm.wait("the hand edit reverted", |vm| {
        (vm.read(CLUSTER_ENV)? == rendered).then_some(())
    });
    let hosts = vm.read("/etc/hosts").unwrap_or_default();
    assert!(hosts.contains("10.1.2.3 registry.example"), "{hosts}");
    assert!(vm.stderr().contains("repaired:"), "{}", vm.stderr());
}
