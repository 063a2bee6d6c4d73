//! Operator subcommands. They read the pinned maps directly, so they work while the agent is
//! stopped.
//!
//! The parts: `services` (`podlb service list`), `status` (`podlb status`) and `table` (the
//! plain-text tables they print), `cleanup` (`podlb cleanup-kube-proxy`); `reset` is here.
use std::path::Path;

use anyhow::Result;

use crate::datapath;

mod cleanup;
mod services;
mod status;
mod table;

pub use cleanup::cleanup_kube_proxy;
pub use services::{service_list, service_rows, ServiceRow};
pub use status::status;

/// `podlb reset`: detaches and removes everything podlb pinned under `root`
/// ([`datapath::reset`]), and says how much.
pub fn reset(root: &Path) -> Result<()> {
    let n = datapath::reset(root)?;
    println!("removed {n} pinned objects from {}", root.display());
    Ok(())
}
