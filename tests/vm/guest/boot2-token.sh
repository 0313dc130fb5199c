#!/bin/bash
# Third boot, from boot2.sh after scenario 5 (the daemon runs with the example bundle,
# whose token lasts until 2096, and no [token] section): issue 14's token provider on
# the real VM.
#
# Scenario 10: a TokenRequest server on 127.0.0.1 (tokenserver.py, TLS with the host's
# test CA), a bundle whose istio-token expires 60 s after it was made (minted here, on
# the guest's clock, right before use: the host's would be minutes old by now), applied
# with the daemon stopped so that token is the one installed, then `[token] provider =
# "kubernetes"` and the daemon started. Past that token's exp (+20 s) the proxy must
# still be ready and the installed token one the server issued, later than the bundle's.
#
# Scenario 11, set-up: the daemon stopped, its boot copy (which the tmpfiles.d rule puts
# back on /run at boot) and its token cache both holding the now expired bundle token,
# as a VM switched off for longer than its token's life finds them; then the reboot
# into boot3.sh, which checks the daemon got a fresh token before istio started.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /var/lib/vmtest/guest/lib.sh

scenario s10
mark "uptime=$(uptime_s)"
# The server's certificate and key (the host's TestCa, in the seed), the CA for
# vmagent, and the bearer credential: root-only, as vmagent requires of it.
install -d -m 0700 "$TOKEN_DIR"
install -m 0644 "$SEED/token/ca.pem" "$TOKEN_DIR/ca.pem"
install -m 0644 "$SEED/token/server.pem" "$TOKEN_DIR/server.pem"
install -m 0600 "$SEED/token/server-key.pem" "$TOKEN_DIR/server-key.pem"
install -m 0600 "$SEED/token/credential" "$TOKEN_DIR/credential"
: >"$TOKEN_LOG"
# Before vmagent.service at every boot from now on (scenario 11 needs it there when the
# daemon starts); Type=notify: READY=1 once it listens.
cat >/etc/systemd/system/vmtest-tokenserver.service <<UNIT
[Unit]
Description=vmagent VM test: Kubernetes TokenRequest endpoint on 127.0.0.1:$TOKEN_PORT
DefaultDependencies=no
After=local-fs.target
Before=vmagent.service
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/bin/python3 $W/guest/tokenserver.py serve $TOKEN_PORT $TOKEN_DIR/server.pem $TOKEN_DIR/server-key.pem $TOKEN_DIR/credential $TOKEN_LOG

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
run_step server systemctl enable --now vmtest-tokenserver.service
mark "server_active=$(systemctl is-active vmtest-tokenserver.service)"

# The bundle: the example's members with a 60 s token for its identity
# (system:serviceaccount:vm-ns:vm-sa), as the daemon's source (a tar.gz, root-only).
b=$W/bundle-60s
rm -rf "$b"
cp -r "$SEED/bundle" "$b"
python3 "$W/guest/tokenserver.py" mint vm-ns vm-sa 60 | tr -d '\n' >"$b/istio-token"
cp "$b/istio-token" "$W/token-60s"
chmod 0600 "$W/token-60s"
mark "bundle_token_sha256=$(token_sha "$b/istio-token")"
mark "bundle_token_exp=$(jwt_claim "$b/istio-token" exp)"
mark "bundle_token_iat=$(jwt_claim "$b/istio-token" iat)"
# shellcheck disable=SC2046 # the five member names, no spaces
tar -czf "$W/bundle-60s.tar.gz" -C "$b" $(ls "$b")
install -m 0600 "$W/bundle-60s.tar.gz" /etc/vmagent/bundle.tar.gz

# Installed by a plain apply (still the bundle provider): the daemon is stopped so it
# neither races the apply nor replaces the token before the provider is configured.
run_step stop systemctl stop vmagent.service
run_step apply vmagent apply /etc/vmagent/bundle.tar.gz --no-package --no-preflight --wait 120
token_facts applied. /var/run/secrets/tokens/istio-token

# The provider (README, token providers). vmagent refuses a provider while any config
# file is open to other users: the package's config.toml is 0644, so all become 0600.
cat >/etc/vmagent/config.d/60-vmtest-token.toml <<TOML
# vmagent VM test (tests/vm, scenarios 10 and 11): tokens from the guest's
# TokenRequest server.
[token]
provider = "kubernetes"
server = "https://127.0.0.1:$TOKEN_PORT"
ca_file = "$TOKEN_DIR/ca.pem"
credential_file = "$TOKEN_DIR/credential"
duration_secs = 600
TOML
chmod 0600 /etc/vmagent/config.toml /etc/vmagent/config.d/*.toml
run_step config vmagent config show
run_step start systemctl start vmagent.service
wait_ready 120
service_facts started.

# Past the bundle token's exp (+20 s): the proxy is probed all along; every probe after
# the exp must answer 200.
exp=$(jwt_claim "$W/token-60s" exp)
after=0
bad=""
while [ "$(date +%s)" -le $((exp + 20)) ]; do
    code=$(http_code http://127.0.0.1:15021/healthz/ready)
    now=$(date +%s)
    if [ "$now" -gt "$exp" ]; then
        after=$((after + 1))
        [ "$code" = 200 ] || bad="$bad $now:$code"
    fi
    sleep 1
done
mark "probes_after_exp=$after"
mark "probes_not_ready=${bad# }"
mark "now=$(date +%s)"
wait_ready 30
service_facts ""
token_facts "" /var/run/secrets/tokens/istio-token
mark "boot_copy_sha256=$(token_sha /var/lib/vmagent/istio-token)"
while IFS= read -r l; do mark "server_log=$l"; done <"$TOKEN_LOG"
while IFS= read -r l; do mark "journal_refreshed=$l"; done < <(journalctl -b -u vmagent.service --no-pager -o cat | grep 'token refreshed')
# No token text in vmagent's journal: a JWT's header starts with "eyJ" ('{"' in
# base64url); nor the credential.
mark "journal_jwt=$(journalctl -b -u vmagent.service --no-pager -o cat | grep -c 'eyJ')"
mark "journal_credential=$(journalctl -b -u vmagent.service --no-pager -o cat | grep -cF "$(cat "$TOKEN_DIR/credential")")"
vcmd journalctl -b -u vmagent.service --no-pager -o short-monotonic
vcmd journalctl -b -u vmtest-tokenserver.service --no-pager -o short-monotonic
vcmd vmagent status

# --- scenario 11, set-up: expired boot copy and cache, then the reboot -----------------
scenario s11
run_step stop systemctl stop vmagent.service
install -m 0600 "$W/token-60s" /var/lib/vmagent/istio-token
install -m 0600 "$W/token-60s" /var/lib/vmagent/token/istio-token
mark "before.boot_copy_sha256=$(token_sha /var/lib/vmagent/istio-token)"
mark "before.cache_sha256=$(token_sha /var/lib/vmagent/token/istio-token)"
mark "before.boot_copy_exp=$(jwt_claim /var/lib/vmagent/istio-token exp)"
mark "before.now=$(date +%s)"
mark "before.vmagent_enabled=$(systemctl is-enabled vmagent.service 2>&1)"
mark "before.boot_id=$(cat /proc/sys/kernel/random/boot_id)"
cat >/etc/systemd/system/vmtest-boot3.service <<'UNIT'
[Unit]
Description=vmagent VM test: fourth boot scenarios
DefaultDependencies=no
Wants=basic.target
After=basic.target vmagent.service istio.service cloud-final.service
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStart=/bin/bash /var/lib/vmtest/guest/boot3.sh

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable vmtest-boot3.service 2>/dev/null
mark "reboot=$(uptime_s)"
systemctl --no-block reboot
