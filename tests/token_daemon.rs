//! `vmagent daemon` keeping the token alive (issue 14): with each provider, a token that
//! expires soon is replaced by the provider's before it expires; a provider that fails is
//! retried with backoff and Retry-After, and recovers; a token for another identity is
//! refused and the installed one kept. Nothing secret reaches the daemon's log.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use common::server::TestCa;
use common::token_root::*;
use common::token_server::{now, token, Mode, TokenServer};
use common::wait::{wait_for, wait_until, PATIENCE};
use common::{inroot, Spec, TestRoot, PROXY_ID};

/// The bundle token's lifetime: its refresh point (half-way) comes a minute after the
/// daemon starts, its expiry two minutes after; the margin between the two is what the
/// daemon has to act in, generous on a loaded machine.
const LIFE: i64 = 240;

/// A root where a bundle whose token expires in about two minutes was applied (no
/// provider yet); the token and its `exp`.
fn expiring_root() -> (TestRoot, tempfile::TempDir, String, i64) {
    let work = tempfile::tempdir().unwrap();
    let r = TestRoot::new();
    let t0 = now();
    let exp = t0 + LIFE / 2;
    let tok = token(SUB, t0 - LIFE / 2 + 60, exp, "bundle");
    let b = Spec::example()
        .set("istio-token", tok.clone())
        .write_tar(work.path());
    r.apply(&b, &[]).success();
    (r, work, tok, exp)
}

/// Waits until the installed token is one of `from()` (not `old`), then checks it was
/// written before `exp` (its mtime: the atomic write's time, whatever the polling delay
/// here), 0600 istio-proxy, and that the daemon's log holds no secret.
fn replaced_before_expiry(
    r: &TestRoot,
    dir: &Path,
    old: &str,
    exp: i64,
    from: impl Fn() -> Vec<String>,
) -> String {
    let got = wait_until("the provider's token installed", PATIENCE * 2, || {
        let now = fs::read(inroot(r.path(), TOKEN, true)).ok()?;
        from()
            .into_iter()
            .find(|t| now == format!("{t}\n").into_bytes())
    });
    let m = fs::metadata(inroot(r.path(), TOKEN, true)).unwrap();
    let written = m
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        written < exp,
        "replaced at {written}, after the old token expired at {exp}"
    );
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!((m.uid(), m.gid()), (PROXY_ID, PROXY_ID));
    let log = fs::read_to_string(dir.join("daemon.log")).unwrap();
    for s in secrets_of(&[old.to_string(), got.clone()]) {
        assert!(!log.contains(&s), "the daemon log holds a secret: {log}");
    }
    got
}

#[test]
fn exec_provider_replaces_a_token_before_it_expires() {
    let (r, w, old, exp) = expiring_root();
    // The helper prints whatever the "vault" file holds now.
    let src = w.path().join("vault-token");
    let t0 = now();
    let fresh = token(SUB, t0, t0 + 7200, "exec");
    fs::write(&src, &fresh).unwrap();
    put(
        &r,
        "/usr/local/libexec/token-helper",
        format!("#!/bin/sh\ncat '{}'\n", src.display()).as_bytes(),
        0o755,
    );
    config(
        &r,
        "provider = \"exec\"\ncommand = [\"/usr/local/libexec/token-helper\"]\ntimeout_secs = 30\n",
    );
    let _d = Daemon::start(&r, w.path());
    let f = fresh.clone();
    let got = replaced_before_expiry(&r, w.path(), &old, exp, move || vec![f.clone()]);
    assert_eq!(got, fresh);
}

#[test]
fn file_provider_replaces_a_token_before_it_expires() {
    let (r, w, old, exp) = expiring_root();
    config(
        &r,
        "provider = \"file\"\npath = \"/run/token-agent/istio-token\"\n",
    );
    let _d = Daemon::start(&r, w.path());
    // The other agent writes a fresh token only after the daemon is up: the watch (or
    // the timer) installs it.
    wait_for("the daemon's first reconcile", PATIENCE, || {
        r.at("/run/vmagent/status.json").exists()
    });
    let t0 = now();
    let fresh = token(SUB, t0, t0 + 7200, "file");
    put(&r, "/run/token-agent/istio-token", fresh.as_bytes(), 0o600);
    let f = fresh.clone();
    let got = replaced_before_expiry(&r, w.path(), &old, exp, move || vec![f.clone()]);
    assert_eq!(got, fresh);
}

#[test]
fn kubernetes_provider_replaces_a_token_before_it_expires() {
    let (r, w, old, exp) = expiring_root();
    let ca = TestCa::new();
    let srv = TokenServer::start(&ca, CREDENTIAL, "vm-ns", "vm-sa");
    kube(&r, &ca, &srv);
    let _d = Daemon::start(&r, w.path());
    let issued = || srv.issued();
    replaced_before_expiry(&r, w.path(), &old, exp, issued);
    assert!(srv.seen().iter().all(|s| s.authorized && s.body.is_ok()));
}

/// Failures are spaced by the backoff (no tight loop), a 429's Retry-After is obeyed,
/// and the provider recovering is enough: no restart, no person.
#[test]
fn provider_failures_back_off_and_recover() {
    let (r, w) = applied_root();
    let before = installed(&r);
    let ca = TestCa::new();
    let srv = TokenServer::start(&ca, CREDENTIAL, "vm-ns", "vm-sa");
    srv.set(Mode::Status(500));
    kube(&r, &ca, &srv);
    let _d = Daemon::start(&r, w.path());
    let log = || fs::read_to_string(w.path().join("daemon.log")).unwrap_or_default();
    wait_for("a failed refresh logged", PATIENCE, || {
        log().contains("token refresh failed")
    });
    srv.set(Mode::TooMany(20));
    wait_for("the retry answered with 429", PATIENCE, || {
        srv.seen().len() >= 2
    });
    srv.set(Mode::Issue);
    let got = wait_until_issued(&srv, &r);
    let seen = srv.seen();
    assert_eq!(seen.len(), 3, "one request per attempt: {seen:?}");
    // The first backoff is 10 s with 50-100 % jitter; the 429 asked for 20 s.
    let gap = |i: usize| seen[i].at.duration_since(seen[i - 1].at);
    assert!(gap(1) >= Duration::from_secs(5), "backoff: {:?}", gap(1));
    assert!(
        gap(2) >= Duration::from_secs(19),
        "Retry-After: {:?}",
        gap(2)
    );
    assert_ne!(installed(&r), before);
    let text = log();
    for s in secrets_of(&[got]) {
        assert!(!text.contains(&s), "the daemon log holds a secret: {text}");
    }
}

/// A token for another service account is refused (the identity would change under the
/// proxy); the installed one stays until the provider gives the right one.
#[test]
fn a_token_for_another_identity_is_refused_and_the_old_kept() {
    let (r, w) = applied_root();
    let before = installed(&r);
    let ca = TestCa::new();
    let srv = TokenServer::start(&ca, CREDENTIAL, "vm-ns", "vm-sa");
    srv.set(Mode::OtherAccount);
    kube(&r, &ca, &srv);
    let _d = Daemon::start(&r, w.path());
    let log = || fs::read_to_string(w.path().join("daemon.log")).unwrap_or_default();
    wait_for("the wrong identity refused", PATIENCE, || {
        log().contains("token refresh failed")
    });
    assert!(!srv.issued().is_empty());
    assert_eq!(
        installed(&r),
        before,
        "the wrong token must not be installed"
    );
    assert!(
        log().contains("system:serviceaccount:vm-ns:intruder"),
        "the refusal names the identity it got: {}",
        log()
    );
    srv.set(Mode::Issue);
    let got = wait_until_issued(&srv, &r);
    assert_ne!(installed(&r), before);
    let text = log();
    for s in secrets_of(&srv.issued()) {
        assert!(!text.contains(&s), "the daemon log holds a secret: {text}");
    }
    drop(got);
}
