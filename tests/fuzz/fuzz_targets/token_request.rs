//! A token provider's answer: the TokenRequest response body (kubernetes provider), then
//! the checks every provider's token goes through before it is installed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmagent::identity::provider::{kubernetes, validate};

fuzz_target!(|data: &[u8]| {
    let who = validate::Identity {
        namespace: "vm-ns".into(),
        service_account: "vm-sa".into(),
    };
    if let Ok(token) = kubernetes::token_of(data) {
        let _ = validate::check(&token, &who, 1_800_000_000, Some(1_700_000_000));
    }
    let _ = validate::check(data, &who, 1_800_000_000, None);
    let _ = validate::normalise(data);
});
