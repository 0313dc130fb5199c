use std::cmp::Reverse;

use super::*;

const NOW: i64 = 1_000_000;
const H: i64 = 3600;

fn v(from: i64, until: i64) -> Option<Validity> {
    Some(Validity {
        from: Some(from),
        until: Some(until),
    })
}

fn inputs(token: Option<Validity>, cert: Option<Validity>, route: CertRoute) -> Inputs {
    Inputs {
        token,
        cert,
        route,
        provider_keeps_token: false,
        now: NOW,
    }
}

fn check(i: Inputs, lapses_at: Option<i64>, reason: Reason, renews: bool) {
    let t = timeline(&i);
    assert_eq!(
        (t.lapses_at, t.reason, t.renews_without_token),
        (lapses_at, reason, renews),
        "{i:?}"
    );
}

#[test]
fn a_token_provider_keeps_it_alive() {
    let mut i = inputs(v(0, NOW - 1), None, CertRoute::NotWritable);
    i.provider_keeps_token = true;
    check(i, None, Reason::TokenKeptFresh, false);
}

#[test]
fn a_token_without_exp_never_lapses() {
    let tok = Some(Validity {
        from: None,
        until: None,
    });
    check(
        inputs(tok, None, CertRoute::NotPersisted),
        None,
        Reason::TokenDoesNotExpire,
        false,
    );
}

#[test]
fn a_renewable_certificate_outlasts_the_token() {
    let cert = v(NOW - H, NOW + 23 * H);
    check(
        inputs(v(0, NOW + H), cert, CertRoute::Renewable),
        Some(NOW + 23 * H),
        Reason::CertificateExpiresTokenExpired,
        true,
    );
    // Already expired token: same.
    check(
        inputs(v(0, NOW - H), cert, CertRoute::Renewable),
        Some(NOW + 23 * H),
        Reason::CertificateExpiresTokenExpired,
        true,
    );
    check(
        inputs(None, cert, CertRoute::Renewable),
        Some(NOW + 23 * H),
        Reason::CertificateExpiresNoToken,
        true,
    );
    // The token lasts longer: it is the last moment a renewal can start.
    check(
        inputs(v(0, NOW + 100 * H), cert, CertRoute::Renewable),
        Some(NOW + 100 * H),
        Reason::TokenExpiresCertificateEarlier,
        true,
    );
}

#[test]
fn without_a_valid_certificate_the_token_decides() {
    for cert in [None, v(NOW - 25 * H, NOW - H)] {
        check(
            inputs(v(0, NOW + H), cert, CertRoute::Renewable),
            Some(NOW + H),
            Reason::TokenExpiresNoCertificate,
            false,
        );
    }
}

#[test]
fn each_broken_route_ends_with_the_token() {
    let cert = v(NOW - H, NOW + 23 * H);
    for (route, reason) in [
        (CertRoute::NotPersisted, Reason::CertificateNotPersisted),
        (CertRoute::NotWritable, Reason::CertificateDirNotWritable),
        (CertRoute::NotPresented, Reason::CertificateNotPresented),
        (CertRoute::PlaintextCa, Reason::CaWithoutTls),
        (CertRoute::Unknown, Reason::CertificatePathUnknown),
    ] {
        check(
            inputs(v(0, NOW + H), cert, route),
            Some(NOW + H),
            reason,
            false,
        );
        // Lapsed once the token expired, whatever the certificate says.
        let t = timeline(&inputs(v(0, NOW - 1), cert, route));
        assert!(t.lapsed(NOW), "{route:?}");
    }
}

#[test]
fn no_credential_has_lapsed() {
    let t = timeline(&inputs(None, None, CertRoute::Renewable));
    assert_eq!((t.lapses_at, t.reason), (Some(NOW), Reason::NoCredential));
    assert!(t.lapsed(NOW));
    let t = timeline(&inputs(None, v(0, NOW - 1), CertRoute::Renewable));
    assert_eq!(t.reason, Reason::NoCredential);
}

#[test]
fn reasons_are_kebab_case_and_unknown_ones_load() {
    assert_eq!(
        Reason::CertificateExpiresTokenExpired.name(),
        "certificate-expires-token-expired"
    );
    let r: Reason = serde_json::from_str("\"from-the-future\"").unwrap();
    assert_eq!(r, Reason::Other);
    let c: CertRoute = serde_json::from_str("\"not-writable\"").unwrap();
    assert_eq!(c, CertRoute::NotWritable);
    assert!(CertRoute::NotWritable
        .fix(Some("/srv/certs"))
        .unwrap()
        .contains("chown istio-proxy:istio-proxy /srv/certs"));
    assert_eq!(CertRoute::Renewable.fix(None), None);
}

#[test]
fn urgency_follows_the_leads_then_lapses() {
    let t = timeline(&inputs(v(0, NOW + 10 * H), None, CertRoute::NotWritable));
    let leads = [86_400, 3_600];
    assert_eq!(urgency(&t, NOW, &leads), Urgency::Within(Reverse(86_400)));
    assert_eq!(urgency(&t, NOW - 20 * H, &leads), Urgency::Quiet);
    assert_eq!(
        urgency(&t, NOW + 9 * H + 1, &leads),
        Urgency::Within(Reverse(3_600))
    );
    assert_eq!(urgency(&t, NOW + 10 * H, &leads), Urgency::Lapsed);
    assert!(Urgency::Lapsed > Urgency::Within(Reverse(3_600)));
    assert!(Urgency::Within(Reverse(3_600)) > Urgency::Within(Reverse(86_400)));
    assert_eq!(urgency(&t, NOW, &[]), Urgency::Quiet);
    let kept = Timeline {
        lapses_at: None,
        ..t
    };
    assert_eq!(urgency(&kept, NOW + 100 * H, &leads), Urgency::Quiet);
}

#[test]
fn a_renewing_24h_certificate_warns_only_when_renewal_is_overdue() {
    // Issued an hour ago, valid 24 h: pilot-agent renews at 12 h; a day's lead is capped
    // to 8 h, so a healthy VM stays quiet.
    let t = timeline(&inputs(
        v(0, NOW - H),
        v(NOW - H, NOW + 23 * H),
        CertRoute::Renewable,
    ));
    assert_eq!(t.lead_cap, Some(8 * H));
    assert_eq!(urgency(&t, NOW, &[86_400, 3_600]), Urgency::Quiet);
    assert_eq!(
        urgency(&t, NOW + 15 * H, &[86_400, 3_600]),
        Urgency::Within(Reverse(86_400))
    );
}
