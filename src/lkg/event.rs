//! What the last-known-good machine is told ([`Event`]) and what it asks for
//! ([`Effect`], [`Note`]).

use super::{Digest, Lkg};

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
