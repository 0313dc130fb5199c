#!/usr/bin/env bash
# The project's one test command (README.md; .ci/run calls it): the Debian packages the
# tests need (tests/setup.sh), formatting, lints,
# then every unit and integration test against the locked dependency set.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
