//! Shared harness for the integration tests: bundles built as real tar / tar.gz /
//! directory trees (including hostile entries the `tar` crate's safe API refuses to
//! write), throwaway target roots, and byte-for-byte snapshots of a root.

#![allow(dead_code)]

pub mod daemon_vm;
pub mod fake_systemd;
pub mod mesh_net;
pub mod mesh_vm;
pub mod mtls;
pub mod netns;
pub mod output;
pub mod packages;
pub mod prometheus;
pub mod ready_server;
pub mod report_server;
pub mod server;
pub mod sshd;
pub mod token_root;
pub mod token_server;
pub mod wait;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The installed files, written out again from the issue rather than taken from
/// `src/layout.rs`, so a wrong table there fails the tests: (bundle member,
/// destination, mode, owned by istio-proxy).
pub const FILES: [(&str, &str, u32, bool); 4] = [
    ("root-cert.pem", "/etc/certs/root-cert.pem", 0o644, true),
    (
        "istio-token",
        "/var/run/secrets/tokens/istio-token",
        0o600,
        true,
    ),
    (
        "cluster.env",
        "/var/lib/istio/envoy/cluster.env",
        0o644,
        false,
    ),
    ("mesh.yaml", "/etc/istio/config/mesh", 0o644, true),
];

/// The managed directories, likewise: (path, mode, owned by istio-proxy).
pub const DIRS: [(&str, u32, bool); 8] = [
    ("/etc/certs", 0o755, true),
    ("/var/run/secrets", 0o755, true),
    ("/var/run/secrets/tokens", 0o755, true),
    ("/var/lib/istio", 0o755, false),
    ("/var/lib/istio/envoy", 0o755, false),
    ("/var/lib/istio/data", 0o755, true),
    ("/etc/istio/config", 0o755, true),
    ("/etc/istio/proxy", 0o755, true),
];

/// uid/gid of istio-proxy in test roots.
pub const PROXY_ID: u32 = 998;

/// The built binary.
pub fn vmagent() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("vmagent").expect("vmagent binary")
}

/// The shipped example bundle directory.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bundle")
}

/// One member of a test bundle.
#[derive(Clone, Debug)]
pub enum Item {
    /// Regular file with content and mode.
    File(Vec<u8>, u32),
    /// Directory entry.
    Dir,
    /// Symlink to target.
    Symlink(String),
    /// Hard link to target.
    Hardlink(String),
    /// FIFO.
    Fifo,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// A regular file whose header claims `size` bytes of zeros (for size limits).
    Zeros(u64),
}

/// One file of the shipped example bundle.
pub fn example_member(name: &str) -> Vec<u8> {
    fs::read(example_dir().join(name)).expect("example member")
}

/// A bundle as a list of (raw name, item), written in order.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// Members.
    pub items: Vec<(String, Item)>,
}

impl Spec {
    /// The example bundle's five files, at top level.
    pub fn example() -> Spec {
        let mut s = Spec::default();
        for name in [
            "cluster.env",
            "istio-token",
            "mesh.yaml",
            "root-cert.pem",
            "hosts",
        ] {
            let data = fs::read(example_dir().join(name)).expect("example member");
            s.items.push((name.to_string(), Item::File(data, 0o744)));
        }
        s
    }

    /// The example bundle under one top folder, as `tar czf b.tgz vmintegration/` makes it.
    pub fn example_in(folder: &str) -> Spec {
        let mut s = Spec {
            items: vec![(format!("{folder}/"), Item::Dir)],
        };
        for (n, i) in Spec::example().items {
            s.items.push((format!("{folder}/{n}"), i));
        }
        s
    }

    /// Replaces (or adds) a member's content.
    pub fn set(mut self, name: &str, data: impl Into<Vec<u8>>) -> Spec {
        let data = data.into();
        match self
            .items
            .iter_mut()
            .find(|(n, _)| n == name || n.ends_with(&format!("/{name}")))
        {
            Some((_, item)) => *item = Item::File(data, 0o744),
            None => self.items.push((name.to_string(), Item::File(data, 0o744))),
        }
        self
    }

    /// Removes a member.
    pub fn without(mut self, name: &str) -> Spec {
        self.items
            .retain(|(n, _)| n != name && !n.ends_with(&format!("/{name}")));
        self
    }

    /// Adds an item.
    pub fn with(mut self, name: &str, item: Item) -> Spec {
        self.items.push((name.to_string(), item));
        self
    }

    /// Raw tar bytes. Names are written into the header verbatim (GNU long-name
    /// records for long ones), so `..`, absolute paths and duplicates are possible.
    pub fn tar_bytes(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, item) in &self.items {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o744);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            let (ty, data): (tar::EntryType, Vec<u8>) = match item {
                Item::File(d, m) => {
                    h.set_mode(*m);
                    (tar::EntryType::Regular, d.clone())
                }
                Item::Dir => (tar::EntryType::Directory, vec![]),
                Item::Symlink(t) | Item::Hardlink(t) => {
                    h.set_link_name_literal(t.as_bytes()).expect("link name");
                    let ty = if matches!(item, Item::Symlink(_)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    };
                    (ty, vec![])
                }
                Item::Fifo => (tar::EntryType::Fifo, vec![]),
                Item::CharDev => (tar::EntryType::Char, vec![]),
                Item::BlockDev => (tar::EntryType::Block, vec![]),
                Item::Zeros(n) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(*n);
                    write_name(&mut b, &mut h, name);
                    h.set_cksum();
                    b.append(&h, std::io::repeat(0).take_n(*n))
                        .expect("append zeros");
                    continue;
                }
            };
            h.set_entry_type(ty);
            h.set_size(data.len() as u64);
            write_name(&mut b, &mut h, name);
            h.set_cksum();
            b.append(&h, data.as_slice()).expect("append");
        }
        b.into_inner().expect("finish tar")
    }

    /// Writes `dir/bundle.tar`.
    pub fn write_tar(&self, dir: &Path) -> PathBuf {
        let p = dir.join("bundle.tar");
        fs::write(&p, self.tar_bytes()).expect("write tar");
        p
    }

    /// Writes `dir/bundle.tar.gz`.
    pub fn write_tgz(&self, dir: &Path) -> PathBuf {
        let p = dir.join("bundle.tar.gz");
        let mut gz = flate2::write::GzEncoder::new(
            fs::File::create(&p).expect("create"),
            flate2::Compression::default(),
        );
        gz.write_all(&self.tar_bytes()).expect("gz");
        gz.finish().expect("gz finish");
        p
    }

    /// Writes the bundle as a directory tree `dir/bundle/` (links, FIFOs real).
    pub fn write_dir(&self, dir: &Path) -> PathBuf {
        let top = dir.join("bundle");
        fs::create_dir_all(&top).expect("mkdir");
        for (name, item) in &self.items {
            let p = top.join(name.trim_start_matches('/'));
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).expect("mkdir parent");
            }
            match item {
                Item::File(d, m) => {
                    fs::write(&p, d).expect("write");
                    fs::set_permissions(&p, fs::Permissions::from_mode(*m)).expect("chmod");
                }
                Item::Dir => fs::create_dir_all(&p).expect("mkdir"),
                Item::Symlink(t) => std::os::unix::fs::symlink(t, &p).expect("symlink"),
                Item::Hardlink(t) => fs::hard_link(top.join(t), &p).expect("hardlink"),
                Item::Fifo => {
                    let st = std::process::Command::new("mkfifo")
                        .arg(&p)
                        .status()
                        .expect("mkfifo");
                    assert!(st.success());
                }
                Item::CharDev | Item::BlockDev => panic!("devices are only built as tar entries"),
                Item::Zeros(n) => fs::File::create(&p)
                    .and_then(|f| f.set_len(*n))
                    .expect("sparse"),
            }
        }
        top
    }
}

trait TakeN: std::io::Read + Sized {
    fn take_n(self, n: u64) -> std::io::Take<Self> {
        self.take(n)
    }
}
impl<R: std::io::Read> TakeN for R {}

fn write_name<W: Write>(b: &mut tar::Builder<W>, h: &mut tar::Header, name: &str) {
    let bytes = name.as_bytes();
    if bytes.len() < 100 {
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name = [0; 100];
        gnu.name[..bytes.len()].copy_from_slice(bytes);
    } else {
        // GNU long name record, then a truncated name in the real header.
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::GNULongName);
        l.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
        let mut data = bytes.to_vec();
        data.push(0);
        l.set_size(data.len() as u64);
        l.set_cksum();
        b.append(&l, data.as_slice()).expect("longname");
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name.copy_from_slice(&bytes[..100]);
    }
}

/// A JWT-shaped token with the given claims JSON.
pub fn jwt(claims: &str) -> Vec<u8> {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"test"}"#),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(b"signature")
    )
    .into_bytes()
}

/// A token for `sub` valid until year 2096.
pub fn token_for(sub: &str) -> Vec<u8> {
    jwt(&format!(
        r#"{{"aud":["istio-ca"],"exp":4000000000,"iat":1700000000,"sub":"{sub}"}}"#
    ))
}

/// Fills `r` like a VM after the sidecar package created its user: etc/passwd and
/// etc/group with istio-proxy (uid/gid [`PROXY_ID`]) and a two-line etc/hosts.
pub fn populate_vm_root(r: &Path) {
    fs::create_dir_all(r.join("etc")).expect("etc");
    fs::write(r.join("etc/passwd"), format!("root:x:0:0:root:/root:/bin/bash\nistio-proxy:x:{PROXY_ID}:{PROXY_ID}::/var/lib/istio:/usr/sbin/nologin\n")).expect("passwd");
    fs::write(
        r.join("etc/group"),
        format!("root:x:0:\nistio-proxy:x:{PROXY_ID}:\n"),
    )
    .expect("group");
    fs::write(
        r.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    .expect("hosts");
}

/// A throwaway target root with istio-proxy in etc/passwd and a plain etc/hosts.
pub struct TestRoot {
    /// Owns the directory.
    pub dir: tempfile::TempDir,
}

impl TestRoot {
    /// A root that looks like a VM after the sidecar package created its user.
    pub fn new() -> TestRoot {
        let dir = tempfile::tempdir().expect("tempdir");
        populate_vm_root(dir.path());
        TestRoot { dir }
    }

    /// A root with nothing in it but etc/hosts (no istio-proxy user).
    pub fn bare() -> TestRoot {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("etc")).expect("etc");
        fs::write(dir.path().join("etc/hosts"), "127.0.0.1 localhost\n").expect("hosts");
        TestRoot { dir }
    }

    /// Host path of the root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Host path of a system path inside the root (no symlink resolution).
    pub fn at(&self, sys: &str) -> PathBuf {
        self.path().join(sys.trim_start_matches('/'))
    }

    /// `vmagent apply BUNDLE --root ROOT --no-package --no-start` plus `extra`.
    pub fn apply(&self, bundle: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
        vmagent()
            .arg("apply")
            .arg(bundle)
            .arg("--root")
            .arg(self.path())
            .args(["--no-package", "--no-start"])
            .args(extra)
            .assert()
    }

    /// A snapshot of everything under the root.
    pub fn snapshot(&self) -> Snapshot {
        snapshot(self.path())
    }
}

impl Default for TestRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// Host path of a system path, following symlinks *inside* the root (written
/// independently of vmagent's own resolver, so tests do not check it with itself) (absolute targets
/// re-anchored at the root); the last component is followed only when `follow_last`.
pub fn inroot(root: &Path, sys: &str, follow_last: bool) -> PathBuf {
    fn comps(s: &str) -> Vec<String> {
        let mut v: Vec<String> = s
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(String::from)
            .collect();
        v.reverse();
        v
    }
    let mut pending = comps(sys);
    let mut cur = root.to_path_buf();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            if cur != root {
                cur.pop();
            }
            continue;
        }
        let next = cur.join(&c);
        match fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() && (follow_last || !pending.is_empty()) => {
                hops += 1;
                assert!(hops < 40, "symlink loop at {}", next.display());
                let t = fs::read_link(&next).expect("readlink");
                if t.is_absolute() {
                    cur = root.to_path_buf();
                }
                pending.extend(comps(t.to_str().expect("utf-8 link")));
            }
            _ => cur = next,
        }
    }
    cur
}

/// lstat that names the path when it fails.
pub fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Everything observable about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (ns).
    pub mtime_ns: i128,
    /// File content or link target.
    pub content: Vec<u8>,
}

/// Path (relative to the root) -> node.
pub type Snapshot = BTreeMap<PathBuf, Node>;

/// Walks `root` without following symlinks.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, p: &Path, out: &mut Snapshot) {
    let m = fs::symlink_metadata(p).expect("lstat");
    let ft = m.file_type();
    let (kind, content) = if ft.is_symlink() {
        (
            "symlink",
            fs::read_link(p)
                .expect("readlink")
                .into_os_string()
                .into_encoded_bytes(),
        )
    } else if ft.is_file() {
        ("file", fs::read(p).expect("read"))
    } else if ft.is_dir() {
        ("dir", vec![])
    } else {
        ("other", vec![])
    };
    out.insert(
        p.strip_prefix(root).expect("prefix").to_path_buf(),
        Node {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            content,
        },
    );
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p)
            .expect("readdir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for n in names {
            walk(root, &n, out);
        }
    }
}

/// Asserts two snapshots are equal, naming the first difference.
pub fn assert_same(before: &Snapshot, after: &Snapshot, context: &str) {
    for (p, n) in before {
        match after.get(p) {
            None => panic!("{context}: {} disappeared", p.display()),
            Some(m) if m != n => panic!("{context}: {} changed: {n:?} -> {m:?}", p.display()),
            _ => {}
        }
    }
    for p in after.keys() {
        assert!(
            before.contains_key(p),
            "{context}: {} appeared",
            p.display()
        );
    }
}
