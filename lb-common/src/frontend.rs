//! `lb_frontends` (a Service frontend: VIP or node address, port, protocol -> its slots and
//! policy) and `lb_vips` (every ClusterIP, for rejecting its unexposed ports).
use crate::Addr;

/// `Frontend::flags`: masquerade every new flow to the node address (externalTrafficPolicy
/// Cluster on NodePort, ExternalIP and LoadBalancer frontends).
pub const FE_SNAT: u16 = 1;
/// `Frontend::flags`: with no backends, drop instead of rejecting (traffic policy Local).
pub const FE_DROP_EMPTY: u16 = 2;
/// `Frontend::flags`: masquerade a new flow whose source is outside the cluster CIDR of its
/// family (`Config::cluster_net`), as kube-proxy does for ClusterIPs with `--cluster-cidr`.
/// Set on ClusterIP frontends of a family that has a cluster CIDR.
pub const FE_MASQ_OFF_CLUSTER: u16 = 4;

/// `Frontend::kind` values.
pub const KIND_CLUSTER_IP: u16 = 1;
pub const KIND_NODE_PORT: u16 = 2;
pub const KIND_EXTERNAL_IP: u16 = 3;
pub const KIND_LOAD_BALANCER: u16 = 4;

/// A Service frontend: VIP, port and protocol. Key of `lb_frontends`.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    pub addr: Addr,
    pub port: u16,
    pub proto: u8,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
}

/// Value of `lb_frontends`.
///
/// `svc_id` names the frontend in the slot, stats and meta maps. `count` is the number of
/// valid slots: the datapath picks slot `rand % count`. The reconciler writes slots first and
/// `count` last, so a packet never reads a slot that is not written yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub svc_id: u32,
    pub count: u32,
    /// `FE_*` bits.
    pub flags: u16,
    /// `KIND_*`: for operators only; the datapath reads `flags`.
    pub kind: u16,
    pub pad: u32,
}

/// Key of `lb_vips`: a ClusterIP.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    pub addr: Addr,
    pub family: u8,
    pub pad: [u8; 3],
}

/// Value of `lb_vips`: traffic to a ClusterIP on a port that is not a frontend is rejected.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Vip {
    pub flags: u32,
}
