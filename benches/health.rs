//! Health benchmarks (issue 4); numbers go into BENCHMARKS.md.
//!
//! 1. Classification throughput on a 1 GB synthetic istio.log (deterministic, seeded):
//!    the real `Follower` (created while the path does not exist, then the file is renamed
//!    into place so it is read from byte 0) with `Classifier::classify` on every line,
//!    against `grep -c -E '<the classifier's anchors, alternated>' FILE` and `grep -c -F
//!    -f anchors.txt FILE` (LC_ALL=C), same run, page cache warm, 3 timed rounds after a
//!    warm-up round. Target: median(vmagent) / median(grep -E) <= 0.5. The number of
//!    lines where `Classifier::is_candidate` holds must equal both greps' counts.
//!    Two breakdown passes (follower only; follower + `is_candidate`) show where the time
//!    goes.
//! 2. Detection latency: a ready line appended to the log until `Monitor::wait` returns
//!    Ready (probe URL on a port where nothing listens). Target: median < 10 ms over >= 200
//!    trials, fresh log and monitor per trial.
//! 3. Idle follower: wake-ups and thread CPU time of a `wait(None)` + `poll` loop on a
//!    quiet log for 30 s (target: 0 wake-ups), and the same with a writer appending 10
//!    lines/s (contrast: ~300 wake-ups).
//!
//! `HEALTH_BENCH_QUICK=1`: 50 MB, 20 trials, 3 s idle. `HEALTH_BENCH_DIR`: where the files
//! go (default `target/`; the 1 GB file needs the room, /tmp may be a small tmpfs).
//! `HEALTH_BENCH_KEEP=1`: leave the work directory (synthetic.log, anchors.txt) behind.
//! Exits non-zero when a target is missed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use vmagent::health::classify::{anchors, Class, Classifier};
use vmagent::health::follow::Follower;
use vmagent::health::monitor::{Event, Monitor};
use vmagent::health::probe::Prober;
use vmagent::health::State;

const MAX_RATIO: f64 = 0.5;
const MAX_LATENCY: Duration = Duration::from_millis(10);
const RUNS: usize = 3;

struct Sizes {
    bytes: u64,
    trials: usize,
    idle: Duration,
    /// Leave the work directory (synthetic log, anchors.txt) for grep/perf by hand.
    keep: bool,
}

// ---------------------------------------------------------------------------------------
// Synthetic istio.log

/// xorshift64* (deterministic; no rand crate).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// Istio timestamp from microseconds since 2024-08-01T00:00:00Z.
struct Ts(u64);

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0 / 1_000_000;
        write!(
            f,
            "2024-08-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            1 + s / 86_400,
            s / 3600 % 24,
            s / 60 % 60,
            s % 60,
            self.0 % 1_000_000
        )
    }
}

/// Envoy access-log timestamp (milliseconds).
struct AccessTs(u64);

impl fmt::Display for AccessTs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0 / 1_000_000;
        write!(
            f,
            "2024-08-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            1 + s / 86_400,
            s / 3600 % 24,
            s / 60 % 60,
            s % 60,
            self.0 % 1_000_000 / 1000
        )
    }
}

const NS: &[&str] = &[
    "default", "bookinfo", "payments", "shop", "vm-apps", "legacy",
];
const SVC: &[&str] = &[
    "reviews",
    "ratings",
    "details",
    "productpage",
    "checkout",
    "cart",
    "inventory",
    "payments-api",
    "frontend",
    "orders",
];
const XDS: &[&str] = &["CDS", "LDS", "RDS", "EDS", "NDS"];
const PATHS: &[&str] = &[
    "/api/v1/products",
    "/api/v1/cart",
    "/reviews",
    "/ratings",
    "/static/app.js",
    "/api/v2/orders",
    "/login",
    "/healthz",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "GET", "POST", "PUT", "DELETE"];
const UAS: &[&str] = &[
    "curl/8.5.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/127.0.0.0 Safari/537.36",
    "Go-http-client/1.1",
    "python-requests/2.32.3",
    "okhttp/4.12.0",
];
const FLAGS: &[&str] = &[
    "concurrency=\"2\"",
    "domain=\"vm-apps.svc.cluster.local\"",
    "log_as_json=\"false\"",
    "proxyLogLevel=\"warning\"",
    "proxyComponentLogLevel=\"misc:error\"",
    "outlierLogPath=\"\"",
];

/// Writes one line; returns its kind (`b'i'`nfo, `b'w'`arn, `b'e'`rror) for the stats.
fn gen_line(w: &mut impl Write, r: &mut Rng, t: u64) -> io::Result<u8> {
    let ts = Ts(t);
    let k = r.below(10_000);
    let ns = *r.pick(NS);
    let svc = *r.pick(SVC);
    let ip = (r.below(256), r.below(256), 1 + r.below(254));
    match k {
        // ---- info (95.0%) ----
        0..=2799 => {
            // Envoy access log (stdout of the proxy goes to istio.log on a VM).
            let (code, flags, details) = match r.below(100) {
                0..=79 => (200, "-", "via_upstream"),
                80..=86 => (201, "-", "via_upstream"),
                87..=92 => (304, "-", "via_upstream"),
                93..=96 => (404, "-", "via_upstream"),
                97 => (
                    503,
                    "UF,URX",
                    "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
                ),
                98 => (504, "UT", "response_timeout"),
                _ => (503, "UH", "no_healthy_upstream"),
            };
            let port = [9080, 8080, 80, 5000][r.below(4) as usize];
            writeln!(
                w,
                "[{}] \"{} {}/{} HTTP/1.1\" {code} {flags} {details} - \"-\" {} {} {} {} \"-\" \"{}\" \"{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}\" \"{svc}.{ns}.svc.cluster.local:{port}\" \"10.{}.{}.{}:{port}\" outbound|{port}||{svc}.{ns}.svc.cluster.local 10.128.0.7:{} 10.96.{}.{}:{port} 10.128.0.7:{} - default",
                AccessTs(t),
                r.pick(METHODS),
                r.pick(PATHS),
                r.below(100_000),
                r.below(2000),
                r.below(200_000),
                r.below(900),
                r.below(800),
                r.pick(UAS),
                r.next() as u32,
                r.next() as u16,
                r.below(0x1000),
                r.below(0x1000),
                r.next() & 0xffff_ffff_ffff,
                ip.0,
                ip.1,
                ip.2,
                32768 + r.below(28_000),
                r.below(256),
                r.below(256),
                32768 + r.below(28_000),
            )?;
        }
        2800..=5099 => writeln!(
            w,
            "{ts}\tinfo\tads\t{}: PUSH{} for node:{svc}-v{}-{:08x}.{ns} resources:{} size:{}.{}kB",
            r.pick(XDS),
            if r.below(3) == 0 { " INC" } else { "" },
            1 + r.below(3),
            r.next() as u32,
            1 + r.below(300),
            r.below(200),
            r.below(10),
        )?,
        5100..=5999 => writeln!(
            w,
            "{ts}\tinfo\tdelta\tEDS: PUSH request for node:{svc}-v{}-{:08x}.{ns} resources:{} removed:{} size:{}.{}kB cached:{}/{}",
            1 + r.below(3),
            r.next() as u32,
            1 + r.below(60),
            r.below(3),
            r.below(50),
            r.below(10),
            r.below(40),
            40 + r.below(20),
        )?,
        6000..=6999 => writeln!(
            w,
            "{ts}\tinfo\tcache\treturned workload {} from cache\tttl=23h{:02}m{:02}.{:09}s",
            if r.below(2) == 0 {
                "certificate"
            } else {
                "trust anchor"
            },
            r.below(60),
            r.below(60),
            r.below(1_000_000_000),
        )?,
        7000..=7699 => writeln!(
            w,
            "{ts}\tinfo\tsds\tSDS: PUSH\tresource={}",
            if r.below(3) == 0 { "ROOTCA" } else { "default" }
        )?,
        7700..=8399 => writeln!(
            w,
            "{ts}\tinfo\tads\tADS: new connection for node:{}",
            1 + r.below(40)
        )?,
        8400..=8999 => writeln!(
            w,
            "{ts}\tinfo\tads\tADS: \"@\" {svc}-v{}-{:08x}.{ns}-{} terminated",
            1 + r.below(3),
            r.next() as u32,
            r.below(40)
        )?,
        9000..=9299 => writeln!(
            w,
            "{ts}\tinfo\tdns\tupstream request for {svc}.{ns}.svc.cluster.local. type A answered in {}.{}ms",
            r.below(20),
            r.below(1000)
        )?,
        9300..=9399 => writeln!(w, "{ts}\tinfo\tFLAG: --{}", r.pick(FLAGS))?,
        9400..=9439 => writeln!(
            w,
            "{ts}\tinfo\txdsproxy\tconnected to delta upstream XDS server: istiod.istio-system.svc:15012\tid={}",
            1 + r.below(50)
        )?,
        9440..=9459 => writeln!(
            w,
            "{ts}\tinfo\tcache\tRoot cert has changed, start rotating root cert"
        )?,
        // Anchored info lines (progress, ready): rare.
        9460..=9469 => writeln!(
            w,
            "{ts}\tinfo\tcache\tgenerated new workload certificate\tresourceName=default latency={}.{}ms ttl=23h59m59.{:09}s",
            20 + r.below(400),
            r.below(1000),
            r.below(1_000_000_000)
        )?,
        9470..=9474 => writeln!(
            w,
            "{ts}\tinfo\txdsproxy\tconnected to upstream XDS server: istiod.istio-system.svc:15012"
        )?,
        9475..=9479 => writeln!(w, "{ts}\tinfo\tStarting proxy agent")?,
        9480..=9484 => writeln!(
            w,
            "{ts}\tinfo\tEnvoy command: [-c etc/istio/proxy/envoy-rev.json --drain-time-s 45 --drain-strategy immediate --local-address-ip-version v4 --file-flush-interval-msec 1000 --disable-hot-restart --allow-unknown-static-fields -l warning --component-log-level misc:error --concurrency 2]"
        )?,
        9485..=9499 => writeln!(w, "{ts}\tinfo\tEnvoy proxy is ready")?,
        // ---- warn (4.0%) ----
        9500..=9579 => {
            writeln!(
                w,
                "{ts}\twarn\tEnvoy proxy is NOT ready: config not received from XDS server (is Istiod running?): cds updates: 0 successful, 0 rejected; lds updates: 0 successful, 0 rejected"
            )?;
            return Ok(b'w');
        }
        9580..=9619 => {
            writeln!(
                w,
                "{ts}\twarn\tEnvoy proxy is NOT ready: config received from XDS server, but was rejected: cds updates: 1 successful, 0 rejected; lds updates: 0 successful, 1 rejected"
            )?;
            return Ok(b'w');
        }
        9620..=9679 => {
            writeln!(
                w,
                "{ts}\twarning\tenvoy config external/envoy/source/extensions/config_subscription/grpc/grpc_stream.h:193\tStreamAggregatedResources gRPC config stream to xds-grpc closed since {}s ago: 14, connection error: desc = \"transport: Error while dialing: dial tcp 10.{}.{}.{}:15012: i/o timeout\"\tthread=15",
                r.below(600),
                ip.0,
                ip.1,
                ip.2
            )?;
            return Ok(b'w');
        }
        9680..=9719 => {
            writeln!(
                w,
                "{ts}\twarn\tca\tca request failed, starting attempt {} in {}.{}ms",
                1 + r.below(10),
                r.below(3000),
                r.below(1000)
            )?;
            return Ok(b'w');
        }
        9720..=9749 => {
            writeln!(
                w,
                "{ts}\twarn\tsds\tfailed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unauthenticated desc = request authenticate failure"
            )?;
            return Ok(b'w');
        }
        9750..=9769 => {
            writeln!(
                w,
                "{ts}\twarn\txdsproxy\tupstream terminated with unexpected error rpc error: code = Unauthenticated desc = authentication failure"
            )?;
            return Ok(b'w');
        }
        9770..=9809 => {
            // An app health check: a look-alike (anchor without istiod context).
            writeln!(
                w,
                "{ts}\twarn\tapp health check failed for {svc}: Get \"http://127.0.0.1:{}/healthz\": dial tcp 127.0.0.1:{}: connect: connection refused",
                8080 + r.below(3),
                8080 + r.below(3)
            )?;
            return Ok(b'w');
        }
        9810..=9829 => {
            writeln!(
                w,
                "{ts}\twarn\tklog\tdial tcp: lookup istiod.istio-system.svc on 10.96.0.10:53: no such host"
            )?;
            return Ok(b'w');
        }
        9830..=9869 => {
            writeln!(
                w,
                "{ts}\twarning\tenvoy upstream external/envoy/source/common/upstream/cluster_manager_impl.cc:1528\tno healthy host for HTTP connection pool {svc}.{ns}.svc.cluster.local\tthread=22"
            )?;
            return Ok(b'w');
        }
        9870..=9899 => {
            writeln!(
                w,
                "{ts}\twarning\tenvoy main external/envoy/source/server/server.cc:959\tThere is no configured limit to the number of allowed active downstream connections. Configure a limit in `envoy.resource_monitors.global_downstream_max_connections` resource monitor.\tthread=14"
            )?;
            return Ok(b'w');
        }
        // ---- error (1.0%) ----
        9900..=9914 => writeln!(
            w,
            "{ts}\terror\tcache\tresource:default failed to sign: rpc error: code = PermissionDenied desc = authorization failed: no identities ([spiffe://cluster.local/ns/{ns}/sa/{svc}]) matched istio-system/istiod-{:x}",
            r.next() as u32
        )?,
        9915..=9924 => writeln!(
            w,
            "{ts}\terror\tsds\tfailed to warm certificate: failed to generate workload certificate: create certificate: rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\""
        )?,
        9925..=9934 => writeln!(
            w,
            "{ts}\terror\tfailed to fetch token from file: open /var/run/secrets/tokens/istio-token: no such file or directory"
        )?,
        9935..=9939 => writeln!(
            w,
            "{ts}\terror\tcitadelclient\tfailed to load key pair: open /etc/certs/key.pem: permission denied"
        )?,
        9940..=9944 => writeln!(w, "{ts}\terror\tEpoch {} exited with error: signal: killed", r.below(3))?,
        9945..=9947 => writeln!(w, "{ts}\terror\tiptables: Chain already exists.")?,
        9948..=9949 => writeln!(
            w,
            "iptables v1.8.7 (legacy): can't initialize iptables table `nat': Table does not exist (do you need to insmod?)"
        )?,
        9950..=9969 => writeln!(
            w,
            "{ts}\terror\txdsproxy\tfailed to create upstream grpc client: rpc error: code = Unavailable desc = last connection error: connection closed before server preface received"
        )?,
        // Issue 11's signatures: a SAN mismatch, a missing WorkloadGroup, a port
        // conflict, a denied certificate write, a NACK, and the benign key-pair lookup.
        9970..=9973 => writeln!(
            w,
            "{ts}\terror\tcitadelclient\tfailed to sign CSR: rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate is valid for istiod-canary.istio-system.svc, not istiod.istio-system.svc\""
        )?,
        9974..=9977 => writeln!(
            w,
            "{ts}\terror\txdsproxy\tupstream terminated with unexpected error rpc error: code = FailedPrecondition desc = auto-registration WorkloadEntry of vm{}.{ns} failed: cannot find WorkloadGroup {ns}/{svc}\tid={}",
            r.below(100),
            r.below(50)
        )?,
        9978..=9981 => writeln!(
            w,
            "{ts}\terror\tdns\tFailed to listen on udp port localhost:15053: listen udp 127.0.0.1:15053: bind: address already in use"
        )?,
        9982..=9985 => writeln!(
            w,
            "{ts}\terror\tcache\terror when output the resource: failed to write data to file key.pem: open etc/certs/key.pem.tmp.{}: permission denied",
            r.next() as u32
        )?,
        9986..=9989 => writeln!(
            w,
            "{ts}\terror\tenvoy config external/envoy/source/extensions/config_subscription/grpc/grpc_mux_impl.cc:210\tgRPC config for type.googleapis.com/envoy.config.listener.v3.Listener rejected: Error adding/updating listener(s) virtualInbound: duplicate listener\tthread=15"
        )?,
        9990..=9994 => writeln!(
            w,
            "{ts}\terror\tcitadelclient\tFailed to load key pair open /etc/certs/cert-chain.pem: no such file or directory"
        )?,
        _ => writeln!(
            w,
            "[2024-08-15 09:51:42.705][{}][critical][main] [external/envoy/source/server/server.cc:117] error initializing configuration '': missing cluster outbound|{}||{svc}.{ns}.svc.cluster.local",
            14 + r.below(4),
            9080
        )?,
    }
    Ok(if k >= 9900 { b'e' } else { b'i' })
}

struct Generated {
    bytes: u64,
    lines: u64,
    /// info, warn, error lines
    kinds: [u64; 3],
}

fn generate(path: &Path, target: u64) -> io::Result<Generated> {
    struct Counting<W> {
        inner: W,
        n: u64,
    }
    impl<W: Write> Write for Counting<W> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = self.inner.write(b)?;
            self.n += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }
    let mut w = Counting {
        inner: BufWriter::with_capacity(1 << 20, File::create(path)?),
        n: 0,
    };
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    // 2024-08-15T09:51:42.705907Z
    let mut t: u64 = (14 * 86_400 + 9 * 3600 + 51 * 60 + 42) * 1_000_000 + 705_907;
    let mut g = Generated {
        bytes: 0,
        lines: 0,
        kinds: [0; 3],
    };
    while w.n < target {
        let k = gen_line(&mut w, &mut r, t)?;
        g.lines += 1;
        g.kinds[match k {
            b'i' => 0,
            b'w' => 1,
            _ => 2,
        }] += 1;
        t += r.below(2000);
    }
    w.flush()?;
    g.bytes = w.n;
    Ok(g)
}

// ---------------------------------------------------------------------------------------
// 1. classification throughput

/// Follows `live` (absent) with a fresh `Follower`, renames `staged` to it, and delivers
/// every line to `per_line` until the whole file is read; renames it back. Returns the time
/// from the rename to the last line, and the lines and bytes delivered.
fn follow_pass(
    staged: &Path,
    live: &Path,
    total_bytes: u64,
    mut per_line: impl FnMut(&[u8]),
) -> (Duration, u64, u64) {
    let mut f = Follower::new(&[live.to_path_buf()]).expect("follower");
    let (mut lines, mut bytes) = (0u64, 0u64);
    let t = Instant::now();
    fs::rename(staged, live).expect("rename into place");
    loop {
        f.poll(|l| {
            lines += 1;
            bytes += l.len as u64 + 1;
            per_line(l.bytes);
        })
        .expect("poll");
        if bytes >= total_bytes {
            break;
        }
        f.wait(Some(Duration::from_millis(100))).expect("wait");
    }
    let d = t.elapsed();
    drop(f);
    fs::rename(live, staged).expect("rename back");
    (d, lines, bytes)
}

fn grep(args: &[&OsStr]) -> (Duration, u64) {
    let t = Instant::now();
    let o = Command::new("grep")
        .env("LC_ALL", "C")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("grep");
    let d = t.elapsed();
    assert!(o.status.code().is_some_and(|c| c <= 1), "grep failed");
    let n = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("grep -c count");
    (d, n)
}

/// An anchor as a POSIX ERE matching it literally.
fn ere_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if "\\.[]{}()*+?^$|".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn class_name(c: &Class) -> String {
    match c {
        Class::Ready => "ready".into(),
        Class::Progress(s) => format!("progress {s:?}"),
        Class::Failure(f) => format!("failure {}", f.name()),
        Class::Benign => "benign".into(),
    }
}

fn classification(work: &Path, sz: &Sizes, failed: &mut Vec<String>) {
    let staged = work.join("synthetic.log");
    let live = work.join("istio.log");
    let t = Instant::now();
    let g = generate(&staged, sz.bytes).expect("generate");
    let gen_time = t.elapsed();
    // Written data out of the way before timing anything.
    let _ = Command::new("sync").status();
    println!(
        "synthetic istio.log: {} bytes ({:.3} GB, {:.1} MiB), {} lines (info {}, warn {}, error {}), avg {:.1} B/line; generated in {:.1} s",
        g.bytes,
        g.bytes as f64 / 1e9,
        g.bytes as f64 / 1048576.0,
        g.lines,
        g.kinds[0],
        g.kinds[1],
        g.kinds[2],
        g.bytes as f64 / g.lines as f64,
        secs(gen_time)
    );

    let list = anchors();
    let anchors_txt = work.join("anchors.txt");
    fs::write(&anchors_txt, format!("{}\n", list.join("\n"))).unwrap();
    let ere = list
        .iter()
        .map(|a| ere_escape(a))
        .collect::<Vec<_>>()
        .join("|");
    println!(
        "{} anchors; grep -E pattern is {} bytes",
        list.len(),
        ere.len()
    );
    let ge_args: Vec<&OsStr> = vec![
        "-c".as_ref(),
        "-E".as_ref(),
        "-e".as_ref(),
        ere.as_ref(),
        staged.as_os_str(),
    ];
    let gf_args: Vec<&OsStr> = vec![
        "-c".as_ref(),
        "-F".as_ref(),
        "-f".as_ref(),
        anchors_txt.as_os_str(),
        staged.as_os_str(),
    ];

    let classifier = Classifier::new();
    let mut t_class = Vec::new();
    let mut t_ge = Vec::new();
    let mut t_gf = Vec::new();
    let mut t_follow = Vec::new();
    let mut t_cand = Vec::new();
    let mut counts: Option<HashMap<Class, u64>> = None;
    let mut cand: Option<u64> = None;
    let mut ge_n: Option<u64> = None;
    let mut gf_n: Option<u64> = None;
    let same = |slot: &mut Option<u64>, n: u64, what: &str| match slot {
        Some(old) if *old != n => panic!("{what}: {n} this round, {old} before"),
        _ => *slot = Some(n),
    };
    for round in 0..=RUNS {
        // vmagent: follower + classify (the product's path)
        let mut c: HashMap<Class, u64> = HashMap::new();
        let (d, lines, bytes) = follow_pass(&staged, &live, g.bytes, |b| {
            if let Some(k) = classifier.classify(b) {
                *c.entry(k).or_default() += 1;
            }
        });
        assert_eq!((lines, bytes), (g.lines, g.bytes), "follower delivered");
        match &counts {
            Some(old) => assert_eq!(old, &c, "per-class counts differ between rounds"),
            None => counts = Some(c),
        }
        let (dge, nge) = grep(&ge_args);
        same(&mut ge_n, nge, "grep -E count");
        let (dgf, ngf) = grep(&gf_args);
        same(&mut gf_n, ngf, "grep -F count");
        // breakdown: follower alone, follower + candidate check
        let (df, lines, _) = follow_pass(&staged, &live, g.bytes, |b| {
            std::hint::black_box(b);
        });
        assert_eq!(lines, g.lines);
        let mut n = 0u64;
        let (dc, _, _) = follow_pass(&staged, &live, g.bytes, |b| {
            n += classifier.is_candidate(b) as u64;
        });
        same(&mut cand, n, "candidate count");
        let label = if round == 0 {
            "warm-up".to_string()
        } else {
            format!("round {round}")
        };
        println!(
            "  {label:8}  classify {:.3} s  grep -E {:.3} s  grep -F {:.3} s  follower only {:.3} s  follower+is_candidate {:.3} s",
            secs(d),
            secs(dge),
            secs(dgf),
            secs(df),
            secs(dc)
        );
        if round > 0 {
            t_class.push(d);
            t_ge.push(dge);
            t_gf.push(dgf);
            t_follow.push(df);
            t_cand.push(dc);
        }
    }
    let (cand, ge_n, gf_n) = (cand.unwrap(), ge_n.unwrap(), gf_n.unwrap());
    let counts = counts.unwrap();
    let classified: u64 = counts.values().sum();
    let m_ge = median(&t_ge);
    let gbps = |d: Duration| g.bytes as f64 / 1e9 / secs(d);
    println!(
        "classification throughput, median of {RUNS} rounds (page cache warm, after 1 warm-up round):"
    );
    println!(
        "  {:44} {:>9} {:>8} {:>16}",
        "", "median s", "GB/s", "ratio / grep -E"
    );
    for (name, v) in [
        ("vmagent Follower + Classifier::classify", &t_class),
        ("grep -c -E 'a|b|...' (LC_ALL=C)", &t_ge),
        ("grep -c -F -f anchors.txt (LC_ALL=C)", &t_gf),
        ("  breakdown: Follower only (read + split)", &t_follow),
        ("  breakdown: Follower + is_candidate", &t_cand),
    ] {
        let m = median(v);
        println!(
            "  {name:44} {:9.3} {:8.2} {:16.2}",
            secs(m),
            gbps(m),
            secs(m) / secs(m_ge)
        );
    }
    let ratio = secs(median(&t_class)) / secs(m_ge);
    println!("  ratio vmagent / grep -E = {ratio:.2} (target <= {MAX_RATIO})");
    println!(
        "  candidate lines: is_candidate {cand}, grep -E {ge_n}, grep -F {gf_n}; classified {classified} ({} candidates classify as nothing)",
        cand - classified
    );
    let mut cv: Vec<_> = counts.iter().collect();
    cv.sort_by(|a, b| {
        b.1.cmp(a.1)
            .then_with(|| class_name(a.0).cmp(&class_name(b.0)))
    });
    for (c, n) in cv {
        println!("    {:32} {n}", class_name(c));
    }
    if cand != ge_n || cand != gf_n {
        failed.push(format!(
            "candidate counts differ: is_candidate {cand}, grep -E {ge_n}, grep -F {gf_n}"
        ));
    }
    if ratio > MAX_RATIO {
        failed.push(format!(
            "classification ratio {ratio:.2} > {MAX_RATIO} (vmagent {:.3} s, grep -E {:.3} s)",
            secs(median(&t_class)),
            secs(m_ge)
        ));
    }
    if !sz.keep {
        fs::remove_file(&staged).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// 2. detection latency

const READY: &[u8] = b"2024-08-15T09:51:48.112233Z\tinfo\tEnvoy proxy is ready\n";
const STARTUP: &str = "2024-08-15T09:51:42.705907Z\tinfo\tStarting proxy agent\n\
2024-08-15T09:51:42.706001Z\tinfo\tEnvoy command: [-c etc/istio/proxy/envoy-rev.json]\n\
2024-08-15T09:51:43.100000Z\tinfo\tcache\tgenerated new workload certificate\tresourceName=default\n";

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One trial: returns (latency, state when `wait` returned).
fn latency_trial(dir: &Path, url: &str, settle: Duration) -> (Duration, State) {
    fs::create_dir(dir).unwrap();
    let log = dir.join("istio.log");
    fs::write(&log, STARTUP).unwrap();
    let (tx_wait, rx_wait) = mpsc::channel();
    let (tx_done, rx_done) = mpsc::channel();
    let (url, path) = (url.to_string(), log.clone());
    let h = thread::spawn(move || {
        // The monitor is not Send (its unit view is a boxed FnMut): built in this thread.
        let follower = Follower::new(&[path]).expect("follower");
        let mut m = Monitor::new(
            Some(follower),
            Prober::new(
                &url,
                vmagent::net::Client::shared(&Default::default()).unwrap(),
            ),
            None,
        );
        let mut on = |e: Event<'_>| {
            if let Event::Waiting { .. } = e {
                let _ = tx_wait.send(());
            }
        };
        let health = m.wait(Duration::from_secs(10), &mut on);
        let t1 = Instant::now();
        tx_done.send((t1, health.state)).unwrap();
    });
    rx_wait.recv().unwrap();
    // Let the first round (probe: connection refused, poll of the log) finish, so the
    // monitor is blocked in poll(2) on the inotify descriptor.
    thread::sleep(settle);
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    let t0 = Instant::now();
    f.write_all(READY).unwrap();
    f.flush().unwrap();
    let (t1, state) = rx_done.recv().unwrap();
    h.join().unwrap();
    fs::remove_dir_all(dir).unwrap();
    (t1.saturating_duration_since(t0), state)
}

fn latency(work: &Path, sz: &Sizes, failed: &mut Vec<String>) {
    let url = format!("http://127.0.0.1:{}/healthz/ready", closed_port());
    let mut v = Vec::with_capacity(sz.trials);
    let mut not_ready = 0;
    for i in 0..sz.trials {
        // 20-39 ms after the Waiting event: always inside the first 500 ms probe period.
        let settle = Duration::from_millis(20 + (i % 20) as u64);
        let (d, state) = latency_trial(&work.join(format!("lat-{i}")), &url, settle);
        if state != State::Ready {
            not_ready += 1;
        }
        v.push(d);
    }
    v.sort();
    let n = v.len();
    let med = v[n / 2];
    let p90 = v[(n * 9 / 10).min(n - 1)];
    println!(
        "detection latency (ready line appended -> Monitor::wait returns Ready), {n} trials, probe URL {url} (nothing listens):"
    );
    println!(
        "  median {:.3} ms  p10 {:.3} ms  p90 {:.3} ms  min {:.3} ms  max {:.3} ms  (target median < {} ms); not ready: {not_ready}",
        ms(med),
        ms(v[n / 10]),
        ms(p90),
        ms(v[0]),
        ms(v[n - 1]),
        MAX_LATENCY.as_millis()
    );
    if not_ready > 0 {
        failed.push(format!("{not_ready} latency trials did not end Ready"));
    }
    if med >= MAX_LATENCY {
        failed.push(format!(
            "detection latency median {:.3} ms >= 10 ms",
            ms(med)
        ));
    }
}

// ---------------------------------------------------------------------------------------
// 3. idle follower

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Idle {
    wakes: u64,
    lines: u64,
    cpu: Duration,
    wall: Duration,
}

/// A `wait(None)` + `poll` loop on a log in its own directory for `span`, with a writer
/// appending `rate` lines/s (0: quiet). Stopped by creating a file next to the log.
fn idle_run(dir: &Path, span: Duration, rate: u32) -> Idle {
    fs::create_dir(dir).unwrap();
    let log = dir.join("istio.log");
    fs::write(&log, STARTUP).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn({
        let (stop, log) = (stop.clone(), log.clone());
        move || {
            let mut f = Follower::new(&[log]).expect("follower");
            let c0 = thread_cpu();
            tx.send(()).unwrap();
            let (mut wakes, mut lines) = (0u64, 0u64);
            loop {
                f.wait(None).expect("wait");
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                wakes += 1;
                f.poll(|_| lines += 1).expect("poll");
            }
            (wakes, lines, thread_cpu() - c0)
        }
    });
    rx.recv().unwrap();
    let t = Instant::now();
    let mut writer = None;
    if rate == 0 {
        thread::sleep(span);
    } else {
        let mut w = OpenOptions::new().append(true).open(&log).unwrap();
        let period = Duration::from_secs(1) / rate;
        let n = (span.as_secs_f64() * rate as f64).round() as u32;
        for i in 1..=n {
            let due = t + period * i;
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                thread::sleep(d);
            }
            // One write(2) per line (`writeln!` on a File writes piece by piece).
            let line = format!(
                "{}\tinfo\tads\tADS: new connection for node:{i}\n",
                Ts(1_234_567_000_000 + i as u64 * 100_000)
            );
            w.write_all(line.as_bytes()).unwrap();
        }
        // Let the last line be read; the writer stays open (closing it is an event too).
        thread::sleep(Duration::from_millis(200));
        writer = Some(w);
    }
    let wall = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    fs::write(dir.join("stop"), b"").unwrap();
    let (wakes, lines, cpu) = h.join().unwrap();
    drop(writer);
    fs::remove_dir_all(dir).unwrap();
    Idle {
        wakes,
        lines,
        cpu,
        wall,
    }
}

fn idle(work: &Path, sz: &Sizes, failed: &mut Vec<String>) {
    println!(
        "idle follower: a thread loops Follower::wait(None) + poll for {:.0} s; CPU = that thread's CLOCK_THREAD_CPUTIME_ID",
        secs(sz.idle)
    );
    let q = idle_run(&work.join("idle-quiet"), sz.idle, 0);
    println!(
        "  quiet log:              {:.1} s wall, {} wake-ups, {} lines, CPU {:.3} ms",
        secs(q.wall),
        q.wakes,
        q.lines,
        ms(q.cpu)
    );
    let a = idle_run(&work.join("idle-10hz"), sz.idle, 10);
    println!(
        "  writer at 10 lines/s:   {:.1} s wall, {} wake-ups, {} lines, CPU {:.3} ms ({:.1} us per wake-up)",
        secs(a.wall),
        a.wakes,
        a.lines,
        ms(a.cpu),
        a.cpu.as_secs_f64() * 1e6 / a.wakes.max(1) as f64
    );
    if q.wakes != 0 {
        failed.push(format!(
            "idle follower woke {} times on a quiet log",
            q.wakes
        ));
    }
    let expected = (secs(sz.idle) * 10.0).round() as u64;
    if a.lines != expected || a.wakes == 0 {
        failed.push(format!(
            "contrast run: {} lines / {} wake-ups, expected {expected} lines",
            a.lines, a.wakes
        ));
    }
}

// ---------------------------------------------------------------------------------------

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let quick = std::env::var("HEALTH_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let keep = std::env::var("HEALTH_BENCH_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
    let sz = if quick {
        Sizes {
            bytes: 50_000_000,
            trials: 20,
            idle: Duration::from_secs(3),
            keep,
        }
    } else {
        Sizes {
            bytes: 1_000_000_000,
            trials: 200,
            idle: Duration::from_secs(30),
            keep,
        }
    };
    let base: PathBuf = std::env::var_os("HEALTH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    fs::create_dir_all(&base).unwrap();
    let work = tempfile::Builder::new()
        .prefix("health-bench-")
        .tempdir_in(&base)
        .expect("tempdir");
    println!(
        "health bench{}: work dir {}; load average at start {}",
        if quick { " (HEALTH_BENCH_QUICK)" } else { "" },
        work.path().display(),
        loadavg()
    );
    let mut failed = Vec::new();
    classification(work.path(), &sz, &mut failed);
    println!("load average {}", loadavg());
    latency(work.path(), &sz, &mut failed);
    println!("load average {}", loadavg());
    idle(work.path(), &sz, &mut failed);
    println!("load average at end {}", loadavg());
    if keep {
        println!("kept {} (HEALTH_BENCH_KEEP)", work.keep().display());
    } else {
        drop(work);
    }
    if failed.is_empty() {
        println!("PASS: all targets met");
        ExitCode::SUCCESS
    } else {
        println!("FAIL: {}", failed.join("; "));
        ExitCode::FAILURE
    }
}
