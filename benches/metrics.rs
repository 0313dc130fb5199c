//! The cost of one metrics write (issue 16): `vmagent::metrics::render` of a full status
//! document (every family present) plus `vmagent::metrics::write_file` (temp file,
//! fsync, rename, fsync of the directory), as the daemon does after a change. Numbers go
//! into BENCHMARKS.md. Target: median < 1 ms.
//!
//! `METRICS_BENCH_DIR`: the directory written into (default `target/metrics-bench`; put
//! it on the file system node_exporter's directory is on, /var/lib, to measure that
//! disk's fsync). `METRICS_BENCH_ROUNDS`: writes timed (default 2000). Exits non-zero
//! when the median misses the target.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vmagent::health::{Failure, Health, State};
use vmagent::identity::timeline::{CertRoute, Reason};
use vmagent::metrics::{render, write_file, Counters, FILE_NAME};
use vmagent::status::{ApplyResult, HealthView, IdentityView, LastApply, StatusFile};

const TARGET: Duration = Duration::from_millis(1);

fn doc() -> StatusFile {
    let mut h = Health::unknown();
    h.state = State::Degraded;
    h.failure = Some(Failure::IstiodUnreachable);
    let mut d = StatusFile::new(HealthView::of(&h, 1_790_000_000));
    d.package_version = Some("1.24.1".into());
    d.identity = Some(IdentityView {
        token_expires_at: Some(1_800_000_000),
        certificate_expires_at: Some(1_790_086_400),
        renews_without_token: true,
        lapses_at: Some(1_800_000_000),
        lapsed: false,
        reason: Reason::Other,
        certificate_dir: Some("/etc/certs".into()),
        certificate_route: CertRoute::Renewable,
        fix: None,
    });
    d.last_apply = Some(LastApply {
        at: "2026-12-03T21:00:00Z".into(),
        result: ApplyResult::UpToDate,
        exit_code: 0,
        bundle: "/etc/vmagent/bundle.tar".into(),
    });
    d
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> ExitCode {
    let dir = std::env::var_os("METRICS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/metrics-bench"));
    let rounds: usize = std::env::var("METRICS_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2000);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(FILE_NAME);
    let d = doc();
    let mut c = Counters::default();
    let (mut render_t, mut total_t) = (Vec::new(), Vec::new());
    for i in 0..rounds + 50 {
        // A new counter value each round: every write is a real change, as in the daemon.
        c.reconciles = i as u64;
        let t0 = Instant::now();
        let text = render(&d, &c);
        let t1 = Instant::now();
        write_file(&path, &text).expect("write");
        let t2 = Instant::now();
        if i >= 50 {
            render_t.push(t1 - t0);
            total_t.push(t2 - t0);
        }
    }
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let (r, t) = (median(&mut render_t), median(&mut total_t));
    let p99 = total_t[total_t.len() * 99 / 100];
    println!(
        "metrics write ({} bytes, {rounds} rounds, {}): render median {:.1} us; render + atomic write median {:.1} us, p99 {:.1} us, max {:.1} us (target < {} ms)",
        bytes,
        dir.display(),
        r.as_secs_f64() * 1e6,
        t.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        total_t.last().unwrap().as_secs_f64() * 1e6,
        TARGET.as_millis()
    );
    if t < TARGET {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
