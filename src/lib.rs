//! vmagent: brings a VM outside Kubernetes into an Istio service mesh.
//!
//! Data flow: [`bundle`] (read + validate) -> [`plan`] (desired vs actual under a
//! [`root::Root`]) -> [`apply`] (locked, journaled transaction) -> [`report`].

pub mod bundle;
pub mod fsx;
pub mod root;
pub mod timefmt;
pub mod hosts;
pub mod layout;
pub mod plan;
pub mod state;
pub mod apply;
pub mod run;
pub mod report;
pub mod cli;
