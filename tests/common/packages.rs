//! Fixture istio-sidecar packages, built by the tests with the real tools (dpkg-deb,
//! rpmbuild), and target roots that real dpkg / rpm can install into with `--root`.
//!
//! The fixtures mirror the real package as istio/istio tools/packaging builds it
//! (packaging.mk's fpm command); tests/FIXTURES.md lists every real file and behaviour
//! and where it is mirrored here. In short: the same file list
//! (/usr/local/bin/{envoy,pilot-agent,istio-start.sh}, /lib/systemd/system/istio.service,
//! /var/lib/istio/envoy/{sidecar.env,envoy_bootstrap_tmpl.json}, the last two conffiles),
//! the same Depends, only a postinst (fpm's --after-install), the real unit's
//! directives, and a start script that behaves like istio-start.sh. pilot-agent is a
//! stand-in that plays a health scenario chosen per root ([`set_scenario`]) or per
//! bundle (a `# fixture-scenario: NAME` line in cluster.env), writing Istio's real log
//! lines, for the health tests (tests/health.rs) and the VM test (tests/vm.rs).
//! dpkg and rpm run maintainer scripts chrooted into the root, so roots get a static
//! busybox as /bin/sh.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::TestRoot;

/// istio.service with the real unit's directives (tools/packaging/common/istio.service),
/// in the same sections: `StartLimitIntervalSec=0` belongs to `[Unit]`.
pub const ISTIO_SERVICE: &str = "[Unit]
Description=istio-sidecar: The Istio sidecar
Documentation=http://istio.io/
StartLimitIntervalSec=0

[Service]
ExecStart=/usr/local/bin/istio-start.sh
ExecStartPre=+/usr/bin/install -d -o istio-proxy -m 0755 /var/run/secrets
ExecStopPost=/usr/local/bin/istio-start.sh clean
Restart=always
RestartSec=10
KillMode=mixed
TimeoutStopSec=30s

[Install]
WantedBy=multi-user.target
";

/// The postinst (fpm's --after-install, tools/packaging/postinst.sh), in our words.
/// What it does is the real script's: the istio-proxy system account and group unless
/// the account exists (groupadd + useradd where useradd exists, which gives it the
/// distribution's default shell: the start script's `sudo -s` needs a real one), the
/// `/etc/istio -> /var/lib/istio` link when /etc/istio does not exist, the directories,
/// `touch` of the mesh file, the chowns and the setgid bits. Busybox test roots have no
/// useradd nor getent: there the account is appended to passwd/group with the test
/// roots' fixed id 998 (common::PROXY_ID).
const POSTINST: &str = r#"#!/bin/sh
# vmagent test fixture: post-install of the istio-sidecar package.
set -e
umask 022

have() { command -v "$1" >/dev/null 2>&1; }
if have getent; then
    known=$(getent passwd istio-proxy || true)
else
    known=$(grep '^istio-proxy:' /etc/passwd || true)
fi
if [ -z "$known" ]; then
    if have useradd; then
        groupadd --system istio-proxy
        useradd --system --gid istio-proxy --home-dir /var/lib/istio istio-proxy
    else
        echo 'istio-proxy:x:998:' >> /etc/group
        echo 'istio-proxy:x:998:998::/var/lib/istio:/bin/sh' >> /etc/passwd
    fi
fi

# Old configurations name /etc/istio: it is the account's home.
if [ ! -e /etc/istio ]; then
    ln -s /var/lib/istio /etc/istio
fi

for d in /var/lib/istio/envoy /var/lib/istio/proxy /var/lib/istio/config /var/log/istio; do
    mkdir -p "$d"
done
touch /var/lib/istio/config/mesh
mkdir -p /etc/certs
chown istio-proxy:istio-proxy /etc/certs
chown istio-proxy:istio-proxy /var/lib/istio/envoy /var/lib/istio/config \
    /var/log/istio /var/lib/istio/config/mesh /var/lib/istio/proxy
chmod o+rx /usr/local/bin/envoy /usr/local/bin/pilot-agent
# setgid: the proxy's traffic is told apart by its group in the iptables rules.
chmod 2755 /usr/local/bin/envoy /usr/local/bin/pilot-agent
"#;

/// sidecar.env: the real file's settings, all commented out as there (its keys and
/// example values; the comments are ours). A conffile: settings go in cluster.env.
const SIDECAR_ENV: &str = r#"# istio-sidecar defaults (vmagent test fixture). istio-start.sh reads this file, then
# cluster.env, exporting every variable. Package-owned: put settings in cluster.env.

# Service address ranges whose outbound traffic the sidecar captures.
# ISTIO_SERVICE_CIDR=

# The service this machine offers.
# ISTIO_SERVICE=myservice

# Inbound capture: REDIRECT (NAT, source address lost) or TPROXY (keeps addresses;
# Envoy then runs as root for CAP_NET_ADMIN).
# ISTIO_INBOUND_INTERCEPTION_MODE=REDIRECT

# TPROXY only: packet mark, and the routing table to loopback.
# ISTIO_INBOUND_TPROXY_MARK=1337
# ISTIO_INBOUND_TPROXY_ROUTE_TABLE=133

# Inbound ports to capture (none when unset), and those left alone with '*'.
# ISTIO_INBOUND_PORTS=
# ISTIO_INBOUND_EXCLUDE_PORTS=

# Namespace of the workload.
# ISTIO_NAMESPACE=default

# The address the workload advertises (default: the first of `hostname -I`).
# ISTIO_SVC_IP=

# Older control planes: discovery port and authentication.
# ISTIO_PILOT_PORT=15005
# ISTIO_CP_AUTH=MUTUAL_TLS

# Envoy's outbound port, and the user it runs as.
# ENVOY_PORT=15001
# ENVOY_USER=istio-proxy

# Extra pilot-agent flags.
# ISTIO_AGENT_FLAGS="--proxyLogLevel debug"

# Where the proxy's output goes, the binaries, the configuration.
# ISTIO_LOG_DIR=/var/log/istio
# ISTIO_BIN_BASE=/usr/local/bin
# ISTIO_CFG=/var/lib/istio

# true: leave iptables alone (managed elsewhere).
# ISTIO_CUSTOM_IP_TABLES=false

# Provisioning certificates, and where the CA's certificates are written.
# PROV_CERT=/var/run/secrets/istio
# OUTPUT_CERTS=/var/run/secrets/istio
# OUTPUT_CERTS=/etc/certs

# The CA's address, when it is not istiod on 15012.
# CA_ADDR
# CA_ADDR=istiod.istio-system.svc:32018
"#;

/// envoy_bootstrap_tmpl.json: a small valid JSON placeholder (the real one is the Go
/// template of Envoy's bootstrap; nothing in the fixture renders it).
const ENVOY_BOOTSTRAP: &str = "{\n  \"_comment\": \"vmagent test fixture: placeholder for the Envoy bootstrap template\",\n  \"node\": {},\n  \"static_resources\": {}\n}\n";

/// Where a test root names the scenario the stand-in pilot-agent plays.
pub const SCENARIO_FILE: &str = "/etc/istio-fixture/scenario";

/// The file that stands for "Envoy answers 200 on /healthz/ready": the stand-in creates
/// it when ready and removes it when it drains or starts, and `istio-start.sh clean`
/// (the unit's ExecStopPost) removes it, so readiness goes away with the process. On a
/// real system (the VM) the stand-in also serves :15021 from it.
pub const READY_FILE: &str = "/run/istio-fixture/ready";

/// The scenarios the stand-in pilot-agent knows.
pub const SCENARIOS: &[&str] = &[
    "ready",
    "token-expired",
    "ca-mismatch",
    "istiod-unreachable",
    "crash",
    "silent",
    "iptables-fail",
];

/// Makes the stand-in pilot-agent in `root` play `scenario` from its next start.
pub fn set_scenario(root: &Path, scenario: &str) {
    assert!(SCENARIOS.contains(&scenario), "unknown scenario {scenario}");
    let p = root.join(SCENARIO_FILE.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, format!("{scenario}\n")).unwrap();
}

/// The stand-in istio-start.sh, doing what the real one does in the order it does it
/// (tools/packaging/common/istio-start.sh; our text):
/// - reads sidecar.env, then cluster.env, with every variable exported (`set -a`);
/// - `clean` (the unit's ExecStopPost): `pilot-agent istio-iptables --cleanup-only`
///   unless ISTIO_CUSTOM_IP_TABLES=true, and (fixture only) removes the ready file;
/// - else, unless ISTIO_CUSTOM_IP_TABLES=true, `pilot-agent istio-iptables
///   --cleanup-only` then `pilot-agent istio-iptables`, with `set -e` and BEFORE any
///   redirection: their output goes to the unit's stdout (the journal), and a failure
///   ends the start;
/// - then `pilot-agent proxy` with its stdout APPENDED to istio.log and its stderr
///   (Envoy's) to istio.err.log, as istio-proxy through
///   `sudo -E -u istio-proxy -s /bin/bash -c "... exec pilot-agent proxy ... 2>> ... >> ..."`
///   (the redirections happen as istio-proxy), root when
///   ISTIO_INBOUND_INTERCEPTION_MODE=TPROXY.
///
/// The host tests' fake systemd runs it with `sh` (dash or busybox), so it is POSIX sh
/// under a bash shebang; it sets `$FIXTURE_ROOT` to the target root and every path is
/// under it. Users are only switched on a real system: no `$FIXTURE_ROOT`, sudo present
/// and the account known (the VM); elsewhere the agent runs as the caller.
const ISTIO_START: &str = r#"#!/bin/bash
# vmagent test fixture: stand-in for the istio-sidecar package's istio-start.sh.
# POSIX sh (the host tests run it with sh). $FIXTURE_ROOT: the target root in host tests.
set -e
R="${FIXTURE_ROOT:-}"

# Package defaults, then the mesh's settings; everything they set is exported.
set -a
if [ -r "$R/var/lib/istio/envoy/sidecar.env" ]; then
    . "$R/var/lib/istio/envoy/sidecar.env"
fi
if [ -r "$R/var/lib/istio/envoy/cluster.env" ]; then
    . "$R/var/lib/istio/envoy/cluster.env"
fi
set +a

bin_base=${ISTIO_BIN_BASE:-/usr/local/bin}
BIN="$R${bin_base#.}"
log_dir=${ISTIO_LOG_DIR:-/var/log/istio}
LOGS="$R${log_dir#.}"
NS=${ISTIO_NAMESPACE:-default}
if [ -z "${ISTIO_SVC_IP:-}" ]; then
    ISTIO_SVC_IP=$(hostname --all-ip-addresses 2>/dev/null | cut -d ' ' -f 1) || true
fi
if [ -z "${POD_NAME:-}" ]; then
    POD_NAME=$(hostname -s 2>/dev/null) || true
fi

if [ "${1:-}" = clean ]; then
    # Fixture only: the readiness marker goes with the process.
    rm -f "$R/run/istio-fixture/ready"
    if [ "${ISTIO_CUSTOM_IP_TABLES:-}" != true ]; then
        "$BIN/pilot-agent" istio-iptables --cleanup-only
    fi
    exit 0
fi

# Traffic capture, redone on every start. Not redirected: this goes to the journal.
if [ "${ISTIO_CUSTOM_IP_TABLES:-}" != true ]; then
    "$BIN/pilot-agent" istio-iptables --cleanup-only
    "$BIN/pilot-agent" istio-iptables
fi

EXEC_USER=${EXEC_USER:-istio-proxy}
if [ "${ISTIO_INBOUND_INTERCEPTION_MODE:-}" = TPROXY ]; then
    EXEC_USER=root
fi
CA_ADDR=${CA_ADDR:-istiod.${ISTIO_SYSTEM_NAMESPACE:-istio-system}.svc:15012}
PROV_CERT=${PROV_CERT-./etc/certs}
OUTPUT_CERTS=${OUTPUT_CERTS-./etc/certs}
export CA_ADDR PROV_CERT OUTPUT_CERTS
FLAGS=${ISTIO_AGENT_FLAGS:-}

# Fixture only: the directory of the readiness marker, writable by the agent.
mkdir -p "$R/run/istio-fixture"

if [ -z "$R" ] && [ "$EXEC_USER" != "${USER:-}" ] && command -v sudo >/dev/null 2>&1 &&
    id "$EXEC_USER" >/dev/null 2>&1; then
    chown "$EXEC_USER" /run/istio-fixture
    # As the real script: the values are pasted into the command string unquoted.
    exec sudo -E -u "$EXEC_USER" -s /bin/bash -c "INSTANCE_IP=$ISTIO_SVC_IP POD_NAME=$POD_NAME POD_NAMESPACE=$NS exec $BIN/pilot-agent proxy $FLAGS 2>> $LOGS/istio.err.log >> $LOGS/istio.log"
fi
# (Unquoted $FLAGS: split into words like the real script's array.)
# shellcheck disable=SC2086
INSTANCE_IP=$ISTIO_SVC_IP POD_NAME=$POD_NAME POD_NAMESPACE=$NS \
    exec "$BIN/pilot-agent" proxy $FLAGS 2>> "$LOGS/istio.err.log" >> "$LOGS/istio.log"
"#;

/// The stand-in pilot-agent.
///
/// `pilot-agent istio-iptables [--cleanup-only]` prints what the real command logs
/// (Istio's format, on stdout) and exits 0 without touching the machine's iptables,
/// except in the `iptables-fail` scenario, where it prints the real failure of a host
/// whose iptables has no kernel support (tools/istio-iptables/pkg/dependencies: the
/// `can't initialize iptables table` error of iptables-legacy, wrapped by istio-iptables)
/// and exits 1, so istio-start.sh (set -e) fails before the proxy starts, every start.
///
/// `pilot-agent proxy` plays the scenario named in `$FIXTURE_ROOT/etc/istio-fixture/scenario`
/// (default `ready`; a line `# fixture-scenario: NAME` in the installed cluster.env
/// wins), writing Istio's real line format (`<ts>\t<level>\t[<scope>\t]<message>`) on
/// stdout (the agent) and stderr (Envoy):
/// - `ready`: the healthy start sequence, then (a second later, as Envoy applies its
///   first configuration) creates the ready file and stays up;
/// - `token-expired`: start lines, then `sds failed to warm certificate ... request
///   authenticate failure` every 0.1 s, staying up; like the real agent (which reads the
///   token file on every attempt) it stops complaining once the token file changes;
/// - `ca-mismatch`: start lines, then `... x509: certificate signed by unknown
///   authority` every 0.5 s, staying up (the root it started with stays in memory);
/// - `istiod-unreachable`: start lines, then `... dial tcp 10.0.0.5:15012: i/o timeout`
///   every 0.5 s, never ready;
/// - `crash`: start lines, `Envoy exited with error: exit status 1`, exit 1 (systemd
///   restarts it: Restart=always);
/// - `silent`: start lines only, never ready, no errors;
/// - `iptables-fail`: never gets here (see above); if run anyway, behaves as `ready`.
///
/// Like the real agent it never exits on CA or xDS errors: it retries until stopped.
/// On a real system (no `$FIXTURE_ROOT`, python3 present) it also stands in for Envoy's
/// readiness listener: from "Envoy"'s start until the agent exits, 0.0.0.0:15021 answers
/// `GET /healthz/ready` with 200 while the ready file exists, else 503, and logs the
/// agent's probe lines (`Envoy proxy is NOT ready: ...`, `Envoy proxy is ready`) to
/// istio.log as the real agent does when probed. The host tests use a ReadyServer in
/// the test process instead (tests/common/fake_systemd.rs).
///
/// SIGTERM (systemd's stop, KillMode=mixed) starts a drain like the real agent's
/// (terminationDrainDuration, here 0.5 s instead of 5 s): not ready any more, the
/// scenario's retries go on, then the real termination lines and exit 0. It stays up
/// while `$FIXTURE_ROOT` exists (forever when unset).
const PILOT_AGENT: &str = r##"#!/bin/sh
# stand-in pilot-agent {version} (vmagent test fixture)
R="${FIXTURE_ROOT:-}"
TAB=$(printf '\t')

# line LEVEL [SCOPE] MESSAGE [k=v]: one Istio log line.
line() {
    l=$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)
    for f in "$@"; do l="$l$TAB$f"; done
    printf '%s\n' "$l"
}

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

case "${1:-}" in
proxy) ;;
istio-iptables)
    if [ "$scenario" = iptables-fail ]; then
        # The error istio-iptables logs when no iptables binary works (the last one
        # tried is plain `iptables`), then exit 1. The wrapped stderr ends in a newline.
        line error "iptables binary iptables has no loaded kernel support and cannot be used, err: exit status 3 out: iptables v1.8.9 (legacy): can't initialize iptables table \`filter': Table does not exist (do you need to insmod?)"
        printf 'Perhaps iptables or your kernel needs to be upgraded.\n\n'
        exit 1
    fi
    if [ "${2:-}" = --cleanup-only ]; then
        line info "Performing cleanup of existing iptables"
    else
        line info "Istio iptables environment:"
        line info "Applying iptables chains and rules"
    fi
    exit 0
    ;;
*)
    echo "pilot-agent $*"
    exit 0
    ;;
esac

term=
trap 'term=1' TERM
READY="$R/run/istio-fixture/ready"
rm -f "$READY"
alive() { [ -z "$R" ] || [ -d "$R" ]; }

# Envoy's :15021 readiness listener, on a real system only (see above).
listener=
stop_listener() {
    if [ -n "$listener" ]; then kill "$listener" 2>/dev/null || true; fi
}
trap stop_listener EXIT
start_listener() {
    if [ -n "$R" ] || ! command -v python3 >/dev/null 2>&1; then return 0; fi
    python3 -c '
import http.server, os, sys, threading, time

ready, agent = sys.argv[1], os.getppid()
was_ready = False

def log(level, msg):
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    sys.stdout.write("%s.000000Z\t%s\t%s\n" % (t, level, msg))
    sys.stdout.flush()

class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global was_ready
        if self.path.split("?", 1)[0] != "/healthz/ready":
            code = 404
        elif os.path.exists(ready):
            code = 200
            if not was_ready:
                log("info", "Envoy proxy is ready")
            was_ready = True
        else:
            code = 503
            was_ready = False
            log("warn", "Envoy proxy is NOT ready: config not received from XDS server"
                " (is Istiod running?): cds updates: 0 successful, 0 rejected;"
                " lds updates: 0 successful, 0 rejected")
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

def orphaned():
    while os.getppid() == agent:
        time.sleep(0.5)
    os._exit(0)

threading.Thread(target=orphaned, daemon=True).start()
http.server.ThreadingHTTPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(("0.0.0.0", 15021), Ready).serve_forever()
' "$READY" </dev/null &
    listener=$!
}

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
    line info "Proxy role" "ips=[${INSTANCE_IP:-10.0.0.10}] type=sidecar id=vm-app.vm-ns domain=vm-ns.svc.cluster.local"
    line info "CA Endpoint ${CA_ADDR:-istiod.istio-system.svc:15012}, provider Citadel"
    line info "Opening status port 15020"
    line info "Starting proxy agent"
    line info "Envoy command: [-c etc/istio/proxy/envoy-rev.json --drain-time-s 45 --drain-strategy immediate --local-address-ip-version v4 --file-flush-interval-msec 1000 --disable-hot-restart --allow-unknown-static-fields -l warning --component-log-level misc:error]"
    start_listener
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
ready | iptables-fail)
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
    /// The unit's `RestartSec=` when not the real unit's 10: for tests that need
    /// automatic restarts to come quickly (the fake systemd honours RestartSec).
    pub restart_sec: Option<String>,
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
            restart_sec: None,
        }
    }

    /// The same with `RestartSec=secs` in its unit.
    pub fn with_restart_sec(mut self, secs: &str) -> Fixture {
        self.restart_sec = Some(secs.into());
        self
    }

    /// The package's files (packaging.mk's SIDECAR_FILES), staged under `tree`.
    fn stage(&self, tree: &Path) {
        let bin = tree.join("usr/local/bin");
        fs::create_dir_all(&bin).unwrap();
        let agent = PILOT_AGENT.replace("{version}", &self.version);
        let mut envoy = b"#!/bin/sh\n# stand-in envoy (vmagent test fixture): never run, pilot-agent plays it\nexit 0\n".to_vec();
        if self.padding > 0 {
            // Padding after the script (never read): xorshift noise, incompressible and
            // deterministic, so the file list stays the real one.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            envoy.extend((0..self.padding).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }));
        }
        for (name, body) in [
            ("pilot-agent", agent.as_bytes()),
            ("envoy", envoy.as_slice()),
            ("istio-start.sh", ISTIO_START.as_bytes()),
        ] {
            fs::write(bin.join(name), body).unwrap();
            fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let unit = tree.join("lib/systemd/system");
        fs::create_dir_all(&unit).unwrap();
        let service = match &self.restart_sec {
            Some(s) => ISTIO_SERVICE.replace("RestartSec=10\n", &format!("RestartSec={s}\n")),
            None => ISTIO_SERVICE.to_string(),
        };
        fs::write(unit.join("istio.service"), service).unwrap();
        let envoy_dir = tree.join("var/lib/istio/envoy");
        fs::create_dir_all(&envoy_dir).unwrap();
        fs::write(envoy_dir.join("sidecar.env"), SIDECAR_ENV).unwrap();
        fs::write(envoy_dir.join("envoy_bootstrap_tmpl.json"), ENVOY_BOOTSTRAP).unwrap();
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
        // The fields fpm writes from packaging.mk's flags, in its order.
        let depends = if self.depends.is_empty() {
            String::new()
        } else {
            format!("Depends: {}\n", self.depends.join(", "))
        };
        let control = format!(
            "Package: istio-sidecar\nVersion: {}\nLicense: Apache\nVendor: istio.io\nArchitecture: {}\nMaintainer: istio@istio.io\n{depends}Section: default\nPriority: optional\nHomepage: http://istio.io\nDescription: Istio Sidecar (vmagent test fixture)\n",
            self.version, self.arch
        );
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
            "Name: istio-sidecar\nVersion: {v}\nRelease: 1\nSummary: Istio Sidecar (vmagent test fixture)\nLicense: Apache\nVendor: istio.io\nURL: http://istio.io\nPackager: istio@istio.io\nBuildArch: {rpm_arch}\nAutoReqProv: no\n{requires}\
             %description\nfixture istio-sidecar\n%install\ncp -a {staged}/. %{{buildroot}}/\n%post\n{post}\n%files\n/usr/local/bin/envoy\n/usr/local/bin/pilot-agent\n/usr/local/bin/istio-start.sh\n/lib/systemd/system/istio.service\n\
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
