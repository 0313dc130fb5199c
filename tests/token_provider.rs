//! `[token]` providers end to end through the real binary on a temp root: the
//! kubernetes provider against a loopback TokenRequest endpoint (with faults), the exec
//! provider with small shell scripts, the file provider, the permission checks, and
//! `vmagent apply` installing the provider's token instead of the bundle's.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::output::{code, ok, show, stderr, stdout};
use common::server::TestCa;
use common::token_root::*;
use common::token_server::{now, token, Mode, TokenServer};
use common::wait::{wait_for, PATIENCE};
use common::{inroot, Spec, TestRoot, PROXY_ID};

#[test]
fn kubernetes_refresh_installs_a_checked_token() {
    let (r, _w) = applied_root();
    let ca = TestCa::new();
    let srv = TokenServer::start(&ca, CREDENTIAL, "vm-ns", "vm-sa");
    kube(&r, &ca, &srv);
    let o = ok(refresh(&r), "refresh");
    assert!(stdout(&o).contains(SUB), "{}", show(&o));
    let seen = srv.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].path,
        "/api/v1/namespaces/vm-ns/serviceaccounts/vm-sa/token"
    );
    assert!(seen[0].authorized);
    assert_eq!(seen[0].body, Ok(()));
    assert_eq!(seen[0].expiration, Some(1800));
    let issued = srv.issued();
    assert_eq!(installed(&r), format!("{}\n", issued[0]).into_bytes());
    let m = fs::metadata(inroot(r.path(), TOKEN, true)).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!((m.uid(), m.gid()), (PROXY_ID, PROXY_ID));
    let cache = fs::metadata(r.at("/var/lib/vmagent/token/istio-token")).unwrap();
    assert_eq!((cache.mode() & 0o7777, cache.uid()), (0o600, 0));
    // The boot copy apply installed (restored to /run by the tmpfiles rule at boot)
    // follows the refreshed token: a reboot without the daemon keeps the new one.
    let boot = r.at("/var/lib/vmagent/istio-token");
    assert_eq!(fs::read(&boot).unwrap(), installed(&r));
    let m = fs::metadata(&boot).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o600, 0));
    no_secrets(&r, &o, &secrets_of(&issued));
}

#[test]
fn kubernetes_faults_leave_the_old_token() {
    let (r, _w) = applied_root();
    let ca = TestCa::new();
    let srv = TokenServer::start(&ca, CREDENTIAL, "vm-ns", "vm-sa");
    kube(&r, &ca, &srv);
    let before = installed(&r);
    let cases: [(Mode, &str); 7] = [
        (Mode::Status(403), "bind a Role"),
        (
            Mode::Status(404),
            "no service account vm-sa in namespace vm-ns",
        ),
        (
            Mode::TooMany(7),
            "HTTP 429; the API server is busy or failing: try again later (it asks to wait 7 s)",
        ),
        (Mode::Status(500), "HTTP 500"),
        (Mode::Malformed, "not JSON"),
        (Mode::OtherAccount, "system:serviceaccount:vm-ns:intruder"),
        (Mode::Expired, "expired at"),
    ];
    for (mode, says) in cases {
        srv.set(mode.clone());
        let o = code(refresh(&r), 9, &format!("{mode:?}"));
        assert!(stderr(&o).contains(says), "{mode:?}: {}", show(&o));
        assert!(
            stderr(&o).contains("the installed token is unchanged"),
            "{}",
            show(&o)
        );
        assert_eq!(
            stderr(&o).trim().lines().count(),
            1,
            "{mode:?}: one line: {}",
            show(&o)
        );
        assert_eq!(installed(&r), before, "{mode:?} changed the token");
        no_secrets(&r, &o, &secrets_of(&srv.issued()));
    }
    // A credential the API server does not accept: 401.
    srv.set(Mode::Issue);
    put(
        &r,
        "/etc/vmagent/k8s-credential",
        b"wrong-credential",
        0o600,
    );
    let o = code(refresh(&r), 9, "401");
    assert!(
        stderr(&o).contains("did not accept the credential"),
        "{}",
        show(&o)
    );
    assert!(!stderr(&o).contains("wrong-credential"), "{}", show(&o));
    assert_eq!(installed(&r), before);
}

#[test]
fn unsafe_files_and_settings_are_refused_before_any_request() {
    let (r, _w) = applied_root();
    let ca = TestCa::new();
    let srv = TokenServer::start(&ca, CREDENTIAL, "vm-ns", "vm-sa");
    kube(&r, &ca, &srv);
    let before = installed(&r);
    let cred = r.at("/etc/vmagent/k8s-credential");
    fs::set_permissions(&cred, fs::Permissions::from_mode(0o644)).unwrap();
    let o = code(refresh(&r), 4, "credential 0644");
    assert!(
        stderr(&o).contains(&format!("chmod 600 {}", cred.display())),
        "{}",
        show(&o)
    );
    fs::set_permissions(&cred, fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = r.at("/etc/vmagent/config.toml");
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).unwrap();
    let o = code(refresh(&r), 4, "config 0644");
    assert!(
        stderr(&o).contains(&format!("chmod 600 {}", cfg.display())),
        "{}",
        show(&o)
    );
    config(&r, "provider = \"kubernetes\"\nserver = \"http://127.0.0.1:1\"\ncredential_file = \"/etc/vmagent/k8s-credential\"\n");
    let o = code(refresh(&r), 2, "http server");
    assert!(stderr(&o).contains("https://"), "{}", show(&o));
    assert!(srv.seen().is_empty(), "{:?}", srv.seen());
    assert_eq!(installed(&r), before);
    // No provider: nothing to refresh.
    fs::remove_file(&cfg).unwrap();
    code(refresh(&r), 2, "bundle provider");
}

/// A helper script at /usr/local/libexec/token-helper inside the root.
fn helper(r: &TestRoot, body: &str, timeout: u64) {
    put(
        r,
        "/usr/local/libexec/token-helper",
        format!("#!/bin/sh\n{body}\n").as_bytes(),
        0o755,
    );
    config(
        r,
        &format!("provider = \"exec\"\ncommand = [\"/usr/local/libexec/token-helper\", \"--audience\", \"istio-ca\"]\ntimeout_secs = {timeout}\n"),
    );
}

#[test]
fn exec_provider() {
    let (r, _w) = applied_root();
    let before = installed(&r);
    let t0 = now();
    let good = token(SUB, t0, t0 + 7200, "exec");
    let cases = [
        (
            "echo 'helper: cannot reach vault' >&2; exit 3",
            "exited with status 3: helper: cannot reach vault",
        ),
        ("exec sleep 60", "did not finish within 1 s"),
        ("echo garbage", "not a JWT"),
        ("head -c 100000 /dev/zero", "printed more than 65536 bytes"),
        (
            &*format!("echo {} >&2; exit 1", good),
            "exited with status 1",
        ),
    ];
    for (body, says) in cases {
        helper(&r, body, 1);
        let o = code(refresh(&r), 9, body);
        assert!(stderr(&o).contains(says), "{body}: {}", show(&o));
        assert_eq!(installed(&r), before, "{body}");
        no_secrets(&r, &o, &secrets_of(std::slice::from_ref(&good)));
    }
    // The environment is emptied but for PATH; the arguments are passed.
    helper(
        &r,
        &format!("[ -z \"$HOME$CARGO\" ] && [ \"$2\" = istio-ca ] || exit 9\necho '  {good}  '"),
        30,
    );
    let o = ok(refresh(&r), "exec success");
    assert_eq!(installed(&r), format!("{good}\n").into_bytes());
    no_secrets(&r, &o, &secrets_of(&[good]));
}

#[test]
fn file_provider() {
    let (r, _w) = applied_root();
    let before = installed(&r);
    config(
        &r,
        "provider = \"file\"\npath = \"/run/token-agent/istio-token\"\n",
    );
    let o = code(refresh(&r), 4, "missing file");
    assert!(stderr(&o).contains("no such file"), "{}", show(&o));
    let src = put(&r, "/run/token-agent/istio-token", b"not a token\n", 0o600);
    code(refresh(&r), 9, "invalid");
    assert_eq!(installed(&r), before);
    let t0 = now();
    let good = token(SUB, t0, t0 + 7200, "file");
    put(&r, "/run/token-agent/istio-token", good.as_bytes(), 0o644);
    let o = code(refresh(&r), 4, "world-readable token file");
    assert!(
        stderr(&o).contains(&format!("chmod 600 {}", src.display())),
        "{}",
        show(&o)
    );
    fs::set_permissions(&src, fs::Permissions::from_mode(0o600)).unwrap();
    let o = ok(refresh(&r), "valid");
    assert_eq!(installed(&r), format!("{good}\n").into_bytes());
    no_secrets(&r, &o, &secrets_of(&[good]));
    // The same token again is not newer: refused, nothing changes.
    let o = code(refresh(&r), 9, "same token");
    assert!(stderr(&o).contains("older or the same"), "{}", show(&o));
}

#[test]
fn apply_installs_the_providers_token_and_caches_it() {
    let (r, w) = applied_root();
    let ca = TestCa::new();
    let srv = TokenServer::start(&ca, CREDENTIAL, "vm-ns", "vm-sa");
    kube(&r, &ca, &srv);
    // A bundle whose own token has expired: with a provider it is replaced anyway.
    let t0 = now();
    let bundle_token = token(SUB, t0 - 7200, t0 - 3600, "stale");
    let again = w.path().join("again");
    fs::create_dir(&again).unwrap();
    let b = Spec::example()
        .set("istio-token", bundle_token.clone())
        .write_tar(&again);
    let o = r.apply(&b, &[]).success().get_output().clone();
    let issued = srv.issued();
    assert_eq!(issued.len(), 1, "{}", show(&o));
    assert_eq!(installed(&r), format!("{}\n", issued[0]).into_bytes());
    no_secrets(
        &r,
        &o,
        &secrets_of(&[issued[0].clone(), bundle_token.clone()]),
    );
    // Again: the cached token is fresh, the provider is not asked, nothing changes.
    let o = r.apply(&b, &[]).success().get_output().clone();
    assert_eq!(srv.seen().len(), 1, "{}", show(&o));
    assert_eq!(installed(&r), format!("{}\n", issued[0]).into_bytes());
}

/// `vmagent daemon` with a file provider: a token past its refresh point is refreshed by
/// the timer; a provider that has nothing newer is retried with backoff until it has; a
/// rewritten file is picked up at once (inotify).
#[test]
fn daemon_refreshes_the_token_on_its_timer() {
    let (r, w) = applied_root();
    config(
        &r,
        "provider = \"file\"\npath = \"/run/token-agent/istio-token\"\n",
    );
    let t0 = now();
    // Newer than the bundle's token, but already past its own refresh point: once
    // installed it is due again at once, and the file holds nothing newer, so the
    // daemon fails, backs off and retries until the agent writes a newer one.
    let first = token(SUB, t0 - 3000, t0 + 1300, "first");
    put(&r, "/run/token-agent/istio-token", first.as_bytes(), 0o600);
    let _d = Daemon::start(&r, w.path());
    let log = || fs::read_to_string(w.path().join("daemon.log")).unwrap_or_default();
    let want = format!("{first}\n").into_bytes();
    wait_for("the first refresh", PATIENCE, || installed(&r) == want);
    wait_for("a failed refresh logged", PATIENCE, || {
        log().contains("token refresh failed")
    });
    let newer = token(SUB, now(), now() + 9000, "newer");
    put(&r, "/run/token-agent/istio-token", newer.as_bytes(), 0o600);
    let want = format!("{newer}\n").into_bytes();
    wait_for("the retry installs the newer token", PATIENCE, || {
        installed(&r) == want
    });
    // Its next refresh point is over an hour away: the file is watched, so a token the
    // agent writes now is installed now.
    let newest = token(SUB, now(), now() + 10_000, "newest");
    put(&r, "/run/token-agent/istio-token", newest.as_bytes(), 0o600);
    let want = format!("{newest}\n").into_bytes();
    wait_for(
        "the file change installs the newest token",
        PATIENCE,
        || installed(&r) == want,
    );
    let text = log();
    for s in secrets_of(&[first, newer, newest]) {
        assert!(!text.contains(&s), "the daemon log holds a token: {text}");
    }
}

/// apply with a failing provider keeps a still-valid installed token (with a warning);
/// `token refresh` on a machine never applied says to apply first.
#[test]
fn apply_keeps_a_valid_token_when_the_provider_fails() {
    let (r, w) = applied_root();
    let ca = TestCa::new();
    let srv = TokenServer::start(&ca, CREDENTIAL, "vm-ns", "vm-sa");
    kube(&r, &ca, &srv);
    srv.set(Mode::Status(500));
    let before = installed(&r);
    let again = w.path().join("again");
    fs::create_dir(&again).unwrap();
    let b = Spec::example().write_tar(&again);
    let o = r.apply(&b, &[]).success().get_output().clone();
    assert!(
        stderr(&o).contains("keeping the current token"),
        "{}",
        show(&o)
    );
    assert_eq!(srv.seen().len(), 1);
    assert_eq!(
        installed(&r),
        before,
        "the bundle's token must not replace it"
    );

    let fresh = TestRoot::new();
    config(
        &fresh,
        "provider = \"file\"\npath = \"/run/t/istio-token\"\n",
    );
    put(&fresh, "/run/t/istio-token", b"x.y.z", 0o600);
    let o = code(refresh(&fresh), 4, "not applied");
    assert!(
        stderr(&o).contains("run `vmagent apply BUNDLE` first"),
        "{}",
        show(&o)
    );
}

/// The daemon's timer with the kubernetes provider: the request runs from the blocking
/// pool on the daemon's runtime.
#[test]
fn daemon_refreshes_through_the_kubernetes_provider() {
    let (r, w) = applied_root();
    let ca = TestCa::new();
    let srv = TokenServer::start(&ca, CREDENTIAL, "vm-ns", "vm-sa");
    kube(&r, &ca, &srv);
    let _d = Daemon::start(&r, w.path());
    let got = wait_until_issued(&srv, &r);
    assert_eq!(installed(&r), format!("{got}\n").into_bytes());
    let log = fs::read_to_string(w.path().join("daemon.log")).unwrap();
    for s in secrets_of(&[got]) {
        assert!(!log.contains(&s), "the daemon log holds a secret: {log}");
    }
}
