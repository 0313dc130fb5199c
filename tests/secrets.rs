//! Issue 12, finding 7: no secret in a world-readable place.
//!
//! A token claim of the wrong type is named in the error, its value never shown (the
//! token is a credential; errors go to logs and the world-readable status file).
//!
//! Waits are polling loops with a hang guard ([`HANG`]), never fixed sleeps.

mod common;

use std::fs;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use common::output::show;
use common::{jwt, Spec, TestRoot};

const BIN: &str = env!("CARGO_BIN_EXE_vmagent");

/// Hang guard for every wait (not a timing assertion).
const HANG: Duration = Duration::from_secs(30);

/// Environment that could change vmagent's logging, systemd use or network path.
const SCRUB: &[&str] = &[
    "VMAGENT_TEST_SYSTEMCTL",
    "VMAGENT_FAULT",
    "RUST_LOG",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

fn vmagent(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    for v in SCRUB {
        c.env_remove(v);
    }
    c.args(args).stdin(Stdio::null());
    c
}

/// Runs to the end (with a hang guard); returns the output.
fn run(mut c: Command) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn vmagent");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(HANG) {
        Ok(o) => o.expect("vmagent output"),
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid, not reaped yet (the waiter hangs).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{c:?} still ran after {HANG:?} (hang guard)");
        }
    }
}

/// A token claim of the wrong type is named in the error, its value never shown.
#[test]
fn malformed_token_claims_are_not_echoed() {
    const MARKER: &str = "M4rkerClaimVal";
    let root = TestRoot::new();
    let work = tempfile::tempdir().expect("tempdir");
    for (claim, claims) in [
        (
            "exp",
            format!(r#"{{"aud":["istio-ca"],"exp":"{MARKER}","sub":"system:serviceaccount:a:b"}}"#),
        ),
        (
            "sub",
            format!(r#"{{"aud":["istio-ca"],"exp":4000000000,"sub":{{"x":"{MARKER}"}}}}"#),
        ),
        (
            "aud",
            format!(r#"{{"aud":[7,"{MARKER}"],"exp":4000000000,"sub":"s"}}"#),
        ),
    ] {
        let dir = work.path().join(claim);
        fs::create_dir_all(&dir).unwrap();
        let tar = Spec::example()
            .set("istio-token", jwt(&claims))
            .write_tar(&dir);
        let tar_arg = tar.to_str().unwrap();
        let root_arg = root.path().to_str().unwrap();
        for args in [
            vec!["check", tar_arg],
            vec!["check", tar_arg, "--output", "json"],
            vec![
                "apply",
                tar_arg,
                "--root",
                root_arg,
                "--no-package",
                "--no-start",
            ],
        ] {
            let o = run(vmagent(&args));
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", show(&o));
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(
                all.contains(&format!("'{claim}'")),
                "{claim}: the claim is named: {}",
                show(&o)
            );
            assert!(
                !all.contains(MARKER),
                "{claim}: the claim's value is shown: {}",
                show(&o)
            );
        }
    }
}
