//! Watches a local bundle path (file or directory) with inotify: `changed()` says
//! whether something happened to it since the last call.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use inotify::{Inotify, WatchMask};

/// A watch on one bundle path.
pub struct Watch {
    inotify: Inotify,
    /// The file name to look for in the parent's events (`None`: the path is a
    /// directory watched itself, every event counts).
    name: Option<OsString>,
}

impl Watch {
    /// Watches `host` (a host path): a directory bundle itself, a file through its
    /// parent directory (editors and `cp`/`mv` replace files, which a watch on the file's
    /// inode would miss).
    pub fn new(host: &Path) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        let mask = WatchMask::CLOSE_WRITE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::ATTRIB
            | WatchMask::MODIFY;
        if host.is_dir() {
            inotify.watches().add(host, mask)?;
            return Ok(Watch {
                inotify,
                name: None,
            });
        }
        let parent = host.parent().unwrap_or(Path::new("/"));
        inotify.watches().add(parent, mask)?;
        Ok(Watch {
            inotify,
            name: host.file_name().map(|n| n.to_os_string()),
        })
    }

    /// The descriptor to poll.
    pub fn raw_fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }

    /// Drains pending events; true when one concerns the bundle.
    pub fn changed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let mut hit = false;
        while let Ok(events) = self.inotify.read_events(&mut buf) {
            let mut n = 0;
            for e in events {
                n += 1;
                hit |= match (&self.name, e.name) {
                    (None, _) => true,
                    (Some(want), Some(got)) => want.as_os_str() == got,
                    (Some(_), None) => false,
                };
            }
            if n == 0 {
                break;
            }
        }
        hit
    }
}
