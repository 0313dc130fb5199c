//! Talking to dpkg and rpm: what a package file is, what is installed in the target
//! root, which dependencies are missing, and the install itself.

use std::collections::BTreeSet;
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
    /// Depends (deb only; rpm checks its own).
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
                .arg("--showformat=${Package}\\n${Version}\\n${Architecture}\\n${Depends}\\n")
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
        depends: lines.get(3).unwrap_or(&"").to_string(),
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

/// Dependencies of a .deb that are not installed in the root (alternatives and
/// Provides count; version constraints are left to dpkg).
pub fn missing_deps(root: &Root, depends: &str) -> Result<Vec<String>, PackageError> {
    if depends.trim().is_empty() {
        return Ok(vec![]);
    }
    let o =
        run(tool(root, "dpkg-query").args(["-W", "-f=${Package}\\t${Status}\\t${Provides}\\n"]))?;
    let mut have = BTreeSet::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() >= 2 && f[1] == "install ok installed" {
            have.insert(f[0].to_string());
            for p in f.get(2).unwrap_or(&"").split(',') {
                have.insert(dep_name(p));
            }
        }
    }
    Ok(depends
        .split(',')
        .filter(|clause| !clause.split('|').any(|alt| have.contains(&dep_name(alt))))
        .map(|clause| clause.trim().to_string())
        .collect())
}

/// `iproute2 (>= 1.0)` / `foo:any` -> `iproute2` / `foo`.
fn dep_name(s: &str) -> String {
    s.trim()
        .split([' ', '(', ':'])
        .next()
        .unwrap_or_default()
        .to_string()
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

/// Installs (or upgrades to) the package file: with the distribution's resolver on a
/// live system, else with dpkg/rpm after checking a .deb's dependencies in the target.
pub fn install(
    root: &Root,
    format: Format,
    file: &Path,
    info: &FileInfo,
) -> Result<String, PackageError> {
    // apt-get and dnf take a bare `x.deb` for a package *name*: always pass a path.
    let abs = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let file = abs.as_path();
    let cmd = match (format, resolver(root, format)) {
        (Format::Deb, Some(apt)) => {
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
        (Format::Rpm, Some(dnf)) => {
            let mut c = cmd::command(dnf);
            c.args(["install", "-y"]).arg(file);
            c
        }
        (Format::Deb, None) => {
            let missing = missing_deps(root, &info.depends)?;
            if !missing.is_empty() {
                return Err(PackageError::MissingDeps {
                    root: root.base().display().to_string(),
                    missing,
                });
            }
            let mut c = tool(root, "dpkg");
            c.args(["--force-confold", "-i"]).arg(file);
            c
        }
        (Format::Rpm, None) => {
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
    #[test]
    fn dependency_names() {
        assert_eq!(super::dep_name(" iproute2 (>= 5.0)"), "iproute2");
        assert_eq!(super::dep_name("python3:any"), "python3");
    }
}
