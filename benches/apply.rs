//! `cargo bench --bench apply`: wall-clock of `vmagent apply` of the example bundle
//! against `benches/manual-steps.sh` (the documented manual steps: mkdir, cp, chown -R,
//! cat >> /etc/hosts; one process per command, no fsync), plus the no-op re-apply.
//!
//! Targets (exit status 1 when missed, naming the target):
//! - fresh apply: median(vmagent) / median(manual script) <= 1.0, while vmagent
//!   fsyncs every file and directory it writes;
//! - no-op re-apply on an applied root: median < 5 ms.
//!
//! The bench builds nothing itself: it runs `cargo build --release` (a no-op when
//! up to date) and times the release binary `target/release/vmagent`, process spawn
//! included, exactly as the script is timed. Knobs (environment):
//! `VMAGENT_BENCH_N` fresh roots per side (default 50), `VMAGENT_BENCH_NOOP` no-op
//! runs (default 300, at least 200), `VMAGENT_BENCH_DIR` where roots live (default
//! /var/tmp: the root filesystem on most systems, where /tmp may be tmpfs),
//! `VMAGENT_BENCH_SYNC=0` to skip the untimed `sync` before each timed run (then
//! vmagent's fsyncs also flush the script's unsynced writes of the previous run).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

// The test harness builds the same roots the tests use (istio-proxy = uid 998).
#[path = "../tests/common/mod.rs"]
mod common;

/// Target: vmagent fresh apply no slower than the manual script.
const MAX_RATIO: f64 = 1.0;
/// Target: no-op re-apply median.
const MAX_NOOP: Duration = Duration::from_millis(5);

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

/// Runs a command and returns its trimmed stdout, or "?" when it fails.
fn capture(cmd: &str, args: &[&str]) -> String {
    match Command::new(cmd).args(args).stderr(Stdio::null()).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "?".to_string(),
    }
}

/// Flushes dirty data so every timed run starts from the same (clean) page cache:
/// otherwise an ext4 fsync in one run would also pay for the other side's writes.
fn sync() {
    let st = Command::new("sync").status().expect("run sync");
    assert!(st.success(), "sync failed");
}

/// A fresh target root as a VM looks after the sidecar package created its user.
fn fresh_root(base: &Path, tag: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("vmagent-bench-{tag}-"))
        .tempdir_in(base)
        .expect("tempdir");
    common::populate_vm_root(dir.path());
    dir
}

/// Times one whole command, spawn to exit; panics if it fails.
fn time(cmd: &mut Command, what: &str) -> Duration {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t = Instant::now();
    let st = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    let d = t.elapsed();
    assert!(st.success(), "{what} failed: {st}");
    d
}

fn vmagent_apply(bin: &Path, bundle: &Path, root: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("apply")
        .arg(bundle)
        .arg("--root")
        .arg(root)
        .args(["--no-package", "--no-start"]);
    c
}

fn manual(script: &Path, bundle: &Path, root: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg(script).arg(root).arg(bundle);
    c
}

/// Host path of system path `sys` in `root`. vmagent makes /etc/istio the package's
/// absolute symlink to /var/lib/istio, which must be followed inside the root.
fn in_root(root: &Path, sys: &str) -> PathBuf {
    match sys.strip_prefix("etc/istio/") {
        Some(rest) => match fs::read_link(root.join("etc/istio")) {
            Ok(t) => root.join(t.strip_prefix("/").unwrap_or(&t)).join(rest),
            Err(_) => root.join(sys),
        },
        None => root.join(sys),
    }
}

/// Both sides must actually have installed the bundle.
fn assert_installed(root: &Path, bundle: &Path, what: &str) {
    for (sys, member) in [
        ("etc/certs/root-cert.pem", "root-cert.pem"),
        ("var/run/secrets/tokens/istio-token", "istio-token"),
        ("var/lib/istio/envoy/cluster.env", "cluster.env"),
        ("etc/istio/config/mesh", "mesh.yaml"),
    ] {
        let got = fs::read(in_root(root, sys)).unwrap_or_else(|e| panic!("{what}: {sys}: {e}"));
        let want = fs::read(bundle.join(member)).expect("bundle member");
        assert_eq!(got, want, "{what}: {sys} differs from {member}");
    }
    let hosts = fs::read_to_string(root.join("etc/hosts")).expect("hosts");
    let line = fs::read_to_string(bundle.join("hosts")).expect("bundle hosts");
    assert!(
        hosts.contains(line.trim()),
        "{what}: etc/hosts lacks the bundle's line"
    );
    assert!(
        in_root(root, "etc/istio/proxy").is_dir(),
        "{what}: no proxy dir"
    );
}

/// Quantile with linear interpolation between closest ranks; `sorted` is ascending.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let frac = pos - lo as f64;
    sorted[lo].mul_f64(1.0 - frac) + sorted[hi].mul_f64(frac)
}

struct Stats {
    median: Duration,
    p10: Duration,
    p90: Duration,
    n: usize,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut s = samples.to_vec();
    s.sort();
    Stats {
        median: quantile(&s, 0.5),
        p10: quantile(&s, 0.1),
        p90: quantile(&s, 0.9),
        n: s.len(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn row(name: &str, s: &Stats) {
    println!(
        "{name:<34} {:>9.3} {:>9.3} {:>9.3} {:>5}",
        ms(s.median),
        ms(s.p10),
        ms(s.p90),
        s.n
    );
}

fn main() -> ExitCode {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let n = env_usize("VMAGENT_BENCH_N", 50).max(5);
    let noop_runs = env_usize("VMAGENT_BENCH_NOOP", 300).max(200);
    let sync_between = std::env::var("VMAGENT_BENCH_SYNC").map_or(true, |v| v != "0");
    let base = std::env::var_os("VMAGENT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));

    // The release binary, rebuilt if src/ changed (no-op otherwise).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "vmagent"])
        .arg("--manifest-path")
        .arg(manifest.join("Cargo.toml"))
        .status()
        .expect("run cargo build --release");
    assert!(st.success(), "cargo build --release failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target"));
    let bin = target.join("release/vmagent");
    assert!(bin.is_file(), "{} missing", bin.display());
    let bundle = manifest.join("examples/bundle");
    let script = manifest.join("benches/manual-steps.sh");

    let base_s = base.display().to_string();
    println!("vmagent apply benchmark");
    println!(
        "  date        {}",
        capture("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
    );
    println!(
        "  vmagent     {} ({})",
        capture(&bin.to_string_lossy(), &["--version"]),
        bin.display()
    );
    println!(
        "  nproc       {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    println!("  cpu         {cpu}");
    println!("  kernel      {}", capture("uname", &["-srm"]));
    println!(
        "  temp roots  {} (mount: {})",
        base_s,
        capture(
            "findmnt",
            &["-n", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS", "-T", &base_s]
        )
    );
    println!("  runs        {n} fresh roots per side, interleaved; {noop_runs} no-op re-applies");
    println!(
        "  note        wall clock per whole command (spawn to exit); {}",
        if sync_between {
            "`sync` (untimed) before each run"
        } else {
            "NO sync between runs (VMAGENT_BENCH_SYNC=0)"
        }
    );

    // Warm-up (untimed): page cache for the binaries, bash, coreutils, the bundle.
    for i in 0..3 {
        let a = fresh_root(&base, "warm");
        let b = fresh_root(&base, "warm");
        time(
            &mut vmagent_apply(&bin, &bundle, a.path()),
            "warm-up vmagent",
        );
        time(&mut manual(&script, &bundle, b.path()), "warm-up manual");
        if i == 0 {
            assert_installed(a.path(), &bundle, "vmagent");
            assert_installed(b.path(), &bundle, "manual");
        }
    }

    // Fresh apply, A B A B ... on roots prepared up front.
    let roots_a: Vec<_> = (0..n).map(|_| fresh_root(&base, "a")).collect();
    let roots_b: Vec<_> = (0..n).map(|_| fresh_root(&base, "b")).collect();
    let (mut va, mut mb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    sync();
    for (a, b) in roots_a.iter().zip(&roots_b) {
        if sync_between {
            sync();
        }
        va.push(time(
            &mut vmagent_apply(&bin, &bundle, a.path()),
            "vmagent apply",
        ));
        if sync_between {
            sync();
        }
        mb.push(time(
            &mut manual(&script, &bundle, b.path()),
            "manual-steps.sh",
        ));
    }
    for (a, b) in roots_a.iter().zip(&roots_b) {
        assert_installed(a.path(), &bundle, "vmagent");
        assert_installed(b.path(), &bundle, "manual");
    }

    // No-op re-apply on an applied root.
    let applied = roots_a[0].path();
    sync();
    let noop: Vec<_> = (0..noop_runs)
        .map(|_| time(&mut vmagent_apply(&bin, &bundle, applied), "no-op re-apply"))
        .collect();

    let (sa, sb, sn) = (stats(&va), stats(&mb), stats(&noop));
    let ratio = sa.median.as_secs_f64() / sb.median.as_secs_f64();
    let mut paired: Vec<f64> = va
        .iter()
        .zip(&mb)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect();
    paired.sort_by(f64::total_cmp);

    println!();
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>5}",
        "ms (wall clock)", "median", "p10", "p90", "n"
    );
    row("vmagent apply, fresh root", &sa);
    row("manual-steps.sh, fresh root", &sb);
    row("vmagent apply, no-op re-apply", &sn);
    println!();
    println!("ratio of medians vmagent/manual   {ratio:.3}   (target <= {MAX_RATIO:.1})");
    println!(
        "paired ratio per iteration        median {:.3}, p10 {:.3}, p90 {:.3}",
        paired[paired.len() / 2],
        paired[paired.len() / 10],
        paired[paired.len() * 9 / 10]
    );
    println!(
        "no-op median                      {:.3} ms (target < {} ms)",
        ms(sn.median),
        MAX_NOOP.as_millis()
    );

    let mut failed = Vec::new();
    if ratio > MAX_RATIO {
        failed.push(format!(
            "fresh apply: vmagent/manual ratio {ratio:.3} > {MAX_RATIO:.1}"
        ));
    }
    if sn.median >= MAX_NOOP {
        failed.push(format!(
            "no-op re-apply: median {:.3} ms >= {} ms",
            ms(sn.median),
            MAX_NOOP.as_millis()
        ));
    }
    println!();
    if failed.is_empty() {
        println!("PASS: both targets met");
        ExitCode::SUCCESS
    } else {
        for f in &failed {
            println!("FAIL: {f}");
        }
        ExitCode::FAILURE
    }
}
