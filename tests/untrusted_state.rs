//! vmagent's own state (the undo journal, its backups, the state directories and the
//! records in them) read back as untrusted input (issue 12, findings 1, 2 and 8): a
//! forged or damaged journal is refused by `recover`, `apply` and `uninstall` with the
//! root and the host outside it untouched; the state directories are root's, 0700,
//! whatever the umask; links inside them are refused; the way out of a refused journal
//! is `recover --discard-journal`.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

use common::*;

fn run(args: &[&str], root: &TestRoot) -> Output {
    vmagent()
        .args(args)
        .arg("--root")
        .arg(root.path())
        .output()
        .expect("run vmagent")
}

fn apply(root: &TestRoot, bundle: &Path) -> Output {
    vmagent()
        .arg("apply")
        .arg(bundle)
        .arg("--root")
        .arg(root.path())
        .args(["--no-package", "--no-start"])
        .output()
        .expect("run vmagent apply")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output, what: &str) -> Output {
    assert_eq!(o.status.code(), Some(0), "{what}: {}", show(&o));
    o
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    lstat(p).mode() & 0o7777
}

/// A root with the example bundle applied, and the bundle.
fn applied() -> (TestRoot, tempfile::TempDir, std::path::PathBuf) {
    let r = TestRoot::new();
    let t = tempfile::tempdir().unwrap();
    let b = Spec::example().write_tar(t.path());
    ok(apply(&r, &b), "first apply");
    (r, t, b)
}

/// Plants `journal` (and an empty backups dir) as an interrupted apply would leave it.
fn plant(r: &TestRoot, journal: &str) {
    let txn = r.at("/var/lib/vmagent/txn");
    fs::create_dir_all(txn.join("backups")).unwrap();
    fs::set_permissions(txn.join("backups"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(txn.join("journal.json"), journal).unwrap();
}

/// A refusal: exit 1, the way out named, no claim that anything was rolled back.
fn refused(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(1), "{what}: {}", show(o));
    let err = stderr(o);
    assert!(
        err.contains("recover --discard-journal"),
        "{what}: {}",
        show(o)
    );
    assert!(
        err.contains("nothing was rolled back"),
        "{what}: {}",
        show(o)
    );
    assert!(
        !err.contains("all changes were rolled back"),
        "{what}: {}",
        show(o)
    );
}

/// Finding 1: journals naming absolute paths, `..`, a path outside the layout, a backup
/// that is a path, a setuid mode, a link to a private file. Each reached host files
/// or changed the root before the fix.
#[test]
fn forged_journals_are_refused_and_touch_nothing() {
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("victim"), "keep me\n").unwrap();
    fs::set_permissions(
        host.path().join("victim"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::write(host.path().join("secret"), "host secret\n").unwrap();
    fs::set_permissions(
        host.path().join("secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let h = host.path().display().to_string();
    let up = "../".repeat(24);
    let h_rel = h.trim_start_matches('/');
    let cases = [
        (
            "absolute path",
            format!(r#"{{"version":1,"entries":[{{"path":"{h}/victim","prior":{{"kind":"absent"}}}}]}}"#),
        ),
        (
            "`..` path",
            format!(r#"{{"version":1,"entries":[{{"path":"{up}{h_rel}/victim","prior":{{"kind":"meta","mode":2541,"uid":0,"gid":0}}}}]}}"#),
        ),
        (
            "path outside the layout",
            r#"{"version":1,"entries":[{"path":"etc/passwd","prior":{"kind":"absent"}}]}"#.into(),
        ),
        (
            "absolute backup name",
            format!(r#"{{"version":1,"entries":[{{"path":"etc/hosts","prior":{{"kind":"file","backup":"{h}/secret","mode":420,"uid":0,"gid":0}}}}]}}"#),
        ),
        (
            "backup name with ..",
            format!(r#"{{"version":1,"entries":[{{"path":"etc/hosts","prior":{{"kind":"file","backup":"{up}{h_rel}/secret","mode":420,"uid":0,"gid":0}}}}]}}"#),
        ),
        (
            "setuid mode",
            r#"{"version":1,"entries":[{"path":"etc/hosts","prior":{"kind":"meta","mode":2541,"uid":0,"gid":0}}]}"#.into(),
        ),
        (
            "symlink to /etc/shadow",
            r#"{"version":1,"entries":[{"path":"etc/hosts","prior":{"kind":"symlink","target":"/etc/shadow"}}]}"#.into(),
        ),
    ];
    for (what, journal) in &cases {
        let (r, _t, b) = applied();
        fs::write(r.at("/etc/shadow"), "root:$6$hash:19000::::::\n").unwrap();
        fs::set_permissions(r.at("/etc/shadow"), fs::Permissions::from_mode(0o640)).unwrap();
        plant(&r, journal);
        let before = r.snapshot();
        let host_before = snapshot(host.path());
        let b = b.display().to_string();
        for (cmd, args) in [
            ("recover", vec!["recover"]),
            (
                "apply",
                vec!["apply", b.as_str(), "--no-package", "--no-start"],
            ),
            ("uninstall", vec!["uninstall"]),
        ] {
            let o = run(&args, &r);
            refused(&o, &format!("{what}, {cmd}"));
            assert_same(&before, &r.snapshot(), &format!("{what}, {cmd}: root"));
            assert_same(
                &host_before,
                &snapshot(host.path()),
                &format!("{what}, {cmd}: host"),
            );
        }
    }
}

/// Finding 1: `umask 000` made txn/ 0777; every state directory is 0700 regardless.
#[test]
fn state_dirs_are_private_whatever_the_umask() {
    let r = TestRoot::new();
    fs::create_dir_all(r.at("/etc/certs")).unwrap();
    fs::write(r.at("/etc/certs/root-cert.pem"), "the admin's\n").unwrap();
    let t = tempfile::tempdir().unwrap();
    let b = Spec::example().write_tar(t.path());
    let bin = env!("CARGO_BIN_EXE_vmagent");
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$@\"")
        .arg("sh")
        .arg(bin)
        .arg("apply")
        .arg(&b)
        .arg("--root")
        .arg(r.path())
        .args(["--no-package", "--no-start"])
        .output()
        .unwrap();
    ok(o, "apply under umask 000");
    for d in [
        "/var/lib/vmagent",
        "/var/lib/vmagent/txn",
        "/var/lib/vmagent/pristine",
    ] {
        assert_eq!(mode(&r.at(d)), 0o700, "{d}");
    }
    for (p, n) in snapshot(&r.at("/var/lib/vmagent")) {
        assert_eq!(n.mode & 0o022, 0, "{} is {:o}", p.display(), n.mode);
        assert_eq!(n.uid, 0, "{}", p.display());
    }
}

/// Finding 1: an existing 0755 state dir was never tightened.
#[test]
fn a_loose_state_dir_is_tightened() {
    let (r, _t, b) = applied();
    fs::set_permissions(r.at("/var/lib/vmagent"), fs::Permissions::from_mode(0o755)).unwrap();
    ok(apply(&r, &b), "apply again");
    assert_eq!(mode(&r.at("/var/lib/vmagent")), 0o700);
}

/// Finding 2: a root-owned link at txn/, txn/backups/ or pristine/ sent backups (and
/// the admin's files) out of the root, or deleted what was there.
#[test]
fn links_in_the_state_dir_are_refused() {
    for link in ["txn", "txn/backups", "pristine"] {
        let r = TestRoot::new();
        // Something to back up and to record as the admin's original.
        fs::create_dir_all(r.at("/etc/certs")).unwrap();
        fs::write(r.at("/etc/certs/root-cert.pem"), "the admin's\n").unwrap();
        let state = r.at("/var/lib/vmagent");
        fs::create_dir_all(state.join("txn")).unwrap();
        for d in [state.clone(), state.join("txn")] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        }
        if link == "txn" {
            fs::remove_dir(state.join("txn")).unwrap();
        }
        fs::write(state.join("lock"), "").unwrap();
        let away = tempfile::tempdir().unwrap();
        fs::create_dir_all(away.path().join("backups")).unwrap();
        fs::write(away.path().join("backups/keep"), "not vmagent's\n").unwrap();
        symlink(away.path(), state.join(link)).unwrap();
        let t = tempfile::tempdir().unwrap();
        let b = Spec::example().write_tar(t.path());
        let before = r.snapshot();
        let away_before = snapshot(away.path());
        let o = apply(&r, &b);
        assert_eq!(o.status.code(), Some(1), "{link}: {}", show(&o));
        assert!(
            stderr(&o).contains("is a symlink") && stderr(&o).contains(link),
            "{link}: {}",
            show(&o)
        );
        assert_same(
            &away_before,
            &snapshot(away.path()),
            &format!("{link}: outside"),
        );
        assert_same(&before, &r.snapshot(), &format!("{link}: root"));
    }
}

/// Finding 8: a damaged journal blocked every apply with a message claiming everything
/// was rolled back; `recover --discard-journal` moves it aside and clears the way.
#[test]
fn a_damaged_journal_is_named_and_can_be_discarded() {
    let (r, _t, b) = applied();
    plant(&r, "{not json");
    fs::write(r.at("/var/lib/vmagent/txn/backups/0"), "old hosts\n").unwrap();
    let before = r.snapshot();
    for args in [vec!["recover"], vec!["uninstall"]] {
        let o = run(&args, &r);
        refused(&o, args[0]);
        assert!(stderr(&o).contains("damaged"), "{}", show(&o));
        assert_same(&before, &r.snapshot(), args[0]);
    }
    let o = apply(&r, &b);
    refused(&o, "apply");
    let o = ok(run(&["recover", "--discard-journal"], &r), "discard");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing was rolled back"),
        "{}",
        show(&o)
    );
    assert!(!r.at("/var/lib/vmagent/txn/journal.json").exists());
    let aside: Vec<_> = fs::read_dir(r.at("/var/lib/vmagent"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("discarded-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        fs::read(aside[0].join("journal.json")).unwrap(),
        b"{not json"
    );
    assert_eq!(
        fs::read(aside[0].join("backups/0")).unwrap(),
        b"old hosts\n"
    );
    assert_eq!(mode(&aside[0]), 0o700);
    ok(apply(&r, &b), "apply after discarding");
    let o = ok(run(&["recover"], &r), "recover");
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to recover"));
}

/// Finding 8: a missing backup was not named.
#[test]
fn a_missing_backup_is_named_with_its_destination() {
    let (r, _t, _b) = applied();
    plant(
        &r,
        r#"{"version":1,"entries":[{"path":"etc/hosts","prior":{"kind":"file","backup":"7","mode":420,"uid":0,"gid":0}}]}"#,
    );
    let before = r.snapshot();
    let o = run(&["recover"], &r);
    refused(&o, "recover");
    assert!(
        stderr(&o).contains("backup '7'") && stderr(&o).contains("/etc/hosts"),
        "{}",
        show(&o)
    );
    assert_same(&before, &r.snapshot(), "missing backup");
}

/// Finding 8: a symlink istio-proxy owns at a destination not recorded yet failed the
/// apply with "cannot record the undo journal"; it is replaced, as README says, and
/// an apply that fails puts it back as it was (its owner too, so it stays untrusted).
#[test]
fn a_proxy_owned_link_at_a_destination_is_replaced() {
    let t = tempfile::tempdir().unwrap();
    let b = Spec::example().write_tar(t.path());
    let setup = || {
        let r = TestRoot::new();
        fs::create_dir_all(r.at("/etc/certs")).unwrap();
        let link = r.at("/etc/certs/root-cert.pem");
        symlink("/var/lib/istio/planted", &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(PROXY_ID), Some(PROXY_ID)).unwrap();
        r
    };
    let r = setup();
    let o = vmagent()
        .arg("apply")
        .arg(&b)
        .arg("--root")
        .arg(r.path())
        .args(["--no-package", "--no-start"])
        .env("VMAGENT_FAULT", "fail:0")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stderr(&o).contains("all changes were rolled back"),
        "{}",
        show(&o)
    );
    let link = r.at("/etc/certs/root-cert.pem");
    let m = lstat(&link);
    assert!(m.file_type().is_symlink());
    assert_eq!((m.uid(), m.gid()), (PROXY_ID, PROXY_ID));
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("/var/lib/istio/planted")
    );
    let r = setup();
    ok(apply(&r, &b), "apply over the proxy's link");
    let m = lstat(&r.at("/etc/certs/root-cert.pem"));
    assert!(m.file_type().is_file());
    assert_eq!(
        fs::read(r.at("/etc/certs/root-cert.pem")).unwrap(),
        example_member("root-cert.pem")
    );
}

/// status.json is read back by `vmagent status`: a forged or foreign one (a state this
/// version does not know, an exit code that contradicts the state) neither panics nor
/// decides the exit code; that follows from the state and the failure kind.
#[test]
fn a_forged_status_file_does_not_decide_the_exit_code() {
    let cases = [
        // (state, reason, stored exit_code, expected exit, expected shown state)
        ("failed", Some("token-rejected"), 0, 11, "failed"),
        ("exploded", None, 0, 10, "unknown"),
        ("degraded", Some("no-such-kind"), 3, 10, "degraded"),
        ("ready", None, 21, 0, "ready"),
    ];
    for (state, reason, stored, want, shown) in cases {
        let root = TestRoot::new();
        let f = root.at("/run/vmagent/status.json");
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        let doc = serde_json::json!({
            "vmagent": "9.9.9", "updated": "x",
            "health": {"state": state, "reason": reason, "summary": reason.map(|_| "s"),
                       "exit_code": stored},
            "token": null, "root_cert": null, "workload_cert": null,
            "package_version": null, "enabled": null,
            "last_apply": {"at": "t", "result": "half-applied", "exit_code": 0, "bundle": "b"}
        });
        fs::write(&f, doc.to_string()).unwrap();
        let o = run(&["status", "--output", "json"], &root);
        let ctx = format!("{state}/{reason:?}/{stored}: {}", show(&o));
        assert_eq!(o.status.code(), Some(want), "{ctx}");
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).expect(&ctx);
        assert_eq!(st["health"]["state"], shown, "{ctx}");
        assert_eq!(st["last_apply"]["result"], "half-applied", "{ctx}");
        assert!(!stderr(&o).contains("panicked"), "{ctx}");
    }
}
