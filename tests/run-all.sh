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
# Every test binary runs (--no-fail-fast), its output kept in a log; when any fails, the
# failing binaries and tests are listed again at the end, so a CI log cut short or
# scrolled past still names them.
log="${CARGO_TARGET_DIR:-target}/run-all-tests.log"
mkdir -p "$(dirname "$log")"
status=0
cargo test --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
    echo "=== cargo test failed (exit $status); full output in $log"
    # `Running tests/x.rs (...)` names the binary; libtest's `test NAME ... FAILED`
    # the test; a binary killed by a signal (a hang guard, the OOM killer) has only
    # cargo's `process didn't exit successfully` line.
    awk '
        /^ *Running / { bin = $2 }
        /^ *Doc-tests / { bin = "doc-tests " $2 }
        / \.\.\. FAILED$/ { print "FAILED: " bin ": " $2 }
        /process didn.t exit successfully/ { print "FAILED: " bin ": " $0 }
    ' "$log"
    exit "$status"
fi
# Last, the end-to-end test on a Debian VM under qemu (KVM when it works, else TCG):
# about 5 minutes warm, 10 with a cold image cache; prints `skipped: ...` when it cannot
# run here (tests/vm/README.md).
tests/vm/run.sh
