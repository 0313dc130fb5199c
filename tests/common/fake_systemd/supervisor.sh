#!/bin/sh
# fake systemd's supervisor for istio.service (tests/common/fake_systemd.rs):
# Restart=always with the unit's own RestartSec= (systemd's default 100 ms when unset),
# in its own session and process group (its pid is the group id), with a watchdog that
# kills the group when the test is gone. Each run is recorded in $S/runs as
# `start <unix time>` and `exit <unix time> <status>` (nanosecond clock) so tests can
# check the pause between a crash and the next start.
S="$FAKE_SYSTEMD_STATE"
R="$FAKE_SYSTEMD_ROOT"
O="${FAKE_SYSTEMD_OWNER:-}"
UNIT=istio.service
. "$(dirname "$0")/lib.sh"
wanted() { [ -d "$R" ] && [ -d "$S" ] && { [ -z "$O" ] || live "$O"; }; }
# Watchdog: the whole group goes when the root, the state or the test goes.
( while wanted; do sleep 0.3; done; kill -s KILL 0 ) </dev/null >/dev/null 2>&1 &
echo $$ > "$S/supervisor.tmp" && mv -f "$S/supervisor.tmp" "$S/supervisor"
while wanted; do
    # The journal: istio-start.sh's own output, as systemd would record it.
    printf '#fake-journal-run %s\n' "$(date +%s)" >> "$S/journal"
    FIXTURE_ROOT="$R" sh "$R/usr/local/bin/istio-start.sh" </dev/null >>"$S/journal" 2>&1 &
    child=$!
    echo "$child" > "$S/main.tmp" && mv -f "$S/main.tmp" "$S/main"
    echo "start $(date +%s.%N)" >> "$S/runs"
    wait "$child"
    status=$?
    rm -f "$S/main"
    echo "exit $(date +%s.%N) $status" >> "$S/runs"
    # ExecStopPost
    FIXTURE_ROOT="$R" sh "$R/usr/local/bin/istio-start.sh" clean </dev/null >/dev/null 2>&1
    wanted || break
    # RestartSec in activating/auto-restart; systemd counts the restart (NRestarts)
    # when the wait is over and the restart job runs.
    sleep "$(unit_seconds "$UNIT" RestartSec 0.1)"
    wanted || break
    n=$(cat "$S/restarts" 2>/dev/null || echo 0)
    echo $((n + 1)) > "$S/restarts.tmp" && mv -f "$S/restarts.tmp" "$S/restarts"
done
kill -s KILL 0
