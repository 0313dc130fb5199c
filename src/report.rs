//! What the user sees: a human summary on stdout (warnings on stderr), or one stable
//! JSON document with `--output json`.

use std::path::PathBuf;

use serde::Serialize;

use crate::bundle::Bundle;
use crate::plan::render::ActionView;
use crate::run::{ApplyStatus, Outcome, RunError};
use crate::timefmt::{human_duration, now, rfc3339};

mod doctor;
pub use doctor::doctor_text;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Token facts (never the token itself).
#[derive(Debug, Serialize)]
pub struct TokenView {
    /// Workload identity.
    pub sub: Option<String>,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry, RFC 3339.
    pub expires_at: Option<String>,
    /// Seconds until expiry (negative when expired).
    pub expires_in_seconds: Option<i64>,
}

/// Root certificate facts.
#[derive(Debug, Serialize)]
pub struct CertView {
    /// Subject of the first certificate.
    pub subject: String,
    /// Earliest notAfter, RFC 3339.
    pub not_after: String,
    /// Seconds until that.
    pub expires_in_seconds: i64,
}

/// How a command ended, as `result` in `--output json` (kebab-case names, pinned by a
/// test: scripts parse them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandResult {
    /// Changes were made.
    Applied,
    /// Nothing differed.
    UpToDate,
    /// A dry run's plan.
    Planned,
    /// `check`: the bundle is valid.
    Valid,
    /// `recover` rolled an interrupted apply back.
    Recovered,
    /// `recover` found no journal.
    NothingToRecover,
    /// `recover --discard-journal` moved the journal aside.
    JournalDiscarded,
    /// The command failed (`error` says why).
    Error,
}

/// The JSON document (`--output json`). Fields are only ever added, never renamed.
#[derive(Debug, Serialize)]
pub struct Document {
    /// vmagent version.
    pub vmagent: &'static str,
    /// The subcommand.
    pub command: &'static str,
    /// How it ended.
    pub result: CommandResult,
    /// Exit code of the process.
    pub exit_code: u8,
    /// Actions (planned or applied).
    pub actions: Vec<ActionView>,
    /// Informational notes.
    pub notes: Vec<String>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// Token facts, when the bundle was read.
    pub token: Option<TokenView>,
    /// Root certificate facts, when the bundle was read.
    pub root_cert: Option<CertView>,
    /// Paths restored from an interrupted apply.
    pub recovered: Vec<PathBuf>,
    /// The package step (apply without --no-package).
    pub package: Option<crate::package::Decision>,
    /// The error message, when the run failed.
    pub error: Option<String>,
    /// The service step (apply without --no-start).
    pub service: Option<crate::service::Outcome>,
    /// The proxy's health when apply ended (when it waited).
    pub health: Option<crate::status::HealthView>,
    /// How long apply waited for the proxy, in milliseconds.
    pub waited_ms: Option<u64>,
    /// Who signed the bundle (`[trust]`), when it carried a good signature.
    pub signed_by: Option<crate::trust::Signer>,
    /// The online preflight's checks (apply, `check --online`), when they ran.
    pub preflight: Option<crate::preflight::Report>,
}

impl Document {
    /// An empty document for `command`.
    pub fn new(command: &'static str) -> Self {
        Document {
            vmagent: env!("CARGO_PKG_VERSION"),
            command,
            result: CommandResult::Error,
            exit_code: 0,
            actions: vec![],
            notes: vec![],
            warnings: vec![],
            token: None,
            root_cert: None,
            recovered: vec![],
            package: None,
            error: None,
            service: None,
            health: None,
            waited_ms: None,
            signed_by: None,
            preflight: None,
        }
    }

    /// Adds the bundle's facts.
    pub fn with_bundle(mut self, b: &Bundle) -> Self {
        let t = now();
        self.token = Some(TokenView {
            sub: b.token.sub.clone(),
            aud: b.token.aud.clone(),
            expires_at: b.token.exp.map(rfc3339),
            expires_in_seconds: b.token.exp.map(|e| e.saturating_sub(t)),
        });
        self.root_cert = Some(CertView {
            subject: b.root_cert.subject().to_string(),
            not_after: rfc3339(b.root_cert.not_after()),
            expires_in_seconds: b.root_cert.not_after().saturating_sub(t),
        });
        self
    }

    /// The document of a successful apply.
    pub fn from_outcome(o: &Outcome, diffs: bool) -> Self {
        let mut d = Document::new("apply").with_bundle(&o.bundle);
        d.result = match o.status {
            ApplyStatus::Applied => CommandResult::Applied,
            ApplyStatus::UpToDate => CommandResult::UpToDate,
            ApplyStatus::Planned => CommandResult::Planned,
        };
        d.actions = package_view(o)
            .into_iter()
            .chain(o.plan.views(diffs))
            .collect();
        d.notes = notes(o);
        d.package = o.package.clone();
        d.warnings = o.warnings.clone();
        d.recovered = o.recovered.clone().unwrap_or_default();
        d.service = o.service.clone();
        d.signed_by = o.signed_by.clone();
        if let Some(h) = &o.health {
            d.health = Some(crate::status::HealthView::of(
                &h.health,
                crate::timefmt::now(),
            ));
            d.waited_ms = Some(h.waited.as_millis() as u64);
        }
        d.preflight = o.preflight.clone();
        d.exit_code = o.exit_code();
        d
    }

    /// Records a failure.
    pub fn failed(mut self, e: &RunError) -> Self {
        self.result = CommandResult::Error;
        self.exit_code = e.exit_code();
        self.error = Some(e.to_string());
        if let RunError::Preflight { report, .. } = e {
            self.preflight = Some((**report).clone());
        }
        self
    }

    /// Prints as pretty JSON.
    pub fn print_json(&self) {
        match serde_json::to_string_pretty(self) {
            Ok(s) => out(&format!("{s}\n")),
            Err(e) => err_line(&format!("error: cannot render JSON: {e}")),
        }
    }
}

/// One line describing the bundle's identity and expiry.
pub fn bundle_line(b: &Bundle) -> String {
    let t = now();
    let token = match b.token.exp {
        _ if !b.files.contains_key(&crate::bundle::Member::Token) => {
            "no token (legacy bundle: cert-chain.pem and key.pem are the identity)".into()
        }
        Some(e) if e > t => format!(
            "token expires {} (in {})",
            rfc3339(e),
            human_duration(e.saturating_sub(t))
        ),
        Some(e) => format!("token EXPIRED {}", rfc3339(e)),
        None => "token has no expiry".into(),
    };
    format!(
        "identity {}, {}, root CA '{}' valid until {}",
        b.token.sub.as_deref().unwrap_or("(no sub)"),
        token,
        b.root_cert.subject(),
        rfc3339(b.root_cert.not_after())
    )
}

/// Writes to stdout. A closed pipe (`vmagent ... | head`) is not an error worth
/// dying for: the work is done by the time anything is printed.
pub fn out(s: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

pub use crate::text::err_line;

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-q`: no warnings or progress lines on stderr (errors and the result still show).
pub fn set_quiet(q: bool) {
    QUIET.store(q, std::sync::atomic::Ordering::Relaxed);
}

/// A warning or progress line on stderr, unless quiet.
pub fn info_line(s: &str) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        err_line(s);
    }
}

/// Shows what the health monitor sees as it happens (stderr), and logs it.
pub fn health_event(ev: crate::health::monitor::Event<'_>) {
    use crate::health::classify::Class;
    use crate::health::monitor::Event;
    match ev {
        Event::Waiting { limit, url } => {
            tracing::info!(limit_secs = limit.as_secs(), url, "waiting for the proxy");
            info_line(&format!(
                "waiting up to {} s for the proxy to become ready ({url}; reasons from {})",
                limit.as_secs(),
                crate::layout::ISTIO_LOG
            ));
        }
        Event::Line { class, text } => {
            let shown = crate::bundle::printable(text, 300);
            match class {
                Class::Ready => {
                    tracing::info!(line = text, "proxy ready");
                    info_line("  istio: Envoy proxy is ready");
                }
                Class::Progress(st) => {
                    tracing::info!(stage = st.describe(), line = text, "proxy progress");
                    info_line(&format!("  istio: {}", st.describe()));
                }
                Class::Failure(f) => {
                    tracing::warn!(kind = f.name(), line = text, "proxy failure line");
                    info_line(&format!("  istio: {}: {shown}", f.name()));
                }
                // The monitor does not hand benign lines over.
                Class::Benign => {}
            }
        }
        Event::Changed(h) => {
            tracing::info!(
                state = h.state.name(),
                reason = h.failure.map(|f| f.name()),
                "health: {}",
                h.line()
            );
        }
    }
}

/// Prints the text report of an apply.
pub fn print_text(o: &Outcome, bundle: &str, root: &str) {
    for w in &o.warnings {
        info_line(&format!("warning: {w}"));
    }
    if let Some(s) = &o.signed_by {
        info_line(&format!("bundle signed by {s}"));
    }
    out(&text(o, bundle, root));
    out(&service_text(o));
}

/// The service and health part of the text report.
pub fn service_text(o: &Outcome) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if let Some(sv) = &o.service {
        if sv.actions.is_empty() {
            if sv.offline.is_none() {
                let _ = writeln!(s, "service: {} unchanged", crate::service::UNIT);
            }
        } else {
            let _ = write!(
                s,
                "service: {} {}",
                crate::service::UNIT,
                sv.actions.join(", ")
            );
            if let Some(r) = &sv.restart_reason {
                let _ = write!(s, " (changed: {r})");
            }
            let _ = writeln!(s);
        }
        if let Some(why) = &sv.offline {
            let _ = writeln!(s, "note: {why}");
        }
    }
    if let Some(h) = &o.health {
        if h.limit.is_zero() {
            let _ = writeln!(
                s,
                "not waiting for the proxy (--wait 0); `vmagent status` shows its health"
            );
            return s;
        }
        let secs = h.waited.as_secs_f64();
        match h.health.state {
            crate::health::State::Ready => {
                let _ = writeln!(s, "{} (after {secs:.1} s)", h.health.line());
            }
            _ => {
                let _ = writeln!(s, "{}", h.health.line());
                if let Some(f) = h.health.failure {
                    if f == crate::health::Failure::NotReady {
                        let _ = writeln!(s, "  waited: {secs:.0} s");
                    }
                    let _ = writeln!(s, "  hint: {}", f.hint());
                }
                if let Some(sv) = &h.health.service {
                    let _ = writeln!(
                        s,
                        "  service: {sv}, {} automatic restarts",
                        h.health.restarts
                    );
                }
                for e in &h.health.evidence {
                    let _ = writeln!(s, "  evidence: {}", crate::bundle::printable(e, 600));
                }
            }
        }
    }
    s
}

/// The identity lines of `vmagent status`: when it lapses, why, and the fix. Read back
/// from a file, so its text is shown printable.
fn identity_text(s: &mut String, i: &crate::status::IdentityView) {
    use std::fmt::Write;
    let now = crate::timefmt::now();
    let when = match i.lapses_at {
        None => "does not lapse".to_string(),
        Some(t) if t <= now => format!("LAPSED at {}", rfc3339(t)),
        Some(t) => format!("lapses at {} (in {})", rfc3339(t), human_duration(t - now)),
    };
    let renews = if i.renews_without_token {
        "renews without the token"
    } else {
        "needs the token to renew"
    };
    let _ = writeln!(s, "identity:      {when}, {renews} ({})", i.reason.name());
    let _ = writeln!(s, "  why: {}", i.reason.describe());
    if let Some(f) = &i.fix {
        let _ = writeln!(s, "  fix: {}", crate::bundle::printable(f, 600));
    }
}

/// The text of `vmagent status`.
pub fn status_text(st: &crate::status::StatusFile) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let h = &st.health;
    let since = h
        .since
        .as_deref()
        .map(|t| format!(" (since {t})"))
        .unwrap_or_default();
    // Read back from a file: its text is shown printable, like the evidence.
    let _ = writeln!(s, "{}{since}", crate::bundle::printable(&h.line(), 600));
    if let Some(hint) = &h.hint {
        let _ = writeln!(s, "  hint: {}", crate::bundle::printable(hint, 600));
    }
    for e in &h.evidence {
        let _ = writeln!(s, "  evidence: {}", crate::bundle::printable(e, 600));
    }
    let svc = match (&h.service, &st.enabled) {
        (Some(a), Some(e)) => format!("{a}, {e}"),
        (Some(a), None) => a.clone(),
        (None, Some(e)) => e.clone(),
        (None, None) => "unknown".into(),
    };
    let _ = writeln!(s, "service:       {} {svc}", crate::service::UNIT);
    let exp = |e: &Option<crate::status::Expiry>| match e {
        Some(e) => {
            let when = e.expires_at.clone().unwrap_or_else(|| "no expiry".into());
            let left = match e.expires_in_seconds {
                Some(n) if n > 0 => format!(" (in {})", human_duration(n)),
                Some(_) => " (EXPIRED)".into(),
                None => String::new(),
            };
            format!("{when}{left}, {}", e.subject.as_deref().unwrap_or("-"))
        }
        None => "unknown".into(),
    };
    let _ = writeln!(s, "token:         {}", exp(&st.token));
    let _ = writeln!(s, "root cert:     {}", exp(&st.root_cert));
    if st.workload_cert.is_some() {
        let _ = writeln!(s, "workload cert: {}", exp(&st.workload_cert));
    }
    if let Some(i) = &st.identity {
        identity_text(&mut s, i);
    }
    let _ = writeln!(
        s,
        "package:       {}",
        st.package_version
            .as_deref()
            .map(|v| format!("{} {v}", crate::package::install::NAME))
            .unwrap_or_else(|| "not installed".into())
    );
    match &st.last_apply {
        Some(a) => {
            let _ = writeln!(
                s,
                "last apply:    {} at {} (exit {}), {}",
                a.result, a.at, a.exit_code, a.bundle
            );
        }
        None => {
            let _ = writeln!(s, "last apply:    none recorded");
        }
    }
    for u in &st.unreadable {
        let _ = writeln!(s, "cannot read:   {u}");
    }
    s
}

/// The text report of an apply.
pub fn text(o: &Outcome, bundle: &str, root: &str) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if let Some(r) = &o.recovered {
        let _ = writeln!(
            s,
            "recovered: rolled back {} path(s) left by an interrupted apply",
            r.len()
        );
    }
    let _ = writeln!(s, "bundle {bundle}: {}", bundle_line(&o.bundle));
    let pkg = package_view(o);
    let n = o.plan.steps.len() + usize::from(pkg.is_some());
    let order = if pkg.is_some() {
        "; the package first, bundle files only after it succeeds"
    } else {
        ""
    };
    let header = |s: &mut String| {
        let _ = writeln!(s, "plan for {root} ({n} actions{order}):");
        if let Some(v) = &pkg {
            let _ = writeln!(s, "  {:<14} {}  ({})", v.action, v.path, v.detail);
        }
    };
    match o.status {
        ApplyStatus::UpToDate => {
            print_notes(&mut s, o);
            let _ = writeln!(s, "{root}: up to date, nothing to do");
        }

        ApplyStatus::Planned if n == 0 => {
            let _ = writeln!(s, "{root}: up to date, nothing to do (dry run)");
        }
        ApplyStatus::Planned => {
            header(&mut s);
            let _ = write!(s, "{:#}", o.plan);
            print_notes(&mut s, o);
            let _ = writeln!(s, "dry run: nothing was written");
        }
        ApplyStatus::Applied => {
            header(&mut s);
            let _ = write!(s, "{}", o.plan);
            print_notes(&mut s, o);
            if let Some(cmd) = &o.installed_with {
                let _ = writeln!(s, "package installed with `{cmd}`");
            }
            let _ = writeln!(s, "applied {n} actions to {root}");
        }
    }
    s
}

/// The package step as a plan line, when it does something.
fn package_view(o: &Outcome) -> Option<ActionView> {
    let d = o.package.as_ref().filter(|d| !d.is_noop())?;
    // After an apply, a URL whose version matched on arrival installed nothing.
    if o.status == ApplyStatus::Applied && o.installed_with.is_none() {
        return None;
    }
    Some(ActionView {
        action: if d.action == crate::package::PackageAction::Upgrade {
            "upgrade-package"
        } else {
            "install-package"
        },
        path: crate::package::install::NAME.to_string(),
        detail: d.detail(),
        diff: None,
    })
}

fn print_notes(s: &mut String, o: &Outcome) {
    use std::fmt::Write;
    for n in notes(o) {
        let _ = writeln!(s, "note: {n}");
    }
}

/// Plan notes plus the package step's own.
fn notes(o: &Outcome) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(d) = &o.package {
        if let (true, Some(have)) = (
            d.is_noop() || (o.status == ApplyStatus::Applied && o.installed_with.is_none()),
            &d.installed_version,
        ) {
            v.push(format!(
                "{} {have} is already installed; no download, no install",
                crate::package::install::NAME
            ));
        }
    }
    v.extend(o.plan.notes.iter().cloned());
    if let Some(r) = &o.preflight {
        v.push(r.summary());
    }
    v
}
