#!/bin/bash
# Fourth boot (vmtest-boot3.service): scenario 11 (the reboot with an expired token: the
# daemon gets a fresh one from the TokenRequest server before istio.service starts),
# then scenario 7 (uninstall brings the VM back to the snapshot taken before vmagent),
# then scenario 8 (the fixture's iptables-fail scenario under real systemd), then power
# off.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /var/lib/vmtest/guest/lib.sh
systemctl disable vmtest-boot3.service 2>/dev/null

# --- scenario 11: reboot with an expired token ---------------------------------------
scenario s11
mark "uptime=$(uptime_s)"
mark "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
proxy_ids
if [ -r /run/vmtest/early.env ]; then
    while IFS= read -r l; do mark "$l"; done </run/vmtest/early.env
else
    mark "token_early=unknown (vmtest-early.service did not run)"
fi
wait_ready 180
service_facts ""
token_facts "" /var/run/secrets/tokens/istio-token
mark "now=$(date +%s)"
mark "server_active=$(systemctl is-active vmtest-tokenserver.service)"
mark "vmagent_active=$(systemctl is-active vmagent.service)"
# The ordering, all on the monotonic clock (microseconds since this boot's kernel
# start; the server logs /proc/uptime in seconds): READY=1 of vmagent.service, and
# istio.service leaving inactive (ExecStartPre) and its main process starting.
mark "vmagent_ready_us=$(unit_prop vmagent.service ActiveEnterTimestampMonotonic)"
mark "istio_inactive_exit_us=$(unit_prop istio.service InactiveExitTimestampMonotonic)"
mark "istio_start_us=$(unit_prop istio.service ExecMainStartTimestampMonotonic)"
while IFS= read -r l; do mark "server_log=$l"; done <"$TOKEN_LOG"
# No token text in vmagent's journal: a JWT's header starts with "eyJ" ('{"' in
# base64url); nor the credential.
mark "journal_jwt=$(journalctl -b -u vmagent.service --no-pager -o cat | grep -c 'eyJ')"
mark "journal_credential=$(journalctl -b -u vmagent.service --no-pager -o cat | grep -cF "$(cat "$TOKEN_DIR/credential")")"
mark "boot_copy_sha256=$(token_sha /var/lib/vmagent/istio-token)"
vcmd journalctl -b -u vmagent.service --no-pager -o short-monotonic
vcmd journalctl -b -u istio.service --no-pager -o short-monotonic
vcmd journalctl -b -u vmtest-tokenserver.service --no-pager -o short-monotonic
vcmd vmagent status

# --- scenario 7: uninstall ----------------------------------------------------------
scenario s7
# The daemon still runs: uninstall refuses (it would put everything back) and names the
# remedy. Nothing may have changed.
run_step refused vmagent uninstall --purge
mark "refused.istio_active=$(systemctl is-active istio.service)"
mark "refused.hosts_block=$(grep -c '^# BEGIN vmagent-managed' /etc/hosts)"
# The remedy it names, then the uninstall proper and vmagent's own package.
run_step stop systemctl disable --now vmagent.service
run_step uninstall vmagent uninstall --purge
run_step dpkg dpkg --purge vmagent
sleep 2
vcmd journalctl -b -u vmagent.service --no-pager -o short-monotonic -n 30
# What the test itself wrote for the daemon (an operator's files, not the package's).
rm -f /etc/vmagent/config.d/50-vmtest.toml /etc/vmagent/config.d/60-vmtest-token.toml /etc/vmagent/bundle.tar.gz
rmdir /etc/vmagent/config.d /etc/vmagent 2>/dev/null
snapshot post
snapdiff pre post
mark "pkg_sidecar=$(pkg_state istio-sidecar)"
mark "pkg_vmagent=$(pkg_state vmagent)"
mark "istio_enabled=$(systemctl is-enabled istio.service 2>&1)"
mark "istio_active=$(systemctl is-active istio.service 2>&1)"
for p in /var/lib/vmagent /var/cache/vmagent /run/vmagent /etc/vmagent /usr/bin/vmagent \
    /lib/systemd/system/istio.service.d /etc/systemd/system/istio.service.d \
    /etc/systemd/system/multi-user.target.wants/istio.service \
    /etc/systemd/system/multi-user.target.wants/vmagent.service; do
    if [ -e "$p" ] || [ -L "$p" ]; then mark "exists=$p yes"; else mark "exists=$p no"; fi
done
mark "hosts_b64=$(base64 -w0 /etc/hosts)"
vcmd cat "$W/snap-post/files"

# --- scenario 8: the fixture's iptables-fail scenario on real systemd ----------------
# After the uninstall (so nothing above is affected): the v1 fixture package by hand, a
# cluster.env naming the scenario, a start. istio-start.sh fails in its first
# `pilot-agent istio-iptables` call: the istio-iptables error is in the unit's journal
# and never in istio.log, the proxy never runs, and systemd restarts the unit
# (Restart=always, RestartSec=10) without giving up (StartLimitIntervalSec=0).
scenario s8
run_step dpkg dpkg -i "$SEED/pkgs/$V1_DEB"
echo '# fixture-scenario: iptables-fail' >/var/lib/istio/envoy/cluster.env
since=$(date +%s)
run_step start systemctl start istio.service
t0=$(uptime_s)
while awk -v e="$(elapsed "$t0")" 'BEGIN { exit !(e < 120) }'; do
    [ "$(unit_prop istio.service NRestarts)" -ge 2 ] 2>/dev/null && break
    sleep 1
done
mark "nrestarts=$(unit_prop istio.service NRestarts)"
mark "restart_wait_s=$(elapsed "$t0")"
jr() { journalctl -b -u istio.service --since "@$since" --no-pager -o cat 2>/dev/null; }
mark "journal_error=$(jr | grep -c "iptables binary iptables has no loaded kernel support and cannot be used.*can't initialize iptables table")"
mark "journal_perhaps=$(jr | grep -c '^Perhaps iptables or your kernel needs to be upgraded\.$')"
mark "journal_sudo=$(journalctl -b --since "@$since" --no-pager -o cat 2>/dev/null | grep -c 'USER=istio-proxy')"
if [ -e /var/log/istio/istio.log ]; then
    mark "istio_log=$(grep -c 'iptables' /var/log/istio/istio.log) iptables lines"
else
    mark "istio_log=absent"
fi
vcmd journalctl -b -u istio.service --since "@$since" --no-pager -o short-monotonic
run_step stop systemctl stop istio.service
run_step purge dpkg --purge istio-sidecar

scenario boot2
mark "done=$(uptime_s)"
systemctl --no-block poweroff
