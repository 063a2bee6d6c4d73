//! Datapath I/O: the bpf root, loading or re-adopting the programs and maps, attaching to
//! interfaces, reading and writing the maps, and `reset`.
//!
//! Pin layout under the bpf root:
//! - `<root>/<map name>` for every map (see `lb_common::ALL_MAPS`), so that
//!   `bpftool map dump pinned <root>/<map>` works;
//! - `<root>/<program name>` for each program (TC ingress, TC egress, XDP);
//! - `<root>/links/<hook>:<ifname>@<ifindex>` for each attachment;
//! - `<root>/layout-version`, a symlink whose target is the `PIN_LAYOUT_VERSION` of the maps
//!   (e.g. `layout-version -> 4`): bpffs holds no regular files, only pins, directories and symlinks.
//!
//! A restarted agent finds the pins and adopts them: the maps keep their contents, the links
//! keep their programs attached, and nothing is reloaded. Pins of another layout version (or
//! of a podlb from before versions were recorded) are refused: `podlb reset` clears them.
//!
//! The parts: `pins` (the bpf root, the layout version, the link pins, `reset`), `load`
//! (loading or adopting the programs and maps), `interfaces` (listing, addresses, attaching),
//! `devconf` (an interface's accept_local by netlink),
//! `maps` (the map handles, reads and writes) and `batch` (batched whole-map reads).
use std::path::PathBuf;

use aya::programs::{SchedClassifier, Xdp};

mod batch;
mod devconf;
mod interfaces;
mod load;
mod maps;
mod pins;
#[cfg(test)]
mod tests;

pub use interfaces::{accept_local, interface_addresses, interfaces, local_addresses, Failures};
pub use maps::{
    fmt_addr, frontend_counters, make_meta, meta_name, FrontendCounters, Maps, WriteError,
};
pub use pins::{check_layout, ensure_bpffs, layout_version, mount_bpffs, reset, Hook};

/// The eBPF object, embedded at build time (see build.rs).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/podlb.bpf.o"));

/// The loaded (or adopted) programs and the pin directory.
pub struct Datapath {
    root: PathBuf,
    tc: SchedClassifier,
    tc_egress: SchedClassifier,
    xdp: Xdp,
    /// Whether the programs were found pinned (re-adopted) rather than loaded now.
    pub adopted: bool,
}
