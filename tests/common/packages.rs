//! Fixture istio-sidecar packages, built by the tests with the real tools (dpkg-deb,
//! rpmbuild), and target roots that real dpkg / rpm can install into with `--root`.
//!
//! The fixtures mimic the real package (istio/istio tools/packaging): the same files
//! (/usr/local/bin/{pilot-agent,envoy,istio-start.sh}, /lib/systemd/system/istio.service,
//! /var/lib/istio/envoy/{sidecar.env,envoy_bootstrap_tmpl.json} as conffiles), the same
//! Depends, and a postinst doing what the real one does (create istio-proxy, make the
//! /etc/istio -> /var/lib/istio link when absent, create and chown the directories).
//! The stand-in pilot-agent plays a health scenario chosen per root ([`set_scenario`]),
//! writing Istio's real log lines, for the health tests (tests/health.rs).
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

/// The postinst, shaped like tools/packaging/postinst.sh: `useradd` where there is one
/// (a real system), else shell builtins for the account (busybox test roots have no
/// useradd), uid 998 like the other test roots.
const POSTINST: &str = r#"#!/bin/sh
set -e
umask 022
if ! grep -q '^istio-proxy:' /etc/passwd; then
    if command -v useradd >/dev/null 2>&1; then
        # A real system (the VM test): a free system id, as the real postinst gets.
        useradd --system --user-group --home-dir /var/lib/istio --shell /bin/false istio-proxy
    else
        echo 'istio-proxy:x:998:' >> /etc/group
        echo 'istio-proxy:x:998:998::/var/lib/istio:/bin/false' >> /etc/passwd
    fi
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

/// Where a test root names the scenario the stand-in pilot-agent plays.
pub const SCENARIO_FILE: &str = "/etc/istio-fixture/scenario";

/// The file that stands for "Envoy answers 200 on /healthz/ready": the stand-in creates
/// it when ready, and `istio-start.sh clean` (the unit's ExecStopPost) removes it, so
/// readiness goes away with the process.
pub const READY_FILE: &str = "/run/istio-fixture/ready";

/// The scenarios the stand-in pilot-agent knows.
pub const SCENARIOS: &[&str] = &[
    "ready",
    "token-expired",
    "ca-mismatch",
    "istiod-unreachable",
    "crash",
    "silent",
];

/// Makes the stand-in pilot-agent in `root` play `scenario` from its next start.
pub fn set_scenario(root: &Path, scenario: &str) {
    assert!(SCENARIOS.contains(&scenario), "unknown scenario {scenario}");
    let p = root.join(SCENARIO_FILE.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, format!("{scenario}\n")).unwrap();
}

/// The stand-in istio-start.sh: like the real one it runs `pilot-agent proxy` with its
/// stdout appended to /var/log/istio/istio.log and its stderr (Envoy's) to
/// istio.err.log; `clean` (the unit's ExecStopPost) takes the readiness endpoint down.
/// Paths are under `$FIXTURE_ROOT` (the tests' fake systemd sets it to the target root;
/// unset on a real VM).
const ISTIO_START: &str = r#"#!/bin/sh
# stand-in istio-start.sh (vmagent test fixture)
R="${FIXTURE_ROOT:-}"
if [ "${1:-}" = clean ]; then
    rm -f "$R/run/istio-fixture/ready"
    exit 0
fi
mkdir -p "$R/var/log/istio"
exec "$R/usr/local/bin/pilot-agent" proxy >> "$R/var/log/istio/istio.log" 2>> "$R/var/log/istio/istio.err.log"
"#;

/// The stand-in pilot-agent. `pilot-agent proxy` plays the scenario named in
/// `$FIXTURE_ROOT/etc/istio-fixture/scenario` (default `ready`; a line
/// `# fixture-scenario: NAME` in the installed cluster.env wins), writing Istio's real
/// line format (`<ts>\t<level>\t[<scope>\t]<message>`) on stdout (the agent) and
/// stderr (Envoy):
/// - `ready`: the healthy start sequence, then (a second later, as Envoy applies its
///   first configuration) creates the ready file and stays up;
/// - `token-expired`: start lines, then `sds failed to warm certificate ... request
///   authenticate failure` every 0.1 s, staying up; like the real agent (which reads the
///   token file on every attempt) it stops complaining once the token file changes;
/// - `ca-mismatch`: start lines, then `... x509: certificate signed by unknown
///   authority` every 0.5 s, staying up (the root it started with stays in memory);
/// - `istiod-unreachable`: start lines, then `... dial tcp 10.0.0.5:15012: i/o timeout`
///   every 0.5 s, never ready;
/// - `crash`: start lines, `Envoy exited with error: exit status 1`, exit 1;
/// - `silent`: start lines only, never ready, no errors.
///
/// SIGTERM (systemd's stop, KillMode=mixed) starts a drain like the real agent's
/// (terminationDrainDuration, here 0.5 s instead of 5 s): not ready any more, the
/// scenario's retries go on, then the real termination lines and exit 0. It stays up
/// while `$FIXTURE_ROOT` exists (forever when unset).
const PILOT_AGENT: &str = r##"#!/bin/sh
# stand-in pilot-agent {version} (vmagent test fixture)
if [ "${1:-}" != proxy ]; then
    echo "pilot-agent $*"
    exit 0
fi
term=
trap 'term=1' TERM
R="${FIXTURE_ROOT:-}"
TAB=$(printf '\t')
scenario=ready
if [ -r "$R/etc/istio-fixture/scenario" ]; then
    read -r scenario < "$R/etc/istio-fixture/scenario" || true
fi
# A bundle can carry its own scenario (a cluster.env comment), so a test can ship a
# bundle whose proxy fails and one whose proxy comes up (last-known-good rollback).
if [ -r "$R/var/lib/istio/envoy/cluster.env" ]; then
    while IFS= read -r l; do
        case "$l" in "# fixture-scenario: "*) scenario=${l#"# fixture-scenario: "} ;; esac
    done < "$R/var/lib/istio/envoy/cluster.env"
fi
READY="$R/run/istio-fixture/ready"
rm -f "$READY"

# line LEVEL [SCOPE] MESSAGE [k=v]: one Istio log line.
line() {
    l=$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)
    for f in "$@"; do l="$l$TAB$f"; done
    printf '%s\n' "$l"
}
alive() { [ -z "$R" ] || [ -d "$R" ]; }

# up EVERY [COMMAND...]: stays up in 0.1 s ticks, running COMMAND every EVERY ticks
# (retries); after SIGTERM goes on for the 0.5 s drain, then terminates.
up() {
    every=$1
    shift
    t=0
    drain=-1
    while alive; do
        if [ -n "$term" ] && [ $drain -lt 0 ]; then
            rm -f "$READY"
            line info "Status server has successfully terminated"
            line info "Agent draining Proxy for termination"
            line info "Graceful termination period is 500ms, starting..."
            drain=5
        fi
        if [ $drain -eq 0 ]; then
            line info "Graceful termination period complete, terminating remaining proxies."
            line warn "Aborting proxy"
            line info "Envoy aborted normally"
            line warn "Aborted proxy instance"
            line info "Agent has successfully terminated"
            exit 0
        fi
        if [ $# -gt 0 ] && [ $((t % every)) -eq 0 ]; then
            "$@"
        fi
        t=$((t + 1))
        if [ $drain -gt 0 ]; then drain=$((drain - 1)); fi
        sleep 0.1
    done
    exit 0
}

start_lines() {
    line info "Proxy role" "ips=[10.0.0.10] type=sidecar id=vm-app.vm-ns domain=vm-ns.svc.cluster.local"
    line info "CA Endpoint istiod.istio-system.svc:15012, provider Citadel"
    line info "Opening status port 15020"
    line info "Starting proxy agent"
    line info "Envoy command: [-c etc/istio/proxy/envoy-rev.json --drain-time-s 45 --drain-strategy immediate --local-address-ip-version v4 --file-flush-interval-msec 1000 --disable-hot-restart --allow-unknown-static-fields -l warning --component-log-level misc:error]"
    line warning "envoy main external/envoy/source/server/server.cc:843" "Usage of the deprecated runtime key overload.global_downstream_max_connections, consider switching to envoy.resource_monitors.downstream_connections instead." "thread=8" >&2
}

WARM="failed to warm certificate: failed to generate workload certificate: create certificate: rpc error"
TOKEN="$R/var/run/secrets/tokens/istio-token"
token_sum() { if [ -r "$TOKEN" ]; then cksum < "$TOKEN"; fi; }
seen=$(token_sum)

rejected() {
    l=$(line warn sds "$WARM: code = Unauthenticated desc = request authenticate failure")
    if [ "$(token_sum)" = "$seen" ]; then
        printf '%s\n' "$l"
    fi
}
untrusted() {
    line warn sds "$WARM: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\""
}
unreachable() {
    line warn sds "$WARM: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:15012: i/o timeout\""
    line warn xdsproxy "upstream [1] terminated with unexpected error rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:15012: i/o timeout\""
}

case "$scenario" in
ready)
    start_lines
    line info cache "generated new workload certificate" "latency=118.97ms ttl=23h59m59.06s"
    line info xdsproxy "connected to upstream XDS server: istiod.istio-system.svc:15012" "id=1"
    # Envoy takes a moment to apply its first configuration.
    sleep 1
    mkdir -p "$R/run/istio-fixture"
    [ -n "$term" ] || echo $$ > "$READY"
    up 1
    ;;
token-expired)
    start_lines
    up 1 rejected
    ;;
ca-mismatch)
    start_lines
    up 5 untrusted
    ;;
istiod-unreachable)
    start_lines
    up 5 unreachable
    ;;
crash)
    start_lines
    line critical "envoy main external/envoy/source/server/server.cc:117" "error initializing configuration 'etc/istio/proxy/envoy-rev.json': Proto constraint validation failed" "thread=14" >&2
    line error "Envoy exited with error: exit status 1"
    exit 1
    ;;
silent)
    start_lines
    up 1
    ;;
*)
    line error "stand-in pilot-agent: unknown scenario '$scenario'"
    exit 2
    ;;
esac
"##;

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
        let agent = PILOT_AGENT.replace("{version}", &self.version);
        for (name, body) in [
            ("pilot-agent", agent.as_str()),
            ("envoy", "#!/bin/sh\necho envoy stand-in\n"),
            ("istio-start.sh", ISTIO_START),
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
