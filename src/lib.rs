//! vmagent: brings a VM outside Kubernetes into an Istio service mesh.
//!
//! Data flow: [`bundle`] (read + validate) -> [`plan`] (desired vs actual under a
//! [`root::Root`]) -> [`apply`] (locked, journaled transaction) -> [`package`] ->
//! [`service`] (systemctl) -> [`health`] (istio.log + readiness probe) -> [`report`] /
//! [`status`].

pub mod applied;
pub mod apply;
pub mod bundle;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod dns_capture;
pub mod doctor;
pub mod etc_hosts;
pub mod exit;
pub mod fsx;
pub mod health;
pub mod identity;
pub mod layout;
pub mod lkg;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod overrides;
pub mod package;
pub mod plan;
pub mod preflight;
pub mod pristine;
pub mod redact;
pub mod report;
pub mod root;
pub mod run;
pub mod service;
pub mod sockets;
pub mod status;
pub mod text;
pub mod timefmt;
pub mod trust;
pub mod uninstall;
