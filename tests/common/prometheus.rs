//! Reading Prometheus metrics back the way Prometheus does: a tiny HTTP GET client, a
//! parser of the text exposition format (enough to compare series by value), `promtool
//! check metrics|rules` (Debian package prometheus) and a real
//! `prometheus-node-exporter` (Debian package of that name) with only its textfile
//! collector, on 127.0.0.1, killed on drop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::wait::{wait_until, PATIENCE};

/// A series: its name and its labels, sorted (node_exporter re-encodes them sorted).
pub type Series = (String, BTreeMap<String, String>);

/// `GET path` (or another `method`) on 127.0.0.1:`port`: status, head, body. HTTP/1.0,
/// so that the body is never chunked (node_exporter chunks large HTTP/1.1 answers).
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

/// The samples of an exposition whose name starts with `prefix`, by series. Values
/// are compared as numbers: node_exporter writes 1800000000 as 1.8e+09.
pub fn samples(text: &str, prefix: &str) -> BTreeMap<Series, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(prefix)) {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("labels end"))),
            None => (series, BTreeMap::new()),
        };
        out.insert((name.to_string(), labels), value.parse().expect("a number"));
    }
    out
}

/// `k="v",k2="v2"` (escapes kept as they are: both sides escape alike).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut end = 0;
        let b = after.as_bytes();
        while end < b.len() && b[end] != b'"' {
            end += if b[end] == b'\\' { 2 } else { 1 };
        }
        out.insert(
            k.trim_start_matches(',').to_string(),
            after[..end].to_string(),
        );
        rest = &after[(end + 1).min(after.len())..];
    }
    out
}

/// The value of the series `name` without labels.
pub fn value(text: &str, name: &str) -> Option<f64> {
    samples(text, name)
        .into_iter()
        .find(|((n, l), _)| n == name && l.is_empty())
        .map(|(_, v)| v)
}

/// `promtool check metrics` with `text` on stdin.
pub fn promtool_check_metrics(text: &str) -> Output {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tests/setup.sh installs it)");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

/// `promtool check rules FILE`.
pub fn promtool_check_rules(file: &Path) -> Output {
    Command::new("promtool")
        .args(["check", "rules"])
        .arg(file)
        .output()
        .expect("promtool (Debian package prometheus; tests/setup.sh installs it)")
}

/// A free port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real node_exporter with the textfile collector alone, reading `dir`.
pub struct NodeExporter {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl NodeExporter {
    /// Starts it and waits until it answers `/metrics`.
    pub fn start(dir: &Path, log: &Path) -> NodeExporter {
        let port = free_port();
        let child = Command::new("/usr/bin/prometheus-node-exporter")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("prometheus-node-exporter (Debian package; tests/setup.sh installs it)");
        let mut n = NodeExporter { child, port };
        wait_until("node_exporter answering /metrics", PATIENCE, || {
            if let Ok(Some(s)) = n.child.try_wait() {
                panic!(
                    "node_exporter exited ({s}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            http(port, "GET", "/metrics").ok().filter(|r| r.0 == 200)
        });
        n
    }

    /// The body of its `/metrics`.
    pub fn scrape(&self) -> String {
        let (status, _, body) = http(self.port, "GET", "/metrics").expect("node_exporter");
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
