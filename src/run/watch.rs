//! The wait for ready at the end of an apply, keeping the status file current.

use std::path::Path;
use std::time::Duration;

use crate::health::monitor::{Event, Monitor};
use crate::health::{Health, State};
use crate::root::Root;
use crate::status::{ApplyResult, HealthView, LastApply, StatusFile};
use crate::timefmt;

use super::{ApplyStatus, HealthOutcome, Outcome};

/// Waits for the proxy (up to `limit`; zero: not at all), keeping the status file
/// current on every change.
pub(super) fn watch(
    root: &Root,
    o: &Outcome,
    bundle: &Path,
    mut m: Monitor,
    limit: Duration,
    store: bool,
    on_health: &mut dyn FnMut(Event<'_>),
) -> HealthOutcome {
    let start = std::time::Instant::now();
    let mut doc = StatusFile::new(HealthView::of(m.health(), m.since()));
    if store {
        doc.read_facts(root);
    }
    let result = match o.status {
        ApplyStatus::Applied => ApplyResult::Applied,
        _ => ApplyResult::UpToDate,
    };
    let last = |doc: &mut StatusFile, h: &Health, since: i64| {
        // A new stage or evidence line is not a new state: `since` stays.
        let since = match doc.health.since_unix {
            Some(t) if doc.health.state == h.state => t,
            _ => since,
        };
        doc.health = HealthView::of(h, since);
        let code = HealthOutcome {
            health: h.clone(),
            waited: start.elapsed(),
            limit,
        }
        .exit_code();
        doc.last_apply = Some(LastApply {
            at: timefmt::rfc3339(timefmt::now()),
            result: result.clone(),
            exit_code: code,
            bundle: bundle.display().to_string(),
        });
        if !store {
            return;
        }
        if let Err(e) = doc.store(root) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
    };
    if limit.is_zero() {
        last(&mut doc, m.health(), m.since());
    } else {
        let mut changed: Option<(Health, i64)> = None;
        m.wait(limit, &mut |ev| {
            if let Event::Changed(h) = &ev {
                changed = Some(((*h).clone(), timefmt::now()));
            }
            on_health(ev);
            if let Some((h, since)) = changed.take() {
                if h.state != State::Ready && h.state != State::Failed {
                    last(&mut doc, &h, since);
                }
            }
        });
        last(&mut doc, m.health(), m.since());
    }
    HealthOutcome {
        health: m.health().clone(),
        waited: start.elapsed(),
        limit,
    }
}
