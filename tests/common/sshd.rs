//! The real OpenSSH server (/usr/sbin/sshd, Debian's openssh-server: tests/setup.sh)
//! listening on a non-standard port, for the lock-out guard's tests, inside a private
//! network namespace so neither the host's own sshd nor other tests running at the same
//! time see it or are seen: the namespace is made with `unshare --net=FILE` (kept alive
//! by the bind mount on FILE), and sshd and vmagent are run in it with `nsenter`, which
//! execs the program (so the child's pid and comm are sshd's own).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::wait::{wait_for, PATIENCE};

/// A network namespace of its own; unmounted when dropped.
pub struct NetNs {
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl NetNs {
    /// A new, empty network namespace (needs root, as the suite runs).
    pub fn new() -> NetNs {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("net");
        fs::write(&file, "").expect("netns file");
        let o = Command::new("unshare")
            .arg(format!("--net={}", file.display()))
            .arg("true")
            .output()
            .expect("run unshare");
        assert!(
            o.status.success(),
            "unshare --net (the guard tests need a private network namespace; run as root): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        NetNs { file, _dir: dir }
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.file.display()))
            .arg(program.as_ref());
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.file).status();
    }
}

/// A running `/usr/sbin/sshd -D` on `port`; killed when dropped.
pub struct Sshd {
    child: Child,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The OpenSSH server binary.
pub const SSHD: &str = "/usr/sbin/sshd";

impl Sshd {
    /// Starts sshd in `ns` on `port` with a host key made by ssh-keygen and a minimal
    /// config; returns once the kernel lists its listening socket.
    pub fn start(ns: &NetNs, port: u16) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (tests/setup.sh)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("host_key");
        let o = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()
            .expect("run ssh-keygen");
        assert!(o.status.success(), "ssh-keygen: {o:?}");
        let config = dir.path().join("sshd_config");
        fs::write(&config, "PidFile none\nUsePAM no\nListenAddress 0.0.0.0\n").expect("config");
        // sshd refuses to start without its privilege separation directory (the package
        // makes it at boot through tmpfiles.d).
        fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let log = fs::File::create(dir.path().join("log")).expect("log");
        let child = ns
            .command(SSHD)
            .args(["-D", "-e", "-p", &port.to_string(), "-f"])
            .arg(&config)
            .arg("-h")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        let mut s = Sshd { child, port, dir };
        let pid = s.child.id();
        wait_for(&format!("sshd listening on port {port}"), PATIENCE, || {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("sshd exited ({st}): {}", s.log());
            }
            listening(pid, port)
        });
        s
    }

    /// What sshd wrote.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid`'s network namespace has a TCP socket listening on `port`
/// (`/proc/PID/net/tcp{,6}`: local address `HEX:PORT`, state 0A).
fn listening(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["tcp", "tcp6"].iter().any(|t| {
        fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
            })
    })
}
