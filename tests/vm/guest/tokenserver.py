#!/usr/bin/python3
"""The guest's Kubernetes TokenRequest endpoint for scenarios s10 and s11 (tests/vm.rs).

    tokenserver.py serve PORT CERT KEY CREDENTIAL LOG   (a Type=notify unit)
    tokenserver.py mint NS SA SECONDS                   (prints one token, for a bundle)

Shaped after the Kubernetes API reference for TokenRequest (authentication.k8s.io/v1,
the `create` verb on the `serviceaccounts/token` subresource) and what istioctl's
istioctl/pkg/workload/workload.go sends (`CreateToken` with audience istio-ca and
`ExpirationSeconds` = --tokenDuration): `POST /api/v1/namespaces/{ns}/serviceaccounts/
{sa}/token`, `Authorization: Bearer <credential>`, a TokenRequest body with
`spec.audiences` ["istio-ca"] and `spec.expirationSeconds` (the API server refuses
less than 10 minutes). Answers `201 Created` with the TokenRequest and `status.token`,
`status.expirationTimestamp`; errors are a `Status` object (401, 400, 404, 405), as
the API server's are. The tokens are JWT-shaped with sub
system:serviceaccount:NS:SA, aud istio-ca, iat, nbf, exp and a dummy signature: vmagent
does not verify signatures and there is no istiod here to do it.

Every answer is one line in LOG: `issued boot=<boot_id> uptime=<s> unix=<s>
sha256=<token sha256> iat=.. exp=.. sub=..` or `refused boot=.. uptime=.. status=..
why=..`. The uptime (seconds since this boot's kernel start) is the clock systemd's
*Monotonic timestamps use, so the guest scripts can order an issue against
istio.service's start. The token itself is never logged.
"""
import base64
import hashlib
import http.server
import json
import os
import re
import socket
import ssl
import sys
import time
import uuid

PATH = re.compile(r"^/api/v1/namespaces/([a-z0-9-]+)/serviceaccounts/([a-z0-9.-]+)/token$")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(ns, sa, seconds):
    now = int(time.time())
    claims = {
        "aud": ["istio-ca"],
        "exp": now + seconds,
        "iat": now,
        "nbf": now,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": str(uuid.uuid4())}},
        "sub": "system:serviceaccount:%s:%s" % (ns, sa),
    }
    header = b64(json.dumps({"alg": "RS256", "kid": "vmtest"}).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    return "%s.%s.%s" % (header, body, b64(b"vmtest-unsigned")), claims


def uptime():
    with open("/proc/uptime") as f:
        return f.read().split()[0]


def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def rfc3339(unix):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def sd_notify(msg):
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(msg.encode())


def serve(port, cert, key, credential_file, log_path):
    with open(credential_file) as f:
        credential = f.read().strip()

    def log(line):
        with open(log_path, "a") as f:
            f.write("%s boot=%s uptime=%s unix=%.3f\n" % (line, boot_id(), uptime(), time.time()))

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, code, doc):
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def refuse(self, code, reason, why):
            log("refused status=%d why=%s" % (code, why.replace(" ", "_")))
            self.answer(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "message": why, "reason": reason, "code": code})

        def do_GET(self):
            self.refuse(405, "MethodNotAllowed", "only POST creates a TokenRequest")

        def do_POST(self):
            m = PATH.match(self.path)
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if 0 < n <= 65536 else b""
            if not m:
                return self.refuse(404, "NotFound", "no such resource")
            if self.headers.get("Authorization") != "Bearer " + credential:
                return self.refuse(401, "Unauthorized", "bad bearer credential")
            try:
                req = json.loads(raw)
                spec = req["spec"]
                ok = (req.get("apiVersion") == "authentication.k8s.io/v1"
                      and req.get("kind") == "TokenRequest"
                      and spec.get("audiences") == ["istio-ca"]
                      and isinstance(spec.get("expirationSeconds"), int)
                      and spec["expirationSeconds"] >= 600)
            except (ValueError, KeyError, TypeError, AttributeError):
                ok = False
            if not ok:
                return self.refuse(400, "BadRequest", "not a TokenRequest for audience istio-ca with expirationSeconds >= 600")
            ns, sa = m.group(1), m.group(2)
            token, claims = mint(ns, sa, spec["expirationSeconds"])
            log("issued sha256=%s iat=%d exp=%d sub=%s" % (
                hashlib.sha256(token.encode()).hexdigest(), claims["iat"], claims["exp"], claims["sub"]))
            self.answer(201, {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": sa, "namespace": ns, "creationTimestamp": rfc3339(claims["iat"])},
                "spec": {"audiences": ["istio-ca"], "expirationSeconds": spec["expirationSeconds"],
                         "boundObjectRef": None},
                "status": {"token": token, "expirationTimestamp": rfc3339(claims["exp"])},
            })

        def log_message(self, fmt, *args):
            # Request lines to the unit's journal; the log file is the record.
            sys.stderr.write("tokenserver: " + (fmt % args) + "\n")

    httpd = http.server.HTTPServer(("127.0.0.1", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    log("listening port=%d" % port)
    sd_notify("READY=1")
    httpd.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "mint":
        print(mint(sys.argv[2], sys.argv[3], int(sys.argv[4]))[0])
    elif len(sys.argv) == 7 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        sys.exit(__doc__)
