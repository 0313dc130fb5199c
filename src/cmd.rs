//! The one process runner: a scrubbed environment (none of vmagent's own notify
//! variables, so dpkg maintainer scripts and systemctl never talk to our notify socket),
//! no stdin, a timeout, the exit status, and a bounded tail of the output for error
//! messages. Leaf module.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Bytes of stderr kept for messages (the end of it, where the reason usually is).
pub const TAIL_BYTES: usize = 4096;

/// Variables a child must not inherit: a failing systemctl sends `ERRNO=` to
/// `$NOTIFY_SOCKET` (the VM test saw systemd log each one as a refused notification;
/// under NotifyAccess=all it would become vmagent's status).
const SCRUBBED: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"];

/// A command that could not be run to the end.
#[derive(Debug, Error)]
pub enum CmdError {
    /// It did not start (not installed, not executable).
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("{command} did not finish within {} s and was stopped", timeout.as_secs())]
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// Waiting for it failed.
    #[error("waiting for {command}: {source}")]
    Wait {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What a finished command left.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// All of stdout (callers parse it).
    pub stdout: Vec<u8>,
    /// The last [`TAIL_BYTES`] of stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// The exit code, `None` when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The exit status as a person reads it: `3`, or `a signal`.
    pub fn status_text(&self) -> String {
        self.code()
            .map_or_else(|| "a signal".into(), |c| c.to_string())
    }

    /// The last `n` non-empty lines of stderr, or of stdout when stderr is empty
    /// (bounded: at most [`TAIL_BYTES`] of either).
    pub fn tail_lines(&self, n: usize) -> Vec<String> {
        let src = if self.stderr.iter().all(u8::is_ascii_whitespace) {
            &self.stdout[self.stdout.len().saturating_sub(TAIL_BYTES)..]
        } else {
            &self.stderr[..]
        };
        crate::text::last_lines(src, n)
    }
}

/// A command for `program` with the scrubbed environment and no stdin.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    scrub(&mut c);
    c.stdin(Stdio::null());
    c
}

/// Removes vmagent's notify variables from `c`'s environment.
pub fn scrub(c: &mut Command) -> &mut Command {
    for v in SCRUBBED {
        c.env_remove(v);
    }
    c
}

/// The command line as a person would type it.
pub fn show(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `c` (environment scrubbed again, whoever built it) to completion or until
/// `timeout`, when it is killed.
pub fn run(c: &mut Command, timeout: Duration) -> Result<Output, CmdError> {
    run_limited(c, timeout, usize::MAX)
}

/// [`run`] keeping at most `stdout_limit` + 1 bytes of stdout (the rest is read and
/// dropped, so the child never blocks on a full pipe): a caller that parses a small
/// answer (a token helper's JWT) tells "too long" from the length without holding
/// whatever a runaway child prints.
pub fn run_limited(
    c: &mut Command,
    timeout: Duration,
    stdout_limit: usize,
) -> Result<Output, CmdError> {
    scrub(c);
    let command = show(c);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CmdError::Spawn {
            command: command.clone(),
            source,
        })?;
    // Both pipes drain on their own threads, so a chatty child never blocks on a full
    // pipe while we wait for it.
    let out = child.stdout.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let keep = u64::try_from(stdout_limit)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            let _ = (&mut s).take(keep).read_to_end(&mut v);
            let _ = std::io::copy(&mut s, &mut std::io::sink());
            v
        })
    });
    let err = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * TAIL_BYTES {
                    tail.drain(..tail.len() - TAIL_BYTES);
                }
            }
            let cut = tail.len().saturating_sub(TAIL_BYTES);
            tail.split_off(cut)
        })
    });
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CmdError::Timeout { command, timeout });
            }
            Ok(None) => {
                // Most tools finish in milliseconds; installers take minutes: poll
                // often at first, then every 50 ms.
                std::thread::sleep(nap.min(deadline.saturating_duration_since(Instant::now())));
                nap = (nap * 2).min(Duration::from_millis(50));
            }
            Err(source) => return Err(CmdError::Wait { command, source }),
        }
    };
    let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: join(out),
        stderr: join(err),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_variables_are_not_inherited() {
        let mut c = command("sh");
        c.args([
            "-c",
            "echo ${NOTIFY_SOCKET:-none} ${WATCHDOG_USEC:-none} $KEEP",
        ])
        .env("NOTIFY_SOCKET", "/run/x")
        .env("WATCHDOG_USEC", "1")
        .env("KEEP", "kept");
        let o = run(&mut c, Duration::from_secs(60)).unwrap();
        assert!(o.status.success());
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "none none kept");
    }

    #[test]
    fn tail_is_bounded_and_prefers_stderr() {
        let mut c = command("sh");
        c.args([
            "-c",
            "i=0; while [ $i -lt 3000 ]; do echo line$i >&2; i=$((i+1)); done; echo out; exit 3",
        ]);
        let o = run(&mut c, Duration::from_secs(60)).unwrap();
        assert_eq!(o.code(), Some(3));
        assert!(o.stderr.len() <= TAIL_BYTES);
        assert_eq!(o.tail_lines(2), ["line2998", "line2999"]);
        let mut c = command("sh");
        c.args(["-c", "echo only-out; exit 1"]);
        let o = run(&mut c, Duration::from_secs(60)).unwrap();
        assert_eq!(o.tail_lines(5), ["only-out"]);
    }

    #[test]
    fn stdout_can_be_bounded() {
        let mut c = command("sh");
        c.args(["-c", "head -c 1000000 /dev/zero; echo done >&2"]);
        let o = run_limited(&mut c, Duration::from_secs(60), 100).unwrap();
        assert!(o.status.success());
        assert_eq!(o.stdout.len(), 101);
        assert_eq!(o.tail_lines(1), ["done"]);
    }

    #[test]
    fn timeout_kills() {
        let mut c = command("sleep");
        c.arg("600");
        let e = run(&mut c, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, CmdError::Timeout { .. }), "{e}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let e = run(&mut command("/nonexistent/tool"), Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, CmdError::Spawn { .. }), "{e}");
    }
}
