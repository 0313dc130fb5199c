//! The undo journal as read back from disk: parsed and checked entry by entry as the
//! next rollback would (`TxnDir::pending` + `TxnDir::validate`), in a scratch root.
//! Nothing is restored: a checker bug must show as an accepted entry, never as a
//! changed file on the fuzzing machine.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmagent::apply::journal::TxnDir;
use vmagent::root::Root;

fn scratch() -> &'static (tempfile::TempDir, Root) {
    static DIR: OnceLock<(tempfile::TempDir, Root)> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("scratch dir");
        for sub in ["etc/certs", "var/lib/istio/envoy", "var/run/secrets/tokens"] {
            std::fs::create_dir_all(d.path().join(sub)).expect("layout dirs");
        }
        std::fs::write(d.path().join("etc/hosts"), "127.0.0.1 localhost\n").expect("hosts");
        let root = Root::new(d.path()).expect("root");
        (d, root)
    })
}

fuzz_target!(|data: &[u8]| {
    let (_, root) = scratch();
    let Ok(txn) = TxnDir::of(root) else { return };
    if std::fs::create_dir_all(txn.backups()).is_err() {
        return;
    }
    if std::fs::write(txn.journal(), data).is_err() {
        return;
    }
    if let Ok(Some(j)) = txn.pending() {
        let _ = txn.validate(&j);
    }
});
