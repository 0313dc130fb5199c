#!/bin/bash
# Second boot, from boot-noagent.sh after `systemctl enable --now vmagent.service`:
# scenario 6 (the daemon reports ready and repairs a hand-edited
# /etc/hosts block), then the third boot's units, then the reboot (scenario 5).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /mnt/vmtest/guest/lib.sh

scenario s6
mark "vmagent_active=$(systemctl is-active vmagent.service)"
mark "vmagent_enabled=$(systemctl is-enabled vmagent.service)"
wait_ready 120
service_facts before.
mark "before.repaired_lines=$(journalctl -b -u vmagent.service --no-pager -o cat | grep -c 'repaired')"

# Drift: someone edits the managed block by hand (sed -i: a new file renamed over it).
sed -i 's/^192\.0\.2\.10 istiod\.istio-system\.svc$/192.0.2.99 istiod.istio-system.svc/' /etc/hosts
mark "tampered=$(grep -c '^192\.0\.2\.99 istiod' /etc/hosts)"
t0=$(uptime_s)
repaired=no
while awk -v e="$(elapsed "$t0")" 'BEGIN { exit !(e < 60) }'; do
    if grep -qx '192\.0\.2\.10 istiod\.istio-system\.svc' /etc/hosts && ! grep -q '192\.0\.2\.99' /etc/hosts; then
        repaired=yes
        break
    fi
    sleep 0.5
done
mark "repaired=$repaired"
mark "repair_s=$(elapsed "$t0")"
mark "hosts_b64=$(base64 -w0 /etc/hosts)"
sleep 1
service_facts after.
while IFS= read -r l; do mark "journal_repaired=$l"; done < <(journalctl -b -u vmagent.service --no-pager -o cat | grep 'repaired')
# systemd rejecting sd_notify messages from vmagent's children (FINDINGS.md 3).
mark "notify_rejected=$(journalctl -b -u vmagent.service --no-pager -o cat | grep -c 'Got notification message from PID')"
vcmd journalctl -b -u vmagent.service --no-pager -o short-monotonic
vcmd systemctl status --no-pager vmagent.service
# The structured fields (reason, changes, error) are not in the default journal view.
vcmd journalctl -b -u vmagent.service --no-pager -o verbose -n 2

# --- the third boot: units that record the token early and run boot2.sh ------------
install_early_unit
# DefaultDependencies=no: multi-user.target must not wait for it (it powers the VM off),
# and no ordering cycle with cloud-final.service.
cat >/etc/systemd/system/vmtest-boot2.service <<'UNIT'
[Unit]
Description=vmagent VM test: second boot scenarios
DefaultDependencies=no
Wants=basic.target
After=basic.target vmagent.service istio.service cloud-final.service
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStart=/bin/bash /var/lib/vmtest/guest/boot2.sh

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable vmtest-early.service vmtest-boot2.service 2>/dev/null

scenario boot1
mark "done=$(uptime_s)"
systemctl --no-block reboot
