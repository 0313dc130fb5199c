//! The identity timeline through the real binary: `vmagent status` (JSON and text, and
//! its exit code once lapsed) on a root with an applied bundle and a workload
//! certificate with a chosen notAfter, and the plan's refusal and warnings when the
//! certificate could not renew.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{jwt, vmagent, Spec, TestRoot};

/// Status exit code once the identity lapsed (README "Exit codes").
const IDENTITY_LAPSED: i32 = 8;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A token for the example's identity, valid from `iat` to `exp`.
fn token(iat: i64, exp: i64) -> Vec<u8> {
    jwt(&format!(
        r#"{{"aud":["istio-ca"],"exp":{exp},"iat":{iat},"sub":"system:serviceaccount:ns:sa"}}"#
    ))
}

/// A self-signed workload certificate (PEM) valid from `nb` to `na`, Unix seconds.
fn cert_pem(nb: i64, na: i64) -> String {
    let at = |t: i64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(t as u64);
    let mut p =
        rcgen::CertificateParams::new(vec!["spiffe://cluster.local/ns/ns/sa/sa".to_string()])
            .expect("params");
    p.not_before = at(nb);
    p.not_after = at(na);
    let key = rcgen::KeyPair::generate().expect("key");
    p.self_signed(&key).expect("cert").pem()
}

/// A root with the example bundle applied, its token valid from `iat` to `exp`.
fn applied(iat: i64, exp: i64) -> TestRoot {
    let r = TestRoot::new();
    let bundles = tempfile::tempdir().expect("tempdir");
    let b = Spec::example()
        .set("istio-token", token(iat, exp))
        .write_tar(bundles.path());
    r.apply(&b, &["--allow-expired-token"]).success();
    r
}

fn status(r: &TestRoot, extra: &[&str]) -> std::process::Output {
    vmagent()
        .arg("status")
        .arg("--root")
        .arg(r.path())
        .args(extra)
        .timeout(Duration::from_secs(60))
        .output()
        .expect("vmagent status")
}

fn status_json(r: &TestRoot) -> (serde_json::Value, Option<i32>) {
    let o = status(r, &["--output", "json"]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (v, o.status.code())
}

#[test]
fn status_json_shows_the_timeline_of_a_renewing_certificate() {
    let t = now();
    let r = applied(t - 3600, t + 3600);
    let na = t + 2 * 86_400;
    fs::write(r.at("/etc/certs/cert-chain.pem"), cert_pem(t - 3600, na)).unwrap();
    let (st, code) = status_json(&r);
    let i = &st["identity"];
    assert_eq!(i["token_expires_at"], t + 3600, "{st:#}");
    assert_eq!(i["certificate_expires_at"], na, "{st:#}");
    assert_eq!(i["renews_without_token"], true, "{st:#}");
    assert_eq!(i["lapses_at"], na, "{st:#}");
    assert_eq!(i["lapsed"], false, "{st:#}");
    assert_eq!(i["reason"], "certificate-expires-token-expired", "{st:#}");
    assert_eq!(i["certificate_dir"], "/etc/certs", "{st:#}");
    assert_eq!(i["certificate_route"], "renewable", "{st:#}");
    assert!(i["fix"].is_null(), "{st:#}");
    assert_ne!(code, Some(IDENTITY_LAPSED), "{st:#}");

    // Text: the same timeline, in words.
    let o = status(&r, &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("identity:      lapses at"), "{text}");
    assert!(text.contains("renews without the token"), "{text}");
    assert!(
        text.contains("(certificate-expires-token-expired)"),
        "{text}"
    );
}

#[test]
fn status_exits_8_once_lapsed() {
    let t = now();
    // The token expired an hour ago and no certificate was ever saved.
    let r = applied(t - 7200, t - 3600);
    let (st, code) = status_json(&r);
    assert_eq!(st["identity"]["lapsed"], true, "{st:#}");
    assert_eq!(st["identity"]["lapses_at"], t - 3600, "{st:#}");
    assert_eq!(
        st["identity"]["reason"], "token-expires-no-certificate",
        "{st:#}"
    );
    assert_eq!(code, Some(IDENTITY_LAPSED), "{st:#}");

    // An expired certificate changes nothing.
    fs::write(
        r.at("/etc/certs/cert-chain.pem"),
        cert_pem(t - 3 * 86_400, t - 2 * 86_400),
    )
    .unwrap();
    let o = status(&r, &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(IDENTITY_LAPSED), "{text}");
    assert!(text.contains("identity:      LAPSED at"), "{text}");
}

#[test]
fn status_names_a_certificate_dir_istio_proxy_cannot_write_and_the_fix() {
    let t = now();
    let r = applied(t - 60, t + 86_400);
    // root-owned 0755: istio-proxy (uid 998 in the test root) cannot write it.
    std::os::unix::fs::chown(r.at("/etc/certs"), Some(0), Some(0)).unwrap();
    fs::set_permissions(r.at("/etc/certs"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        r.at("/etc/certs/cert-chain.pem"),
        cert_pem(t - 60, t + 7 * 86_400),
    )
    .unwrap();
    let (st, _) = status_json(&r);
    let i = &st["identity"];
    assert_eq!(i["certificate_route"], "not-writable", "{st:#}");
    assert_eq!(i["reason"], "certificate-dir-not-writable", "{st:#}");
    assert_eq!(i["renews_without_token"], false, "{st:#}");
    assert_eq!(i["lapses_at"], t + 86_400, "{st:#}");
    let fix = i["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("chown istio-proxy:istio-proxy /etc/certs"),
        "{st:#}"
    );
    let warned = st["warnings"].as_array().is_some_and(|w| {
        w.iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains(fix)))
    });
    assert!(warned, "{st:#}");
}

/// A bundle whose cluster.env has `extra` lines appended.
fn bundle_with_env(dir: &Path, extra: &str) -> std::path::PathBuf {
    let mut env = common::example_member("cluster.env");
    env.extend_from_slice(extra.as_bytes());
    Spec::example()
        .set("cluster.env", env)
        .set("istio-token", token(now() - 60, now() + 86_400))
        .write_tar(dir)
}

#[test]
fn the_plan_refuses_an_output_certs_dir_istio_proxy_cannot_write_with_the_fix() {
    let r = TestRoot::new();
    fs::create_dir_all(r.at("/srv/certs")).unwrap();
    fs::set_permissions(r.at("/srv/certs"), fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let b = bundle_with_env(
        dir.path(),
        "OUTPUT_CERTS='/srv/certs'\nPROV_CERT='/srv/certs'\n",
    );
    let before = r.snapshot();
    let o = r.apply(&b, &["--dry-run"]).get_output().clone();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("istio-proxy cannot write it"), "{err}");
    assert!(
        err.contains("chown istio-proxy:istio-proxy /srv/certs"),
        "{err}"
    );
    common::assert_same(&before, &r.snapshot(), "dry run");
}

#[test]
fn the_plan_warns_when_the_saved_certificate_is_never_presented() {
    let r = TestRoot::new();
    let dir = tempfile::tempdir().unwrap();
    let b = bundle_with_env(dir.path(), "PROV_CERT='/var/lib/istio/prov'\n");
    let o = r.apply(&b, &["--dry-run"]).get_output().clone();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("PROV_CERT is not the OUTPUT_CERTS directory"),
        "{err}"
    );
    assert!(err.contains("set PROV_CERT to the same directory"), "{err}");
}
