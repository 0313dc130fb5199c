//! The daemon's Prometheus metrics (`[metrics]`, README "Metrics"), both ways: the
//! textfile `vmagent.prom` for node_exporter's textfile collector, and `/metrics` on a
//! local address. Checked against the real tools: `promtool check metrics` on both
//! expositions, a real `prometheus-node-exporter` reading the file back, and `promtool
//! check rules` on the README's alert rule.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::fake_systemd::ReadyServer;
use common::output::show;
use common::packages::ISTIO_SERVICE;
use common::prometheus::*;
use common::token_root::{put, Daemon, SUB};
use common::token_server::{now, token};
use common::wait::{wait_for, wait_until, PATIENCE};
use common::{Spec, TestRoot};

/// The textfile directory (Debian's node_exporter default), inside the root.
const TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";

/// A root whose daemon applies a bundle with a known token `exp` from
/// /etc/vmagent/bundle.tar, checks for drift every second, reads a ready proxy and
/// writes the metrics both ways; the daemon, its ready server, the work dir and `exp`.
fn running() -> (TestRoot, Daemon, ReadyServer, tempfile::TempDir, i64) {
    let work = tempfile::tempdir().unwrap();
    let r = TestRoot::new();
    let exp = now() + 30 * 86_400;
    let bundle = Spec::example()
        .set("istio-token", token(SUB, now() - 60, exp, "bundle"))
        .tar_bytes();
    put(&r, "/etc/vmagent/bundle.tar", &bundle, 0o600);
    fs::create_dir_all(r.at(TEXTFILE_DIR)).unwrap();
    // istio.service as the package installs it, with a stand-in proxy that just runs
    // (readiness comes from the fixed ready server).
    put(
        &r,
        "/usr/lib/systemd/system/istio.service",
        ISTIO_SERVICE.as_bytes(),
        0o644,
    );
    put(
        &r,
        "/usr/local/bin/istio-start.sh",
        b"#!/bin/sh\n[ \"$1\" = clean ] && exit 0\nexec sleep 3600\n",
        0o755,
    );
    let ready = ReadyServer::fixed(200);
    put(
        &r,
        "/etc/vmagent/config.toml",
        format!(
            "[source]\nbundle = \"/etc/vmagent/bundle.tar\"\n\n[daemon]\ndrift_interval_secs = 1\nprobe_interval_secs = 1\n\n[health]\nready_url = \"{}\"\n\n[metrics]\ntextfile_dir = \"{TEXTFILE_DIR}\"\nlisten = \"127.0.0.1:0\"\n",
            ready.url()
        )
        .as_bytes(),
        0o600,
    );
    let d = Daemon::start(&r, work.path());
    (r, d, ready, work, exp)
}

fn textfile(r: &TestRoot) -> String {
    fs::read_to_string(r.at(&format!("{TEXTFILE_DIR}/vmagent.prom"))).unwrap_or_default()
}

/// The port the daemon serves `/metrics` on (it logs it: `listen` asked for port 0).
fn served_port(work: &std::path::Path) -> u16 {
    wait_until("the daemon serving /metrics", PATIENCE, || {
        let log = fs::read_to_string(work.join("daemon.log")).ok()?;
        let at = log.find("serving http://127.0.0.1:")? + "serving http://127.0.0.1:".len();
        log[at..].split('/').next()?.parse().ok()
    })
}

/// [`wait_for`] that shows the daemon's log and the textfile when it gives up.
#[track_caller]
fn wait_or_show(r: &TestRoot, work: &std::path::Path, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !cond() {
        if std::time::Instant::now() >= deadline {
            let log = fs::read_to_string(work.join("daemon.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "waiting for {what}: not within {PATIENCE:?}\n--- vmagent.prom\n{}\n--- daemon.log (last lines, newest first)\n{}",
                textfile(r),
                tail.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[track_caller]
fn promtool_ok(text: &str, what: &str) {
    let o = promtool_check_metrics(text);
    assert!(o.status.success(), "{what}: {}\n{text}", show(&o));
}

/// The textfile: written once ready, with the token's exp, 0644, valid for promtool;
/// a drift repair increments its counter; a reader never sees a half file. `/metrics`
/// serves the same series (404 elsewhere, 405 for POST); node_exporter reads the file
/// back with the same values.
#[test]
fn the_daemon_writes_the_textfile_and_serves_the_same_metrics() {
    let (r, _d, _ready, work, exp) = running();
    let first = wait_until("vmagent.prom with a ready proxy", PATIENCE, || {
        let t = textfile(&r);
        (value(&t, "vmagent_proxy_ready") == Some(1.0)
            && value(&t, "vmagent_token_expiry_timestamp_seconds").is_some())
        .then_some(t)
    });
    assert_eq!(
        value(&first, "vmagent_token_expiry_timestamp_seconds"),
        Some(exp as f64),
        "{first}"
    );
    for want in [
        "vmagent_health_state{state=\"ready\",kind=\"\"} 1",
        "vmagent_health_state{state=\"failed\",kind=\"\"} 0",
        &format!(
            "vmagent_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "# TYPE vmagent_reconciles_total counter",
    ] {
        assert!(first.lines().any(|l| l == want), "{want} in\n{first}");
    }
    assert!(value(&first, "vmagent_reconciles_total").unwrap() >= 1.0);
    assert!(value(&first, "vmagent_last_apply_timestamp_seconds").unwrap() > 0.0);
    let mode = fs::metadata(r.at(&format!("{TEXTFILE_DIR}/vmagent.prom")))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    promtool_ok(&first, "vmagent.prom");

    // A reader polling the file while the daemon rewrites it every second: always a
    // whole file (the counters come last).
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, path) = (stop.clone(), r.at(&format!("{TEXTFILE_DIR}/vmagent.prom")));
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let Ok(t) = fs::read_to_string(&path) else {
                    // Never missing while the test runs (the rename replaces it).
                    assert!(stop.load(Ordering::Relaxed), "vmagent.prom went missing");
                    break;
                };
                let last = t.lines().last().unwrap_or("");
                assert!(
                    t.ends_with('\n') && last.starts_with("vmagent_preflight_failures_total "),
                    "a half-written file:\n{t}"
                );
                reads += 1;
            }
            reads
        })
    };

    // Drift: a managed file deleted is put back, and counted.
    let repairs = value(&textfile(&r), "vmagent_drift_repairs_total").unwrap();
    fs::remove_file(r.at("/var/lib/istio/envoy/cluster.env")).unwrap();
    wait_or_show(&r, work.path(), "the drift repair counted", || {
        value(&textfile(&r), "vmagent_drift_repairs_total").is_some_and(|v| v > repairs)
    });
    assert!(r.at("/var/lib/istio/envoy/cluster.env").exists());
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("the reader saw only whole files");
    assert!(reads > 0);

    // /metrics: the same series as the file (compared when the file held still around
    // the request: the daemon rewrites it every second).
    let port = served_port(work.path());
    let (head, body) = wait_until("/metrics equal to vmagent.prom", PATIENCE, || {
        let before = textfile(&r);
        let (status, head, body) = http(port, "GET", "/metrics").ok()?;
        assert_eq!(status, 200, "{head}\n{body}");
        (before == textfile(&r) && body == before).then_some((head, body))
    });
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    promtool_ok(&body, "/metrics");
    assert_eq!(http(port, "GET", "/").unwrap().0, 404);
    assert_eq!(http(port, "POST", "/metrics").unwrap().0, 405);

    // node_exporter reads the file back: every vmagent series with the same value.
    let ne = NodeExporter::start(&r.at(TEXTFILE_DIR), &work.path().join("node_exporter.log"));
    wait_until(
        "node_exporter serving vmagent.prom as written",
        PATIENCE,
        || {
            let want = samples(&textfile(&r), "vmagent_");
            let got = samples(&ne.scrape(), "vmagent_");
            (got == want && !got.is_empty()).then_some(())
        },
    );
    let scraped = ne.scrape();
    assert!(
        scraped.contains("node_textfile_scrape_error 0"),
        "node_exporter refused the file:\n{scraped}"
    );
    assert_eq!(
        value(&scraped, "vmagent_token_expiry_timestamp_seconds"),
        Some(exp as f64)
    );
}

/// SIGHUP applies `[metrics]`: a textfile directory that does not exist is named in a
/// warning; once no longer configured its file is removed; a new `listen` is served.
#[test]
fn a_reload_moves_the_metrics() {
    let (r, d, _ready, work, _) = running();
    wait_for("vmagent.prom", PATIENCE, || !textfile(&r).is_empty());
    let first_port = served_port(work.path());
    let log = || fs::read_to_string(work.path().join("daemon.log")).unwrap_or_default();
    let config = fs::read_to_string(r.at("/etc/vmagent/config.toml")).unwrap();
    let (head, _) = config.split_once("[metrics]").unwrap();
    put(
        &r,
        "/etc/vmagent/config.toml",
        format!(
            "{head}[metrics]\ntextfile_dir = \"/var/lib/missing\"\nlisten = \"127.0.0.1:{}\"\n",
            free_port()
        )
        .as_bytes(),
        0o600,
    );
    d.hup();
    wait_or_show(&r, work.path(), "the missing directory named", || {
        log().contains("/var/lib/missing: no such directory (metrics.textfile_dir)")
    });
    assert!(
        !r.at(&format!("{TEXTFILE_DIR}/vmagent.prom")).exists(),
        "the file left behind in the old directory"
    );
    let port = wait_until("the new address served", PATIENCE, || {
        let l = log();
        let at = l.rfind("serving http://127.0.0.1:")? + "serving http://127.0.0.1:".len();
        let p: u16 = l[at..].split('/').next()?.parse().ok()?;
        (p != first_port).then_some(p)
    });
    let (status, _, body) = http(port, "GET", "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("vmagent_proxy_ready "), "{body}");
    // The old listener closes once the loop next yields to its tasks.
    wait_for("the old port closed", PATIENCE, || {
        std::net::TcpStream::connect(("127.0.0.1", first_port)).is_err()
    });
}

/// Off by default: no file, no port, and the daemon runs as before.
#[test]
fn without_a_metrics_section_nothing_is_written() {
    let work = tempfile::tempdir().unwrap();
    let r = TestRoot::new();
    put(
        &r,
        "/etc/vmagent/bundle.tar",
        &Spec::example().tar_bytes(),
        0o600,
    );
    fs::create_dir_all(r.at(TEXTFILE_DIR)).unwrap();
    put(
        &r,
        "/etc/vmagent/config.toml",
        b"[source]\nbundle = \"/etc/vmagent/bundle.tar\"\n",
        0o600,
    );
    let _d = Daemon::start(&r, work.path());
    wait_for("the status file", PATIENCE, || {
        r.at("/run/vmagent/status.json").exists()
    });
    assert!(fs::read_dir(r.at(TEXTFILE_DIR)).unwrap().next().is_none());
    let log = fs::read_to_string(work.path().join("daemon.log")).unwrap();
    assert!(!log.contains("metrics"), "{log}");
}

/// The README's sample alert rule is valid for Prometheus (`promtool check rules`).
#[test]
fn the_readme_alert_rule_is_valid() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```yaml\ngroups:")
        .expect("an alert rule in the README")
        + "```yaml\n".len();
    let len = readme[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vmagent.rules.yml");
    fs::write(&file, &readme[start..start + len]).unwrap();
    let o = promtool_check_rules(&file);
    assert!(o.status.success(), "{}", show(&o));
    assert!(readme[start..start + len].contains("vmagent_identity_lapse_timestamp_seconds"));
}
