//! The bundle's hosts member, and merging into an existing /etc/hosts (both sides
//! untrusted: the first half of the input is the file, the second the member).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (existing, member) = data.split_at(data.len() / 2);
    if let Ok((entries, _)) = vmagent::bundle::hosts::parse(member) {
        let _ = vmagent::etc_hosts::merge(existing, &entries);
    }
    let _ = vmagent::etc_hosts::without_block(data);
});
