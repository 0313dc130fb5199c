#!/usr/bin/env bash
# Regenerate the example Istio VM onboarding bundle in examples/bundle/ and
# examples/bundle.tar.gz.
#
# The output mimics what `istioctl x workload entry configure -o vmintegration`
# writes for a WorkloadGroup vm-app in namespace vm-ns (service account vm-sa)
# on a default-revision Istio install with cluster ID "Kubernetes":
#   root-cert.pem  istio-token  cluster.env  mesh.yaml  hosts   (all mode 0744)
#
# Everything is fake: the CA is a fresh self-signed one whose key is thrown
# away, and the token is a JWT signed by a throwaway RSA key (also thrown away).
#
# Requires: bash, openssl, python3 (stdlib only), coreutils, tar.
set -euo pipefail

if ! command -v openssl >/dev/null 2>&1; then
    echo "error: openssl is not installed." >&2
    echo "Install it, e.g. on Debian/Ubuntu:  apt-get install -y openssl" >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "error: python3 is not installed (apt-get install -y python3)." >&2
    exit 1
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/bundle"
tarball="$here/bundle.tar.gz"

# --- example parameters -----------------------------------------------------
NAMESPACE=vm-ns
SERVICE_ACCOUNT=vm-sa
WORKLOAD=vm-app
CLUSTER_ID=Kubernetes
MESH_ID=mesh1
TRUST_DOMAIN=cluster.local
ISTIOD_HOST=istiod.istio-system.svc
INGRESS_IP=192.0.2.10      # east-west gateway address (RFC 5737 documentation range)
VM_IP=192.0.2.20           # --internalIP of the VM (RFC 5737 documentation range)
TOKEN_EXP=4000000000       # 2096-10-02, far future

# Private keys live only here and are deleted on exit.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

rm -rf "$out" "$tarball"
mkdir -p "$out"

# --- root-cert.pem: self-signed CA like Istio's (O=cluster.local, RSA 2048, 10y)
openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 \
    -keyout "$work/ca-key.pem" -out "$out/root-cert.pem" \
    -days 3650 -subj "/O=$TRUST_DOMAIN" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,digitalSignature,keyCertSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null

# --- istio-token: RS256 JWT shaped like a projected service-account token
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
    -out "$work/sa-signer.pem" 2>/dev/null

python3 - "$work" "$NAMESPACE" "$SERVICE_ACCOUNT" "$TOKEN_EXP" <<'PY'
import base64, json, sys, time, uuid
work, ns, sa, exp = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def enc(obj):
    return b64url(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())

now = int(time.time())
header = {"alg": "RS256", "kid": "example"}
claims = {
    "aud": ["istio-ca"],
    "exp": exp,
    "iat": now,
    "iss": "https://kubernetes.default.svc.cluster.local",
    "jti": str(uuid.uuid4()),
    "kubernetes.io": {
        "namespace": ns,
        "serviceaccount": {
            "name": sa,
            # stable per namespace/name so reruns keep the same uid
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, "serviceaccount/%s/%s" % (ns, sa))),
        },
    },
    "nbf": now,
    "sub": "system:serviceaccount:%s:%s" % (ns, sa),
}
with open(work + "/signing-input", "w") as f:
    f.write(enc(header) + "." + enc(claims))
PY
openssl dgst -sha256 -sign "$work/sa-signer.pem" -out "$work/sig.bin" "$work/signing-input"
python3 - "$work" "$out/istio-token" <<'PY'
import base64, sys
work, dest = sys.argv[1], sys.argv[2]
signing_input = open(work + "/signing-input").read()
sig = base64.urlsafe_b64encode(open(work + "/sig.bin", "rb").read()).rstrip(b"=").decode()
with open(dest, "w") as f:
    f.write(signing_input + "." + sig)   # no trailing newline, like istioctl
PY

# --- cluster.env and mesh.yaml ----------------------------------------------
python3 - "$out" <<PY
import json, sys
out = sys.argv[1]
labels = {
    "app": "$WORKLOAD",
    "service.istio.io/canonical-name": "$WORKLOAD",
    "service.istio.io/canonical-revision": "latest",
}
labels_json = json.dumps(labels, separators=(",", ":"), sort_keys=True)

# proxyMetadata as istioctl computes it (mesh config proxyMetadata + derived keys)
md = {
    "CANONICAL_REVISION": "latest",
    "CANONICAL_SERVICE": "$WORKLOAD",
    "ISTIO_METAJSON_LABELS": labels_json,
    "ISTIO_META_CLUSTER_ID": "$CLUSTER_ID",
    "ISTIO_META_DNS_AUTO_ALLOCATE": "true",   # from mesh config proxyMetadata
    "ISTIO_META_DNS_CAPTURE": "true",         # --capture-dns (default true)
    "ISTIO_META_MESH_ID": "$MESH_ID",
    "ISTIO_META_NETWORK": "",
    "ISTIO_META_WORKLOAD_NAME": "$WORKLOAD",
    "POD_NAMESPACE": "$NAMESPACE",
    "SERVICE_ACCOUNT": "$SERVICE_ACCOUNT",
    "TRUST_DOMAIN": "$TRUST_DOMAIN",
}
# cluster.env = proxyMetadata + WorkloadGroup/flag overrides
env = dict(md)
env.update({
    "ISTIO_INBOUND_PORTS": "*",
    "ISTIO_LOCAL_EXCLUDE_PORTS": "22,15090,15021,15020",
    "ISTIO_NAMESPACE": "$NAMESPACE",
    "ISTIO_SERVICE": "$WORKLOAD.$NAMESPACE",
    "ISTIO_SERVICE_CIDR": "*",
    "ISTIO_SVC_IP": "$VM_IP",
    "SERVICE_ACCOUNT": "$SERVICE_ACCOUNT",
})

def squote(v):
    return "'" + v.replace("'", "'\"'\"'") + "'"

lines = sorted("%s=%s" % (k, squote(v)) for k, v in env.items())
with open(out + "/cluster.env", "w") as f:
    f.write("\n".join(lines) + "\n")

# mesh.yaml: sigs.k8s.io/yaml output order (go-yaml puts '_' before letters,
# so ISTIO_META_* sorts before ISTIO_METAJSON_LABELS).
def yval(v):
    if v == "" or v in ("true", "false"):
        return '"%s"' % v
    if v.startswith("{"):
        return "'%s'" % v
    return v

def ykey(k):
    return [(0, c) if not c.isalpha() else (1, c) for c in k]

pm = "".join("    %s: %s\n" % (k, yval(md[k])) for k in sorted(md, key=ykey))
mesh = (
    "defaultConfig:\n"
    "  discoveryAddress: $ISTIOD_HOST:15012\n"
    "  meshId: $MESH_ID\n"
    "  proxyMetadata:\n" + pm +
    "  readinessProbe:\n"
    "    httpGet:\n"
    "      port: 8080\n"
    "  tracing:\n"
    "    zipkin:\n"
    "      address: zipkin.istio-system:9411\n"
)
with open(out + "/mesh.yaml", "w") as f:
    f.write(mesh)
PY

# --- hosts ------------------------------------------------------------------
printf '%s %s\n' "$INGRESS_IP" "$ISTIOD_HOST" > "$out/hosts"

# istioctl writes every file (and the output dir) with os.FileMode(0o744).
chmod 0744 "$out"/root-cert.pem "$out"/istio-token "$out"/cluster.env \
    "$out"/mesh.yaml "$out"/hosts

# --- bundle.tar.gz: as `tar czf bundle.tar.gz vmintegration/` ---------------
mkdir "$work/stage"
cp -p "$out"/* "$work/stage/"
mv "$work/stage" "$work/vmintegration"
chmod 0744 "$work/vmintegration"
(cd "$work" && tar --sort=name --owner=0 --group=0 --numeric-owner -czf "$tarball" \
    vmintegration/ )

echo "wrote $out/{root-cert.pem,istio-token,cluster.env,mesh.yaml,hosts} and $tarball"
