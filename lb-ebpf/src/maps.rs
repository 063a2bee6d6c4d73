//! The maps (all with BTF; the agent pins them under its bpf root). Types from `lb-common`.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use lb_common::*;

#[btf_map(name = "lb_frontends")]
pub static FRONTENDS: HashMap<FrontendKey, Frontend, { MAX_SERVICES as usize }> = HashMap::new();
#[btf_map(name = "lb_slots")]
pub static SLOTS: HashMap<SlotKey, Slot, { MAX_SLOTS as usize }> = HashMap::new();
#[btf_map(name = "lb_backends")]
pub static BACKENDS: Array<Backend, { MAX_BACKENDS as usize }> = Array::new();
#[btf_map(name = "lb_conntrack")]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry, { MAX_CONNTRACK as usize }> = LruHashMap::new();
#[btf_map(name = "lb_vips")]
pub static VIPS: HashMap<VipKey, Vip, { MAX_SERVICES as usize }> = HashMap::new();
#[btf_map(name = "lb_config")]
pub static CONFIG: Array<Config, 1> = Array::new();
#[btf_map(name = "lb_svc_stats")]
pub static SVC_STATS: PerCpuArray<SvcStats, { MAX_SERVICES as usize }> = PerCpuArray::new();
#[btf_map(name = "lb_counters")]
pub static COUNTERS: PerCpuArray<u64, { lb_common::COUNTERS as usize }> = PerCpuArray::new();
// Written by the agent only (names for `podlb service list`); declared here so it has BTF.
#[btf_map(name = "lb_svc_meta")]
pub static SVC_META: HashMap<u32, SvcMeta, { MAX_SERVICES as usize }> = HashMap::new();

/// Per-CPU scratch space for values too big for the 512-byte BPF stack: a new flow's two
/// conntrack entries, and reject replies being built. Internal to the datapath (not pinned).
#[repr(C)]
pub struct Scratch {
    pub fwd: CtEntry,
    pub reply: CtEntry,
    pub reply_key: CtKey,
    pub buf: [u8; SCRATCH_BUF],
}
/// Room for the largest reply built (an ICMPv6 port unreachable is 110 bytes).
pub const SCRATCH_BUF: usize = 128;

#[btf_map(name = "lb_scratch")]
pub static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// This CPU's scratch space.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Adds a packet to a service's per-CPU counters.
#[inline(always)]
pub fn count_service(svc_id: u32, bytes: u32) {
    if let Some(s) = SVC_STATS.get_ptr_mut(svc_id) {
        let s = unsafe { &mut *s };
        s.packets += 1;
        s.bytes += bytes as u64;
    }
}

/// Bumps one of the `CNT_*` event counters.
#[inline(always)]
pub fn count_event(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}
