//! cluster.env: the bash-assignment grammar, value checks and cert-dir reading.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use vmagent::bundle::cluster_env;

fuzz_target!(|data: &[u8]| {
    if let Ok((env, _)) = cluster_env::parse(data, &BTreeSet::new()) {
        let _ = env.cert_dirs();
    }
});
