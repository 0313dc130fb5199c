//! `vmagent uninstall` puts back exactly what was there before vmagent (issue 12,
//! findings 5 and 6): links as links, files vmagent never wrote left alone, adopted hosts
//! lines back with their text and place, /etc/hosts' size limit, final newline and
//! absence as apply saw them; and `--purge` removes only what vmagent made.
//!
//! Files only (`--no-package --no-start`): the package and service steps are covered by
//! tests/uninstall.rs with real dpkg.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use common::output::*;
use common::*;

const ENTRY: &str = "192.0.2.10 istiod.istio-system.svc";

fn run(args: &[&str], fault: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmagent"));
    c.args(args).env_remove("VMAGENT_FAULT");
    for v in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"] {
        c.env_remove(v);
    }
    if let Some(f) = fault {
        c.env("VMAGENT_FAULT", f);
    }
    c.output().expect("run vmagent")
}

fn apply(root: &TestRoot, bundle: &Path, fault: Option<&str>) -> Output {
    let r = root.path().to_str().unwrap();
    let b = bundle.to_str().unwrap();
    run(
        &["apply", b, "--root", r, "--no-package", "--no-start"],
        fault,
    )
}

fn uninstall(root: &TestRoot, extra: &[&str]) -> Output {
    let mut args = vec!["uninstall", "--root", root.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args, None)
}

fn example(work: &Path) -> std::path::PathBuf {
    Spec::example().write_tar(work)
}

fn hosts(root: &TestRoot) -> Vec<u8> {
    fs::read(root.at("/etc/hosts")).unwrap()
}

#[test]
fn a_symlinked_root_cert_comes_back_as_the_same_link() {
    let w = tempfile::tempdir().unwrap();
    let root = TestRoot::new();
    fs::create_dir_all(root.at("/etc/certs")).unwrap();
    fs::write(root.at("/etc/certs/ca-from-ops.pem"), "ops CA\n").unwrap();
    symlink("ca-from-ops.pem", root.at("/etc/certs/root-cert.pem")).unwrap();
    ok(apply(&root, &example(w.path()), None), "apply");
    assert!(!lstat(&root.at("/etc/certs/root-cert.pem")).is_symlink());

    ok(uninstall(&root, &[]), "uninstall");
    let link = root.at("/etc/certs/root-cert.pem");
    assert!(lstat(&link).is_symlink(), "came back as a regular file");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("ca-from-ops.pem"));
    assert_eq!(
        fs::read_to_string(root.at("/etc/certs/ca-from-ops.pem")).unwrap(),
        "ops CA\n",
        "the link's target is never touched"
    );
}

#[test]
fn proxy_certificates_vmagent_never_wrote_stay() {
    let w = tempfile::tempdir().unwrap();
    let root = TestRoot::new();
    ok(apply(&root, &example(w.path()), None), "apply");
    // What the proxy writes once it has its workload certificate.
    for f in ["/etc/certs/cert-chain.pem", "/etc/certs/key.pem"] {
        fs::write(root.at(f), format!("{f} from the proxy\n")).unwrap();
    }
    let o = ok(uninstall(&root, &[]), "uninstall");
    for f in ["/etc/certs/cert-chain.pem", "/etc/certs/key.pem"] {
        assert_eq!(
            fs::read_to_string(root.at(f)).ok().as_deref(),
            Some(format!("{f} from the proxy\n").as_str()),
            "{f} deleted: {}",
            show(&o)
        );
    }
    // Without a record vmagent wrote them, nothing of the kind is listed.
    assert!(!stdout(&o).contains("cert-chain.pem"), "{}", show(&o));
}

/// Guard (passes before the fix too): certificates a legacy bundle installed are
/// vmagent's, and what they replaced comes back.
#[test]
fn legacy_certificates_are_restored_or_removed_by_the_record() {
    use rcgen::{CertificateParams, KeyPair};
    let w = tempfile::tempdir().unwrap();
    let params =
        CertificateParams::new(vec!["spiffe://cluster.local/ns/default/sa/default".into()])
            .unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let bundle = Spec::default()
        .set("root-cert.pem", example_member("root-cert.pem"))
        .set("cert-chain.pem", cert.pem())
        .set("key.pem", key.serialize_pem())
        .set(
            "cluster.env",
            "ISTIO_SERVICE_CIDR=10.0.0.0/20\nISTIO_SYSTEM_NAMESPACE=istio-system\nISTIO_CP_AUTH=MUTUAL_TLS\n",
        )
        .write_tar(w.path());
    let root = TestRoot::new();
    fs::create_dir_all(root.at("/etc/certs")).unwrap();
    fs::write(root.at("/etc/certs/key.pem"), "the admin's old key\n").unwrap();
    fs::set_permissions(
        root.at("/etc/certs/key.pem"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    ok(apply(&root, &bundle, None), "legacy apply");
    assert_eq!(
        fs::read_to_string(root.at("/etc/certs/key.pem")).unwrap(),
        key.serialize_pem()
    );
    ok(uninstall(&root, &[]), "uninstall");
    assert_eq!(
        fs::read_to_string(root.at("/etc/certs/key.pem")).unwrap(),
        "the admin's old key\n"
    );
    assert_eq!(
        lstat(&root.at("/etc/certs/key.pem")).permissions().mode() & 0o7777,
        0o640
    );
    assert!(root
        .at("/etc/certs/cert-chain.pem")
        .symlink_metadata()
        .is_err());
}

#[test]
fn an_adopted_hosts_line_comes_back_with_its_comment_and_place() {
    let w = tempfile::tempdir().unwrap();
    let root = TestRoot::new();
    let orig = format!(
        "127.0.0.1 localhost\n{ENTRY}   # pinned by ops, ticket 42\n10.0.0.1 other.internal\n"
    );
    fs::write(root.at("/etc/hosts"), &orig).unwrap();
    let o = ok(apply(&root, &example(w.path()), None), "apply");
    assert!(stdout(&o).contains("adopted"), "{}", show(&o));
    assert!(!String::from_utf8_lossy(&hosts(&root)).contains("ticket 42"));

    let o = ok(uninstall(&root, &[]), "uninstall");
    assert_eq!(
        String::from_utf8(hosts(&root)).unwrap(),
        orig,
        "{}",
        show(&o)
    );
    assert!(stdout(&o).contains("put back"), "{}", show(&o));
}

#[test]
fn a_file_copied_in_after_a_failed_first_apply_is_the_admins() {
    let w = tempfile::tempdir().unwrap();
    let b = example(w.path());
    let root = TestRoot::new();
    let o = apply(&root, &b, Some("fail:3"));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    // The admin puts their own CA in place by hand, then gives up on vmagent.
    fs::create_dir_all(root.at("/etc/certs")).unwrap();
    fs::write(root.at("/etc/certs/root-cert.pem"), "admin CA\n").unwrap();
    let o = ok(uninstall(&root, &[]), "uninstall after the failed apply");
    assert_eq!(
        fs::read_to_string(root.at("/etc/certs/root-cert.pem"))
            .ok()
            .as_deref(),
        Some("admin CA\n"),
        "{}",
        show(&o)
    );
    // Or tries again: the admin's file is what was there before vmagent's first write.
    ok(apply(&root, &b, None), "apply");
    ok(uninstall(&root, &[]), "uninstall");
    assert_eq!(
        fs::read_to_string(root.at("/etc/certs/root-cert.pem"))
            .ok()
            .as_deref(),
        Some("admin CA\n")
    );
}

#[test]
fn a_large_hosts_file_apply_accepted_is_restored_byte_for_byte() {
    let w = tempfile::tempdir().unwrap();
    let root = TestRoot::new();
    let mut orig = String::from("127.0.0.1 localhost\n");
    let mut n = 0;
    while orig.len() < 2 << 20 {
        orig.push_str(&format!(
            "10.{}.{}.{} blocked-{n}.ads.example\n",
            n >> 16 & 255,
            n >> 8 & 255,
            n & 255
        ));
        n += 1;
    }
    fs::write(root.at("/etc/hosts"), &orig).unwrap();
    ok(apply(&root, &example(w.path()), None), "apply");
    let o = ok(uninstall(&root, &[]), "uninstall");
    assert!(hosts(&root) == orig.as_bytes(), "{}", show(&o));
}

#[test]
fn a_hosts_file_without_a_final_newline_stays_without() {
    let w = tempfile::tempdir().unwrap();
    let root = TestRoot::new();
    let orig = "127.0.0.1 localhost\n10.0.0.1 other.internal";
    fs::write(root.at("/etc/hosts"), orig).unwrap();
    ok(apply(&root, &example(w.path()), None), "apply");
    ok(uninstall(&root, &[]), "uninstall");
    assert_eq!(String::from_utf8(hosts(&root)).unwrap(), orig);
}

#[test]
fn an_absent_hosts_file_is_absent_again_unless_the_admin_added_lines() {
    let w = tempfile::tempdir().unwrap();
    let b = example(w.path());
    let root = TestRoot::new();
    fs::remove_file(root.at("/etc/hosts")).unwrap();
    ok(apply(&root, &b, None), "apply");
    assert!(String::from_utf8_lossy(&hosts(&root)).contains(ENTRY));
    ok(uninstall(&root, &[]), "uninstall");
    assert!(
        root.at("/etc/hosts").symlink_metadata().is_err(),
        "left behind: {:?}",
        fs::read_to_string(root.at("/etc/hosts"))
    );

    // Created by vmagent, then used by the admin: the file stays with their line.
    ok(apply(&root, &b, None), "apply again");
    let mut h = b"10.0.0.7 mine.internal\n".to_vec();
    h.extend_from_slice(&hosts(&root));
    fs::write(root.at("/etc/hosts"), &h).unwrap();
    let o = ok(uninstall(&root, &[]), "uninstall");
    assert_eq!(
        String::from_utf8(hosts(&root)).unwrap(),
        "10.0.0.7 mine.internal\n"
    );
    assert!(stdout(&o).contains("the file stays"), "{}", show(&o));
}

#[test]
fn system_directories_are_refused_as_state_or_cache_dir() {
    let w = tempfile::tempdir().unwrap();
    let b = example(w.path());
    for (key, dir) in [("state_dir", "/var/lib"), ("cache_dir", "/var/cache")] {
        let root = TestRoot::new();
        fs::create_dir_all(root.at("/etc/vmagent")).unwrap();
        fs::write(
            root.at("/etc/vmagent/config.toml"),
            format!("[paths]\n{key} = \"{dir}\"\n"),
        )
        .unwrap();
        let before = root.snapshot();
        let o = apply(&root, &b, None);
        assert_eq!(o.status.code(), Some(2), "{key}: {}", show(&o));
        let e = stderr(&o);
        assert!(
            e.contains("config.toml")
                && e.contains(&format!("paths.{key}"))
                && e.contains("system directory"),
            "{}",
            show(&o)
        );
        assert_eq!(e.trim().lines().count(), 1, "one line: {}", show(&o));
        assert_same(&before, &root.snapshot(), "refused config");
    }
}

#[test]
fn purge_removes_only_the_directories_vmagent_made() {
    let w = tempfile::tempdir().unwrap();
    let root = TestRoot::new();
    // An existing shared directory as the cache, a new one for the state.
    fs::create_dir_all(root.at("/srv/shared")).unwrap();
    fs::write(root.at("/srv/shared/notes.txt"), "the admin's\n").unwrap();
    fs::create_dir_all(root.at("/etc/vmagent")).unwrap();
    fs::write(
        root.at("/etc/vmagent/config.toml"),
        "[paths]\nstate_dir = \"/srv/vmagent/state\"\ncache_dir = \"/srv/shared\"\n",
    )
    .unwrap();
    let sha = "ab".repeat(32);
    fs::write(
        root.at(&format!("/srv/shared/{sha}.deb")),
        "a cached package",
    )
    .unwrap();
    ok(apply(&root, &example(w.path()), None), "apply");
    assert!(root.at("/srv/vmagent/state/state.json").exists());

    let o = ok(uninstall(&root, &["--purge"]), "purge");
    assert_eq!(
        fs::read_to_string(root.at("/srv/shared/notes.txt"))
            .ok()
            .as_deref(),
        Some("the admin's\n"),
        "{}",
        show(&o)
    );
    assert!(
        !root.at(&format!("/srv/shared/{sha}.deb")).exists(),
        "{}",
        show(&o)
    );
    // vmagent made /srv/vmagent and its state dir: both go; /srv was there.
    assert!(!root.at("/srv/vmagent").exists(), "{}", show(&o));
    assert!(root.at("/srv").is_dir());
}
