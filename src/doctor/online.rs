//! The doctor's `online` section: the same online checks as apply's preflight
//! (`crate::preflight::online`: istiod and the CA reachable with the installed root
//! certificate, the gateway, clock, ports, advertised address), run against what is
//! installed: cluster.env, mesh.yaml, the token, root-cert.pem and the managed block of
//! /etc/hosts, read back into a bundle.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Kind, Section, Verdict};
use crate::bundle::{archive::RawBundle, Bundle, Member, ReadOptions};
use crate::config::Config;
use crate::layout;
use crate::root::Root;

/// The installed files as a bundle (the token may have expired: the timeline section
/// says so), or why not.
fn installed(root: &Root) -> Result<Bundle, String> {
    let mut files = BTreeMap::new();
    for m in [
        Member::ClusterEnv,
        Member::Mesh,
        Member::Token,
        Member::RootCert,
    ] {
        let Some(spec) = layout::file_for(m) else {
            continue;
        };
        let host = root
            .resolve(Path::new(spec.path))
            .map_err(|e| e.to_string())?;
        match crate::fsx::read_file(&host, 1 << 20) {
            Ok(Some(d)) => {
                files.insert(m.name().to_string(), d);
            }
            Ok(None) => return Err(format!("{} is missing: apply a bundle first", spec.path)),
            Err(e) => return Err(format!("cannot read {}: {e}", spec.path)),
        }
    }
    let hosts = root
        .resolve(Path::new(layout::HOSTS))
        .map_err(|e| e.to_string())?;
    let data = crate::fsx::read_file(&hosts, 16 << 20)
        .map_err(|e| format!("cannot read {}: {e}", layout::HOSTS))?
        .unwrap_or_default();
    let block = crate::etc_hosts::block(&data)
        .map_err(|e| format!("{}: {e}", layout::HOSTS))?
        .unwrap_or_default();
    files.insert(Member::Hosts.name().to_string(), block);
    let raw = RawBundle {
        files,
        ..RawBundle::default()
    };
    let opts = ReadOptions {
        allow_expired_token: true,
        now: crate::timefmt::now(),
    };
    Bundle::from_raw(raw, opts)
        .map_err(|e| format!("the installed files do not read back as a bundle: {e}"))
}

/// The section: run on the live root, or where `[preflight] enabled = true` says so
/// (sockets, addresses and the network are the running machine's).
pub fn section(root: &Root, cfg: &Config) -> Section {
    let unknown = |summary: String| Section {
        kind: Kind::Online,
        verdict: Verdict::Unknown,
        summary,
        details: vec![],
        hint: None,
    };
    if !cfg.preflight.runs(root.is_live()) {
        return unknown(format!(
            "not run: the root {} is not the running system (set [preflight] enabled = true to run it anyway)",
            root.base().display()
        ));
    }
    let bundle = match installed(root) {
        Ok(b) => b,
        Err(e) => return unknown(format!("not run: {e}")),
    };
    let report = crate::preflight::online(&bundle, root, cfg);
    if report.passed() {
        return Section {
            kind: Kind::Online,
            verdict: Verdict::Ok,
            summary: report.summary(),
            details: report.checks.iter().map(|c| c.line()).collect(),
            hint: None,
        };
    }
    let lines = report.failure_lines();
    Section {
        kind: Kind::Online,
        verdict: Verdict::Fail,
        summary: format!(
            "{} online check(s) failed: the proxy cannot reach istiod as configured",
            lines.len()
        ),
        details: report.checks.iter().map(|c| c.line()).collect(),
        hint: lines.first().cloned(),
    }
}
