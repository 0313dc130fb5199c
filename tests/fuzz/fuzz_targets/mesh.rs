//! mesh.yaml under the YAML budget.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmagent::bundle::mesh::parse(data);
});
