//! Issue 14 part 0: a VM onboarded by `vmagent apply` alone (no daemon) gets its token
//! back after a reboot. apply keeps a root-only copy of the token in force in its state
//! directory and a systemd-tmpfiles `C` rule that copies it onto the /run tmpfs at boot;
//! uninstall removes both and puts back whatever stood at the rule's path.
//!
//! The reboot is simulated on a temp root laid out like a systemd VM (/var/run ->
//! ../run): /run is emptied, then the real `systemd-tmpfiles --root=ROOT --create RULE`
//! runs, as systemd-tmpfiles-setup.service does at boot.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use common::output::*;
use common::*;

const RULE: &str = "/etc/tmpfiles.d/vmagent-istio-token.conf";
const STORE: &str = "/var/lib/vmagent/istio-token";
const TOKEN: &str = "/run/secrets/tokens/istio-token";

/// A root laid out like a systemd VM: /var/run -> ../run, /etc/tmpfiles.d present.
fn vm_root() -> TestRoot {
    let r = TestRoot::new();
    for d in ["/run", "/var/lib", "/etc/tmpfiles.d"] {
        fs::create_dir_all(r.at(d)).expect("mkdir");
    }
    symlink("../run", r.at("/var/run")).expect("var/run link");
    r
}

fn vm(args: &[&OsStr], fault: Option<&str>) -> Output {
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

fn apply_with(r: &TestRoot, bundle: &Path, extra: &[&str], fault: Option<&str>) -> Output {
    let mut args = vec![
        OsStr::new("apply"),
        bundle.as_os_str(),
        OsStr::new("--root"),
        r.path().as_os_str(),
        OsStr::new("--no-package"),
        OsStr::new("--no-start"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    vm(&args, fault)
}

fn apply(r: &TestRoot, bundle: &Path) -> Output {
    apply_with(r, bundle, &[], None)
}

fn uninstall(r: &TestRoot, extra: &[&str]) -> Output {
    let mut args = vec![
        OsStr::new("uninstall"),
        OsStr::new("--root"),
        r.path().as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    vm(&args, None)
}

/// Mode bits, uid and gid of a path (not followed).
fn meta(p: &Path) -> (u32, u32, u32) {
    let m = lstat(p);
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

/// A reboot: the /run tmpfs comes back empty, then systemd-tmpfiles-setup.service
/// applies the rule. False (the test is skipped) when systemd-tmpfiles is missing.
fn reboot(r: &TestRoot) -> bool {
    for e in fs::read_dir(r.at("/run")).expect("read run") {
        let p = e.expect("entry").path();
        if lstat(&p).is_dir() {
            fs::remove_dir_all(&p).expect("empty /run");
        } else {
            fs::remove_file(&p).expect("empty /run");
        }
    }
    assert!(!r.at(TOKEN).exists());
    let out = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", r.path().display()))
        .arg("--create")
        .arg(r.at(RULE))
        .output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: systemd-tmpfiles is not installed");
            false
        }
        Err(e) => panic!("systemd-tmpfiles: {e}"),
        Ok(o) => {
            let o = ok(o, "systemd-tmpfiles --create");
            // Never a complaint, not even the legacy /var/run warning.
            assert!(stderr(&o).is_empty(), "{}", show(&o));
            true
        }
    }
}

/// A snapshot without modification times: uninstall rewrites what it puts back.
fn shape(r: &TestRoot) -> Snapshot {
    let mut s = r.snapshot();
    for n in s.values_mut() {
        n.mtime_ns = 0;
    }
    s
}

#[test]
fn after_a_reboot_the_rule_puts_the_token_back_for_the_proxy() {
    let w = tempfile::tempdir().unwrap();
    let r = vm_root();
    let b = Spec::example().write_tar(w.path());
    ok(apply(&r, &b), "apply");
    let token = example_member("istio-token");
    assert_eq!(fs::read(r.at(STORE)).unwrap(), token);
    assert_eq!(meta(&r.at(STORE)), (0o600, 0, 0), "root-only copy");
    assert_eq!(meta(&r.at("/var/lib/vmagent")).0, 0o700);
    assert_eq!(meta(&r.at(RULE)), (0o644, 0, 0));
    let rule = fs::read_to_string(r.at(RULE)).unwrap();
    assert!(!rule.contains(std::str::from_utf8(&token).unwrap().trim()));
    assert!(
        rule.contains(&format!("C {TOKEN} 0600 {PROXY_ID} {PROXY_ID} - {STORE}\n")),
        "{rule}"
    );

    if !reboot(&r) {
        return;
    }
    assert_eq!(fs::read(r.at(TOKEN)).unwrap(), token);
    assert_eq!(meta(&r.at(TOKEN)), (0o600, PROXY_ID, PROXY_ID));
    for d in ["/run/secrets", "/run/secrets/tokens"] {
        assert_eq!(meta(&r.at(d)), (0o755, PROXY_ID, PROXY_ID), "{d}");
    }
    let o = ok(apply(&r, &b), "apply after the reboot");
    assert!(stdout(&o).contains("up to date"), "{}", show(&o));
}

#[test]
fn a_new_token_refreshes_the_boot_copy_and_a_token_in_place_is_kept() {
    let w = tempfile::tempdir().unwrap();
    let r = vm_root();
    ok(apply(&r, &Spec::example().write_tar(w.path())), "apply A");
    let rule = fs::read(r.at(RULE)).unwrap();
    let new = token_for("system:serviceaccount:vm-ns:vm-sa");
    let b = Spec::example().set("istio-token", new.clone());
    let d = w.path().join("b");
    fs::create_dir_all(&d).unwrap();
    ok(apply(&r, &b.write_tar(&d)), "apply a new token");
    assert_eq!(fs::read(r.at(STORE)).unwrap(), new, "the token in force");
    assert_eq!(fs::read(r.at(RULE)).unwrap(), rule, "the rule is unchanged");
    if !reboot(&r) {
        return;
    }
    assert_eq!(fs::read(r.at(TOKEN)).unwrap(), new);
    // `C` copies only when absent: a token already there (the daemon's) stays.
    fs::write(r.at(TOKEN), "newer").unwrap();
    let o = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", r.path().display()))
        .args(["--create".as_ref(), r.at(RULE).as_os_str()])
        .output()
        .unwrap();
    ok(o, "systemd-tmpfiles again");
    assert_eq!(fs::read(r.at(TOKEN)).unwrap(), b"newer");
}

#[test]
fn the_dry_run_lists_both_and_never_shows_the_token() {
    let w = tempfile::tempdir().unwrap();
    let r = vm_root();
    let before = shape(&r);
    let o = ok(
        apply_with(
            &r,
            &Spec::example().write_tar(w.path()),
            &["--dry-run"],
            None,
        ),
        "dry run",
    );
    let out = stdout(&o);
    assert!(out.contains(RULE) && out.contains(STORE), "{out}");
    let token = String::from_utf8(example_member("istio-token")).unwrap();
    assert!(!out.contains(token.trim()), "the token leaked: {out}");
    assert_eq!(before, shape(&r), "a dry run writes nothing");
}

#[test]
fn uninstall_removes_the_rule_and_the_copy_and_purge_leaves_the_root_as_before() {
    let w = tempfile::tempdir().unwrap();
    let r = vm_root();
    let before = shape(&r);
    ok(apply(&r, &Spec::example().write_tar(w.path())), "apply");
    ok(uninstall(&r, &[]), "uninstall");
    assert!(!r.at(RULE).exists() && !r.at(STORE).exists());
    ok(uninstall(&r, &["--purge"]), "uninstall --purge");
    let after = shape(&r);
    assert_same(&before, &after, "apply + uninstall --purge");
}

#[test]
fn a_link_at_the_rules_path_is_replaced_and_put_back() {
    let w = tempfile::tempdir().unwrap();
    let r = vm_root();
    fs::write(r.at("/etc/admin.conf"), "d /run/admin 0755 root root -\n").unwrap();
    symlink("../admin.conf", r.at(RULE)).unwrap();
    let before = shape(&r);
    ok(apply(&r, &Spec::example().write_tar(w.path())), "apply");
    assert!(lstat(&r.at(RULE)).is_file(), "written through the link");
    assert_eq!(
        fs::read_to_string(r.at("/etc/admin.conf")).unwrap(),
        "d /run/admin 0755 root root -\n",
        "the link's target is never touched"
    );
    ok(uninstall(&r, &[]), "uninstall");
    assert_eq!(
        fs::read_link(r.at(RULE)).unwrap(),
        Path::new("../admin.conf")
    );
    ok(uninstall(&r, &["--purge"]), "uninstall --purge");
    assert_same(&before, &shape(&r), "apply + uninstall over a link");
}

#[test]
fn an_admins_own_file_at_the_rules_path_comes_back() {
    let w = tempfile::tempdir().unwrap();
    let r = vm_root();
    fs::write(r.at(RULE), "# the admin's\n").unwrap();
    fs::set_permissions(r.at(RULE), fs::Permissions::from_mode(0o640)).unwrap();
    let before = shape(&r);
    ok(apply(&r, &Spec::example().write_tar(w.path())), "apply");
    assert!(fs::read_to_string(r.at(RULE)).unwrap().contains("C /run/"));
    ok(uninstall(&r, &["--purge"]), "uninstall --purge");
    assert_same(
        &before,
        &shape(&r),
        "apply + uninstall over the admin's file",
    );
}

#[test]
fn a_directory_at_the_rules_path_is_refused_with_nothing_changed() {
    let w = tempfile::tempdir().unwrap();
    let r = vm_root();
    fs::create_dir(r.at(RULE)).unwrap();
    let before = shape(&r);
    let o = code(
        apply(&r, &Spec::example().write_tar(w.path())),
        4,
        "apply over a directory",
    );
    assert!(stderr(&o).contains(RULE), "{}", show(&o));
    assert_same(&before, &shape(&r), "refused apply");
}

#[test]
fn a_failed_apply_leaves_neither_the_rule_nor_the_copy() {
    let w = tempfile::tempdir().unwrap();
    let r = vm_root();
    let b = Spec::example().write_tar(w.path());
    let o = ok(
        apply_with(&r, &b, &["--dry-run", "--output", "json"], None),
        "dry run",
    );
    let n = json(&o)["actions"].as_array().expect("actions").len();
    let o = code(
        apply_with(&r, &b, &[], Some(&format!("fail:{n}"))),
        1,
        "apply failing at its end",
    );
    assert!(stderr(&o).contains("rolled back"), "{}", show(&o));
    assert!(!r.at(RULE).exists() && !r.at(STORE).exists());
    ok(apply(&r, &b), "apply again");
    assert!(r.at(RULE).exists() && r.at(STORE).exists());
}

#[test]
fn with_skip_owner_the_rule_leaves_owners_alone() {
    let w = tempfile::tempdir().unwrap();
    let r = vm_root();
    let b = Spec::example().write_tar(w.path());
    ok(
        apply_with(&r, &b, &["--skip-owner"], None),
        "apply --skip-owner",
    );
    let rule = fs::read_to_string(r.at(RULE)).unwrap();
    assert!(
        rule.contains(&format!("C {TOKEN} 0600 - - - {STORE}\n")),
        "{rule}"
    );
    assert!(
        rule.contains("d /run/secrets/tokens 0755 - - -\n"),
        "{rule}"
    );
}
