//! The exclusive apply lock (`flock` on a file in the state dir via std `File::lock`).
//! The kernel drops it when the process dies, so a killed apply never wedges the next.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another vmagent kept it for the whole timeout.
    #[error("another vmagent is applying to this root (lock {path} held for {secs}s); wait for it to finish or raise --lock-timeout")]
    Timeout {
        /// Lock file.
        path: PathBuf,
        /// How long we waited.
        secs: u64,
    },
    /// `vmagent daemon` runs for this root, and would undo what was asked.
    #[error("vmagent daemon is running for this root (it holds {path}) and would put everything back; stop it first: systemctl disable --now vmagent")]
    DaemonRunning {
        /// The daemon's lock file.
        path: PathBuf,
    },
    /// The lock file could not be opened.
    #[error("cannot open lock file {path}: {source}")]
    Io {
        /// Lock file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

/// Takes the lock at `path`, waiting up to `timeout`; `waiting` is called once if the
/// lock is busy, so the user learns why nothing happens.
pub fn acquire(path: &Path, timeout: Duration, waiting: impl FnOnce()) -> Result<Lock, LockError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let start = Instant::now();
    let mut waiting = Some(waiting);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Lock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                if let Some(w) = waiting.take() {
                    w();
                }
                if start.elapsed() >= timeout {
                    return Err(LockError::Timeout {
                        path: path.to_path_buf(),
                        secs: timeout.as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(LockError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}
