//! End to end on a real Debian bookworm VM under qemu (issue 6): real systemd, real
//! cloud-init, real dpkg/apt, a real tmpfs /run and a real reboot. Run it with
//! `tests/vm/run.sh` (root; it installs qemu and friends with tests/vm/setup.sh first).
//!
//! The host side (this file) builds the payload: the release vmagent binary, vmagent's
//! own .deb (packaging/build.sh), the fixture istio-sidecar packages v1 and v2
//! (tests/common/packages.rs) and the example bundle, and puts them with the guest
//! scripts (tests/vm/guest/) into a cloud-init NoCloud seed. tests/vm/build-image.sh
//! makes (once, cached) the guest image, tests/vm/boot.sh boots it. In the guest,
//! cloud-init's runcmd drives the first boot and a oneshot unit each of the other three:
//!
//! | scenario | what |
//! |---|---|
//! | s4 | first, on the pristine VM: a wrong `--package-sha256` fails with exit 5 and one line, nothing installed or half-written |
//! | s1 | user-data runs `vmagent apply` (cloud-init one-shot): package downloaded from the guest's loopback server, files, hosts, service, ready |
//! | s2 | the identical apply again: nothing written, no download, no restart |
//! | s3 | upgrade to the v2 package: installed, exactly one restart, ready again |
//! | s9 | reboot of the VM onboarded by the one-shot apply alone (vmagent.service neither enabled nor running): the tmpfiles.d rule apply installed put the token back (content, 0600, istio-proxy) before istio started, ready again |
//! | s6 | second boot: `systemctl enable --now vmagent`: status ready, a hand-edited hosts block repaired |
//! | s5 | reboot: the token (tmpfs) is back before vmagent and istio start (the tmpfiles.d rule), the daemon is ready before istio starts, ready again |
//! | s10 | the `kubernetes` token provider (issue 14), TokenRequest server on the guest's loopback: a bundle whose token expires 60 s after the guest made it, applied, then the provider configured and the daemon started: past that exp the proxy is still ready and the installed token (0600 istio-proxy, also the boot copy) is one the server issued, later than the bundle's; no token or credential in the journal (tests/vm/token.rs) |
//! | s11 | reboot with the expired bundle token in the boot copy and the token cache: the daemon got a fresh token from the server before its READY=1 and before istio.service started, and installed it; ready again |
//! | s7 | `vmagent uninstall` refused while the daemon runs; then `systemctl disable --now vmagent`, `vmagent uninstall --purge`, `dpkg --purge vmagent`: back to the snapshot taken before vmagent (/etc/passwd, /etc/group excepted) |
//! | s8 | after s7, the fixture package by hand in its `iptables-fail` scenario: istio-iptables' error in the unit's journal (not in istio.log), the proxy never started, systemd restarting the unit |
//!
//! The guest reports facts (`VMTEST <scenario> <key>=<value>`) and evidence (`VMLOG`) on
//! its second serial port; this test asserts on the facts, prints the timing numbers,
//! and on a failure prints the evidence of the failing scenarios and the log paths.
//! Every boot has a timeout (VMAGENT_VM_BOOT_TIMEOUT seconds, default 600).
//!
//! Environment: VMAGENT_VM=skip (skip), VMAGENT_BIN (the binary to test; default the
//! release build), VMAGENT_VM_CACHE (image cache and run directories; default
//! /var/tmp/vmagent-vm), VMAGENT_VM_ACCEL=kvm|tcg (default: probed, see boot.sh).

mod common;
#[path = "vm/token.rs"]
mod token;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

use common::packages::Fixture;
use common::{example_dir, Spec, DIRS, FILES};

const V1: &str = "1.24.1";
const V2: &str = "1.24.2";
/// The guest's loopback package server.
const PORT: u16 = 8765;
/// The bundle's hosts line (examples/bundle/hosts).
const ISTIOD_LINE: &str = "192.0.2.10 istiod.istio-system.svc";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("VMAGENT_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/vmagent-vm"))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Why the VM cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if std::env::var("VMAGENT_VM").as_deref() == Ok("skip") {
        return Some("VMAGENT_VM=skip".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (debootstrap and the image build need root)".into());
    }
    if !on_path("qemu-system-x86_64") {
        return Some("no qemu-system-x86_64 (tests/vm/setup.sh installs it)".into());
    }
    None
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed ({})", o.status);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The vmagent binary under test: VMAGENT_BIN, else the release build (this test's own
/// binary when the test itself is a release build, else `cargo build --release`).
fn vmagent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VMAGENT_BIN") {
        return PathBuf::from(p);
    }
    if !cfg!(debug_assertions) {
        return PathBuf::from(env!("CARGO_BIN_EXE_vmagent"));
    }
    println!("vm: building the release binary (cargo build --release --locked)");
    run_ok(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--locked", "--bin", "vmagent"])
            .current_dir(repo()),
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        repo().join(target)
    };
    target.join("release/vmagent")
}

/// A fresh run directory under the cache; only the newest few are kept.
fn run_dir() -> PathBuf {
    let runs = cache_dir().join("runs");
    fs::create_dir_all(&runs).unwrap();
    let mut old: Vec<PathBuf> = fs::read_dir(&runs)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    old.sort();
    for p in old.iter().rev().skip(4) {
        let _ = fs::remove_dir_all(p);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let d = runs.join(format!("{stamp}-{}", std::process::id()));
    fs::create_dir_all(&d).unwrap();
    d
}

/// Everything the guest gets, with the values the assertions need.
struct Payload {
    seed: PathBuf,
    bundle_sha: BTreeMap<String, String>,
    vmagent_version: String,
}

fn copy_exec(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
}

fn build_payload(work: &Path, bin: &Path) -> Payload {
    let seed = work.join("seed");
    let build = work.join("build");
    for d in [&seed, &build, &seed.join("pkgs"), &seed.join("guest")] {
        fs::create_dir_all(d).unwrap();
    }
    copy_exec(bin, &seed.join("vmagent"));

    // The fixture sidecar packages, served by the guest on loopback.
    let mut debs = Vec::new();
    for v in [V1, V2] {
        let deb = Fixture::new(v).build_deb(&build);
        let name = deb.file_name().unwrap().to_string_lossy().into_owned();
        let data = fs::read(&deb).unwrap();
        fs::write(seed.join("pkgs").join(&name), &data).unwrap();
        debs.push((name, sha256_hex(&data)));
    }
    // A wrong checksum that looks right: v1's with its first digit changed.
    let v1_sha = &debs[0].1;
    let first = if v1_sha.starts_with('0') { "1" } else { "0" };
    let bad_sha = format!("{first}{}", &v1_sha[1..]);

    // vmagent's own .deb, as shipped.
    let out = run_ok(
        Command::new("bash")
            .arg(repo().join("packaging/build.sh"))
            .arg("--out")
            .arg(build.join("vmagent-pkg"))
            .arg("--binary")
            .arg(bin),
    );
    let deb = PathBuf::from(
        out.lines()
            .next()
            .expect("packaging/build.sh printed the .deb path"),
    );
    let deb_name = deb.file_name().unwrap().to_string_lossy().into_owned();
    fs::copy(&deb, seed.join(&deb_name)).unwrap();
    let vmagent_version = deb_name
        .strip_prefix("vmagent_")
        .and_then(|s| s.split('_').next())
        .unwrap()
        .to_string();

    // The bundle as istioctl writes it (a directory, modes 0744) and as a tar.gz for the
    // daemon (packaging/cloud-init/daemon.yaml's form).
    Spec::example().write_dir(&seed);
    Spec::example().write_tgz(&seed);
    let mut bundle_sha = BTreeMap::new();
    for (member, ..) in FILES {
        let data = fs::read(example_dir().join(member)).unwrap();
        bundle_sha.insert(member.to_string(), sha256_hex(&data));
    }

    for e in fs::read_dir(repo().join("tests/vm/guest")).unwrap() {
        let p = e.unwrap().path();
        copy_exec(&p, &seed.join("guest").join(p.file_name().unwrap()));
    }
    let files: Vec<&str> = FILES.iter().map(|f| f.1).collect();
    let dirs: Vec<&str> = DIRS.iter().map(|d| d.0).collect();
    let token_params = token::seed(&seed);
    fs::write(
        seed.join("params.env"),
        format!(
            "{token_params}PORT={PORT}\nV1_DEB={}\nV1_SHA={}\nV2_DEB={}\nV2_SHA={}\nBAD_SHA={bad_sha}\nVMAGENT_DEB={deb_name}\n\
             CHECK_FILES='{}'\nCHECK_DIRS='{}'\n",
            debs[0].0,
            debs[0].1,
            debs[1].0,
            debs[1].1,
            files.join(" "),
            dirs.join(" "),
        ),
    )
    .unwrap();

    // cloud-init: runcmd drives the first boot. The one-shot apply (scenario 1) is a
    // user-data line itself; step.sh only records its output, exit code and timing. The
    // daemon is enabled only in the second boot, after scenario 9. Every apply in the
    // guest passes --no-preflight: there is no istiod (the example bundle's 192.0.2.10
    // is a documentation address), so the online preflight would refuse it; the
    // preflight is tested on the host against real TLS servers in network namespaces
    // (tests/preflight.rs).
    let g = "/mnt/vmtest/guest";
    let user_data = format!(
        "#cloud-config
# vmagent VM end-to-end test (tests/vm.rs); scenario scripts in tests/vm/guest/.
runcmd:
  - [sh, -c, 'mkdir -p /mnt/vmtest && mount -o ro LABEL=cidata /mnt/vmtest']
  - [bash, {g}/boot1-pre.sh]
  - [bash, {g}/step.sh, s1, apply, /mnt/vmtest/vmagent, apply, /mnt/vmtest/bundle, -v, --no-preflight, --package, 'http://127.0.0.1:{PORT}/{}', --package-sha256, '{}', --wait, '120']
  - [bash, {g}/boot1-post.sh]
  - [bash, {g}/boot1-reboot.sh]
",
        debs[0].0, debs[0].1
    );
    fs::write(seed.join("user-data"), user_data).unwrap();
    let id = work.file_name().unwrap().to_string_lossy();
    fs::write(
        seed.join("meta-data"),
        format!("instance-id: vmtest-{id}\nlocal-hostname: vmtest\n"),
    )
    .unwrap();
    Payload {
        seed,
        bundle_sha,
        vmagent_version,
    }
}

/// How the VM run ended.
struct Boot {
    console: PathBuf,
    results: PathBuf,
    problem: Option<String>,
    wall: Duration,
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// Boots the guest (tests/vm/boot.sh execs qemu) and waits until it powers off, each boot
/// within `per_boot`.
fn boot(image: &Path, seed: &Path, work: &Path, per_boot: Duration) -> Boot {
    let console = work.join("console.log");
    let results = work.join("results.log");
    let started = Instant::now();
    let mut child: Child = Command::new("bash")
        .arg(repo().join("tests/vm/boot.sh"))
        .args([image, seed, work])
        .stdin(Stdio::null())
        .spawn()
        .expect("tests/vm/boot.sh");
    let mut boots = 0;
    let mut deadline = Instant::now() + per_boot;
    let mut seen = 0;
    let mut done_at: Option<Instant> = None;
    let problem = loop {
        if let Some(st) = child.try_wait().unwrap() {
            let text = fs::read_to_string(&results).unwrap_or_default();
            break if text.contains("VMTEST boot2 done=") {
                None
            } else {
                Some(format!(
                    "qemu ended ({st}) before the guest finished (boot {boots})"
                ))
            };
        }
        let con = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
        let n = count(&con, "Linux version");
        if n > boots {
            boots = n;
            deadline = Instant::now() + per_boot;
            println!(
                "vm: [{:>4} s] boot {boots} started",
                started.elapsed().as_secs()
            );
        }
        // Progress: the first fact of every scenario.
        let text = fs::read_to_string(&results).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("VMTEST ")).collect();
        for l in lines.iter().skip(seen) {
            let sc = l.split(' ').nth(1).unwrap_or("");
            if !lines[..seen]
                .iter()
                .any(|p| p.split(' ').nth(1) == Some(sc))
            {
                println!("vm: [{:>4} s] guest: {sc}", started.elapsed().as_secs());
            }
            seen += 1;
        }
        if text.contains("VMTEST boot2 done=") && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if boots > 4 {
            let _ = child.kill();
            let _ = child.wait();
            break Some(format!("the guest booted {boots} times (expected 4)"));
        }
        if done_at.is_some_and(|t| t.elapsed() > Duration::from_secs(120)) {
            let _ = child.kill();
            let _ = child.wait();
            break Some("the guest finished but did not power off within 120 s".into());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break Some(format!(
                "timeout: boot {} did not finish within {} s",
                boots.max(1),
                per_boot.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    Boot {
        console,
        results,
        problem,
        wall: started.elapsed(),
    }
}

/// The guest's facts and evidence.
#[derive(Default)]
struct Results {
    facts: Vec<(String, String, String)>,
    logs: BTreeMap<String, Vec<String>>,
}

impl Results {
    fn parse(text: &str) -> Results {
        let mut r = Results::default();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(rest) = line.strip_prefix("VMTEST ") {
                let (sc, kv) = rest.split_once(' ').unwrap_or((rest, ""));
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                r.facts.push((sc.into(), k.into(), v.into()));
            } else if let Some(rest) = line.strip_prefix("VMLOG ") {
                let (sc, text) = rest.split_once(" | ").unwrap_or((rest, ""));
                r.logs.entry(sc.into()).or_default().push(text.into());
            }
        }
        r
    }

    fn all(&self, sc: &str, key: &str) -> Vec<&str> {
        self.facts
            .iter()
            .filter(|(s, k, _)| s == sc && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The last value of a fact, "" when missing.
    fn get(&self, sc: &str, key: &str) -> &str {
        self.all(sc, key).last().copied().unwrap_or("")
    }

    fn num(&self, sc: &str, key: &str) -> Option<f64> {
        self.get(sc, key).trim().parse().ok()
    }

    fn has(&self, sc: &str) -> bool {
        self.facts.iter().any(|(s, ..)| s == sc)
    }

    fn step(&self, sc: &str, name: &str) -> Step {
        let lines = |k: &str| -> Vec<(f64, String)> {
            self.all(sc, &format!("{name}.{k}"))
                .iter()
                .map(|l| {
                    let (t, text) = l.split_once(' ').unwrap_or((l, ""));
                    (t.parse().unwrap_or(f64::NAN), text.to_string())
                })
                .collect()
        };
        let dpkg = self
            .all(sc, &format!("{name}.dpkg"))
            .iter()
            .filter_map(|l| {
                let (what, t) = l.split_once(' ')?;
                Some((what.to_string(), t.parse().ok()?))
            })
            .collect();
        Step {
            rc: self.get(sc, &format!("{name}.rc")).parse().ok(),
            stdout: lines("stdout"),
            stderr: lines("stderr"),
            t_start: self.num(sc, &format!("{name}.t_start")).unwrap_or(f64::NAN),
            t_end: self.num(sc, &format!("{name}.t_end")).unwrap_or(f64::NAN),
            dpkg,
        }
    }

    fn hosts(&self, sc: &str, key: &str) -> String {
        let b = base64::engine::general_purpose::STANDARD
            .decode(self.get(sc, key).trim())
            .unwrap_or_default();
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// One command the guest ran.
struct Step {
    rc: Option<i32>,
    stdout: Vec<(f64, String)>,
    stderr: Vec<(f64, String)>,
    t_start: f64,
    t_end: f64,
    /// ("pre"|"post", uptime) around each dpkg install run: apt's hooks when apt-get
    /// runs it, the guest's dpkg wrapper when vmagent does (boot1-pre.sh).
    dpkg: Vec<(String, f64)>,
}

impl Step {
    fn out(&self) -> String {
        self.stdout.iter().map(|(_, l)| format!("{l}\n")).collect()
    }
    fn err(&self) -> String {
        self.stderr.iter().map(|(_, l)| format!("{l}\n")).collect()
    }
    fn show(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.rc,
            self.out(),
            self.err()
        )
    }
    /// When a stdout line starting with `prefix` arrived.
    fn stdout_at(&self, prefix: &str) -> Option<f64> {
        self.stdout
            .iter()
            .find(|(_, l)| l.starts_with(prefix))
            .map(|(t, _)| *t)
    }
    fn stderr_at(&self, needle: &str) -> Option<f64> {
        self.stderr
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }
    /// Seconds spent inside dpkg (from each `pre` stamp to its `post`).
    fn dpkg_secs(&self) -> f64 {
        let mut total = 0.0;
        let mut open = None;
        for (what, t) in &self.dpkg {
            match (what.as_str(), open) {
                ("pre", _) => open = Some(*t),
                ("post", Some(s)) => {
                    total += t - s;
                    open = None;
                }
                _ => {}
            }
        }
        total
    }
}

/// Collects every failed expectation, per scenario, so one run reports them all.
struct Check {
    failures: Vec<(String, String)>,
}

impl Check {
    fn that(&mut self, sc: &str, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.failures.push((sc.into(), msg()));
        }
    }
    fn eq(&mut self, sc: &str, what: &str, got: &str, want: &str) {
        self.that(sc, got == want, || {
            format!("{what}: got {got:?}, want {want:?}")
        });
    }
    fn failed(&self, sc: &str) -> bool {
        self.failures.iter().any(|(s, _)| s == sc)
    }
}

/// The istio service is active and the readiness port answers 200 (facts `PREFIXistio_active`
/// and `PREFIXready_http`).
fn proxy_up(c: &mut Check, r: &Results, sc: &str, prefix: &str) {
    let active = r.get(sc, &format!("{prefix}istio_active"));
    c.eq(sc, "systemctl is-active istio", active, "active");
    let ready = r.get(sc, &format!("{prefix}ready_http"));
    c.eq(sc, "GET :15021/healthz/ready", ready, "200");
}

/// `/etc/hosts` split into the bytes outside vmagent's managed block and the lines in it.
fn split_hosts(h: &str) -> (String, Vec<String>, usize) {
    let mut outside = String::new();
    let mut inside = Vec::new();
    let mut blocks = 0;
    let mut in_block = false;
    for line in h.split_inclusive('\n') {
        let l = line.trim_end_matches('\n');
        if l.starts_with("# BEGIN vmagent-managed") {
            blocks += 1;
            in_block = true;
        } else if l.starts_with("# END vmagent-managed") {
            in_block = false;
        } else if in_block {
            inside.push(l.to_string());
        } else {
            outside.push_str(line);
        }
    }
    (outside, inside, blocks)
}

/// /etc/hosts after an apply: the pristine bytes outside the block, the bundle's line in
/// it, that line exactly once in the file.
fn check_hosts(c: &mut Check, sc: &str, hosts: &str, pristine: &str) {
    let (outside, inside, blocks) = split_hosts(hosts);
    c.that(sc, blocks == 1, || {
        format!("/etc/hosts: {blocks} managed blocks, want 1:\n{hosts}")
    });
    c.that(sc, outside == pristine, || {
        format!("/etc/hosts outside the block differs from the pristine file:\n--- pristine\n{pristine}--- now\n{hosts}")
    });
    c.that(sc, inside == [ISTIOD_LINE], || {
        format!("/etc/hosts block holds {inside:?}, want [{ISTIOD_LINE:?}]")
    });
    let n = hosts.lines().filter(|l| l.trim() == ISTIOD_LINE).count();
    c.that(sc, n == 1, || {
        format!("/etc/hosts has the istiod line {n} times, want once:\n{hosts}")
    });
}

/// Files, directories and the /etc/istio link as REFERENCE.md and tests/common list them.
fn check_layout(c: &mut Check, r: &Results, sc: &str, p: &Payload) {
    let stats = r.all(sc, "stat");
    let stat_of = |path: &str| -> String {
        stats
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(path)?.strip_prefix(' '))
            .unwrap_or("missing")
            .to_string()
    };
    // Numeric ids: istio-proxy's as the guest's passwd has them (see lib.sh stat_all).
    let proxy_ids = r.get("s1", "proxy_ids").to_string();
    let owner = |proxy: bool| {
        if proxy {
            proxy_ids.clone()
        } else {
            "0 0".to_string()
        }
    };
    for (member, path, mode, proxy) in FILES {
        let want = format!("{mode:o} {} regular file", owner(proxy));
        c.eq(sc, &format!("{path} mode and owner"), &stat_of(path), &want);
        let sha = r
            .all(sc, "sha256")
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(path)?.strip_prefix(' '))
            .unwrap_or("missing")
            .to_string();
        c.eq(
            sc,
            &format!("{path} content (sha256) = bundle's {member}"),
            &sha,
            &p.bundle_sha[member],
        );
    }
    for (path, mode, proxy) in DIRS {
        let want = format!("{mode:o} {} directory", owner(proxy));
        c.eq(sc, &format!("{path} mode and owner"), &stat_of(path), &want);
    }
    c.eq(
        sc,
        "/etc/istio (the package's link to /var/lib/istio)",
        &stat_of("/etc/istio"),
        "777 0 0 symbolic link",
    );
}

fn secs(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2} s")
    } else {
        "n/a".into()
    }
}

/// Asserts every scenario on the guest's facts; a scenario the guest never reached is
/// one failure, not a cascade.
fn assert_all(r: &Results, p: &Payload, c: &mut Check) {
    let pristine_hosts = r.hosts("boot1", "hosts_b64");
    if ran(c, r, "s4") {
        bad_checksum(r, c);
    }
    if ran(c, r, "s1") {
        oneshot(r, p, c, &pristine_hosts);
    }
    if ran(c, r, "s2") {
        reapply(r, c, &pristine_hosts);
    }
    if ran(c, r, "s3") {
        upgrade(r, p, c);
    }
    if ran(c, r, "s9") {
        no_daemon_reboot(r, p, c);
    }
    if ran(c, r, "s6") {
        daemon(r, p, c, &pristine_hosts);
    }
    if ran(c, r, "s5") {
        reboot(r, p, c);
    }
    if ran(c, r, "s10") {
        token::stays_ready(r, c);
    }
    if ran(c, r, "s11") {
        token::reboot_expired(r, c);
    }
    if ran(c, r, "s7") {
        uninstall(r, c, &pristine_hosts);
    }
    if ran(c, r, "s8") {
        iptables_fail(r, c);
    }
    c.that("boot2", !r.get("boot2", "done").is_empty(), || {
        "the last boot did not finish".into()
    });
}

/// s4: bad checksum on the pristine VM
fn bad_checksum(r: &Results, c: &mut Check) {
    let sc = "s4";
    let s = r.step(sc, "apply");
    c.that(sc, s.rc == Some(5), || {
        format!(
            "apply with a wrong sha256: want exit 5 (download/verify), {}",
            s.show()
        )
    });
    let errors: Vec<&str> = s
        .stderr
        .iter()
        .map(|(_, l)| l.as_str())
        .filter(|l| l.contains("error"))
        .collect();
    c.that(
        sc,
        errors.len() == 1 && errors[0].starts_with("error:") && errors[0].contains("sha256"),
        || {
            format!(
                "want exactly one `error: ...` line naming the sha256 mismatch, {}",
                s.show()
            )
        },
    );
    c.eq(sc, "istio-sidecar in dpkg", r.get(sc, "pkg"), "not-known");
    c.eq(
        sc,
        "istio.service LoadState",
        r.get(sc, "istio_load"),
        "not-found",
    );
    c.that(sc, r.get(sc, "istio_active") != "active", || {
        "istio.service is active after a failed verify".into()
    });
    c.eq(
        sc,
        "vmagent status (exit, state, reason) with no istio-sidecar installed",
        &format!("{} {}", r.get(sc, "status_rc"), r.get(sc, "status_reason")),
        "23 failed not-installed",
    );
    let cache = r.get(sc, "cache");
    c.that(
        sc,
        !cache.contains(".partial") && !cache.contains(".deb"),
        || format!("/var/cache/vmagent keeps a download after a mismatch: {cache}"),
    );
    c.eq(
        sc,
        "leftover *.vmagent-tmp files",
        r.get(sc, "tmpfiles").trim(),
        "",
    );
    c.that(sc, r.get(sc, "snapdiff_count") == "0", || {
        format!(
            "the VM differs from the pre-vmagent snapshot after a failed verify:\n{}",
            r.all(sc, "snapdiff").join("\n")
        )
    });
}

/// s1: cloud-init one-shot
fn oneshot(r: &Results, p: &Payload, c: &mut Check, pristine_hosts: &str) {
    let sc = "s1";
    let s = r.step(sc, "apply");
    c.that(sc, s.rc == Some(0), || {
        format!("cloud-init's vmagent apply: {}", s.show())
    });
    c.that(sc, s.stdout_at("ready:").is_some(), || {
        format!("vmagent did not print `ready:`; {}", s.show())
    });
    // Issue 16: every Depends of the sidecar is met on a stock Debian, so dpkg installs
    // it directly (apt-get would spend seconds of its own), and one `enable --now`
    // starts it with no daemon-reload (the new unit is loaded on first reference).
    c.that(
        sc,
        s.stderr
            .iter()
            .any(|(_, l)| l.contains("istio-sidecar package installed") && l.contains("dpkg")),
        || {
            format!(
                "the sidecar was not installed by dpkg directly; {}",
                s.show()
            )
        },
    );
    c.that(
        sc,
        s.out().contains("service: istio.service enable --now\n"),
        || format!("the service step was not one `enable --now`; {}", s.show()),
    );
    // systemd's own word that nothing reloaded it during the apply: neither a
    // daemon-reload nor enable's implicit one (`--no-reload`).
    let reloads: Vec<&str> = r
        .all(sc, "pid1_reload")
        .into_iter()
        .filter(|t| {
            t.parse::<f64>()
                .is_ok_and(|t| t >= s.t_start && t <= s.t_end)
        })
        .collect();
    c.that(sc, reloads.is_empty(), || {
        format!(
            "systemd reloaded during the first apply ({:.2}-{:.2} s) at {reloads:?}; {}",
            s.t_start,
            s.t_end,
            s.show()
        )
    });
    c.eq(
        sc,
        "the dpkg stamps (wrapper on PATH)",
        r.get("boot1", "dpkg_on_path"),
        "/usr/local/sbin/dpkg",
    );
    proxy_up(c, r, sc, "");
    c.eq(
        sc,
        "systemctl is-enabled istio",
        r.get(sc, "istio_enabled"),
        "enabled",
    );
    c.that(sc, r.num(sc, "log_cert").unwrap_or(0.0) >= 1.0, || {
        "istio.log has no `generated new workload certificate` line".into()
    });
    c.that(sc, r.num(sc, "log_xds").unwrap_or(0.0) >= 1.0, || {
        "istio.log has no `connected to upstream XDS server` line".into()
    });
    c.eq(
        sc,
        "istio-sidecar in dpkg",
        r.get(sc, "pkg"),
        &format!("ii {V1}"),
    );
    c.eq(
        sc,
        "the package's user",
        r.get(sc, "proxy_user"),
        "istio-proxy",
    );
    let ids = r.get(sc, "proxy_ids");
    c.that(
        sc,
        ids.split(' ').count() == 2 && !ids.starts_with("0 "),
        || format!("istio-proxy's uid and gid: {ids:?}"),
    );
    c.eq(
        sc,
        "istio-proxy's ids after the reboot",
        r.get("s5", "proxy_ids"),
        ids,
    );
    let gets =
        r.num(sc, "pkg_gets").unwrap_or(f64::NAN) - r.num("s4", "pkg_gets").unwrap_or(f64::NAN);
    c.that(sc, gets == 1.0, || {
        format!("cloud-init's apply downloaded the v1 package {gets} times, want 1")
    });
    check_fixture(c, r, sc);
    check_layout(c, r, sc, p);
    check_hosts(c, sc, &r.hosts(sc, "hosts_b64"), pristine_hosts);
}

/// The fixture sidecar behaves as the real package does on a real systemd
/// (tests/FIXTURES.md): the agent runs as istio-proxy under sudo, istio.log is opened
/// by it (appended by istio-proxy's shell), the :15021 listener is the agent's own child
/// and it logged the probe that found it ready, the unit's ExecStartPre made
/// /var/run/secrets istio-proxy's, `StartLimitIntervalSec=0` took effect from [Unit], and
/// istio-iptables' output went to the journal, not to istio.log.
fn check_fixture(c: &mut Check, r: &Results, sc: &str) {
    c.eq(
        sc,
        "pilot-agent's user",
        r.get(sc, "agent_user"),
        "istio-proxy",
    );
    c.eq(
        sc,
        "pilot-agent's parent (exec sudo)",
        r.get(sc, "agent_ppid_comm"),
        "sudo",
    );
    c.eq(
        sc,
        ":15021's listener (user, whose child)",
        r.get(sc, "listener"),
        "istio-proxy agent-child",
    );
    c.eq(
        sc,
        "istio.log's owner",
        r.get(sc, "istio_log_owner"),
        "istio-proxy",
    );
    c.eq(
        sc,
        "/var/run/secrets (owner, mode)",
        r.get(sc, "secrets_dir"),
        "istio-proxy 755",
    );
    c.eq(
        sc,
        "istio.service StartLimitIntervalUSec",
        r.get(sc, "start_limit"),
        "0",
    );
    c.that(
        sc,
        r.num(sc, "journal_iptables").unwrap_or(0.0) >= 1.0,
        || "the istio unit's journal has no istio-iptables output".into(),
    );
    c.eq(
        sc,
        "istio-iptables lines in istio.log",
        r.get(sc, "log_iptables"),
        "0",
    );
    c.that(
        sc,
        r.num(sc, "log_probe_ready").unwrap_or(0.0) >= 1.0,
        || "istio.log has no `Envoy proxy is ready` (the agent logs it when probed ready)".into(),
    );
}

/// s8: the fixture's `iptables-fail` scenario under real systemd (tests/FIXTURES.md):
/// istio-start.sh stops at its first `pilot-agent istio-iptables`, whose error lines go
/// to the unit's journal, the proxy (and so sudo and istio.log) never runs, and
/// Restart=always starts it again and again.
fn iptables_fail(r: &Results, c: &mut Check) {
    let sc = "s8";
    for step in ["dpkg", "start", "stop", "purge"] {
        let s = r.step(sc, step);
        c.that(sc, s.rc == Some(0), || format!("{step}: {}", s.show()));
    }
    c.that(sc, r.num(sc, "nrestarts").unwrap_or(0.0) >= 2.0, || {
        format!(
            "istio.service NRestarts {:?} after {} s, want >= 2",
            r.get(sc, "nrestarts"),
            r.get(sc, "restart_wait_s")
        )
    });
    c.that(sc, r.num(sc, "journal_error").unwrap_or(0.0) >= 2.0, || {
        "the unit's journal lacks istio-iptables' error (one per start)".into()
    });
    c.that(
        sc,
        r.num(sc, "journal_perhaps").unwrap_or(0.0) >= 2.0,
        || "the unit's journal lacks the error's second line".into(),
    );
    c.eq(sc, "sudo to istio-proxy", r.get(sc, "journal_sudo"), "0");
    let log = r.get(sc, "istio_log");
    c.that(sc, log == "absent" || log == "0 iptables lines", || {
        format!("istio.log: {log}")
    });
}

/// s2: identical re-apply
fn reapply(r: &Results, c: &mut Check, pristine_hosts: &str) {
    let sc = "s2";
    let s = r.step(sc, "apply");
    c.that(sc, s.rc == Some(0), || format!("re-apply: {}", s.show()));
    c.that(sc, s.out().contains("up to date, nothing to do"), || {
        format!("re-apply does not say it is up to date; {}", s.show())
    });
    c.that(sc, s.out().contains("unchanged"), || {
        format!(
            "re-apply does not say the service is unchanged; {}",
            s.show()
        )
    });
    for k in ["pid", "nrestarts", "starts", "istio_active", "pkg_gets"] {
        let (b, a) = (
            r.get(sc, &format!("before.{k}")),
            r.get(sc, &format!("after.{k}")),
        );
        c.that(sc, b == a && !b.is_empty(), || {
            format!("istio {k} changed by a no-op re-apply: {b:?} -> {a:?}")
        });
    }
    let (mb, ma) = (r.all(sc, "before.mtime"), r.all(sc, "after.mtime"));
    c.that(sc, mb == ma && !mb.is_empty(), || {
        format!("mtimes changed by a no-op re-apply:\nbefore {mb:#?}\nafter {ma:#?}")
    });
    c.that(sc, s.dpkg.is_empty(), || {
        format!("a no-op re-apply ran dpkg: {:?}", s.dpkg)
    });
    check_hosts(c, sc, &r.hosts(sc, "hosts_b64"), pristine_hosts);
}

/// s3: upgrade to v2
fn upgrade(r: &Results, p: &Payload, c: &mut Check) {
    let sc = "s3";
    let s = r.step(sc, "apply");
    c.that(sc, s.rc == Some(0), || {
        format!("upgrade apply: {}", s.show())
    });
    c.eq(
        sc,
        "istio-sidecar in dpkg",
        r.get(sc, "pkg"),
        &format!("ii {V2}"),
    );
    c.that(sc, r.get(sc, "agent").contains(V2), || {
        format!(
            "/usr/local/bin/pilot-agent is not v2: {}",
            r.get(sc, "agent")
        )
    });
    let (pb, pa) = (r.get(sc, "before.pid"), r.get(sc, "after.pid"));
    c.that(sc, pb != pa && pa != "0" && !pa.is_empty(), || {
        format!("istio MainPID did not change with the upgrade: {pb} -> {pa}")
    });
    let starts = r.num(sc, "after.starts").unwrap_or(f64::NAN)
        - r.num(sc, "before.starts").unwrap_or(f64::NAN);
    c.that(sc, starts == 1.0, || {
        format!(
            "the journal shows {starts} starts of istio.service during the upgrade, want 1; {}",
            s.show()
        )
    });
    c.eq(
        sc,
        "NRestarts (automatic restarts) across the upgrade",
        r.get(sc, "after.nrestarts"),
        r.get(sc, "before.nrestarts"),
    );
    c.that(sc, s.out().contains("restart"), || {
        format!(
            "the upgrade's report does not mention the restart; {}",
            s.show()
        )
    });
    c.that(sc, s.stdout_at("ready:").is_some(), || {
        format!("not ready again after the upgrade; {}", s.show())
    });
    proxy_up(c, r, sc, "after.");
    check_layout(c, r, sc, p);
}

/// s6: the daemon
fn daemon(r: &Results, p: &Payload, c: &mut Check, pristine_hosts: &str) {
    let sc = "s6";
    let s = r.step(sc, "dpkg");
    c.that(sc, s.rc == Some(0), || {
        format!("dpkg -i vmagent: {}", s.show())
    });
    c.eq(
        sc,
        "vmagent in dpkg",
        r.get(sc, "pkg"),
        &format!("ii {}", p.vmagent_version),
    );
    let s = r.step(sc, "config");
    c.that(
        sc,
        s.rc == Some(0)
            && s.out().contains("/etc/vmagent/bundle.tar.gz")
            && s.out().contains("drift_interval_secs = 5"),
        || {
            format!(
                "vmagent config show does not have the drop-in's values; {}",
                s.show()
            )
        },
    );
    c.that(sc, r.num(sc, "dropin").unwrap_or(0.0) >= 1.0, || {
        "istio.service has no 10-vmagent.conf drop-in after installing vmagent's .deb".into()
    });
    let s = r.step(sc, "enable");
    c.that(sc, s.rc == Some(0), || {
        format!("`systemctl enable --now vmagent.service`: {}", s.show())
    });
    c.eq(
        sc,
        "systemctl is-active vmagent",
        r.get(sc, "vmagent_active"),
        "active",
    );
    c.eq(
        sc,
        "systemctl is-enabled vmagent",
        r.get(sc, "vmagent_enabled"),
        "enabled",
    );
    check_status_ready(c, r, sc);
    c.eq(sc, "hosts block edited by hand", r.get(sc, "tampered"), "1");
    c.that(sc, r.get(sc, "repaired") == "yes", || {
        format!(
            "the daemon did not repair the edited hosts block within 60 s (drift_interval_secs = 5):\n{}",
            r.hosts(sc, "hosts_b64")
        )
    });
    check_hosts(c, sc, &r.hosts(sc, "hosts_b64"), pristine_hosts);
    let repaired = r.all(sc, "journal_repaired");
    c.that(
        sc,
        repaired.iter().any(|l| l.contains("/etc/hosts")),
        || format!("no journal line of vmagent names the repaired /etc/hosts: {repaired:?}"),
    );
    check_notify(c, r, sc);
    let before = r.num(sc, "before.repaired_lines").unwrap_or(f64::NAN);
    c.that(sc, repaired.len() as f64 > before, || {
        format!("journalctl -u vmagent does not mention the repair (repaired lines before the edit: {before}): {repaired:?}")
    });
    c.eq(
        sc,
        "istio MainPID across the hosts repair (hosts is not a service input)",
        r.get(sc, "after.pid"),
        r.get(sc, "before.pid"),
    );
}

/// The token after a reboot: back before vmagent and istio started (early.sh runs after
/// systemd-tmpfiles-setup.service), the bundle's, 0600 istio-proxy's.
fn token_back(r: &Results, p: &Payload, c: &mut Check, sc: &str) {
    c.eq(sc, "/run file system", r.get(sc, "run_fstype"), "tmpfs");
    c.eq(
        sc,
        "token before vmagent and istio started (the tmpfiles.d rule)",
        r.get(sc, "token_early"),
        "present",
    );
    c.eq(
        sc,
        "token after boot (mode owner group)",
        r.get(sc, "token"),
        &format!("600 {}", r.get("s1", "proxy_ids")),
    );
    c.eq(
        sc,
        "token content",
        r.get(sc, "token_sha256"),
        &p.bundle_sha["istio-token"],
    );
}

/// s9: reboot with no daemon (issue 14 part 0)
fn no_daemon_reboot(r: &Results, p: &Payload, c: &mut Check) {
    let sc = "s9";
    c.eq(
        sc,
        "vmagent.service before the reboot",
        r.get(sc, "before.vmagent_enabled"),
        "disabled",
    );
    c.eq(
        sc,
        "vmagent.service",
        r.get(sc, "vmagent_active"),
        "inactive",
    );
    c.eq(
        sc,
        "vmagent.service at start",
        r.get(sc, "vmagent_early"),
        "inactive",
    );
    token_back(r, p, c, sc);
    let ids = r.get("s1", "proxy_ids");
    c.eq(
        sc,
        "tokens directory",
        r.get(sc, "tokens_dir"),
        &format!("755 {ids}"),
    );
    c.eq(
        sc,
        "vmagent's copy of the token",
        r.get(sc, "store"),
        "600 0 0",
    );
    c.eq(sc, "the tmpfiles.d rule", r.get(sc, "rule"), "644 0 0");
    let (t, i) = (r.num(sc, "tmpfiles_done_us"), r.num(sc, "istio_start_us"));
    c.that(sc, matches!((t, i), (Some(t), Some(i)) if t > 0.0 && i >= t), || {
        format!("istio.service started before systemd-tmpfiles-setup.service finished: {t:?} us, {i:?} us")
    });
    c.eq(
        sc,
        "tmpfiles complaints about vmagent's rule",
        r.get(sc, "tmpfiles_errors"),
        "0",
    );
    c.eq(sc, "istio restarts", r.get(sc, "nrestarts"), "0");
    check_status_ready(c, r, sc);
    proxy_up(c, r, sc, "");
}

/// s5: reboot
fn reboot(r: &Results, p: &Payload, c: &mut Check) {
    let sc = "s5";
    check_notify(c, r, sc);
    token_back(r, p, c, sc);
    check_status_ready(c, r, sc);
    proxy_up(c, r, sc, "");
    c.eq(
        sc,
        "systemctl is-active vmagent",
        r.get(sc, "vmagent_active"),
        "active",
    );
    let (vr, is) = (r.num(sc, "vmagent_ready_us"), r.num(sc, "istio_start_us"));
    c.that(sc, matches!((vr, is), (Some(v), Some(i)) if v > 0.0 && i >= v), || {
        format!("istio.service started before vmagent.service was ready (drop-in order): vmagent ready at {vr:?} us, istio started at {is:?} us")
    });
}

/// s7: uninstall
fn uninstall(r: &Results, c: &mut Check, pristine_hosts: &str) {
    let sc = "s7";
    let s = r.step(sc, "refused");
    c.that(
        sc,
        s.rc.is_some_and(|rc| rc != 0) && s.err().contains("disable --now vmagent"),
        || format!("`vmagent uninstall` under a running daemon: want a refusal naming `systemctl disable --now vmagent`; {}", s.show()),
    );
    c.eq(
        sc,
        "istio after the refused uninstall",
        r.get(sc, "refused.istio_active"),
        "active",
    );
    c.eq(
        sc,
        "hosts blocks after the refused uninstall",
        r.get(sc, "refused.hosts_block"),
        "1",
    );
    let s = r.step(sc, "stop");
    c.that(sc, s.rc == Some(0), || {
        format!("systemctl disable --now vmagent: {}", s.show())
    });
    let s = r.step(sc, "uninstall");
    c.that(sc, s.rc == Some(0), || {
        format!("vmagent uninstall --purge: {}", s.show())
    });
    let s = r.step(sc, "dpkg");
    c.that(sc, s.rc == Some(0), || {
        format!("dpkg --purge vmagent: {}", s.show())
    });
    let hosts = r.hosts(sc, "hosts_b64");
    c.that(sc, hosts == pristine_hosts, || {
        format!("/etc/hosts is not byte-identical to the pristine one:\n--- pristine\n{pristine_hosts}--- now\n{hosts}")
    });
    // --purge purges the package (README, Uninstall): not even its conffiles ("rc") stay.
    c.eq(
        sc,
        "istio-sidecar in dpkg",
        r.get(sc, "pkg_sidecar"),
        "not-known",
    );
    c.eq(sc, "vmagent in dpkg", r.get(sc, "pkg_vmagent"), "not-known");
    c.that(
        sc,
        !r.get(sc, "istio_enabled").starts_with("enabled"),
        || {
            format!(
                "istio.service still enabled: {}",
                r.get(sc, "istio_enabled")
            )
        },
    );
    c.that(sc, r.get(sc, "istio_active") != "active", || {
        "istio.service still running".into()
    });
    for e in r.all(sc, "exists") {
        c.that(sc, e.ends_with(" no"), || {
            format!("still there after uninstall: {e}")
        });
    }
    let diff = r.all(sc, "snapdiff");
    c.that(sc, diff.is_empty() && r.get(sc, "snapdiff_count") == "0", || {
        format!(
            "differences from the pre-vmagent snapshot (/etc/passwd and /etc/group are not compared: the istio-proxy account stays):\n{}",
            diff.join("\n")
        )
    });
}

fn ran(c: &mut Check, r: &Results, sc: &str) -> bool {
    let ran = r.has(sc);
    c.that(sc, ran, || {
        "no results: the guest never reached this scenario".into()
    });
    ran
}

/// systemd dropped no sd_notify message from a child of vmagent (a systemctl that failed
/// under vmagent.service with NOTIFY_SOCKET inherited: FINDINGS.md 3).
fn check_notify(c: &mut Check, r: &Results, sc: &str) {
    c.eq(
        sc,
        "journal lines `vmagent.service: Got notification message from PID ...`",
        r.get(sc, "notify_rejected"),
        "0",
    );
}

fn check_status_ready(c: &mut Check, r: &Results, sc: &str) {
    let json: serde_json::Value =
        serde_json::from_str(r.get(sc, "status_json")).unwrap_or_default();
    let state = json["health"]["state"].as_str().unwrap_or("none");
    c.that(
        sc,
        state == "ready" && r.get(sc, "status_rc") == "0",
        || {
            format!(
                "vmagent status: state {state:?}, exit {} after {} s: {}",
                r.get(sc, "status_rc"),
                r.get(sc, "status_wait_s"),
                r.get(sc, "status_json")
            )
        },
    );
}

/// The timing numbers: scenario 1's from-scratch apply in detail, the others for scale.
/// Clock: the guest's /proc/uptime (0 = the kernel started); every vmagent output line is
/// stamped on arrival (-v gives the step lines), each dpkg run is stamped, systemd
/// gives the istio start.
fn report_timing(r: &Results) {
    let s = r.step("s1", "apply");
    let nan = f64::NAN;
    // vmagent saw the proxy ready (-v health line), else its final `ready:` line.
    let ready = s
        .stderr_at("health: ready")
        .or_else(|| s.stdout_at("ready:"))
        .unwrap_or(nan);
    let total = s.t_end - s.t_start;
    let dpkg = s.dpkg_secs();
    let download = s.stderr_at("downloading ").unwrap_or(nan);
    let installed = s
        .stderr_at("istio-sidecar package installed")
        .unwrap_or(nan);
    let files = s.stderr_at("bundle applied").unwrap_or(nan);
    let service = s.stderr_at("service step done").unwrap_or(nan);
    let svc_start = r.num("s1", "istio_inactive_exit_us").unwrap_or(nan) / 1e6;
    let start_to_ready = ready - svc_start;
    println!("timing (guest clock: seconds since the kernel started):");
    println!(
        "  boot -> cloud-init runs `vmagent apply`:   {}",
        secs(s.t_start)
    );
    println!(
        "  boot -> stand-in proxy ready (ready file):  {}",
        secs(r.num("s1", "ready_file_uptime").unwrap_or(nan))
    );
    println!(
        "  boot -> vmagent sees the proxy ready:       {}",
        secs(ready)
    );
    println!(
        "  apply, first from scratch, total:           {}",
        secs(total)
    );
    println!(
        "    start -> download begins:                 {}",
        secs(download - s.t_start)
    );
    println!(
        "    download + install (dpkg or apt-get):     {}",
        secs(installed - download)
    );
    println!(
        "      of which dpkg itself:                   {}",
        secs(dpkg)
    );
    println!(
        "    bundle files written:                     {}",
        secs(files - installed)
    );
    println!(
        "    service step (systemctl):                 {}",
        secs(service - files)
    );
    println!(
        "    istio start (systemd) -> ready seen:      {}",
        secs(start_to_ready)
    );
    println!(
        "    ready seen -> exit:                       {}",
        secs(s.t_end - ready)
    );
    println!(
        "  vmagent's share = total - dpkg - start-to-ready: {}",
        secs(total - dpkg - start_to_ready)
    );
    println!(
        "    without install overhead and systemctl as well: {}",
        secs(total - (installed - download) - (service - files) - start_to_ready)
    );
    for (sc, what) in [("s2", "no-op re-apply"), ("s3", "upgrade apply")] {
        let s = r.step(sc, "apply");
        println!(
            "  {what}: {} (dpkg {})",
            secs(s.t_end - s.t_start),
            secs(s.dpkg_secs())
        );
    }
    println!(
        "  daemon: ready {} s after `enable --now` returned; edited hosts block repaired after {} s",
        r.get("s6", "status_wait_s"),
        r.get("s6", "repair_s")
    );
    println!(
        "  second boot: token absent at {} (before vmagent), vmagent READY at {}, istio started at {}, daemon saw the proxy ready at {}",
        secs(r.num("s5", "early_uptime").unwrap_or(nan)),
        secs(r.num("s5", "vmagent_ready_us").unwrap_or(nan) / 1e6),
        secs(r.num("s5", "istio_start_us").unwrap_or(nan) / 1e6),
        secs(r.num("s5", "daemon_ready_seen").unwrap_or(nan)),
    );
}

const SCENARIOS: &[(&str, &str)] = &[
    ("s4", "bad checksum on the pristine VM"),
    ("s1", "cloud-init one-shot apply"),
    ("s2", "identical re-apply changes nothing"),
    ("s3", "upgrade to v2, one restart"),
    ("s9", "reboot, no daemon: tmpfiles token, ready"),
    ("s6", "daemon: ready, repairs hosts drift"),
    ("s5", "reboot: token restored, ready"),
    ("s10", "token provider: 60 s bundle token, ready"),
    ("s11", "reboot, expired token: fresh before istio"),
    ("s7", "uninstall back to the snapshot"),
    ("s8", "fixture iptables-fail: journal, restarts"),
    ("boot2", "the run completed"),
];

#[test]
#[ignore = "boots a Debian VM under qemu: run via tests/vm/run.sh"]
fn debian_vm_end_to_end() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let t0 = Instant::now();
    let work = run_dir();
    println!("vm: run directory {}", work.display());
    let bin = vmagent_bin();
    println!("vm: vmagent binary {}", bin.display());
    let payload = build_payload(&work, &bin);

    let t_image = Instant::now();
    let image = run_ok(Command::new("bash").arg(repo().join("tests/vm/build-image.sh")));
    let image = PathBuf::from(image.trim());
    println!(
        "vm: image {} ({} s)",
        image.display(),
        t_image.elapsed().as_secs()
    );

    let per_boot = Duration::from_secs(
        std::env::var("VMAGENT_VM_BOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let b = boot(&image, &payload.seed, &work, per_boot);
    println!("vm: guest ran {} s", b.wall.as_secs());
    let text = fs::read_to_string(&b.results).unwrap_or_default();
    let r = Results::parse(&text);
    let mut c = Check {
        failures: Vec::new(),
    };
    if let Some(p) = &b.problem {
        c.failures.push(("boot".into(), p.clone()));
    }
    assert_all(&r, &payload, &mut c);
    report_timing(&r);
    for (sc, what) in SCENARIOS {
        println!(
            "scenario {sc:<5} {what:<40} {}",
            if c.failed(sc) { "FAIL" } else { "pass" }
        );
    }
    println!("vm: total {} s", t0.elapsed().as_secs());
    if c.failures.is_empty() {
        // The logs and the seed ISO (the exact payload) stay; the overlay and the
        // payload's build trees go.
        let _ = fs::remove_file(work.join("overlay.qcow2"));
        let _ = fs::remove_dir_all(work.join("build"));
        let _ = fs::remove_dir_all(work.join("seed"));
        return;
    }
    let mut msg = String::new();
    let mut shown = Vec::new();
    for (sc, m) in &c.failures {
        msg.push_str(&format!("[{sc}] {m}\n"));
        if !shown.contains(sc) {
            shown.push(sc.clone());
        }
    }
    for sc in &shown {
        if let Some(lines) = r.logs.get(sc.as_str()) {
            println!("--- guest evidence for {sc} ---");
            for l in lines {
                println!("{l}");
            }
        }
    }
    let con = fs::read_to_string(&b.console).unwrap_or_default();
    let tail: Vec<&str> = con.lines().rev().take(40).collect();
    println!("--- console.log (last 40 lines) ---");
    for l in tail.iter().rev() {
        println!("{}", l.trim_end_matches('\r'));
    }
    panic!(
        "{} failed expectation(s):\n{msg}serial console: {}\nresults (ttyS1): {}",
        c.failures.len(),
        b.console.display(),
        b.results.display()
    );
}
