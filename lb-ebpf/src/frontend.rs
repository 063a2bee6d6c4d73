//! Step 2: frontend lookup. Whether the packet is addressed to a Service frontend (VIP or node
//! address, port, protocol, family: `lb_frontends`), and whether it is addressed to a ClusterIP
//! on a port that is not one of its frontends (`lb_vips`), which is rejected.
use lb_common::{Frontend, FrontendKey, VipKey};

use crate::{
    addr::copy_addr,
    maps::{FRONTENDS, VIPS},
    packet::Packet,
};

/// The frontend the packet is addressed to. The entry is copied at once: the agent may update
/// it concurrently.
#[inline(always)]
pub fn lookup(pkt: &Packet) -> Option<Frontend> {
    let mut key = FrontendKey {
        addr: [0; 16],
        port: pkt.dport,
        proto: pkt.proto,
        family: pkt.family(),
    };
    copy_addr(&mut key.addr, &pkt.daddr);
    FRONTENDS.get_ptr(key).map(|fe| unsafe { *fe })
}

/// Whether the packet goes to a ClusterIP (on a port that is not a frontend: `lookup` found
/// none).
#[inline(always)]
pub fn unexposed_port(pkt: &Packet) -> bool {
    let mut vip = VipKey {
        addr: [0; 16],
        family: pkt.family(),
        pad: [0; 3],
    };
    copy_addr(&mut vip.addr, &pkt.daddr);
    VIPS.get_ptr(vip).is_some()
}
