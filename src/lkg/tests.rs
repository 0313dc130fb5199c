//! Every transition of the last-known-good machine.

use super::*;

pub(super) fn d(c: char) -> Digest {
    Digest::parse(&c.to_string().repeat(64)).unwrap()
}

fn offer(s: Lkg, c: char, full: bool) -> Step {
    s.on(Event::Offered {
        staged: Some(d(c)),
        full,
    })
}

fn applied(s: Lkg, c: char, full: bool, now: i64) -> Step {
    s.on(Event::Applied {
        digest: d(c),
        full,
        now,
        wait_secs: 30,
    })
}

fn tick(s: Lkg, now: i64) -> Step {
    s.on(Event::Tick {
        now,
        line: "starting".into(),
        wait_secs: 30,
    })
}

pub(super) fn trial(current: char, good: char, deadline: Deadline) -> Lkg {
    Lkg::Trial {
        current: d(current),
        good: d(good),
        deadline,
    }
}

pub(super) fn rolled_back(good: char, bad: char) -> Lkg {
    Lkg::RolledBack {
        good: d(good),
        bad: d(bad),
        reason: "r".into(),
        at: "t".into(),
    }
}

fn new_bundle(c: char, previous: Option<char>) -> Effect {
    Effect::Note(Note::NewBundle {
        bundle: d(c),
        previous: previous.map(d),
    })
}

#[test]
fn digests_are_64_lowercase_hex() {
    assert!(Digest::parse(&"a".repeat(64)).is_ok());
    for bad in [
        "".to_string(),
        "A".repeat(64),
        "a".repeat(63),
        "a".repeat(65),
        format!("../{}", "a".repeat(61)),
        "g".repeat(64),
    ] {
        assert!(Digest::parse(&bad).is_err(), "{bad}");
    }
    assert_eq!(d('a').short(), "sha256:aaaaaaaaaaaa");
}

#[test]
fn first_bundle_is_unconfirmed_without_a_trial() {
    let (s, fx) = offer(Lkg::default(), 'a', true);
    assert_eq!(
        s,
        Lkg::Unconfirmed {
            current: d('a'),
            good: None
        }
    );
    assert_eq!(
        fx,
        vec![new_bundle('a', None), Effect::Save, Effect::Apply(d('a'))]
    );
}

#[test]
fn nothing_offered_applies_the_bundle_in_force_without_saving() {
    let (s, fx) = Lkg::default().on(Event::Offered {
        staged: None,
        full: true,
    });
    assert_eq!((s, fx), (Lkg::default(), vec![]));
    let good = Lkg::Good { current: d('a') };
    let (s, fx) = good.clone().on(Event::Offered {
        staged: None,
        full: false,
    });
    assert_eq!((s, fx), (good, vec![Effect::Apply(d('a'))]));
}

#[test]
fn same_bundle_offered_changes_nothing_but_saves() {
    let t = trial('b', 'a', Deadline::At(5));
    let (s, fx) = offer(t.clone(), 'b', true);
    assert_eq!(s, t);
    assert_eq!(fx, vec![Effect::Save, Effect::Apply(d('b'))]);
}

#[test]
fn new_bundle_with_a_good_one_goes_on_trial() {
    let (s, fx) = offer(Lkg::Good { current: d('a') }, 'b', true);
    assert_eq!(s, trial('b', 'a', Deadline::Unarmed));
    assert_eq!(
        fx,
        vec![
            new_bundle('b', Some('a')),
            Effect::Save,
            Effect::Apply(d('b'))
        ]
    );
}

#[test]
fn restore_phase_never_starts_a_trial() {
    let (s, _) = offer(Lkg::NoBundle { good: Some(d('a')) }, 'b', false);
    assert_eq!(
        s,
        Lkg::Unconfirmed {
            current: d('b'),
            good: Some(d('a'))
        }
    );
}

#[test]
fn a_bundle_replacing_a_trial_is_tried_instead_and_the_good_one_is_no_trial() {
    let (s, _) = offer(trial('b', 'a', Deadline::At(5)), 'c', true);
    assert_eq!(s, trial('c', 'a', Deadline::Unarmed));
    // The source went back to the good bundle.
    let (s, _) = offer(trial('b', 'a', Deadline::At(5)), 'a', true);
    assert_eq!(s, Lkg::Good { current: d('a') });
}

#[test]
fn full_apply_arms_the_deadline_once() {
    let (s, fx) = applied(trial('b', 'a', Deadline::Unarmed), 'b', true, 100);
    assert_eq!(s, trial('b', 'a', Deadline::At(130)));
    assert_eq!(
        fx,
        vec![
            Effect::Note(Note::TrialArmed {
                bundle: d('b'),
                wait_secs: 30
            }),
            Effect::Save
        ]
    );
    // Applied again: the deadline stays.
    assert_eq!(applied(s.clone(), 'b', true, 200), (s, vec![]));
    // A files-only apply, or another bundle, does not arm it.
    let t = trial('b', 'a', Deadline::Unarmed);
    assert_eq!(applied(t.clone(), 'b', false, 100), (t.clone(), vec![]));
    assert_eq!(applied(t.clone(), 'a', true, 100), (t, vec![]));
}

#[test]
fn ready_confirms_an_armed_trial_only() {
    let (s, fx) = trial('b', 'a', Deadline::At(5)).on(Event::Ready);
    assert_eq!(s, Lkg::Good { current: d('b') });
    assert_eq!(
        fx,
        vec![
            Effect::Note(Note::Confirmed { bundle: d('b') }),
            Effect::Save,
            Effect::Publish
        ]
    );
    let unarmed = trial('b', 'a', Deadline::Unarmed);
    assert_eq!(unarmed.clone().on(Event::Ready), (unarmed, vec![]));
}

#[test]
fn ready_with_no_trial_makes_the_bundle_in_force_good() {
    let u = Lkg::Unconfirmed {
        current: d('b'),
        good: Some(d('a')),
    };
    assert_eq!(
        u.on(Event::Ready),
        (
            Lkg::Good { current: d('b') },
            vec![Effect::Save, Effect::Publish]
        )
    );
    for s in [
        Lkg::default(),
        Lkg::Good { current: d('a') },
        rolled_back('a', 'b'),
    ] {
        assert_eq!(s.clone().on(Event::Ready), (s, vec![]));
    }
}

fn rollback_effects(reason: &str) -> Vec<Effect> {
    vec![
        Effect::Note(Note::RollingBack {
            bad: d('b'),
            good: d('a'),
            reason: reason.into(),
        }),
        Effect::Save,
        Effect::Reconcile("rollback"),
        Effect::MarkRolledBack,
        Effect::Publish,
    ]
}

#[test]
fn failure_of_an_armed_trial_rolls_back_at_once() {
    let (s, fx) = trial('b', 'a', Deadline::At(1000)).on(Event::Failed {
        reason: "failed: ca-mismatch".into(),
        now: 0,
    });
    assert_eq!(
        s,
        Lkg::RolledBack {
            good: d('a'),
            bad: d('b'),
            reason: "failed: ca-mismatch".into(),
            at: "1970-01-01T00:00:00Z".into()
        }
    );
    assert_eq!(s.current(), Some(&d('a')));
    assert_eq!(fx, rollback_effects("failed: ca-mismatch"));
}

#[test]
fn failure_without_an_armed_trial_changes_nothing() {
    for s in [
        Lkg::Unconfirmed {
            current: d('a'),
            good: None,
        },
        trial('b', 'a', Deadline::Unarmed),
        Lkg::Good { current: d('a') },
    ] {
        let ev = Event::Failed {
            reason: "x".into(),
            now: 5,
        };
        assert_eq!(s.clone().on(ev), (s, vec![]));
    }
}

#[test]
fn deadline_passes_at_exactly_now() {
    let t = trial('b', 'a', Deadline::At(100));
    assert_eq!(tick(t.clone(), 99), (t.clone(), vec![]));
    let (s, fx) = tick(t, 100);
    assert_eq!(fx, rollback_effects("not ready within 30 s (starting)"));
    assert!(matches!(s, Lkg::RolledBack { .. }));
    let unarmed = trial('b', 'a', Deadline::Unarmed);
    assert_eq!(tick(unarmed.clone(), i64::MAX), (unarmed, vec![]));
}

#[test]
fn rejected_bundle_offered_again_is_not_retried() {
    let r = rolled_back('a', 'b');
    let (s, fx) = offer(r.clone(), 'b', true);
    assert_eq!(s, r);
    assert_eq!(
        fx,
        vec![
            Effect::Note(Note::StillRejected { bundle: d('b') }),
            Effect::Apply(d('a'))
        ]
    );
}

#[test]
fn source_change_after_rollback_is_tried() {
    let (s, fx) = offer(rolled_back('a', 'b'), 'c', true);
    assert_eq!(s, trial('c', 'a', Deadline::Unarmed));
    assert_eq!(
        fx,
        vec![
            Effect::Note(Note::SourceChanged { rejected: d('b') }),
            new_bundle('c', Some('a')),
            Effect::Save,
            Effect::Apply(d('c'))
        ]
    );
    // Back to the good bundle itself: the rejection is forgotten, nothing new.
    let (s, fx) = offer(rolled_back('a', 'b'), 'a', true);
    assert_eq!(s, Lkg::Good { current: d('a') });
    assert_eq!(
        fx,
        vec![
            Effect::Note(Note::SourceChanged { rejected: d('b') }),
            Effect::Save,
            Effect::Apply(d('a'))
        ]
    );
}

#[test]
fn no_good_bundle_no_trial_and_no_rollback() {
    let (s, _) = offer(
        Lkg::Unconfirmed {
            current: d('a'),
            good: None,
        },
        'b',
        true,
    );
    assert_eq!(
        s,
        Lkg::Unconfirmed {
            current: d('b'),
            good: None
        }
    );
    assert_eq!(
        s.clone().on(Event::Failed {
            reason: "x".into(),
            now: 1
        }),
        (s, vec![])
    );
}
