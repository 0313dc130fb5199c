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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lkg::tests::{d, rolled_back, trial};

    #[test]
    fn record_round_trips_and_reads_the_old_format() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        // As written by the previous version.
        let old = format!(
            r#"{{"current":"{a}","good":"{a}","rejected":{{"digest":"{b}","reason":"not ready","at":"2026-01-01T00:00:00Z"}},"trial":null}}"#
        );
        let r: Record = serde_json::from_str(&old).unwrap();
        let (s, w) = Lkg::from_record(r.clone(), |_| true);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.rejected().unwrap().reason, "not ready");
        assert_eq!(s.to_record(), r);
        let old =
            format!(r#"{{"current":"{b}","good":"{a}","trial":{{"digest":"{b}","deadline":7}}}}"#);
        let (s, w) = Lkg::from_record(serde_json::from_str(&old).unwrap(), |_| true);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s, trial('b', 'a', Deadline::At(7)));
        for s in [
            Lkg::default(),
            Lkg::NoBundle { good: Some(d('a')) },
            Lkg::Unconfirmed {
                current: d('b'),
                good: Some(d('a')),
            },
            Lkg::Good { current: d('a') },
            trial('b', 'a', Deadline::Unarmed),
            rolled_back('a', 'b'),
        ] {
            let json = serde_json::to_string(&s.to_record()).unwrap();
            let back = Lkg::from_record(serde_json::from_str(&json).unwrap(), |_| true);
            assert_eq!(back, (s, vec![]), "{json}");
        }
    }

    #[test]
    fn garbage_digests_are_ignored_with_a_warning() {
        let a = "a".repeat(64);
        let r = Record {
            current: Some("../../../etc/shadow".into()),
            good: Some(a.clone()),
            rejected: Some(Rejected {
                digest: "x".into(),
                reason: "r".into(),
                at: "t".into(),
            }),
            trial: Some(TrialRecord {
                digest: a.to_uppercase(),
                deadline: None,
            }),
        };
        let (s, w) = Lkg::from_record(r, |_| true);
        assert_eq!(s, Lkg::NoBundle { good: Some(d('a')) });
        let fields: Vec<_> = w
            .iter()
            .map(|w| match w {
                LoadWarning::BadDigest { field, .. } => *field,
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(fields, ["current", "trial.digest", "rejected.digest"]);
        assert!(w[0].to_string().contains("not a sha256 digest"), "{}", w[0]);
    }

    #[test]
    fn inconsistent_records_are_reduced_with_a_warning() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        // The bundle in force's file was lost: nothing is in force, the rejection goes.
        let r = Record {
            current: Some(a.clone()),
            good: Some(a.clone()),
            rejected: Some(Rejected {
                digest: b.clone(),
                reason: "r".into(),
                at: "t".into(),
            }),
            trial: None,
        };
        let (s, w) = Lkg::from_record(r, |x| *x != d('a'));
        assert_eq!(s, Lkg::default());
        assert!(matches!(w[..], [LoadWarning::StrayRejection(_)]), "{w:?}");
        // A trial that is not the bundle in force.
        let r = Record {
            current: Some(a.clone()),
            good: Some(a.clone()),
            rejected: None,
            trial: Some(TrialRecord {
                digest: b,
                deadline: Some(1),
            }),
        };
        let (s, w) = Lkg::from_record(r, |_| true);
        assert_eq!(s, Lkg::Good { current: d('a') });
        assert!(matches!(w[..], [LoadWarning::StrayTrial(_)]), "{w:?}");
    }
}
