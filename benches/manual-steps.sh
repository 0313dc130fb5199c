#!/usr/bin/env bash
# The documented manual VM onboarding steps (Istio "Virtual Machine Installation",
# without the package and without the service), run literally under ROOT: one
# process per command, as a person's script would do, and no fsync anywhere.
#
#   usage: manual-steps.sh ROOT BUNDLE_DIR
#
# The docs say `chown -R istio-proxy ...`. A name is resolved against the HOST's
# /etc/passwd (not ROOT/etc/passwd), and the host has no istio-proxy user, so this
# uses the numeric uid 998: the istio-proxy uid in the benchmark's (and tests')
# roots. Used by benches/apply.rs as the baseline vmagent must not be slower than.
set -eu
if [ "$#" -ne 2 ]; then
    echo "usage: $0 ROOT BUNDLE_DIR" >&2
    exit 2
fi
ROOT=$1
BUNDLE=$2

mkdir -p "$ROOT/etc/certs"
cp "$BUNDLE/root-cert.pem" "$ROOT/etc/certs/root-cert.pem"
mkdir -p "$ROOT/var/run/secrets/tokens"
cp "$BUNDLE/istio-token" "$ROOT/var/run/secrets/tokens/istio-token"
mkdir -p "$ROOT/var/lib/istio/envoy"
cp "$BUNDLE/cluster.env" "$ROOT/var/lib/istio/envoy/cluster.env"
mkdir -p "$ROOT/etc/istio/config"
cp "$BUNDLE/mesh.yaml" "$ROOT/etc/istio/config/mesh"
cat "$BUNDLE/hosts" >> "$ROOT/etc/hosts"
mkdir -p "$ROOT/etc/istio/proxy"
chown -R 998 "$ROOT/var/lib/istio" "$ROOT/etc/certs" "$ROOT/etc/istio/proxy" \
    "$ROOT/etc/istio/config" "$ROOT/var/run/secrets" "$ROOT/etc/certs/root-cert.pem"
