//! A small simulated VM for daemon tests outside tests/daemon.rs: a root with dpkg and
//! the fixture istio-sidecar package in the bundle, the fake systemd, the stand-in
//! proxy's readiness endpoint, a config naming the bundle (plus extra TOML), and a
//! `vmagent daemon` whose stderr is collected; everything is stopped when dropped.

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::fake_systemd::{FakeSystemd, ReadyServer};
use super::packages::{deb_root, set_scenario, Fixture, DEB_DEPS};
use super::wait::{wait_until, PATIENCE};
use super::{inroot, Item, Spec, TestRoot};

/// System path of the bundle the daemon watches.
pub const BUNDLE: &str = "/etc/vmagent/bundle.tar";

/// The Istio version of the fixture package.
pub const VERSION: &str = "1.24.1";

/// One VM. Field order is drop order: the daemon, then the service, then the root.
pub struct DaemonVm {
    daemon: Option<(Child, Arc<Mutex<String>>, JoinHandle<()>)>,
    /// The fake systemd.
    pub fake: FakeSystemd,
    ready: ReadyServer,
    /// The target root.
    pub root: TestRoot,
    deb: PathBuf,
    _work: tempfile::TempDir,
}

impl DaemonVm {
    /// A fresh root with the example bundle (and the package) at [`BUNDLE`] and a
    /// config checking for drift every second, plus `extra` TOML.
    pub fn new(extra: &str) -> DaemonVm {
        let work = tempfile::tempdir().expect("tempdir");
        let deb = Fixture::new(VERSION).build_deb(work.path());
        let root = deb_root(DEB_DEPS);
        let ready = ReadyServer::for_root(root.path());
        set_scenario(root.path(), "ready");
        let fake = FakeSystemd::new(root.path());
        let vm = DaemonVm {
            daemon: None,
            fake,
            ready,
            root,
            deb,
            _work: work,
        };
        let config = format!(
            "[source]\nbundle = \"{BUNDLE}\"\n\n[package]\nversion = \"{VERSION}\"\n\n[daemon]\ndrift_interval_secs = 1\nprobe_interval_secs = 1\n\n[health]\nready_url = \"{}\"\n\n{extra}",
            vm.ready.url()
        );
        let p = vm.root.at("/etc/vmagent/config.toml");
        fs::create_dir_all(p.parent().expect("parent")).expect("config dir");
        fs::write(&p, config).expect("config");
        vm.put_bundle(&Spec::example());
        vm
    }

    /// Installs `spec` plus the package as the bundle, atomically (written aside, renamed).
    pub fn put_bundle(&self, spec: &Spec) {
        let spec = spec.clone().with(
            self.deb.file_name().and_then(|n| n.to_str()).expect("name"),
            Item::File(fs::read(&self.deb).expect("deb"), 0o644),
        );
        let p = self.root.at(BUNDLE);
        fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        let tmp = p.with_file_name(".incoming.tar");
        fs::write(&tmp, spec.tar_bytes()).expect("bundle");
        fs::rename(&tmp, &p).expect("rename");
    }

    /// Starts `vmagent daemon --root ROOT -v` with the fake systemd.
    pub fn start(&mut self) {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vmagent"));
        for v in ["RUST_LOG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            c.env_remove(v);
        }
        c.arg("daemon")
            .arg("--root")
            .arg(self.root.path())
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        self.fake.configure(&mut c);
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
        self.daemon = Some((child, err, reader));
    }

    /// The daemon's stderr so far.
    pub fn stderr(&self) -> String {
        self.daemon
            .as_ref()
            .and_then(|(_, e, _)| e.lock().ok().map(|s| s.clone()))
            .unwrap_or_default()
    }

    /// Host path of a system path (symlinks inside the root followed).
    pub fn at(&self, sys: &str) -> PathBuf {
        inroot(self.root.path(), sys, true)
    }

    /// The file's text, if it exists.
    pub fn read(&self, sys: &str) -> Option<String> {
        fs::read_to_string(self.at(sys)).ok()
    }

    /// Polls `f` until it gives a value; fails (with the daemon's stderr) after
    /// [`PATIENCE`] or when the daemon has exited.
    #[track_caller]
    pub fn wait<T>(&mut self, what: &str, mut f: impl FnMut(&DaemonVm) -> Option<T>) -> T {
        wait_until(what, PATIENCE, || {
            if let Some((child, _, _)) = self.daemon.as_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    panic!("waiting for {what}: the daemon exited ({st})");
                }
            }
            f(self)
        })
    }
}

impl Drop for DaemonVm {
    fn drop(&mut self) {
        if let Some((mut child, _, reader)) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
        }
    }
}
