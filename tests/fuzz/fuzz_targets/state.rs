//! vmagent's own state record (untrusted: it is read back from disk).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmagent::applied::AppliedIdentity::parse(data);
});
