//! Unit tests of `run`.

use super::*;

/// The record failing after the package step must not claim nothing changed: the
/// package is installed and stays, and the message says how to undo it.
#[test]
fn record_failure_after_the_package_says_what_changed() {
    let t = tempfile::tempdir().unwrap();
    let root = Root::new(t.path()).unwrap();
    let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
    let e = after_package(pristine_err(&root, io), &Some("dpkg -i /x.deb".into()));
    let msg = e.to_string();
    assert!(!msg.contains("nothing was changed"), "{msg}");
    assert!(msg.contains("no file of the bundle was written"), "{msg}");
    assert!(
        msg.contains("installed by `dpkg -i /x.deb` and stays installed"),
        "{msg}"
    );
    assert!(msg.contains("`vmagent uninstall`"), "{msg}");
    assert_eq!(e.exit_code(), exit::FAILED);
}

/// An OS failure while planning is exit 1; only something in the way is exit 4
/// (before, every read or inspection failure was "in the way").
#[test]
fn plan_io_failures_are_exit_1_and_things_in_the_way_exit_4() {
    let os = |code| std::io::Error::from_raw_os_error(code);
    for (e, want) in [
        (os(libc::EIO), exit::FAILED),
        (os(libc::EACCES), exit::FAILED),
        (os(libc::ENOTDIR), exit::PREREQUISITE),
        (os(libc::ELOOP), exit::PREREQUISITE),
        (
            std::io::Error::other("not a regular file"),
            exit::PREREQUISITE,
        ),
    ] {
        let shown = e.to_string();
        let err = RunError::Plan(plan::io_failed("/etc/hosts", "read", e));
        assert_eq!(err.exit_code(), want, "{shown}: {err}");
        assert!(err.to_string().contains("/etc/hosts"), "{err}");
    }
}
