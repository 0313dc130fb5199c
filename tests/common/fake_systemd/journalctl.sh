#!/bin/sh
# fake journalctl for vmagent's tests (tests/common/fake_systemd.rs)
S="${FAKE_SYSTEMD_STATE:?FAKE_SYSTEMD_STATE is not set}"
printf '%s\n' "$*" >> "$S/journalctl-calls"
since=0
follow=
for a in "$@"; do
    case "$a" in
    --since=@*) since=${a#--since=@} ;;
    --follow|-f) follow=1 ;;
    esac
done
J="$S/journal"
P=$PPID
live() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    read -r st < "/proc/$1/stat" 2>/dev/null || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ]
}
n=0
# Until the caller (vmagent) or the state directory is gone.
while [ -d "$S" ] && live "$P"; do
    if [ -f "$J" ]; then
        total=$(wc -l < "$J")
        if [ "$total" -gt "$n" ]; then
            # Whole lines only (wc counts newlines); runs before --since are skipped.
            awk -v s="$since" -v from="$n" -v to="$total" '
                NR > to { exit }
                /^#fake-journal-run / { on = ($2 >= s); next }
                NR > from && on { print; fflush() }' "$J" || exit 0
            n=$total
        fi
    fi
    [ -n "$follow" ] || exit 0
    sleep 0.05
done
