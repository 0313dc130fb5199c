//! Signed bundles (issue 16, `[trust]`), signed and checked with the real `ssh-keygen`
//! (openssh-client): ed25519 and ecdsa keys; a good signature, a wrong key, a wrong
//! namespace, a tampered bundle, a missing signature and a revoked key, through
//! `vmagent check`, `vmagent apply` and the daemon's https source (`URL.sig`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::output::{code, ok, show, stderr, stdout};
use common::server::Server;
use common::token_root::{put, Daemon};
use common::wait::{wait_for, PATIENCE};
use common::{assert_same, vmagent, Spec, TestRoot};

/// A key pair made by `ssh-keygen -t KIND` in `dir`; the private key's path.
fn keygen(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let key = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client) is needed: tests/setup.sh installs it");
    assert!(st.success());
    key
}

fn public(key: &Path) -> String {
    let mut p = key.as_os_str().to_os_string();
    p.push(".pub");
    fs::read_to_string(p).unwrap().trim().to_string()
}

/// `ssh-keygen -Y sign -n NAMESPACE -f KEY FILE` (writes FILE.sig).
fn sign(key: &Path, namespace: &str, file: &Path) {
    // ssh-keygen will not overwrite a signature.
    let _ = fs::remove_file(format!("{}.sig", file.display()));
    let o = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(key)
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A root trusting `principal`'s key for vmagent bundles, requiring signatures or not.
fn trusting(r: &TestRoot, entries: &[(&str, &Path)], require: bool, extra: &str) {
    let lines: String = entries
        .iter()
        .map(|(p, k)| format!("{p} namespaces=\"vmagent-bundle\" {}\n", public(k)))
        .collect();
    put(r, "/etc/vmagent/allowed_signers", lines.as_bytes(), 0o644);
    put(
        r,
        "/etc/vmagent/config.toml",
        format!("[trust]\nallowed_signers = \"/etc/vmagent/allowed_signers\"\nrequire_signature = {require}\n{extra}").as_bytes(),
        0o600,
    );
}

fn check(r: &TestRoot, bundle: &Path, json: bool) -> std::process::Output {
    let mut c = vmagent();
    c.arg("check").arg(bundle).arg("--root").arg(r.path());
    if json {
        c.args(["--output", "json"]);
    }
    c.output().unwrap()
}

fn apply(r: &TestRoot, bundle: &Path) -> std::process::Output {
    vmagent()
        .arg("apply")
        .arg(bundle)
        .arg("--root")
        .arg(r.path())
        .args(["--no-package", "--no-start"])
        .output()
        .unwrap()
}

/// Refused by check and apply with exit 2 and `says`; apply changed nothing.
#[track_caller]
fn refused(r: &TestRoot, bundle: &Path, says: &str) {
    let before = r.snapshot();
    for (what, o) in [
        ("check", check(r, bundle, false)),
        ("apply", apply(r, bundle)),
    ] {
        let o = code(o, 2, what);
        assert!(stderr(&o).contains(says), "{what}: {}", show(&o));
        assert_eq!(
            stderr(&o).lines().count(),
            1,
            "{what}: one line: {}",
            show(&o)
        );
    }
    assert_same(&before, &r.snapshot(), "a refused bundle");
}

#[test]
fn good_signatures_with_ed25519_and_ecdsa_keys() {
    let keys = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    for (kind, who) in [
        ("ed25519", "ops@example.com"),
        ("ecdsa", "release@example.com"),
    ] {
        let key = keygen(keys.path(), who, kind);
        let r = TestRoot::new();
        trusting(&r, &[(who, &key)], true, "");
        let d = work.path().join(kind);
        fs::create_dir_all(&d).unwrap();
        let b = Spec::example().write_tar(&d);
        sign(&key, "vmagent-bundle", &b);
        let o = ok(check(&r, &b, false), "check");
        assert!(
            stdout(&o).contains(&format!("signed by {who}")),
            "{}",
            show(&o)
        );
        let o = ok(check(&r, &b, true), "check json");
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(doc["signed_by"]["principal"], who, "{doc:#}");
        assert!(doc["signed_by"]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:"));
        let o = ok(apply(&r, &b), "apply");
        assert!(
            stderr(&o).contains(&format!("bundle signed by {who}")),
            "{}",
            show(&o)
        );
        assert!(
            r.at("/etc/istio/config/mesh").exists() || r.at("/var/lib/istio/config/mesh").exists()
        );
    }
}

#[test]
fn bad_signatures_are_refused_before_anything_changes() {
    let keys = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ops = keygen(keys.path(), "ops", "ed25519");
    let stranger = keygen(keys.path(), "stranger", "ecdsa");
    let r = TestRoot::new();
    trusting(&r, &[("ops@example.com", &ops)], true, "");
    let dir = |n: &str| {
        let d = work.path().join(n);
        fs::create_dir_all(&d).unwrap();
        d
    };

    // Unsigned.
    let b = Spec::example().write_tar(&dir("unsigned"));
    refused(&r, &b, "unsigned, and [trust] require_signature is on");
    refused(&r, &b, "as one of: ops@example.com");
    // A key allowed_signers does not list.
    let b = Spec::example().write_tar(&dir("stranger"));
    sign(&stranger, "vmagent-bundle", &b);
    refused(
        &r,
        &b,
        "not an allowed signer for vmagent-bundle now; expected one of: ops@example.com",
    );
    // The right key, made for another purpose.
    let b = Spec::example().write_tar(&dir("namespace"));
    sign(&ops, "file", &b);
    refused(&r, &b, "made for namespace 'file', not 'vmagent-bundle'");
    // Changed after signing.
    let b = Spec::example().write_tar(&dir("tampered"));
    sign(&ops, "vmagent-bundle", &b);
    let evil = Spec::example()
        .set("hosts", "203.0.113.66 istiod.istio-system.svc\n")
        .tar_bytes();
    fs::write(&b, evil).unwrap();
    refused(&r, &b, "does not match the bundle");
    // Not a signature at all.
    let b = Spec::example().write_tar(&dir("garbage"));
    fs::write(format!("{}.sig", b.display()), "hello\n").unwrap();
    refused(&r, &b, "not a usable SSH signature");

    // Without require_signature, an unsigned bundle is fine; a bad signature is not.
    trusting(&r, &[("ops@example.com", &ops)], false, "");
    let b = Spec::example().write_tar(&dir("unsigned-ok"));
    ok(apply(&r, &b), "unsigned, not required");
    let b = Spec::example().write_tar(&dir("stranger-2"));
    sign(&stranger, "vmagent-bundle", &b);
    refused(&r, &b, "not an allowed signer");
}

#[test]
fn a_revoked_key_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let old = keygen(keys.path(), "old", "ed25519");
    let new = keygen(keys.path(), "new", "ed25519");
    let r = TestRoot::new();
    put(
        &r,
        "/etc/vmagent/revoked_keys",
        format!("{}\n", public(&old)).as_bytes(),
        0o644,
    );
    trusting(
        &r,
        &[("ops@example.com", &old), ("ops@example.com", &new)],
        true,
        "revoked_keys = \"/etc/vmagent/revoked_keys\"\n",
    );
    let b = Spec::example().write_tar(work.path());
    sign(&old, "vmagent-bundle", &b);
    refused(&r, &b, "which is revoked in");
    sign(&new, "vmagent-bundle", &b);
    ok(apply(&r, &b), "the current key");
}

#[test]
fn trust_files_others_can_change_are_refused() {
    let keys = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ops = keygen(keys.path(), "ops", "ed25519");
    let r = TestRoot::new();
    trusting(&r, &[("ops@example.com", &ops)], true, "");
    let signers = r.at("/etc/vmagent/allowed_signers");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&signers, fs::Permissions::from_mode(0o666)).unwrap();
    let b = Spec::example().write_tar(work.path());
    sign(&ops, "vmagent-bundle", &b);
    let before = r.snapshot();
    let o = code(apply(&r, &b), 4, "writable allowed_signers");
    assert!(stderr(&o).contains("chmod go-w"), "{}", show(&o));
    assert_same(&before, &r.snapshot(), "refused");
    // require_signature without allowed_signers is a config error, not a silent pass.
    put(
        &r,
        "/etc/vmagent/config.toml",
        b"[trust]\nrequire_signature = true\n",
        0o600,
    );
    let o = code(apply(&r, &b), 4, "require without signers");
    assert!(stderr(&o).contains("needs allowed_signers"), "{}", show(&o));
}

/// The daemon's https source fetches `URL.sig` beside the bundle: a signed bundle is
/// applied; a new unsigned one is refused before it is read, and the one in force stays.
#[test]
fn the_daemon_fetches_the_signature_beside_the_bundle() {
    let keys = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ops = keygen(keys.path(), "ops", "ed25519");
    let r = TestRoot::new();
    let srv = Server::http();
    trusting(
        &r,
        &[("ops@example.com", &ops)],
        true,
        &format!(
            "\n[source]\nbundle = \"{}\"\npoll_interval_secs = 1\n",
            srv.url("/vm/bundle.tar")
        ),
    );
    let signed = Spec::example()
        .set("hosts", "10.9.8.1 istiod.istio-system.svc\n")
        .write_tar(work.path());
    sign(&ops, "vmagent-bundle", &signed);
    srv.put("/vm/bundle.tar", fs::read(&signed).unwrap());
    srv.put(
        "/vm/bundle.tar.sig",
        fs::read(format!("{}.sig", signed.display())).unwrap(),
    );
    let _d = Daemon::start(&r, work.path());
    let hosts = || fs::read_to_string(r.at("/etc/hosts")).unwrap_or_default();
    wait_for("the signed bundle applied", PATIENCE, || {
        hosts().contains("10.9.8.1 istiod.istio-system.svc")
    });
    assert!(!srv.requests_for("/vm/bundle.tar.sig").is_empty());

    // A new bundle without its signature: refused, the old one stays in force.
    let unsigned = Spec::example()
        .set("hosts", "10.9.8.2 istiod.istio-system.svc\n")
        .tar_bytes();
    srv.remove("/vm/bundle.tar.sig");
    srv.put("/vm/bundle.tar", unsigned);
    let status = || fs::read_to_string(r.at("/run/vmagent/status.json")).unwrap_or_default();
    wait_for(
        "the unsigned bundle refused in the status",
        PATIENCE,
        || status().contains("unsigned, and [trust] require_signature is on"),
    );
    assert!(
        hosts().contains("10.9.8.1 istiod.istio-system.svc"),
        "{}",
        hosts()
    );
    assert!(!hosts().contains("10.9.8.2"), "{}", hosts());
}
