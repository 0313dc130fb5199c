//! Fixture istio-sidecar packages, built by the tests with the real tools (dpkg-deb,
//! rpmbuild), and target roots that real dpkg / rpm can install into with `--root`.
//!
//! The fixtures mimic the real package (istio/istio tools/packaging): the same files
//! (/usr/local/bin/{pilot-agent,envoy,istio-start.sh}, /lib/systemd/system/istio.service,
//! /var/lib/istio/envoy/{sidecar.env,envoy_bootstrap_tmpl.json} as conffiles), the same
//! Depends, and a postinst doing what the real one does (create istio-proxy, make the
//! /etc/istio -> /var/lib/istio link when absent, create and chown the directories).
//! dpkg and rpm run maintainer scripts chrooted into the root, so roots get a static
//! busybox as /bin/sh.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::TestRoot;

/// The real istio.service (tools/packaging/common/istio.service).
pub const ISTIO_SERVICE: &str = "[Unit]
Description=istio-sidecar: The Istio sidecar
Documentation=http://istio.io/

[Service]
ExecStart=/usr/local/bin/istio-start.sh
ExecStopPost=/usr/local/bin/istio-start.sh clean
Restart=always
StartLimitInterval=0
RestartSec=10
KillMode=mixed
TimeoutStopSec=30s

[Install]
WantedBy=multi-user.target
";

/// The postinst, shaped like tools/packaging/postinst.sh but with shell builtins for the
/// account (busybox has no useradd); uid 998 like the other test roots.
const POSTINST: &str = r#"#!/bin/sh
set -e
umask 022
if ! grep -q '^istio-proxy:' /etc/passwd; then
    echo 'istio-proxy:x:998:' >> /etc/group
    echo 'istio-proxy:x:998:998::/var/lib/istio:/bin/false' >> /etc/passwd
fi
if [ ! -e /etc/istio ]; then
    ln -s /var/lib/istio /etc/istio
fi
mkdir -p /var/lib/istio/envoy /var/lib/istio/proxy /var/lib/istio/config /var/log/istio /etc/certs
touch /var/lib/istio/config/mesh
chown istio-proxy:istio-proxy /etc/certs
chown istio-proxy:istio-proxy /var/lib/istio/envoy /var/lib/istio/config /var/log/istio /var/lib/istio/config/mesh /var/lib/istio/proxy
chmod 2755 /usr/local/bin/envoy /usr/local/bin/pilot-agent
"#;

/// What a fixture package looks like.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// Version, e.g. `1.24.1`.
    pub version: String,
    /// Debian architecture (`amd64`, `arm64`, `all`).
    pub arch: String,
    /// Depends (deb) / Requires (rpm).
    pub depends: Vec<String>,
    /// A postinst exit code other than 0 makes the install fail.
    pub postinst_exit: i32,
    /// Pad the package with this many bytes of incompressible data.
    pub padding: usize,
}

impl Fixture {
    /// The usual fixture at `version`.
    pub fn new(version: &str) -> Fixture {
        Fixture {
            version: version.into(),
            arch: "amd64".into(),
            depends: ["iproute2", "iptables", "sudo", "hostname"]
                .map(String::from)
                .to_vec(),
            postinst_exit: 0,
            padding: 0,
        }
    }

    fn stage(&self, tree: &Path) {
        let bin = tree.join("usr/local/bin");
        fs::create_dir_all(&bin).unwrap();
        let agent = format!(
            "#!/bin/sh\n# stand-in pilot-agent {}\necho \"pilot-agent $*\"\n",
            self.version
        );
        for (name, body) in [
            ("pilot-agent", agent.as_str()),
            ("envoy", "#!/bin/sh\necho envoy stand-in\n"),
            (
                "istio-start.sh",
                "#!/bin/sh\nexec /usr/local/bin/pilot-agent proxy\n",
            ),
        ] {
            fs::write(bin.join(name), body).unwrap();
            fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let unit = tree.join("lib/systemd/system");
        fs::create_dir_all(&unit).unwrap();
        fs::write(unit.join("istio.service"), ISTIO_SERVICE).unwrap();
        let envoy = tree.join("var/lib/istio/envoy");
        fs::create_dir_all(&envoy).unwrap();
        fs::write(
            envoy.join("sidecar.env"),
            "# sidecar defaults\nISTIO_INBOUND_INTERCEPTION_MODE=REDIRECT\n",
        )
        .unwrap();
        fs::write(envoy.join("envoy_bootstrap_tmpl.json"), "{\"node\": {}}\n").unwrap();
        if self.padding > 0 {
            // xorshift noise: incompressible, deterministic.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let data: Vec<u8> = (0..self.padding)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            fs::write(bin.join("envoy.padding"), data).unwrap();
        }
    }

    fn postinst(&self) -> String {
        match self.postinst_exit {
            0 => POSTINST.to_string(),
            n => format!("#!/bin/sh\necho 'postinst: simulated failure' >&2\nexit {n}\n"),
        }
    }

    /// Builds `dir/istio-sidecar_<version>_<arch>.deb` with dpkg-deb.
    pub fn build_deb(&self, dir: &Path) -> PathBuf {
        let tree = dir.join(format!("deb-{}-{}", self.version, self.arch));
        let _ = fs::remove_dir_all(&tree);
        self.stage(&tree);
        let debian = tree.join("DEBIAN");
        fs::create_dir_all(&debian).unwrap();
        let mut control = format!(
            "Package: istio-sidecar\nVersion: {}\nArchitecture: {}\nMaintainer: vmagent tests <tests@example.invalid>\nDescription: fixture istio-sidecar\n",
            self.version, self.arch
        );
        if !self.depends.is_empty() {
            control.push_str(&format!("Depends: {}\n", self.depends.join(", ")));
        }
        fs::write(debian.join("control"), control).unwrap();
        fs::write(
            debian.join("conffiles"),
            "/var/lib/istio/envoy/sidecar.env\n/var/lib/istio/envoy/envoy_bootstrap_tmpl.json\n",
        )
        .unwrap();
        fs::write(debian.join("postinst"), self.postinst()).unwrap();
        fs::set_permissions(debian.join("postinst"), fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.join(format!("istio-sidecar_{}_{}.deb", self.version, self.arch));
        run(Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&tree)
            .arg(&out));
        out
    }

    /// Builds `dir/istio-sidecar-<version>-1.<arch>.rpm` with rpmbuild.
    pub fn build_rpm(&self, dir: &Path) -> PathBuf {
        let top = dir.join(format!("rpm-{}-{}", self.version, self.arch));
        let _ = fs::remove_dir_all(&top);
        let staged = top.join("staged");
        self.stage(&staged);
        let rpm_arch = match self.arch.as_str() {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            "all" => "noarch",
            a => a,
        };
        let requires: String = self
            .depends
            .iter()
            .map(|d| {
                format!(
                    "Requires: {}\n",
                    if d == "iproute2" { "iproute" } else { d }
                )
            })
            .collect();
        let spec = format!(
            "Name: istio-sidecar\nVersion: {v}\nRelease: 1\nSummary: fixture\nLicense: Apache-2.0\nBuildArch: {rpm_arch}\nAutoReqProv: no\n{requires}\
             %description\nfixture istio-sidecar\n%install\ncp -a {staged}/. %{{buildroot}}/\n%post\n{post}\n%files\n/usr/local/bin/*\n/lib/systemd/system/istio.service\n\
             %config(noreplace) /var/lib/istio/envoy/sidecar.env\n%config(noreplace) /var/lib/istio/envoy/envoy_bootstrap_tmpl.json\n",
            v = self.version,
            staged = staged.display(),
            post = self.postinst().trim_start_matches("#!/bin/sh\n"),
        );
        let spec_path = top.join("istio-sidecar.spec");
        fs::write(&spec_path, spec).unwrap();
        run(Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("--define")
            .arg("_build_id_links none")
            .arg("--target")
            .arg(rpm_arch)
            .arg(&spec_path));
        let built = top.join(format!(
            "RPMS/{rpm_arch}/istio-sidecar-{}-1.{rpm_arch}.rpm",
            self.version
        ));
        let out = dir.join(built.file_name().unwrap());
        fs::copy(&built, &out).unwrap();
        out
    }
}

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Adds a static busybox as /bin/sh (and the applets the postinst uses) to a root.
fn add_shell(r: &Path) {
    fs::create_dir_all(r.join("bin")).unwrap();
    fs::copy("/bin/busybox", r.join("bin/busybox"))
        .expect("busybox-static (tests/setup.sh installs it)");
    for applet in [
        "sh", "grep", "ln", "mkdir", "chown", "chmod", "touch", "echo", "cat", "rm",
    ] {
        let _ = symlink("busybox", r.join("bin").join(applet));
    }
    fs::create_dir_all(r.join("tmp")).unwrap();
}

fn os_release(r: &Path, body: &str) {
    fs::create_dir_all(r.join("usr/lib")).unwrap();
    fs::write(r.join("usr/lib/os-release"), body).unwrap();
    let _ = symlink("../usr/lib/os-release", r.join("etc/os-release"));
}

/// A Debian-like root real dpkg can install into: os-release, a dpkg database in which
/// `installed` packages are registered (default: the fixture's dependencies), busybox.
/// There is no istio-proxy user yet: the package's postinst creates it.
pub fn deb_root(installed: &[&str]) -> TestRoot {
    let t = TestRoot::new();
    let r = t.path();
    fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
    os_release(r, "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n");
    let db = r.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        fs::create_dir_all(db.join(d)).unwrap();
    }
    fs::write(db.join("available"), "").unwrap();
    let status: String = installed
        .iter()
        .map(|p| format!("Package: {p}\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\nMaintainer: x <x@example.invalid>\nDescription: stand-in\n\n"))
        .collect();
    fs::write(db.join("status"), status).unwrap();
    for p in installed {
        fs::write(db.join(format!("info/{p}.list")), "").unwrap();
    }
    add_shell(r);
    t
}

/// The fixture's dependencies, for [`deb_root`].
pub const DEB_DEPS: &[&str] = &["iproute2", "iptables", "sudo", "hostname"];

/// An RHEL-like root real rpm can install into: os-release (Rocky 9), an rpm database
/// holding a `fake-deps` package that provides the fixture's requirements, busybox.
pub fn rpm_root(work: &Path) -> TestRoot {
    let t = TestRoot::new();
    let r = t.path();
    fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
    os_release(
        r,
        "NAME=\"Rocky Linux\"\nVERSION_ID=\"9.4\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n",
    );
    add_shell(r);
    run(Command::new("rpm").arg("--root").arg(r).arg("--initdb"));
    let deps = fake_deps_rpm(work);
    run(Command::new("rpm")
        .arg("--root")
        .arg(r)
        .args(["-U", "--nodeps"])
        .arg(&deps));
    t
}

fn fake_deps_rpm(work: &Path) -> PathBuf {
    let top = work.join("rpm-fake-deps");
    let out = work.join("fake-deps-1-1.noarch.rpm");
    if out.exists() {
        return out;
    }
    fs::create_dir_all(&top).unwrap();
    let spec = top.join("fake-deps.spec");
    fs::write(&spec, "Name: fake-deps\nVersion: 1\nRelease: 1\nSummary: stand-in\nLicense: none\nBuildArch: noarch\nProvides: /bin/sh iproute iptables sudo hostname\n%description\nstand-in for the base system\n%files\n").unwrap();
    run(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg(&spec));
    fs::copy(top.join("RPMS/noarch/fake-deps-1-1.noarch.rpm"), &out).unwrap();
    out
}

/// Installed version of istio-sidecar in a deb root, if any.
pub fn deb_installed(r: &Path) -> Option<String> {
    let o = Command::new("dpkg-query")
        .arg(format!("--root={}", r.display()))
        .args(["-W", "-f=${Status} ${Version}", "istio-sidecar"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout).to_string();
    s.strip_prefix("install ok installed ").map(str::to_string)
}

/// Installed version-release of istio-sidecar in an rpm root, if any.
pub fn rpm_installed(r: &Path) -> Option<String> {
    let o = Command::new("rpm")
        .arg("--root")
        .arg(r)
        .args(["-q", "--qf", "%{VERSION}-%{RELEASE}", "istio-sidecar"])
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).to_string())
}
