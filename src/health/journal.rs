//! The istio unit's journal, followed beside istio.log: istio-start.sh runs `pilot-agent
//! istio-iptables` *before* it redirects output to istio.log
//! (tools/packaging/common/istio-start.sh), so iptables failures (and the script's own)
//! reach only the journal; so does the legacy (Istio 1.0) istio-auth-node-agent.service's
//! `CSR is approved successfully`. `journalctl -u istio.service -u
//! istio-auth-node-agent.service -o cat --follow --since=@T` is started through
//! [`crate::service::follow_journal`] (the service module runs every systemd tool); a
//! reader thread hands its lines over a bounded channel, so the
//! monitor's loop never blocks on it. Where journalctl cannot run (no systemd), there is
//! simply no journal: istio.log alone gives the reasons.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc::{self, Receiver, TryRecvError};

/// Longest journal line kept (bytes); the rest of a longer line is dropped.
pub const MAX_LINE: usize = 64 * 1024;

/// Lines buffered between the reader thread and the monitor; when full, the reader
/// waits (and journalctl with it): back-pressure, never unbounded memory.
const QUEUE: usize = 1024;

/// A running journal follower.
pub struct Journal {
    child: Child,
    lines: Receiver<Vec<u8>>,
    /// The reader thread is done (journalctl exited or its output closed).
    ended: bool,
}

impl Journal {
    /// Follows the output of `child` (spawned with a piped stdout); `None` when it has
    /// no stdout to read.
    pub fn new(mut child: Child) -> Option<Journal> {
        let Some(out) = child.stdout.take() else {
            stop(&mut child);
            return None;
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                let mut r = BufReader::new(out);
                loop {
                    let mut line = Vec::new();
                    match read_line(&mut r, &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if tx.send(line).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "cannot start the journal reader; istio.log only");
            stop(&mut child);
            return None;
        }
        Some(Journal {
            child,
            lines: rx,
            ended: false,
        })
    }

    /// Starts following istio.service's journal from `since_unix` (whole seconds: the
    /// second of the mark, so a line of that second from before it may show too).
    /// `None` when there is no journal to follow (no journalctl, no systemd).
    pub fn start(since_unix: i64) -> Option<Journal> {
        match crate::service::follow_journal(since_unix) {
            Ok(Some(child)) => Journal::new(child),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "no journal to follow; reasons from istio.log only");
                None
            }
        }
    }

    /// Hands every line read so far to `f` (without its newline).
    pub fn poll(&mut self, mut f: impl FnMut(&[u8])) {
        loop {
            match self.lines.try_recv() {
                Ok(l) => f(&l),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    if !self.ended {
                        self.ended = true;
                        tracing::debug!("the journal follower ended");
                    }
                    return;
                }
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Ends a follower this process started (its own child, by its handle).
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads one line into `buf` without its newline, keeping at most [`MAX_LINE`] bytes.
/// Returns the bytes consumed (0 at the end).
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut used = 0;
    loop {
        let (done, n) = {
            let avail = r.fill_buf()?;
            if avail.is_empty() {
                return Ok(used);
            }
            match memchr::memchr(b'\n', avail) {
                Some(i) => {
                    keep(buf, &avail[..i]);
                    (true, i + 1)
                }
                None => {
                    keep(buf, avail);
                    (false, avail.len())
                }
            }
        };
        r.consume(n);
        used += n;
        if done {
            return Ok(used);
        }
    }
}

fn keep(buf: &mut Vec<u8>, part: &[u8]) {
    let room = MAX_LINE.saturating_sub(buf.len());
    buf.extend_from_slice(&part[..part.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn collect(j: &mut Journal, want: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            j.poll(|l| got.push(String::from_utf8_lossy(l).into_owned()));
            std::thread::sleep(Duration::from_millis(10));
        }
        got
    }

    #[test]
    fn lines_arrive_and_long_lines_are_cut() {
        let child = Command::new("sh")
            .arg("-c")
            .arg("printf 'one\\ntwo\\n'; head -c 100000 /dev/zero | tr '\\0' x; printf '\\nlast\\n'; exec sleep 60")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut j = Journal::new(child).unwrap();
        let got = collect(&mut j, 4);
        assert_eq!(
            got.len(),
            4,
            "{:?}",
            got.iter().map(|l| l.len()).collect::<Vec<_>>()
        );
        assert_eq!(&got[..2], ["one", "two"]);
        assert_eq!(got[2].len(), MAX_LINE);
        assert_eq!(got[3], "last");
        // Dropping it ends the child (no `sleep 60` left behind).
        drop(j);
    }

    #[test]
    fn no_stdout_is_no_journal() {
        let child = Command::new("true").stdout(Stdio::null()).spawn().unwrap();
        assert!(Journal::new(child).is_none());
    }
}
