//! The istio service through systemctl: daemon-reload when the unit changed, enable (the
//! package does not, so without it the VM leaves the mesh at the next reboot), start
//! when stopped, restart only when an input the proxy reads at start changed.
//!
//! Live (`--root /` on a system booted with systemd) vs offline (any other root, or no
//! running systemd): offline, the unit is enabled with `systemctl --root` and nothing is
//! started.

pub mod inputs;

use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use crate::root::Root;

/// Runtime unit files and masks (`systemctl mask --runtime`), gone at reboot.
const RUNTIME_DIR: &str = "/run/systemd/system";

/// The sidecar's unit.
pub const UNIT: &str = "istio.service";

/// The certificate agent of Istio <= 1.0 mesh expansion, shipped by those istio-sidecar
/// packages beside istio.service (install/tools/setupIstioVM.sh at 1.0.0 starts it
/// before istio): enabled and started with istio when the installed package has it. It
/// logs to its own journal, which the health follower reads too.
pub const NODE_AGENT_UNIT: &str = "istio-auth-node-agent.service";

/// dnsmasq, which reads a legacy bundle's `kubedns` file only at start.
pub const DNSMASQ_UNIT: &str = "dnsmasq.service";

/// Where a unit file may be, in systemd's search order (admin's first).
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// A service step that failed.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// systemctl is not there.
    #[error("cannot run `{program}`: {reason}; install systemd, or re-run with --no-start")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// systemctl said no.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its output (last lines, one line).
        output: String,
    },
    /// The unit is masked.
    #[error("{UNIT} is masked, so it cannot start; run `systemctl unmask istio`, or re-run with --no-start")]
    Masked,
    /// The unit does not exist.
    #[error("{UNIT} is not installed: the istio-sidecar package provides it (drop --no-package, or install the package), or re-run with --no-start")]
    NoUnit,
    /// Reading or writing vmagent's record of the inputs failed.
    #[error("service inputs record '{path}': {reason}")]
    Record {
        /// Host path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// How the service is handled for this root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The running systemd manages it: reload, enable, start, restart.
    Live,
    /// Enable only, with `systemctl --root`; the reason is shown.
    Offline(String),
}

/// A systemctl to run.
#[derive(Debug, Clone)]
pub struct Systemctl {
    program: PathBuf,
    /// `--root=DIR` for offline operations.
    root: Option<PathBuf>,
}

/// systemd's view of the unit (live only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// LoadState (`loaded`, `not-found`, `masked`).
    pub load: String,
    /// ActiveState (`active`, `activating`, `inactive`, `failed`, ...).
    pub active: String,
    /// SubState (`running`, `auto-restart`, `dead`, ...).
    pub sub: String,
    /// Automatic restarts since the unit was last started by hand.
    pub restarts: u32,
    /// The unit file changed on disk since systemd loaded it.
    pub need_reload: bool,
    /// UnitFileState (`enabled`, `disabled`, `static`, `masked`, ...; empty when systemd
    /// has no unit file for it): what `is-enabled` says, without another call.
    pub file_state: String,
}

impl UnitState {
    /// `active/running`.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.active, self.sub)
    }

    /// Running or on its way there (including between automatic restarts).
    pub fn is_up(&self) -> bool {
        matches!(self.active.as_str(), "active" | "activating" | "reloading")
    }
}

impl Systemctl {
    /// The systemctl for `root`, and whether the service is live or offline there.
    ///
    /// Debug builds honour `VMAGENT_TEST_SYSTEMCTL=PROGRAM`: a stand-in service manager
    /// treated as live, for tests that cannot run systemd (the VM test runs the real one).
    pub fn for_root(root: &Root) -> (Systemctl, Mode) {
        #[cfg(debug_assertions)]
        if let Some(p) = std::env::var_os("VMAGENT_TEST_SYSTEMCTL") {
            return (
                Systemctl {
                    program: PathBuf::from(p),
                    root: None,
                },
                Mode::Live,
            );
        }
        let program = PathBuf::from("systemctl");
        if !root.is_live() {
            let why = format!(
                "--root is {}, not /: enabled offline, not started (it starts at the VM's next boot)",
                root.base().display()
            );
            let s = Systemctl {
                program,
                root: Some(root.base().to_path_buf()),
            };
            return (s, Mode::Offline(why));
        }
        if !Path::new("/run/systemd/system").is_dir() {
            let s = Systemctl {
                program,
                root: Some(PathBuf::from("/")),
            };
            return (
                s,
                Mode::Offline(
                    "systemd is not running here (no /run/systemd/system): enabled offline, not started"
                        .into(),
                ),
            );
        }
        (
            Systemctl {
                program,
                root: None,
            },
            Mode::Live,
        )
    }

    fn command(&self, args: &[&str]) -> (Command, String) {
        let mut c = tool(&self.program);
        let mut shown = vec!["systemctl".to_string()];
        if let Some(r) = &self.root {
            let a = format!("--root={}", r.display());
            c.arg(&a);
            shown.push(a);
        }
        c.args(args);
        shown.extend(args.iter().map(|a| a.to_string()));
        (c, shown.join(" "))
    }

    /// Runs systemctl; `ok` decides which exit codes are answers rather than failures.
    fn run(&self, args: &[&str], ok: impl Fn(i32) -> bool) -> Result<(i32, String), ServiceError> {
        let (mut c, shown) = self.command(args);
        let out = crate::cmd::run(&mut c, SYSTEMCTL_TIMEOUT).map_err(|e| ServiceError::Spawn {
            program: self.program.display().to_string(),
            reason: e.to_string(),
        })?;
        let code = out.code().unwrap_or(-1);
        if ok(code) {
            tracing::debug!(command = %shown, code, "systemctl");
            return Ok((code, String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        let tail = out.tail_lines(3).join(" | ");
        Err(ServiceError::Command {
            command: shown,
            status: out.status.to_string(),
            output: crate::bundle::printable(&tail, 400),
        })
    }

    /// `systemctl show` of istio.service (live only).
    pub fn show(&self) -> Result<UnitState, ServiceError> {
        self.show_unit(UNIT)
    }

    /// `systemctl show` of `unit` (live only).
    pub fn show_unit(&self, unit: &str) -> Result<UnitState, ServiceError> {
        let (_, out) = self.run(
            &[
                "show",
                unit,
                "--property=LoadState,ActiveState,SubState,NRestarts,NeedDaemonReload,UnitFileState",
            ],
            |c| c == 0,
        )?;
        let mut s = UnitState::default();
        for line in out.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "LoadState" => s.load = v.to_string(),
                "ActiveState" => s.active = v.to_string(),
                "SubState" => s.sub = v.to_string(),
                "NRestarts" => s.restarts = v.parse().unwrap_or(0),
                "NeedDaemonReload" => s.need_reload = v == "yes",
                "UnitFileState" => s.file_state = v.to_string(),
                _ => {}
            }
        }
        Ok(s)
    }

    /// `systemctl is-enabled`: the unit file state (`enabled`, `disabled`, `masked`, ...).
    pub fn enablement(&self) -> Result<String, ServiceError> {
        self.enablement_of(UNIT)
    }

    fn enablement_of(&self, unit: &str) -> Result<String, ServiceError> {
        // is-enabled exits 1 for disabled (and 4 for no such unit): answers, not failures.
        let (_, out) = self.run(&["is-enabled", unit], |c| c == 0 || c == 1 || c == 4)?;
        Ok(out.lines().next().unwrap_or("").trim().to_string())
    }

    /// `systemctl <verb> istio.service` (or a bare verb like `daemon-reload`).
    pub fn verb(&self, verb: &str) -> Result<(), ServiceError> {
        if verb == "daemon-reload" {
            self.run(&[verb], |c| c == 0)?;
        } else {
            self.verb_on(verb, UNIT)?;
        }
        Ok(())
    }

    fn verb_on(&self, verb: &str, unit: &str) -> Result<(), ServiceError> {
        self.run(&[verb, unit], |c| c == 0).map(|_| ())
    }

    /// `systemctl enable [--now] UNIT`, live with `--no-reload`: enable's implicit
    /// daemon-reload (systemctl-enable.c reloads unless told not to) is the slowest
    /// systemctl call on a small VM, and this boot needs none of it: the new
    /// `.wants/` link matters only at the next boot, which reads it from disk, and
    /// [`step`] has already reloaded when the unit itself needed it.
    fn enable(&self, unit: &str, now: bool) -> Result<(), ServiceError> {
        let mut args = vec!["enable"];
        if now {
            args.push("--now");
        }
        if self.root.is_none() {
            args.push("--no-reload");
        }
        args.push(unit);
        self.run(&args, |c| c == 0).map(|_| ())
    }
}

/// What the service step did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// The systemctl commands run that changed something, in order.
    pub actions: Vec<String>,
    /// Why the service was restarted (the inputs that changed), when it was.
    pub restart_reason: Option<String>,
    /// Offline (not started): why.
    pub offline: Option<String>,
    /// The service is (now) running or starting: health can be waited for.
    pub running: bool,
}

/// Runs the service step with as few systemctl calls as the state allows (each costs
/// about half a second on a small VM): one `show` answers load, activity, enablement
/// and whether the unit file changed; daemon-reload only when it did (or systemd does
/// not know the unit); `enable --now` as one call on a first start, without enable's
/// implicit reload. `new_run` is called where the new process's
/// log lines begin, so the health follower skips everything before: right before a
/// `start` (nothing else is running), and right after a `restart` returns (systemctl
/// waits for the old process to stop, and the old agent keeps logging while it drains
/// for seconds; the new process first sets up iptables, so its first agent lines come
/// later).
/// `dns_changed`: this run wrote the legacy `kubedns` dnsmasq file, which dnsmasq reads
/// only at start.
pub fn step(
    root: &Root,
    dns_changed: bool,
    new_run: &mut dyn FnMut(),
) -> Result<Outcome, ServiceError> {
    let (sc, mode) = Systemctl::for_root(root);
    let mut out = Outcome::default();
    let node_agent = unit_file_exists(root, NODE_AGENT_UNIT);
    if let Mode::Offline(why) = mode {
        if !unit_file_exists(root, UNIT) {
            out.offline = Some(format!(
                "{UNIT} is not installed under {}; nothing to enable",
                root.base().display()
            ));
            return Ok(out);
        }
        if node_agent {
            enable(&sc, NODE_AGENT_UNIT, &mut out)?;
        }
        enable(&sc, UNIT, &mut out)?;
        out.offline = Some(why);
        return Ok(out);
    }
    if dns_changed && sc.show_unit(DNSMASQ_UNIT)?.load == "loaded" {
        sc.verb_on("restart", DNSMASQ_UNIT)?;
        out.actions.push(format!("restart {DNSMASQ_UNIT}"));
    }
    let mut state = sc.show()?;
    if state.load == "masked" {
        return Err(ServiceError::Masked);
    }
    // A unit file that appeared since systemd last looked is loaded on first reference
    // (systemd's unit cache: a not-found unit is retried when the unit directories
    // changed); where that did not happen (older systemd, a change within the cache's
    // mtime granularity) `show` says not-found, and a unit file changed since it was
    // loaded says NeedDaemonReload: only those need a reload.
    if reload_needed(&state) {
        sc.verb("daemon-reload")?;
        out.actions.push("daemon-reload".into());
        state = sc.show()?;
    }
    if state.load == "not-found" {
        return Err(ServiceError::NoUnit);
    }
    if node_agent {
        enable(&sc, NODE_AGENT_UNIT, &mut out)?;
    }
    let enable_istio = needs_enable(UNIT, &state.file_state)?;
    let record = inputs::Record::path(root)?;
    let now = inputs::digest(root);
    let before = inputs::Record::load(&record);
    let changed = inputs::changed(before.as_ref(), &now);
    // The node agent provides the certificates the proxy starts with: it goes first.
    if node_agent {
        let verb = match sc.show_unit(NODE_AGENT_UNIT)?.is_up() {
            false => Some("start"),
            true if state.is_up() && !changed.is_empty() => Some("restart"),
            true => None,
        };
        if let Some(verb) = verb {
            sc.verb_on(verb, NODE_AGENT_UNIT)?;
            out.actions.push(format!("{verb} {NODE_AGENT_UNIT}"));
        }
    }
    if state.is_up() {
        if enable_istio {
            sc.enable(UNIT, false)?;
            out.actions.push("enable".into());
        }
        if !changed.is_empty() {
            sc.verb("restart")?;
            new_run();
            out.actions.push("restart".into());
            out.restart_reason = Some(changed.join(", "));
        }
    } else if enable_istio {
        // One call: systemctl enables and starts.
        new_run();
        sc.enable(UNIT, true)?;
        out.actions.push("enable --now".into());
    } else {
        new_run();
        sc.verb("start")?;
        out.actions.push("start".into());
    }
    if before.as_ref() != Some(&now) {
        now.store(&record)?;
    }
    out.running = true;
    Ok(out)
}

/// Refuses a masked istio.service before anything is written: found only at the service
/// step, the bundle's files would already be in place beside a unit that cannot start.
/// Only a positive answer refuses; a failing `systemctl is-enabled` is left to the
/// service step, which reports it in context.
pub fn preflight(root: &Root) -> Result<(), ServiceError> {
    // A mask is a file in a unit directory too: where there is none (a first apply),
    // there is nothing to ask systemd.
    let there = |dir: &str| {
        root.resolve_parent(&Path::new(dir).join(UNIT))
            .is_ok_and(|p| p.symlink_metadata().is_ok())
    };
    if !UNIT_DIRS.iter().chain([&RUNTIME_DIR]).any(|d| there(d)) {
        return Ok(());
    }
    let (sc, _) = Systemctl::for_root(root);
    match sc.enablement().as_deref() {
        Ok("masked" | "masked-runtime") => Err(ServiceError::Masked),
        _ => Ok(()),
    }
}

/// Whether a live unit with UnitFileState `file_state` needs `systemctl enable`
/// (masked: refused; enabled, static, alias, indirect, generated: nothing to do).
pub fn needs_enable(unit: &str, file_state: &str) -> Result<bool, ServiceError> {
    match file_state {
        "masked" | "masked-runtime" if unit == UNIT => Err(ServiceError::Masked),
        "masked" | "masked-runtime" => Err(ServiceError::Command {
            command: format!("systemctl enable {unit}"),
            status: "masked".into(),
            output: format!("{unit} is masked; run `systemctl unmask {unit}`"),
        }),
        "disabled" | "" => Ok(true),
        _ => Ok(false),
    }
}

/// Whether systemd must reload before the unit can be used as it is on disk.
pub fn reload_needed(state: &UnitState) -> bool {
    state.need_reload || state.load == "not-found"
}

/// Enables the unit unless it needs nothing (see [`needs_enable`]); used offline and for
/// the legacy node agent. Actions on istio.service are shown bare (`enable`), others
/// with the unit's name.
fn enable(sc: &Systemctl, unit: &str, out: &mut Outcome) -> Result<(), ServiceError> {
    if needs_enable(unit, &sc.enablement_of(unit)?)? {
        sc.enable(unit, false)?;
        out.actions.push(if unit == UNIT {
            "enable".into()
        } else {
            format!("enable {unit}")
        });
    }
    Ok(())
}

/// The unit's file inside the root (`/lib/systemd/system/istio.service`), the first of
/// [`UNIT_DIRS`] that has it. The one check of whether a unit is installed (offline mode
/// cannot ask systemd).
pub fn unit_file(root: &Root, unit: &str) -> Option<String> {
    UNIT_DIRS
        .iter()
        .map(|d| format!("{d}/{unit}"))
        .find(|p| root.resolve(Path::new(p)).is_ok_and(|h| h.exists()))
}

/// Whether the unit file exists in the root (see [`unit_file`]).
pub fn unit_file_exists(root: &Root, unit: &str) -> bool {
    unit_file(root, unit).is_some()
}

/// A systemd tool to run (systemctl, journalctl): no stdin, and none of vmagent's own
/// notify variables.
fn tool(program: &Path) -> Command {
    crate::cmd::command(program)
}

/// systemctl start waits for the unit's start job (istio-start.sh sets up iptables
/// first); anything past this is stuck.
const SYSTEMCTL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The journalctl to follow istio.service's journal with, when there is one to follow.
///
/// Debug builds honour `VMAGENT_TEST_JOURNALCTL=PROGRAM` (a stand-in that follows the
/// fake systemd's record of the unit's output); under a stand-in systemctl without one
/// there is no journal (the host's journalctl knows nothing of the fake unit).
fn journalctl() -> Option<PathBuf> {
    #[cfg(debug_assertions)]
    {
        if let Some(p) = std::env::var_os("VMAGENT_TEST_JOURNALCTL") {
            return Some(PathBuf::from(p));
        }
        if std::env::var_os("VMAGENT_TEST_SYSTEMCTL").is_some() {
            return None;
        }
    }
    Some(PathBuf::from("journalctl"))
}

/// Starts `journalctl -u istio.service -u istio-auth-node-agent.service -o cat --follow
/// --since=@SINCE` (message text only, from Unix second `since_unix` on; the legacy node
/// agent's unit does not exist on current meshes and then adds nothing) with its stdout
/// piped, stderr discarded.
/// `Ok(None)`: no journal to follow here; `Err`: journalctl cannot run (not a systemd
/// system). Callers degrade to istio.log either way.
pub fn follow_journal(since_unix: i64) -> std::io::Result<Option<std::process::Child>> {
    let Some(program) = journalctl() else {
        return Ok(None);
    };
    let mut c = tool(&program);
    c.args([
        "-u",
        UNIT,
        "-u",
        NODE_AGENT_UNIT,
        "-o",
        "cat",
        "--follow",
        "--no-pager",
        "--quiet",
        &format!("--since=@{since_unix}"),
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    c.spawn().map(Some)
}
