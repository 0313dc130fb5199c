//! Rotation of the sidecar's logs (issue 16 part 5): apply installs a logrotate rule for
//! istio.log and istio.err.log (size and count from `[logs]`), uninstall removes it, and
//! the real `logrotate` (Debian package) run on the installed rule rotates a log the
//! proxy keeps appending to while vmagent's follower reads it without losing a line.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::output::{ok, show};
use common::token_root::put;
use common::{vmagent, Spec, TestRoot};
use vmagent::health::follow::Follower;

const RULE: &str = "/etc/logrotate.d/vmagent-istio";

fn applied(r: &TestRoot, dir: &Path) {
    let b = Spec::example().write_tar(dir);
    r.apply(&b, &[]).success();
}

/// A root where logrotate is installed (its drop-in directory exists).
fn with_logrotate() -> TestRoot {
    let r = TestRoot::new();
    fs::create_dir_all(r.at("/etc/logrotate.d")).unwrap();
    r
}

#[test]
fn without_logrotate_apply_warns_and_writes_no_rule() {
    let work = tempfile::tempdir().unwrap();
    let r = TestRoot::new();
    let b = Spec::example().write_tar(work.path());
    let o = r.apply(&b, &[]).success().get_output().clone();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("logrotate is not installed"),
        "{}",
        show(&o)
    );
    assert!(!r.at("/etc/logrotate.d").exists());
}

#[test]
fn apply_installs_the_rule_from_the_config_and_uninstall_removes_it() {
    let work = tempfile::tempdir().unwrap();
    let r = with_logrotate();
    applied(&r, work.path());
    let rule = fs::read_to_string(r.at(RULE)).unwrap();
    assert!(
        rule.contains("/var/log/istio/istio.log /var/log/istio/istio.err.log {"),
        "{rule}"
    );
    for line in [
        "\tsize 100M\n",
        "\trotate 5\n",
        "\tcopytruncate\n",
        "\tmissingok\n",
    ] {
        assert!(rule.contains(line), "{line:?} in {rule}");
    }
    // The config's values, on the next apply.
    put(
        &r,
        "/etc/vmagent/config.toml",
        b"[logs]\nrotate_size_mib = 20\nrotate_count = 3\n",
        0o600,
    );
    applied(&r, work.path());
    let rule = fs::read_to_string(r.at(RULE)).unwrap();
    assert!(
        rule.contains("\tsize 20M\n") && rule.contains("\trotate 3\n"),
        "{rule}"
    );
    let o = vmagent()
        .args(["uninstall", "--root"])
        .arg(r.path())
        .output()
        .unwrap();
    let o = ok(o, "uninstall");
    assert!(!r.at(RULE).exists(), "{}", show(&o));
}

/// Runs the real logrotate on the rule installed in `r`, with the root's /var/log
/// bind-mounted over /var/log in a private mount namespace, so the rule's system paths
/// are the root's files and the host's logs are never touched.
fn logrotate(r: &TestRoot, state: &Path) {
    let script = format!(
        "mount --make-rprivate / && mount --bind '{}' /var/log && exec logrotate -v -s '{}' '{}'",
        r.at("/var/log").display(),
        state.display(),
        r.at(RULE).display()
    );
    let o = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) and logrotate (tests/setup.sh installs it)");
    assert!(
        o.status.success(),
        "logrotate failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Reads lines until `want` numbered lines arrived (hang guard only, not a timing check).
fn collect(f: &mut Follower, got: &mut Vec<u64>, want: usize) {
    let start = Instant::now();
    while got.len() < want {
        f.poll(|l| {
            let text = l.text();
            if let Some(n) = text.strip_prefix("line ").and_then(|n| n.split(' ').next()) {
                got.push(n.parse().expect("a line number"));
            }
        })
        .expect("poll");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {} of {want} lines arrived",
            got.len()
        );
        f.wait(Some(Duration::from_millis(100))).expect("wait");
    }
}

#[test]
fn the_real_logrotate_rotates_while_the_follower_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let r = with_logrotate();
    put(
        &r,
        "/etc/vmagent/config.toml",
        b"[logs]\nrotate_size_mib = 1\nrotate_count = 2\n",
        0o600,
    );
    applied(&r, work.path());
    let log = r.at("/var/log/istio/istio.log");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    // The proxy's stdout: opened for append (istio-start.sh's `>>`), kept open.
    let mut proxy = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut f = Follower::new(std::slice::from_ref(&log)).unwrap();
    let mut got = Vec::new();
    let pad = "x".repeat(60);
    let mut n = 0u64;
    let mut write = |count: u64, proxy: &mut fs::File| {
        let mut buf = String::new();
        for _ in 0..count {
            buf.push_str(&format!("line {n} {pad}\n"));
            n += 1;
        }
        proxy.write_all(buf.as_bytes()).unwrap();
    };
    let state = work.path().join("logrotate.state");
    // Past 1 MiB: the rule rotates (copy, then truncate in place).
    write(20_000, &mut proxy);
    collect(&mut f, &mut got, 20_000);
    logrotate(&r, &state);
    assert!(
        r.at("/var/log/istio/istio.log.1").is_file(),
        "no rotated copy"
    );
    assert!(fs::metadata(&log).unwrap().len() < 1 << 20, "not truncated");
    // The proxy keeps writing to its open descriptor, now from the start of the file.
    write(30_000, &mut proxy);
    collect(&mut f, &mut got, 50_000);
    // Rotate again (istio.log.1 is compressed then: delaycompress) and write on.
    logrotate(&r, &state);
    write(500, &mut proxy);
    collect(&mut f, &mut got, 50_500);
    let want: Vec<u64> = (0..50_500).collect();
    assert!(
        got == want,
        "lost or repeated lines: got {} lines",
        got.len()
    );
    assert!(r.at("/var/log/istio/istio.log.2.gz").is_file());
}
