//! Authenticated health reports (issue 16 part 2): the daemon POSTs its status document
//! to an https receiver that requires a client certificate (mTLS), with the
//! Authorization value from a root-only file; every document carries a sequence number
//! that keeps growing across daemon restarts and the VM's identity. A credential file
//! others can read stops the reports instead of sending them unauthenticated, and a
//! report URL that would cross a network in plain http is refused.

mod common;

use std::fs;

use common::mtls::{write, MtlsReceiver};
use common::output::{code, show, stderr};
use common::token_root::{applied_root, Daemon, SUB};
use common::vmagent;
use common::wait::{wait_until, PATIENCE};

const AUTH: &str = "Bearer report-s3cr3t-value";

fn configure(
    r: &common::TestRoot,
    rx: &MtlsReceiver,
    files: &common::mtls::ClientFiles,
    auth_mode: u32,
) {
    write(&r.at("/etc/vmagent/report/ca.pem"), &files.ca_pem, 0o644);
    write(
        &r.at("/etc/vmagent/report/client.pem"),
        &files.cert_pem,
        0o644,
    );
    write(
        &r.at("/etc/vmagent/report/client.key"),
        &files.key_pem,
        0o600,
    );
    write(
        &r.at("/etc/vmagent/report/authorization"),
        &format!("{AUTH}\n"),
        auth_mode,
    );
    write(
        &r.at("/etc/vmagent/config.toml"),
        &format!(
            "[source]\nca_file = \"/etc/vmagent/report/ca.pem\"\n\n[health]\nreport_url = \"{}\"\nreport_authorization_file = \"/etc/vmagent/report/authorization\"\nreport_client_cert = \"/etc/vmagent/report/client.pem\"\nreport_client_key = \"/etc/vmagent/report/client.key\"\n",
            rx.url()
        ),
        0o600,
    );
}

fn docs(rx: &MtlsReceiver, from: usize) -> Option<serde_json::Value> {
    rx.received().get(from).map(|r| {
        assert_eq!(r.authorization.as_deref(), Some(AUTH));
        serde_json::from_slice(&r.body).expect("a JSON document")
    })
}

#[test]
fn reports_are_authenticated_sequenced_and_name_the_vm() {
    let (r, w) = applied_root();
    let (rx, files) = MtlsReceiver::start();
    configure(&r, &rx, &files, 0o600);
    let first = {
        let _d = Daemon::start(&r, w.path());
        wait_until("a report", PATIENCE, || docs(&rx, 0))
    };
    let seq1 = first["sequence"].as_u64().expect("sequence");
    assert_eq!(first["reporter"]["identity"], SUB, "{first:#}");
    assert!(first["reporter"]["hostname"].is_string(), "{first:#}");
    assert!(
        first["health"].is_object(),
        "the status document is all there: {first:#}"
    );
    // Another daemon (a restart): the numbers go on growing.
    let n = rx.received().len();
    let _d = Daemon::start(&r, w.path());
    let next = wait_until("a report after the restart", PATIENCE, || docs(&rx, n));
    assert!(
        next["sequence"].as_u64().unwrap() > seq1,
        "{next:#} after {seq1}"
    );
    let log = fs::read_to_string(w.path().join("daemon.log")).unwrap();
    assert!(
        !log.contains("report-s3cr3t"),
        "the credential is in the log: {log}"
    );
    assert_eq!(
        *rx.refused.lock().unwrap(),
        0,
        "a handshake without the client certificate"
    );
}

#[test]
fn a_credential_others_can_read_stops_the_reports() {
    let (r, w) = applied_root();
    let (rx, files) = MtlsReceiver::start();
    configure(&r, &rx, &files, 0o644);
    let _d = Daemon::start(&r, w.path());
    let log = || fs::read_to_string(w.path().join("daemon.log")).unwrap_or_default();
    wait_until("the refusal logged", PATIENCE, || {
        log().contains("no report is sent").then_some(())
    });
    assert!(log().contains("chmod 600"), "{}", log());
    assert!(rx.received().is_empty());
    assert!(!log().contains("report-s3cr3t"));
}

#[test]
fn a_plain_http_report_url_off_the_machine_is_refused() {
    let r = common::TestRoot::new();
    write(
        &r.at("/etc/vmagent/config.toml"),
        "[health]\nreport_url = \"http://reports.example.com/in\"\n",
        0o600,
    );
    let o = vmagent()
        .args(["config", "show", "--root"])
        .arg(r.path())
        .output()
        .unwrap();
    let o = code(o, 2, "plain http");
    assert!(
        stderr(&o).contains("must be an https:// URL"),
        "{}",
        show(&o)
    );
}
