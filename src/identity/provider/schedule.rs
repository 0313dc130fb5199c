//! When to ask the provider next: a pure function of the installed token's lifetime, the
//! clock, `refresh_at` and the last attempt's failures (jittered backoff with Retry-After
//! honoured, through the one retry policy in [`crate::net::retry`]).

use std::time::Duration;

use crate::bundle::token::Token;
use crate::net::retry::Backoff;

/// The lifetime assumed when a token has no `iat`: istioctl's default `--tokenDuration`.
pub const DEFAULT_LIFETIME: i64 = 3600;

/// How retries after a failed refresh are spaced: 10 s doubling to 10 min, and a
/// server's Retry-After obeyed up to an hour.
pub fn backoff() -> Backoff {
    Backoff::new(
        Duration::from_secs(10),
        Duration::from_secs(600),
        Duration::from_secs(3600),
    )
}

/// A token's validity window, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// `iat`, or `exp` minus [`DEFAULT_LIFETIME`] when absent.
    pub issued: i64,
    /// `exp`.
    pub expires: i64,
}

impl Lifetime {
    /// The window of `token`; `None` without an `exp` (such a token is never trusted to
    /// last).
    pub fn of(token: &Token) -> Option<Lifetime> {
        let expires = token.exp?;
        let issued = token
            .iat
            .unwrap_or(expires.saturating_sub(DEFAULT_LIFETIME))
            .min(expires);
        Some(Lifetime { issued, expires })
    }

    /// When `refresh_at` (a fraction) of the lifetime has passed.
    pub fn due(&self, refresh_at: f64) -> i64 {
        let span = self.expires.saturating_sub(self.issued).max(0);
        self.issued
            .saturating_add((span as f64 * refresh_at.clamp(0.0, 1.0)) as i64)
    }
}

/// How the last refresh went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// None yet, or it succeeded.
    Fine,
    /// `failures` in a row; the last one with the server's Retry-After, if any.
    Failed {
        /// Consecutive failures (1 = one).
        failures: u32,
        /// What the server asked for.
        retry_after: Option<Duration>,
    },
}

/// Whether the installed token can stay: it has not reached its refresh point.
pub fn is_fresh(current: Option<Lifetime>, now: i64, refresh_at: f64) -> bool {
    current.is_some_and(|l| now < l.due(refresh_at) && now < l.expires)
}

/// The Unix second of the next refresh attempt. A missing or expired token is refreshed
/// now; after failures the jittered backoff (never shorter than the capped Retry-After)
/// decides; otherwise the token's refresh point. `random` is in [0, 1).
pub fn next_refresh(
    current: Option<Lifetime>,
    now: i64,
    refresh_at: f64,
    last: Last,
    policy: &Backoff,
    random: f64,
) -> i64 {
    if let Last::Failed {
        failures,
        retry_after,
    } = last
    {
        let wait = policy.delay(failures.max(1), retry_after, random);
        // Rounded up, so a Retry-After of 1.5 s is not retried after 1 s.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return now.saturating_add(secs.min(i64::MAX as u64) as i64);
    }
    match current {
        Some(l) if l.expires > now => l.due(refresh_at).max(now),
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn life(issued: i64, expires: i64) -> Option<Lifetime> {
        Some(Lifetime { issued, expires })
    }

    fn next(current: Option<Lifetime>, last: Last, random: f64) -> i64 {
        next_refresh(current, NOW, 0.5, last, &backoff(), random)
    }

    #[test]
    fn missing_or_expired_token_is_refreshed_at_once() {
        assert_eq!(next(None, Last::Fine, 0.3), NOW);
        assert_eq!(next(life(NOW - 7200, NOW - 3600), Last::Fine, 0.3), NOW);
        assert_eq!(next(life(NOW - 3600, NOW), Last::Fine, 0.3), NOW);
    }

    #[test]
    fn a_good_token_is_refreshed_at_its_fraction() {
        assert_eq!(next(life(NOW, NOW + 3600), Last::Fine, 0.0), NOW + 1800);
        let late = next_refresh(life(NOW, NOW + 3600), NOW, 0.8, Last::Fine, &backoff(), 0.0);
        assert_eq!(late, NOW + 2880);
        // Past its refresh point but still valid (e.g. at start): now.
        assert_eq!(next(life(NOW - 3000, NOW + 600), Last::Fine, 0.0), NOW);
    }

    #[test]
    fn failures_back_off_with_jitter_and_honour_retry_after() {
        let failed = |failures, retry_after| Last::Failed {
            failures,
            retry_after,
        };
        let current = life(NOW - 3000, NOW + 600);
        // First failure: 10 s jittered to 5..10 s.
        assert_eq!(next(current, failed(1, None), 0.0), NOW + 5);
        assert_eq!(next(current, failed(1, None), 0.999), NOW + 10);
        // Doubling, capped at 10 minutes.
        assert_eq!(next(current, failed(3, None), 0.999), NOW + 40);
        assert_eq!(next(current, failed(30, None), 0.999), NOW + 600);
        // Retry-After is a floor, capped at an hour.
        let ra = |s| Some(Duration::from_secs(s));
        assert_eq!(next(current, failed(1, ra(120)), 0.0), NOW + 120);
        assert_eq!(next(current, failed(1, ra(86_400)), 0.0), NOW + 3600);
        // Also with no token at all: failures are not retried in a hot loop.
        assert_eq!(next(None, failed(1, None), 0.0), NOW + 5);
    }

    #[test]
    fn lifetime_from_claims() {
        let t = |iat, exp| Token {
            iat,
            exp,
            ..Token::default()
        };
        assert_eq!(Lifetime::of(&t(None, None)), None);
        assert_eq!(
            Lifetime::of(&t(None, Some(NOW))),
            life(NOW - DEFAULT_LIFETIME, NOW)
        );
        // An iat after exp is nonsense: the window is empty, due at once.
        let odd = Lifetime::of(&t(Some(NOW + 10), Some(NOW))).unwrap();
        assert_eq!(odd.due(0.5), NOW);
    }

    #[test]
    fn freshness() {
        assert!(!is_fresh(None, NOW, 0.5));
        assert!(is_fresh(life(NOW - 100, NOW + 3500), NOW, 0.5));
        assert!(!is_fresh(life(NOW - 2000, NOW + 1600), NOW, 0.5));
        assert!(!is_fresh(life(NOW - 7200, NOW - 1), NOW, 0.5));
    }
}
