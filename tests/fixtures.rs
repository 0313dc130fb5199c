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
