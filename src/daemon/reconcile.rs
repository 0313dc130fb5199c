//! One reconcile: stage the source's bundle, let [`crate::lkg`] choose what to apply,
//! run the same `run::apply` a user runs (idempotent: it writes only what drifted), and
//! record the outcome. The last-known-good decisions are the state machine's; this file
//! only carries out its effects (apply, save, reconcile for a rollback, log, publish).

use std::time::{Duration, Instant};

use super::event_loop::blocking;
use super::Daemon;
use super::Stopped;
use crate::health::State;
use crate::lkg::{Digest, Effect, Event, Note};
use crate::run::{self, exit, ApplyOptions, ApplyStatus};
use crate::status::{ApplyResult, LastApply};
use crate::timefmt;

impl Daemon {
    /// One reconcile: apply the source bundle (repairs whatever drifted).
    pub(super) async fn reconcile(&mut self, why: &'static str) -> Result<(), Stopped> {
        self.reconcile_phase(why, true).await
    }

    /// A reconcile; `full: false` writes the files only (no package, no service).
    pub(super) async fn reconcile_phase(
        &mut self,
        why: &'static str,
        full: bool,
    ) -> Result<(), Stopped> {
        self.next_drift = Instant::now() + Duration::from_secs(self.cfg.daemon.drift_interval_secs);
        let Some(b) = self.cfg.source.bundle.clone() else {
            return Ok(());
        };
        // The restore at start re-applies the bundle in force, without the source (a
        // URL may not be reachable yet at boot); otherwise the source's bundle is staged.
        let staged = if !full && self.store.state.current().is_some() {
            None
        } else {
            match self.source_path() {
                Ok(None) => None,
                // The signature (`[trust]`) before the bundle is read at all: staging
                // parses its members.
                Ok(Some(p)) => match crate::trust::verify(&self.root, &self.cfg.trust, &p)
                    .map_err(|e| e.to_string())
                    .and_then(|_| self.store.stage(&p).map_err(|e| e.to_string()))
                {
                    Ok(d) => {
                        self.source_error = None;
                        Some(d)
                    }
                    Err(e) => {
                        self.source_error = Some(e);
                        None
                    }
                },
                Err(e) => {
                    self.source_error = Some(e);
                    None
                }
            }
        };
        let Some(digest) = self.lkg(Event::Offered { staged, full }) else {
            if let Some(e) = self.source_error.clone() {
                self.source_failed(why, &e, &b);
            }
            self.publish();
            return Ok(());
        };
        let bundle = self.store.path(&digest);
        let package = (full
            && (self.cfg.package.version.is_some() || self.cfg.package.url.is_some()))
        .then(crate::package::Request::default);
        let opts = ApplyOptions {
            bundle: bundle.clone(),
            root: self.root.base().to_path_buf(),
            dry_run: false,
            skip_owner: false,
            // Restoring an expired token is still right (the workload certificate may be
            // valid); the status says it expired.
            allow_expired_token: true,
            lock_timeout: Duration::from_secs(60),
            package,
            start: full,
            wait: Some(Duration::ZERO),
            config: Some(self.cfg.clone()).map(|mut c| {
                // The store holds canonical copies of bundles whose signature was checked
                // when they came in (above); the copies carry none of their own.
                c.trust = crate::config::TrustConfig::default();
                c
            }),
            status_file: false,
            // On unless the config turns it off (a one-off --no-lockout-guard on
            // `apply` does not stop the daemon from guarding).
            lockout_guard: true,
            // Never here: an unreachable istiod must not stop a drift repair (e.g. of
            // /etc/hosts), and a new bundle stays guarded by health + last-known-good.
            preflight: false,
        };
        let started = Instant::now();
        // Blocking (files, dpkg, systemctl) on the pool; signals and the watchdog are
        // served meanwhile.
        let r = blocking(&mut self.intr, move || {
            run::apply(
                &opts,
                || tracing::info!("waiting for another vmagent (apply lock)"),
                &mut |_| {},
            )
        })
        .await?;
        self.metrics.counters.reconciles += 1;
        let at = timefmt::rfc3339(timefmt::now());
        match r {
            Ok(o) => {
                let changed: Vec<String> = o
                    .plan
                    .steps
                    .iter()
                    .map(|s| {
                        let v = s.action.view(false);
                        format!("{} {}", v.action, v.path)
                    })
                    .chain(o.installed_with.iter().map(|c| format!("package ({c})")))
                    .collect();
                let svc = o
                    .service
                    .as_ref()
                    .map(|s| s.actions.clone())
                    .unwrap_or_default();
                if o.status == ApplyStatus::Applied || !svc.is_empty() {
                    self.metrics.counters.drift_repairs += 1;
                    tracing::warn!(
                        reason = why,
                        changes = %changed.join("; "),
                        service = %svc.join(","),
                        ms = started.elapsed().as_millis() as u64,
                        "repaired: {} change(s) applied",
                        changed.len() + svc.len()
                    );
                } else {
                    tracing::debug!(reason = why, "up to date");
                }
                if svc.iter().any(|a| a == "start" || a == "restart") {
                    self.monitor.mark();
                    self.resolv_started();
                }
                self.lkg(Event::Applied {
                    digest,
                    full,
                    now: timefmt::now(),
                    wait_secs: self.cfg.health.wait_secs,
                });
                self.last_apply = Some(LastApply {
                    at,
                    result: if o.status == ApplyStatus::Applied {
                        ApplyResult::Applied
                    } else {
                        ApplyResult::UpToDate
                    },
                    exit_code: exit::OK,
                    bundle: crate::redact::url(&b),
                });
                // A refused source is the news, even though the bundle in force was
                // re-applied (its drift repaired).
                if let Some(e) = self.source_error.clone() {
                    self.source_failed(why, &e, &b);
                }
            }
            Err(e) => {
                // The online preflight (another branch) is to be counted here too.
                if preflight_refused(&e) {
                    self.metrics.counters.preflight_failures += 1;
                }
                self.failed(why, &e.to_string(), e.exit_code(), &b)
            }
        }
        self.next_probe = Instant::now();
        self.publish();
        Ok(())
    }

    /// A reconcile that failed: logged, recorded, retried within a minute (a network or
    /// a mirror may be back by then) but never in a tight loop.
    fn failed(&mut self, why: &str, error: &str, code: u8, bundle: &str) {
        // Logged and recorded: a URL in it (the source's, a package's) is shown masked.
        let error = &crate::redact::text(error);
        let retry = Duration::from_secs(self.cfg.daemon.drift_interval_secs.min(60));
        self.next_drift = Instant::now() + retry;
        tracing::error!(reason = why, error = %error, exit_code = code, retry_secs = retry.as_secs(), "reconcile failed; retrying");
        self.last_apply = Some(LastApply {
            at: timefmt::rfc3339(timefmt::now()),
            result: ApplyResult::Error(crate::bundle::printable(error, 300)),
            exit_code: code,
            bundle: crate::redact::url(bundle),
        });
    }

    /// The source's bundle could not be used (invalid, missing, not fetched).
    fn source_failed(&mut self, why: &str, error: &str, bundle: &str) {
        self.failed(why, error, exit::INVALID, bundle);
    }

    /// Feeds `event` to the last-known-good machine and carries out its effects; returns
    /// the bundle to apply, when the event asked for one.
    pub(super) fn lkg(&mut self, event: Event) -> Option<Digest> {
        let (next, effects) = std::mem::take(&mut self.store.state).on(event);
        self.store.state = next;
        let mut apply = None;
        for e in effects {
            match e {
                Effect::Note(n) => note(n),
                Effect::Save => self.save_store(),
                Effect::Apply(d) => apply = Some(d),
                // Run by the loop next (see `run_queued`): a reconcile awaits, this does not.
                Effect::Reconcile(why) => self.queued = Some(why),
                Effect::MarkRolledBack => {
                    self.mark_rolled_back = true;
                    self.metrics.counters.rollbacks += 1;
                }
                Effect::Publish => self.publish(),
            }
        }
        apply
    }

    /// Last-known-good: the proxy's health (and the time) against the trial; then the
    /// rollback it may have asked for.
    pub(super) async fn check_trial(&mut self) -> Result<(), Stopped> {
        let h = self.monitor.health();
        let event = match h.state {
            State::Ready => Event::Ready,
            State::Failed => Event::Failed {
                reason: h.line(),
                now: timefmt::now(),
            },
            _ => Event::Tick {
                now: timefmt::now(),
                line: h.line(),
                wait_secs: self.cfg.health.wait_secs,
            },
        };
        self.lkg(event);
        self.run_queued().await
    }

    /// The reconcile the last-known-good machine asked for (a rollback), then its mark.
    async fn run_queued(&mut self) -> Result<(), Stopped> {
        let Some(why) = self.queued.take() else {
            return Ok(());
        };
        self.reconcile(why).await?;
        if std::mem::take(&mut self.mark_rolled_back) {
            if let Some(l) = &mut self.last_apply {
                if l.exit_code == exit::OK {
                    l.result = ApplyResult::RolledBack;
                }
            }
            self.publish();
        }
        Ok(())
    }

    fn save_store(&self) {
        if let Err(e) = self.store.save() {
            tracing::warn!(error = %e, "cannot record the bundle store's state ({}/{})", self.root.state_dir().display(), super::store::DIR);
        }
    }
}

/// Whether the apply was refused by its preflight (space, writability: see
/// [`crate::apply::preflight`]), before anything was written.
fn preflight_refused(e: &run::RunError) -> bool {
    match e {
        run::RunError::Apply(crate::apply::ApplyError::Blocked(_)) => true,
        // The daemon runs apply without the online preflight today (see above); counted
        // should that change.
        run::RunError::Preflight { .. } => true,
        run::RunError::AfterPackage { cause, .. } => preflight_refused(cause),
        _ => false,
    }
}

/// The log line for a last-known-good note.
fn note(n: Note) {
    match n {
        Note::StillRejected { bundle } => {
            tracing::debug!(bundle = %bundle.short(), "the source still holds the rolled-back bundle")
        }
        Note::SourceChanged { rejected } => {
            tracing::info!(rejected = %rejected.short(), "the source changed since the rollback: trying its bundle")
        }
        Note::NewBundle { bundle, previous } => {
            tracing::info!(bundle = %bundle.short(), previous = %previous.as_ref().map(Digest::short).unwrap_or_default(), "new bundle from the source")
        }
        Note::TrialArmed { bundle, wait_secs } => tracing::info!(
            bundle = %bundle.short(),
            wait_secs,
            "new bundle applied; it becomes the last-known-good once the proxy is ready, else it is rolled back"
        ),
        Note::Confirmed { bundle } => {
            tracing::info!(bundle = %bundle.short(), "the new bundle's proxy is ready: it is the last-known-good bundle now")
        }
        Note::RollingBack { bad, good, reason } => tracing::error!(
            bundle = %bad.short(),
            last_known_good = %good.short(),
            reason = %reason,
            "rolling back: the new bundle's proxy did not become ready; the last-known-good bundle is applied again and the new one is not retried until the source changes"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::preflight_refused;
    use crate::apply::preflight::Blocked;
    use crate::apply::ApplyError;
    use crate::run::RunError;

    #[test]
    fn a_preflight_refusal_is_told_from_other_failures() {
        let blocked = || {
            RunError::Apply(ApplyError::Blocked(Blocked::Io {
                path: "/x".into(),
                source: std::io::Error::other("full"),
            }))
        };
        assert!(preflight_refused(&blocked()));
        assert!(preflight_refused(&RunError::AfterPackage {
            cause: Box::new(blocked()),
            command: "dpkg -i".into(),
        }));
        assert!(!preflight_refused(&RunError::Unsupported("no".into())));
    }
}
