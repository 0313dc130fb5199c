//! `vmagent check`: the bundle alone, its signature (`[trust]`), and the online
//! checks (`--online`); `passed` turns a preflight report into apply's verdict.

use std::path::Path;

use super::RunError;
use crate::bundle::{Bundle, ReadOptions};
use crate::config::Config;
use crate::root::Root;
use crate::timefmt;

/// The signature check of `vmagent check` (`[trust]` of the config in `root`).
pub fn check_trust(root: &Path, bundle: &Path) -> Result<crate::trust::Verdict, RunError> {
    let root = Root::new(root)?;
    let cfg = Config::load(&root)?;
    let root = cfg.locate(root);
    Ok(crate::trust::verify(&root, &cfg.trust, bundle)?)
}

/// Reads and validates a bundle (`vmagent check`).
pub fn check(bundle: &Path, allow_expired_token: bool) -> Result<Bundle, RunError> {
    Ok(Bundle::open(
        bundle,
        ReadOptions {
            allow_expired_token,
            now: timefmt::now(),
        },
    )?)
}

/// `report` when every check passed, else the error that stops the run.
pub(super) fn passed(
    report: crate::preflight::Report,
) -> Result<crate::preflight::Report, RunError> {
    if report.passed() {
        return Ok(report);
    }
    let lines = report.failure_lines();
    Err(RunError::Preflight {
        report: Box::new(report),
        lines,
    })
}

/// `vmagent check --online`: the bundle, then every online check (config from `root`;
/// `[preflight] enabled` does not apply: it was asked for).
pub fn check_online(
    bundle: &Path,
    root: &Path,
    allow_expired_token: bool,
) -> Result<(Bundle, crate::preflight::Report), RunError> {
    let root = Root::new(root)?;
    let cfg = Config::load(&root)?;
    let replaced = cfg.token.provider != crate::config::ProviderKind::Bundle;
    let b = check(bundle, allow_expired_token || replaced)?;
    let report = crate::preflight::online(&b, &root, &cfg);
    Ok((b, report))
}
