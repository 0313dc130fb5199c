//! [`ReadyServer`]: the readiness endpoint on 127.0.0.1 the tests point `[health]
//! ready_url` at (200 while the stand-in's ready file exists, else 503), or a
//! fixed-status server. Moved out of fake_systemd.rs, which re-exports it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

type Answer = Box<dyn Fn(&str) -> u16 + Send + Sync>;

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers every request with a status chosen
/// per request line, `Connection: close`. Counts requests. Stops when dropped.
pub struct ReadyServer {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReadyServer {
    /// The readiness endpoint of the stand-in proxy in `root`: `GET /healthz/ready`
    /// answers 200 while ROOT/run/istio-fixture/ready exists, else 503; other paths 404.
    pub fn for_root(root: &Path) -> ReadyServer {
        let ready = root.join(super::packages::READY_FILE.trim_start_matches('/'));
        ReadyServer::start(Box::new(move |target| {
            if target != "/healthz/ready" {
                404
            } else if ready.exists() {
                200
            } else {
                503
            }
        }))
    }

    /// Answers `code` to everything.
    pub fn fixed(code: u16) -> ReadyServer {
        ReadyServer::start(Box::new(move |_| code))
    }

    fn start(answer: Answer) -> ReadyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (hits, stop) = (hits.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            hits.fetch_add(1, Ordering::Relaxed);
                            serve(s, &answer);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        ReadyServer {
            port,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/healthz/ready`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/healthz/ready", self.port)
    }

    /// Connections accepted so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for ReadyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head and answers it.
fn serve(mut s: TcpStream, answer: &Answer) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(2);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    // `GET /path HTTP/1.1`, or through a proxy `GET http://host:port/path HTTP/1.1`.
    let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let code = answer(&target);
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let body = format!("{code} {reason}\n");
    let _ = write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}
