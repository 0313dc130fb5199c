//! Follows log files like `tail -F`, driven by inotify: a new line is seen within
//! milliseconds of being written, and an idle follower makes no system call at all.
//!
//! inotify only says *when* to look; *what* changed is always worked out from the files
//! themselves (offset, size, inode). So a lost or overflowed event queue costs nothing
//! but a wake-up, and no line is lost or delivered twice:
//! - a file that does not exist yet is read from its first byte once it appears (its
//!   directory, or the nearest existing ancestor, is watched for its creation);
//! - rotation by rename: the old file is read to its end, then the new one from 0;
//! - truncation (copytruncate): reading restarts at 0;
//! - partial lines wait for their newline; a line longer than the limit is delivered once,
//!   cut to the limit, with its real length; bytes need not be UTF-8.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

/// Default cut-off for one delivered line: longer lines are delivered cut to this.
pub const MAX_LINE: usize = 64 * 1024;

const READ_CHUNK: usize = 256 * 1024;

/// One complete line of a followed file (without its newline).
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// Index of the file in the list given to [`Follower::new`].
    pub log: usize,
    /// The line's bytes, at most the follower's line limit.
    pub bytes: &'a [u8],
    /// The line's real length in bytes.
    pub len: usize,
}

impl Line<'_> {
    /// Whether the line was longer than the limit and is cut.
    pub fn truncated(&self) -> bool {
        self.len > self.bytes.len()
    }

    /// The line as text (invalid UTF-8 replaced).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.bytes)
    }
}

/// The open file of a followed path.
struct Open {
    file: File,
    dev: u64,
    ino: u64,
    offset: u64,
    /// The file's first bytes as read (up to [`HEAD`]): when they change, the file was
    /// truncated and written again, even if it has grown past `offset` since (older
    /// istio-start.sh versions start the agent with `> istio.log`).
    head: Vec<u8>,
}

/// Bytes of a file's start kept to recognise it was rewritten.
const HEAD: usize = 128;

impl Open {
    fn new(file: File, m: &std::fs::Metadata, offset: u64) -> io::Result<Self> {
        let mut o = Open {
            dev: m.dev(),
            ino: m.ino(),
            offset,
            head: Vec::new(),
            file,
        };
        o.refresh_head()?;
        Ok(o)
    }

    /// Reads the first bytes up to `offset` (at most [`HEAD`]) into `head`.
    fn refresh_head(&mut self) -> io::Result<()> {
        let want = (self.offset as usize).min(HEAD);
        if self.head.len() < want {
            let mut b = vec![0; want];
            let n = read_full_at(&self.file, &mut b)?;
            b.truncate(n);
            self.head = b;
        }
        Ok(())
    }

    /// Whether the start of the file is still what was read.
    fn same_head(&self) -> io::Result<bool> {
        if self.head.is_empty() {
            return Ok(true);
        }
        let mut b = vec![0; self.head.len()];
        let n = read_full_at(&self.file, &mut b)?;
        Ok(n == self.head.len() && b == self.head)
    }
}

fn read_full_at(f: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One followed path.
struct Log {
    path: PathBuf,
    open: Option<Open>,
    /// The start of a line whose newline has not arrived (at most `max_line` bytes).
    partial: Vec<u8>,
    /// Its real length.
    partial_len: usize,
}

/// Delivers a line left without its newline (the file it was in is done with).
fn flush(partial: &mut Vec<u8>, len: &mut usize, i: usize, on_line: &mut impl FnMut(Line<'_>)) {
    if *len > 0 {
        on_line(Line {
            log: i,
            bytes: partial,
            len: *len,
        });
        partial.clear();
        *len = 0;
    }
}

/// Follows a set of files from the positions they have when it is created.
pub struct Follower {
    inotify: Inotify,
    logs: Vec<Log>,
    /// Logs' directories with a watch, with the watch and the inode watched. A watch
    /// inotify dropped (IN_IGNORED: the directory was deleted) is forgotten, so a
    /// directory made again gets a new one even when the filesystem reuses the inode.
    watched: Vec<(PathBuf, WatchDescriptor, u64, u64)>,
    buf: Vec<u8>,
    max_line: usize,
}

/// Events on a log's own directory: anything that may change what the path names or
/// what the file holds.
fn dir_mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
}

/// Events on an ancestor while a log's directory does not exist: only its creation
/// matters (not every write to /var/log's other files).
fn ancestor_mask() -> WatchMask {
    WatchMask::CREATE | WatchMask::MOVED_TO
}

impl Follower {
    /// Starts following `paths` (host paths) from their current ends; a path that does
    /// not exist yet is followed from its first byte once it appears.
    pub fn new(paths: &[PathBuf]) -> io::Result<Self> {
        Self::with_max_line(paths, MAX_LINE)
    }

    /// Like [`Follower::new`] with a different line limit.
    pub fn with_max_line(paths: &[PathBuf], max_line: usize) -> io::Result<Self> {
        let mut f = Follower {
            inotify: Inotify::init()?,
            logs: paths
                .iter()
                .map(|p| Log {
                    path: p.clone(),
                    open: None,
                    partial: Vec::new(),
                    partial_len: 0,
                })
                .collect(),
            watched: Vec::new(),
            buf: vec![0; READ_CHUNK],
            max_line: max_line.max(1),
        };
        // Watches first, then positions: a line written in between is read, not missed.
        f.refresh_watches()?;
        f.mark()?;
        Ok(f)
    }

    /// The followed paths.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.logs.iter().map(|l| l.path.as_path())
    }

    /// Skips everything written so far: from now on only new lines are delivered. Used
    /// when the service is (re)started so the old process's lines do not count.
    pub fn mark(&mut self) -> io::Result<()> {
        for log in &mut self.logs {
            log.partial.clear();
            log.partial_len = 0;
            log.open = match File::open(&log.path) {
                Ok(file) => {
                    let m = file.metadata()?;
                    Some(Open::new(file, &m, m.len())?)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            if let Some(o) = &mut log.open {
                o.file.seek(SeekFrom::Start(o.offset))?;
            }
        }
        Ok(())
    }

    /// Blocks until something may have changed or `timeout` passes (`None`: forever).
    /// Returns whether an event arrived; call [`Follower::poll`] either way.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        wait_readable(self.inotify.as_fd(), timeout)
    }

    /// The inotify descriptor, for callers that wait on several things at once.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Delivers every complete line written since the last call, in file order.
    pub fn poll(&mut self, mut on_line: impl FnMut(Line<'_>)) -> io::Result<()> {
        let mut events = [0u8; 4096];
        loop {
            let mut dropped: Vec<WatchDescriptor> = Vec::new();
            let mut overflow = false;
            match self.inotify.read_events(&mut events) {
                Ok(ev) => {
                    let mut n = 0;
                    for e in ev {
                        n += 1;
                        if e.mask.contains(EventMask::IGNORED) {
                            dropped.push(e.wd.clone());
                        }
                        overflow |= e.mask.contains(EventMask::Q_OVERFLOW);
                    }
                    if n == 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
            if overflow {
                // IN_IGNORED events may be among the lost: re-add every watch (adding an
                // existing one is harmless).
                self.watched.clear();
            }
            self.watched.retain(|(_, wd, _, _)| !dropped.contains(wd));
        }
        self.refresh_watches()?;
        for i in 0..self.logs.len() {
            self.catch_up(i, &mut on_line)?;
        }
        Ok(())
    }

    /// Watches each log's directory, or while it is missing, its nearest existing
    /// ancestor. Watching a directory twice is harmless (inotify merges it).
    fn refresh_watches(&mut self) -> io::Result<()> {
        for i in 0..self.logs.len() {
            let dir = self.logs[i]
                .path
                .parent()
                .unwrap_or(Path::new("/"))
                .to_path_buf();
            let id = std::fs::metadata(&dir)
                .ok()
                .filter(|m| m.is_dir())
                .map(|m| (m.dev(), m.ino()));
            if let Some((dev, ino)) = id {
                if self
                    .watched
                    .iter()
                    .any(|(p, _, d, n)| *p == dir && *d == dev && *n == ino)
                {
                    continue;
                }
                let wd = self.inotify.watches().add(&dir, dir_mask())?;
                self.watched.retain(|(p, _, _, _)| *p != dir);
                self.watched.push((dir, wd, dev, ino));
                continue;
            }
            let mut up = dir.parent();
            while let Some(a) = up {
                if a.is_dir() {
                    // A log's own directory keeps its fuller mask (adding would replace it).
                    if !self.watched.iter().any(|(w, _, _, _)| w == a) {
                        self.inotify.watches().add(a, ancestor_mask())?;
                    }
                    // Not recorded: the ancestor's watch is re-added (merged) until the
                    // directory itself exists and gets the full mask.
                    break;
                }
                up = a.parent();
            }
        }
        Ok(())
    }

    /// Reads log `i` up to its current end, following rotation and truncation.
    fn catch_up(&mut self, i: usize, on_line: &mut impl FnMut(Line<'_>)) -> io::Result<()> {
        loop {
            self.drain(i, on_line)?;
            // Does the path still name the open file?
            let log = &mut self.logs[i];
            let now = match std::fs::metadata(&log.path) {
                Ok(m) => Some((m.dev(), m.ino())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            let same = match (&log.open, now) {
                (Some(o), Some((dev, ino))) => o.dev == dev && o.ino == ino,
                // Renamed away and not yet recreated: keep reading the old file, which
                // the writer may still be appending to.
                (Some(_), None) => true,
                (None, None) => true,
                (None, Some(_)) => false,
            };
            if same {
                return Ok(());
            }
            // The writer may have appended to the old file after the drain above and
            // before the rename we just saw: read it to its end once more.
            self.drain(i, on_line)?;
            // Rotated (or created): the old file was read to its end above; a line
            // left without its newline there is complete now.
            let log = &mut self.logs[i];
            flush(&mut log.partial, &mut log.partial_len, i, on_line);
            log.open = match File::open(&log.path) {
                Ok(file) => {
                    let m = file.metadata()?;
                    Some(Open::new(file, &m, 0)?)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
        }
    }

    /// Reads the open file of log `i` to its end, delivering complete lines.
    fn drain(&mut self, i: usize, on_line: &mut impl FnMut(Line<'_>)) -> io::Result<()> {
        let max = self.max_line;
        let log = &mut self.logs[i];
        let Some(open) = &mut log.open else {
            return Ok(());
        };
        let size = open.file.metadata()?.len();
        if size < open.offset || !open.same_head()? {
            // Truncated in place (copytruncate, `>`): what we had of a line is all there is.
            flush(&mut log.partial, &mut log.partial_len, i, on_line);
            open.offset = 0;
            open.head.clear();
            open.file.seek(SeekFrom::Start(0))?;
        }
        loop {
            if open.head.len() < HEAD && (open.head.len() as u64) < open.offset {
                open.refresh_head()?;
            }
            let n = match open.file.read(&mut self.buf) {
                Ok(0) => return open.refresh_head(),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            open.offset += n as u64;
            let mut rest = &self.buf[..n];
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                let piece = &rest[..nl];
                if log.partial_len == 0 {
                    on_line(Line {
                        log: i,
                        bytes: &piece[..piece.len().min(max)],
                        len: piece.len(),
                    });
                } else {
                    let room = max.saturating_sub(log.partial.len());
                    log.partial
                        .extend_from_slice(&piece[..piece.len().min(room)]);
                    on_line(Line {
                        log: i,
                        bytes: &log.partial,
                        len: log.partial_len + piece.len(),
                    });
                    log.partial.clear();
                    log.partial_len = 0;
                }
                rest = &rest[nl + 1..];
            }
            if !rest.is_empty() {
                let room = max.saturating_sub(log.partial.len());
                log.partial.extend_from_slice(&rest[..rest.len().min(room)]);
                log.partial_len += rest.len();
            }
        }
    }
}

/// poll(2) on one descriptor for readability (rustix's safe wrapper).
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let limit = timeout.map(|d| Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    });
    loop {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, limit.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
