//! Step 4: backend selection for a new flow: a slot of the frontend (`lb_slots`) picked
//! uniformly at random, naming a backend (`lb_backends`). A frontend without a usable backend
//! rejects the packet, or drops it when the frontend says so (`FE_DROP_EMPTY`).
use aya_ebpf::helpers::bpf_get_prandom_u32;
use lb_common::*;

use crate::{
    maps::{count_event, BACKENDS, SLOTS},
    verdict::Verdict,
};

/// The backend id for a new flow to `fe` (of the packet's `family`), or what to do with the
/// packet when there is none.
#[inline(always)]
pub fn select(fe: &Frontend, family: u8) -> Result<u32, Verdict> {
    pick(fe, family).ok_or_else(|| {
        if fe.flags & FE_DROP_EMPTY != 0 {
            count_event(CNT_DROP_NO_BACKEND);
            Verdict::Drop
        } else {
            count_event(CNT_REJECT_NO_BACKEND);
            Verdict::Reject
        }
    })
}

/// Slot `rand % count` of the frontend: its backend id, if that backend exists and is of the
/// packet's family.
#[inline(always)]
fn pick(fe: &Frontend, family: u8) -> Option<u32> {
    if fe.count == 0 {
        return None;
    }
    let slot = unsafe { bpf_get_prandom_u32() } % fe.count;
    let backend_id = unsafe {
        *SLOTS.get_ptr(SlotKey {
            svc_id: fe.svc_id,
            slot,
        })?
    }
    .backend_id;
    let b = BACKENDS.get(backend_id)?;
    (b.port != 0 && b.family == family).then_some(backend_id)
}
