//! The legacy dnsmasq `kubedns` member.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmagent::bundle::dnsmasq::parse(data);
});
