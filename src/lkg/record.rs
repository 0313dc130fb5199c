//! The persisted form of [`Lkg`] (the store's state.json), unchanged from earlier
//! versions: `current`, `good`, `rejected` and `trial`. The file is untrusted input (its
//! digests name files in the store): every digest is checked and an inconsistent
//! combination is reduced to a state the machine knows, each with a warning.

use serde::{Deserialize, Serialize};

use super::{settle, Deadline, Digest, Lkg, Rejected};

/// state.json.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The bundle in force.
    pub current: Option<String>,
    /// The last bundle whose proxy was ready.
    pub good: Option<String>,
    /// The last bundle rolled back.
    pub rejected: Option<Rejected>,
    /// The new bundle being tried.
    pub trial: Option<TrialRecord>,
}

/// A trial in state.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Its digest.
    pub digest: String,
    /// Unix time by which it must be ready; `None` until it was applied.
    pub deadline: Option<i64>,
}

/// Something in state.json that was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadWarning {
    /// A field is not a digest: ignored.
    #[error("state.json: `{field}`: {source}; ignored")]
    BadDigest {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        source: super::BadDigest,
    },
    /// A rejection without the good bundle in force (its file was lost, or the file was
    /// edited): forgotten, so the source's bundle is tried again.
    #[error("state.json: the rolled-back bundle {0} is forgotten: the last-known-good bundle is not the one in force")]
    StrayRejection(String),
    /// A trial that is not the bundle in force or has nothing to fall back to: dropped
    /// (the bundle in force stays, unconfirmed).
    #[error("state.json: the trial of {0} is dropped: it is not the bundle in force, or there is no other good bundle to fall back to")]
    StrayTrial(String),
}

impl Lkg {
    /// The state to write.
    pub fn to_record(&self) -> Record {
        Record {
            current: self.current().map(|d| d.to_string()),
            good: self.good().map(|d| d.to_string()),
            rejected: self.rejected(),
            trial: self.trial().map(|(d, deadline)| TrialRecord {
                digest: d.to_string(),
                deadline,
            }),
        }
    }

    /// The state read back. `stored` says whether the store holds a bundle: a current or
    /// good digest whose file is gone is forgotten rather than applied from nothing.
    pub fn from_record(r: Record, stored: impl Fn(&Digest) -> bool) -> (Lkg, Vec<LoadWarning>) {
        let mut warnings = Vec::new();
        let mut digest = |field: &'static str, s: String| match Digest::parse(&s) {
            Ok(d) => Some(d),
            Err(source) => {
                warnings.push(LoadWarning::BadDigest { field, source });
                None
            }
        };
        let current = r.current.and_then(|s| digest("current", s)).filter(&stored);
        let good = r.good.and_then(|s| digest("good", s)).filter(&stored);
        let trial = r
            .trial
            .and_then(|t| digest("trial.digest", t.digest).map(|d| (d, t.deadline)));
        let rejected = r
            .rejected
            .and_then(|x| digest("rejected.digest", x.digest.clone()).map(|d| (d, x)));
        if let Some((bad, x)) = rejected {
            match (&current, &good) {
                (Some(c), Some(g)) if c == g && trial.is_none() => {
                    let state = Lkg::RolledBack {
                        good: g.clone(),
                        bad,
                        reason: x.reason,
                        at: x.at,
                    };
                    return (state, warnings);
                }
                _ => warnings.push(LoadWarning::StrayRejection(bad.short())),
            }
        }
        if let Some((t, deadline)) = trial {
            match (&current, &good) {
                (Some(c), Some(g)) if *c == t && *g != t => {
                    let deadline = deadline.map_or(Deadline::Unarmed, Deadline::At);
                    let state = Lkg::Trial {
                        current: t,
                        good: g.clone(),
                        deadline,
                    };
                    return (state, warnings);
                }
                _ => warnings.push(LoadWarning::StrayTrial(t.short())),
            }
        }
        (settle(current, good), warnings)
    }
}
