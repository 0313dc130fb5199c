//! `vmagent apply` / `vmagent recover` end to end: the real binary against throwaway
//! target roots, with real tar / tar.gz / directory bundles.
//!
//! Covers: every bundle form, the installed layout (content, mode, owner), /etc/hosts
//! editing, idempotence, dry runs (and never printing the token), drift repair,
//! identity changes, missing prerequisites, JSON output, crash consistency (injected
//! faults at every step, aborts, real SIGKILLs), the apply lock, and symlink safety.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::output::*;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_vmagent");

/// The managed block's markers (a documented format: admins grep for them).
const BEGIN: &str = "# BEGIN vmagent-managed (istio): lines up to END are rewritten by vmagent";
const END: &str = "# END vmagent-managed";

const EXAMPLE_SUB: &str = "system:serviceaccount:vm-ns:vm-sa";
const NEW_SUB: &str = "system:serviceaccount:vm-ns:vm-sa-new";

// ---------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------

/// A `vmagent` command with no inherited fault hook and no core dumps (aborts are
/// expected in the crash tests).
fn vm<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(BIN);
    c.args(args).env_remove("VMAGENT_FAULT");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            Ok(())
        });
    }
    c
}

/// `vmagent apply BUNDLE --root ROOT --no-package --no-start EXTRA...`, not run yet.
fn apply_cmd(root: &Path, bundle: &Path, extra: &[&str], fault: Option<&str>) -> Command {
    let mut c = vm([OsStr::new("apply"), bundle.as_os_str()]);
    c.arg("--root")
        .arg(root)
        .args(["--no-package", "--no-start"])
        .args(extra);
    if let Some(f) = fault {
        c.env("VMAGENT_FAULT", f);
    }
    c
}

fn apply(root: &TestRoot, bundle: &Path, extra: &[&str]) -> Output {
    apply_cmd(root.path(), bundle, extra, None)
        .output()
        .expect("run vmagent")
}

fn apply_fault(root: &TestRoot, bundle: &Path, fault: &str) -> Output {
    apply_cmd(root.path(), bundle, &[], Some(fault))
        .output()
        .expect("run vmagent")
}

fn recover(root: &TestRoot) -> Output {
    vm(["recover", "--root"])
        .arg(root.path())
        .output()
        .expect("run vmagent recover")
}

// ---------------------------------------------------------------------------------
// Bundles and roots
// ---------------------------------------------------------------------------------

fn example(name: &str) -> Vec<u8> {
    fs::read(example_dir().join(name)).expect("example member")
}

/// Member file name -> content of a spec's regular files.
fn members(spec: &Spec) -> BTreeMap<String, Vec<u8>> {
    spec.items
        .iter()
        .filter_map(|(n, i)| match i {
            Item::File(d, _) => Some((n.rsplit('/').next().unwrap_or(n).to_string(), d.clone())),
            _ => None,
        })
        .collect()
}

fn replace(data: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = String::from_utf8(data.to_vec()).expect("utf-8");
    assert!(s.contains(from), "{from:?} not in member");
    s.replace(from, to).into_bytes()
}

/// The example bundle with a different cluster.env, mesh, token (and identity) and
/// hosts address.
fn new_spec() -> Spec {
    Spec::example()
        .set(
            "cluster.env",
            replace(
                &example("cluster.env"),
                "ISTIO_SVC_IP='192.0.2.20'",
                "ISTIO_SVC_IP='192.0.2.21'",
            ),
        )
        .set(
            "mesh.yaml",
            replace(&example("mesh.yaml"), "port: 8080", "port: 8081"),
        )
        .set("istio-token", token_for(NEW_SUB))
        .set("hosts", "192.0.2.11 istiod.istio-system.svc\n")
}

/// Writes `spec` as a tar into its own new directory under `t`.
fn tar_in(t: &Path, sub: &str, spec: &Spec) -> PathBuf {
    let d = t.join(sub);
    fs::create_dir_all(&d).expect("mkdir");
    spec.write_tar(&d)
}

/// Asserts every destination of `spec` is installed under `root` with the exact
/// content, mode and (unless `owners` is false) owner from the layout.
#[track_caller]
fn assert_installed(root: &Path, spec: &Spec, owners: bool) {
    let m = members(spec);
    let id = |proxy: bool| if proxy { PROXY_ID } else { 0 };
    for (member, dest, mode, proxy) in FILES {
        let p = inroot(root, dest, false);
        let md = lstat(&p);
        assert!(md.file_type().is_file(), "{dest} is not a regular file");
        assert_eq!(
            fs::read(&p).expect("read"),
            m[member],
            "{dest}: content differs from bundle member {member}"
        );
        assert_eq!(md.mode() & 0o7777, mode, "{dest}: mode {:o}", md.mode());
        if owners {
            assert_eq!(
                (md.uid(), md.gid()),
                (id(proxy), id(proxy)),
                "{dest}: owner"
            );
        }
    }
    for (dir, mode, proxy) in DIRS {
        let p = inroot(root, dir, true);
        let md = lstat(&p);
        assert!(md.is_dir(), "{dir} is not a directory");
        assert_eq!(md.mode() & 0o7777, mode, "{dir}: mode {:o}", md.mode());
        if owners {
            assert_eq!((md.uid(), md.gid()), (id(proxy), id(proxy)), "{dir}: owner");
        }
    }
    // The package's /etc/istio link, and the mesh behind it.
    let link = root.join("etc/istio");
    assert!(
        lstat(&link).file_type().is_symlink(),
        "/etc/istio is no link"
    );
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("/var/lib/istio"));
    assert_eq!(
        fs::read(root.join("var/lib/istio/config/mesh")).expect("mesh behind the link"),
        m["mesh.yaml"]
    );
}

/// The managed block holding `lines`.
fn block(lines: &[&str]) -> String {
    let mut s = format!("{BEGIN}\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str(END);
    s.push('\n');
    s
}

fn hosts(root: &TestRoot) -> String {
    String::from_utf8(fs::read(root.at("/etc/hosts")).expect("hosts")).expect("utf-8")
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Asserts that neither `token` nor any 20-character piece of it is in the output.
#[track_caller]
fn assert_no_token(o: &Output, token: &[u8], ctx: &str) {
    let text = format!("{}{}", stdout(o), stderr(o));
    let tok = std::str::from_utf8(token).expect("ascii token").trim_end();
    assert!(tok.len() >= 20);
    for piece in tok.as_bytes().windows(20) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(
            !text.contains(piece),
            "{ctx}: output contains token piece {piece:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Relaxed snapshots for crash tests: no mtimes, no lock/journal internals
// ---------------------------------------------------------------------------------

type Relaxed = BTreeMap<PathBuf, (&'static str, u32, u32, u32, Vec<u8>)>;

fn internal(p: &Path) -> bool {
    p.starts_with("var/lib/vmagent/txn") || p == Path::new("var/lib/vmagent/lock")
}

fn relaxed(root: &TestRoot) -> Relaxed {
    root.snapshot()
        .into_iter()
        .filter(|(p, _)| !internal(p))
        .map(|(p, n)| (p, (n.kind, n.mode, n.uid, n.gid, n.content)))
        .collect()
}

/// The first difference between two relaxed snapshots, if any.
fn diff(a: &Relaxed, b: &Relaxed) -> Option<String> {
    for (p, n) in a {
        match b.get(p) {
            None => return Some(format!("{} disappeared", p.display())),
            Some(m) if m != n => {
                return Some(format!(
                    "{} changed: {} {:o} {}:{} {:?} -> {} {:o} {}:{} {:?}",
                    p.display(),
                    n.0,
                    n.1,
                    n.2,
                    n.3,
                    String::from_utf8_lossy(&n.4),
                    m.0,
                    m.1,
                    m.2,
                    m.3,
                    String::from_utf8_lossy(&m.4)
                ))
            }
            _ => {}
        }
    }
    b.keys()
        .find(|p| !a.contains_key(*p))
        .map(|p| format!("{} appeared", p.display()))
}

#[track_caller]
fn assert_relaxed(want: &Relaxed, got: &Relaxed, ctx: &str) {
    if let Some(d) = diff(want, got) {
        panic!("{ctx}: {d}");
    }
}

/// `.vmagent-tmp` files anywhere in the root (`all`) or outside vmagent's internals.
fn tmp_files(root: &TestRoot, all: bool) -> Vec<PathBuf> {
    root.snapshot()
        .into_keys()
        .filter(|p| all || !internal(p))
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.ends_with(".vmagent-tmp"))
        })
        .collect()
}

/// OLD and NEW bundles for the transaction tests.
struct Pair {
    _t: tempfile::TempDir,
    old: PathBuf,
    new: PathBuf,
}

fn pair() -> Pair {
    let t = tempfile::tempdir().unwrap();
    let old = tar_in(t.path(), "old", &Spec::example());
    let d = t.path().join("new");
    fs::create_dir_all(&d).unwrap();
    let new = new_spec().write_tgz(&d);
    Pair { _t: t, old, new }
}

/// A root with OLD applied, then touched the way a live VM is: the proxy wrote its
/// certificates, /etc/hosts is 0640 root:4, one managed directory is gone and one has
/// drifted. Applying NEW then creates, writes, replaces, removes and chmods.
fn old_root(p: &Pair) -> TestRoot {
    let r = TestRoot::new();
    set_mode(&r.at("/etc/hosts"), 0o640);
    chown(r.at("/etc/hosts"), Some(0), Some(4)).unwrap();
    ok(apply(&r, &p.old, &[]), "apply OLD");
    for (name, mode) in [("cert-chain.pem", 0o644), ("key.pem", 0o600)] {
        let f = r.at("/etc/certs").join(name);
        fs::write(&f, format!("proxy-issued {name}\n")).unwrap();
        set_mode(&f, mode);
        chown(&f, Some(PROXY_ID), Some(PROXY_ID)).unwrap();
    }
    fs::remove_dir(r.at("/var/lib/istio/proxy")).unwrap();
    set_mode(&r.at("/etc/certs"), 0o700);
    r
}

/// The relaxed snapshot of an OLD root after NEW was applied cleanly.
fn expected_new(p: &Pair) -> Relaxed {
    let r = old_root(p);
    let o = ok(apply(&r, &p.new, &[]), "apply NEW");
    assert!(stdout(&o).contains("applied"), "{}", show(&o));
    assert_installed(r.path(), &new_spec(), true);
    relaxed(&r)
}

/// Number of actions applying NEW to an OLD root takes.
fn new_action_count(p: &Pair) -> usize {
    let r = old_root(p);
    let o = ok(
        apply(&r, &p.new, &["--dry-run", "--output", "json"]),
        "dry run",
    );
    let n = json(&o)["actions"].as_array().expect("actions").len();
    assert!(
        n >= 8,
        "expected a rich plan, got {n} actions: {}",
        show(&o)
    );
    n
}

// ---------------------------------------------------------------------------------
// 1. Happy path for every bundle form
// ---------------------------------------------------------------------------------

/// Applies `bundle` (holding `spec`) to a fresh root whose /etc/hosts is 0640 root:4
/// and checks everything that was installed.
fn happy(bundle: &Path, spec: &Spec) {
    let r = TestRoot::new();
    let orig = fs::read(r.at("/etc/hosts")).unwrap();
    set_mode(&r.at("/etc/hosts"), 0o640);
    chown(r.at("/etc/hosts"), Some(0), Some(4)).unwrap();

    let o = ok(apply(&r, bundle, &[]), "apply");
    assert!(stdout(&o).contains("applied"), "{}", show(&o));
    assert_installed(r.path(), spec, true);

    let h = fs::read(r.at("/etc/hosts")).unwrap();
    let line = String::from_utf8(members(spec)["hosts"].clone()).unwrap();
    let line = line.trim_end();
    let mut want = orig.clone();
    want.extend_from_slice(block(&[line]).as_bytes());
    assert_eq!(String::from_utf8_lossy(&h), String::from_utf8_lossy(&want));
    assert!(h.starts_with(&orig), "old hosts content not kept");
    assert_eq!(String::from_utf8_lossy(&h).matches(line).count(), 1);
    let md = lstat(&r.at("/etc/hosts"));
    assert_eq!(md.mode() & 0o7777, 0o640, "hosts mode");
    assert_eq!((md.uid(), md.gid()), (0, 4), "hosts owner");

    // The state record is root's and private.
    let st = lstat(&r.at("/var/lib/vmagent/state.json"));
    assert_eq!((st.mode() & 0o7777, st.uid()), (0o600, 0));
    assert!(
        String::from_utf8(fs::read(r.at("/var/lib/vmagent/state.json")).unwrap())
            .unwrap()
            .contains(EXAMPLE_SUB)
    );
    assert!(tmp_files(&r, true).is_empty());
}

#[test]
fn happy_path_tar() {
    let t = tempfile::tempdir().unwrap();
    let spec = Spec::example();
    happy(&spec.write_tar(t.path()), &spec);
}

#[test]
fn happy_path_tgz_with_top_folder() {
    let t = tempfile::tempdir().unwrap();
    let spec = Spec::example_in("vmintegration");
    happy(&spec.write_tgz(t.path()), &spec);
}

#[test]
fn happy_path_dot_slash_names() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = Spec {
        items: vec![("./".into(), Item::Dir)],
    };
    for (n, i) in Spec::example().items {
        spec.items.push((format!("./{n}"), i));
    }
    happy(&spec.write_tar(t.path()), &spec);
}

#[test]
fn happy_path_directory() {
    let t = tempfile::tempdir().unwrap();
    let spec = Spec::example();
    happy(&spec.write_dir(t.path()), &spec);
}

#[test]
fn happy_path_shipped_examples() {
    let spec = Spec::example();
    happy(&example_dir(), &spec);
    happy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bundle.tar.gz"),
        &spec,
    );
}

// ---------------------------------------------------------------------------------
// 2. /var/run -> /run (Debian)
// ---------------------------------------------------------------------------------

fn host_run_secrets() -> Option<(u64, i64, i64)> {
    fs::symlink_metadata("/run/secrets")
        .ok()
        .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
}

#[test]
fn var_run_symlink_to_absolute_run_stays_inside_root() {
    let t = tempfile::tempdir().unwrap();
    let spec = Spec::example();
    let b = spec.write_tar(t.path());
    let host_before = host_run_secrets();
    for with_run in [true, false] {
        let r = TestRoot::new();
        fs::create_dir_all(r.at("/var")).unwrap();
        if with_run {
            fs::create_dir(r.at("/run")).unwrap();
        }
        symlink("/run", r.at("/var/run")).unwrap();
        let o = ok(
            apply(&r, &b, &[]),
            &format!("apply (ROOT/run exists: {with_run})"),
        );
        let tok = r.at("/run/secrets/tokens/istio-token");
        let md = lstat(&tok);
        assert!(md.is_file(), "token not in ROOT/run: {}", show(&o));
        assert_eq!(fs::read(&tok).unwrap(), example("istio-token"));
        assert_eq!((md.mode() & 0o777, md.uid()), (0o600, PROXY_ID));
        assert!(lstat(&r.at("/var/run")).file_type().is_symlink());
        assert_installed(r.path(), &spec, true);
        assert_eq!(host_run_secrets(), host_before, "host /run/secrets touched");
        ok(apply(&r, &b, &[]), "re-apply");
        assert_eq!(host_run_secrets(), host_before, "host /run/secrets touched");
    }
}

// ---------------------------------------------------------------------------------
// 3. Idempotence
// ---------------------------------------------------------------------------------

#[test]
fn second_apply_is_up_to_date_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let tar = tar_in(t.path(), "a", &Spec::example());
    let dir = Spec::example_in("vmintegration").write_dir(t.path());
    let r = TestRoot::new();
    ok(apply(&r, &tar, &[]), "first apply");
    let before = r.snapshot();
    for b in [&tar, &dir] {
        let o = ok(apply(&r, b, &[]), "second apply");
        assert!(stdout(&o).contains("up to date"), "{}", show(&o));
        assert_same(&before, &r.snapshot(), "second apply");
    }
    let o = ok(apply(&r, &tar, &["--output", "json"]), "json");
    assert_eq!(json(&o)["result"], "up-to-date");
    assert_eq!(json(&o)["actions"].as_array().unwrap().len(), 0);
    assert_same(&before, &r.snapshot(), "json apply");
}

// ---------------------------------------------------------------------------------
// 4. Dry run
// ---------------------------------------------------------------------------------

#[test]
fn dry_run_on_fresh_root_writes_nothing_and_hides_token() {
    let t = tempfile::tempdir().unwrap();
    let b = Spec::example().write_tar(t.path());
    let tok = example("istio-token");
    let r = TestRoot::new();
    let before = r.snapshot();
    let o = ok(apply(&r, &b, &["--dry-run"]), "dry run");
    assert_same(&before, &r.snapshot(), "dry run");
    assert!(!r.at("/var/lib/vmagent").exists());
    let s = stdout(&o);
    assert!(s.contains("dry run: nothing was written"), "{}", show(&o));
    assert!(
        s.contains("--- /var/lib/istio/envoy/cluster.env (current)"),
        "{s}"
    );
    assert!(s.contains("+ISTIO_SVC_IP='192.0.2.20'"), "{s}");
    assert!(s.contains("/var/run/secrets/tokens/istio-token"), "{s}");
    assert_no_token(&o, &tok, "dry run");

    let o = ok(
        apply(&r, &b, &["--dry-run", "--output", "json"]),
        "json dry run",
    );
    assert_same(&before, &r.snapshot(), "json dry run");
    assert_eq!(json(&o)["result"], "planned");
    assert_no_token(&o, &tok, "json dry run");

    let o = ok(apply(&r, &b, &[]), "apply");
    assert_no_token(&o, &tok, "apply");
}

#[test]
fn dry_run_on_applied_root_shows_diff_and_writes_nothing() {
    let p = pair();
    let old_tok = example("istio-token");
    let new_tok = token_for(NEW_SUB);
    let r = old_root(&p);
    let before = r.snapshot();

    let o = ok(apply(&r, &p.new, &["--dry-run"]), "dry run");
    assert_same(&before, &r.snapshot(), "dry run");
    let s = stdout(&o);
    for want in [
        "--- /var/lib/istio/envoy/cluster.env (current)",
        "+++ /var/lib/istio/envoy/cluster.env (planned)",
        "-ISTIO_SVC_IP='192.0.2.20'",
        "+ISTIO_SVC_IP='192.0.2.21'",
        "content changed (secret, not shown)",
        "-192.0.2.10 istiod.istio-system.svc",
        "+192.0.2.11 istiod.istio-system.svc",
        "dry run: nothing was written",
    ] {
        assert!(
            s.contains(want),
            "missing {want:?} in dry run:\n{}",
            show(&o)
        );
    }
    // Unchanged lines are not shown as changed.
    assert!(!s.contains("+ISTIO_SVC_IP='192.0.2.20'"), "{s}");
    assert_no_token(&o, &old_tok, "dry run (old token)");
    assert_no_token(&o, &new_tok, "dry run (new token)");

    let o = ok(
        apply(&r, &p.new, &["--dry-run", "--output", "json"]),
        "json dry run",
    );
    assert_same(&before, &r.snapshot(), "json dry run");
    let doc = json(&o);
    assert_eq!(doc["result"], "planned");
    let env = doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "/var/lib/istio/envoy/cluster.env")
        .expect("cluster.env action");
    assert_eq!(env["action"], "replace-file");
    assert!(env["diff"]
        .as_str()
        .unwrap()
        .contains("+ISTIO_SVC_IP='192.0.2.21'"));
    assert_no_token(&o, &old_tok, "json dry run (old token)");
    assert_no_token(&o, &new_tok, "json dry run (new token)");

    for extra in [&[][..], &["--output", "json"][..]] {
        let r = old_root(&p);
        let o = ok(apply(&r, &p.new, extra), "apply");
        assert_no_token(&o, &old_tok, "apply (old token)");
        assert_no_token(&o, &new_tok, "apply (new token)");
    }
}

// ---------------------------------------------------------------------------------
// 5. /etc/hosts preservation and adoption
// ---------------------------------------------------------------------------------

#[test]
fn hosts_outside_block_preserved_byte_for_byte() {
    let t = tempfile::tempdir().unwrap();
    let b = Spec::example().write_tar(t.path());
    let r = TestRoot::new();
    let orig = "# static table\r\n127.0.0.1\tlocalhost   # loopback, odd  spacing\n\n   \
                ::1   ip6-localhost\tip6-loopback\n10.1.2.3    db.internal db # café\n\t# indented comment\n#no trailing newline";
    fs::write(r.at("/etc/hosts"), orig).unwrap();
    ok(apply(&r, &b, &[]), "apply");
    let want = format!("{orig}\n{}", block(&["192.0.2.10 istiod.istio-system.svc"]));
    assert_eq!(hosts(&r), want);
    // Idempotent, still byte-for-byte.
    ok(apply(&r, &b, &[]), "re-apply");
    assert_eq!(hosts(&r), want);
}

#[test]
fn manual_duplicates_are_adopted_into_the_block() {
    let t = tempfile::tempdir().unwrap();
    let b = Spec::example().write_tar(t.path());
    let r = TestRoot::new();
    let orig = "127.0.0.1 localhost\n# keep me\n";
    let line = "192.0.2.10 istiod.istio-system.svc\n";
    // `cat hosts >> /etc/hosts`, twice, with an admin line in between.
    fs::write(
        r.at("/etc/hosts"),
        format!("{orig}{line}10.0.0.9   other.internal\n{line}"),
    )
    .unwrap();
    let o = ok(apply(&r, &b, &[]), "apply");
    let h = hosts(&r);
    assert_eq!(h.matches("istiod.istio-system.svc").count(), 1, "{h}");
    assert_eq!(
        h,
        format!(
            "{orig}10.0.0.9   other.internal\n{}",
            block(&["192.0.2.10 istiod.istio-system.svc"])
        )
    );
    let s = stdout(&o);
    assert!(
        s.contains("moved into the managed block") && s.contains("adopted"),
        "{}",
        show(&o)
    );
    assert!(s.contains("line 3") && s.contains("line 5"), "{s}");
}

// ---------------------------------------------------------------------------------
// 6. Changed bundle and drift repair
// ---------------------------------------------------------------------------------

#[test]
fn changed_bundle_replaces_files_and_block_in_place_and_repairs_drift() {
    let p = pair();
    let r = TestRoot::new();
    ok(apply(&r, &p.old, &[]), "apply OLD");
    assert_installed(r.path(), &Spec::example(), true);
    // An admin line after the block.
    let mut h = hosts(&r);
    h.push_str("10.9.9.9 after.block\n");
    fs::write(r.at("/etc/hosts"), &h).unwrap();

    let o = ok(apply(&r, &p.new, &[]), "apply NEW");
    assert!(stdout(&o).contains("replace-file"), "{}", show(&o));
    assert_installed(r.path(), &new_spec(), true);
    assert_eq!(
        hosts(&r),
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}10.9.9.9 after.block\n",
            block(&["192.0.2.11 istiod.istio-system.svc"])
        )
    );

    // Drift: mode of the token, owner of the root cert.
    let tok = r.at("/var/run/secrets/tokens/istio-token");
    set_mode(&tok, 0o777);
    chown(r.at("/etc/certs/root-cert.pem"), Some(0), Some(0)).unwrap();
    let o = ok(apply(&r, &p.new, &[]), "repair");
    let s = stdout(&o);
    assert!(
        s.contains("set-meta") && s.contains("mode 0777 -> 0600") && s.contains("owner 0:0"),
        "{}",
        show(&o)
    );
    assert_installed(r.path(), &new_spec(), true);
    let o = ok(apply(&r, &p.new, &[]), "after repair");
    assert!(stdout(&o).contains("up to date"), "{}", show(&o));
}

// ---------------------------------------------------------------------------------
// 7. Identity change
// ---------------------------------------------------------------------------------

fn proxy_certs(r: &TestRoot) {
    for name in ["cert-chain.pem", "key.pem"] {
        let f = r.at("/etc/certs").join(name);
        fs::write(&f, format!("issued {name}\n")).unwrap();
        chown(&f, Some(PROXY_ID), Some(PROXY_ID)).unwrap();
    }
}

fn certs_present(r: &TestRoot) -> [bool; 2] {
    ["cert-chain.pem", "key.pem"].map(|n| r.at("/etc/certs").join(n).exists())
}

#[test]
fn identity_change_removes_proxy_certs_same_identity_keeps_them() {
    let t = tempfile::tempdir().unwrap();
    let a = "system:serviceaccount:vm-ns:vm-a";
    let b = "system:serviceaccount:vm-ns:vm-b";
    let ba = tar_in(
        t.path(),
        "a",
        &Spec::example().set("istio-token", token_for(a)),
    );
    let bb = tar_in(
        t.path(),
        "b",
        &Spec::example().set("istio-token", token_for(b)),
    );
    let bb2 = tar_in(
        t.path(),
        "b2",
        &Spec::example().set(
            "istio-token",
            jwt(&format!(
                r#"{{"aud":["istio-ca"],"exp":4000000000,"iat":1700000999,"sub":"{b}"}}"#
            )),
        ),
    );
    let r = TestRoot::new();
    ok(apply(&r, &ba, &[]), "apply A");
    proxy_certs(&r);
    assert_eq!(certs_present(&r), [true, true]);

    let o = ok(apply(&r, &bb, &[]), "apply B");
    assert_eq!(certs_present(&r), [false, false], "{}", show(&o));
    assert!(
        stdout(&o).contains(&format!("previous identity {a}")),
        "{}",
        show(&o)
    );
    let state = fs::read_to_string(r.at("/var/lib/vmagent/state.json")).unwrap();
    assert!(state.contains(b), "{state}");

    // Same identity, new token: the certificates stay.
    proxy_certs(&r);
    let o = ok(apply(&r, &bb2, &[]), "apply B again (new token, same sub)");
    assert_eq!(certs_present(&r), [true, true], "{}", show(&o));
    assert!(!stdout(&o).contains("remove"), "{}", show(&o));
    let o = ok(apply(&r, &bb2, &[]), "third");
    assert!(stdout(&o).contains("up to date"));
    assert_eq!(certs_present(&r), [true, true]);
}

// ---------------------------------------------------------------------------------
// 8. Prerequisites
// ---------------------------------------------------------------------------------

#[test]
fn missing_proxy_user_needs_skip_owner() {
    let t = tempfile::tempdir().unwrap();
    let spec = Spec::example();
    let b = spec.write_tar(t.path());
    let r = TestRoot::bare();
    let before = r.snapshot();
    let o = code(apply(&r, &b, &[]), 4, "no istio-proxy");
    assert!(stderr(&o).contains("--skip-owner"), "{}", show(&o));
    assert!(stderr(&o).contains("istio-proxy"), "{}", show(&o));
    assert_same(&before, &r.snapshot(), "refused apply");

    ok(apply(&r, &b, &["--skip-owner"]), "--skip-owner");
    assert_installed(r.path(), &spec, false);
    let o = ok(apply(&r, &b, &["--skip-owner"]), "again");
    assert!(stdout(&o).contains("up to date"), "{}", show(&o));
}

#[test]
fn package_step_needs_an_os() {
    let t = tempfile::tempdir().unwrap();
    let b = Spec::example().write_tar(t.path());
    let r = TestRoot::new(); // no etc/os-release: the package format cannot be known
    let before = r.snapshot();
    for (flags, wants) in [
        (&[][..], &["os-release", "--package"][..]),
        (&["--no-start"][..], &["os-release", "--package"][..]),
    ] {
        let o = vm([OsStr::new("apply"), b.as_os_str()])
            .arg("--root")
            .arg(r.path())
            .args(flags)
            .output()
            .unwrap();
        let o = code(o, 4, &format!("apply {flags:?}"));
        for w in wants {
            assert!(stderr(&o).contains(w), "{w} not named: {}", show(&o));
        }
        assert_same(&before, &r.snapshot(), "refused apply");
    }
}

// ---------------------------------------------------------------------------------
// 9. JSON output
// ---------------------------------------------------------------------------------

fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[track_caller]
fn check_doc(doc: &serde_json::Value, result: &str) {
    assert_eq!(doc["command"], "apply");
    assert_eq!(doc["result"], result, "{doc:#}");
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["token"]["sub"], EXAMPLE_SUB);
    assert_eq!(doc["token"]["expires_at"], "2096-10-02T07:06:40Z");
    let na = doc["root_cert"]["not_after"].as_str().expect("not_after");
    assert!(is_rfc3339(na), "{na}");
    for a in doc["actions"].as_array().expect("actions") {
        for k in ["action", "path", "detail"] {
            assert!(a[k].is_string(), "action without {k}: {a}");
        }
    }
}

#[test]
fn json_output_documents() {
    let t = tempfile::tempdir().unwrap();
    let b = tar_in(t.path(), "good", &Spec::example());
    let bad = tar_in(t.path(), "bad", &Spec::example().without("istio-token"));
    let r = TestRoot::new();

    let o = ok(apply(&r, &b, &["--output", "json", "--dry-run"]), "planned");
    let doc = json(&o);
    check_doc(&doc, "planned");
    let acts = doc["actions"].as_array().unwrap();
    assert!(acts.iter().any(|a| a["action"] == "create-symlink"
        && a["path"] == "/etc/istio"
        && a["detail"].as_str().unwrap().contains("/var/lib/istio")));
    assert!(acts
        .iter()
        .any(|a| a["action"] == "create-file" && a["path"] == "/var/lib/istio/envoy/cluster.env"));

    let o = ok(apply(&r, &b, &["--output", "json"]), "applied");
    let doc = json(&o);
    check_doc(&doc, "applied");
    let acts = doc["actions"].as_array().unwrap();
    let tok = acts
        .iter()
        .find(|a| a["path"] == "/var/run/secrets/tokens/istio-token")
        .expect("token action");
    assert_eq!(tok["action"], "create-file");
    assert!(tok["detail"].as_str().unwrap().contains("0600"), "{tok}");
    assert!(tok.get("diff").is_none(), "secret has a diff: {tok}");
    assert!(acts
        .iter()
        .any(|a| a["action"] == "replace-file" && a["path"] == "/etc/hosts"));

    let o = ok(apply(&r, &b, &["--output", "json"]), "up to date");
    let doc = json(&o);
    check_doc(&doc, "up-to-date");
    assert_eq!(doc["actions"].as_array().unwrap().len(), 0);

    let before = r.snapshot();
    let o = code(apply(&r, &bad, &["--output", "json"]), 2, "invalid bundle");
    let doc = json(&o);
    assert_eq!(doc["result"], "error");
    assert_eq!(doc["exit_code"], 2);
    assert!(
        doc["error"].as_str().unwrap().contains("istio-token"),
        "{doc:#}"
    );
    assert_same(&before, &r.snapshot(), "invalid bundle");
}

// ---------------------------------------------------------------------------------
// 10. Crash consistency at every step (fault hook of debug builds)
// ---------------------------------------------------------------------------------

#[test]
fn injected_failure_at_every_step_rolls_back() {
    let p = pair();
    let n = new_action_count(&p);
    for step in 0..=n {
        let r = old_root(&p);
        let pre = relaxed(&r);
        let o = code(
            apply_fault(&r, &p.new, &format!("fail:{step}")),
            1,
            &format!("fail:{step}"),
        );
        let err = stderr(&o);
        assert!(
            err.lines()
                .any(|l| l.starts_with("error:") && l.contains("rolled back")),
            "fail:{step}: {}",
            show(&o)
        );
        assert!(
            err.contains(&format!("injected fault after {step} actions")),
            "{err}"
        );
        assert_relaxed(&pre, &relaxed(&r), &format!("after fail:{step}"));
        assert_eq!(tmp_files(&r, true), Vec::<PathBuf>::new(), "fail:{step}");
        assert!(!r.at("/var/lib/vmagent/txn/journal.json").exists());
        let o = ok(recover(&r), "recover after a rolled-back failure");
        assert!(stdout(&o).contains("nothing to recover"), "{}", show(&o));
    }
    // One past the last step: no fault fires.
    let r = old_root(&p);
    ok(
        apply_fault(&r, &p.new, &format!("fail:{}", n + 1)),
        "fault past the end",
    );
    assert_installed(r.path(), &new_spec(), true);
}

/// On a fresh root the apply creates the /etc/istio link and every directory; each of
/// those is undone too. Relaxation: the state directory and its parents (ROOT/var,
/// ROOT/var/lib, made before the transaction) may remain.
#[test]
fn injected_failure_on_fresh_root_rolls_back() {
    let t = tempfile::tempdir().unwrap();
    let b = Spec::example().write_tar(t.path());
    let n = {
        let r = TestRoot::new();
        let o = ok(apply(&r, &b, &["--output", "json"]), "reference");
        json(&o)["actions"].as_array().unwrap().len()
    };
    let bookkeeping = |p: &Path| {
        p == Path::new("var") || p == Path::new("var/lib") || p.starts_with("var/lib/vmagent")
    };
    for step in 0..=n {
        let r = TestRoot::new();
        let pre = relaxed(&r);
        let o = code(
            apply_fault(&r, &b, &format!("fail:{step}")),
            1,
            &format!("fresh root, fail:{step}"),
        );
        assert!(stderr(&o).contains("rolled back"), "{}", show(&o));
        let mut got = relaxed(&r);
        got.retain(|p, _| !bookkeeping(p));
        assert_relaxed(&pre, &got, &format!("fresh root after fail:{step}"));
        assert!(!r.at("/etc/istio").exists() && lstat(&r.at("/etc")).is_dir());
        assert_eq!(tmp_files(&r, true), Vec::<PathBuf>::new());
    }
}

#[test]
fn dry_run_plan_matches_applied_plan_on_fresh_root() {
    let t = tempfile::tempdir().unwrap();
    let b = Spec::example().write_tar(t.path());
    let r = TestRoot::new();
    let planned = json(&ok(
        apply(&r, &b, &["--dry-run", "--output", "json"]),
        "dry run",
    ))["actions"]
        .clone();
    let applied = json(&ok(apply(&r, &b, &["--output", "json"]), "apply"))["actions"].clone();
    let paths = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| format!("{} {}", a["action"], a["path"]))
            .collect()
    };
    assert_eq!(paths(&planned), paths(&applied));
}

#[test]
fn abort_at_every_step_then_recover_restores_old() {
    let p = pair();
    let n = new_action_count(&p);
    for step in 0..=n {
        let r = old_root(&p);
        let pre = relaxed(&r);
        let o = apply_fault(&r, &p.new, &format!("abort:{step}"));
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGABRT),
            "abort:{step}: {}",
            show(&o)
        );
        assert!(r.at("/var/lib/vmagent/txn/journal.json").exists());
        let o = ok(recover(&r), &format!("recover after abort:{step}"));
        assert!(
            stdout(&o).contains("rolled back an interrupted apply"),
            "{}",
            show(&o)
        );
        assert_relaxed(&pre, &relaxed(&r), &format!("recovered abort:{step}"));
        assert_eq!(tmp_files(&r, true), Vec::<PathBuf>::new(), "abort:{step}");
        let o = ok(recover(&r), "second recover");
        assert!(stdout(&o).contains("nothing to recover"), "{}", show(&o));
        assert_relaxed(&pre, &relaxed(&r), "second recover");
    }
}

#[test]
fn abort_at_every_step_then_apply_yields_new() {
    let p = pair();
    let n = new_action_count(&p);
    let want = expected_new(&p);
    for step in 0..=n {
        let r = old_root(&p);
        let o = apply_fault(&r, &p.new, &format!("abort:{step}"));
        assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{}", show(&o));
        let o = ok(apply(&r, &p.new, &[]), &format!("apply after abort:{step}"));
        let s = stdout(&o);
        assert!(
            s.contains("recovered: rolled back") && s.contains("applied"),
            "{}",
            show(&o)
        );
        assert_relaxed(&want, &relaxed(&r), &format!("apply after abort:{step}"));
        assert_eq!(tmp_files(&r, true), Vec::<PathBuf>::new());
        assert_installed(r.path(), &new_spec(), true);
    }
}

// ---------------------------------------------------------------------------------
// 11. Real SIGKILL at random times
// ---------------------------------------------------------------------------------

/// xorshift64*: enough randomness for kill timings; the seed is printed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("VMAGENT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("kill timings: VMAGENT_TEST_SEED={seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[test]
fn sigkill_at_random_times_leaves_all_old_or_all_new() {
    let p = pair();
    let want_new = expected_new(&p);
    let mut rng = Rng::new();
    let (mut olds, mut news) = (0, 0);
    for i in 0..30 {
        let r = old_root(&p);
        let pre = relaxed(&r);
        let delay = rng.below(16);
        let mut child = apply_cmd(r.path(), &p.new, &[], None)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL; fails only if it already exited
        child.wait().expect("wait");
        let o = ok(recover(&r), &format!("recover #{i} ({delay} ms)"));
        let got = relaxed(&r);
        match (diff(&pre, &got), diff(&want_new, &got)) {
            (None, _) => olds += 1,
            (_, None) => news += 1,
            (Some(a), Some(b)) => panic!(
                "iteration {i} (killed after {delay} ms): root is neither all-OLD ({a}) nor all-NEW ({b})\n{}",
                show(&o)
            ),
        }
        assert_eq!(tmp_files(&r, false), Vec::<PathBuf>::new(), "#{i}");
        // And the next apply always finishes the job.
        ok(apply(&r, &p.new, &[]), "apply after kill");
        assert_relaxed(&want_new, &relaxed(&r), "apply after kill");
    }
    eprintln!("kill -9: {olds} all-OLD, {news} all-NEW");
}

// ---------------------------------------------------------------------------------
// 12. Concurrency and the lock
// ---------------------------------------------------------------------------------

fn spawn_apply(root: &TestRoot, bundle: &Path) -> Child {
    apply_cmd(root.path(), bundle, &[], None)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

#[test]
fn concurrent_applies_on_applied_root_serialise() {
    let p = pair();
    let other = new_spec().set(
        "cluster.env",
        replace(
            &example("cluster.env"),
            "ISTIO_SVC_IP='192.0.2.20'",
            "ISTIO_SVC_IP='192.0.2.22'",
        ),
    );
    let t = tempfile::tempdir().unwrap();
    let b2 = other.write_dir(t.path());
    let want_a = expected_new(&p);
    let want_b = {
        let r = old_root(&p);
        ok(apply(&r, &b2, &[]), "apply B");
        relaxed(&r)
    };
    let (mut saw_a, mut saw_b) = (false, false);
    for i in 0..8 {
        // Different bundles.
        let r = old_root(&p);
        let c1 = spawn_apply(&r, &p.new);
        let c2 = spawn_apply(&r, &b2);
        let o1 = ok(c1.wait_with_output().unwrap(), &format!("#{i} first"));
        let o2 = ok(c2.wait_with_output().unwrap(), &format!("#{i} second"));
        let got = relaxed(&r);
        match (diff(&want_a, &got), diff(&want_b, &got)) {
            (None, _) => saw_a = true,
            (_, None) => saw_b = true,
            (Some(a), Some(b)) => panic!(
                "#{i}: state is neither bundle's: {a} / {b}\n{}\n{}",
                show(&o1),
                show(&o2)
            ),
        }
        assert_eq!(tmp_files(&r, true), Vec::<PathBuf>::new());

        // Same bundle: one applies, the other finds it up to date.
        let r = old_root(&p);
        let c1 = spawn_apply(&r, &p.new);
        let c2 = spawn_apply(&r, &p.new);
        let o1 = ok(c1.wait_with_output().unwrap(), "same bundle 1");
        let o2 = ok(c2.wait_with_output().unwrap(), "same bundle 2");
        assert_relaxed(&want_a, &relaxed(&r), "same bundle twice");
        let up = [&o1, &o2]
            .iter()
            .filter(|o| stdout(o).contains("up to date"))
            .count();
        assert_eq!(up, 1, "{}\n{}", show(&o1), show(&o2));
    }
    eprintln!("concurrent: last writer A seen {saw_a}, B seen {saw_b}");
}

#[test]
fn concurrent_first_applies_on_fresh_root_both_succeed() {
    let t = tempfile::tempdir().unwrap();
    let spec = Spec::example();
    let b = spec.write_tar(t.path());
    let want = {
        let r = TestRoot::new();
        ok(apply(&r, &b, &[]), "reference");
        relaxed(&r)
    };
    for i in 0..50 {
        let r = TestRoot::new();
        let c1 = spawn_apply(&r, &b);
        let c2 = spawn_apply(&r, &b);
        ok(c1.wait_with_output().unwrap(), &format!("#{i} first"));
        ok(c2.wait_with_output().unwrap(), &format!("#{i} second"));
        assert_relaxed(&want, &relaxed(&r), "fresh root, two applies");
    }
}

#[test]
fn held_lock_makes_apply_wait_then_exit_3() {
    let t = tempfile::tempdir().unwrap();
    let spec = Spec::example();
    let b = spec.write_tar(t.path());
    let r = TestRoot::new();
    fs::create_dir_all(r.at("/var/lib/vmagent")).unwrap();
    // As vmagent makes it: a looser one would be tightened (tests/untrusted_state.rs).
    fs::set_permissions(r.at("/var/lib/vmagent"), fs::Permissions::from_mode(0o700)).unwrap();
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(r.at("/var/lib/vmagent/lock"))
        .unwrap();
    lock.lock().expect("take the lock");
    let before = r.snapshot();

    let started = Instant::now();
    let o = code(
        apply(&r, &b, &["--lock-timeout", "1"]),
        3,
        "apply, lock held",
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    let err = stderr(&o);
    assert!(err.contains("waiting for another vmagent"), "{}", show(&o));
    assert!(err.contains("--lock-timeout"), "{}", show(&o));
    assert_same(&before, &r.snapshot(), "apply while locked");

    let o = code(
        vm(["recover", "--lock-timeout", "1", "--root"])
            .arg(r.path())
            .output()
            .unwrap(),
        3,
        "recover, lock held",
    );
    assert!(
        stderr(&o).contains("waiting for another vmagent"),
        "{}",
        show(&o)
    );

    // JSON callers get the error document too.
    let o = code(
        apply(&r, &b, &["--lock-timeout", "0", "--output", "json"]),
        3,
        "json, lock held",
    );
    assert_eq!(json(&o)["exit_code"], 3);

    lock.unlock().unwrap();
    drop(lock);
    let o = ok(apply(&r, &b, &["--lock-timeout", "1"]), "after release");
    assert!(!stderr(&o).contains("waiting"), "{}", show(&o));
    assert_installed(r.path(), &spec, true);
}

// ---------------------------------------------------------------------------------
// 13. Symlink safety
// ---------------------------------------------------------------------------------

#[test]
fn absolute_symlinked_directory_resolves_inside_root() {
    let t = tempfile::tempdir().unwrap();
    let spec = Spec::example();
    let b = spec.write_tar(t.path());
    // An absolute link into the package's home (a vmagent path): followed inside the root.
    let host_elsewhere = Path::new("/var/lib/istio/elsewhere");
    let existed = host_elsewhere.exists();
    let r = TestRoot::new();
    fs::create_dir_all(r.at("/var/lib/istio")).unwrap();
    symlink("/var/lib/istio/elsewhere", r.at("/etc/certs")).unwrap();
    assert_eq!(lstat(&r.at("/etc/certs")).uid(), 0, "link must be root's");

    ok(apply(&r, &b, &[]), "apply");
    if !existed {
        let leaked = host_elsewhere.exists();
        if leaked {
            let _ = fs::remove_dir_all(host_elsewhere);
        }
        assert!(
            !leaked,
            "vmagent wrote to the host's {}",
            host_elsewhere.display()
        );
    }
    assert!(lstat(&r.at("/etc/certs")).file_type().is_symlink());
    let cert = r.at("/var/lib/istio/elsewhere/root-cert.pem");
    assert_eq!(fs::read(&cert).unwrap(), example("root-cert.pem"));
    assert_eq!(lstat(&cert).uid(), PROXY_ID);
    assert_installed(r.path(), &spec, true);
    let o = ok(apply(&r, &b, &[]), "again");
    assert!(stdout(&o).contains("up to date"), "{}", show(&o));
}

/// A link to a directory that is not vmagent's is refused even when its target does not
/// exist yet (vmagent would create it for istio-proxy through the link), and nothing is
/// written inside or outside the root.
#[test]
fn symlinked_directory_to_a_missing_foreign_target_is_refused() {
    let host_elsewhere = Path::new("/elsewhere");
    let existed = host_elsewhere.exists();
    let r = TestRoot::new();
    symlink("/elsewhere", r.at("/etc/certs")).unwrap();
    let before = r.snapshot();
    let o = apply(&r, &example_dir(), &[]);
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert!(
        stderr(&o).contains("is a symlink to /elsewhere"),
        "{}",
        show(&o)
    );
    assert_same(&before, &r.snapshot(), "foreign link");
    if !existed {
        assert!(
            !host_elsewhere.exists(),
            "vmagent wrote to the host's /elsewhere"
        );
    }
}

/// A destination that is a symlink is replaced by a regular file; what it pointed at
/// is never written, read or chowned.
fn destination_symlink_case(target: impl Fn(&TestRoot) -> PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let spec = Spec::example();
    let b = spec.write_tar(t.path());
    let r = TestRoot::new();
    ok(apply(&r, &b, &[]), "first apply");
    let cert = r.at("/etc/certs/root-cert.pem");
    fs::remove_file(&cert).unwrap();
    symlink(target(&r), &cert).unwrap();
    let passwd = r.at("/etc/passwd");
    let before = fs::read(&passwd).unwrap();
    let md = lstat(&passwd);

    let o = apply(&r, &b, &[]);
    let after = fs::read(&passwd).unwrap();
    let md2 = lstat(&passwd);
    assert_eq!(
        String::from_utf8_lossy(&after),
        String::from_utf8_lossy(&before),
        "ROOT/etc/passwd was written through the symlink: {}",
        show(&o)
    );
    assert_eq!(
        (md2.mode(), md2.uid(), md2.gid()),
        (md.mode(), md.uid(), md.gid()),
        "ROOT/etc/passwd metadata changed"
    );
    ok(o, "apply over a symlinked destination");
    assert!(lstat(&cert).file_type().is_file(), "still a symlink");
    assert_installed(r.path(), &spec, true);
}

#[test]
fn destination_symlink_absolute_in_root_target_is_replaced() {
    destination_symlink_case(|_| PathBuf::from("/etc/passwd"));
}

#[test]
fn destination_symlink_relative_target_is_replaced() {
    destination_symlink_case(|_| PathBuf::from("../passwd"));
}

#[test]
fn destination_symlink_host_absolute_target_is_replaced() {
    destination_symlink_case(|r| r.at("/etc/passwd"));
}

/// `[paths] state_dir` moves vmagent's own state (journal, lock, records): nothing is
/// written to the default /var/lib/vmagent, and a re-apply finds its state there.
#[test]
fn configured_state_dir_is_used() {
    let root = TestRoot::new();
    let cfg = root.at("/etc/vmagent/config.toml");
    fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    fs::write(&cfg, "[paths]\nstate_dir = \"/srv/vmagent-state\"\n").unwrap();
    let t = tempfile::tempdir().unwrap();
    let bundle = Spec::example().write_tar(t.path());
    let o = apply(&root, &bundle, &["--skip-owner"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(!root.at("/var/lib/vmagent").exists());
    assert!(root.at("/srv/vmagent-state/lock").exists());
    let o = apply(&root, &bundle, &["--skip-owner"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(stdout(&o).contains("up to date"), "{}", show(&o));
}

/// A root-owned link at a managed directory pointing outside vmagent's paths
/// (`/etc/certs -> /etc/ssl/certs`) is refused: chowning through it would hand the
/// system's CA directory to istio-proxy (issue 12, finding 4). Nothing changes.
#[test]
fn managed_dir_linked_outside_is_not_chowned_through() {
    let root = TestRoot::new();
    fs::create_dir_all(root.at("/etc/ssl/certs")).unwrap();
    fs::write(root.at("/etc/ssl/certs/ca.pem"), "system CA\n").unwrap();
    symlink("/etc/ssl/certs", root.at("/etc/certs")).unwrap();
    let before = root.snapshot();
    let out = root.apply(&example_dir(), &[]).get_output().clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("'/etc/certs': is a symlink to /etc/ssl/certs")
            && err.contains("does not change owners"),
        "{err}"
    );
    assert_same(&before, &root.snapshot(), "link to /etc/ssl/certs");
    assert_eq!(fs::metadata(root.at("/etc/ssl/certs")).unwrap().uid(), 0);
}

/// A link into the package's home is vmagent's own path: followed, and the plan says
/// where the owner change lands.
#[test]
fn managed_dir_linked_into_var_lib_istio_is_followed_and_named() {
    let root = TestRoot::new();
    fs::create_dir_all(root.at("/var/lib/istio/certs")).unwrap();
    symlink("/var/lib/istio/certs", root.at("/etc/certs")).unwrap();
    let out = root.apply(&example_dir(), &[]).get_output().clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("/etc/certs is a symlink to /var/lib/istio/certs: its owner and mode are set on /var/lib/istio/certs"),
        "{stdout}"
    );
    assert_eq!(
        fs::metadata(root.at("/var/lib/istio/certs")).unwrap().uid(),
        PROXY_ID
    );
}
