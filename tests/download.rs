//! The package download step against a real HTTP / HTTPS server on 127.0.0.1 with
//! injected faults (tests/common/server.rs), driving the real `vmagent` binary, which
//! installs a real fixture .deb with real dpkg into a throwaway root.
//!
//! Contract: retries (attempts, backoff, Retry-After) on connection errors, timeouts,
//! 5xx and 429; no retry on other 4xx; resume with `Range: bytes=N-`; redirects
//! followed; checksum from --package-sha256, config or `URL.sha256`; streamed into
//! var/cache/vmagent/.partial-* and renamed to <sha256>.deb only once it matches.
//! Exit codes: 4 prerequisite missing (no checksum), 5 download or verification failed.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::packages::{deb_installed, deb_root, Fixture, DEB_DEPS};
use common::server::{Fault, Server, TestCa};
use common::{vmagent, Spec, TestRoot};
use sha2::{Digest, Sha256};

const VERSION: &str = "1.24.1";
const PKG: &str = "/pool/istio-sidecar.deb";
const SHA: &str = "/pool/istio-sidecar.deb.sha256";
const MB: usize = 1024 * 1024;

/// `[download]` settings that keep the tests fast.
const FAST: &str =
    "[download]\nconnect_timeout_secs = 2\nidle_timeout_secs = 1\nattempts = 4\nbackoff_ms = 50\n";

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// The fixture package (4 MB of incompressible padding), built once per test binary.
struct Deb {
    bytes: Vec<u8>,
    sha: String,
}

fn deb() -> &'static Deb {
    static DEB: OnceLock<Deb> = OnceLock::new();
    DEB.get_or_init(|| {
        let w = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(VERSION);
        f.padding = 4 * MB;
        f.arch = deb_arch().into();
        let bytes = fs::read(f.build_deb(w.path())).unwrap();
        let sha = hex(&bytes);
        Deb { bytes, sha }
    })
}

/// The published checksum file, as release servers write it.
fn sha_file(hex: &str) -> String {
    format!("{hex}  istio-sidecar.deb\n")
}

/// A throwaway bundle, a Debian root with the fixture's dependencies and fast
/// download settings, and the server.
struct Case {
    work: tempfile::TempDir,
    root: TestRoot,
    bundle: PathBuf,
    srv: Server,
}

fn case_with(srv: Server) -> Case {
    let work = tempfile::tempdir().unwrap();
    let bundle = Spec::example().write_tar(work.path());
    let root = deb_root(DEB_DEPS);
    let c = Case {
        work,
        root,
        bundle,
        srv,
    };
    c.config("");
    c
}

fn case() -> Case {
    case_with(Server::http())
}

/// What one vmagent run did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn show(&self) -> String {
        format!(
            "exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }

    #[track_caller]
    fn code(&self, want: i32) -> &Run {
        assert_eq!(self.code, Some(want), "{}", self.show());
        self
    }

    #[track_caller]
    fn ok(&self) -> &Run {
        self.code(0)
    }

    /// stderr + stdout, lower-cased.
    fn text(&self) -> String {
        format!("{}\n{}", self.stderr, self.stdout).to_lowercase()
    }

    #[track_caller]
    fn says(&self, what: &str) -> &Run {
        assert!(
            self.text().contains(&what.to_lowercase()),
            "expected {what:?} in the output\n{}",
            self.show()
        );
        self
    }

    #[track_caller]
    fn says_any(&self, what: &[&str]) -> &Run {
        let t = self.text();
        assert!(
            what.iter().any(|w| t.contains(&w.to_lowercase())),
            "expected one of {what:?} in the output\n{}",
            self.show()
        );
        self
    }
}

impl Case {
    /// Writes ROOT/etc/vmagent/config.toml: the fast [download] table plus `extra`.
    fn config(&self, extra: &str) {
        let dir = self.root.at("/etc/vmagent");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("config.toml"), format!("{extra}\n{FAST}")).unwrap();
    }

    /// Serves the fixture at [`PKG`] and its published checksum at [`SHA`].
    fn serve(&self) {
        self.srv.put(PKG, deb().bytes.clone());
        self.srv.put(SHA, sha_file(&deb().sha));
    }

    /// `vmagent apply BUNDLE --root ROOT --no-start ARGS` (proxies off, 60 s guard).
    fn apply(&self, args: &[&str]) -> Run {
        self.apply_env(args, &[("NO_PROXY", "127.0.0.1,localhost")])
    }

    /// [`Case::apply`] with no proxy variables but `env`.
    fn apply_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let t = Instant::now();
        let mut cmd = vmagent();
        cmd.arg("apply")
            .arg(&self.bundle)
            .arg("--root")
            .arg(self.root.path())
            .arg("--no-start")
            .args(args)
            .timeout(Duration::from_secs(60));
        for v in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
            cmd.env_remove(v).env_remove(v.to_lowercase());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().expect("run vmagent");
        let r = Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            took: t.elapsed(),
        };
        if std::env::var_os("DOWNLOAD_TEST_SHOW").is_some() {
            eprintln!("vmagent apply {args:?}: {}", r.show());
        }
        r
    }

    /// `--package URL-of-PKG` plus `extra`.
    fn apply_pkg(&self, extra: &[&str]) -> Run {
        let url = self.srv.url(PKG);
        let mut args = vec!["--package", url.as_str()];
        args.extend_from_slice(extra);
        self.apply(&args)
    }

    fn cache_dir(&self) -> PathBuf {
        self.root.at("/var/cache/vmagent")
    }

    /// File names in ROOT/var/cache/vmagent (none when it does not exist).
    fn cache(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(self.cache_dir()) else {
            return vec![];
        };
        let mut v: Vec<String> = rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[track_caller]
    fn assert_no_partials(&self) {
        let partials: Vec<_> = self
            .cache()
            .into_iter()
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(partials.is_empty(), "left behind: {partials:?}");
    }

    /// The fixture was installed from a verified download kept in the cache.
    #[track_caller]
    fn assert_installed_from_cache(&self) {
        assert_eq!(deb_installed(self.root.path()).as_deref(), Some(VERSION));
        let cached = self.cache_dir().join(format!("{}.deb", deb().sha));
        let got = fs::read(&cached)
            .unwrap_or_else(|e| panic!("{}: {e}; cache: {:?}", cached.display(), self.cache()));
        assert!(
            got == deb().bytes,
            "cached package differs from the served one"
        );
        self.assert_no_partials();
        // The package's files are there, padding included (a correct, complete body):
        // the fixture's envoy carries it after its few script lines.
        let envoy = self.root.at("/usr/local/bin/envoy");
        let len = fs::metadata(&envoy).unwrap().len();
        assert!(
            (4 * MB as u64..4 * MB as u64 + 4096).contains(&len),
            "envoy is {len} bytes, want the 4 MB padding plus its script"
        );
        assert!(self.bundle_written(), "bundle files missing after success");
    }

    /// Any bundle file installed.
    fn bundle_written(&self) -> bool {
        [
            "/etc/certs/root-cert.pem",
            "/var/lib/istio/envoy/cluster.env",
            "/var/run/secrets/tokens/istio-token",
        ]
        .iter()
        .any(|p| self.root.at(p).exists())
    }

    /// After a failed package step: nothing installed, no bundle file, no partial.
    #[track_caller]
    fn assert_nothing_done(&self) {
        assert_eq!(deb_installed(self.root.path()), None, "package installed");
        assert!(!self.bundle_written(), "a bundle file was written");
        self.assert_no_partials();
    }

    /// After a failed package step: nothing installed, no bundle file (partials not
    /// checked: see [`transient_failures_leave_no_partial`]).
    #[track_caller]
    fn assert_nothing_installed(&self) {
        assert_eq!(deb_installed(self.root.path()), None, "package installed");
        assert!(!self.bundle_written(), "a bundle file was written");
    }

    /// The GETs of `path`.
    fn gets(&self, path: &str) -> Vec<common::server::Request> {
        self.srv
            .requests_for(path)
            .into_iter()
            .filter(|r| r.method == "GET")
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// The server itself.
// ---------------------------------------------------------------------------------

/// One raw HTTP/1.1 exchange; returns (status line + headers, body).
fn raw_get(srv: &Server, path: &str, extra: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    split_response(&all)
}

fn split_response(all: &[u8]) -> (String, Vec<u8>) {
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    (
        String::from_utf8_lossy(&all[..end]).into_owned(),
        all[end + 4..].to_vec(),
    )
}

#[test]
fn server_serves_ranges_scripts_and_logs() {
    let srv = Server::http();
    let body: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    srv.put("/f", body.clone());

    let (h, b) = raw_get(&srv, "/f", "");
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert!(h.contains("Content-Length: 100000"), "{h}");
    assert!(h.contains("Accept-Ranges: bytes"), "{h}");
    assert_eq!(b, body);

    let (h, b) = raw_get(&srv, "/f", "Range: bytes=99000-\r\n");
    assert!(h.starts_with("HTTP/1.1 206"), "{h}");
    assert!(h.contains("Content-Range: bytes 99000-99999/100000"), "{h}");
    assert_eq!(b, &body[99_000..]);

    let (h, _) = raw_get(&srv, "/f", "Range: bytes=100000-\r\n");
    assert!(h.starts_with("HTTP/1.1 416"), "{h}");

    let (h, _) = raw_get(&srv, "/missing", "");
    assert!(h.starts_with("HTTP/1.1 404"), "{h}");

    srv.script(
        "/f",
        [
            Fault::Status(503),
            Fault::RetryAfter(429, 7),
            Fault::DropAfter(1000),
            Fault::Redirect("/g".into()),
        ],
    );
    let (h, _) = raw_get(&srv, "/f", "");
    assert!(h.starts_with("HTTP/1.1 503"), "{h}");
    let (h, _) = raw_get(&srv, "/f", "");
    assert!(
        h.starts_with("HTTP/1.1 429") && h.contains("Retry-After: 7"),
        "{h}"
    );
    let (h, b) = raw_get(&srv, "/f", "");
    assert!(h.contains("Content-Length: 100000"), "{h}");
    assert_eq!(b, &body[..1000], "dropped after 1000 body bytes");
    let (h, _) = raw_get(&srv, "/f", "");
    assert!(
        h.starts_with("HTTP/1.1 302") && h.contains("Location: /g"),
        "{h}"
    );
    let (h, b) = raw_get(&srv, "/f", "");
    assert!(h.starts_with("HTTP/1.1 200"), "script used up: {h}");
    assert_eq!(b, body);

    srv.no_ranges("/f");
    let (h, b) = raw_get(&srv, "/f", "Range: bytes=5-\r\n");
    assert!(
        h.starts_with("HTTP/1.1 200") && !h.contains("Accept-Ranges"),
        "{h}"
    );
    assert_eq!(b, body);

    let log = srv.requests();
    assert_eq!(log.len(), 10);
    assert_eq!(log[1].range_start(), Some(99_000));
    assert_eq!(log[0].range, None);
    assert_eq!(log[3].path, "/missing");
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(srv.gets("/f"), 9);
}

#[test]
fn server_stall_keeps_the_connection_silent_and_drop_stops_it() {
    let srv = Server::http();
    srv.put("/s", vec![7u8; 10_000]);
    srv.always(
        "/s",
        Fault::Stall {
            after_bytes: 100,
            secs: 30,
        },
    );
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    write!(s, "GET /s HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let err = loop {
        match s.read(&mut buf) {
            Ok(0) => panic!("closed instead of stalling"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    let (_, body) = split_response(&got);
    assert_eq!(body.len(), 100);

    let addr = srv.addr();
    let t = Instant::now();
    drop(srv);
    // Against the 30 s stall: well below it, well above a loaded machine's slowness.
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "drop took {:?}",
        t.elapsed()
    );
    // The stalled connection is released and the port no longer accepts.
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn server_https_with_test_ca_for_ip_and_localhost() {
    let ca = TestCa::new();
    let srv = Server::https(&ca);
    srv.put("/x", "hello over tls");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    for name in ["127.0.0.1", "localhost"] {
        let sn = rustls::pki_types::ServerName::try_from(name).unwrap();
        let conn = rustls::ClientConnection::new(cfg.clone(), sn).unwrap();
        let tcp = TcpStream::connect(srv.addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        write!(s, "GET /x HTTP/1.1\r\nHost: {name}\r\n\r\n").unwrap();
        let mut all = Vec::new();
        // The server closes without close_notify: an UnexpectedEof after the body.
        let _ = s.read_to_end(&mut all);
        let (h, b) = split_response(&all);
        assert!(h.starts_with("HTTP/1.1 200"), "{name}: {h}");
        assert_eq!(b, b"hello over tls", "{name}");
    }
    assert!(srv.url("/x").starts_with("https://127.0.0.1:"));
}

// ---------------------------------------------------------------------------------
// vmagent against the server.
// ---------------------------------------------------------------------------------

/// Installs from the server with the published checksum; returns the case.
fn installed_case() -> Case {
    let c = case();
    c.serve();
    c.apply_pkg(&[]).ok();
    c.assert_installed_from_cache();
    c
}

#[test]
fn http_published_checksum_installs_and_keeps_the_verified_file() {
    let c = installed_case();
    assert_eq!(c.gets(PKG).len(), 1, "{:?}", c.srv.requests());
    assert_eq!(c.gets(SHA).len(), 1);
    assert_eq!(c.cache(), vec![format!("{}.deb", deb().sha)]);
}

#[test]
fn reapply_when_installed_does_not_download_the_package() {
    let c = installed_case();
    c.srv.clear_log();
    c.apply_pkg(&[]).ok();
    assert_eq!(c.gets(PKG).len(), 0, "{:?}", c.srv.requests());
    assert_eq!(deb_installed(c.root.path()).as_deref(), Some(VERSION));
    c.assert_no_partials();
}

/// A bare URL says nothing about its version: a re-apply asks for the small published
/// checksum (so a changed artifact at the same URL is noticed), never for the package.
/// With the checksum pinned, a re-apply makes no request at all.
#[test]
fn reapply_with_a_url_fetches_only_the_checksum_and_none_when_pinned() {
    let c = installed_case();
    c.srv.clear_log();
    c.apply_pkg(&[]).ok();
    assert_eq!(c.gets(PKG).len(), 0, "{:?}", c.srv.requests());
    assert_eq!(c.gets(SHA).len(), 1, "{:?}", c.srv.requests());
    c.srv.clear_log();
    c.apply_pkg(&["--package-sha256", &deb().sha]).ok();
    assert!(c.srv.requests().is_empty(), "{:?}", c.srv.requests());
}

#[test]
fn removed_package_is_reinstalled_from_the_cache_without_a_get() {
    let c = installed_case();
    let st = Command::new("dpkg")
        .arg(format!("--root={}", c.root.path().display()))
        .args(["-r", "istio-sidecar"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(deb_installed(c.root.path()), None);
    c.srv.clear_log();
    c.apply_pkg(&["--package-sha256", &deb().sha]).ok();
    assert!(c.srv.requests().is_empty(), "{:?}", c.srv.requests());
    assert_eq!(deb_installed(c.root.path()).as_deref(), Some(VERSION));
    c.assert_no_partials();
}

#[test]
fn cached_file_is_used_and_reported_in_json() {
    let c = case();
    c.serve();
    fs::create_dir_all(c.cache_dir()).unwrap();
    fs::write(
        c.cache_dir().join(format!("{}.deb", deb().sha)),
        &deb().bytes,
    )
    .unwrap();
    let r = c.apply_pkg(&["--package-sha256", &deb().sha, "--output", "json"]);
    r.ok();
    assert!(c.srv.requests().is_empty(), "{:?}", c.srv.requests());
    c.assert_installed_from_cache();
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("json: {e}\n{}", r.show()));
    let p = &v["package"];
    assert_eq!(p["download"], "cached", "{p}");
    assert_eq!(p["checksum_source"], "flag", "{p}");
    assert_eq!(p["sha256"], deb().sha.as_str(), "{p}");
    assert_eq!(p["format"], "deb", "{p}");
    assert_eq!(p["arch"], deb_arch(), "{p}");
    assert_eq!(p["action"], "install", "{p}");
}

#[test]
fn corrupt_cached_file_is_not_trusted() {
    let c = case();
    c.serve();
    fs::create_dir_all(c.cache_dir()).unwrap();
    let cached = c.cache_dir().join(format!("{}.deb", deb().sha));
    fs::write(&cached, b"not the package").unwrap();
    c.apply_pkg(&["--package-sha256", &deb().sha]).ok();
    assert_eq!(c.gets(PKG).len(), 1);
    c.assert_installed_from_cache();
}

#[test]
fn dropped_connection_is_resumed_with_range() {
    let c = case();
    c.serve();
    c.srv.script(PKG, [Fault::DropAfter(MB)]);
    c.apply_pkg(&[]).ok();
    let gets = c.gets(PKG);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    let n = gets[1]
        .range_start()
        .unwrap_or_else(|| panic!("second GET without Range: {:?}", gets[1]));
    assert!(n > 0 && n <= MB as u64, "resumed at {n}");
    c.assert_installed_from_cache();
}

#[test]
fn resume_answered_with_full_body_starts_over() {
    let c = case();
    c.serve();
    // Ranges advertised, then the retry lands on a node that answers 200 + full body:
    // appending it to the partial file would corrupt the package.
    c.srv
        .script(PKG, [Fault::DropAfter(MB), Fault::IgnoreRange]);
    c.apply_pkg(&[]).ok();
    assert_eq!(c.gets(PKG).len(), 2, "{:?}", c.gets(PKG));
    c.assert_installed_from_cache();
}

#[test]
fn dropped_connection_without_range_support_downloads_again_from_zero() {
    let c = case();
    c.serve();
    c.srv.no_ranges(PKG);
    c.srv.script(PKG, [Fault::DropAfter(MB)]);
    c.apply_pkg(&[]).ok();
    assert_eq!(c.gets(PKG).len(), 2, "{:?}", c.gets(PKG));
    c.assert_installed_from_cache();
}

#[test]
fn service_unavailable_is_retried() {
    let c = case();
    c.serve();
    c.srv.script(PKG, [Fault::Status(503)]);
    c.apply_pkg(&[]).ok();
    assert_eq!(c.gets(PKG).len(), 2);
    c.assert_installed_from_cache();
}

#[test]
fn too_many_requests_waits_for_retry_after() {
    let c = case();
    c.serve();
    c.srv.script(PKG, [Fault::RetryAfter(429, 1)]);
    c.apply_pkg(&[]).ok();
    let gets = c.gets(PKG);
    assert_eq!(gets.len(), 2, "{gets:?}");
    let waited = gets[1].at - gets[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried {waited:?} after a 429 with Retry-After: 1"
    );
    c.assert_installed_from_cache();
}

#[test]
fn stall_past_idle_timeout_is_retried_and_resumed() {
    let c = case();
    c.serve();
    c.srv.script(
        PKG,
        [Fault::Stall {
            after_bytes: MB,
            secs: 60,
        }],
    );
    let r = c.apply_pkg(&[]);
    r.ok();
    let gets = c.gets(PKG);
    assert_eq!(gets.len(), 2, "{gets:?}");
    let n = gets[1].range_start().expect("resumed with Range");
    assert!(n > 0 && n <= MB as u64, "resumed at {n}");
    // The idle timeout (1 s) ended the attempt, not the server closing after 60 s (the
    // bound is far from both, so a loaded machine does not fail it).
    let retry_after = gets[1].at - gets[0].at;
    assert!(
        retry_after < Duration::from_secs(30),
        "retry {retry_after:?} after the stall began"
    );
    c.assert_installed_from_cache();
}

#[test]
fn slow_but_steady_transfer_is_not_an_idle_timeout() {
    let c = case();
    c.serve();
    // 40 pieces 100 ms apart: 4 s in all, never 1 s (idle_timeout_secs) without a byte.
    // (Not 8 pieces 500 ms apart: a loaded machine can hold the server's thread off the
    // CPU for half a second, and then the gap was an idle timeout.)
    c.srv.script(
        PKG,
        [Fault::Trickle {
            chunk: 16 * 1024,
            interval_ms: 100,
            slow_bytes: 640 * 1024,
        }],
    );
    c.apply_pkg(&[]).ok();
    assert_eq!(c.gets(PKG).len(), 1, "{:?}", c.gets(PKG));
    c.assert_installed_from_cache();
}

#[test]
fn always_stalling_server_fails_with_exit_5_in_bounded_time() {
    let c = case();
    c.serve();
    c.srv.always(
        PKG,
        Fault::Stall {
            after_bytes: 64 * 1024,
            secs: 60,
        },
    );
    let r = c.apply_pkg(&[]);
    r.code(5);
    // attempts * (idle + backoff) = 4 * (1 s + <= 0.4 s), against the 60 s stall: the
    // bound sits between them with room for a loaded machine.
    assert!(r.took < Duration::from_secs(40), "{}", r.show());
    assert_eq!(c.gets(PKG).len(), 4, "attempts = 4: {:?}", c.gets(PKG));
    c.assert_nothing_installed();
}

/// After retries are exhausted, an empty partial file is removed; one holding received
/// bytes is kept on purpose and the next run resumes from it.
#[test]
fn transient_failures_keep_only_a_resumable_partial() {
    for fault in [Some(Fault::Status(500)), None] {
        let c = case();
        c.serve();
        let url = match fault {
            Some(f) => {
                c.srv.always(PKG, f);
                c.srv.url(PKG)
            }
            None => Server::http().url(PKG), // dropped at once: connection refused
        };
        c.apply(&["--package", &url, "--package-sha256", &deb().sha])
            .code(5);
        c.assert_nothing_done();
    }
    let c = case();
    c.serve();
    c.srv.script(
        PKG,
        (0..4).map(|_| Fault::Stall {
            after_bytes: 64 * 1024,
            secs: 60,
        }),
    );
    c.apply_pkg(&["--package-sha256", &deb().sha]).code(5);
    c.assert_nothing_installed();
    let partial = c.cache_dir().join(format!(".partial-{}", deb().sha));
    let kept = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0, "no resumable partial kept");
    c.srv.clear_log();
    c.apply_pkg(&["--package-sha256", &deb().sha]).ok();
    let gets = c.gets(PKG);
    assert_eq!(gets[0].range_start(), Some(kept), "{gets:?}");
    c.assert_installed_from_cache();
}

#[test]
fn run_after_a_failed_download_succeeds_with_the_right_bytes() {
    let c = case();
    c.serve();
    c.srv.script(
        PKG,
        (0..4).map(|_| Fault::Stall {
            after_bytes: 256 * 1024,
            secs: 60,
        }),
    );
    c.apply_pkg(&[]).code(5);
    c.srv.clear_log();
    c.apply_pkg(&[]).ok();
    let gets = c.gets(PKG);
    assert!(!gets.is_empty() && gets.len() <= 2, "{gets:?}");
    c.assert_installed_from_cache();
}

#[test]
fn stale_partial_with_wrong_bytes_does_not_break_the_download() {
    let c = case();
    c.serve();
    fs::create_dir_all(c.cache_dir()).unwrap();
    // As if an earlier run had been killed, over content that is not the package's.
    fs::write(
        c.cache_dir().join(format!(".partial-{}", deb().sha)),
        vec![0x5a; MB],
    )
    .unwrap();
    let r = c.apply_pkg(&[]);
    assert_eq!(r.code, Some(0), "{}\nGETs: {:?}", r.show(), c.gets(PKG));
    c.assert_installed_from_cache();
}

#[test]
fn always_stalling_server_error_names_the_timeout() {
    let c = case();
    c.serve();
    c.srv.always(
        PKG,
        Fault::Stall {
            after_bytes: 64 * 1024,
            secs: 60,
        },
    );
    c.apply_pkg(&[]).code(5).says_any(&["timed out", "timeout"]);
}

#[test]
fn server_error_forever_gives_up_after_the_configured_attempts() {
    let c = case();
    c.serve();
    c.srv.always(PKG, Fault::Status(500));
    let r = c.apply_pkg(&[]);
    r.code(5).says("500");
    // Bounded, not "fast": 30 s leaves room for a loaded machine.
    assert!(r.took < Duration::from_secs(30), "{}", r.show());
    assert_eq!(c.gets(PKG).len(), 4, "attempts = 4");
    c.assert_nothing_installed();
}

#[test]
fn connection_refused_exit_5_in_bounded_time() {
    let c = case();
    // A port a server just gave up on 127.0.0.1 may be handed to a test running in
    // parallel; on 127.0.0.2 (loopback too) no test server ever listens, so it is refused.
    let port = {
        let gone = Server::http();
        gone.port()
    };
    let url = format!("http://127.0.0.2:{port}{PKG}");
    let r = c.apply(&["--package", &url, "--package-sha256", &deb().sha]);
    r.code(5);
    // Bounded, not "fast": 30 s leaves room for a loaded machine.
    assert!(r.took < Duration::from_secs(30), "{}", r.show());
    c.assert_nothing_installed();
}

#[test]
fn dry_run_never_downloads_the_package() {
    let c = case();
    c.serve();
    let before = c.root.snapshot();
    let r = c.apply_pkg(&["--dry-run"]);
    r.ok().says("install-package").says("download needed");
    assert_eq!(c.gets(PKG).len(), 0, "{:?}", c.srv.requests());
    common::assert_same(&before, &c.root.snapshot(), "dry run");
}

#[test]
fn http_proxy_is_used_and_no_proxy_bypasses_it() {
    let c = case();
    let proxy = Server::http();
    // A forward proxy sees the absolute URL as the request target.
    let far = "http://mirror.example.invalid/pool/istio-sidecar.deb";
    proxy.put(far, deb().bytes.clone());
    let proxy_url = proxy.url("");
    let r = c.apply_env(
        &["--package", far, "--package-sha256", &deb().sha],
        &[("HTTP_PROXY", &proxy_url), ("http_proxy", &proxy_url)],
    );
    r.ok();
    assert_eq!(proxy.gets(far), 1, "{:?}", proxy.requests());
    c.assert_installed_from_cache();

    // NO_PROXY=127.0.0.1: straight to the server, the proxy sees nothing.
    let c = case();
    c.serve();
    proxy.clear_log();
    let url = c.srv.url(PKG);
    c.apply_env(
        &["--package", &url],
        &[
            ("HTTP_PROXY", &proxy_url),
            ("http_proxy", &proxy_url),
            ("NO_PROXY", "127.0.0.1"),
            ("no_proxy", "127.0.0.1"),
        ],
    )
    .ok();
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    assert_eq!(c.gets(PKG).len(), 1);
    c.assert_installed_from_cache();
}

#[test]
fn not_found_is_not_retried() {
    let c = case();
    c.serve();
    c.srv.remove(PKG);
    let r = c.apply_pkg(&[]);
    r.code(5).says("404").says("not retried");
    assert_eq!(c.gets(PKG).len(), 1, "{:?}", c.srv.requests());
    c.assert_nothing_done();
    assert!(c.cache().is_empty(), "cache: {:?}", c.cache());
}

#[test]
fn published_checksum_mismatch_exit_5_and_nothing_kept() {
    let c = case();
    c.serve();
    let wrong = hex(b"some other package");
    c.srv.put(SHA, sha_file(&wrong));
    let r = c.apply_pkg(&[]);
    r.code(5)
        .says("sha256")
        .says("mismatch")
        .says(&wrong)
        .says(&deb().sha);
    c.assert_nothing_done();
    assert!(c.cache().is_empty(), "cache: {:?}", c.cache());
}

#[test]
fn flag_checksum_mismatch_exit_5_and_nothing_kept() {
    let c = case();
    c.serve();
    let wrong = hex(b"some other package");
    let r = c.apply_pkg(&["--package-sha256", &wrong]);
    r.code(5)
        .says("sha256")
        .says("mismatch")
        .says(&wrong)
        .says(&deb().sha);
    // The flag wins: the published checksum is not even fetched.
    assert_eq!(c.gets(SHA).len(), 0, "{:?}", c.srv.requests());
    c.assert_nothing_done();
    assert!(c.cache().is_empty(), "cache: {:?}", c.cache());
}

#[test]
fn no_checksum_available_exit_4_without_downloading() {
    let c = case();
    c.srv.put(PKG, deb().bytes.clone());
    let r = c.apply_pkg(&[]);
    r.code(4).says("--package-sha256");
    assert_eq!(c.gets(PKG).len(), 0, "{:?}", c.srv.requests());
    c.assert_nothing_done();
}

#[test]
fn config_sha256_pin_is_used_for_package_url() {
    let c = case();
    c.serve();
    c.srv.remove(SHA);
    c.config(&format!("[package]\nsha256 = \"{}\"\n", deb().sha));
    c.apply_pkg(&[]).ok();
    assert_eq!(c.gets(SHA).len(), 0);
    c.assert_installed_from_cache();
}

#[test]
fn published_checksum_fetch_is_retried_on_503() {
    let c = case();
    c.serve();
    c.srv.script(SHA, [Fault::Status(503)]);
    c.apply_pkg(&[]).ok();
    assert_eq!(c.gets(SHA).len(), 2);
    c.assert_installed_from_cache();
}

#[test]
fn redirect_is_followed() {
    let c = case();
    c.serve();
    c.srv.remove(PKG);
    c.srv.put("/real/istio-sidecar.deb", deb().bytes.clone());
    c.srv
        .always(PKG, Fault::Redirect("/real/istio-sidecar.deb".into()));
    c.apply_pkg(&[]).ok();
    assert_eq!(c.gets("/real/istio-sidecar.deb").len(), 1);
    c.assert_installed_from_cache();
}

#[test]
fn https_with_test_ca_from_ca_file() {
    let ca = TestCa::new();
    let c = case_with(Server::https(&ca));
    c.serve();
    let pem = ca.write_pem(c.work.path());
    c.apply_pkg(&["--ca-file", pem.to_str().unwrap()]).ok();
    assert_eq!(c.gets(SHA).len(), 1);
    assert_eq!(c.gets(PKG).len(), 1);
    c.assert_installed_from_cache();
}

#[test]
fn https_with_test_ca_from_config_inside_root_and_localhost() {
    let ca = TestCa::new();
    let c = case_with(Server::https(&ca));
    c.serve();
    ca.write_pem(&c.root.at("/etc/vmagent"));
    c.config("[package]\nca_file = \"/etc/vmagent/test-ca.pem\"\n");
    let url = c.srv.url_localhost(PKG);
    c.apply(&["--package", &url]).ok();
    assert_eq!(c.gets(PKG).len(), 1);
    c.assert_installed_from_cache();
}

#[test]
fn https_without_the_ca_fails_with_exit_5_quickly() {
    let ca = TestCa::new();
    let c = case_with(Server::https(&ca));
    c.serve();
    let r = c.apply_pkg(&["--package-sha256", &deb().sha]);
    r.code(5).says_any(&["certificate", "tls", "issuer", "ssl"]);
    // Bounded, not "fast": 30 s leaves room for a loaded machine.
    assert!(r.took < Duration::from_secs(30), "{}", r.show());
    // The handshake failed: no request ever reached the HTTP layer.
    assert!(c.srv.requests().is_empty(), "{:?}", c.srv.requests());
    c.assert_nothing_done();
}

/// The default URL's shape, with `{arch_suffix}` as the contract defines it.
fn release_path(version: &str) -> String {
    let suffix = if deb_arch() == "arm64" { "-arm64" } else { "" };
    format!("/releases/{version}/deb/istio-sidecar{suffix}.deb")
}

fn template(c: &Case) -> String {
    format!(
        "url = \"http://127.0.0.1:{}/releases/{{version}}/{{format}}/istio-sidecar{{arch_suffix}}.{{format}}\"\n",
        c.srv.port()
    )
}

fn serve_release(c: &Case) -> String {
    let p = release_path(VERSION);
    c.srv.put(&p, deb().bytes.clone());
    c.srv.put(&format!("{p}.sha256"), sha_file(&deb().sha));
    p
}

#[test]
fn config_template_with_config_version() {
    let c = case();
    let p = serve_release(&c);
    c.config(&format!(
        "[package]\nversion = \"{VERSION}\"\n{}",
        template(&c)
    ));
    c.apply(&[]).ok();
    assert_eq!(c.gets(&p).len(), 1, "{:?}", c.srv.requests());
    assert_eq!(c.gets(&format!("{p}.sha256")).len(), 1);
    c.assert_installed_from_cache();
}

#[test]
fn config_template_with_istio_version_flag() {
    let c = case();
    let p = serve_release(&c);
    c.config(&format!("[package]\n{}", template(&c)));
    c.apply(&["--istio-version", VERSION]).ok();
    assert_eq!(c.gets(&p).len(), 1, "{:?}", c.srv.requests());
    c.assert_installed_from_cache();
}

#[test]
fn config_template_with_config_sha256_pin() {
    let c = case();
    let p = release_path(VERSION);
    c.srv.put(&p, deb().bytes.clone());
    c.config(&format!(
        "[package]\nversion = \"{VERSION}\"\nsha256 = \"{}\"\n{}",
        deb().sha,
        template(&c)
    ));
    c.apply(&[]).ok();
    assert_eq!(c.gets(&p).len(), 1, "{:?}", c.srv.requests());
    assert_eq!(c.gets(&format!("{p}.sha256")).len(), 0);
    c.assert_installed_from_cache();
}

#[test]
fn config_template_wrong_pin_exit_5() {
    let c = case();
    let p = serve_release(&c);
    let wrong = hex(b"pinned something else");
    c.config(&format!(
        "[package]\nversion = \"{VERSION}\"\nsha256 = \"{wrong}\"\n{}",
        template(&c)
    ));
    c.apply(&[])
        .code(5)
        .says("mismatch")
        .says(&wrong)
        .says(&deb().sha);
    assert_eq!(c.gets(&p).len(), 1);
    c.assert_nothing_done();
    assert!(c.cache().is_empty(), "cache: {:?}", c.cache());
}

#[test]
fn config_template_reapply_with_version_installed_makes_no_request() {
    let c = case();
    let p = serve_release(&c);
    c.config(&format!(
        "[package]\nversion = \"{VERSION}\"\n{}",
        template(&c)
    ));
    c.apply(&[]).ok();
    c.assert_installed_from_cache();
    assert_eq!(c.gets(&p).len(), 1);
    c.srv.clear_log();
    c.apply(&[]).ok();
    assert!(c.srv.requests().is_empty(), "{:?}", c.srv.requests());
}

#[test]
fn no_source_at_all_exit_4() {
    let c = case();
    let r = c.apply(&[]);
    r.code(4).says("--package").says("--istio-version");
    c.assert_nothing_done();
}

// ---------------------------------------------------------------------------------
// The one HTTP layer's policies, seen through the package download
// ---------------------------------------------------------------------------------

/// An https mirror redirecting to plain http is refused (the package would travel in
/// clear text): exit 5 naming both URLs, and the http server never sees a request.
#[test]
fn https_redirect_to_http_is_refused() {
    let ca = TestCa::new();
    let c = case_with(Server::https(&ca));
    c.serve();
    let plain = Server::http();
    plain.put("/plain/istio-sidecar.deb", deb().bytes.clone());
    let to = plain.url("/plain/istio-sidecar.deb");
    c.srv.always(PKG, Fault::Redirect(to.clone()));
    let pem = ca.write_pem(c.work.path());
    let r = c.apply_pkg(&[
        "--ca-file",
        pem.to_str().unwrap(),
        "--package-sha256",
        &deb().sha,
    ]);
    r.code(5).says("refused").says(&to).says(&c.srv.url(PKG));
    assert!(plain.requests().is_empty(), "{:?}", plain.requests());
    c.assert_nothing_installed();
}

/// A body that never stops trickling (a byte every 2 s, never idle long enough for the
/// idle timeout) fails at the total deadline instead of holding the apply forever.
#[test]
fn trickling_body_fails_at_the_total_deadline() {
    let c = case();
    c.serve();
    fs::write(
        c.root.at("/etc/vmagent/config.toml"),
        "[download]\nconnect_timeout_secs = 2\nidle_timeout_secs = 10\nattempts = 1\nbackoff_ms = 50\ndeadline_secs = 3\n",
    )
    .unwrap();
    c.srv.always(
        PKG,
        Fault::Trickle {
            chunk: 1,
            interval_ms: 2000,
            slow_bytes: usize::MAX,
        },
    );
    let r = c.apply_pkg(&["--package-sha256", &deb().sha]);
    r.code(5).says("deadline");
    // Generous: the deadline is 3 s; the trickle alone would take weeks.
    assert!(r.took < Duration::from_secs(50), "{}", r.show());
    c.assert_nothing_installed();
}
