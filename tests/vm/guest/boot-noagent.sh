#!/bin/bash
# Second boot (vmtest-s9.service), issue 14 part 0: the VM was onboarded by the
# one-shot `vmagent apply` alone, no daemon. The token (on the /run tmpfs) must be back
# before istio.service starts, put there by the tmpfiles.d rule apply installed, and
# the proxy ready with vmagent.service neither enabled nor running. Then scenario 6
# (the daemon), which ends with the reboot into the third boot.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /var/lib/vmtest/guest/lib.sh
systemctl disable vmtest-s9.service 2>/dev/null

scenario s9
mark "uptime=$(uptime_s)"
proxy_ids
if [ -r /run/vmtest/early.env ]; then
    while IFS= read -r l; do mark "$l"; done </run/vmtest/early.env
else
    mark "token_early=unknown (vmtest-early.service did not run)"
fi
mark "vmagent_enabled=$(systemctl is-enabled vmagent.service 2>&1)"
mark "vmagent_active=$(systemctl is-active vmagent.service 2>&1)"
wait_ready 180
tok=/var/run/secrets/tokens/istio-token
if [ -e "$tok" ]; then
    mark "token=$(stat -c '%a %u %g' "$tok")"
    mark "token_sha256=$(sha256sum <"$tok" | cut -d' ' -f1)"
else
    mark "token=absent"
fi
mark "tokens_dir=$(stat -c '%a %u %g' /var/run/secrets/tokens 2>&1)"
mark "store=$(stat -c '%a %u %g' /var/lib/vmagent/istio-token 2>&1)"
mark "rule=$(stat -c '%a %u %g' /etc/tmpfiles.d/vmagent-istio-token.conf 2>&1)"
service_facts ""
mark "tmpfiles_done_us=$(unit_prop systemd-tmpfiles-setup.service ActiveEnterTimestampMonotonic)"
mark "istio_start_us=$(unit_prop istio.service ExecMainStartTimestampMonotonic)"
mark "tmpfiles_errors=$(journalctl -b -u systemd-tmpfiles-setup.service --no-pager -o cat | grep -c 'vmagent')"
vcmd cat /etc/tmpfiles.d/vmagent-istio-token.conf
vcmd journalctl -b -u systemd-tmpfiles-setup.service --no-pager -o short-monotonic
vcmd journalctl -b -u istio.service --no-pager -o short-monotonic
vcmd vmagent status

# --- scenario 6: the daemon, from here (it was runcmd's before this boot existed) ----
scenario s6
run_step enable systemctl enable --now vmagent.service
bash "$W/guest/boot1-daemon.sh"
