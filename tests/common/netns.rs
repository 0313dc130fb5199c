//! Running a command in a network namespace of its own (`unshare --net`, loopback up),
//! optionally beside a real `dnsmasq` (Debian package dnsmasq-base) on 127.0.0.1:15053
//! standing in for pilot-agent's DNS proxy. Port 15053 is global on a host: in a fresh
//! namespace parallel tests and the host's own resolver never collide, and nothing
//! depends on the host's DNS.
//!
//! dnsmasq runs as a daemon (no --keep-in-foreground): it binds its sockets before it
//! forks and the parent exits, so once the `dnsmasq` command has returned, it answers:
//! no polling, no sleep. It is killed (by its pid file) when the command is done, and
//! the namespace goes with the last process in it.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

/// Runs in the namespace: loopback up, dnsmasq when `$DNSMASQ_ARGS` is set (split on
/// blanks: the tests' arguments have none inside) on `$DNSMASQ_PORT` (15053), then the
/// command, then dnsmasq is
/// stopped; the command's status is the script's.
const SCRIPT: &str = r#"
ip link set lo up || exit 90
if [ -n "$DNSMASQ_ARGS" ]; then
  dnsmasq --conf-file=/dev/null -u root --port "${DNSMASQ_PORT:-15053}" --listen-address 127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --pid-file="$PIDFILE" $DNSMASQ_ARGS || exit 91
fi
"$@"
rc=$?
if [ -s "$PIDFILE" ]; then kill "$(cat "$PIDFILE")"; fi
exit $rc
"#;

/// Runs `program args` in a new network namespace, with dnsmasq started with `dnsmasq`
/// (its answers, e.g. `--address=/istiod.istio-system.svc/10.1.2.3`) unless `None`.
/// `timeout` guards against a hang (it kills the whole thing after 300 s).
pub fn run<I, S>(
    dnsmasq: Option<&[&str]>,
    program: &OsStr,
    args: I,
    envs: &[(&str, &OsStr)],
) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Command::new("timeout");
    c.args(["300", "unshare", "--net", "--", "sh", "-c", SCRIPT, "sh"])
        .arg(program)
        .args(args)
        .env("PIDFILE", dir.path().join("dnsmasq.pid"))
        .env(
            "DNSMASQ_ARGS",
            dnsmasq.map(|a| a.join(" ")).unwrap_or_default(),
        )
        .stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().expect("run timeout/unshare");
    assert!(
        !matches!(out.status.code(), Some(90 | 91 | 124)),
        "the namespace or dnsmasq could not be set up (exit {:?}: 90 loopback, 91 dnsmasq, 124 hang guard): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
