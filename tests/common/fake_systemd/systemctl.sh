#!/bin/sh
# fake systemctl for vmagent's tests (tests/common/fake_systemd.rs).
# istio.service runs under supervisor.sh; every other unit only has a unit-file state
# (masked, static, enabled, disabled) and an active flag in $S/active/. Messages and exit
# codes are systemd 252's (Debian bookworm), as a live `systemctl` prints them.
S="${FAKE_SYSTEMD_STATE:?FAKE_SYSTEMD_STATE is not set}"
R="${FAKE_SYSTEMD_ROOT:?FAKE_SYSTEMD_ROOT is not set}"
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
SUPERVISED=istio.service
PROPS=LoadState,ActiveState,SubState,NRestarts,NeedDaemonReload,UnitFileState
ETC=etc/systemd/system
printf '%s\n' "$*" >> "$S/calls"

unexpected() {
    echo "fake systemctl: unexpected arguments: $*" >&2
    exit 64
}

# Stop istio.service, KillMode=mixed: the supervisor goes first (no restart), SIGTERM
# to the main process and a wait for it to exit (the unit's TimeoutStopSec), then
# SIGKILL to the rest of the group, then ExecStopPost. Returns when it is all done.
stop_supervised() {
    p=$(pid_of supervisor)
    m=$(pid_of main)
    # (A zombie keeps its pid: /proc/PID exists while the pid is still ours.)
    if [ -n "$p" ] && [ -r "/proc/$p/stat" ]; then
        kill -s KILL "$p" 2>/dev/null
        if live "$m"; then
            kill -s TERM "$m" 2>/dev/null
            # A deadline on the clock, not a count of naps: on a loaded machine the
            # naps take longer than they say.
            until_s=$(( $(date +%s) + $(unit_seconds "$SUPERVISED" TimeoutStopSec 90 | cut -d. -f1) + 1 ))
            while live "$m" && [ "$(date +%s)" -lt "$until_s" ]; do sleep 0.01; done
        fi
        kill -s KILL -- "-$p" 2>/dev/null
        FIXTURE_ROOT="$R" sh "$R/usr/local/bin/istio-start.sh" clean </dev/null >/dev/null 2>&1
    fi
    rm -f "$S/supervisor" "$S/main"
}

# Start istio.service: returns once the supervisor forked the first run (Type=simple:
# systemd does not wait for more). The wait is long because a loaded machine can take
# seconds to get a shell going; it is a hang guard, not a timing assumption.
start_supervised() {
    echo 0 > "$S/restarts.tmp" && mv -f "$S/restarts.tmp" "$S/restarts"
    : > "$S/runs"
    setsid -f sh "$HERE/supervisor.sh" </dev/null >>"$S/supervisor.log" 2>&1
    until_s=$(( $(date +%s) + 120 ))
    while [ ! -s "$S/runs" ] && [ "$(date +%s)" -lt "$until_s" ]; do sleep 0.02; done
    if [ ! -s "$S/runs" ]; then
        echo "Job for $SUPERVISED failed (fake: the supervisor did not start in 120 s)." >&2
        exit 1
    fi
}

# `start`/`restart`/`stop` may only go on to run a unit that is there and not masked.
need_unit() { # verb unit
    if masked "$2"; then
        echo "Failed to $1 $2: Unit $2 is masked." >&2
        exit 1
    fi
    if ! unit_file "$2" >/dev/null; then
        echo "Failed to $1 $2: Unit $2 not found." >&2
        exit 5
    fi
}

is_active() { # unit
    if [ "$1" = "$SUPERVISED" ]; then live "$(pid_of supervisor)"; else [ -f "$S/active/$1" ]; fi
}

# The symlinks `enable` made for the unit, in any .wants/.requires directory.
links_of() { # unit
    for l in "$R/$ETC"/*.wants/"$1" "$R/$ETC"/*.requires/"$1"; do
        [ -L "$l" ] && echo "$l"
    done
}

# What systemd remembers of the loaded unit file: its path, content and mtime (systemd
# compares the mtime; the checksum catches a rewrite within the mtime's granularity).
unit_sig() { # unit-file
    printf '%s %s %s\n' "$1" "$(cksum < "$1")" "$(stat -c %y "$1")"
}

# daemon-reload, and what `enable`/`disable` do implicitly: load istio.service afresh.
reload() {
    if uf=$(unit_file "$SUPERVISED"); then
        unit_sig "$uf" > "$S/loaded-unit.tmp" && mv -f "$S/loaded-unit.tmp" "$S/loaded-unit"
    else
        rm -f "$S/loaded-unit"
    fi
}

# systemctl show's UnitFileState (empty when there is no unit file).
file_state() { # unit
    if masked "$1"; then echo masked
    elif ! uf=$(unit_file "$1"); then echo
    elif [ -n "$(links_of "$1")" ]; then echo enabled
    elif [ -z "$(install_targets "$uf")" ]; then echo static
    else echo disabled
    fi
}

show() { # unit
    u=$1
    need=no
    if masked "$u"; then
        load=masked
    elif uf=$(unit_file "$u"); then
        load=loaded
        # systemd 246+ loads a unit file that appeared since it last looked on first
        # reference, with no daemon-reload; a loaded one that changed needs a reload.
        if [ "$u" = "$SUPERVISED" ]; then
            [ -f "$S/loaded-unit" ] || reload
            [ "$(unit_sig "$uf")" = "$(cat "$S/loaded-unit")" ] || need=yes
        fi
    else
        load=not-found
    fi
    if [ "$u" = "$SUPERVISED" ] && live "$(pid_of supervisor)"; then
        if live "$(pid_of main)"; then active=active; sub=running
        else active=activating; sub=auto-restart
        fi
    elif is_active "$u"; then
        active=active; sub=running
    else
        active=inactive; sub=dead
    fi
    n=0
    [ "$u" = "$SUPERVISED" ] && n=$(cat "$S/restarts" 2>/dev/null || echo 0)
    printf 'LoadState=%s\nActiveState=%s\nSubState=%s\nNRestarts=%s\nNeedDaemonReload=%s\nUnitFileState=%s\n' \
        "$load" "$active" "$sub" "$n" "$need" "$(file_state "$u")"
}

# is-enabled: systemd 252 prints the state on stdout; 0 for enabled and static, 1 for
# disabled and masked; an unknown unit is an error on stderr, exit 1.
is_enabled() { # unit
    if masked "$1"; then echo masked; exit 1; fi
    if ! uf=$(unit_file "$1"); then
        echo "Failed to get unit file state for $1: No such file or directory" >&2
        exit 1
    fi
    if [ -n "$(links_of "$1")" ]; then echo enabled; exit 0; fi
    if [ -z "$(install_targets "$uf")" ]; then echo static; exit 0; fi
    echo disabled
    exit 1
}

enable() { # unit
    u=$1
    if masked "$u"; then
        echo "Failed to enable unit, unit /$ETC/$u is masked." >&2
        exit 1
    fi
    uf=$(unit_file "$u") || { echo "Failed to enable unit: Unit file $u does not exist." >&2; exit 1; }
    targets=$(install_targets "$uf")
    if [ -z "$targets" ]; then
        # A static unit: systemd explains, links nothing, and succeeds.
        cat >&2 <<'MSG'
The unit files have no installation config (WantedBy=, RequiredBy=, Also=,
Alias= settings in the [Install] section, and DefaultInstance= for template
units). This means they are not meant to be enabled using systemctl.
 
Possible reasons for having this kind of units are:
• A unit may be statically enabled by being symlinked from another unit's
  .wants/ or .requires/ directory.
• A unit's purpose may be to act as a helper for some other unit which has
  a requirement dependency on it.
• A unit may be started when needed via activation (socket, path, timer,
  D-Bus, udev, scripted systemctl call, ...).
• In case of template units, the unit is meant to be enabled with some
  instance name specified.
MSG
        return 0
    fi
    for t in $targets; do
        mkdir -p "$R/$ETC/$t"
        ln -sfn "/${uf#"$R"/}" "$R/$ETC/$t/$u"
        echo "Created symlink /$ETC/$t/$u → /${uf#"$R"/}." >&2
    done
}

case "$#:$1" in
"3:show")
    [ "$3" = "--property=$PROPS" ] || unexpected "$@"
    show "$2"
    ;;
"2:is-enabled") is_enabled "$2" ;;
[234]:enable)
    # enable [--now] [--no-reload] UNIT: link, reload unless --no-reload (systemctl-enable.c),
    # then with --now start as `start` does (loading the unit on first reference).
    now=no; rl=yes; u=
    shift
    for a in "$@"; do
        case "$a" in
        --now) now=yes ;;
        --no-reload) rl=no ;;
        -*) unexpected enable "$@" ;;
        *) [ -z "$u" ] || unexpected enable "$@"; u=$a ;;
        esac
    done
    [ -n "$u" ] || unexpected enable "$@"
    enable "$u"
    [ "$rl" = no ] || reload
    if [ "$now" = yes ]; then
        need_unit start "$u"
        if [ "$u" = "$SUPERVISED" ]; then
            [ -f "$S/loaded-unit" ] || reload
            live "$(pid_of supervisor)" || { stop_supervised; start_supervised; }
        else
            mkdir -p "$S/active" && : > "$S/active/$u"
        fi
    fi
    ;;
"2:disable")
    for l in $(links_of "$2"); do rm -f "$l" && echo "Removed \"/${l#"$R"/}\"." >&2; done
    reload
    ;;
"2:mask")
    if [ -e "$R/$ETC/$2" ] && ! masked "$2"; then
        echo "Failed to mask unit: File /$ETC/$2 already exists." >&2
        exit 1
    fi
    mkdir -p "$R/$ETC"
    ln -sfn /dev/null "$R/$ETC/$2"
    echo "Created symlink /$ETC/$2 → /dev/null." >&2
    ;;
"2:unmask")
    if masked "$2"; then rm -f "$R/$ETC/$2" && echo "Removed \"/$ETC/$2\"." >&2; fi
    ;;
"1:daemon-reload") reload ;;
"2:start")
    need_unit start "$2"
    [ "$2" != "$SUPERVISED" ] || [ -f "$S/loaded-unit" ] || reload
    # Starting an active unit does nothing.
    if [ "$2" = "$SUPERVISED" ]; then
        live "$(pid_of supervisor)" || { stop_supervised; start_supervised; }
    else
        mkdir -p "$S/active" && : > "$S/active/$2"
    fi
    ;;
"2:restart")
    need_unit restart "$2"
    if [ "$2" = "$SUPERVISED" ]; then
        stop_supervised
        start_supervised
    else
        mkdir -p "$S/active" && : > "$S/active/$2"
    fi
    ;;
"2:stop")
    if [ "$2" = "$SUPERVISED" ]; then stop_supervised; else rm -f "$S/active/$2"; fi
    ;;
*)
    unexpected "$@"
    ;;
esac
exit 0
