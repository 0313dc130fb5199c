//! vmagent: brings a VM outside Kubernetes into an Istio service mesh.
//!
//! Data flow: [`bundle`] (read + validate) -> [`plan`] (desired vs actual under a
//! [`root::Root`]) -> [`apply`] (locked, journaled transaction) -> [`report`].

pub mod apply;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod fsx;
pub mod hosts;
pub mod layout;
pub mod package;
pub mod plan;
pub mod report;
pub mod root;
pub mod run;
pub mod state;
pub mod timefmt;
