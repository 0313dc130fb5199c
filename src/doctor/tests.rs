use super::*;
use crate::identity::timeline::{CertRoute, Reason};

fn unit(active: &str, sub: &str) -> Result<UnitState, String> {
    Ok(UnitState {
        load: "loaded".into(),
        active: active.into(),
        sub: sub.into(),
        ..Default::default()
    })
}

#[test]
fn service_verdicts() {
    let up = unit("active", "running");
    assert_eq!(
        service_section(Some(&up), Some("enabled"), None).verdict,
        Verdict::Ok
    );
    assert_eq!(
        service_section(Some(&up), Some("disabled"), None).verdict,
        Verdict::Warn
    );
    let down = unit("failed", "failed");
    let s = service_section(Some(&down), Some("enabled"), None);
    assert_eq!(s.verdict, Verdict::Fail);
    assert!(
        s.summary.contains("failed/failed") && s.hint.is_some(),
        "{s:?}"
    );
    let gone = Ok(UnitState {
        load: "not-found".into(),
        ..Default::default()
    });
    assert!(service_section(Some(&gone), None, None)
        .summary
        .contains("not installed"));
    let off = service_section(None, Some("enabled"), Some("--root is /x"));
    assert_eq!(off.verdict, Verdict::Unknown);
    assert!(off.summary.contains("--root is /x"));
    let err = service_section(Some(&Err("boom".into())), None, None);
    assert_eq!(err.verdict, Verdict::Unknown);
}

fn view(lapses_at: Option<i64>, route: CertRoute) -> IdentityView {
    IdentityView {
        token_expires_at: Some(100),
        certificate_expires_at: None,
        renews_without_token: false,
        lapses_at,
        lapsed: false,
        reason: Reason::Other,
        certificate_dir: Some("/etc/certs".into()),
        certificate_route: route,
        fix: Some("make /etc/certs writable".into()),
    }
}

#[test]
fn identity_verdicts() {
    assert_eq!(identity_section(None, 0).verdict, Verdict::Unknown);
    let ok = identity_section(Some(&view(Some(100), CertRoute::Renewable)), 50);
    assert_eq!(ok.verdict, Verdict::Ok);
    assert!(ok.summary.contains("lapses at"), "{ok:?}");
    // Judged from the times, not the stored flag.
    let lapsed = identity_section(Some(&view(Some(100), CertRoute::Renewable)), 100);
    assert_eq!(lapsed.verdict, Verdict::Fail);
    assert_eq!(
        identity_section(Some(&view(None, CertRoute::Renewable)), 100).verdict,
        Verdict::Ok
    );
}

#[test]
fn fails_only_on_a_failed_section() {
    let sec = |verdict| Section {
        kind: Kind::Health,
        verdict,
        summary: String::new(),
        details: Vec::new(),
        hint: None,
    };
    assert_eq!(exit_code(&[]), crate::exit::OK);
    assert_eq!(
        exit_code(&[sec(Verdict::Ok), sec(Verdict::Warn), sec(Verdict::Unknown)]),
        crate::exit::OK
    );
    assert_eq!(
        exit_code(&[sec(Verdict::Ok), sec(Verdict::Fail)]),
        crate::exit::DOCTOR
    );
}
