# shellcheck shell=bash
# Shared by the guest-side scripts of the VM end-to-end test (sourced, bash).
#
# The contract with the host (tests/vm.rs) is the second serial port, /dev/ttyS1, which
# qemu writes to results.log (the first, ttyS0, is the kernel and systemd console):
#
#   VMTEST <scenario> <key>=<value>     one fact; the host asserts on these
#   VMLOG <scenario> | <text>           evidence (command output, journal excerpts),
#                                       printed by the host when a scenario fails
#
# The guest records facts and the host judges them. No `set -e`: a failed step is
# recorded and the remaining scenarios still run.
set -uo pipefail

SEED=/mnt/vmtest
W=/var/lib/vmtest
SC=setup
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8

mkdir -p "$W" /run/vmtest
if [ ! -r "$SEED/params.env" ]; then
    mkdir -p "$SEED"
    mount -o ro LABEL=cidata "$SEED" 2>/dev/null || true
fi
# shellcheck source=/dev/null
. "$SEED/params.env"

# The results channel. Raw mode: no \r added to each \n, nothing echoed.
stty -F /dev/ttyS1 raw -echo 2>/dev/null || true
exec 7>>/dev/ttyS1

scenario() { SC=$1; }
mark() { printf 'VMTEST %s %s\n' "$SC" "$*" >&7; }
# vlog FILE [LINES]: the file's last LINES lines (default 150) as evidence.
vlog() {
    [ -s "$1" ] || return 0
    tail -n "${2:-150}" "$1" | sed "s/^/VMLOG $SC | /" >&7
}
# vcmd CMD...: a command's output as evidence.
vcmd() {
    printf 'VMLOG %s | $ %s\n' "$SC" "$*" >&7
    "$@" 2>&1 | tail -n 150 | sed "s/^/VMLOG $SC | /" >&7
}
uptime_s() {
    local up _
    read -r up _ </proc/uptime
    echo "$up"
}
# Every output line prefixed with the /proc/uptime second it arrived at.
stamp() {
    local l
    while IFS= read -r l || [ -n "$l" ]; do
        printf '%s %s\n' "$(uptime_s)" "$l"
    done
}

# run_step NAME CMD...: runs CMD (stdin /dev/null), stdout and stderr stamped line by
# line, and reports rc, start and end (uptime), every output line, and the times apt's
# hooks recorded around each dpkg run (image: /etc/apt/apt.conf.d/99vmtest-timing).
run_step() {
    local name=$1
    shift
    local d=$W/steps/$name
    rm -rf "$d"
    mkdir -p "$d"
    mkfifo "$d/o.fifo" "$d/e.fifo"
    stamp <"$d/o.fifo" >"$d/out" &
    local p1=$!
    stamp <"$d/e.fifo" >"$d/err" &
    local p2=$!
    : >/run/vmtest/dpkg-times
    local t0 t1 rc
    t0=$(uptime_s)
    "$@" >"$d/o.fifo" 2>"$d/e.fifo" </dev/null
    rc=$?
    t1=$(uptime_s)
    wait "$p1" "$p2"
    rm -f "$d/o.fifo" "$d/e.fifo"
    echo "$rc" >"$d/rc"
    mark "$name.cmd=$*"
    mark "$name.rc=$rc"
    mark "$name.t_start=$t0"
    mark "$name.t_end=$t1"
    local l
    while IFS= read -r l; do mark "$name.stdout=$l"; done <"$d/out"
    while IFS= read -r l; do mark "$name.stderr=$l"; done <"$d/err"
    while IFS= read -r l; do mark "$name.dpkg=$l"; done </run/vmtest/dpkg-times
    return "$rc"
}

# HTTP status code of a GET (000: no answer).
http_code() {
    python3 - "$1" <<'EOF' 2>/dev/null || echo 000
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}

# systemd's view of the istio service, for restart accounting.
unit_prop() { systemctl show -p "$2" --value "$1" 2>/dev/null; }
istio_starts() { journalctl -b -u istio.service --no-pager -o cat 2>/dev/null | grep -c '^Started istio.service' || true; }
pkg_state() {
    dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$1" 2>/dev/null || echo "not-known"
}

# The paths the host told us to check (tests/common FILES and DIRS) and the /etc/istio
# link: mode, numeric owner and group (istio-proxy's ids are reported separately: the
# fixture package's postinst gives it uid/gid 998, which on Debian is also
# systemd-network's, so names would mislead), type, and content hashes.
stat_all() { # KEY
    local p
    for p in $CHECK_FILES $CHECK_DIRS /etc/istio; do
        if [ -e "$p" ] || [ -L "$p" ]; then
            mark "$1=$p $(stat -c '%a %u %g %F' "$p")"
        else
            mark "$1=$p absent"
        fi
    done
    for p in $CHECK_FILES; do
        [ -f "$p" ] && mark "sha256=$p $(sha256sum <"$p" | cut -d' ' -f1)"
    done
}
mtimes() { # KEY
    local p
    for p in $CHECK_FILES /etc/hosts; do
        mark "$1=$p $(stat -c '%y %i' "$p" 2>/dev/null || echo absent)"
    done
}

# snapshot NAME: what vmagent may touch, to compare after uninstall. /etc/passwd and
# /etc/group are left out: the sidecar package's istio-proxy account stays (the real
# package never removes it either).
snapshot() {
    local d=$W/snap-$1 p
    rm -rf "$d"
    mkdir -p "$d"
    cp /etc/hosts "$d/hosts"
    for p in /etc/istio /var/lib/istio /etc/certs /var/run/secrets /etc/tmpfiles.d; do
        if [ -e "$p" ] || [ -L "$p" ]; then
            # -P (default): a symlink is listed as a link, never followed.
            find "$p" \( -type l -printf '%p link %u:%g -> %l\n' \) -o \
                \( -type d -printf '%p dir %m %u:%g\n' \) -o \
                \( -type f -printf '%p file %m %u:%g ' -exec sh -c 'sha256sum <"$1" | cut -d" " -f1' _ {} \; \)
        fi
    done | LC_ALL=C sort >"$d/files"
    dpkg-query -W -f='${Package} ${db:Status-Abbrev}${Version}\n' | LC_ALL=C sort >"$d/dpkg"
    # The test's own units (vmtest-*) are not vmagent's doing.
    systemctl list-unit-files --no-legend --no-pager 2>/dev/null | awk '$1 !~ /^vmtest-/ {print $1, $2}' |
        LC_ALL=C sort >"$d/units"
    find /etc/systemd/system /lib/systemd/system -path '*istio*' -o -path '*vmagent*' 2>/dev/null |
        LC_ALL=C sort >"$d/systemd-files"
}
# snapdiff A B: every difference as a `snapdiff=<part> <line>` fact ('-' only in A,
# '+' only in B).
snapdiff() {
    local part l n=0
    for part in hosts files dpkg units systemd-files; do
        while IFS= read -r l; do
            mark "snapdiff=$part $l"
            n=$((n + 1))
        done < <(diff "$W/snap-$1/$part" "$W/snap-$2/$part" | sed -n 's/^< /- /p; s/^> /+ /p')
    done
    mark "snapdiff_count=$n"
}

# elapsed T0: seconds since uptime T0 (awk: no python start-up per poll under TCG).
elapsed() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.2f\n", b - a }'; }

# wait_ready SECS: polls `vmagent status` (exit 0 = ready) until ready or SECS passed,
# then records its JSON document.
wait_ready() {
    local t0 rc=1 json
    t0=$(uptime_s)
    while :; do
        vmagent status >/dev/null 2>&1
        rc=$?
        [ "$rc" -eq 0 ] && break
        awk -v e="$(elapsed "$t0")" -v m="$1" 'BEGIN { exit !(e > m) }' && break
        sleep 1
    done
    mark "status_rc=$rc"
    mark "status_wait_s=$(elapsed "$t0")"
    json=$(vmagent status --output json 2>/dev/null)
    mark "status_json=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), separators=(",", ":")))' 2>/dev/null)"
}

# service_facts PREFIX: systemd's view of the istio service and the proxy's readiness,
# as PREFIXpid=..., PREFIXnrestarts=... (restart accounting: MainPID, NRestarts, and
# how often the journal says the unit was started in this boot).
proxy_ids() {
    mark "proxy_ids=$(getent passwd istio-proxy | cut -d: -f3,4 | tr : ' ')"
    mark "proxy_uid_users=$(getent passwd | awk -F: -v u="$(id -u istio-proxy 2>/dev/null)" '$3 == u { printf "%s ", $1 }')"
}

# The unit that runs early.sh at the next boot: after systemd-tmpfiles-setup.service
# (which puts the token back from vmagent's copy), before vmagent and istio.
install_early_unit() {
    cat >/etc/systemd/system/vmtest-early.service <<'UNIT'
[Unit]
Description=vmagent VM test: the token before vmagent and istio start
DefaultDependencies=no
After=local-fs.target systemd-tmpfiles-setup.service
Before=vmagent.service istio.service

[Service]
Type=oneshot
ExecStart=/bin/bash /var/lib/vmtest/guest/early.sh

[Install]
WantedBy=multi-user.target
UNIT
}

service_facts() {
    local p=${1:-}
    mark "${p}istio_active=$(systemctl is-active istio.service 2>/dev/null)"
    mark "${p}istio_enabled=$(systemctl is-enabled istio.service 2>/dev/null)"
    mark "${p}ready_http=$(http_code http://127.0.0.1:15021/healthz/ready)"
    mark "${p}pid=$(unit_prop istio.service MainPID)"
    mark "${p}nrestarts=$(unit_prop istio.service NRestarts)"
    mark "${p}starts=$(istio_starts)"
}

# jwt_claim FILE CLAIM: one claim of the JWT in FILE ("none" when unreadable).
jwt_claim() {
    python3 - "$1" "$2" <<'PY' 2>/dev/null || echo none
import base64, json, sys
p = open(sys.argv[1]).read().strip().split(".")[1]
print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))[sys.argv[2]])
PY
}
# token_sha FILE: the sha256 of the JWT in FILE without its line end (vmagent installs a
# token with a trailing newline; the server logs the sha256 of the bare token).
token_sha() { tr -d '\n' <"$1" | sha256sum | cut -d' ' -f1; }
# token_facts PREFIX FILE: the token's mode and owners, sha256 (token_sha) and exp.
token_facts() {
    if [ -e "$2" ]; then
        mark "${1}token=$(stat -c '%a %u %g' "$2")"
        mark "${1}token_sha256=$(token_sha "$2")"
        mark "${1}token_exp=$(jwt_claim "$2" exp)"
    else
        mark "${1}token=absent"
    fi
}
# The guest's TokenRequest server (tokenserver.py, scenarios s10 and s11): its files and
# the log of what it issued.
TOKEN_DIR=/etc/vmtest-token
TOKEN_LOG=$W/tokenserver.log
