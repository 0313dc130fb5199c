//! Looking at a finished vmagent process: its text, exit code and JSON.

use std::process::Output;

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Status, stdout and stderr, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// Asserts the exit code and returns the output for more checks.
#[track_caller]
pub fn code(o: Output, want: i32, ctx: &str) -> Output {
    assert_eq!(o.status.code(), Some(want), "{ctx}: {}", show(&o));
    o
}

/// Asserts exit 0.
#[track_caller]
pub fn ok(o: Output, ctx: &str) -> Output {
    code(o, 0, ctx)
}

/// stdout parsed as JSON.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", show(o)))
}
