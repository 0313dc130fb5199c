//! A target root for the token provider tests: the example bundle applied with a token
//! that is valid but past its refresh point, `[token]` config written root-only, the
//! kubernetes provider pointed at a [`TokenServer`], `vmagent token refresh` and `vmagent
//! daemon` run on it, and checks that no secret leaks.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;

use super::fake_systemd::FakeSystemd;
use super::output::{show, stderr, stdout};
use super::server::TestCa;
use super::token_server::{now, token, TokenServer};
use super::wait::PATIENCE;
use super::{inroot, vmagent, Spec, TestRoot};

/// The installed token.
pub const TOKEN: &str = "/var/run/secrets/tokens/istio-token";
/// The example bundle's workload identity.
pub const SUB: &str = "system:serviceaccount:vm-ns:vm-sa";
/// The credential the [`TokenServer`] accepts.
pub const CREDENTIAL: &str = "k8s-credential-s3cr3t-value";

/// A root where the example bundle (with a token expiring in 20 minutes) was applied.
pub fn applied_root() -> (TestRoot, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let r = TestRoot::new();
    let t0 = now();
    let b = Spec::example()
        .set("istio-token", token(SUB, t0 - 2400, t0 + 1200, "bundle"))
        .write_tar(work.path());
    r.apply(&b, &[]).success();
    (r, work)
}

/// Writes `data` at system path `sys` with `mode` (parents made).
pub fn put(r: &TestRoot, sys: &str, data: &[u8], mode: u32) -> PathBuf {
    let p = r.at(sys);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

pub fn config(r: &TestRoot, token_section: &str) {
    put(
        r,
        "/etc/vmagent/config.toml",
        format!("[token]\n{token_section}").as_bytes(),
        0o600,
    );
}

pub fn kube(r: &TestRoot, ca: &TestCa, srv: &TokenServer) {
    put(r, "/etc/vmagent/k8s-ca.pem", ca.pem.as_bytes(), 0o644);
    put(
        r,
        "/etc/vmagent/k8s-credential",
        CREDENTIAL.as_bytes(),
        0o600,
    );
    config(
        r,
        &format!(
            "provider = \"kubernetes\"\nserver = \"{}\"\nca_file = \"/etc/vmagent/k8s-ca.pem\"\ncredential_file = \"/etc/vmagent/k8s-credential\"\nduration_secs = 1800\n",
            srv.url()
        ),
    );
}

pub fn refresh(r: &TestRoot) -> Output {
    vmagent()
        .args(["token", "refresh", "--root"])
        .arg(r.path())
        .output()
        .unwrap()
}

pub fn installed(r: &TestRoot) -> Vec<u8> {
    fs::read(inroot(r.path(), TOKEN, true)).unwrap()
}

/// Nothing secret in the output or the status file.
#[track_caller]
pub fn no_secrets(r: &TestRoot, o: &Output, secrets: &[String]) {
    let status = fs::read_to_string(r.at("/run/vmagent/status.json")).unwrap_or_default();
    for s in secrets {
        for (what, text) in [
            ("stdout", stdout(o)),
            ("stderr", stderr(o)),
            ("status", status.clone()),
        ] {
            assert!(
                !text.contains(s.as_str()),
                "{what} holds a secret: {}",
                show(o)
            );
        }
    }
}

pub fn secrets_of(tokens: &[String]) -> Vec<String> {
    let mut v = vec![CREDENTIAL.to_string()];
    for t in tokens {
        v.extend(t.split('.').skip(1).map(str::to_string));
    }
    v
}

/// `vmagent daemon -v --root R` with a fake systemd (kept alive with it), stderr to
/// `dir/daemon.log`; killed when dropped.
pub struct Daemon {
    child: std::process::Child,
    _fake: FakeSystemd,
}

impl Daemon {
    pub fn start(r: &TestRoot, dir: &std::path::Path) -> Daemon {
        let fake = FakeSystemd::new(r.path());
        let log = fs::File::create(dir.join("daemon.log")).unwrap();
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vmagent"));
        c.args(["daemon", "-v", "--root"])
            .arg(r.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        fake.configure(&mut c);
        Daemon {
            child: c.spawn().unwrap(),
            _fake: fake,
        }
    }
}

impl Daemon {
    /// Sends SIGHUP (reload the config).
    pub fn hup(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the server issued a token and it is installed; the token.
pub fn wait_until_issued(srv: &TokenServer, r: &TestRoot) -> String {
    super::wait::wait_until("a token from the TokenRequest installed", PATIENCE, || {
        srv.issued()
            .last()
            .filter(|t| installed(r) == format!("{t}\n").into_bytes())
            .cloned()
    })
}
