//! The one retry policy: exponential backoff with jitter and a cap, and `Retry-After`
//! (delta-seconds or HTTP-date) honoured up to a cap. Pure functions; the callers (the
//! package download, the daemon's URL poll, the report sender) do the waiting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How waits grow between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The wait after the first failure (before jitter).
    pub first: Duration,
    /// No wait (before jitter, and no Retry-After) is longer than this.
    pub cap: Duration,
    /// Jitter: the wait is `low..high` times the backoff, so a fleet of VMs started
    /// together does not retry in lockstep.
    pub low: f64,
    /// Upper end of the jitter factor.
    pub high: f64,
    /// Longest `Retry-After` honoured (a server asking for a day is not obeyed).
    pub max_retry_after: Duration,
}

impl Backoff {
    /// `first` doubling up to `cap`, 50-100 % jitter, Retry-After up to `max_retry_after`.
    pub fn new(first: Duration, cap: Duration, max_retry_after: Duration) -> Backoff {
        Backoff {
            first,
            cap,
            low: 0.5,
            high: 1.0,
            max_retry_after,
        }
    }

    /// The same policy with the jitter factor in `low..high`.
    pub fn with_jitter(mut self, low: f64, high: f64) -> Backoff {
        self.low = low;
        self.high = high;
        self
    }

    /// The wait after failure number `failures` (1 = the first failure). `random` is a
    /// number in [0, 1) (see [`unit_random`]); `retry_after` is what the server asked
    /// for. The wait is the jittered backoff, but never shorter than the (capped)
    /// Retry-After.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>, random: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let base = self
            .first
            .saturating_mul(1u32 << doublings)
            .min(self.cap.max(self.first));
        let factor = self.low + (self.high - self.low) * random.clamp(0.0, 1.0);
        let jittered = base.mul_f64(factor.max(0.0));
        let asked = retry_after.map_or(Duration::ZERO, |d| d.min(self.max_retry_after));
        jittered.max(asked)
    }
}

/// Parses a `Retry-After` value: delta-seconds (`120`) or an HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, relative to `now`; a date in the past is zero).
/// `None` when it is neither. The caller caps the result ([`Backoff::delay`] does).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = http_date(v)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(Duration::from_secs(at.saturating_sub(now).max(0) as u64))
}

/// The IMF-fixdate form of an HTTP-date (the only one senders may generate) as Unix
/// seconds.
fn http_date(v: &str) -> Option<i64> {
    let mut parts = v.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u8 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => time::Month::January,
        "Feb" => time::Month::February,
        "Mar" => time::Month::March,
        "Apr" => time::Month::April,
        "May" => time::Month::May,
        "Jun" => time::Month::June,
        "Jul" => time::Month::July,
        "Aug" => time::Month::August,
        "Sep" => time::Month::September,
        "Oct" => time::Month::October,
        "Nov" => time::Month::November,
        "Dec" => time::Month::December,
        _ => return None,
    };
    let year: i32 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u8>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let t = time::Time::from_hms(h, m, s).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, t)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// A number in [0, 1) that differs between machines and calls: enough to spread a
/// fleet's retries and polls (not for anything secret).
pub fn unit_random() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let mix = u64::from(nanos) ^ (u64::from(std::process::id()) << 20);
    (mix.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff::new(S(1), S(10), S(60)).with_jitter(1.0, 1.0);
        let got: Vec<_> = (1..=6).map(|n| b.delay(n, None, 0.5)).collect();
        assert_eq!(got, [S(1), S(2), S(4), S(8), S(10), S(10)]);
        // Huge failure counts neither overflow nor exceed the cap.
        assert_eq!(b.delay(u32::MAX, None, 0.5), S(10));
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let b = Backoff::new(S(10), S(100), S(60));
        assert_eq!(b.delay(1, None, 0.0), S(5));
        assert_eq!(b.delay(1, None, 1.0), S(10));
        let mid = b.delay(1, None, 0.5);
        assert!(mid > S(5) && mid < S(10), "{mid:?}");
        let spread = b.with_jitter(0.8, 1.2);
        assert_eq!(spread.delay(1, None, 0.0), S(8));
        assert_eq!(spread.delay(1, None, 1.0), S(12));
    }

    #[test]
    fn retry_after_is_a_floor_and_capped() {
        let b = Backoff::new(S(1), S(10), S(60)).with_jitter(1.0, 1.0);
        assert_eq!(b.delay(1, Some(S(30)), 0.0), S(30));
        assert_eq!(b.delay(1, Some(S(3600)), 0.0), S(60));
        // A Retry-After shorter than the backoff does not shorten it.
        assert_eq!(b.delay(4, Some(S(1)), 0.0), S(8));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + S(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(S(120)));
        assert_eq!(parse_retry_after(" 7 ", now), Some(S(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(S(120))
        );
        // In the past: retry now.
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(S(0))
        );
        for bad in [
            "",
            "-1",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn unit_random_is_in_range() {
        for _ in 0..100 {
            let r = unit_random();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
    }
}
