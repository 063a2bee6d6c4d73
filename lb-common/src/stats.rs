//! Counters the datapath keeps (`lb_svc_stats` per service, `lb_counters` per event) and the
//! service names the agent stores beside them for the CLI (`lb_svc_meta`).

/// Indexes of `lb_counters`, a per-CPU array of `u64` event counters.
pub const CNT_REJECT_NO_BACKEND: u32 = 0;
pub const CNT_REJECT_NO_PORT: u32 = 1;
pub const CNT_DROP_NO_BACKEND: u32 = 2;
pub const CNT_SNAT_NO_PORT: u32 = 3;
pub const CNT_NAT_ERROR: u32 = 4;
pub const CNT_HAIRPIN: u32 = 5;
pub const CNT_SNAT: u32 = 6;
/// Flows to a ClusterIP masqueraded because their source is outside the cluster CIDR
/// (`FE_MASQ_OFF_CLUSTER`); `CNT_SNAT` counts the frontends that masquerade every flow.
pub const CNT_SNAT_OFF_CLUSTER: u32 = 7;
pub const COUNTERS: u32 = 8;
/// Names of the counters, by index, for the CLI.
pub const COUNTER_NAMES: [&str; 8] = [
    "reject_no_backend",
    "reject_no_port",
    "drop_no_backend",
    "snat_no_free_port",
    "nat_error",
    "hairpin",
    "snat",
    "snat_off_cluster",
];

/// Length of the name in `SvcMeta`.
pub const SVC_NAME_LEN: usize = 120;

/// Per-CPU counters per service (indexed by `svc_id`), in `lb_svc_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SvcStats {
    pub packets: u64,
    pub bytes: u64,
}

/// Human-readable name of a frontend (`namespace/name:port-name`), indexed by `svc_id`, so that
/// `podlb service list` works from the pinned maps alone. Not read by the datapath.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvcMeta {
    pub name_len: u32,
    pub pad: u32,
    pub name: [u8; SVC_NAME_LEN],
}
