//! What the daemon tells the world: the status file, sd_notify STATUS, the health log
//! line, the report URL and the metrics; and the health and token checks that feed them.

use std::path::Path;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use super::Daemon;
use super::Stopped;
use crate::health::monitor::Event;
use crate::health::{Health, State};
use crate::identity::timeline::{Timeline, Urgency};
use crate::layout;
use crate::lkg::Lkg;
use crate::service;
use crate::status::{BundleView, HealthView, IdentityView, StatusFile};
use crate::timefmt;

impl Daemon {
    /// Reads new log lines (and probes when due); publishes when the health changed.
    pub(super) async fn step_health(&mut self, probe: bool) -> Result<(), Stopped> {
        if probe {
            self.next_probe =
                Instant::now() + Duration::from_secs(self.cfg.daemon.probe_interval_secs);
        }
        let probed = if self.monitor.wants_probe(probe) {
            Some(self.intr.run(self.monitor.prober().probe_async()).await?)
        } else {
            None
        };
        let mut changed = false;
        self.monitor.step_with(probed, probe, &mut |ev| match ev {
            Event::Changed(_) => changed = true,
            Event::Line { class, text } => tracing::info!(class = ?class, line = text, "istio log"),
            Event::Waiting { .. } => {}
        });
        let token = self.token_check();
        let identity = self.identity_check();
        if changed || token != self.token_note || identity != self.identity_note {
            self.token_note = token;
            self.identity_note = identity;
            self.publish();
        }
        Ok(())
    }

    /// The identity timeline now: its warning text, logged once per new urgency (each
    /// lead time, then the lapse); a later lapse time (a renewal, a fresh token) resets it.
    fn identity_check(&mut self) -> Option<String> {
        let now = timefmt::now();
        let kept = self.cfg.token.provider != crate::config::token::ProviderKind::Bundle;
        let (urgency, note) = match IdentityView::read(&self.root, now, kept) {
            Some((_, t)) => {
                let (u, n) = identity_note(&t, now, &self.cfg.daemon.identity_warn_secs);
                (u, n.map(|n| (n, t.reason.name())))
            }
            None => (Urgency::Quiet, None),
        };
        if urgency > self.identity_urgency {
            if let Some((n, reason)) = &note {
                match urgency {
                    Urgency::Lapsed => tracing::error!(reason = %reason, "identity: {n}"),
                    _ => tracing::warn!(reason = %reason, "identity: {n}"),
                }
            }
        }
        self.identity_urgency = urgency;
        note.map(|(n, _)| n)
    }

    /// Token expiry of the token in place (see [`token_note`]).
    fn token_check(&self) -> Option<String> {
        let file = layout::file_for(crate::bundle::Member::Token)?.path;
        let data = std::fs::read(self.root.resolve(Path::new(file)).ok()?).ok()?;
        let now = timefmt::now();
        let (tok, _) = crate::bundle::token::parse(&data, now, true).ok()?;
        token_note(tok.exp?, tok.iat, now, self.cfg.daemon.token_warn_percent)
    }

    /// Status file, metrics, sd_notify STATUS, log, report URL.
    pub(super) fn publish(&mut self) {
        let h: Health = self.monitor.health().clone();
        let mut doc = StatusFile::new(HealthView::of(&h, self.monitor.since()));
        if let Ok(Some(old)) = StatusFile::load(&self.root) {
            if old.health.state == doc.health.state {
                doc.health.since = old.health.since;
                doc.health.since_unix = old.health.since_unix;
            }
        }
        doc.read_facts(&self.root);
        let (sc, _) = service::Systemctl::for_root(&self.root);
        doc.enabled = sc.enablement().ok().filter(|e| !e.is_empty());
        doc.last_apply = self.last_apply.clone();
        doc.warnings.extend(self.token_note.clone());
        doc.warnings.extend(self.identity_note.clone());
        doc.warnings.extend(
            [&self.poll_error, &self.source_error]
                .into_iter()
                .flatten()
                .map(|e| match self.store.state.current() {
                    Some(c) => format!(
                        "bundle source: {e}; the bundle in force ({}) is kept",
                        c.short()
                    ),
                    None => format!("bundle source: {e}"),
                }),
        );
        let st = &self.store.state;
        if let Lkg::RolledBack {
            good,
            bad,
            reason,
            at,
        } = st
        {
            doc.warnings.push(format!(
                "the bundle {} was rolled back at {at} ({reason}); the last-known-good bundle {} is in force; fix the bundle at the source: a changed bundle is tried again",
                bad.short(),
                good.short()
            ));
        }
        doc.bundle = Some(BundleView {
            current: st.current().map(|d| d.to_string()),
            last_known_good: st.good().map(|d| d.to_string()),
            trial: st.trial().map(|(t, deadline)| match deadline {
                Some(d) => format!("{t} (ready by {})", timefmt::rfc3339(d)),
                None => t.to_string(),
            }),
            rejected: st.rejected(),
        });
        if let Err(e) = doc.store(&self.root) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
        // The same document, as Prometheus metrics (a no-op unless `[metrics]` is set).
        self.metrics.publish(&self.root, &self.cfg.metrics, &doc);
        // `systemctl status vmagent` shows this line: the identity note belongs there as
        // much as the token's (a VM about to leave the mesh while "ready").
        let mut line = h.line();
        for note in [&self.token_note, &self.identity_note]
            .into_iter()
            .flatten()
        {
            line = format!("{line}; {note}");
        }
        if line != self.status_line {
            match h.state {
                State::Ready | State::Starting | State::Unknown => {
                    tracing::info!(state = h.state.name(), "health: {line}")
                }
                _ => tracing::warn!(
                    state = h.state.name(),
                    reason = h.failure.map(|f| f.name()),
                    hint = h.failure.map(|f| f.hint()),
                    "health: {line}"
                ),
            }
            self.status_line = line;
            let _ = sd_notify::notify(false, &[NotifyState::Status(&self.status_line)]);
        }
        // The report URL hears of changes (health, warnings), not of every reconcile.
        let key = (doc.health.clone(), doc.warnings.clone());
        if let Some(r) = &self.reporter {
            if self.reported.as_ref() != Some(&key) {
                r.send(&doc);
                self.reported = Some(key);
            }
        }
    }
}

/// Token expiry at `now`: an error once expired, a warning from `warn_percent` of its
/// lifetime on (`iat` to `exp`; an hour when it has no usable `iat`), else nothing.
fn token_note(exp: i64, iat: Option<i64>, now: i64, warn_percent: u8) -> Option<String> {
    if exp <= now {
        return Some(format!(
            "the token expired at {}: provide a fresh bundle (istioctl x workload entry configure) at the configured source",
            timefmt::rfc3339(exp)
        ));
    }
    let life = iat.map(|i| exp - i).filter(|l| *l > 0).unwrap_or(3600);
    let warn_at = exp - life * (100 - i64::from(warn_percent)) / 100;
    (now >= warn_at).then(|| {
        format!(
            "the token expires at {} (in {}): provide a fresh bundle at the configured source before then",
            timefmt::rfc3339(exp),
            timefmt::human_duration(exp - now)
        )
    })
}

/// The identity warning at `now` (pure): its urgency (see
/// [`crate::identity::timeline::urgency`]) and, unless quiet, a text that names the lapse
/// time absolutely, so that it does not change (and republish) every step.
fn identity_note(t: &Timeline, now: i64, leads: &[u64]) -> (Urgency, Option<String>) {
    let urgency = crate::identity::timeline::urgency(t, now, leads);
    let Some(at) = t.lapses_at else {
        return (urgency, None);
    };
    let at_text = timefmt::rfc3339(at);
    let why = t.reason.describe();
    let note = match urgency {
        Urgency::Quiet => None,
        Urgency::Within(_) => Some(format!(
            "the mesh identity lapses at {at_text} ({}): {why}; provide a fresh bundle at the configured source, or keep the VM running and reaching istiod so that the certificate renews",
            t.reason.name()
        )),
        Urgency::Lapsed => Some(format!(
            "the mesh identity lapsed at {at_text} ({}): {why}; the VM is out of the mesh until it gets a fresh token (a fresh bundle at the configured source)",
            t.reason.name()
        )),
    };
    (urgency, note)
}

#[cfg(test)]
mod tests {
    use super::{identity_note, token_note};
    use crate::identity::timeline::{Reason, Timeline, Urgency};

    #[test]
    fn identity_note_warns_at_each_lead_then_once_lapsed() {
        let t = Timeline {
            lapses_at: Some(100_000),
            reason: Reason::CertificateDirNotWritable,
            renews_without_token: false,
            lead_cap: None,
        };
        let leads = [86_400, 3_600];
        assert_eq!(identity_note(&t, 0, &leads), (Urgency::Quiet, None));
        let (u1, n1) = identity_note(&t, 20_000, &leads);
        let (u1b, n1b) = identity_note(&t, 20_010, &leads);
        assert!(matches!(u1, Urgency::Within(_)));
        assert_eq!(
            (u1, &n1),
            (u1b, &n1b),
            "the text must not change every step"
        );
        assert!(n1.unwrap().contains("certificate-dir-not-writable"));
        let (u2, _) = identity_note(&t, 97_000, &leads);
        assert!(u2 > u1);
        let (u3, n3) = identity_note(&t, 100_000, &leads);
        assert_eq!(u3, Urgency::Lapsed);
        assert!(n3.unwrap().contains("lapsed at"));
        let kept = Timeline {
            lapses_at: None,
            reason: Reason::TokenKeptFresh,
            ..t
        };
        assert_eq!(
            identity_note(&kept, 200_000, &leads),
            (Urgency::Quiet, None)
        );
    }

    #[test]
    fn token_note_warns_from_the_percent_of_its_life_and_errs_once_expired() {
        // Issued at 0, expires at 1000, warned from 80 %.
        assert_eq!(token_note(1000, Some(0), 799, 80), None);
        assert!(token_note(1000, Some(0), 800, 80)
            .unwrap()
            .contains("expires at"));
        assert!(token_note(1000, Some(0), 1000, 80)
            .unwrap()
            .contains("expired at"));
        // No iat: an hour's life assumed.
        assert_eq!(token_note(3600, None, 0, 50), None);
        assert!(token_note(3600, None, 1800, 50).is_some());
    }
}
