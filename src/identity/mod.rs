//! The VM's mesh identity: how long it lasts ([`timeline`]: the token, the workload
//! certificate pilot-agent saves, and whether it can renew without the token), what on
//! the machine decides that ([`observe`]), and where the istio-token comes from and when
//! it is renewed ([`provider`]).

pub mod observe;
pub mod provider;
pub mod timeline;
