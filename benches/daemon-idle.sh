#!/usr/bin/env bash
# Idle daemon cost (issue 5): RSS and CPU time of `vmagent daemon` over 60 s with a quiet
# log and a local path source, after its start-up reconcile. Uses the release binary.
# Usage: benches/daemon-idle.sh [SECONDS]   (default 60). Prints one table row.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
cargo build --release --locked -q
bin=target/release/vmagent
root=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$root"' EXIT
mkdir -p "$root/etc/vmagent" "$root/srv" "$root/var/log/istio"
cp -r examples/bundle "$root/srv/bundle"
: > "$root/var/log/istio/istio.log"
# The bundle files need no package here: owners are skipped by the offline root only if
# istio-proxy exists, so give the root one (as the sidecar package would).
mkdir -p "$root/etc"
printf 'root:x:0:0::/root:/bin/sh\nistio-proxy:x:998:998::/var/lib/istio:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nistio-proxy:x:998:\n' > "$root/etc/group"
printf '[source]\nbundle = "/srv/bundle"\n' > "$root/etc/vmagent/config.toml"
"$bin" daemon --root "$root" 2>/dev/null &
pid=$!
sleep 3 # start-up reconcile done
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
sleep "$secs"
t1=$(ticks)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
cpu_ms=$(( (t1 - t0) * 1000 / hz ))
size=$(stat -c %s "$bin")
printf '| %s s | %s KiB | %s KiB | %s ms | %s bytes |\n' "$secs" "$rss" "$hwm" "$cpu_ms" "$size"
