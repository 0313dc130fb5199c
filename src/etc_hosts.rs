//! The managed block in /etc/hosts.
//!
//! vmagent owns only the lines between its markers and replaces them on every apply;
//! every byte outside stays as it was. A line identical to one of ours that stands
//! outside the block (left by an earlier `cat hosts >> /etc/hosts`) is adopted into the
//! block instead of being duplicated; its exact text and position are returned so that
//! uninstall can put it back ([`restore`]), together with the file's absence and its
//! final newline before vmagent's first block ([`Original`]).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::bundle::hosts::Entry;

/// First line of the managed block.
pub const BEGIN: &str = "# BEGIN vmagent-managed (istio): lines up to END are rewritten by vmagent";
/// Last line of the managed block.
pub const END: &str = "# END vmagent-managed";
const BEGIN_PREFIX: &str = "# BEGIN vmagent-managed";

/// A line moved from outside the block into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopted {
    /// 1-based line number in the file as it was read (for messages).
    pub line: usize,
    /// 0-based position among the lines outside the block before the merge: where
    /// uninstall puts it back.
    pub index: usize,
    /// The line exactly as it was (comment and spacing included), without its newline.
    pub text: String,
}

/// The result of merging the bundle's entries into a hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The new file content.
    pub content: Vec<u8>,
    /// Lines moved from outside the block into it.
    pub adopted: Vec<Adopted>,
    /// Lines outside the block that map one of our names to another address; the
    /// resolver reads the file top-down, so these may win over the block.
    pub conflicts: Vec<(usize, String)>,
}

/// Splits into lines that keep their terminators, so unchanged lines are copied exactly.
fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split_inclusive(|&b| b == b'\n').collect()
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).trim_end().to_string()
}

/// Address and names of a hosts line, if it is an entry.
fn entry_of(line: &[u8]) -> Option<(IpAddr, Vec<String>)> {
    let s = std::str::from_utf8(line).ok()?;
    let s = s.split('#').next()?;
    let mut w = s.split_ascii_whitespace();
    let ip = w.next()?.parse().ok()?;
    let names: Vec<String> = w.map(|n| n.to_ascii_lowercase()).collect();
    (!names.is_empty()).then_some((ip, names))
}

/// Locates the managed block: (begin index, end index) of the marker lines.
fn find_block(ls: &[&[u8]]) -> Result<Option<(usize, usize)>, String> {
    let mut begin = None;
    let mut found = None;
    for (i, l) in ls.iter().enumerate() {
        let t = text(l);
        if t.starts_with(BEGIN_PREFIX) {
            if begin.is_some() || found.is_some() {
                return Err(format!("line {}: a second '{BEGIN_PREFIX}' marker", i + 1));
            }
            begin = Some(i);
        } else if t == END {
            match begin.take() {
                Some(b) => found = Some((b, i)),
                None => return Err(format!("line {}: '{END}' without a BEGIN marker", i + 1)),
            }
        }
    }
    if let Some(b) = begin {
        return Err(format!(
            "line {}: '{BEGIN_PREFIX}' without an END marker",
            b + 1
        ));
    }
    Ok(found)
}

/// The lines inside the managed block (`None`: there is none): the bundle's hosts
/// entries as installed.
pub fn block(existing: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let ls = lines(existing);
    let Some((b, e)) = find_block(&ls)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for l in &ls[b + 1..e] {
        out.extend_from_slice(l);
        if !l.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    Ok(Some(out))
}

/// `existing` without the managed block (`None`: there is none). Every other byte stays.
pub fn without_block(existing: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let ls = lines(existing);
    let Some((b, e)) = find_block(&ls)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(existing.len());
    for (i, l) in ls.iter().enumerate() {
        if i < b || i > e {
            out.extend_from_slice(l);
        }
    }
    Ok(Some(out))
}

/// Merges `entries` into the hosts file content `existing`.
///
/// Errors (a damaged block) say which line is wrong; the caller names the file.
pub fn merge(existing: &[u8], entries: &[Entry]) -> Result<Merge, String> {
    let ls = lines(existing);
    let block = find_block(&ls)?;
    let wanted: Vec<(IpAddr, Vec<String>)> = entries
        .iter()
        .map(|e| {
            (
                e.ip,
                e.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            )
        })
        .collect();
    let mut adopted = Vec::new();
    let mut conflicts = Vec::new();
    let mut before: Vec<u8> = Vec::new();
    let mut after: Vec<u8> = Vec::new();
    for (i, l) in ls.iter().enumerate() {
        let side = match block {
            Some((b, e)) if i >= b && i <= e => continue,
            Some((b, _)) if i < b => &mut before,
            Some(_) => &mut after,
            None => &mut before,
        };
        if let Some((ip, names)) = entry_of(l) {
            if wanted.iter().any(|w| w.0 == ip && w.1 == names) {
                // entry_of accepted it, so it is UTF-8: the text is exact.
                let exact = l.strip_suffix(b"\n").unwrap_or(l);
                adopted.push(Adopted {
                    line: i + 1,
                    index: match block {
                        Some((b, e)) if i > e => i - (e - b + 1),
                        _ => i,
                    },
                    text: String::from_utf8_lossy(exact).into_owned(),
                });
                continue;
            }
            if wanted
                .iter()
                .any(|w| w.0 != ip && names.iter().any(|n| w.1.contains(n)))
            {
                conflicts.push((i + 1, text(l)));
            }
        }
        side.extend_from_slice(l);
    }
    let mut out = before;
    if block.is_none() && !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(BEGIN.as_bytes());
    out.push(b'\n');
    for e in entries {
        out.extend_from_slice(e.line().as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(END.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&after);
    Ok(Merge {
        content: out,
        adopted,
        conflicts,
    })
}

/// What /etc/hosts was before vmagent first put its block in, and the lines it adopted
/// since: what uninstall needs to put the file back as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    /// The file existed (vmagent did not create it).
    pub existed: bool,
    /// It was empty or ended with a newline (the merge adds one before the block).
    pub final_newline: bool,
    /// Lines adopted into the block, one list per apply that adopted any, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<Vec<Adopted>>,
}

impl Default for Original {
    /// Without a record: a file that was there, ending in a newline, nothing adopted
    /// (uninstall then only takes the block out).
    fn default() -> Self {
        Original {
            existed: true,
            final_newline: true,
            adopted: Vec::new(),
        }
    }
}

impl Original {
    /// The original of a hosts file whose content is `data` (`None`: absent).
    pub fn of(data: Option<&[u8]>) -> Original {
        Original {
            existed: data.is_some(),
            final_newline: data.is_none_or(|d| d.is_empty() || d.ends_with(b"\n")),
            adopted: Vec::new(),
        }
    }
}

/// What uninstall does to /etc/hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// Write this content: the block out, adopted lines back where they were.
    Write(Vec<u8>),
    /// vmagent created the file and nothing but its block is in it: remove the file.
    Remove,
    /// vmagent created the file, but other lines were added since: write this content
    /// and keep the file.
    Keep(Vec<u8>),
}

/// `current` as it was before vmagent (`None`: there is no block, nothing to do).
///
/// Adopted lines go back to their positions, latest apply first, so each list is
/// undone on the file it was taken from. The final newline the merge added is taken
/// off again when nothing was added after the block since. Errors (a damaged block)
/// say which line is wrong; the caller names the file.
pub fn restore(current: &[u8], orig: &Original) -> Result<Option<Restore>, String> {
    let ls = lines(current);
    let Some((b, e)) = find_block(&ls)? else {
        return Ok(None);
    };
    let block_last = e + 1 == ls.len();
    let mut out: Vec<Vec<u8>> = ls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < b || *i > e)
        .map(|(_, l)| l.to_vec())
        .collect();
    for round in orig.adopted.iter().rev() {
        let mut round = round.clone();
        round.sort_by_key(|a| a.index);
        for a in round {
            let at = a.index.min(out.len());
            if at == out.len() {
                // Appending after a last line without a newline must not join the two.
                if let Some(prev) = out.last_mut().filter(|p| !p.ends_with(b"\n")) {
                    prev.push(b'\n');
                }
            }
            let mut line = a.text.into_bytes();
            line.push(b'\n');
            out.insert(at, line);
        }
    }
    let mut out = out.concat();
    if !orig.final_newline && block_last && out.ends_with(b"\n") {
        out.pop();
    }
    Ok(Some(match (orig.existed, out.is_empty()) {
        (true, _) => Restore::Write(out),
        (false, true) => Restore::Remove,
        (false, false) => Restore::Keep(out),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        crate::bundle::hosts::parse(b"192.0.2.10 istiod.istio-system.svc\n")
            .unwrap()
            .0
    }

    #[test]
    fn appends_once_and_is_idempotent() {
        let orig = b"127.0.0.1\tlocalhost\n::1 ip6-localhost # keep  spacing\n";
        let m = merge(orig, &entries()).unwrap();
        assert!(m.content.starts_with(orig));
        let again = merge(&m.content, &entries()).unwrap();
        assert_eq!(again.content, m.content);
        assert!(again.adopted.is_empty());
    }

    #[test]
    fn adopts_manual_duplicates() {
        let orig = b"127.0.0.1 localhost\n192.0.2.10 istiod.istio-system.svc\n192.0.2.10   istiod.istio-system.svc\n10.0.0.1 other";
        let m = merge(orig, &entries()).unwrap();
        assert_eq!(m.adopted.len(), 2);
        let s = String::from_utf8(m.content).unwrap();
        assert_eq!(s.matches("istiod.istio-system.svc").count(), 1);
        assert!(s.starts_with("127.0.0.1 localhost\n10.0.0.1 other\n# BEGIN"));
    }

    #[test]
    fn replaces_block_in_place_and_flags_conflicts() {
        let orig =
            format!("a\n{BEGIN}\n1.1.1.1 old.name\n{END}\nb\n10.9.9.9 istiod.istio-system.svc\n");
        let m = merge(orig.as_bytes(), &entries()).unwrap();
        let s = String::from_utf8(m.content).unwrap();
        assert_eq!(s, format!("a\n{BEGIN}\n192.0.2.10 istiod.istio-system.svc\n{END}\nb\n10.9.9.9 istiod.istio-system.svc\n"));
        assert_eq!(m.conflicts.len(), 1);
    }

    /// Merge, then restore with the original recorded the way apply records it.
    fn round_trip(orig: Option<&[u8]>) -> Option<Restore> {
        let m = merge(orig.unwrap_or_default(), &entries()).unwrap();
        let mut rec = Original::of(orig);
        if !m.adopted.is_empty() {
            rec.adopted.push(m.adopted.clone());
        }
        restore(&m.content, &rec).unwrap()
    }

    #[test]
    fn restore_puts_adopted_lines_back_exactly() {
        let orig: &[u8] = b"127.0.0.1 localhost\n192.0.2.10 istiod.istio-system.svc  # by hand\n10.0.0.1 other\n192.0.2.10\tistiod.istio-system.svc\r\n";
        let m = merge(orig, &entries()).unwrap();
        assert_eq!(m.adopted.len(), 2);
        assert_eq!(
            m.adopted[0].text,
            "192.0.2.10 istiod.istio-system.svc  # by hand"
        );
        assert_eq!((m.adopted[0].line, m.adopted[0].index), (2, 1));
        assert_eq!(round_trip(Some(orig)), Some(Restore::Write(orig.to_vec())));
    }

    #[test]
    fn restore_undoes_later_adoptions_first() {
        let orig: &[u8] = b"a\n";
        let m1 = merge(orig, &entries()).unwrap();
        let mut rec = Original::of(Some(orig));
        // The admin appends the entry again after the block; the next apply adopts it.
        let mut edited = m1.content.clone();
        edited.extend_from_slice(b"b\n192.0.2.10 istiod.istio-system.svc # again\nc\n");
        let m2 = merge(&edited, &entries()).unwrap();
        assert_eq!(m2.adopted[0].index, 2, "{:?}", m2.adopted);
        rec.adopted.push(m2.adopted);
        assert_eq!(
            restore(&m2.content, &rec).unwrap(),
            Some(Restore::Write(
                b"a\nb\n192.0.2.10 istiod.istio-system.svc # again\nc\n".to_vec()
            ))
        );
    }

    #[test]
    fn restore_keeps_a_missing_final_newline_and_an_absent_file() {
        for orig in [
            &b"127.0.0.1 localhost"[..],
            b"127.0.0.1 localhost\n192.0.2.10 istiod.istio-system.svc",
            b"",
            b"\n",
        ] {
            assert_eq!(
                round_trip(Some(orig)),
                Some(Restore::Write(orig.to_vec())),
                "{}",
                String::from_utf8_lossy(orig)
            );
        }
        assert_eq!(round_trip(None), Some(Restore::Remove));
        // Lines added after vmagent created the file: kept, and the caller says so.
        let m = merge(b"", &entries()).unwrap();
        let mut now = b"10.0.0.7 mine\n".to_vec();
        now.extend_from_slice(&m.content);
        assert_eq!(
            restore(&now, &Original::of(None)).unwrap(),
            Some(Restore::Keep(b"10.0.0.7 mine\n".to_vec()))
        );
        // A line added after the block keeps the newline the merge put before it.
        let m = merge(b"a", &entries()).unwrap();
        let mut now = m.content.clone();
        now.extend_from_slice(b"b\n");
        assert_eq!(
            restore(&now, &Original::of(Some(b"a"))).unwrap(),
            Some(Restore::Write(b"a\nb\n".to_vec()))
        );
        assert_eq!(restore(b"a\n", &Original::default()).unwrap(), None);
    }

    #[test]
    fn damaged_blocks_are_refused() {
        assert!(merge(format!("{BEGIN}\nx\n").as_bytes(), &entries()).is_err());
        assert!(merge(format!("{END}\n").as_bytes(), &entries()).is_err());
        assert!(merge(
            format!("{BEGIN}\n{END}\n{BEGIN}\n{END}\n").as_bytes(),
            &entries()
        )
        .is_err());
    }
}
