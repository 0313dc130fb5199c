//! A stand-in systemd for the service tests, plugged in through vmagent's debug-build
//! seam `VMAGENT_TEST_SYSTEMCTL=PROGRAM` (src/service/mod.rs): a POSIX sh `systemctl`
//! (tests/common/fake_systemd/systemctl.sh) that answers `show`, `is-enabled`, `enable`
//! (also `--now` and `--no-reload`), `disable`, `mask`, `unmask`, `daemon-reload`, `start`,
//! `restart` and `stop` with systemd 252's messages and exit codes, for any unit:
//! - unit files are looked up in systemd's order (etc, usr/lib, lib under the root); a
//!   symlink to /dev/null in etc/systemd/system masks the unit: LoadState `masked`,
//!   `is-enabled` prints `masked` (exit 1), `start`/`restart` fail with `Unit X is
//!   masked.` (exit 1), `enable` fails (exit 1);
//! - a unit without WantedBy=/RequiredBy= in [Install] is static: `is-enabled` prints
//!   `static` (exit 0), `enable` prints systemd's explanation and exits 0 linking nothing;
//! - `enable` links into every WantedBy=/RequiredBy= target's .wants/.requires, and,
//!   like `disable`, reloads implicitly (systemctl's default without `--no-reload`);
//! - istio.service is loaded at its first reference (`show`, `start`) with no
//!   daemon-reload, as systemd 246 and later do for a unit file that appeared since
//!   they last looked; `NeedDaemonReload` is `yes` once the unit file found first
//!   differs in path, content or mtime from the one loaded.
//!
//! istio.service really runs, like systemd with `Restart=always` would: a detached
//! supervisor (supervisor.sh) runs `sh ROOT/usr/local/bin/istio-start.sh` in a loop,
//! pausing the unit's own `RestartSec=` between runs (10 s in the package's unit; tests
//! that need quick restarts install a unit with a small RestartSec on purpose); `stop`
//! is `KillMode=mixed` (SIGTERM to the main process, a wait while it drains up to the
//! unit's `TimeoutStopSec=`, SIGKILL to the rest, then ExecStopPost `istio-start.sh
//! clean`). Other units only have an active flag.
//!
//! Environment (set by [`FakeSystemd::configure`]; children inherit it):
//! - `FAKE_SYSTEMD_STATE`: its state directory: `calls` (one line per invocation, the
//!   arguments), `supervisor` and `main` (pids), `restarts` (automatic restarts since the
//!   last start/restart: systemd's NRestarts), `runs` (`start T` / `exit T STATUS` per
//!   run of istio.service), `loaded-unit` (path, checksum and mtime of the unit file
//!   as last loaded: NeedDaemonReload), `active/UNIT` (other units), `supervisor.log`.
//! - `FAKE_SYSTEMD_ROOT`: the target root (the unit files, istio-start.sh, the
//!   enablement symlinks live there); passed to istio-start.sh as `FIXTURE_ROOT`.
//! - `FAKE_SYSTEMD_OWNER`: the test process; the supervisor kills its process group when
//!   the owner, the root or the state directory disappears, so nothing outlives a test
//!   even when the test process is killed. [`FakeSystemd`]'s `Drop` kills it as well.
//!
//! The unit's journal: the supervisor appends istio-start.sh's own stdout and stderr
//! (what systemd puts in the journal) to `journal` in the state directory, each run
//! after a line `#fake-journal-run <unix seconds>`; the fake `journalctl`
//! (`VMAGENT_TEST_JOURNALCTL`) follows it like `journalctl -u istio.service -o cat
//! --follow --since=@T`: the lines of runs started at or after T, then new ones as they
//! come, until the process that started it is gone.
//!
//! [`ReadyServer`] (tests/common/ready_server.rs) is re-exported here.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// Where the tests have always imported it from (not every test binary does).
#[allow(unused_imports)]
pub use super::ready_server::ReadyServer;

/// The fake `systemctl`, its helpers, its supervisor and its `journalctl`, as written
/// to the fake's directory (shell scripts kept in tests/common/fake_systemd/ so they read
/// as shell).
const SCRIPTS: [(&str, &str); 4] = [
    ("systemctl", include_str!("fake_systemd/systemctl.sh")),
    ("lib.sh", include_str!("fake_systemd/lib.sh")),
    ("supervisor.sh", include_str!("fake_systemd/supervisor.sh")),
    ("journalctl", include_str!("fake_systemd/journalctl.sh")),
];

/// A fake systemd for one target root. Dropping it kills everything it started.
pub struct FakeSystemd {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl FakeSystemd {
    /// Writes the fake `systemctl` and its supervisor for `root`.
    pub fn new(root: &Path) -> FakeSystemd {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, body) in SCRIPTS {
            let p = dir.path().join(name);
            fs::write(&p, body).expect("write fake systemd");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        fs::create_dir(dir.path().join("state")).expect("state dir");
        FakeSystemd {
            dir,
            root: root.to_path_buf(),
        }
    }

    /// The program for `VMAGENT_TEST_SYSTEMCTL`.
    pub fn program(&self) -> PathBuf {
        self.dir.path().join("systemctl")
    }

    /// The program for `VMAGENT_TEST_JOURNALCTL`.
    pub fn journalctl(&self) -> PathBuf {
        self.dir.path().join("journalctl")
    }

    /// The unit's journal so far (istio-start.sh's own output, with run markers).
    pub fn journal(&self) -> String {
        fs::read_to_string(self.state().join("journal")).unwrap_or_default()
    }

    /// The fake journalctl's invocations, one string of arguments each.
    pub fn journalctl_calls(&self) -> Vec<String> {
        fs::read_to_string(self.state().join("journalctl-calls"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Sets the environment that makes `cmd` (vmagent) use this fake.
    pub fn configure<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("VMAGENT_TEST_SYSTEMCTL", self.program())
            .env("VMAGENT_TEST_JOURNALCTL", self.journalctl())
            .env("FAKE_SYSTEMD_STATE", self.state())
            .env("FAKE_SYSTEMD_ROOT", &self.root)
            .env("FAKE_SYSTEMD_OWNER", std::process::id().to_string())
    }

    /// Runs the fake systemctl by hand, as an admin would run systemctl (`mask`, `stop`,
    /// ...); its output, whatever the exit status.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(self.program());
        c.args(args).stdin(std::process::Stdio::null());
        self.configure(&mut c);
        c.output().expect("run the fake systemctl")
    }

    /// The runs of istio.service so far: (start, exit) in Unix seconds, exit `None`
    /// while running.
    pub fn runs(&self) -> Vec<(f64, Option<f64>)> {
        let text = fs::read_to_string(self.state().join("runs")).unwrap_or_default();
        let mut runs: Vec<(f64, Option<f64>)> = Vec::new();
        for l in text.lines() {
            let mut w = l.split_whitespace();
            let (Some(kind), Some(Ok(t))) = (w.next(), w.next().map(str::parse::<f64>)) else {
                continue;
            };
            match (kind, runs.last_mut()) {
                ("start", _) => runs.push((t, None)),
                ("exit", Some(last)) => last.1 = Some(t),
                _ => {}
            }
        }
        runs
    }

    /// Every invocation so far, one string of arguments each, in order.
    pub fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.state().join("calls"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The verbs (first argument) of the invocations from index `from` on.
    pub fn verbs_from(&self, from: usize) -> Vec<String> {
        self.calls()
            .iter()
            .skip(from)
            .map(|c| c.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    }

    /// All verbs so far.
    pub fn verbs(&self) -> Vec<String> {
        self.verbs_from(0)
    }

    /// Automatic restarts since the last start/restart (NRestarts).
    pub fn restarts(&self) -> u32 {
        fs::read_to_string(self.state().join("restarts"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn pid(&self, name: &str) -> Option<i32> {
        fs::read_to_string(self.state().join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The supervisor's pid (= its process group), while one was started.
    pub fn supervisor(&self) -> Option<i32> {
        self.pid("supervisor")
    }

    /// The running istio-start.sh / pilot-agent process, if any.
    pub fn main_pid(&self) -> Option<i32> {
        self.pid("main").filter(|p| alive(*p))
    }

    /// The supervisor's own output (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.state().join("supervisor.log")).unwrap_or_default()
    }

    /// Kills the supervisor's process group (the service and everything it started).
    pub fn kill(&self) {
        // Only while /proc/PID exists (running or a zombie): the pid is still ours.
        let ours = |p: &i32| *p > 1 && Path::new(&format!("/proc/{p}")).exists();
        if let Some(p) = self.supervisor().filter(ours) {
            // SAFETY: kill(2) with a negative pid signals that process group only; the
            // group is the supervisor's own session (setsid), never the test's.
            unsafe {
                libc::kill(-p, libc::SIGKILL);
            }
        }
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether process `pid` runs (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}
