//! The maps (all with BTF; the agent pins them under its bpf root). Types from `lb-common`.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use lb_common::*;

#[btf_map(name = "lb4_frontends")]
pub static FRONTENDS: HashMap<Frontend4Key, Frontend, { MAX_SERVICES as usize }> = HashMap::new();
#[btf_map(name = "lb4_slots")]
pub static SLOTS: HashMap<SlotKey, Slot, { MAX_SLOTS as usize }> = HashMap::new();
#[btf_map(name = "lb4_backends")]
pub static BACKENDS: Array<Backend4, { MAX_BACKENDS as usize }> = Array::new();
#[btf_map(name = "lb4_conntrack")]
pub static CONNTRACK: LruHashMap<Ct4Key, Ct4Entry, { MAX_CONNTRACK as usize }> = LruHashMap::new();
#[btf_map(name = "lb4_vips")]
pub static VIPS: HashMap<[u8; 4], Vip, { MAX_SERVICES as usize }> = HashMap::new();
#[btf_map(name = "lb_config")]
pub static CONFIG: Array<Config, 1> = Array::new();
#[btf_map(name = "lb_svc_stats")]
pub static SVC_STATS: PerCpuArray<SvcStats, { MAX_SERVICES as usize }> = PerCpuArray::new();
#[btf_map(name = "lb_counters")]
pub static COUNTERS: PerCpuArray<u64, { lb_common::COUNTERS as usize }> = PerCpuArray::new();
// Written by the agent only (names for `podlb service list`); declared here so it has BTF.
#[btf_map(name = "lb_svc_meta")]
pub static SVC_META: HashMap<u32, SvcMeta, { MAX_SERVICES as usize }> = HashMap::new();

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
