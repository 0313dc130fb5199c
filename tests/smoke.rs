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
