//! podlb agent library: sources, model, reconciler, datapath loader, CLI helpers.
pub mod manifests;
pub mod model;
pub mod testbed;
