//! Last-known-good: which bundle is in force, which one a failing bundle is rolled back
//! to, and which one is not retried until the source changes.
//!
//! A pure state machine: [`Lkg::on`] takes an [`Event`] (the source offered a bundle, a
//! bundle was applied, the proxy's health, time passing) and returns the next state and
//! the [`Effect`]s the daemon performs (apply a bundle, save the store, reconcile for a
//! rollback, log, publish). Time comes in as unix seconds; nothing here reads a clock or
//! touches a file, so every transition is unit-tested below.
//!
//! The rules: a bundle whose proxy became ready is the good one; a new bundle is on
//! trial when there is a good one to fall back to, its deadline armed once it was
//! applied in full; it is rolled back (the good one applied again, the bad one rejected)
//! when its proxy fails for good or is not ready by the deadline; a rejected bundle is
//! not tried again until the source offers another one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// sha256 of a bundle's canonical tar: 64 lowercase hex digits. It also names a file in
/// the store (`<digest>.tar`), which is why nothing else is ever accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

/// A string that is not a [`Digest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown:?} is not a sha256 digest (64 lowercase hex digits)")]
pub struct BadDigest {
    /// The start of the string, for the message.
    shown: String,
}

impl Digest {
    /// Checks `s` is 64 lowercase hex digits.
    pub fn parse(s: &str) -> Result<Digest, BadDigest> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Digest(s.to_string()))
        } else {
            // Untrusted text (a state file): bounded in the message.
            Err(BadDigest {
                shown: s.chars().take(72).collect(),
            })
        }
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Short form for messages: `sha256:` and the first 12 digits.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.0[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A reconcile asks which bundle to apply. `staged` is the source's bundle (`None`:
    /// no source, the source failed, or a restore that does not read the source);
    /// `full: false` is the files-only restore at start, which never starts a trial.
    Offered {
        /// The source's bundle, staged.
        staged: Option<Digest>,
        /// A full reconcile (package and service too).
        full: bool,
    },
    /// `digest` was applied without error.
    Applied {
        /// The bundle applied.
        digest: Digest,
        /// A full apply (the service was started): only that arms a trial's deadline.
        full: bool,
        /// Unix time now.
        now: i64,
        /// `health.wait_secs`.
        wait_secs: u64,
    },
    /// The proxy is ready.
    Ready,
    /// The proxy failed for good.
    Failed {
        /// The health line (the rejection's reason).
        reason: String,
        /// Unix time now.
        now: i64,
    },
    /// Time passed with the proxy neither ready nor failed.
    Tick {
        /// Unix time now.
        now: i64,
        /// The health line (part of the reason when the deadline passed).
        line: String,
        /// `health.wait_secs` (for the reason).
        wait_secs: u64,
    },
}

/// What the daemon does after a transition, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Log this.
    Note(Note),
    /// Record the state (state.json; unreferenced bundles are removed).
    Save,
    /// Apply this bundle (the answer to [`Event::Offered`]).
    Apply(Digest),
    /// Run a full reconcile now, for this reason (it applies the bundle in force).
    Reconcile(&'static str),
    /// Record the last apply as a rollback.
    MarkRolledBack,
    /// Publish the status (it changed).
    Publish,
}

/// A log line the daemon writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The source still holds the rejected bundle (debug).
    StillRejected {
        /// That bundle.
        bundle: Digest,
    },
    /// The source changed since the rollback.
    SourceChanged {
        /// The bundle that was rejected.
        rejected: Digest,
    },
    /// A new bundle from the source is in force.
    NewBundle {
        /// It.
        bundle: Digest,
        /// What was in force.
        previous: Option<Digest>,
    },
    /// The trial's deadline is armed.
    TrialArmed {
        /// The bundle on trial.
        bundle: Digest,
        /// Seconds it has.
        wait_secs: u64,
    },
    /// The bundle on trial is ready: the last-known-good now.
    Confirmed {
        /// It.
        bundle: Digest,
    },
    /// A rollback.
    RollingBack {
        /// The bundle given up.
        bad: Digest,
        /// The bundle applied again.
        good: Digest,
        /// Why.
        reason: String,
    },
}

/// The state and what to do.
pub type Step = (Lkg, Vec<Effect>);

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

mod record;
pub use record::{LoadWarning, Record, TrialRecord};

#[cfg(test)]
mod tests;
