//! podlb agent library: sources, model, reconciler, datapath loader, CLI helpers.
//!
//! Pure logic (`model`, `reconcile`) is kept apart from I/O (`source`, `datapath`, `agent`).
pub mod agent;
pub mod caps;
pub mod cli;
pub mod config;
pub mod datapath;
pub mod http;
pub mod metrics;
pub mod model;
pub mod objects;
pub mod reconcile;
pub mod source;
pub mod types;
