//! The local clock: a VM whose clock is behind the cluster's sees istiod's certificates
//! (and the workload certificate istiod issues) as not yet valid; one far ahead sees
//! them expired. The token's `iat`/`nbf` were set by the API server's clock, so a token
//! "issued in the future" shows this VM's clock is behind. NTP state comes from
//! `timedatectl` when present (absent: unknown, not a failure).

use std::time::Duration;

use crate::bundle::Bundle;
use crate::config::CheckName;
use crate::timefmt::{human_duration, now, rfc3339};

use super::{CheckResult, Failure};

/// Whether NTP has synchronised this machine's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ntp {
    /// `NTPSynchronized=yes`.
    Synced,
    /// `NTPSynchronized=no`.
    NotSynced,
    /// No timedatectl, or it did not answer (containers, no systemd).
    Unknown,
}

/// Asks `timedatectl show -p NTPSynchronized --value`.
pub fn ntp() -> Ntp {
    let mut c = crate::cmd::command("timedatectl");
    c.args(["show", "-p", "NTPSynchronized", "--value"]);
    match crate::cmd::run(&mut c, Duration::from_secs(2)) {
        Ok(o) if o.status.success() => parse_ntp(&String::from_utf8_lossy(&o.stdout)),
        _ => Ntp::Unknown,
    }
}

/// Parses timedatectl's value.
pub fn parse_ntp(s: &str) -> Ntp {
    match s.trim() {
        "yes" => Ntp::Synced,
        "no" => Ntp::NotSynced,
        _ => Ntp::Unknown,
    }
}

/// The verdict on the token's times against `now` (pure): `Err` with cause and fix
/// when the token was issued (or starts) more than `skew` seconds in this VM's future.
pub fn judge(
    iat: Option<i64>,
    nbf: Option<i64>,
    now: i64,
    skew: u64,
    ntp: Ntp,
) -> Result<String, String> {
    let ntp_note = match ntp {
        Ntp::Synced => "NTP synchronised",
        Ntp::NotSynced => "NTP is NOT synchronised",
        Ntp::Unknown => "NTP state unknown (no timedatectl)",
    };
    let skew = i64::try_from(skew).unwrap_or(i64::MAX);
    let ahead = [("iat", iat), ("nbf", nbf)]
        .into_iter()
        .filter_map(|(k, t)| t.map(|t| (k, t)))
        .filter(|(_, t)| t.saturating_sub(now) > skew)
        .max_by_key(|(_, t)| *t);
    match ahead {
        Some((claim, t)) => Err(format!(
            "this VM's clock ({}) is {} behind the cluster's: the token's '{claim}' is {}; certificates istiod issues would look not yet valid here ({ntp_note}): set the clock (timedatectl set-ntp true, or chronyc makestep), then run again",
            rfc3339(now),
            human_duration(t.saturating_sub(now)),
            rfc3339(t)
        )),
        None => Ok(match iat {
            Some(i) => format!("local time {} is after the token's iat {}; {ntp_note}", rfc3339(now), rfc3339(i)),
            None => format!("local time {}; the token has no iat; {ntp_note}", rfc3339(now)),
        }),
    }
}

/// The clock check. `replaced`: a `[token]` provider supplies the token, so the
/// bundle's is not judged (only NTP is reported).
pub fn check(bundle: &Bundle, replaced: bool, skew: u64) -> CheckResult {
    let ntp = ntp();
    let (iat, nbf) = if replaced {
        (None, None)
    } else {
        (bundle.token.iat, bundle.token.nbf)
    };
    match judge(iat, nbf, now(), skew, ntp) {
        Ok(d) => CheckResult::ok(CheckName::Clock, d),
        Err(m) => CheckResult::failed(CheckName::Clock, Failure::Clock, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_issued_an_hour_ahead_fails_with_the_fix() {
        let now = 1_800_000_000;
        let e = judge(Some(now + 3600), None, now, 60, Ntp::NotSynced).unwrap_err();
        assert!(e.contains("behind"), "{e}");
        assert!(e.contains("timedatectl set-ntp true"), "{e}");
        assert!(e.contains("NOT synchronised"), "{e}");
        let e = judge(Some(now), Some(now + 600), now, 60, Ntp::Unknown).unwrap_err();
        assert!(e.contains("'nbf'"), "{e}");
    }

    #[test]
    fn small_skew_and_past_tokens_pass() {
        let now = 1_800_000_000;
        assert!(judge(Some(now + 30), None, now, 60, Ntp::Synced).is_ok());
        assert!(judge(Some(now - 3600), Some(now - 3600), now, 60, Ntp::Synced).is_ok());
        assert!(judge(None, None, now, 0, Ntp::Unknown).is_ok());
    }

    #[test]
    fn timedatectl_values() {
        assert_eq!(parse_ntp("yes\n"), Ntp::Synced);
        assert_eq!(parse_ntp("no"), Ntp::NotSynced);
        assert_eq!(parse_ntp(""), Ntp::Unknown);
    }
}
