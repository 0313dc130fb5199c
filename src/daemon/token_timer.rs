//! The token refresh timer: with a `[token]` provider, the daemon refreshes the installed
//! token at its refresh point (`identity::provider::schedule`), retrying failures with
//! the jittered backoff and the server's Retry-After. The refresh itself
//! (`identity::provider::refresh_with`: provider, checks, install under the apply lock)
//! runs on the blocking pool through [`super::event_loop::blocking`], so signals and the
//! watchdog are served meanwhile; a kubernetes provider's request runs on this runtime
//! (`net::block_on` from the blocking thread). A `file` provider's file is watched with
//! inotify, so a token the other agent writes is installed within moments, not at the
//! next refresh point.

use std::time::{Duration, Instant};

use std::os::fd::BorrowedFd;

use super::event_loop::blocking;
use super::source::Watch;
use super::{Daemon, Stopped};
use crate::config::ProviderKind;
use crate::identity::provider::{self, schedule, ProviderError, Rejected};
use crate::timefmt;

/// The timer's state.
#[derive(Default)]
pub(super) struct TokenTimer {
    /// The next attempt (`None`: to be worked out from the installed token).
    next: Option<Instant>,
    /// Failures in a row.
    failures: u32,
    /// The `file` provider's file, watched (`None` until set up, or not that provider).
    watch: Option<Watch>,
    /// The watch was set up (or could not be).
    watched: bool,
}

impl TokenTimer {
    /// The watched file's descriptor, if any.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.watch.as_ref().map(Watch::fd)
    }
}

/// A Unix time as a monotonic instant (the past is now).
fn instant_at(unix: i64) -> Instant {
    let left = u64::try_from(unix.saturating_sub(timefmt::now())).unwrap_or(0);
    Instant::now() + Duration::from_secs(left)
}

impl Daemon {
    /// When the token is next due (`None`: no provider configured).
    pub(super) fn token_due(&mut self) -> Option<Instant> {
        if !self.token.watched {
            self.token.watched = true;
            self.token.watch = self.watch_token_file();
        }
        if self.token.next.is_none() {
            self.token.next = provider::next_due(&self.root, &self.cfg).map(instant_at);
        }
        self.token.next
    }

    fn watch_token_file(&self) -> Option<Watch> {
        let path = self.cfg.token.path.as_ref()?;
        if self.cfg.token.provider != ProviderKind::File {
            return None;
        }
        match self
            .root
            .resolve(path)
            .map_err(|e| e.to_string())
            .and_then(|h| Watch::new(&h).map_err(|e| e.to_string()))
        {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the token file; it is read at each refresh point");
                None
            }
        }
    }

    /// The watched token file changed: refresh now.
    pub(super) fn token_file_event(&mut self) {
        if self.token.watch.as_mut().is_some_and(Watch::changed) {
            self.token.next = Some(Instant::now());
        }
    }

    /// The config changed: the schedule is worked out again.
    pub(super) fn token_reset(&mut self) {
        self.token = TokenTimer::default();
    }

    /// Refreshes the token when it is due.
    pub(super) async fn step_token(&mut self) -> Result<(), Stopped> {
        if self.token_due().is_none_or(|t| Instant::now() < t) {
            return Ok(());
        }
        let (root, cfg) = (self.root.clone(), self.cfg.clone());
        let refresh_at = cfg.token.refresh_at;
        let r = blocking(&mut self.intr, move || {
            provider::refresh_with(&root, &cfg, Duration::from_secs(60), || {})
        })
        .await?;
        let next = match r {
            Ok(t) => {
                self.token.failures = 0;
                tracing::info!(provider = t.provider, subject = %t.subject, expires = %timefmt::rfc3339(t.expires), next = %timefmt::rfc3339(t.next_due), "token refreshed");
                t.next_due
            }
            // Nothing newer while the installed token is still fresh: no news, not a
            // failure (a file rewritten with the same token, a refresh by hand).
            Err(ProviderError::Rejected {
                source: Rejected::NotNewer { .. },
                ..
            }) if provider::next_due(&self.root, &self.cfg).is_some_and(|t| t > timefmt::now()) => {
                self.token.failures = 0;
                provider::next_due(&self.root, &self.cfg).unwrap_or_else(timefmt::now)
            }
            Err(e) => {
                self.token.failures = self.token.failures.saturating_add(1);
                let next = schedule::next_refresh(
                    None,
                    timefmt::now(),
                    refresh_at,
                    schedule::Last::Failed {
                        failures: self.token.failures,
                        retry_after: e.retry_after(),
                    },
                    &schedule::backoff(),
                    crate::net::retry::unit_random(),
                );
                tracing::warn!(error = %e, failures = self.token.failures, retry = %timefmt::rfc3339(next), "token refresh failed; the installed token stays");
                next
            }
        };
        self.token.next = Some(instant_at(next));
        Ok(())
    }
}
