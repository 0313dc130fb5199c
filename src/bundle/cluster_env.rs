//! cluster.env: `KEY=value` lines that istio-start.sh *sources with bash as root*.
//!
//! So the grammar is the subset of shell assignments whose meaning is a literal string:
//! a value is a concatenation of single-quoted segments (`'…'`, anything but `'`),
//! double-quoted segments without `$`, backtick or backslash, and unquoted runs of
//! characters that are never special to bash in an assignment (`[A-Za-z0-9_@%+=:,./-]`,
//! and `#*?[]` inside a word). That covers everything istioctl writes (including its
//! `'"'"'` escape for a quote) and the harmless forms people write by hand, read as bash
//! reads them: an `export ` prefix, a ` # comment` after the value, a key set twice (the
//! last one counts; a warning names both lines). Keys that change how bash or the
//! dynamic loader behave are refused, the values that istio-start.sh pastes unquoted
//! into a second shell must match strict formats, and values pilot-agent would fail on
//! are refused with the fix ([`env_keys::check_value`]).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::env_keys;
use super::MemberError;

/// One parsed `KEY=value` assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    /// The variable name.
    pub key: String,
    /// The literal value bash would assign.
    pub value: String,
    /// 1-based line number in the file.
    pub line: usize,
}

/// A validated cluster.env, in file order; a key set twice appears once, with the last
/// value (bash's meaning).
#[derive(Debug, Clone, Default)]
pub struct ClusterEnv {
    /// Assignments in the order they appear.
    pub vars: Vec<Var>,
}

impl ClusterEnv {
    /// The directories the agent reads its provisioning certificate from (PROV_CERT) and
    /// writes its workload certificate to (OUTPUT_CERTS), as absolute paths: the
    /// defaults of istio-start.sh (`./etc/certs`, run from `/`) when unset, none when
    /// set empty.
    pub fn cert_dirs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for key in [CertKey::OutputCerts, CertKey::ProvCert] {
            if let Some(d) = self.cert_dir(key).filter(|d| !out.contains(d)) {
                out.push(d);
            }
        }
        out
    }

    /// One of those directories: the default when unset, `None` when set empty (for
    /// OUTPUT_CERTS: the certificate is never saved).
    pub fn cert_dir(&self, key: CertKey) -> Option<String> {
        match self.get(key.name()) {
            None => Some(DEFAULT_CERT_DIR.to_string()),
            Some("") => None,
            Some(v) => env_keys::cert_dir_path(v),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|v| v.key == key)
            .map(|v| v.value.as_str())
    }
}

/// The keys naming the agent's certificate directories (tools/packaging/common/
/// istio-start.sh exports both; security/pkg/nodeagent reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKey {
    /// OUTPUT_CERTS: where the agent writes its workload certificate.
    OutputCerts,
    /// PROV_CERT: where it looks for a provisioning certificate.
    ProvCert,
}

impl CertKey {
    /// The variable name.
    pub fn name(self) -> &'static str {
        match self {
            CertKey::OutputCerts => "OUTPUT_CERTS",
            CertKey::ProvCert => "PROV_CERT",
        }
    }
}

/// Where istio-start.sh points PROV_CERT and OUTPUT_CERTS when cluster.env does not.
pub const DEFAULT_CERT_DIR: &str = "/etc/certs";

/// Keys that alter bash, the dynamic loader, libc or interpreters started by the script.
const DENIED: &[&str] = &[
    "PATH",
    "ENV",
    "BASH_ENV",
    "BASHOPTS",
    "SHELLOPTS",
    "IFS",
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "PROMPT_COMMAND",
    "CDPATH",
    "GLOBIGNORE",
    "EXECIGNORE",
    "FUNCNEST",
    "HISTFILE",
    "INPUTRC",
    "HOME",
    "SHELL",
    "USER",
    "LOGNAME",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "NLSPATH",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "RES_OPTIONS",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "PERL5LIB",
    "PERL5OPT",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "NODE_OPTIONS",
    "SUDO_ASKPASS",
    "SUDO_EDITOR",
];
const DENIED_PREFIXES: &[&str] = &["LD_", "BASH_", "MALLOC_"];

/// Parses and validates cluster.env. `known_extra` are the mesh's proxyMetadata keys,
/// which istioctl copies into cluster.env and so are not worth a warning.
pub fn parse(
    data: &[u8],
    known_extra: &BTreeSet<String>,
) -> Result<(ClusterEnv, Vec<String>), MemberError> {
    let text = std::str::from_utf8(data).map_err(|e| {
        MemberError::at(
            line_of(data, e.valid_up_to()),
            "not valid UTF-8 text".into(),
        )
    })?;
    let mut env = ClusterEnv::default();
    let mut warnings = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        if raw.ends_with('\r') {
            return Err(MemberError::at(
                n,
                "has a Windows line ending (CRLF); convert the file with dos2unix".into(),
            ));
        }
        let line = raw.trim_start_matches([' ', '\t']);
        if line.trim_end().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(line) = strip_export(line).map_err(|r| MemberError::at(n, r))? else {
            continue;
        };
        let (key, rest) = split_key(line).map_err(|r| MemberError::at(n, r))?;
        check_key(key).map_err(|r| MemberError::at(n, r))?;
        let value = parse_value(rest).map_err(|r| MemberError::at(n, r))?;
        check_repasted(key, &value).map_err(|r| MemberError::at(n, r))?;
        env_keys::check_value(key, &value).map_err(|r| MemberError::at(n, r))?;
        if let Some(first) = seen.insert(key.to_string(), n) {
            // bash keeps the last assignment; so does vmagent, and says so.
            warnings.push(format!(
                "bundle member 'cluster.env' line {n}: key {key} is set twice (lines {first} and {n}); the last one (line {n}) counts, as in bash: remove line {first}"
            ));
            env.vars.retain(|v| v.key != key);
        } else if !env_keys::is_known(key) && !known_extra.contains(key) {
            warnings.push(format!(
                "bundle member 'cluster.env' line {n}: key {key} is not one Istio reads (istioctl, istio-start.sh, pilot-agent); kept as given"
            ));
        }
        env.vars.push(Var {
            key: key.to_string(),
            value,
            line: n,
        });
    }
    cert_dir_warnings(&env, &mut warnings);
    Ok((env, warnings))
}

/// The rules one `KEY=value` line of a bundle's cluster.env must pass, for a value
/// that comes from elsewhere (a local override in the config): the key rules, the
/// strict formats of the values istio-start.sh re-pastes, and pilot-agent's own value
/// checks. A value is written back single-quoted, so any literal one-line text works.
pub fn check_assignment(key: &str, value: &str) -> Result<(), String> {
    check_key(key)?;
    if value.contains(['\n', '\r', '\0']) {
        return Err(format!(
            "the value of {key} has a line break or NUL byte; cluster.env holds one line per key"
        ));
    }
    check_repasted(key, value)?;
    env_keys::check_value(key, value)
}

/// A key alone (to unset), by the same rules as a key in cluster.env.
pub fn check_key_name(key: &str) -> Result<(), String> {
    check_key(key)
}

/// `export KEY=value` is what `set -a` does anyway; `export KEY` alone changes nothing.
/// Returns the assignment without the prefix, or `None` for a bare `export KEY`.
fn strip_export(line: &str) -> Result<Option<&str>, String> {
    let Some(rest) = line
        .strip_prefix("export")
        .filter(|r| r.starts_with([' ', '\t']))
    else {
        return Ok(Some(line));
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    if rest.starts_with('-') {
        return Err("'export' with options is not allowed; write KEY=value".into());
    }
    let name_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    if rest[name_end..].starts_with('=') {
        return Ok(Some(rest));
    }
    let after = rest[name_end..].trim_start_matches([' ', '\t']);
    if name_end > 0 && (after.is_empty() || after.starts_with('#')) {
        check_key(&rest[..name_end])?;
        return Ok(None);
    }
    Err("expected 'export KEY=value' with one assignment".into())
}

/// An empty OUTPUT_CERTS means the agent keeps its certificate in memory only
/// (istio-start.sh: `${OUTPUT_CERTS-./etc/certs}` keeps an empty value). The agent
/// presents the certificate in PROV_CERT to the CA (pkg/istio-agent/agent.go
/// `GetKeyCertsForCA`), and none at all to a CA on the plain-text port 15010
/// (pkg/istio-agent/plugins.go): either way the saved certificate never renews itself.
fn cert_dir_warnings(env: &ClusterEnv, warnings: &mut Vec<String>) {
    let out = env.cert_dir(CertKey::OutputCerts);
    if out.is_some() && env.cert_dir(CertKey::ProvCert) != out {
        warnings.push(format!(
            "bundle member 'cluster.env': PROV_CERT is not the OUTPUT_CERTS directory ({}), so pilot-agent never presents its saved certificate and the VM leaves the mesh when the token expires; set PROV_CERT to the same directory, or remove both to use /etc/certs",
            out.as_deref().unwrap_or("")
        ));
    }
    if env.get("CA_ADDR").is_some_and(|a| a.ends_with(":15010")) {
        warnings.push(
            "bundle member 'cluster.env': CA_ADDR uses the plain-text port 15010, so pilot-agent never presents its certificate and the VM leaves the mesh when the token expires; use istiod's TLS port 15012".into(),
        );
    }
    if let Some(v) = env
        .vars
        .iter()
        .find(|v| v.key == "OUTPUT_CERTS" && v.value.is_empty())
    {
        warnings.push(format!(
            "bundle member 'cluster.env' line {}: OUTPUT_CERTS is empty, so the agent never saves its workload certificate and needs a valid token after every restart; remove the line to use /etc/certs",
            v.line
        ));
    }
}

fn line_of(data: &[u8], offset: usize) -> usize {
    data[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

fn split_key(line: &str) -> Result<(&str, &str), String> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(line.len());
    let (key, rest) = line.split_at(end);
    if key.is_empty() {
        return Err("expected KEY=value (a variable name first)".into());
    }
    match rest.chars().next() {
        Some('=') => Ok((key, &rest[1..])),
        Some(' ') | Some('\t') if rest.trim_start().starts_with('=') => Err(format!(
            "expected '=' right after {key} (spaces around '=' make bash run a command)"
        )),
        Some(' ') | Some('\t') => Err(format!(
            "expected KEY=value; '{}' would run as a command",
            shorten(line)
        )),
        _ => Err(format!("expected KEY=value, found '{}'", shorten(line))),
    }
}

fn check_key(key: &str) -> Result<(), String> {
    let first_ok = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_');
    if !first_ok
        || !key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "key '{key}' is not an upper-case variable name ([A-Z_][A-Z0-9_]*)"
        ));
    }
    if DENIED.contains(&key) || DENIED_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return Err(format!(
            "key {key} changes how the root shell or loader behaves; it is not allowed in cluster.env"
        ));
    }
    Ok(())
}

/// Decodes the value part of an assignment into the literal string bash would assign.
fn parse_value(rest: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, ch)) => out.push(ch),
                    None => return Err("unterminated single quote".into()),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '$')) => return Err(
                        "value uses '$' (variable expansion or command substitution); only literal values are allowed".into()),
                    Some((_, '`')) => return Err(
                        "value uses command substitution (backtick); only literal values are allowed".into()),
                    Some((_, '\\')) => return Err(
                        "value uses a backslash escape inside double quotes; use single quotes for literal values".into()),
                    Some((_, ch)) => out.push(ch),
                    None => return Err("unterminated double quote".into()),
                }
            },
            ' ' | '\t' => {
                // After blanks, bash reads a `#` word as a comment to the end of the line;
                // any other word would be a second assignment or a command.
                match chars.find(|(_, ch)| *ch != ' ' && *ch != '\t') {
                    None | Some((_, '#')) => break,
                    Some(_) => return Err("unexpected text after the value (quote values that contain spaces; a comment after a value starts with ' #')".into()),
                }
            }
            // Inside a word (never at its start: the key comes first) `#` is literal, and
            // bash does no pathname expansion on assignments, `export`'s included, so
            // `ISTIO_INBOUND_PORTS=*` is the literal `*` (braces are not: `export` expands
            // them).
            c if is_plain(c) || "#*?[]".contains(c) => out.push(c),
            '$' => {
                return Err(
                    "value uses '$' (variable expansion or command substitution); only literal values are allowed"
                        .into(),
                )
            }
            '`' => {
                return Err(
                    "value uses command substitution (backtick); only literal values are allowed".into(),
                )
            }
            c => {
                return Err(format!(
                    "unquoted character '{}' is special to the shell; single-quote the value",
                    c.escape_default()
                ))
            }
        }
    }
    if out.contains('\0') {
        return Err("value contains a NUL byte".into());
    }
    Ok(out)
}

fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c)
}

/// istio-start.sh pastes these into a second `bash -c` string without quotes
/// (ISTIO_SERVICE only up to Istio 1.11, as `--serviceCluster=${SVC}`).
fn check_repasted(key: &str, value: &str) -> Result<(), String> {
    let ok = match key {
        "ISTIO_SVC_IP" => value.parse::<IpAddr>().is_ok(),
        "POD_NAME" | "ISTIO_SERVICE" => is_dns1123_subdomain(value),
        "ISTIO_NAMESPACE" => is_dns1123_label(value),
        "ISTIO_AGENT_FLAGS" => value.split([' ', '\t']).all(|w| w.chars().all(is_plain)),
        "ISTIO_BIN_BASE" | "ISTIO_LOG_DIR" => value.starts_with('/') && value.chars().all(is_plain),
        _ => return Ok(()),
    };
    if ok || value.is_empty() {
        Ok(())
    } else {
        let want = match key {
            "ISTIO_SVC_IP" => "an IPv4 or IPv6 address",
            "POD_NAME" | "ISTIO_SERVICE" => {
                "a DNS-1123 name (lower-case letters, digits, '-', '.')"
            }
            "ISTIO_NAMESPACE" => "a DNS-1123 label (lower-case letters, digits, '-')",
            "ISTIO_AGENT_FLAGS" => {
                "flags made of letters, digits and _@%+=:,./- separated by spaces"
            }
            _ => "an absolute path of letters, digits and _@%+=:,./-",
        };
        Err(format!(
            "{key} must be {want}: istio-start.sh pastes it unquoted into a root shell"
        ))
    }
}

/// A DNS-1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn shorten(s: &str) -> String {
    let mut t: String = s.chars().take(40).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ClusterEnv {
        parse(s.as_bytes(), &BTreeSet::new()).unwrap().0
    }
    fn err(s: &str) -> String {
        parse(s.as_bytes(), &BTreeSet::new()).unwrap_err().reason
    }

    #[test]
    fn istioctl_shapes_are_literal() {
        let e = ok(
            "A='x y'\nB=plain-1.2\nC=\"dq ok\"\nD='it'\"'\"'s'\nE=\n# c\n\n  F='{\"a\":\"b\"}'\n",
        );
        let v: Vec<_> = e.vars.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(
            v,
            ["x y", "plain-1.2", "dq ok", "it's", "", "{\"a\":\"b\"}"]
        );
    }

    #[test]
    fn injections_are_refused() {
        for (input, want) in [
            ("A=$(id)", "'$'"),
            ("A=\"$(id)\"", "'$'"),
            ("A=`id`", "backtick"),
            ("A=\"`id`\"", "backtick"),
            ("A=x;id", "special"),
            ("A=a{b,c}", "special"),
            ("A=~/x", "special"),
            ("A=x id", "after the value"),
            ("A='x'; id", "special"),
            ("A=\"a\\\"b\"", "backslash"),
            ("A='open", "unterminated"),
            ("PATH=/tmp", "not allowed"),
            ("LD_PRELOAD=/x.so", "not allowed"),
            ("BASH_FUNC_X=1", "not allowed"),
            ("lower=1", "upper-case"),
            ("A =1", "right after"),
            ("export A=1 B=2", "after the value"),
            ("export -n A=1", "options"),
            ("A=1\r", "CRLF"),
            ("ISTIO_SVC_IP=1.2.3.4$", "'$'"),
            ("ISTIO_SVC_IP='1.2.3.4;id'", "IPv4"),
            ("POD_NAME='a b'", "DNS-1123"),
            ("ISTIO_AGENT_FLAGS='--x;id'", "flags"),
            ("echo hi", "KEY=value"),
        ] {
            let e = err(input);
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn hand_written_forms_read_as_bash_does() {
        let (e, w) = parse(
            b"export A='x' # the gateway\nB=1#2\nC=\t# empty\nA=y\nexport B\nD='q'\"r\"'s'#x\nE=*\n",
            &BTreeSet::new(),
        )
        .unwrap();
        let v: Vec<_> = e
            .vars
            .iter()
            .map(|v| (v.key.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(
            v,
            [
                ("B", "1#2"),
                ("C", ""),
                ("A", "y"),
                ("D", "qrs#x"),
                ("E", "*")
            ]
        );
        assert!(
            w.iter()
                .any(|w| w.contains("line 4: key A is set twice (lines 1 and 4)")),
            "{w:?}"
        );
    }

    #[test]
    fn cert_dirs_follow_istio_start() {
        assert_eq!(ok("A=1\n").cert_dirs(), ["/etc/certs"]);
        assert_eq!(
            ok("OUTPUT_CERTS=/var/run/secrets/istio\nPROV_CERT=./etc/certs\n").cert_dirs(),
            ["/var/run/secrets/istio", "/etc/certs"]
        );
        let (e, w) = parse(b"OUTPUT_CERTS=''\nPROV_CERT=''\n", &BTreeSet::new()).unwrap();
        assert!(e.cert_dirs().is_empty());
        assert!(w[0].contains("never saves"), "{w:?}");
    }

    #[test]
    fn strict_formats_accept_good_values() {
        ok("ISTIO_SVC_IP='10.0.0.5'\nPOD_NAME=vm-1.x\nISTIO_NAMESPACE='vm-ns'\nISTIO_AGENT_FLAGS='--log_output_level=dns:debug --x'\n");
    }
}
