//! Issue 12, finding 7: no secret in a world-readable place.
//!
//! One root is configured with every kind of secret vmagent is given: a bundle source
//! URL with `user:password@` and `?access_token=`, a source header, a report URL with
//! credentials and a token in its query, a package URL with a signed query, and the
//! bundle's istio-token. Then every command that shows something runs (`config show`,
//! `apply` with a failing package download, `check`/`apply` of a token with a malformed
//! claim, `status` in text and JSON) and a daemon polls an https source on 127.0.0.1: a
//! good poll, a 304, a 503 and a refused connection, reporting every health change to a
//! report URL that answers 503. Then stdout and stderr of each command, the daemon's
//! log, every document POSTed to the report URL and every file under the root are
//! searched for each secret. A secret may only be in a file that is meant to hold it
//! (the installed token, the state directory, the config) and that no one but its owner
//! can read.
//!
//! Waits are polling loops with a hang guard ([`HANG`]), never fixed sleeps.

mod common;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::output::show;
use common::report_server::ReportServer;
use common::server::{Fault, Server, TestCa};
use common::{jwt, Spec, TestRoot};

const BIN: &str = env!("CARGO_BIN_EXE_vmagent");

/// Hang guard for every wait (not a timing assertion).
/// (120 s: generous for a loaded machine; see tests/common/wait.rs.)
const HANG: Duration = common::wait::PATIENCE;

const USER: &str = "vmus3rName";
const PASSWORD: &str = "pa55word";
const QUERY_TOKEN: &str = "S3cr3tTok";
const HEADER_VALUE: &str = "H3aderS3cretVal";
const REPORT_PASSWORD: &str = "R3portPw";
const REPORT_TOKEN: &str = "R3portTok";
const PACKAGE_SIGNATURE: &str = "AmzS1gVal";
const PACKAGE_CREDENTIAL: &str = "AmzCr3dVal";

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

/// Polls `f` every 50 ms until it gives a value, failing after [`HANG`].
#[track_caller]
fn wait_for<T>(what: &str, context: impl Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {what}: not within {HANG:?}\n{}",
            context()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Every secret, and what it is.
fn secrets(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("source URL user name", USER.into()),
        ("source URL password", PASSWORD.into()),
        ("source URL access_token", QUERY_TOKEN.into()),
        ("source header value", HEADER_VALUE.into()),
        ("report URL password", REPORT_PASSWORD.into()),
        ("report URL token", REPORT_TOKEN.into()),
        ("package URL signature", PACKAGE_SIGNATURE.into()),
        ("package URL credential", PACKAGE_CREDENTIAL.into()),
        ("the istio-token", token.trim().to_string()),
    ]
}

/// The secrets found in `text`.
fn found(text: &[u8], secrets: &[(&'static str, String)]) -> Vec<&'static str> {
    secrets
        .iter()
        .filter(|(_, s)| text.windows(s.len()).any(|w| w == s.as_bytes()))
        .map(|(what, _)| *what)
        .collect()
}

/// Every regular file under `dir` (symlinks not followed).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            files(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// A daemon writing its log to a file; killed when dropped if still running.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[test]
fn no_secret_reaches_output_logs_status_or_world_readable_files() {
    let ca = TestCa::new();
    let srv = Server::https(&ca);
    let report = ReportServer::answering("503 Service Unavailable");
    let root = TestRoot::new();
    let work = tempfile::tempdir().expect("tempdir");
    fs::write(root.at("/etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
    fs::create_dir_all(root.at("/etc/vmagent")).unwrap();
    ca.write_pem(&root.at("/etc/vmagent"));

    let token = String::from_utf8(common::token_for("system:serviceaccount:vm-ns:vm-sa")).unwrap();
    let secrets = secrets(&token);
    let spec = Spec::example().set("istio-token", token.clone());
    let path = "/fleet/vm1/bundle.tar";
    srv.put(path, spec.tar_bytes());
    let bundle_url = srv
        .url(path)
        .replacen("://", &format!("://{USER}:{PASSWORD}@"), 1)
        + &format!("?access_token={QUERY_TOKEN}&x=1");
    let report_url = format!(
        "http://rep:{REPORT_PASSWORD}@127.0.0.1:{}/report?token={REPORT_TOKEN}",
        report.port
    );
    let package_url = srv.url(&format!(
        "/pkg/istio-sidecar.deb?X-Amz-Credential={PACKAGE_CREDENTIAL}&X-Amz-Signature={PACKAGE_SIGNATURE}"
    ));
    // Nothing listens there: on 127.0.0.2, where no test server binds, so a port another
    // test is handed meanwhile never answers this daemon's probes.
    let ready = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = root.at("/etc/vmagent/config.toml");
    fs::write(
        &config,
        format!(
            "[source]\nbundle = \"{bundle_url}\"\nca_file = \"/etc/vmagent/test-ca.pem\"\npoll_interval_secs = 1\nheaders = {{ Authorization = \"Bearer {HEADER_VALUE}\" }}\n\n\
             [daemon]\ndrift_interval_secs = 3600\nprobe_interval_secs = 1\n\n\
             [health]\nready_url = \"http://127.0.0.2:{ready}/healthz/ready\"\nreport_url = \"{report_url}\"\n"
        ),
    )
    .unwrap();
    // Config files are root-only on a VM (they hold the header and URL secrets).
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let root_arg = root.path().to_str().unwrap().to_string();
    let mut outputs: Vec<(String, Output)> = Vec::new();

    // `config show`.
    let o = run(vmagent(&["config", "show", "--root", &root_arg]));
    assert!(o.status.success(), "config show: {}", show(&o));
    outputs.push(("config show".into(), o));

    // `apply` with a package URL whose download fails (404): plan, error and JSON.
    let tar = spec.write_tar(work.path());
    let tar_arg = tar.to_str().unwrap();
    let sha = "0".repeat(64);
    let ca_file = root.at("/etc/vmagent/test-ca.pem");
    let ca_arg = ca_file.to_str().unwrap();
    for json in [false, true] {
        let mut args = vec![
            "apply",
            tar_arg,
            "--root",
            &root_arg,
            "--no-start",
            "--package",
            &package_url,
            "--package-sha256",
            &sha,
            "--ca-file",
            ca_arg,
        ];
        if json {
            args.extend(["--output", "json"]);
        }
        let o = run(vmagent(&args));
        assert_eq!(
            o.status.code(),
            Some(5),
            "apply with a 404 package: {}",
            show(&o)
        );
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("/pkg/istio-sidecar.deb")
                || String::from_utf8_lossy(&o.stderr).contains("/pkg/istio-sidecar.deb"),
            "the package URL is still named: {}",
            show(&o)
        );
        outputs.push((format!("apply --package URL (json: {json})"), o));
    }

    // The bundle itself, applied without the package step.
    let o = run(vmagent(&[
        "apply",
        tar_arg,
        "--root",
        &root_arg,
        "--no-package",
        "--no-start",
    ]));
    assert!(o.status.success(), "apply: {}", show(&o));
    outputs.push(("apply".into(), o));

    // The daemon: a good poll, a 304, then a 503 and a refused connection.
    let log_path = work.path().join("daemon.log");
    let log = fs::File::create(&log_path).unwrap();
    let mut c = vmagent(&["daemon", "--root", &root_arg, "-vv"]);
    c.stdout(Stdio::null()).stderr(Stdio::from(log));
    let mut daemon = Daemon(c.spawn().expect("spawn vmagent daemon"));
    let status_file = root.at("/run/vmagent/status.json");
    let context = || {
        format!(
            "--- daemon log\n{}\n--- status.json\n{}",
            fs::read_to_string(&log_path).unwrap_or_default(),
            fs::read_to_string(&status_file).unwrap_or_default()
        )
    };
    let status = || -> Option<serde_json::Value> {
        serde_json::from_slice(&fs::read(&status_file).ok()?).ok()
    };
    let warned = |what: &str| {
        status().is_some_and(|s| {
            s["warnings"].as_array().is_some_and(|w| {
                w.iter()
                    .any(|w| w.as_str().is_some_and(|w| w.contains(what)))
            })
        })
    };
    wait_for(
        "the token installed by the daemon and two polls",
        context,
        || {
            (srv.requests_for(path).len() >= 2
                && fs::read(root.at("/var/run/secrets/tokens/istio-token")).ok()?
                    == token.as_bytes()
                && status()?["last_apply"]["bundle"].is_string())
            .then_some(())
        },
    );
    srv.always(path, Fault::Status(503));
    wait_for("the 503 in status.json", context, || {
        warned("HTTP 503").then_some(())
    });
    drop(srv);
    wait_for("the refused connection in status.json", context, || {
        (warned("polling the bundle URL failed") && !warned("HTTP 503")).then_some(())
    });
    wait_for("a report POSTed and refused", context, || {
        (!report.bodies().is_empty()
            && fs::read_to_string(&log_path)
                .ok()?
                .contains("report URL refused"))
        .then_some(())
    });
    // SAFETY: kill(2) on our own child's pid (not reaped: `daemon` still owns it).
    assert_eq!(
        unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) },
        0
    );
    wait_for("the daemon to stop", context, || {
        daemon.0.try_wait().ok().flatten()
    });
    let s = status().expect("status.json");
    assert!(
        s["last_apply"]["bundle"]
            .as_str()
            .is_some_and(|b| b.contains("/fleet/vm1/bundle.tar")),
        "the source is still named: {s}"
    );

    // `vmagent status`, text and JSON.
    for extra in [&[][..], &["--output", "json"][..]] {
        let mut args = vec!["status", "--root", &root_arg];
        args.extend(extra);
        let o = run(vmagent(&args));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("/fleet/vm1/bundle.tar"),
            "status names the source: {}",
            show(&o)
        );
        outputs.push((format!("status {extra:?}"), o));
    }

    // Nothing shown anywhere.
    let mut leaks = Vec::new();
    for (what, o) in &outputs {
        for s in found(&o.stdout, &secrets) {
            leaks.push(format!("{what}: stdout: {s}"));
        }
        for s in found(&o.stderr, &secrets) {
            leaks.push(format!("{what}: stderr: {s}"));
        }
    }
    for s in found(&fs::read(&log_path).unwrap(), &secrets) {
        leaks.push(format!("the daemon's log: {s}"));
    }
    for (i, b) in report.bodies().iter().enumerate() {
        for s in found(b, &secrets) {
            leaks.push(format!("report document {i}: {s}"));
        }
    }
    // Files: only those meant to hold a secret, and readable by their owner alone.
    let meant = |p: &Path| {
        [
            "/var/run/secrets/tokens/istio-token",
            "/var/lib/vmagent/",
            "/etc/vmagent/",
        ]
        .iter()
        .any(|m| p.starts_with(root.at(m)))
    };
    let mut all = Vec::new();
    files(root.path(), &mut all);
    assert!(all.contains(&status_file), "{all:?}");
    let mut holders = 0;
    for f in &all {
        let data = fs::read(f).unwrap();
        let hits = found(&data, &secrets);
        if hits.is_empty() {
            continue;
        }
        let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
        if !meant(f.as_path()) || mode & 0o077 != 0 {
            leaks.push(format!("{} (mode {mode:o}): {hits:?}", f.display()));
        }
        holders += 1;
    }
    assert!(
        holders >= 2,
        "the token and the config hold secrets: {all:?}"
    );
    assert!(
        leaks.is_empty(),
        "secrets shown:\n{}\n{}",
        leaks.join("\n"),
        context()
    );
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
