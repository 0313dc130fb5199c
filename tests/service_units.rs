//! Unit-file states and restart timing, with the fake systemd
//! (tests/common/fake_systemd.rs) held to real systemd's behaviour:
//! - the fake's `is-enabled`, `enable`, `mask` and `unmask` answer like the host's real
//!   systemctl (systemd 252 on Debian bookworm) run offline with `--root` on a twin root;
//! - a masked istio.service: `vmagent apply` fails naming the unit and `systemctl unmask
//!   istio`, starts nothing, and leaves the root as it was;
//! - a static istio-auth-node-agent.service (no [Install]): started, never enabled;
//! - `RestartSec=` of the unit: the package's 10 s pause between a crash and the restart.
//!
//! Waits are polls with the hang guard [`PATIENCE`]; timing is only ever asserted as a
//! lower bound (a loaded machine can only make things later).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::fake_systemd::{FakeSystemd, ReadyServer};
use common::output::*;
use common::packages::*;
use common::wait::{wait_until, PATIENCE};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_vmagent");
const V1: &str = "1.24.1";
const NODE_AGENT: &str = "istio-auth-node-agent.service";

/// The environment variables vmagent must not inherit from the test run.
const SCRUB: &[&str] = &[
    "VMAGENT_TEST_SYSTEMCTL",
    "VMAGENT_TEST_JOURNALCTL",
    "VMAGENT_FAULT",
    "FAKE_SYSTEMD_STATE",
    "FAKE_SYSTEMD_ROOT",
    "FAKE_SYSTEMD_OWNER",
    "NOTIFY_SOCKET",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A Debian-like root with the fixture package's .deb beside it, a readiness endpoint
/// and the fake systemd. Field order is drop order: the service is killed first.
struct Vm {
    fake: FakeSystemd,
    _ready: ReadyServer,
    root: TestRoot,
    deb: std::path::PathBuf,
    work: tempfile::TempDir,
}

impl Vm {
    fn new(scenario: &str) -> Vm {
        let work = tempfile::tempdir().expect("tempdir");
        let deb = Fixture::new(V1).build_deb(work.path());
        let root = deb_root(DEB_DEPS);
        let ready = ReadyServer::for_root(root.path());
        let cfg = root.at("/etc/vmagent/config.toml");
        fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        fs::write(&cfg, format!("[health]\nready_url = \"{}\"\n", ready.url())).unwrap();
        set_scenario(root.path(), scenario);
        let fake = FakeSystemd::new(root.path());
        Vm {
            fake,
            _ready: ready,
            root,
            deb,
            work,
        }
    }

    /// `spec` written as `<name>/bundle.tar`.
    fn bundle(&self, name: &str, spec: &Spec) -> std::path::PathBuf {
        let d = self.work.path().join(name);
        fs::create_dir_all(&d).unwrap();
        spec.write_tar(&d)
    }

    /// `vmagent apply BUNDLE --root ROOT --package DEB EXTRA...` with the fake systemd.
    fn apply(&self, bundle: &Path, extra: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        for v in SCRUB {
            c.env_remove(v);
        }
        c.arg("apply")
            .arg(bundle)
            .arg("--root")
            .arg(self.root.path())
            .arg("--package")
            .arg(&self.deb)
            .args(extra)
            .stdin(Stdio::null());
        self.fake.configure(&mut c);
        // A hang guard only: --wait (120 s) plus the package install, on a loaded machine.
        run_guarded(c, PATIENCE * 3)
    }

    /// The fake's calls and the root's supervisor log, for assertion messages.
    fn context(&self, o: &Output) -> String {
        format!(
            "{}--- fake systemctl calls\n{}\n--- supervisor\n{}",
            show(o),
            self.fake.calls().join("\n"),
            self.fake.log()
        )
    }
}

/// Runs `c` to the end, killing it (and failing) after `limit`.
fn run_guarded(mut c: Command, limit: std::time::Duration) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(o) => o.expect("wait"),
        Err(_) => {
            // SAFETY: kill(2) on our own child, not reaped yet (the waiting thread still
            // waits on it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{c:?} still ran after {limit:?} (hang guard)");
        }
    }
}

/// Whether `unit` has an enablement symlink in any .wants directory of the root.
fn linked(root: &TestRoot, unit: &str) -> bool {
    let Ok(dirs) = fs::read_dir(root.at("/etc/systemd/system")) else {
        return false;
    };
    dirs.filter_map(Result::ok)
        .any(|d| fs::symlink_metadata(d.path().join(unit)).is_ok_and(|m| m.is_symlink()))
}

// ---------------------------------------------------------------------------------
// The fake against the real systemctl
// ---------------------------------------------------------------------------------

/// One command's visible result: exit code, stdout, and the first stderr line with the
/// root's host path taken out (offline systemctl names host paths; live, system paths).
fn outcome(o: &Output, root: &Path) -> (Option<i32>, String, String) {
    let err = stderr(o).replace(&root.display().to_string(), "");
    let first = err.lines().next().unwrap_or("").to_string();
    (o.status.code(), stdout(o), first)
}

/// Two units in a root: `st.service` static, `en.service` wanted by multi-user.target.
fn unit_root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let lib = d.path().join("lib/systemd/system");
    fs::create_dir_all(&lib).unwrap();
    fs::create_dir_all(d.path().join("etc/systemd/system")).unwrap();
    fs::write(lib.join("st.service"), "[Service]\nExecStart=/bin/true\n").unwrap();
    fs::write(
        lib.join("en.service"),
        "[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    d
}

/// The symlinks under etc/systemd/system and their targets.
fn links(root: &Path) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for (p, n) in snapshot(&root.join("etc/systemd/system")) {
        if n.kind == "symlink" {
            v.push((
                p.display().to_string(),
                String::from_utf8_lossy(&n.content).into_owned(),
            ));
        }
    }
    v
}

#[test]
fn fake_unit_file_states_match_real_systemctl() {
    let real_ok = Command::new("systemctl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !real_ok {
        eprintln!("skipped: no systemctl on this host to compare the fake with");
        return;
    }
    let (real, twin) = (unit_root(), unit_root());
    let fake = FakeSystemd::new(twin.path());
    let steps: &[&[&str]] = &[
        &["is-enabled", "st.service"],
        &["enable", "st.service"],
        &["is-enabled", "st.service"],
        &["is-enabled", "en.service"],
        &["enable", "en.service"],
        &["is-enabled", "en.service"],
        &["mask", "en.service"],
        &["is-enabled", "en.service"],
        &["enable", "en.service"],
        &["unmask", "en.service"],
        &["is-enabled", "en.service"],
        &["mask", "st.service"],
        &["is-enabled", "st.service"],
        &["is-enabled", "nope.service"],
    ];
    for args in steps {
        let r = Command::new("systemctl")
            .arg(format!("--root={}", real.path().display()))
            .args(*args)
            .stdin(Stdio::null())
            .output()
            .expect("systemctl");
        let f = fake.systemctl(args);
        assert_eq!(
            outcome(&f, twin.path()),
            outcome(&r, real.path()),
            "systemctl {args:?}: the fake (left) differs from systemd\n--- fake\n{}--- real\n{}",
            show(&f),
            show(&r)
        );
        assert_eq!(links(twin.path()), links(real.path()), "after {args:?}");
    }
}

// ---------------------------------------------------------------------------------
// A masked istio.service
// ---------------------------------------------------------------------------------

/// A root with the package installed and a first bundle applied (nothing started), then
/// istio.service masked by the admin; returns the new bundle to apply.
fn masked_vm() -> (Vm, std::path::PathBuf) {
    let vm = Vm::new("ready");
    let first = vm.bundle("first", &Spec::example());
    ok(vm.apply(&first, &["--no-start"]), "first apply, --no-start");
    let m = vm.fake.systemctl(&["mask", "istio.service"]);
    assert!(m.status.success(), "mask: {}", show(&m));
    let env = format!(
        "{}ISTIO_META_NETWORK=vm-net-2\n",
        String::from_utf8(example_member("cluster.env")).unwrap()
    );
    let second = vm.bundle("second", &Spec::example().set("cluster.env", env));
    (vm, second)
}

#[test]
fn masked_istio_service_fails_apply_naming_unmask() {
    let (vm, bundle) = masked_vm();
    let before = vm.fake.calls().len();
    let o = vm.apply(&bundle, &["--wait", "120"]);
    let ctx = vm.context(&o);
    assert_eq!(o.status.code(), Some(4), "exit 4 (prerequisite): {ctx}");
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("istio.service is masked"), "{ctx}");
    assert!(all.contains("systemctl unmask istio"), "{ctx}");
    let verbs = vm.fake.verbs_from(before);
    for v in ["start", "restart", "enable"] {
        assert!(!verbs.iter().any(|x| x == v), "{v} on a masked unit: {ctx}");
    }
    assert!(vm.fake.main_pid().is_none(), "a masked unit ran: {ctx}");
    assert!(!linked(&vm.root, "istio.service"), "{ctx}");
}

/// Issue 13: the mask was found only in the service step, after the bundle's files were
/// written, leaving the root half-changed (new cluster.env on disk, service not running
/// it). `service::preflight` now refuses before the first write.
#[test]
fn masked_istio_service_apply_leaves_the_root_as_it_was() {
    let (vm, bundle) = masked_vm();
    let before = vm.root.snapshot();
    let o = vm.apply(&bundle, &["--wait", "120"]);
    assert_ne!(o.status.code(), Some(0), "{}", vm.context(&o));
    // vmagent's own bookkeeping (lock, status, logs) may change; the system may not.
    let system = |s: Snapshot| -> Snapshot {
        s.into_iter()
            .filter(|(p, _)| {
                !p.starts_with("var/lib/vmagent")
                    && !p.starts_with("run/vmagent")
                    && !p.starts_with("var/log/vmagent")
            })
            .collect()
    };
    assert_same(
        &system(before),
        &system(vm.root.snapshot()),
        "apply with a masked istio.service",
    );
}

// ---------------------------------------------------------------------------------
// A static legacy node agent
// ---------------------------------------------------------------------------------

#[test]
fn static_node_agent_is_started_not_enabled() {
    let vm = Vm::new("ready");
    // Like a unit pulled in by another (no [Install]): systemd calls it static.
    let unit = vm.root.at(&format!("/lib/systemd/system/{NODE_AGENT}"));
    fs::create_dir_all(unit.parent().unwrap()).unwrap();
    fs::write(
        &unit,
        "[Unit]\nDescription=istio-auth-node-agent: The Istio auth node agent\n\n[Service]\nExecStart=/usr/local/bin/node_agent\nRestart=always\n",
    )
    .unwrap();
    let o = vm.apply(&vm.bundle("b", &Spec::example()), &["--wait", "120"]);
    let ctx = vm.context(&o);
    assert_eq!(o.status.code(), Some(0), "{ctx}");
    let st = vm.fake.systemctl(&["is-enabled", NODE_AGENT]);
    assert_eq!(stdout(&st), "static\n", "{}", show(&st));
    assert!(
        !linked(&vm.root, NODE_AGENT),
        "a static unit got linked: {ctx}"
    );
    assert!(linked(&vm.root, "istio.service"), "{ctx}");
    let calls = vm.fake.calls();
    let at = |c: &str| calls.iter().position(|x| x == c);
    assert!(at(&format!("is-enabled {NODE_AGENT}")).is_some(), "{ctx}");
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("enable ") && c.ends_with(NODE_AGENT)),
        "{ctx}"
    );
    let (agent, istio) = (
        at(&format!("start {NODE_AGENT}")),
        at("enable --now --no-reload istio.service"),
    );
    assert!(
        agent.is_some() && istio.is_some() && agent < istio,
        "the node agent starts first: {ctx}"
    );
}

// ---------------------------------------------------------------------------------
// RestartSec
// ---------------------------------------------------------------------------------

/// The package's unit says `RestartSec=10`: after a crash the unit sits in
/// activating/auto-restart, and the next run starts no sooner than 10 s later.
#[test]
fn restart_sec_of_the_unit_is_honoured_after_a_crash() {
    let vm = Vm::new("crash");
    let o = Command::new("dpkg")
        .arg(format!("--root={}", vm.root.path().display()))
        .arg("-i")
        .arg(&vm.deb)
        .output()
        .unwrap();
    assert!(o.status.success(), "dpkg -i: {}", show(&o));
    let s = vm.fake.systemctl(&["start", "istio.service"]);
    assert!(s.status.success(), "start: {}", show(&s));
    let ctx = || format!("{:?}\n{}", vm.fake.runs(), vm.fake.log());
    wait_until("the first run to crash", PATIENCE, || {
        vm.fake.runs().first()?.1
    });
    // Between the crash and the restart (checked only when no restart came meanwhile).
    let show_unit = vm.fake.systemctl(&[
        "show",
        "istio.service",
        "--property=LoadState,ActiveState,SubState,NRestarts,NeedDaemonReload,UnitFileState",
    ]);
    if vm.fake.runs().len() == 1 {
        let text = stdout(&show_unit);
        assert!(
            text.contains("ActiveState=activating\nSubState=auto-restart\nNRestarts=0\n"),
            "{text}"
        );
    }
    let runs = wait_until("the restart", PATIENCE, || {
        let r = vm.fake.runs();
        (r.len() >= 2).then_some(r)
    });
    let gap = runs[1].0 - runs[0].1.expect("the first run ended");
    assert!(
        gap >= 10.0,
        "restarted {gap:.3} s after the crash: {}",
        ctx()
    );
    assert!(vm.fake.restarts() >= 1, "{}", ctx());
}
