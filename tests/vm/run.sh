#!/usr/bin/env bash
# The VM end-to-end test's one entry point (CI runs it after tests/run-all.sh): installs
# what it needs (tests/setup.sh for the package builders, tests/vm/setup.sh for qemu,
# debootstrap and genisoimage), then runs tests/vm.rs, which builds the release binary's
# packages and the cached guest image, boots it and asserts every scenario.
#
# When the VM cannot run here at all (VMAGENT_VM=skip, not root, or no qemu-system-x86_64
# even after the set-up) it prints one line starting with `skipped: ` and exits 0. TCG
# (no KVM) is slower but counts as able to run.
#
# Environment: see tests/vm.rs (VMAGENT_BIN, VMAGENT_VM_CACHE, VMAGENT_VM_ACCEL,
# VMAGENT_VM_BOOT_TIMEOUT).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${VMAGENT_VM:-}" = skip ]; then
    echo "skipped: VMAGENT_VM=skip"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "skipped: not root (the VM test installs packages and builds its image with debootstrap)"
    exit 0
fi
tests/setup.sh
# A failed set-up (no mirror reachable) is a skip only if it leaves no qemu behind.
if ! tests/vm/setup.sh; then
    echo "tests/vm/run.sh: tests/vm/setup.sh failed" >&2
fi
if ! command -v qemu-system-x86_64 >/dev/null; then
    echo "skipped: no qemu-system-x86_64 (tests/vm/setup.sh could not install it), so neither KVM nor TCG"
    exit 0
fi
exec cargo test --release --locked --test vm -- --ignored --nocapture
