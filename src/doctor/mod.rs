//! `vmagent doctor`: the installed state in one report for a support ticket, human or
//! JSON, with no secrets (no token text, no credentials, no config headers): a list of
//! [`Section`]s, one typed result each, checked in order. More checks (the online
//! preflight) slot in as one more [`Kind`] and one more entry in [`run`].
//!
//! Sections: the istio service (systemd), the proxy's health (the same view as `vmagent
//! status`: readiness probe and the log's reasons), the identity timeline (token and
//! workload certificate: when the VM leaves the mesh), Istio's iptables chains (present
//! while istio runs, left over when it does not), and DNS capture (a mesh and an
//! external name through the DNS proxy on 127.0.0.1:15053).
//!
//! Exit status: [`crate::exit::DOCTOR`] when a section fails, else 0 (warnings and
//! unknowns do not fail).

pub mod dns;
pub mod iptables;
pub mod online;

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::root::Root;
use crate::service::{Mode, Systemctl, UnitState};
use crate::status::{IdentityView, StatusFile};
use crate::timefmt;

/// What a section is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// istio.service in systemd.
    Service,
    /// The proxy's readiness and the reasons from its log.
    Health,
    /// When the mesh identity lapses.
    Identity,
    /// Istio's iptables chains.
    Iptables,
    /// DNS capture through the DNS proxy.
    DnsCapture,
    /// The online checks of apply's preflight, against what is installed.
    Online,
}

impl Kind {
    /// The section's name as shown.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Health => "health",
            Kind::Identity => "identity",
            Kind::Iptables => "iptables",
            Kind::DnsCapture => "dns-capture",
            Kind::Online => "online",
        }
    }
}

/// A section's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Works, but will not for long or not fully: act soon.
    Warn,
    /// Broken: the hint says what to do.
    Fail,
    /// Could not be checked (the reason is the summary).
    Unknown,
}

/// One section's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    /// What it checked.
    pub kind: Kind,
    /// How it went.
    pub verdict: Verdict,
    /// One line.
    pub summary: String,
    /// What was seen, one fact a line.
    pub details: Vec<String>,
    /// What to do, when not ok.
    pub hint: Option<String>,
}

/// The whole report (`--output json` prints it as it is).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// vmagent's version.
    pub vmagent: String,
    /// The target root.
    pub root: String,
    /// When it was made, RFC 3339.
    pub at: String,
    /// The sections, in order.
    pub sections: Vec<Section>,
    /// The process exit code ([`exit_code`]).
    pub exit_code: u8,
}

/// Fails when any section fails.
pub fn exit_code(sections: &[Section]) -> u8 {
    if sections.iter().any(|s| s.verdict == Verdict::Fail) {
        crate::exit::DOCTOR
    } else {
        crate::exit::OK
    }
}

/// The service section from systemd's view (`None`: offline root, not asked).
pub fn service_section(
    unit: Option<&Result<UnitState, String>>,
    enabled: Option<&str>,
    offline: Option<&str>,
) -> Section {
    let s = |verdict, summary: String, details: Vec<String>, hint: Option<&str>| Section {
        kind: Kind::Service,
        verdict,
        summary,
        details,
        hint: hint.map(str::to_string),
    };
    let en = enabled.unwrap_or("unknown");
    let details = vec![format!("enabled at boot: {en}")];
    match unit {
        None => s(
            Verdict::Unknown,
            format!(
                "not asked: {}",
                offline.unwrap_or("systemd is not running here")
            ),
            details,
            None,
        ),
        Some(Err(e)) => s(
            Verdict::Unknown,
            format!("systemctl failed: {e}"),
            details,
            None,
        ),
        Some(Ok(u)) if u.load == "not-found" => s(
            Verdict::Fail,
            format!("{} is not installed", crate::service::UNIT),
            details,
            Some("run `vmagent apply BUNDLE` (it installs the istio-sidecar package)"),
        ),
        Some(Ok(u)) if !u.is_up() => s(
            Verdict::Fail,
            format!("{} is {}", crate::service::UNIT, u.describe()),
            details,
            Some("start it (`systemctl start istio`); `journalctl -u istio` says why it stopped"),
        ),
        Some(Ok(u)) if en != "enabled" => s(
            Verdict::Warn,
            format!(
                "{} is {} but not enabled: it will not start at the next boot",
                crate::service::UNIT,
                u.describe()
            ),
            details,
            Some("run `systemctl enable istio` (or `vmagent apply` again)"),
        ),
        Some(Ok(u)) => {
            let mut d = details;
            d.push(format!("automatic restarts: {}", u.restarts));
            s(
                Verdict::Ok,
                format!("{} is {}", crate::service::UNIT, u.describe()),
                d,
                None,
            )
        }
    }
}

/// The health section from the status view.
pub fn health_section(st: &StatusFile) -> Section {
    let h = &st.health;
    let verdict = match h.state {
        crate::health::State::Ready => Verdict::Ok,
        crate::health::State::Unknown => Verdict::Unknown,
        crate::health::State::Starting => Verdict::Warn,
        _ => Verdict::Fail,
    };
    let mut details: Vec<String> = h
        .evidence
        .iter()
        .map(|e| format!("evidence: {e}"))
        .collect();
    details.extend(
        st.package_version
            .iter()
            .map(|v| format!("istio-sidecar package: {v}")),
    );
    details.extend(st.warnings.iter().map(|w| format!("warning: {w}")));
    details.extend(st.unreadable.iter().map(|w| format!("unreadable: {w}")));
    Section {
        kind: Kind::Health,
        verdict,
        summary: h.line(),
        details,
        hint: h.hint.clone().filter(|_| verdict != Verdict::Ok),
    }
}

/// The identity section from the timeline at `now`.
pub fn identity_section(id: Option<&IdentityView>, now: i64) -> Section {
    let at = |t: Option<i64>| t.map_or("none".to_string(), timefmt::rfc3339);
    let Some(i) = id else {
        return Section {
            kind: Kind::Identity,
            verdict: Verdict::Unknown,
            summary: "no identity to check (not onboarded, or its files could not be read)".into(),
            details: Vec::new(),
            hint: None,
        };
    };
    let details = vec![
        format!("token expires: {}", at(i.token_expires_at)),
        format!(
            "workload certificate expires: {}",
            at(i.certificate_expires_at)
        ),
        format!("renews without the token: {}", i.renews_without_token),
    ];
    let lapsed = i.lapses_at.is_some_and(|t| t <= now);
    let (verdict, summary, hint) = if lapsed {
        (
            Verdict::Fail,
            format!("the mesh identity lapsed at {}: the VM is out of the mesh", at(i.lapses_at)),
            Some("get a fresh bundle (`istioctl x workload entry configure`) and `vmagent apply` it, or configure a [token] provider".to_string()),
        )
    } else if let Some(w) = i.route_warning() {
        (Verdict::Warn, w, i.fix.clone())
    } else {
        let when = i
            .lapses_at
            .map_or("never lapses on its own".to_string(), |t| {
                format!("lapses at {} unless renewed", timefmt::rfc3339(t))
            });
        (Verdict::Ok, format!("the mesh identity {when}"), None)
    };
    Section {
        kind: Kind::Identity,
        verdict,
        summary,
        details,
        hint,
    }
}

/// Checks everything for the root at `root_path`.
pub fn run(root_path: &Path) -> Result<Report, crate::root::RootError> {
    let root = Root::new(root_path)?;
    let (root, cfg, cfg_error) = match Config::load(&root) {
        Ok(c) => (c.locate(root), c, None),
        Err(e) => (
            root,
            Config::default(),
            Some(format!("{e} (defaults used)")),
        ),
    };
    let mut st = crate::status::current(&root, &cfg.health.ready_url);
    st.unreadable.extend(cfg_error);
    let (sc, mode) = Systemctl::for_root(&root);
    let (unit, offline) = match &mode {
        Mode::Live => (Some(sc.show().map_err(|e| e.to_string())), None),
        Mode::Offline(_) if !root.is_live() => (
            None,
            Some(format!(
                "the root {} is not the running system",
                root.base().display()
            )),
        ),
        Mode::Offline(_) => (None, Some("systemd is not running here".to_string())),
    };
    let running = unit
        .as_ref()
        .and_then(|u| u.as_ref().ok())
        .map(UnitState::is_up);
    // iptables are the running system's: asked on `/` (with or without systemd) and
    // under the debug builds' stand-in service manager, which stands for it.
    let seen = if root.is_live() || mode == Mode::Live {
        iptables::see()
    } else {
        iptables::Seen::Unknown(format!(
            "the root {} is not the running system (iptables are the running system's)",
            root.base().display()
        ))
    };
    let sections = vec![
        service_section(unit.as_ref(), st.enabled.as_deref(), offline.as_deref()),
        health_section(&st),
        identity_section(st.identity.as_ref(), timefmt::now()),
        iptables::judge(&seen, running),
        dns::section(&root, &cfg.doctor.external_name),
        online::section(&root, &cfg),
    ];
    Ok(Report {
        vmagent: env!("CARGO_PKG_VERSION").into(),
        root: root.base().display().to_string(),
        at: timefmt::rfc3339(timefmt::now()),
        exit_code: exit_code(&sections),
        sections,
    })
}

#[cfg(test)]
mod tests;
