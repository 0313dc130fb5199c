//! Waiting on conditions instead of sleeping: the suite runs on loaded machines (CI
//! beside parallel builds, two cores shared with fuzzers), where "it happens within a
//! second" is not true. Every wait here is a hang guard with a generous deadline; a test
//! that needs something to have happened polls for it.

use std::thread;
use std::time::{Duration, Instant};

/// The hang guard for waits on a condition that normally holds within a second or two:
/// long enough that a loaded machine never reaches it, short enough that a real hang
/// still ends the test in minutes.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Polls `f` every 20 ms (a first try at once) until it gives a value; panics naming
/// `what` after `limit`. `f` is tried once more after the deadline, so a slow machine
/// that was descheduled past it does not fail a condition that holds.
#[track_caller]
pub fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            return f().unwrap_or_else(|| panic!("waiting for {what}: not within {limit:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until`] for a condition without a value.
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    wait_until(what, limit, || cond().then_some(()))
}
