//! vmagent's own packages: `packaging/build.sh` builds the .deb and .rpm once per test
//! binary (around the debug binary, gzip-compressed for speed), and real dpkg / rpm
//! install, reinstall, remove and purge them in throwaway roots. Also the default
//! config (every key documented with its default), the istio.service drop-in, and the
//! cloud-init examples (valid cloud-config whose config and bundle vmagent accepts).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::packages::{deb_root, rpm_root};
use common::TestRoot;

const BIN: &str = env!("CARGO_BIN_EXE_vmagent");
const TOP: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

// ---------------------------------------------------------------------------------
// Building once
// ---------------------------------------------------------------------------------

struct Built {
    deb: PathBuf,
    rpm: PathBuf,
}

static WORK: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_work() {
    if let Some(w) = WORK.get() {
        let _ = fs::remove_dir_all(w);
    }
}

/// The two packages, built by `packaging/build.sh --binary <debug vmagent>` on first use.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let work = tempfile::Builder::new()
            .prefix("packaging-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir")
            .keep();
        WORK.set(work.clone()).expect("built once");
        // SAFETY: registers a plain extern "C" function, run by exit(3).
        unsafe { libc::atexit(remove_work) };
        let o = run(Command::new("bash")
            .arg(Path::new(TOP).join("packaging/build.sh"))
            .arg("--out")
            .arg(&work)
            .arg("--binary")
            .arg(BIN)
            .env("PKG_COMPRESSION", "gzip"));
        let stdout = String::from_utf8(o.stdout).expect("utf-8");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "build.sh prints the two paths: {stdout}");
        let (deb, rpm) = (PathBuf::from(lines[0]), PathBuf::from(lines[1]));
        assert!(deb.is_file() && rpm.is_file(), "{stdout}");
        Built { deb, rpm }
    })
}

fn show(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd`, which must succeed.
fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}\n{}", show(&o));
    o
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("utf-8")
}

fn host_arch() -> String {
    stdout(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string()
}

fn read(rel: &str) -> String {
    fs::read_to_string(Path::new(TOP).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------------------------
// What the packages install
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Deb,
    Rpm,
}

/// Every installed file with its mode, and the source file it must equal (if any).
fn files(kind: Kind) -> Vec<(&'static str, u32, Option<&'static str>)> {
    let (units, zsh, license) = match kind {
        Kind::Deb => (
            "/lib/systemd/system",
            "/usr/share/zsh/vendor-completions/_vmagent",
            "/usr/share/doc/vmagent/copyright",
        ),
        Kind::Rpm => (
            "/usr/lib/systemd/system",
            "/usr/share/zsh/site-functions/_vmagent",
            "/usr/share/doc/vmagent/LICENSE",
        ),
    };
    let unit: &'static str = Box::leak(format!("{units}/vmagent.service").into_boxed_str());
    let dropin: &'static str =
        Box::leak(format!("{units}/istio.service.d/10-vmagent.conf").into_boxed_str());
    vec![
        ("/usr/bin/vmagent", 0o755, None),
        (unit, 0o644, Some("systemd/vmagent.service")),
        (
            dropin,
            0o644,
            Some("systemd/istio.service.d/10-vmagent.conf"),
        ),
        (
            "/etc/vmagent/config.toml",
            0o600,
            Some("packaging/config.toml"),
        ),
        ("/usr/share/man/man1/vmagent.1.gz", 0o644, None),
        (
            "/usr/share/bash-completion/completions/vmagent",
            0o644,
            None,
        ),
        (zsh, 0o644, None),
        (
            "/usr/share/fish/vendor_completions.d/vmagent.fish",
            0o644,
            None,
        ),
        ("/usr/share/doc/vmagent/README.md", 0o644, Some("README.md")),
        (license, 0o644, None),
    ]
}

const CONFIG: &str = "/etc/vmagent/config.toml";
const CONFIG_D: &str = "/etc/vmagent/config.d";

/// Every file and the config.d directory are installed, root-owned, with their modes
/// and contents, and the installed binary runs.
fn assert_installed(r: &TestRoot, kind: Kind) {
    let root = unsafe { libc::geteuid() } == 0;
    for (path, mode, source) in files(kind) {
        let p = r.at(path);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(m.is_file(), "{path} is not a file");
        assert_eq!(m.mode() & 0o7777, mode, "{path} mode {:o}", m.mode());
        if root {
            assert_eq!((m.uid(), m.gid()), (0, 0), "{path} owner");
        }
        if let Some(src) = source {
            assert_eq!(
                fs::read_to_string(&p).unwrap(),
                read(src),
                "{path} vs {src}"
            );
        }
    }
    let d = fs::symlink_metadata(r.at(CONFIG_D)).expect("config.d");
    assert!(d.is_dir() && d.mode() & 0o7777 == 0o755, "config.d {d:?}");
    assert_eq!(
        fs::read_dir(r.at(CONFIG_D)).unwrap().count(),
        0,
        "config.d empty"
    );
    let v = stdout(Command::new(r.at("/usr/bin/vmagent")).arg("--version"));
    assert_eq!(v.trim(), format!("vmagent {VERSION}"));
}

/// No file of the package is left (the config too when `config_too`).
fn assert_removed(r: &TestRoot, kind: Kind, config_too: bool) {
    for (path, _, _) in files(kind) {
        if path == CONFIG && !config_too {
            assert!(r.at(path).is_file(), "{path} kept");
        } else {
            assert!(!r.at(path).exists(), "{path} left behind");
        }
    }
    assert!(!r.at(CONFIG_D).exists(), "empty config.d removed");
    assert_eq!(r.at("/etc/vmagent").exists(), !config_too);
}

/// The regular files and links under the root, package databases left out.
fn plain_files(r: &Path) -> BTreeSet<PathBuf> {
    const DBS: &[&str] = &[
        "var/lib/dpkg",
        "var/lib/rpm",
        "root/.rpmdb",
        "usr/lib/sysimage",
    ];
    common::snapshot(r)
        .into_iter()
        .filter(|(p, n)| n.kind != "dir" && !DBS.iter().any(|d| p.starts_with(d)))
        .map(|(p, _)| p)
        .collect()
}

// ---------------------------------------------------------------------------------
// deb
// ---------------------------------------------------------------------------------

/// A Debian root whose dpkg database has libc6 and libgcc-s1 at versions that satisfy
/// any Depends.
fn debian_root() -> TestRoot {
    let r = deb_root(&["libc6", "libgcc-s1"]);
    let status = r.at("/var/lib/dpkg/status");
    let text = fs::read_to_string(&status).unwrap();
    let text = text.replace("Version: 1.0", "Version: 99.0").replace(
        "Architecture: amd64",
        &format!("Architecture: {}", host_arch()),
    );
    fs::write(status, text).unwrap();
    r
}

fn dpkg(r: &TestRoot, args: &[&str], pkg: Option<&Path>) -> Output {
    let mut c = Command::new("dpkg");
    c.arg("--root").arg(r.path()).args(args);
    if let Some(p) = pkg {
        c.arg(p);
    }
    run(&mut c)
}

/// `dpkg-query` field of vmagent in the root's database.
fn dpkg_field(r: &TestRoot, field: &str) -> String {
    let o = Command::new("dpkg-query")
        .arg(format!("--admindir={}", r.at("/var/lib/dpkg").display()))
        .args(["-W", &format!("-f=${{{field}}}"), "vmagent"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn deb_install_remove_purge_reinstall() {
    let b = built();
    let r = debian_root();
    let before = plain_files(r.path());

    dpkg(&r, &["-i"], Some(&b.deb));
    assert_installed(&r, Kind::Deb);
    assert_eq!(dpkg_field(&r, "Status"), "install ok installed");
    let conffiles = dpkg_field(&r, "Conffiles");
    assert!(
        conffiles
            .trim_start()
            .starts_with("/etc/vmagent/config.toml "),
        "conffiles: {conffiles:?}"
    );
    assert_eq!(conffiles.trim().lines().count(), 1, "{conffiles:?}");

    // A local edit of the conffile survives a reinstall of the same package.
    let edited = format!(
        "{}[health]\nwait_secs = 60\n",
        read("packaging/config.toml")
    );
    fs::write(r.at(CONFIG), &edited).unwrap();
    dpkg(&r, &["-i"], Some(&b.deb));
    assert_eq!(fs::read_to_string(r.at(CONFIG)).unwrap(), edited);

    // remove: everything but the conffile; purge: that too.
    dpkg(&r, &["-r", "vmagent"], None);
    assert_removed(&r, Kind::Deb, false);
    assert_eq!(dpkg_field(&r, "Status"), "deinstall ok config-files");
    dpkg(&r, &["--purge", "vmagent"], None);
    assert_removed(&r, Kind::Deb, true);
    assert_eq!(plain_files(r.path()), before, "purge leaves nothing behind");

    // Reinstall is clean: the package's config again, not the edited one.
    dpkg(&r, &["-i"], Some(&b.deb));
    assert_installed(&r, Kind::Deb);
    assert_eq!(dpkg_field(&r, "Status"), "install ok installed");
}

/// A stand-in systemctl that logs its arguments to /systemctl.log in the root.
fn fake_systemctl(r: &TestRoot) {
    let p = r.at("/bin/systemctl");
    fs::write(&p, "#!/bin/sh\necho \"$*\" >> /systemctl.log\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The systemctl calls since the last look.
fn systemctl_calls(r: &TestRoot) -> Vec<String> {
    let log = r.at("/systemctl.log");
    let calls = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    let _ = fs::remove_file(log);
    calls
}

#[test]
fn deb_scripts_reload_systemd_and_never_enable_or_start() {
    let b = built();
    let r = debian_root();
    fake_systemctl(&r);

    // systemd not running (an image being built): no reload, but removal still
    // disables the unit (files only), so no dangling multi-user.target link is left.
    dpkg(&r, &["-i"], Some(&b.deb));
    assert_eq!(systemctl_calls(&r), Vec::<String>::new());
    dpkg(&r, &["--purge", "vmagent"], None);
    assert_eq!(systemctl_calls(&r), ["disable vmagent.service"]);

    // systemd running.
    fs::create_dir_all(r.at("/run/systemd/system")).unwrap();
    dpkg(&r, &["-i"], Some(&b.deb));
    assert_eq!(systemctl_calls(&r), ["daemon-reload"], "install");
    dpkg(&r, &["-i"], Some(&b.deb));
    assert_eq!(
        systemctl_calls(&r),
        ["daemon-reload", "try-restart --no-block vmagent.service"],
        "upgrade: a running daemon moves to the new binary"
    );
    dpkg(&r, &["-r", "vmagent"], None);
    assert_eq!(
        systemctl_calls(&r),
        [
            "stop vmagent.service",
            "disable vmagent.service",
            "daemon-reload"
        ],
        "remove"
    );
    dpkg(&r, &["--purge", "vmagent"], None);
    assert_eq!(systemctl_calls(&r), ["daemon-reload"], "purge");
}

#[test]
fn deb_metadata_and_contents() {
    let b = built();
    let field = |f: &str| {
        stdout(Command::new("dpkg-deb").arg("-f").arg(&b.deb).arg(f))
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), "vmagent");
    assert_eq!(field("Version"), VERSION.replace('-', "~"));
    assert_eq!(field("Architecture"), host_arch());
    assert!(field("Maintainer").contains('@'), "{}", field("Maintainer"));
    assert_eq!(field("Recommends"), "systemd");
    assert_eq!(field("Section"), "admin");
    assert_eq!(field("Priority"), "optional");
    assert!(field("Description").starts_with("onboards this VM"));
    assert!(field("Installed-Size").parse::<u64>().unwrap() > 100);
    // glibc (and libgcc_s, Rust's unwinder) only, with the versions the binary needs.
    let depends = field("Depends");
    for d in depends.split(", ") {
        assert!(
            d.starts_with("libc6 (>= 2.") || d.starts_with("libgcc-s1 (>= "),
            "unexpected dependency {d:?} in {depends:?}"
        );
    }
    assert!(depends.starts_with("libc6 (>= 2."), "{depends}");

    let conffiles = stdout(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&b.deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles, "/etc/vmagent/config.toml\n");

    // Contents: exactly the listed files, root-owned, nothing under /usr/local.
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&b.deb));
    let mut got = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() >= 6, "{line}");
        assert_eq!(cols[1], "root/root", "{line}");
        let path = cols[5].trim_start_matches('.').trim_end_matches('/');
        assert!(!path.starts_with("/usr/local"), "{line}");
        if cols[0].starts_with('d') {
            dirs.insert(path.to_string());
        } else {
            assert!(cols[0].starts_with('-'), "only files and dirs: {line}");
            got.insert(path.to_string());
        }
    }
    let want: BTreeSet<String> = files(Kind::Deb).iter().map(|f| f.0.to_string()).collect();
    assert_eq!(got, want);
    for d in &dirs {
        assert!(
            d.is_empty() || d == CONFIG_D || want.iter().any(|f| f.starts_with(&format!("{d}/"))),
            "unexpected directory {d}"
        );
    }

    // Maintainer scripts: valid POSIX sh (busybox ash, as in the test roots), no
    // enable or start.
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&b.deb)
        .arg(control.path()));
    for script in ["postinst", "prerm", "postrm"] {
        let p = control.path().join(script);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{script}");
        run(Command::new("/bin/busybox").args(["sh", "-n"]).arg(&p));
        for bad in ["systemctl enable", "systemctl start", "--now"] {
            assert!(!text.contains(bad), "{script} runs {bad}");
        }
    }
}

// ---------------------------------------------------------------------------------
// rpm
// ---------------------------------------------------------------------------------

fn rpm(r: &TestRoot, args: &[&str], pkg: Option<&Path>) -> Output {
    let mut c = Command::new("rpm");
    c.arg("--root").arg(r.path()).args(args);
    if let Some(p) = pkg {
        c.arg(p);
    }
    run(&mut c)
}

fn rpm_query(pkg: &Path, args: &[&str]) -> String {
    stdout(Command::new("rpm").arg("-qp").args(args).arg(pkg))
}

#[test]
fn rpm_install_erase_reinstall() {
    let b = built();
    let work = tempfile::tempdir().unwrap();
    let r = rpm_root(work.path());
    let before = plain_files(r.path());
    // --nodeps: the root's database does not list glibc.
    rpm(&r, &["-i", "--nodeps"], Some(&b.rpm));
    assert_installed(&r, Kind::Rpm);
    let configs = stdout(
        Command::new("rpm")
            .arg("--root")
            .arg(r.path())
            .args(["-qc", "vmagent"]),
    );
    assert_eq!(configs, "/etc/vmagent/config.toml\n");

    // rpm has no remove/purge split: an edited %config(noreplace) file is saved as
    // .rpmsave on erase, an untouched one is removed.
    let edited = format!(
        "{}[health]\nwait_secs = 60\n",
        read("packaging/config.toml")
    );
    fs::write(r.at(CONFIG), &edited).unwrap();
    rpm(&r, &["--reinstall", "--nodeps"], Some(&b.rpm));
    assert_eq!(
        fs::read_to_string(r.at(CONFIG)).unwrap(),
        edited,
        "noreplace"
    );
    rpm(&r, &["-e", "vmagent"], None);
    let saved = r.at("/etc/vmagent/config.toml.rpmsave");
    assert_eq!(fs::read_to_string(&saved).unwrap(), edited);
    fs::remove_file(&saved).unwrap();
    // rpm kept /etc/vmagent for the .rpmsave.
    fs::remove_dir(r.at("/etc/vmagent")).unwrap();
    assert_removed(&r, Kind::Rpm, true);

    rpm(&r, &["-i", "--nodeps"], Some(&b.rpm));
    assert_installed(&r, Kind::Rpm);
    rpm(&r, &["-e", "vmagent"], None);
    assert_removed(&r, Kind::Rpm, true);
    assert_eq!(plain_files(r.path()), before, "erase leaves nothing behind");

    // Scriptlets with systemd running: reload only; stop and disable on erase.
    fake_systemctl(&r);
    fs::create_dir_all(r.at("/run/systemd/system")).unwrap();
    rpm(&r, &["-i", "--nodeps"], Some(&b.rpm));
    assert_eq!(systemctl_calls(&r), ["daemon-reload"], "install");
    rpm(&r, &["--reinstall", "--nodeps"], Some(&b.rpm));
    assert_eq!(
        systemctl_calls(&r),
        [
            "daemon-reload",
            "daemon-reload",
            "try-restart --no-block vmagent.service"
        ],
        "upgrade"
    );
    rpm(&r, &["-e", "vmagent"], None);
    assert_eq!(
        systemctl_calls(&r),
        [
            "stop vmagent.service",
            "disable vmagent.service",
            "daemon-reload"
        ],
        "erase"
    );
}

#[test]
fn rpm_metadata_and_contents() {
    let b = built();
    let arch = match host_arch().as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        a => panic!("unexpected architecture {a}"),
    };
    assert_eq!(
        rpm_query(
            &b.rpm,
            &["--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}"]
        ),
        format!("vmagent {} 1 {arch} Apache-2.0", VERSION.replace('-', "~"))
    );
    assert_eq!(rpm_query(&b.rpm, &["-c"]), "/etc/vmagent/config.toml\n");

    let listing = rpm_query(
        &b.rpm,
        &[
            "--qf",
            "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\n]",
        ],
    );
    let mut got = BTreeSet::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 4, "{line}");
        assert_eq!((cols[1], cols[2]), ("root", "root"), "{line}");
        assert!(!cols[3].starts_with("/usr/local"), "{line}");
        if cols[0].starts_with('-') {
            got.insert(cols[3].to_string());
        } else {
            assert!(
                [
                    "/etc/vmagent",
                    CONFIG_D,
                    "/usr/lib/systemd/system/istio.service.d",
                    "/usr/share/doc/vmagent"
                ]
                .contains(&cols[3]),
                "unexpected owned directory: {line}"
            );
        }
    }
    let want: BTreeSet<String> = files(Kind::Rpm).iter().map(|f| f.0.to_string()).collect();
    assert_eq!(got, want);

    // Requires: found by rpm from the binary; glibc and libgcc_s only.
    for req in rpm_query(&b.rpm, &["-R"]).lines() {
        assert!(
            [
                "libc.so.6",
                "libm.so.6",
                "libgcc_s.so.1",
                "ld-linux",
                "rtld(",
                "rpmlib(",
                "/bin/sh",
                "config(vmagent)"
            ]
            .iter()
            .any(|ok| req.starts_with(ok)),
            "unexpected requirement {req:?}"
        );
    }

    let scripts = rpm_query(&b.rpm, &["--scripts"]);
    for part in ["postinstall", "preuninstall", "postuninstall"] {
        assert!(scripts.contains(part), "{part} missing: {scripts}");
    }
    for bad in ["systemctl enable", "systemctl start", "--now"] {
        assert!(!scripts.contains(bad), "a scriptlet runs {bad}");
    }
}

// ---------------------------------------------------------------------------------
// Generated files
// ---------------------------------------------------------------------------------

#[test]
fn man_page_and_completions_are_the_binarys() {
    let b = built();
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&b.deb).arg(x.path()));
    let gen = |args: &[&str]| stdout(Command::new(BIN).args(args));

    let gz = fs::read(x.path().join("usr/share/man/man1/vmagent.1.gz")).unwrap();
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8], "gzip, deflate");
    assert_eq!(gz[3] & 0x08, 0, "no file name in the header (gzip -n)");
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "no timestamp (gzip -n)");
    let mut man = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut man)
        .expect("valid gzip");
    assert!(man.contains(".TH vmagent"), "{man}");
    assert_eq!(man, gen(&["man"]));

    for (shell, path, marker) in [
        (
            "bash",
            "usr/share/bash-completion/completions/vmagent",
            "complete -F _vmagent",
        ),
        (
            "zsh",
            "usr/share/zsh/vendor-completions/_vmagent",
            "#compdef vmagent",
        ),
        (
            "fish",
            "usr/share/fish/vendor_completions.d/vmagent.fish",
            "complete -c vmagent",
        ),
    ] {
        let text = fs::read_to_string(x.path().join(path)).unwrap();
        assert!(text.contains(marker), "{shell}: {marker}");
        assert_eq!(text, gen(&["completions", shell]), "{shell}");
    }
}

#[test]
fn builds_are_reproducible() {
    let w = tempfile::tempdir().unwrap();
    let build = |out: &str| {
        stdout(
            Command::new("bash")
                .arg(Path::new(TOP).join("packaging/build.sh"))
                .arg("--out")
                .arg(w.path().join(out))
                .arg("--binary")
                .arg(BIN)
                .env("PKG_COMPRESSION", "gzip")
                .env("SOURCE_DATE_EPOCH", "1700000000"),
        )
    };
    let (a, b) = (build("a"), build("b"));
    for (x, y) in a.lines().zip(b.lines()) {
        assert_eq!(fs::read(x).unwrap(), fs::read(y).unwrap(), "{x} vs {y}");
    }
}

#[test]
fn build_refuses_bad_arguments() {
    for args in [
        &["--bogus"][..],
        &["--arch", "riscv64", "--binary", BIN],
        &["--arch", "arm64", "--binary", BIN],
        &["--version", "not a version", "--binary", BIN],
        &["--binary", "/nonexistent/vmagent"],
        &["--out"],
    ] {
        let arch_mismatch = args == ["--arch", "arm64", "--binary", BIN];
        if arch_mismatch && host_arch() == "arm64" {
            continue;
        }
        let o = Command::new("bash")
            .arg(Path::new(TOP).join("packaging/build.sh"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.starts_with("packaging/build.sh: ") && err.lines().count() == 1,
            "{args:?}: one line: {err}"
        );
        assert!(o.stdout.is_empty());
    }
}

// ---------------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------------

/// Non-comment, non-empty lines.
fn directives(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .collect()
}

#[test]
fn istio_dropin_orders_after_vmagent_only() {
    let dropin = read("systemd/istio.service.d/10-vmagent.conf");
    assert_eq!(directives(&dropin), ["[Unit]", "After=vmagent.service"]);

    // The unit it orders after: notify (READY after the first reconcile), the packaged
    // binary, and no dependency that would take istio down with vmagent.
    let unit = read("systemd/vmagent.service");
    let d = directives(&unit);
    assert!(d.contains(&"Type=notify"), "{unit}");
    assert!(
        d.iter()
            .any(|l| l.starts_with("ExecStart=/usr/bin/vmagent ")),
        "{unit}"
    );
    for l in d {
        for dep in ["Requires=", "BindsTo=", "PartOf=", "Requisite=", "Upholds="] {
            assert!(!(l.starts_with(dep) && l.contains("istio")), "{l}");
        }
    }
}

// ---------------------------------------------------------------------------------
// The default config
// ---------------------------------------------------------------------------------

/// Every key of src/config.rs, written out again so a new key fails until documented.
const KEYS: &[(&str, &str)] = &[
    ("package", "version"),
    ("package", "url"),
    ("package", "sha256"),
    ("package", "ca_file"),
    ("download", "connect_timeout_secs"),
    ("download", "idle_timeout_secs"),
    ("download", "attempts"),
    ("download", "backoff_ms"),
    ("health", "ready_url"),
    ("health", "wait_secs"),
    ("health", "report_url"),
    ("source", "bundle"),
    ("source", "ca_file"),
    ("source", "headers"),
    ("source", "poll_interval_secs"),
    ("daemon", "drift_interval_secs"),
    ("daemon", "probe_interval_secs"),
    ("daemon", "token_warn_percent"),
    ("daemon", "identity_warn_secs"),
    ("paths", "state_dir"),
    ("paths", "cache_dir"),
    ("token", "provider"),
    ("token", "path"),
    ("token", "command"),
    ("token", "timeout_secs"),
    ("token", "server"),
    ("token", "ca_file"),
    ("token", "credential_file"),
    ("token", "duration_secs"),
    ("token", "namespace"),
    ("token", "service_account"),
    ("token", "refresh_at"),
    ("trust", "allowed_signers"),
    ("trust", "require_signature"),
    ("trust", "revoked_keys"),
    ("logs", "rotate"),
    ("logs", "rotate_size_mib"),
    ("logs", "rotate_count"),
    ("daemon", "resolv_debounce_ms"),
    ("preflight", "enabled"),
    ("preflight", "skip"),
    ("preflight", "timeout_ms"),
    ("preflight", "clock_skew_secs"),
    ("doctor", "external_name"),
    ("health", "report_authorization_file"),
    ("health", "report_client_cert"),
    ("health", "report_client_key"),
    ("overrides", "set"),
    ("overrides", "unset"),
    ("overrides", "hosts"),
    ("overrides", "lockout_guard"),
    ("metrics", "textfile_dir"),
    ("metrics", "listen"),
    ("metrics", "allow_non_loopback"),
];

/// Keys with a built-in value (the others default to unset).
const DEFAULTED: &[&str] = &[
    "lockout_guard",
    "connect_timeout_secs",
    "idle_timeout_secs",
    "attempts",
    "backoff_ms",
    "ready_url",
    "wait_secs",
    "poll_interval_secs",
    "drift_interval_secs",
    "probe_interval_secs",
    "token_warn_percent",
    "identity_warn_secs",
    "provider",
    "timeout_secs",
    "duration_secs",
    "refresh_at",
    "require_signature",
    "rotate",
    "rotate_size_mib",
    "rotate_count",
    "resolv_debounce_ms",
    "skip",
    "timeout_ms",
    "clock_skew_secs",
    "external_name",
    "allow_non_loopback",
];

/// A commented-out key line `#key = value`: the key.
fn commented_key(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('#')?;
    let (key, _) = rest.split_once(" = ")?;
    (!key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
    .then_some(key)
}

/// The config with section headers and the keys `keep` picks uncommented.
fn uncomment(text: &str, keep: impl Fn(&str) -> bool) -> String {
    text.lines()
        .map(|l| match commented_key(l) {
            Some(k) if keep(k) => &l[1..],
            _ if l.starts_with("#[") => &l[1..],
            _ => l,
        })
        .fold(String::new(), |s, l| s + l + "\n")
}

/// `vmagent config show --root` with `config` as /etc/vmagent/config.toml: the TOML part.
fn config_show(config: Option<&str>) -> String {
    let r = tempfile::tempdir().unwrap();
    if let Some(c) = config {
        fs::create_dir_all(r.path().join("etc/vmagent")).unwrap();
        fs::write(r.path().join("etc/vmagent/config.toml"), c).unwrap();
    }
    let out = stdout(
        Command::new(BIN)
            .args(["config", "show", "--root"])
            .arg(r.path()),
    );
    let (first, rest) = out.split_once('\n').unwrap();
    assert!(first.starts_with("# merged from: "), "{out}");
    rest.to_string()
}

#[test]
fn default_config_documents_every_key_with_its_default() {
    let text = read("packaging/config.toml");
    for l in text.lines() {
        assert!(l.is_empty() || l.starts_with('#'), "not commented: {l:?}");
    }
    let mut documented = BTreeSet::new();
    let mut section = "";
    for l in text.lines() {
        if let Some(s) = l.strip_prefix("#[").and_then(|s| s.strip_suffix(']')) {
            section = s;
        } else if let Some(k) = commented_key(l) {
            assert!(documented.insert((section, k)), "{section}.{k} twice");
        }
    }
    let want: BTreeSet<(&str, &str)> = KEYS.iter().copied().collect();
    assert_eq!(documented, want, "documented keys");

    let defaults = config_show(None);
    assert_eq!(config_show(Some(&text)), defaults, "as shipped: no effect");
    assert_eq!(
        config_show(Some(&uncomment(&text, |k| DEFAULTED.contains(&k)))),
        defaults,
        "the values shown are the defaults"
    );
    // Every example value is valid (the sha256 is a placeholder).
    let all = config_show(Some(&uncomment(&text, |k| k != "sha256")));
    for want in [
        "version = \"1.24.1\"",
        "url = \"https://blob.istio.io/istio-release/releases/{version}/{format}/istio-sidecar{arch_suffix}.{format}\"",
        "bundle = \"/etc/vmagent/bundle.tar.gz\"",
        "<redacted>",
    ] {
        assert!(all.contains(want), "{want} in {all}");
    }
}

// ---------------------------------------------------------------------------------
// cloud-init
// ---------------------------------------------------------------------------------

/// Parses a cloud-init example, checking the parts every user-data needs.
fn cloud_config(name: &str) -> serde_json::Value {
    let text = read(&format!("packaging/cloud-init/{name}"));
    parse_cloud_config(&text, name)
}

fn parse_cloud_config(text: &str, name: &str) -> serde_json::Value {
    assert_eq!(text.lines().next(), Some("#cloud-config"), "{name}");
    let doc: serde_json::Value = serde_saphyr::from_str(text).expect(name);
    let top = doc.as_object().expect("a mapping");
    for k in top.keys() {
        assert!(
            ["write_files", "runcmd"].contains(&k.as_str()),
            "{name}: {k}"
        );
    }
    for f in doc["write_files"].as_array().expect("write_files list") {
        let path = f["path"].as_str().expect("path");
        assert!(path.starts_with('/'), "{name}: {path}");
        assert!(f["content"].is_string(), "{name}: {path} content");
        let perms = f["permissions"].as_str().expect("permissions as a string");
        assert!(
            perms.len() == 4
                && perms.starts_with('0')
                && perms.bytes().all(|b| (b'0'..=b'7').contains(&b)),
            "{name}: {path} permissions {perms}"
        );
        assert_eq!(f["owner"], "root:root", "{name}: {path}");
        if let Some(e) = f.get("encoding") {
            assert_eq!(e, "b64", "{name}: {path}");
        }
    }
    for c in doc["runcmd"].as_array().expect("runcmd list") {
        assert!(c.is_string(), "{name}: {c}");
    }
    doc
}

fn write_file<'a>(doc: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    doc["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no write_files entry for {path}"))
}

fn runcmd(doc: &serde_json::Value) -> Vec<&str> {
    doc["runcmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

/// The drop-in written by `doc`, with the packaged config.toml, as `vmagent config show`
/// merges them in a root.
fn shown_with_dropin(doc: &serde_json::Value) -> String {
    let dropin = "/etc/vmagent/config.d/50-cloud-init.toml";
    let f = write_file(doc, dropin);
    assert!(f.get("encoding").is_none());
    let r = tempfile::tempdir().unwrap();
    fs::create_dir_all(r.path().join("etc/vmagent/config.d")).unwrap();
    fs::write(
        r.path().join("etc/vmagent/config.toml"),
        read("packaging/config.toml"),
    )
    .unwrap();
    fs::write(
        r.path().join(dropin.trim_start_matches('/')),
        f["content"].as_str().unwrap(),
    )
    .unwrap();
    let out = stdout(
        Command::new(BIN)
            .args(["config", "show", "--root"])
            .arg(r.path()),
    );
    assert!(
        out.lines().next().unwrap().ends_with("50-cloud-init.toml"),
        "{out}"
    );
    out
}

/// The bundle entry: b64, root-only; the documented recipe (`tar -C DIR -czf
/// bundle.tar.gz . && base64 -w0 bundle.tar.gz`) pasted in yields a bundle vmagent
/// accepts.
fn check_bundle_entry(name: &str, path: &str) {
    let text = read(&format!("packaging/cloud-init/{name}"));
    let doc = parse_cloud_config(&text, name);
    let f = write_file(&doc, path);
    assert_eq!(f["encoding"], "b64");
    assert_eq!(f["permissions"], "0600");
    let placeholder = f["content"].as_str().unwrap();
    assert!(placeholder.starts_with("REPLACE_"), "{placeholder}");
    assert!(
        text.contains("base64 -w0 bundle.tar.gz"),
        "{name}: how to make it"
    );

    let w = tempfile::tempdir().unwrap();
    let tgz = w.path().join("bundle.tar.gz");
    run(Command::new("tar")
        .arg("-C")
        .arg(Path::new(TOP).join("examples/bundle"))
        .arg("-czf")
        .arg(&tgz)
        .arg("."));
    let b64 = stdout(Command::new("base64").arg("-w0").arg(&tgz));
    let doc = parse_cloud_config(&text.replace(placeholder, &b64), name);
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(write_file(&doc, path)["content"].as_str().unwrap())
        .expect("base64");
    let written = w.path().join("written.tar.gz");
    fs::write(&written, bytes).unwrap();
    run(Command::new(BIN).arg("check").arg(&written));
}

#[test]
fn cloud_init_oneshot() {
    let doc = cloud_config("oneshot.yaml");
    check_bundle_entry("oneshot.yaml", "/root/vm-bundle.tar.gz");
    let cmds = runcmd(&doc);
    assert_eq!(
        cmds.last(),
        Some(&"vmagent apply /root/vm-bundle.tar.gz --wait 300"),
        "apply is last, so its exit code is runcmd's"
    );
    assert!(cmds.iter().any(|c| c.contains("dpkg -i")), "{cmds:?}");
    assert!(!cmds.iter().any(|c| c.contains("systemctl")), "{cmds:?}");
    let text = read("packaging/cloud-init/oneshot.yaml");
    assert!(text.contains("# - vmagent --version"), "baked-in variant");
    assert!(text.contains("/var/log/cloud-init-output.log"));
    let shown = shown_with_dropin(&doc);
    assert!(shown.contains("version = \"1.24.1\""), "{shown}");
}

#[test]
fn cloud_init_daemon() {
    let doc = cloud_config("daemon.yaml");
    check_bundle_entry("daemon.yaml", "/etc/vmagent/bundle.tar.gz");
    let cmds = runcmd(&doc);
    let install = cmds
        .iter()
        .position(|c| c.contains("dpkg -i"))
        .expect("install");
    let enable = cmds
        .iter()
        .position(|c| *c == "systemctl enable --now vmagent.service")
        .expect("enable --now");
    assert!(install < enable, "{cmds:?}");
    assert!(
        !cmds.iter().any(|c| c.contains("vmagent apply")),
        "{cmds:?}"
    );

    let shown = shown_with_dropin(&doc);
    let cfg: toml::Table = toml::from_str(shown.split_once('\n').unwrap().1).unwrap();
    assert_eq!(
        cfg["source"]["bundle"].as_str(),
        Some("/etc/vmagent/bundle.tar.gz"),
        "{shown}"
    );
    assert_eq!(
        cfg["package"]["version"].as_str(),
        Some("1.24.1"),
        "{shown}"
    );
}
