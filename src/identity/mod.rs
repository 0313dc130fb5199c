//! The VM's mesh identity: how long it lasts ([`timeline`]: the token, the workload
//! certificate pilot-agent saves, and whether it can renew without the token) and what
//! on the machine decides that ([`observe`]).

pub mod observe;
pub mod timeline;
