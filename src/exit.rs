//! Process exit codes (documented in README.md), one per kind of failure.

/// Success, or up to date.
pub const OK: u8 = 0;
/// The apply failed; changes were rolled back.
pub const FAILED: u8 = 1;
/// Invalid bundle or command line.
pub const INVALID: u8 = 2;
/// Another vmagent holds the lock.
pub const BUSY: u8 = 3;
/// A prerequisite is missing or something on disk is in the way.
pub const PREREQUISITE: u8 = 4;
/// The package could not be downloaded or verified.
pub const DOWNLOAD: u8 = 5;
/// dpkg/rpm failed.
pub const INSTALL: u8 = 6;
/// systemctl failed (daemon-reload, enable, start, restart).
pub const SERVICE: u8 = 7;
/// `vmagent status`: the mesh identity has lapsed (no valid token and no certificate
/// that renews): the VM is out of the mesh until it gets a fresh token.
pub const IDENTITY_LAPSED: u8 = 8;
/// The token provider gave no usable token (`[token]`: file, exec, kubernetes).
pub const TOKEN: u8 = 9;
// 10-27: the proxy is not ready, by failure kind: see `health::Failure::exit_code`.
/// `vmagent doctor`: a section failed (its hint says what to do).
pub const DOCTOR: u8 = 40;
