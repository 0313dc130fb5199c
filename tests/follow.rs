//! `health::follow::Follower`: a `tail -F` driven by inotify. Every case asserts the exact
//! sequence of delivered lines (nothing lost, nothing twice, order kept).
//!
//! No assertion is about time: the only bound is a hang guard in [`collect`] (lines that
//! never arrive fail with a list of what is missing instead of blocking the test run).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmagent::health::follow::{Follower, Line, MAX_LINE};

/// Hang guard for lines written before collecting (not a timing assertion): 60 s, as a
/// loaded machine (parallel builds, fuzzers) can hold a thread off the CPU for seconds.
const GUARD: Duration = Duration::from_secs(60);

/// Hang guard for the million-line bursts (debug build; still only a guard): a minute
/// unloaded, so five under load.
const BURST_GUARD: Duration = Duration::from_secs(300);

/// One delivered line, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    log: usize,
    bytes: Vec<u8>,
    len: usize,
}

impl Got {
    fn of(l: &Line<'_>) -> Self {
        Got {
            log: l.log,
            bytes: l.bytes.to_vec(),
            len: l.len,
        }
    }
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned();
    if b.len() > 80 {
        format!("{s:?}... ({} bytes)", b.len())
    } else {
        format!("{s:?}")
    }
}

fn show_all(v: &[Got]) -> String {
    v.iter()
        .enumerate()
        .map(|(i, g)| format!("  [{i}] log={} len={} {}\n", g.log, g.len, show(&g.bytes)))
        .collect()
}

/// Polls (and waits on inotify between polls) until at least `want` lines arrived or the
/// hang guard passes; then polls once more so a duplicate delivered late shows up too.
fn collect(f: &mut Follower, want: usize) -> Vec<Got> {
    let start = Instant::now();
    let mut got = Vec::new();
    loop {
        f.poll(|l| got.push(Got::of(&l))).expect("poll");
        if got.len() >= want {
            break;
        }
        assert!(
            start.elapsed() < GUARD,
            "only {} of {want} lines arrived within the {GUARD:?} hang guard; got:\n{}",
            got.len(),
            show_all(&got)
        );
        f.wait(Some(Duration::from_millis(100))).expect("wait");
    }
    f.poll(|l| got.push(Got::of(&l))).expect("poll");
    got
}

/// Collects and asserts exactly `want` (log index, bytes) in order, none cut.
fn expect(f: &mut Follower, want: &[(usize, &[u8])]) {
    let got = collect(f, want.len());
    let same = got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, (log, b))| g.log == *log && g.bytes == *b && g.len == b.len());
    if !same {
        let want_s: String = want
            .iter()
            .enumerate()
            .map(|(i, (log, b))| format!("  [{i}] log={log} len={} {}\n", b.len(), show(b)))
            .collect();
        panic!(
            "delivered lines differ\nwanted {}:\n{want_s}got {}:\n{}",
            want.len(),
            got.len(),
            show_all(&got)
        );
    }
}

/// `expect` for one log (index 0) given as text lines.
fn expect0(f: &mut Follower, want: &[&str]) {
    let w: Vec<(usize, &[u8])> = want.iter().map(|s| (0, s.as_bytes())).collect();
    expect(f, &w);
}

/// Polls once and asserts nothing is delivered (what is on disk is all accounted for).
fn expect_nothing(f: &mut Follower, why: &str) {
    let mut got = Vec::new();
    f.poll(|l| got.push(Got::of(&l))).expect("poll");
    assert!(
        got.is_empty(),
        "{why}: expected no line, got:\n{}",
        show_all(&got)
    );
}

/// An appending writer (like the agent's stdout redirected with `>>`).
fn appender(p: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .expect("open for append")
}

fn put(w: &mut File, s: &str) {
    w.write_all(s.as_bytes()).expect("write");
}

fn tmp_log() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("istio.log");
    (d, p)
}

// ---------------------------------------------------------------------------------------
// 1. Start position

#[test]
fn existing_content_is_skipped_and_appended_lines_are_delivered() {
    let (_d, p) = tmp_log();
    fs::write(&p, "old 1\nold 2\nold 3\n").unwrap();
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    expect_nothing(&mut f, "content present before new()");
    let mut w = appender(&p);
    put(&mut w, "new 1\nnew 2\n");
    expect0(&mut f, &["new 1", "new 2"]);
    put(&mut w, "new 3\n");
    expect0(&mut f, &["new 3"]);
    expect_nothing(&mut f, "after everything was read");
}

#[test]
fn paths_are_reported_in_order() {
    let d = tempfile::tempdir().unwrap();
    let ps = vec![d.path().join("istio.log"), d.path().join("istio.err.log")];
    let f = Follower::new(&ps).unwrap();
    let got: Vec<&Path> = f.paths().collect();
    assert_eq!(got, vec![ps[0].as_path(), ps[1].as_path()]);
}

#[test]
fn empty_lines_and_crlf_are_kept_byte_exact() {
    let (_d, p) = tmp_log();
    File::create(&p).unwrap();
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    let mut w = appender(&p);
    put(&mut w, "\n\nx\r\n \n");
    expect0(&mut f, &["", "", "x\r", " "]);
}

// ---------------------------------------------------------------------------------------
// 2. Rotation by rename

#[test]
fn rotation_by_rename_reads_old_file_to_end_then_new_file_from_start() {
    let (d, p) = tmp_log();
    let rotated = d.path().join("istio.log.1");
    let mut old = appender(&p);
    put(&mut old, "before new\n");
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    put(&mut old, "a1\na2\n");
    expect0(&mut f, &["a1", "a2"]);

    fs::rename(&p, &rotated).unwrap();
    expect_nothing(&mut f, "renamed away, nothing written");
    // The writer still holds the old file: what it writes there before reopening counts.
    put(&mut old, "a3\n");
    expect0(&mut f, &["a3"]);
    put(&mut old, "a4\na5\n");

    let mut new = appender(&p);
    put(&mut new, "b1\nb2\n");
    expect0(&mut f, &["a4", "a5", "b1", "b2"]);
    put(&mut new, "b3\n");
    expect0(&mut f, &["b3"]);
    // The old file is no longer followed.
    put(&mut old, "late write to the rotated file\n");
    expect_nothing(&mut f, "old file after the switch");
}

#[test]
fn rotation_without_polls_in_between_loses_nothing() {
    let (d, p) = tmp_log();
    let mut old = appender(&p);
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    put(&mut old, "a1\n");
    fs::rename(&p, d.path().join("istio.log.1")).unwrap();
    put(&mut old, "a2\n");
    let mut new = appender(&p);
    put(&mut new, "b1\n");
    expect0(&mut f, &["a1", "a2", "b1"]);
}

#[test]
fn partial_line_at_end_of_rotated_file_is_delivered_at_the_switch() {
    let (d, p) = tmp_log();
    let mut old = appender(&p);
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    put(&mut old, "a1\nunfinished");
    expect0(&mut f, &["a1"]);
    fs::rename(&p, d.path().join("istio.log.1")).unwrap();
    expect_nothing(&mut f, "partial line while the path is missing");
    put(&mut old, " still");
    let mut new = appender(&p);
    put(&mut new, "b1\n");
    expect0(&mut f, &["unfinished still", "b1"]);
}

#[test]
fn rotation_twice_in_a_row() {
    let (d, p) = tmp_log();
    let r1 = d.path().join("istio.log.1");
    let r2 = d.path().join("istio.log.2");
    let mut a = appender(&p);
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    put(&mut a, "a1\n");
    expect0(&mut f, &["a1"]);

    // First rotation, lines in the new file, then a second rotation.
    fs::rename(&p, &r1).unwrap();
    put(&mut a, "a2\n");
    let mut b = appender(&p);
    put(&mut b, "b1\n");
    expect0(&mut f, &["a2", "b1"]);
    fs::rename(&r1, &r2).unwrap();
    fs::rename(&p, &r1).unwrap();
    put(&mut b, "b2\n");
    let mut c = appender(&p);
    put(&mut c, "c1\n");
    expect0(&mut f, &["b2", "c1"]);

    // Two rotations back to back with no poll between them (the middle file stays empty).
    put(&mut c, "c2\n");
    fs::rename(&p, &r1).unwrap();
    put(&mut c, "c3\n");
    File::create(&p).unwrap();
    fs::rename(&p, &r2).unwrap();
    let mut e = appender(&p);
    put(&mut e, "e1\n");
    expect0(&mut f, &["c2", "c3", "e1"]);
}

#[test]
fn deleted_and_recreated_file_is_read_from_start() {
    let (_d, p) = tmp_log();
    let mut old = appender(&p);
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    put(&mut old, "a1\n");
    fs::remove_file(&p).unwrap();
    put(&mut old, "a2\n");
    expect0(&mut f, &["a1", "a2"]);
    let mut new = appender(&p);
    put(&mut new, "b1\n");
    expect0(&mut f, &["b1"]);
}

// ---------------------------------------------------------------------------------------
// 3. copytruncate

#[test]
fn copytruncate_restarts_at_zero() {
    let (d, p) = tmp_log();
    let mut w = appender(&p);
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    let before: Vec<String> = (0..50).map(|i| format!("before truncation {i}")).collect();
    for l in &before {
        put(&mut w, &format!("{l}\n"));
    }
    let want: Vec<&str> = before.iter().map(String::as_str).collect();
    expect0(&mut f, &want);

    // logrotate copytruncate: copy, then truncate the same inode in place.
    fs::copy(&p, d.path().join("istio.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    // The writer appends (O_APPEND), so it continues at the new end, 0.
    put(&mut w, "after 1\nafter 2\n");
    expect0(&mut f, &["after 1", "after 2"]);
    put(&mut w, "after 3\n");
    expect0(&mut f, &["after 3"]);
}

#[test]
fn rewritten_past_the_old_end_before_a_poll_is_read_from_zero() {
    // Older istio-start.sh starts the agent with `> istio.log`: the file is truncated and
    // the new process may write more than the old size before the follower looks.
    let (_d, p) = tmp_log();
    let mut w = appender(&p);
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    put(&mut w, "2024-08-15T09:51:42.000001Z\told run\n");
    expect0(&mut f, &["2024-08-15T09:51:42.000001Z\told run"]);
    drop(w);
    let new: Vec<String> = (0..20)
        .map(|i| format!("2024-08-15T09:52:00.{i:06}Z\tnew run line {i}"))
        .collect();
    let body: String = new.iter().map(|l| format!("{l}\n")).collect();
    fs::write(&p, body).unwrap(); // O_TRUNC, then far past the old end
    let want: Vec<&str> = new.iter().map(String::as_str).collect();
    expect0(&mut f, &want);
}

#[test]
fn copytruncate_seen_before_new_writes() {
    let (_d, p) = tmp_log();
    let mut w = appender(&p);
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    put(&mut w, "one line that is long enough\n");
    expect0(&mut f, &["one line that is long enough"]);
    w.set_len(0).unwrap();
    expect_nothing(&mut f, "truncated to empty");
    put(&mut w, "x\n");
    expect0(&mut f, &["x"]);
}

#[test]
fn copytruncate_delivers_held_partial_line_first() {
    let (_d, p) = tmp_log();
    let mut w = appender(&p);
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    put(&mut w, "complete\nheld partial");
    expect0(&mut f, &["complete"]);
    w.set_len(0).unwrap();
    put(&mut w, "new\n");
    expect0(&mut f, &["held partial", "new"]);
}

// ---------------------------------------------------------------------------------------
// 4. Late files and directories

#[test]
fn file_created_late_is_read_from_byte_zero() {
    let (_d, p) = tmp_log();
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    expect_nothing(&mut f, "missing file");
    let mut w = appender(&p);
    put(&mut w, "first\nsecond\n");
    expect0(&mut f, &["first", "second"]);
    put(&mut w, "third\n");
    expect0(&mut f, &["third"]);
}

#[test]
fn file_created_late_with_content_before_first_poll() {
    let (_d, p) = tmp_log();
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    fs::write(&p, "written at creation\n").unwrap();
    expect0(&mut f, &["written at creation"]);
}

#[test]
fn directory_created_late_all_at_once() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("var/log/istio/istio.log");
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    expect_nothing(&mut f, "missing directory");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    expect_nothing(&mut f, "directory without the file");
    let mut w = appender(&p);
    put(&mut w, "l1\nl2\n");
    expect0(&mut f, &["l1", "l2"]);
    put(&mut w, "l3\n");
    expect0(&mut f, &["l3"]);
}

/// Each step of the late creation wakes `wait` (the nearest existing ancestor is watched,
/// then the next one, then the log's own directory): nothing is seen only by a timeout.
/// The 10 s is a hang guard; a missing wake-up is the failure, not slowness.
#[test]
fn directory_created_late_step_by_step_wakes_wait() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("var/log/istio/istio.log");
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    expect_nothing(&mut f, "missing directory");
    let steps = ["var", "var/log", "var/log/istio"];
    for s in steps {
        fs::create_dir(d.path().join(s)).unwrap();
        assert!(
            f.wait(Some(GUARD)).unwrap(),
            "creating {s} did not wake wait()"
        );
        expect_nothing(&mut f, s);
    }
    let mut w = appender(&p);
    assert!(
        f.wait(Some(GUARD)).unwrap(),
        "creating the log did not wake wait()"
    );
    put(&mut w, "hello\n");
    expect0(&mut f, &["hello"]);
    put(&mut w, "again\n");
    assert!(
        f.wait(Some(GUARD)).unwrap(),
        "a write to the late log did not wake wait()"
    );
    expect0(&mut f, &["again"]);
}

#[test]
fn directory_deleted_and_recreated_is_followed_again() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("istio");
    let p = dir.join("istio.log");
    fs::create_dir(&dir).unwrap();
    let mut w = appender(&p);
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    put(&mut w, "a1\n");
    expect0(&mut f, &["a1"]);
    drop(w);
    fs::remove_dir_all(&dir).unwrap();
    expect_nothing(&mut f, "directory gone");
    fs::create_dir(&dir).unwrap();
    let mut w = appender(&p);
    put(&mut w, "b1\n");
    expect0(&mut f, &["b1"]);
    put(&mut w, "b2\n");
    // Lines only (found by polls); the wake-ups after a directory is made again are
    // `recreated_directory_with_reused_inode_still_wakes_wait` (ignored: a known bug).
    expect0(&mut f, &["b2"]);
}

// ---------------------------------------------------------------------------------------
// 5. Partial lines

#[test]
fn partial_line_waits_for_its_newline() {
    let (_d, p) = tmp_log();
    File::create(&p).unwrap();
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    let mut w = appender(&p);
    put(&mut w, "abc");
    expect_nothing(&mut f, "line without newline");
    put(&mut w, "def\n");
    expect0(&mut f, &["abcdef"]);
    // A line in three pieces, with a complete line after it in the same write.
    put(&mut w, "x");
    expect_nothing(&mut f, "piece 1");
    put(&mut w, "y");
    expect_nothing(&mut f, "piece 2");
    put(&mut w, "z\nnext\n");
    expect0(&mut f, &["xyz", "next"]);
}

// ---------------------------------------------------------------------------------------
// 6. Long lines

const BIG: usize = 10 * 1024 * 1024;

fn big_line() -> Vec<u8> {
    (0..BIG).map(|i| b'a' + (i % 26) as u8).collect()
}

fn check_long(max: Option<usize>, pieces: usize) {
    let (_d, p) = tmp_log();
    File::create(&p).unwrap();
    let mut f = match max {
        Some(m) => Follower::with_max_line(std::slice::from_ref(&p), m).unwrap(),
        None => Follower::new(std::slice::from_ref(&p)).unwrap(),
    };
    let cut = max.unwrap_or(MAX_LINE);
    let line = big_line();
    let mut w = appender(&p);
    put(&mut w, "before\n");
    // Written in `pieces` parts with a poll after each: the line stays partial across polls.
    let step = BIG.div_ceil(pieces);
    let mut early = Vec::new();
    for chunk in line.chunks(step) {
        w.write_all(chunk).unwrap();
        f.poll(|l| early.push(Got::of(&l))).unwrap();
    }
    put(&mut w, "\nafter\n");
    let mut got = early;
    got.extend(collect(&mut f, 3 - got.len().min(3)));
    let desc = format!("max={cut} pieces={pieces}");
    assert_eq!(got.len(), 3, "{desc}: lines:\n{}", show_all(&got));
    assert_eq!(got[0].bytes, b"before", "{desc}");
    assert_eq!(got[0].len, 6, "{desc}");
    let l = &got[1];
    assert_eq!(l.len, BIG, "{desc}: real length of the long line");
    assert_eq!(
        l.bytes.len(),
        cut,
        "{desc}: delivered bytes cut to the limit"
    );
    assert_eq!(
        &l.bytes[..],
        &line[..cut],
        "{desc}: delivered bytes are the prefix"
    );
    assert_eq!(got[2].bytes, b"after", "{desc}");
    assert_eq!(got[2].len, 5, "{desc}");
}

#[test]
fn ten_mb_line_default_limit_one_write() {
    check_long(None, 1);
}

#[test]
fn ten_mb_line_default_limit_across_polls() {
    check_long(None, 7);
}

#[test]
fn ten_mb_line_small_limit() {
    check_long(Some(100), 1);
    check_long(Some(100), 13);
}

#[test]
fn truncated_flag_and_text() {
    let (_d, p) = tmp_log();
    File::create(&p).unwrap();
    let mut f = Follower::with_max_line(std::slice::from_ref(&p), 4).unwrap();
    let mut w = appender(&p);
    put(&mut w, "abc\nabcd\nabcde\n");
    let mut flags = Vec::new();
    f.poll(|l| flags.push((l.text().into_owned(), l.len, l.truncated())))
        .unwrap();
    assert_eq!(
        flags,
        vec![
            ("abc".to_string(), 3, false),
            ("abcd".to_string(), 4, false),
            ("abcd".to_string(), 5, true),
        ]
    );
}

#[test]
fn long_partial_line_at_rotation_is_cut_with_real_length() {
    let (d, p) = tmp_log();
    let mut old = appender(&p);
    let mut f = Follower::with_max_line(std::slice::from_ref(&p), 10).unwrap();
    let tail = "0123456789abcdefghij"; // 20 bytes, no newline
    put(&mut old, tail);
    expect_nothing(&mut f, "partial");
    fs::rename(&p, d.path().join("istio.log.1")).unwrap();
    let mut new = appender(&p);
    put(&mut new, "b\n");
    let got = collect(&mut f, 2);
    assert_eq!(got.len(), 2, "{}", show_all(&got));
    assert_eq!(got[0].bytes, b"0123456789");
    assert_eq!(got[0].len, 20);
    assert_eq!(got[1].bytes, b"b");
}

// ---------------------------------------------------------------------------------------
// 7. Non-UTF-8

#[test]
fn non_utf8_bytes_are_delivered_byte_exact() {
    let (_d, p) = tmp_log();
    File::create(&p).unwrap();
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    let lines: [&[u8]; 4] = [
        b"\xff\xfe\x00bad\x80",
        b"half \xe2\x82",
        "caf\u{e9} \u{1f600}".as_bytes(),
        b"\xc3\x28\tinvalid 2-byte",
    ];
    let mut w = appender(&p);
    for l in lines {
        w.write_all(l).unwrap();
        w.write_all(b"\n").unwrap();
    }
    let got = collect(&mut f, lines.len());
    assert_eq!(got.len(), lines.len(), "{}", show_all(&got));
    for (g, l) in got.iter().zip(lines) {
        assert_eq!(g.bytes, l);
        assert_eq!(g.len, l.len());
    }
    // text() is lossy and does not panic.
    let mut texts = Vec::new();
    let mut w2 = appender(&p);
    for l in lines {
        w2.write_all(l).unwrap();
        w2.write_all(b"\n").unwrap();
    }
    f.poll(|l| texts.push(l.text().into_owned())).unwrap();
    assert_eq!(texts.len(), lines.len());
    assert!(texts[0].contains('\u{fffd}') && texts[0].contains("bad"));
    assert!(texts[1].starts_with("half "));
    assert_eq!(texts[2], "caf\u{e9} \u{1f600}");
    assert!(texts[3].contains("invalid 2-byte"));
}

// ---------------------------------------------------------------------------------------
// 8. Bursts

/// Checks a stream of `line N` lines as they arrive.
struct Seq {
    next: usize,
    bad: usize,
    first_bad: Option<String>,
    expect: Vec<u8>,
}

impl Seq {
    fn new() -> Self {
        Seq {
            next: 0,
            bad: 0,
            first_bad: None,
            expect: Vec::with_capacity(32),
        }
    }

    fn see(&mut self, l: Line<'_>) {
        self.expect.clear();
        write!(self.expect, "line {}", self.next).unwrap();
        if l.log != 0 || l.bytes != self.expect.as_slice() || l.len != l.bytes.len() {
            self.bad += 1;
            if self.first_bad.is_none() {
                self.first_bad = Some(format!(
                    "at index {}: expected {:?}, got log={} len={} {}",
                    self.next,
                    String::from_utf8_lossy(&self.expect),
                    l.log,
                    l.len,
                    show(l.bytes)
                ));
            }
        }
        self.next += 1;
    }
}

const BURST: usize = 1_000_000;

fn write_lines(w: &mut impl Write, range: std::ops::Range<usize>) {
    for i in range {
        writeln!(w, "line {i}").unwrap();
    }
}

/// A writer thread writes `BURST` lines (`rotate_at`: rename-rotation after that many)
/// while this thread follows; every line must arrive exactly once, in order.
fn burst(rotate_at: Option<usize>) {
    let (d, p) = tmp_log();
    File::create(&p).unwrap();
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let p = p.clone();
        let rotated = d.path().join("istio.log.1");
        let done = done.clone();
        std::thread::spawn(move || {
            let mut w = BufWriter::with_capacity(16 * 1024, appender(&p));
            match rotate_at {
                None => write_lines(&mut w, 0..BURST),
                Some(k) => {
                    write_lines(&mut w, 0..k);
                    w.flush().unwrap();
                    fs::rename(&p, &rotated).unwrap();
                    w = BufWriter::with_capacity(16 * 1024, appender(&p));
                    write_lines(&mut w, k..BURST);
                }
            }
            w.flush().unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut seq = Seq::new();
    let start = Instant::now();
    loop {
        let finished = done.load(Ordering::SeqCst);
        f.poll(|l| seq.see(l)).unwrap();
        if finished && seq.next >= BURST {
            break;
        }
        if start.elapsed() > BURST_GUARD {
            break;
        }
        f.wait(Some(Duration::from_millis(100))).unwrap();
    }
    writer.join().unwrap();
    // One more look: a duplicate delivered late would show here.
    f.poll(|l| seq.see(l)).unwrap();
    assert_eq!(
        seq.bad,
        0,
        "{} of {} lines wrong (rotate_at={rotate_at:?}); first: {}",
        seq.bad,
        seq.next,
        seq.first_bad.as_deref().unwrap_or("-")
    );
    assert_eq!(
        seq.next, BURST,
        "lines delivered (rotate_at={rotate_at:?}; hang guard {BURST_GUARD:?})"
    );
}

#[test]
fn burst_of_a_million_lines_while_following() {
    burst(None);
}

#[test]
fn burst_of_a_million_lines_with_rotation_in_the_middle() {
    burst(Some(BURST / 2));
}

// ---------------------------------------------------------------------------------------
// 9. Two files

#[test]
fn two_files_have_the_right_log_index() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("istio.log");
    let err = d.path().join("istio.err.log");
    File::create(&log).unwrap();
    // istio.err.log does not exist yet: it appears later.
    let mut f = Follower::new(&[log.clone(), err.clone()]).unwrap();
    let mut wl = appender(&log);
    put(&mut wl, "agent 1\n");
    expect(&mut f, &[(0, b"agent 1")]);
    let mut we = appender(&err);
    put(&mut we, "envoy 1\nenvoy 2\n");
    expect(&mut f, &[(1, b"envoy 1"), (1, b"envoy 2")]);
    put(&mut wl, "agent 2\n");
    put(&mut we, "envoy 3\n");
    put(&mut wl, "agent 3\n");
    let got = collect(&mut f, 3);
    let of = |i: usize| -> Vec<Vec<u8>> {
        got.iter()
            .filter(|g| g.log == i)
            .map(|g| g.bytes.clone())
            .collect()
    };
    assert_eq!(got.len(), 3, "{}", show_all(&got));
    assert_eq!(of(0), vec![b"agent 2".to_vec(), b"agent 3".to_vec()]);
    assert_eq!(of(1), vec![b"envoy 3".to_vec()]);
}

#[test]
fn same_content_in_two_files_is_told_apart() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("istio.log");
    let b = d.path().join("istio.err.log");
    File::create(&a).unwrap();
    File::create(&b).unwrap();
    let mut f = Follower::new(&[a.clone(), b.clone()]).unwrap();
    put(&mut appender(&b), "same\n");
    expect(&mut f, &[(1, b"same")]);
    put(&mut appender(&a), "same\n");
    expect(&mut f, &[(0, b"same")]);
}

// ---------------------------------------------------------------------------------------
// 10. mark()

#[test]
fn mark_skips_what_was_written_before_it() {
    let (_d, p) = tmp_log();
    let mut w = appender(&p);
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    put(&mut w, "seen\n");
    expect0(&mut f, &["seen"]);
    put(&mut w, "old process 1\nold process 2\n");
    f.mark().unwrap();
    expect_nothing(&mut f, "after mark");
    put(&mut w, "new process\n");
    expect0(&mut f, &["new process"]);
}

#[test]
fn mark_on_a_file_that_appears_later_reads_it_from_zero() {
    let (_d, p) = tmp_log();
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    f.mark().unwrap();
    put(&mut appender(&p), "first\n");
    expect0(&mut f, &["first"]);
}

#[test]
fn mark_after_rotation_skips_both_files() {
    let (d, p) = tmp_log();
    let mut old = appender(&p);
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    put(&mut old, "a1\n");
    fs::rename(&p, d.path().join("istio.log.1")).unwrap();
    let mut new = appender(&p);
    put(&mut new, "b1\n");
    f.mark().unwrap();
    expect_nothing(&mut f, "after mark");
    put(&mut new, "b2\n");
    expect0(&mut f, &["b2"]);
}

// ---------------------------------------------------------------------------------------
// 11. Idle and wake-up

#[test]
fn idle_wait_times_out_and_a_write_wakes_it() {
    let (_d, p) = tmp_log();
    fs::write(&p, "existing\n").unwrap();
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    assert!(
        !f.wait(Some(Duration::from_millis(300))).unwrap(),
        "wait() woke up with nothing written"
    );
    let mut w = appender(&p);
    put(&mut w, "x\n");
    assert!(
        f.wait(Some(GUARD)).unwrap(),
        "wait() did not wake up after a write"
    );
    expect0(&mut f, &["x"]);
    // Reading the file must not wake the follower itself (no self-inflicted events).
    assert!(
        !f.wait(Some(Duration::from_millis(300))).unwrap(),
        "wait() woke up after poll() with nothing new written"
    );
    drop(w);
    // Closing the writer is an event (CLOSE_WRITE); after it is consumed, idle again.
    assert!(f.wait(Some(GUARD)).unwrap());
    expect_nothing(&mut f, "close only");
    assert!(!f.wait(Some(Duration::from_millis(300))).unwrap());
}

#[test]
fn idle_wait_on_missing_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("var/log/istio/istio.log");
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    assert!(!f.wait(Some(Duration::from_millis(300))).unwrap());
    expect_nothing(&mut f, "missing");
    assert!(!f.wait(Some(Duration::from_millis(300))).unwrap());
}

#[test]
fn fd_is_the_inotify_descriptor() {
    let (_d, p) = tmp_log();
    File::create(&p).unwrap();
    let f = Follower::new(std::slice::from_ref(&p)).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f.fd());
    assert!(fd >= 0);
    let link = fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    assert!(
        link.to_string_lossy().contains("inotify"),
        "fd {fd} -> {}",
        link.display()
    );
}

// ---------------------------------------------------------------------------------------
// Bugs found (src/health/follow.rs); the tests stay, ignored until fixed.

/// Rotation race: `catch_up` reads the old file until `read` returns 0, then `stat`s the
/// path, and when the path names a new file it switches without reading the old one
/// again. A line the writer appends to the old file between that last `read` and the
/// `stat` — while it renames the file and creates the new one — is lost. The window
/// exists for any path; here the followed path goes through a chain of symlinks whose
/// targets are long `x/../x/..` walks, so that `stat` (a path walk) takes milliseconds
/// and the writer's `write; rename; create` lands inside the window almost every round.
/// A follower that reads the old file once more after seeing the switch cannot lose
/// the line, whatever the timing.
#[test]
fn rotation_race_line_written_just_before_rename_is_not_lost() {
    const ROUNDS: usize = 50;
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("x")).unwrap();
    // `L` -> `x/../x/../...` (back to the same directory), 38 times in the followed path.
    std::os::unix::fs::symlink(vec!["x/.."; 800].join("/"), d.path().join("L")).unwrap();
    let mut slow = d.path().to_path_buf();
    for _ in 0..38 {
        slow.push("L");
    }
    slow.push("istio.log");
    let p = d.path().join("istio.log");
    File::create(&p).unwrap();
    assert_eq!(
        fs::metadata(&slow).unwrap().ino(),
        fs::metadata(&p).unwrap().ino(),
        "the slow path names the log"
    );
    let mut f = Follower::new(std::slice::from_ref(&slow)).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (p, r) = (p.clone(), d.path().join("istio.log.1"));
        let (done, seen) = (done.clone(), seen.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut w = appender(&p);
            for k in 0..ROUNDS {
                // The last line of the old file, then the rotation, then the new file's
                // first line; the next round starts once the follower has that one (so
                // no file is ever rotated twice between two looks).
                writeln!(w, "last {k}").unwrap();
                fs::rename(&p, &r).unwrap();
                w = appender(&p);
                writeln!(w, "first {k}").unwrap();
                while seen.load(Ordering::SeqCst) <= k && start.elapsed() < GUARD {
                    std::thread::yield_now();
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut got: Vec<String> = Vec::new();
    let start = Instant::now();
    loop {
        let finished = done.load(Ordering::SeqCst);
        f.poll(|l| {
            let t = l.text().into_owned();
            if t.starts_with("first ") {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            got.push(t);
        })
        .unwrap();
        if finished || start.elapsed() > GUARD {
            break;
        }
    }
    writer.join().unwrap();
    f.poll(|l| got.push(l.text().into_owned())).unwrap();
    let want: Vec<String> = (0..ROUNDS)
        .flat_map(|k| [format!("last {k}"), format!("first {k}")])
        .collect();
    let lost: Vec<&String> = want.iter().filter(|w| !got.contains(w)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} lines lost at rotation, e.g. {:?}",
        lost.len(),
        want.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(got, want);
}

/// Watches are remembered by (path, device, inode) and never forgotten when the
/// directory goes away. When the log's directory is deleted and made again, ext4 (the
/// usual root filesystem) hands the new directory the freed inode number, so the
/// follower believes its old watch still applies and adds none: the file's creation and
/// every later write no longer wake `wait` (lines are then only found by polls made on
/// timeouts). inotify queues an event inside the system call that causes it, so a
/// zero-timeout `wait` right after the write is not a timing assertion.
#[test]
fn recreated_directory_with_reused_inode_still_wakes_wait() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("istio");
    let p = dir.join("istio.log");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("other.log"), "x").unwrap();
    let ino_before = fs::metadata(&dir).unwrap().ino();
    let mut f = Follower::new(std::slice::from_ref(&p)).unwrap();
    expect_nothing(&mut f, "no log yet");
    fs::remove_dir_all(&dir).unwrap();
    expect_nothing(&mut f, "directory removed");
    fs::create_dir(&dir).unwrap();
    let reused = fs::metadata(&dir).unwrap().ino() == ino_before;
    eprintln!("directory inode reused: {reused} (the bug shows only when it is)");
    expect_nothing(&mut f, "directory made again");
    let mut w = appender(&p);
    assert!(
        f.wait(Some(Duration::ZERO)).unwrap(),
        "creating the log in the recreated directory did not wake wait() (inode reused: {reused})"
    );
    expect_nothing(&mut f, "empty log");
    put(&mut w, "line\n");
    assert!(
        f.wait(Some(Duration::ZERO)).unwrap(),
        "a write to the log did not wake wait() (inode reused: {reused})"
    );
    expect0(&mut f, &["line"]);
}
