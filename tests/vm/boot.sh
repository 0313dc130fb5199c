#!/usr/bin/env bash
# Boots the test guest once (through any number of guest reboots, until it powers off):
#
#   tests/vm/boot.sh IMAGE_DIR SEED_DIR WORK_DIR
#
#   IMAGE_DIR  what tests/vm/build-image.sh printed (image.raw, vmlinuz, initrd.img)
#   SEED_DIR   the cloud-init NoCloud seed: user-data, meta-data and the test payload;
#              made into WORK_DIR/seed.iso (ISO 9660, volume label cidata)
#   WORK_DIR   gets overlay.qcow2 (the guest's disk: a copy-on-write overlay, so the
#              cached base image stays pristine), console.log (ttyS0: kernel, systemd,
#              getty) and results.log (ttyS1: the guest scripts' VMTEST/VMLOG lines)
#
# The last step execs qemu, so the caller (tests/vm.rs) owns the process and its
# timeout. The guest has no network (-nic none).
#
# Acceleration: VMAGENT_VM_ACCEL=kvm|tcg, else KVM when a short probe boot shows the
# kernel getting past early boot, else TCG. The probe exists because this /dev/kvm can
# belong to a paravirtual hypervisor on which a stock Debian kernel hangs right after
# the boot loader's "Probing EDD" (nothing after it, ever); TCG boots the same guest in
# about a minute. The verdict is cached beside the image (accel), since it depends on
# the machine and that kernel only.
set -euo pipefail

[ $# -eq 3 ] || {
    echo "usage: tests/vm/boot.sh IMAGE_DIR SEED_DIR WORK_DIR" >&2
    exit 2
}
image=$1
seed=$2
work=$3
say() { echo "tests/vm/boot.sh: $*" >&2; }

for f in image.raw vmlinuz initrd.img; do
    [ -f "$image/$f" ] || {
        say "no $image/$f (run tests/vm/build-image.sh)"
        exit 2
    }
done
for f in user-data meta-data; do
    [ -f "$seed/$f" ] || {
        say "no $seed/$f"
        exit 2
    }
done
mkdir -p "$work"
# For build-image.sh's clean-up of images nothing boots any more.
touch "$image/last-used"

# probe_kvm: 0 when a KVM guest gets the kernel to run the initramfs within the limit.
probe_kvm() {
    local log=$work/kvm-probe.log pid i ok=1 died=0
    if [ ! -c /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
        echo "no usable /dev/kvm" >"$image/accel.why"
        return 1
    fi
    : >"$log"
    # No disk: the initramfs starting (or waiting for its root) is proof enough.
    qemu-system-x86_64 -accel kvm -cpu host -m 512 -smp 1 \
        -nodefaults -no-user-config -display none -monitor none -nic none \
        -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
        -append "console=ttyS0 panic=-1" -no-reboot \
        -serial "file:$log" >/dev/null 2>"$work/kvm-probe.err" &
    pid=$!
    # Not a job of this shell any more: its death by SIGABRT or SIGKILL is expected
    # here and should not be reported as "Aborted ..." on stderr.
    disown "$pid"
    for ((i = 0; i < ${VMAGENT_VM_KVM_PROBE_SECS:-25} * 2; i++)); do
        if grep -q -e 'Run /init as init process' -e 'Freeing unused kernel' "$log" 2>/dev/null; then
            ok=0
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            died=1
            break
        fi
        sleep 0.5
    done
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    if [ "$ok" -eq 0 ]; then
        echo "KVM probe: the kernel reached the initramfs" >"$image/accel.why"
    else
        {
            if [ "$died" -eq 1 ]; then
                echo "KVM probe: qemu -accel kvm died before the kernel started: $(grep -m 1 . "$work/kvm-probe.err")"
            else
                echo "KVM probe: no kernel progress within ${VMAGENT_VM_KVM_PROBE_SECS:-25} s; console ended with:"
            fi
            tail -c 300 "$log" | tr -d '\r'
        } >"$image/accel.why"
    fi
    return "$ok"
}

accel=${VMAGENT_VM_ACCEL:-}
case "$accel" in
kvm | tcg) why="VMAGENT_VM_ACCEL=$accel" ;;
"")
    if [ -f "$image/accel" ]; then
        accel=$(cat "$image/accel")
        why="cached in $image/accel: $(head -n 1 "$image/accel.why" 2>/dev/null)"
    else
        if probe_kvm; then accel=kvm; else accel=tcg; fi
        echo "$accel" >"$image/accel.tmp" && mv "$image/accel.tmp" "$image/accel"
        why=$(head -n 1 "$image/accel.why")
    fi
    ;;
*)
    say "VMAGENT_VM_ACCEL must be kvm or tcg, not '$accel'"
    exit 2
    ;;
esac
if [ "$accel" = kvm ]; then cpu=host; else cpu=max; fi
say "accel $accel ($why)"
echo "$accel" >"$work/accel"

# The seed: cloud-init finds it by its label; Rock Ridge keeps names and exec bits.
genisoimage -quiet -output "$work/seed.iso" -volid cidata -joliet -rock "$seed"

# A fresh overlay per run: the guest writes here, never to the cached base.
rm -f "$work/overlay.qcow2"
qemu-img create -q -f qcow2 -b "$image/image.raw" -F raw "$work/overlay.qcow2"
: >"$work/console.log"
: >"$work/results.log"

# ttyS0 is the console (kernel, systemd, getty), ttyS1 the results channel. cache=unsafe:
# the overlay is thrown away after the run, and guest reboots flush anyway.
exec qemu-system-x86_64 -name vmagent-vmtest \
    -accel "$accel" -cpu "$cpu" -smp 2 -m "${VMAGENT_VM_MEM:-1024}" \
    -nodefaults -no-user-config -display none -monitor none -nic none \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 ds=nocloud systemd.show_status=1" \
    -drive "file=$work/overlay.qcow2,if=virtio,format=qcow2,cache=unsafe" \
    -drive "file=$work/seed.iso,if=virtio,format=raw,readonly=on" \
    -device virtio-rng-pci \
    -serial "file:$work/console.log" -serial "file:$work/results.log"
