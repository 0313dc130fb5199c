//! Placeholder replaced by the health benchmark (issue 4).
fn main() {}
