#!/bin/bash
# Every later boot, ordered after systemd-tmpfiles-setup.service and before
# vmagent.service and istio.service (vmtest-early.service): records whether the token
# is there before vmagent or istio start. /run is a tmpfs, so a reboot wiped it; only
# the tmpfiles.d rule `vmagent apply` installed can have put it back by then. The seed is not mounted yet: facts go to a file that
# boot2.sh reports.
set -uo pipefail
mkdir -p /run/vmtest
{
    if [ -e /var/run/secrets/tokens/istio-token ]; then echo "token_early=present"; else echo "token_early=absent"; fi
    [ -e /var/run/secrets/tokens/istio-token ] && echo "token_early_sha256=$(tr -d '\n' </var/run/secrets/tokens/istio-token | sha256sum | cut -d" " -f1)"
    echo "run_fstype=$(findmnt -no FSTYPE /run)"
    echo "early_uptime=$(cut -d' ' -f1 /proc/uptime)"
    echo "vmagent_early=$(systemctl is-active vmagent.service)"
    echo "istio_early=$(systemctl is-active istio.service)"
} >/run/vmtest/early.env 2>&1
