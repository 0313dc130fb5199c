# Shared by the fake systemctl and its supervisor (tests/common/fake_systemd.rs).
# Needs R (the target root) and S (the state directory).

# A running process (a zombie is not: nothing reaps them in some containers).
live() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    read -r st < "/proc/$1/stat" 2>/dev/null || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ]
}

pid_of() { cat "$S/$1" 2>/dev/null; }

# `systemctl mask`: a symlink to /dev/null in /etc/systemd/system hides the unit file.
masked() { # unit
    [ -L "$R/etc/systemd/system/$1" ] && [ "$(readlink "$R/etc/systemd/system/$1")" = /dev/null ]
}

# The unit's file, in systemd's search order (a masked unit has none).
unit_file() { # unit
    masked "$1" && return 1
    for d in etc/systemd/system usr/lib/systemd/system lib/systemd/system; do
        if [ -f "$R/$d/$1" ]; then
            echo "$R/$d/$1"
            return 0
        fi
    done
    return 1
}

# The directories `enable` links into (TARGET.wants / TARGET.requires), one a line;
# none for a static unit. Also=, Alias= and DefaultInstance= are not modelled: a unit
# with only those counts as static here.
install_targets() { # unit-file
    awk -F= '
        /^[[:space:]]*\[/ { sec = $0; next }
        sec ~ /^\[Install\]/ && $1 == "WantedBy" { n = split($2, t, " "); for (i = 1; i <= n; i++) print t[i] ".wants" }
        sec ~ /^\[Install\]/ && $1 == "RequiredBy" { n = split($2, t, " "); for (i = 1; i <= n; i++) print t[i] ".requires" }
    ' "$1"
}

# A time setting of the unit's [Service] section in seconds (fractions allowed):
# `10`, `10s`, `500ms`, `2min`; DEFAULT when the unit does not set it. Read from the
# unit file as it is now (real systemd uses the file as of the last daemon-reload).
unit_seconds() { # unit key default
    v=
    if uf=$(unit_file "$1"); then
        v=$(sed -n "s/^[[:space:]]*$2=[[:space:]]*//p" "$uf" | tail -n 1)
    fi
    awk -v v="$v" -v d="$3" 'BEGIN {
        if (v == "") { print d; exit }
        n = v + 0
        if (v ~ /ms$/) n = n / 1000
        else if (v ~ /min$/) n = n * 60
        print n
    }'
}
