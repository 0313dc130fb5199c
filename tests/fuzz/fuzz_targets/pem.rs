//! PEM blocks and X.509 certificates (root-cert.pem, cert-chain.pem, key.pem).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmagent::bundle::pem::blocks(data);
    let _ = vmagent::bundle::pem::certificates(data, "fuzz");
});
