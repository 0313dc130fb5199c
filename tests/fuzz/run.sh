#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), seeded from the shipped example
# bundle and the tests' inputs. Not part of CI (issue 12): record runs in BENCHMARKS.md.
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); on the stable toolchain the
# sanitizer flags need RUSTC_BOOTSTRAP=1, which this script sets.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root; cargo fuzz takes --fuzz-dir
secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir tests/fuzz)
fi
export RUSTC_BOOTSTRAP=1
ex=examples/bundle
fz=tests/fuzz
seed() { # seed TARGET FILE...: copy seeds into the target's corpus
    local d="$fz/corpus/$1"; shift
    mkdir -p "$d"
    for f in "$@"; do [ -f "$f" ] && cp "$f" "$d/seed-$(basename "$f")"; done
}
seed cluster_env "$ex/cluster.env"
seed mesh "$ex/mesh.yaml"
seed token "$ex/istio-token"
seed pem "$ex/root-cert.pem"
seed hosts "$ex/hosts" /etc/hosts
seed state
seed config packaging/config.toml
seed kubedns
# A TokenRequest answer around the example token, as the API server sends it.
mkdir -p "$fz/corpus/token_request"
printf '{"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1","spec":{"audiences":["istio-ca"],"expirationSeconds":3600},"status":{"token":"%s","expirationTimestamp":"2030-01-01T00:00:00Z"}}' \
    "$(tr -d '\n' <"$ex/istio-token")" >"$fz/corpus/token_request/seed-answer.json"
printf 'server=/svc.cluster.local/10.0.0.7\naddress=/istio-pilot/10.0.0.9\n' > "$fz/corpus/kubedns/seed-kubedns"
mkdir -p "$fz/corpus/bundle_archive"
tar -C "$ex" -cf "$fz/corpus/bundle_archive/seed-example.tar" .
tar -C "$ex" -czf "$fz/corpus/bundle_archive/seed-example.tgz" .
mkdir -p "$fz/corpus/journal"
printf '{"version":1,"entries":[{"path":"etc/hosts","prior":{"kind":"absent"}}]}\n' > "$fz/corpus/journal/seed-journal"
for t in "${targets[@]}"; do
    echo "== $t (${secs}s)"
    mkdir -p "$fz/corpus/$t"
    cargo fuzz run --fuzz-dir "$fz" "$t" "$fz/corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 |
        grep -E '^(#[0-9]+.*(DONE|pulse)|Done|==[0-9]+==|SUMMARY|ERROR|Error|artifact_prefix|Test unit written)' || true
    if ls "$fz"/artifacts/"$t"/crash-* "$fz"/artifacts/"$t"/oom-* "$fz"/artifacts/"$t"/timeout-* >/dev/null 2>&1; then
        echo "!! $t: findings in tests/fuzz/artifacts/$t"
    fi
done
