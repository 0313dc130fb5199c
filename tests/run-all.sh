#!/usr/bin/env bash
# The project's one test command (README.md; .ci/run calls it): the Debian packages the
# tests need (tests/setup.sh), formatting, lints,
# then every unit and integration test against the locked dependency set, then the VM
# end-to-end test (tests/vm/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
# Last, the end-to-end test on a Debian VM under qemu (KVM when it works, else TCG):
# about 5 minutes warm, 10 with a cold image cache; prints `skipped: ...` when it cannot
# run here (tests/vm/README.md).
tests/vm/run.sh
