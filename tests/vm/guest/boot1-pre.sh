#!/bin/bash
# First boot, from cloud-init's runcmd, before vmagent ever ran: the pristine snapshot,
# the package server, then scenario 4 (a bad checksum must leave the VM untouched).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /mnt/vmtest/guest/lib.sh

scenario boot1
mark "uptime=$(uptime_s)"
mark "kernel=$(uname -r)"
mark "run_fstype=$(findmnt -no FSTYPE /run)"
# Wall clock minus uptime: turns file mtimes into seconds since boot.
mark "clock_offset=$(awk -v w="$(date +%s.%N)" -v u="$(uptime_s)" 'BEGIN { printf "%.3f", w - u }')"
mark "cloud_init=$(cloud-init --version 2>&1)"
# The later boots' units run before the seed is mounted: keep the scripts on disk.
rm -rf "$W/guest"
cp -r "$SEED/guest" "$W/guest"

# Timing: apt runs these around every dpkg invocation, so the dpkg time inside
# `vmagent apply` can be told apart from vmagent's own (on the /proc/uptime clock).
cat >/etc/apt/apt.conf.d/99vmtest-timing <<'EOF'
DPkg::Pre-Invoke { "mkdir -p /run/vmtest; read u x </proc/uptime; echo pre $u >>/run/vmtest/dpkg-times"; };
DPkg::Post-Invoke { "mkdir -p /run/vmtest; read u x </proc/uptime; echo post $u >>/run/vmtest/dpkg-times"; };
EOF
# vmagent runs `dpkg -i` itself when nothing is missing: the same stamps, from a wrapper
# first on root's PATH (apt calls /usr/bin/dpkg by its full path, so nothing counts twice).
cat >/usr/local/sbin/dpkg <<'EOF'
#!/bin/sh
case " $* " in
*" -i "* | *" --install "*)
    mkdir -p /run/vmtest
    read -r u _ </proc/uptime
    echo "pre $u" >>/run/vmtest/dpkg-times
    /usr/bin/dpkg "$@"
    rc=$?
    read -r u _ </proc/uptime
    echo "post $u" >>/run/vmtest/dpkg-times
    exit "$rc"
    ;;
esac
exec /usr/bin/dpkg "$@"
EOF
chmod 755 /usr/local/sbin/dpkg
mark "dpkg_on_path=$(command -v dpkg)"

# The sidecar packages, served on loopback so vmagent's real download path runs (the
# guest has no other network). Requests are logged to this unit's journal. Started
# before the snapshot: its transient unit is not vmagent's doing.
systemd-run --unit=vmtest-pkgserver --quiet \
    python3 -m http.server --bind 127.0.0.1 --directory "$SEED/pkgs" "$PORT"
for _ in $(seq 1 60); do
    [ "$(http_code "http://127.0.0.1:$PORT/")" = 200 ] && break
    sleep 0.5
done
mark "pkgserver=$(http_code "http://127.0.0.1:$PORT/")"
mark "hosts_b64=$(base64 -w0 /etc/hosts)"

snapshot pre
vcmd cat "$W/snap-pre/hosts"

# --- scenario 4: wrong --package-sha256 on the pristine VM --------------------------
scenario s4
run_step apply "$SEED/vmagent" apply "$SEED/bundle" --no-preflight \
    --package "http://127.0.0.1:$PORT/$V1_DEB" --package-sha256 "$BAD_SHA" --wait 30
mark "pkg=$(pkg_state istio-sidecar)"
mark "istio_load=$(unit_prop istio.service LoadState)"
mark "istio_active=$(systemctl is-active istio.service 2>/dev/null)"
mark "cache=$(find /var/cache/vmagent -mindepth 1 -printf '%f ' 2>/dev/null)"
mark "tmpfiles=$(find /etc /var /run -name '*.vmagent-tmp' -printf '%p ' 2>/dev/null)"
mark "pkg_gets=$(journalctl -u vmtest-pkgserver --no-pager -o cat | grep -c "GET /$V1_DEB")"
# What `vmagent status` makes of a VM where the package never got installed.
json=$("$SEED/vmagent" status --output json 2>/dev/null)
mark "status_rc=$?"
mark "status_reason=$(printf '%s' "$json" | python3 -c 'import json,sys; h=json.load(sys.stdin)["health"]; print(h["state"], h.get("reason"))' 2>&1)"
snapshot s4
snapdiff pre s4
