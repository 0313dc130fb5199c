//! Prometheus metrics of the daemon, in the text exposition format (version 0.0.4): one
//! rendering, written for node_exporter's textfile collector (`vmagent.prom` in
//! `[metrics] textfile_dir`) and served on `[metrics] listen` at `/metrics`, so both
//! ways give the same names and values (README, "Metrics").
//!
//! Everything comes from the status document the daemon has just written (its typed
//! views: [`HealthView`](crate::status::HealthView), [`IdentityView`], [`LastApply`]) and
//! from the daemon's in-memory [`Counters`]: nothing is recomputed here. The rendering
//! holds no time of its own (no "written at"), so it changes only when a value does and
//! the daemon can skip writes of an identical file.

use std::fmt::Write;
use std::path::Path;

use crate::health::State;
use crate::status::{ApplyResult, IdentityView, LastApply, StatusFile};

/// The file name in the textfile directory (node_exporter reads `*.prom`).
pub const FILE_NAME: &str = "vmagent.prom";

/// The exposition format's media type (the `/metrics` response's Content-Type).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The daemon's counters since it started. They reset on restart, as counters do:
/// Prometheus' `rate()` and `increase()` handle resets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Reconciles run (each apply of the bundle, whatever its result).
    pub reconciles: u64,
    /// Reconciles that changed something (a file, the package or the service).
    pub drift_repairs: u64,
    /// Rollbacks to the last-known-good bundle.
    pub rollbacks: u64,
    /// Applies refused by a preflight check before anything was written.
    pub preflight_failures: u64,
}

/// One sample: its labels and its value.
type Sample = (Vec<(&'static str, String)>, i64);

/// The exposition of `doc` and `c` (pure). A family whose value is not known (no
/// token, no apply yet) is left out rather than given a made-up value.
pub fn render(doc: &StatusFile, c: &Counters) -> String {
    let mut out = String::with_capacity(4096);
    let one = |labels: Vec<(&'static str, String)>| vec![(labels, 1)];
    family(
        &mut out,
        "vmagent_build_info",
        "gauge",
        "The vmagent daemon's version (always 1).",
        one(vec![("version", doc.vmagent.clone())]),
    );
    if let Some(v) = &doc.package_version {
        family(
            &mut out,
            "vmagent_package_info",
            "gauge",
            "The installed istio-sidecar package's version (always 1).",
            one(vec![("version", v.clone())]),
        );
    }
    let h = &doc.health;
    family(
        &mut out,
        "vmagent_proxy_ready",
        "gauge",
        "Whether the proxy is ready, i.e. in the mesh (1) or not (0).",
        vec![(vec![], i64::from(h.state == State::Ready))],
    );
    family(
        &mut out,
        "vmagent_health_state",
        "gauge",
        "The proxy's health: 1 for the current state, with its failure kind (empty when none), 0 for the others.",
        State::ALL
            .iter()
            .map(|&s| {
                let current = s == h.state;
                let kind = if current { h.reason.clone() } else { None };
                (
                    vec![("state", s.name().to_string()), ("kind", kind.unwrap_or_default())],
                    i64::from(current),
                )
            })
            .collect(),
    );
    let stamp = |out: &mut String, name: &str, help: &str, t: Option<i64>| {
        if let Some(t) = t {
            family(out, name, "gauge", help, vec![(vec![], t)]);
        }
    };
    stamp(
        &mut out,
        "vmagent_health_state_since_timestamp_seconds",
        "When the proxy entered its current health state, in seconds since the epoch.",
        h.since_unix,
    );
    let id: Option<&IdentityView> = doc.identity.as_ref();
    stamp(
        &mut out,
        "vmagent_token_expiry_timestamp_seconds",
        "When the installed token expires (its exp), in seconds since the epoch.",
        id.and_then(|i| i.token_expires_at),
    );
    stamp(
        &mut out,
        "vmagent_workload_certificate_expiry_timestamp_seconds",
        "When the workload certificate from istiod expires (notAfter), in seconds since the epoch.",
        id.and_then(|i| i.certificate_expires_at),
    );
    stamp(
        &mut out,
        "vmagent_identity_lapse_timestamp_seconds",
        "When the VM's mesh identity lapses without a renewal or a fresh token, in seconds since the epoch (absent when nothing lapses).",
        id.and_then(|i| i.lapses_at),
    );
    if let Some(a) = &doc.last_apply {
        last_apply(&mut out, a);
    }
    for (name, help, v) in [
        (
            "vmagent_reconciles_total",
            "Reconciles the daemon ran since it started.",
            c.reconciles,
        ),
        (
            "vmagent_drift_repairs_total",
            "Reconciles that changed something (a file, the package or the service) since the daemon started.",
            c.drift_repairs,
        ),
        (
            "vmagent_rollbacks_total",
            "Rollbacks to the last-known-good bundle since the daemon started.",
            c.rollbacks,
        ),
        (
            "vmagent_preflight_failures_total",
            "Applies refused by a preflight check, before anything was written, since the daemon started.",
            c.preflight_failures,
        ),
    ] {
        let v = i64::try_from(v).unwrap_or(i64::MAX);
        family(&mut out, name, "counter", help, vec![(vec![], v)]);
    }
    out
}

/// Writes a rendering to `path` (host path; mode 0644: the status is no secret)
/// atomically: a hidden temp file that is not `*.prom` (node_exporter never reads a half
/// file), fsync, rename, fsync of the directory.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    crate::fsx::write_atomic(path, text.as_bytes(), 0o644, None)?;
    crate::fsx::sync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// The last apply's families: time, result (one series per kind) and exit code.
fn last_apply(out: &mut String, a: &LastApply) {
    if let Some(t) = crate::timefmt::parse_rfc3339(&a.at) {
        family(
            out,
            "vmagent_last_apply_timestamp_seconds",
            "gauge",
            "When the last apply ended, in seconds since the epoch.",
            vec![(vec![], t)],
        );
    }
    let kind = a.result.kind();
    family(
        out,
        "vmagent_last_apply_result",
        "gauge",
        "How the last apply ended: 1 for its result, 0 for the others.",
        ApplyResult::KINDS
            .iter()
            .map(|&k| (vec![("result", k.to_string())], i64::from(k == kind)))
            .collect(),
    );
    family(
        out,
        "vmagent_last_apply_exit_code",
        "gauge",
        "The last apply's exit code (0: success; README, Exit codes).",
        vec![(vec![], i64::from(a.exit_code))],
    );
}

/// Appends one metric family: HELP, TYPE and its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<Sample>) {
    let _ = writeln!(out, "# HELP {name} {}", escape(help, false));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", escape(v, true));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
}

/// Escapes per the exposition format: backslash and line feed everywhere, and the
/// double quote in label values (HELP text keeps its quotes).
fn escape(text: &str, label: bool) -> String {
    let mut s = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '"' if label => s.push_str("\\\""),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests;
