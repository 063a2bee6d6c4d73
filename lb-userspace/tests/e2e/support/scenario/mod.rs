//! The bodies of the tests that run once per address family (and often once per pod network):
//! the modules `service`, `service_types` and `multinode` call them with [`Family::V4`], `ipv6`
//! with [`Family::V6`].
//!
//! [`Family::V4`]: podlb::types::Family::V4
//! [`Family::V6`]: podlb::types::Family::V6
mod clusterip;
mod multinode;
mod service_types;

pub use clusterip::*;
pub use multinode::*;
pub use service_types::*;

/// Who the tests are, in a failure about a missing root.
const WHO: &str = "end-to-end";
