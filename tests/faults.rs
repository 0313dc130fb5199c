//! Issue 12 finding 3: a failed apply or a failed rollback never leaves a mixed state.
//! Real faults under real mounts: a bind-mounted /etc/hosts (EBUSY on rename), a full
//! file system (a small tmpfs holding destinations or the state dir: ENOSPC) and an
//! immutable destination (`chattr +i`: EPERM). After each failure every destination
//! holds all its old bytes or all its new ones, and a rollback that cannot finish names
//! every path it left, keeps the journal, and finishes on `vmagent recover` once the
//! cause is gone.
//!
//! Needs root (mount, chattr), as the suite does. A file system without the immutable
//! flag (tmpfs, overlayfs) makes the EPERM test print a `skipped:` line.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::output::*;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_vmagent");
const B_SUB: &str = "system:serviceaccount:vm-ns:vm-sa-b";

/// A `vmagent` command with the fault hook set only when asked, and no core dumps.
fn vm(root: &Path, args: &[&OsStr], fault: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--root")
        .arg(root)
        .env_remove("VMAGENT_FAULT");
    if let Some(f) = fault {
        c.env("VMAGENT_FAULT", f);
    }
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
    c.output().expect("run vmagent")
}

fn apply(r: &TestRoot, bundle: &Path, fault: Option<&str>) -> Output {
    let args = [
        OsStr::new("apply"),
        bundle.as_os_str(),
        OsStr::new("--no-package"),
        OsStr::new("--no-start"),
    ];
    vm(r.path(), &args, fault)
}

fn recover(r: &TestRoot) -> Output {
    vm(r.path(), &[OsStr::new("recover")], None)
}

/// Bundle A (the example) and bundle B (another identity: token, cluster.env, mesh
/// and hosts all differ), as tars in `t`.
fn bundles(t: &Path) -> (PathBuf, PathBuf) {
    let a_dir = t.join("a");
    let b_dir = t.join("b");
    fs::create_dir_all(&a_dir).expect("mkdir a");
    fs::create_dir_all(&b_dir).expect("mkdir b");
    let edit = |name: &str, from: &str, to: &str| {
        let s = String::from_utf8(example_member(name)).expect("utf-8");
        assert!(s.contains(from), "{from} not in {name}");
        s.replace(from, to)
    };
    let b = Spec::example()
        .set(
            "cluster.env",
            edit(
                "cluster.env",
                "SERVICE_ACCOUNT='vm-sa'",
                "SERVICE_ACCOUNT='vm-sa-b'",
            ),
        )
        .set("mesh.yaml", edit("mesh.yaml", "port: 8080", "port: 8081"))
        .set("istio-token", token_for(B_SUB))
        .set("hosts", "192.0.2.11 istiod.istio-system.svc\n");
    (Spec::example().write_tar(&a_dir), b.write_tar(&b_dir))
}

/// Number of actions applying `bundle` to `r` takes now.
fn action_count(r: &TestRoot, bundle: &Path) -> usize {
    let args = [
        OsStr::new("apply"),
        bundle.as_os_str(),
        OsStr::new("--no-package"),
        OsStr::new("--no-start"),
        OsStr::new("--dry-run"),
        OsStr::new("--output"),
        OsStr::new("json"),
    ];
    let o = ok(vm(r.path(), &args, None), "dry run");
    let n = json(&o)["actions"].as_array().expect("actions").len();
    assert!(n >= 4, "a plan that changes the identity: {}", show(&o));
    n
}

/// Every destination's bytes (the installed files and /etc/hosts), links followed
/// inside the root.
fn dests(r: &TestRoot) -> Vec<(String, Vec<u8>)> {
    FILES
        .iter()
        .map(|f| f.1)
        .chain(["/etc/hosts"])
        .map(|sys| {
            let p = inroot(r.path(), sys, true);
            let data = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (sys.to_string(), data)
        })
        .collect()
}

/// Asserts each destination is whole: old bytes, or new bytes; returns those new.
#[track_caller]
fn each_old_or_new(
    old: &[(String, Vec<u8>)],
    new: &[(String, Vec<u8>)],
    now: &[(String, Vec<u8>)],
) -> Vec<String> {
    let mut changed = Vec::new();
    for ((p, o), ((_, n), (_, x))) in old.iter().zip(new.iter().zip(now)) {
        if x == o {
            continue;
        }
        assert_eq!(x, n, "{p} is neither its old nor its new content");
        changed.push(p.clone());
    }
    changed
}

/// The destinations whose bytes differ between `a` and `b`.
fn changed(a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)]) -> Vec<String> {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.1 != y.1)
        .map(|(x, _)| x.0.clone())
        .collect()
}

/// What B changes against A: all but the root certificate, in [`dests`] order.
fn b_changes() -> Vec<String> {
    [
        "/var/run/secrets/tokens/istio-token",
        "/var/lib/istio/envoy/cluster.env",
        "/etc/istio/config/mesh",
        "/etc/hosts",
    ]
    .map(String::from)
    .to_vec()
}

/// Everything under the root except vmagent's own state dir (its bookkeeping, e.g.
/// the pristine record, may be written before the transaction).
fn outside_state(r: &TestRoot) -> Snapshot {
    let mut s = r.snapshot();
    s.retain(|p, _| !p.starts_with("var/lib/vmagent"));
    s
}

/// A mount made by a test, unmounted however the test ends.
struct Mount(PathBuf);

impl Mount {
    /// `mount ARGS... TARGET`; `None` (after printing why) when mounting fails.
    fn new(args: &[&str], target: &Path) -> Option<Mount> {
        let o = Command::new("mount")
            .args(args)
            .arg(target)
            .output()
            .expect("run mount");
        if !o.status.success() {
            println!(
                "skipped: cannot mount ({}): {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        Some(Mount(target.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let plain = Command::new("umount").arg(&self.0).status();
        if !plain.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the file system holding `dir` with `dir/filler` until it is full.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = fs::File::create(&p).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    p
}

/// `chattr +i` on a path, undone however the test ends.
struct Immutable(PathBuf);

impl Immutable {
    fn set(p: &Path) -> Result<Immutable, String> {
        let o = Command::new("chattr")
            .arg("+i")
            .arg(p)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        Ok(Immutable(p.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn bind_mounted_hosts_is_applied_rolled_back_and_stays_usable() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = bundles(t.path());
    let r = TestRoot::new();
    let outside = t.path().join("hosts");
    fs::copy(r.at("/etc/hosts"), &outside).expect("copy hosts");
    let Some(_m) = Mount::new(
        &["--bind", outside.to_str().expect("utf-8")],
        &r.at("/etc/hosts"),
    ) else {
        return;
    };
    ok(
        apply(&r, &a, None),
        "apply A over a bind-mounted /etc/hosts",
    );
    let hosts = fs::read_to_string(&outside).expect("hosts");
    assert!(hosts.contains("192.0.2.10 istiod"), "{hosts}");
    assert!(hosts.contains("localhost"), "{hosts}");

    let old = dests(&r);
    let n = action_count(&r, &b);
    let before = outside_state(&r);
    let o = code(
        apply(&r, &b, Some(format!("fail:{n}").as_str())),
        1,
        "B failing at its end",
    );
    assert!(stderr(&o).contains("rolled back"), "{}", show(&o));
    assert_eq!(dests(&r), old, "every destination is back to A");
    assert_eq!(fs::read_to_string(&outside).expect("hosts"), hosts);
    // Every path is there with A's content (the rewritten ones with a new mtime).
    let now = outside_state(&r);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        now.keys().collect::<Vec<_>>()
    );
    for (p, node) in &before {
        assert_eq!(now[p].content, node.content, "{}", p.display());
    }
    assert!(!r.at("/var/lib/vmagent/txn/journal.json").exists());

    ok(apply(&r, &b, None), "apply B after the rolled-back one");
    let hosts = fs::read_to_string(&outside).expect("hosts");
    assert!(hosts.contains("192.0.2.11 istiod"), "{hosts}");
    ok(apply(&r, &a, None), "and A again");
    assert_eq!(dests(&r), old);
}

#[test]
fn bind_mounted_hosts_on_a_full_file_system_is_refused_before_anything_changes() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, _) = bundles(t.path());
    let r = TestRoot::new();
    let small = t.path().join("small");
    fs::create_dir_all(&small).expect("mkdir");
    let Some(_fs) = Mount::new(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"], &small) else {
        return;
    };
    let outside = small.join("hosts");
    fs::copy(r.at("/etc/hosts"), &outside).expect("copy hosts");
    let Some(_m) = Mount::new(
        &["--bind", outside.to_str().expect("utf-8")],
        &r.at("/etc/hosts"),
    ) else {
        return;
    };
    ok(apply(&r, &a, None), "apply A");
    // Lines outside the managed block bring the file to just under one 4 KiB block, so
    // B's longer block needs one more on the full file system.
    let mut pad = fs::OpenOptions::new()
        .append(true)
        .open(&outside)
        .expect("open hosts");
    let size = fs::metadata(&outside).expect("stat").len() as usize;
    let line = format!("# {}\n", "x".repeat(60));
    let room = 4090usize.saturating_sub(size);
    for _ in 0..room / line.len() {
        pad.write_all(line.as_bytes()).expect("pad");
    }
    drop(pad);
    let b = Spec::example()
        .set("hosts", {
            let mut h = String::from("192.0.2.11 istiod.istio-system.svc\n");
            for n in 0..4 {
                h.push_str(&format!(
                    "192.0.2.{} svc-{n}.vm-ns.svc.cluster.local\n",
                    30 + n
                ));
            }
            h
        })
        .write_tar(&t.path().join("b"));
    let old = dests(&r);
    let filler = fill(&small);
    let before = outside_state(&r);
    let o = code(apply(&r, &b, None), 1, "B with the hosts file system full");
    let err = stderr(&o);
    assert!(
        err.contains("/etc/hosts") && err.contains("nothing was changed"),
        "{}",
        show(&o)
    );
    assert_eq!(dests(&r), old);
    assert_same(&before, &outside_state(&r), "full hosts file system");
    fs::remove_file(filler).expect("rm filler");
    ok(apply(&r, &b, None), "B once there is room");
    assert!(fs::read_to_string(&outside)
        .expect("hosts")
        .contains("svc-3.vm-ns"));
}

#[test]
fn full_file_system_refuses_before_anything_changes() {
    // The new files' file system (cluster.env and mesh live in /var/lib/istio), then the
    // state dir's (the backups).
    for (dir, mode) in [("/var/lib/istio", "0755"), ("/var/lib/vmagent", "0700")] {
        let t = tempfile::tempdir().expect("tempdir");
        let (a, b) = bundles(t.path());
        let r = TestRoot::new();
        fs::create_dir_all(r.at(dir)).expect("mkdir");
        let opts = format!("size=1m,mode={mode}");
        let Some(_m) = Mount::new(&["-t", "tmpfs", "-o", &opts, "tmpfs"], &r.at(dir)) else {
            return;
        };
        ok(apply(&r, &a, None), "apply A");
        let old = dests(&r);
        let filler = fill(&r.at(dir));
        let before = outside_state(&r);
        let o = code(apply(&r, &b, None), 1, &format!("B with {dir} full"));
        let err = stderr(&o);
        assert!(err.contains("nothing was changed"), "{dir}: {}", show(&o));
        assert_eq!(dests(&r), old, "{dir}");
        assert_same(&before, &outside_state(&r), dir);
        assert!(!r.at("/var/lib/vmagent/txn/journal.json").exists(), "{dir}");

        fs::remove_file(filler).expect("rm filler");
        ok(apply(&r, &b, None), &format!("B once {dir} has room"));
        assert_eq!(changed(&old, &dests(&r)), b_changes(), "{dir}");
    }
}

#[test]
fn full_file_system_during_rollback_reports_every_path_left_then_recovers() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = bundles(t.path());
    let r = TestRoot::new();
    fs::create_dir_all(r.at("/var/lib/istio")).expect("mkdir");
    let Some(_m) = Mount::new(
        &["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"],
        &r.at("/var/lib/istio"),
    ) else {
        return;
    };
    ok(apply(&r, &a, None), "apply A");
    let old = dests(&r);
    let n = action_count(&r, &b);
    // Every change of B made, then killed: the journal is left to roll back.
    let o = apply(&r, &b, Some(format!("abort:{n}").as_str()));
    assert!(o.status.code().is_none(), "aborted: {}", show(&o));
    let new = dests(&r);
    assert_eq!(changed(&old, &new), b_changes(), "all of B written");
    let filler = fill(&r.at("/var/lib/istio"));

    let o = code(recover(&r), 1, "recover on a full /var/lib/istio");
    let err = stderr(&o);
    let left = each_old_or_new(&old, &new, &dests(&r));
    // cluster.env and mesh could not be put back; everything else was.
    let mut want = vec![
        "/var/lib/istio/envoy/cluster.env".to_string(),
        "/etc/istio/config/mesh".to_string(),
    ];
    want.sort();
    let mut got = left.clone();
    got.sort();
    assert_eq!(got, want, "{}", show(&o));
    for p in ["envoy/cluster.env", "config/mesh"] {
        assert!(
            err.lines()
                .any(|l| l.contains(p) && l.contains("free space")),
            "{p} named with its fix: {err}"
        );
    }
    assert!(err.contains("left 2 in the new state"), "{err}");
    assert!(err.contains("vmagent recover"), "{err}");
    assert!(
        r.at("/var/lib/vmagent/txn/journal.json").exists(),
        "journal kept"
    );

    fs::remove_file(filler).expect("rm filler");
    ok(recover(&r), "recover with room again");
    assert_eq!(dests(&r), old, "all A again");
    assert!(!r.at("/var/lib/vmagent/txn/journal.json").exists());
    ok(apply(&r, &b, None), "B applies");
}

#[test]
fn immutable_destination_is_refused_up_front_and_reported_by_rollback() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = bundles(t.path());
    let r = TestRoot::new();
    let probe = r.at("/probe");
    fs::write(&probe, "x").expect("probe");
    match Immutable::set(&probe) {
        Ok(guard) => drop(guard),
        Err(why) => {
            println!(
                "skipped: the file system of {} has no immutable flag (chattr +i: {why})",
                r.path().display()
            );
            return;
        }
    }
    fs::remove_file(&probe).expect("rm probe");
    ok(apply(&r, &a, None), "apply A");
    let old = dests(&r);
    let token = inroot(r.path(), "/var/run/secrets/tokens/istio-token", true);

    // Before the transaction: refused, nothing changed.
    {
        let _i = Immutable::set(&token).expect("chattr +i");
        let before = outside_state(&r);
        let o = code(apply(&r, &b, None), 1, "B over an immutable token");
        let err = stderr(&o);
        assert!(
            err.contains("/var/run/secrets/tokens/istio-token") && err.contains("chattr -i"),
            "{}",
            show(&o)
        );
        assert!(err.contains("nothing was changed"), "{err}");
        assert_same(&before, &outside_state(&r), "immutable token");
        assert!(!r.at("/var/lib/vmagent/txn/journal.json").exists());
    }

    // During the rollback: the token (now B's) is made immutable after B was written.
    let n = action_count(&r, &b);
    let o = apply(&r, &b, Some(format!("abort:{n}").as_str()));
    assert!(o.status.code().is_none(), "aborted: {}", show(&o));
    let new = dests(&r);
    assert_eq!(changed(&old, &new), b_changes(), "all of B written");
    {
        let _i = Immutable::set(&token).expect("chattr +i");
        let o = code(recover(&r), 1, "recover over an immutable token");
        let err = stderr(&o);
        let left = each_old_or_new(&old, &new, &dests(&r));
        assert_eq!(left, vec!["/var/run/secrets/tokens/istio-token"], "{err}");
        assert!(
            err.lines()
                .any(|l| l.contains("/var/run/secrets/tokens/istio-token")
                    && l.contains("chattr -i")),
            "{err}"
        );
        assert!(err.contains("left 1 in the new state"), "{err}");
        assert!(r.at("/var/lib/vmagent/txn/journal.json").exists());
    }
    ok(recover(&r), "recover once the flag is gone");
    assert_eq!(dests(&r), old);
}

#[test]
fn read_only_destination_is_refused_before_anything_changes() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = bundles(t.path());
    let r = TestRoot::new();
    ok(apply(&r, &a, None), "apply A");
    let old = dests(&r);
    let tokens = r.at("/var/run/secrets/tokens");
    let dir = tokens.to_str().expect("utf-8");
    let Some(_m) = Mount::new(&["--bind", dir], &tokens) else {
        return;
    };
    // Remounting changes the bind mount above; `_m` still unmounts it.
    let ro = Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&tokens)
        .status()
        .expect("run mount");
    if !ro.success() {
        println!("skipped: cannot remount {} read-only", tokens.display());
        return;
    }
    let before = outside_state(&r);
    let o = code(
        apply(&r, &b, None),
        1,
        "B with the token's directory read-only",
    );
    let err = stderr(&o);
    assert!(
        err.contains("/var/run/secrets/tokens/istio-token")
            && err.contains("read-write")
            && err.contains("nothing was changed"),
        "{}",
        show(&o)
    );
    assert_eq!(dests(&r), old);
    assert_same(&before, &outside_state(&r), "read-only token directory");
}

/// A file system gone read-only under a destination the apply had not reached yet
/// (killed before its first change) does not stop the rollback: only what differs is
/// rewritten, and nothing is written (not even a stale temp file removed) where nothing
/// changed.
#[test]
fn rollback_leaves_an_unchanged_read_only_file_alone() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = bundles(t.path());
    let r = TestRoot::new();
    ok(apply(&r, &a, None), "apply A");
    let old = dests(&r);
    let o = apply(&r, &b, Some("abort:0"));
    assert!(o.status.code().is_none(), "aborted: {}", show(&o));
    assert!(r.at("/var/lib/vmagent/txn/journal.json").exists());
    let tokens = r.at("/var/run/secrets/tokens");
    let Some(_m) = Mount::new(&["--bind", tokens.to_str().expect("utf-8")], &tokens) else {
        return;
    };
    let ro = Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&tokens)
        .status()
        .expect("run mount");
    if !ro.success() {
        println!("skipped: cannot remount {} read-only", tokens.display());
        return;
    }
    let o = ok(recover(&r), "recover with the token's directory read-only");
    assert!(stdout(&o).contains("rolled back"), "{}", show(&o));
    assert_eq!(dests(&r), old);
    assert!(!r.at("/var/lib/vmagent/txn/journal.json").exists());
}
