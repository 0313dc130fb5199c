//! The managed block in /etc/hosts.
//!
//! vmagent owns only the lines between its markers and replaces them on every apply;
//! every byte outside stays as it was. A line identical to one of ours that stands
//! outside the block (left by an earlier `cat hosts >> /etc/hosts`) is adopted into the
//! block instead of being duplicated.

use std::net::IpAddr;

use crate::bundle::hosts::Entry;

/// First line of the managed block.
pub const BEGIN: &str = "# BEGIN vmagent-managed (istio): lines up to END are rewritten by vmagent";
/// Last line of the managed block.
pub const END: &str = "# END vmagent-managed";
const BEGIN_PREFIX: &str = "# BEGIN vmagent-managed";

/// The result of merging the bundle's entries into a hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The new file content.
    pub content: Vec<u8>,
    /// Lines (1-based number, text) moved from outside the block into it.
    pub adopted: Vec<(usize, String)>,
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
                adopted.push((i + 1, text(l)));
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
