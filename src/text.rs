//! Small text helpers shared across layers (leaf module: imports only [`crate::redact`]).

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An error with its sources, without repeating what a source's text already says, and
/// without the secrets of a URL in it (reqwest's errors quote the request URL).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    crate::redact::text(&s)
}

/// Writes one line to stderr, ignoring a closed stream.
pub fn err_line(s: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}

/// The last `n` non-empty lines of `bytes` (lossy UTF-8), trimmed: the tail of a
/// command's output shown in an error.
pub fn last_lines(bytes: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(super::hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
