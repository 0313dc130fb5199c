//! What the online preflight talks to: a mesh PKI (rcgen) issuing istiod-like serving
//! certificates (right or wrong names, expired), real rustls TLS servers on 127.0.0.x,
//! a "gateway" that accepts TCP and closes (an east-west gateway without istiod routed),
//! and network namespaces the test creates (lo only: no route; a veth pair to the host:
//! refused, and an nft drop rule for timeouts), deleted again on drop.
//!
//! istiod's own TLS on 15012 is a plain gRPC server certificate for
//! `istiod.istio-system.svc` signed by the mesh root (istio/istio
//! pilot/pkg/bootstrap/istio_ca.go and certcontroller.go): the servers here serve the
//! same shape; what speaks gRPC on top does not matter to the preflight.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// istiod's name in the example bundle.
pub const ISTIOD: &str = "istiod.istio-system.svc";

/// A mesh root CA.
pub struct MeshPki {
    /// Root certificate, PEM (a bundle's root-cert.pem).
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl MeshPki {
    /// A fresh root.
    pub fn new() -> MeshPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::OrganizationName, "cluster.local");
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = p.self_signed(&key).expect("ca cert");
        MeshPki {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// A serving configuration for `sans`; `expired`: valid only in 2020.
    pub fn server(&self, sans: &[&str], expired: bool) -> Arc<rustls::ServerConfig> {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut leaf = CertificateParams::new(names).expect("leaf params");
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
            leaf.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = leaf.signed_by(&key, &self.issuer).expect("leaf cert");
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der)
            .expect("server config");
        Arc::new(cfg)
    }
}

impl Default for MeshPki {
    fn default() -> Self {
        Self::new()
    }
}

/// How a test server answers a connection.
pub enum Mode {
    /// Complete a TLS handshake with this configuration, then close.
    Tls(Arc<rustls::ServerConfig>),
    /// Accept the TCP connection and close it at once (no TLS behind it).
    Close,
}

/// A server on `ip` with an ephemeral port, serving until the test process ends.
pub fn serve(ip: IpAddr, mode: Mode) -> SocketAddr {
    let l = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind test server");
    let addr = l.local_addr().expect("local addr");
    let mode = Arc::new(mode);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mode = mode.clone();
            std::thread::spawn(move || match &*mode {
                Mode::Close => drop(s),
                Mode::Tls(cfg) => {
                    let Ok(mut c) = rustls::ServerConnection::new(cfg.clone()) else {
                        return;
                    };
                    while c.is_handshaking() {
                        if c.complete_io(&mut s).is_err() {
                            return;
                        }
                    }
                    let _ = c.complete_io(&mut s);
                    // Hold the connection until the client closes it.
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf);
                    let _ = s.flush();
                }
            });
        }
    });
    addr
}

/// A loopback address of its own for each test (127.0.<pid>.<n>): servers of parallel
/// tests never share an address, and 15443 on it is certainly closed.
pub fn loopback() -> IpAddr {
    static N: AtomicU32 = AtomicU32::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed) % 250 + 2;
    let p = std::process::id() % 250 + 2;
    IpAddr::from([127, 0, p as u8, n as u8])
}

fn ip(args: &[&str]) -> Output {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A network namespace made by the test, deleted (with its veth pair) on drop.
pub struct Netns {
    /// Its name (unique per process and test).
    pub name: String,
    /// The host end's address of the veth pair, if linked.
    pub host_ip: Option<IpAddr>,
    /// The namespace end's address, if linked.
    pub ns_ip: Option<IpAddr>,
}

impl Netns {
    /// Creates a namespace with `lo` up; `link`: plus a veth pair to the host on a /30 of
    /// its own (10.<200+pid%50>.<4n>.0). `None` (with the reason printed) when network
    /// namespaces cannot be made here (not root, no `ip`).
    pub fn new(link: bool) -> Option<Netns> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("vmagent-pf-{pid}-{n}");
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!(
                    "SKIP: cannot create a network namespace: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                return None;
            }
            Err(e) => {
                eprintln!("SKIP: cannot run ip: {e}");
                return None;
            }
        }
        let mut ns = Netns {
            name,
            host_ip: None,
            ns_ip: None,
        };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        if link {
            let a = 200 + (pid % 50) as u8;
            let b = ((n * 4) % 256) as u8;
            let host_if = format!("vpf{pid:x}h{n}");
            let ns_if = format!("vpf{pid:x}n{n}");
            ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ]);
            ip(&["link", "set", &ns_if, "netns", &ns.name]);
            ip(&["addr", "add", &format!("10.{a}.{b}.1/30"), "dev", &host_if]);
            ip(&["link", "set", &host_if, "up"]);
            ns.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("10.{a}.{b}.2/30"),
                "dev",
                &ns_if,
            ]);
            ns.exec_ok(&["ip", "link", "set", &ns_if, "up"]);
            ns.host_ip = Some(IpAddr::from([10, a, b, 1]));
            ns.ns_ip = Some(IpAddr::from([10, a, b, 2]));
        }
        Some(ns)
    }

    /// `ip netns exec NAME args...`.
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs `args` in the namespace; panics when it fails.
    pub fn exec_ok(&self, args: &[&str]) -> Output {
        let o = self.exec(args).output().expect("ip netns exec");
        assert!(
            o.status.success(),
            "in {}: {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// The vmagent binary run in the namespace with `args`.
    pub fn vmagent(&self, args: &[&str]) -> Output {
        let bin = assert_cmd::cargo::cargo_bin("vmagent");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(&bin).args(args);
        c.output().expect("run vmagent in the namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end, and with it the host end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Writes `[preflight]` (and nothing else) as the root's config.
pub fn preflight_config(root: &Path, body: &str) {
    let dir = root.join("etc/vmagent");
    std::fs::create_dir_all(&dir).expect("config dir");
    std::fs::write(dir.join("config.toml"), format!("[preflight]\n{body}\n")).expect("config");
}
