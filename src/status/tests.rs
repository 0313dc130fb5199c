//! Unit tests of the status document: redaction, the serialised form other programs
//! parse, and reading back files this version did not write.

use super::*;

#[test]
fn redact_masks_url_secrets_in_every_text_field() {
    let secret_url = "https://u:pa55word@h/b.tar?access_token=S3cr3tTok&x=1";
    let said = format!("polling {secret_url} failed");
    let mut s = StatusFile::new(HealthView {
        state: State::Degraded,
        evidence: vec![said.clone()],
        summary: Some(said.clone()),
        ..HealthView::default()
    });
    s.warnings.push(said.clone());
    s.unreadable.push(said.clone());
    s.last_apply = Some(LastApply {
        at: "t".into(),
        result: ApplyResult::Error(said.clone()),
        exit_code: 2,
        bundle: secret_url.into(),
    });
    s.bundle = Some(BundleView {
        current: None,
        last_known_good: None,
        trial: None,
        rejected: Some(crate::lkg::Rejected {
            digest: "d".into(),
            reason: said,
            at: "t".into(),
        }),
    });
    s.redact();
    let json = serde_json::to_string(&s).unwrap();
    assert!(
        !json.contains("pa55word") && !json.contains("S3cr3tTok"),
        "{json}"
    );
    assert!(
        json.contains("https://***@h/b.tar?access_token=***&x=1"),
        "{json}"
    );
}

/// The JSON values other programs parse (status.json, `vmagent status --output json`,
/// the report URL): pinned, so a renamed variant cannot change them silently.
#[test]
fn serialised_form_is_pinned() {
    let names = [
        (State::Unknown, "unknown"),
        (State::Starting, "starting"),
        (State::Ready, "ready"),
        (State::Degraded, "degraded"),
        (State::Failed, "failed"),
    ];
    for (state, name) in names {
        assert_eq!(serde_json::to_value(state).unwrap(), name);
        assert_eq!(state.name(), name);
        let back: State = serde_json::from_value(name.into()).unwrap();
        assert_eq!(back, state);
    }
    let results = [
        (ApplyResult::Applied, "applied"),
        (ApplyResult::UpToDate, "up-to-date"),
        (ApplyResult::RolledBack, "rolled-back"),
        (
            ApplyResult::Error("bundle: token expired".into()),
            "error: bundle: token expired",
        ),
    ];
    for (result, text) in results {
        assert_eq!(serde_json::to_value(&result).unwrap(), text);
        let back: ApplyResult = serde_json::from_value(text.into()).unwrap();
        assert_eq!(back, result);
    }
    let mut s = StatusFile::new(HealthView {
        state: State::Ready,
        ..HealthView::default()
    });
    s.last_apply = Some(LastApply {
        at: "2026-01-01T00:00:00Z".into(),
        result: ApplyResult::UpToDate,
        exit_code: 0,
        bundle: "/b.tar".into(),
    });
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["health"]["state"], "ready", "{v:#}");
    assert_eq!(v["last_apply"]["result"], "up-to-date", "{v:#}");
}

/// status.json is read back by `vmagent status` and the daemon, and may come from
/// another version or an editor: unknown values are kept readable, never a panic nor a
/// refusal of the whole file.
#[test]
fn unknown_values_read_back_without_failing() {
    let json = r#"{"vmagent":"9.9.9","updated":"x","health":{"state":"exploded","reason":"new-kind","summary":"s"},
        "token":null,"root_cert":null,"workload_cert":null,"package_version":null,"enabled":null,
        "last_apply":{"at":"t","result":"half-applied","exit_code":0,"bundle":"b"}}"#;
    let s: StatusFile = serde_json::from_str(json).unwrap();
    assert_eq!(s.health.state, State::Unknown);
    assert_eq!(s.health.line(), "unknown: new-kind: s");
    let r = &s.last_apply.as_ref().unwrap().result;
    assert_eq!(*r, ApplyResult::Other("half-applied".into()));
    assert_eq!(r.to_string(), "half-applied");
    // Written again as read: the value is not turned into something else.
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["last_apply"]["result"], "half-applied");
    // A wrong type is a damaged file (an error the caller shows), not a panic.
    let bad = json.replace(r#""exploded""#, "7");
    assert!(serde_json::from_str::<StatusFile>(&bad).is_err());
}

/// One wording: the live health and its stored view say the same line in every state.
#[test]
fn health_and_its_view_word_every_state_the_same() {
    use crate::health::classify::Stage;
    let states = [
        State::Unknown,
        State::Starting,
        State::Ready,
        State::Degraded,
        State::Failed,
    ];
    let failures = std::iter::once(None).chain(Failure::ALL.into_iter().map(Some));
    for failure in failures {
        for state in states {
            for stage in [None, Some(Stage::XdsConnected)] {
                let mut h = Health::unknown();
                h.state = state;
                h.failure = failure;
                h.stage = stage;
                assert_eq!(HealthView::of(&h, 0).line(), h.line(), "{h:?}");
            }
        }
    }
}

/// The package decision's values in `apply --output json` are pinned the same way.
#[test]
fn package_decision_values_are_pinned() {
    use crate::package::{Download, PackageAction};
    for (d, name) in [
        (Download::Needed, "needed"),
        (Download::Cached, "cached"),
        (Download::Local, "local"),
        (Download::None, "none"),
    ] {
        assert_eq!(serde_json::to_value(d).unwrap(), name);
    }
    for (a, name) in [
        (PackageAction::Install, "install"),
        (PackageAction::Upgrade, "upgrade"),
        (PackageAction::None, "none"),
    ] {
        assert_eq!(serde_json::to_value(a).unwrap(), name);
    }
}

/// `result` of `--output json` (apply, check, recover) is pinned the same way.
#[test]
fn command_results_are_pinned() {
    use crate::report::CommandResult as R;
    for (r, name) in [
        (R::Applied, "applied"),
        (R::UpToDate, "up-to-date"),
        (R::Planned, "planned"),
        (R::Valid, "valid"),
        (R::Recovered, "recovered"),
        (R::NothingToRecover, "nothing-to-recover"),
        (R::JournalDiscarded, "journal-discarded"),
        (R::Error, "error"),
    ] {
        assert_eq!(serde_json::to_value(r).unwrap(), name);
    }
}
