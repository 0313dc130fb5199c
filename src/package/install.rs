//! Talking to dpkg and rpm: what a package file is, what is installed in the target
//! root, which dependencies are missing, and the install itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::os::Format;
use super::PackageError;
use crate::cmd::{self, show};
use crate::root::Root;

/// The package name Istio publishes.
pub const NAME: &str = "istio-sidecar";

/// How many lines of a failing command's output the error shows.
const TAIL_LINES: usize = 15;

/// Identity of a package file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Package name.
    pub name: String,
    /// Version (deb) or version-release (rpm).
    pub version: String,
    /// Architecture field.
    pub arch: String,
    /// Depends and Pre-Depends (deb only; rpm checks its own).
    pub depends: String,
}

/// A query (dpkg-query, rpm -q, dpkg-deb --show) answers in seconds.
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);

/// An install runs maintainer scripts and may resolve dependencies over the network.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(1800);

fn run(cmd: &mut Command) -> Result<cmd::Output, PackageError> {
    run_for(cmd, QUERY_TIMEOUT)
}

fn run_for(c: &mut Command, timeout: Duration) -> Result<cmd::Output, PackageError> {
    c.env("LC_ALL", "C");
    cmd::run(c, timeout).map_err(|e| PackageError::Tool(e.to_string()))
}

/// dpkg / rpm with the root option when the root is not `/`.
fn tool(root: &Root, prog: &str) -> Command {
    let mut c = cmd::command(prog);
    if !root.is_live() {
        match prog {
            "rpm" => {
                c.arg("--root").arg(root.base());
            }
            _ => {
                c.arg(format!("--root={}", root.base().display()));
            }
        }
    }
    c
}

/// Reads name, version and architecture from a package file.
pub fn file_info(format: Format, path: &Path) -> Result<FileInfo, PackageError> {
    let (mut cmd, fields) = match format {
        Format::Deb => {
            let mut c = cmd::command("dpkg-deb");
            c.arg("--show")
                .arg("--showformat=${Package}\\n${Version}\\n${Architecture}\\n${Depends}\\n${Pre-Depends}\\n")
                .arg(path);
            (c, 4)
        }
        Format::Rpm => {
            let mut c = cmd::command("rpm");
            c.args([
                "-qp",
                "--nosignature",
                "--nodigest",
                "--qf",
                "%{NAME}\\n%{VERSION}-%{RELEASE}\\n%{ARCH}\\n\\n",
            ])
            .arg(path);
            (c, 4)
        }
    };
    let o = run(&mut cmd)?;
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    if !o.status.success() || lines.len() < fields - 1 || lines[0].is_empty() {
        return Err(PackageError::NotAPackage {
            path: path.display().to_string(),
            format,
            detail: tail(&o).join(" / "),
        });
    }
    Ok(FileInfo {
        name: lines[0].to_string(),
        version: lines[1].to_string(),
        arch: lines[2].to_string(),
        // Pre-Depends must be met before unpacking: for this check, the same as Depends.
        depends: lines
            .get(3..)
            .unwrap_or_default()
            .iter()
            .filter(|l| !l.trim().is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The installed version of istio-sidecar in the root, if it is fully installed.
pub fn installed(root: &Root, format: Format) -> Result<Option<String>, PackageError> {
    match format {
        Format::Deb => {
            let o = run(tool(root, "dpkg-query").args(["-W", "-f=${Status}\\t${Version}", NAME]))?;
            let out = String::from_utf8_lossy(&o.stdout);
            Ok(out
                .strip_prefix("install ok installed\t")
                .map(|v| v.trim().to_string()))
        }
        Format::Rpm => {
            let o = run(tool(root, "rpm").args(["-q", "--qf", "%{VERSION}-%{RELEASE}", NAME]))?;
            Ok(o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string()))
        }
    }
}

/// Dependencies of a .deb that the root does not satisfy: a clause is met when one of
/// its alternatives is a fully installed package (or one it Provides) and, for a
/// versioned alternative, the installed version satisfies the relation (checked with
/// `dpkg --compare-versions`, dpkg's own rules; a Provides never satisfies a versioned
/// clause here, so such a clause is left to the resolver). An unmet versioned clause
/// names the version that is there.
pub fn missing_deps(root: &Root, depends: &str) -> Result<Vec<String>, PackageError> {
    if depends.trim().is_empty() {
        return Ok(vec![]);
    }
    let o = run(tool(root, "dpkg-query").args([
        "-W",
        "-f=${Package}\\t${Status}\\t${Version}\\t${Provides}\\n",
    ]))?;
    let mut versions: BTreeMap<String, String> = BTreeMap::new();
    let mut provided = BTreeSet::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() >= 3 && f[1] == "install ok installed" {
            versions.insert(f[0].to_string(), f[2].to_string());
            for p in f.get(3).unwrap_or(&"").split(',') {
                provided.insert(Dep::parse(p).name);
            }
        }
    }
    let mut unmet = Vec::new();
    for clause in depends.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let mut why = None;
        let mut met = false;
        for alt in clause.split('|').map(Dep::parse) {
            met = match (&alt.relation, versions.get(&alt.name)) {
                (None, Some(_)) => true,
                (None, None) => provided.contains(&alt.name),
                (Some((op, want)), Some(have)) => {
                    why.get_or_insert_with(|| format!("{} {have} is installed", alt.name));
                    compare_versions(have, op, want)?
                }
                (Some(_), None) => false,
            };
            if met {
                break;
            }
        }
        if !met {
            unmet.push(match why {
                Some(w) => format!("{clause} ({w})"),
                None => clause.to_string(),
            });
        }
    }
    Ok(unmet)
}

/// One alternative of a Depends clause: `iproute2 (>= 5.0)`, `python3:any`.
#[derive(Debug, PartialEq, Eq)]
struct Dep {
    name: String,
    /// The relation and version, when the clause has one.
    relation: Option<(String, String)>,
}

impl Dep {
    fn parse(s: &str) -> Dep {
        let s = s.trim();
        let (head, rel) = match s.split_once('(') {
            Some((h, r)) => (h, Some(r.trim_end().trim_end_matches(')'))),
            None => (s, None),
        };
        let name = head
            .split([' ', ':', '['])
            .next()
            .unwrap_or_default()
            .to_string();
        let relation = rel.and_then(|r| {
            let r = r.trim();
            let op_len = r.find(|c: char| !"<=>".contains(c)).unwrap_or(r.len());
            let (op, version) = r.split_at(op_len);
            (!op.is_empty() && !version.trim().is_empty())
                .then(|| (op.to_string(), version.trim().to_string()))
        });
        Dep { name, relation }
    }
}

/// `dpkg --compare-versions HAVE OP WANT` (dpkg knows its version syntax and every
/// relation, the deprecated `<` and `>` included).
fn compare_versions(have: &str, op: &str, want: &str) -> Result<bool, PackageError> {
    let o = run(cmd::command("dpkg").args(["--compare-versions", have, op, want]))?;
    match o.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(PackageError::Tool(format!(
            "`dpkg --compare-versions {have} {op} {want}` failed: {}",
            tail(&o).join(" / ")
        ))),
    }
}

/// How a package file gets installed: the decision, apart from running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installer {
    /// dpkg -i / rpm -U alone: every dependency is already there, so apt-get or dnf
    /// would only add seconds (on a fresh VM apt-get first builds its package cache).
    Direct,
    /// apt-get / dnf: they fetch what is missing.
    Resolver(&'static str),
    /// Dependencies are missing and nothing here can fetch them.
    Missing(Vec<String>),
}

/// The installer for a package whose unmet dependencies are `unmet`, when `resolver`
/// (apt-get, dnf) is usable here.
pub fn choose(resolver: Option<&'static str>, unmet: Vec<String>) -> Installer {
    match (resolver, unmet.is_empty()) {
        (_, true) => Installer::Direct,
        (Some(r), false) => Installer::Resolver(r),
        (None, false) => Installer::Missing(unmet),
    }
}

/// What `rpm -U --test` says the file needs (empty when the install would go through;
/// any other refusal, a conflict say, is left to dnf, which explains it).
fn rpm_unmet(root: &Root, file: &Path) -> Result<Vec<String>, PackageError> {
    let o = run(tool(root, "rpm")
        .args(["-U", "--test", "--oldpackage"])
        .arg(file))?;
    if o.status.success() {
        return Ok(vec![]);
    }
    let unmet: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains(" is needed by "))
        .map(|l| l.trim().to_string())
        .collect();
    Ok(if unmet.is_empty() {
        vec!["(rpm --test refused the file)".into()]
    } else {
        unmet
    })
}

/// Which resolver (if any) installs packages with their dependencies on a live system.
fn resolver(root: &Root, format: Format) -> Option<&'static str> {
    if !root.is_live() {
        return None; // apt/dnf would act on the host, not the target root
    }
    let prog = match format {
        Format::Deb => "apt-get",
        Format::Rpm => "dnf",
    };
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .then_some(prog)
}

/// Installs (or upgrades to) the package file: with dpkg/rpm alone when every dependency
/// is already installed in the target; else, on a live system, with the distribution's
/// resolver (apt-get, dnf), which fetches what is missing; else refused, naming what is
/// missing, before anything is touched.
pub fn install(
    root: &Root,
    format: Format,
    file: &Path,
    info: &FileInfo,
) -> Result<String, PackageError> {
    // apt-get and dnf take a bare `x.deb` for a package *name*: always pass a path.
    let abs = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let file = abs.as_path();
    let resolver = resolver(root, format);
    let unmet = match (format, resolver) {
        (Format::Deb, _) => missing_deps(root, &info.depends)?,
        (Format::Rpm, Some(_)) => rpm_unmet(root, file)?,
        // rpm refuses an unmet Requires by itself, touching nothing.
        (Format::Rpm, None) => vec![],
    };
    let cmd = match (format, choose(resolver, unmet)) {
        (_, Installer::Missing(missing)) => {
            return Err(PackageError::MissingDeps {
                root: root.base().display().to_string(),
                missing,
            })
        }
        (Format::Deb, Installer::Resolver(apt)) => {
            let mut c = cmd::command(apt);
            c.env("DEBIAN_FRONTEND", "noninteractive")
                .args([
                    "install",
                    "-y",
                    "--allow-downgrades",
                    "-o",
                    "Dpkg::Options::=--force-confold",
                ])
                .arg(file);
            c
        }
        (Format::Rpm, Installer::Resolver(dnf)) => {
            let mut c = cmd::command(dnf);
            c.args(["install", "-y"]).arg(file);
            c
        }
        (Format::Deb, Installer::Direct) => {
            let mut c = tool(root, "dpkg");
            c.env("DEBIAN_FRONTEND", "noninteractive")
                .args(["--force-confold", "-i"])
                .arg(file);
            c
        }
        (Format::Rpm, Installer::Direct) => {
            let mut c = tool(root, "rpm");
            c.args(["-U", "--oldpackage"]).arg(file);
            c
        }
    };
    run_installer(cmd)
}

/// Removes istio-sidecar (`dpkg -r` / `rpm -e`, with `--root` for a root other than
/// `/`); returns the command run. The package's removal does not stop the service:
/// callers stop it first.
pub fn remove(root: &Root, format: Format, purge: bool) -> Result<String, PackageError> {
    let cmd = match format {
        Format::Deb => {
            let mut c = tool(root, "dpkg");
            // --purge also removes the conffiles (sidecar.env, the bootstrap template).
            c.args([if purge { "--purge" } else { "-r" }, NAME]);
            c
        }
        Format::Rpm => {
            let mut c = tool(root, "rpm");
            c.args(["-e", NAME]);
            c
        }
    };
    run_installer(cmd)
}

/// Runs dpkg/rpm/apt-get/dnf; a failure carries the command and its output's tail.
fn run_installer(mut cmd: Command) -> Result<String, PackageError> {
    let shown = show(&cmd);
    let o = run_for(&mut cmd, INSTALL_TIMEOUT)?;
    if !o.status.success() {
        return Err(PackageError::Install {
            command: shown,
            status: o.status_text(),
            tail: tail(&o),
        });
    }
    Ok(shown)
}

/// The output's last lines, made printable.
fn tail(o: &cmd::Output) -> Vec<String> {
    o.tail_lines(TAIL_LINES)
        .iter()
        .map(|l| crate::bundle::printable(l, 300))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{choose, Dep, Installer};

    fn dep(name: &str, rel: Option<(&str, &str)>) -> Dep {
        Dep {
            name: name.into(),
            relation: rel.map(|(o, v)| (o.into(), v.into())),
        }
    }

    #[test]
    fn dependency_clauses() {
        assert_eq!(
            Dep::parse(" iproute2 (>= 5.0)"),
            dep("iproute2", Some((">=", "5.0")))
        );
        assert_eq!(Dep::parse("python3:any"), dep("python3", None));
        assert_eq!(
            Dep::parse("libc6:amd64 (<<2.37~)"),
            dep("libc6", Some(("<<", "2.37~")))
        );
        assert_eq!(Dep::parse("sudo"), dep("sudo", None));
        // Half a relation is no relation: the name alone decides.
        assert_eq!(Dep::parse("x (>=)"), dep("x", None));
    }

    #[test]
    fn direct_when_nothing_is_missing() {
        assert_eq!(choose(Some("apt-get"), vec![]), Installer::Direct);
        assert_eq!(choose(None, vec![]), Installer::Direct);
        assert_eq!(
            choose(Some("apt-get"), vec!["sudo".into()]),
            Installer::Resolver("apt-get")
        );
        assert_eq!(
            choose(None, vec!["sudo".into()]),
            Installer::Missing(vec!["sudo".into()])
        );
    }
}
