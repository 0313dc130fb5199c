#!/usr/bin/env bash
# Installs what the VM end-to-end test (tests/vm.rs, tests/vm/run.sh) needs from Debian:
#   debootstrap        builds the guest's root file system (tests/vm/build-image.sh)
#   e2fsprogs          mkfs.ext4 -d: an ext4 image from a directory, no loop mount
#   genisoimage        the cloud-init NoCloud seed (an ISO labelled cidata)
#   qemu-system-x86    boots the guest (KVM where it works, else TCG)
#   qemu-utils         qemu-img: the per-run qcow2 overlay on the cached base image
# Idempotent: installs only what is missing, and does nothing when all is there.
#
# qemu-system-x86 comes from bookworm-backports. This machine's qemu-utils is the
# backports build, and bookworm's own qemu-system-x86 (7.2) conflicts with it
# (qemu-system-common breaks a newer qemu-utils). The backports suite is added for
# these apt runs only, through a temporary sources directory that repeats the machine's
# own sources plus bookworm-backports on the same mirror: /etc/apt is left as it was.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/vm/setup.sh: must run as root (apt-get)" >&2
    exit 1
fi

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

plain=()
for pkg in debootstrap e2fsprogs genisoimage; do
    installed "$pkg" || plain+=("$pkg")
done
backports=()
for pkg in qemu-system-x86 qemu-utils; do
    installed "$pkg" || backports+=("$pkg")
done
# A qemu-system-x86 that is installed but whose binary is gone counts as missing.
if installed qemu-system-x86 && ! command -v qemu-system-x86_64 >/dev/null; then
    backports+=(qemu-system-x86)
fi
[ "${#plain[@]}" -eq 0 ] && [ "${#backports[@]}" -eq 0 ] && exit 0

export DEBIAN_FRONTEND=noninteractive

# The mirror the machine already uses (first URIs: line of debian.sources, or the first
# deb line of sources.list), so backports come from the same place.
mirror=
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources |
        grep -v -- '-security' | head -n 1 || true)
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

# The temporary sources directory: the machine's enabled sources plus backports.
tmp=$(mktemp -d /tmp/vmagent-vm-apt.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/sources.list.d"
for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] && cp "$f" "$tmp/sources.list.d/"
done
if [ -r /etc/apt/sources.list ]; then
    cp /etc/apt/sources.list "$tmp/sources.list"
else
    : >"$tmp/sources.list"
fi
cat >"$tmp/sources.list.d/vmagent-vm-backports.sources" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt_opts=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o "Dir::Etc::sourceparts=$tmp/sources.list.d")

echo "tests/vm/setup.sh: installing ${plain[*]} ${backports[*]} (qemu from bookworm-backports, $mirror)" >&2
apt-get "${apt_opts[@]}" update -qq
if [ "${#plain[@]}" -gt 0 ]; then
    apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${plain[@]}" >/dev/null
fi
if [ "${#backports[@]}" -gt 0 ]; then
    apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends -t bookworm-backports "${backports[@]}" >/dev/null
fi
command -v qemu-system-x86_64 >/dev/null || {
    echo "tests/vm/setup.sh: qemu-system-x86_64 still missing after the install" >&2
    exit 1
}
