//! The fixture packages and roots themselves: real dpkg and rpm install them.

mod common;

use common::packages::*;

#[test]
fn fixture_deb_installs_with_real_dpkg() {
    let w = tempfile::tempdir().unwrap();
    let deb = Fixture::new("1.24.1").build_deb(w.path());
    let root = deb_root(DEB_DEPS);
    let o = std::process::Command::new("dpkg")
        .arg(format!("--root={}", root.path().display()))
        .arg("-i")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(deb_installed(root.path()).as_deref(), Some("1.24.1"));
    assert!(std::fs::read_to_string(root.at("/etc/passwd"))
        .unwrap()
        .contains("istio-proxy:x:998"));
    assert_eq!(
        std::fs::read_link(root.at("/etc/istio")).unwrap(),
        std::path::Path::new("/var/lib/istio")
    );
}

#[test]
fn fixture_rpm_installs_with_real_rpm() {
    let w = tempfile::tempdir().unwrap();
    let rpm = Fixture::new("1.24.1").build_rpm(w.path());
    let root = rpm_root(w.path());
    let o = std::process::Command::new("rpm")
        .arg("--root")
        .arg(root.path())
        .arg("-U")
        .arg(&rpm)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(rpm_installed(root.path()).as_deref(), Some("1.24.1-1"));
    assert!(std::fs::read_to_string(root.at("/etc/passwd"))
        .unwrap()
        .contains("istio-proxy:x:998"));
}

/// A deb root with the fixture v1.24.1 installed by real dpkg.
fn installed_deb_root() -> (tempfile::TempDir, common::TestRoot) {
    let w = tempfile::tempdir().unwrap();
    let deb = Fixture::new("1.24.1").build_deb(w.path());
    let root = deb_root(DEB_DEPS);
    let o = std::process::Command::new("dpkg")
        .arg(format!("--root={}", root.path().display()))
        .arg("-i")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (w, root)
}

/// The package's shape, as tools/packaging/packaging.mk builds it (tests/FIXTURES.md):
/// the six files, two conffiles, the Depends, only a postinst, the mesh file the
/// postinst touches, and the unit's directives in their sections.
#[test]
fn fixture_deb_mirrors_the_real_package() {
    let w = tempfile::tempdir().unwrap();
    let deb = Fixture::new("1.24.1").build_deb(w.path());
    let out = |args: &[&str]| {
        let o = std::process::Command::new("dpkg-deb")
            .args(args)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let listing = out(&["-c"]);
    let mut regular: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| l.rsplit(' ').next().unwrap().trim_start_matches('.'))
        .collect();
    regular.sort();
    assert_eq!(
        regular,
        [
            "/lib/systemd/system/istio.service",
            "/usr/local/bin/envoy",
            "/usr/local/bin/istio-start.sh",
            "/usr/local/bin/pilot-agent",
            "/var/lib/istio/envoy/envoy_bootstrap_tmpl.json",
            "/var/lib/istio/envoy/sidecar.env",
        ]
    );
    let depends = out(&["-f"]).replace('\n', " ");
    assert!(
        depends.contains("Depends: iproute2, iptables, sudo, hostname"),
        "{depends}"
    );
    let control = tempfile::tempdir().unwrap();
    let o = std::process::Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut scripts: Vec<String> = std::fs::read_dir(control.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    scripts.sort();
    assert_eq!(scripts, ["conffiles", "control", "postinst"]);
    assert_eq!(
        std::fs::read_to_string(control.path().join("conffiles")).unwrap(),
        "/var/lib/istio/envoy/sidecar.env\n/var/lib/istio/envoy/envoy_bootstrap_tmpl.json\n"
    );

    // The unit: StartLimitIntervalSec in [Unit], the ExecStartPre in [Service].
    let mut section = String::new();
    let mut seen = Vec::new();
    for l in ISTIO_SERVICE.lines() {
        if l.starts_with('[') {
            section = l.to_string();
        } else if let Some((k, v)) = l.split_once('=') {
            seen.push(format!("{section} {k}={v}"));
        }
    }
    for want in [
        "[Unit] StartLimitIntervalSec=0",
        "[Service] ExecStart=/usr/local/bin/istio-start.sh",
        "[Service] ExecStartPre=+/usr/bin/install -d -o istio-proxy -m 0755 /var/run/secrets",
        "[Service] ExecStopPost=/usr/local/bin/istio-start.sh clean",
        "[Service] Restart=always",
        "[Service] RestartSec=10",
        "[Service] KillMode=mixed",
        "[Install] WantedBy=multi-user.target",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} not in {seen:?}");
    }
    assert!(!ISTIO_SERVICE.contains("StartLimitInterval="));

    // What the postinst left: the mesh file, owned by istio-proxy; the conffiles'
    // settings all commented out.
    let (_w, root) = installed_deb_root();
    // (/etc/istio is an absolute link: read through its target inside the root.)
    let mesh = std::fs::metadata(root.at("/var/lib/istio/config/mesh")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((mesh.len(), mesh.uid()), (0, common::PROXY_ID));
    let env = std::fs::read_to_string(root.at("/var/lib/istio/envoy/sidecar.env")).unwrap();
    assert!(env.lines().all(|l| l.is_empty() || l.starts_with('#')));
    for key in [
        "ISTIO_INBOUND_INTERCEPTION_MODE=",
        "ISTIO_CUSTOM_IP_TABLES=",
        "CA_ADDR=",
    ] {
        assert!(env.contains(&format!("# {key}")), "{key}");
    }
    let json =
        std::fs::read_to_string(root.at("/var/lib/istio/envoy/envoy_bootstrap_tmpl.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&json).expect("valid JSON placeholder");
}

/// Runs the installed istio-start.sh as the fake systemd does (`sh`, `FIXTURE_ROOT`),
/// with `args`, until it exits (its code) or `stop_when` holds (then it is stopped with
/// SIGTERM: `None`). A hang guard of [`common::wait::PATIENCE`] fails the test; no
/// fixed time decides the outcome, so a loaded machine only makes it slower.
fn run_start(
    root: &common::TestRoot,
    args: &[&str],
    stop_when: impl Fn() -> bool,
) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = std::process::Command::new("sh")
        .arg(root.at("/usr/local/bin/istio-start.sh"))
        .args(args)
        .env("FIXTURE_ROOT", root.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + common::wait::PATIENCE;
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "istio-start.sh {args:?} neither exited nor got there (hang guard)"
        );
        if stop_when() {
            // SAFETY: SIGTERM to our own child, which has not been reaped yet.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (code, out)
}

/// istio-start.sh runs `pilot-agent istio-iptables` before it redirects anything (their
/// lines are the unit's output, the journal) and appends the proxy's output to
/// istio.log; in the `iptables-fail` scenario the real istio-iptables error is printed
/// there, the start fails, and the proxy never runs. `clean` runs the cleanup.
#[test]
fn start_script_runs_iptables_first_and_appends_to_istio_log() {
    let (_w, root) = installed_deb_root();
    let log = root.at("/var/log/istio/istio.log");
    std::fs::write(&log, "earlier line\n").unwrap();

    set_scenario(root.path(), "silent");
    // Until the proxy started (its log says so): it must then still be up.
    let started =
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\tStarting proxy agent"));
    let (code, out) = run_start(&root, &[], started);
    assert_eq!(
        code, None,
        "the proxy stays up until stopped; output: {out}"
    );
    assert!(
        out.contains("\tinfo\tPerforming cleanup of existing iptables"),
        "{out}"
    );
    assert!(
        out.contains("\tinfo\tApplying iptables chains and rules"),
        "{out}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("earlier line\n"),
        "istio.log truncated: {text}"
    );
    assert!(text.contains("\tStarting proxy agent"), "{text}");
    assert!(!text.contains("iptables"), "{text}");

    set_scenario(root.path(), "iptables-fail");
    let before = std::fs::read_to_string(&log).unwrap();
    let (code, out) = run_start(&root, &[], || false);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("\terror\tiptables binary iptables has no loaded kernel support and cannot be used")
            && out.contains("can't initialize iptables table `filter': Table does not exist (do you need to insmod?)"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        before,
        "the proxy ran"
    );

    // ExecStopPost: the cleanup fails the same way (and so does the unit's stop).
    let (code, out) = run_start(&root, &["clean"], || false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no loaded kernel support"), "{out}");

    set_scenario(root.path(), "ready");
    let ready = root.at(READY_FILE);
    std::fs::create_dir_all(ready.parent().unwrap()).unwrap();
    std::fs::write(&ready, "1\n").unwrap();
    let (code, out) = run_start(&root, &["clean"], || false);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("Performing cleanup of existing iptables"),
        "{out}"
    );
    assert!(!ready.exists(), "clean left the ready file");
}
