//! `vmagent uninstall` end to end: the fixture istio-sidecar .deb installed by real dpkg
//! into a throwaway root, the service run by the fake systemd, then taken out again.
//! Asserts each piece comes off (service stopped and disabled, package removed, hosts
//! block gone with the other lines kept, files removed, a pre-existing file restored),
//! that a second run does nothing, and what --purge and --dry-run do.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::fake_systemd::FakeSystemd;
use common::output::*;
use common::packages::*;
use common::*;

const V1: &str = "1.24.1";

fn vmagent(fake: &FakeSystemd, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmagent"));
    c.args(args);
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "VMAGENT_FAULT",
    ] {
        c.env_remove(v);
    }
    fake.configure(&mut c);
    c.output().expect("run vmagent")
}

/// A root with the package, the bundle applied and the service started, plus a
/// root-cert.pem and hosts lines that were there before vmagent.
fn onboarded() -> (tempfile::TempDir, TestRoot, FakeSystemd) {
    let work = tempfile::tempdir().unwrap();
    let deb = Fixture::new(V1).build_deb(work.path());
    let root = deb_root(DEB_DEPS);
    set_scenario(root.path(), "silent");
    fs::create_dir_all(root.at("/etc/certs")).unwrap();
    fs::write(root.at("/etc/certs/root-cert.pem"), "hand-copied cert\n").unwrap();
    fs::write(
        root.at("/etc/hosts"),
        "127.0.0.1 localhost\n10.1.1.1 other.example\n",
    )
    .unwrap();
    let fake = FakeSystemd::new(root.path());
    let b = Spec::example().write_tar(work.path());
    let r = root.path().to_str().unwrap().to_string();
    let o = vmagent(
        &fake,
        &[
            "apply",
            b.to_str().unwrap(),
            "--root",
            &r,
            "--package",
            deb.to_str().unwrap(),
            "--wait",
            "0",
        ],
    );
    let o = code(o, 0, "apply");
    assert!(
        stdout(&o).contains("service: istio.service enable --now"),
        "{}",
        show(&o)
    );
    assert_eq!(deb_installed(root.path()).as_deref(), Some(V1));
    // `--wait 0` returns while the service is starting: wait until the stand-in proxy
    // has written its start lines (Envoy's line in istio.err.log is the last one), so a
    // snapshot taken now stays the same while the ("silent") proxy idles.
    let err = root.at("/var/log/istio/istio.err.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::metadata(&err).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "the stand-in proxy did not start: {}",
            fake.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (work, root, fake)
}

fn uninstall(fake: &FakeSystemd, root: &Path, extra: &[&str]) -> Output {
    let r = root.to_str().unwrap();
    let mut args = vec!["uninstall", "--root", r];
    args.extend_from_slice(extra);
    vmagent(fake, &args)
}

#[test]
fn takes_everything_off_and_restores_what_was_there() {
    let (_w, root, fake) = onboarded();
    let wanted = root.at("/etc/systemd/system/multi-user.target.wants/istio.service");
    assert!(wanted.symlink_metadata().is_ok(), "enabled by apply");
    assert!(fake.main_pid().is_some(), "running after apply");

    let o = code(uninstall(&fake, root.path(), &[]), 0, "uninstall");
    let out = stdout(&o);
    for step in [
        "stop istio.service",
        "disable istio.service",
        "remove package istio-sidecar 1.24.1",
    ] {
        assert!(out.contains(step), "{step}: {}", show(&o));
    }
    let verbs = fake.verbs();
    assert!(
        verbs.iter().any(|v| v == "stop") && verbs.iter().any(|v| v == "disable"),
        "{verbs:?}"
    );
    assert!(fake.main_pid().is_none(), "still running");
    assert!(wanted.symlink_metadata().is_err(), "still enabled");
    assert_eq!(deb_installed(root.path()), None, "package still installed");
    assert_eq!(
        fs::read_to_string(root.at("/etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n10.1.1.1 other.example\n",
        "hosts: only vmagent's block goes"
    );
    assert_eq!(
        fs::read_to_string(root.at("/etc/certs/root-cert.pem")).unwrap(),
        "hand-copied cert\n",
        "a file that existed before vmagent is put back"
    );
    for f in [
        "/var/run/secrets/tokens/istio-token",
        "/var/lib/istio/envoy/cluster.env",
        "/var/lib/vmagent/state.json",
    ] {
        assert!(
            inroot(root.path(), f, false).symlink_metadata().is_err(),
            "{f} left behind"
        );
    }
    assert!(
        root.at("/var/lib/vmagent").is_dir(),
        "state kept without --purge"
    );

    // Idempotent: nothing left to do, nothing touched.
    let before = root.snapshot();
    let o = code(uninstall(&fake, root.path(), &[]), 0, "again");
    assert!(stdout(&o).contains("nothing to uninstall"), "{}", show(&o));
    assert_same(&before, &root.snapshot(), "second uninstall");
}

#[test]
fn dry_run_changes_nothing_and_purge_removes_state() {
    let (_w, root, fake) = onboarded();
    let before = root.snapshot();
    let calls = fake.calls().len();
    let o = code(
        uninstall(&fake, root.path(), &["--dry-run", "--purge"]),
        0,
        "dry run",
    );
    assert!(stdout(&o).contains("would do"), "{}", show(&o));
    assert!(
        stdout(&o).contains("remove /var/lib/vmagent (purge)"),
        "{}",
        show(&o)
    );
    assert_same(&before, &root.snapshot(), "dry run");
    assert!(
        fake.verbs_from(calls)
            .iter()
            .all(|v| v == "show" || v == "is-enabled"),
        "dry run changed the service: {:?}",
        fake.verbs_from(calls)
    );

    let o = code(uninstall(&fake, root.path(), &["--purge"]), 0, "purge");
    assert!(
        stdout(&o).contains("remove /var/lib/vmagent (purge)"),
        "{}",
        show(&o)
    );
    for d in ["/var/lib/vmagent", "/var/cache/vmagent", "/run/vmagent"] {
        assert!(!root.at(d).exists(), "{d} left after --purge");
    }
    assert_eq!(
        fs::read_to_string(root.at("/etc/certs/root-cert.pem")).unwrap(),
        "hand-copied cert\n"
    );
    // The package is purged (no conffiles left, not "rc"), and what its postinst made
    // is gone where nothing else is in it; /etc/certs keeps the hand-copied cert.
    let status = fs::read_to_string(root.at("/var/lib/dpkg/status")).unwrap();
    assert!(!status.contains("Package: istio-sidecar"), "{status}");
    for gone in [
        "/var/lib/istio",
        "/etc/istio",
        "/var/log/istio",
        "/var/run/secrets/tokens",
    ] {
        assert!(
            fs::symlink_metadata(root.at(gone)).is_err(),
            "{gone} left after --purge\n{}",
            show(&o)
        );
    }
    // After a purge there is no record of what vmagent wrote: nothing more is touched.
    let o = code(uninstall(&fake, root.path(), &[]), 0, "after purge");
    assert!(stdout(&o).contains("nothing to uninstall"), "{}", show(&o));
    assert!(root.at("/etc/certs/root-cert.pem").exists());
}

/// Issue 12 finding 6: a config naming a shared system directory as the state or cache
/// dir (written before vmagent refused such values) must not make `--purge` delete it:
/// the config is refused, uninstall goes by the defaults and says so, and dpkg's
/// database stays.
#[test]
fn purge_never_deletes_a_shared_directory_named_in_the_config() {
    let (_w, root, fake) = onboarded();
    fs::create_dir_all(root.at("/etc/vmagent")).unwrap();
    fs::write(
        root.at("/etc/vmagent/config.toml"),
        "[paths]\nstate_dir = \"/var/lib\"\ncache_dir = \"/var/cache\"\n",
    )
    .unwrap();
    fs::create_dir_all(root.at("/var/cache/apt")).unwrap();
    fs::write(root.at("/var/cache/apt/pkgcache.bin"), "apt's").unwrap();
    let o = code(uninstall(&fake, root.path(), &["--purge"]), 0, "purge");
    assert!(
        stdout(&o).contains("warning: config file")
            && stdout(&o).contains("paths.state_dir")
            && stdout(&o).contains("system directory"),
        "{}",
        show(&o)
    );
    let status = fs::read_to_string(root.at("/var/lib/dpkg/status")).unwrap_or_default();
    assert!(
        status.contains("Package: "),
        "dpkg status gone\n{}",
        show(&o)
    );
    assert!(!status.contains("Package: istio-sidecar"), "{status}");
    assert!(
        root.at("/var/cache/apt/pkgcache.bin").exists(),
        "{}",
        show(&o)
    );
    assert!(!root.at("/var/lib/vmagent").exists(), "{}", show(&o));
}

/// A real I/O failure (vmagent's state file made immutable, so removing it fails with
/// EPERM) is exit 1 with the path named, not the "unsupported" exit 4 it used to be.
#[test]
fn an_io_failure_is_exit_1_not_unsupported() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("var/lib/vmagent");
    fs::create_dir_all(&state).unwrap();
    let f = state.join("state.json");
    fs::write(&f, "{}\n").unwrap();
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&f)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        eprintln!("skipped: chattr +i is not supported here (file system or capability)");
        return;
    }
    // Made mutable again whatever happens, so the temporary root can be removed.
    struct Mutable<F: Fn(&str) -> bool>(F);
    impl<F: Fn(&str) -> bool> Drop for Mutable<F> {
        fn drop(&mut self) {
            (self.0)("-i");
        }
    }
    let _undo = Mutable(chattr);
    let o = Command::new(env!("CARGO_BIN_EXE_vmagent"))
        .args(["uninstall", "--root", t.path().to_str().unwrap()])
        .env_remove("VMAGENT_FAULT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("state.json"), "{err}");
}

/// A directory where vmagent expects a file (here /etc/hosts) is something in the way:
/// exit 4 with the path and what to do, not the I/O failure exit 1.
#[test]
fn a_directory_in_the_way_is_exit_4() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("etc/hosts")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vmagent"))
        .args(["uninstall", "--root", t.path().to_str().unwrap()])
        .env_remove("VMAGENT_FAULT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("/etc/hosts is a directory") && err.contains("move it away"),
        "{err}"
    );
}
