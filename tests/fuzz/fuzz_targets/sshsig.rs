//! A bundle's detached signature and the trust files (`[trust]`): what vmagent reads
//! itself before ssh-keygen verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmagent::trust::sshsig;

fuzz_target!(|data: &[u8]| {
    let _ = sshsig::parse(data);
    let _ = sshsig::principals(&String::from_utf8_lossy(data));
    let _ = sshsig::revoked_fingerprints(data);
});
