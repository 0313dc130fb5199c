//! /etc/vmagent/config.toml: TOML, validation of every key.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmagent::config::Config;
use vmagent::root::Root;

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("scratch dir");
        std::fs::create_dir_all(d.path().join("etc/vmagent")).expect("etc/vmagent");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch().path();
    if std::fs::write(dir.join("etc/vmagent/config.toml"), data).is_ok() {
        if let Ok(root) = Root::new(dir) {
            let _ = Config::load(&root);
        }
    }
});
