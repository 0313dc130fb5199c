//! An HTTPS report receiver on 127.0.0.1 that requires a client certificate (mutual TLS)
//! from its own test CA, and records each request's Authorization header and body.
//! rcgen makes the CA, the server certificate (127.0.0.1) and a client certificate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The Authorization header, if any.
    pub authorization: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// PEM files for the client side: the CA that signed the server, a client certificate
/// and its key.
pub struct ClientFiles {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The receiver; stops when dropped.
pub struct MtlsReceiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    /// Handshakes refused (no or a wrong client certificate).
    pub refused: Arc<Mutex<usize>>,
}

fn leaf(
    name: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(sans).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("cert");
    (cert, key)
}

impl MtlsReceiver {
    /// Starts it; the files a client needs to talk to it.
    pub fn start() -> (MtlsReceiver, ClientFiles) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "report test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca, ca_key);
        let (srv, srv_key) = leaf(
            "report receiver",
            vec!["127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        );
        let (cli, cli_key) = leaf("vm-1", vec![], ExtendedKeyUsagePurpose::ClientAuth, &issuer);

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(srv_key.serialize_der().into());
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_client_cert_verifier(verifier)
                .with_single_cert(vec![srv.der().clone()], key)
                .expect("server config"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, r, st) = (got.clone(), refused.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let (g, r, cfg) = (g.clone(), r.clone(), cfg.clone());
                std::thread::spawn(move || match serve(tcp, cfg) {
                    Ok(rec) => g.lock().unwrap().push(rec),
                    Err(_) => *r.lock().unwrap() += 1,
                });
            }
        });
        let files = ClientFiles {
            ca_pem: ca_cert.pem(),
            cert_pem: cli.pem(),
            key_pem: cli_key.serialize_pem(),
        };
        (
            MtlsReceiver {
                addr,
                got,
                stop,
                refused,
            },
            files,
        )
    }

    /// `https://127.0.0.1:PORT/report`.
    pub fn url(&self) -> String {
        format!("https://{}/report", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for MtlsReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(tcp: TcpStream, cfg: Arc<rustls::ServerConfig>) -> std::io::Result<Received> {
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let conn = rustls::ServerConnection::new(cfg).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut r = BufReader::new(&mut tls);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let (mut len, mut auth) = (0usize, None);
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    drop(r);
    tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
    tls.flush()?;
    Ok(Received {
        authorization: auth,
        body,
    })
}

/// Writes `data` to `path` with `mode`.
pub fn write(path: &Path, data: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
