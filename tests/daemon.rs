//! `vmagent daemon` end to end: the real binary runs in the foreground against a
//! throwaway Debian-like root (tests/common/packages.rs), with the fake systemd of
//! tests/common/fake_systemd.rs plugged in through `VMAGENT_TEST_SYSTEMCTL` (a debug-build
//! seam: the stand-in systemctl is treated as live) and a readiness server on 127.0.0.1.
//!
//! Package step: every root's config sets `[package] version = "1.24.1"` (the daemon runs
//! the package step only when a version or URL is configured) and the bundle at the
//! configured `[source] bundle` path carries the fixture `istio-sidecar_1.24.1_amd64.deb`
//! as a member, so the daemon's first reconcile installs the package with real dpkg, and
//! a removed package is reinstalled from the bundle without any network.
//!
//! Covers: the start (package, files, enable/start, status ready), a bundle change at the
//! configured path (inotify; `mv` and `cp` style; one restart), drift of each kind
//! (edited, deleted, chmod/chown'ed file, the hosts block, the package removed, the
//! service stopped), the token restored after a reboot before READY=1 / ready (with a
//! notify socket and watchdog), SIGHUP (source moved, token_warn_percent, an invalid
//! config refused), SIGTERM/SIGINT, one daemon per root, the report URL (live and dead),
//! token expiry warnings, a refused bundle, a bundle arriving after start, and
//! src/ (run them with `--ignored`).
//!
//! Every wait on the daemon is a polling loop with a generous hang guard ([`HANG`]),
//! never a timing assertion. Every daemon is killed by its guard's `Drop`.
//! `DAEMON_TEST_SHOW=1` prints the daemon's stderr and the fake's calls in the first
//! test.

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fake_systemd::{alive, FakeSystemd, ReadyServer};
use common::output::*;
use common::packages::*;
use common::report_server::ReportServer;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_vmagent");

const V1: &str = "1.24.1";

/// Where every test root's config points `[source] bundle`.
const BUNDLE: &str = "/etc/vmagent/bundle.tar";

/// The config file, inside a root.
const CONFIG: &str = "/etc/vmagent/config.toml";

/// The status file, inside a root.
const STATUS_FILE: &str = "/run/vmagent/status.json";

const TOKEN: &str = "/var/run/secrets/tokens/istio-token";
const ROOT_CERT: &str = "/etc/certs/root-cert.pem";
const MESH: &str = "/etc/istio/config/mesh";
const CLUSTER_ENV: &str = "/var/lib/istio/envoy/cluster.env";

/// Hang guard for every wait on the daemon (not a timing assertion): generous, because
/// on a loaded machine a daemon step that takes a second can take twenty.
const HANG: Duration = common::wait::PATIENCE;

/// Environment variables that could send traffic through a proxy, change vmagent's
/// logging or talk to a real systemd.
const SCRUB: &[&str] = &[
    "VMAGENT_TEST_SYSTEMCTL",
    "VMAGENT_FAULT",
    "FAKE_SYSTEMD_STATE",
    "FAKE_SYSTEMD_ROOT",
    "FAKE_SYSTEMD_OWNER",
    "RUST_LOG",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// `vmagent` with a scrubbed environment.
fn vmagent_cmd() -> Command {
    let mut c = Command::new(BIN);
    for v in SCRUB {
        c.env_remove(v);
    }
    c
}

/// Unix seconds now.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Runs `cmd` to completion with a hang guard.
fn run_to_end(cmd: &mut Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still ran after {limit:?} (hang guard)");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------
// The daemon process
// ---------------------------------------------------------------------------------

/// A running `vmagent daemon`; killed (SIGKILL) when dropped if still running.
struct Daemon {
    child: Child,
    err: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Daemon {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything it wrote to stderr so far.
    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// stderr from byte `from` on.
    fn stderr_from(&self, from: usize) -> String {
        let s = self.stderr();
        s.get(from..).unwrap_or_default().to_string()
    }

    /// Whether it still runs (not exited, not a zombie).
    fn running(&self) -> bool {
        alive(self.pid())
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid (it has not been reaped: `wait` takes
        // `&mut self`, so the pid cannot have been reused).
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({}, {sig})", self.pid());
    }

    /// Waits for it to exit (hang guard `limit`); then its stderr is complete.
    #[track_caller]
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return s;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the daemon still ran {limit:?} after being told to stop (hang guard)\n--- daemon stderr\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

// ---------------------------------------------------------------------------------
// A VM: root with dpkg, the fixture package in the bundle, fake systemd, readiness
// ---------------------------------------------------------------------------------

/// The daemon's config, rendered into ROOT/etc/vmagent/config.toml.
#[derive(Clone, Debug)]
struct Conf {
    bundle: String,
    drift: u64,
    probe: u64,
    report_url: Option<String>,
    token_warn_percent: Option<u8>,
    /// `[health] wait_secs`: how long a new bundle has to become ready.
    wait: Option<u64>,
}

impl Default for Conf {
    fn default() -> Self {
        Conf {
            bundle: BUNDLE.into(),
            drift: 1,
            probe: 1,
            report_url: None,
            token_warn_percent: None,
            wait: None,
        }
    }
}

/// One simulated VM. Field order is drop order: the service is killed first.
struct Vm {
    fake: FakeSystemd,
    ready: ReadyServer,
    root: TestRoot,
    deb: PathBuf,
    _work: tempfile::TempDir,
}

impl Vm {
    /// A fresh root (package not installed) whose stand-in proxy plays `scenario`, with
    /// the default config and the example bundle (plus the .deb) at [`BUNDLE`].
    fn new(scenario: &str) -> Vm {
        Vm::with(scenario, &Conf::default())
    }

    fn with(scenario: &str, conf: &Conf) -> Vm {
        let work = tempfile::tempdir().expect("tempdir");
        let deb = Fixture::new(V1).build_deb(work.path());
        let root = deb_root(DEB_DEPS);
        let ready = ReadyServer::for_root(root.path());
        set_scenario(root.path(), scenario);
        let fake = FakeSystemd::new(root.path());
        let vm = Vm {
            fake,
            ready,
            root,
            deb,
            _work: work,
        };
        vm.write_config(conf);
        vm.put_bundle(BUNDLE, &vm.spec());
        vm
    }

    /// Writes the config file.
    fn write_config(&self, c: &Conf) {
        let mut t = format!(
            "[source]\nbundle = \"{}\"\n\n[package]\nversion = \"{V1}\"\n\n[daemon]\ndrift_interval_secs = {}\nprobe_interval_secs = {}\n",
            c.bundle, c.drift, c.probe
        );
        if let Some(p) = c.token_warn_percent {
            t.push_str(&format!("token_warn_percent = {p}\n"));
        }
        t.push_str(&format!(
            "\n[health]\nready_url = \"{}\"\n",
            self.ready.url()
        ));
        if let Some(u) = &c.report_url {
            t.push_str(&format!("report_url = \"{u}\"\n"));
        }
        if let Some(w) = c.wait {
            t.push_str(&format!("wait_secs = {w}\n"));
        }
        self.write_config_text(&t);
    }

    fn write_config_text(&self, text: &str) {
        let p = self.root.at(CONFIG);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let tmp = p.with_extension("toml.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, &p).unwrap();
    }

    /// The example bundle with the fixture .deb as a member.
    fn spec(&self) -> Spec {
        Spec::example().with(
            self.deb.file_name().unwrap().to_str().unwrap(),
            Item::File(fs::read(&self.deb).unwrap(), 0o644),
        )
    }

    /// Installs `spec` as the bundle at system path `at`, atomically (written aside,
    /// renamed into place, as `mv` does).
    fn put_bundle(&self, at: &str, spec: &Spec) {
        let p = self.root.at(at);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let tmp = p.with_file_name(".incoming.tar");
        fs::write(&tmp, spec.tar_bytes()).unwrap();
        fs::rename(&tmp, &p).unwrap();
    }

    /// `vmagent daemon --root ROOT -v` with the fake systemd; stderr is collected.
    fn daemon(&self) -> Daemon {
        let mut c = vmagent_cmd();
        c.arg("daemon")
            .arg("--root")
            .arg(self.root.path())
            .arg("-v");
        self.spawn(c)
    }

    /// The same under a systemd-like notify socket with a watchdog of `watchdog_usec`:
    /// started through `sh -c 'WATCHDOG_PID=$$ exec vmagent ...'` (exec keeps the pid,
    /// and the watchdog only counts for the pid it names).
    fn daemon_notified(&self, socket: &std::path::Path, watchdog_usec: u64) -> Daemon {
        let mut c = Command::new("sh");
        for v in SCRUB {
            c.env_remove(v);
        }
        c.arg("-c")
            .arg("WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$0\" \"$@\"")
            .arg(BIN)
            .arg("daemon")
            .arg("--root")
            .arg(self.root.path())
            .arg("-v")
            .env("NOTIFY_SOCKET", socket)
            .env("WATCHDOG_USEC", watchdog_usec.to_string());
        self.spawn(c)
    }

    fn spawn(&self, mut c: Command) -> Daemon {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        self.fake.configure(&mut c);
        let mut child = c.spawn().expect("spawn vmagent daemon");
        let mut pipe = child.stderr.take().expect("stderr");
        let err = Arc::new(Mutex::new(String::new()));
        let reader = {
            let err = err.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => err
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            })
        };
        Daemon {
            child,
            err,
            reader: Some(reader),
        }
    }

    /// A daemon whose status file says ready (and whose last apply succeeded).
    fn started(&self) -> Daemon {
        let d = self.daemon();
        self.wait_ready(&d);
        d
    }

    /// The status file, parsed, if there is one.
    fn status(&self) -> Option<serde_json::Value> {
        let d = fs::read(self.root.at(STATUS_FILE)).ok()?;
        serde_json::from_slice(&d).ok()
    }

    /// Waits until the status file says ready; returns it.
    #[track_caller]
    fn wait_ready(&self, d: &Daemon) -> serde_json::Value {
        self.wait_for(d, "status.json health.state ready", || {
            self.status().filter(|s| s["health"]["state"] == "ready")
        })
    }

    /// Polls `f` every 50 ms until it gives a value; fails after [`HANG`] or when the
    /// daemon is gone.
    #[track_caller]
    fn wait_for<T>(&self, d: &Daemon, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + HANG;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if !d.running() {
                thread::sleep(Duration::from_millis(200));
                panic!("waiting for {what}: the daemon exited\n{}", self.context(d));
            }
            if Instant::now() >= deadline {
                panic!(
                    "waiting for {what}: not within {HANG:?} (hang guard)\n{}",
                    self.context(d)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the daemon's stderr (from byte `from`) has a line containing every
    /// one of `needles`; returns that line.
    #[track_caller]
    fn wait_log(&self, d: &Daemon, from: usize, needles: &[&str]) -> String {
        self.wait_for(d, &format!("a stderr line with {needles:?}"), || {
            d.stderr_from(from)
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_string)
        })
    }

    /// Context for assertion messages.
    fn context(&self, d: &Daemon) -> String {
        let st = fs::read_to_string(self.root.at(STATUS_FILE)).unwrap_or_default();
        let log = fs::read_to_string(self.root.at("/var/log/istio/istio.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        format!(
            "--- daemon stderr\n{}--- fake systemctl calls\n{}\n--- status.json\n{st}--- istio.log (last lines, newest first)\n{}\n--- supervisor\n{}",
            d.stderr(),
            self.fake.calls().join("\n"),
            tail.join("\n"),
            self.fake.log()
        )
    }

    /// Runs the fake systemctl by hand (as an admin would run systemctl).
    fn systemctl(&self, args: &[&str]) {
        let mut c = Command::new(self.fake.program());
        c.args(args);
        self.fake.configure(&mut c);
        let o = run_to_end(&mut c, HANG);
        assert!(o.status.success(), "fake systemctl {args:?}: {}", show(&o));
    }

    /// Host path of a system path, following symlinks inside the root (the package's
    /// /etc/istio -> /var/lib/istio link is absolute).
    fn at(&self, sys: &str) -> PathBuf {
        inroot(self.root.path(), sys, true)
    }

    fn read(&self, sys: &str) -> Option<Vec<u8>> {
        fs::read(self.at(sys)).ok()
    }

    /// The `is-enabled` queries so far: one per reconcile (every service step asks).
    fn reconciles(&self) -> usize {
        count(&self.fake.verbs(), "is-enabled")
    }
}

/// The example bundle's member.
fn example(member: &str) -> Vec<u8> {
    fs::read(example_dir().join(member)).expect("example member")
}

/// The example cluster.env with another service IP (a value no other member repeats).
fn cluster_env_with_ip(ip: &str) -> Vec<u8> {
    let s = String::from_utf8(example("cluster.env")).unwrap();
    assert!(s.contains("ISTIO_SVC_IP='192.0.2.20'"), "{s}");
    s.replace("ISTIO_SVC_IP='192.0.2.20'", &format!("ISTIO_SVC_IP='{ip}'"))
        .into_bytes()
}

fn count(verbs: &[String], verb: &str) -> usize {
    verbs.iter().filter(|v| *v == verb).count()
}

/// Mode bits and owner of a path.
fn mode_uid(p: &std::path::Path) -> (u32, u32, u32) {
    let m = fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

/// A JWT for the example identity with the given issue and expiry times.
fn token(iat: i64, exp: i64) -> Vec<u8> {
    jwt(&format!(
        r#"{{"aud":["istio-ca"],"exp":{exp},"iat":{iat},"sub":"system:serviceaccount:vm-ns:vm-sa"}}"#
    ))
}

// ---------------------------------------------------------------------------------
// A report URL receiver: records every request with its body, answers 200
// ---------------------------------------------------------------------------------

/// A port nothing listens on, for 127.0.0.2: no test server binds there, so a port a
/// parallel test is handed on 127.0.0.1 never answers.
fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------
// 1. Start: the first reconcile installs everything and starts the service
// ---------------------------------------------------------------------------------

#[test]
fn start_installs_package_files_and_starts_the_service() {
    let vm = Vm::new("ready");
    let d = vm.daemon();
    let st = vm.wait_ready(&d);
    let ctx = || vm.context(&d);

    assert_eq!(st["last_apply"]["exit_code"], 0, "{}", ctx());
    assert_eq!(st["last_apply"]["bundle"], BUNDLE, "{}", ctx());
    assert_eq!(st["package_version"], V1, "{}", ctx());
    assert_eq!(
        st["warnings"],
        serde_json::json!([]),
        "a token valid until 2096 warns: {}",
        ctx()
    );
    assert_eq!(deb_installed(vm.root.path()).as_deref(), Some(V1));

    // The bundle's files, with their modes and owners.
    for (member, dest, mode, proxy) in FILES {
        let p = vm.at(dest);
        assert_eq!(
            fs::read(&p).ok(),
            Some(example(member)),
            "{dest}: {}",
            ctx()
        );
        let (m, uid, _) = mode_uid(&p);
        assert_eq!(m, mode, "{dest}: mode {m:o}");
        assert_eq!(uid, if proxy { PROXY_ID } else { 0 }, "{dest}: owner");
    }
    let hosts = String::from_utf8(vm.read("/etc/hosts").unwrap()).unwrap();
    assert!(
        hosts.contains("192.0.2.10 istiod.istio-system.svc"),
        "{hosts}"
    );

    // One `enable --now` starts it: no daemon-reload (the new unit file is loaded on
    // first reference), no separate enable and start.
    let verbs = vm.fake.verbs();
    let calls = vm.fake.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "enable --now --no-reload istio.service")
            .count(),
        1,
        "{calls:?}"
    );
    for v in ["daemon-reload", "start"] {
        assert_eq!(count(&verbs, v), 0, "{v}: {calls:?}");
    }
    assert_eq!(count(&verbs, "restart"), 0, "{verbs:?}");
    assert!(vm.fake.main_pid().is_some(), "not running: {}", ctx());
    assert!(vm.ready.hits() > 0, "readiness never probed");

    // The status file is world-readable; the log says what the first reconcile did.
    let (mode, _, _) = mode_uid(&vm.root.at(STATUS_FILE));
    assert_eq!(mode, 0o644, "status.json mode {mode:o}");
    // (Whichever start phase did it: files first, then package and service.)
    vm.wait_log(
        &d,
        0,
        &["repaired:", "reason=\"start\"", "service=enable --now"],
    );
    let err = d.stderr();
    let repaired: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("repaired:") && l.contains("reason=\"start"))
        .collect();
    for what in ["package (dpkg", TOKEN, CLUSTER_ENV, "/etc/hosts"] {
        assert!(
            repaired.iter().any(|l| l.contains(what)),
            "no start repair names {what:?}: {}",
            ctx()
        );
    }
    vm.wait_log(&d, 0, &["vmagent daemon ready"]);
    if std::env::var_os("DAEMON_TEST_SHOW").is_some() {
        eprintln!("{}", ctx());
    }
}

/// On a fresh VM the package (which creates istio-proxy) is not installed yet, so the
/// files-only start phase cannot succeed; that is expected, not an error. Minimal
/// reproduction: `vmagent daemon` on a root where the package is not installed and the
/// bundle carries it: stderr starts with `error: reconcile failed; retrying at the next
/// drift check reason="start: restore files" error=user 'istio-proxy' does not exist
/// ... exit_code=4`, and status.json's last_apply briefly records exit 4, although the
/// full reconcile right after installs everything.
#[test]
fn first_start_on_a_fresh_vm_logs_no_error() {
    let vm = Vm::new("ready");
    let d = vm.started();
    let err = d.stderr();
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(errors.is_empty(), "{errors:#?}\n{}", vm.context(&d));
}

// ---------------------------------------------------------------------------------
// 2. A bundle change at the configured path is picked up (inotify, not the drift timer)
// ---------------------------------------------------------------------------------

#[test]
fn bundle_change_is_applied_with_one_restart() {
    // A drift interval of an hour: only the bundle watch can pick the change up.
    let vm = Vm::with(
        "ready",
        &Conf {
            drift: 3600,
            ..Conf::default()
        },
    );
    let d = vm.started();
    let before = vm.fake.calls().len();
    let pid = vm.fake.main_pid().expect("running");
    let from = d.stderr().len();

    // Replaced the way `mv` does it.
    let env2 = cluster_env_with_ip("192.0.2.21");
    vm.put_bundle(BUNDLE, &vm.spec().set("cluster.env", env2.clone()));
    vm.wait_for(&d, "the new cluster.env installed", || {
        (vm.read(CLUSTER_ENV)? == env2).then_some(())
    });
    vm.wait_for(&d, "a restart", || {
        (count(&vm.fake.verbs_from(before), "restart") > 0).then_some(())
    });
    let line = vm.wait_log(&d, from, &["repaired:", "reason=\"bundle changed\""]);
    assert!(
        line.contains(CLUSTER_ENV) && line.contains("service=restart"),
        "{line}"
    );
    vm.wait_for(&d, "the restarted proxy", || {
        vm.fake.main_pid().filter(|p| *p != pid)
    });
    vm.wait_ready(&d);
    let verbs = vm.fake.verbs_from(before);
    assert_eq!(count(&verbs, "restart"), 1, "{verbs:?}\n{}", vm.context(&d));
    assert_eq!(count(&verbs, "start"), 0, "{verbs:?}");

    // Overwritten in place, the way `cp` does it: picked up as well.
    let before = vm.fake.calls().len();
    let env3 = cluster_env_with_ip("192.0.2.22");
    fs::write(
        vm.root.at(BUNDLE),
        vm.spec().set("cluster.env", env3.clone()).tar_bytes(),
    )
    .unwrap();
    vm.wait_for(&d, "the cluster.env of the overwritten bundle", || {
        (vm.read(CLUSTER_ENV)? == env3).then_some(())
    });
    vm.wait_for(&d, "a second restart", || {
        (count(&vm.fake.verbs_from(before), "restart") > 0).then_some(())
    });
}

// ---------------------------------------------------------------------------------
// 3. Drift is repaired, one kind per test
// ---------------------------------------------------------------------------------

/// Waits for the drift-check repair line naming `what`, logged after byte `from`.
#[track_caller]
fn assert_repair_logged(vm: &Vm, d: &Daemon, from: usize, what: &str) -> String {
    vm.wait_log(d, from, &["repaired:", "reason=\"drift check\"", what])
}

#[test]
fn drift_edited_file_is_restored() {
    let vm = Vm::new("ready");
    let d = vm.started();
    let (from, before) = (d.stderr().len(), vm.fake.calls().len());
    fs::write(
        vm.at(MESH),
        "defaultConfig:\n  discoveryAddress: evil.example:15012\n",
    )
    .unwrap();
    vm.wait_for(&d, "mesh restored", || {
        (vm.read(MESH)? == example("mesh.yaml")).then_some(())
    });
    let line = assert_repair_logged(&vm, &d, from, MESH);
    assert!(line.contains("replace-file"), "{line}");
    let (mode, uid, _) = mode_uid(&vm.at(MESH));
    assert_eq!((mode, uid), (0o644, PROXY_ID));
    // Restored to what the proxy read at start: no restart.
    let verbs = vm.fake.verbs_from(before);
    assert_eq!(
        count(&verbs, "restart") + count(&verbs, "start"),
        0,
        "{verbs:?}"
    );
}

#[test]
fn drift_deleted_file_is_restored() {
    let vm = Vm::new("ready");
    let d = vm.started();
    let from = d.stderr().len();
    fs::remove_file(vm.at(ROOT_CERT)).unwrap();
    vm.wait_for(&d, "root-cert.pem restored", || {
        (vm.read(ROOT_CERT)? == example("root-cert.pem")).then_some(())
    });
    let (mode, uid, gid) = mode_uid(&vm.at(ROOT_CERT));
    assert_eq!((mode, uid, gid), (0o644, PROXY_ID, PROXY_ID));
    assert_repair_logged(&vm, &d, from, ROOT_CERT);
}

#[test]
fn drift_mode_and_owner_are_restored() {
    let vm = Vm::new("ready");
    let d = vm.started();
    let from = d.stderr().len();
    let tok = vm.at(TOKEN);
    fs::set_permissions(&tok, fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(&tok, Some(0), Some(0)).unwrap();
    vm.wait_for(&d, "token mode and owner restored", || {
        (mode_uid(&tok) == (0o600, PROXY_ID, PROXY_ID)).then_some(())
    });
    assert_eq!(fs::read(&tok).unwrap(), example("istio-token"));
    assert_repair_logged(&vm, &d, from, TOKEN);
}

#[test]
fn drift_hosts_block_is_repaired_other_lines_untouched() {
    let vm = Vm::new("ready");
    let d = vm.started();
    let from = d.stderr().len();
    let hosts = vm.at("/etc/hosts");
    let ours = String::from_utf8(fs::read(&hosts).unwrap()).unwrap();
    let entry = "192.0.2.10 istiod.istio-system.svc";
    assert!(ours.contains(entry), "{ours}");
    // The admin's own lines, before and after the block, and an edit inside it.
    let mine = "10.9.9.9\tmine.example mine\n";
    let edited = format!(
        "# admin's comment\n{}{mine}",
        ours.replace(entry, "203.0.113.66 istiod.istio-system.svc")
    );
    fs::write(&hosts, &edited).unwrap();
    let want = format!("# admin's comment\n{ours}{mine}");
    vm.wait_for(&d, "the hosts block repaired", || {
        (fs::read_to_string(&hosts).ok()? == want).then_some(())
    });
    assert_repair_logged(&vm, &d, from, "/etc/hosts");
}

#[test]
fn drift_removed_package_is_reinstalled() {
    let vm = Vm::new("ready");
    let d = vm.started();
    let (from, before) = (d.stderr().len(), vm.fake.calls().len());
    let o = run_to_end(
        Command::new("dpkg")
            .arg("--root")
            .arg(vm.root.path())
            .args(["-r", "istio-sidecar"]),
        HANG,
    );
    assert!(o.status.success(), "dpkg -r: {}", show(&o));
    vm.wait_for(&d, "the package reinstalled", || {
        (deb_installed(vm.root.path()).as_deref() == Some(V1)
            && vm.root.at("/lib/systemd/system/istio.service").is_file())
        .then_some(())
    });
    assert_repair_logged(&vm, &d, from, "package (dpkg");
    // The unit came back (the same file: systemd needs no reload for it); the new
    // programs run.
    vm.wait_for(&d, "a (re)start", || {
        let c = vm.fake.calls();
        c[before..]
            .iter()
            .any(|c| {
                c.starts_with("restart istio")
                    || c.starts_with("start istio")
                    || c.starts_with("enable --now --no-reload istio")
            })
            .then_some(())
    });
    vm.wait_for(&d, "the service running", || vm.fake.main_pid());
    vm.wait_ready(&d);
    // The postinst chowned /var/lib/istio/envoy to istio-proxy; vmagent takes it back.
    vm.wait_for(&d, "/var/lib/istio/envoy root-owned again", || {
        (mode_uid(&vm.at("/var/lib/istio/envoy")).1 == 0).then_some(())
    });
    assert_eq!(vm.read(CLUSTER_ENV), Some(example("cluster.env")));
}

#[test]
fn drift_stopped_service_is_started() {
    let vm = Vm::new("ready");
    let d = vm.started();
    let (from, before) = (d.stderr().len(), vm.fake.calls().len());
    vm.systemctl(&["stop", "istio.service"]);
    assert!(vm.fake.main_pid().is_none(), "the fake did not stop it");
    vm.wait_for(&d, "the service started again", || {
        let v = vm.fake.verbs_from(before);
        (count(&v, "start") > 0).then_some(())?;
        vm.fake.main_pid()
    });
    assert_repair_logged(&vm, &d, from, "service=start");
    let verbs = vm.fake.verbs_from(before);
    assert_eq!(count(&verbs, "start"), 1, "{verbs:?}");
    vm.wait_ready(&d);
}

// ---------------------------------------------------------------------------------
// 4. After a reboot the token (tmpfs) is back before the status says ready
// ---------------------------------------------------------------------------------

/// One datagram the daemon sent to the notify socket.
#[derive(Debug, Clone)]
struct Notified {
    text: String,
    /// Whether the token file existed when the datagram was read.
    token_present: bool,
}

/// A notify socket like systemd's: collects datagrams, noting for each whether `token`
/// existed when it was read.
fn notify_socket(
    path: &std::path::Path,
    token: PathBuf,
) -> (Arc<Mutex<Vec<Notified>>>, Arc<AtomicBool>) {
    let sock = std::os::unix::net::UnixDatagram::bind(path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (got, stop) = (got.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let token_present = token.is_file();
                    got.lock().unwrap().push(Notified {
                        text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                        token_present,
                    });
                }
            }
        });
    }
    (got, stop)
}

/// Index of the first line of `text` containing all `needles`.
#[track_caller]
fn line_index(text: &str, needles: &[&str]) -> usize {
    text.lines()
        .position(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line with {needles:?} in:\n{text}"))
}

/// A token provider's refresh does not restart the proxy (VM test s10 saw one after
/// every refresh): pilot-agent reads the token file for every CA request (README, "How
/// pilot-agent renews"), so only a new identity is a reason to restart.
#[test]
fn a_refreshed_token_of_the_same_identity_does_not_restart_the_proxy() {
    let vm = Vm::new("ready");
    let feed = "/run/token-agent/istio-token";
    let mut conf = fs::read_to_string(vm.root.at(CONFIG)).unwrap();
    conf.push_str(&format!(
        "\n[token]\nprovider = \"file\"\npath = \"{feed}\"\n"
    ));
    vm.write_config_text(&conf);
    // The provider's files must be root-only (the test runs as root, as vmagent does).
    fs::set_permissions(vm.root.at(CONFIG), fs::Permissions::from_mode(0o600)).unwrap();
    let feed_at = vm.root.at(feed);
    fs::create_dir_all(feed_at.parent().unwrap()).unwrap();
    let put_feed = |tok: &[u8]| {
        fs::write(&feed_at, tok).unwrap();
        fs::set_permissions(&feed_at, fs::Permissions::from_mode(0o600)).unwrap();
    };
    // The bundle's token first (nothing newer yet: the installed one stays).
    put_feed(&example("istio-token"));
    let d = vm.started();
    let before = vm.fake.calls().len();
    let pid = vm.fake.main_pid();
    // Newer than the bundle's (exp 4000000000), same identity.
    let newer = jwt(&format!(
        r#"{{"aud":["istio-ca"],"exp":4100000000,"iat":{},"sub":"system:serviceaccount:vm-ns:vm-sa"}}"#,
        unix_now()
    ));
    put_feed(&newer);
    let mut want = newer.clone();
    want.push(b'\n');
    vm.wait_for(&d, "the refreshed token installed", || {
        (fs::read(vm.at(TOKEN)).ok()? == want).then_some(())
    });
    // Two drift checks (1 s apart) after the refresh: the one that used to restart.
    let from = d.stderr().len();
    vm.wait_for(&d, "two reconciles after the refresh", || {
        (d.stderr_from(from).matches("service step done").count() >= 2).then_some(())
    });
    let verbs = vm.fake.verbs_from(before);
    assert_eq!(count(&verbs, "restart"), 0, "{verbs:?}\n{}", vm.context(&d));
    assert_eq!(vm.fake.main_pid(), pid, "{}", vm.context(&d));
}

#[test]
fn token_restored_after_reboot_before_ready() {
    let vm = Vm::new("ready");
    let mut d = vm.started();
    d.signal(libc::SIGTERM);
    let s = d.wait_exit(HANG);
    assert_eq!(s.code(), Some(0), "{}", vm.context(&d));
    assert!(d.stderr().contains("stopping (signal)"), "{}", d.stderr());
    drop(d);

    // The reboot: the service is down, /run and /var/run (tmpfs) are empty.
    vm.systemctl(&["stop", "istio.service"]);
    fs::remove_dir_all(vm.root.at("/var/run/secrets")).unwrap();
    fs::remove_dir_all(vm.root.at("/run")).unwrap();
    let before = vm.fake.calls().len();

    // Started by "systemd": a notify socket and a 1 s watchdog.
    let sockdir = tempfile::tempdir().unwrap();
    let tok = vm.at(TOKEN);
    let (notes, stop_notes) = notify_socket(&sockdir.path().join("notify"), tok.clone());
    let mut d = vm.daemon_notified(&sockdir.path().join("notify"), 1_000_000);
    let st = vm.wait_for(&d, "ready after the reboot", || {
        let st = vm.status()?;
        // Whenever there is a status at all, the token is already back.
        assert!(
            tok.is_file(),
            "status.json written while the token is missing: {st:#}"
        );
        (st["health"]["state"] == "ready").then_some(st)
    });
    assert_eq!(fs::read(&tok).unwrap(), example("istio-token"));
    assert_eq!(mode_uid(&tok), (0o600, PROXY_ID, PROXY_ID));
    assert!(st["token"]["expires_at"].is_string(), "{st:#}");
    // Started (it was down), not restarted: the token is what it read before.
    let verbs = vm.fake.verbs_from(before);
    assert_eq!(count(&verbs, "start"), 1, "{verbs:?}");
    assert_eq!(count(&verbs, "restart"), 0, "{verbs:?}");

    // In order: the token restored, READY (istio.service, ordered after vmagent, may
    // start), then the service step.
    let err = d.stderr();
    let restored = line_index(&err, &["repaired:", "reason=\"start", TOKEN]);
    let ready = line_index(&err, &["vmagent daemon ready"]);
    let started = line_index(&err, &["service step done", "actions=start"]);
    assert!(restored < ready && ready < started, "order:\n{err}");
    let n = notes.lock().unwrap().clone();
    let first_ready = n
        .iter()
        .find(|m| m.text.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1: {n:?}"));
    assert!(first_ready.token_present, "READY=1 before the token: {n:?}");

    // The watchdog is fed (every half interval), and STOPPING=1 comes on SIGTERM.
    vm.wait_for(&d, "watchdog pings", || {
        let n = notes.lock().unwrap();
        (n.iter().filter(|m| m.text.contains("WATCHDOG=1")).count() >= 2).then_some(())
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(HANG).code(), Some(0), "{}", d.stderr());
    let deadline = Instant::now() + HANG;
    while !notes
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.text.contains("STOPPING=1"))
    {
        assert!(
            Instant::now() < deadline,
            "no STOPPING=1: {:?}",
            notes.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(50));
    }
    stop_notes.store(true, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------
// 5. SIGHUP reloads the configuration; an invalid one is not taken
// ---------------------------------------------------------------------------------

#[test]
fn sighup_reloads_the_config_and_keeps_it_when_invalid() {
    let conf = Conf {
        drift: 3600,
        ..Conf::default()
    };
    let vm = Vm::with("ready", &conf);
    let d = vm.started();

    // A second bundle elsewhere; the config is switched to it and the probe slowed.
    let other = "/etc/vmagent/site/bundle.tar";
    let env2 = cluster_env_with_ip("192.0.2.21");
    vm.put_bundle(other, &vm.spec().set("cluster.env", env2.clone()));
    vm.write_config(&Conf {
        bundle: other.into(),
        probe: 2,
        ..conf.clone()
    });
    let from = d.stderr().len();
    d.signal(libc::SIGHUP);
    vm.wait_log(&d, from, &["configuration reloaded (SIGHUP)"]);
    vm.wait_for(&d, "the new source's cluster.env", || {
        (vm.read(CLUSTER_ENV)? == env2).then_some(())
    });
    vm.wait_for(&d, "last_apply naming the new source", || {
        (vm.status()?["last_apply"]["bundle"] == other).then_some(())
    });

    // The new path is watched from now on.
    let env3 = cluster_env_with_ip("192.0.2.22");
    vm.put_bundle(other, &vm.spec().set("cluster.env", env3.clone()));
    vm.wait_for(&d, "a change at the new source", || {
        (vm.read(CLUSTER_ENV)? == env3).then_some(())
    });

    // An invalid config: logged, not taken, and the daemon goes on (a later valid
    // config is reloaded).
    let from = d.stderr().len();
    vm.write_config_text("[daemon]\ndrift_interval_secs = \"often\"\n");
    d.signal(libc::SIGHUP);
    let line = vm.wait_log(&d, from, &["keeping the old one"]);
    assert!(
        line.contains("drift_interval_secs") && line.contains("config.toml"),
        "the error names neither the key nor the file: {line}"
    );
    assert!(
        !d.stderr_from(from).contains("configuration reloaded"),
        "{}",
        d.stderr_from(from)
    );
    assert!(d.running(), "{}", vm.context(&d));
    let from = d.stderr().len();
    vm.write_config(&conf);
    d.signal(libc::SIGHUP);
    vm.wait_log(&d, from, &["configuration reloaded (SIGHUP)"]);
    vm.wait_for(&d, "the first source's cluster.env again", || {
        (vm.read(CLUSTER_ENV)? == example("cluster.env")).then_some(())
    });
}

/// "Keeping the old one" should mean the old configuration goes on working. Minimal
/// reproduction: a running daemon; config.toml made invalid; SIGHUP (logged: "keeping
/// the old one"); a managed file deleted: never restored, every reconcile fails with
/// exit 2 "config file ... invalid type", because `run::apply` loads the config from
/// disk again on every reconcile instead of using the daemon's copy.
#[test]
fn invalid_config_keeps_the_old_one_in_force() {
    let vm = Vm::new("ready");
    let d = vm.started();
    let from = d.stderr().len();
    vm.write_config_text("[daemon]\ndrift_interval_secs = \"often\"\n");
    d.signal(libc::SIGHUP);
    vm.wait_log(&d, from, &["keeping the old one"]);
    fs::remove_file(vm.at(ROOT_CERT)).unwrap();
    vm.wait_for(&d, "root-cert.pem restored under the old config", || {
        vm.read(ROOT_CERT)
    });
    let st = vm.status().unwrap();
    assert_eq!(st["last_apply"]["exit_code"], 0, "{st:#}");
}

// ---------------------------------------------------------------------------------
// 5b. A bad bundle, a bundle that arrives late
// ---------------------------------------------------------------------------------

#[test]
fn invalid_bundle_changes_nothing_and_is_recorded() {
    let vm = Vm::with(
        "ready",
        &Conf {
            drift: 3600,
            ..Conf::default()
        },
    );
    let d = vm.started();
    let before = vm.fake.calls().len();
    let from = d.stderr().len();
    // cluster.env changed, but the token is not a JWT: refused as a whole.
    vm.put_bundle(
        BUNDLE,
        &vm.spec()
            .set("cluster.env", cluster_env_with_ip("192.0.2.21"))
            .set("istio-token", "not-a-token"),
    );
    let st = vm.wait_for(&d, "last_apply recording the refusal", || {
        vm.status().filter(|s| s["last_apply"]["exit_code"] == 2)
    });
    assert!(
        st["last_apply"]["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("error: ") && r.contains("istio-token")),
        "{st:#}"
    );
    vm.wait_log(&d, from, &["reconcile failed", "reason=\"bundle changed\""]);
    assert_eq!(vm.read(CLUSTER_ENV), Some(example("cluster.env")));
    assert_eq!(vm.read(TOKEN), Some(example("istio-token")));
    let verbs = vm.fake.verbs_from(before);
    assert!(
        verbs.iter().all(|v| v == "show" || v == "is-enabled"),
        "{verbs:?}"
    );
    assert!(d.running());
    // Fixed: applied.
    let env2 = cluster_env_with_ip("192.0.2.21");
    vm.put_bundle(BUNDLE, &vm.spec().set("cluster.env", env2.clone()));
    vm.wait_for(&d, "the fixed bundle applied", || {
        (vm.read(CLUSTER_ENV)? == env2 && vm.status()?["last_apply"]["exit_code"] == 0)
            .then_some(())
    });
}

/// First boot: the daemon starts before the bundle is delivered (cloud-init, config
/// management); the bundle's arrival is picked up by the watch.
#[test]
fn bundle_arriving_after_start_is_applied() {
    let vm = Vm::with(
        "ready",
        &Conf {
            drift: 3600,
            ..Conf::default()
        },
    );
    fs::remove_file(vm.root.at(BUNDLE)).unwrap();
    let d = vm.daemon();
    vm.wait_for(&d, "the failed first reconcile recorded", || {
        vm.status().filter(|s| s["last_apply"]["exit_code"] != 0)
    });
    // Nothing to apply: systemd was only asked about the unit (health, enablement),
    // not told.
    assert!(
        vm.fake
            .verbs()
            .iter()
            .all(|v| v == "show" || v == "is-enabled"),
        "{}",
        vm.context(&d)
    );
    assert_eq!(deb_installed(vm.root.path()), None);
    vm.put_bundle(BUNDLE, &vm.spec());
    vm.wait_ready(&d);
    assert_eq!(deb_installed(vm.root.path()).as_deref(), Some(V1));
    assert_eq!(vm.read(TOKEN), Some(example("istio-token")));
    vm.wait_log(&d, 0, &["repaired:", "reason=\"bundle changed\""]);
}

// ---------------------------------------------------------------------------------
// 6. SIGTERM and SIGINT: exit 0 promptly (the proxy keeps running)
// ---------------------------------------------------------------------------------

#[test]
fn sigterm_and_sigint_exit_zero() {
    // Long timers: the signal itself must wake the loop.
    let vm = Vm::with(
        "ready",
        &Conf {
            drift: 3600,
            probe: 3600,
            ..Conf::default()
        },
    );
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut d = vm.daemon();
        vm.wait_log(&d, 0, &["vmagent daemon ready"]);
        if sig == libc::SIGTERM {
            // A steady-state stop: the first start installs and starts the proxy (a stop
            // mid-apply abandons the apply; see sigterm_mid_download_exits_promptly).
            vm.wait_log(&d, 0, &["repaired:", "reason=\"start\""]);
        }
        d.signal(sig);
        let s = d.wait_exit(HANG);
        assert_eq!(s.code(), Some(0), "{name}: {s:?}\n{}", vm.context(&d));
        assert!(
            d.stderr().contains("stopping (signal)"),
            "{name}: {}",
            d.stderr()
        );
        assert!(
            vm.fake.main_pid().is_some(),
            "{name}: stopping vmagent stopped the proxy"
        );
    }
}

// ---------------------------------------------------------------------------------
// 7. One daemon per root
// ---------------------------------------------------------------------------------

#[test]
fn second_daemon_is_refused() {
    let vm = Vm::new("ready");
    let d = vm.started();
    let before = vm.fake.calls().len();
    let mut c = vmagent_cmd();
    c.arg("daemon").arg("--root").arg(vm.root.path()).arg("-v");
    vm.fake.configure(&mut c);
    let o = run_to_end(&mut c, HANG);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let err = stderr(&o);
    assert!(
        err.contains("daemon.lock") && err.contains("already running"),
        "{}",
        show(&o)
    );
    assert!(d.running(), "the first daemon died: {}", vm.context(&d));
    let verbs = vm.fake.verbs_from(before);
    for v in ["start", "restart", "enable", "daemon-reload", "stop"] {
        assert_eq!(count(&verbs, v), 0, "{v}: {verbs:?}");
    }
    // The first one still does its job.
    let from = d.stderr().len();
    fs::remove_file(vm.at(ROOT_CERT)).unwrap();
    vm.wait_for(&d, "root-cert.pem restored by the first daemon", || {
        vm.read(ROOT_CERT)
    });
    assert_repair_logged(&vm, &d, from, ROOT_CERT);
}

// ---------------------------------------------------------------------------------
// 8. The report URL
// ---------------------------------------------------------------------------------

#[test]
fn report_url_receives_health_documents() {
    let rs = ReportServer::start();
    let vm = Vm::with(
        "ready",
        &Conf {
            report_url: Some(rs.url()),
            ..Conf::default()
        },
    );
    let d = vm.started();
    vm.wait_for(&d, "a report saying ready", || {
        rs.docs_from(0)
            .iter()
            .any(|j| j["health"]["state"] == "ready")
            .then_some(())
    });
    for p in rs.posted() {
        assert_eq!((p.method.as_str(), p.path.as_str()), ("POST", "/report"));
        assert!(p.content_type.starts_with("application/json"), "{p:?}");
    }
    for j in rs.docs_from(0) {
        assert!(j["health"]["state"].is_string(), "{j:#}");
        let text = j.to_string();
        assert!(
            !text.contains(String::from_utf8_lossy(&example("istio-token")).trim()),
            "the token itself was reported"
        );
    }

    // A health change: the proxy restarts (new bundle) into a CA mismatch.
    set_scenario(vm.root.path(), "ca-mismatch");
    let n = rs.posted().len();
    vm.put_bundle(
        BUNDLE,
        &vm.spec()
            .set("cluster.env", cluster_env_with_ip("192.0.2.21")),
    );
    let j = vm.wait_for(&d, "a report of the ca-mismatch", || {
        rs.docs_from(n)
            .into_iter()
            .find(|j| j["health"]["reason"] == "ca-mismatch")
    });
    assert_ne!(j["health"]["state"], "ready", "{j:#}");
    assert!(
        j["health"]["hint"].is_string() && j["health"]["evidence"][0].is_string(),
        "{j:#}"
    );
}

#[test]
fn dead_report_url_does_not_stop_the_daemon() {
    let vm = Vm::with(
        "ready",
        &Conf {
            report_url: Some(format!("http://127.0.0.2:{}/report", dead_port())),
            ..Conf::default()
        },
    );
    let d = vm.started();
    vm.wait_log(&d, 0, &["report URL unreachable"]);
    // The loop is not held up by the retries: it still repairs and updates the status.
    let from = d.stderr().len();
    let at = vm.status().unwrap()["last_apply"]["at"].clone();
    fs::remove_file(vm.at(ROOT_CERT)).unwrap();
    vm.wait_for(&d, "root-cert.pem restored", || vm.read(ROOT_CERT));
    assert_repair_logged(&vm, &d, from, ROOT_CERT);
    vm.wait_for(&d, "a newer last_apply in status.json", || {
        (vm.status()?["last_apply"]["at"] != at).then_some(())
    });
}

// ---------------------------------------------------------------------------------
// 9. Token expiry in the status warnings
// ---------------------------------------------------------------------------------

/// sd_notify STATUS (the line `systemctl status vmagent` shows) carries the identity
/// timeline's warning too, not only the status file and the log.
#[test]
fn the_identity_warning_reaches_the_service_status_line() {
    let vm = Vm::with("ready", &Conf::default());
    let now = unix_now();
    let tok = token(now - 3600, now + 3600);
    vm.put_bundle(BUNDLE, &vm.spec().set("istio-token", tok));
    let sockdir = tempfile::tempdir().unwrap();
    let (notes, stop_notes) = notify_socket(&sockdir.path().join("notify"), vm.at(TOKEN));
    let d = vm.daemon_notified(&sockdir.path().join("notify"), 1_000_000);
    vm.wait_for(&d, "a STATUS= with the identity warning", || {
        notes
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.text.contains("STATUS=") && n.text.contains("the mesh identity lapses at"))
            .then_some(())
    });
    stop_notes.store(true, Ordering::Relaxed);
}

#[test]
fn token_near_expiry_is_warned_about() {
    // 90% of a 10 h lifetime used: no warning at a 95% threshold...
    let conf = Conf {
        token_warn_percent: Some(95),
        ..Conf::default()
    };
    let vm = Vm::with("ready", &conf);
    let now = unix_now();
    let tok = token(now - 9 * 3600, now + 3600);
    vm.put_bundle(BUNDLE, &vm.spec().set("istio-token", tok.clone()));
    let d = vm.started();
    // The token's own warnings (the identity timeline warns separately: no certificate
    // was saved here, so it lapses with this token within a day).
    let warnings = |st: &serde_json::Value| -> Vec<String> {
        st["warnings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(String::from))
                    .filter(|w| w.starts_with("the token"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let st = vm.status().unwrap();
    assert_eq!(warnings(&st), Vec::<String>::new(), "{st:#}");
    assert_eq!(vm.read(TOKEN), Some(tok), "{st:#}");
    // The identity timeline: no certificate was saved, so it lapses with the token, an
    // hour away: inside the default one-day lead, in the status file and the log.
    let st = vm.wait_for(&d, "an identity warning in status.json", || {
        let st = vm.status()?;
        st["warnings"]
            .to_string()
            .contains("the mesh identity lapses at")
            .then_some(st)
    });
    assert_eq!(
        st["identity"]["reason"], "token-expires-no-certificate",
        "{st:#}"
    );
    vm.wait_log(&d, 0, &["identity: the mesh identity lapses at"]);

    // ...and a warning at the default 80%, once the config is reloaded.
    vm.write_config(&Conf {
        token_warn_percent: None,
        ..conf
    });
    let from = d.stderr().len();
    d.signal(libc::SIGHUP);
    vm.wait_log(&d, from, &["configuration reloaded (SIGHUP)"]);
    let st = vm.wait_for(&d, "a status warning that the token expires", || {
        let st = vm.status()?;
        warnings(&st)
            .iter()
            .any(|w| w.contains("token expires"))
            .then_some(st)
    });
    assert_eq!(st["health"]["state"], "ready", "{st:#}");
    vm.wait_log(&d, from, &["token expires"]);
}

#[test]
fn expired_token_is_installed_and_warned_about() {
    let vm = Vm::new("ready");
    let now = unix_now();
    let tok = token(now - 10 * 3600, now - 3600);
    vm.put_bundle(BUNDLE, &vm.spec().set("istio-token", tok.clone()));
    let d = vm.daemon();
    let st = vm.wait_for(&d, "a status warning that the token expired", || {
        let st = vm.status()?;
        st["warnings"]
            .as_array()?
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("expired")))
            .then_some(st)
    });
    // Allowed by the daemon: installed all the same.
    assert_eq!(vm.read(TOKEN), Some(tok), "{st:#}\n{}", vm.context(&d));
    assert_eq!(st["last_apply"]["exit_code"], 0, "{st:#}");
}

// ---------------------------------------------------------------------------------
// 10. vmagent config show
// ---------------------------------------------------------------------------------

#[test]
fn config_show_merges_drop_ins_and_redacts_headers() {
    let r = TestRoot::new();
    let write = |sys: &str, text: &str| {
        let p = r.at(sys);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    write(
        CONFIG,
        "[source]\nbundle = \"/etc/vmagent/bundle.tar\"\n[daemon]\ndrift_interval_secs = 5\nprobe_interval_secs = 3\n",
    );
    write(
        "/etc/vmagent/config.d/50-site.toml",
        "[daemon]\ndrift_interval_secs = 7\n[source]\nheaders = { Authorization = \"Bearer s3cret-value\", X-Tenant = \"t-s3cret\" }\n[health]\nreport_url = \"http://127.0.0.1:9/report\"\n",
    );
    write("/etc/vmagent/config.d/README", "not toml: ignored\n");
    let mut c = vmagent_cmd();
    c.args(["config", "show", "--root"]).arg(r.path());
    let o = run_to_end(&mut c, HANG);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    assert!(!out.contains("s3cret"), "a header value leaked: {out}");
    let t: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let get = |a: &str, b: &str| t[a][b].clone();
    assert_eq!(
        get("source", "bundle").as_str(),
        Some("/etc/vmagent/bundle.tar")
    );
    assert_eq!(get("daemon", "drift_interval_secs").as_integer(), Some(7));
    assert_eq!(get("daemon", "probe_interval_secs").as_integer(), Some(3));
    assert_eq!(get("daemon", "token_warn_percent").as_integer(), Some(80));
    assert_eq!(
        get("health", "report_url").as_str(),
        Some("http://127.0.0.1:9/report")
    );
    let headers = get("source", "headers");
    assert_eq!(
        headers["Authorization"].as_str(),
        Some("<redacted>"),
        "{out}"
    );
    assert_eq!(headers["X-Tenant"].as_str(), Some("<redacted>"), "{out}");

    // A broken drop-in is named, and nothing is shown.
    write(
        "/etc/vmagent/config.d/60-bad.toml",
        "[daemon]\ndrift_intervall_secs = 1\n",
    );
    let o = run_to_end(&mut c, HANG);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("60-bad.toml") && stderr(&o).contains("drift_intervall_secs"),
        "{}",
        show(&o)
    );
    assert!(!stdout(&o).contains("s3cret"), "{}", show(&o));
}

// ---------------------------------------------------------------------------------
// Bugs found
// ---------------------------------------------------------------------------------

/// status.json is the daemon's: between drift checks of a ready proxy it must say ready,
/// with the configured (system) bundle path. Reads it continuously over five reconciles.
#[test]
fn status_file_stays_ready_between_drift_checks() {
    let vm = Vm::new("ready");
    let d = vm.started();
    let until = vm.reconciles() + 5;
    let mut wrong = Vec::new();
    let mut reads = 0;
    let deadline = Instant::now() + HANG;
    while vm.reconciles() < until && Instant::now() < deadline {
        if let Some(st) = vm.status() {
            reads += 1;
            if st["health"]["state"] != "ready" || st["last_apply"]["bundle"] != BUNDLE {
                wrong.push(format!(
                    "state {} bundle {}",
                    st["health"]["state"], st["last_apply"]["bundle"]
                ));
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    assert!(vm.reconciles() >= until, "{}", vm.context(&d));
    assert!(
        wrong.is_empty(),
        "{} of {reads} reads of status.json were not the daemon's ready status: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

// ---------------------------------------------------------------------------------
// 8. Last-known-good: a new bundle whose proxy does not become ready is rolled back
// ---------------------------------------------------------------------------------

/// A cluster.env (new istiod address) whose stand-in proxy plays `scenario`.
fn cluster_env_playing(ip: &str, scenario: &str) -> Vec<u8> {
    let mut env = cluster_env_with_ip(ip);
    env.extend_from_slice(format!("# fixture-scenario: {scenario}\n").as_bytes());
    env
}

/// Waits until the status records the first bundle as last-known-good; returns its
/// digest.
fn wait_good(vm: &Vm, d: &Daemon) -> String {
    let st = vm.wait_for(d, "a last-known-good bundle in status.json", || {
        vm.status()
            .filter(|s| s["bundle"]["last_known_good"].is_string())
    });
    assert_eq!(
        st["bundle"]["current"], st["bundle"]["last_known_good"],
        "{st:#}"
    );
    st["bundle"]["last_known_good"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn new_bundle_not_ready_in_time_is_rolled_back_and_not_retried() {
    let vm = Vm::with(
        "ready",
        &Conf {
            drift: 3600,
            wait: Some(3),
            ..Conf::default()
        },
    );
    let d = vm.started();
    let good = wait_good(&vm, &d);
    let before = vm.fake.calls().len();
    let from = d.stderr().len();

    // The new bundle's proxy never becomes ready (and logs no error).
    let bad_env = cluster_env_playing("192.0.2.31", "silent");
    vm.put_bundle(BUNDLE, &vm.spec().set("cluster.env", bad_env.clone()));
    vm.wait_for(&d, "the new bundle's cluster.env installed", || {
        (vm.read(CLUSTER_ENV)? == bad_env).then_some(())
    });
    let st = vm.wait_for(&d, "the rollback, and the old bundle's proxy ready", || {
        vm.status().filter(|s| {
            s["bundle"]["rejected"].is_object()
                && s["health"]["state"] == "ready"
                && s["last_apply"]["result"] == "rolled-back"
        })
    });
    let ctx = || format!("{st:#}\n{}", vm.context(&d));
    assert_eq!(
        vm.read(CLUSTER_ENV),
        Some(example("cluster.env")),
        "{}",
        ctx()
    );
    assert_eq!(st["bundle"]["current"], good.as_str(), "{}", ctx());
    assert_eq!(st["bundle"]["last_known_good"], good.as_str(), "{}", ctx());
    let rejected = st["bundle"]["rejected"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rejected, good);
    let reason = st["bundle"]["rejected"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("not ready within 3 s"), "{}", ctx());
    assert!(
        st["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("rolled back")),
        "{}",
        ctx()
    );
    let line = vm.wait_log(&d, from, &["rolling back", "last_known_good="]);
    assert!(line.contains(&rejected[..12]), "{line}");
    // One restart for the new bundle, one for the rollback.
    let verbs = vm.fake.verbs_from(before);
    assert_eq!(count(&verbs, "restart"), 2, "{verbs:?}\n{}", ctx());

    // A reconcile (SIGHUP) with the bad bundle still at the source leaves it alone.
    let before = vm.fake.calls().len();
    let from = d.stderr().len();
    d.signal(libc::SIGHUP);
    vm.wait_log(&d, from, &["configuration reloaded"]);
    vm.wait_for(&d, "the reconcile after SIGHUP", || {
        vm.status()
            .filter(|s| s["last_apply"]["result"] == "up-to-date")
    });
    assert_eq!(vm.read(CLUSTER_ENV), Some(example("cluster.env")));
    let verbs = vm.fake.verbs_from(before);
    assert_eq!(count(&verbs, "restart"), 0, "{verbs:?}");

    // A changed bundle is tried, becomes ready and is the new last-known-good.
    let env2 = cluster_env_with_ip("192.0.2.32");
    vm.put_bundle(BUNDLE, &vm.spec().set("cluster.env", env2.clone()));
    let st = vm.wait_for(&d, "the fixed bundle as last-known-good", || {
        vm.status().filter(|s| {
            s["bundle"]["last_known_good"].is_string()
                && s["bundle"]["last_known_good"] != good.as_str()
        })
    });
    assert!(st["bundle"]["rejected"].is_null(), "{st:#}");
    assert!(st["bundle"]["trial"].is_null(), "{st:#}");
    assert_eq!(vm.read(CLUSTER_ENV), Some(env2));
    // The store keeps what it may need: the bundle in force (the good one).
    let store: Vec<_> = fs::read_dir(vm.root.at("/var/lib/vmagent/bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tar"))
        .collect();
    assert_eq!(store.len(), 1, "{store:?}");
}

#[test]
fn definitive_failure_rolls_back_without_waiting_out_the_timeout() {
    let rs = ReportServer::start();
    let vm = Vm::with(
        "ready",
        &Conf {
            drift: 3600,
            wait: Some(600),
            report_url: Some(rs.url()),
            ..Conf::default()
        },
    );
    let d = vm.started();
    let good = wait_good(&vm, &d);
    vm.put_bundle(
        BUNDLE,
        &vm.spec().set(
            "cluster.env",
            cluster_env_playing("192.0.2.41", "ca-mismatch"),
        ),
    );
    let st = vm.wait_for(&d, "a rollback long before wait_secs", || {
        vm.status()
            .filter(|s| s["bundle"]["rejected"].is_object() && s["health"]["state"] == "ready")
    });
    assert_eq!(st["bundle"]["current"], good.as_str(), "{st:#}");
    let reason = st["bundle"]["rejected"]["reason"].as_str().unwrap();
    assert!(reason.contains("ca-mismatch"), "{reason}");
    assert_eq!(vm.read(CLUSTER_ENV), Some(example("cluster.env")));
    // The report URL hears of it.
    let j = vm.wait_for(&d, "a report of the rollback", || {
        rs.docs_from(0)
            .into_iter()
            .find(|j| j["bundle"]["rejected"].is_object())
    });
    assert!(j["warnings"].to_string().contains("rolled back"), "{j:#}");
}

/// Without a bundle that was ever ready there is nothing to go back to: the first
/// bundle stays, and its failure is reported.
#[test]
fn first_bundle_failing_is_reported_not_rolled_back() {
    let vm = Vm::with(
        "ready",
        &Conf {
            drift: 3600,
            // ca-mismatch is a final verdict, so the trial ends with it long before
            // this; a short wait_secs would race the stand-in's first lines on a loaded
            // machine (the trial then ends "not ready" instead).
            wait: Some(120),
            ..Conf::default()
        },
    );
    let env = cluster_env_playing("192.0.2.51", "ca-mismatch");
    vm.put_bundle(BUNDLE, &vm.spec().set("cluster.env", env.clone()));
    let d = vm.daemon();
    let st = vm.wait_for(&d, "the failure in status.json", || {
        vm.status().filter(|s| s["health"]["state"] == "failed")
    });
    assert_eq!(st["health"]["reason"], "ca-mismatch", "{st:#}");
    // Nothing more may happen: a negative check can only pass wrongly under load, never
    // fail wrongly, so a fixed pause is fine here.
    thread::sleep(Duration::from_secs(3));
    let st = vm.status().unwrap();
    assert!(st["bundle"]["rejected"].is_null(), "{st:#}");
    assert!(st["bundle"]["last_known_good"].is_null(), "{st:#}");
    assert_eq!(vm.read(CLUSTER_ENV), Some(env));
}

// ---------------------------------------------------------------------------------
// 9. An https bundle source: polled with ETag, backoff on errors
// ---------------------------------------------------------------------------------

#[test]
fn url_source_is_polled_with_etag_and_backs_off_on_errors() {
    use common::server::{Fault, Server, TestCa};
    let ca = TestCa::new();
    let srv = Server::https(&ca);
    let vm = Vm::with("ready", &Conf::default());
    fs::remove_file(vm.root.at(BUNDLE)).unwrap();
    ca.write_pem(&vm.root.at("/etc/vmagent"));
    let path = "/fleet/vm1/bundle.tar";
    srv.put(path, vm.spec().tar_bytes());
    vm.write_config_text(&format!(
        "[source]\nbundle = \"{}\"\nca_file = \"/etc/vmagent/test-ca.pem\"\npoll_interval_secs = 1\nheaders = {{ Authorization = \"Bearer s3cret\" }}\n\n[package]\nversion = \"{V1}\"\n\n[daemon]\ndrift_interval_secs = 3600\nprobe_interval_secs = 1\n\n[health]\nready_url = \"{}\"\n",
        srv.url(path),
        vm.ready.url()
    ));
    let d = vm.daemon();
    vm.wait_ready(&d);
    assert_eq!(vm.read(TOKEN), Some(example("istio-token")));
    assert_eq!(deb_installed(vm.root.path()).as_deref(), Some(V1));

    // Later polls are conditional and cost a 304, not a download.
    vm.wait_for(&d, "three polls", || {
        (srv.requests_for(path).len() >= 3).then_some(())
    });
    let reqs = srv.requests_for(path);
    let header = |r: &common::server::Request, name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert!(
        reqs.iter()
            .all(|r| header(r, "authorization").as_deref() == Some("Bearer s3cret")),
        "{reqs:?}"
    );
    assert_eq!(header(&reqs[0], "if-none-match"), None, "{reqs:?}");
    assert!(
        reqs[1..]
            .iter()
            .all(|r| header(r, "if-none-match").is_some()),
        "{reqs:?}"
    );
    assert!(
        !d.stderr().contains("s3cret"),
        "the header value was logged"
    );

    // A changed bundle on the server is fetched and applied.
    let from = d.stderr().len();
    let env2 = cluster_env_with_ip("192.0.2.61");
    srv.put(path, vm.spec().set("cluster.env", env2.clone()).tar_bytes());
    vm.wait_for(&d, "the fetched bundle's cluster.env", || {
        (vm.read(CLUSTER_ENV)? == env2).then_some(())
    });
    vm.wait_log(&d, from, &["fetched a new bundle"]);
    vm.wait_ready(&d);

    // The server fails: polls back off (1 s doubling, ±20 %), and the bundle in force
    // keeps being repaired from the store.
    srv.always(path, Fault::Status(503));
    vm.wait_for(&d, "the poll failure in status.json", || {
        vm.status().filter(|s| {
            s["warnings"]
                .as_array()
                .is_some_and(|w| w.iter().any(|w| w.as_str().unwrap().contains("HTTP 503")))
        })
    });
    srv.clear_log();
    let window = Instant::now();
    fs::remove_file(vm.root.at(TOKEN)).unwrap();
    d.signal(libc::SIGHUP);
    vm.wait_for(&d, "the token restored while the server fails", || {
        vm.read(TOKEN)
    });
    // At least one poll must come (the SIGHUP polls afresh): waited for, since a loaded
    // machine may take longer than the window; the upper bound below is what counts,
    // and load can only lower the count.
    vm.wait_for(&d, "a poll after SIGHUP", || {
        (!srv.requests_for(path).is_empty()).then_some(())
    });
    thread::sleep(Duration::from_secs(6).saturating_sub(window.elapsed()));
    // Without backoff a 1 s interval polls 6 times in 6 s; with it (2, 4, 8 s after the
    // first failure, SIGHUP starting afresh) at most 3.
    let n = srv.requests_for(path).len();
    assert!((1..=3).contains(&n), "{n} polls in 6 s\n{}", vm.context(&d));
    assert_eq!(vm.read(CLUSTER_ENV), Some(env2));
}

/// `vmagent uninstall` under a running daemon would be undone by its next reconcile: it
/// is refused (exit 3, naming what to do) and changes nothing.
#[test]
fn uninstall_is_refused_while_the_daemon_runs() {
    let vm = Vm::with(
        "ready",
        &Conf {
            drift: 3600,
            ..Conf::default()
        },
    );
    let mut d = vm.started();
    let before = vm.fake.calls().len();
    let mut c = vmagent_cmd();
    c.args(["uninstall", "--root"]).arg(vm.root.path());
    vm.fake.configure(&mut c);
    let o = code(run_to_end(&mut c, HANG), 3, "uninstall under the daemon");
    let err = stderr(&o);
    assert!(
        err.contains("vmagent daemon is running")
            && err.contains("systemctl disable --now vmagent"),
        "{err}"
    );
    assert_eq!(vm.read(TOKEN), Some(example("istio-token")));
    assert_eq!(deb_installed(vm.root.path()).as_deref(), Some(V1));
    // The running daemon may query systemd meanwhile (status refresh): only a changing
    // verb would be uninstall's.
    let verbs = vm.fake.verbs_from(before);
    assert!(
        verbs.iter().all(|v| v == "show" || v == "is-enabled"),
        "{verbs:?}"
    );
    // Once the daemon is stopped, it goes through.
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(HANG).success());
    let mut c = vmagent_cmd();
    c.args(["uninstall", "--root"]).arg(vm.root.path());
    vm.fake.configure(&mut c);
    ok(
        run_to_end(&mut c, HANG),
        "uninstall after the daemon stopped",
    );
    assert_eq!(vm.read(TOKEN), None);
    assert_eq!(deb_installed(vm.root.path()), None);
    assert!(!vm.at("/var/lib/vmagent/bundles").exists());
}

/// Under systemd (stderr is the journal: JOURNAL_STREAM names it) every line carries its
/// syslog priority as a `<N>` prefix and keeps its fields in the text, which is what
/// `journalctl -u vmagent` shows (the VM test found errors without their reason when
/// they were journal fields).
#[test]
fn journal_lines_carry_priority_and_fields() {
    let vm = Vm::with(
        "ready",
        &Conf {
            drift: 3600,
            ..Conf::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("journal-stream");
    let file = fs::File::create(&log).unwrap();
    let m = file.metadata().unwrap();
    let mut c = vmagent_cmd();
    c.args(["daemon", "--root"])
        .arg(vm.root.path())
        .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    vm.fake.configure(&mut c);
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + HANG;
    let text = loop {
        let t = fs::read_to_string(&log).unwrap_or_default();
        if t.contains("health: ready") || Instant::now() > deadline {
            break t;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("<6>health: ready"), "{text}");
    let repaired = text
        .lines()
        .find(|l| l.contains("repaired:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        repaired.starts_with("<4>repaired:") && repaired.contains("changes="),
        "{text}"
    );
    assert!(
        text.lines().all(|l| l.starts_with('<')),
        "a line without priority:\n{text}"
    );
}

// ---------------------------------------------------------------------------------
// The one HTTP layer's policies, seen through the daemon
// ---------------------------------------------------------------------------------

/// [source] headers are secrets for the source's origin: a redirect to another origin
/// (another port on 127.0.0.1) gets the bundle without them.
#[test]
fn url_source_headers_are_not_sent_to_another_origin() {
    use common::server::{Fault, Server};
    let (origin, other) = (Server::http(), Server::http());
    let vm = Vm::with("ready", &Conf::default());
    fs::remove_file(vm.root.at(BUNDLE)).unwrap();
    let path = "/fleet/vm1/bundle.tar";
    other.put("/elsewhere/bundle.tar", vm.spec().tar_bytes());
    origin.always(path, Fault::Redirect(other.url("/elsewhere/bundle.tar")));
    vm.write_config_text(&format!(
        "[source]\nbundle = \"{}\"\npoll_interval_secs = 1\nheaders = {{ X-Api-Key = \"k3y-s3cret\", Authorization = \"Bearer s3cret\" }}\n\n[package]\nversion = \"{V1}\"\n\n[daemon]\ndrift_interval_secs = 3600\nprobe_interval_secs = 1\n\n[health]\nready_url = \"{}\"\n",
        origin.url(path),
        vm.ready.url()
    ));
    let d = vm.daemon();
    vm.wait_ready(&d);
    assert_eq!(vm.read(TOKEN), Some(example("istio-token")));
    let has = |r: &common::server::Request, name: &str| r.headers.iter().any(|(k, _)| k == name);
    let sent = origin.requests_for(path);
    assert!(
        !sent.is_empty()
            && sent
                .iter()
                .all(|r| has(r, "x-api-key") && has(r, "authorization")),
        "the origin did not get its headers: {sent:?}"
    );
    let leaked = other.requests_for("/elsewhere/bundle.tar");
    assert!(!leaked.is_empty(), "the redirect was not followed");
    assert!(
        leaked
            .iter()
            .all(|r| !has(r, "x-api-key") && !has(r, "authorization")),
        "secret headers went to another origin: {leaked:?}"
    );
}

/// The report URL is reached over https with a private CA: the configured CA file is
/// trusted by the report sender as by the package download.
#[test]
fn report_url_over_https_trusts_the_configured_ca() {
    use common::server::{Server, TestCa};
    let ca = TestCa::new();
    let receiver = Server::https(&ca);
    let vm = Vm::with("ready", &Conf::default());
    ca.write_pem(&vm.root.at("/etc/vmagent"));
    vm.write_config_text(&format!(
        "[source]\nbundle = \"{BUNDLE}\"\n\n[package]\nversion = \"{V1}\"\nca_file = \"/etc/vmagent/test-ca.pem\"\n\n[daemon]\ndrift_interval_secs = 3600\nprobe_interval_secs = 1\n\n[health]\nready_url = \"{}\"\nreport_url = \"{}\"\n",
        vm.ready.url(),
        receiver.url("/report")
    ));
    let d = vm.daemon();
    vm.wait_ready(&d);
    // The receiver logs a request only once TLS is through (it answers the POST 400,
    // which the daemon only warns about).
    vm.wait_for(&d, "a POST to the https report URL", || {
        receiver
            .requests_for("/report")
            .into_iter()
            .find(|r| r.method == "POST")
    });
}

/// Issue 13: a URL poll is awaited beside the signals and the watchdog. A bundle server
/// trickling one byte every 2 s used to hold the loop (SIGTERM waited for the poll, and
/// only a helper thread fed the watchdog). Now the watchdog keeps being fed while the
/// body trickles, and SIGTERM ends the daemon at once, long before the body would end.
#[test]
fn sigterm_and_watchdog_are_served_mid_download() {
    use common::server::{Fault, Server};
    let server = Server::http();
    let vm = Vm::with("ready", &Conf::default());
    fs::remove_file(vm.root.at(BUNDLE)).unwrap();
    let path = "/fleet/vm1/bundle.tar";
    let body = vm.spec().tar_bytes();
    let slow = body.len();
    server.put(path, body);
    // The whole body at one byte per 2 s: hours, far beyond every wait below.
    server.always(
        path,
        Fault::Trickle {
            chunk: 1,
            interval_ms: 2000,
            slow_bytes: slow,
        },
    );
    vm.write_config_text(&format!(
        "[source]\nbundle = \"{}\"\n\n[package]\nversion = \"{V1}\"\n\n[daemon]\ndrift_interval_secs = 3600\nprobe_interval_secs = 3600\n\n[health]\nready_url = \"{}\"\n",
        server.url(path),
        vm.ready.url()
    ));
    let sockdir = tempfile::tempdir().unwrap();
    let (notes, stop_notes) = notify_socket(&sockdir.path().join("notify"), vm.at(TOKEN));
    let mut d = vm.daemon_notified(&sockdir.path().join("notify"), 1_000_000);
    vm.wait_for(&d, "the bundle GET", || {
        (!server.requests_for(path).is_empty()).then_some(())
    });
    // Pings counted from here on come while the poll is in flight (it cannot end).
    let pings = || {
        notes
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.text.contains("WATCHDOG=1"))
            .count()
    };
    let before = pings();
    vm.wait_for(&d, "watchdog pings during the download", || {
        (pings() >= before + 3).then_some(())
    });
    assert_eq!(
        server.requests_for(path).len(),
        1,
        "the poll ended or was retried: the trickle did not hold it"
    );
    d.signal(libc::SIGTERM);
    let s = d.wait_exit(HANG);
    assert_eq!(s.code(), Some(0), "{}", vm.context(&d));
    assert!(d.stderr().contains("stopping (signal)"), "{}", d.stderr());
    stop_notes.store(true, Ordering::Relaxed);
}

/// Issue 13: the apply (files, package download, dpkg) runs on the blocking pool while
/// the loop keeps serving signals. A package mirror trickling one byte every 2 s used to
/// hold SIGTERM until the download ended; now the daemon exits at once, and the apply it
/// abandoned leaves nothing half-done for the next start (its undo journal, if any, is
/// rolled back first, as after a crash).
#[test]
fn sigterm_mid_apply_download_exits_and_the_next_start_recovers() {
    use common::server::{Fault, Server};
    let server = Server::http();
    let vm = Vm::with("ready", &Conf::default());
    // The bundle without the package member: the package comes from the (slow) mirror.
    vm.put_bundle(BUNDLE, &Spec::example());
    let deb = fs::read(&vm.deb).unwrap();
    let slow = deb.len();
    server.put("/istio-sidecar.deb", deb);
    server.always(
        "/istio-sidecar.deb",
        Fault::Trickle {
            chunk: 1,
            interval_ms: 2000,
            slow_bytes: slow,
        },
    );
    let sha: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(fs::read(&vm.deb).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    vm.write_config_text(&format!(
        "[source]\nbundle = \"{BUNDLE}\"\n\n[package]\nversion = \"{V1}\"\nurl = \"{}\"\nsha256 = \"{sha}\"\n\n[daemon]\ndrift_interval_secs = 3600\nprobe_interval_secs = 3600\n\n[health]\nready_url = \"{}\"\n",
        server.url("/istio-sidecar.deb"),
        vm.ready.url()
    ));
    let mut d = vm.daemon();
    vm.wait_for(&d, "the package GET", || {
        (!server.requests_for("/istio-sidecar.deb").is_empty()).then_some(())
    });
    d.signal(libc::SIGTERM);
    let s = d.wait_exit(HANG);
    assert_eq!(s.code(), Some(0), "{}", vm.context(&d));
    assert!(d.stderr().contains("stopping (signal)"), "{}", d.stderr());
    drop(d);
    // The next start is not blocked by what the stopped one left.
    server.always("/istio-sidecar.deb", Fault::Status(503));
    let d = vm.daemon();
    vm.wait_log(&d, 0, &["vmagent daemon ready"]);
    vm.wait_log(&d, 0, &["reconcile failed"]);
    assert!(
        !d.stderr()
            .contains("recovering an interrupted apply failed"),
        "{}",
        d.stderr()
    );
}
