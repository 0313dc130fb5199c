//! The whole bundle path from an archive on disk: tar / tar.gz reader, member limits,
//! then every member parser (`Bundle::open`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmagent::bundle::{Bundle, ReadOptions};

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("scratch dir"))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch().path().join("bundle.tar");
    if std::fs::write(&path, data).is_ok() {
        let _ = Bundle::open(
            &path,
            ReadOptions {
                allow_expired_token: true,
                now: 1_800_000_000,
            },
        );
    }
});
