//! A report URL receiver for the daemon tests: a tiny HTTP/1.1 server on 127.0.0.1
//! recording every request (with its body), answering a fixed status.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Posted {
    /// The request method.
    pub method: String,
    /// The request target.
    pub path: String,
    /// Its Content-Type.
    pub content_type: String,
    /// Its body.
    pub body: Vec<u8>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 recording requests (with bodies); stops when
/// dropped.
pub struct ReportServer {
    /// The port it listens on.
    pub port: u16,
    log: Arc<Mutex<Vec<Posted>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReportServer {
    /// A server answering every request 200.
    pub fn start() -> ReportServer {
        ReportServer::answering("200 OK")
    }

    /// A server answering every request with `status` (e.g. `"503 Service Unavailable"`).
    pub fn answering(status: &'static str) -> ReportServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, stop) = (log.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            if let Some(p) = read_request(s, status) {
                                log.lock().unwrap().push(p);
                            }
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        ReportServer {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/report", self.port)
    }

    /// Every request body so far.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.posted().into_iter().map(|p| p.body).collect()
    }

    /// Every request so far.
    pub fn posted(&self) -> Vec<Posted> {
        self.log.lock().unwrap().clone()
    }

    /// The bodies from index `from` on, each parsed as JSON (a body that is not JSON
    /// fails the test).
    #[track_caller]
    pub fn docs_from(&self, from: usize) -> Vec<serde_json::Value> {
        self.posted()
            .iter()
            .skip(from)
            .map(|p| {
                serde_json::from_slice(&p.body).unwrap_or_else(|e| {
                    panic!(
                        "report body is not JSON ({e}): {}",
                        String::from_utf8_lossy(&p.body)
                    )
                })
            })
            .collect()
    }
}

impl Drop for ReportServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (head and Content-Length body) and answers `status`.
fn read_request(mut s: TcpStream, status: &str) -> Option<Posted> {
    s.set_nonblocking(false).ok()?;
    // A hang guard only: vmagent sends at once, but a loaded machine can stall it for
    // seconds, and a report dropped here fails the test that waits for it.
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let mut len = 0usize;
    let mut content_type = String::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().ok()?,
                "content-type" => content_type = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    let _ = s.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let _ = s.flush();
    Some(Posted {
        method,
        path,
        content_type,
        body,
    })
}
