//! A stand-in systemd for the health tests, plugged in through vmagent's debug-build seam
//! `VMAGENT_TEST_SYSTEMCTL=PROGRAM` (src/service/mod.rs): a POSIX sh `systemctl` that
//! answers `show`, `is-enabled`, `enable`, `daemon-reload`, `start`, `restart` and `stop`
//! for istio.service, and runs the unit like systemd with `Restart=always` would: a
//! detached supervisor that runs `sh ROOT/usr/local/bin/istio-start.sh` in a loop; and
//! stops it like `KillMode=mixed` (SIGTERM to the main process, a wait while it drains,
//! SIGKILL to the rest, then ExecStopPost `istio-start.sh clean`).
//!
//! Environment (set by [`FakeSystemd::configure`]; children inherit it):
//! - `FAKE_SYSTEMD_STATE`: its state directory: `calls` (one line per invocation, the
//!   arguments), `supervisor` and `main` (pids), `restarts` (automatic restarts since the
//!   last start/restart: systemd's NRestarts), `loaded-unit` (checksum of the unit file
//!   at the last daemon-reload: NeedDaemonReload), `supervisor.log`.
//! - `FAKE_SYSTEMD_ROOT`: the target root (the unit file, istio-start.sh, the enablement
//!   symlink live there); passed to istio-start.sh as `FIXTURE_ROOT`.
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
//! Also here: [`ReadyServer`], the readiness endpoint on 127.0.0.1 the tests point
//! `[health] ready_url` at (200 while the stand-in's ready file exists, else 503), or a
//! fixed-status server.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The fake `systemctl`.
const SYSTEMCTL: &str = r#"#!/bin/sh
# fake systemctl for vmagent's tests (tests/common/fake_systemd.rs)
S="${FAKE_SYSTEMD_STATE:?FAKE_SYSTEMD_STATE is not set}"
R="${FAKE_SYSTEMD_ROOT:?FAKE_SYSTEMD_ROOT is not set}"
HERE=$(cd "$(dirname "$0")" && pwd)
UNIT=istio.service
PROPS=LoadState,ActiveState,SubState,NRestarts,NeedDaemonReload
printf '%s\n' "$*" >> "$S/calls"

unexpected() {
    echo "fake systemctl: unexpected arguments: $*" >&2
    exit 64
}

# The unit file, in systemd's search order.
unit_file() {
    for d in etc/systemd/system usr/lib/systemd/system lib/systemd/system; do
        if [ -f "$R/$d/$UNIT" ]; then
            echo "$R/$d/$UNIT"
            return 0
        fi
    done
    return 1
}

# A running process (a zombie is not: nothing reaps them in some containers).
live() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    read -r st < "/proc/$1/stat" 2>/dev/null || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ]
}

pid_of() { cat "$S/$1" 2>/dev/null; }

wanted="$R/etc/systemd/system/multi-user.target.wants/$UNIT"

# Stop, KillMode=mixed: the supervisor goes first (no restart), SIGTERM to the main
# process and a wait for it to exit (TimeoutStopSec, 5 s here), then SIGKILL to the rest
# of the group, then ExecStopPost. Like `systemctl stop`, returns when it is all done.
stop() {
    p=$(pid_of supervisor)
    m=$(pid_of main)
    # (A zombie keeps its pid: /proc/PID exists while the pid is still ours.)
    if [ -n "$p" ] && [ -r "/proc/$p/stat" ]; then
        kill -s KILL "$p" 2>/dev/null
        if live "$m"; then
            kill -s TERM "$m" 2>/dev/null
            i=0
            while live "$m" && [ $i -lt 500 ]; do sleep 0.01; i=$((i + 1)); done
        fi
        kill -s KILL -- "-$p" 2>/dev/null
        FIXTURE_ROOT="$R" sh "$R/usr/local/bin/istio-start.sh" clean </dev/null >/dev/null 2>&1
    fi
    rm -f "$S/supervisor" "$S/main"
}

start() {
    echo 0 > "$S/restarts.tmp" && mv -f "$S/restarts.tmp" "$S/restarts"
    setsid -f sh "$HERE/supervisor.sh" </dev/null >>"$S/supervisor.log" 2>&1
    i=0
    while [ ! -s "$S/main" ] && [ $i -lt 250 ]; do sleep 0.02; i=$((i + 1)); done
    if [ ! -s "$S/main" ]; then
        echo "Job for $UNIT failed (fake: the supervisor did not start)." >&2
        exit 1
    fi
}

need_unit() {
    if ! unit_file >/dev/null; then
        echo "Failed to $1 unit: Unit $UNIT not found." >&2
        exit 5
    fi
}

case "$*" in
"show $UNIT --property=$PROPS")
    load=not-found
    need=no
    if uf=$(unit_file); then
        load=loaded
        if [ -f "$S/loaded-unit" ] && [ "$(cksum < "$uf")" != "$(cat "$S/loaded-unit")" ]; then
            need=yes
        fi
    fi
    if live "$(pid_of supervisor)"; then
        if live "$(pid_of main)"; then active=active; sub=running
        else active=activating; sub=auto-restart
        fi
    else
        active=inactive; sub=dead
    fi
    printf 'LoadState=%s\nActiveState=%s\nSubState=%s\nNRestarts=%s\nNeedDaemonReload=%s\n' \
        "$load" "$active" "$sub" "$(cat "$S/restarts" 2>/dev/null || echo 0)" "$need"
    ;;
"is-enabled $UNIT")
    if ! unit_file >/dev/null; then
        echo "Failed to get unit file state for $UNIT: No such file or directory" >&2
        exit 1
    fi
    if [ -L "$wanted" ]; then echo enabled; exit 0; fi
    echo disabled
    exit 1
    ;;
"enable $UNIT")
    uf=$(unit_file) || { echo "Failed to enable unit: Unit file $UNIT does not exist." >&2; exit 1; }
    mkdir -p "$(dirname "$wanted")"
    ln -sfn "/${uf#"$R"/}" "$wanted"
    echo "Created symlink $wanted → /${uf#"$R"/}." >&2
    ;;
"daemon-reload")
    if uf=$(unit_file); then
        cksum < "$uf" > "$S/loaded-unit.tmp" && mv -f "$S/loaded-unit.tmp" "$S/loaded-unit"
    else
        rm -f "$S/loaded-unit"
    fi
    ;;
"start $UNIT")
    need_unit start
    # Starting an active unit does nothing.
    if ! live "$(pid_of supervisor)"; then
        stop
        start
    fi
    ;;
"restart $UNIT")
    need_unit restart
    stop
    start
    ;;
"stop $UNIT")
    stop
    ;;
"disable $UNIT")
    rm -f "$wanted"
    ;;
*)
    unexpected "$@"
    ;;
esac
exit 0
"#;

/// The fake `journalctl`: follows the supervisor's record of the unit's output.
const JOURNALCTL: &str = r#"#!/bin/sh
# fake journalctl for vmagent's tests (tests/common/fake_systemd.rs)
S="${FAKE_SYSTEMD_STATE:?FAKE_SYSTEMD_STATE is not set}"
printf '%s\n' "$*" >> "$S/journalctl-calls"
since=0
follow=
for a in "$@"; do
    case "$a" in
    --since=@*) since=${a#--since=@} ;;
    --follow|-f) follow=1 ;;
    esac
done
J="$S/journal"
P=$PPID
live() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    read -r st < "/proc/$1/stat" 2>/dev/null || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ]
}
n=0
# Until the caller (vmagent) or the state directory is gone.
while [ -d "$S" ] && live "$P"; do
    if [ -f "$J" ]; then
        total=$(wc -l < "$J")
        if [ "$total" -gt "$n" ]; then
            # Whole lines only (wc counts newlines); runs before --since are skipped.
            awk -v s="$since" -v from="$n" -v to="$total" '
                NR > to { exit }
                /^#fake-journal-run / { on = ($2 >= s); next }
                NR > from && on { print; fflush() }' "$J" || exit 0
            n=$total
        fi
    fi
    [ -n "$follow" ] || exit 0
    sleep 0.05
done
"#;

/// The supervisor: `Restart=always` for istio.service, in its own session and process
/// group (its pid is the group id), with a watchdog that kills the group when the test
/// is gone.
const SUPERVISOR: &str = r#"#!/bin/sh
# fake systemd's supervisor for istio.service (tests/common/fake_systemd.rs)
S="$FAKE_SYSTEMD_STATE"
R="$FAKE_SYSTEMD_ROOT"
O="${FAKE_SYSTEMD_OWNER:-}"
live() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    read -r st < "/proc/$1/stat" 2>/dev/null || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ]
}
wanted() { [ -d "$R" ] && [ -d "$S" ] && { [ -z "$O" ] || live "$O"; }; }
# Watchdog: the whole group goes when the root, the state or the test goes.
( while wanted; do sleep 0.3; done; kill -s KILL 0 ) </dev/null >/dev/null 2>&1 &
echo $$ > "$S/supervisor.tmp" && mv -f "$S/supervisor.tmp" "$S/supervisor"
while wanted; do
    # The journal: istio-start.sh's own output, as systemd would record it.
    printf '#fake-journal-run %s\n' "$(date +%s)" >> "$S/journal"
    FIXTURE_ROOT="$R" sh "$R/usr/local/bin/istio-start.sh" </dev/null >>"$S/journal" 2>&1 &
    child=$!
    echo "$child" > "$S/main.tmp" && mv -f "$S/main.tmp" "$S/main"
    wait "$child"
    rm -f "$S/main"
    # ExecStopPost
    FIXTURE_ROOT="$R" sh "$R/usr/local/bin/istio-start.sh" clean </dev/null >/dev/null 2>&1
    wanted || break
    n=$(cat "$S/restarts" 2>/dev/null || echo 0)
    echo $((n + 1)) > "$S/restarts.tmp" && mv -f "$S/restarts.tmp" "$S/restarts"
    sleep 0.3
done
kill -s KILL 0
"#;

/// A fake systemd for one target root. Dropping it kills everything it started.
pub struct FakeSystemd {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl FakeSystemd {
    /// Writes the fake `systemctl` and its supervisor for `root`.
    pub fn new(root: &Path) -> FakeSystemd {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, body) in [
            ("systemctl", SYSTEMCTL),
            ("supervisor.sh", SUPERVISOR),
            ("journalctl", JOURNALCTL),
        ] {
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

type Answer = Box<dyn Fn(&str) -> u16 + Send + Sync>;

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers every request with a status chosen
/// per request line, `Connection: close`. Counts requests. Stops when dropped.
pub struct ReadyServer {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReadyServer {
    /// The readiness endpoint of the stand-in proxy in `root`: `GET /healthz/ready`
    /// answers 200 while ROOT/run/istio-fixture/ready exists, else 503; other paths 404.
    pub fn for_root(root: &Path) -> ReadyServer {
        let ready = root.join(super::packages::READY_FILE.trim_start_matches('/'));
        ReadyServer::start(Box::new(move |target| {
            if target != "/healthz/ready" {
                404
            } else if ready.exists() {
                200
            } else {
                503
            }
        }))
    }

    /// Answers `code` to everything.
    pub fn fixed(code: u16) -> ReadyServer {
        ReadyServer::start(Box::new(move |_| code))
    }

    fn start(answer: Answer) -> ReadyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (hits, stop) = (hits.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            hits.fetch_add(1, Ordering::Relaxed);
                            serve(s, &answer);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        ReadyServer {
            port,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/healthz/ready`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/healthz/ready", self.port)
    }

    /// Connections accepted so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for ReadyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head and answers it.
fn serve(mut s: TcpStream, answer: &Answer) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(2);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    // `GET /path HTTP/1.1`, or through a proxy `GET http://host:port/path HTTP/1.1`.
    let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let code = answer(&target);
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let body = format!("{code} {reason}\n");
    let _ = write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}
