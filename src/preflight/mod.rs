//! The online preflight: before `apply` touches anything (and alone in `vmagent check
//! --online`), can this VM reach istiod the way the proxy will, with this bundle's root
//! certificate, a sane clock, free ports and the right address to advertise?
//!
//! Each check family has its file: [`endpoint`] (discoveryAddress, CA_ADDR, the
//! east-west gateway's 15443), [`clock`], [`local`] (ports, advertised address). The
//! decisions are pure functions; the probes (net::probe, procfs, `timedatectl`,
//! `hostname`) run concurrently, so an unreachable gateway costs one timeout, not one
//! per check. Not to be confused with `apply::preflight` (disk space).

pub mod clock;
pub mod endpoint;
pub mod local;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bundle::Bundle;
use crate::config::{CheckName, Config};
use crate::exit;
use crate::root::Root;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Passed.
    Ok,
    /// Failed: the VM would not join.
    Failed,
    /// Not run (skipped in config, not applicable, or the tool to ask is missing).
    Skipped,
}

/// What kind of failure, one exit code each (README: exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// A name does not resolve (bundle hosts, then the VM's resolver).
    Dns,
    /// TCP: refused, timeout or no route (the message says which).
    Unreachable,
    /// istiod's certificate is not signed by the bundle's root-cert.pem.
    CaMismatch,
    /// TCP connects but no TLS for istiod answers: the gateway does not route 15012.
    NotRouted,
    /// The certificate is not valid for the server name.
    ServerName,
    /// The local clock disagrees with the token or istiod's certificate.
    Clock,
    /// A port the proxy needs is held by another program.
    PortsBusy,
    /// The address pilot-agent will advertise is not this VM's (or there is none).
    Address,
}

impl Failure {
    /// The process exit code of this class.
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Dns => exit::PREFLIGHT_DNS,
            Failure::Unreachable => exit::PREFLIGHT_UNREACHABLE,
            Failure::CaMismatch => exit::PREFLIGHT_CA_MISMATCH,
            Failure::NotRouted => exit::PREFLIGHT_NOT_ROUTED,
            Failure::ServerName => exit::PREFLIGHT_SERVER_NAME,
            Failure::Clock => exit::PREFLIGHT_CLOCK,
            Failure::PortsBusy => exit::PREFLIGHT_PORTS,
            Failure::Address => exit::PREFLIGHT_ADDRESS,
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Which check.
    pub name: CheckName,
    /// How it ended.
    pub status: Status,
    /// What was found; for a failure the cause and the fix, one line.
    pub detail: String,
    /// The failure class (failed checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl CheckResult {
    /// A passed check.
    pub fn ok(name: CheckName, detail: impl Into<String>) -> Self {
        CheckResult {
            name,
            status: Status::Ok,
            detail: detail.into(),
            failure: None,
        }
    }
    /// A skipped check.
    pub fn skipped(name: CheckName, detail: impl Into<String>) -> Self {
        CheckResult {
            name,
            status: Status::Skipped,
            detail: detail.into(),
            failure: None,
        }
    }
    /// A failed check.
    pub fn failed(name: CheckName, failure: Failure, detail: impl Into<String>) -> Self {
        CheckResult {
            name,
            status: Status::Failed,
            detail: detail.into(),
            failure: Some(failure),
        }
    }
    /// One line of text: `name: detail`, marked by status.
    pub fn line(&self) -> String {
        let mark = match self.status {
            Status::Ok => "ok",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        };
        format!("{mark:<7} {}: {}", self.name.name(), self.detail)
    }
}

/// Every check's result (`--output json`: `preflight`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// One result per check, in [`CheckName::ALL`] order.
    pub checks: Vec<CheckResult>,
    /// How long the checks took, in milliseconds.
    pub elapsed_ms: u64,
}

impl Report {
    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.status == Status::Failed)
    }

    /// Whether every check passed or was skipped.
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The exit code: the first failed check's class (in report order), else 0.
    pub fn exit_code(&self) -> u8 {
        self.failures()
            .find_map(|c| c.failure)
            .map_or(exit::OK, Failure::exit_code)
    }

    /// One line for a passed preflight: how many checks passed or were skipped.
    pub fn summary(&self) -> String {
        let count = |st: Status| self.checks.iter().filter(|c| c.status == st).count();
        format!(
            "online preflight passed in {} ms: {} checks ok, {} skipped (istiod reachable with this bundle's root certificate)",
            self.elapsed_ms,
            count(Status::Ok),
            count(Status::Skipped)
        )
    }

    /// One line per failed check: `name: cause; fix`.
    pub fn failure_lines(&self) -> Vec<String> {
        self.failures()
            .map(|c| format!("{}: {}", c.name.name(), c.detail))
            .collect()
    }
}

/// Runs every online check not skipped in `cfg.preflight` and returns all results
/// (never an error: a check that cannot ask is reported as skipped). `root` gives the
/// istio-proxy account (ports held by it count as istio's); sockets, addresses, clock
/// and network are always the running machine's.
pub fn online(bundle: &Bundle, root: &Root, cfg: &Config) -> Report {
    let started = Instant::now();
    let p = &cfg.preflight;
    let timeout = Duration::from_millis(p.timeout_ms);
    let skipped = |n: CheckName| p.skip.contains(&n);
    let targets = endpoint::targets(bundle);
    let replaced = cfg.token.provider != crate::config::ProviderKind::Bundle;
    let results: Vec<CheckResult> = std::thread::scope(|s| {
        let on = |n: CheckName| !skipped(n);
        let handles = [
            on(CheckName::Istiod)
                .then(|| s.spawn(|| endpoint::check(&targets.istiod, bundle, timeout))),
            on(CheckName::Ca).then(|| {
                s.spawn(|| match &targets.ca {
                    Ok(t) => endpoint::check(t, bundle, timeout),
                    Err(why) => CheckResult::skipped(CheckName::Ca, why.clone()),
                })
            }),
            on(CheckName::Gateway).then(|| {
                s.spawn(|| match &targets.gateway {
                    Ok(t) => endpoint::check(t, bundle, timeout),
                    Err(why) => CheckResult::skipped(CheckName::Gateway, why.clone()),
                })
            }),
            on(CheckName::Clock)
                .then(|| s.spawn(|| clock::check(bundle, replaced, p.clock_skew_secs))),
            on(CheckName::Ports).then(|| s.spawn(|| local::ports(root))),
            on(CheckName::Address)
                .then(|| s.spawn(|| local::address(bundle.cluster_env.get("ISTIO_SVC_IP")))),
        ];
        handles
            .into_iter()
            .zip(CheckName::ALL)
            .map(|(h, n)| match h {
                None => CheckResult::skipped(n, "skipped in config ([preflight] skip)"),
                Some(h) => h.join().unwrap_or_else(|_| {
                    CheckResult::skipped(
                        n,
                        "the check stopped unexpectedly (a bug: please report it)",
                    )
                }),
            })
            .collect()
    });
    Report {
        checks: results,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_the_first_failure_in_report_order() {
        let r = Report {
            checks: vec![
                CheckResult::ok(CheckName::Istiod, "fine"),
                CheckResult::failed(CheckName::Clock, Failure::Clock, "behind"),
                CheckResult::failed(CheckName::Ports, Failure::PortsBusy, "busy"),
            ],
            elapsed_ms: 1,
        };
        assert_eq!(r.exit_code(), exit::PREFLIGHT_CLOCK);
        assert_eq!(r.failure_lines(), vec!["clock: behind", "ports: busy"]);
        assert!(!r.passed());
        let ok = Report {
            checks: vec![CheckResult::skipped(CheckName::Ca, "same")],
            elapsed_ms: 0,
        };
        assert!(ok.passed());
        assert_eq!(ok.exit_code(), exit::OK);
    }

    #[test]
    fn every_class_has_its_own_code_in_30_to_39() {
        let all = [
            Failure::Dns,
            Failure::Unreachable,
            Failure::CaMismatch,
            Failure::NotRouted,
            Failure::ServerName,
            Failure::Clock,
            Failure::PortsBusy,
            Failure::Address,
        ];
        let mut codes: Vec<u8> = all.iter().map(|f| f.exit_code()).collect();
        assert!(codes.iter().all(|c| (30..=39).contains(c)));
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
