//! The workload identity over time: where the istio-token comes from and when it is
//! renewed.

pub mod provider;
