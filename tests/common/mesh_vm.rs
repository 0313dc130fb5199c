//! A simulated VM for tests that run `vmagent daemon` (or `doctor`) against it: a
//! Debian-like root real dpkg installs the fixture istio-sidecar package into (the .deb
//! rides in the bundle at [`BUNDLE`], `[package] version` set, so no network), the fake
//! systemd of fake_systemd.rs, a readiness server, and a [`DaemonProc`] whose stderr is
//! collected. A compact cousin of tests/daemon.rs's harness, for the newer test files.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::fake_systemd::{alive, FakeSystemd, ReadyServer};
use super::packages::{deb_root, set_scenario, Fixture, DEB_DEPS};
use super::wait::{wait_until, PATIENCE};
use super::{Item, Spec, TestRoot};

const BIN: &str = env!("CARGO_BIN_EXE_vmagent");

/// Where the daemon's `[source] bundle` points.
pub const BUNDLE: &str = "/etc/vmagent/bundle.tar";

/// The fixture package's version.
pub const VERSION: &str = "1.24.1";

/// Variables that could route traffic through a proxy or reach a real systemd.
const SCRUB: &[&str] = &[
    "VMAGENT_TEST_SYSTEMCTL",
    "VMAGENT_FAULT",
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

/// A simulated VM. Field order is drop order: the service is killed first.
pub struct MeshVm {
    /// The fake systemd.
    pub fake: FakeSystemd,
    /// The readiness endpoint the config points at.
    pub ready: ReadyServer,
    /// The target root.
    pub root: TestRoot,
    deb: PathBuf,
    _work: tempfile::TempDir,
}

impl MeshVm {
    /// A fresh VM (package not installed) whose proxy gets ready, with `config` appended
    /// to the generated config.toml and the example bundle changed by `edit` at
    /// [`BUNDLE`].
    pub fn new(config: &str, edit: impl FnOnce(Spec) -> Spec) -> MeshVm {
        let work = tempfile::tempdir().expect("tempdir");
        let deb = Fixture::new(VERSION).build_deb(work.path());
        let root = deb_root(DEB_DEPS);
        let ready = ReadyServer::for_root(root.path());
        set_scenario(root.path(), "ready");
        let fake = FakeSystemd::new(root.path());
        let vm = MeshVm {
            fake,
            ready,
            root,
            deb,
            _work: work,
        };
        let text = format!(
            "[source]\nbundle = \"{BUNDLE}\"\n\n[package]\nversion = \"{VERSION}\"\n\n[health]\nready_url = \"{}\"\n\n{config}\n",
            vm.ready.url()
        );
        vm.write(Path::new("/etc/vmagent/config.toml"), text.as_bytes());
        let spec = edit(Spec::example()).with(
            vm.deb
                .file_name()
                .and_then(|n| n.to_str())
                .expect("deb name"),
            Item::File(fs::read(&vm.deb).expect("deb"), 0o644),
        );
        vm.write(Path::new(BUNDLE), &spec.tar_bytes());
        vm
    }

    /// Writes a file in the root atomically (aside, then renamed over).
    pub fn write(&self, sys: &Path, data: &[u8]) {
        let p = self.root.at(&sys.to_string_lossy());
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let tmp = p.with_file_name(".vm-incoming");
        fs::write(&tmp, data).expect("write");
        fs::rename(&tmp, &p).expect("rename");
    }

    /// `vmagent daemon --root ROOT -vv` with the fake systemd.
    pub fn daemon(&self) -> DaemonProc {
        let mut c = self.command();
        c.arg("daemon")
            .arg("--root")
            .arg(self.root.path())
            .arg("-vv");
        DaemonProc::spawn(c)
    }

    /// `vmagent` with a scrubbed environment and the fake systemd.
    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        for v in SCRUB {
            c.env_remove(v);
        }
        self.fake.configure(&mut c);
        c
    }

    /// `restart`s of istio.service so far.
    pub fn restarts(&self) -> usize {
        self.fake.verbs().iter().filter(|v| *v == "restart").count()
    }

    /// Waits until the status file says ready.
    #[track_caller]
    pub fn wait_ready(&self, d: &DaemonProc) {
        let status = self.root.at("/run/vmagent/status.json");
        d.wait("status.json health.state ready", || {
            let v: serde_json::Value = serde_json::from_slice(&fs::read(&status).ok()?).ok()?;
            (v["health"]["state"] == "ready").then_some(())
        });
    }
}

/// A running `vmagent daemon`; killed when dropped.
pub struct DaemonProc {
    child: Child,
    err: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl DaemonProc {
    fn spawn(mut c: Command) -> DaemonProc {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn vmagent daemon");
        let mut pipe = child.stderr.take().expect("stderr");
        let err = Arc::new(Mutex::new(String::new()));
        let sink = err.clone();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        DaemonProc {
            child,
            err,
            reader: Some(reader),
        }
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.err.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Polls `f` until it gives a value; fails after [`PATIENCE`] or when the daemon
    /// exited, with its stderr.
    #[track_caller]
    pub fn wait<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let pid = self.child.id() as i32;
        let mut gone = false;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(what, PATIENCE, || {
                if !alive(pid) {
                    gone = true;
                    return Some(None);
                }
                f().map(Some)
            })
        }));
        match r {
            Ok(Some(v)) => v,
            _ => panic!(
                "waiting for {what}: {}\n--- daemon stderr\n{}",
                if gone {
                    "the daemon exited"
                } else {
                    "hang guard"
                },
                self.stderr()
            ),
        }
    }

    /// Waits for a stderr line after byte `from` holding every one of `needles`; returns
    /// the byte offset just past that line.
    #[track_caller]
    pub fn wait_log(&self, from: usize, needles: &[&str]) -> usize {
        self.wait(&format!("a log line with {needles:?}"), || {
            let s = self.stderr();
            let tail = s.get(from..)?;
            let mut at = from;
            for line in tail.split_inclusive('\n') {
                at += line.len();
                if line.ends_with('\n') && needles.iter().all(|n| line.contains(n)) {
                    return Some(at);
                }
            }
            None
        })
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
