//! istio-token: JWT shape and claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmagent::bundle::token::parse(data, 1_800_000_000, false);
    let _ = vmagent::bundle::token::parse(data, 1_800_000_000, true);
});
