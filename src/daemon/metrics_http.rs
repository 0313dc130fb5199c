//! `[metrics] listen`: `/metrics` served from a task on the daemon's runtime, answering
//! with the newest rendering (a watch channel the daemon fills after every publish).
//!
//! A deliberately small HTTP/1.1 responder rather than a server framework: one request
//! per connection (`Connection: close`), GET or HEAD of `/metrics` only, the request
//! head bounded in size and time, a bounded number of connections at once. That is all
//! a Prometheus scrape needs, and all a root daemon should parse.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::metrics::CONTENT_TYPE;

/// Longest request head read (a scrape's is a few hundred bytes).
const HEAD_LIMIT: usize = 8 * 1024;

/// A client must send its request head, and take the response, within this.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more wait in the kernel's backlog.
const CONNECTIONS: usize = 16;

/// The running `/metrics` server. Dropping it stops it (the port is closed).
pub(super) struct Server {
    tx: watch::Sender<Arc<str>>,
    task: tokio::task::JoinHandle<()>,
    /// The bound address (port 0 resolved).
    pub(super) addr: SocketAddr,
}

impl Server {
    /// Binds `addr` and starts serving `body`; must be called on the runtime.
    pub(super) fn start(addr: SocketAddr, body: String) -> std::io::Result<Server> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(Arc::from(body));
        let task = tokio::spawn(serve(listener, rx));
        Ok(Server { tx, task, addr })
    }

    /// Serves `body` from now on.
    pub(super) fn update(&self, body: &str) {
        self.tx.send_replace(Arc::from(body));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, rx: watch::Receiver<Arc<str>>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let body = rx.borrow().clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(TIMEOUT, answer(stream, &body)).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and the like: logged, and a pause so that it does not spin.
                tracing::warn!(error = %e, "metrics: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head and writes the response.
async fn answer(mut stream: TcpStream, body: &str) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() <= HEAD_LIMIT {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    stream.write_all(&respond(&head, body)).await?;
    stream.shutdown().await
}

/// The response to a request head (pure): 200 with `body` for GET (headers only for
/// HEAD) of `/metrics`, 404 for another path, 405 for another method, 400 for what is
/// not an HTTP request, 431 for a head over the limit.
pub(super) fn respond(head: &[u8], body: &str) -> Vec<u8> {
    let (status, content_type, text, head_only) = match parse(head) {
        Err(status) => (
            status,
            "text/plain; charset=utf-8",
            status_text(status),
            false,
        ),
        Ok((method, path)) => {
            let path = path.split('?').next().unwrap_or("");
            match (method, path) {
                ("GET" | "HEAD", "/metrics") => (200, CONTENT_TYPE, body, method == "HEAD"),
                ("GET" | "HEAD", _) => (
                    404,
                    "text/plain; charset=utf-8",
                    "not found: the metrics are at /metrics\n",
                    method == "HEAD",
                ),
                _ => (
                    405,
                    "text/plain; charset=utf-8",
                    "method not allowed: use GET\n",
                    false,
                ),
            }
        }
    };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        status_text(status).trim_end(),
        text.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// Method and target of a request head, or the status to refuse it with.
fn parse(head: &[u8]) -> Result<(&str, &str), u16> {
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(if head.len() > HEAD_LIMIT { 431 } else { 400 });
    };
    if end > HEAD_LIMIT {
        return Err(431);
    }
    let line = head[..end].split(|&b| b == b'\r').next().unwrap_or(&[]);
    let line = std::str::from_utf8(line).map_err(|_| 400u16)?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), Some(v), None)
            if !m.is_empty() && p.starts_with('/') && v.starts_with("HTTP/1.") =>
        {
            Ok((m, p))
        }
        _ => Err(400),
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK\n",
        404 => "Not Found\n",
        405 => "Method Not Allowed\n",
        431 => "Request Header Fields Too Large\n",
        _ => "Bad Request\n",
    }
}

#[cfg(test)]
mod tests {
    use super::respond;

    fn text(head: &str) -> String {
        String::from_utf8(respond(head.as_bytes(), "vmagent_proxy_ready 1\n")).unwrap()
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let ok = text("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(ok.contains("Content-Length: 22\r\n"));
        assert!(ok.ends_with("\r\n\r\nvmagent_proxy_ready 1\n"));
        assert!(text("GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200 "));
        let head = text("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.contains("Content-Length: 22\r\n") && head.ends_with("\r\n\r\n"));
        assert!(text("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let post = text("POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD\r\n"));
        assert!(text("hello\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(text("GET /metrics HTTP/1.1\r\n").starts_with("HTTP/1.1 400 "));
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(text(&big).starts_with("HTTP/1.1 431 "));
    }
}
