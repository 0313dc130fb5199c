//! The service step and the wait for ready, end to end: the real `vmagent` binary
//! installs the fixture istio-sidecar .deb with real dpkg into a throwaway root, then
//! manages istio.service through a fake systemd (tests/common/fake_systemd.rs, plugged
//! in with `VMAGENT_TEST_SYSTEMCTL`) that really runs the package's stand-in
//! istio-start.sh / pilot-agent. The stand-in plays a scenario (tests/common/packages.rs)
//! and appends Istio's real log lines to ROOT/var/log/istio; readiness is a small HTTP
//! server on 127.0.0.1 the root's config points `[health] ready_url` at.
//!
//! Covers: ready (service verbs, status file, progress lines), an unchanged re-apply
//! (queries only), a changed input (one restart, old lines ignored), each failure kind
//! the stand-in can produce (exit codes 10, 11, 14, 15, 18 with hint and evidence),
//! --wait 0, --no-start, lines from before apply, `vmagent status`, the offline
//! (`systemctl --root`) path, and the readiness prober itself.
//!
//! Durations given to --wait are hang guards, never timing assertions.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::fake_systemd::{FakeSystemd, ReadyServer};
use common::output::*;
use common::packages::*;
use common::wait::PATIENCE;
use common::*;
use vmagent::health::probe::{Probe, Prober};

const BIN: &str = env!("CARGO_BIN_EXE_vmagent");

const V1: &str = "1.24.1";
const V2: &str = "1.24.2";

/// The status file, inside a root.
const STATUS_FILE: &str = "/run/vmagent/status.json";

/// Hang guard for one `vmagent apply`: above the longest --wait given (120 s) plus the
/// package install and the service step on a loaded machine.
const RUN_GUARD: Duration = Duration::from_secs(300);

/// The verdict line of a ready proxy.
const READY_LINE: &str = "ready: the proxy is in the mesh";

/// Environment variables that could send traffic through a proxy or change vmagent.
const SCRUB: &[&str] = &[
    "VMAGENT_TEST_SYSTEMCTL",
    "VMAGENT_TEST_JOURNALCTL",
    "VMAGENT_FAULT",
    "FAKE_SYSTEMD_STATE",
    "FAKE_SYSTEMD_ROOT",
    "FAKE_SYSTEMD_OWNER",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

// ---------------------------------------------------------------------------------
// Running the binary with a hang guard
// ---------------------------------------------------------------------------------

/// Runs `cmd` to completion, killing it after `limit` (a hang guard, not a timing
/// assertion). Also fails when stdout/stderr stay open after vmagent exited: a service it
/// started must not hold its output pipes.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    run_with(cmd, limit, |_| {})
}

/// [`run`], calling `during` once the process runs with a receiver of its stderr lines
/// as they come.
fn run_with(
    cmd: &mut Command,
    limit: Duration,
    during: impl FnOnce(&mpsc::Receiver<String>),
) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn vmagent");
    let (tx, rx) = mpsc::channel();
    let (line_tx, line_rx) = mpsc::channel();
    let mut out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            let _ = tx.send((0, v));
        });
    }
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(err);
        let mut all = Vec::new();
        loop {
            let mut l = Vec::new();
            match std::io::BufRead::read_until(&mut r, b'\n', &mut l) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = line_tx.send(String::from_utf8_lossy(&l).into_owned());
                    all.extend_from_slice(&l);
                }
            }
        }
        let _ = tx.send((1, all));
    });
    during(&line_rx);
    let deadline = Instant::now() + limit;
    let (status, timed_out) = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break (s, false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break (child.wait().expect("wait"), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut got: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut open = false;
    for _ in 0..2 {
        // Only a hang guard: the pipes normally close with the process.
        match rx.recv_timeout(PATIENCE) {
            Ok((i, v)) => got[i] = v,
            Err(_) => open = true,
        }
    }
    let [stdout, stderr] = got;
    let o = Output {
        status,
        stdout,
        stderr,
    };
    assert!(
        !timed_out,
        "{cmd:?} still ran after {limit:?}: {}",
        show(&o)
    );
    assert!(
        !open,
        "vmagent exited but its output pipes stayed open (held by a process it started): {}",
        show(&o)
    );
    o
}

/// `vmagent ARGS` with a scrubbed environment.
fn vmagent_cmd() -> Command {
    let mut c = Command::new(BIN);
    for v in SCRUB {
        c.env_remove(v);
    }
    c
}

// ---------------------------------------------------------------------------------
// A VM: a Debian-like root, the fixture package, a fake systemd, a readiness endpoint
// ---------------------------------------------------------------------------------

/// One simulated VM. Field order is drop order: the service is killed first.
struct Vm {
    fake: FakeSystemd,
    ready: ReadyServer,
    root: TestRoot,
    deb: PathBuf,
    work: tempfile::TempDir,
}

impl Vm {
    /// A fresh root (package not installed yet) whose stand-in proxy plays `scenario`.
    fn new(scenario: &str) -> Vm {
        Vm::with_package(scenario, Fixture::new(V1))
    }

    /// The same with another build of the fixture package (e.g. a small RestartSec).
    fn with_package(scenario: &str, fixture: Fixture) -> Vm {
        let work = tempfile::tempdir().expect("tempdir");
        let deb = fixture.build_deb(work.path());
        let root = deb_root(DEB_DEPS);
        let ready = ReadyServer::for_root(root.path());
        let cfg = root.at("/etc/vmagent/config.toml");
        fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        fs::write(&cfg, format!("[health]\nready_url = \"{}\"\n", ready.url())).unwrap();
        set_scenario(root.path(), scenario);
        let fake = FakeSystemd::new(root.path());
        Vm {
            fake,
            ready,
            root,
            deb,
            work,
        }
    }

    /// Writes `spec` as `<name>/bundle.tar`.
    fn bundle(&self, name: &str, spec: &Spec) -> PathBuf {
        let d = self.work.path().join(name);
        fs::create_dir_all(&d).unwrap();
        spec.write_tar(&d)
    }

    /// The example bundle.
    fn example(&self) -> PathBuf {
        self.bundle("example", &Spec::example())
    }

    /// `vmagent apply BUNDLE --root ROOT --package DEB EXTRA...` with the fake systemd.
    fn apply(&self, bundle: &Path, extra: &[&str]) -> Output {
        self.apply_package(&self.deb, bundle, extra, |_| {})
    }

    /// The same with another package, calling `during` while it runs (see [`run_with`]).
    fn apply_package(
        &self,
        deb: &Path,
        bundle: &Path,
        extra: &[&str],
        during: impl FnOnce(&mpsc::Receiver<String>),
    ) -> Output {
        let mut c = vmagent_cmd();
        c.arg("apply")
            .arg(bundle)
            .arg("--root")
            .arg(self.root.path())
            .arg("--package")
            .arg(deb)
            .args(extra);
        self.fake.configure(&mut c);
        run_with(&mut c, RUN_GUARD, during)
    }

    /// [`Vm::apply`] with extra environment (after the fake's own).
    fn apply_env(&self, bundle: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = vmagent_cmd();
        c.arg("apply")
            .arg(bundle)
            .arg("--root")
            .arg(self.root.path())
            .arg("--package")
            .arg(&self.deb)
            .args(extra);
        self.fake.configure(&mut c);
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c, RUN_GUARD)
    }

    /// The same without the fake: the real systemctl, offline (`--root`).
    fn apply_offline(&self, bundle: &Path, extra: &[&str]) -> Output {
        let mut c = vmagent_cmd();
        c.arg("apply")
            .arg(bundle)
            .arg("--root")
            .arg(self.root.path())
            .arg("--package")
            .arg(&self.deb)
            .args(extra);
        run(&mut c, RUN_GUARD)
    }

    /// `vmagent status --root ROOT EXTRA...` with the fake systemd.
    fn status(&self, extra: &[&str]) -> Output {
        let mut c = vmagent_cmd();
        c.arg("status")
            .arg("--root")
            .arg(self.root.path())
            .args(extra);
        self.fake.configure(&mut c);
        run(&mut c, PATIENCE)
    }

    /// The status file, parsed.
    #[track_caller]
    fn status_file(&self) -> serde_json::Value {
        let p = self.root.at(STATUS_FILE);
        let d = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_slice(&d).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// istio.log as written so far.
    fn istio_log(&self) -> String {
        fs::read_to_string(self.root.at("/var/log/istio/istio.log")).unwrap_or_default()
    }

    /// Context for assertion messages: the vmagent output, the fake's calls and the log.
    fn show(&self, o: &Output) -> String {
        format!(
            "{}--- fake systemctl calls\n{}\n--- istio.log\n{}--- journal\n{}--- journalctl calls\n{}\n--- supervisor\n{}",
            show(o),
            self.fake.calls().join("\n"),
            self.istio_log(),
            self.fake.journal(),
            self.fake.journalctl_calls().join("\n"),
            self.fake.log()
        )
    }

    /// Asserts the exit code.
    #[track_caller]
    fn expect(&self, o: Output, code: i32, ctx: &str) -> Output {
        if std::env::var_os("HEALTH_TEST_SHOW").is_some() {
            eprintln!("===== {ctx}\n{}", self.show(&o));
        }
        assert_eq!(o.status.code(), Some(code), "{ctx}: {}", self.show(&o));
        o
    }
}

/// A token for the example identity that expired in 2023.
fn expired_token() -> Vec<u8> {
    jwt(
        r#"{"aud":["istio-ca"],"exp":1700000000,"iat":1690000000,"sub":"system:serviceaccount:vm-ns:vm-sa"}"#,
    )
}

/// The example bundle with an expired token.
fn expired_bundle() -> Spec {
    Spec::example().set("istio-token", expired_token())
}

/// Index of the first `verb` in `verbs`.
#[track_caller]
fn pos(verbs: &[String], verb: &str) -> usize {
    verbs
        .iter()
        .position(|v| v == verb)
        .unwrap_or_else(|| panic!("no {verb} in {verbs:?}"))
}

fn count(verbs: &[String], verb: &str) -> usize {
    verbs.iter().filter(|v| *v == verb).count()
}

/// stdout lines starting (after indentation) with `prefix`.
fn lines_with(o: &Output, prefix: &str) -> Vec<String> {
    stdout(o)
        .lines()
        .filter(|l| l.trim_start().starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Asserts a failed wait's report: the verdict `failed: <kind>`, a hint line, and an
/// evidence line containing `evidence` (when given).
#[track_caller]
fn assert_failure_report(vm: &Vm, o: &Output, kind: &str, evidence: Option<&str>) {
    let out = stdout(o);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("failed: {kind}: "))),
        "no `failed: {kind}` verdict: {}",
        vm.show(o)
    );
    assert!(!out.contains(READY_LINE), "{}", vm.show(o));
    let hints = lines_with(o, "hint: ");
    assert_eq!(hints.len(), 1, "one hint line: {}", vm.show(o));
    if let Some(e) = evidence {
        assert!(
            lines_with(o, "evidence: ").iter().any(|l| l.contains(e)),
            "no evidence line with {e:?}: {}",
            vm.show(o)
        );
    }
}

/// Asserts the status file records a failed wait of `kind` with exit `code`.
#[track_caller]
fn assert_status_failed(vm: &Vm, kind: &str, code: u64) -> serde_json::Value {
    let st = vm.status_file();
    assert_eq!(st["health"]["state"], "failed", "{st:#}");
    assert_eq!(st["health"]["reason"], kind, "{st:#}");
    assert_eq!(st["health"]["exit_code"], code, "{st:#}");
    assert_eq!(st["last_apply"]["exit_code"], code, "{st:#}");
    st
}

// ---------------------------------------------------------------------------------
// 1. Ready
// ---------------------------------------------------------------------------------

#[test]
fn ready_after_first_apply() {
    let vm = Vm::new("ready");
    let b = vm.example();
    let o = vm.expect(vm.apply(&b, &["--wait", "120"]), 0, "first apply");
    let out = stdout(&o);
    assert!(out.contains(READY_LINE), "{}", vm.show(&o));
    assert!(
        out.contains("service: istio.service enable --now\n"),
        "{}",
        vm.show(&o)
    );
    assert_eq!(deb_installed(vm.root.path()).as_deref(), Some(V1));

    // The fewest systemctl calls a first start can take: one `show` (load, activity,
    // enablement, NeedDaemonReload at once), then `enable --now --no-reload`. No
    // daemon-reload, not even enable's implicit one: the package's new unit file is
    // loaded on first reference, and the new .wants/ link matters only at the next boot.
    // (The health monitor's own `show`s while it waits come after.)
    let calls = vm.fake.calls();
    let upto = calls
        .iter()
        .position(|c| c == "enable --now --no-reload istio.service")
        .map_or(calls.len(), |i| i + 1);
    assert_eq!(
        calls[..upto],
        [
            "show istio.service --property=LoadState,ActiveState,SubState,NRestarts,NeedDaemonReload,UnitFileState",
            "enable --now --no-reload istio.service",
        ],
        "{calls:?}"
    );
    let verbs = vm.fake.verbs();
    assert_eq!(count(&verbs, "restart"), 0, "{verbs:?}");
    assert!(vm.fake.main_pid().is_some(), "the service is not running");
    assert!(
        vm.istio_log().contains("\tinfo\tStarting proxy agent"),
        "the stand-in did not run: {}",
        vm.show(&o)
    );
    assert!(vm.ready.hits() > 0, "the readiness URL was never probed");

    // The status file: world-readable, ready, the apply recorded.
    let p = vm.root.at(STATUS_FILE);
    let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "{}: mode {mode:o}", p.display());
    let st = vm.status_file();
    assert_eq!(st["health"]["state"], "ready", "{st:#}");
    assert_eq!(st["last_apply"]["exit_code"], 0, "{st:#}");
    assert_eq!(st["last_apply"]["result"], "applied", "{st:#}");

    // Progress as it happened, on stderr.
    let err = stderr(&o);
    assert!(err.contains("waiting up to 120 s"), "{}", vm.show(&o));
    assert!(err.contains("  istio: agent started"), "{}", vm.show(&o));
    assert!(
        err.contains("  istio: connected to istiod (xDS)"),
        "{}",
        vm.show(&o)
    );
}

// ---------------------------------------------------------------------------------
// 2. Re-apply with nothing changed: queries only
// ---------------------------------------------------------------------------------

#[test]
fn unchanged_reapply_only_queries() {
    let vm = Vm::new("ready");
    let b = vm.example();
    vm.expect(vm.apply(&b, &["--wait", "120"]), 0, "first apply");
    let before = vm.fake.calls().len();
    let pid = vm.fake.main_pid().expect("running after the first apply");

    let o = vm.expect(vm.apply(&b, &["--wait", "120"]), 0, "second apply");
    let out = stdout(&o);
    assert!(out.contains(READY_LINE), "{}", vm.show(&o));
    assert!(out.contains("up to date"), "{}", vm.show(&o));
    assert!(
        out.contains("service: istio.service unchanged"),
        "{}",
        vm.show(&o)
    );
    let verbs = vm.fake.verbs_from(before);
    assert!(!verbs.is_empty(), "the service was not even looked at");
    assert!(
        verbs.iter().all(|v| v == "show" || v == "is-enabled"),
        "an unchanged re-apply changed the service: {verbs:?}"
    );
    assert_eq!(vm.fake.main_pid(), Some(pid), "the proxy process changed");
    assert_eq!(vm.status_file()["last_apply"]["result"], "up-to-date");
}

// ---------------------------------------------------------------------------------
// 3. A changed input restarts once; the old process's lines do not count
// ---------------------------------------------------------------------------------

#[test]
fn changed_cluster_env_restarts_once() {
    let vm = Vm::new("ready");
    vm.expect(
        vm.apply(&vm.example(), &["--wait", "120"]),
        0,
        "first apply",
    );
    let old = vm.fake.main_pid().expect("running after the first apply");
    let before = vm.fake.calls().len();

    let env = fs::read_to_string(example_dir().join("cluster.env")).unwrap();
    assert!(env.contains("CANONICAL_REVISION='latest'"));
    let changed = env.replace("CANONICAL_REVISION='latest'", "CANONICAL_REVISION='v2'");
    let b2 = vm.bundle(
        "changed",
        &Spec::example().set("cluster.env", changed.clone()),
    );

    let o = vm.expect(vm.apply(&b2, &["--wait", "120"]), 0, "changed apply");
    let out = stdout(&o);
    assert!(
        out.contains("service: istio.service restart (changed: cluster.env)"),
        "{}",
        vm.show(&o)
    );
    assert!(out.contains(READY_LINE), "{}", vm.show(&o));
    let verbs = vm.fake.verbs_from(before);
    assert_eq!(count(&verbs, "restart"), 1, "{verbs:?}");
    for v in ["start", "enable", "daemon-reload"] {
        assert_eq!(count(&verbs, v), 0, "{v}: {verbs:?}");
    }
    let new = vm.fake.main_pid().expect("running after the restart");
    assert_ne!(new, old, "the proxy was not restarted");
    assert_eq!(
        fs::read_to_string(vm.root.at("/var/lib/istio/envoy/cluster.env")).unwrap(),
        changed
    );
    assert_eq!(
        vm.istio_log().matches("\tStarting proxy agent").count(),
        2,
        "two runs of the proxy: {}",
        vm.show(&o)
    );
    assert_eq!(vm.status_file()["health"]["state"], "ready");
}

/// An admin's copy of the unit in /etc/systemd/system (which takes precedence) changes
/// what the service runs with: systemd needs a daemon-reload, and the service a restart.
#[test]
fn edited_unit_reloads_and_restarts() {
    let vm = Vm::new("ready");
    let b = vm.example();
    vm.expect(vm.apply(&b, &["--wait", "120"]), 0, "first apply");
    let before = vm.fake.calls().len();
    let admin = vm.root.at("/etc/systemd/system/istio.service");
    fs::create_dir_all(admin.parent().unwrap()).unwrap();
    fs::write(
        &admin,
        ISTIO_SERVICE.replace(
            "[Service]\n",
            "[Service]\nEnvironment=ISTIO_AGENT_FLAGS=--log_output_level=default:debug\n",
        ),
    )
    .unwrap();

    let o = vm.expect(vm.apply(&b, &["--wait", "120"]), 0, "edited unit");
    let out = stdout(&o);
    assert!(
        out.contains("service: istio.service daemon-reload, restart (changed: istio.service)"),
        "{}",
        vm.show(&o)
    );
    assert!(out.contains(READY_LINE), "{}", vm.show(&o));
    let verbs = vm.fake.verbs_from(before);
    assert!(
        pos(&verbs, "daemon-reload") < pos(&verbs, "restart"),
        "{verbs:?}"
    );
    assert_eq!(count(&verbs, "restart"), 1, "{verbs:?}");
    assert_eq!(count(&verbs, "start"), 0, "{verbs:?}");
}

/// A service stopped behind vmagent's back is started again (not restarted) on the next
/// apply, even with nothing else to do.
#[test]
fn stopped_service_is_started_again() {
    let vm = Vm::new("ready");
    let b = vm.example();
    vm.expect(vm.apply(&b, &["--wait", "120"]), 0, "first apply");
    let mut c = Command::new(vm.fake.program());
    c.args(["stop", "istio.service"]);
    vm.fake.configure(&mut c);
    let o = run(&mut c, PATIENCE);
    assert!(o.status.success(), "fake stop: {}", show(&o));
    assert_eq!(vm.fake.main_pid(), None, "still running after stop");
    assert!(!vm.root.at(READY_FILE).exists(), "ExecStopPost did not run");
    let before = vm.fake.calls().len();

    let o = vm.expect(vm.apply(&b, &["--wait", "120"]), 0, "re-apply");
    let out = stdout(&o);
    assert!(
        out.contains("service: istio.service start\n"),
        "{}",
        vm.show(&o)
    );
    assert!(out.contains(READY_LINE), "{}", vm.show(&o));
    let verbs = vm.fake.verbs_from(before);
    assert_eq!(count(&verbs, "start"), 1, "{verbs:?}");
    assert_eq!(count(&verbs, "restart"), 0, "{verbs:?}");
    assert!(
        vm.fake.main_pid().is_some(),
        "not running after the re-apply"
    );
}

/// The user story behind "old lines do not count": the first bundle's token is rejected
/// (exit 11) and the old proxy keeps logging the rejection every 0.1 s. The user applies
/// a fresh bundle with a newer sidecar package while another vmagent holds the lock
/// (the test does): everything the old proxy logs meanwhile comes after vmagent began
/// following the log and before the restart, and must not count. (Like the real agent,
/// which reads the token file on every attempt, the old proxy stops complaining once the
/// new token is in place.)
#[test]
fn fresh_bundle_after_rejection_ignores_the_old_process() {
    let vm = Vm::new("token-expired");
    let deb2 = Fixture::new(V2).build_deb(vm.work.path());
    let b1 = vm.bundle("expired", &expired_bundle());
    vm.expect(
        vm.apply(&b1, &["--wait", "120", "--allow-expired-token"]),
        11,
        "expired token",
    );
    let rejections = || {
        vm.istio_log()
            .matches("request authenticate failure")
            .count()
    };
    let before = vm.fake.calls().len();
    set_scenario(vm.root.path(), "ready");

    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(vm.root.at("/var/lib/vmagent/lock"))
        .expect("vmagent's lock file");
    lock.lock().expect("take the apply lock");
    let o = vm.apply_package(&deb2, &vm.example(), &["--wait", "120"], |stderr| {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = stderr
                .recv_timeout(left)
                .expect("no `waiting for another vmagent`");
            if l.contains("waiting for another vmagent") {
                break;
            }
        }
        // The old proxy goes on: two more rejections while apply waits for the lock.
        let n = rejections();
        while rejections() < n + 2 {
            assert!(Instant::now() < deadline, "the old proxy stopped logging");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(lock);
    });
    let o = vm.expect(o, 0, "fresh bundle, newer package");
    assert_eq!(deb_installed(vm.root.path()).as_deref(), Some(V2));
    let out = stdout(&o);
    assert!(out.contains(READY_LINE), "{}", vm.show(&o));
    // The upgrade restarts; the fresh token alone would not (same identity: the agent
    // reads the token file on every attempt, FINDINGS.md 10).
    assert!(
        out.lines().any(|l| l
            .strip_prefix("service: istio.service ")
            .map(|l| l.strip_prefix("daemon-reload, ").unwrap_or(l))
            .is_some_and(|l| l.starts_with("restart (changed: "))
            && !l.contains("istio-token")
            && l.contains("/usr/local/bin/pilot-agent")),
        "{}",
        vm.show(&o)
    );
    assert!(!stderr(&o).contains("token-rejected"), "{}", vm.show(&o));
    let verbs = vm.fake.verbs_from(before);
    assert_eq!(count(&verbs, "restart"), 1, "{verbs:?}");
    assert_eq!(count(&verbs, "start"), 0, "{verbs:?}");
}

/// The same story with a CA mismatch: the fixed bundle has the right root-cert.pem. On
/// `systemctl restart`, systemd sends SIGTERM and waits while the old agent drains
/// (terminationDrainDuration, 5 s by default); the old agent, still holding the old root,
/// keeps logging x509 failures meanwhile. Those lines come after the restart began but
/// are the old process's: the verdict must be the new, ready, one.
#[test]
fn old_process_drain_lines_do_not_count() {
    let vm = Vm::new("ca-mismatch");
    vm.expect(
        vm.apply(&vm.example(), &["--wait", "120"]),
        14,
        "ca mismatch",
    );
    let ca = common::server::TestCa::new();
    let fixed = vm.bundle(
        "fixed",
        &Spec::example().set("root-cert.pem", ca.pem.clone()),
    );
    set_scenario(vm.root.path(), "ready");
    let before = vm.fake.calls().len();

    let o = vm.expect(vm.apply(&fixed, &["--wait", "120"]), 0, "fixed root cert");
    let out = stdout(&o);
    assert!(
        out.contains("service: istio.service restart (changed: root-cert.pem)"),
        "{}",
        vm.show(&o)
    );
    assert!(out.contains(READY_LINE), "{}", vm.show(&o));
    assert_eq!(count(&vm.fake.verbs_from(before), "restart"), 1);
}

// ---------------------------------------------------------------------------------
// 4.-8. Failure kinds
// ---------------------------------------------------------------------------------

#[test]
fn expired_token_is_token_rejected() {
    let vm = Vm::new("token-expired");
    let b = vm.bundle("expired", &expired_bundle());
    let o = vm.expect(
        vm.apply(&b, &["--wait", "120", "--allow-expired-token"]),
        11,
        "token rejected",
    );
    assert_failure_report(
        &vm,
        &o,
        "token-rejected",
        Some("request authenticate failure"),
    );
    assert!(
        lines_with(&o, "hint: ")[0].contains("fresh bundle"),
        "{}",
        vm.show(&o)
    );
    assert!(
        stderr(&o).contains("  istio: token-rejected: "),
        "{}",
        vm.show(&o)
    );
    assert_status_failed(&vm, "token-rejected", 11);
}

#[test]
fn ca_mismatch() {
    let vm = Vm::new("ca-mismatch");
    let o = vm.expect(
        vm.apply(&vm.example(), &["--wait", "120"]),
        14,
        "ca mismatch",
    );
    assert_failure_report(&vm, &o, "ca-mismatch", Some("unknown authority"));
    assert_status_failed(&vm, "ca-mismatch", 14);
}

#[test]
fn istiod_unreachable() {
    let vm = Vm::new("istiod-unreachable");
    // The reason is the last one seen when --wait runs out, so the stand-in must have
    // logged it by then: 15 s, not 3, for a loaded machine's slow start.
    let o = vm.expect(
        vm.apply(&vm.example(), &["--wait", "15"]),
        15,
        "unreachable",
    );
    assert_failure_report(&vm, &o, "istiod-unreachable", Some("15012"));
    assert!(
        lines_with(&o, "evidence: ")
            .iter()
            .all(|l| l.contains("i/o timeout")),
        "{}",
        vm.show(&o)
    );
    assert_status_failed(&vm, "istiod-unreachable", 15);
}

#[test]
fn crash_loop() {
    // The fake systemd waits the unit's RestartSec between runs like systemd; the real
    // unit's 10 s would make three restarts take 30 s, so this package's unit restarts
    // after 1 s. --wait is a hang guard, far above the ~3 s the three restarts take.
    let vm = Vm::with_package("crash", Fixture::new(V1).with_restart_sec("1"));
    let o = vm.expect(
        vm.apply(&vm.example(), &["--wait", "120"]),
        18,
        "crash loop",
    );
    assert_failure_report(&vm, &o, "crash-loop", Some("Envoy exited with error"));
    assert!(
        lines_with(&o, "service: ")
            .iter()
            .any(|l| l.contains("automatic restarts")),
        "{}",
        vm.show(&o)
    );
    assert!(vm.fake.restarts() >= 3, "{}", vm.show(&o));
    // Each restart came no sooner than RestartSec after the crash (a lower bound only:
    // a loaded machine may take longer).
    for w in vm.fake.runs().windows(2) {
        let gap = w[1].0 - w[0].1.expect("a run before a restart ended");
        assert!(
            gap >= 1.0,
            "restarted {gap:.3} s after the crash: {}",
            vm.show(&o)
        );
    }
    let st = assert_status_failed(&vm, "crash-loop", 18);
    assert!(
        st["health"]["restarts"].as_u64().unwrap_or(0) >= 3,
        "{st:#}"
    );
}

#[test]
fn silent_proxy_times_out_not_ready() {
    let vm = Vm::new("silent");
    // Ends at the timeout by design; long enough for "envoy starting" to be logged
    // first on a loaded machine.
    let o = vm.expect(vm.apply(&vm.example(), &["--wait", "10"]), 10, "timeout");
    assert_failure_report(&vm, &o, "not-ready", None);
    assert_eq!(lines_with(&o, "waited: ").len(), 1, "{}", vm.show(&o));
    assert!(
        stderr(&o).contains("  istio: envoy starting"),
        "{}",
        vm.show(&o)
    );
    assert_status_failed(&vm, "not-ready", 10);
}

// ---------------------------------------------------------------------------------
// 9. --wait 0 and --no-start
// ---------------------------------------------------------------------------------

#[test]
fn wait_zero_starts_and_returns() {
    let vm = Vm::new("ready");
    let o = vm.expect(vm.apply(&vm.example(), &["--wait", "0"]), 0, "--wait 0");
    let out = stdout(&o);
    assert!(
        out.contains("not waiting for the proxy (--wait 0)"),
        "{}",
        vm.show(&o)
    );
    assert!(!out.contains(READY_LINE), "{}", vm.show(&o));
    // Started (and enabled) by the one `enable --now`.
    let calls = vm.fake.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "enable --now --no-reload istio.service")
            .count(),
        1,
        "{calls:?}"
    );
    assert_eq!(count(&vm.fake.verbs(), "start"), 0, "{calls:?}");
    let st = vm.status_file();
    assert_eq!(st["health"]["state"], "starting", "{st:#}");
    assert_eq!(st["last_apply"]["exit_code"], 0, "{st:#}");
}

#[test]
fn no_start_leaves_the_service_alone() {
    let vm = Vm::new("ready");
    let o = vm.expect(vm.apply(&vm.example(), &["--no-start"]), 0, "--no-start");
    assert_eq!(deb_installed(vm.root.path()).as_deref(), Some(V1));
    assert!(
        vm.fake.calls().is_empty(),
        "--no-start ran systemctl: {}",
        vm.show(&o)
    );
    assert!(!vm.root.at(STATUS_FILE).exists(), "status file written");
    assert!(!stdout(&o).contains("service:"), "{}", vm.show(&o));
    assert!(!stderr(&o).contains("waiting"), "{}", vm.show(&o));
}

// ---------------------------------------------------------------------------------
// 10. Lines from before apply never count
// ---------------------------------------------------------------------------------

/// Lines an earlier run left in istio.log: a token rejection and a ready line.
const OLD_LINES: &str = "2024-08-15T09:51:42.705907Z\twarn\tsds\tfailed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unauthenticated desc = request authenticate failure\n\
     2024-08-15T09:52:10.000000Z\tinfo\tEnvoy proxy is ready\n";

/// Asserts a not-ready verdict that owes nothing to [`OLD_LINES`].
#[track_caller]
fn assert_not_ready_despite_old_lines(vm: &Vm, o: &Output) {
    assert_failure_report(vm, o, "not-ready", None);
    let all = format!("{}{}", stdout(o), stderr(o));
    assert!(!all.contains("token-rejected"), "{}", vm.show(o));
    assert!(
        !all.contains("request authenticate failure"),
        "{}",
        vm.show(o)
    );
    assert!(!all.contains("Envoy proxy is ready"), "{}", vm.show(o));
    assert_status_failed(vm, "not-ready", 10);
}

#[test]
fn lines_from_before_apply_do_not_count() {
    let vm = Vm::new("silent");
    let log = vm.root.at("/var/log/istio/istio.log");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    fs::write(&log, OLD_LINES).unwrap();
    // Ends at the timeout by design (a silent proxy); 10 s lets the new run's lines
    // come first on a loaded machine.
    let o = vm.expect(vm.apply(&vm.example(), &["--wait", "10"]), 10, "old lines");
    assert_not_ready_despite_old_lines(&vm, &o);

    // Again with the proxy running and nothing to change, so no (re)start repositions
    // the log reading: it must begin at the end of what is there.
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, OLD_LINES.as_bytes()).unwrap();
    drop(f);
    let before = vm.fake.calls().len();
    let o = vm.expect(
        vm.apply(&vm.example(), &["--wait", "10"]),
        10,
        "old lines, no restart",
    );
    assert_not_ready_despite_old_lines(&vm, &o);
    let verbs = vm.fake.verbs_from(before);
    assert!(
        verbs.iter().all(|v| v == "show" || v == "is-enabled"),
        "{verbs:?}"
    );
}

// ---------------------------------------------------------------------------------
// 11. vmagent status
// ---------------------------------------------------------------------------------

#[test]
fn status_after_ready() {
    let vm = Vm::new("ready");
    vm.expect(vm.apply(&vm.example(), &["--wait", "120"]), 0, "apply");

    let o = vm.expect(vm.status(&["--output", "json"]), 0, "status json");
    let st = json(&o);
    assert_eq!(st["health"]["state"], "ready", "{st:#}");
    assert_eq!(st["package_version"], V1, "{st:#}");
    assert!(st["token"]["expires_at"].is_string(), "{st:#}");
    assert_eq!(
        st["token"]["subject"], "system:serviceaccount:vm-ns:vm-sa",
        "{st:#}"
    );
    assert!(st["root_cert"]["expires_at"].is_string(), "{st:#}");
    assert_eq!(st["last_apply"]["exit_code"], 0, "{st:#}");
    assert_eq!(st["last_apply"]["result"], "applied", "{st:#}");
    assert_eq!(st["enabled"], "enabled", "{st:#}");

    let o = vm.expect(vm.status(&[]), 0, "status text");
    let out = stdout(&o);
    assert!(out.starts_with("ready"), "{}", vm.show(&o));
    assert!(
        out.lines().any(|l| l.starts_with("token:")),
        "{}",
        vm.show(&o)
    );
    assert!(
        out.contains(&format!("package:       istio-sidecar {V1}")),
        "{}",
        vm.show(&o)
    );
}

#[test]
fn status_of_an_empty_root_is_unknown() {
    let empty = tempfile::tempdir().unwrap();
    for (args, ctx) in [(&["--output", "json"][..], "json"), (&[][..], "text")] {
        let mut c = vmagent_cmd();
        c.arg("status").arg("--root").arg(empty.path()).args(args);
        let o = run(&mut c, PATIENCE);
        let code = o.status.code();
        assert!(
            code.is_some_and(|c| c != 0 && c != 101),
            "{ctx}: {}",
            show(&o)
        );
        assert!(!stderr(&o).contains("panicked"), "{ctx}: {}", show(&o));
        if ctx == "json" {
            let st = json(&o);
            assert_eq!(st["health"]["state"], "unknown", "{st:#}");
            assert!(st["last_apply"].is_null(), "{st:#}");
        } else {
            assert!(stdout(&o).starts_with("unknown"), "{}", show(&o));
        }
    }
}

// ---------------------------------------------------------------------------------
// 12. Offline: the real systemctl --root enables, nothing starts
// ---------------------------------------------------------------------------------

#[test]
fn offline_root_is_enabled_not_started() {
    let vm = Vm::new("ready");
    let o = vm.expect(
        vm.apply_offline(&vm.example(), &["--wait", "5"]),
        0,
        "offline apply",
    );
    assert_eq!(deb_installed(vm.root.path()).as_deref(), Some(V1));
    let link = vm
        .root
        .at("/etc/systemd/system/multi-user.target.wants/istio.service");
    let md = fs::symlink_metadata(&link)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", link.display(), vm.show(&o)));
    assert!(md.file_type().is_symlink(), "{}", link.display());
    let target = fs::read_link(&link).unwrap();
    assert!(
        target.ends_with("systemd/system/istio.service"),
        "{}",
        target.display()
    );
    let out = stdout(&o);
    assert!(
        out.contains("service: istio.service enable\n"),
        "{}",
        vm.show(&o)
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("note: ") && l.contains("enabled offline, not started")),
        "{}",
        vm.show(&o)
    );
    assert!(!out.contains(READY_LINE), "{}", vm.show(&o));
    assert!(!vm.root.at(STATUS_FILE).exists(), "status file written");
    assert!(vm.fake.calls().is_empty());
    assert!(
        !vm.root.at("/var/log/istio/istio.log").exists(),
        "the proxy ran"
    );
    assert_eq!(vm.ready.hits(), 0, "probed although nothing was started");
}

// ---------------------------------------------------------------------------------
// 13. The readiness prober against a real server
// ---------------------------------------------------------------------------------

/// The process's shared client, as vmagent's commands build it.
fn client() -> vmagent::net::Client {
    vmagent::net::Client::shared(&vmagent::net::Settings::default()).unwrap()
}

#[test]
fn prober_answers() {
    let ok = ReadyServer::fixed(200);
    assert_eq!(Prober::new(&ok.url(), client()).probe(), Probe::Ready);
    let busy = ReadyServer::fixed(503);
    assert_eq!(
        Prober::new(&busy.url(), client()).probe(),
        Probe::NotReady(503)
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // 127.0.0.2: no test server binds there, whatever port a parallel test gets.
    let url = format!("http://127.0.0.2:{port}/healthz/ready");
    match Prober::new(&url, client()).probe() {
        Probe::Down(why) => assert!(!why.is_empty()),
        p => panic!("nothing listens on {url}, got {p:?}"),
    }
    assert_eq!(Prober::new(&url, client()).url(), url);
}

/// Proxy variables pointing at a "proxy" (a server that answers 502 and counts
/// connections) do not reach the prober. The environment is a process-wide thing, so the
/// probing runs in a child: this test binary again, running [`prober_child`].
#[test]
fn prober_ignores_proxy_environment() {
    let target = ReadyServer::fixed(200);
    let proxy = ReadyServer::fixed(502);
    let child = |mode: &str| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["prober_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("HEALTH_PROBER_CHILD", mode)
            .env("HEALTH_PROBER_URL", target.url());
        for v in SCRUB {
            c.env_remove(v);
        }
        for v in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            c.env(v, format!("http://127.0.0.1:{}", proxy.port()));
        }
        let o = run(&mut c, PATIENCE);
        assert!(o.status.success(), "{mode} child: {}", show(&o));
        assert!(
            stdout(&o).contains(&format!("prober child {mode}: ok")),
            "{mode} child did not run: {}",
            show(&o)
        );
    };
    child("prober");
    assert_eq!(proxy.hits(), 0, "the prober went through HTTP_PROXY");
    let direct = target.hits();
    assert!(direct >= 1, "the prober never reached the endpoint");
    // Control: an ordinary client in the same environment does use the proxy, so the
    // variables were in effect.
    child("control");
    assert!(
        proxy.hits() >= 1,
        "the control client ignored HTTP_PROXY too"
    );
    assert_eq!(target.hits(), direct, "the control client went direct");
}

/// The child half of [`prober_ignores_proxy_environment`]; does nothing unless run by it.
#[test]
fn prober_child() {
    let (Ok(mode), Ok(url)) = (
        std::env::var("HEALTH_PROBER_CHILD"),
        std::env::var("HEALTH_PROBER_URL"),
    ) else {
        return;
    };
    match mode.as_str() {
        "prober" => assert_eq!(Prober::new(&url, client()).probe(), Probe::Ready),
        "control" => {
            vmagent::net::install_crypto_provider();
            // reqwest's own default client: its system proxy matcher does send loopback
            // through HTTP_PROXY.
            let r = vmagent::net::block_on(reqwest::Client::new().get(&url).send())
                .expect("the proxy answers");
            assert_eq!(r.status().as_u16(), 502, "not through the proxy");
        }
        m => panic!("unknown mode {m}"),
    }
    println!("prober child {mode}: ok");
}

// ---------------------------------------------------------------------------------
// The unit's journal: istio-start.sh's iptables step
// ---------------------------------------------------------------------------------

/// The fixture's `iptables-fail` scenario: like the real istio-start.sh (`set -e`,
/// iptables before the redirect to istio.log) the stand-in's `pilot-agent istio-iptables`
/// prints istio-iptables' failure for a kernel without iptables support to the unit's own
/// output (the journal) and the script exits 1 before the proxy starts.
#[test]
fn iptables_failure_in_the_journal_is_reported() {
    let vm = Vm::new("iptables-fail");
    let o = vm.expect(
        vm.apply(&vm.example(), &["--wait", "120"]),
        20,
        "iptables failure",
    );
    assert_failure_report(&vm, &o, "kernel-modules", Some("initialize"));
    assert_status_failed(&vm, "kernel-modules", 20);
    // From the journal only: istio.log never saw it.
    assert!(!vm.istio_log().contains("initialize"), "{}", vm.show(&o));
    assert!(
        vm.fake
            .journalctl_calls()
            .iter()
            .any(|c| c.contains("-u istio.service")
                && c.contains("--follow")
                && c.contains("--since=@")),
        "{}",
        vm.show(&o)
    );
}

/// Without journalctl (a system without systemd's tools) the journal is silently left
/// out: no warning, and health comes from istio.log and the probe as before.
#[test]
fn missing_journalctl_degrades_silently() {
    let vm = Vm::new("ready");
    let missing = vm.work.path().join("no-such-journalctl");
    let o = vm.expect(
        vm.apply_env(
            &vm.example(),
            &["--wait", "120"],
            &[("VMAGENT_TEST_JOURNALCTL", missing.to_str().unwrap())],
        ),
        0,
        "no journalctl",
    );
    assert!(stdout(&o).contains(READY_LINE), "{}", vm.show(&o));
    assert!(!stderr(&o).contains("journal"), "{}", vm.show(&o));
}

// ---------------------------------------------------------------------------------
// Final or not: a missing token with a valid certificate, a denied certificate write
// ---------------------------------------------------------------------------------

/// A test-local istio-start.sh whose agent logs a missing token and a denied write of
/// its certificate output (security/pkg/credentialfetcher/plugin/token.go,
/// security/pkg/nodeagent/cache/secretcache.go via pkg/file/file.go), then becomes ready
/// a moment later, as the real agent does while a valid certificate sits in OUTPUT_CERTS
/// (pilot/pkg/grpc/tls.go). The fixture's scenarios (tests/common/packages.rs) have no
/// such run, hence this override.
const TOKEN_GONE_CERT_OK: &str = r#"#!/bin/sh
# test-local istio-start.sh (tests/health.rs): token gone, certificate still valid
R="${FIXTURE_ROOT:-}"
if [ "${1:-}" = clean ]; then rm -f "$R/run/istio-fixture/ready"; exit 0; fi
mkdir -p "$R/var/log/istio" "$R/run/istio-fixture"
L="$R/var/log/istio/istio.log"
ts=2024-08-15T09:51:42.705907Z
printf '%s\tinfo\tStarting proxy agent\n' "$ts" >> "$L"
printf '%s\twarn\tcitadelclient\tcannot load key pair, using token instead: open etc/certs/cert-chain.pem: no such file or directory\n' "$ts" >> "$L"
printf '%s\twarn\tfailed to fetch token from file: open /var/run/secrets/tokens/istio-token: no such file or directory\n' "$ts" >> "$L"
printf '%s\terror\tcache\terror when output the resource: failed to write data to file key.pem: open etc/certs/key.pem.tmp.3487128755: permission denied\n' "$ts" >> "$L"
sleep 1
touch "$R/run/istio-fixture/ready"
exec sleep 600
"#;

/// Installs the package and replaces istio-start.sh with `script`.
fn with_start_script(vm: &Vm, bundle: &Path, script: &str) {
    vm.expect(vm.apply(bundle, &["--no-start"]), 0, "install only");
    let start = vm.root.at("/usr/local/bin/istio-start.sh");
    fs::write(&start, script).unwrap();
    fs::set_permissions(&start, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn missing_token_with_a_valid_certificate_waits_and_becomes_ready() {
    let vm = Vm::new("ready");
    // OUTPUT_CERTS from the installed cluster.env, not the default.
    let mut env = fs::read(example_dir().join("cluster.env")).unwrap();
    env.extend_from_slice(b"OUTPUT_CERTS='/var/lib/istio/certs'\n");
    let bundle = vm.bundle("output-certs", &Spec::example().set("cluster.env", env));
    with_start_script(&vm, &bundle, TOKEN_GONE_CERT_OK);
    let certs = vm.root.at("/var/lib/istio/certs");
    fs::create_dir_all(&certs).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["vm".to_string()]).unwrap();
    fs::write(certs.join("cert-chain.pem"), cert.cert.pem()).unwrap();
    let o = vm.expect(
        vm.apply(&bundle, &["--wait", "120"]),
        0,
        "token gone, cert ok",
    );
    assert!(stdout(&o).contains(READY_LINE), "{}", vm.show(&o));
    // Shown while waiting, but neither ended the wait.
    let err = stderr(&o);
    assert!(err.contains("istio: token-missing"), "{}", vm.show(&o));
    assert!(err.contains("istio: permission-denied"), "{}", vm.show(&o));
    // The benign key-pair lookup is not shown at all.
    assert!(!err.contains("load key pair"), "{}", vm.show(&o));
}

#[test]
fn missing_token_without_a_certificate_fails_at_once() {
    let vm = Vm::new("ready");
    let bundle = vm.example();
    // Without a certificate the real agent never becomes ready: no ready file.
    let never_ready = TOKEN_GONE_CERT_OK.replace("touch \"$R/run/istio-fixture/ready\"\n", "");
    assert_ne!(never_ready, TOKEN_GONE_CERT_OK);
    with_start_script(&vm, &bundle, &never_ready);
    assert!(!vm.root.at("/etc/certs/cert-chain.pem").exists());
    let o = vm.expect(
        vm.apply(&bundle, &["--wait", "120"]),
        12,
        "token gone, no cert",
    );
    assert_failure_report(&vm, &o, "token-missing", Some("istio-token"));
    assert_status_failed(&vm, "token-missing", 12);
}

/// The legacy (Istio 1.0) node agent's `CSR is approved successfully` (security/pkg/
/// nodeagent/vm/nodeagent.go), as glog wrote it to the journal, is the certificate stage.
const LEGACY_CSR: &str = r#"#!/bin/sh
# test-local istio-start.sh (tests/health.rs): a legacy node agent's journal line
R="${FIXTURE_ROOT:-}"
if [ "${1:-}" = clean ]; then exit 0; fi
echo 'I1013 21:32:29.862575    6941 nodeagent.go:128] CSR is approved successfully. Will renew cert in 29m59.137732603s'
exec sleep 600
"#;

#[test]
fn legacy_node_agent_csr_approval_is_progress() {
    let vm = Vm::new("ready");
    let bundle = vm.example();
    with_start_script(&vm, &bundle, LEGACY_CSR);
    // Ends at the timeout by design; the CSR line must come within it, so 15 s.
    let o = vm.expect(vm.apply(&bundle, &["--wait", "15"]), 10, "legacy CSR line");
    assert!(
        stderr(&o).contains("istio: workload certificate received from the CA"),
        "{}",
        vm.show(&o)
    );
    let st = vm.status_file();
    assert_eq!(st["health"]["reason"], "not-ready", "{st:#}");
    assert_eq!(
        st["health"]["stage"], "workload certificate received from the CA",
        "{st:#}"
    );
}
