//! The package step end to end: the real `vmagent` binary installs the fixture
//! istio-sidecar .deb / .rpm with real dpkg / rpm into throwaway roots.
//!
//! Covers: local files and bundle members as sources, the same-version skip, upgrades,
//! checksum refusal, OS and architecture detection, missing Depends, a failing
//! postinst, dry runs, and the JSON `package` object (contract: the package step CLI).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::output::*;
use common::packages::*;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_vmagent");

const V1: &str = "1.24.1";
const V2: &str = "1.24.2";

// ---------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------

/// `vmagent apply BUNDLE --root ROOT --no-start EXTRA...` (the package step enabled).
fn apply<S: AsRef<OsStr>>(root: &TestRoot, bundle: &Path, extra: &[S]) -> Output {
    Command::new(BIN)
        .arg("apply")
        .arg(bundle)
        .arg("--root")
        .arg(root.path())
        .arg("--no-start")
        .args(extra)
        .env_remove("VMAGENT_FAULT")
        .output()
        .expect("run vmagent")
}

/// The `package` object of a JSON document.
#[track_caller]
fn package(o: &Output) -> serde_json::Value {
    let doc = json(o);
    let p = doc["package"].clone();
    assert!(p.is_object(), "no package object: {}", show(o));
    p
}

/// The first stdout line holding `needle`.
#[track_caller]
fn line_with(o: &Output, needle: &str) -> String {
    stdout(o)
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} line: {}", show(o)))
        .to_string()
}

fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}

// ---------------------------------------------------------------------------------
// Work directories, packages, bundles
// ---------------------------------------------------------------------------------

/// A scratch directory for fixture packages and bundles.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Work {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn deb(&self, f: &Fixture) -> PathBuf {
        f.build_deb(self.path())
    }

    fn rpm(&self, f: &Fixture) -> PathBuf {
        f.build_rpm(self.path())
    }

    /// Writes `spec` as `<name>/bundle.tar`.
    fn bundle(&self, name: &str, spec: &Spec) -> PathBuf {
        let d = self.path().join(name);
        fs::create_dir_all(&d).expect("mkdir");
        spec.write_tar(&d)
    }

    /// The example bundle.
    fn example(&self) -> PathBuf {
        self.bundle("example", &Spec::example())
    }
}

/// The example bundle with `pkgs` as members (named like the files).
fn with_members(pkgs: &[&Path]) -> Spec {
    pkgs.iter().fold(Spec::example(), |s, p| {
        let name = p.file_name().unwrap().to_str().unwrap();
        s.with(name, Item::File(fs::read(p).expect("package"), 0o644))
    })
}

fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum");
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .expect("hash")
        .to_string()
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---------------------------------------------------------------------------------
// Looking at roots
// ---------------------------------------------------------------------------------

/// Asserts the example bundle is installed with the layout's content, mode and owner
/// (istio-proxy being the uid/gid the postinst created), /var/lib/istio/envoy is
/// root:root 0755 again, and /etc/istio is still the package's link.
#[track_caller]
fn assert_installed(root: &TestRoot) {
    let r = root.path();
    let passwd = fs::read_to_string(root.at("/etc/passwd")).expect("passwd");
    assert!(
        passwd.contains(&format!("istio-proxy:x:{PROXY_ID}:{PROXY_ID}:")),
        "postinst did not create istio-proxy: {passwd}"
    );
    let id = |proxy: bool| if proxy { PROXY_ID } else { 0 };
    for (member, dest, mode, proxy) in FILES {
        let p = inroot(r, dest, false);
        let md = lstat(&p);
        assert!(md.file_type().is_file(), "{dest} is not a regular file");
        assert_eq!(
            fs::read(&p).expect("read"),
            fs::read(example_dir().join(member)).expect("example member"),
            "{dest}: content differs from {member}"
        );
        assert_eq!(md.mode() & 0o7777, mode, "{dest}: mode {:o}", md.mode());
        assert_eq!(
            (md.uid(), md.gid()),
            (id(proxy), id(proxy)),
            "{dest}: owner"
        );
    }
    for (dir, mode, proxy) in DIRS {
        let p = inroot(r, dir, true);
        let md = lstat(&p);
        assert!(md.is_dir(), "{dir} is not a directory");
        assert_eq!(md.mode() & 0o7777, mode, "{dir}: mode {:o}", md.mode());
        assert_eq!((md.uid(), md.gid()), (id(proxy), id(proxy)), "{dir}: owner");
    }
    let envoy = lstat(&root.at("/var/lib/istio/envoy"));
    assert_eq!(
        (envoy.uid(), envoy.gid(), envoy.mode() & 0o7777),
        (0, 0, 0o755),
        "/var/lib/istio/envoy after the postinst chowned it"
    );
    let link = root.at("/etc/istio");
    assert!(
        lstat(&link).file_type().is_symlink(),
        "/etc/istio is no link"
    );
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("/var/lib/istio"));
    assert!(
        fs::read_to_string(root.at("/etc/hosts"))
            .unwrap()
            .contains("vmagent-managed"),
        "no managed block in /etc/hosts"
    );
}

/// Asserts no bundle file (and no /etc/hosts block) was written.
#[track_caller]
fn assert_no_bundle_files(root: &TestRoot, ctx: &str) {
    for (_, dest, _, _) in FILES {
        let p = inroot(root.path(), dest, false);
        assert!(
            fs::symlink_metadata(&p).is_err(),
            "{ctx}: {dest} was written"
        );
    }
    assert!(
        !fs::read_to_string(root.at("/etc/hosts"))
            .unwrap()
            .contains("vmagent-managed"),
        "{ctx}: /etc/hosts got a managed block"
    );
}

fn mtime_ns(p: &Path) -> i128 {
    let m = lstat(p);
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// vmagent's own directories, which a refused run may create.
fn vmagent_internal(p: &Path) -> bool {
    p.starts_with("var/cache/vmagent") || p.starts_with("var/lib/vmagent")
}

/// Asserts two snapshots are equal apart from vmagent's own directories (and the
/// mtimes of their parents, and `var/cache` appearing as their parent).
#[track_caller]
fn assert_same_but_internal(before: &Snapshot, after: &Snapshot, ctx: &str) {
    let norm = |s: &Snapshot, drop_cache: bool| -> Snapshot {
        s.iter()
            .filter(|(p, _)| !vmagent_internal(p))
            .filter(|(p, _)| !(drop_cache && p.as_path() == Path::new("var/cache")))
            .map(|(p, n)| {
                let mut n = n.clone();
                if ["var", "var/lib", "var/cache"]
                    .iter()
                    .any(|d| p.as_path() == Path::new(d))
                {
                    n.mtime_ns = 0;
                }
                (p.clone(), n)
            })
            .collect()
    };
    let had_cache = before.contains_key(Path::new("var/cache"));
    assert_same(&norm(before, false), &norm(after, !had_cache), ctx);
}

/// `.partial*` files left in ROOT/var/cache/vmagent.
fn partials(root: &TestRoot) -> Vec<String> {
    fs::read_dir(root.at("/var/cache/vmagent"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".partial"))
                .collect()
        })
        .unwrap_or_default()
}

fn dpkg_status(root: &TestRoot) -> String {
    fs::read_to_string(root.at("/var/lib/dpkg/status")).expect("dpkg status")
}

fn proxy_user(root: &TestRoot) -> bool {
    fs::read_to_string(root.at("/etc/passwd"))
        .unwrap()
        .contains("istio-proxy:")
}

// ---------------------------------------------------------------------------------
// 1. deb: fresh install from a local file
// ---------------------------------------------------------------------------------

#[test]
fn deb_fresh_install_from_local_file() {
    let w = Work::new();
    let deb = w.deb(&Fixture::new(V1));
    let b = w.example();
    let r = deb_root(DEB_DEPS);
    assert!(!proxy_user(&r));

    let o = ok(apply(&r, &b, &[OsStr::new("--package"), os(&deb)]), "apply");
    let err = stderr(&o).to_lowercase();
    assert!(
        err.lines()
            .any(|l| l.contains("warning") && (l.contains("checksum") || l.contains("sha256"))),
        "no warning about the missing checksum: {}",
        show(&o)
    );
    assert_eq!(deb_installed(r.path()).as_deref(), Some(V1));
    assert!(
        fs::read_to_string(r.at("/usr/local/bin/pilot-agent"))
            .unwrap()
            .contains(V1),
        "package payload not installed"
    );
    assert_installed(&r);
}

/// `--package x.deb` relative to the working directory reaches the installer as an
/// absolute path: apt-get and dnf would read a bare `x.deb` as a package name.
#[test]
fn relative_package_path_reaches_the_installer_as_a_path() {
    let w = Work::new();
    let deb = w.deb(&Fixture::new(V1));
    let b = w.example();
    let r = deb_root(DEB_DEPS);
    let name = deb.file_name().unwrap().to_str().unwrap();
    let o = Command::new(BIN)
        .current_dir(deb.parent().unwrap())
        .arg("apply")
        .arg(&b)
        .arg("--root")
        .arg(r.path())
        .args(["--no-start", "--package", name])
        .output()
        .unwrap();
    let o = ok(o, "relative --package");
    assert!(
        stdout(&o).contains(&format!("-i {}", deb.canonicalize().unwrap().display())),
        "{}",
        show(&o)
    );
    assert_eq!(deb_installed(r.path()).as_deref(), Some(V1));
}

// ---------------------------------------------------------------------------------
// 2. Same version installed: skipped
// ---------------------------------------------------------------------------------

#[test]
fn deb_same_version_is_skipped() {
    let w = Work::new();
    let deb = w.deb(&Fixture::new(V1));
    let b = w.example();
    let r = deb_root(DEB_DEPS);
    let pkg = [OsStr::new("--package"), os(&deb)];
    ok(apply(&r, &b, &pkg), "first apply");
    assert_eq!(deb_installed(r.path()).as_deref(), Some(V1));

    let status = r.at("/var/lib/dpkg/status");
    let list = r.at("/var/lib/dpkg/info/istio-sidecar.list");
    let agent = r.at("/usr/local/bin/pilot-agent");
    let times = || (mtime_ns(&status), mtime_ns(&list), mtime_ns(&agent));
    let before = times();

    let o = ok(apply(&r, &b, &pkg), "second apply");
    assert_eq!(times(), before, "dpkg ran again: {}", show(&o));
    let out = stdout(&o).to_lowercase();
    assert!(
        out.contains("already installed") || out.contains("up to date"),
        "stdout does not say the package is installed: {}",
        show(&o)
    );
    assert!(!out.contains("install-package"), "{}", show(&o));
    assert!(!out.contains("upgrade-package"), "{}", show(&o));

    let mut args = pkg.to_vec();
    args.extend([OsStr::new("--output"), OsStr::new("json")]);
    let o = ok(apply(&r, &b, &args), "json apply");
    assert_eq!(times(), before, "dpkg ran again (json): {}", show(&o));
    let p = package(&o);
    assert_eq!(p["action"], "none", "{}", show(&o));
    assert_eq!(p["installed_version"], V1, "{}", show(&o));
    assert_eq!(p["version"], V1, "{}", show(&o));

    // A changed bundle applies, and a note says the package is already installed.
    let b2 = w.bundle(
        "changed",
        &Spec::example().set("hosts", "192.0.2.11 istiod.istio-system.svc\n"),
    );
    let o = ok(apply(&r, &b2, &pkg), "changed bundle");
    assert_eq!(times(), before, "dpkg ran again (changed bundle)");
    let s = stdout(&o);
    assert!(
        s.lines()
            .any(|l| l.starts_with("note:") && l.contains("istio-sidecar") && l.contains(V1)),
        "no note about the installed package: {}",
        show(&o)
    );
    assert!(!s.contains("install-package"), "{}", show(&o));
    assert_eq!(deb_installed(r.path()).as_deref(), Some(V1));
}

// ---------------------------------------------------------------------------------
// 3. Upgrade
// ---------------------------------------------------------------------------------

#[test]
fn deb_upgrade_v1_to_v2() {
    let w = Work::new();
    let deb1 = w.deb(&Fixture::new(V1));
    let deb2 = w.deb(&Fixture::new(V2));
    let b = w.example();
    let r = deb_root(DEB_DEPS);
    ok(
        apply(&r, &b, &[OsStr::new("--package"), os(&deb1)]),
        "install v1",
    );
    assert_eq!(deb_installed(r.path()).as_deref(), Some(V1));

    let before = r.snapshot();
    let dry = |extra: &[&str]| {
        let mut a = vec![OsStr::new("--package"), os(&deb2), OsStr::new("--dry-run")];
        a.extend(extra.iter().map(OsStr::new));
        apply(&r, &b, &a)
    };
    let o = ok(dry(&["--output", "json"]), "json dry run");
    let p = package(&o);
    assert_eq!(p["installed_version"], V1, "{}", show(&o));
    assert_eq!(p["version"], V2, "{}", show(&o));
    assert_eq!(p["action"], "upgrade", "{}", show(&o));
    let o = ok(dry(&[]), "text dry run");
    let l = line_with(&o, "upgrade-package");
    assert!(l.contains(&format!("{V1} -> {V2}")), "{l}");
    assert_same(&before, &r.snapshot(), "dry runs");

    ok(
        apply(&r, &b, &[OsStr::new("--package"), os(&deb2)]),
        "upgrade",
    );
    assert_eq!(deb_installed(r.path()).as_deref(), Some(V2));
    assert!(fs::read_to_string(r.at("/usr/local/bin/pilot-agent"))
        .unwrap()
        .contains(V2));
    // The v2 postinst chowned /var/lib/istio/envoy again: re-asserted.
    assert_installed(&r);
}

// ---------------------------------------------------------------------------------
// 4. Checksum mismatch
// ---------------------------------------------------------------------------------

#[test]
fn wrong_checksum_is_refused_and_installs_nothing() {
    let w = Work::new();
    let deb = w.deb(&Fixture::new(V1));
    let b = w.example();
    let r = deb_root(DEB_DEPS);
    let before = r.snapshot();
    let wrong = "ab".repeat(32);
    let right = sha256(&deb);
    assert_ne!(wrong, right);

    let o = code(
        apply(
            &r,
            &b,
            &[
                OsStr::new("--package"),
                os(&deb),
                OsStr::new("--package-sha256"),
                OsStr::new(&wrong),
            ],
        ),
        5,
        "wrong sha256",
    );
    let err = stderr(&o).to_lowercase();
    assert!(
        err.contains("sha256") || err.contains("checksum"),
        "{}",
        show(&o)
    );
    assert_eq!(deb_installed(r.path()), None);
    assert_no_bundle_files(&r, "wrong sha256");
    assert_same_but_internal(&before, &r.snapshot(), "wrong sha256");
    assert!(partials(&r).is_empty(), "left: {:?}", partials(&r));
    // Only vmagent's temporary copies may be deleted, never the user's own file.
    assert!(deb.exists(), "the local --package file was deleted");
    assert_eq!(sha256(&deb), right, "the local --package file changed");
}

// ---------------------------------------------------------------------------------
// 5. Package as a bundle member
// ---------------------------------------------------------------------------------

#[test]
fn deb_from_bundle_member() {
    let w = Work::new();
    let deb = w.deb(&Fixture::new(V1));
    let b = w.bundle(
        "member",
        &Spec::example().with(
            "istio-sidecar.deb",
            Item::File(fs::read(&deb).unwrap(), 0o644),
        ),
    );
    let r = deb_root(DEB_DEPS);
    let o = ok(apply(&r, &b, &["--dry-run", "--output", "json"]), "dry run");
    let p = package(&o);
    assert!(
        p["source"]
            .as_str()
            .is_some_and(|s| s.contains("istio-sidecar.deb")),
        "{}",
        show(&o)
    );
    assert_eq!(p["action"], "install", "{}", show(&o));
    assert_eq!(deb_installed(r.path()), None);

    let o = ok(apply::<&str>(&r, &b, &[]), "apply");
    let err = stderr(&o).to_lowercase();
    assert!(
        err.lines()
            .any(|l| l.contains("warning") && (l.contains("checksum") || l.contains("sha256"))),
        "no warning about the missing checksum: {}",
        show(&o)
    );
    assert_eq!(deb_installed(r.path()).as_deref(), Some(V1));
    assert_installed(&r);
}

// ---------------------------------------------------------------------------------
// 6. OS detection
// ---------------------------------------------------------------------------------

/// A bundle holding the fixture .deb and .rpm as members.
fn both_formats(w: &Work) -> PathBuf {
    let deb = w.deb(&Fixture::new(V1));
    let rpm = w.rpm(&Fixture::new(V1));
    w.bundle("both", &with_members(&[&deb, &rpm]))
}

#[test]
fn rpm_root_picks_the_rpm_member() {
    let w = Work::new();
    let b = both_formats(&w);
    let r = rpm_root(w.path());
    let o = ok(apply(&r, &b, &["--dry-run", "--output", "json"]), "dry run");
    let p = package(&o);
    assert_eq!(p["format"], "rpm", "{}", show(&o));
    assert!(
        p["source"].as_str().is_some_and(|s| s.contains(".rpm")),
        "{}",
        show(&o)
    );
    ok(apply::<&str>(&r, &b, &[]), "apply");
    assert_eq!(rpm_installed(r.path()).as_deref(), Some("1.24.1-1"));
    assert!(!r.at("/var/lib/dpkg/info/istio-sidecar.list").exists());
    assert_installed(&r);
}

#[test]
fn deb_root_picks_the_deb_member() {
    let w = Work::new();
    let b = both_formats(&w);
    let r = deb_root(DEB_DEPS);
    let o = ok(apply(&r, &b, &["--dry-run", "--output", "json"]), "dry run");
    assert_eq!(package(&o)["format"], "deb", "{}", show(&o));
    ok(apply::<&str>(&r, &b, &[]), "apply");
    assert_eq!(deb_installed(r.path()).as_deref(), Some(V1));
    assert_installed(&r);
}

#[test]
fn unsupported_os_is_refused() {
    let w = Work::new();
    let b = both_formats(&w);
    let r = deb_root(DEB_DEPS);
    fs::write(
        r.at("/usr/lib/os-release"),
        "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.0\n",
    )
    .unwrap();
    let before = r.snapshot();
    let o = code(apply::<&str>(&r, &b, &[]), 4, "alpine");
    assert!(stderr(&o).contains("alpine"), "{}", show(&o));
    assert_eq!(deb_installed(r.path()), None);
    assert_no_bundle_files(&r, "alpine");
    assert_same_but_internal(&before, &r.snapshot(), "alpine");
}

#[test]
fn missing_os_release_is_refused() {
    let w = Work::new();
    let b = both_formats(&w);
    let r = deb_root(DEB_DEPS);
    fs::remove_file(r.at("/etc/os-release")).unwrap();
    fs::remove_file(r.at("/usr/lib/os-release")).unwrap();
    let o = code(apply::<&str>(&r, &b, &[]), 4, "no os-release");
    assert!(stderr(&o).contains("os-release"), "{}", show(&o));
    assert_eq!(deb_installed(r.path()), None);
    assert_no_bundle_files(&r, "no os-release");
}

// ---------------------------------------------------------------------------------
// 7. rpm: install, skip, upgrade
// ---------------------------------------------------------------------------------

#[test]
fn rpm_install_skip_upgrade() {
    let w = Work::new();
    let rpm1 = w.rpm(&Fixture::new(V1));
    let rpm2 = w.rpm(&Fixture::new(V2));
    let b = w.example();
    let r = rpm_root(w.path());

    ok(
        apply(&r, &b, &[OsStr::new("--package"), os(&rpm1)]),
        "install",
    );
    assert_eq!(rpm_installed(r.path()).as_deref(), Some("1.24.1-1"));
    assert_installed(&r);

    let agent = r.at("/usr/local/bin/pilot-agent");
    let t = mtime_ns(&agent);
    let o = ok(
        apply(
            &r,
            &b,
            &[
                OsStr::new("--package"),
                os(&rpm1),
                OsStr::new("--output"),
                OsStr::new("json"),
            ],
        ),
        "same version",
    );
    let p = package(&o);
    assert_eq!(p["action"], "none", "{}", show(&o));
    assert_eq!(p["format"], "rpm", "{}", show(&o));
    assert_eq!(mtime_ns(&agent), t, "rpm ran again");
    assert_eq!(rpm_installed(r.path()).as_deref(), Some("1.24.1-1"));

    let o = ok(
        apply(
            &r,
            &b,
            &[
                OsStr::new("--package"),
                os(&rpm2),
                OsStr::new("--dry-run"),
                OsStr::new("--output"),
                OsStr::new("json"),
            ],
        ),
        "upgrade dry run",
    );
    let p = package(&o);
    assert_eq!(p["action"], "upgrade", "{}", show(&o));
    assert!(
        p["installed_version"]
            .as_str()
            .is_some_and(|v| v.starts_with(V1)),
        "{}",
        show(&o)
    );
    assert!(
        p["version"].as_str().is_some_and(|v| v.starts_with(V2)),
        "{}",
        show(&o)
    );

    ok(
        apply(&r, &b, &[OsStr::new("--package"), os(&rpm2)]),
        "upgrade",
    );
    assert_eq!(rpm_installed(r.path()).as_deref(), Some("1.24.2-1"));
    assert!(fs::read_to_string(&agent).unwrap().contains(V2));
    assert_installed(&r);
}

// ---------------------------------------------------------------------------------
// 8. Missing dependencies
// ---------------------------------------------------------------------------------

#[test]
fn missing_depends_are_named_and_dpkg_not_run() {
    let w = Work::new();
    let deb = w.deb(&Fixture::new(V1));
    let b = w.example();
    let r = deb_root(&["iproute2"]);
    let status = dpkg_status(&r);
    let o = code(
        apply(&r, &b, &[OsStr::new("--package"), os(&deb)]),
        4,
        "missing depends",
    );
    let err = stderr(&o);
    for dep in ["sudo", "iptables", "hostname"] {
        assert!(err.contains(dep), "{dep} not named: {}", show(&o));
    }
    assert_eq!(deb_installed(r.path()), None);
    assert_eq!(dpkg_status(&r), status, "dpkg ran");
    assert!(!r.at("/var/lib/dpkg/info/istio-sidecar.list").exists());
    assert!(
        !r.at("/usr/local/bin/pilot-agent").exists(),
        "dpkg unpacked"
    );
    assert_no_bundle_files(&r, "missing depends");
}

/// A Depends clause with a version the root does not have: before, only the names were
/// checked, dpkg ran, failed on the dependency and left istio-sidecar unpacked but
/// unconfigured (exit 6, the root changed). Now it is refused before dpkg runs, naming
/// the version that is there; a satisfied relation installs.
#[test]
fn versioned_depends_are_checked_before_dpkg_runs() {
    let w = Work::new();
    let too_new = w.deb(&Fixture {
        depends: ["iproute2 (>= 5.0)", "iptables", "sudo | doas", "hostname"]
            .map(String::from)
            .to_vec(),
        ..Fixture::new(V1)
    });
    let b = w.example();
    let r = deb_root(DEB_DEPS);
    let status = dpkg_status(&r);
    let o = code(
        apply(&r, &b, &[OsStr::new("--package"), os(&too_new)]),
        4,
        "unmet versioned depends",
    );
    assert!(
        stderr(&o).contains("iproute2 (>= 5.0) (iproute2 1.0 is installed)"),
        "{}",
        show(&o)
    );
    assert_eq!(dpkg_status(&r), status, "dpkg ran");
    assert!(!r.at("/var/lib/dpkg/info/istio-sidecar.list").exists());
    assert_no_bundle_files(&r, "unmet versioned depends");

    // (Another directory: the fixture's file name is the same.)
    let w2 = Work::new();
    let fits = w2.deb(&Fixture {
        depends: ["iproute2 (>= 0.9)", "iptables (<< 2:0)", "sudo", "hostname"]
            .map(String::from)
            .to_vec(),
        ..Fixture::new(V1)
    });
    ok(
        apply(&r, &b, &[OsStr::new("--package"), os(&fits)]),
        "satisfied versioned depends",
    );
    assert_eq!(deb_installed(r.path()).as_deref(), Some(V1));
}

// ---------------------------------------------------------------------------------
// 9. Failing postinst
// ---------------------------------------------------------------------------------

#[test]
fn failing_postinst_exits_6_with_dpkg_output() {
    let w = Work::new();
    let deb = w.deb(&Fixture {
        postinst_exit: 1,
        ..Fixture::new(V1)
    });
    let b = w.example();
    let r = deb_root(DEB_DEPS);
    let o = code(
        apply(&r, &b, &[OsStr::new("--package"), os(&deb)]),
        6,
        "failing postinst",
    );
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error:") && l.contains("dpkg")),
        "the error line does not name the dpkg command: {}",
        show(&o)
    );
    assert!(
        format!("{}{}", stdout(&o), err).contains("simulated failure"),
        "dpkg's output not shown: {}",
        show(&o)
    );
    assert_eq!(deb_installed(r.path()), None);
    assert_no_bundle_files(&r, "failing postinst");
}

// ---------------------------------------------------------------------------------
// 10. Dry run
// ---------------------------------------------------------------------------------

#[test]
fn dry_run_with_package_writes_nothing() {
    let w = Work::new();
    let deb = w.deb(&Fixture::new(V1));
    let b = w.example();
    let r = deb_root(DEB_DEPS);
    let before = r.snapshot();
    let sum = sha256(&deb);

    let o = ok(
        apply(
            &r,
            &b,
            &[
                OsStr::new("--package"),
                os(&deb),
                OsStr::new("--package-sha256"),
                OsStr::new(&sum),
                OsStr::new("--dry-run"),
            ],
        ),
        "dry run with sha256",
    );
    assert_same(&before, &r.snapshot(), "dry run with sha256");
    let l = line_with(&o, "install-package");
    assert!(l.contains(&format!("none -> {V1}")), "{l}");
    assert!(l.contains("local file"), "{l}");
    assert!(
        l.contains("--package-sha256") || l.contains("flag"),
        "checksum source not shown: {l}"
    );
    assert!(
        stdout(&o).contains("dry run: nothing was written"),
        "{}",
        show(&o)
    );

    let o = ok(
        apply(
            &r,
            &b,
            &[OsStr::new("--package"), os(&deb), OsStr::new("--dry-run")],
        ),
        "dry run without sha256",
    );
    assert_same(&before, &r.snapshot(), "dry run without sha256");
    let l = line_with(&o, "install-package");
    assert!(l.contains(&format!("none -> {V1}")), "{l}");
    assert_eq!(deb_installed(r.path()), None);
    assert!(!r.at("/var/cache/vmagent").exists());
}

// ---------------------------------------------------------------------------------
// 11. Architecture
// ---------------------------------------------------------------------------------

#[test]
fn foreign_arch_package_is_refused() {
    assert_eq!(std::env::consts::ARCH, "x86_64", "test assumes amd64");
    let w = Work::new();
    let deb = w.deb(&Fixture {
        arch: "arm64".into(),
        ..Fixture::new(V1)
    });
    let b = w.example();
    let r = deb_root(DEB_DEPS);
    let before = r.snapshot();
    let o = code(
        apply(&r, &b, &[OsStr::new("--package"), os(&deb)]),
        4,
        "arm64 package",
    );
    let err = stderr(&o);
    assert!(
        err.contains("arm64") && err.contains("amd64"),
        "{}",
        show(&o)
    );
    assert_eq!(deb_installed(r.path()), None);
    assert_no_bundle_files(&r, "arm64 package");
    assert_same_but_internal(&before, &r.snapshot(), "arm64 package");
}

// ---------------------------------------------------------------------------------
// 12. The JSON package object
// ---------------------------------------------------------------------------------

#[track_caller]
fn assert_package_shape(p: &serde_json::Value, ctx: &str) {
    let obj = p.as_object().expect("object");
    for key in [
        "source",
        "format",
        "arch",
        "installed_version",
        "version",
        "sha256",
        "checksum_source",
        "download",
        "action",
    ] {
        assert!(obj.contains_key(key), "{ctx}: no {key:?} in {p}");
    }
    assert!(p["source"].is_string(), "{ctx}: source {p}");
    let one_of = |k: &str, set: &[&str]| {
        assert!(
            p[k].as_str().is_some_and(|v| set.contains(&v)),
            "{ctx}: {k} not one of {set:?}: {p}"
        );
    };
    one_of("format", &["deb", "rpm"]);
    one_of("arch", &["amd64", "arm64"]);
    one_of("checksum_source", &["flag", "config", "published", "none"]);
    one_of("download", &["needed", "cached", "local", "none"]);
    one_of("action", &["install", "upgrade", "none"]);
    for k in ["installed_version", "version"] {
        assert!(
            p[k].is_null() || p[k].is_string(),
            "{ctx}: {k} neither null nor string: {p}"
        );
    }
    assert!(
        p["sha256"].is_null() || p["sha256"].as_str().is_some_and(is_hex64),
        "{ctx}: sha256 neither null nor hex: {p}"
    );
}

#[test]
fn json_package_object() {
    let w = Work::new();
    let deb = w.deb(&Fixture::new(V1));
    let b = w.example();
    let r = deb_root(DEB_DEPS);
    let sum = sha256(&deb);

    let o = ok(
        apply(
            &r,
            &b,
            &[
                OsStr::new("--package"),
                os(&deb),
                OsStr::new("--package-sha256"),
                OsStr::new(&sum),
                OsStr::new("--dry-run"),
                OsStr::new("--output"),
                OsStr::new("json"),
            ],
        ),
        "dry run with sha256",
    );
    let p = package(&o);
    assert_package_shape(&p, "with sha256");
    assert_eq!(p["format"], "deb");
    assert_eq!(p["arch"], "amd64");
    assert!(p["installed_version"].is_null(), "{p}");
    assert_eq!(p["version"], V1);
    assert_eq!(p["sha256"], sum.as_str());
    assert_eq!(p["checksum_source"], "flag");
    assert_eq!(p["download"], "local");
    assert_eq!(p["action"], "install");
    assert!(
        p["source"]
            .as_str()
            .unwrap()
            .contains(deb.file_name().unwrap().to_str().unwrap()),
        "{p}"
    );

    let o = ok(
        apply(
            &r,
            &b,
            &[
                OsStr::new("--package"),
                os(&deb),
                OsStr::new("--output"),
                OsStr::new("json"),
            ],
        ),
        "apply without sha256",
    );
    let doc = json(&o);
    assert_eq!(doc["result"], "applied", "{}", show(&o));
    let p = package(&o);
    assert_package_shape(&p, "without sha256");
    assert_eq!(p["checksum_source"], "none");
    assert_eq!(p["action"], "install");
    assert!(
        doc["warnings"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| {
                w.as_str().is_some_and(|s| {
                    let s = s.to_lowercase();
                    s.contains("checksum") || s.contains("sha256")
                })
            })),
        "no checksum warning: {}",
        show(&o)
    );
    assert_eq!(deb_installed(r.path()).as_deref(), Some(V1));
}
