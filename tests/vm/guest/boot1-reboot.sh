#!/bin/bash
# First boot, from cloud-init's runcmd after boot1-post.sh: the VM is onboarded by the
# one-shot `vmagent apply` alone (vmagent's .deb is installed but its daemon is not
# enabled). Installs the second boot's units and reboots into scenario 9.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /mnt/vmtest/guest/lib.sh

scenario s9
mark "before.vmagent_enabled=$(systemctl is-enabled vmagent.service 2>&1)"
mark "before.token_sha256=$(sha256sum </var/run/secrets/tokens/istio-token | cut -d' ' -f1)"
install_early_unit
cat >/etc/systemd/system/vmtest-s9.service <<'UNIT'
[Unit]
Description=vmagent VM test: the boot after the one-shot apply (no daemon)
DefaultDependencies=no
Wants=basic.target
After=basic.target istio.service cloud-final.service
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStart=/bin/bash /var/lib/vmtest/guest/boot-noagent.sh

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable vmtest-early.service vmtest-s9.service 2>/dev/null
mark "reboot=$(uptime_s)"
systemctl --no-block reboot
