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
// 30-37: the online preflight failed (nothing was installed): see `preflight::Failure`.
/// Preflight: a name does not resolve (discoveryAddress, CA_ADDR).
pub const PREFLIGHT_DNS: u8 = 30;
/// Preflight: TCP to istiod or the gateway refused, timed out or has no route.
pub const PREFLIGHT_UNREACHABLE: u8 = 31;
/// Preflight: istiod's certificate is not signed by the bundle's root-cert.pem.
pub const PREFLIGHT_CA_MISMATCH: u8 = 32;
/// Preflight: TCP connects but no TLS answers: the gateway does not route 15012 to istiod.
pub const PREFLIGHT_NOT_ROUTED: u8 = 33;
/// Preflight: the certificate is not valid for istiod's name (SANs).
pub const PREFLIGHT_SERVER_NAME: u8 = 34;
/// Preflight: the local clock disagrees with the token or istiod's certificate.
pub const PREFLIGHT_CLOCK: u8 = 35;
/// Preflight: a port the proxy needs is held by another program.
pub const PREFLIGHT_PORTS: u8 = 36;
/// Preflight: the address pilot-agent would advertise is not this VM's.
pub const PREFLIGHT_ADDRESS: u8 = 37;
