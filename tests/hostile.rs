//! Hostile and invalid bundles, generated here, against the invalid-bundle contract:
//!
//! `vmagent apply BUNDLE --root DIR --no-package --no-start` and `vmagent check BUNDLE`
//! exit 2, print exactly one stderr line starting with `error: ` that names the bundle
//! or the member, never panic, and leave a realistic target root (one that already
//! holds an applied bundle) byte-for-byte identical: contents, modes, owners, mtimes,
//! no new files.
//!
//! Every case is one `#[test]` so a single one can be ignored; each runs over the
//! formats it can exist in (tar, tar.gz, directory).

mod common;

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// No single command may take longer than this (a hang is a failure, not a stall).
const TIMEOUT: Duration = common::wait::PATIENCE;

const MIB: u64 = 1 << 20;

/// How a bundle is put on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fmt {
    Tar,
    Tgz,
    Dir,
}
use Fmt::{Dir, Tar, Tgz};

const ARCHIVES: &[Fmt] = &[Tar, Tgz];
const ALL: &[Fmt] = &[Tar, Tgz, Dir];

// ---------------------------------------------------------------------------------
// Running vmagent and judging the outcome
// ---------------------------------------------------------------------------------

fn run(cmd: &mut assert_cmd::Command) -> Output {
    cmd.timeout(TIMEOUT).output().expect("run vmagent")
}

fn apply_cmd(root: &TestRoot, bundle: &Path, extra: &[&str]) -> Output {
    run(vmagent()
        .arg("apply")
        .arg(bundle)
        .arg("--root")
        .arg(root.path())
        .args(["--no-package", "--no-start"])
        .args(extra))
}

fn check_cmd(bundle: &Path, extra: &[&str]) -> Output {
    run(vmagent().arg("check").arg(bundle).args(extra))
}

/// A root that already holds the example bundle, state and all.
fn prepared_root() -> TestRoot {
    let root = TestRoot::new();
    let out = apply_cmd(&root, &example_dir(), &[]);
    assert!(
        out.status.success(),
        "preparing the root with the example bundle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    root
}

/// Exit 2, no panic, nothing on stdout, exactly one `error: ` line on stderr that
/// names the bundle or a member, holds every `want` and no control character.
fn assert_invalid(what: &str, out: &Output, want: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ctx = format!(
        "{what}: exit {:?}\n--- stderr ---\n{stderr}--- stdout ---\n{stdout}",
        out.status.code()
    );
    assert!(!stderr.contains("panicked"), "panic: {ctx}");
    assert_ne!(out.status.code(), Some(101), "panic exit code: {ctx}");
    assert_eq!(
        out.status.code(),
        Some(2),
        "want exit 2 (invalid bundle): {ctx}"
    );
    assert!(stdout.is_empty(), "nothing belongs on stdout: {ctx}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want exactly one stderr line: {ctx}");
    assert!(stderr.ends_with('\n'), "stderr line must end: {ctx}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "want 'error: ...': {ctx}");
    assert!(
        line.starts_with("error: bundle member '") || line.starts_with("error: bundle '"),
        "the error must name the bundle or the member: {ctx}"
    );
    assert!(
        !line.chars().any(|c| c.is_control() && c != '\t'),
        "control characters in the error line (terminal injection): {line:?}"
    );
    assert!(
        line.len() <= 2048,
        "{what}: a {}-byte error line is not a message; quote at most a short excerpt of bundle data",
        line.len()
    );
    for w in want {
        assert!(line.contains(w), "want {w:?} in the error line: {ctx}");
    }
}

/// The whole contract for one bundle path: apply on a prepared root, then check.
fn refused_path(case: &str, bundle: &Path, want: &[&str]) {
    let root = prepared_root();
    let before = root.snapshot();
    let out = apply_cmd(&root, bundle, &[]);
    assert_invalid(&format!("{case}: apply"), &out, want);
    assert_same(&before, &root.snapshot(), &format!("{case}: apply"));
    let out = check_cmd(bundle, &[]);
    assert_invalid(&format!("{case}: check"), &out, want);
    assert_same(&before, &root.snapshot(), &format!("{case}: check"));
}

/// Writes `spec` in each format and runs the contract on it.
fn refused(case: &str, spec: &Spec, fmts: &[Fmt], want: &[&str]) {
    for &fmt in fmts {
        let t = tempfile::tempdir().expect("tempdir");
        let p = write_bundle(spec, fmt, t.path());
        refused_path(&format!("{case} [{fmt:?}]"), &p, want);
    }
}

fn write_bundle(spec: &Spec, fmt: Fmt, dir: &Path) -> PathBuf {
    match fmt {
        Tar => spec.write_tar(dir),
        Tgz => spec.write_tgz(dir),
        Dir => spec.write_dir(dir),
    }
}

/// Writes raw archive bytes as `bundle.tar` or (gzipped) `bundle.tar.gz`.
fn write_raw(tar: &[u8], fmt: Fmt, dir: &Path) -> PathBuf {
    match fmt {
        Tar => {
            let p = dir.join("bundle.tar");
            fs::write(&p, tar).expect("write tar");
            p
        }
        Tgz => {
            let p = dir.join("bundle.tar.gz");
            fs::write(&p, gzip(tar)).expect("write tgz");
            p
        }
        Dir => panic!("raw bytes are archives"),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).expect("gz");
    gz.finish().expect("gz finish")
}

/// One `#[test]` per case: `name, formats, spec, [wanted substrings]`.
macro_rules! hostile {
    ($(#[$m:meta])* $name:ident, $fmts:expr, $spec:expr, $want:expr $(,)?) => {
        $(#[$m])*
        #[test]
        fn $name() {
            refused(stringify!($name), &$spec, $fmts, &$want);
        }
    };
}

// ---------------------------------------------------------------------------------
// Bundle builders
// ---------------------------------------------------------------------------------

/// The example with `name` replaced by a non-file item.
fn replaced(name: &str, item: Item) -> Spec {
    Spec::example().without(name).with(name, item)
}

/// A small valid cluster.env whose line 3 is `line`.
fn env_line3(line: &str) -> Spec {
    Spec::example().set(
        "cluster.env",
        format!(
            "CANONICAL_SERVICE='vm-app'\nPOD_NAMESPACE='vm-ns'\n{line}\nTRUST_DOMAIN='cluster.local'\n"
        ),
    )
}

/// The example with mesh.yaml replaced.
fn mesh(text: &str) -> Spec {
    Spec::example().set("mesh.yaml", text)
}

/// The example with hosts replaced.
fn hosts(text: &str) -> Spec {
    Spec::example().set("hosts", text)
}

/// The example with root-cert.pem replaced.
fn root_cert(data: impl Into<Vec<u8>>) -> Spec {
    Spec::example().set("root-cert.pem", data)
}

/// An expired token: exp 2020-09-13T12:26:40Z.
fn expired_token() -> Vec<u8> {
    jwt(
        r#"{"aud":["istio-ca"],"exp":1600000000,"iat":1500000000,"sub":"system:serviceaccount:vm-ns:vm-sa"}"#,
    )
}

/// Runs openssl in `dir`, failing loudly.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (expired self-signed CA certificate O=old, valid 2020-01-01..2021-01-01; its EC
/// private key), made once with `openssl ca -selfsign -startdate/-enddate` (OpenSSL
/// 3.0 has no `-not_before` on `req`/`x509`).
fn expired_ca() -> &'static (Vec<u8>, Vec<u8>) {
    static CA: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    CA.get_or_init(|| {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path();
        fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
             default_md = sha256\npolicy = p\nx509_extensions = ext\nunique_subject = no\n\
             [p]\nO = supplied\n[ext]\nbasicConstraints = critical,CA:true\n",
        )
        .expect("cnf");
        fs::write(d.join("index.txt"), "").expect("index");
        fs::write(d.join("serial"), "01\n").expect("serial");
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/O=old",
                "-keyout",
                "key.pem",
                "-out",
                "req.csr",
            ],
        );
        openssl(
            d,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-selfsign",
                "-keyfile",
                "key.pem",
                "-in",
                "req.csr",
                "-out",
                "cert.pem",
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20210101000000Z",
                "-notext",
            ],
        );
        (
            fs::read(d.join("cert.pem")).expect("cert"),
            fs::read(d.join("key.pem")).expect("key"),
        )
    })
}

/// Streams a tar (or tar.gz at `level`) of plain files and zero-filled files straight
/// to disk, so multi-hundred-MiB members never sit in memory.
fn stream_bundle(items: &[(String, Item)], dir: &Path, gz: Option<flate2::Compression>) -> PathBuf {
    fn fill<W: Write>(w: W, items: &[(String, Item)]) -> W {
        let mut b = tar::Builder::new(w);
        for (name, item) in items {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).expect("name");
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            match item {
                Item::File(d, m) => {
                    h.set_mode(*m);
                    h.set_size(d.len() as u64);
                    h.set_cksum();
                    b.append(&h, d.as_slice()).expect("append");
                }
                Item::Zeros(n) => {
                    h.set_mode(0o644);
                    h.set_size(*n);
                    h.set_cksum();
                    b.append(&h, std::io::repeat(0).take(*n)).expect("append");
                }
                other => panic!("stream_bundle: unsupported {other:?}"),
            }
        }
        b.into_inner().expect("finish tar")
    }
    match gz {
        None => {
            let p = dir.join("bundle.tar");
            let w = BufWriter::new(fs::File::create(&p).expect("create"));
            fill(w, items).flush().expect("flush");
            p
        }
        Some(level) => {
            let p = dir.join("bundle.tar.gz");
            let w = flate2::write::GzEncoder::new(
                BufWriter::new(fs::File::create(&p).expect("create")),
                level,
            );
            fill(w, items)
                .finish()
                .expect("gz finish")
                .flush()
                .expect("flush");
            p
        }
    }
}

/// Replaces the name field of the header whose name is exactly `from` with `to` (same
/// length or shorter), fixing its checksum: how a non-UTF-8 name gets into a tar.
fn patch_name(tar: &mut [u8], from: &str, to: &[u8]) {
    assert!(to.len() <= from.len() && from.len() < 100);
    for off in (0..tar.len()).step_by(512) {
        let block = &mut tar[off..off + 512];
        if block.starts_with(from.as_bytes()) && block[from.len()] == 0 {
            block[..100].fill(0);
            block[..to.len()].copy_from_slice(to);
            let mut h = tar::Header::new_gnu();
            h.as_mut_bytes().copy_from_slice(block);
            h.set_cksum();
            block.copy_from_slice(h.as_bytes());
            return;
        }
    }
    panic!("no header named {from}");
}

/// Deterministic pseudo-random bytes (no gzip or ustar magic).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    v[0] = b'R';
    v
}

// ---------------------------------------------------------------------------------
// Archive structure
// ---------------------------------------------------------------------------------

hostile!(
    traversal_dotdot,
    ARCHIVES,
    Spec::example().with(
        "../etc/passwd",
        Item::File(b"x::0:0::/:/bin/sh\n".to_vec(), 0o644)
    ),
    ["bundle member '../etc/passwd'", "'..' component"],
);

hostile!(
    traversal_inside_top_folder,
    ARCHIVES,
    Spec::example_in("vmintegration")
        .with("vmintegration/../../x", Item::File(b"x".to_vec(), 0o644)),
    ["bundle member 'vmintegration/../../x'", "'..' component"],
);

hostile!(
    traversal_as_known_member,
    ARCHIVES,
    Spec::example()
        .without("hosts")
        .with("../hosts", Item::File(example_member("hosts"), 0o644)),
    ["bundle member '../hosts'", "'..' component"],
);

hostile!(
    absolute_path,
    ARCHIVES,
    Spec::example().with("/etc/hosts", Item::File(b"10.0.0.1 evil\n".to_vec(), 0o644)),
    ["bundle member '/etc/hosts'", "absolute path"],
);

// A 1 MiB member name (GNU long-name record) must not become a 1 MiB error line.
hostile!(
    huge_member_name,
    ARCHIVES,
    Spec::example().with(
        &format!("/{}", "a".repeat(MIB as usize)),
        Item::File(b"x".to_vec(), 0o644)
    ),
    ["bundle member '/aaaa", "absolute path"],
);

hostile!(
    absolute_known_member,
    ARCHIVES,
    Spec::example()
        .without("hosts")
        .with("/hosts", Item::File(example_member("hosts"), 0o644)),
    ["bundle member '/hosts'", "absolute path"],
);

// The directory form is the "symlink pointing outside the bundle" case: refused, not followed.
hostile!(
    symlink_member_to_outside,
    ALL,
    replaced("hosts", Item::Symlink("/etc/hosts".into())),
    ["bundle member '", "hosts'", "symlink"],
);

hostile!(
    symlink_extra_member,
    ALL,
    Spec::example().with("shadow", Item::Symlink("/etc/shadow".into())),
    ["shadow'", "symlink"],
);

hostile!(
    hardlink_member,
    ARCHIVES,
    replaced("hosts", Item::Hardlink("/etc/hosts".into())),
    ["bundle member 'hosts'", "hard link"],
);

hostile!(
    hardlink_to_other_member,
    ARCHIVES,
    Spec::example().with("key.pem", Item::Hardlink("istio-token".into())),
    ["bundle member 'key.pem'", "hard link"],
);

hostile!(
    char_device,
    ARCHIVES,
    replaced("istio-token", Item::CharDev),
    ["bundle member 'istio-token'", "character device"],
);

hostile!(
    block_device,
    ARCHIVES,
    Spec::example().with("sda", Item::BlockDev),
    ["bundle member 'sda'", "block device"],
);

hostile!(
    fifo_member,
    ALL,
    replaced("hosts", Item::Fifo),
    ["hosts'", "FIFO"],
);

hostile!(
    member_over_1mib,
    ALL,
    replaced("cluster.env", Item::Zeros(2 * MIB)),
    [
        "cluster.env'",
        "2097152 bytes",
        "over the 1048576-byte limit"
    ],
);

hostile!(
    unknown_member_over_1mib,
    ALL,
    Spec::example().with("notes.txt", Item::Zeros(MIB + 1)),
    ["notes.txt'", "over the 1048576-byte limit"],
);

/// A package member whose header claims 300 MiB, streamed honestly: refused from the
/// header, fast.
#[test]
fn package_over_256mib() {
    let mut items = Spec::example().items;
    items.push(("x.deb".into(), Item::Zeros(300 * MIB)));
    let want = ["bundle member 'x.deb'", "over the 268435456-byte limit"];
    let t = tempfile::tempdir().unwrap();
    let p = stream_bundle(&items, t.path(), None);
    refused_path("package_over_256mib [Tar]", &p, &want);
    let t = tempfile::tempdir().unwrap();
    let p = stream_bundle(&items, t.path(), Some(flate2::Compression::fast()));
    refused_path("package_over_256mib [Tgz]", &p, &want);
    let t = tempfile::tempdir().unwrap();
    let p = Spec {
        items: items.clone(),
    }
    .write_dir(t.path()); // sparse
    refused_path("package_over_256mib [Dir]", &p, &want);
}

/// The header claims 300 MiB but the archive ends right after it: only a reader that
/// judges the header before reading gives the size error.
#[test]
fn package_over_256mib_header_only() {
    let mut tar = Spec::example().tar_bytes();
    tar.truncate(tar.len() - 1024); // drop the end-of-archive blocks
    let mut h = tar::Header::new_gnu();
    h.set_path("x.deb").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(300 * MIB);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(&[0; 1024]);
    for fmt in ARCHIVES {
        let t = tempfile::tempdir().unwrap();
        let p = write_raw(&tar, *fmt, t.path());
        refused_path(
            &format!("package_over_256mib_header_only [{fmt:?}]"),
            &p,
            &["bundle member 'x.deb'", "over the 268435456-byte limit"],
        );
    }
}

/// Three 250 MiB packages (each under its own limit) expand past the 600 MiB stream
/// limit from a ~1 MiB tar.gz.
#[test]
fn gzip_bomb() {
    let mut items = Spec::example().items;
    for i in 1..=3 {
        items.push((format!("a{i}.deb"), Item::Zeros(250 * MIB)));
    }
    let t = tempfile::tempdir().unwrap();
    let p = stream_bundle(&items, t.path(), Some(flate2::Compression::fast()));
    let size = fs::metadata(&p).unwrap().len();
    assert!(size < 4 * MIB, "bomb is {size} bytes");
    refused_path(
        "gzip_bomb [Tgz]",
        &p,
        &[
            "error: bundle '",
            "expands past 629145600 bytes",
            "decompression bomb",
        ],
    );
}

fn many_members() -> Spec {
    let mut s = Spec::example();
    for i in 0..257 {
        s = s.with(&format!("extra-{i:03}"), Item::File(b"x".to_vec(), 0o644));
    }
    s
}

hostile!(
    more_than_256_members,
    ALL,
    many_members(),
    ["error: bundle '", "more than 256 members"],
);

hostile!(
    duplicate_member,
    ARCHIVES,
    Spec::example().with(
        "cluster.env",
        Item::File(b"CANONICAL_SERVICE='evil'\n".to_vec(), 0o644)
    ),
    ["bundle member 'cluster.env'", "appears twice"],
);

hostile!(
    duplicate_member_via_dot_slash,
    ARCHIVES,
    Spec::example().with(
        "./hosts",
        Item::File(b"10.9.9.9 istiod.istio-system.svc\n".to_vec(), 0o644)
    ),
    [
        "bundle member './hosts'",
        "appears twice",
        "also as 'hosts'"
    ],
);

#[test]
fn non_utf8_name() {
    let want = ["error: bundle '", "not UTF-8"];
    let spec = Spec::example().with("bad-NAME", Item::File(b"x".to_vec(), 0o644));
    let mut tar = spec.tar_bytes();
    patch_name(&mut tar, "bad-NAME", b"bad-\xff\xfe");
    for fmt in ARCHIVES {
        let t = tempfile::tempdir().unwrap();
        let p = write_raw(&tar, *fmt, t.path());
        refused_path(&format!("non_utf8_name [{fmt:?}]"), &p, &want);
    }
    let t = tempfile::tempdir().unwrap();
    let p = Spec::example().write_dir(t.path());
    fs::write(p.join(std::ffi::OsStr::from_bytes(b"bad-\xff\xfe")), "x").unwrap();
    refused_path("non_utf8_name [Dir]", &p, &want);
}

hostile!(
    nested_two_folders_deep,
    ARCHIVES,
    Spec::example_in("a/b"),
    ["bundle member 'a/b/", "nested more than one folder deep"],
);

hostile!(
    nested_two_folders_deep_dir,
    &[Dir],
    Spec::example_in("a/b"),
    ["bundle member 'a/b'", "extra directory"],
);

hostile!(
    nested_extra_dir_in_top_folder,
    ALL,
    Spec::example_in("vmintegration").with("vmintegration/sub/", Item::Dir),
    ["bundle member 'vmintegration/sub", "extra directory"],
);

fn two_top_folders() -> Spec {
    let mut s = Spec::default();
    for (i, (n, item)) in Spec::example().items.into_iter().enumerate() {
        let top = if i < 3 { "a" } else { "b" };
        s = s.with(&format!("{top}/{n}"), item);
    }
    s
}

hostile!(
    two_top_folders_archive,
    ARCHIVES,
    two_top_folders(),
    ["error: bundle '", "mixes members from different folders"],
);

hostile!(
    two_top_folders_dir,
    &[Dir],
    two_top_folders(),
    ["bundle member '", "extra directory"],
);

hostile!(
    files_beside_top_folder,
    ARCHIVES,
    Spec::example_in("vmintegration").with("hosts", Item::File(example_member("hosts"), 0o644)),
    ["error: bundle '", "mixes members from different folders"],
);

// A member name carrying a newline must not split the error into two lines (the
// second one forged by the bundle).
hostile!(
    member_name_with_newline,
    ALL,
    Spec::example().with(
        "evil\nerror: forged line",
        Item::Symlink("/etc/shadow".into())
    ),
    ["symlink"],
);

/// A header with a non-numeric checksum and a newline in its name: the tar reader's
/// error must still come out as one line.
#[test]
fn tar_error_with_newline_in_name() {
    let mut tar = Spec::example().tar_bytes();
    patch_name(&mut tar, "cluster.env", b"x\nerror: y");
    // Non-octal checksum (patch_name already wrote a valid one).
    tar[148..156].copy_from_slice(b"zzzzzz\0 ");
    for fmt in ARCHIVES {
        let t = tempfile::tempdir().unwrap();
        let p = write_raw(&tar, *fmt, t.path());
        refused_path(
            &format!("tar_error_with_newline_in_name [{fmt:?}]"),
            &p,
            &["error: bundle '", "not a readable"],
        );
    }
}

fn refused_file(case: &str, name: &str, data: &[u8], want: &[&str]) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join(name);
    fs::write(&p, data).unwrap();
    refused_path(case, &p, want);
}

#[test]
fn not_an_archive_text() {
    refused_file(
        "not_an_archive_text",
        "bundle.tar.gz",
        b"this is not a bundle\n",
        &["error: bundle '", "not a tar or tar.gz archive"],
    );
}

#[test]
fn not_an_archive_random() {
    refused_file(
        "not_an_archive_random",
        "bundle.tar",
        &noise(64 * 1024),
        &["error: bundle '", "not a tar or tar.gz archive"],
    );
}

#[test]
fn empty_file() {
    refused_file(
        "empty_file",
        "bundle.tar",
        b"",
        &["error: bundle '", "not a tar or tar.gz archive"],
    );
}

#[test]
fn gzip_of_garbage() {
    refused_file(
        "gzip_of_garbage",
        "bundle.tar.gz",
        &gzip(&noise(4096)),
        &["error: bundle '", "not a readable tar.gz archive"],
    );
}

#[test]
fn truncated_tgz() {
    let t = tempfile::tempdir().unwrap();
    let good = fs::read(Spec::example().write_tgz(t.path())).unwrap();
    for cut in [10, good.len() / 2] {
        refused_file(
            &format!("truncated_tgz at {cut}/{}", good.len()),
            "bundle.tar.gz",
            &good[..cut],
            &["error: bundle '", "not a readable tar.gz archive"],
        );
    }
}

/// The gzip trailer (CRC-32 and size) is the archive's only integrity check; a tar.gz
/// cut inside it, or with a wrong CRC, must be refused like any other corrupt tar.gz.
#[test]
fn corrupt_tgz_trailer() {
    let t = tempfile::tempdir().unwrap();
    let good = fs::read(Spec::example().write_tgz(t.path())).unwrap();
    let n = good.len();
    let mut bad_crc = good.clone();
    bad_crc[n - 8] ^= 0xff;
    for (what, data) in [
        ("cut 4", &good[..n - 4]),
        ("cut 8", &good[..n - 8]),
        ("crc flipped", &bad_crc[..]),
    ] {
        refused_file(
            &format!("corrupt_tgz_trailer {what}"),
            "bundle.tar.gz",
            data,
            &["error: bundle '", "not a readable tar.gz archive"],
        );
    }
}

#[test]
fn truncated_tar_mid_member() {
    let tar = Spec::example().tar_bytes();
    // cluster.env is the first member: header at 0, data from 512.
    refused_file(
        "truncated_tar_mid_member",
        "bundle.tar",
        &tar[..700],
        &["cluster.env'", "truncated"],
    );
}

/// The bundle path is a FIFO: refused without opening (which would block).
#[test]
fn bundle_is_fifo() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("bundle.tar.gz");
    let st = std::process::Command::new("mkfifo")
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    refused_path(
        "bundle_is_fifo",
        &p,
        &["error: bundle '", "not a file or directory"],
    );
}

/// The bundle path is a character device that never ends.
#[test]
fn bundle_is_char_device() {
    refused_path(
        "bundle_is_char_device",
        Path::new("/dev/zero"),
        &["error: bundle '/dev/zero'", "not a file or directory"],
    );
}

/// A valid, empty tar (just the two end-of-archive blocks).
#[test]
fn empty_tar() {
    let tar = Spec::default().tar_bytes();
    refused_file("empty_tar", "bundle.tar", &tar, &["error: bundle"]);
}

#[test]
fn empty_tgz() {
    let tar = Spec::default().tar_bytes();
    refused_file(
        "empty_tgz",
        "bundle.tar.gz",
        &gzip(&tar),
        &["bundle member 'cluster.env'", "missing"],
    );
}

#[test]
fn empty_dir() {
    let t = tempfile::tempdir().unwrap();
    let p = Spec::default().write_dir(t.path());
    refused_path("empty_dir", &p, &["bundle member 'cluster.env'", "missing"]);
}

#[test]
fn bundle_does_not_exist() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("no-such-bundle.tar.gz");
    refused_path(
        "bundle_does_not_exist",
        &p,
        &[
            "error: bundle '",
            "no-such-bundle.tar.gz'",
            "does not exist",
        ],
    );
}

/// The single top folder of a directory bundle is a symlink to a directory elsewhere.
#[test]
fn dir_top_folder_is_symlink() {
    let t = tempfile::tempdir().unwrap();
    let top = t.path().join("bundle");
    fs::create_dir(&top).unwrap();
    std::os::unix::fs::symlink(example_dir(), top.join("vmintegration")).unwrap();
    refused_path(
        "dir_top_folder_is_symlink",
        &top,
        &["bundle member 'vmintegration'", "symlink"],
    );
}

/// A directory bundle whose `hosts` is a hard link to a file outside the bundle: the
/// archive form of this (a hard-link member) is refused, so the on-disk form must be
/// too, or the bundle reads (as root) a file its author does not control the path of.
#[test]
fn dir_hardlink_to_outside() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside-hosts");
    fs::write(&outside, "192.0.2.99 istiod.istio-system.svc\n").unwrap();
    let p = Spec::example().without("hosts").write_dir(t.path());
    fs::hard_link(&outside, p.join("hosts")).unwrap();
    refused_path(
        "dir_hardlink_to_outside",
        &p,
        &["bundle member 'hosts'", "hard link"],
    );
}

// ---------------------------------------------------------------------------------
// Missing members
// ---------------------------------------------------------------------------------

hostile!(
    missing_cluster_env,
    ALL,
    Spec::example().without("cluster.env"),
    ["bundle member 'cluster.env'", "missing"],
);
hostile!(
    missing_istio_token,
    ALL,
    Spec::example().without("istio-token"),
    ["bundle member 'istio-token'", "missing"],
);
hostile!(
    missing_mesh_yaml,
    ALL,
    Spec::example().without("mesh.yaml"),
    ["bundle member 'mesh.yaml'", "missing"],
);
hostile!(
    missing_root_cert,
    ALL,
    Spec::example().without("root-cert.pem"),
    ["bundle member 'root-cert.pem'", "missing"],
);
hostile!(
    missing_hosts,
    ALL,
    Spec::example().without("hosts"),
    ["bundle member 'hosts'", "missing"],
);
hostile!(
    missing_in_top_folder,
    ALL,
    Spec::example_in("vmintegration").without("istio-token"),
    ["bundle member 'istio-token'", "missing"],
);
hostile!(
    key_without_cert_chain,
    ALL,
    Spec::example().set("key.pem", expired_ca().1.clone()),
    [
        "bundle member 'cert-chain.pem'",
        "missing while key.pem is present"
    ],
);
hostile!(
    cert_chain_without_key,
    ALL,
    Spec::example().set("cert-chain.pem", example_member("root-cert.pem")),
    [
        "bundle member 'key.pem'",
        "missing while cert-chain.pem is present"
    ],
);

// ---------------------------------------------------------------------------------
// cluster.env: sourced by bash as root
// ---------------------------------------------------------------------------------

hostile!(
    env_command_substitution,
    ALL,
    env_line3("ISTIO_META_X=$(touch /tmp/pwned)"),
    ["bundle member 'cluster.env' line 3: value uses '$'"],
);
hostile!(
    env_backticks,
    ALL,
    env_line3("ISTIO_META_X=`id`"),
    ["bundle member 'cluster.env' line 3: ", "backtick"],
);
hostile!(
    env_semicolon,
    ALL,
    env_line3("ISTIO_META_X=x;reboot"),
    [
        "bundle member 'cluster.env' line 3: ",
        "unquoted character ';'"
    ],
);
hostile!(
    env_unquoted_space,
    ALL,
    env_line3("ISTIO_META_X=a reboot"),
    [
        "bundle member 'cluster.env' line 3: ",
        "unexpected text after the value"
    ],
);
hostile!(
    env_double_quoted_variable,
    ALL,
    env_line3("ISTIO_META_X=\"$HOME\""),
    ["bundle member 'cluster.env' line 3: value uses '$'"],
);
hostile!(
    env_double_quoted_command,
    ALL,
    env_line3("ISTIO_META_X=\"$(id)\""),
    ["bundle member 'cluster.env' line 3: value uses '$'"],
);
hostile!(
    env_path,
    ALL,
    env_line3("PATH=/tmp/evil:/usr/bin"),
    [
        "bundle member 'cluster.env' line 3: ",
        "key PATH",
        "not allowed"
    ],
);
hostile!(
    env_ld_preload,
    ALL,
    env_line3("LD_PRELOAD=/tmp/evil.so"),
    [
        "bundle member 'cluster.env' line 3: ",
        "key LD_PRELOAD",
        "not allowed"
    ],
);
hostile!(
    env_bash_env,
    ALL,
    env_line3("BASH_ENV=/tmp/evil.sh"),
    [
        "bundle member 'cluster.env' line 3: ",
        "key BASH_ENV",
        "not allowed"
    ],
);
hostile!(
    env_lower_case_key,
    ALL,
    env_line3("istio_meta_x=1"),
    [
        "bundle member 'cluster.env' line 3: ",
        "'istio_meta_x'",
        "upper-case"
    ],
);
hostile!(
    env_spaces_around_equals,
    ALL,
    env_line3("ISTIO_META_X = v"),
    [
        "bundle member 'cluster.env' line 3: ",
        "expected '=' right after ISTIO_META_X"
    ],
);
hostile!(
    env_export_two_assignments,
    ALL,
    env_line3("export ISTIO_META_X=1 reboot"),
    [
        "bundle member 'cluster.env' line 3: ",
        "unexpected text after the value"
    ],
);
// pilot-agent reads ISTIO_META_POD_PORTS through PodPortList.UnmarshalJSON
// (istio/istio pkg/model/proxy.go): a double-encoded list fails its bootstrap.
hostile!(
    env_pod_ports_double_encoded,
    ALL,
    env_line3(r#"ISTIO_META_POD_PORTS='"[{\"name\":\"http\",\"containerPort\":8080}]"'"#),
    [
        "bundle member 'cluster.env' line 3: ",
        "JSON-encoded twice",
        r#"write ISTIO_META_POD_PORTS='[{"name":"http","containerPort":8080}]'"#
    ],
);
// pkg/bootstrap/config.go jsonStringToMap: labels are a JSON object of strings.
hostile!(
    env_labels_not_an_object,
    ALL,
    env_line3("ISTIO_METAJSON_LABELS='app=web'"),
    [
        "bundle member 'cluster.env' line 3: ",
        "ISTIO_METAJSON_LABELS must be a JSON object"
    ],
);
hostile!(
    env_output_certs_system_dir,
    ALL,
    env_line3("OUTPUT_CERTS=/etc"),
    [
        "bundle member 'cluster.env' line 3: ",
        "OUTPUT_CERTS='/etc' is a system directory"
    ],
);
hostile!(
    env_dns_capture_not_bool,
    ALL,
    env_line3("ISTIO_META_DNS_CAPTURE=yes"),
    ["bundle member 'cluster.env' line 3: ", "is not a boolean"],
);
hostile!(
    env_bare_command,
    ALL,
    env_line3("reboot"),
    ["bundle member 'cluster.env' line 3: ", "expected KEY=value"],
);
hostile!(
    env_crlf,
    ALL,
    Spec::example().set(
        "cluster.env",
        String::from_utf8(example_member("cluster.env"))
            .unwrap()
            .replace('\n', "\r\n")
    ),
    ["bundle member 'cluster.env' line 1: ", "CRLF"],
);
hostile!(
    env_svc_ip_quoted_metacharacters,
    ALL,
    env_line3("ISTIO_SVC_IP='10.0.0.1;reboot'"),
    [
        "bundle member 'cluster.env' line 3: ",
        "ISTIO_SVC_IP must be an IPv4 or IPv6 address"
    ],
);
hostile!(
    env_svc_ip_unquoted_pipe,
    ALL,
    env_line3("ISTIO_SVC_IP=10.0.0.1|nc"),
    [
        "bundle member 'cluster.env' line 3: ",
        "unquoted character '|'"
    ],
);
hostile!(
    env_unterminated_quote,
    ALL,
    env_line3("ISTIO_META_X='open"),
    [
        "bundle member 'cluster.env' line 3: ",
        "unterminated single quote"
    ],
);
hostile!(
    env_not_utf8,
    ALL,
    Spec::example().set(
        "cluster.env",
        b"CANONICAL_SERVICE='vm-app'\nA='\xff'\n".to_vec()
    ),
    ["bundle member 'cluster.env' line 2: ", "not valid UTF-8"],
);
hostile!(
    env_terminal_escape,
    ALL,
    env_line3("ISTIO\x1b]0;owned\x07=1"),
    ["bundle member 'cluster.env' line 3: ", "expected KEY=value"],
);

// ---------------------------------------------------------------------------------
// mesh.yaml
// ---------------------------------------------------------------------------------

hostile!(
    mesh_not_a_mapping,
    ALL,
    mesh("- a\n- b\n"),
    ["bundle member 'mesh.yaml': ", "must be a YAML mapping"],
);
hostile!(
    mesh_scalar,
    ALL,
    mesh("just a string\n"),
    ["bundle member 'mesh.yaml': ", "must be a YAML mapping"],
);

fn alias_bomb() -> String {
    let mut s = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        s.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    s
}

// pilot/cmd/pilot-agent/config/config.go getMeshConfig: a proxyMetadata value that is
// not a string makes the mesh config unreadable and the agent does not start.
hostile!(
    mesh_proxy_metadata_unquoted_bool,
    ALL,
    mesh("defaultConfig:\n  proxyMetadata:\n    ISTIO_META_DNS_CAPTURE: true\n"),
    [
        "bundle member 'mesh.yaml': ",
        "'defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE' is true, not a string",
        "quote it (ISTIO_META_DNS_CAPTURE: \"true\")"
    ],
);
hostile!(
    mesh_alias_bomb,
    ALL,
    mesh(&alias_bomb()),
    ["bundle member 'mesh.yaml': ", "not valid YAML"],
);
hostile!(
    mesh_deep_nesting,
    ALL,
    mesh(&format!("defaultConfig: {}\n", "[".repeat(100_000))),
    ["bundle member 'mesh.yaml': ", "not valid YAML"],
);
hostile!(
    mesh_bad_yaml,
    ALL,
    mesh("defaultConfig: [unclosed\n"),
    ["bundle member 'mesh.yaml': ", "not valid YAML"],
);
hostile!(
    mesh_discovery_address_injection,
    ALL,
    mesh("defaultConfig:\n  discoveryAddress: 'istiod;reboot:15012'\n"),
    [
        "bundle member 'mesh.yaml': ",
        "'defaultConfig.discoveryAddress'",
        "is not host:port"
    ],
);
hostile!(
    mesh_discovery_address_no_port,
    ALL,
    mesh("defaultConfig:\n  discoveryAddress: istiod.istio-system.svc\n"),
    [
        "bundle member 'mesh.yaml': ",
        "'defaultConfig.discoveryAddress'",
        "is not host:port"
    ],
);
hostile!(
    mesh_discovery_address_not_string,
    ALL,
    mesh("defaultConfig:\n  discoveryAddress: [a, b]\n"),
    ["bundle member 'mesh.yaml': ", "must be a string host:port"],
);

// ---------------------------------------------------------------------------------
// istio-token
// ---------------------------------------------------------------------------------

hostile!(
    token_not_a_jwt,
    ALL,
    Spec::example().set("istio-token", "this-is-not-a-token\n"),
    ["bundle member 'istio-token': ", "not a JWT"],
);
hostile!(
    token_claims_not_json,
    ALL,
    Spec::example().set("istio-token", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln"),
    ["bundle member 'istio-token': ", "not a JWT"],
);
hostile!(
    token_expired,
    ALL,
    Spec::example().set("istio-token", expired_token()),
    [
        "bundle member 'istio-token': ",
        "token expired at 2020-09-13T12:26:40Z",
        "--tokenDuration",
        "--allow-expired-token",
    ],
);
hostile!(
    token_expired_before_any_date,
    ALL,
    Spec::example().set(
        "istio-token",
        jwt(r#"{"aud":["istio-ca"],"exp":-1e300,"sub":"system:serviceaccount:vm-ns:vm-sa"}"#)
    ),
    [
        "bundle member 'istio-token': ",
        "token expired at",
        "--tokenDuration"
    ],
);

/// `--allow-expired-token` turns the expired-token refusal into a warning.
#[test]
fn token_expired_allowed_with_flag() {
    let spec = Spec::example().set("istio-token", expired_token());
    for &fmt in ALL {
        let t = tempfile::tempdir().unwrap();
        let p = write_bundle(&spec, fmt, t.path());
        let out = check_cmd(&p, &["--allow-expired-token"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "check [{fmt:?}]: {stderr}");
        assert!(
            stderr.contains(
                "warning: bundle member 'istio-token': token expired at 2020-09-13T12:26:40Z"
            ),
            "check [{fmt:?}]: {stderr}"
        );
        let root = prepared_root();
        let out = apply_cmd(&root, &p, &["--allow-expired-token"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "apply [{fmt:?}]: {stderr}");
        assert!(
            stderr.contains("token expired at"),
            "apply [{fmt:?}]: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------
// root-cert.pem
// ---------------------------------------------------------------------------------

hostile!(
    root_cert_is_private_key,
    ALL,
    root_cert(expired_ca().1.clone()),
    [
        "bundle member 'root-cert.pem' line 1: ",
        "contains a private key"
    ],
);

fn cert_then_key() -> Vec<u8> {
    let mut v = example_member("root-cert.pem");
    v.extend_from_slice(&expired_ca().1);
    v
}

hostile!(
    root_cert_with_private_key_appended,
    ALL,
    root_cert(cert_then_key()),
    [
        "bundle member 'root-cert.pem' line 20: ",
        "contains a private key"
    ],
);
hostile!(
    root_cert_garbage,
    ALL,
    root_cert("hello, I am not a certificate\n"),
    [
        "bundle member 'root-cert.pem' line 1: ",
        "text outside a PEM block"
    ],
);
hostile!(
    root_cert_binary,
    ALL,
    root_cert(noise(600)),
    ["bundle member 'root-cert.pem': ", "not PEM text"],
);
hostile!(
    root_cert_not_x509,
    ALL,
    root_cert("-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n"),
    [
        "bundle member 'root-cert.pem' line 1: ",
        "not a valid X.509 certificate"
    ],
);
hostile!(
    root_cert_no_end,
    ALL,
    root_cert("-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n"),
    ["bundle member 'root-cert.pem' line 1: ", "no END line"],
);
hostile!(
    root_cert_expired,
    ALL,
    root_cert(expired_ca().0.clone()),
    [
        "bundle member 'root-cert.pem': ",
        "CA certificate 'O=old' expired at 2021-01-01T00:00:00Z",
    ],
);

// ---------------------------------------------------------------------------------
// hosts
// ---------------------------------------------------------------------------------

hostile!(
    hosts_remaps_localhost,
    ALL,
    hosts("192.0.2.10 istiod.istio-system.svc\n192.0.2.66 localhost\n"),
    ["bundle member 'hosts' line 2: ", "remaps 'localhost'"],
);
hostile!(
    hosts_bad_ip,
    ALL,
    hosts("999.0.2.10 istiod.istio-system.svc\n"),
    [
        "bundle member 'hosts' line 1: ",
        "'999.0.2.10' is not an IPv4 or IPv6 address"
    ],
);
hostile!(
    hosts_bad_hostname,
    ALL,
    hosts("192.0.2.10 istiod;reboot\n"),
    [
        "bundle member 'hosts' line 1: ",
        "'istiod;reboot' is not a valid host name"
    ],
);
hostile!(
    hosts_no_name,
    ALL,
    hosts("192.0.2.10\n"),
    ["bundle member 'hosts' line 1: ", "has no host name"],
);
