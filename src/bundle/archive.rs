//! Opening a bundle (tar, tar.gz or directory) into bounded in-memory members.
//!
//! The bundle is hostile input read by root: nothing is ever unpacked onto disk. Only
//! regular files are accepted; names are normalised (`./x`, one common top folder) and
//! anything else (absolute or `..` paths, links, devices, FIFOs, duplicates, non-UTF-8
//! names, oversize members, too many members, a decompression bomb) is refused. Package
//! members may be large, so they stream into an anonymous temp file instead of memory.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::rc::Rc;

use super::BundleError;
use crate::fsx;

/// Size and count bounds for reading a bundle.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest ordinary member.
    pub member: u64,
    /// Largest package member (`*.deb`, `*.rpm`).
    pub package: u64,
    /// Most archive entries (directories included).
    pub entries: usize,
    /// Most bytes read from the (decompressed) archive stream in total.
    pub stream: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            member: 1 << 20,
            package: 256 << 20,
            entries: 256,
            stream: 600 << 20,
        }
    }
}

/// A package member, spooled to a private temp file (dpkg-deb and rpm need a path);
/// the file is deleted when this is dropped.
#[derive(Debug)]
pub struct PackageFile {
    /// Member name (basename).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The content.
    pub file: tempfile::NamedTempFile,
}

/// What a bundle holds before parsing.
#[derive(Debug, Default)]
pub struct RawBundle {
    /// Ordinary members by basename.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Package members.
    pub packages: Vec<PackageFile>,
    /// Members that are neither known files nor packages (ignored, with a warning).
    pub ignored: Vec<String>,
}

/// Opens `path` as a directory, tar or tar.gz bundle.
pub fn open(path: &Path, limits: Limits) -> Result<RawBundle, BundleError> {
    let src = path.display().to_string();
    let meta = fs::metadata(path).map_err(|e| BundleError::source(&src, io_reason(&e)))?;
    if meta.is_dir() {
        return read_dir(path, &src, limits);
    }
    if !meta.is_file() {
        return Err(BundleError::source(&src, "not a file or directory".into()));
    }
    let mut f = File::open(path).map_err(|e| BundleError::source(&src, io_reason(&e)))?;
    let mut magic = [0u8; 512];
    let n = read_up_to(&mut f, &mut magic).map_err(|e| BundleError::source(&src, io_reason(&e)))?;
    f.rewind()
        .map_err(|e| BundleError::source(&src, io_reason(&e)))?;
    if n == 512 && magic.iter().all(|&b| b == 0) {
        return Err(BundleError::source(
            &src,
            "an empty tar archive (no members)".into(),
        ));
    }
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        read_tar(
            flate2::read::GzDecoder::new(io::BufReader::new(f)),
            &src,
            limits,
            true,
        )
    } else if n == 512 && &magic[257..262] == b"ustar" {
        read_tar(io::BufReader::new(f), &src, limits, false)
    } else {
        Err(BundleError::source(
            &src,
            "not a tar or tar.gz archive (nor a directory); pass the folder or archive made from `istioctl x workload entry configure -o DIR`".into(),
        ))
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "does not exist".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Is this basename a package member?
pub fn is_package(name: &str) -> bool {
    name.ends_with(".deb") || name.ends_with(".rpm")
}

/// Collects members and enforces the rules that span members.
struct Collector {
    limits: Limits,
    raw: RawBundle,
    /// Normalised member path (components) -> original name, for the layout check.
    seen: BTreeMap<Vec<String>, String>,
    dirs: Vec<(Vec<String>, String)>,
    entries: usize,
}

impl Collector {
    fn new(limits: Limits) -> Self {
        Collector {
            limits,
            raw: RawBundle::default(),
            seen: BTreeMap::new(),
            dirs: Vec::new(),
            entries: 0,
        }
    }

    fn count(&mut self, src: &str) -> Result<(), BundleError> {
        self.entries += 1;
        if self.entries > self.limits.entries {
            return Err(BundleError::source(
                src,
                format!(
                    "more than {} members; a bundle holds a handful of files",
                    self.limits.entries
                ),
            ));
        }
        Ok(())
    }

    fn add_dir(&mut self, original: &str) -> Result<(), BundleError> {
        let comps = normalise(original)?;
        if !comps.is_empty() {
            self.dirs.push((comps, original.to_string()));
        }
        Ok(())
    }

    /// Registers a regular file; returns its basename.
    fn add_file(&mut self, original: &str, size: u64) -> Result<String, BundleError> {
        let comps = normalise(original)?;
        let Some(base) = comps.last().cloned() else {
            return Err(BundleError::member(original, "empty name".into()));
        };
        let limit = if is_package(&base) {
            self.limits.package
        } else {
            self.limits.member
        };
        if size > limit {
            return Err(BundleError::member(
                original,
                format!("{size} bytes, over the {limit}-byte limit for this kind of member"),
            ));
        }
        if let Some(first) = self.seen.insert(comps, original.to_string()) {
            return Err(BundleError::member(
                original,
                format!("appears twice in the bundle (also as '{first}')"),
            ));
        }
        Ok(base)
    }

    /// The common-top-folder rule: all files at top level, or all in one folder.
    fn finish(mut self, src: &str) -> Result<RawBundle, BundleError> {
        // None: no file seen yet; Some(None): files at top level; Some(Some(f)): in f/.
        let mut top: Option<Option<&String>> = None;
        for (comps, original) in self.seen.iter() {
            let folder = match comps.len() {
                1 => None,
                2 => Some(&comps[0]),
                _ => {
                    return Err(BundleError::member(
                        original,
                        "nested more than one folder deep; a bundle is one flat folder".into(),
                    ))
                }
            };
            match top {
                None => top = Some(folder),
                Some(t) if t != folder => {
                    return Err(BundleError::source(
                        src,
                        format!("mixes members from different folders ('{original}'); a bundle is one flat folder"),
                    ))
                }
                Some(_) => {}
            }
        }
        let top = top.flatten();
        for (comps, original) in &self.dirs {
            if comps.len() > 1 || Some(&comps[0]) != top {
                return Err(BundleError::member(
                    original,
                    "extra directory; a bundle is one flat folder".into(),
                ));
            }
        }
        self.raw.ignored.sort();
        Ok(self.raw)
    }
}

/// Splits a member name into normal components, refusing absolute and `..` paths.
fn normalise(name: &str) -> Result<Vec<String>, BundleError> {
    if name.starts_with('/') {
        return Err(BundleError::member(
            name,
            "absolute path; members must be relative".into(),
        ));
    }
    let mut out = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(BundleError::member(
                    name,
                    "path has a '..' component".into(),
                ))
            }
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// A reader that fails once more than `left` bytes were asked of it, and says so.
struct Bounded<R> {
    inner: R,
    left: u64,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.hit.set(true);
            return Err(io::Error::other("archive expands past the size limit"));
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn read_tar<R: Read>(r: R, src: &str, limits: Limits, gz: bool) -> Result<RawBundle, BundleError> {
    let hit = Rc::new(Cell::new(false));
    let bounded = Bounded {
        inner: r,
        left: limits.stream,
        hit: hit.clone(),
    };
    let mut ar = tar::Archive::new(bounded);
    let mut c = Collector::new(limits);
    let kind = if gz { "tar.gz" } else { "tar" };
    let stream_err = |e: io::Error, hit: &Rc<Cell<bool>>| {
        if hit.get() {
            BundleError::source(
                src,
                format!(
                    "expands past {} bytes (a decompression bomb?)",
                    limits.stream
                ),
            )
        } else {
            BundleError::source(src, format!("not a readable {kind} archive: {e}"))
        }
    };
    let entries = ar.entries().map_err(|e| stream_err(e, &hit))?;
    for entry in entries {
        let mut e = entry.map_err(|e| stream_err(e, &hit))?;
        let name = String::from_utf8(e.path_bytes().into_owned())
            .map_err(|_| BundleError::source(src, "a member name is not UTF-8".into()))?;
        let et = e.header().entry_type();
        if et.is_pax_global_extensions() {
            continue; // git archive writes one; it carries no file
        }
        c.count(src)?;
        if et.is_dir() {
            c.add_dir(&name)?;
            continue;
        }
        if !et.is_file() {
            return Err(BundleError::member(
                &name,
                format!("a {}; only regular files are allowed", describe(et)),
            ));
        }
        let size = e.size();
        let base = c.add_file(&name, size)?;
        if is_package(&base) {
            let file = spool(&mut e, size, limits.package).map_err(|er| {
                if hit.get() {
                    stream_err(er, &hit)
                } else {
                    BundleError::member(&name, format!("cannot be read: {er}"))
                }
            })?;
            c.raw.packages.push(PackageFile {
                name: base,
                size,
                file,
            });
        } else {
            let mut data = Vec::with_capacity(size as usize);
            (&mut e)
                .take(limits.member + 1)
                .read_to_end(&mut data)
                .map_err(|er| stream_err(er, &hit))?;
            if data.len() as u64 != size {
                return Err(BundleError::member(&name, "truncated".into()));
            }
            keep(&mut c.raw, base, data);
        }
    }
    // The tar reader stops at the end-of-archive blocks; reading on to EOF makes gzip
    // verify its CRC and length trailer, so a truncated or corrupted download is refused.
    io::copy(&mut ar.into_inner(), &mut io::sink()).map_err(|e| stream_err(e, &hit))?;
    c.finish(src)
}

fn describe(et: tar::EntryType) -> &'static str {
    match et {
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "special archive entry",
    }
}

fn keep(raw: &mut RawBundle, base: String, data: Vec<u8>) {
    if super::Member::from_name(&base).is_some() {
        raw.files.insert(base, data);
    } else {
        raw.ignored.push(base);
    }
}

fn spool(r: &mut impl Read, size: u64, limit: u64) -> io::Result<tempfile::NamedTempFile> {
    let mut f = tempfile::Builder::new().prefix("vmagent-pkg-").tempfile()?;
    let n = io::copy(&mut r.take(limit + 1), &mut f)?;
    if n != size {
        return Err(io::Error::other("member is truncated"));
    }
    f.flush()?;
    Ok(f)
}

fn read_dir(dir: &Path, src: &str, limits: Limits) -> Result<RawBundle, BundleError> {
    let list = |d: &Path| -> Result<Vec<(String, fsx::Kind)>, BundleError> {
        let mut v = Vec::new();
        for ent in fs::read_dir(d).map_err(|e| BundleError::source(src, io_reason(&e)))? {
            let ent = ent.map_err(|e| BundleError::source(src, io_reason(&e)))?;
            let name = ent
                .file_name()
                .into_string()
                .map_err(|_| BundleError::source(src, "a member name is not UTF-8".into()))?;
            let kind = fsx::meta(&ent.path())
                .map_err(|e| BundleError::member(&name, io_reason(&e)))?
                .map(|m| m.kind)
                .unwrap_or(fsx::Kind::Other);
            v.push((name, kind));
            if v.len() > limits.entries {
                return Err(BundleError::source(
                    src,
                    format!("more than {} members", limits.entries),
                ));
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    };
    let mut entries = list(dir)?;
    let mut base = dir.to_path_buf();
    let mut prefix = String::new();
    // `istioctl -o DIR` parent given instead of DIR: accept one common top folder.
    if let [(name, fsx::Kind::Dir)] = entries.as_slice() {
        base = dir.join(name);
        prefix = format!("{name}/");
        entries = list(&base)?;
    }
    let mut c = Collector::new(limits);
    let mut stream = 0u64;
    for (name, kind) in entries {
        let shown = format!("{prefix}{name}");
        c.count(src)?;
        match kind {
            fsx::Kind::File => {}
            fsx::Kind::Dir => {
                return Err(BundleError::member(
                    &shown,
                    "extra directory; a bundle is one flat folder".into(),
                ))
            }
            fsx::Kind::Symlink => {
                return Err(BundleError::member(
                    &shown,
                    "a symlink; only regular files are allowed".into(),
                ))
            }
            fsx::Kind::Other => {
                return Err(BundleError::member(
                    &shown,
                    "a device, FIFO or socket; only regular files are allowed".into(),
                ))
            }
        }
        let path = base.join(&name);
        // O_NOFOLLOW + fstat: a file swapped for a link or FIFO after listing is refused.
        let f =
            fsx::open_nofollow(&path).map_err(|e| BundleError::member(&shown, io_reason(&e)))?;
        let meta = f
            .metadata()
            .map_err(|e| BundleError::member(&shown, io_reason(&e)))?;
        if !meta.is_file() {
            return Err(BundleError::member(&shown, "not a regular file".into()));
        }
        // Same rule as a tar hard link: a second name may be a file from outside the
        // bundle (e.g. a secret only root can read, which errors would then echo).
        if meta.nlink() > 1 {
            return Err(BundleError::member(
                &shown,
                format!(
                    "a hard link ({} names for one file); only regular files are allowed, copy it instead",
                    meta.nlink()
                ),
            ));
        }
        let size = meta.len();

        stream += size;
        if stream > limits.stream {
            return Err(BundleError::source(
                src,
                format!("holds more than {} bytes", limits.stream),
            ));
        }
        c.add_file(&name, size)?;
        if is_package(&name) {
            let file = spool(&mut &f, size, limits.package)
                .map_err(|e| BundleError::member(&shown, e.to_string()))?;
            c.raw.packages.push(PackageFile { name, size, file });
        } else {
            let mut data = Vec::new();
            (&f).take(limits.member + 1)
                .read_to_end(&mut data)
                .map_err(|e| BundleError::member(&shown, e.to_string()))?;
            if data.len() as u64 > limits.member {
                return Err(BundleError::member(
                    &shown,
                    format!(
                        "grew past the {}-byte limit while being read",
                        limits.member
                    ),
                ));
            }
            keep(&mut c.raw, name, data);
        }
    }
    c.finish(src)
}

/// Writes `raw`'s members (known files and packages; ignored members are dropped) as a
/// canonical tar: sorted names, mode 0600, uid/gid 0, mtime 0. The same content gives the
/// same bytes whether it came from a directory, a tar or a tar.gz, so the daemon can name
/// a bundle by the sha256 of this stream (the bundle store, `daemon::store`).
pub fn write_canonical_tar(raw: &RawBundle, out: impl Write) -> io::Result<()> {
    let mut b = tar::Builder::new(out);
    let header = |size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o600);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    let mut packages: Vec<&PackageFile> = raw.packages.iter().collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    for (name, data) in &raw.files {
        let mut h = header(data.len() as u64);
        b.append_data(&mut h, name, data.as_slice())?;
    }
    for p in packages {
        let mut h = header(p.size);
        b.append_data(&mut h, &p.name, p.file.reopen()?.take(p.size))?;
    }
    b.into_inner()?.flush()
}
