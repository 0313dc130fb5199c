//! Package step benchmarks (numbers go into BENCHMARKS.md):
//!
//! 1. Download + verify of a 200 MB file over loopback: vmagent's fetch (one pass:
//!    stream to the cache file while hashing) against `curl -o FILE URL && sha256sum
//!    FILE`, same server, same run, interleaved. Target: ratio of medians <= 0.9.
//! 2. Re-apply with the package already installed (real dpkg root): no download, no
//!    dpkg call, whole `vmagent apply` under 50 ms (median), for a local `--package`
//!    and for the configured URL template (which must not touch the server at all).
//!
//! Exits non-zero when a target is missed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::packages::{deb_root, Fixture, DEB_DEPS};
use common::server::Server;
use sha2::{Digest, Sha256};
use vmagent::config::DownloadConfig;
use vmagent::package::fetch;

const SIZE: usize = 200 << 20;
const MAX_RATIO: f64 = 0.9;
const MAX_REAPPLY: Duration = Duration::from_millis(50);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

fn vmagent_bin() -> std::path::PathBuf {
    let st = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--bin", "vmagent"])
        .status()
        .expect("cargo build");
    assert!(st.success(), "cargo build --release failed");
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/vmagent")
}

fn main() -> ExitCode {
    let runs = env_usize("VMAGENT_BENCH_DL_RUNS", 7);
    let base = std::env::var("VMAGENT_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let work = tempfile::Builder::new()
        .prefix("vmagent-dl-bench-")
        .tempdir_in(&base)
        .expect("tempdir");
    let mut failed = Vec::new();

    // 1. download + verify
    let body = noise(SIZE);
    let sha = vmagent::text::hex(&Sha256::digest(&body));
    let server = Server::http();
    server.put("/istio-sidecar.deb", body);
    let url = server.url("/istio-sidecar.deb");
    let cfg = DownloadConfig::default();
    let client = vmagent::net::Client::new(Default::default()).expect("client");
    let cache = work.path().join("cache");
    let curl_out = work.path().join("curl.out");
    fs::create_dir_all(&cache).unwrap();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..runs + 1 {
        let _ = Command::new("sync").status();
        let t = Instant::now();
        let p =
            fetch::download(&client, &url, &sha, "deb", &cache, &cfg).expect("vmagent download");
        let d1 = t.elapsed();
        fs::remove_file(p).unwrap();
        let _ = Command::new("sync").status();
        let t = Instant::now();
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "curl -sSf -o '{}' '{url}' && sha256sum '{}'",
                curl_out.display(),
                curl_out.display()
            ))
            .stderr(Stdio::inherit())
            .output()
            .expect("curl");
        let d2 = t.elapsed();
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with(&sha),
            "curl | sha256sum failed"
        );
        fs::remove_file(&curl_out).unwrap();
        if i > 0 {
            // the first pair warms the server and the page cache
            ours.push(d1);
            theirs.push(d2);
        }
    }
    let (m1, m2) = (median(&mut ours), median(&mut theirs));
    let ratio = m1.as_secs_f64() / m2.as_secs_f64();
    println!(
        "download + verify, {} MiB over loopback, {runs} runs each (interleaved, sync before each)",
        SIZE >> 20
    );
    println!(
        "  vmagent fetch (stream + hash, one pass)  median {:8.1} ms  min {:8.1}  max {:8.1}",
        ms(m1),
        ms(ours[0]),
        ms(*ours.last().unwrap())
    );
    println!(
        "  curl -o FILE && sha256sum FILE           median {:8.1} ms  min {:8.1}  max {:8.1}",
        ms(m2),
        ms(theirs[0]),
        ms(*theirs.last().unwrap())
    );
    println!("  ratio {ratio:.3} (target <= {MAX_RATIO})");
    if ratio > MAX_RATIO {
        failed.push(format!("download ratio {ratio:.3} > {MAX_RATIO}"));
    }

    // 2. re-apply with the package installed
    let bin = vmagent_bin();
    let deb = Fixture::new("1.24.1").build_deb(work.path());
    let bundle = common::example_dir();
    let reapply_runs = env_usize("VMAGENT_BENCH_REAPPLY_RUNS", 50);
    for (label, templated) in [
        ("--package LOCAL.deb", false),
        ("configured URL template", true),
    ] {
        let root = deb_root(DEB_DEPS);
        let r = root.path();
        let mut args: Vec<String> = vec![
            "apply".into(),
            bundle.display().to_string(),
            "--root".into(),
            r.display().to_string(),
            "--no-start".into(),
        ];
        if templated {
            server.put(
                "/releases/1.24.1/deb/istio-sidecar.deb",
                fs::read(&deb).unwrap(),
            );
            let sum = fetch::sha256_file(&deb).unwrap();
            server.put(
                "/releases/1.24.1/deb/istio-sidecar.deb.sha256",
                format!("{sum}  istio-sidecar.deb\n"),
            );
            fs::create_dir_all(r.join("etc/vmagent")).unwrap();
            fs::write(
                r.join("etc/vmagent/config.toml"),
                format!(
                    "[package]\nversion = \"1.24.1\"\nurl = \"{}\"\n",
                    server.url("/releases/{version}/{format}/istio-sidecar{arch_suffix}.{format}")
                ),
            )
            .unwrap();
        } else {
            args.extend(["--package".into(), deb.display().to_string()]);
        }
        let first = Command::new(&bin).args(&args).output().unwrap();
        assert!(
            first.status.success(),
            "first apply: {}",
            String::from_utf8_lossy(&first.stderr)
        );
        server.clear_log();
        let status_file = r.join("var/lib/dpkg/status");
        let before = fs::metadata(&status_file).unwrap().modified().unwrap();
        let mut times = Vec::new();
        for _ in 0..reapply_runs {
            let t = Instant::now();
            let o = Command::new(&bin).args(&args).output().unwrap();
            times.push(t.elapsed());
            assert!(
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("up to date"),
                "re-apply not up to date"
            );
        }
        assert_eq!(
            fs::metadata(&status_file).unwrap().modified().unwrap(),
            before,
            "dpkg ran during a re-apply"
        );
        let requests = server.requests().len();
        let m = median(&mut times);
        println!(
            "re-apply with istio-sidecar installed ({label}): median {:.1} ms, p90 {:.1} ms over {reapply_runs} runs; HTTP requests: {requests}; dpkg status untouched",
            ms(m),
            ms(times[times.len() * 9 / 10])
        );
        if m >= MAX_REAPPLY {
            failed.push(format!(
                "re-apply ({label}) median {:.1} ms >= 50 ms",
                ms(m)
            ));
        }
        if requests != 0 {
            failed.push(format!("re-apply ({label}) made {requests} HTTP requests"));
        }
    }
    if failed.is_empty() {
        println!("PASS: all targets met");
        ExitCode::SUCCESS
    } else {
        println!("FAIL: {}", failed.join("; "));
        ExitCode::FAILURE
    }
}
