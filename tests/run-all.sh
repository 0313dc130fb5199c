#!/usr/bin/env bash
# The project's one test command (README.md; .ci/run calls it): formatting, lints,
# then every unit and integration test against the locked dependency set.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
