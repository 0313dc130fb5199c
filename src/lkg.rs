//! Last-known-good: which bundle is in force, which one a failing bundle is rolled back
//! to, and which one is not retried until the source changes.
//!
//! A pure state machine: [`Lkg::on`] takes an [`Event`] (the source offered a bundle, a
//! bundle was applied, the proxy's health, time passing) and returns the next state and
//! the [`Effect`]s the daemon performs (apply a bundle, save the store, reconcile for a
//! rollback, log, publish). Time comes in as unix seconds; nothing here reads a clock or
//! touches a file, so every transition is unit-tested (`lkg/tests.rs`).
//!
//! The rules: a bundle whose proxy became ready is the good one; a new bundle is on
//! trial when there is a good one to fall back to, its deadline armed once it was
//! applied in full; it is rolled back (the good one applied again, the bad one rejected)
//! when its proxy fails for good or is not ready by the deadline; a rejected bundle is
//! not tried again until the source offers another one.

use serde::{Deserialize, Serialize};

mod digest;
mod event;
mod record;

pub use digest::{BadDigest, Digest};
pub use event::{Effect, Event, Note, Step};
pub use record::{LoadWarning, Record, TrialRecord};

/// A bundle that was rolled back, as recorded in state.json and shown in status.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Its digest.
    pub digest: String,
    /// Why (the health when it was given up).
    pub reason: String,
    /// When, RFC 3339.
    pub at: String,
}

/// When a bundle on trial must be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Not applied in full yet: the clock starts when it is.
    Unarmed,
    /// Unix time by which its proxy must be ready.
    At(i64),
}

/// The last-known-good state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lkg {
    /// No bundle in force. `good` survives alone when the current bundle's file was lost.
    NoBundle {
        /// A bundle that was ready once, to fall back to.
        good: Option<Digest>,
    },
    /// A bundle in force whose proxy was not seen ready, and which is not on trial: the
    /// first bundle (nothing to fall back to), or one taken by a files-only restore.
    Unconfirmed {
        /// The bundle in force.
        current: Digest,
        /// An older good bundle (never equal to `current`).
        good: Option<Digest>,
    },
    /// The bundle in force is the last-known-good.
    Good {
        /// The bundle in force.
        current: Digest,
    },
    /// A new bundle in force on probation.
    Trial {
        /// The bundle on trial (in force).
        current: Digest,
        /// What it is rolled back to (never equal to `current`).
        good: Digest,
        /// By when it must be ready.
        deadline: Deadline,
    },
    /// A bundle was rolled back: the good one is in force again.
    RolledBack {
        /// The bundle in force, the last-known-good.
        good: Digest,
        /// The rejected bundle, not retried until the source offers another one.
        bad: Digest,
        /// Why it was rejected.
        reason: String,
        /// When, RFC 3339.
        at: String,
    },
}

impl Default for Lkg {
    fn default() -> Self {
        Lkg::NoBundle { good: None }
    }
}

/// The state from the bundle in force and the good one, when neither a trial nor a
/// rejection is involved.
fn settle(current: Option<Digest>, good: Option<Digest>) -> Lkg {
    match (current, good) {
        (None, good) => Lkg::NoBundle { good },
        (Some(c), Some(g)) if c == g => Lkg::Good { current: c },
        (Some(current), good) => Lkg::Unconfirmed { current, good },
    }
}

impl Lkg {
    /// The bundle in force.
    pub fn current(&self) -> Option<&Digest> {
        match self {
            Lkg::NoBundle { .. } => None,
            Lkg::Unconfirmed { current, .. }
            | Lkg::Good { current }
            | Lkg::Trial { current, .. } => Some(current),
            Lkg::RolledBack { good, .. } => Some(good),
        }
    }

    /// The last bundle whose proxy was ready.
    pub fn good(&self) -> Option<&Digest> {
        match self {
            Lkg::NoBundle { good } | Lkg::Unconfirmed { good, .. } => good.as_ref(),
            Lkg::Good { current } => Some(current),
            Lkg::Trial { good, .. } | Lkg::RolledBack { good, .. } => Some(good),
        }
    }

    /// The bundle on trial and its deadline (`None`: not armed yet).
    pub fn trial(&self) -> Option<(&Digest, Option<i64>)> {
        match self {
            Lkg::Trial {
                current, deadline, ..
            } => Some((
                current,
                match deadline {
                    Deadline::Unarmed => None,
                    Deadline::At(t) => Some(*t),
                },
            )),
            _ => None,
        }
    }

    /// An armed trial's deadline (the daemon wakes up then).
    pub fn deadline(&self) -> Option<i64> {
        self.trial().and_then(|(_, d)| d)
    }

    /// The rejected bundle.
    pub fn rejected(&self) -> Option<Rejected> {
        match self {
            Lkg::RolledBack {
                bad, reason, at, ..
            } => Some(Rejected {
                digest: bad.to_string(),
                reason: reason.clone(),
                at: at.clone(),
            }),
            _ => None,
        }
    }

    /// The bundles the store must keep.
    pub fn referenced(&self) -> Vec<&Digest> {
        let mut v: Vec<&Digest> = self.current().into_iter().chain(self.good()).collect();
        v.dedup();
        v
    }

    /// The transition for `event`: the next state and the effects, in order.
    pub fn on(self, event: Event) -> Step {
        match event {
            Event::Offered { staged, full } => self.offered(staged, full),
            Event::Applied {
                digest,
                full,
                now,
                wait_secs,
            } => self.applied(digest, full, now, wait_secs),
            Event::Ready => self.ready(),
            Event::Failed { reason, now } => match self {
                Lkg::Trial {
                    current,
                    good,
                    deadline: Deadline::At(_),
                } => rollback(current, good, reason, now),
                s => (s, vec![]),
            },
            Event::Tick {
                now,
                line,
                wait_secs,
            } => match self {
                Lkg::Trial {
                    current,
                    good,
                    deadline: Deadline::At(dl),
                } if now >= dl => rollback(
                    current,
                    good,
                    format!("not ready within {wait_secs} s ({line})"),
                    now,
                ),
                s => (s, vec![]),
            },
        }
    }

    /// Which bundle to apply: the source's, unless it is the rejected one; else the one
    /// in force. A new bundle goes on trial when there is a good one to fall back to and
    /// the reconcile is full. The state is saved whenever the source offered a bundle
    /// that is not the rejected one (also when nothing changed: the save prunes the
    /// store).
    fn offered(self, staged: Option<Digest>, full: bool) -> Step {
        let Some(d) = staged else {
            let fx = self
                .current()
                .cloned()
                .map(Effect::Apply)
                .into_iter()
                .collect();
            return (self, fx);
        };
        let mut fx = Vec::new();
        let state = match self {
            Lkg::RolledBack {
                ref good, ref bad, ..
            } if *bad == d => {
                let fx = vec![
                    Effect::Note(Note::StillRejected { bundle: d }),
                    Effect::Apply(good.clone()),
                ];
                return (self, fx);
            }
            Lkg::RolledBack { good, bad, .. } => {
                fx.push(Effect::Note(Note::SourceChanged { rejected: bad }));
                Lkg::Good { current: good }
            }
            s => s,
        };
        let state = if state.current() == Some(&d) {
            state
        } else {
            let previous = state.current().cloned();
            let next = match state.good().cloned() {
                Some(good) if full && good != d => Lkg::Trial {
                    current: d.clone(),
                    good,
                    deadline: Deadline::Unarmed,
                },
                good => settle(Some(d.clone()), good),
            };
            fx.push(Effect::Note(Note::NewBundle {
                bundle: d.clone(),
                previous,
            }));
            next
        };
        fx.push(Effect::Save);
        fx.push(Effect::Apply(d));
        (state, fx)
    }

    /// A full apply of the bundle on trial starts its clock.
    fn applied(self, digest: Digest, full: bool, now: i64, wait_secs: u64) -> Step {
        match self {
            Lkg::Trial {
                current,
                good,
                deadline: Deadline::Unarmed,
            } if full && current == digest => {
                let at = now.saturating_add(i64::try_from(wait_secs).unwrap_or(i64::MAX));
                let fx = vec![
                    Effect::Note(Note::TrialArmed {
                        bundle: current.clone(),
                        wait_secs,
                    }),
                    Effect::Save,
                ];
                let next = Lkg::Trial {
                    current,
                    good,
                    deadline: Deadline::At(at),
                };
                (next, fx)
            }
            s => (s, vec![]),
        }
    }

    /// A ready proxy confirms the bundle on trial (once armed) or, with no trial, the
    /// bundle in force.
    fn ready(self) -> Step {
        match self {
            Lkg::Trial {
                current,
                deadline: Deadline::At(_),
                ..
            } => (
                Lkg::Good {
                    current: current.clone(),
                },
                vec![
                    Effect::Note(Note::Confirmed { bundle: current }),
                    Effect::Save,
                    Effect::Publish,
                ],
            ),
            Lkg::Unconfirmed { current, .. } => {
                (Lkg::Good { current }, vec![Effect::Save, Effect::Publish])
            }
            s => (s, vec![]),
        }
    }
}

/// Puts `good` back in force and rejects `bad`.
fn rollback(bad: Digest, good: Digest, reason: String, now: i64) -> Step {
    let fx = vec![
        Effect::Note(Note::RollingBack {
            bad: bad.clone(),
            good: good.clone(),
            reason: reason.clone(),
        }),
        Effect::Save,
        Effect::Reconcile("rollback"),
        Effect::MarkRolledBack,
        Effect::Publish,
    ];
    let next = Lkg::RolledBack {
        good,
        bad,
        reason,
        at: crate::timefmt::rfc3339(now),
    };
    (next, fx)
}

#[cfg(test)]
mod tests;
