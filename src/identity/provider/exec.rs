//! `provider = "exec"`: a command prints a JWT on stdout. It runs as root through the
//! one process runner ([`crate::cmd`], stdout bounded) with an emptied environment (only a fixed PATH:
//! nothing of vmagent's own environment, such as proxy credentials, leaks into it),
//! no stdin and a timeout; on failure the error shows the end of its stderr, never its
//! stdout (which may hold a token).

use std::path::PathBuf;
use std::time::Duration;

use super::{FetchError, MAX_TOKEN_BYTES};
use crate::cmd::{self, CmdError};

/// The only variable the command gets.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Lines of stderr shown in an error.
const TAIL_LINES: usize = 5;

/// The command.
#[derive(Debug, Clone)]
pub struct ExecProvider {
    /// The program, resolved inside the root.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The program as configured, for messages (arguments are not shown: they may
    /// carry secrets).
    pub shown: String,
    /// How long it may run.
    pub timeout: Duration,
}

impl ExecProvider {
    /// Runs the command; its stdout.
    pub fn run(&self) -> Result<Vec<u8>, FetchError> {
        let program = self.shown.clone();
        let mut c = cmd::command(&self.program);
        c.args(&self.args).env_clear().env("PATH", PATH);
        let out = cmd::run_limited(&mut c, self.timeout, MAX_TOKEN_BYTES as usize).map_err(
            |e| match e {
                CmdError::Timeout { timeout, .. } => FetchError::Timeout {
                    program: program.clone(),
                    secs: timeout.as_secs(),
                },
                CmdError::Spawn { source, .. } | CmdError::Wait { source, .. } => {
                    FetchError::Spawn {
                        program: program.clone(),
                        source,
                    }
                }
            },
        )?;
        if !out.status.success() {
            return Err(FetchError::Exit {
                program,
                status: out.status_text(),
                tail: stderr_tail(&out.stderr, TAIL_LINES),
            });
        }
        if out.stdout.len() as u64 > MAX_TOKEN_BYTES {
            return Err(FetchError::TooLong { program });
        }
        Ok(out.stdout)
    }
}

/// The last `n` non-empty lines of `stderr`, each word that looks like a JWT (two dots,
/// long) masked: a helper that echoes its token on failure must not leak it here.
pub fn stderr_tail(stderr: &[u8], n: usize) -> Vec<String> {
    crate::text::last_lines(stderr, n)
        .iter()
        .map(|l| {
            l.split(' ')
                .map(|w| {
                    if w.len() >= 20 && w.matches('.').count() >= 2 {
                        crate::redact::MASK
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_masks_jwt_like_words_and_keeps_the_end() {
        let err = b"one\n\ntwo\nfailed for eyJhbGciOi.eyJzdWIiOiJ4In0.c2ln now\n";
        assert_eq!(
            stderr_tail(err, 2),
            [
                "two".to_string(),
                format!("failed for {} now", crate::redact::MASK)
            ]
        );
    }
}
