#!/bin/bash
# First boot, from cloud-init's runcmd right after the one-shot `vmagent apply`
# (scenario 1, run by user-data itself through step.sh): what it left, then scenario 2
# (identical re-apply), scenario 3 (upgrade to the v2 package) and the set-up of
# scenario 6 (vmagent's own .deb and its configuration).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /mnt/vmtest/guest/lib.sh

# --- scenario 1: the state after cloud-init's apply ---------------------------------
scenario s1
mark "uptime=$(uptime_s)"
service_facts ""
if [ -e /run/istio-fixture/ready ]; then
    # When the stand-in became ready, in seconds since boot.
    mark "ready_file_uptime=$(awk -v w="$(date -d "$(stat -c %y /run/istio-fixture/ready)" +%s.%N)" \
        -v n="$(date +%s.%N)" -v u="$(uptime_s)" 'BEGIN { printf "%.3f", w - (n - u) }')"
fi
mark "istio_inactive_exit_us=$(unit_prop istio.service InactiveExitTimestampMonotonic)"
mark "istio_main_start_us=$(unit_prop istio.service ExecMainStartTimestampMonotonic)"
mark "log_xds=$(grep -c 'connected to upstream XDS server' /var/log/istio/istio.log 2>/dev/null)"
mark "log_cert=$(grep -c 'generated new workload certificate' /var/log/istio/istio.log 2>/dev/null)"
mark "pkg=$(pkg_state istio-sidecar)"
mark "proxy_user=$(getent passwd istio-proxy | cut -d: -f1)"
proxy_ids
# The fixture mirrors the real package (tests/FIXTURES.md): the agent runs as
# istio-proxy (sudo), istio.log is opened by it, the readiness listener is its own,
# the unit's ExecStartPre made /var/run/secrets, and istio-iptables printed to the
# journal (before istio-start.sh redirects the proxy's output).
agent=$(pgrep -x -o pilot-agent)
mark "agent_user=$(ps -o user:32= -p "${agent:-0}" 2>/dev/null | tr -d ' ')"
mark "agent_ppid_comm=$(ps -o comm= -p "$(ps -o ppid= -p "${agent:-0}" 2>/dev/null | tr -d ' ')" 2>/dev/null)"
mark "listener=$(ss -Hltnp 'sport = :15021' 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2 |
    xargs -r ps -o ppid=,user:32= -p | awk -v a="${agent:-0}" '{ print $2, ($1 == a ? "agent-child" : "other") }')"
mark "istio_log_owner=$(stat -c %U /var/log/istio/istio.log 2>/dev/null)"
mark "secrets_dir=$(stat -c '%U %a' /var/run/secrets 2>/dev/null)"
mark "start_limit=$(unit_prop istio.service StartLimitIntervalUSec)"
# Every daemon reload this boot, as systemd itself logs it (PID 1: "Reloading."), in
# seconds since boot: the host checks that none falls within the first apply.
while read -r t; do mark "pid1_reload=$t"; done < <(journalctl -b _PID=1 --no-pager -o short-monotonic |
    sed -n 's/^\[ *\([0-9.]*\)\] .*systemd\[1\]: Reloading.*/\1/p')
mark "journal_iptables=$(journalctl -b -u istio.service --no-pager -o cat | grep -c 'Applying iptables chains and rules')"
mark "log_iptables=$(grep -c 'iptables' /var/log/istio/istio.log 2>/dev/null)"
mark "log_probe_ready=$(grep -c 'Envoy proxy is ready' /var/log/istio/istio.log 2>/dev/null)"
mark "pkg_gets=$(journalctl -u vmtest-pkgserver --no-pager -o cat | grep -c "GET /$V1_DEB")"
stat_all stat
mark "hosts_b64=$(base64 -w0 /etc/hosts)"
vlog /var/log/istio/istio.log 40
vlog /var/log/istio/istio.err.log 20
vcmd journalctl -b -u istio.service --no-pager -o short-monotonic
vcmd journalctl -b -u cloud-final.service --no-pager -o short-monotonic

# --- scenario 2: the identical apply again changes nothing --------------------------
scenario s2
service_facts before.
mtimes before.mtime
mark "before.pkg_gets=$(journalctl -u vmtest-pkgserver --no-pager -o cat | grep -c "GET /$V1_DEB")"
run_step apply "$SEED/vmagent" apply "$SEED/bundle" --no-preflight \
    --package "http://127.0.0.1:$PORT/$V1_DEB" --package-sha256 "$V1_SHA" --wait 120
service_facts after.
mtimes after.mtime
mark "after.pkg_gets=$(journalctl -u vmtest-pkgserver --no-pager -o cat | grep -c "GET /$V1_DEB")"
mark "hosts_b64=$(base64 -w0 /etc/hosts)"

# --- scenario 3: upgrade to the v2 package ------------------------------------------
scenario s3
service_facts before.
run_step apply "$SEED/vmagent" apply "$SEED/bundle" --no-preflight \
    --package "http://127.0.0.1:$PORT/$V2_DEB" --package-sha256 "$V2_SHA" --wait 120
service_facts after.
mark "pkg=$(pkg_state istio-sidecar)"
mark "agent=$(sed -n 2p /usr/local/bin/pilot-agent)"
stat_all stat
vcmd journalctl -b -u istio.service --no-pager -o short-monotonic

# --- scenario 6, set-up: vmagent's .deb, the daemon's bundle and configuration ------
scenario s6
run_step dpkg dpkg -i "$SEED/$VMAGENT_DEB"
mark "pkg=$(pkg_state vmagent)"
install -d -m 0755 /etc/vmagent/config.d
# As packaging/cloud-init/daemon.yaml does: the bundle readable by root only.
install -m 0600 "$SEED/bundle.tar.gz" /etc/vmagent/bundle.tar.gz
cat >/etc/vmagent/config.d/50-vmtest.toml <<'TOML'
# vmagent VM test (tests/vm): the daemon's bundle, and a short drift interval so a
# repair shows up within seconds.
[source]
bundle = "/etc/vmagent/bundle.tar.gz"

[daemon]
drift_interval_secs = 5
TOML
run_step config vmagent config show
mark "dropin=$(systemctl cat istio.service 2>/dev/null | grep -c '10-vmagent.conf')"
