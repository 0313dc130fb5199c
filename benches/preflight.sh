#!/usr/bin/env bash
# The online preflight's two performance targets (issue 15; numbers in BENCHMARKS.md):
#  (a) a bundle whose gateway drops packets fails in under 5 s (before: apply installed
#      everything and waited up to health.wait_secs, 180 s, for a proxy never ready);
#  (b) a good preflight adds under 50 ms to apply on loopback (median of N pairs).
# vmagent runs in a network namespace made here (veth to the host, so the ports and
# address checks see a clean, realistic machine); istiod is `openssl s_server` on the
# host end with a certificate for istiod.istio-system.svc from a CA made here; (a)
# drops the replies with an nft rule inside the namespace. Needs root, ip, nft,
# nsenter, openssl (tests/setup.sh installs them).
#
# Usage: benches/preflight.sh [N]   (VMAGENT=path/to/vmagent, default target/release/vmagent)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-30}
VMAGENT=${VMAGENT:-target/release/vmagent}
[ -x "$VMAGENT" ] || { echo "no $VMAGENT: cargo build --release --bin vmagent (or set VMAGENT)" >&2; exit 2; }
VMAGENT=$(realpath "$VMAGENT")
W=$(mktemp -d /var/tmp/vmagent-pf-bench.XXXXXX)
NS=vmagent-pfb-$$
HIF=vpfb$$h
NIF=vpfb$$n
SERVER=
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

# Network: host 10.254.77.1 <-veth-> namespace 10.254.77.2.
ip netns add "$NS"
ip -n "$NS" link set lo up
ip link add "$HIF" type veth peer name "$NIF"
ip link set "$NIF" netns "$NS"
ip addr add 10.254.77.1/30 dev "$HIF"
ip link set "$HIF" up
ip -n "$NS" addr add 10.254.77.2/30 dev "$NIF"
ip -n "$NS" link set "$NIF" up

# PKI and istiod stand-in.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /O=cluster.local -keyout "$W/ca.key" -out "$W/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=istiod \
    -keyout "$W/srv.key" -out "$W/srv.csr" 2>/dev/null
printf 'subjectAltName=DNS:istiod.istio-system.svc\n' >"$W/ext"
openssl x509 -req -in "$W/srv.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial \
    -days 30 -extfile "$W/ext" -out "$W/srv.pem" 2>/dev/null
openssl s_server -quiet -accept 10.254.77.1:15012 -cert "$W/srv.pem" -key "$W/srv.key" \
    -naccept 100000 </dev/null >/dev/null 2>&1 &
SERVER=$!

# Bundles: the example pointed at the host end, no ISTIO_SVC_IP (the namespace's one
# address is advertised); "good" trusts the CA above; "drop" is the same bundle behind
# the drop rule.
mkb() { # DIR IP
    cp -r examples/bundle "$1"
    printf '%s istiod.istio-system.svc\n' "$2" >"$1/hosts"
    cp "$W/ca.pem" "$1/root-cert.pem"
    sed -i '/^ISTIO_SVC_IP=/d' "$1/cluster.env"
}
mkb "$W/good" 10.254.77.1
root() { # DIR CONFIG -> a fresh root like tests/common TestRoot::new
    mkdir -p "$1/etc/vmagent"
    printf 'root:x:0:0:root:/root:/bin/bash\nistio-proxy:x:998:998::/var/lib/istio:/usr/sbin/nologin\n' >"$1/etc/passwd"
    printf 'root:x:0:\nistio-proxy:x:998:\n' >"$1/etc/group"
    printf '127.0.0.1\tlocalhost\n' >"$1/etc/hosts"
    printf '[preflight]\n%s\n' "$2" >"$1/etc/vmagent/config.toml"
}
run() { # ROOT BUNDLE [flags] -> prints ms, returns vmagent's exit code
    local s e rc=0
    s=$(date +%s%N)
    nsenter --net="/run/netns/$NS" "$VMAGENT" apply "$2" --root "$1" --no-package --no-start --output json "${@:3}" >"$1.json" 2>/dev/null || rc=$?
    e=$(date +%s%N)
    echo $(((e - s) / 1000000))
    return $rc
}
until nsenter --net="/run/netns/$NS" bash -c 'exec 3<>/dev/tcp/10.254.77.1/15012' 2>/dev/null; do sleep 0.05; done

stats() { sort -n | awk '{a[NR]=$1} END {printf "median %d ms, p10 %d, p90 %d (n=%d)\n", a[int((NR+1)/2)], a[int(NR*0.1)+1], a[int(NR*0.9)], NR}'; }

echo "(b) good preflight on loopback-like veth, $N interleaved pairs (with / --no-preflight):"
with=() without=() inner=()
for i in $(seq 1 "$N"); do
    root "$W/a$i" "enabled = true"
    root "$W/b$i" "enabled = true"
    with+=("$(run "$W/a$i" "$W/good")") || { echo "preflight failed: $(cat "$W/a$i.json")" >&2; exit 1; }
    without+=("$(run "$W/b$i" "$W/good" --no-preflight)")
    inner+=("$(grep -o '"elapsed_ms": [0-9]*' "$W/a$i.json" | grep -o '[0-9]*$')")
done
mw=$(printf '%s\n' "${with[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
mo=$(printf '%s\n' "${without[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "  apply with preflight:    $(printf '%s\n' "${with[@]}" | stats)"
echo "  apply --no-preflight:    $(printf '%s\n' "${without[@]}" | stats)"
echo "  preflight elapsed_ms:    $(printf '%s\n' "${inner[@]}" | stats)"
echo "  added (median difference): $((mw - mo)) ms (target < 50)"

echo "(a) gateway dropping packets (nft drop in the namespace), 5 runs:"
ip netns exec "$NS" nft add table inet vmagent_pfb
ip netns exec "$NS" nft add chain inet vmagent_pfb in '{ type filter hook input priority 0 ; policy accept ; }'
ip netns exec "$NS" nft add rule inet vmagent_pfb in tcp sport 15012 drop
drop=()
for i in 1 2 3 4 5; do
    root "$W/d$i" "enabled = true"
    rc=0
    t=$(run "$W/d$i" "$W/good") || rc=$?
    [ "$rc" = 31 ] || { echo "expected exit 31, got $rc: $(cat "$W/d$i.json")" >&2; exit 1; }
    drop+=("$t")
done
echo "  apply exit 31 after:     $(printf '%s\n' "${drop[@]}" | stats) (target < 5000)"
worst=$(printf '%s\n' "${drop[@]}" | sort -n | tail -1)
fail=0
[ "$worst" -lt 5000 ] || { echo "FAILED: unreachable gateway took $worst ms" >&2; fail=1; }
[ $((mw - mo)) -lt 50 ] || { echo "FAILED: preflight added $((mw - mo)) ms" >&2; fail=1; }
exit $fail
