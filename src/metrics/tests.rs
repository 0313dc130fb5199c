use super::{render, Counters};
use crate::health::{Failure, Health, State};
use crate::identity::timeline::{CertRoute, Reason};
use crate::status::{ApplyResult, HealthView, IdentityView, LastApply, StatusFile};

fn doc(state: State, failure: Option<Failure>) -> StatusFile {
    let mut h = Health::unknown();
    h.state = state;
    h.failure = failure;
    StatusFile::new(HealthView::of(&h, 1_700_000_000))
}

/// The sample lines of `name` (exactly that family; not its HELP/TYPE).
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .collect()
}

#[test]
fn every_health_state_has_one_series_and_only_the_current_one_is_1() {
    for state in State::ALL {
        let failure = (state == State::Failed).then_some(Failure::TokenRejected);
        let text = render(&doc(state, failure), &Counters::default());
        let series = samples(&text, "vmagent_health_state");
        assert_eq!(series.len(), State::ALL.len(), "{text}");
        let on: Vec<_> = series.iter().filter(|l| l.ends_with(" 1")).collect();
        let kind = failure.map(Failure::name).unwrap_or("");
        assert_eq!(
            on,
            [&format!(
                "vmagent_health_state{{state=\"{}\",kind=\"{kind}\"}} 1",
                state.name()
            )
            .as_str()],
            "{text}"
        );
        let ready = i64::from(state == State::Ready);
        assert_eq!(
            samples(&text, "vmagent_proxy_ready"),
            [format!("vmagent_proxy_ready {ready}")]
        );
    }
}

#[test]
fn label_values_are_escaped() {
    let mut d = doc(State::Ready, None);
    d.package_version = Some("1.24\\\"x\"\nnext".into());
    let text = render(&d, &Counters::default());
    assert_eq!(
        samples(&text, "vmagent_package_info"),
        ["vmagent_package_info{version=\"1.24\\\\\\\"x\\\"\\nnext\"} 1"]
    );
    assert!(text.lines().all(|l| !l.is_empty()), "{text}");
}

#[test]
fn timestamps_counters_and_the_last_apply() {
    let mut d = doc(State::Degraded, Some(Failure::IstiodUnreachable));
    d.identity = Some(IdentityView {
        token_expires_at: Some(1_800_000_000),
        certificate_expires_at: Some(1_800_003_600),
        renews_without_token: false,
        lapses_at: Some(1_800_000_000),
        lapsed: false,
        reason: Reason::Other,
        certificate_dir: None,
        certificate_route: CertRoute::Unknown,
        fix: None,
    });
    d.last_apply = Some(LastApply {
        at: crate::timefmt::rfc3339(1_750_000_000),
        result: ApplyResult::Error("disk full".into()),
        exit_code: 4,
        bundle: "/b.tar".into(),
    });
    let c = Counters {
        reconciles: 7,
        drift_repairs: 2,
        rollbacks: 1,
        preflight_failures: 3,
    };
    let text = render(&d, &c);
    for want in [
        "vmagent_token_expiry_timestamp_seconds 1800000000",
        "vmagent_workload_certificate_expiry_timestamp_seconds 1800003600",
        "vmagent_identity_lapse_timestamp_seconds 1800000000",
        "vmagent_health_state_since_timestamp_seconds 1700000000",
        "vmagent_last_apply_timestamp_seconds 1750000000",
        "vmagent_last_apply_result{result=\"error\"} 1",
        "vmagent_last_apply_result{result=\"applied\"} 0",
        "vmagent_last_apply_exit_code 4",
        "vmagent_reconciles_total 7",
        "vmagent_drift_repairs_total 2",
        "vmagent_rollbacks_total 1",
        "vmagent_preflight_failures_total 3",
        "vmagent_health_state{state=\"degraded\",kind=\"istiod-unreachable\"} 1",
        "# TYPE vmagent_reconciles_total counter",
        "# TYPE vmagent_proxy_ready gauge",
    ] {
        assert!(text.lines().any(|l| l == want), "{want} missing in\n{text}");
    }
    assert_eq!(
        samples(&text, "vmagent_last_apply_result").len(),
        ApplyResult::KINDS.len()
    );
    // The error's free text is no label: it would make a new series per message.
    assert!(!text.contains("disk full"));
}

#[test]
fn unknown_values_are_left_out_and_every_family_has_help_and_type() {
    let text = render(&doc(State::Unknown, None), &Counters::default());
    for absent in [
        "vmagent_package_info",
        "vmagent_token_expiry_timestamp_seconds",
        "vmagent_identity_lapse_timestamp_seconds",
        "vmagent_last_apply_result",
    ] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
    let names: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    for n in names {
        assert!(text.contains(&format!("# HELP {n} ")), "{n}");
        assert!(text.contains(&format!("# TYPE {n} ")), "{n}");
    }
    assert_eq!(
        text,
        render(&doc(State::Unknown, None), &Counters::default()),
        "the same input renders the same text (no time of its own)"
    );
}
