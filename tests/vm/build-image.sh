#!/usr/bin/env bash
# Builds (once) the Debian bookworm guest image for the VM end-to-end test and prints
# the directory holding it on stdout:
#
#   DIR/image.raw   ext4 file system image of the whole guest (root=/dev/vda)
#   DIR/vmlinuz     the guest's kernel   } exported so qemu boots them directly
#   DIR/initrd.img  the guest's initrd   } (-kernel/-initrd: no boot loader)
#
# DIR is ${VMAGENT_VM_CACHE:-/var/tmp/vmagent-vm}/<hash>, where <hash> is the sha256 of
# this script: the recipe is this file, so the image is rebuilt exactly when it changes.
# The build happens in a temporary directory beside it and is renamed into place at the
# end, so an interrupted build never leaves a half-made image behind; a lock serializes
# concurrent builds. The base image is never booted directly: every run boots a qcow2
# overlay on it (tests/vm/boot.sh), so it stays pristine.
#
# No loop mounts: debootstrap installs into a directory and `mkfs.ext4 -d` turns that
# directory into the file system image. Network: only the Debian mirror (the one
# /etc/apt/sources.list.d/debian.sources names, or VMAGENT_VM_MIRROR).
#
# Needs root, debootstrap and e2fsprogs (tests/vm/setup.sh installs them).
set -euo pipefail
umask 022

self=$(readlink -f "${BASH_SOURCE[0]}")
cache=${VMAGENT_VM_CACHE:-/var/tmp/vmagent-vm}
hash=$(sha256sum "$self" | cut -c1-16)
final=$cache/$hash

say() { echo "tests/vm/build-image.sh: $*" >&2; }

if [ -f "$final/image.raw" ] && [ -f "$final/vmlinuz" ] && [ -f "$final/initrd.img" ]; then
    echo "$final"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || {
    say "must run as root (debootstrap)"
    exit 1
}
for tool in debootstrap mkfs.ext4; do
    command -v "$tool" >/dev/null || {
        say "$tool is missing (tests/vm/setup.sh installs it)"
        exit 1
    }
done

mkdir -p "$cache"
# One build at a time; a second caller waits, then finds the image made by the first.
exec 9>"$cache/.build.lock"
flock 9
if [ -f "$final/image.raw" ]; then
    echo "$final"
    exit 0
fi

# The machine's own Debian mirror (the only network the build may use).
mirror=${VMAGENT_VM_MIRROR:-}
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources |
        grep -v -- '-security' | head -n 1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "$cache/.build-$hash.XXXXXX")
# debootstrap mounts /proc and /sys in the target while it runs; if it dies half-way
# they may still be mounted: unmount before deleting the tree.
cleanup() {
    local m
    for m in "$work/root/proc" "$work/root/sys" "$work/root/dev/pts"; do
        if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" || true; fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
root=$work/root

# The packages: the init system, cloud-init (the NoCloud seed drives the test), the
# kernel, python3 (cloud-init's, the package server, and the fixture sidecar's stand-in
# for Envoy's :15021 readiness listener, tests/common/packages.rs), the
# istio-sidecar fixture's Depends (iproute2, iptables, sudo, hostname), and the tools the
# guest scripts use. udev: device units for /dev/vda and the seed's label; dbus:
# hostnamectl (cloud-init sets the hostname through it). --variant=minbase and
# debootstrap's dependency resolution install no Recommends. debootstrap's resolver
# does not follow virtual packages: python3-cffi-backend is what python3-cryptography
# (cloud-init -> python3-jwt/oauthlib) needs through the virtual python3-cffi-backend-api.
pkgs=(
    systemd systemd-sysv udev dbus kmod
    cloud-init python3 python3-cffi-backend
    linux-image-amd64 initramfs-tools
    iproute2 iptables sudo hostname
    util-linux procps
)
say "debootstrap bookworm from $mirror into $root (cold build: a few minutes)"
start=$(date +%s)
debootstrap --variant=minbase --components=main \
    --include="$(
        IFS=,
        echo "${pkgs[*]}"
    )" \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    # Kept for the post-mortem: the build directory itself is removed on exit.
    cat "$work/debootstrap.log" "$root/debootstrap/debootstrap.log" >"$cache/last-build-failure.log" 2>/dev/null || true
    tail -n 40 "$cache/last-build-failure.log" >&2
    say "debootstrap failed (last lines above; all of it in $cache/last-build-failure.log)"
    exit 1
}

# --- guest configuration -----------------------------------------------------------
echo vmtest >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	vmtest

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
EOF
# The guest has no network (qemu -nic none): no resolver configuration from the host.
: >"$root/etc/resolv.conf"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
# Root without a password: a login on the serial console for debugging a failed run.
sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"

units=$root/etc/systemd/system
mkdir -p "$units/multi-user.target.wants"
# Nothing may wait for a network that never comes, and nothing may run apt or dpkg in
# the background while the test does (apt-daily would hold the dpkg lock).
for u in systemd-networkd-wait-online.service NetworkManager-wait-online.service \
    apt-daily.service apt-daily.timer apt-daily-upgrade.service apt-daily-upgrade.timer \
    dpkg-db-backup.service dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer man-db.timer; do
    ln -sfn /dev/null "$units/$u"
done

# cloud-init: only the NoCloud seed (no probing of cloud metadata services, which would
# wait for a network), and no network configuration (there is none to configure).
mkdir -p "$root/etc/cloud/cloud.cfg.d"
cat >"$root/etc/cloud/cloud.cfg.d/90-vmtest.cfg" <<'EOF'
# vmagent VM test image (tests/vm/build-image.sh)
datasource_list: [NoCloud, None]
network: {config: disabled}
preserve_hostname: true
resize_rootfs: false
growpart: {mode: 'off'}
EOF

# Lean: the downloaded .debs are not needed any more.
rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin

# --- export ------------------------------------------------------------------------
kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
initrd=$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
    say "no kernel or initrd in $root/boot"
    exit 1
fi
out=$work/out
mkdir -p "$out"
cp "$kernel" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"
# Room for what the test installs (a few MB) and logs; the file is sparse.
size_mb=$(($(du -sm "$root" | cut -f1) + 768))
mkfs.ext4 -q -F -L vmroot -d "$root" "$out/image.raw" "${size_mb}M" >&2
basename "$kernel" >"$out/kernel-version"
echo "$mirror" >"$out/mirror"
say "image built in $(($(date +%s) - start)) s: $(du -sh --apparent-size "$out/image.raw" | cut -f1) (${size_mb} MB file system)"

mv "$out" "$final"

# Images of other recipes (older or newer checkouts) that nothing booted for a week go:
# each is 1-2 GB. boot.sh touches last-used on every boot.
for d in "$cache"/*/; do
    d=${d%/}
    [ "$d" != "$final" ] || continue
    [[ $(basename "$d") =~ ^[0-9a-f]{16}$ ]] || continue
    if [ -z "$(find "$d" -maxdepth 1 -name last-used -mtime -7)" ] &&
        [ -z "$(find "$d" -maxdepth 0 -mtime -7)" ]; then
        say "removing $d (another recipe's image, unused for a week)"
        rm -rf "$d"
    fi
done
echo "$final"
