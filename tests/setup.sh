#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (idempotent; CI runs it on a clean
# machine through tests/run-all.sh). rpm: real rpm/rpmbuild for the .rpm fixture tests;
# busybox-static: a /bin/sh inside test roots, where dpkg and rpm chroot to run
# maintainer scripts; dpkg-dev: dpkg-deb for the .deb fixtures; openssl: test certificates;
# openssh-client: ssh-keygen signs and checks bundles (tests/signing.rs, [trust]);
# logrotate: the real rotation of the installed rule (tests/logrotate.rs);
# openssh-server: the real sshd the lock-out guard tests start (tests/common/sshd.rs);
# dnsmasq-base: the DNS server standing in for pilot-agent's DNS proxy (tests/doctor.rs;
# the binary only, no system service on port 53); iptables: doctor's iptables section;
# nftables: the drop rule of the preflight timeout test; iproute2 (ip netns), util-linux
# (nsenter): the network namespaces of tests/preflight.rs;
# prometheus: promtool checks the metrics exposition and the README's alert rule;
# prometheus-node-exporter: the real textfile collector reads vmagent.prom back (tests/metrics.rs).
set -euo pipefail
need=()
for pkg in rpm busybox-static dpkg-dev openssl openssh-client openssh-server logrotate dnsmasq-base iptables nftables iproute2 util-linux prometheus prometheus-node-exporter; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "tests/setup.sh: missing Debian packages: ${need[*]}; run as root (apt-get install -y ${need[*]})" >&2
    exit 1
fi
echo "tests/setup.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
