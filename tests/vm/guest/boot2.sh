#!/bin/bash
# Third boot (vmtest-boot2.service): scenario 5 (after the reboot the token is back
# before vmagent and istio start, the daemon is ready first, the proxy ready again),
# then boot2-token.sh (scenario 10 and the set-up of 11), which reboots into the
# fourth boot (boot3.sh: scenarios 11, 7 and 8).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /var/lib/vmtest/guest/lib.sh
systemctl disable vmtest-boot2.service 2>/dev/null

scenario s5
mark "uptime=$(uptime_s)"
proxy_ids
if [ -r /run/vmtest/early.env ]; then
    while IFS= read -r l; do mark "$l"; done </run/vmtest/early.env
else
    mark "token_early=unknown (vmtest-early.service did not run)"
fi
wait_ready 180
tok=/var/run/secrets/tokens/istio-token
if [ -e "$tok" ]; then
    mark "token=$(stat -c '%a %u %g' "$tok")"
    mark "token_sha256=$(sha256sum <"$tok" | cut -d' ' -f1)"
else
    mark "token=absent"
fi
service_facts ""
mark "vmagent_active=$(systemctl is-active vmagent.service)"
mark "vmagent_ready_us=$(unit_prop vmagent.service ActiveEnterTimestampMonotonic)"
mark "istio_start_us=$(unit_prop istio.service ExecMainStartTimestampMonotonic)"
while IFS= read -r l; do mark "journal_repaired=$l"; done < <(journalctl -b -u vmagent.service --no-pager -o cat | grep 'repaired')
mark "notify_rejected=$(journalctl -b -u vmagent.service --no-pager -o cat | grep -c 'Got notification message from PID')"
# When the daemon first saw the proxy ready in this boot (journal, seconds since boot).
mark "daemon_ready_seen=$(journalctl -b -u vmagent.service --no-pager -o short-monotonic |
    sed -n 's/^\[ *\([0-9.]*\)\].*ready: the proxy is in the mesh.*/\1/p' | head -n 1)"
vcmd journalctl -b -u vmagent.service --no-pager -o short-monotonic
vcmd journalctl -b -u istio.service --no-pager -o short-monotonic
vcmd vmagent status

# --- scenarios 10 and 11 (set-up): the kubernetes token provider, then the reboot ----
bash "$W/guest/boot2-token.sh"
