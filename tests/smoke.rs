//! Harness sanity: the example bundle applies into a test root.

mod common;

use common::*;

#[test]
fn example_applies_and_reapplies_as_noop() {
    let root = TestRoot::new();
    let t = tempfile::tempdir().unwrap();
    let b = Spec::example_in("vmintegration").write_tgz(t.path());
    root.apply(&b, &[]).success();
    let before = root.snapshot();
    root.apply(&b, &[])
        .success()
        .stdout(predicates::str::contains("up to date"));
    assert_same(&before, &root.snapshot(), "second apply");
}

/// Numeric flags are bounded: a huge value is a usage error naming the flag and the
/// allowed range (exit 2), not an overflow panic in the deadline arithmetic.
#[test]
fn numeric_flags_are_bounded() {
    for (flag, sub) in [
        ("--wait", "apply"),
        ("--lock-timeout", "apply"),
        ("--lock-timeout", "uninstall"),
        ("--lock-timeout", "recover"),
    ] {
        let mut args = vec![sub];
        if sub == "apply" {
            args.push("/nonexistent-bundle.tar");
        }
        args.extend(["--root", "/nonexistent-root", flag, "18446744073709551615"]);
        let o = assert_cmd::Command::cargo_bin("vmagent")
            .unwrap()
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(flag) && err.contains("0..=86400") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
